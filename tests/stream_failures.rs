//! A stream's poison records: a batch whose function fails is bisected
//! down to the records that fail (`bisect_on_error`), which are set aside
//! (`on_failure`: the run directory's rejects, or an SQS queue on moto's
//! server) while the rest of the batch goes on into the windows, checked
//! against an oracle; without `on_failure`, the stream stops naming the
//! one record.

use crate::storage::S3;
use crate::stream::{check_sent_late, clicks};
use crate::util::{Scratch, python, summary};

/// An exec stage that passes records through, and fails (exit 3) on a
/// batch holding a record whose `n` is 1000.
const CHECK: &str = r#"[[stage]]
name = "check"
[stage.function]
exec = ["python3", "-c", "import sys, json\nrows = sys.stdin.read()\nif any(json.loads(l)['n'] == 1000 for l in rows.splitlines()):\n    sys.exit('poison record')\nsys.stdout.write(rows)"]
io = "jsonl"
schema = ["page:utf8", "ts:utf8", "n:int64"]
"#;

/// Writes 6 files of 200 click events into `incoming/`, event times in
/// order, 3 of them poison; `sent.jsonl` gets the others, in order.
fn poisoned(s: &Scratch) {
    python(
        s,
        "import datetime, json, os, random\nrandom.seed(5)\nos.makedirs('incoming')\nsent = open('sent.jsonl', 'w')\n\
         poison = {150, 611, 1002}\nfor f in range(6):\n    lines = []\n    for i in range(f * 200, f * 200 + 200):\n        \
         ts = datetime.datetime.fromtimestamp(1796637600 + i * 0.01, datetime.timezone.utc).isoformat(timespec='milliseconds').replace('+00:00', 'Z')\n        \
         r = {'page': random.choice('abcde'), 'ts': ts, 'n': 1000 if i in poison else random.randint(0, 99)}\n        \
         lines.append(json.dumps(r))\n        if i not in poison:\n            sent.write(json.dumps(r) + '\\n')\n    \
         open(f'incoming/.{f}', 'w').write('\\n'.join(lines) + '\\n')\n    os.rename(f'incoming/.{f}', f'incoming/{f:03}.jsonl')\n\
         print('ok')",
    );
}

/// The clicks job with the poison-checking stage first and `extra` in
/// `[stream]`.
fn job(extra: &str) -> String {
    clicks(&format!("{extra}\nbatch_size = 100"), "out/")
        .replace("batch_size = 300\n", "")
        .replace("[[stage]]\nname = \"count\"", &format!("{CHECK}[[stage]]\nname = \"count\""))
        .replace("concurrency = 2\n", "concurrency = 2\nretries = 0\n")
}

#[test]
fn a_poison_record_is_bisected_down_to_alone_and_set_aside() {
    let s = Scratch::new();
    poisoned(&s);
    s.write("clicks.toml", job("bisect_on_error = true\non_failure = \"rejects\""));
    let args = ["run", "clicks.toml", "--until", "idle=1s", "--progress", "never", "--json", "--run-dir", "rd"];
    let r = s.run_within(120, &args).expect(0);
    let sum = summary(&r);
    assert_eq!(sum["stream"]["records_in"], 1200);
    assert_eq!(sum["stream"]["failed_records"], 3);
    let plan = s.run(&["plan", "clicks.toml"]).expect(0);
    let says = "a batch whose function fails is bisected down to the records that fail, which are set aside";
    assert!(plan.stdout.contains(says), "{}", plan.stdout);
    // The rest of each poisoned batch went on: the windows are the
    // oracle's over every record but the 3.
    check_sent_late(&s, "sent.jsonl", "out", "rd", 1000);
    // Each poison record alone, with its stage, error and where it was read.
    let mut rejects = Vec::new();
    for entry in std::fs::read_dir(s.path("rd/rejects")).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        rejects.extend(text.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()));
    }
    rejects.sort_by_key(|r| r["source"].as_str().unwrap().to_string());
    let sources: Vec<&str> = rejects.iter().map(|r| r["source"].as_str().unwrap()).collect();
    assert_eq!(sources, ["000.jsonl, record 151", "003.jsonl, record 12", "005.jsonl, record 3"]);
    for r in &rejects {
        assert_eq!(r["stage"], "check");
        assert_eq!(r["record"]["n"], 1000);
        assert!(r["error"].as_str().unwrap().contains("poison record"), "{r}");
    }
    // Bisecting a batch of 100 down to one record: 1 + 2 + 2 + ... calls,
    // each recorded; the failed ones with their error.
    let records = s.records("rd");
    let failed = records.lines().filter(|l| l.contains("\"stage\":\"check\"") && l.contains("poison record")).count();
    assert!(failed >= 3 * 7, "{failed} failed invocations for 3 bisections of 100 records");
}

#[test]
fn without_on_failure_a_bisected_poison_record_stops_the_stream_named() {
    let s = Scratch::new();
    poisoned(&s);
    s.write("clicks.toml", job("bisect_on_error = true"));
    let args = ["run", "clicks.toml", "--until", "idle=1s", "--progress", "never", "--run-dir", "rd"];
    let r = s.run_within(120, &args).expect(1);
    assert!(r.stderr.contains("error: stage `check`, 000.jsonl, record 151: "), "{}", r.stderr);
    assert!(r.stderr.contains("poison record"), "{}", r.stderr);
    // Without bisection, the whole batch is named.
    s.write("whole.toml", job("").replace("out/", "whole/"));
    let r = s.run_within(120, &["run", "whole.toml", "--until", "idle=1s", "--progress", "never"]).expect(1);
    assert!(r.stderr.contains("error: stage `check`, batch of 000.jsonl records 101..200: "), "{}", r.stderr);
}

#[test]
fn poison_records_go_to_an_sqs_queue() {
    let s = Scratch::new();
    let moto = S3::start(&s);
    poisoned(&s);
    let script = format!(
        "import boto3\nsqs = boto3.client('sqs', endpoint_url='{}', aws_access_key_id='testing', \
         aws_secret_access_key='testing', region_name='us-east-1')\n\
         print(sqs.create_queue(QueueName='dead')['QueueUrl'], file=open('queue', 'w'))\nprint('ok')",
        moto.endpoint()
    );
    python(&s, &script);
    let queue = std::fs::read_to_string(s.path("queue")).unwrap().trim().to_string();
    s.write("clicks.toml", job(&format!("bisect_on_error = true\non_failure = {{ sqs = \"{queue}\" }}")));
    let args = ["run", "clicks.toml", "--until", "idle=1s", "--progress", "never", "--json", "--run-dir", "rd"];
    let r = crate::util::run_with(s.dir.path(), &args, &moto.env()).expect(0);
    assert_eq!(summary(&r)["stream"]["failed_records"], 3);
    check_sent_late(&s, "sent.jsonl", "out", "rd", 1000);
    let script = format!(
        "import boto3, json\nsqs = boto3.client('sqs', endpoint_url='{}', aws_access_key_id='testing', \
         aws_secret_access_key='testing', region_name='us-east-1')\nseen = []\nfor _ in range(5):\n    \
         r = sqs.receive_message(QueueUrl='{queue}', MaxNumberOfMessages=10)\n    \
         seen += [json.loads(m['Body']) for m in r.get('Messages', [])]\n\
         assert sorted(m['source'] for m in seen) == ['000.jsonl, record 151', '003.jsonl, record 12', '005.jsonl, record 3'], seen\n\
         assert all(m['record']['n'] == 1000 and m['stage'] == 'check' for m in seen), seen\nprint('ok')",
        moto.endpoint()
    );
    python(&s, &script);
}

#[test]
fn a_failing_batch_set_aside_whole_names_each_records_source() {
    let s = Scratch::new();
    poisoned(&s);
    s.write("clicks.toml", job("on_failure = \"rejects\""));
    let args = ["run", "clicks.toml", "--until", "idle=1s", "--progress", "never", "--json", "--run-dir", "rd"];
    let r = s.run_within(120, &args).expect(0);
    // The three batches of 100 holding a poison record, whole.
    assert_eq!(summary(&r)["stream"]["failed_records"], 300);
    let mut sources = Vec::new();
    for entry in std::fs::read_dir(s.path("rd/rejects")).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for line in text.lines() {
            let r: serde_json::Value = serde_json::from_str(line).unwrap();
            sources.push(r["source"].as_str().expect("each record's source").to_string());
        }
    }
    sources.sort();
    let mut want: Vec<String> = [("000", 101), ("003", 1), ("005", 1)]
        .iter()
        .flat_map(|(f, first)| (*first..*first + 100).map(move |n| format!("{f}.jsonl, record {n}")))
        .collect();
    want.sort();
    assert_eq!(sources, want);
}

#[test]
fn on_failure_and_bisect_are_checked() {
    let s = Scratch::new();
    std::fs::create_dir_all(s.path("incoming")).unwrap();
    let cases = [
        ("on_failure = \"dlq\"", "on_failure is \"rejects\" or { sqs = \"QUEUE URL\" }, not `dlq`"),
        ("on_failure = { sqs = \"queue\" }", "on_failure.sqs `queue` is not a queue URL"),
        ("bisect_on_error = \"yes\"", "invalid type: string \"yes\", expected a boolean"),
    ];
    for (extra, want) in cases {
        s.write("j.toml", job(extra));
        let r = s.run(&["validate", "j.toml"]).expect(2);
        assert!(r.stderr.contains(want), "{extra}: {}", r.stderr);
    }
}
