//! Inputs and outputs in object storage, against a real S3-compatible
//! server on loopback: moto's server mode (PyPI `moto[server]`, which
//! tests/setup.sh installs), with boto3 — AWS's own SDK — putting the data in and
//! checking what fanout left there. Each test starts its own server.

use std::net::TcpStream;
use std::process::{Command, Stdio};

use crate::util::{Run, Scratch, binary, python, summary};

/// A moto S3 server, killed when dropped.
pub(crate) struct S3 {
    _server: crate::util::Daemon,
    endpoint: String,
}

impl S3 {
    /// Starts a server and makes the bucket `data`.
    pub(crate) fn start(s: &Scratch) -> S3 {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new("python3")
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 -m moto.server (tests/setup.sh installs it)");
        let addr = format!("127.0.0.1:{port}");
        let server = S3 { _server: crate::util::Daemon(child), endpoint: format!("http://{addr}") };
        assert!(crate::util::wait_for(60, || TcpStream::connect(&addr).is_ok()), "moto did not start");
        server.boto(s, "s3.create_bucket(Bucket='data')");
        server
    }

    /// Runs `fanout ARGS` in the scratch directory with the standard AWS
    /// environment pointing at this server.
    fn fanout(&self, s: &Scratch, args: &[&str]) -> Run {
        crate::util::run_with(s.dir.path(), args, &self.env())
    }

    /// The server's URL.
    pub(crate) fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The standard AWS environment, pointing at this server.
    pub(crate) fn env(&self) -> [(&str, &str); 5] {
        [
            ("AWS_ENDPOINT_URL", &self.endpoint),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ALLOW_HTTP", "true"),
        ]
    }

    /// Runs Python with boto3's client `s3` on this server; the script must
    /// end by printing `ok` (added when it prints nothing else).
    pub(crate) fn boto(&self, s: &Scratch, script: &str) {
        let script = format!(
            "import boto3, json\ns3 = boto3.client('s3', endpoint_url='{}', aws_access_key_id='testing', \
             aws_secret_access_key='testing', region_name='us-east-1')\n{script}\nprint('ok')\n",
            self.endpoint
        );
        python(s, &script);
    }

    /// This server behind tests/fixtures/flaky_proxy.py in `mode`, which
    /// counts the requests it refuses in the scratch file `refused`.
    fn behind_proxy(&self, s: &Scratch, mode: &str) -> S3 {
        let (server, endpoint) = proxy(s, &self.endpoint, mode, "refused");
        S3 { _server: server, endpoint }
    }

    /// Uploads local files of the scratch directory under the same keys.
    pub(crate) fn upload(&self, s: &Scratch, names: &[&str]) {
        let names = serde_json::to_string(names).unwrap();
        self.boto(s, &format!("for n in {names}:\n    s3.upload_file(n, 'data', n)"));
    }
}

/// tests/fixtures/flaky_proxy.py in front of `upstream` in `mode`, which
/// counts what it refuses (or says it stalled a request) in the scratch
/// file `count`: the proxy's process and URL.
pub(crate) fn proxy(s: &Scratch, upstream: &str, mode: &str, count: &str) -> (crate::util::Daemon, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let script = crate::util::root().join("tests/fixtures/flaky_proxy.py");
    let child = Command::new("python3")
        .arg(&script)
        .args([&port.to_string(), upstream, &s.path(count).display().to_string(), mode])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let daemon = crate::util::Daemon(child);
    let up = crate::util::wait_for(30, || TcpStream::connect(("127.0.0.1", port)).is_ok());
    assert!(up, "the proxy did not start");
    (daemon, format!("http://127.0.0.1:{port}"))
}

/// Writes `big.csv`, about 12 MiB: an output of it goes up in two parts.
pub(crate) fn big_csv(s: &Scratch) {
    python(
        s,
        "import random\nrandom.seed(3)\nwith open('big.csv', 'w') as f:\n    f.write('id,text\\n')\n    for i in range(200000):\n        f.write(f'{i},{random.randbytes(24).hex()}\\n')\nprint('ok')",
    );
}

/// Runs a job that writes `big.csv` to `scheme://data/out/killed-N.csv`
/// once per stall point (a proxy mode: the request fanout is killed at),
/// through a proxy in front of the store at `upstream` that never answers
/// that request; kills fanout (`kill -9`) there, and resumes the run
/// against the store itself. `env(url)` is the environment that points
/// fanout at a store's URL. Returns, per point, the object's key and the
/// resumed run's summary; the local output is `big-out.csv`.
pub(crate) fn killed_commits(
    s: &Scratch,
    scheme: &str,
    upstream: &str,
    env: &dyn Fn(&str) -> Vec<(String, String)>,
    points: &[&str],
) -> Vec<(String, serde_json::Value)> {
    let job = |out: &str| {
        format!(
            "[input]\npath = \"big.csv\"\nchunk_size = \"1MiB\"\n[output]\npath = \"{out}\"\n[platform]\nconcurrency = 2\n"
        )
    };
    s.write("local.toml", job("big-out.csv"));
    s.run(&["run", "local.toml"]).expect(0);
    let mut resumed = Vec::new();
    for (i, point) in points.iter().enumerate() {
        let key = format!("out/killed-{i}.csv");
        s.write("commit.toml", job(&format!("{scheme}://data/{key}")));
        let count = format!("stalled-{i}");
        let (server, url) = proxy(s, upstream, &format!("stall:{point}"), &count);
        let rd = format!("rd-{i}");
        let mut child = Command::new(binary())
            .args(["run", "commit.toml", "--progress", "never", "--run-dir", &rd])
            .envs(env(&url))
            .current_dir(s.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stalled = crate::util::wait_for(120, || {
            std::fs::read_to_string(s.path(&count)).is_ok_and(|c| c == "stalled") || child.try_wait().unwrap().is_some()
        });
        assert!(stalled, "{point}: the commit never got there");
        assert!(child.try_wait().unwrap().is_none(), "{point}: the run ended before the stalled request");
        child.kill().unwrap();
        child.wait().unwrap();
        drop(server);
        let env: Vec<(String, String)> = env(upstream);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let args = ["run", "--resume", &rd, "--progress", "never", "--show", "0", "--json"];
        let r = crate::util::run_with(s.dir.path(), &args, &env).expect(0);
        resumed.push((key, summary(&r)));
    }
    resumed
}

/// The points of an S3 commit a run is killed at: the upload created but
/// its id not yet heard (so never noted: the resume lists the key's
/// pending uploads to find it), a part in flight (the upload pending, a
/// part up), the completion sent, the manifest's PUT
/// (the object whole).
const S3_POINTS: [&str; 4] = ["reply:POST:?uploads", "PUT:partNumber=2", "POST:uploadId=", "PUT:.manifest.json"];

/// Input files of every format, made by Python's standard library (and
/// pyarrow for Parquet and Arrow), with quoted csv fields across lines.
fn inputs(s: &Scratch) {
    python(
        s,
        "import csv, gzip, json, random, pyarrow as pa, pyarrow.parquet as pq, pyarrow.feather as pf\n\
         random.seed(7)\n\
         rows = [{'id': i, 'name': random.choice(['ann', 'bob', 'cy \"the\" dev', 'dee,da', 'e\\nf']), \
         'amount': random.randint(0, 999)} for i in range(3000)]\n\
         with open('in.csv', 'w', newline='') as f:\n    w = csv.DictWriter(f, ['id', 'name', 'amount'])\n    w.writeheader()\n    w.writerows(rows)\n\
         with open('in.jsonl', 'w') as f:\n    f.writelines(json.dumps(r) + '\\n' for r in rows)\n\
         with open('in.txt', 'w') as f:\n    f.writelines(' '.join(random.choice(['a', 'bb', 'ccc']) for _ in range(random.randint(0, 12))) + '\\n' for _ in range(3000))\n\
         with open('in.csv', 'rb') as f, gzip.open('in.csv.gz', 'wb') as g:\n    g.write(f.read())\n\
         t = pa.Table.from_pylist([{'id': r['id'], 'name': r['name'], 'amount': r['amount']} for r in rows])\n\
         pq.write_table(t, 'in.parquet', row_group_size=200)\n\
         pf.write_feather(t, 'in.arrow', compression='uncompressed', chunksize=200)\n\
         print('ok')",
    );
}

/// A job reading `input` in chunks of `chunk` and writing `output`, with
/// no stage (the records as read) or with `stage`.
fn job(input: &str, chunk: &str, stage: &str, output: &str) -> String {
    format!(
        "[input]\npath = \"{input}\"\nchunk_size = \"{chunk}\"\n{stage}\n[output]\npath = \"{output}\"\nmode = \"overwrite\"\n"
    )
}

#[test]
fn s3_inputs_of_every_format_read_as_the_same_files_do_locally() {
    let s = Scratch::new();
    let s3 = S3::start(&s);
    inputs(&s);
    let files = ["in.csv", "in.jsonl", "in.txt", "in.csv.gz", "in.parquet", "in.arrow"];
    s3.upload(&s, &files);
    // Each run on another preset: what is read does not depend on it, what
    // the requests cost does (write class, read class, per request).
    let presets = [
        ("local", 0.005e-3, 0.0004e-3),
        ("aws-lambda", 0.005e-3, 0.0004e-3),
        ("gcp-functions", 0.005e-3, 0.0004e-3),
        ("azure-functions", 0.065e-4, 0.005e-4),
    ];
    let mut round = 0;
    for file in files {
        for chunk in ["1KiB", "64KiB"] {
            let local = job(file, chunk, "", "local.csv");
            s.write("local.toml", &local);
            let l = summary(&s3.fanout(&s, &["run", "local.toml", "--json"]).expect(0));
            let (preset, write, read) = presets[round % presets.len()];
            round += 1;
            let remote = job(&format!("s3://data/{file}"), chunk, "", "remote.csv")
                + &format!("[platform]\npreset = \"{preset}\"\n");
            s.write("remote.toml", &remote);
            let r = summary(&s3.fanout(&s, &["run", "remote.toml", "--json"]).expect(0));
            let n = |k: &str| r["storage"][k].as_f64().unwrap();
            let usd = (n("put") + n("post") + n("list")) * write + (n("get") + n("head")) * read;
            assert!((n("usd") - usd).abs() < 1e-12, "{preset}: {} is not priced at {usd}", r["storage"]);
            let (lo, ro) = (std::fs::read(s.path("local.csv")).unwrap(), std::fs::read(s.path("remote.csv")).unwrap());
            assert!(lo == ro, "{file} at {chunk}: the output read from s3:// differs from the local one");
            assert_eq!(r["input"]["splits"], l["input"]["splits"], "{file} at {chunk}");
            assert_eq!(r["input"]["records"], l["input"]["records"], "{file} at {chunk}");
            // Ranged reads: many splits, far fewer requests than splits
            // for the line formats, and never the whole file per split.
            let st = &r["storage"];
            let splits = r["input"]["splits"].as_u64().unwrap();
            assert!(st["get"].as_u64().unwrap() >= 1, "{file}: {st}");
            let size = std::fs::metadata(s.path(file)).unwrap().len();
            assert!(st["bytes_read"].as_u64().unwrap() < 6 * size, "{file} at {chunk}: read {st} of {size} bytes");
            if chunk == "1KiB" && !file.ends_with(".gz") {
                assert!(splits > 10, "{file}: {splits} splits");
            }
            assert!(l.get("storage").is_none(), "a local run made storage requests");
        }
    }
    // A glob over keys, and a prefix: every csv object, in key order.
    s3.boto(&s, "for k in ['dir/b.csv', 'dir/a.csv', 'dir/sub/c.csv', 'dir/.hidden.csv']:\n    s3.upload_file('in.csv', 'data', k)");
    s.write("glob.toml", job("s3://data/dir/*.csv", "4KiB", "", "glob.csv"));
    let g = summary(&s3.fanout(&s, &["run", "glob.toml", "--json"]).expect(0));
    // As a local glob: `*` does not cross a `/`, and matches a leading dot.
    assert_eq!(g["input"]["records"], 9000, "dir/*.csv is a, b and .hidden, not sub/c: {g}");
    s.write("prefix.toml", job("s3://data/dir/", "4KiB", "", "prefix.csv"));
    let p = summary(&s3.fanout(&s, &["run", "prefix.toml", "--json"]).expect(0));
    assert_eq!(p["input"]["records"], 9000, "dir/ is a, b and sub/c, not .hidden: {p}");
}

#[test]
fn s3_reads_are_ranged_and_read_each_byte_about_once() {
    let s = Scratch::new();
    let s3 = S3::start(&s);
    // About 4 MiB of each format, made by Python's standard library and
    // pyarrow: many splits, many windows, many row groups and batches.
    python(
        &s,
        "import csv, json, random, pyarrow as pa, pyarrow.parquet as pq, pyarrow.feather as pf\n\
         random.seed(11)\n\
         rows = [{'id': i, 'name': random.choice(['ann', 'bob', 'cy \"the\" dev', 'dee,da', 'e\\nf']), \
         'note': random.randbytes(random.randint(0, 40)).hex()} for i in range(60000)]\n\
         with open('r.csv', 'w', newline='') as f:\n    w = csv.DictWriter(f, ['id', 'name', 'note'])\n    w.writeheader()\n    w.writerows(rows)\n\
         with open('r.jsonl', 'w') as f:\n    f.writelines(json.dumps(r) + '\\n' for r in rows)\n\
         with open('r.txt', 'w') as f:\n    f.writelines(r['note'] + ' ' + r['name'].replace('\\n', ' ') + '\\n' for r in rows)\n\
         t = pa.Table.from_pylist(rows)\n\
         pq.write_table(t, 'r.parquet', row_group_size=5000, compression='none')\n\
         pf.write_feather(t, 'r.arrow', compression='uncompressed', chunksize=5000)\n\
         print('ok')",
    );
    let files = ["r.jsonl", "r.txt", "r.parquet", "r.arrow", "r.csv"];
    s3.upload(&s, &files);
    for file in files {
        let _ = std::fs::remove_file(s.path("requests.log"));
        let (server, url) = proxy(&s, &s3.endpoint, "log", "requests.log");
        let logged = S3 { _server: server, endpoint: url };
        s.write("local.toml", job(file, "256KiB", "", "local.csv"));
        s.run(&["run", "local.toml"]).expect(0);
        s.write("remote.toml", job(&format!("s3://data/{file}"), "256KiB", "", "remote.csv"));
        let r = summary(&logged.fanout(&s, &["run", "remote.toml", "--json"]).expect(0));
        assert!(std::fs::read(s.path("local.csv")).unwrap() == std::fs::read(s.path("remote.csv")).unwrap(), "{file}");
        let size = std::fs::metadata(s.path(file)).unwrap().len();
        let splits = r["input"]["splits"].as_u64().unwrap();
        assert!(splits >= 8, "{file}: {splits} splits");
        // Each byte about once: no whole read for the listing, the schema
        // or a boundary.
        let read = r["storage"]["bytes_read"].as_u64().unwrap();
        let log = std::fs::read_to_string(s.path("requests.log")).unwrap();
        assert!(read as f64 <= 1.1 * size as f64, "{file}: {read} bytes read of {size}: {log}");
        // Every GET is a range, and none is the whole object.
        let log = std::fs::read_to_string(s.path("requests.log")).unwrap();
        let gets: Vec<&str> = log.lines().filter(|l| l.starts_with("GET ") && !l.contains("list-type")).collect();
        assert!(!gets.is_empty(), "{file}: {log}");
        for get in gets {
            let range = get.rsplit(' ').next().unwrap();
            let (start, end) = range
                .strip_prefix("bytes=")
                .and_then(|r| r.split_once('-'))
                .unwrap_or_else(|| panic!("{file}: a GET without a range: {get}"));
            let (start, end): (u64, u64) = (start.parse().unwrap(), end.parse().unwrap_or(size - 1));
            assert!(end - start + 1 < size, "{file}: a GET of the whole object: {get}");
        }
    }
}

#[test]
fn s3_outputs_appear_whole_with_their_manifest_or_not_at_all() {
    let s = Scratch::new();
    let s3 = S3::start(&s);
    // About 12 MiB of output: past the 8 MiB part size, so a multipart
    // upload of two parts.
    big_csv(&s);
    s3.upload(&s, &["big.csv"]);
    let count = "[[stage]]\nfunction = \"aggregate\"\nkey = [\"id\"]\nparams = { count = true }\n";
    for (name, stage) in [("small", count), ("big", "")] {
        s.write("local.toml", job("big.csv", "1MiB", stage, &format!("{name}-out.csv")));
        s3.fanout(&s, &["run", "local.toml"]).expect(0);
        let out = format!("s3://data/out/{name}.csv");
        s.write("remote.toml", job("s3://data/big.csv", "1MiB", stage, &out).replace("overwrite", "error"));
        let r = summary(&s3.fanout(&s, &["run", "remote.toml", "--json"]).expect(0));
        let st = &r["storage"];
        let bytes = std::fs::metadata(s.path(&format!("{name}-out.csv"))).unwrap().len();
        assert_eq!(r["output"]["bytes"], bytes, "{r}");
        assert_eq!(st["bytes_written"].as_u64().unwrap(), bytes + manifest_size(&s3, &s, name), "{st}");
        if name == "big" {
            // Created, two parts, completed; and the manifest's PUT.
            assert!(st["post"] == 2 && st["put"] == 3, "a multipart upload: {st}");
        } else {
            assert!(st["post"] == 0 && st["put"] == 2, "one PUT and the manifest's: {st}");
        }
        // The object is the local output, byte for byte, and its manifest
        // gives its size and XXH3 as an independent hash computes them.
        s3.boto(
            &s,
            &format!(
                "import xxhash\nbody = s3.get_object(Bucket='data', Key='out/{name}.csv')['Body'].read()\n\
                 assert body == open('{name}-out.csv', 'rb').read(), 'object differs'\n\
                 m = json.loads(s3.get_object(Bucket='data', Key='out/{name}.csv.manifest.json')['Body'].read())\n\
                 assert m['output']['bytes'] == len(body) and m['output']['xxh3'] == xxhash.xxh3_64_hexdigest(body), m\n\
                 assert m['output']['path'] == 's3://data/out/{name}.csv', m"
            ),
        );
        // mode = "error": the object exists, so the run stops before it
        // starts, and the object is left as it was.
        let again = s3.fanout(&s, &["run", "remote.toml"]).expect(2);
        assert!(again.stderr.contains(&format!("the output {out} exists")), "{}", again.stderr);
    }
    // An upload that fails part-way (the second part refused for good) is
    // aborted: no object, no pending upload, and the job fails.
    let proxy = s3.behind_proxy(&s, "part-2");
    s.write("abort.toml", job("big.csv", "1MiB", "", "s3://data/out/aborted.csv"));
    let r = proxy.fanout(&s, &["run", "abort.toml"]).expect(1);
    assert!(r.stderr.contains("s3://data/out/aborted.csv"), "the error names the object: {}", r.stderr);
    assert_eq!(std::fs::read_to_string(s.path("refused")).unwrap(), "1", "a 400 is not retried");
    s3.boto(
        &s,
        "assert 'Contents' not in s3.list_objects_v2(Bucket='data', Prefix='out/aborted')\n\
         assert s3.list_multipart_uploads(Bucket='data').get('Uploads', []) == [], 'a pending upload'",
    );
    // A job that fails leaves no object and no multipart upload behind.
    s.write("bad.csv", "id,text\n1,a\n2,b,extra\n");
    s3.upload(&s, &["bad.csv"]);
    s.write("fail.toml", job("s3://data/bad.csv", "1MiB", "", "s3://data/out/failed.csv"));
    let failed = s3.fanout(&s, &["run", "fail.toml"]);
    assert_eq!(failed.code, 1, "{}", failed.stderr);
    assert!(failed.stderr.contains("s3://data/bad.csv"), "the error names the object: {}", failed.stderr);
    s3.boto(
        &s,
        "keys = [o['Key'] for o in s3.list_objects_v2(Bucket='data', Prefix='out/failed').get('Contents', [])]\n\
         assert keys == [], keys\n\
         assert s3.list_multipart_uploads(Bucket='data').get('Uploads', []) == [], 'a pending upload'",
    );
}

/// Writes `wide.csv`, about 15 MiB of rows that compress poorly: its
/// output in every format is over the 8 MiB part size (Parquet's about
/// 10 MiB).
pub(crate) fn wide_csv(s: &Scratch) {
    python(
        s,
        "import base64, random\nrandom.seed(5)\nwith open('wide.csv', 'w') as f:\n    f.write('id,text,x\\n')\n    for i in range(260000):\n        f.write(f'{i},{base64.b64encode(random.randbytes(24)).decode()},{random.random()}\\n')\nprint('ok')",
    );
}

/// The Python lines that check, with pyarrow, that the bytes `body` hold
/// the same table in `format` as the local file `local`.
pub(crate) fn same_table(format: &str, local: &str) -> String {
    let read = match format {
        "parquet" => "pq.read_table(pa.BufferReader({}))",
        "arrow" => "ipc.open_file(pa.BufferReader({})).read_all()",
        _ => "pj.read_json(pa.BufferReader({}))",
    };
    format!(
        "import pyarrow as pa, pyarrow.parquet as pq, pyarrow.ipc as ipc, pyarrow.json as pj\n\
         got, want = {}, {}\n\
         assert got.num_rows == 260000 and got.equals(want), (got.schema, want.schema, got.num_rows)",
        read.replace("{}", "body"),
        read.replace("{}", &format!("open('{local}', 'rb').read()"))
    )
}

#[test]
fn s3_outputs_of_every_format_go_up_in_parts_and_read_back() {
    let s = Scratch::new();
    let s3 = S3::start(&s);
    wide_csv(&s);
    for format in ["parquet", "arrow", "jsonl"] {
        let local = format!("wide-out.{format}");
        s.write("local.toml", job("wide.csv", "4MiB", "", &local));
        s.run(&["run", "local.toml"]).expect(0);
        let key = format!("out/wide.{format}");
        s.write("remote.toml", job("wide.csv", "4MiB", "", &format!("s3://data/{key}")));
        let r = summary(&s3.fanout(&s, &["run", "remote.toml", "--json"]).expect(0));
        let st = &r["storage"];
        let size = std::fs::metadata(s.path(&local)).unwrap().len();
        assert!(size > 8 << 20, "{format}: {size} bytes is one part");
        assert_eq!(st["post"], 2, "{format}: a multipart upload: {st}");
        // The object is the local output, and pyarrow reads the same table
        // from it as from the local file.
        s3.boto(
            &s,
            &format!(
                "body = s3.get_object(Bucket='data', Key='{key}')['Body'].read()\n\
                 assert body == open('{local}', 'rb').read(), '{format}: the object differs'\n{}",
                same_table(format, &local)
            ),
        );
    }
}

/// Runs `commit.toml` (writing to S3) held at `point` (the test hook
/// `FANOUT_TEST_HOLD`), sends SIGTERM there, releases it, and returns the
/// outcome.
fn s3_signalled_at(s: &Scratch, s3: &S3, point: &str, rd: &str) -> Run {
    let hold = s.path("hold");
    let args = ["run", "commit.toml", "--progress", "never", "--run-dir", rd];
    let child = Command::new(binary())
        .args(args)
        .envs(s3.env())
        .env("FANOUT_TEST_HOLD", format!("{point}:{}", hold.display()))
        .current_dir(s.dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(crate::util::wait_for(60, || hold.exists()), "the run did not reach {point}");
    crate::faults::signal(child.id(), "TERM");
    std::thread::sleep(std::time::Duration::from_millis(200));
    std::fs::remove_file(&hold).unwrap();
    crate::util::finish_within(child, 120, &args)
}

#[test]
fn a_signal_before_an_s3_commit_writes_nothing_and_one_during_it_lets_it_finish() {
    let s = Scratch::new();
    let s3 = S3::start(&s);
    big_csv(&s);
    let job = |out: &str| {
        format!(
            "[input]\npath = \"big.csv\"\nchunk_size = \"1MiB\"\n[output]\npath = \"{out}\"\n[platform]\nconcurrency = 2\n"
        )
    };
    s.write("local.toml", job("big-out.csv"));
    s.run(&["run", "local.toml"]).expect(0);
    s.write("commit.toml", job("s3://data/out/signalled.csv"));
    // Before the commit point: nothing goes up, and the resume commits.
    let r = s3_signalled_at(&s, &s3, "gathered", "rd-before").expect(143);
    assert!(r.stderr.contains("to finish the run: fanout run --resume rd-before"), "{}", r.stderr);
    s3.boto(
        &s,
        "assert 'Contents' not in s3.list_objects_v2(Bucket='data', Prefix='out/'), 'an interrupted run wrote'\n\
         assert s3.list_multipart_uploads(Bucket='data').get('Uploads', []) == [], 'an upload is pending'",
    );
    s3.fanout(&s, &["run", "--resume", "rd-before", "--progress", "never"]).expect(0);
    let check = "obj = s3.get_object(Bucket='data', Key='out/signalled.csv')\n\
                 assert obj['Body'].read() == open('big-out.csv', 'rb').read(), 'the object differs'\n\
                 m = json.loads(s3.get_object(Bucket='data', Key='out/signalled.csv.manifest.json')['Body'].read())\n\
                 assert obj['Metadata']['fanoutrun'].startswith(m['run_id'] + '/'), (m, obj['Metadata'])\n\
                 assert s3.list_multipart_uploads(Bucket='data').get('Uploads', []) == [], 'an upload is pending'";
    s3.boto(&s, check);
    // During the commit: it goes on to the end, and the run succeeds.
    s3.boto(
        &s,
        "s3.delete_object(Bucket='data', Key='out/signalled.csv')\n\
                 s3.delete_object(Bucket='data', Key='out/signalled.csv.manifest.json')",
    );
    let r = s3_signalled_at(&s, &s3, "committing", "rd-during").expect(0);
    assert!(r.stderr.contains("SIGTERM during the commit: the output is complete"), "{}", r.stderr);
    assert!(r.stderr.contains("SIGTERM: the output is being committed"), "{}", r.stderr);
    assert!(!r.stderr.contains("stopping the run"), "{}", r.stderr);
    assert!(!r.stderr.contains("error:"), "{}", r.stderr);
    s3.boto(&s, check);
}

#[test]
fn an_s3_output_killed_mid_commit_is_finished_by_its_resume() {
    let s = Scratch::new();
    let s3 = S3::start(&s);
    big_csv(&s);
    let env = |url: &str| {
        s3.env()
            .iter()
            .map(|(k, v)| (k.to_string(), if *k == "AWS_ENDPOINT_URL" { url } else { v }.to_string()))
            .collect()
    };
    let resumed = killed_commits(&s, "s3", &s3.endpoint, &env, &S3_POINTS);
    for ((key, sum), point) in resumed.iter().zip(S3_POINTS) {
        // One whole object, stamped by its run, with a manifest that gives
        // its size and hash as independent code computes them, and no
        // upload left pending.
        s3.boto(
            &s,
            &format!(
                "import xxhash\nobj = s3.get_object(Bucket='data', Key='{key}')\nbody = obj['Body'].read()\n\
                 assert body == open('big-out.csv', 'rb').read(), '{point}: the object differs'\n\
                 assert obj['Metadata']['fanoutrun'].startswith('rd-'), obj['Metadata']\n\
                 m = json.loads(s3.get_object(Bucket='data', Key='{key}.manifest.json')['Body'].read())\n\
                 assert m['output']['bytes'] == len(body) and m['output']['xxh3'] == xxhash.xxh3_64_hexdigest(body), m\n\
                 assert m['run_id'] == '{run}', m\n\
                 assert s3.list_multipart_uploads(Bucket='data').get('Uploads', []) == [], '{point}: an upload is pending'",
                run = sum["run_id"].as_str().unwrap()
            ),
        );
        let st = &sum["storage"];
        if point == "PUT:.manifest.json" {
            // The object was whole: the resume knew it for its own and
            // only wrote the manifest.
            assert!(st["put"] == 1 && st["post"] == 0, "{point}: the object went up again: {st}");
        } else {
            assert!(st["post"] == 2 && st["put"] == 3, "{point}: {st}");
            // The pending upload was aborted; one whose id was never noted
            // was found by listing the key's uploads.
            assert_eq!(st["delete"], 1, "{point}: {st}");
        }
    }
    // A stranger's object where the killed run's was is not taken for the
    // run's own: the resume refuses to replace it.
    s.write("commit.toml", std::fs::read_to_string(s.path("commit.toml")).unwrap().replace("killed-3", "taken"));
    let (server, url) = proxy(&s, &s3.endpoint, "stall:PUT:.manifest.json", "stalled-taken");
    let env_proxy = env(&url);
    let mut child = Command::new(binary())
        .args(["run", "commit.toml", "--progress", "never", "--run-dir", "rd-taken"])
        .envs(env_proxy.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .current_dir(s.dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stalled =
        crate::util::wait_for(120, || std::fs::read_to_string(s.path("stalled-taken")).is_ok_and(|c| c == "stalled"));
    assert!(stalled);
    child.kill().unwrap();
    child.wait().unwrap();
    drop(server);
    s3.boto(&s, "s3.put_object(Bucket='data', Key='out/taken.csv', Body=b'a stranger')");
    let r = s3.fanout(&s, &["run", "--resume", "rd-taken", "--progress", "never"]).expect(2);
    assert!(r.stderr.contains("the output s3://data/out/taken.csv exists"), "{}", r.stderr);
    s3.boto(&s, "assert s3.get_object(Bucket='data', Key='out/taken.csv')['Body'].read() == b'a stranger'");
    // Resuming the finished runs finds their outputs where they were put.
    let r = s3.fanout(&s, &["run", "--resume", "rd-0", "--progress", "never"]).expect(0);
    assert!(r.stderr.contains("its output is s3://data/out/killed-0.csv"), "{}", r.stderr);
}

/// The size of the manifest fanout left beside `out/NAME.csv`.
fn manifest_size(s3: &S3, s: &Scratch, name: &str) -> u64 {
    s3.boto(
        s,
        &format!(
            "open('manifest.size', 'w').write(str(s3.head_object(Bucket='data', Key='out/{name}.csv.manifest.json')['ContentLength']))"
        ),
    );
    std::fs::read_to_string(s.path("manifest.size")).unwrap().parse().unwrap()
}

#[test]
fn datasets_gen_writes_to_object_storage_or_refuses() {
    let s = Scratch::new();
    let s3 = S3::start(&s);
    // A csv of one PUT and a text of several parts (over 8 MiB), each the
    // bytes the same seed writes locally.
    for (kind, amount) in [("csv", ["--rows", "2000"]), ("text", ["--size", "12MiB"])] {
        let name = kind;
        let url = format!("s3://data/gen/{name}.out");
        let r = s3.fanout(&s, &["datasets", "gen", kind, amount[0], amount[1], "--seed", "7", "--out", &url]).expect(0);
        assert!(r.stderr.contains(&format!("to {url} in")), "{}", r.stderr);
        let local = format!("{name}.local");
        s.run(&["datasets", "gen", kind, amount[0], amount[1], "--seed", "7", "--out", &local]).expect(0);
        s3.boto(
            &s,
            &format!(
                "got = s3.get_object(Bucket='data', Key='gen/{name}.out')['Body'].read()\n\
                 assert got == open('{local}', 'rb').read(), (len(got),)"
            ),
        );
    }
    assert!(!s.path("s3:").exists(), "a local ./s3: was written");
    // What cannot be written is refused (exit 2), and nothing is left.
    let r = s3.fanout(&s, &["datasets", "gen", "csv", "--rows", "10", "--out", "https://example.com/x.csv"]).expect(2);
    assert_eq!(
        r.stderr.trim(),
        "error: --out https://example.com/x.csv: `https://` cannot be written; write to s3://, gs:// or az://"
    );
    for url in ["s3://data", "s3://data/dir/"] {
        let r = s3.fanout(&s, &["datasets", "gen", "csv", "--rows", "10", "--out", url]).expect(2);
        let want = format!("error: --out {url}: no object named: expected s3://BUCKET/KEY, with a key not ending in /");
        assert_eq!(r.stderr.trim(), want);
    }
    let r = s3.fanout(&s, &["datasets", "gen", "csv", "--rows", "10", "--out", "s3://no-such-bucket/x.csv"]).expect(1);
    assert!(r.stderr.contains("s3://no-such-bucket/x.csv"), "{}", r.stderr);
    let left: Vec<_> = std::fs::read_dir(s.dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(!left.iter().any(|n| n.to_string_lossy().starts_with("https") || n == "x.csv"), "{left:?}");
}

#[test]
fn datasets_gen_stopped_by_a_signal_leaves_nothing() {
    let s = Scratch::new();
    let s3 = S3::start(&s);
    // Locally: no temporary file, no output.
    let mut child = Command::new(binary())
        .args(["datasets", "gen", "text", "--size", "2GiB", "--out", "big.txt"])
        .current_dir(s.dir.path())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let temp = s.path(&format!(".big.txt.{pid}.tmp"));
    assert!(crate::util::wait_for(60, || temp.exists()), "no temporary file");
    crate::faults::signal(pid, "TERM");
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(143));
    assert!(!temp.exists() && !s.path("big.txt").exists());
    // To S3: stopped mid-upload, the multipart upload is aborted.
    let env: Vec<(String, String)> = s3.env().iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let env = serde_json::to_string(&env).unwrap();
    s3.boto(
        &s,
        &format!(
            r#"
import os, signal, subprocess, time
env = dict(os.environ, **dict({env}))
p = subprocess.Popen(["{bin}", "datasets", "gen", "text", "--size", "200MiB", "--out", "s3://data/gen/big.txt"],
                     env=env, stderr=subprocess.PIPE)
deadline = time.time() + 120
while not s3.list_multipart_uploads(Bucket="data").get("Uploads"):
    assert time.time() < deadline and p.poll() is None, "no upload started"
    time.sleep(0.05)
p.send_signal(signal.SIGTERM)
assert p.wait() == 143, p.returncode
assert not s3.list_multipart_uploads(Bucket="data").get("Uploads"), "an upload was left pending"
assert "Contents" not in s3.list_objects_v2(Bucket="data", Prefix="gen/"), "an object was written"
"#,
            bin = binary().display()
        ),
    );
}

#[test]
fn a_resume_whose_object_input_changed_fails_before_running_anything() {
    let s = Scratch::new();
    let s3 = S3::start(&s);
    for name in ["a", "b"] {
        s.write(&format!("{name}.txt"), (0..60).map(|i| format!("{name} word{i}\n")).collect::<String>());
    }
    s3.upload(&s, &["a.txt", "b.txt"]);
    let job = r#"
[input]
path = "s3://data/*.txt"
chunk_size = 64
[[stage]]
name = "slow"
function = { exec = ["sh", "-c", 'if [ -e slow ] && [ "$FANOUT_TASK" -ge 14 ]; then sleep 29.3; fi; cat'] }
[output]
path = "out.csv"
[platform]
concurrency = 2
"#;
    s.write("job.toml", job);
    s.write("slow", "");
    let args = ["run", "job.toml", "--progress", "never", "--run-dir", "rd"];
    let child = Command::new(binary())
        .args(args)
        .current_dir(s.dir.path())
        .envs(s3.env())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(crate::util::wait_for(60, || crate::util::journaled(&s.path("rd")).len() >= 12), "nothing journaled");
    crate::faults::signal(child.id(), "INT");
    crate::util::finish_within(child, 30, &args).expect(130);
    // The first object replaced by one of the same size: a new ETag.
    let text = std::fs::read_to_string(s.path("a.txt")).unwrap().replacen("word1\n", "wordX\n", 1);
    s.write("a.txt", text);
    s3.upload(&s, &["a.txt"]);
    std::fs::remove_file(s.path("slow")).unwrap();
    let journal = crate::util::lines_in(&s.path("rd/journal.jsonl"));
    let r = s3.fanout(&s, &["run", "--resume", "rd", "--progress", "never"]).expect(1);
    assert!(
        r.stderr.contains("the input changed since the run began") && r.stderr.contains("s3://data/a.txt (modified)"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("b.txt"), "{}", r.stderr);
    assert_eq!(crate::util::lines_in(&s.path("rd/journal.jsonl")), journal);
    // Put back as it was: S3's ETag of a single PUT is its MD5, so the same
    // bytes are the same version, and the resume goes on.
    let text = std::fs::read_to_string(s.path("a.txt")).unwrap().replacen("wordX\n", "word1\n", 1);
    s.write("a.txt", text);
    s3.upload(&s, &["a.txt"]);
    let r = s3.fanout(&s, &["run", "--resume", "rd", "--progress", "never", "--json"]).expect(0);
    assert!(summary(&r)["resumed_tasks"].as_u64().unwrap() >= 12);
    let want: String = std::iter::once("line\n".to_string())
        .chain(["a", "b"].iter().flat_map(|n| (0..60).map(move |i| format!("{n} word{i}\n"))))
        .collect();
    assert_eq!(std::fs::read_to_string(s.path("out.csv")).unwrap(), want);
}

#[test]
fn storage_errors_name_the_object_and_the_setting() {
    let s = Scratch::new();
    let s3 = S3::start(&s);
    s.write("missing.toml", job("s3://data/nope/*.csv", "1MiB", "", "out.csv"));
    let r = s3.fanout(&s, &["run", "missing.toml"]).expect(2);
    assert!(r.stderr.contains("input `s3://data/nope/*.csv` matches no file"), "{}", r.stderr);
    s.write("missing.toml", job("s3://data/in.csv", "1MiB", "", "out.csv"));
    let r = s3.fanout(&s, &["run", "missing.toml"]).expect(2);
    assert!(r.stderr.contains("s3://data/in.csv"), "{}", r.stderr);
    s.write("bad.toml", job("in.csv", "1MiB", "", "out.csv") + "[storage]\nnot_a_setting = 1\n");
    s.write("in.csv", "a\n1\n");
    let r = s3.fanout(&s, &["run", "bad.toml"]).expect(2);
    assert!(
        r.stderr.contains("bad.toml:9:") && r.stderr.contains("unknown storage option `not_a_setting`"),
        "{}",
        r.stderr
    );
    // The shuffle's scratch prefix must be a place that can be written.
    for (url, why) in [("https://host/tmp/", "`https://` cannot be written"), ("tmp/", "`tmp/` is not a URL")] {
        s.write("bad.toml", job("in.csv", "1MiB", "", "out.csv") + &format!("[storage]\nscratch = \"{url}\"\n"));
        let r = s3.fanout(&s, &["validate", "bad.toml"]).expect(2);
        assert!(r.stderr.contains("bad.toml:9:") && r.stderr.contains(why), "{}", r.stderr);
    }
    // [storage] overrides the environment: a wrong endpoint in the
    // environment, the right one in the job.
    s.write("x.csv", "a\n1\n2\n");
    s3.upload(&s, &["x.csv"]);
    let with_table = job("s3://data/x.csv", "1MiB", "", "x-out.csv")
        + &format!("[storage]\nendpoint = \"{}\"\nallow_http = true\n", s3.endpoint);
    s.write("table.toml", with_table);
    let out = Command::new(binary())
        .args(["run", "table.toml", "--json"])
        .current_dir(s.dir.path())
        .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read_to_string(s.path("x-out.csv")).unwrap(), "a\n1\n2\n");
    // `file://` URLs are local paths, for inputs and outputs alike.
    let dir = s.dir.path().display().to_string();
    s.write("file.toml", job(&format!("file://{dir}/x.csv"), "1MiB", "", &format!("file://{dir}/file-out.csv")));
    s3.fanout(&s, &["run", "file.toml"]).expect(0);
    assert_eq!(std::fs::read_to_string(s.path("file-out.csv")).unwrap(), "a\n1\n2\n");
}

#[test]
fn throttling_and_server_errors_are_retried_and_counted() {
    let s = Scratch::new();
    let s3 = S3::start(&s);
    inputs(&s);
    s3.upload(&s, &["in.csv"]);
    let stage =
        "[[stage]]\nfunction = \"aggregate\"\nkey = [\"name\"]\nparams = { count = true, sum = [\"amount\"] }\n";
    s.write("local.toml", job("in.csv", "2KiB", stage, "local.csv").replace("mode", "sort = [\"name\"]\nmode"));
    s3.fanout(&s, &["run", "local.toml"]).expect(0);
    // Every third GET, HEAD or PUT through the proxy is refused with 503
    // SlowDown or 429.
    let proxy = s3.behind_proxy(&s, "throttle");
    let remote =
        job("s3://data/in.csv", "2KiB", stage, "s3://data/out/flaky.csv").replace("mode", "sort = [\"name\"]\nmode");
    s.write("remote.toml", remote);
    let r = summary(&proxy.fanout(&s, &["run", "remote.toml", "--json"]).expect(0));
    let refused: u64 = std::fs::read_to_string(s.path("refused")).unwrap().parse().unwrap();
    let st = &r["storage"];
    assert!(refused >= 3, "{refused} refused");
    assert_eq!(st["retried"].as_u64().unwrap(), refused, "every refusal is retried and counted: {st}");
    s3.boto(
        &s,
        "assert s3.get_object(Bucket='data', Key='out/flaky.csv')['Body'].read() == open('local.csv', 'rb').read()",
    );
    let text = proxy.fanout(&s, &["run", "remote.toml"]).expect(0).stderr;
    assert!(text.contains("object storage:") && text.contains("retried)"), "{text}");
}

#[test]
fn a_remote_host_reads_split_references_from_object_storage() {
    let s = Scratch::new();
    let s3 = S3::start(&s);
    inputs(&s);
    s3.upload(&s, &["in.csv", "in.parquet"]);
    // A `fanout serve` host that sees no file of the job: it reads the
    // splits the events name from the S3 server itself.
    let empty = tempfile::tempdir().unwrap();
    let host = crate::remote::Host::start_with(empty.path(), None, "127.0.0.1", &[], &s3.env());
    for (file, chunk) in [("in.csv", "8KiB"), ("in.parquet", "4KiB")] {
        let select = "\"select\"".to_string();
        let remote = format!(
            "{{ http = \"{}\", event = \"split\", schema = [\"id:int64\", \"amount:int64\"] }}",
            host.url("select")
        );
        let mut outputs = Vec::new();
        for (input, function) in [(file.to_string(), &select), (format!("s3://data/{file}"), &remote)] {
            let text = format!(
                "[input]\npath = \"{input}\"\nchunk_size = \"{chunk}\"\n[[stage]]\nfunction = {function}\n\
                 params = {{ columns = [\"id\", \"amount\"] }}\n[output]\npath = \"out.csv\"\nmode = \"overwrite\"\n"
            );
            s.write("job.toml", text);
            let r = summary(&s3.fanout(&s, &["run", "job.toml", "--json"]).expect(0));
            assert_eq!(r["input"]["records"], 3000, "{file}: {r}");
            outputs.push(std::fs::read(s.path("out.csv")).unwrap());
        }
        assert!(outputs[0] == outputs[1], "{file}: the host's reads from s3:// differ from the local run");
    }
}

#[test]
fn a_simulation_calibrated_on_an_s3_run_prices_its_requests() {
    let s = Scratch::new();
    let s3 = S3::start(&s);
    inputs(&s);
    s3.upload(&s, &["in.jsonl"]);
    let stage = "[[stage]]\nfunction = \"aggregate\"\nkey = [\"name\"]\nparams = { count = true }\n";
    s.write("job.toml", job("s3://data/in.jsonl", "8KiB", stage, "s3://data/out/sim.csv"));
    let run = summary(&s3.fanout(&s, &["run", "job.toml", "--json", "--run-dir", "cal"]).expect(0));
    let (st, splits) = (&run["storage"], run["input"]["splits"].as_f64().unwrap());
    let get_per_split = st["get"].as_f64().unwrap() / splits;
    // Halving the chunk size doubles the splits and so the GETs; the
    // listing and the output's PUTs stay as they were.
    for (preset, write, read) in [("aws-lambda", 0.005e-3, 0.0004e-3), ("azure-functions", 0.065e-4, 0.005e-4)] {
        let sets = ["--set", "input.chunk_size=4KiB", "--set", &format!("platform.preset={preset}")];
        let mut args = vec!["simulate", "job.toml", "--from", "cal", "--json", "--seeds", "1"];
        args.extend(sets);
        let sim = summary(&s3.fanout(&s, &args).expect(0));
        let (ss, sim_splits) = (&sim["storage"], sim["input"]["splits"].as_f64().unwrap());
        assert!(sim_splits > 1.8 * splits, "{sim_splits} splits against {splits}");
        assert_eq!(ss["get"].as_f64().unwrap(), (get_per_split * sim_splits).round(), "{ss}");
        assert_eq!((&ss["list"], &ss["put"]), (&st["list"], &st["put"]), "{ss} against {st}");
        let n = |k: &str| ss[k].as_f64().unwrap();
        let usd = (n("put") + n("post") + n("list")) * write + (n("get") + n("head")) * read;
        assert!((n("usd") - usd).abs() < 1e-12, "{preset}: {ss} is not priced at {usd}");
        let invocations_usd: f64 = sim["stages"].as_array().unwrap().iter().map(|x| x["usd"].as_f64().unwrap()).sum();
        assert!((sim["cost"]["usd"].as_f64().unwrap() - invocations_usd - usd).abs() < 1e-9, "{}", sim["cost"]);
    }
}

/// A word count of words.txt: the map stage `map` (a function table, or
/// else the builtin `word_count`), then the keyed sum `reduce` (else the
/// builtin `aggregate`) over 6 partitions; `extra` ends the job.
pub(crate) fn shuffle_job(map: Option<&str>, reduce: Option<&str>, extra: &str) -> String {
    format!(
        "[input]\npath = \"words.txt\"\nchunk_size = \"4KiB\"\n\
         [[stage]]\nname = \"count\"\nfunction = {}\n\
         [[stage]]\nname = \"sum\"\nfunction = {}\nkey = [\"word\"]\npartitions = 6\nparams = {{ sum = [\"count\"] }}\n\
         [output]\npath = \"out.csv\"\nmode = \"overwrite\"\nsort = [\"word\"]\n\
         [platform]\nconcurrency = 3\nretries = 1\nbackoff = \"10ms\"\npayload_limit = \"16KiB\"\n{extra}",
        map.unwrap_or("\"word_count\""),
        reduce.unwrap_or("\"aggregate\""),
    )
}

/// An http function table over `urls`, answering `schema`.
pub(crate) fn http_table(urls: &[String], schema: &str) -> String {
    let urls: Vec<String> = urls.iter().map(|u| format!("\"{u}\"")).collect();
    format!("{{ http = [{}], schema = {schema} }}", urls.join(", "))
}

pub(crate) const COUNTS: &str = "[\"word:utf8\", \"count:int64\"]";
pub(crate) const SUMS: &str = "[\"word:utf8\", \"sum_count:int64\"]";
const SCRATCH: &str = "[storage]\nscratch = \"s3://data/tmp/\"\n";

/// Writes words.txt (2,000 distinct words) and returns the output of the
/// word count run here, checked against Python's `Counter`.
pub(crate) fn words_and_their_count(s: &Scratch) -> Vec<u8> {
    python(
        s,
        "import random\nr = random.Random(11)\nv = ['w%d' % i for i in range(2000)]\n\
         open('words.txt', 'w').write(''.join(' '.join(r.choice(v) for _ in range(r.randint(1, 14))) + '\\n' for _ in range(6000)))\n\
         print('ok')",
    );
    s.write("local.toml", shuffle_job(None, None, ""));
    s.run(&["run", "local.toml"]).expect(0);
    python(
        s,
        "import csv, collections\nwant = collections.Counter(open('words.txt').read().split())\n\
         got = {r['word']: int(r['sum_count']) for r in csv.DictReader(open('out.csv'))}\n\
         assert got == dict(want), 'the local run is not the word count'\nprint('ok')",
    );
    std::fs::read(s.path("out.csv")).unwrap()
}

/// Checks that `n` scratch objects are left.
fn scratch_left(s: &Scratch, s3: &S3, n: u64) {
    s3.boto(s, &format!("n = s3.list_objects_v2(Bucket='data', Prefix='tmp/')['KeyCount']\nassert n == {n}, n"));
}

#[test]
fn keyed_stages_with_remote_functions_shuffle_through_object_storage() {
    let s = Scratch::new();
    let s3 = S3::start(&s);
    let expected = words_and_their_count(&s);
    // Two hosts that see no file of the job: they write and read the
    // shuffle's objects in the S3 server themselves.
    let empty = tempfile::tempdir().unwrap();
    let start = |env: &[(&str, &str)]| {
        crate::remote::Host::start_with(empty.path(), None, "127.0.0.1", &["--concurrency", "8"], env)
    };
    let hosts = [start(&s3.env()), start(&s3.env())];
    let urls = |f: &str| hosts.iter().map(|h| h.url(f)).collect::<Vec<_>>();
    let (map, reduce) = (http_table(&urls("word_count"), COUNTS), http_table(&urls("aggregate"), SUMS));
    // Inline, a partition is over the payload limit.
    s.write("inline.toml", shuffle_job(None, Some(&reduce), ""));
    let r = s3.fanout(&s, &["run", "inline.toml"]).expect(1);
    assert!(r.stderr.contains("over the payload limit"), "{}", r.stderr);
    // Through object storage it is not. A map stage run here: its tasks'
    // objects are written here, one PUT each.
    let reduce_of = |r: &serde_json::Value| {
        let stages = r["stages"].as_array().unwrap();
        stages.iter().find(|x| x["name"] == "sum" && x["phase"] == "reduce").cloned().unwrap()
    };
    s.write("here.toml", shuffle_job(None, Some(&reduce), SCRATCH));
    let r = summary(&s3.fanout(&s, &["run", "here.toml", "--json"]).expect(0));
    assert!(std::fs::read(s.path("out.csv")).unwrap() == expected, "the output differs from the local run's");
    let splits = r["input"]["splits"].as_u64().unwrap();
    let (st, words) = (&r["storage"], &r["stages"][0]["records_out"]);
    assert!(splits > 10, "{r}");
    assert_eq!(
        (st["put"].as_u64(), st["list"].as_u64(), st["post"].as_u64()),
        (Some(splits), Some(1), Some(1)),
        "{st}"
    );
    assert!(st["bytes_written"].as_u64().unwrap() > r["shuffle_scratch_bytes"].as_u64().unwrap(), "{r}");
    assert_eq!((&reduce_of(&r)["invocations"], &reduce_of(&r)["records_in"]), (&6.into(), words), "{r}");
    scratch_left(&s, &s3, 0);
    // A remote map stage: the hosts write their tasks' objects themselves.
    // (Each run from here on is on a FaaS preset: what moves does not
    // depend on it, and a resume must not hang on any.)
    s.write("there.toml", shuffle_job(Some(&map), Some(&reduce), &format!("preset = \"aws-lambda\"\n{SCRATCH}")));
    let r = summary(&s3.fanout(&s, &["run", "there.toml", "--json"]).expect(0));
    assert!(std::fs::read(s.path("out.csv")).unwrap() == expected, "the output differs from the local run's");
    let st = &r["storage"];
    assert_eq!((st["put"].as_u64(), st["list"].as_u64(), st["post"].as_u64()), (Some(0), Some(1), Some(1)), "{st}");
    assert!(r["shuffle_scratch_bytes"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(&reduce_of(&r)["records_in"], &r["stages"][0]["records_out"], "{r}");
    scratch_left(&s, &s3, 0);
    // A reducing host whose store has no such objects (its endpoint is
    // another host, which answers 404) fails the run. The journal names
    // the map tasks' objects: they are kept for --resume ...
    let elsewhere = format!("http://{}", hosts[0].addr);
    let mut env = s3.env();
    env[0].1 = &elsewhere;
    let blind = start(&env);
    let blind_reduce = http_table(&[blind.url("aggregate")], SUMS);
    s.write(
        "blind.toml",
        shuffle_job(Some(&map), Some(&blind_reduce), &format!("preset = \"gcp-functions\"\n{SCRATCH}")),
    );
    let r = s3.fanout(&s, &["run", "blind.toml", "--run-dir", "blind"]).expect(1);
    assert!(r.stderr.contains("the shuffle piece") && r.stderr.contains("s3://data/tmp/blind/sum/m"), "{}", r.stderr);
    assert!(r.stderr.contains("under s3://data/tmp/blind/ are kept for `fanout run --resume blind`"), "{}", r.stderr);
    scratch_left(&s, &s3, splits);
    // ... which, on a host that can read them, finishes from the journal
    // without writing them again, and deletes them.
    let job = std::fs::read_to_string(s.path("blind/job.json")).unwrap();
    s.write("blind/job.json", job.replace(&blind.addr, &hosts[1].addr));
    let r = summary(&s3.fanout(&s, &["run", "--resume", "blind", "--json"]).expect(0));
    assert!(std::fs::read(s.path("out.csv")).unwrap() == expected, "the resumed run's output differs");
    assert_eq!((r["resumed_tasks"].as_u64(), r["storage"]["put"].as_u64()), (Some(splits), Some(0)), "{r}");
    scratch_left(&s, &s3, 0);
    // Without a journal, nothing could use them: they go.
    s3.fanout(&s, &["run", "blind.toml", "--no-journal", "--set", "platform.preset=azure-functions"]).expect(1);
    scratch_left(&s, &s3, 0);
}

#[test]
fn functions_in_any_language_take_part_in_a_shuffle_through_object_storage() {
    let s = Scratch::new();
    let s3 = S3::start(&s);
    let expected = words_and_their_count(&s);
    // One Cloud Function (Google's Functions Framework) for both stages:
    // the map answers records, which fanout writes to the store; the
    // reduce reads its partition's pieces with boto3's ranged GETs.
    s.write(
        "main.py",
        "import boto3, collections, json, os\n\
         s3 = boto3.client('s3', endpoint_url=os.environ['AWS_ENDPOINT_URL'])\n\
         def handler(request):\n    ev = request.get_json()\n\
         \x20   if 'shuffle' not in ev:\n\
         \x20       counts = collections.Counter(w for r in ev['records'] for w in r['line'].split())\n\
         \x20       return {'records': [{'word': w, 'count': c} for w, c in counts.items()]}\n\
         \x20   assert ev['key'] == ['word'] and ev['shuffle']['format'] == 'jsonl', ev\n\
         \x20   sums = collections.Counter()\n\
         \x20   for p in ev['shuffle']['pieces']:\n\
         \x20       bucket, key = p['path'][len('s3://'):].split('/', 1)\n\
         \x20       end = p['offset'] + p['length'] - 1\n\
         \x20       body = s3.get_object(Bucket=bucket, Key=key, Range=f\"bytes={p['offset']}-{end}\")['Body'].read()\n\
         \x20       lines = body.decode().splitlines()\n\
         \x20       assert len(lines) == p['records'], p\n\
         \x20       for r in map(json.loads, lines):\n\
         \x20           sums[r['word']] += r['count']\n\
         \x20   return {'records': [{'word': w, 'sum_count': n} for w, n in sums.items()]}\n",
    );
    let (mut ff, addr) = crate::remote::functions_framework(&s, &s3.env());
    let url = [format!("http://{addr}/")];
    let extra = format!("preset = \"aws-lambda\"\n{SCRATCH}");
    let job = shuffle_job(Some(&http_table(&url, COUNTS)), Some(&http_table(&url, SUMS)), &extra);
    s.write("ff.toml", job);
    let r = s3.fanout(&s, &["run", "ff.toml", "--json", "--set", "platform.payload_limit=256KiB"]);
    let _ = ff.kill();
    let _ = ff.wait();
    let r = summary(&r.expect(0));
    assert!(std::fs::read(s.path("out.csv")).unwrap() == expected, "the output differs from the local run's");
    assert_eq!(r["storage"]["put"], r["input"]["splits"], "an object per map task, written by fanout: {r}");
    scratch_left(&s, &s3, 0);
}

/// A CA and a certificate it signed for 127.0.0.1 (`ca.pem`, `cert.pem`,
/// `key.pem` in the scratch directory), made by openssl.
fn certificates(s: &Scratch) {
    let script = "set -e\n\
        openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=fanout-test-ca 2>/dev/null\n\
        openssl req -newkey rsa:2048 -nodes -keyout key.pem -out req.csr -subj /CN=127.0.0.1 2>/dev/null\n\
        printf 'subjectAltName=IP:127.0.0.1\\nbasicConstraints=CA:FALSE\\nextendedKeyUsage=serverAuth\\n' > ext.cnf\n\
        openssl x509 -req -in req.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out cert.pem -days 2 -extfile ext.cnf 2>/dev/null";
    let ok = Command::new("sh").args(["-c", script]).current_dir(s.dir.path()).status().unwrap().success();
    assert!(ok, "openssl could not make the certificates (tests/setup.sh installs it)");
}

#[test]
fn https_inputs_are_read_by_range_over_tls() {
    let s = Scratch::new();
    certificates(&s);
    std::fs::create_dir(s.path("www")).unwrap();
    python(
        &s,
        "import random\nrandom.seed(1)\nopen('www/in.txt', 'w').write(''.join(' '.join(random.choice(['a', 'bb', 'ccc', 'dd']) for _ in range(random.randint(0, 14))) + '\\n' for _ in range(120000)))\nprint('ok')",
    );
    std::fs::copy(s.path("www/in.txt"), s.path("in.txt")).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let server = Command::new("python3")
        .arg(crate::util::root().join("tests/fixtures/https_server.py"))
        .args([&port.to_string(), "cert.pem", "key.pem", "www", "requests.log"])
        .current_dir(s.dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _server = crate::util::Daemon(server);
    assert!(crate::util::wait_for(30, || TcpStream::connect(("127.0.0.1", port)).is_ok()), "the server did not start");
    let count = "[[stage]]\nfunction = \"word_count\"\n[[stage]]\nfunction = \"aggregate\"\nkey = [\"word\"]\nparams = { sum = [\"count\"] }\n";
    let job = |input: &str, out: &str| {
        job(input, "128KiB", count, out).replace("mode = \"overwrite\"", "mode = \"overwrite\"\nsort = [\"word\"]")
    };
    s.write("local.toml", job("in.txt", "local.csv"));
    s.run(&["run", "local.toml"]).expect(0);
    let url = format!("https://127.0.0.1:{port}/in.txt");
    s.write("https.toml", job(&url, "https.csv"));
    // The server's certificate is signed by the test's own CA, which the
    // client trusts as users make it trust theirs.
    let ca = s.path("ca.pem").display().to_string();
    let r = crate::util::run_with(s.dir.path(), &["run", "https.toml", "--json"], &[("SSL_CERT_FILE", &ca)]).expect(0);
    assert!(std::fs::read(s.path("local.csv")).unwrap() == std::fs::read(s.path("https.csv")).unwrap());
    let sum = summary(&r);
    let size = std::fs::metadata(s.path("in.txt")).unwrap().len();
    assert!(sum["input"]["splits"].as_u64().unwrap() > 10, "{sum}");
    let read = sum["storage"]["bytes_read"].as_u64().unwrap();
    assert!(read as f64 <= 1.1 * size as f64, "{read} bytes read of {size}");
    // By ranged GETs, none of the whole file.
    let log = std::fs::read_to_string(s.path("requests.log")).unwrap();
    let gets: Vec<&str> = log.lines().filter(|l| l.starts_with("GET ")).collect();
    assert!(gets.len() > 10, "{log}");
    for get in gets {
        let range = get.rsplit(' ').next().unwrap();
        let (a, b) = range.strip_prefix("bytes=").and_then(|r| r.split_once('-')).unwrap_or_else(|| panic!("{get}"));
        let (a, b): (u64, u64) = (a.parse().unwrap(), b.parse().unwrap_or(size - 1));
        assert!(b - a + 1 < size, "a GET of the whole file: {get}");
    }
    // A certificate nobody trusts: refused, and said so.
    let r = s.run(&["run", "https.toml"]).expect(2);
    assert!(
        r.stderr.contains("invalid peer certificate: UnknownIssuer") && r.stderr.contains("SSL_CERT_FILE"),
        "{}",
        r.stderr
    );
    // A glob: a web server lists nothing (no WebDAV), and the error says so.
    s.write("glob.toml", job(&format!("https://127.0.0.1:{port}/*.txt"), "glob.csv"));
    let r = crate::util::run_with(s.dir.path(), &["run", "glob.toml"], &[("SSL_CERT_FILE", &ca)]).expect(2);
    assert!(
        r.stderr.contains("glob.toml:2:8: ")
            && r.stderr.contains("needs a server that lists its files (WebDAV's PROPFIND)"),
        "{}",
        r.stderr
    );
}

#[test]
fn a_missing_bucket_is_named_in_words_not_in_s3_xml() {
    let s = Scratch::new();
    let s3 = S3::start(&s);
    let r = s3.fanout(&s, &["datasets", "gen", "text", "--rows", "10", "--out", "s3://nosuchbucket/x.txt"]).expect(1);
    assert!(r.stderr.contains("s3://nosuchbucket/x.txt"), "{}", r.stderr);
    assert!(r.stderr.contains("NoSuchBucket: The specified bucket does not exist"), "{}", r.stderr);
    assert!(!r.stderr.contains('<'), "S3's XML is quoted: {}", r.stderr);
    s.write("in.txt", "a b\nb c\n");
    s.write("job.toml", "[input]\npath = \"in.txt\"\n[output]\npath = \"s3://nosuchbucket/out.csv\"\n");
    let r = s3.fanout(&s, &["run", "job.toml", "--progress", "never"]);
    assert_ne!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("NoSuchBucket: The specified bucket does not exist"), "{}", r.stderr);
    assert!(!r.stderr.contains('<'), "S3's XML is quoted: {}", r.stderr);
}
