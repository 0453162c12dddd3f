//! The events generator: one table written as csv, jsonl or parquet.
//!
//! Columns: `id` (row number), `user_id` (high cardinality, up to
//! 1,000,000), `country` (200 codes, Zipf), `category` (50 values, uniform),
//! `amount` (two decimals, 2% null), `ts` (a second in 2024) and `note`
//! (mostly null; some notes hold commas, doubled quotes and newlines, so the
//! csv has RFC 4180 quoted fields that span lines).

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, LazyLock};

use arrow_array::builder::{Float64Builder, Int64Builder, StringBuilder, TimestampSecondBuilder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use rand::RngExt;
use rand_distr::Distribution;
use rand_distr::weighted::WeightedAliasIndex;
use rand_pcg::Pcg64Mcg;
use rayon::prelude::*;

use super::{Amount, BLOCK_ROWS, BlockGen, GenSpec, GenStats, block_rng};
use crate::error::{Error, Result};

/// The event table's columns, in order.
pub const EVENT_COLUMNS: [&str; 7] = ["id", "user_id", "country", "category", "amount", "ts", "note"];

const COUNTRIES: usize = 200;
const CATEGORIES: usize = 50;
/// 2024-01-01T00:00:00Z.
const TS_BASE: i64 = 1_704_067_200;
const TS_SPAN: i64 = 366 * 86_400;

const NOTES: [&str; 8] = [
    "ok",
    "gift",
    "repeat customer",
    "said \"thanks\", then left",
    "first line\nsecond line",
    "a, b, and c",
    "quote \" inside",
    "crlf\r\nline",
];

struct Tables {
    countries: Vec<String>,
    categories: Vec<String>,
    country_zipf: WeightedAliasIndex<f64>,
}

static TABLES: LazyLock<Tables> = LazyLock::new(|| Tables {
    countries: (0..COUNTRIES)
        .map(|i| format!("{}{}", (b'A' + (i / 26) as u8) as char, (b'A' + (i % 26) as u8) as char))
        .collect(),
    categories: (0..CATEGORIES).map(|i| format!("cat_{i:02}")).collect(),
    country_zipf: WeightedAliasIndex::new((1..=COUNTRIES).map(|r| 1.0 / r as f64).collect()).expect("valid weights"),
});

/// One event.
struct Event {
    id: u64,
    user_id: u64,
    country: &'static str,
    category: &'static str,
    amount: Option<f64>,
    ts: i64,
    note: Option<&'static str>,
    tags: u8,
}

fn event(rng: &mut Pcg64Mcg, id: u64) -> Event {
    let t = &*TABLES;
    let note = match rng.random_range(0..100) {
        0..85 => None,
        85..95 => Some(NOTES[rng.random_range(0..3)]),
        _ => Some(NOTES[rng.random_range(3..NOTES.len())]),
    };
    Event {
        id,
        user_id: rng.random_range(1..=1_000_000),
        country: &t.countries[t.country_zipf.sample(rng)],
        category: &t.categories[rng.random_range(0..CATEGORIES)],
        amount: (rng.random_range(0..50) != 0).then(|| rng.random_range(0..100_000) as f64 / 100.0),
        ts: TS_BASE + rng.random_range(0..TS_SPAN),
        note,
        tags: rng.random_range(0..4),
    }
}

/// `YYYY-MM-DDTHH:MM:SS` for a Unix time.
fn iso(ts: i64) -> String {
    let (days, secs) = (ts.div_euclid(86_400), ts.rem_euclid(86_400));
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
}

fn write_amount(out: &mut Vec<u8>, amount: f64) {
    let _ = write!(out, "{amount:.2}");
}

/// The events as csv.
pub(crate) struct CsvGen;

impl BlockGen for CsvGen {
    fn header(&self) -> &[u8] {
        b"id,user_id,country,category,amount,ts,note\n"
    }

    fn block(&self, rng: &mut Pcg64Mcg, first_row: u64, rows: usize, out: &mut Vec<u8>, ends: &mut Vec<usize>) {
        for i in 0..rows as u64 {
            let e = event(rng, first_row + i);
            let _ = write!(out, "{},{},{},{},", e.id, e.user_id, e.country, e.category);
            if let Some(a) = e.amount {
                write_amount(out, a);
            }
            let _ = write!(out, ",{},", iso(e.ts));
            if let Some(note) = e.note {
                if note.contains([',', '"', '\n', '\r']) {
                    out.push(b'"');
                    out.extend_from_slice(note.replace('"', "\"\"").as_bytes());
                    out.push(b'"');
                } else {
                    out.extend_from_slice(note.as_bytes());
                }
            }
            out.push(b'\n');
            ends.push(out.len());
        }
    }
}

/// The events as nested JSON lines.
pub(crate) struct JsonlGen;

const TAGS: [&str; 4] = ["new", "mobile", "promo", "retry"];

impl BlockGen for JsonlGen {
    fn block(&self, rng: &mut Pcg64Mcg, first_row: u64, rows: usize, out: &mut Vec<u8>, ends: &mut Vec<usize>) {
        for i in 0..rows as u64 {
            let e = event(rng, first_row + i);
            let _ = write!(
                out,
                r#"{{"id":{},"ts":"{}","user":{{"id":{},"country":"{}"}},"event":{{"category":"{}","amount":"#,
                e.id,
                iso(e.ts),
                e.user_id,
                e.country,
                e.category
            );
            match e.amount {
                Some(a) => write_amount(out, a),
                None => out.extend_from_slice(b"null"),
            }
            out.extend_from_slice(b",\"tags\":[");
            for t in 0..e.tags as usize {
                if t > 0 {
                    out.push(b',');
                }
                let _ = write!(out, "\"{}\"", TAGS[(e.id as usize + t) % TAGS.len()]);
            }
            out.extend_from_slice(b"]},\"note\":");
            match e.note {
                Some(n) => serde_json::to_writer(&mut *out, n).expect("writing to a Vec"),
                None => out.extend_from_slice(b"null"),
            }
            out.extend_from_slice(b"}\n");
            ends.push(out.len());
        }
    }
}

/// The schema of the events table in parquet.
pub(crate) fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("user_id", DataType::Int64, false),
        Field::new("country", DataType::Utf8, false),
        Field::new("category", DataType::Utf8, false),
        Field::new("amount", DataType::Float64, true),
        Field::new("ts", DataType::Timestamp(TimeUnit::Second, None), false),
        Field::new("note", DataType::Utf8, true),
    ]))
}

fn batch(seed: u64, block: u64, rows: usize) -> RecordBatch {
    let mut rng = block_rng(seed, block);
    let mut id = Int64Builder::with_capacity(rows);
    let mut user = Int64Builder::with_capacity(rows);
    let mut country = StringBuilder::new();
    let mut category = StringBuilder::new();
    let mut amount = Float64Builder::with_capacity(rows);
    let mut ts = TimestampSecondBuilder::with_capacity(rows);
    let mut note = StringBuilder::new();
    for i in 0..rows as u64 {
        let e = event(&mut rng, block * BLOCK_ROWS + i);
        id.append_value(e.id as i64);
        user.append_value(e.user_id as i64);
        country.append_value(e.country);
        category.append_value(e.category);
        amount.append_option(e.amount);
        ts.append_value(e.ts);
        note.append_option(e.note);
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(id.finish()),
        Arc::new(user.finish()),
        Arc::new(country.finish()),
        Arc::new(category.finish()),
        Arc::new(amount.finish()),
        Arc::new(ts.finish()),
        Arc::new(note.finish()),
    ];
    RecordBatch::try_new(schema(), columns).expect("columns fit the schema")
}

/// Writes the events as parquet to `file` (at `path`, for errors).
pub(crate) fn write_parquet(spec: &GenSpec, file: File, path: &Path) -> Result<GenStats> {
    let bad = |e: parquet::errors::ParquetError| Error::invalid(path, e);
    let mut writer = crate::parquet::writer(file, schema(), crate::writer::PARQUET_ROW_GROUP_ROWS).map_err(bad)?;
    let wave = 4 * rayon::current_num_threads() as u64;
    let mut rows = 0u64;
    let mut next = 0u64;
    'outer: loop {
        let batches: Vec<RecordBatch> =
            (next..next + wave).into_par_iter().map(|k| batch(spec.seed, k, BLOCK_ROWS as usize)).collect();
        next += wave;
        for b in batches {
            let b = match spec.amount {
                Amount::Rows(n) if rows >= n => break 'outer,
                Amount::Rows(n) => b.slice(0, b.num_rows().min((n - rows) as usize)),
                Amount::Bytes(size) if writer.size() >= size => {
                    break 'outer;
                }
                Amount::Bytes(_) => b,
            };
            writer.write(&b).map_err(bad)?;
            rows += b.num_rows() as u64;
        }
    }
    let file = writer.into_inner().map_err(bad)?;
    file.sync_all().map_err(|e| Error::io(path, e))?;
    let bytes = file.metadata().map_err(|e| Error::io(path, e))?.len();
    Ok(GenStats { rows, bytes })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_dates_are_right() {
        assert_eq!(iso(TS_BASE), "2024-01-01T00:00:00");
        assert_eq!(iso(TS_BASE + 59 * 86_400 + 3_723), "2024-02-29T01:02:03");
        assert_eq!(iso(TS_BASE + 365 * 86_400 + 86_399), "2024-12-31T23:59:59");
        assert_eq!(iso(0), "1970-01-01T00:00:00");
    }
}
