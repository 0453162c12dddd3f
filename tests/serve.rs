//! `fanout serve`, the function host, driven from outside: raw HTTP
//! requests for its event contract, the Lambda Invoke API, throttling,
//! tokens and the drain on SIGTERM; and boto3's lambda client (AWS's own
//! SDK) against its Invoke API.

use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::remote::{Host, post, request};
use crate::util::{Scratch, python};

#[test]
fn serve_answers_the_event_contract_and_the_invoke_api() {
    let host = Host::start("127.0.0.1", &["--concurrency", "1", "--payload-limit", "1KiB"]);
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
    // At its concurrency, a host throttles: 429, as Lambda does.
    let slow = {
        let a = a.to_string();
        std::thread::spawn(move || post(&a, "/functions/sleep", r#"{"params":{"ms":1500},"records":[{"x":1}]}"#))
    };
    std::thread::sleep(Duration::from_millis(300));
    let r = post(a, "/functions/word_count", r#"{"records":[{"line":"a"}]}"#);
    assert_eq!((r.status, r.header("x-amzn-errortype")), (429, Some("TooManyRequestsException")));
    assert_eq!(slow.join().unwrap().status, 200);
    assert_eq!(post(a, "/functions/word_count", r#"{"records":[{"line":"a"}]}"#).status, 200);
}

#[test]
fn serve_wants_a_token_beyond_loopback_and_drains_on_sigterm() {
    let s = Scratch::new();
    // Beyond the loopback interface, a token is required.
    let r = s.run(&["serve", "--listen", "0.0.0.0:0"]).expect(2);
    assert!(r.stderr.contains("needs a bearer token: --token-file FILE"), "{}", r.stderr);
    let token = s.write("token", "s3cr3t\n");
    let mut host = Host::start("127.0.0.1", &["--token-file", token.to_str().unwrap()]);
    let addr = host.addr.clone();
    let a = addr.as_str();
    let body = br#"{"records":[{"line":"a"}]}"#;
    let r = request(a, "POST", "/functions/word_count", &[], body);
    assert_eq!((r.status, r.header("www-authenticate")), (401, Some("Bearer")));
    let r = request(a, "POST", "/functions/word_count", &[("authorization", "Bearer wrong")], body);
    assert_eq!(r.status, 401);
    let r = request(a, "POST", "/functions/word_count", &[("authorization", "Bearer s3cr3t")], body);
    assert_eq!(r.status, 200);
    // SIGTERM drains: the invocation in flight is answered, then the
    // host exits 0 and listens no more.
    let slow = {
        let a = a.to_string();
        std::thread::spawn(move || {
            let auth = [("authorization", "Bearer s3cr3t")];
            request(&a, "POST", "/functions/sleep", &auth, br#"{"params":{"ms":800},"records":[{"x":1}]}"#)
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    let pid = host.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let r = slow.join().unwrap();
    assert_eq!(r.status, 200, "the invocation in flight was not answered: {}", r.body);
    let started = Instant::now();
    let status = loop {
        if let Some(s) = host.child.try_wait().unwrap() {
            break s;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "serve did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
    assert!(TcpStream::connect(a).is_err(), "still listening after it drained");
}

#[test]
fn the_invoke_api_answers_boto3_as_lambda_does() {
    let s = Scratch::new();
    let host = Host::start("127.0.0.1", &["--concurrency", "1"]);
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
# Throttling: TooManyRequestsException while the one slot is busy.
slow = threading.Thread(target=lambda: c.invoke(FunctionName="sleep", Payload=json.dumps({{"params": {{"ms": 1500}}, "records": [{{"x": 1}}]}})))
slow.start()
import time; time.sleep(0.4)
try:
    c.invoke(FunctionName="word_count", Payload=json.dumps({{"records": [{{"line": "a"}}]}}))
    raise SystemExit("not throttled")
except c.exceptions.TooManyRequestsException:
    pass
slow.join()
print("ok")
"#,
            addr = host.addr
        ),
    );
}
