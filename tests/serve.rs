//! `fanout serve`, the function host, driven from outside: raw HTTP
//! requests for its event contract, the Lambda Invoke API, throttling,
//! tokens and the drain on SIGTERM; and boto3's lambda client (AWS's own
//! SDK) against its Invoke API.
//!
//! Where a test needs an invocation in flight, it holds one: a job's exec
//! function (`--job`) that answers once the test writes a file, and the
//! host's `/healthz` says when it runs. Nothing waits on the clock.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::remote::{Host, post, request};
use crate::util::{Scratch, marked, python, wait_for};

/// A job whose `hold` stage answers once the file `release` exists (in
/// the host's directory), and whose `up` stage is a lambda function
/// marked with `mark`.
fn hold_job(s: &Scratch, mark: &str) {
    let handlers = crate::util::root().join("tests/fixtures/lambda");
    // The job's input must exist, though the host does not read it.
    s.write("unused.txt", "");
    s.write(
        "hold.toml",
        format!(
            r#"[input]
path = "unused.txt"
[[stage]]
name = "hold"
function = {{ exec = ["sh", "-c", "while [ ! -e release ]; do sleep 0.01; done; cat"] }}
[[stage]]
name = "up"
function = {{ lambda = ["python3", "{dir}/bootstrap.py"], handler = "handlers.upper", cwd = "{dir}", schema = ["line:utf8", "n:int64"], env = {{ FANOUT_TEST_MARK = "{mark}" }} }}
[output]
path = "unused.csv"
"#,
            dir = handlers.display()
        ),
    );
}

/// The host's `/healthz` answer: its status code and body.
fn health(addr: &str) -> (u16, serde_json::Value) {
    let r = request(addr, "GET", "/healthz", &[], b"");
    (r.status, r.json())
}

/// Starts an invocation of `hold` on a thread (with `headers`) and waits
/// until the host says it runs.
fn hold(addr: &str, headers: &'static [(&'static str, &'static str)]) -> std::thread::JoinHandle<crate::remote::Reply> {
    let a = addr.to_string();
    let held = std::thread::spawn(move || {
        request(&a, "POST", "/functions/hold", headers, br#"{"records":[{"line":"held"}]}"#)
    });
    assert!(wait_for(60, || health(addr).1["running"] == 1), "the held invocation did not start");
    held
}

#[test]
fn serve_answers_the_event_contract_and_the_invoke_api() {
    let s = Scratch::new();
    hold_job(&s, "unused");
    let args = ["--concurrency", "1", "--payload-limit", "1KiB", "--job", "hold.toml"];
    let host = Host::start_at(s.dir.path(), None, "127.0.0.1", &args);
    let a = host.addr.as_str();
    let ok = request(a, "GET", "/healthz", &[], b"");
    assert_eq!((ok.status, ok.json()["status"].as_str()), (200, Some("ok")));
    // The plain contract: records in, records out.
    let r = post(
        a,
        "/functions/word_count",
        r#"{"stage":"s","task":3,"attempt":1,"params":{},"records":[{"line":"a b a"},{"line":"c"}]}"#,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let mut got: Vec<(String, i64)> = r.json()["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| (x["word"].as_str().unwrap().to_string(), x["count"].as_i64().unwrap()))
        .collect();
    got.sort();
    assert_eq!(got, [("a".into(), 2), ("b".into(), 1), ("c".into(), 1)]);
    // No records, no work.
    let r = post(a, "/functions/word_count", r#"{"records":[]}"#);
    assert_eq!((r.status, r.json()["records"].as_array().map(Vec::len)), (200, Some(0)));
    // An unknown function, a bad parameter, a body too large.
    let r = post(a, "/functions/nope", "{}");
    assert_eq!((r.status, r.header("x-amzn-errortype")), (404, Some("ResourceNotFoundException")));
    let r = post(a, "/functions/grep", r#"{"params":{"bad":1},"records":[{"line":"x"}]}"#);
    assert_eq!(r.status, 400);
    assert!(r.json()["errorMessage"].as_str().unwrap().contains("unknown parameter `bad`"), "{}", r.body);
    let big = format!(r#"{{"records":[{{"line":"{}"}}]}}"#, "x".repeat(2000));
    assert_eq!(post(a, "/functions/word_count", &big).status, 413);
    // The Lambda Invoke API: an ARN names the function; a function error
    // is 200 with X-Amz-Function-Error.
    let arn = "/2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-east-1%3A123456789012%3Afunction%3Agrep/invocations";
    let r = post(a, arn, r#"{"params":{"pattern":"b"},"records":[{"line":"ab"},{"line":"c"}]}"#);
    assert_eq!((r.status, r.header("x-amz-function-error")), (200, None), "{}", r.body);
    assert_eq!(r.json()["records"], serde_json::json!([{"line": "ab"}]));
    let r = post(a, arn, r#"{"params":{"bad":1},"records":[{"line":"x"}]}"#);
    assert_eq!((r.status, r.header("x-amz-function-error")), (200, Some("Unhandled")));
    assert_eq!(r.json()["errorType"], "InvalidParameter");
    // The Invoke API's limit too: 413, as Lambda's.
    let r = post(a, "/2015-03-31/functions/word_count/invocations", &big);
    assert_eq!((r.status, r.header("x-amzn-errortype")), (413, Some("RequestTooLargeException")), "{}", r.body);
    // At its concurrency, a host throttles: 429, as Lambda does, while an
    // invocation is held; once it is answered, the next one runs.
    let held = hold(a, &[]);
    let r = post(a, "/functions/word_count", r#"{"records":[{"line":"a"}]}"#);
    assert_eq!((r.status, r.header("x-amzn-errortype")), (429, Some("TooManyRequestsException")));
    s.write("release", "");
    let r = held.join().unwrap();
    assert_eq!((r.status, r.json()["records"].clone()), (200, serde_json::json!([{"line": "held"}])), "{}", r.body);
    assert_eq!(post(a, "/functions/word_count", r#"{"records":[{"line":"a"}]}"#).status, 200);
}

#[test]
fn serve_wants_a_readable_token_beyond_loopback() {
    let s = Scratch::new();
    // Beyond the loopback interface, a token is required.
    let r = s.run(&["serve", "--listen", "0.0.0.0:0"]).expect(2);
    assert!(r.stderr.contains("needs a bearer token: --token-file FILE"), "{}", r.stderr);
    // An empty token file, or one that cannot be read, is refused.
    s.write("empty", "\n");
    let r = s.run(&["serve", "--listen", "127.0.0.1:0", "--token-file", "empty"]).expect(2);
    assert!(r.stderr.contains("--token-file empty: the file is empty"), "{}", r.stderr);
    let r = s.run(&["serve", "--listen", "127.0.0.1:0", "--token-file", "missing"]).expect(2);
    assert!(r.stderr.contains("--token-file missing: No such file or directory"), "{}", r.stderr);
    std::fs::create_dir(s.path("adir")).unwrap();
    let r = s.run(&["serve", "--listen", "127.0.0.1:0", "--token-file", "adir"]).expect(2);
    assert!(r.stderr.contains("--token-file adir: Is a directory"), "{}", r.stderr);
    let token = s.write("token", "s3cr3t\n");
    let host = Host::start("127.0.0.1", &["--token-file", token.to_str().unwrap()]);
    let a = host.addr.as_str();
    let body = br#"{"records":[{"line":"a"}]}"#;
    let r = request(a, "POST", "/functions/word_count", &[], body);
    assert_eq!((r.status, r.header("www-authenticate")), (401, Some("Bearer")));
    let r = request(a, "POST", "/functions/word_count", &[("authorization", "Bearer wrong")], body);
    assert_eq!(r.status, 401);
    let r = request(a, "POST", "/functions/word_count", &[("authorization", "Bearer s3cr3t")], body);
    assert_eq!(r.status, 200);
    // Health checks carry no token (a platform's probes have none).
    assert_eq!(health(a), (200, serde_json::json!({"status": "ok", "running": 0, "concurrency": 2})));
}

/// One request on a kept-alive connection: the reply's status line and
/// headers (lowercase), its body read.
fn on_connection(stream: &mut BufReader<TcpStream>, method: &str, path: &str, body: &[u8]) -> (String, Vec<String>) {
    let head = format!(
        "{method} {path} HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\nauthorization: Bearer s3cr3t\r\n\r\n",
        body.len()
    );
    stream.get_mut().write_all(head.as_bytes()).unwrap();
    stream.get_mut().write_all(body).unwrap();
    let mut status = String::new();
    stream.read_line(&mut status).unwrap();
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        stream.read_line(&mut line).unwrap();
        if line.trim().is_empty() {
            break;
        }
        headers.push(line.trim().to_ascii_lowercase());
    }
    let length: usize = headers.iter().find_map(|h| h.strip_prefix("content-length: ")).unwrap().parse().unwrap();
    let mut body = vec![0; length];
    stream.read_exact(&mut body).unwrap();
    (status.trim().to_string(), headers)
}

#[test]
fn serve_drains_on_sigterm_and_reaps_its_job_s_processes() {
    let s = Scratch::new();
    let mark = s.dir.path().display().to_string();
    hold_job(&s, &mark);
    let token = s.write("token", "s3cr3t\n");
    let args = ["--token-file", token.to_str().unwrap(), "--job", "hold.toml", "--concurrency", "4"];
    let mut host = Host::start_at(s.dir.path(), None, "127.0.0.1", &args);
    let addr = host.addr.clone();
    let a = addr.as_str();
    const AUTH: &[(&str, &str)] = &[("authorization", "Bearer s3cr3t")];
    let connect = || {
        let stream = TcpStream::connect(a).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        BufReader::new(stream)
    };
    // The job's lambda function runs in a process of the host's, kept
    // warm for the connection that called it (idle from now on).
    let mut warm = connect();
    let (status, _) = on_connection(&mut warm, "POST", "/functions/up", br#"{"records":[{"line":"ab"}]}"#);
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(!marked(&mark).is_empty(), "the lambda function's process is not running");
    // A connection kept alive from before the signal.
    let mut kept = connect();
    let (status, _) = on_connection(&mut kept, "GET", "/healthz", b"");
    assert_eq!(status, "HTTP/1.1 200 OK");
    // SIGTERM while an invocation is held: the host drains.
    let held = hold(a, AUTH);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(host.child.id() as i32), nix::sys::signal::Signal::SIGTERM)
        .unwrap();
    assert!(wait_for(60, || health(a).0 == 503), "/healthz did not say the host drains");
    assert_eq!(health(a).1["status"], "draining");
    // New requests, on a new connection or a kept-alive one, get 503 and
    // are told to close.
    let r = request(a, "POST", "/functions/word_count", AUTH, br#"{"records":[{"line":"a"}]}"#);
    assert_eq!((r.status, r.header("connection")), (503, Some("close")), "{}", r.body);
    let (status, headers) = on_connection(&mut kept, "POST", "/functions/word_count", br#"{"records":[]}"#);
    assert_eq!(status, "HTTP/1.1 503 Service Unavailable");
    assert!(headers.contains(&"connection: close".to_string()), "{headers:?}");
    // The held invocation is answered, then the host exits 0, listens no
    // more, and leaves none of its functions' processes running.
    s.write("release", "");
    let r = held.join().unwrap();
    assert_eq!(r.status, 200, "the invocation in flight was not answered: {}", r.body);
    let exited = wait_for(60, || host.child.try_wait().unwrap().is_some());
    assert!(exited, "serve did not exit after the drain");
    assert!(host.child.wait().unwrap().success());
    assert!(TcpStream::connect(a).is_err(), "still listening after it drained");
    let left = marked(&mark);
    assert!(left.is_empty(), "the job's processes outlived the host: {left:?}");
}

#[test]
fn a_second_signal_stops_the_host_at_once_and_says_what_it_drops() {
    let s = Scratch::new();
    s.write("unused.txt", "");
    let mark = "serve-second-signal";
    s.write(
        "job.toml",
        format!(
            r#"[input]
path = "unused.txt"
[[stage]]
name = "hold"
function = {{ exec = ["sh", "-c", "while [ ! -e release ]; do sleep 0.01; done; cat"], env = {{ FANOUT_TEST_MARK = "{mark}" }} }}
[output]
path = "unused.csv"
"#
        ),
    );
    let mut host = Host::start_at(s.dir.path(), None, "127.0.0.1", &["--concurrency", "1", "--job", "job.toml"]);
    let a = host.addr.as_str();
    // Two Event invocations accepted: one runs (held), one waits for the
    // slot.
    for _ in 0..2 {
        let headers: &[(&str, &str)] = &[("x-amz-invocation-type", "Event")];
        let r = request(a, "POST", "/2015-03-31/functions/hold/invocations", headers, br#"{"records":[{"line":"x"}]}"#);
        assert_eq!(r.status, 202, "{}", r.body);
    }
    assert!(wait_for(60, || health(a).1["running"] == 1), "the held invocation did not start");
    let pid = nix::unistd::Pid::from_raw(host.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    assert!(wait_for(60, || health(a).0 == 503), "/healthz did not say the host drains");
    // The drain waits for the held invocation; a second signal ends it.
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    assert!(wait_for(60, || host.child.try_wait().unwrap().is_some()), "serve did not stop at once");
    let status = host.child.wait().unwrap();
    assert_eq!(std::os::unix::process::ExitStatusExt::into_raw(status) >> 8, 143, "{status:?}");
    let said = host.said();
    assert!(
        said.contains(
            "SIGTERM: stopping at once: 1 invocation running is cut off; 2 accepted Event invocations \
             (answered 202) are lost"
        ),
        "{said}"
    );
    assert!(wait_for(10, || marked(mark).is_empty()), "the held function outlived the host: {:?}", marked(mark));
}

#[test]
fn the_invoke_api_follows_its_invocation_type_and_names_a_bad_event() {
    let s = Scratch::new();
    s.write("unused.txt", "");
    // `note` says each run in runs.log; `broken` says so and fails.
    s.write(
        "job.toml",
        r#"[input]
path = "unused.txt"
[[stage]]
name = "note"
function = { exec = ["sh", "-c", "echo run >> runs.log; cat"] }
[[stage]]
name = "broken"
function = { exec = ["sh", "-c", "echo run >> broken.log; exit 3"] }
[output]
path = "unused.csv"
"#,
    );
    let host = Host::start_at(s.dir.path(), None, "127.0.0.1", &["--concurrency", "1", "--job", "job.toml"]);
    let a = host.addr.as_str();
    let invoke = |name: &str, kind: &'static str| {
        let path = format!("/2015-03-31/functions/{name}/invocations");
        let headers: &[(&str, &str)] = &[("x-amz-invocation-type", kind)];
        request(a, "POST", &path, headers, br#"{"records":[{"line":"x"}]}"#)
    };
    // DryRun: 204, nothing run.
    let r = invoke("note", "DryRun");
    assert_eq!((r.status, r.body.as_str()), (204, ""));
    assert_eq!(invoke("nope", "DryRun").status, 404);
    // Event: 202 with an empty body at once; it runs after, and the host
    // says how it ended.
    let r = invoke("note", "Event");
    assert_eq!((r.status, r.body.as_str()), (202, ""));
    let id = r.header("x-amzn-requestid").unwrap().to_string();
    assert!(wait_for(60, || host.said().contains(&format!("Event invocation {id} of note: succeeded (1 records)"))));
    assert_eq!(std::fs::read_to_string(s.path("runs.log")).unwrap(), "run\n", "DryRun ran it, or Event twice");
    // A failing Event invocation is retried twice, as Lambda does.
    let r = invoke("broken", "Event");
    assert_eq!(r.status, 202);
    let id = r.header("x-amzn-requestid").unwrap().to_string();
    let said = format!("Event invocation {id} of broken: failed after 3 attempts: ");
    assert!(wait_for(60, || host.said().contains(&said)), "{}", host.said());
    assert_eq!(std::fs::read_to_string(s.path("broken.log")).unwrap(), "run\nrun\nrun\n");
    // RequestResponse, said or not: the answer.
    let r = invoke("note", "RequestResponse");
    assert_eq!((r.status, r.json()["records"].clone()), (200, serde_json::json!([{"line": "x"}])));
    assert!(r.header("x-amzn-requestid").is_some_and(|r| r != id), "{:?}", r.headers);
    let r = invoke("note", "Sometimes");
    assert_eq!((r.status, r.header("x-amzn-errortype")), (400, Some("InvalidParameterValueException")));
    // An event that is not an object with a list of records says so: 400
    // on every path and invocation type, before anything is accepted.
    for body in
        ["[1,2]", "[]", "{}", r#"{"records": 5}"#, r#"{"records": [{"line": "a"}, 2]}"#, "{records", "", "notjson"]
    {
        let r = post(a, "/functions/word_count", body);
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        let message = r.json()["errorMessage"].as_str().unwrap().to_string();
        let want = ["the event must be a JSON object with \"records\"", "the event is not JSON: "];
        assert!(want.iter().any(|w| message.starts_with(w)), "{body}: {message}");
        for kind in ["Event", "RequestResponse"] {
            let headers: &[(&str, &str)] = &[("x-amz-invocation-type", kind)];
            let r = request(a, "POST", "/2015-03-31/functions/note/invocations", headers, body.as_bytes());
            let got = (r.status, r.header("x-amzn-errortype"));
            assert_eq!(got, (400, Some("InvalidRequestContentException")), "{body} {kind}");
        }
    }
    let r = post(a, "/functions/word_count", r#"{"records": 5}"#);
    let message = r.json()["errorMessage"].as_str().unwrap().to_string();
    assert!(message.contains("(a list) (line 1, column "), "{message}");
    let r = post(a, "/functions/word_count", r#"{"records": [{"line": "a"}, 2]}"#);
    let message = r.json()["errorMessage"].as_str().unwrap().to_string();
    assert!(message.ends_with("of objects; record 1 is `2`"), "{message}");
    let r = post(a, "/functions/word_count", "notjson");
    let message = r.json()["errorMessage"].as_str().unwrap().to_string();
    assert!(message.starts_with("the event is not JSON: "), "{message}");
    assert_eq!(std::fs::read_to_string(s.path("runs.log")).unwrap(), "run\nrun\n", "a bad event ran");
}

#[test]
fn the_invoke_api_answers_boto3_as_lambda_does() {
    let s = Scratch::new();
    hold_job(&s, "unused");
    let host = Host::start_at(s.dir.path(), None, "127.0.0.1", &["--concurrency", "1", "--job", "hold.toml"]);
    python(
        &s,
        &format!(
            r#"
import json, threading, boto3, botocore
from botocore.config import Config
c = boto3.client("lambda", endpoint_url="http://{addr}", region_name="us-east-1",
                 aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key="secret",
                 config=Config(retries={{"max_attempts": 0}}))
# An invocation: the records come back in the payload.
r = c.invoke(FunctionName="word_count", Payload=json.dumps({{"records": [{{"line": "a b a"}}]}}))
assert r["StatusCode"] == 200 and "FunctionError" not in r, r
out = json.loads(r["Payload"].read())
assert sorted((x["word"], x["count"]) for x in out["records"]) == [("a", 2), ("b", 1)], out
# By ARN, with a qualifier.
arn = "arn:aws:lambda:us-east-1:123456789012:function:grep"
r = c.invoke(FunctionName=arn, Qualifier="1", Payload=json.dumps({{"params": {{"pattern": "x"}}, "records": [{{"line": "x"}}, {{"line": "y"}}]}}))
assert json.loads(r["Payload"].read()) == {{"records": [{{"line": "x"}}]}}
# A function error: 200, FunctionError set, the error in the payload.
r = c.invoke(FunctionName="grep", Payload=json.dumps({{"params": {{"bad": 1}}, "records": [{{"line": "x"}}]}}))
assert r["StatusCode"] == 200 and r["FunctionError"] == "Unhandled", r
err = json.loads(r["Payload"].read())
assert err["errorType"] == "InvalidParameter" and "unknown parameter" in err["errorMessage"], err
# An unknown function: the SDK's own exception.
try:
    c.invoke(FunctionName="nope", Payload=b"{{}}")
    raise SystemExit("no error")
except c.exceptions.ResourceNotFoundException as e:
    assert "nope" in str(e), e
# Throttling: TooManyRequestsException while the one slot is held (the
# host's /healthz says when it runs).
held = threading.Thread(target=lambda: c.invoke(FunctionName="hold", Payload=json.dumps({{"records": [{{"line": "x"}}]}})))
held.start()
import time, urllib.request
while json.load(urllib.request.urlopen("http://{addr}/healthz"))["running"] != 1:
    time.sleep(0.005)
try:
    c.invoke(FunctionName="word_count", Payload=json.dumps({{"records": [{{"line": "a"}}]}}))
    raise SystemExit("not throttled")
except c.exceptions.TooManyRequestsException:
    pass
open("release", "w").close()
held.join()
# The invocation types: DryRun runs nothing (204), Event is accepted (202).
r = c.invoke(FunctionName="word_count", InvocationType="DryRun", Payload=json.dumps({{"records": []}}))
assert r["StatusCode"] == 204, r
r = c.invoke(FunctionName="word_count", InvocationType="Event", Payload=json.dumps({{"records": [{{"line": "a"}}]}}))
assert r["StatusCode"] == 202 and r["Payload"].read() == b"", r
print("ok")
"#,
            addr = host.addr
        ),
    );
}

#[test]
fn serve_kills_a_job_s_function_at_the_job_s_timeout() {
    let s = Scratch::new();
    let mark = s.dir.path().display().to_string();
    s.write("unused.txt", "");
    // An exec function that never answers (and leaves a process behind),
    // under the job's timeout of a second.
    s.write(
        "hang.toml",
        format!(
            r#"[input]
path = "unused.txt"
[[stage]]
name = "hang"
function = {{ exec = ["sh", "-c", "setsid sleep 300 & sleep 300; cat"], env = {{ FANOUT_TEST_MARK = "{mark}" }} }}
[output]
path = "unused.csv"
[platform]
timeout = "1s"
"#
        ),
    );
    let host = Host::start_at(s.dir.path(), None, "127.0.0.1", &["--job", "hang.toml"]);
    let a = host.addr.as_str();
    let r = post(a, "/functions/hang", r#"{"records":[{"line":"x"}]}"#);
    assert_eq!(r.status, 500, "{}", r.body);
    assert!(r.json()["errorMessage"].as_str().unwrap().contains("passed its deadline"), "{}", r.body);
    // Nothing of it runs on: the host's slot is free, its processes gone.
    assert_eq!(health(a).1["running"], 0);
    let left = marked(&mark);
    assert!(left.is_empty(), "the timed-out invocation's processes live on: {left:?}");
}
