//! A stream's sinks: standard output (`output.path = "-"`) and an HTTP
//! endpoint (`output.post`, tests/fixtures/sink_server.py), each file
//! committed delivered once — the HTTP sink across `kill -9` and resume,
//! its files checked against the windows' oracle.

use std::process::{Command, Stdio};

use crate::stream::{check_windows, clicks, fed, kill_and_resume, produce_seeded};
use crate::util::{Daemon, Scratch, binary, root, wait_for};

#[test]
fn standard_output_gets_each_committed_file_once() {
    let s = Scratch::new();
    s.write(
        "lines.toml",
        "[input]\nstream = { stdin = true }\nformat = \"text\"\n[stream]\nbatch_size = 100\ncheckpoint_every = \"100ms\"\n\
         [[stage]]\nname = \"keep\"\nfunction = \"grep\"\nparams = { column = \"line\", pattern = \"7\" }\n\
         [output]\npath = \"-\"\n",
    );
    let input: String = (0..3000).map(|i| format!("line {i}\n")).collect();
    let r = fed(&s, &["run", "lines.toml", "--progress", "never", "--run-dir", "rd"], &input, 5000);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let got: Vec<String> = (r.stdout.lines())
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["line"].as_str().unwrap().to_string())
        .collect();
    let want: Vec<String> = (0..3000).map(|i| format!("line {i}")).filter(|l| l.contains('7')).collect();
    assert_eq!(got, want);
    // The files are kept in the run directory.
    assert!(std::fs::read_dir(s.path("rd/out")).unwrap().count() > 1);
    // The summary would mix with the records.
    let r = s.run(&["run", "lines.toml", "--json"]).expect(2);
    assert!(
        r.stderr.contains("--json writes the summary to standard output, where this stream writes"),
        "{}",
        r.stderr
    );
}

#[test]
fn an_http_sink_gets_each_window_once_across_kill_9() {
    let s = Scratch::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let server = Command::new("python3")
        .arg(root().join("tests/fixtures/sink_server.py"))
        .args([&port.to_string(), s.path("posted.jsonl").to_str().unwrap()])
        .spawn()
        .unwrap();
    let _server = Daemon(server);
    assert!(wait_for(30, || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()));
    let mut producer = produce_seeded(&s, 30, 200, 12.0, 5);
    let post = format!("post = \"http://127.0.0.1:{port}/windows\"\n");
    s.write(
        "clicks.toml",
        clicks("checkpoint_every = \"150ms\"", "out/").replace("[output]\n", &format!("[output]\n{post}")),
    );
    let args = ["run", "clicks.toml", "--until", "idle=2s", "--progress", "never", "--run-dir", "rd"];
    let child = Command::new(binary()).args(args).current_dir(s.dir.path()).stderr(Stdio::null()).spawn().unwrap();
    let mut child = kill_and_resume(s.dir.path(), child, 3, "rd", &[]);
    assert!(producer.wait().unwrap().success());
    assert!(wait_for(120, || child.try_wait().unwrap().is_some()), "the stream did not stop");
    assert!(child.wait().unwrap().success());
    check_windows(&s, "out", "rd", &["2000", "1000"]);
    // Every window file was posted, with the file as its body, keyed by
    // its name; a file posted again (killed between its post and its
    // note) has the same key and body.
    let mut posted: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for line in std::fs::read_to_string(s.path("posted.jsonl")).unwrap().lines() {
        let p: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(p["type"], "application/x-ndjson");
        posted.entry(p["key"].as_str().unwrap().to_string()).or_default().push(p["body"].as_str().unwrap().to_string());
    }
    let mut files: Vec<String> = std::fs::read_dir(s.path("out"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    let keys: Vec<String> = posted.keys().map(|k| k.strip_prefix("clicks/").unwrap().to_string()).collect();
    assert_eq!(keys, files);
    for (key, bodies) in &posted {
        let file = std::fs::read_to_string(s.path(&format!("out/{}", key.strip_prefix("clicks/").unwrap()))).unwrap();
        assert!(bodies.iter().all(|b| *b == file), "{key}: a body is not the file");
        assert!(bodies.len() <= 2, "{key} posted {} times", bodies.len());
    }
    let twice = posted.values().filter(|b| b.len() > 1).count();
    assert!(twice <= 3, "{twice} files posted twice after 3 kills");
}

#[test]
fn sinks_are_checked() {
    let s = Scratch::new();
    s.write("data.txt", "a\n");
    for (output, want) in [
        ("path = \"-\"", "output.path = \"-\" (standard output) applies to a stream"),
        ("path = \"o.jsonl\"\npost = \"http://127.0.0.1:1/\"", "output.post (an HTTP sink) applies to a stream"),
    ] {
        s.write("b.toml", format!("[input]\npath = \"data.txt\"\n[output]\n{output}\n"));
        let r = s.run(&["validate", "b.toml"]).expect(2);
        assert!(r.stderr.contains(want), "{output}: {}", r.stderr);
    }
    std::fs::create_dir_all(s.path("incoming")).unwrap();
    s.write("c.toml", clicks("", "out/").replace("[output]\n", "[output]\npost = \"ftp://x/\"\n"));
    let r = s.run(&["validate", "c.toml"]).expect(2);
    assert!(r.stderr.contains("output.post `ftp://x/` is not an http:// or https:// URL"), "{}", r.stderr);
}
