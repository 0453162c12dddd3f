//! Deterministic synthetic data: `fanout datasets gen KIND`.
//!
//! Output is made in blocks of rows; block `k` draws from its own random
//! generator seeded from `(seed, k)`, so blocks are made in parallel and the
//! same seed gives the same bytes whatever the thread count. `--size` stops
//! at the last whole record that fits (parquet: at the first row group past
//! the size); `--rows` writes exactly that many records.

mod events;
mod text;

use std::fmt;
use std::io::Write;
use std::path::Path;
use std::str::FromStr;

use rand::SeedableRng;
use rand_pcg::Pcg64Mcg;
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::format::Format;

pub use events::EVENT_COLUMNS;

/// What to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GenKind {
    /// Lines of Zipf-distributed words from a 50,000-word vocabulary.
    Text,
    /// An events table as csv, with a header.
    Csv,
    /// Nested events as JSON lines.
    Jsonl,
    /// The events table as parquet.
    Parquet,
    /// One integer column `i` counting from 0, as csv: task seeds for
    /// parameter sweeps and Monte Carlo jobs.
    Range,
}

impl GenKind {
    /// Every kind.
    pub const ALL: [GenKind; 5] = [GenKind::Text, GenKind::Csv, GenKind::Jsonl, GenKind::Parquet, GenKind::Range];

    /// Its name on the command line and in job files.
    pub fn name(self) -> &'static str {
        match self {
            GenKind::Text => "text",
            GenKind::Csv => "csv",
            GenKind::Jsonl => "jsonl",
            GenKind::Parquet => "parquet",
            GenKind::Range => "range",
        }
    }

    /// The format of what it writes.
    pub fn format(self) -> Format {
        match self {
            GenKind::Text => Format::Text,
            GenKind::Csv | GenKind::Range => Format::Csv,
            GenKind::Jsonl => Format::Jsonl,
            GenKind::Parquet => Format::Parquet,
        }
    }
}

impl fmt::Display for GenKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for GenKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        GenKind::ALL.into_iter().find(|k| k.name() == s).ok_or_else(|| {
            let known: Vec<_> = GenKind::ALL.iter().map(|k| k.name()).collect();
            format!("unknown generator `{s}`, expected one of: {}", known.join(", "))
        })
    }
}

/// How much to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Amount {
    /// About this many bytes (never more, for the line formats).
    Bytes(u64),
    /// Exactly this many records.
    Rows(u64),
}

/// A generator run: kind, amount and seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GenSpec {
    /// What to make.
    pub kind: GenKind,
    /// How much of it.
    pub amount: Amount,
    /// The seed: the same seed gives the same bytes.
    pub seed: u64,
}

/// What a generator run wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GenStats {
    /// Records written.
    pub rows: u64,
    /// Bytes written.
    pub bytes: u64,
}

/// The temporary file [`generate`] writes beside `out` (this process's),
/// for whoever must remove it should the process be stopped.
pub fn temp_path(out: &Path) -> std::path::PathBuf {
    let name = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    out.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}

/// Writes the data `spec` describes to `out`, atomically: a temporary file
/// beside it is renamed into place when complete.
pub fn generate(spec: &GenSpec, out: &Path) -> Result<GenStats> {
    let io = |e| Error::io(out, e);
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    let tmp = temp_path(out);
    let result = (|| {
        let file = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let stats = match spec.kind {
            GenKind::Parquet => events::write_parquet(spec, file, &tmp)?,
            _ => {
                let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
                let stats = generate_lines(spec, &mut w).map_err(|e| Error::io(&tmp, e))?;
                let file = w.into_inner().map_err(|e| Error::io(&tmp, e.into_error()))?;
                file.sync_all().map_err(|e| Error::io(&tmp, e))?;
                stats
            }
        };
        std::fs::rename(&tmp, out).map_err(io)?;
        Ok(stats)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Writes a line-format kind (text, csv, jsonl) to `w`.
///
/// # Panics
/// If `spec.kind` is parquet, which is not a line format.
pub fn generate_lines(spec: &GenSpec, w: &mut impl Write) -> std::io::Result<GenStats> {
    match spec.kind {
        GenKind::Text => write_blocks(&text::TextGen::new(spec.seed), spec, w),
        GenKind::Csv => write_blocks(&events::CsvGen, spec, w),
        GenKind::Jsonl => write_blocks(&events::JsonlGen, spec, w),
        GenKind::Range => write_blocks(&RangeGen, spec, w),
        GenKind::Parquet => panic!("parquet is not a line format"),
    }
}

/// Rows per generated block.
const BLOCK_ROWS: u64 = 4096;

/// A generator of blocks of line-delimited records.
trait BlockGen: Sync {
    /// Bytes before the first record (a csv header).
    fn header(&self) -> &[u8] {
        b""
    }
    /// Appends `rows` records, the first numbered `first_row`, to `out`,
    /// pushing the end offset of each record to `ends`.
    fn block(&self, rng: &mut Pcg64Mcg, first_row: u64, rows: usize, out: &mut Vec<u8>, ends: &mut Vec<usize>);
}

/// Integers from 0, one a line, under the header `i`.
struct RangeGen;

impl BlockGen for RangeGen {
    fn header(&self) -> &[u8] {
        b"i\n"
    }

    fn block(&self, _: &mut Pcg64Mcg, first_row: u64, rows: usize, out: &mut Vec<u8>, ends: &mut Vec<usize>) {
        for i in first_row..first_row + rows as u64 {
            let _ = writeln!(out, "{i}");
            ends.push(out.len());
        }
    }
}

/// The random generator of block `block` of a run seeded with `seed`.
fn block_rng(seed: u64, block: u64) -> Pcg64Mcg {
    let mixed = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ block.wrapping_mul(0xD1B5_4A32_D192_ED03);
    Pcg64Mcg::seed_from_u64(mixed)
}

fn write_blocks(g: &impl BlockGen, spec: &GenSpec, w: &mut impl Write) -> std::io::Result<GenStats> {
    let header = g.header();
    let mut stats = GenStats { rows: 0, bytes: 0 };
    if let Amount::Bytes(b) = spec.amount
        && (header.len() as u64) > b
    {
        return Ok(stats);
    }
    w.write_all(header)?;
    stats.bytes += header.len() as u64;
    let wave = 4 * rayon::current_num_threads() as u64;
    let mut next = 0u64;
    loop {
        let blocks: Vec<(Vec<u8>, Vec<usize>)> = (next..next + wave)
            .into_par_iter()
            .map(|k| {
                let mut rng = block_rng(spec.seed, k);
                let (mut out, mut ends) = (Vec::with_capacity(BLOCK_ROWS as usize * 80), Vec::new());
                g.block(&mut rng, k * BLOCK_ROWS, BLOCK_ROWS as usize, &mut out, &mut ends);
                (out, ends)
            })
            .collect();
        next += wave;
        for (out, ends) in blocks {
            let take = match spec.amount {
                Amount::Rows(n) => ends.len().min((n - stats.rows) as usize),
                Amount::Bytes(b) => ends.partition_point(|&e| e as u64 <= b - stats.bytes),
            };
            let cut = if take == 0 { 0 } else { ends[take - 1] };
            w.write_all(&out[..cut])?;
            stats.rows += take as u64;
            stats.bytes += cut as u64;
            if take < ends.len() {
                return Ok(stats);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn make(kind: GenKind, amount: Amount, seed: u64) -> (Vec<u8>, GenStats) {
        let mut out = vec![];
        let stats = generate_lines(&GenSpec { kind, amount, seed }, &mut out).unwrap();
        assert_eq!(stats.bytes, out.len() as u64);
        (out, stats)
    }

    #[test]
    fn same_seed_same_bytes_and_exact_amounts() {
        for kind in [GenKind::Text, GenKind::Csv, GenKind::Jsonl] {
            let (a, sa) = make(kind, Amount::Bytes(100_000), 7);
            let (b, _) = make(kind, Amount::Bytes(100_000), 7);
            let (c, _) = make(kind, Amount::Bytes(100_000), 8);
            assert_eq!(a, b, "{kind}");
            assert_ne!(a, c, "{kind}");
            assert!(sa.bytes <= 100_000 && sa.bytes > 99_000, "{kind}: {}", sa.bytes);
            assert!(a.ends_with(b"\n"));
            let (_, s) = make(kind, Amount::Rows(10_001), 7);
            assert_eq!(s.rows, 10_001, "{kind}");
        }
        let (text, s) = make(GenKind::Text, Amount::Rows(5000), 1);
        assert_eq!(text.iter().filter(|&&b| b == b'\n').count(), 5000);
        assert_eq!(s.rows, 5000);
        let (range, _) = make(GenKind::Range, Amount::Rows(3), 9);
        assert_eq!(range, b"i\n0\n1\n2\n");
    }

    #[test]
    fn unknown_kind_lists_known_ones() {
        assert_eq!(
            "xml".parse::<GenKind>().unwrap_err(),
            "unknown generator `xml`, expected one of: text, csv, jsonl, parquet, range"
        );
    }
}
