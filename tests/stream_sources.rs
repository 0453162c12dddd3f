//! Streams received from services, against real servers the tests start:
//! Kinesis and SQS on moto's server (boto3, AWS's own SDK, as the
//! producer), Redis Streams on redis-server (Debian's package, fed with
//! redis-cli). Each is killed with SIGKILL at random moments and resumed,
//! and what it committed is checked against what the producer sent:
//! every record once, and each window equal to an oracle computed in
//! Python.

use std::process::{Command, Stdio};

use crate::storage::S3;
use crate::stream::{check_sent_late, clicks, kill_and_resume};
use crate::util::{Daemon, Scratch, binary, python, root, summary, wait_for};

/// Starts tests/fixtures/stream_send.py: `records` events into `target`
/// of `kind`, `rate` a second, noted in the scratch file `sent`.
fn send(s: &Scratch, kind: &str, target: &str, records: u32, rate: u32, env: &[(&str, &str)]) -> std::process::Child {
    send_from(s, kind, target, 0..records, rate, env)
}

/// The same, the records numbered `seqs`.
fn send_from(
    s: &Scratch,
    kind: &str,
    target: &str,
    seqs: std::ops::Range<u32>,
    rate: u32,
    env: &[(&str, &str)],
) -> std::process::Child {
    let records = (seqs.end - seqs.start).to_string();
    Command::new("python3")
        .arg(root().join("tests/fixtures/stream_send.py"))
        .args([kind, target, &records, &rate.to_string(), "11", s.path("sent.jsonl").to_str().unwrap()])
        .arg(seqs.start.to_string())
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

/// Runs Python with boto3's client `name` for `service` on `moto`.
fn boto(s: &Scratch, moto: &S3, service: &str, script: &str) {
    python(
        s,
        &format!(
            "import boto3, json, time\n{service} = boto3.client('{service}', endpoint_url='{}', \
             aws_access_key_id='testing', aws_secret_access_key='testing', region_name='us-east-1')\n{script}\nprint('ok')\n",
            moto.endpoint()
        ),
    );
}

/// The clicks job (a tumbling 2 s count per page) reading `source`.
fn windowed(source: &str, extra: &str) -> String {
    clicks(extra, "out/").replace("stream = { dir = \"incoming\" }", &format!("stream = {source}")).replace(
        "schema = [\"page:utf8\", \"ts:utf8\", \"n:int64\"]",
        "schema = [\"page:utf8\", \"ts:utf8\", \"n:int64\", \"key:utf8\", \"seq:int64\"]",
    )
}

/// A map-only job reading `source`: its records as they came, into parts.
fn copied(source: &str) -> String {
    format!(
        r#"name = "copy"
[input]
stream = {source}
format = "jsonl"
schema = ["key:utf8", "seq:int64"]
[stream]
batch_size = 200
checkpoint_every = "150ms"
[[stage]]
name = "keep"
function = "filter"
params = {{ where = "seq >= 0" }}
[output]
path = "parts/"
format = "jsonl"
"#
    )
}

/// The records of the output parts, in order, as (key, seq).
fn parts(s: &Scratch) -> Vec<(String, u64)> {
    let mut files: Vec<_> = std::fs::read_dir(s.path("parts")).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files
        .iter()
        .flat_map(|p| std::fs::read_to_string(p).unwrap().lines().map(str::to_string).collect::<Vec<_>>())
        .map(|l| serde_json::from_str::<serde_json::Value>(&l).unwrap())
        .map(|r| (r["key"].as_str().unwrap().to_string(), r["seq"].as_u64().unwrap()))
        .collect()
}

/// Starts `fanout ARGS` in the scratch directory with `env`, its output
/// dropped.
fn start(s: &Scratch, args: &[&str], env: &[(&str, &str)]) -> std::process::Child {
    Command::new(binary())
        .args(args)
        .envs(env.iter().copied())
        .current_dir(s.dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Waits for the last resume to stop by itself, successfully.
fn ends(mut child: std::process::Child) {
    assert!(wait_for(120, || child.try_wait().unwrap().is_some()), "the resumed stream did not stop when idle");
    assert!(child.wait().unwrap().success());
}

#[test]
fn a_kinesis_stream_of_two_shards_killed_five_times_counts_each_record_once() {
    let s = Scratch::new();
    let moto = S3::start(&s);
    boto(&s, &moto, "kinesis", "kinesis.create_stream(StreamName='clicks', ShardCount=2)");
    let env = moto.env();
    let mut producer = send(&s, "kinesis", "clicks", 4000, 1000, &env);
    s.write("clicks.toml", windowed("{ kinesis = \"clicks\" }", "checkpoint_every = \"150ms\""));
    let args = ["run", "clicks.toml", "--until", "idle=2s", "--progress", "never", "--run-dir", "rd"];
    let child = start(&s, &args, &env);
    let child = kill_and_resume(s.dir.path(), child, 5, "rd", &env);
    assert!(producer.wait().unwrap().success());
    ends(child);
    // Each shard's event times rise, so none is late: every window is the
    // oracle's, with each record counted once.
    check_sent_late(&s, "sent.jsonl", "out", "rd", 1000);
    let sum: serde_json::Value = serde_json::from_slice(&std::fs::read(s.path("rd/summary.json")).unwrap()).unwrap();
    assert_eq!(sum["stream"]["records_in"], 4000);
    assert_eq!(sum["stream"]["late_records"], 0);
    // Both shards were read, each a partition of the watermark.
    let checkpoint = std::fs::read_to_string(s.path("rd/checkpoint/CURRENT")).unwrap();
    let state = std::fs::read_to_string(s.path(&format!("rd/checkpoint/{}/state.json", checkpoint.trim()))).unwrap();
    assert!(state.contains("shardId-000000000000") && state.contains("shardId-000000000001"), "{state}");

    // Read again from the start by a map-only job: each partition key's
    // records (one shard's) in the order they were put.
    s.write("copy.toml", copied("{ kinesis = \"clicks\" }"));
    let r = crate::util::run_with(
        s.dir.path(),
        &["run", "copy.toml", "--until", "idle=1s", "--progress", "never", "--json"],
        &env,
    );
    assert_eq!(summary(&r.expect(0))["stream"]["records_in"], 4000);
    let got = parts(&s);
    assert_eq!(got.len(), 4000);
    for key in 0..8 {
        let seqs: Vec<u64> = got.iter().filter(|(k, _)| *k == format!("k{key}")).map(|(_, q)| *q).collect();
        let want: Vec<u64> = (0..4000).filter(|i| i % 8 == key).collect();
        assert_eq!(seqs, want, "key k{key}: out of order or not once");
    }
}

#[test]
fn an_sqs_queue_redelivers_what_a_killed_run_left_and_nothing_counts_twice() {
    let s = Scratch::new();
    let moto = S3::start(&s);
    boto(&s, &moto, "sqs", "print(sqs.create_queue(QueueName='clicks')['QueueUrl'], file=open('queue', 'w'))");
    let queue = std::fs::read_to_string(s.path("queue")).unwrap().trim().to_string();
    let env = moto.env();
    assert!(send(&s, "sqs", &queue, 300, 10_000, &env).wait().unwrap().success());
    // A consumer that crashed holding 10 messages: they come back once
    // their visibility timeout has passed.
    boto(
        &s,
        &moto,
        "sqs",
        &format!(
            "r = sqs.receive_message(QueueUrl='{queue}', MaxNumberOfMessages=10, VisibilityTimeout=2)
assert len(r['Messages']) == 10"
        ),
    );
    // The first run is killed once it has spooled messages and is
    // deleting them (a proxy holds the delete): they come again, and are
    // known by their ids.
    let (_proxy, endpoint) = crate::storage::proxy(&s, moto.endpoint(), "stall:POST:DeleteMessageBatch", "stalled");
    let mut through = env;
    through[0] = ("AWS_ENDPOINT_URL", &endpoint);
    let source = format!("{{ sqs = \"{queue}\", visibility_timeout = \"2s\" }}");
    s.write("copy.toml", copied(&source));
    // Idle longer than the visibility timeout: what a killed run received
    // and had not deleted comes again before the stream stops.
    let args = ["run", "copy.toml", "--until", "idle=5s", "--progress", "never", "--run-dir", "rd"];
    let mut child = start(&s, &args, &through);
    assert!(wait_for(60, || std::fs::read_to_string(s.path("stalled")).is_ok_and(|t| t == "stalled")));
    child.kill().unwrap();
    child.wait().unwrap();
    let receipts = std::fs::read_dir(s.path("rd/receipts")).unwrap().count();
    assert!(receipts >= 1, "no receipt of a spooled, undeleted file");
    // The resume's first delete of them fails (a proxy answers 500): they
    // come to it again once their visibility timeout has passed, and are
    // known by their ids.
    let (_failing, endpoint) = crate::storage::proxy(&s, moto.endpoint(), "fail:POST:DeleteMessageBatch", "failed");
    through[0] = ("AWS_ENDPOINT_URL", &endpoint);
    let mut producer = send_from(&s, "sqs", &queue, 300..800, 400, &env);
    let mut child = start(&s, &["run", "--resume", "rd", "--progress", "never"], &through);
    assert!(wait_for(60, || std::fs::read_to_string(s.path("failed")).is_ok_and(|t| t == "failed")));
    std::thread::sleep(std::time::Duration::from_secs(4));
    child.kill().unwrap();
    child.wait().unwrap();
    // More arrive while resumes are killed at random moments.
    let child = start(&s, &["run", "--resume", "rd", "--progress", "never"], &env);
    let child = kill_and_resume(s.dir.path(), child, 3, "rd", &env);
    assert!(producer.wait().unwrap().success());
    ends(child);
    let mut seqs: Vec<u64> = parts(&s).into_iter().map(|(_, q)| q).collect();
    seqs.sort_unstable();
    let want: Vec<u64> = (0..800).collect();
    assert!(seqs == want, "each message once: {} of 800, {:?}...", seqs.len(), &seqs[..seqs.len().min(20)]);
    // Every message was deleted from the queue.
    boto(
        &s,
        &moto,
        "sqs",
        &format!(
            "a = sqs.get_queue_attributes(QueueUrl='{queue}', AttributeNames=['All'])['Attributes']\n\
             assert a['ApproximateNumberOfMessages'] == '0' and a['ApproximateNumberOfMessagesNotVisible'] == '0', a"
        ),
    );
}

#[test]
fn an_sqs_queues_requests_are_priced_next_to_the_functions() {
    let s = Scratch::new();
    let moto = S3::start(&s);
    boto(&s, &moto, "sqs", "print(sqs.create_queue(QueueName='clicks')['QueueUrl'], file=open('queue', 'w'))");
    let queue = std::fs::read_to_string(s.path("queue")).unwrap().trim().to_string();
    let env = moto.env();
    assert!(send(&s, "sqs", &queue, 95, 10_000, &env).wait().unwrap().success());
    s.write("copy.toml", copied(&format!("{{ sqs = \"{queue}\" }}")));
    // Idle past the last, empty, long poll of a second.
    let args = ["run", "copy.toml", "--until", "idle=3s", "--progress", "never", "--run-dir", "rd"];
    let r = crate::util::run_with(s.dir.path(), &args, &env).expect(0);
    assert_eq!(parts(&s).len(), 95);
    let sum: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(s.path("rd/summary.json")).unwrap()).unwrap();
    let sc = &sum["stream"]["source_cost"];
    assert_eq!(sc["service"], "sqs", "{sum}");
    // At least a ReceiveMessage and a DeleteMessageBatch per 10 messages;
    // at most a few empty polls a second besides.
    let requests = sc["charges"][0]["quantity"].as_f64().unwrap();
    let wall = sum["wall_seconds"].as_f64().unwrap();
    assert!(requests >= 20.0 && requests <= 20.0 + 25.0 * wall, "{requests} requests in {wall} s");
    assert!((sc["usd"].as_f64().unwrap() - requests * 0.40 / 1e6).abs() < 1e-12, "{sc}");
    // Said after the run, and in the report.
    assert!(r.stderr.contains(&format!("source on sqs: {requests} requests")), "{}", r.stderr);
    s.run(&["report", "rd"]).expect(0);
    let html = std::fs::read_to_string(s.path("rd/report.html")).unwrap();
    assert!(html.contains("<h3>The source, sqs</h3>") && html.contains("$0.40 per 1M requests"));
}

/// A redis-server on loopback, killed when dropped.
struct Redis {
    _server: Daemon,
    port: String,
}

impl Redis {
    fn start(s: &Scratch) -> Redis {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port().to_string();
        let child = Command::new("redis-server")
            .args(["--port", &port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .current_dir(s.dir.path())
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (tests/setup.sh installs it)");
        let addr = format!("127.0.0.1:{port}");
        assert!(wait_for(30, || std::net::TcpStream::connect(&addr).is_ok()), "redis-server did not start");
        Redis { _server: Daemon(child), port }
    }

    /// redis-cli's answer to `args`.
    fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli").args(["-p", &self.port]).args(args).output().unwrap();
        assert!(out.status.success(), "redis-cli {args:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

#[test]
fn a_redis_stream_resumes_its_own_pending_entries_and_claims_a_dead_consumers() {
    let s = Scratch::new();
    let redis = Redis::start(&s);
    assert_eq!(redis.cli(&["XGROUP", "CREATE", "clicks", "clicks", "0", "MKSTREAM"]), "OK");
    let mut producer = send(&s, "redis", &redis.port, 3000, 1000, &[]);
    // A consumer of the group takes 150 entries and dies with them
    // pending.
    assert!(wait_for(30, || crate::util::lines_in(&s.path("sent.jsonl")) >= 200));
    let taken = redis.cli(&["XREADGROUP", "GROUP", "clicks", "dead", "COUNT", "150", "STREAMS", "clicks", ">"]);
    assert!(taken.matches("data").count() == 150, "{taken}");
    // Claimed entries are older than the watermark: an hour's lateness
    // keeps them in their windows.
    let url = format!("redis://127.0.0.1:{}", redis.port);
    let source = format!("{{ redis = \"{url}\", key = \"clicks\", field = \"data\", claim_after = \"1s\" }}");
    let job = windowed(&source, "checkpoint_every = \"150ms\"")
        .replace("allowed_lateness = \"1s\"", "allowed_lateness = \"1h\"");
    s.write("clicks.toml", job);
    let args = ["run", "clicks.toml", "--until", "idle=3s", "--progress", "never", "--run-dir", "rd"];
    let child = start(&s, &args, &[]);
    let child = kill_and_resume(s.dir.path(), child, 4, "rd", &[]);
    assert!(producer.wait().unwrap().success());
    ends(child);
    check_sent_late(&s, "sent.jsonl", "out", "rd", 3_600_000);
    // Nothing is left pending: the dead consumer's entries were claimed,
    // the killed runs' acknowledged by their resumes.
    let pending = redis.cli(&["XPENDING", "clicks", "clicks"]);
    assert!(pending.starts_with('0'), "{pending}");
}

#[test]
fn a_missing_stream_queue_or_server_stops_the_run_naming_it() {
    let s = Scratch::new();
    let moto = S3::start(&s);
    let env = moto.env();
    s.write("k.toml", copied("{ kinesis = \"nosuch\" }"));
    let r = crate::util::run_with(s.dir.path(), &["run", "k.toml", "--until", "idle=1s", "--progress", "never"], &env);
    let r = r.expect(1);
    assert!(r.stderr.contains("error: kinesis stream nosuch: ResourceNotFoundException"), "{}", r.stderr);
    assert!(!s.path(".fanout/runs").exists(), "a stream that cannot be read made a run directory");
    let queue = format!("{}/123456789012/nosuch", moto.endpoint());
    s.write("q.toml", copied(&format!("{{ sqs = \"{queue}\" }}")));
    let r = crate::util::run_with(s.dir.path(), &["run", "q.toml", "--until", "idle=1s", "--progress", "never"], &env);
    let r = r.expect(1);
    assert!(r.stderr.contains(&format!("error: sqs queue {queue}: ")), "{}", r.stderr);
    assert!(r.stderr.contains("QueueDoesNotExist"), "{}", r.stderr);
    s.write("o.toml", copied("{ dir = \"s3://nosuch/incoming/\" }"));
    let r = crate::util::run_with(s.dir.path(), &["run", "o.toml", "--until", "idle=1s", "--progress", "never"], &env);
    let r = r.expect(1);
    assert!(r.stderr.contains("error: objects under s3://nosuch/incoming/: "), "{}", r.stderr);
    assert!(r.stderr.contains("NoSuchBucket: The specified bucket does not exist"), "{}", r.stderr);
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    s.write("r.toml", copied(&format!("{{ redis = \"redis://127.0.0.1:{port}\", key = \"k\" }}")));
    let r = s.run(&["run", "r.toml", "--until", "idle=1s", "--progress", "never"]).expect(1);
    assert!(
        r.stderr.contains(&format!("error: redis stream k at redis://127.0.0.1:{port}: connecting")),
        "{}",
        r.stderr
    );
}

#[test]
fn a_slow_function_leaves_what_it_cannot_take_in_the_service() {
    let s = Scratch::new();
    let redis = Redis::start(&s);
    // 30,000 entries wait; the function takes 50 a batch, 100 ms each.
    assert!(send(&s, "redis", &redis.port, 30_000, 1_000_000, &[]).wait().unwrap().success());
    let url = format!("redis://127.0.0.1:{}", redis.port);
    let source = format!("{{ redis = \"{url}\", key = \"clicks\", field = \"data\" }}");
    let slow = "[[stage]]\nname = \"slow\"\nfunction = \"sleep\"\nparams = { ms = 100 }\n";
    let job = copied(&source)
        .replace("batch_size = 200", "batch_size = 50")
        .replace("[[stage]]\nname = \"keep\"", &format!("{slow}[[stage]]\nname = \"keep\""));
    s.write("copy.toml", job);
    let args = ["run", "copy.toml", "--until", "records=1000", "--progress", "never", "--json", "--run-dir", "rd"];
    let mut child = s.spawn(&args);
    // The spool never holds more than 64 files waiting, and the few read
    // since the last checkpoint (removed at the next).
    let mut most = 0;
    while child.try_wait().unwrap().is_none() {
        let files = std::fs::read_dir(s.path("rd/received")).map_or(0, |d| d.count());
        most = most.max(files);
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(child.wait().unwrap().success());
    assert!(most <= 90, "{most} files spooled at once");
    // What was not received stays in the stream for the group.
    let info = redis.cli(&["XINFO", "GROUPS", "clicks"]);
    let read: u64 = info.lines().skip_while(|l| *l != "entries-read").nth(1).unwrap().parse().unwrap();
    assert!((1000..=1000 + 90 * 50).contains(&read), "{read} entries read of 30000");
}

#[test]
fn records_older_than_max_record_age_are_set_aside_not_processed() {
    let s = Scratch::new();
    let redis = Redis::start(&s);
    assert!(send_from(&s, "redis", &redis.port, 0..50, 1_000_000, &[]).wait().unwrap().success());
    std::thread::sleep(std::time::Duration::from_millis(2500));
    assert!(send_from(&s, "redis", &redis.port, 50..100, 1_000_000, &[]).wait().unwrap().success());
    let url = format!("redis://127.0.0.1:{}", redis.port);
    let source = format!("{{ redis = \"{url}\", key = \"clicks\", field = \"data\" }}");
    s.write("copy.toml", copied(&source).replace("[stream]\n", "[stream]\nmax_record_age = \"2s\"\n"));
    let args = ["run", "copy.toml", "--until", "idle=1s", "--progress", "never", "--json", "--run-dir", "rd"];
    let r = s.run_within(60, &args).expect(0);
    let sum = summary(&r);
    assert_eq!(sum["stream"]["expired_records"], 50);
    let mut seqs: Vec<u64> = parts(&s).into_iter().map(|(_, q)| q).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (50..100).collect::<Vec<u64>>());
    // Each expired record, with the time Redis took it.
    let mut expired = Vec::new();
    for entry in std::fs::read_dir(s.path("rd/expired")).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        expired.extend(text.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()));
    }
    let mut old: Vec<u64> = expired
        .iter()
        .inspect(|e| assert!(e["received_ms"].as_i64().unwrap() - e["sent_ms"].as_i64().unwrap() > 2000, "{e}"))
        .map(|e| e["record"]["seq"].as_u64().unwrap())
        .collect();
    old.sort_unstable();
    assert_eq!(old, (0..50).collect::<Vec<u64>>());
    // Acknowledged all the same: nothing is pending.
    assert!(redis.cli(&["XPENDING", "clicks", "copy"]).starts_with('0'));
    let plan = s.run(&["plan", "copy.toml"]).expect(0);
    assert!(plan.stdout.contains("records older than 2s when received: set aside"), "{}", plan.stdout);
    // A source without a service's time for its records is refused.
    std::fs::create_dir_all(s.path("incoming")).unwrap();
    s.write("dir.toml", copied("{ dir = \"incoming\" }").replace("[stream]\n", "[stream]\nmax_record_age = \"2s\"\n"));
    let r = s.run(&["validate", "dir.toml"]).expect(2);
    assert!(r.stderr.contains("max_record_age applies to a stream received from a service"), "{}", r.stderr);
}

/// A stage that passes its records through as an exec process, noting in
/// `keys.log` when it started and ended and the keys of its records.
const NOTING: &str = r#"import json, os, sys, time
d = sys.stdin.read()
keys = sorted({json.loads(l)["key"] for l in d.splitlines() if l})
def note(what):
    with open(os.environ["KEY_LOG"], "a") as f:
        f.write(f"{os.getpid()} {what} {time.time_ns()} {','.join(keys)}\n")
note("start")
time.sleep(0.06)
note("end")
sys.stdout.write(d)
"#;

#[test]
fn a_kinesis_shards_batches_run_one_at_a_time_unless_parallelized_by_key() {
    let s = Scratch::new();
    let moto = S3::start(&s);
    boto(&s, &moto, "kinesis", "kinesis.create_stream(StreamName='clicks', ShardCount=2)");
    let env = moto.env();
    // Eight partition keys over the two shards.
    assert!(send(&s, "kinesis", "clicks", 1600, 1_000_000, &env).wait().unwrap().success());
    s.write("noting.py", NOTING);
    // Four workers, and the most a shard may have in flight.
    for (per, most) in [("", 2), ("parallelization = 2\n", 4)] {
        let log = s.path(&format!("keys-{most}.log"));
        let slow = format!(
            "[[stage]]\nname = \"slow\"\n[stage.function]\nexec = [\"python3\", \"{}\"]\nio = \"jsonl\"\n\
             schema = [\"key:utf8\", \"seq:int64\"]\nenv = {{ KEY_LOG = \"{}\" }}\n",
            s.path("noting.py").display(),
            log.display()
        );
        let job = copied("{ kinesis = \"clicks\" }")
            .replace("batch_size = 200", &format!("batch_size = 100\n{per}"))
            .replace("[[stage]]\nname = \"keep\"", &format!("{slow}[[stage]]\nname = \"keep\""))
            + "[platform]\nconcurrency = 4\n";
        s.write("copy.toml", &job);
        let rd = format!("rd-{most}");
        let args = ["run", "copy.toml", "--until", "idle=1s", "--progress", "never", "--run-dir", &rd];
        crate::util::run_with(s.dir.path(), &args, &env).expect(0);
        // Every record, once, in the order of its key's sequence.
        let got = parts(&s);
        assert_eq!(got.len(), 1600, "{per}");
        let mut last: std::collections::BTreeMap<String, u64> = Default::default();
        for (key, seq) in &got {
            let before = last.insert(key.clone(), *seq);
            assert!(before.is_none_or(|b| b < *seq), "{per}: {key} {seq} after {before:?}");
        }
        // The invocations, from what they noted: (start, end, keys).
        let text = std::fs::read_to_string(&log).unwrap();
        let mut open: std::collections::HashMap<String, (u64, String)> = Default::default();
        let mut calls: Vec<(u64, u64, String)> = Vec::new();
        for line in text.lines() {
            let f: Vec<&str> = line.splitn(4, ' ').collect();
            let (pid, what, at, keys) = (f[0], f[1], f[2].parse::<u64>().unwrap(), f[3].to_string());
            match what {
                "start" => drop(open.insert(pid.to_string(), (at, keys))),
                _ => {
                    let (start, keys) = open.remove(pid).unwrap();
                    calls.push((start, at, keys));
                }
            }
        }
        assert!(open.is_empty() && !calls.is_empty(), "{text}");
        // At most `most` in flight, and more than one.
        let mut edges: Vec<(u64, i32)> = calls.iter().flat_map(|c| [(c.0, 1), (c.1, -1)]).collect();
        edges.sort();
        let (mut now, mut peak) = (0, 0);
        for (_, d) in edges {
            now += d;
            peak = peak.max(now);
        }
        assert!(peak <= most, "{per}: {peak} batches in flight, at most {most}");
        assert!(peak >= 2, "{per}: the two shards were not read side by side ({peak})");
        // A key's invocations never overlap: each starts after the one
        // before it ended, as Lambda keeps a partition key's order.
        for k in 0..8 {
            let key = format!("k{k}");
            let mut mine: Vec<(u64, u64)> =
                calls.iter().filter(|c| c.2.split(',').any(|x| x == key)).map(|c| (c.0, c.1)).collect();
            mine.sort();
            assert!(mine.len() >= 2, "{per}: {key}");
            for w in mine.windows(2) {
                assert!(w[1].0 >= w[0].1, "{per}: two invocations of {key} overlap: {w:?}");
            }
        }
        // With lanes, a shard's keys run side by side: more batches in
        // flight than the two shards alone allow.
        if most == 4 {
            assert!(peak >= 3, "{per}: the lanes of a shard did not run side by side ({peak})");
        }
        // The source's own prices: 1,600 records of under 25 KB are a PUT
        // payload unit each, and two shards were read for the run's time.
        let sum: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(s.path(&format!("{rd}/summary.json"))).unwrap()).unwrap();
        let sc = &sum["stream"]["source_cost"];
        assert_eq!(sc["service"], "kinesis", "{sum}");
        assert_eq!(sc["charges"][1]["item"], "PUT payload units");
        assert_eq!(sc["charges"][1]["quantity"], 1600.0);
        let hours = sc["charges"][0]["quantity"].as_f64().unwrap();
        let wall = sum["wall_seconds"].as_f64().unwrap();
        assert!(hours > 0.0 && hours <= 2.0 * wall / 3600.0, "{hours} shard-hours in {wall} s");
        let by_hand = hours * 0.015 + 1600.0 * 0.014 / 1e6;
        assert!((sc["usd"].as_f64().unwrap() - by_hand).abs() < 1e-12, "{sc}");
        std::fs::remove_dir_all(s.path("parts")).unwrap();
    }
}

#[test]
fn a_server_that_stops_answering_does_not_hang_the_stream() {
    let s = Scratch::new();
    let redis = Redis::start(&s);
    assert!(send(&s, "redis", &redis.port, 500, 1_000_000, &[]).wait().unwrap().success());
    let url = format!("redis://127.0.0.1:{}", redis.port);
    s.write("copy.toml", copied(&format!("{{ redis = \"{url}\", key = \"clicks\", field = \"data\" }}")));
    let args = ["run", "copy.toml", "--until", "idle=2s", "--progress", "never", "--run-dir", "rd"];
    let child = s.spawn(&args);
    assert!(wait_for(30, || std::fs::read_dir(s.path("rd/received")).is_ok_and(|d| d.count() > 0)));
    // The server freezes: every call to it times out.
    let pid = redis._server.0.id();
    crate::faults::signal(pid, "STOP");
    let started = std::time::Instant::now();
    let r = crate::util::finish_within(child, 60, &args);
    let took = started.elapsed();
    crate::faults::signal(pid, "CONT");
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(took < std::time::Duration::from_secs(30), "the stream took {took:?} to stop by idle");
    // What it took before the freeze, each once; the rest waits in the
    // stream for the next run.
    let mut seqs: Vec<u64> = parts(&s).into_iter().map(|(_, q)| q).collect();
    seqs.sort_unstable();
    let n = seqs.len();
    seqs.dedup();
    assert_eq!(seqs.len(), n, "a record committed twice");
    assert!(seqs.iter().all(|&q| q < 500) && n > 0, "{n} records");
}

#[test]
fn objects_that_appear_under_a_prefix_are_each_read_once_across_kill_9() {
    let s = Scratch::new();
    let moto = S3::start(&s);
    // 30 objects of 200 events (event times in order), 10 a second; a
    // dot-named one is passed over.
    let script = format!(
        "import boto3, datetime, json, random, subprocess, time\n\
         s3 = boto3.client('s3', endpoint_url='{}', aws_access_key_id='testing', aws_secret_access_key='testing', region_name='us-east-1')\n\
         random.seed(3)\nsent = open('sent.jsonl', 'w')\n\
         s3.put_object(Bucket='data', Key='incoming/.partial', Body=b'not records')\n\
         for f in range(30):\n    lines = []\n    for i in range(f * 200, f * 200 + 200):\n        \
         ts = datetime.datetime.fromtimestamp(1796637600 + i * 0.01, datetime.timezone.utc).isoformat(timespec='milliseconds').replace('+00:00', 'Z')\n        \
         lines.append(json.dumps({{'page': random.choice('abcde'), 'ts': ts, 'n': random.randint(0, 99), 'key': 'k', 'seq': i}}))\n    \
         s3.put_object(Bucket='data', Key=f'incoming/{{f:04}}.jsonl', Body=('\\n'.join(lines) + '\\n').encode())\n    \
         sent.write('\\n'.join(lines) + '\\n')\n    sent.flush()\n    time.sleep(0.1)\nprint('ok')\n",
        moto.endpoint()
    );
    s.write("put.py", script);
    let mut producer =
        Command::new("python3").arg("put.py").current_dir(s.dir.path()).stdout(Stdio::null()).spawn().unwrap();
    let env = moto.env();
    s.write("clicks.toml", windowed("{ dir = \"s3://data/incoming/\" }", "checkpoint_every = \"150ms\""));
    let args = ["run", "clicks.toml", "--until", "idle=2s", "--progress", "never", "--run-dir", "rd"];
    let child = start(&s, &args, &env);
    let child = kill_and_resume(s.dir.path(), child, 3, "rd", &env);
    assert!(producer.wait().unwrap().success());
    ends(child);
    check_sent_late(&s, "sent.jsonl", "out", "rd", 1000);
    let sum: serde_json::Value = serde_json::from_slice(&std::fs::read(s.path("rd/summary.json")).unwrap()).unwrap();
    assert_eq!(sum["stream"]["records_in"], 6000);
    let plan = crate::util::run_with(s.dir.path(), &["plan", "clicks.toml"], &env).expect(0);
    assert!(
        plan.stdout.contains("input: a stream of objects that appear under s3://data/incoming/"),
        "{}",
        plan.stdout
    );
    // A record that does not parse is named by its object.
    let bad = "s3.put_object(Bucket='data', Key='bad/a.jsonl', Body=b'{\"page\": \"a\", \"ts\": \"x\", \"n\": 1}\\n{\"n\": oops}\\n')";
    boto(&s, &moto, "s3", bad);
    s.write("bad.toml", copied("{ dir = \"s3://data/bad/\" }"));
    let r =
        crate::util::run_with(s.dir.path(), &["run", "bad.toml", "--until", "idle=1s", "--progress", "never"], &env);
    let r = r.expect(1);
    assert!(
        r.stderr.contains("error: objects under s3://data/bad/ (s3://data/bad/a.jsonl), spooled as "),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("line 2"), "{}", r.stderr);
}

#[test]
fn a_streams_windows_go_to_a_prefix_in_object_storage() {
    let s = Scratch::new();
    let moto = S3::start(&s);
    let env = moto.env();
    let mut producer = crate::stream::produce_seeded(&s, 24, 200, 12.0, 4);
    s.write("clicks.toml", clicks("checkpoint_every = \"150ms\"", "s3://data/windows/"));
    let args = ["run", "clicks.toml", "--until", "idle=2s", "--progress", "never", "--run-dir", "rd"];
    let child = start(&s, &args, &env);
    let child = kill_and_resume(s.dir.path(), child, 2, "rd", &env);
    assert!(producer.wait().unwrap().success());
    ends(child);
    // The objects, fetched by boto3, are the oracle's windows.
    boto(
        &s,
        &moto,
        "s3",
        "import os\nos.makedirs('fetched')\nfor o in s3.list_objects_v2(Bucket='data', Prefix='windows/')['Contents']:\n    \
         s3.download_file('data', o['Key'], 'fetched/' + o['Key'].split('/')[-1])",
    );
    crate::stream::check_windows(&s, "fetched", "rd", &["2000", "1000"]);
    let sum: serde_json::Value = serde_json::from_slice(&std::fs::read(s.path("rd/summary.json")).unwrap()).unwrap();
    assert_eq!(sum["stream"]["output"], "s3://data/windows/");
    // A prefix that holds objects is refused, unless overwriting.
    let r = crate::util::run_with(s.dir.path(), &args[..2], &env).expect(2);
    assert!(r.stderr.contains("s3://data/windows/ exists"), "{}", r.stderr);
    // Overwriting, an earlier stream's windows go; other objects stay.
    boto(
        &s,
        &moto,
        "s3",
        "s3.put_object(Bucket='data', Key='windows/window-1999-01-01T00-00-00Z.jsonl', Body=b'{}')\n\
         s3.put_object(Bucket='data', Key='windows/keep.txt', Body=b'mine')",
    );
    let again = ["run", "clicks.toml", "--until", "idle=1s", "--progress", "never", "--run-dir", "rd2"];
    crate::util::run_with(s.dir.path(), &[&again[..], &["--set", "output.mode=overwrite"]].concat(), &env).expect(0);
    boto(
        &s,
        &moto,
        "s3",
        "keys = [o['Key'] for o in s3.list_objects_v2(Bucket='data', Prefix='windows/')['Contents']]\n\
         assert 'windows/keep.txt' in keys and 'windows/window-1999-01-01T00-00-00Z.jsonl' not in keys, keys",
    );
}
