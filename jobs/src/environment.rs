//! What validation asks of the world outside the job file: whether the
//! inputs name any file, whether an external function's program can be
//! found, whether a directory exists, and where a path really leads (so
//! that an output that would overwrite an input is caught).
//!
//! Every such question goes through [`Environment`]. [`validate`] answers
//! them from this machine ([`LocalEnvironment`]); [`validate_with`] takes
//! another answerer, such as object storage for `s3://` inputs, or a fake
//! in tests.
//!
//! [`validate`]: crate::validate
//! [`validate_with`]: crate::validate_with

use std::path::{Path, PathBuf};

use fanout_datasets::{Format, Storage};

/// The file-system questions of validation. Answers are messages for the
/// user when something is missing: validation places them at the field
/// that named the thing.
pub trait Environment {
    /// The first file named by the input entry `path` (a file, a
    /// directory, or a glob; local, or in object storage reached through
    /// `storage`), or why it names none.
    fn first_file(&self, path: &str, storage: &Storage) -> Result<PathBuf, String>;

    /// The first file named by the input entry `path` whose name tells a
    /// format other than `format`, with that format: the files of one
    /// input are of one format unless the job sets it. `None` when there
    /// is none (or the entry cannot be listed: `first_file` says why).
    fn other_format(&self, path: &str, storage: &Storage, format: Format) -> Option<(PathBuf, Format)> {
        let _ = (path, storage, format);
        None
    }

    /// Where the program of a command is: `program` (never empty) as a
    /// path when it contains a `/` (relative to `cwd` when given and
    /// `program` is relative), else a name looked up on the search path
    /// (`PATH`). Err: why it cannot be run.
    fn find_program(&self, program: &str, cwd: Option<&Path>) -> Result<PathBuf, String>;

    /// Whether `path` is a directory.
    fn is_dir(&self, path: &Path) -> bool;

    /// `path` made absolute, with symlinks resolved as far as it exists.
    fn absolute(&self, path: &Path) -> PathBuf;

    /// Whether writing `output` would touch the input named by `input` (a
    /// path, a directory or a glob).
    fn overlaps(&self, input: &str, output: &Path) -> bool {
        let input = fanout_datasets::store::local_path(input);
        let url = output.to_string_lossy();
        if fanout_datasets::store::is_url(input) || fanout_datasets::store::is_url(&url) {
            // Objects: the same key, a key under a prefix, or a glob's match.
            let prefix = format!("{}/", input.trim_end_matches('/'));
            return url == input
                || url.starts_with(&prefix)
                || glob::Pattern::new(input)
                    .is_ok_and(|p| fanout_datasets::listing::is_glob(input) && p.matches(&url));
        }
        let out = self.absolute(output);
        if fanout_datasets::listing::is_glob(input) {
            let pattern = match glob::Pattern::new(input) {
                Ok(p) => p,
                Err(_) => return false,
            };
            return pattern.matches_path(output) || pattern.matches_path(&out);
        }
        let input = self.absolute(Path::new(input));
        out == input || (self.is_dir(&input) && out.starts_with(&input))
    }
}

/// This machine's file system and `PATH`: what [`validate`](crate::validate)
/// uses.
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalEnvironment;

impl Environment for LocalEnvironment {
    fn first_file(&self, path: &str, storage: &Storage) -> Result<PathBuf, String> {
        let inputs = [path.to_string()];
        match fanout_datasets::listing::list(&inputs, storage).next() {
            Some(Ok(file)) => Ok(file.path),
            Some(Err(e)) => Err(e.to_string()),
            None => unreachable!("a listing yields a file or an error"),
        }
    }

    fn other_format(&self, path: &str, storage: &Storage, format: Format) -> Option<(PathBuf, Format)> {
        let inputs = [path.to_string()];
        fanout_datasets::listing::list(&inputs, storage)
            .map_while(Result::ok)
            .find_map(|f| Format::from_path(&f.path).filter(|&told| told != format).map(|told| (f.path, told)))
    }

    fn find_program(&self, program: &str, cwd: Option<&Path>) -> Result<PathBuf, String> {
        if program.contains('/') {
            let path = match cwd {
                Some(dir) if !program.starts_with('/') => dir.join(program),
                _ => PathBuf::from(program),
            };
            return if path.is_file() { Ok(path) } else { Err(format!("{}: no such file", path.display())) };
        }
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
            .ok_or_else(|| format!("`{program}` is not found on PATH"))
    }

    fn is_dir(&self, path: &Path) -> bool {
        path.is_dir()
    }

    fn absolute(&self, path: &Path) -> PathBuf {
        if let Ok(p) = path.canonicalize() {
            return p;
        }
        match (path.parent(), path.file_name()) {
            (Some(parent), Some(name)) => {
                let parent = if parent.as_os_str().is_empty() { Path::new(".") } else { parent };
                self.absolute(parent).join(name)
            }
            _ => std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        ExternalCheck, ExternalChecked, ExternalKind, FieldPath, FunctionCatalog, FunctionProblem, FunctionRef,
        SettingProblem, Source, load_source, validate, validate_with,
    };
    use serde_json::{Map, Value};

    /// A store that holds one input and knows one program and one directory.
    struct Fake;

    impl Environment for Fake {
        fn first_file(&self, path: &str, _: &Storage) -> Result<PathBuf, String> {
            match path {
                "store://logs/*.jsonl" => Ok(PathBuf::from("store://logs/2026-01-01.jsonl")),
                _ => Err(format!("{path}: no such object")),
            }
        }

        fn find_program(&self, program: &str, cwd: Option<&Path>) -> Result<PathBuf, String> {
            match (program, cwd) {
                ("only-in-fake", Some(dir)) if dir == Path::new("/fake/work") => Ok(dir.join(program)),
                _ => Err(format!("`{program}` is not in the fake")),
            }
        }

        fn is_dir(&self, path: &Path) -> bool {
            path == Path::new("/fake/work")
        }

        fn absolute(&self, path: &Path) -> PathBuf {
            Path::new("/fake/work").join(path)
        }
    }

    /// Builtins of any name, and two kinds of external function: `run`
    /// (argv; its program must be found) and `other`.
    struct Catalog;

    impl FunctionCatalog for Catalog {
        fn check(&self, _: &str, _: &Map<String, Value>, _: bool) -> Result<(), FunctionProblem> {
            Ok(())
        }

        fn external_kinds(&self) -> Vec<ExternalKind<'_>> {
            vec![ExternalKind { name: "run", keys: &["shell"] }, ExternalKind { name: "other", keys: &["depth"] }]
        }

        fn check_external(&self, f: &ExternalCheck<'_>, env: &dyn Environment) -> ExternalChecked {
            let program = f.settings[f.kind][0].as_str().unwrap_or_default().to_string();
            let problems = match env.find_program(&program, f.cwd) {
                Ok(_) => Vec::new(),
                Err(m) => vec![SettingProblem::new(FieldPath::keys([f.kind]).index(0), m)],
            };
            ExternalChecked { name: program, problems }
        }
    }

    fn job(function: &str, output: &str) -> crate::LoadedJob {
        let text = format!(
            "[input]\npath = \"store://logs/*.jsonl\"\n\n[[stage]]\nfunction = {function}\n\n[output]\npath = \"{output}\"\n"
        );
        load_source(Source::new(Path::new("job.toml"), text), &[]).unwrap()
    }

    #[test]
    fn validation_asks_the_environment_about_inputs_programs_and_directories() {
        let good = job(r#"{ run = ["only-in-fake"], cwd = "/fake/work" }"#, "out.csv");
        let plan = validate_with(&good, &Catalog, &Fake).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(plan.input.options.format, Some(fanout_datasets::Format::Jsonl));
        assert_eq!(plan.stages[0].name, "only-in-fake");
        assert_eq!(plan.stages[0].function.to_string(), r#"run ["only-in-fake"]"#);
        let FunctionRef::External(x) = &plan.stages[0].function else { panic!("not external") };
        assert_eq!((x.kind.as_str(), x.cwd.as_deref()), ("run", Some(Path::new("/fake/work"))));

        // The fake's answers are placed at the fields that asked.
        let bad = job(r#"{ run = ["elsewhere"], cwd = "/fake/work" }"#, "store://logs/new.jsonl");
        let errors = validate_with(&bad, &Catalog, &Fake).unwrap_err().to_string();
        assert!(errors.contains("job.toml:5:21: `elsewhere` is not in the fake"), "{errors}");
        assert!(errors.contains("job.toml:8:8: output.path `store://logs/new.jsonl` is also an input"), "{errors}");

        // None of it exists on this machine, and no object store has that
        // scheme.
        let errors = validate(&good, &Catalog).unwrap_err().to_string();
        let scheme = "job.toml:2:8: store://logs/*.jsonl: unknown storage scheme `store://`";
        assert!(errors.contains(scheme), "{errors}");
        assert!(errors.contains("job.toml:5:44: /fake/work: not a directory"), "{errors}");
        assert!(errors.contains("job.toml:5:21: `only-in-fake` is not found on PATH"), "{errors}");
    }

    #[test]
    fn function_tables_are_checked_against_the_catalogs_kinds() {
        let errors =
            |function: &str| validate_with(&job(function, "out.csv"), &Catalog, &Fake).unwrap_err().to_string();
        let e = errors(r#"{ cwd = "/fake/work" }"#);
        assert_eq!(e, "job.toml:5:12: a function table needs exactly one of run or other");
        let e = errors(r#"{ run = ["only-in-fake"], other = [], cwd = "/fake/work", depth = 2 }"#);
        assert!(e.starts_with("job.toml:5:12: a function table needs exactly one of run or other\n"), "{e}");
        assert!(e.contains("job.toml:5:78: `depth` applies to other functions only"), "{e}");
        let e = errors(r#"{ run = ["only-in-fake"], cwd = "/fake/work", colour = 1 }"#);
        assert_eq!(
            e,
            "job.toml:5:67: unknown field `colour`, expected one of `run`, `other`, `schema`, `env`, `cwd`, `shell`, `depth`"
        );
    }
}
