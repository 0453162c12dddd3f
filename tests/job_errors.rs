//! Every class of bad job file gets a located message and exit code 2.

use crate::util::Scratch;

/// Writes `job.toml` (with a `data.txt` input beside it) and validates it;
/// returns stderr, asserting exit code 2.
fn invalid(job: &str, sets: &[&str]) -> String {
    let s = Scratch::new();
    s.write("data.txt", "a b\n");
    s.write("data.csv", "x,y\n1,2\n");
    s.write("job.toml", job);
    let mut args = vec!["validate", "job.toml"];
    for set in sets {
        args.extend(["--set", set]);
    }
    let r = s.run(&args).expect(2);
    assert!(r.stdout.is_empty(), "{}", r.stdout);
    r.stderr
}

const OK: &str = r#"[input]
path = "data.txt"

[[stage]]
function = "word_count"

[output]
path = "out.csv"
"#;

#[test]
fn a_good_job_validates() {
    let s = Scratch::new();
    s.write("data.txt", "a b\n");
    s.write("job.toml", OK);
    let r = s.run(&["validate", "job.toml"]).expect(0);
    assert_eq!(r.stdout, "job.toml: ok (job, 1 stage)\n");
}

#[test]
fn toml_syntax_errors_are_located() {
    let err = invalid("[input]\npath = \"data.txt\n", &[]);
    assert!(err.starts_with("error: job.toml:2:17: invalid basic string"), "{err}");
}

#[test]
fn unknown_fields_name_line_column_and_expected_keys() {
    let job = OK.replace("path = \"data.txt\"", "path = \"data.txt\"\nchunk_sise = \"1MiB\"");
    let err = invalid(&job, &[]);
    assert!(
        err.starts_with("error: job.toml:3:1: unknown field `chunk_sise`, expected one of `path`, `generate`, `stream`, `format`, `chunk_size`"),
        "{err}"
    );
}

#[test]
fn wrong_types_and_bad_sizes_are_located() {
    let job = format!("{OK}\n[platform]\nconcurrency = \"two\"\n");
    let err = invalid(&job, &[]);
    assert!(err.starts_with("error: job.toml:11:15: invalid type: string \"two\", expected usize"), "{err}");
    let job = OK.replace("path = \"data.txt\"", "path = \"data.txt\"\nchunk_size = \"8XB\"");
    let err = invalid(&job, &[]);
    assert!(err.starts_with("error: job.toml:3:14: invalid size `8XB`"), "{err}");
}

#[test]
fn missing_sections_are_named() {
    let err = invalid("[input]\npath = \"data.txt\"\n", &[]);
    assert!(err.contains("missing field `output`"), "{err}");
}

#[test]
fn unknown_formats_list_the_known_ones() {
    let job = OK.replace("path = \"data.txt\"", "path = \"data.txt\"\nformat = \"xml\"");
    let err = invalid(&job, &[]);
    assert_eq!(err, "error: job.toml:3:10: unknown format `xml`, expected one of: text, csv, jsonl, parquet, arrow\n");
}

#[test]
fn missing_inputs_and_conflicting_sources_are_errors() {
    let err = invalid(&OK.replace("data.txt", "nope/*.txt"), &[]);
    assert_eq!(err, "error: job.toml:2:8: input `nope/*.txt` matches no file\n");
    let job = OK.replace("path = \"data.txt\"", "path = \"data.txt\"\ngenerate = { kind = \"text\", rows = 5 }");
    let err = invalid(&job, &[]);
    assert!(err.contains("job.toml:3:12: give either input.path or input.generate, not both"), "{err}");
    let job = OK.replace("path = \"data.txt\"", "generate = { kind = \"xml\", rows = 5 }");
    let err = invalid(&job, &[]);
    assert!(err.contains("unknown generator `xml`, expected one of: text, csv, jsonl, parquet"), "{err}");
}

#[test]
fn unknown_functions_and_bad_params_are_errors() {
    let err = invalid(&OK.replace("word_count", "word_cont"), &[]);
    assert!(
        err.starts_with("error: job.toml:5:12: unknown function `word_cont`, expected one of: word_count, grep"),
        "{err}"
    );
    let job = OK.replace("function = \"word_count\"", "function = \"grep\"\nparams = { pattern = 3 }");
    let err = invalid(&job, &[]);
    assert_eq!(err, "error: job.toml:6:22: grep: parameter `pattern` must be a string, got 3\n");
    let err = invalid(&OK.replace("word_count", "grep"), &[]);
    assert!(err.contains("grep needs parameter `pattern`"), "{err}");
}

#[test]
fn keyed_stages_are_checked() {
    let job = OK.replace("function = \"word_count\"", "function = \"word_count\"\npartitions = 4");
    let err = invalid(&job, &[]);
    assert!(err.contains("partitions applies to keyed stages only"), "{err}");
    let job = OK.replace("function = \"word_count\"", "function = \"aggregate\"");
    let err = invalid(&job, &[]);
    assert!(err.contains("aggregate needs a keyed stage"), "{err}");
    let job = format!("{OK}\n[[stage]]\nname = \"word_count\"\nfunction = \"grep\"\nparams = {{ pattern = \"a\" }}\n");
    let err = invalid(&job, &[]);
    assert!(err.contains("two stages are named `word_count`"), "{err}");
}

#[test]
fn output_problems_are_errors() {
    let err = invalid(&OK.replace("out.csv", "data.txt"), &[]);
    assert!(err.contains("output.path `data.txt` is also an input (`data.txt`)"), "{err}");
    let err = invalid(&OK.replace("path = \"out.csv\"", "path = \"out.csv\"\nmode = \"replace\""), &[]);
    assert!(err.contains("job.toml:9:8: unknown mode `replace`, expected one of: error, overwrite"), "{err}");
    let err = invalid(&OK.replace("out.csv", "out.txt"), &[]);
    assert!(err.contains("text is an input format only"), "{err}");
}

#[test]
fn every_problem_is_reported_at_once() {
    let job = OK.replace("word_count", "nope").replace("out.csv", "out.xyz");
    let err = invalid(&job, &[]);
    assert_eq!(err.lines().count(), 2, "{err}");
}

#[test]
fn overrides_are_applied_and_blamed() {
    let err = invalid(OK, &["platform.concurrency=0"]);
    assert_eq!(err, "error: --set platform.concurrency=0: concurrency must be at least 1\n");
    let err = invalid(OK, &["input.chunk_sise=1MiB"]);
    assert!(err.starts_with("error: --set input.chunk_sise=1MiB: unknown field `chunk_sise`"), "{err}");
    let err = invalid(OK, &["stage.3.params.x=1"]);
    assert_eq!(err, "error: --set stage.3.params.x=1: `stage` has 1 entries; there is no entry 3\n");
    let err = invalid(OK, &["stage.word_count.params.lowercase=yes"]);
    assert!(err.contains("parameter `lowercase` must be a boolean, got \"yes\""), "{err}");
    let err = invalid(OK, &["nonsense"]);
    assert!(err.contains("expected KEY=VALUE"), "{err}");
    // A good override changes the plan.
    let s = Scratch::new();
    s.write("data.txt", "a b\n");
    s.write("job.toml", OK);
    let r = s
        .run(&["plan", "job.toml", "--set", "platform.concurrency=7", "--set", "stage.0.params.lowercase=true"])
        .expect(0);
    assert!(r.stdout.contains("platform: local, concurrency 7"), "{}", r.stdout);
    assert!(r.stdout.contains("word_count {\"lowercase\":true}"), "{}", r.stdout);
}

#[test]
fn json_jobs_are_read_and_located() {
    let s = Scratch::new();
    s.write("data.txt", "a\n");
    s.write(
        "job.json",
        r#"{"input": {"path": "data.txt"}, "stage": [{"function": "word_count"}], "output": {"path": "o.csv"}}"#,
    );
    s.run(&["validate", "job.json"]).expect(0);
    // With a byte-order mark, as some editors write.
    let mut bom = "\u{feff}".to_string();
    bom.push_str(&std::fs::read_to_string(s.path("job.json")).unwrap());
    s.write("bom.json", bom);
    s.run(&["validate", "bom.json"]).expect(0);
    s.write("bad.json", "{\"input\": {\"path\": \"data.txt\",\n  \"chunks\": 1}, \"output\": {\"path\": \"o.csv\"}}");
    let r = s.run(&["validate", "bad.json"]).expect(2);
    assert!(r.stderr.starts_with("error: bad.json:2:10: unknown field `chunks`"), "{}", r.stderr);
    // An empty file is said to be empty; a file cut short is located at
    // a column counted from 1.
    s.write("empty.json", "\n \n");
    let r = s.run(&["validate", "empty.json"]).expect(2);
    assert!(r.stderr.starts_with("error: empty.json: the job file is empty"), "{}", r.stderr);
    s.write("cut.json", "{\"input\": {\"path\": \"data.txt\"},\n");
    let r = s.run(&["validate", "cut.json"]).expect(2);
    assert!(r.stderr.starts_with("error: cut.json:2:1: EOF while parsing a value"), "{}", r.stderr);
    // Errors found after parsing are located as in TOML: at the value, or
    // at the nearest object written on the way to it.
    let semantic = r#"{"input": {"path": "data.txt"},
 "stage": [{"function": "word_count"},
   {"function": "no_such"}],
 "output": {"path": "o.csv", "mode": "sometimes"},
 "platform": {"concurrency": 0}}"#;
    s.write("semantic.json", semantic);
    let r = s.run(&["validate", "semantic.json"]).expect(2);
    let lines: Vec<&str> = r.stderr.lines().collect();
    assert!(
        lines.iter().any(|l| l.starts_with("error: semantic.json:3:17: ") && l.contains("no_such")),
        "{}",
        r.stderr
    );
    assert!(lines.iter().any(|l| l.starts_with("error: semantic.json:4:38: unknown mode `sometimes`")), "{}", r.stderr);
    assert!(
        lines.iter().any(|l| l.starts_with("error: semantic.json:5:30: ") && l.contains("concurrency")),
        "{}",
        r.stderr
    );
}

#[test]
fn csv_options_and_schemas_are_checked() {
    let job = OK.replace(
        "path = \"data.txt\"",
        "path = \"data.csv\"\ndelimiter = \";;\"\nschema = [\"x:int64\", \"y:decimal\"]",
    );
    let err = invalid(&job, &[]);
    assert!(err.contains("job.toml:3:13: input.delimiter must be one ASCII character, got \";;\""), "{err}");
    assert!(err.contains("job.toml:4:22: unknown type `decimal` for column `y`"), "{err}");
    let job = OK.replace("path = \"data.txt\"", "path = \"data.txt\"\nheader = false");
    let err = invalid(&job, &[]);
    assert!(err.contains("input.header applies to csv input only"), "{err}");
}

#[test]
fn a_missing_job_file_is_a_usage_error() {
    let s = Scratch::new();
    let r = s.run(&["validate", "nope.toml"]).expect(2);
    assert!(r.stderr.starts_with("error: nope.toml: cannot read the job file"), "{}", r.stderr);
    s.run(&["validate"]).expect(2);
}

#[test]
fn external_functions_are_checked() {
    let ext = |table: &str| OK.replace("function = \"word_count\"", &format!("function = {{ {table} }}"));
    let err = invalid(&ext(r#"exec = ["cat"], event = "split""#), &[]);
    assert!(err.contains("job.toml:5:38: `event` applies to lambda, http or aws_lambda functions only"), "{err}");
    let err = invalid(&ext(r#"lambda = ["cat"], io = "csv""#), &[]);
    assert!(err.contains("`io` applies to exec functions only"), "{err}");
    let err = invalid(&ext(r#"exec = ["cat"], io = "xml""#), &[]);
    assert!(err.contains("unknown io format `xml`, expected one of: lines, csv, jsonl, arrow"), "{err}");
    let err = invalid(&ext(r#"exec = []"#), &[]);
    assert!(err.contains("exec needs a command"), "{err}");
    let err = invalid(&ext(r#"exec = ["./nowhere.sh"]"#), &[]);
    assert!(err.contains("./nowhere.sh: no such file"), "{err}");
    let err = invalid(&ext(r#"exec = ["cat"], lambda = ["cat"]"#), &[]);
    assert!(err.contains("a function table needs exactly one of exec, lambda, http or aws_lambda"), "{err}");
    let err = invalid(&ext(r#"exec = ["cat"], schema = ["a"]"#), &[]);
    assert!(err.contains("column `a` must be written name:type"), "{err}");
    let err = invalid(&ext(r#"exec = ["cat"], output = "lines", schema = ["a:int64"]"#), &[]);
    assert!(err.contains("lines output is one utf8 column"), "{err}");
    let err = invalid(&ext(r#"http = "localhost:9/fn""#), &[]);
    assert!(err.contains("`localhost:9/fn` is not an http:// or https:// URL"), "{err}");
    let job = format!("{OK}\n[[stage]]\nfunction = {{ lambda = [\"cat\"], event = \"split\" }}\n");
    let err = invalid(&job, &[]);
    assert!(err.contains("only the first stage reads the input's splits"), "{err}");
    let err = invalid(&OK.replace("[output]", "[platform]\npayload_limit = 0\n[output]"), &[]);
    assert!(err.contains("payload_limit must be at least 1 byte"), "{err}");
    let err = invalid(OK, &["input.chunk_size=4MiB..64KiB"]);
    assert!(err.contains("chunk_size range 4.0 MiB..64.0 KiB must go from small to large"), "{err}");
    let err = invalid(OK, &["input.chunk_size=64KiB..lots"]);
    assert!(err.contains("invalid size `lots`"), "{err}");
}

#[test]
fn a_glob_of_two_formats_is_refused_alike_by_validate_plan_and_run() {
    let s = Scratch::new();
    s.write("d/x.csv", "a,b\n1,2\n");
    s.write("d/y.jsonl", "{\"a\":1}\n");
    s.write("job.toml", "[input]\npath = \"d/*\"\n[output]\npath = \"o.csv\"\n");
    let want = "error: job.toml:2:8: d/y.jsonl is jsonl, but the input is csv (told from its first file); \
                name files of one format, or set input.format to read every file as one";
    for command in ["validate", "plan", "run"] {
        let r = s.run(&[command, "job.toml"]).expect(2);
        assert_eq!(r.stderr.trim(), want, "{command}");
    }
    assert!(!s.path(".fanout/runs").exists(), "run started a run");
    // With the format set, every file is read as one: validate reads the
    // first file only, and plan and run, which read every file, fail alike
    // on the one that is not csv (its data, not the job, is at fault).
    s.run(&["validate", "job.toml", "--set", "input.format=csv"]).expect(0);
    let want = "error: d/y.jsonl: header [\"{\\\"a\\\":1}\"] differs from the dataset's columns [\"a\", \"b\"]";
    for command in ["plan", "run"] {
        let r = s.run(&[command, "job.toml", "--set", "input.format=csv"]).expect(1);
        assert!(r.stderr.lines().any(|l| l == want), "{command}: {}", r.stderr);
    }
}

#[test]
fn a_time_zone_is_an_offset_or_a_name_and_anything_else_is_refused_at_validation() {
    let s = Scratch::new();
    s.write("tz.csv", "id,ts\n1,2024-01-01T10:00:00+02:00\n2,2024-07-01T10:00:00\n");
    let job = |zone: &str| {
        format!(
            "[input]\npath = \"tz.csv\"\nschema = ['id:int64', 'ts:Timestamp(Second, Some(\"{zone}\"))']\n\
             [output]\npath = \"out.csv\"\nmode = \"overwrite\"\n"
        )
    };
    s.write("bogus.toml", job("Mars/Olympus"));
    let r = s.run(&["validate", "bogus.toml"]).expect(2);
    assert_eq!(
        r.stderr.trim(),
        "error: bogus.toml:3:23: column `ts`: `Mars/Olympus` is not a time zone; write an offset such as +02:00, \
         or a name of the tz database such as Europe/Paris or UTC"
    );
    s.write("offset.toml", job("+00:00"));
    s.run(&["run", "offset.toml", "--progress", "never", "--show", "0"]).expect(0);
    let out = std::fs::read_to_string(s.path("out.csv")).unwrap();
    assert_eq!(out, "id,ts\n1,2024-01-01T08:00:00Z\n2,2024-07-01T10:00:00Z\n");
    // A named zone: a time without an offset is that zone's local time
    // (summer time included), written with its offset.
    s.write("named.toml", job("Europe/Paris"));
    s.run(&["run", "named.toml", "--progress", "never", "--show", "0"]).expect(0);
    let out = std::fs::read_to_string(s.path("out.csv")).unwrap();
    assert_eq!(out, "id,ts\n1,2024-01-01T09:00:00+01:00\n2,2024-07-01T10:00:00+02:00\n");
}
