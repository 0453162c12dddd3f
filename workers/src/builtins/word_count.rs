//! `word_count`: tokenize a text column and count each word, per
//! invocation (the map side of a word count).

use std::sync::Arc;

use arrow_array::builder::{Int64Builder, StringBuilder};
use arrow_array::cast::AsArray;
use arrow_array::{Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use hashbrown::HashMap;

use crate::catalog::{FunctionInfo, Shape, p};
use crate::function::{Builtin, FunctionError, Invocation, MapInstance, Planned, StageSpec};
use crate::params::{Params, column};

/// Bytes that separate words: ASCII whitespace, including \v.
const fn separators() -> [bool; 256] {
    let mut t = [false; 256];
    t[b' ' as usize] = true;
    t[b'\t' as usize] = true;
    t[b'\n' as usize] = true;
    t[b'\r' as usize] = true;
    t[0x0b] = true;
    t[0x0c] = true;
    t
}

static SEPARATOR: [bool; 256] = separators();

/// Calls `f` with every word of `text`: maximal runs of non-separator bytes.
#[inline]
pub fn for_each_word<'t>(text: &'t [u8], mut f: impl FnMut(&'t [u8])) {
    let mut start = None;
    for (i, &b) in text.iter().enumerate() {
        match (SEPARATOR[b as usize], start) {
            (true, Some(s)) => {
                f(&text[s..i]);
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    if let Some(s) = start {
        f(&text[s..]);
    }
}

/// A word as a hash key. Words are short, so equality compares bytes in
/// place rather than calling `memcmp`, which dominates a count otherwise.
#[derive(Clone, Copy)]
struct Word<'t>(&'t [u8]);

impl PartialEq for Word<'_> {
    #[inline]
    fn eq(&self, other: &Self) -> bool {
        let (a, b) = (self.0, other.0);
        a.len() == b.len() && (a.len() > 16 && a == b || a.len() <= 16 && a.iter().zip(b).all(|(x, y)| x == y))
    }
}

impl Eq for Word<'_> {}

impl std::hash::Hash for Word<'_> {
    #[inline]
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write(self.0);
    }
}

/// A word of up to 23 bytes held in the key itself (the length in the
/// last byte): a lookup compares it in the table's own slot, instead of
/// following a pointer into the text — a cache miss per word otherwise.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Short([u64; 3]);

impl Short {
    const MAX: usize = 23;

    #[inline]
    fn new(w: &[u8]) -> Short {
        let mut b = [0u8; 24];
        b[..w.len()].copy_from_slice(w);
        b[23] = w.len() as u8;
        let word = |i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
        Short([word(0), word(1), word(2)])
    }

    /// The word's bytes (in the first `len` bytes of the array) and `len`.
    fn bytes(&self) -> ([u8; 24], usize) {
        let mut b = [0u8; 24];
        for (i, w) in self.0.iter().enumerate() {
            b[i * 8..i * 8 + 8].copy_from_slice(&w.to_le_bytes());
        }
        let len = b[23] as usize;
        (b, len)
    }
}

impl std::hash::Hash for Short {
    #[inline]
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.0[0]);
        state.write_u64(self.0[1] ^ self.0[2].rotate_left(32));
    }
}

/// The registered `word_count`.
pub struct WordCount;

impl Builtin for WordCount {
    fn info(&self) -> &'static FunctionInfo {
        &WORD_COUNT
    }

    fn plan(&self, spec: &StageSpec<'_>) -> Result<Arc<dyn Planned>, FunctionError> {
        let p = Params::new("word_count", self.info().params, spec.params)?;
        let name = p.string("column");
        let col = column(spec.input, &name)?;
        if !matches!(spec.input.field(col).data_type(), DataType::Utf8) {
            return Err(FunctionError::permanent(format!(
                "word_count: column `{name}` is {}, not text (utf8)",
                spec.input.field(col).data_type()
            )));
        }
        Ok(Arc::new(Plan { col, name, lowercase: p.boolean("lowercase") }))
    }
}

struct Plan {
    col: usize,
    name: String,
    lowercase: bool,
}

/// The output schema: word, count.
pub fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new("word", DataType::Utf8, false), Field::new("count", DataType::Int64, false)]))
}

impl Planned for Plan {
    fn output_schema(&self) -> SchemaRef {
        schema()
    }

    fn input_columns(&self) -> Option<Vec<String>> {
        Some(vec![self.name.clone()])
    }

    fn init(&self) -> Result<Box<dyn MapInstance>, FunctionError> {
        Ok(Box::new(Counter { col: self.col, lowercase: self.lowercase, scratch: Vec::new() }))
    }
}

struct Counter {
    col: usize,
    lowercase: bool,
    scratch: Vec<u8>,
}

impl MapInstance for Counter {
    fn call(&mut self, _: &Invocation<'_>, input: Vec<RecordBatch>) -> Result<Vec<RecordBatch>, FunctionError> {
        let mut short: HashMap<Short, i64> = HashMap::new();
        let mut counts: HashMap<Word<'_>, i64> = HashMap::new();
        let mut folded: HashMap<Box<[u8]>, i64> = HashMap::new();
        for batch in &input {
            let text = batch.column(self.col).as_string::<i32>();
            for i in 0..text.len() {
                if text.is_null(i) {
                    continue;
                }
                let line = text.value(i).as_bytes();
                if self.lowercase {
                    let scratch = &mut self.scratch;
                    for_each_word(line, |w| {
                        scratch.clear();
                        scratch.extend(w.iter().map(u8::to_ascii_lowercase));
                        match folded.get_mut(&scratch[..]) {
                            Some(c) => *c += 1,
                            None => {
                                folded.insert(scratch.as_slice().into(), 1);
                            }
                        }
                    });
                } else {
                    for_each_word(line, |w| {
                        if w.len() <= Short::MAX {
                            *short.entry(Short::new(w)).or_insert(0) += 1;
                        } else {
                            *counts.entry(Word(w)).or_insert(0) += 1;
                        }
                    });
                }
            }
        }
        let n = short.len() + counts.len() + folded.len();
        let mut words = StringBuilder::with_capacity(n, n * 8);
        let mut numbers = Int64Builder::with_capacity(n);
        let mut push = |word: &[u8], count: i64| -> Result<(), FunctionError> {
            // Words are cut at ASCII bytes of valid UTF-8, so they are UTF-8.
            words.append_value(std::str::from_utf8(word).map_err(|e| FunctionError::permanent(e.to_string()))?);
            numbers.append_value(count);
            Ok(())
        };
        for (w, &c) in &short {
            let (bytes, len) = w.bytes();
            push(&bytes[..len], c)?;
        }
        for (w, &c) in counts.iter().map(|(w, c)| (w.0, c)).chain(folded.iter().map(|(w, c)| (&w[..], c))) {
            push(w, c)?;
        }
        let batch = RecordBatch::try_new(schema(), vec![Arc::new(words.finish()), Arc::new(numbers.finish())])?;
        Ok(vec![batch])
    }
}

/// `word_count` in the catalog: what `fanout functions word_count` says, and the
/// parameters validation checks.
pub(crate) const WORD_COUNT: FunctionInfo = {
    use crate::params::ParamType::*;
    FunctionInfo {
        name: "word_count",
        shape: Shape::Map,
        summary: "split a text column into words and count each word (map-side)",
        doc: "Tokens are maximal runs of bytes that are not ASCII whitespace (space, \\t, \\n, \\r, \\v, \\f); \
              punctuation stays part of a word. Output: word (utf8), count (int64), one row per distinct word \
              of the invocation's input. Follow it with a keyed `aggregate` stage (key = [\"word\"], sum = [\"count\"]) \
              for the total.",
        params: &[
            p("column", Str, Some("\"line\""), "the text column to tokenize"),
            p("lowercase", Bool, Some("false"), "fold ASCII letters to lower case before counting"),
        ],
    }
};

#[cfg(test)]
mod tests {
    use arrow_array::ArrayRef;

    use super::*;

    fn words(s: &str) -> Vec<String> {
        let mut out = vec![];
        for_each_word(s.as_bytes(), |w| out.push(String::from_utf8(w.to_vec()).unwrap()));
        out
    }

    #[test]
    fn counts_match_a_plain_count_for_short_and_long_words() {
        let long = "x".repeat(23);
        let longer = "y".repeat(24);
        let lines = [
            format!("a bb a {long} {longer} {long}"),
            format!("{longer}\tbb héllo {}", "z".repeat(100)),
            String::new(),
        ];
        let text: ArrayRef = Arc::new(arrow_array::StringArray::from_iter_values(&lines));
        let batch = RecordBatch::try_from_iter([("line", text)]).unwrap();
        let mut counter = Counter { col: 0, lowercase: false, scratch: Vec::new() };
        let inv = Invocation::plain("wc", 0);
        let out = counter.call(&inv, vec![batch]).unwrap();
        let words = out[0].column(0).as_string::<i32>();
        let counts = out[0].column(1).as_primitive::<arrow_array::types::Int64Type>();
        let got: std::collections::BTreeMap<String, i64> =
            (0..out[0].num_rows()).map(|i| (words.value(i).to_string(), counts.value(i))).collect();
        let mut want = std::collections::BTreeMap::new();
        for line in &lines {
            for w in line.split_ascii_whitespace() {
                *want.entry(w.to_string()).or_insert(0) += 1;
            }
        }
        assert_eq!(got, want);
    }

    #[test]
    fn words_are_runs_of_non_whitespace() {
        assert_eq!(words("  a bb\tc\x0bd\x0ce\r\nf  "), ["a", "bb", "c", "d", "e", "f"]);
        assert_eq!(words("héllo, wörld!"), ["héllo,", "wörld!"]);
        assert!(words(" \t ").is_empty());
    }
}
