//! Property tests: reading every split of a file, in order, yields exactly
//! the records that were written, whatever the chunk size.

use std::path::Path;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{Array, ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use fanout_datasets::{CsvOptions, Dataset, DatasetOptions, Format, OpenFiles, Split, SplitRange, Writer};
use proptest::prelude::*;

fn open(path: &Path, format: Format, chunk: u64, csv: CsvOptions, schema: Option<SchemaRef>) -> Dataset {
    let opts = DatasetOptions {
        format: Some(format),
        chunk_size: chunk,
        csv,
        schema,
        batch_rows: 3,
        ..DatasetOptions::default()
    };
    Dataset::open(vec![path.display().to_string()], opts).unwrap()
}

/// Reads every split and checks that byte ranges tile the data.
fn read_split_by_split(ds: &Dataset) -> (Vec<Split>, Vec<RecordBatch>) {
    let splits: Vec<Split> = ds.splits().collect::<Result<_, _>>().unwrap();
    // One worker's handles for every split (its read-ahead window serves
    // neighbours), then the splits again backwards through other handles.
    let mut files = OpenFiles::default();
    let read =
        |s: &Split, files: &mut OpenFiles| ds.read_with(s, files).unwrap().collect::<Result<Vec<_>, _>>().unwrap();
    let per_split: Vec<Vec<RecordBatch>> = splits.iter().map(|s| read(s, &mut files)).collect();
    let mut back = OpenFiles::default();
    for (i, s) in splits.iter().enumerate().rev() {
        assert_eq!(read(s, &mut back), per_split[i], "split {i} read backwards");
    }
    let batches: Vec<RecordBatch> = per_split.into_iter().flatten().collect();
    for (i, pair) in splits.windows(2).enumerate() {
        if let (SplitRange::Bytes { offset, len }, SplitRange::Bytes { offset: next, .. }) =
            (&pair[0].range, &pair[1].range)
        {
            assert_eq!(offset + len, *next, "split {i} does not meet the next");
            assert!(*len > 0);
        }
    }
    for (i, s) in splits.iter().enumerate() {
        assert_eq!(s.index, i as u64);
    }
    (splits, batches)
}

fn strings(batches: &[RecordBatch], column: usize) -> Vec<String> {
    batches
        .iter()
        .flat_map(|b| {
            let c = b.column(column).as_string::<i32>();
            (0..c.len()).map(|i| if c.is_null(i) { String::new() } else { c.value(i).to_string() }).collect::<Vec<_>>()
        })
        .collect()
}

/// Text made of ASCII, multi-byte UTF-8 and the odd `\r`, no `\n`.
fn line() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            4 => "[a-z ]",
            1 => Just("é".to_string()),
            1 => Just("€".to_string()),
            1 => Just("𝄞".to_string()),
        ],
        0..12,
    )
    .prop_map(|parts| parts.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn text_splits_read_every_line_once(
        lines in proptest::collection::vec(line(), 0..40),
        crlf in any::<bool>(),
        final_newline in any::<bool>(),
        chunk in 1u64..64,
    ) {
        let eol = if crlf { "\r\n" } else { "\n" };
        let mut content = lines.join(eol);
        if final_newline && !lines.is_empty() {
            content.push_str(eol);
        }
        // Oracle: Rust's own line rules on the whole text.
        let expected: Vec<String> = content.lines().map(str::to_string).collect();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.txt");
        std::fs::write(&path, &content).unwrap();
        let ds = open(&path, Format::Text, chunk, CsvOptions::default(), None);
        let (splits, batches) = read_split_by_split(&ds);
        prop_assert_eq!(strings(&batches, 0), expected);
        let covered: u64 = splits.iter().map(Split::bytes).sum();
        prop_assert_eq!(covered, content.len() as u64);
    }

    #[test]
    fn csv_splits_respect_quotes(
        rows in proptest::collection::vec(
            proptest::collection::vec(
                prop_oneof![
                    3 => "[a-z]{1,6}",
                    1 => "[a-z ,]{1,5}",
                    1 => "[a-z\"]{1,5}",
                    1 => "[a-z\n]{1,5}",
                    1 => Just("é,\"€\"\r\nx".to_string()),
                ],
                3,
            ),
            0..30,
        ),
        header in any::<bool>(),
        crlf in any::<bool>(),
        final_newline in any::<bool>(),
        chunk in 1u64..80,
    ) {
        let eol = if crlf { "\r\n" } else { "\n" };
        let quote = |f: &String| {
            if f.contains([',', '"', '\n', '\r']) {
                format!("\"{}\"", f.replace('"', "\"\""))
            } else {
                f.clone()
            }
        };
        let mut records: Vec<String> = rows.iter().map(|r| r.iter().map(quote).collect::<Vec<_>>().join(",")).collect();
        if header {
            records.insert(0, "a,b,c".into());
        }
        let mut content = records.join(eol);
        if final_newline && !records.is_empty() {
            content.push_str(eol);
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.csv");
        std::fs::write(&path, &content).unwrap();
        let schema = Arc::new(Schema::new(
            ["a", "b", "c"].map(|n| Field::new(n, DataType::Utf8, true)).to_vec(),
        ));
        let csv = CsvOptions { header, ..CsvOptions::default() };
        let ds = open(&path, Format::Csv, chunk, csv, Some(schema));
        let (_, batches) = read_split_by_split(&ds);
        for column in 0..3 {
            let expected: Vec<String> = rows.iter().map(|r| r[column].clone()).collect();
            prop_assert_eq!(strings(&batches, column), expected);
        }
    }

    #[test]
    fn jsonl_splits_read_every_object_once(
        values in proptest::collection::vec((any::<i64>(), line()), 0..30),
        blank_lines in any::<bool>(),
        chunk in 1u64..100,
    ) {
        let mut content = String::new();
        for (n, s) in &values {
            content.push_str(&serde_json::json!({"n": n, "s": s}).to_string());
            content.push('\n');
            if blank_lines {
                content.push('\n');
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.jsonl");
        std::fs::write(&path, &content).unwrap();
        let schema = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Int64, true),
            Field::new("s", DataType::Utf8, true),
        ]));
        let ds = open(&path, Format::Jsonl, chunk, CsvOptions::default(), Some(schema));
        let (_, batches) = read_split_by_split(&ds);
        let ns: Vec<i64> = batches.iter().flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec()).collect();
        prop_assert_eq!(ns, values.iter().map(|v| v.0).collect::<Vec<_>>());
        prop_assert_eq!(strings(&batches, 1), values.iter().map(|v| v.1.clone()).collect::<Vec<_>>());
    }

    #[test]
    fn parquet_and_arrow_splits_read_every_row_once(
        batch_sizes in proptest::collection::vec(1usize..50, 0..8),
        chunk in 1u64..4000,
    ) {
        let schema = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Int64, false),
            Field::new("s", DataType::Utf8, false),
        ]));
        let mut next = 0i64;
        let batches: Vec<RecordBatch> = batch_sizes.iter().map(|&n| {
            let ids: Vec<i64> = (next..next + n as i64).collect();
            next += n as i64;
            let names: Vec<String> = ids.iter().map(|i| format!("row {i}")).collect();
            let cols: Vec<ArrayRef> = vec![Arc::new(Int64Array::from(ids)), Arc::new(StringArray::from(names))];
            RecordBatch::try_new(schema.clone(), cols).unwrap()
        }).collect();
        let dir = tempfile::tempdir().unwrap();
        for format in [Format::Parquet, Format::Arrow] {
            let path = dir.path().join(format!("t.{}", format.extension()));
            let mut w = Writer::create(&path, format, schema.clone(), &CsvOptions::default()).unwrap();
            for b in &batches {
                w.write(b).unwrap();
            }
            w.finish().unwrap();
            let ds = open(&path, format, chunk, CsvOptions::default(), None);
            let (_, read) = read_split_by_split(&ds);
            let ns: Vec<i64> = read.iter().flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec()).collect();
            prop_assert_eq!(ns, (0..next).collect::<Vec<_>>());
            prop_assert_eq!(strings(&read, 1), (0..next).map(|i| format!("row {i}")).collect::<Vec<_>>());
        }
    }
}

#[test]
fn compressed_files_are_one_split_and_read_whole() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let content = "id,note\n1,\"a\nb\"\n2,plain\n";
    let gz = dir.path().join("t.csv.gz");
    let mut enc = flate2::write::GzEncoder::new(std::fs::File::create(&gz).unwrap(), flate2::Compression::default());
    enc.write_all(content.as_bytes()).unwrap();
    enc.finish().unwrap();
    let zst = dir.path().join("t.csv.zst");
    std::fs::write(&zst, zstd::encode_all(content.as_bytes(), 0).unwrap()).unwrap();
    for path in [gz, zst] {
        let ds =
            Dataset::open(vec![path.display().to_string()], DatasetOptions { chunk_size: 1, ..Default::default() })
                .unwrap();
        assert_eq!(ds.format(), Format::Csv);
        let (splits, batches) = read_split_by_split(&ds);
        assert_eq!(splits.len(), 1);
        assert_eq!(splits[0].range, SplitRange::Whole);
        assert_eq!(strings(&batches, 1), ["a\nb", "plain"]);
    }
}

#[test]
fn generated_data_reads_back_in_any_chunking() {
    use fanout_datasets::generator::{Amount, GenKind, GenSpec, generate};
    let dir = tempfile::tempdir().unwrap();
    for kind in GenKind::ALL {
        let path = dir.path().join(format!("g.{}", kind.format().extension()));
        let stats = generate(&GenSpec { kind, amount: Amount::Rows(9000), seed: 3 }, &path).unwrap();
        assert_eq!(stats.rows, 9000);
        let mut counts = vec![];
        for chunk in [1 << 12, 1 << 16, 1 << 30] {
            let ds = Dataset::open(
                vec![path.display().to_string()],
                DatasetOptions { chunk_size: chunk, ..Default::default() },
            )
            .unwrap();
            let (splits, batches) = read_split_by_split(&ds);
            let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
            counts.push(rows);
            if kind != GenKind::Parquet && chunk < stats.bytes {
                assert!(splits.len() > 1, "{kind}: one split at chunk {chunk}");
            }
            if kind == GenKind::Csv {
                // ids are consecutive: no record lost, doubled or cut.
                let ids: Vec<i64> =
                    batches.iter().flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec()).collect();
                assert_eq!(ids, (0..9000).collect::<Vec<_>>());
            }
        }
        assert_eq!(counts, [9000, 9000, 9000], "{kind}");
    }
}

#[test]
fn a_chunk_size_range_splits_every_format_into_sizes_across_it() {
    use fanout_datasets::generator::{Amount, GenKind, GenSpec, generate};
    let dir = tempfile::tempdir().unwrap();
    for kind in GenKind::ALL {
        let path = dir.path().join(format!("r.{}", kind.format().extension()));
        let stats = generate(&GenSpec { kind, amount: Amount::Rows(40_000), seed: 9 }, &path).unwrap();
        let opts = DatasetOptions { chunk_size: 1 << 12, chunk_size_max: Some(1 << 16), ..Default::default() };
        assert!(opts.chunks().is_range());
        let ds = Dataset::open(vec![path.display().to_string()], opts).unwrap();
        let (splits, batches) = read_split_by_split(&ds);
        assert_eq!(batches.iter().map(RecordBatch::num_rows).sum::<usize>(), 40_000, "{kind}");
        if kind == GenKind::Parquet {
            // Row groups bound its splits: they only group.
            continue;
        }
        // The ranges tile the file (read_split_by_split checks): the last
        // one is what was left, not a target.
        let mut sizes: Vec<u64> = splits.iter().map(Split::bytes).collect();
        sizes.pop();
        assert!(sizes.iter().sum::<u64>() < stats.bytes);
        sizes.sort_unstable();
        // Sizes cover the range: the smallest within 2x of its bottom, the
        // largest within 2x of its top, and the median near the middle on a
        // log scale (16 KiB).
        let (min, max, mid) = (sizes[0], sizes[sizes.len() - 1], sizes[sizes.len() / 2]);
        assert!(min < 1 << 13 && max > 1 << 15, "{kind}: {min}..{max}");
        assert!((1 << 13..1 << 15).contains(&mid), "{kind}: median {mid}");
    }
    // The same targets every time: the sequence is fixed, not drawn.
    let c = fanout_datasets::ChunkSize { min: 1000, max: 64_000 };
    let a: Vec<u64> = (0..50).map(|i| c.nth(i)).collect();
    assert_eq!(a, (0..50).map(|i| c.nth(i)).collect::<Vec<_>>());
    assert!(a.iter().all(|&x| (1000..=64_000).contains(&x)));
    assert_eq!(fanout_datasets::ChunkSize::fixed(7).nth(3), 7);
}

#[test]
fn projected_datasets_read_the_same_values_of_fewer_columns() {
    use fanout_datasets::generator::{Amount, GenKind, GenSpec, generate};
    let dir = tempfile::tempdir().unwrap();
    for kind in GenKind::ALL {
        let path = dir.path().join(format!("p.{}", kind.format().extension()));
        generate(&GenSpec { kind, amount: Amount::Rows(3000), seed: 5 }, &path).unwrap();
        let ds = Dataset::open(
            vec![path.display().to_string()],
            DatasetOptions { chunk_size: 1 << 14, ..Default::default() },
        )
        .unwrap();
        let names: Vec<String> = ds.schema().fields().iter().map(|f| f.name().clone()).collect();
        assert!(ds.project(&names).unwrap().is_none(), "{kind}: every column is no projection");
        assert!(ds.project(&["no_such".to_string()]).is_err(), "{kind}: an unknown column");
        if names.len() < 2 {
            assert!(ds.project(&names[..1]).unwrap().is_none(), "{kind}: one column, nothing to skip");
            continue;
        }
        // Asked for out of order: read in the files' order.
        let asked = vec![names[names.len() - 1].clone(), names[0].clone()];
        let projected = ds.project(&asked).unwrap().expect("fewer columns");
        assert_eq!(projected.projection(), Some(&[0, names.len() - 1][..]));
        let (_, full) = read_split_by_split(&ds);
        let (_, part) = read_split_by_split(&projected);
        let want: Vec<RecordBatch> = full.iter().map(|b| b.project(&[0, names.len() - 1]).unwrap()).collect();
        assert_eq!(part, want, "{kind}");
        assert_eq!(part[0].schema(), projected.schema());
    }
}

#[test]
fn a_bad_value_in_a_column_not_read_is_not_seen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.csv");
    std::fs::write(&path, "id,n\n1,2\n2,3\n").unwrap();
    let schema =
        Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, true), Field::new("n", DataType::Int64, true)]));
    let ds = open(&path, Format::Csv, 1 << 20, CsvOptions::default(), Some(schema));
    std::fs::write(&path, "id,n\n1,2\n2,x\n").unwrap();
    let read = |ds: &Dataset| -> Result<Vec<RecordBatch>, fanout_datasets::Error> {
        let split = ds.splits().next().unwrap().unwrap();
        ds.read(&split)?.collect()
    };
    assert!(read(&ds).is_err(), "`x` is not an int64");
    let ids = read(&ds.project(&["id".to_string()]).unwrap().unwrap()).unwrap();
    assert_eq!(ids[0].column(0).as_primitive::<Int64Type>().values().to_vec(), vec![1, 2]);
}

#[test]
fn a_kept_csv_decoder_reports_a_bad_record_as_a_fresh_read_does_and_reads_on() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.csv");
    std::fs::write(&path, "id,n\n1,2\n2,3\n3,x\n4,5\n5,6,7\n6,7\n").unwrap();
    let schema =
        Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, true), Field::new("n", DataType::Int64, true)]));
    let ds = open(&path, Format::Csv, 1, CsvOptions::default(), Some(schema));
    let splits: Vec<Split> = ds.splits().collect::<Result<_, _>>().unwrap();
    assert_eq!(splits.len(), 6);
    // One worker's handles (its kept decoder) for every split in turn.
    let mut files = OpenFiles::default();
    let results: Vec<Result<Vec<RecordBatch>, String>> = splits
        .iter()
        .map(|s| ds.read_with(s, &mut files).and_then(|b| b.collect()).map_err(|e| e.to_string()))
        .collect();
    for (i, (s, r)) in splits.iter().zip(&results).enumerate() {
        let fresh = ds.read(s).and_then(|b| b.collect::<Result<Vec<_>, _>>()).map_err(|e| e.to_string());
        assert_eq!(r, &fresh, "split {i}");
    }
    let ids =
        |r: &Result<Vec<RecordBatch>, String>| r.as_ref().unwrap()[0].column(0).as_primitive::<Int64Type>().value(0);
    assert_eq!([0, 1, 3, 5].map(|i| ids(&results[i])), [1, 2, 4, 6]);
    let bad_value = results[2].as_ref().unwrap_err();
    assert!(bad_value.contains("line 4"), "{bad_value}");
    let bad_record = results[4].as_ref().unwrap_err();
    assert!(bad_record.contains("line 6"), "{bad_record}");
}

#[test]
fn a_last_split_ending_inside_a_quote_leaves_no_state_behind() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.csv");
    // The file ends inside an unterminated quote, after a newline.
    std::fs::write(&path, "1\n2\n\"x\n").unwrap();
    let schema = Arc::new(Schema::new(vec![Field::new("a", DataType::Utf8, true)]));
    let csv = CsvOptions { header: false, ..CsvOptions::default() };
    let ds = open(&path, Format::Csv, 1, csv, Some(schema));
    let splits: Vec<Split> = ds.splits().collect::<Result<_, _>>().unwrap();
    assert_eq!(splits.len(), 3);
    // One worker's handles for every split, twice over: the last split must
    // not leave its kept decoder inside the quote for the next read.
    let mut files = OpenFiles::default();
    for (i, s) in splits.iter().chain(&splits).enumerate() {
        let kept = ds.read_all_with(s, &mut files).map_err(|e| e.to_string());
        let fresh = ds.read(s).and_then(|b| b.collect::<Result<Vec<_>, _>>()).map_err(|e| e.to_string());
        assert_eq!(kept, fresh, "read {i}");
    }
}
