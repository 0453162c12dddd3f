//! CSV schema inference: each column's narrowest type over the first
//! records, by arrow-csv's rules written out by hand (see
//! [`infer_schema`]), checked against arrow-csv by a property test.

use std::io::Read;

use arrow_schema::{DataType, Field, Schema, TimeUnit};

use crate::csv::CsvOptions;

/// Infers a schema from the first `rows` records of `source`. Column names
/// come from the header, or are `column_1`, `column_2`, ... without one.
///
/// The rules are arrow-csv's (`Format::infer_schema`): a column's type is
/// the narrowest that every non-empty value fits — boolean, then Int64,
/// Float64 (Int64 and Float64 values together), Date32, then timestamps
/// (seconds to nanoseconds, the finest seen), else Utf8. They are written
/// out here rather than taken from arrow-csv, whose regular expressions
/// take ~17 M instructions to compile: most of planning a small csv job.
/// One difference: digits are ASCII digits and `true`/`false` match ASCII
/// case-insensitively, where arrow-csv's regexes take any Unicode digit and
/// Unicode case folds (`fAlſE`), which its reader then fails to parse.
pub(crate) fn infer_schema(
    source: impl Read,
    opts: &CsvOptions,
    rows: usize,
    skip_invalid: bool,
) -> Result<Schema, String> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(opts.header)
        .flexible(false)
        .delimiter(opts.delimiter)
        .quote(opts.quote)
        .escape(opts.escape)
        .from_reader(source);
    let first = reader.headers().map_err(record_error)?;
    let names: Vec<String> = if opts.header {
        first.iter().map(str::to_string).collect()
    } else {
        (1..=first.len()).map(|i| format!("column_{i}")).collect()
    };
    let mut seen = vec![0u16; names.len()];
    let mut record = csv::StringRecord::new();
    for _ in 0..rows {
        match reader.read_record(&mut record) {
            Ok(true) => {}
            Ok(false) => break,
            // A bad record the job skips: left out of the sample.
            Err(e) if skip_invalid && !matches!(e.kind(), csv::ErrorKind::Io(_)) => continue,
            Err(e) => return Err(record_error(e)),
        }
        for (kinds, value) in seen.iter_mut().zip(record.iter()) {
            // An empty value is a null, whatever the type.
            if !value.is_empty() {
                *kinds |= kind(value);
            }
        }
    }
    Ok(Schema::new(names.into_iter().zip(seen).map(|(n, k)| Field::new(n, data_type(k), true)).collect::<Vec<_>>()))
}

/// A csv reader's error, as arrow-csv words it.
fn record_error(e: csv::Error) -> String {
    let at = |pos: &Option<csv::Position>| pos.as_ref().map(|p| format!(" at line {}", p.line())).unwrap_or_default();
    match e.kind() {
        csv::ErrorKind::Io(e) => e.to_string(),
        csv::ErrorKind::Utf8 { pos, err } => format!("invalid UTF-8: {err}{}", at(pos)),
        csv::ErrorKind::UnequalLengths { pos, expected_len, len } => {
            format!("a record has {len} fields where the first had {expected_len}{}", at(pos))
        }
        _ => e.to_string(),
    }
}

// The kinds a value can be, as bits (arrow-csv's order).
const BOOLEAN: u16 = 1;
const INTEGER: u16 = 1 << 1;
const FLOAT: u16 = 1 << 2;
const DATE: u16 = 1 << 3;
const SECONDS: u16 = 1 << 4;
const TEXT: u16 = 1 << 8;

/// The narrowest kind of a non-empty csv value.
fn kind(s: &str) -> u16 {
    let b = s.as_bytes();
    let digits = |b: &[u8]| !b.is_empty() && b.iter().all(u8::is_ascii_digit);
    let unsigned = unsigned(b);
    if b[0] == b'"' {
        TEXT
    } else if s.eq_ignore_ascii_case("true") || s.eq_ignore_ascii_case("false") {
        BOOLEAN
    } else if digits(unsigned) {
        // Past i64, text.
        if b.len() >= 19 && s.parse::<i64>().is_err() { TEXT } else { INTEGER }
    } else if is_float(unsigned) || matches!(s, "NaN" | "nan" | "inf" | "-inf") {
        FLOAT
    } else {
        temporal(b)
    }
}

/// `b` without a leading `+` or `-`.
fn unsigned(b: &[u8]) -> &[u8] {
    b.strip_prefix(b"+").or_else(|| b.strip_prefix(b"-")).unwrap_or(b)
}

/// `digits.digits` (one side may be empty, not both) or `digits`, then an
/// optional exponent — required after bare digits.
fn is_float(b: &[u8]) -> bool {
    let digits = |b: &[u8]| b.iter().all(u8::is_ascii_digit);
    let (mantissa, exponent) = match b.iter().position(|&c| c == b'e' || c == b'E') {
        Some(i) => (&b[..i], Some(&b[i + 1..])),
        None => (b, None),
    };
    if let Some(e) = exponent {
        let e = unsigned(e);
        if e.is_empty() || !digits(e) {
            return false;
        }
    }
    match mantissa.iter().position(|&c| c == b'.') {
        Some(i) => {
            let (whole, fraction) = (&mantissa[..i], &mantissa[i + 1..]);
            whole.len() + fraction.len() > 0 && digits(whole) && digits(fraction)
        }
        None => exponent.is_some() && !mantissa.is_empty() && digits(mantissa),
    }
}

/// `YYYY-MM-DD` (a date), or that, `T` or a space and `hh:mm:ss` (a
/// timestamp): in seconds if nothing or a non-digit other than `.` follows,
/// else as fine as the digits after the `.` (up to 9), which a non-digit
/// or the end must follow. Anything else is text.
fn temporal(b: &[u8]) -> u16 {
    let d = |i: usize| b.get(i).is_some_and(u8::is_ascii_digit);
    let at = |i: usize, c: u8| b.get(i) == Some(&c);
    let date = (0..4).all(d) && at(4, b'-') && d(5) && d(6) && at(7, b'-') && d(8) && d(9);
    if !date {
        return TEXT;
    }
    if b.len() == 10 {
        return DATE;
    }
    let time = (at(10, b'T') || at(10, b' '))
        && d(11)
        && d(12)
        && at(13, b':')
        && d(14)
        && d(15)
        && at(16, b':')
        && d(17)
        && d(18);
    if !time {
        return TEXT;
    }
    // What may follow: nothing, or a character that is not a digit (nor,
    // right after the seconds, a `.`) and then anything but a newline —
    // arrow-csv's `(?:[^\d].*)?$`, whose `.` stops at one.
    let tail = |rest: &[u8], dot: bool| match rest.split_first() {
        None => true,
        Some((c, more)) => !(c.is_ascii_digit() || (dot && *c == b'.') || more.contains(&b'\n')),
    };
    if b.get(19) == Some(&b'.') {
        let fraction = b[20..].iter().take_while(|c| c.is_ascii_digit()).count();
        if !tail(&b[20 + fraction..], false) {
            return TEXT;
        }
        match fraction {
            1..=3 => SECONDS << 1,
            4..=6 => SECONDS << 2,
            7..=9 => SECONDS << 3,
            _ => TEXT,
        }
    } else if tail(&b[19..], true) {
        SECONDS
    } else {
        TEXT
    }
}

/// The type of a column whose values were of the kinds `seen`: the finest
/// temporal type among temporal ones; Float64 for integers and floats;
/// Null when every value was empty.
fn data_type(seen: u16) -> DataType {
    match seen {
        0 => DataType::Null,
        BOOLEAN => DataType::Boolean,
        INTEGER => DataType::Int64,
        FLOAT | 6 => DataType::Float64,
        k if k & !0b1111_1000 == 0 => match k.leading_zeros() {
            8 => DataType::Timestamp(TimeUnit::Nanosecond, None),
            9 => DataType::Timestamp(TimeUnit::Microsecond, None),
            10 => DataType::Timestamp(TimeUnit::Millisecond, None),
            11 => DataType::Timestamp(TimeUnit::Second, None),
            _ => DataType::Date32,
        },
        _ => DataType::Utf8,
    }
}

/// The column names in a header record.
pub(crate) fn header_names(header: &[u8], opts: &CsvOptions) -> Result<Vec<String>, String> {
    let schema = infer_schema(std::io::Cursor::new(header), &CsvOptions { header: true, ..*opts }, 0, false)?;
    Ok(schema.fields().iter().map(|f| f.name().clone()).collect())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// arrow-csv's own inference, the oracle.
    fn arrow_infer(data: &str, opts: &CsvOptions, rows: usize) -> Result<Schema, String> {
        let mut format = arrow_csv::reader::Format::default()
            .with_header(opts.header)
            .with_delimiter(opts.delimiter)
            .with_quote(opts.quote);
        if let Some(e) = opts.escape {
            format = format.with_escape(e);
        }
        format.infer_schema(data.as_bytes(), Some(rows)).map(|(s, _)| s).map_err(|e| e.to_string())
    }

    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(String::new()),
            "[+-]?[0-9]{1,20}",
            "[+-]?[0-9]{0,3}\\.[0-9]{0,3}([eE][+-]?[0-9]{0,2})?",
            "[+-]?[0-9]{1,3}[eE][+-]?[0-9]{0,2}",
            // ASCII only: arrow-csv's regexes also take Unicode digits and
            // case folds (`fAlſE` is a boolean to them), which its reader
            // then fails to parse.
            "[tT][rR][uU][eE]|[fF][aA][lL][sS][eE]|tru|yes",
            "(NaN|nan|inf|-inf|Inf|\\+inf)",
            "[0-9]{4}-[0-9]{2}-[0-9]{2}",
            "[0-9]{3,5}-[0-9]{1,2}-[0-9]{2}",
            "[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2}",
            "[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{0,11}(Z|[+-][0-9]{2}:?[0-9]{2}|x[0-9])?",
            "[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2}[Z+ 0-9-][0-9:]{0,5}",
            "[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{1}",
            // Quoted values with newlines after a timestamp or a fraction.
            "[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,4})?[\n a.Z]{1,3}[a\n]{0,2}",
            "\"[a-z0-9]{0,3}\"",
            "[a-z .]{1,4}",
        ]
    }

    proptest! {
        #[test]
        fn inference_follows_arrow_csv(
            rows in proptest::collection::vec(proptest::collection::vec(value(), 3), 0..12),
            header in any::<bool>(),
            infer_rows in 0usize..14,
        ) {
            let quote = |v: &String| {
                if v.contains(['"', ',', '\n']) { format!("\"{}\"", v.replace('"', "\"\"")) } else { v.clone() }
            };
            let mut data = String::new();
            if header {
                data.push_str("a,b,c\n");
            }
            for r in &rows {
                data.push_str(&r.iter().map(quote).collect::<Vec<_>>().join(","));
                data.push('\n');
            }
            let opts = CsvOptions { header, ..CsvOptions::default() };
            let ours = infer_schema(data.as_bytes(), &opts, infer_rows, false).unwrap();
            let arrow = arrow_infer(&data, &opts, infer_rows).unwrap();
            prop_assert_eq!(ours, arrow, "{:?}", data);
        }
    }

    #[test]
    fn inference_errors_name_the_line() {
        let data = "a,b\n1,\"x\ny\"\n2,z\n3,w,extra\n";
        let e = infer_schema(data.as_bytes(), &CsvOptions::default(), 10, false).unwrap_err();
        assert_eq!(e, "a record has 3 fields where the first had 2 at line 5");
        assert!(arrow_infer(data, &CsvOptions::default(), 10).unwrap_err().contains("at line 5"));
    }
}
