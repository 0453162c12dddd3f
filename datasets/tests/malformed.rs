//! Malformed records and files are errors that name the file and the line
//! (or byte offset) of the bad record, whatever split they fall in.

use std::path::Path;
use std::sync::Arc;

use arrow_schema::{DataType, Field, Schema};
use fanout_datasets::{Dataset, DatasetOptions, Error, Location};

fn first_error(path: &Path, opts: DatasetOptions) -> Error {
    let ds = match Dataset::open(vec![path.display().to_string()], opts) {
        Ok(ds) => ds,
        Err(e) => return e,
    };
    let mut errors = ds.read_all().filter_map(Result::err);
    let e = errors.next().expect("an error");
    assert!(errors.next().is_none(), "a reader goes on after an error");
    e
}

fn location(e: &Error) -> Location {
    match e {
        Error::Malformed { location, .. } => *location,
        other => panic!("not a malformed-record error: {other}"),
    }
}

#[test]
fn invalid_utf8_in_text_names_the_line_in_any_split() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.txt");
    let mut content = b"one\ntwo\nthree\nfour\n".repeat(5);
    content.extend_from_slice(b"bad \xc3\x28 byte\nlast\n");
    std::fs::write(&path, &content).unwrap();
    for chunk in [1, 7, 1 << 20] {
        let e = first_error(&path, DatasetOptions { chunk_size: chunk, ..Default::default() });
        assert_eq!(location(&e), Location { line: Some(21), byte: 95 }, "chunk {chunk}");
        assert_eq!(
            e.to_string(),
            format!("{}: line 21 (byte 95): invalid UTF-8 at byte 4 of the line", path.display())
        );
    }
}

#[test]
fn csv_errors_name_the_record_line_past_quoted_newlines() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.csv");
    // Line 1 header; record 1 spans lines 2-3; line 4 is fine; line 5 has a
    // field too many.
    std::fs::write(&path, "a,b\n1,\"x\ny\"\n2,z\n3,w,extra\n4,v\n").unwrap();
    // Inference over the bad record fails, naming its line.
    let e = first_error(&path, DatasetOptions::default());
    assert!(e.to_string().contains("cannot infer a csv schema") && e.to_string().contains("at line 5"), "{e}");
    for chunk in [1, 5, 1 << 20] {
        let e = first_error(&path, DatasetOptions { chunk_size: chunk, infer_rows: 1, ..Default::default() });
        assert_eq!(location(&e), Location { line: Some(5), byte: 16 }, "chunk {chunk}: {e}");
        assert!(
            e.to_string().contains("expected 2 fields")
                || e.to_string().contains("wrong number of fields: expected 2 got 3"),
            "{e}"
        );
    }
    // A value that does not fit a given type.
    std::fs::write(&path, "a,b\n1,x\n2,y\nthree,z\n").unwrap();
    let schema =
        Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, true), Field::new("b", DataType::Utf8, true)]));
    let e = first_error(&path, DatasetOptions { chunk_size: 3, schema: Some(schema), ..Default::default() });
    assert_eq!(location(&e), Location { line: Some(4), byte: 12 }, "{e}");
    assert!(e.to_string().contains("three"), "{e}");
}

#[test]
fn compressed_csv_errors_name_the_line_of_the_stream() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.csv.gz");
    let mut enc = flate2::write::GzEncoder::new(std::fs::File::create(&path).unwrap(), flate2::Compression::default());
    enc.write_all(b"a,b\n1,\"q\nq\"\n2\n").unwrap();
    enc.finish().unwrap();
    let e = first_error(&path, DatasetOptions { infer_rows: 1, ..Default::default() });
    assert_eq!(location(&e), Location { line: Some(4), byte: 12 }, "{e}");
}

#[test]
fn jsonl_errors_name_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.jsonl");
    std::fs::write(&path, "{\"a\": 1}\n{\"a\": 2}\n\n{\"a\": 3\n{\"a\": 4}\n").unwrap();
    // Inference stops at the bad line and names it...
    let e = first_error(&path, DatasetOptions::default());
    assert_eq!(location(&e), Location { line: Some(4), byte: 19 }, "{e}");
    assert!(e.to_string().contains("invalid JSON: EOF while parsing an object"), "{e}");
    // ... and so does reading, in any split.
    for chunk in [1, 9, 1 << 20] {
        let e = first_error(&path, DatasetOptions { chunk_size: chunk, infer_rows: 2, ..Default::default() });
        assert_eq!(location(&e), Location { line: Some(4), byte: 19 }, "chunk {chunk}: {e}");
    }
    std::fs::write(&path, "{\"a\": 1}\n{\"a\": \"text\"}\n").unwrap();
    let e = first_error(&path, DatasetOptions { infer_rows: 1, ..Default::default() });
    assert_eq!(location(&e), Location { line: Some(2), byte: 9 }, "{e}");
}

#[test]
fn corrupt_parquet_and_arrow_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["t.parquet", "t.arrow"] {
        let path = dir.path().join(name);
        std::fs::write(&path, b"definitely not columnar data").unwrap();
        let e = first_error(&path, DatasetOptions::default());
        assert!(matches!(e, Error::Invalid { .. }), "{e}");
        assert!(e.to_string().starts_with(&format!("{}: ", path.display())), "{e}");
    }
}

#[test]
fn unknown_extensions_and_mixed_formats_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("x.bin");
    std::fs::write(&bin, "a\n").unwrap();
    let e = first_error(&bin, DatasetOptions::default());
    assert!(
        e.to_string().contains("cannot tell the format from the file name; set the format to one of: text, csv"),
        "{e}"
    );
    std::fs::write(dir.path().join("a.txt"), "a\n").unwrap();
    std::fs::write(dir.path().join("b.jsonl"), "{}\n").unwrap();
    let ds = Dataset::open(vec![format!("{}/[ab].*", dir.path().display())], DatasetOptions::default()).unwrap();
    let e = ds.splits().find_map(Result::err).unwrap();
    assert!(
        e.to_string().ends_with("b.jsonl: is jsonl, but the dataset is text; set the format to read every file as one"),
        "{e}"
    );
}
