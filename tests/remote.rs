//! Functions beyond this process over HTTP: the `http` backend against several
//! `fanout serve` hosts (one killed mid-run, one throttling, one
//! stalling past the deadline), and against Google's Functions Framework,
//! the runtime Cloud Functions and Cloud Run use (tests/setup.sh installs it).
//! The hosts listen on addresses of their own (127.0.0.1, .2, .3).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::util::{Run, Scratch, binary, lines_in, python, summary};

/// A `fanout serve` process, killed when dropped.
pub(crate) struct Host {
    pub(crate) child: Child,
    pub(crate) addr: String,
    /// What the host wrote to stderr after its first line, so far.
    pub(crate) log: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

/// Appends what is written to a shared buffer.
struct Kept(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl Write for Kept {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Host {
    /// Starts `fanout serve --listen IP:0 ARGS` and waits for it to say
    /// where it listens.
    pub(crate) fn start(ip: &str, args: &[&str]) -> Host {
        Host::start_in(None, ip, args)
    }

    /// Starts the host in network namespace `netns`, if given.
    pub(crate) fn start_in(netns: Option<&str>, ip: &str, args: &[&str]) -> Host {
        Host::start_at(std::path::Path::new("."), netns, ip, args)
    }

    /// Starts the host in directory `dir`.
    pub(crate) fn start_at(dir: &std::path::Path, netns: Option<&str>, ip: &str, args: &[&str]) -> Host {
        Host::start_with(dir, netns, ip, args, &[])
    }

    /// Starts the host with more environment variables.
    pub(crate) fn start_with(
        dir: &std::path::Path,
        netns: Option<&str>,
        ip: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Host {
        let listen = format!("{ip}:0");
        let bin = binary().display().to_string();
        let mut argv: Vec<&str> = match netns {
            Some(ns) => vec!["ip", "netns", "exec", ns, &bin],
            None => vec![&bin],
        };
        argv.extend(["serve", "--listen", &listen]);
        let mut child = Command::new(argv[0])
            .args(&argv[1..])
            .args(args)
            .envs(env.iter().copied())
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = String::new();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        stderr.read_line(&mut first).unwrap();
        // Keep reading, so that the host never writes to a closed pipe.
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut kept = Kept(log.clone());
        std::thread::spawn(move || std::io::copy(&mut stderr, &mut kept));
        let addr = first
            .split("http://")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or_else(|| panic!("serve said: {first}"))
            .to_string();
        Host { child, addr, log }
    }

    /// What the host has written to stderr since its first line.
    pub(crate) fn said(&self) -> String {
        String::from_utf8_lossy(&self.log.lock().unwrap()).into_owned()
    }

    pub(crate) fn url(&self, function: &str) -> String {
        format!("http://{}/functions/{function}", self.addr)
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A reply: status, headers (lowercase names), body.
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: String,
}

impl Reply {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// One HTTP/1.1 request on a connection of its own.
pub(crate) fn request(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut head =
        format!("{method} {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-length: {}\r\nconnection: close\r\n", body.len());
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    let _ = s.write_all(body);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|s| s.parse().ok()).unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Reply { status, headers, body: body.to_string() }
}

pub(crate) fn post(addr: &str, path: &str, body: &str) -> Reply {
    request(addr, "POST", path, &[("content-type", "application/json")], body.as_bytes())
}

/// Writes `words.txt`: lines of lowercase words, and returns its path.
fn words(s: &Scratch, lines: usize) {
    python(
        s,
        &format!(
            "import random\nr = random.Random(5)\nv = ['w%d' % i for i in range(300)]\n\
             open('words.txt', 'w').write(''.join(' '.join(r.choice(v) for _ in range(r.randint(1, 12))) + '\\n' for _ in range({lines})))\nprint('ok')"
        ),
    );
}

/// A word-count job whose first stage is `first` (a function table or a
/// builtin's name, with its params), run at `concurrency`.
fn word_count_job(first: &str, params: &str, concurrency: usize, platform: &str) -> String {
    format!(
        "[input]\npath = \"words.txt\"\nchunk_size = \"512B\"\n\
         [[stage]]\nname = \"remote\"\nfunction = {first}\nparams = {params}\n\
         [[stage]]\nfunction = \"word_count\"\n\
         [[stage]]\nfunction = \"aggregate\"\nkey = [\"word\"]\nparams = {{ sum = [\"count\"] }}\n\
         [output]\npath = \"out.csv\"\nmode = \"overwrite\"\nsort = [\"word\"]\n\
         [platform]\nconcurrency = {concurrency}\nretries = 6\nbackoff = \"20ms\"\n{platform}\n"
    )
}

fn run_job(s: &Scratch, job: &str) -> Run {
    s.write("job.toml", job);
    s.run_within(120, &["run", "job.toml", "--progress", "never", "--show", "0", "--json"])
}

/// The output of the same job with the builtin `sleep` in this process.
fn local_output(s: &Scratch) -> Vec<u8> {
    run_job(s, &word_count_job("\"sleep\"", "{ ms = 1 }", 3, "")).expect(0);
    std::fs::read(s.path("out.csv")).unwrap()
}

/// A network namespace linked to this one by a veth pair: a host of its
/// own at 10.X.Y.2, reached from here at 10.X.Y.1. Removed when dropped.
struct Netns {
    name: String,
    ip: String,
}

impl Netns {
    /// Namespace `i` of this test process; `None` when namespaces cannot
    /// be made here (not root, no `ip`).
    fn new(i: u32) -> Option<Netns> {
        let id = std::process::id() % 200 + 20;
        let name = format!("fo{id}h{i}");
        let (here, there) = (format!("fo{id}a{i}"), format!("fo{id}b{i}"));
        let (near, far) = (format!("10.{id}.{i}.1/24"), format!("10.{id}.{i}.2/24"));
        let ns = Netns { name: name.clone(), ip: format!("10.{id}.{i}.2") };
        let steps: [&[&str]; 8] = [
            &["netns", "add", &name],
            &["link", "add", &here, "type", "veth", "peer", "name", &there],
            &["link", "set", &there, "netns", &name],
            &["addr", "add", &near, "dev", &here],
            &["link", "set", &here, "up"],
            &["netns", "exec", &name, "ip", "addr", "add", &far, "dev", &there],
            &["netns", "exec", &name, "ip", "link", "set", &there, "up"],
            &["netns", "exec", &name, "ip", "link", "set", "lo", "up"],
        ];
        for step in steps {
            let ok = Command::new("ip").args(step).stderr(Stdio::null()).status().is_ok_and(|s| s.success());
            if !ok {
                return None;
            }
        }
        Some(ns)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // The veth pair goes with the namespace.
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

#[test]
fn the_http_backend_spreads_over_hosts_and_survives_one_killed_mid_run() {
    let s = Scratch::new();
    words(&s, 3000);
    let expected = local_output(&s);
    // Three hosts, each in a network namespace of its own (listening
    // beyond loopback, so with a token), or on 127.0.0.1-3 where
    // namespaces cannot be made.
    let namespaces: Option<Vec<Netns>> = (1..=3).map(Netns::new).collect();
    let token = s.write("token", "t0k3n\n");
    let token = token.to_str().unwrap();
    let hosts: Vec<Host> = match &namespaces {
        Some(ns) => ns
            .iter()
            .map(|n| Host::start_in(Some(&n.name), &n.ip, &["--token-file", token, "--concurrency", "8"]))
            .collect(),
        None => {
            eprintln!("network namespaces cannot be made here: the hosts listen on 127.0.0.1-3");
            let args = ["--token-file", token, "--concurrency", "8"];
            ["127.0.0.1", "127.0.0.2", "127.0.0.3"].iter().map(|ip| Host::start(ip, &args)).collect()
        }
    };
    let urls: Vec<String> = hosts.iter().map(|h| format!("\"{}\"", h.url("sleep"))).collect();
    let table = format!("{{ http = [{}], headers = {{ Authorization = \"Bearer t0k3n\" }} }}", urls.join(", "));
    let job = word_count_job(&table, "{ ms = 40 }", 3, "");
    s.write("job.toml", &job);
    let child = s.spawn(&["run", "job.toml", "--progress", "never", "--show", "0", "--json", "--run-dir", "rd"]);
    // Kill the second host once the run is under way: once tasks are
    // journaled, fanout is paused (SIGSTOP) while the host is killed, so
    // that the kill lands mid-run whatever the machine's speed.
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    assert!(crate::util::wait_for(120, || lines_in(&s.path("rd/journal.jsonl")) > 0), "no task was journaled");
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let done_before = crate::util::journaled(&s.path("rd")).len() as u64;
    let mut hosts = hosts;
    let killed = hosts.remove(1);
    drop(killed);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    let r = crate::util::finish_within(child, 120, &["run", "job.toml"]).expect(0);
    let sum = summary(&r);
    assert_eq!(std::fs::read(s.path("out.csv")).unwrap(), expected, "the output differs from the local run's");
    let splits = sum["input"]["splits"].as_u64().unwrap();
    assert!(splits > 50, "{sum}");
    assert!(done_before * 2 < splits, "the host was killed late: {done_before} of {splits} tasks were done");
    assert!(sum["retries"].as_u64().unwrap() > 0, "the killed host's invocations were not retried: {sum}");
}

#[test]
fn a_throttling_host_and_a_stalled_one_are_retried_elsewhere() {
    let s = Scratch::new();
    words(&s, 600);
    let expected = local_output(&s);
    // One invocation at a time on this host; the job runs four: 429s.
    let host = Host::start("127.0.0.1", &["--concurrency", "1"]);
    let job = word_count_job(&format!("{{ http = \"{}\" }}", host.url("sleep")), "{ ms = 5 }", 4, "");
    let sum = summary(&run_job(&s, &job).expect(0));
    assert_eq!(std::fs::read(s.path("out.csv")).unwrap(), expected);
    assert!(sum["retries"].as_u64().unwrap() > 0, "no 429 was retried: {sum}");
    // A host that accepts and never answers, beside a good one: its
    // invocations time out at the deadline and are retried on the other.
    let stall = std::net::TcpListener::bind("127.0.0.2:0").unwrap();
    let stalled = format!("http://{}/functions/sleep", stall.local_addr().unwrap());
    let _keep = std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in stall.incoming() {
            held.push(c);
        }
    });
    let table = format!("{{ http = [\"{stalled}\", \"{}\"] }}", host.url("sleep"));
    let job = word_count_job(&table, "{ ms = 1 }", 1, "timeout = \"500ms\"");
    let sum = summary(&run_job(&s, &job).expect(0));
    assert_eq!(std::fs::read(s.path("out.csv")).unwrap(), expected);
    assert!(sum["retries"].as_u64().unwrap() > 0, "{sum}");
    // Permanent errors are not retried: a 404 fails the job at once.
    let job = word_count_job(&format!("{{ http = \"{}\" }}", host.url("nope")), "{}", 1, "");
    let r = run_job(&s, &job).expect(1);
    assert!(r.stderr.contains("HTTP 404") && r.stderr.contains("Function not found: nope"), "{}", r.stderr);
    assert!(r.stderr.contains("attempt 1"), "a 404 was retried: {}", r.stderr);
}

#[test]
fn the_http_backend_calls_a_google_functions_framework_function() {
    let s = Scratch::new();
    words(&s, 800);
    // The oracle: the builtin word count in this process.
    let builtin = "[input]\npath = \"words.txt\"\nchunk_size = \"512B\"\n[[stage]]\nfunction = \"word_count\"\n\
                   [[stage]]\nfunction = \"aggregate\"\nkey = [\"word\"]\nparams = { sum = [\"count\"] }\n\
                   [output]\npath = \"out.csv\"\nmode = \"overwrite\"\nsort = [\"word\"]\n";
    run_job(&s, builtin).expect(0);
    let expected = std::fs::read(s.path("out.csv")).unwrap();
    // The same count as a Cloud Function; every third task's first
    // attempt answers 500.
    s.write(
        "main.py",
        "def handler(request):\n    ev = request.get_json()\n    if ev['attempt'] == 1 and ev['task'] % 3 == 0:\n        return ('flaky', 500)\n    counts = {}\n    for r in ev['records']:\n        for w in r['line'].split():\n            counts[w] = counts.get(w, 0) + 1\n    return {'records': [{'word': w, 'count': c} for w, c in counts.items()]}\n",
    );
    let (mut ff, addr) = functions_framework(&s, &[]);
    let job = builtin.replace(
        "function = \"word_count\"",
        &format!("function = {{ http = \"http://{addr}/\", schema = [\"word:utf8\", \"count:int64\"] }}"),
    ) + "[platform]\nconcurrency = 3\nretries = 3\nbackoff = \"10ms\"\n";
    let r = run_job(&s, &job);
    let _ = ff.kill();
    let _ = ff.wait();
    let sum = summary(&r.expect(0));
    assert_eq!(std::fs::read(s.path("out.csv")).unwrap(), expected, "the output differs from the builtin run's");
    assert!(sum["retries"].as_u64().unwrap() > 0, "the 500s were not retried: {sum}");
}

/// Starts Google's Functions Framework on `main.py`'s `handler` in the
/// scratch directory, with more environment variables; its address.
pub(crate) fn functions_framework(s: &Scratch, env: &[(&str, &str)]) -> (Child, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let ff = Command::new("functions-framework")
        .args(["--target", "handler", "--source", "main.py", "--host", "127.0.0.1", "--port", &port.to_string()])
        .current_dir(s.dir.path())
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("functions-framework (tests/setup.sh installs it)");
    let addr = format!("127.0.0.1:{port}");
    assert!(crate::util::wait_for(30, || TcpStream::connect(&addr).is_ok()), "functions-framework did not start");
    (ff, addr)
}

#[test]
fn http_function_tables_are_checked_at_their_keys() {
    let s = Scratch::new();
    s.write("in.txt", "a\n");
    let check = |table: &str| {
        s.write(
            "job.toml",
            format!("[input]\npath = \"in.txt\"\n[[stage]]\nfunction = {table}\n[output]\npath = \"o.csv\"\n"),
        );
        s.run(&["validate", "job.toml"])
    };
    let r = check("{ http = \"https://example.invalid/f\" }").expect(2);
    assert!(r.stderr.contains("job.toml:4:") && r.stderr.contains("the `tls` feature"), "{}", r.stderr);
    let r = check("{ http = [\"http://a:1/f\", \"ftp://b/f\"] }").expect(2);
    assert!(r.stderr.contains("`ftp://b/f` is not an http:// or https:// URL"), "{}", r.stderr);
    let r = check("{ http = \"http://a:1/f\", headers = { X = 1 } }").expect(2);
    assert!(r.stderr.contains("a header's value is a string"), "{}", r.stderr);
    let r =
        check("{ http = \"http://a:1/f\", headers = { Authorization = \"Bearer ${FANOUT_SURELY_UNSET}\" } }").expect(2);
    assert!(r.stderr.contains("the variable FANOUT_SURELY_UNSET is not set"), "{}", r.stderr);
    check("{ http = \"http://a:1/f\", headers = { X = \"${PATH}\" } }").expect(0);
}

/// A Lambda Invoke API stand-in in Python that records every request
/// (path, headers, body) to `captured.jsonl` and counts words: a 413
/// for events over 300 bytes, a function error on task 2's first attempt,
/// and a split reference read from the file.
const CAPTURE_SERVER: &str = r#"
import json, sys, http.server
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a):
        pass
    def reply(self, status, obj, headers=()):
        body = json.dumps(obj).encode()
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_POST(self):
        body = self.rfile.read(int(self.headers["content-length"]))
        with open("captured.jsonl", "a") as f:
            f.write(json.dumps({"path": self.path, "headers": dict(self.headers.items()), "body": body.decode()}) + "\n")
        ev = json.loads(body)
        if "split" in ev:
            s = ev["split"]
            with open(s["path"], "rb") as f:
                f.seek(s["offset"])
                lines = f.read(s["length"]).decode().splitlines()
        elif len(body) > 300:
            return self.reply(413, {"message": "Request must be smaller than 300 bytes"}, [("x-amzn-ErrorType", "RequestTooLargeException")])
        else:
            lines = [r["line"] for r in ev["records"]]
        if ev["task"] == 2 and ev["attempt"] == 1:
            return self.reply(200, {"errorType": "ValueError", "errorMessage": "boom"}, [("X-Amz-Function-Error", "Unhandled")])
        counts = {}
        for l in lines:
            for w in l.split():
                counts[w] = counts.get(w, 0) + 1
        self.reply(200, {"records": [{"word": w, "count": c} for w, c in counts.items()]})
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
print(server.server_address[1], flush=True)
server.serve_forever()
"#;

#[test]
fn the_aws_lambda_backend_signs_as_botocore_does_and_falls_back_to_splits() {
    let s = Scratch::new();
    words(&s, 60);
    let builtin = "[input]\npath = \"words.txt\"\nchunk_size = \"256B\"\n[[stage]]\nfunction = \"word_count\"\n\
                   [[stage]]\nfunction = \"aggregate\"\nkey = [\"word\"]\nparams = { sum = [\"count\"] }\n\
                   [output]\npath = \"out.csv\"\nmode = \"overwrite\"\nsort = [\"word\"]\n";
    run_job(&s, builtin).expect(0);
    let expected = std::fs::read(s.path("out.csv")).unwrap();
    s.write("server.py", CAPTURE_SERVER);
    let mut server = Command::new("python3")
        .arg("server.py")
        .current_dir(s.dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut port = String::new();
    BufReader::new(server.stdout.take().unwrap()).read_line(&mut port).unwrap();
    let function = "{ aws_lambda = \"arn:aws:lambda:us-east-1:123456789012:function:count\", qualifier = \"live\", \
                    event = \"records\", schema = [\"word:utf8\", \"count:int64\"] }";
    let job = builtin.replace("function = \"word_count\"", &format!("function = {function}"))
        + "[platform]\nconcurrency = 2\nretries = 2\nbackoff = \"10ms\"\n";
    s.write("job.toml", &job);
    let out = Command::new(binary())
        .args(["run", "job.toml", "--progress", "never", "--show", "0", "--json"])
        .current_dir(s.dir.path())
        .env("AWS_ENDPOINT_URL_LAMBDA", format!("http://127.0.0.1:{}", port.trim()))
        .env("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
        .env("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
        .env("AWS_SESSION_TOKEN", "a-session-token")
        .output()
        .unwrap();
    let _ = server.kill();
    let _ = server.wait();
    let r = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    let sum = summary(&r.expect(0));
    assert_eq!(std::fs::read(s.path("out.csv")).unwrap(), expected, "the output differs from the builtin run's");
    assert!(sum["retries"].as_u64().unwrap() > 0, "the function error was not retried: {sum}");
    // Every request carried the SigV4 signature botocore computes for the
    // same request, time and credentials; the 413s were followed by split
    // references.
    python(
        &s,
        r#"
import json
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
creds = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "a-session-token")
captured = [json.loads(l) for l in open("captured.jsonl")]
assert captured
splits = 0
for c in captured:
    h = {k.lower(): v for k, v in c["headers"].items()}
    assert c["path"] == "/2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-east-1%3A123456789012%3Afunction%3Acount/invocations?Qualifier=live", c["path"]
    assert h["x-amz-invocation-type"] == "RequestResponse", h
    assert h["x-amz-security-token"] == "a-session-token", h
    auth = h["authorization"]
    assert auth.startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/" + h["x-amz-date"][:8] + "/us-east-1/lambda/aws4_request"), auth
    signed = auth.split("SignedHeaders=")[1].split(",")[0].split(";")
    req = AWSRequest(method="POST", url="http://" + h["host"] + c["path"], data=c["body"].encode(), headers={k: h[k] for k in signed})
    req.context["timestamp"] = h["x-amz-date"]
    signer = SigV4Auth(creds, "lambda", "us-east-1")
    want = signer.signature(signer.string_to_sign(req, signer.canonical_request(req)), req)
    assert auth.endswith("Signature=" + want), (auth, want, signer.canonical_request(req))
    splits += "split" in json.loads(c["body"])
assert splits > 0, "no event fell back to a split reference"
print("ok")
"#,
    );
}

#[test]
fn fanout_serve_is_a_lambda_custom_runtime() {
    let s = Scratch::new();
    words(&s, 400);
    let builtin = "[input]\npath = \"words.txt\"\nchunk_size = \"1KiB\"\n[[stage]]\nfunction = \"word_count\"\nparams = { lowercase = true }\n\
                   [[stage]]\nfunction = \"aggregate\"\nkey = [\"word\"]\nparams = { sum = [\"count\"] }\n\
                   [output]\npath = \"out.csv\"\nmode = \"overwrite\"\nsort = [\"word\"]\n";
    run_job(&s, builtin).expect(0);
    let expected = std::fs::read(s.path("out.csv")).unwrap();
    // The same binary under fanout's own lambda backend: it finds
    // AWS_LAMBDA_RUNTIME_API and serves the builtin the handler names.
    let bin = binary().display().to_string();
    let lambda = |handler: &str| {
        format!(
            "{{ lambda = [\"{bin}\", \"serve\"], handler = \"{handler}\", schema = [\"word:utf8\", \"count:int64\"] }}"
        )
    };
    let job = builtin.replace("function = \"word_count\"", &format!("function = {}", lambda("word_count")))
        + "[platform]\nconcurrency = 2\n";
    let sum = summary(&run_job(&s, &job).expect(0));
    assert_eq!(std::fs::read(s.path("out.csv")).unwrap(), expected, "the output differs from the builtin run's");
    assert_eq!(sum["invocations"]["failed"].as_u64(), Some(0), "{sum}");
    // A handler that names no builtin is the function's init error.
    let job = builtin.replace("function = \"word_count\"", &format!("function = {}", lambda("nope")));
    let r = run_job(&s, &job).expect(1);
    assert!(r.stderr.contains("Runtime.HandlerNotFound: no builtin function `nope`"), "{}", r.stderr);
}

#[test]
fn a_host_reads_split_references_itself() {
    let s = Scratch::new();
    s.run(&["datasets", "gen", "csv", "--rows", "3000", "--out", "events.csv"]).expect(0);
    // Row groups of 250 rows: a split per row group or two.
    python(
        &s,
        "import pyarrow.csv as c, pyarrow.parquet as pq\npq.write_table(c.read_csv('events.csv'), 'events.parquet', row_group_size=250)\nprint('ok')",
    );
    let host = Host::start("127.0.0.1", &[]);
    for (file, chunk) in [("events.csv", "16KiB"), ("events.parquet", "8KiB")] {
        let stage = |function: &str| {
            format!(
                "[input]\npath = \"{file}\"\nchunk_size = \"{chunk}\"\n\
                 [[stage]]\nfunction = {function}\nparams = {{ columns = [\"id\", \"country\", \"amount\"] }}\n\
                 [output]\npath = \"out.csv\"\nmode = \"overwrite\"\n[platform]\nconcurrency = 2\n"
            )
        };
        run_job(&s, &stage("\"select\"")).expect(0);
        let expected = std::fs::read(s.path("out.csv")).unwrap();
        // The event names the split; the host reads the file itself.
        let table = format!(
            "{{ http = \"{}\", event = \"split\", schema = [\"id:int64\", \"country:utf8\", \"amount:float64\"] }}",
            host.url("select")
        );
        let sum = summary(&run_job(&s, &stage(&table)).expect(0));
        assert_eq!(
            std::fs::read(s.path("out.csv")).unwrap(),
            expected,
            "{file}: the output differs from the builtin run's"
        );
        assert!(sum["input"]["splits"].as_u64().unwrap() > 3, "{file}: {sum}");
        // The host says how many records it read: they count as the input.
        assert_eq!(sum["input"]["records"].as_u64(), Some(3000), "{file}: {sum}");
    }
}

#[test]
fn serve_hosts_the_exec_and_lambda_functions_of_a_job_file() {
    let s = Scratch::new();
    words(&s, 300);
    // The functions, as a job file defines them (its input is not read).
    s.write("tag.py", "import json,sys\nfor l in sys.stdin:\n  x=json.loads(l)\n  print(json.dumps({'line':x['line'],'words':len(x['line'].split())}))\n");
    let handlers = crate::util::root().join("tests/fixtures/lambda");
    let functions = format!(
        "[input]\npath = \"words.txt\"\n\
         [[stage]]\nname = \"tag\"\nfunction = {{ exec = [\"python3\", \"tag.py\"], io = \"jsonl\", schema = [\"line:utf8\", \"words:int64\"] }}\n\
         [[stage]]\nname = \"upper\"\nfunction = {{ lambda = [\"python3\", \"{}/bootstrap.py\"], handler = \"handlers.upper\", cwd = \"{}\", schema = [\"line:utf8\", \"n:int64\"] }}\n\
         [output]\npath = \"unused.csv\"\n",
        handlers.display(),
        handlers.display()
    );
    s.write("functions.toml", &functions);
    let job = |stage: &str, function: &str, schema: &str| {
        format!(
            "[input]\npath = \"words.txt\"\nchunk_size = \"1KiB\"\n[[stage]]\nname = \"{stage}\"\nfunction = {function}\n\
             [output]\npath = \"out-{stage}.csv\"\nmode = \"overwrite\"\n[platform]\nconcurrency = 2\n{schema}"
        )
    };
    // The oracle: the same functions run by this fanout.
    let local = functions.split("[[stage]]").collect::<Vec<_>>();
    let table = |part: &str| part.split("function = ").nth(1).unwrap().lines().next().unwrap().to_string();
    for (stage, part) in [("tag", local[1]), ("upper", local[2])] {
        run_job(&s, &job(stage, &table(part), "")).expect(0);
        std::fs::rename(s.path(&format!("out-{stage}.csv")), s.path(&format!("want-{stage}.csv"))).unwrap();
    }
    let host = Host::start_at(s.dir.path(), None, "127.0.0.1", &["--job", "functions.toml"]);
    for (stage, schema) in [("tag", "[\"line:utf8\", \"words:int64\"]"), ("upper", "[\"line:utf8\", \"n:int64\"]")] {
        let function = format!("{{ http = \"{}\", schema = {schema} }}", host.url(stage));
        run_job(&s, &job(stage, &function, "")).expect(0);
        let (got, want) = (s.path(&format!("out-{stage}.csv")), s.path(&format!("want-{stage}.csv")));
        assert_eq!(std::fs::read(got).unwrap(), std::fs::read(want).unwrap(), "{stage}: differs from the local run");
    }
    // A job with no external function has nothing to add.
    s.write(
        "builtin.toml",
        "[input]\npath = \"words.txt\"\n[[stage]]\nfunction = \"word_count\"\n[output]\npath = \"o.csv\"\n",
    );
    let r = s.run(&["serve", "--listen", "127.0.0.1:0", "--job", "builtin.toml"]).expect(2);
    assert!(r.stderr.contains("the job has no external function"), "{}", r.stderr);
}

/// serverless-offline (npm; tests/setup.sh installs it into the fixture's
/// directory): a local implementation of the Lambda Invoke API, running
/// Node.js handlers in worker threads. Killed when dropped.
struct ServerlessOffline {
    _server: crate::util::Daemon,
    port: u16,
}

impl ServerlessOffline {
    fn start() -> ServerlessOffline {
        let dir = crate::util::root().join("tests/fixtures/serverless-offline");
        assert!(
            dir.join("node_modules/.bin/serverless").exists(),
            "serverless-offline is not installed: npm ci in {} (tests/setup.sh does it)",
            dir.display()
        );
        let free = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let (port, http) = (free(), free());
        // Node 20.17 and later would load serverless' CommonJS modules as
        // ES modules; the flag (unknown to older Node) turns that off.
        let node = Command::new("node").arg("--version").output().expect("node (tests/setup.sh installs it)");
        let version = String::from_utf8_lossy(&node.stdout).trim().trim_start_matches('v').to_string();
        let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
        let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
        let options = if (major, minor) >= (20, 17) { "--no-experimental-require-module" } else { "" };
        let child = Command::new(dir.join("node_modules/.bin/serverless"))
            .args(["offline", "start", "--lambdaPort", &port.to_string(), "--httpPort", &http.to_string()])
            .args(["--host", "127.0.0.1"])
            .current_dir(&dir)
            .env("SLS_TELEMETRY_DISABLED", "1")
            .env("NODE_OPTIONS", options)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let offline = ServerlessOffline { _server: crate::util::Daemon(child), port };
        let addr = format!("127.0.0.1:{port}");
        assert!(crate::util::wait_for(60, || TcpStream::connect(&addr).is_ok()), "serverless-offline did not start");
        offline
    }

    /// Runs the job in `s` with the Lambda endpoint set to this server.
    fn run(&self, s: &Scratch, job: &str) -> Run {
        s.write("job.toml", job);
        let out = Command::new(binary())
            .args(["run", "job.toml", "--progress", "never", "--show", "0", "--json"])
            .current_dir(s.dir.path())
            .env("AWS_ENDPOINT_URL_LAMBDA", format!("http://127.0.0.1:{}", self.port))
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_REGION", "us-east-1")
            .output()
            .unwrap();
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// A word count of `words.txt` in 1 KiB splits, summed by word: `first`
/// counts the words, at concurrency 2 with `platform` settings.
fn counted(first: &str, platform: &str) -> String {
    format!(
        "[input]\npath = \"words.txt\"\nchunk_size = \"1KiB\"\n[[stage]]\nfunction = {first}\n\
         [[stage]]\nfunction = \"aggregate\"\nkey = [\"word\"]\nparams = {{ sum = [\"count\"] }}\n\
         [output]\npath = \"out.csv\"\nmode = \"overwrite\"\nsort = [\"word\"]\n\
         [platform]\nconcurrency = 2\nbackoff = \"10ms\"\n{platform}\n"
    )
}

#[test]
fn the_aws_lambda_backend_invokes_functions_served_by_serverless_offline() {
    let s = Scratch::new();
    words(&s, 200);
    let builtin = &counted("\"word_count\"", "retries = 1");
    run_job(&s, builtin).expect(0);
    let expected = std::fs::read(s.path("out.csv")).unwrap();
    let offline = ServerlessOffline::start();
    let lambda = |name: &str| {
        format!(
            "{{ aws_lambda = \"fanout-test-dev-{name}\", event = \"records\", schema = [\"word:utf8\", \"count:int64\"] }}"
        )
    };
    // A Node.js handler counts the words: the same output as the builtin.
    let job = builtin.replace("function = \"word_count\"", &format!("function = {}", lambda("words")));
    let r = summary(&offline.run(&s, &job).expect(0));
    assert_eq!(std::fs::read(s.path("out.csv")).unwrap(), expected, "the output differs from the builtin run's");
    assert!(r["stages"][0]["invocations"].as_u64().unwrap() > 3, "{r}");
    // A handler that throws: X-Amz-Function-Error, retried, then the task
    // fails with the function's errorType and errorMessage.
    let job = builtin.replace("function = \"word_count\"", &format!("function = {}", lambda("broken")));
    let r = offline.run(&s, &job).expect(1);
    assert!(r.stderr.contains("Error: broken on purpose") && r.stderr.contains("attempt 2"), "{}", r.stderr);
    // An unknown function: 404 ResourceNotFoundException, not retried.
    let job = builtin.replace("function = \"word_count\"", &format!("function = {}", lambda("nope")));
    let r = offline.run(&s, &job).expect(1);
    assert!(r.stderr.contains("ResourceNotFoundException") && r.stderr.contains("attempt 1:"), "{}", r.stderr);
}

/// Connections on the loopback port `port` still open (established, or
/// closed by one side only), from /proc/net/tcp and tcp6.
fn open_connections(port: u16) -> usize {
    let port = format!(":{port:04X} ");
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .flat_map(|t| t.lines().skip(1).map(String::from).collect::<Vec<_>>())
        .filter(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            let (local, remote, state) = (fields[1], fields[2], fields[3]);
            (format!("{local} ").contains(&port) || format!("{remote} ").contains(&port))
                && state != "0A"
                && state != "06"
        })
        .count()
}

/// The chaos the remote backends' tests inject: failures, timeouts (at a
/// deadline of a second) and stragglers (backed up).
const CHAOS: &str = "fail=0.15,timeout=0.05,straggle=0.1x5,seed=7";

/// Runs `job` under [`CHAOS`] with `env`: it must give `expected`, with
/// failed invocations retried.
fn under_chaos(s: &Scratch, job: &str, env: &[(&str, &str)], expected: &[u8]) {
    s.write("job.toml", job);
    let args = ["run", "job.toml", "--progress", "never", "--show", "0", "--json", "--chaos", CHAOS];
    let r = crate::util::run_with(s.dir.path(), &args, env).expect(0);
    let sum = summary(&r);
    assert!(std::fs::read(s.path("out.csv")).unwrap() == expected, "the output differs under chaos");
    assert!(sum["retries"].as_u64().unwrap() > 0 && sum["invocations"]["failed"].as_u64().unwrap() > 0, "{sum}");
}

#[test]
fn chaos_on_http_functions_changes_nothing_and_leaves_no_connection() {
    let s = Scratch::new();
    words(&s, 3000);
    let expected = local_output(&s);
    let hosts = [Host::start("127.0.0.1", &["--concurrency", "8"]), Host::start("127.0.0.1", &["--concurrency", "8"])];
    let urls: Vec<String> = hosts.iter().map(|h| format!("\"{}\"", h.url("sleep"))).collect();
    let table = format!("{{ http = [{}] }}", urls.join(", "));
    let job = word_count_job(&table, "{ ms = 5 }", 3, "timeout = \"1s\"\nbackups = true");
    under_chaos(&s, &job, &[], &expected);
    // fanout has exited: the hosts have answered or dropped every
    // invocation and closed every connection.
    for h in &hosts {
        let port: u16 = h.addr.rsplit(':').next().unwrap().parse().unwrap();
        let idle = crate::util::wait_for(30, || {
            request(&h.addr, "GET", "/healthz", &[], b"").json()["running"] == 0 && open_connections(port) == 0
        });
        assert!(idle, "{}: {} connections left open", h.addr, open_connections(port));
    }
}

#[test]
fn chaos_on_aws_lambda_functions_changes_nothing_and_leaves_no_connection() {
    let s = Scratch::new();
    words(&s, 600);
    run_job(&s, &counted("\"word_count\"", "")).expect(0);
    let expected = std::fs::read(s.path("out.csv")).unwrap();
    let offline = ServerlessOffline::start();
    let table =
        "{ aws_lambda = \"fanout-test-dev-words\", event = \"records\", schema = [\"word:utf8\", \"count:int64\"] }";
    let job = counted(table, "retries = 6\ntimeout = \"5s\"\nbackups = true");
    let endpoint = format!("http://127.0.0.1:{}", offline.port);
    let env = [
        ("AWS_ENDPOINT_URL_LAMBDA", endpoint.as_str()),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_REGION", "us-east-1"),
    ];
    under_chaos(&s, &job, &env, &expected);
    let idle = crate::util::wait_for(30, || open_connections(offline.port) == 0);
    assert!(idle, "{} connections left open to serverless-offline", open_connections(offline.port));
}
