//! The built-in workloads of `fanout bench` — word count, csv group-by,
//! pi, dispatch, exec, lambda, stream — as the same jobs `benches/macro.py`
//! and `benches/stream.py` run,
//! with their inputs generated once into the cache, and the peers found on
//! this machine: the hand-written rayon limit (benches/limits.rs, built
//! from the repository), DuckDB and Polars (their Python packages), GNU
//! parallel. A peer that is missing is skipped, with how to get it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::Context as _;
use fanout_datasets::generator::{Amount, GenKind, GenSpec, generate};
use fanout_engine::report::Skipped;

/// Every workload, in the order they run.
pub const ALL: [&str; 7] = ["wordcount", "groupby", "pi", "dispatch", "exec", "lambda", "stream"];

/// A program to time: its name, command line and environment.
#[derive(Debug, Clone)]
pub struct Program {
    pub name: String,
    pub cmd: Vec<String>,
    pub env: Vec<(String, String)>,
}

impl Program {
    fn new(name: &str, cmd: &[&str]) -> Program {
        Program { name: name.to_string(), cmd: cmd.iter().map(|s| s.to_string()).collect(), env: Vec::new() }
    }

    fn env(mut self, k: &str, v: impl ToString) -> Program {
        self.env.push((k.to_string(), v.to_string()));
        self
    }
}

/// A workload at a thread count: fanout's program first, then the peers.
#[derive(Debug, Clone)]
pub struct Workload {
    pub id: &'static str,
    pub title: String,
    pub unit: &'static str,
    pub amount: f64,
    pub programs: Vec<Program>,
    pub skipped: Vec<Skipped>,
}

/// Where the suite runs and what it may use.
pub struct Setup {
    pub exe: PathBuf,
    pub quick: bool,
    pub compare: bool,
    /// Inputs, generated once.
    pub cache: PathBuf,
    /// Job files and outputs.
    pub work: PathBuf,
    /// The word count's text size.
    pub text_size: u64,
}

/// The peers found on this machine.
pub struct Peers {
    limit: Result<PathBuf, String>,
    duckdb: Result<(), String>,
    polars: Result<(), String>,
    parallel: Result<(), String>,
    python: bool,
}

impl Peers {
    /// Looks for each peer.
    pub fn find(exe: &Path) -> Peers {
        let module = |m: &str| {
            let ok = Command::new("python3")
                .args(["-c", &format!("import {m}")])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok { Ok(()) } else { Err(format!("the `{m}` Python package is not installed (pip install {m})")) }
        };
        let parallel = Command::new("parallel")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        Peers {
            limit: limits_binary(exe),
            duckdb: module("duckdb"),
            polars: module("polars"),
            parallel: if parallel {
                Ok(())
            } else {
                Err("GNU parallel is not on PATH (apt-get install parallel)".to_string())
            },
            python: Command::new("python3").arg("--version").stdout(Stdio::null()).status().is_ok_and(|s| s.success()),
        }
    }
}

/// The hand-written limit: `FANOUT_LIMITS`, or the newest `limits-*` that
/// `cargo bench --bench limits --no-run` left beside this binary.
fn limits_binary(exe: &Path) -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("FANOUT_LIMITS") {
        return Ok(PathBuf::from(p));
    }
    let deps = exe.parent().map(|d| d.join("deps")).unwrap_or_default();
    let newest = std::fs::read_dir(&deps)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with("limits-") && !name.contains('.')
        })
        .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok());
    newest.map(|e| e.path()).ok_or_else(|| {
        "the hand-written rayon limit is not built (in the repository: cargo bench --bench limits --no-run, or \
         set FANOUT_LIMITS)"
            .to_string()
    })
}

/// Generates `name` in the cache once.
fn input(setup: &Setup, name: &str, kind: GenKind, amount: Amount) -> anyhow::Result<String> {
    let path = setup.cache.join(name);
    if !path.is_file() {
        std::fs::create_dir_all(&setup.cache).with_context(|| setup.cache.display().to_string())?;
        generate(&GenSpec { kind, amount, seed: 1 }, &path)
            .with_context(|| format!("generating {}", path.display()))?;
    }
    Ok(path.display().to_string())
}

/// A file of `n` lines `a`, once.
fn tiny(setup: &Setup, n: u64) -> anyhow::Result<String> {
    let path = setup.cache.join(format!("tiny-{n}.txt"));
    if !path.is_file() {
        std::fs::create_dir_all(&setup.cache)?;
        std::fs::write(&path, "a\n".repeat(n as usize)).with_context(|| path.display().to_string())?;
    }
    Ok(path.display().to_string())
}

/// `files` JSON-lines files of `records` click events in all, as
/// benches/stream.py writes them (`{"page": "p7", "ts": "…Z", "n": 42}`,
/// a millisecond apart, up to 2 s out of order), in a directory of the
/// cache, once.
fn clicks(setup: &Setup, records: u64, files: u64) -> anyhow::Result<String> {
    use std::io::Write as _;
    let dir = setup.cache.join(format!("clicks-{records}x{files}"));
    let done = dir.join(".complete");
    if !done.is_file() {
        std::fs::create_dir_all(&dir).with_context(|| dir.display().to_string())?;
        let base = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_796_637_600);
        let per = records / files;
        let mut state = 1u64;
        for f in 0..files {
            let path = dir.join(format!("{f:04}.jsonl"));
            let mut out = std::io::BufWriter::new(std::fs::File::create(&path)?);
            for i in 0..per {
                // SplitMix64, for the page and the disorder.
                state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
                let mut z = state;
                z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                z ^= z >> 31;
                let ms = (f * per + i + 2000).saturating_sub(z % 2000);
                let ts = humantime::format_rfc3339_millis(base + std::time::Duration::from_millis(ms));
                writeln!(out, "{{\"page\": \"p{}\", \"ts\": \"{ts}\", \"n\": {}}}", (z >> 32) % 50, i % 100)?;
            }
            out.flush().with_context(|| path.display().to_string())?;
        }
        std::fs::write(&done, "")?;
    }
    Ok(dir.display().to_string())
}

/// Writes a job file; returns fanout's command line for it.
fn job(setup: &Setup, name: &str, body: &str, threads: usize) -> anyhow::Result<Program> {
    std::fs::create_dir_all(&setup.work)?;
    let path = setup.work.join(format!("{name}.toml"));
    let out = setup.work.join(format!("{name}-out.csv"));
    let text = format!("{body}\n[output]\npath = \"{}\"\nmode = \"overwrite\"\n", out.display());
    std::fs::write(&path, text).with_context(|| path.display().to_string())?;
    let exe = setup.exe.display().to_string();
    let job = path.display().to_string();
    let threads = format!("platform.concurrency={threads}");
    Ok(Program::new("fanout run", &[&exe, "run", &job, "--progress", "never", "--show", "0", "--set", &threads]))
}

fn duckdb(peers: &Peers, skipped: &mut Vec<Skipped>, name: &str, query: &str, threads: usize) -> Option<Program> {
    match &peers.duckdb {
        Ok(()) => {
            let code = format!(
                "import duckdb; duckdb.sql(\"SET threads={threads}\"); duckdb.sql(\"\"\"{query}\"\"\").fetchall()"
            );
            Some(Program::new(name, &["python3", "-c", &code]))
        }
        Err(why) => {
            skipped.push(Skipped { name: name.to_string(), why: why.clone() });
            None
        }
    }
}

/// The workload `id` at `threads`.
pub fn workload(id: &str, setup: &Setup, peers: &Peers, threads: usize) -> anyhow::Result<Workload> {
    let q = setup.quick;
    let mut peer_list: Vec<Program> = Vec::new();
    let mut skipped = Vec::new();
    let limit = |peer_list: &mut Vec<Program>, skipped: &mut Vec<Skipped>, args: &[&str]| match &peers.limit {
        Ok(bin) => {
            let mut cmd = vec![bin.display().to_string()];
            cmd.extend(args.iter().map(|s| s.to_string()));
            peer_list.push(
                Program { name: "limit (rayon, hand-written)".into(), cmd, env: Vec::new() }
                    .env("RAYON_NUM_THREADS", threads),
            );
        }
        Err(why) => skipped.push(Skipped { name: "limit (rayon, hand-written)".into(), why: why.clone() }),
    };
    let (title, unit, amount, fanout) = match id {
        "wordcount" => {
            let size = setup.text_size;
            let text = input(setup, &format!("text-{size}.txt"), GenKind::Text, Amount::Bytes(size))?;
            let chunk = if q { "1MiB" } else { "16MiB" };
            let body = format!(
                "[input]\npath = \"{text}\"\nchunk_size = \"{chunk}\"\n[[stage]]\nfunction = \"word_count\"\n[[stage]]\n\
                 name = \"total\"\nfunction = \"aggregate\"\nkey = [\"word\"]\nparams = {{ sum = [\"count\"] }}\n"
            );
            let fanout = job(setup, "wordcount", &body, threads)?;
            if setup.compare {
                limit(&mut peer_list, &mut skipped, &["wordcount", &text]);
                let query = format!(
                    "SELECT w, count(*) c FROM (SELECT unnest(string_split(line, ' ')) w FROM read_csv('{text}', \
                     columns={{'line':'VARCHAR'}}, header=false, delim='\\t', quote='', escape='', auto_detect=false)) \
                     WHERE w <> '' GROUP BY w ORDER BY c DESC, w LIMIT 100"
                );
                peer_list.extend(duckdb(peers, &mut skipped, "DuckDB", &query, threads));
            }
            let mib = std::fs::metadata(&text)?.len() as f64 / (1 << 20) as f64;
            (format!("word count, {} text", fanout_jobs::units::Size(size)), "MiB", mib, fanout)
        }
        "groupby" => {
            let rows = if q { 100_000 } else { 5_000_000 };
            let csv = input(setup, &format!("events-{rows}.csv"), GenKind::Csv, Amount::Rows(rows))?;
            let chunk = if q { "1MiB" } else { "16MiB" };
            let body = format!(
                "[input]\npath = \"{csv}\"\nchunk_size = \"{chunk}\"\n[[stage]]\nname = \"by_group\"\nfunction = \"aggregate\"\n\
                 key = [\"country\", \"category\"]\nparams = {{ count = true, sum = [\"amount\"] }}\n"
            );
            let fanout = job(setup, "groupby", &body, threads)?;
            if setup.compare {
                let query = format!(
                    "SELECT country, category, sum(amount), count(*) FROM read_csv('{csv}', header=true) GROUP BY 1, 2"
                );
                peer_list.extend(duckdb(peers, &mut skipped, "DuckDB", &query, threads));
                match &peers.polars {
                    Ok(()) => {
                        let code = format!(
                            "import polars as pl; pl.scan_csv('{csv}').group_by(['country','category'])\
                             .agg(pl.col('amount').sum(), pl.len()).collect()"
                        );
                        peer_list
                            .push(Program::new("Polars", &["python3", "-c", &code]).env("POLARS_MAX_THREADS", threads));
                    }
                    Err(why) => skipped.push(Skipped { name: "Polars".into(), why: why.clone() }),
                }
            }
            let mib = std::fs::metadata(&csv)?.len() as f64 / (1 << 20) as f64;
            (format!("csv group-by, {rows} rows"), "MiB", mib, fanout)
        }
        "pi" => {
            let (rows, samples) = if q { (100u64, 20_000u64) } else { (1000, 200_000) };
            let range = input(setup, &format!("range-{rows}.csv"), GenKind::Range, Amount::Rows(rows))?;
            let body = format!(
                "[input]\npath = \"{range}\"\nchunk_size = 16\n[[stage]]\nfunction = \"pi\"\nparams = {{ samples = {samples}, seed = 42 }}\n\
                 [[stage]]\nname = \"total\"\nfunction = \"aggregate\"\nkey = []\nparams = {{ sum = [\"inside\", \"samples\"] }}\n"
            );
            let fanout = job(setup, "pi", &body, threads)?;
            if setup.compare {
                limit(&mut peer_list, &mut skipped, &["pi", &rows.to_string(), &samples.to_string()]);
            }
            let total = (rows * samples) as f64;
            (format!("Monte Carlo pi, {total:.0e} samples"), "samples", total, fanout)
        }
        "dispatch" => {
            let n = if q { 5_000 } else { 100_000 };
            let path = tiny(setup, n)?;
            let body = format!(
                "[input]\npath = \"{path}\"\nchunk_size = 1\n[[stage]]\nfunction = \"burn\"\nparams = {{ ms = 0 }}\n"
            );
            let fanout = job(setup, "dispatch", &body, threads)?;
            (format!("dispatch, {n} empty invocations"), "invocations", n as f64, fanout)
        }
        "exec" => {
            let size = if q { 64u64 << 10 } else { 2 << 20 };
            let text = input(setup, &format!("text-{size}.txt"), GenKind::Text, Amount::Bytes(size))?;
            let body = format!(
                "[input]\npath = \"{text}\"\nchunk_size = \"1KiB\"\n[[stage]]\nfunction = {{ exec = [\"cat\"] }}\n"
            );
            let fanout = job(setup, "exec", &body, threads)?;
            if setup.compare {
                match &peers.parallel {
                    Ok(()) => {
                        let cmd = format!("parallel --pipepart -a {text} --block 1k -j{threads} cat > /dev/null");
                        peer_list.push(Program::new("GNU parallel --pipepart --block 1k cat", &["sh", "-c", &cmd]));
                    }
                    Err(why) => skipped.push(Skipped { name: "GNU parallel".into(), why: why.clone() }),
                }
            }
            let kib = std::fs::metadata(&text)?.len() as f64 / 1024.0;
            (
                format!("exec, a cat process per 1 KiB of a {} text", fanout_jobs::units::Size(size)),
                "chunks",
                kib,
                fanout,
            )
        }
        "lambda" => {
            let n = if q { 500 } else { 20_000 };
            let path = tiny(setup, n)?;
            let title = format!("lambda, {n} warm invocations of a Python function (Lambda Runtime API)");
            if !peers.python {
                let why = "python3 is not on PATH: the function runs under a Python runtime client".to_string();
                let skipped = vec![Skipped { name: "fanout run".into(), why }];
                return Ok(Workload {
                    id: ALL[5],
                    title,
                    unit: "invocations",
                    amount: n as f64,
                    programs: Vec::new(),
                    skipped,
                });
            }
            let dir = setup.cache.join("bench-lambda");
            std::fs::create_dir_all(&dir)?;
            std::fs::write(dir.join("bootstrap.py"), include_str!("../../tests/fixtures/lambda/bootstrap.py"))?;
            std::fs::write(
                dir.join("handler.py"),
                "def echo(event, context):\n    return {\"records\": event[\"records\"]}\n",
            )?;
            let bootstrap = dir.join("bootstrap.py").display().to_string();
            let body = format!(
                "[input]\npath = \"{path}\"\nchunk_size = 1\n[[stage]]\nfunction = {{ lambda = [\"python3\", \"{bootstrap}\"], \
                 handler = \"handler.echo\" }}\n"
            );
            let fanout = job(setup, "lambda", &body, threads)?;
            if setup.compare {
                let local = format!(
                    "[input]\npath = \"{path}\"\nchunk_size = 1\n[[stage]]\nfunction = \"select\"\nparams = {{ columns = [\"line\"] }}\n"
                );
                let mut p = job(setup, "lambda-local", &local, threads)?;
                p.name = "fanout, the same tasks in-process (reference)".into();
                peer_list.push(p);
            }
            (title, "invocations", n as f64, fanout)
        }
        "stream" => {
            let (records, files) = if q { (100_000u64, 4u64) } else { (2_000_000, 20) };
            let dir = clicks(setup, records, files)?;
            std::fs::create_dir_all(&setup.work)?;
            let (path, out) = (setup.work.join("stream.toml"), setup.work.join("stream-out"));
            let body = format!(
                "name = \"clicks\"\n[input]\nstream = {{ dir = \"{dir}\" }}\nformat = \"jsonl\"\n\
                 schema = [\"page:utf8\", \"ts:utf8\", \"n:int64\"]\n[stream]\nbatch_size = 10000\n\
                 window = {{ tumbling = \"10s\", time = \"ts\" }}\nallowed_lateness = \"5s\"\ncheckpoint_every = \"1s\"\n\
                 [[stage]]\nname = \"count\"\nfunction = \"aggregate\"\nkey = [\"page\"]\n\
                 params = {{ count = true, sum = [\"n\"] }}\n[output]\npath = \"{}\"\nformat = \"jsonl\"\nmode = \"overwrite\"\n",
                out.display()
            );
            std::fs::write(&path, body).with_context(|| path.display().to_string())?;
            let (exe, job, until) =
                (setup.exe.display().to_string(), path.display().to_string(), format!("records={records}"));
            let threads = format!("platform.concurrency={threads}");
            let fanout = Program::new(
                "fanout run",
                &[&exe, "run", &job, "--until", &until, "--progress", "never", "--set", &threads],
            );
            if setup.compare {
                limit(&mut peer_list, &mut skipped, &["windowcount", &dir]);
            }
            (
                format!("stream, a windowed count of {records} records arriving in {files} files"),
                "records",
                records as f64,
                fanout,
            )
        }
        other => anyhow::bail!("no workload `{other}` (the suite: {})", ALL.join(", ")),
    };
    let id = ALL.iter().find(|a| **a == id).expect("a known workload");
    let mut programs = vec![fanout];
    programs.extend(peer_list);
    Ok(Workload { id, title, unit, amount, programs, skipped })
}
