//! `fanout datasets gen`: deterministic, exact, and readable by
//! independent parsers (Python's csv and json modules).

use std::process::Command;

use crate::util::Scratch;

#[test]
fn same_seed_same_bytes() {
    let s = Scratch::new();
    for kind in ["text", "csv", "jsonl", "parquet"] {
        s.run(&["datasets", "gen", kind, "--size", "300KiB", "--seed", "5", "--out", "a"]).expect(0);
        s.run(&["datasets", "gen", kind, "--size", "300KiB", "--seed", "5", "--out", "b"]).expect(0);
        s.run(&["datasets", "gen", kind, "--size", "300KiB", "--seed", "6", "--out", "c"]).expect(0);
        let (a, b, c) = (
            std::fs::read(s.path("a")).unwrap(),
            std::fs::read(s.path("b")).unwrap(),
            std::fs::read(s.path("c")).unwrap(),
        );
        assert_eq!(a, b, "{kind}");
        assert_ne!(a, c, "{kind}");
        if kind != "parquet" {
            assert!(a.len() <= 300 * 1024 && a.len() > 290 * 1024, "{kind}: {}", a.len());
        }
    }
}

#[test]
fn rows_are_exact_and_parse_with_python() {
    let s = Scratch::new();
    let r = s.run(&["datasets", "gen", "csv", "--rows", "20000", "--seed", "2", "--out", "e.csv"]).expect(0);
    assert!(r.stderr.starts_with("wrote 20000 rows"), "{}", r.stderr);
    s.run(&["datasets", "gen", "jsonl", "--rows", "5000", "--out", "e.jsonl"]).expect(0);
    s.run(&["datasets", "gen", "text", "--rows", "777", "--out", "t.txt"]).expect(0);
    let check = r#"
import csv, json, sys
rows = list(csv.reader(open("e.csv", newline="")))
assert rows[0] == ["id", "user_id", "country", "category", "amount", "ts", "note"], rows[0]
body = rows[1:]
assert len(body) == 20000, len(body)
assert [int(r[0]) for r in body] == list(range(20000))
assert all(len(r) == 7 for r in body)
notes = [r[6] for r in body]
assert any("\n" in n for n in notes) and any('"' in n for n in notes) and any("," in n for n in notes)
events = [json.loads(l) for l in open("e.jsonl")]
assert len(events) == 5000 and events[0]["user"]["id"] >= 1 and isinstance(events[0]["event"]["tags"], list)
lines = open("t.txt").read().split("\n")
assert lines[-1] == "" and len(lines) == 778
assert all(5 <= len(l.split(" ")) <= 15 for l in lines[:-1])
print("ok")
"#;
    let out = Command::new("python3").arg("-c").arg(check).current_dir(s.dir.path()).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ok\n", "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn bad_arguments_are_usage_errors() {
    let s = Scratch::new();
    let r = s.run(&["datasets", "gen", "xml", "--rows", "1", "--out", "x"]).expect(2);
    assert!(r.stderr.contains("unknown generator `xml`"), "{}", r.stderr);
    let r = s.run(&["datasets", "gen", "text", "--out", "x"]).expect(2);
    assert!(r.stderr.contains("--size <SIZE>|--rows <N>"), "{}", r.stderr);
    let r = s.run(&["datasets", "gen", "text", "--size", "lots", "--out", "x"]).expect(2);
    assert!(r.stderr.contains("invalid size `lots`"), "{}", r.stderr);
}
