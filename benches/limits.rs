//! The physical limits: hand-written rayon programs for single workloads,
//! with no engine at all, to measure fanout against in the same command
//! (see benches/macro.sh). Not a criterion benchmark: run it with
//! `cargo bench --bench limits -- wordcount FILE` or `-- pi CHUNKS SAMPLES`.
//!
//! - wordcount: 16 MiB newline-aligned chunks read with pread, words
//!   (maximal runs of non-ASCII-whitespace bytes) counted per chunk in a
//!   hashbrown map, maps merged, top 100 by count descending then word.
//! - pi: CHUNKS chunks of SAMPLES points each from SplitMix64, in parallel.
//! - windowcount: the stream benchmark's count (benches/stream.py): every
//!   `.jsonl` file of DIR read whole, in parallel, each line's `page`,
//!   `ts` (RFC 3339, to the millisecond) and `n` found by scanning for
//!   their keys, counted and summed per (10 s window, page) in a hashbrown
//!   map, maps merged; prints the windows, rows and records.

use std::fs::File;
use std::os::unix::fs::FileExt;

use hashbrown::HashMap;
use rayon::prelude::*;

const CHUNK: u64 = 16 << 20;

fn chunks(file: &File, len: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut buf = vec![0u8; 64 * 1024];
    while start < len {
        let mut end = (start + CHUNK).min(len);
        if end < len {
            // Move the end past the next newline.
            loop {
                let n = file.read_at(&mut buf, end - 1).unwrap();
                if n == 0 {
                    end = len;
                    break;
                }
                if let Some(i) = memchr::memchr(b'\n', &buf[..n]) {
                    end = end - 1 + i as u64 + 1;
                    break;
                }
                end += n as u64;
            }
        }
        out.push((start, end));
        start = end;
    }
    out
}

fn wordcount(path: &str) {
    let file = File::open(path).unwrap();
    let len = file.metadata().unwrap().len();
    let total: HashMap<Vec<u8>, u64> = chunks(&file, len)
        .into_par_iter()
        .map(|(start, end)| {
            let mut buf = vec![0u8; (end - start) as usize];
            file.read_exact_at(&mut buf, start).unwrap();
            let mut counts: HashMap<&[u8], u64> = HashMap::new();
            for w in buf.split(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)) {
                if !w.is_empty() {
                    *counts.entry(w).or_insert(0) += 1;
                }
            }
            counts.into_iter().map(|(w, c)| (w.to_vec(), c)).collect::<HashMap<Vec<u8>, u64>>()
        })
        .reduce(HashMap::new, |mut a, b| {
            for (w, c) in b {
                *a.entry(w).or_insert(0) += c;
            }
            a
        });
    let mut rows: Vec<(Vec<u8>, u64)> = total.into_iter().collect();
    rows.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    for (w, c) in rows.iter().take(100) {
        println!("{},{c}", String::from_utf8_lossy(w));
    }
}

fn splitmix(state: &mut u64) -> f64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    ((z ^ (z >> 31)) >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

fn pi(chunks: u64, samples: u64) {
    let inside: u64 = (0..chunks)
        .into_par_iter()
        .map(|i| {
            let mut s = 42 ^ i.wrapping_mul(0xD1B5_4A32_D192_ED03);
            (0..samples)
                .filter(|_| {
                    let (x, y) = (splitmix(&mut s), splitmix(&mut s));
                    x * x + y * y <= 1.0
                })
                .count() as u64
        })
        .sum();
    println!("{inside},{} pi={}", chunks * samples, 4.0 * inside as f64 / (chunks * samples) as f64);
}

/// Days from 1970-01-01 to the civil date (Howard Hinnant's algorithm).
fn days(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468
}

/// `2026-12-07T10:00:00.123Z` as epoch milliseconds.
fn millis(ts: &[u8]) -> i64 {
    let n = |a: usize, b: usize| ts[a..b].iter().fold(0i64, |v, c| v * 10 + (c - b'0') as i64);
    let (secs, ms) = (n(17, 19), if ts.len() > 20 && ts[19] == b'.' { n(20, 23) } else { 0 });
    ((days(n(0, 4), n(5, 7), n(8, 10)) * 24 + n(11, 13)) * 60 + n(14, 16)) * 60_000 + secs * 1000 + ms
}

/// The text after `key` in `line` up to `end`.
fn field<'a>(line: &'a [u8], key: &[u8], end: u8) -> &'a [u8] {
    let at = memchr::memmem::find(line, key).expect("the field is there") + key.len();
    let len = memchr::memchr(end, &line[at..]).unwrap_or(line.len() - at);
    &line[at..at + len]
}

fn windowcount(dir: &str) {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    files.sort();
    type Counts = HashMap<(i64, Vec<u8>), (u64, i64)>;
    let total: Counts = files
        .par_iter()
        .map(|path| {
            let text = std::fs::read(path).unwrap();
            let mut counts: HashMap<(i64, &[u8]), (u64, i64)> = HashMap::new();
            for line in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                let page = field(line, b"\"page\": \"", b'"');
                let window = millis(field(line, b"\"ts\": \"", b'"')).div_euclid(10_000) * 10_000;
                let n: i64 = std::str::from_utf8(field(line, b"\"n\": ", b'}')).unwrap().trim().parse().unwrap();
                let c = counts.entry((window, page)).or_insert((0, 0));
                c.0 += 1;
                c.1 += n;
            }
            counts.into_iter().map(|((w, p), c)| ((w, p.to_vec()), c)).collect::<Counts>()
        })
        .reduce(HashMap::new, |mut a, b| {
            for (k, (c, n)) in b {
                let e = a.entry(k).or_insert((0, 0));
                e.0 += c;
                e.1 += n;
            }
            a
        });
    let windows: std::collections::BTreeSet<i64> = total.keys().map(|(w, _)| *w).collect();
    let records: u64 = total.values().map(|(c, _)| c).sum();
    println!("{} windows, {} rows, {records} records", windows.len(), total.len());
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["wordcount", path] => wordcount(path),
        ["pi", chunks, samples] => pi(chunks.parse().unwrap(), samples.parse().unwrap()),
        ["windowcount", dir] => windowcount(dir),
        _ => eprintln!("usage: limits wordcount FILE | limits pi CHUNKS SAMPLES | limits windowcount DIR"),
    }
}
