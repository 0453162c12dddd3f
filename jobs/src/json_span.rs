//! Where a field of a JSON job file is written: the byte offset of the
//! value a path of keys and indices leads to (or of the deepest value on
//! the way, when the field is not written), so that errors in JSON job
//! files are located by line and column as TOML ones are. serde_json keeps
//! no spans, so this scans the text itself; it only ever runs on text that
//! parsed, and gives up (`None`) on anything it does not expect.

/// One step of a path into a JSON document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Seg<'a> {
    /// An object's member.
    Key(&'a str),
    /// An array's element (0-based).
    Index(usize),
}

/// The offset of the deepest value written along `path` in the JSON
/// document `text`.
pub(crate) fn offset(text: &str, path: &[Seg<'_>]) -> Option<usize> {
    Scanner { b: text.as_bytes(), i: 0 }.find(path)
}

struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
}

impl Scanner<'_> {
    fn ws(&mut self) {
        while self.b.get(self.i).is_some_and(u8::is_ascii_whitespace) {
            self.i += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    /// Steps over `c`, or gives up.
    fn expect(&mut self, c: u8) -> Option<()> {
        self.ws();
        (self.peek()? == c).then(|| self.i += 1)
    }

    /// The string at the cursor, unescaped.
    fn string(&mut self) -> Option<String> {
        self.ws();
        let start = self.i;
        self.skip_string()?;
        serde_json::from_slice(&self.b[start..self.i]).ok()
    }

    fn skip_string(&mut self) -> Option<()> {
        (self.peek()? == b'"').then_some(())?;
        self.i += 1;
        loop {
            match self.peek()? {
                b'\\' => self.i += 2,
                b'"' => {
                    self.i += 1;
                    return Some(());
                }
                _ => self.i += 1,
            }
        }
    }

    /// Steps over one value of any kind.
    fn skip_value(&mut self) -> Option<()> {
        self.ws();
        match self.peek()? {
            b'"' => self.skip_string(),
            b'{' | b'[' => {
                let mut depth = 0usize;
                loop {
                    match self.peek()? {
                        b'"' => {
                            self.skip_string()?;
                            continue;
                        }
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth -= 1;
                            if depth == 0 {
                                self.i += 1;
                                return Some(());
                            }
                        }
                        _ => {}
                    }
                    self.i += 1;
                }
            }
            _ => {
                while self.peek().is_some_and(|c| !matches!(c, b',' | b'}' | b']') && !c.is_ascii_whitespace()) {
                    self.i += 1;
                }
                Some(())
            }
        }
    }

    /// The offset of the deepest value along `path` from the value at the
    /// cursor.
    fn find(&mut self, path: &[Seg<'_>]) -> Option<usize> {
        self.ws();
        let start = self.i;
        let Some((first, rest)) = path.split_first() else { return Some(start) };
        let deeper = match (self.peek()?, first) {
            (b'{', Seg::Key(key)) => {
                self.i += 1;
                self.member(key, rest)
            }
            (b'[', Seg::Index(n)) => {
                self.i += 1;
                self.element(*n, rest)
            }
            _ => None,
        };
        deeper.or(Some(start))
    }

    /// In an object (after its `{`): the member `key`, followed along
    /// `rest`.
    fn member(&mut self, key: &str, rest: &[Seg<'_>]) -> Option<usize> {
        self.ws();
        if self.peek()? == b'}' {
            return None;
        }
        loop {
            let name = self.string()?;
            self.expect(b':')?;
            if name == key {
                return self.find(rest);
            }
            self.skip_value()?;
            self.ws();
            match self.peek()? {
                b',' => self.i += 1,
                _ => return None,
            }
        }
    }

    /// In an array (after its `[`): element `n`, followed along `rest`.
    fn element(&mut self, n: usize, rest: &[Seg<'_>]) -> Option<usize> {
        self.ws();
        if self.peek()? == b']' {
            return None;
        }
        for _ in 0..n {
            self.skip_value()?;
            self.ws();
            match self.peek()? {
                b',' => self.i += 1,
                _ => return None,
            }
        }
        self.find(rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str) -> Seg<'_> {
        Seg::Key(k)
    }

    #[test]
    fn finds_values_and_the_nearest_written_one() {
        let text = r#"{"input": {"path": "a\"}b.csv"}, "stage": [{"function": "x"}, {"function": "y", "params": {"n": [1, 2]}}],
  "platform": {"concurrency": 0}}"#;
        let at = |path: &[Seg]| offset(text, path).map(|o| &text[o..o + 3]);
        assert_eq!(at(&[key("platform"), key("concurrency")]), Some("0}}"));
        assert_eq!(at(&[key("stage"), Seg::Index(1), key("function")]), Some("\"y\""));
        assert_eq!(at(&[key("stage"), Seg::Index(1), key("params"), key("n"), Seg::Index(1)]), Some("2]}"));
        // Not written: the deepest value on the way.
        assert_eq!(at(&[key("platform"), key("memory")]), Some("{\"c"));
        assert_eq!(at(&[key("stage"), Seg::Index(5)]), Some("[{\""));
        assert_eq!(at(&[key("output")]), Some("{\"i"));
    }
}
