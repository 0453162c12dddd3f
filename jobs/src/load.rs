//! Reading a job file: TOML or JSON into a [`JobFile`], errors located at
//! `file:line:column`, and `--set KEY=VALUE` overrides.
//!
//! Overrides are applied after the file itself parses: the file becomes a
//! generic value, each override replaces (or adds) one field, and the result
//! is deserialized again, so an override is checked exactly as the file is
//! and a bad one is reported as `--set KEY=VALUE: ...`.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Deserialize;
use serde_json::Value;

use crate::error::{JobError, JobErrors};
use crate::schema::JobFile;

/// The syntax of a job file, told from its extension (`.json` is JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Syntax {
    /// TOML, the usual.
    Toml,
    /// JSON, for generated jobs.
    Json,
}

/// One step of a path into the job: a key or an array index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    /// A table key.
    Key(String),
    /// An array element (0-based).
    Index(usize),
}

/// A path to a field, such as `platform.concurrency` or `stage.0.params`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldPath(pub Vec<Seg>);

impl FieldPath {
    /// A path of keys and indexes.
    pub fn new(segs: impl IntoIterator<Item = Seg>) -> Self {
        FieldPath(segs.into_iter().collect())
    }

    /// A path of keys only: `FieldPath::keys(["input", "path"])`.
    pub fn keys<'a>(keys: impl IntoIterator<Item = &'a str>) -> Self {
        FieldPath(keys.into_iter().map(|k| Seg::Key(k.to_string())).collect())
    }

    /// This path extended by a key.
    pub fn key(&self, k: &str) -> Self {
        let mut p = self.clone();
        p.0.push(Seg::Key(k.to_string()));
        p
    }

    /// This path extended by an index.
    pub fn index(&self, i: usize) -> Self {
        let mut p = self.clone();
        p.0.push(Seg::Index(i));
        p
    }

    /// This path extended by every step of `rest`.
    pub fn join(&self, rest: &FieldPath) -> Self {
        let mut p = self.clone();
        p.0.extend(rest.0.iter().cloned());
        p
    }

    fn starts_with(&self, other: &FieldPath) -> bool {
        self.0.starts_with(&other.0)
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            match s {
                Seg::Key(k) => f.write_str(k)?,
                Seg::Index(n) => write!(f, "{n}")?,
            }
        }
        Ok(())
    }
}

/// A job file's text, kept to locate errors in it.
#[derive(Debug, Clone)]
pub struct Source {
    /// The file, as named by the user.
    pub path: PathBuf,
    /// Its text.
    pub text: String,
    /// TOML or JSON.
    pub syntax: Syntax,
}

impl Source {
    /// Reads the job file at `path`.
    pub fn read(path: &Path) -> Result<Source, JobError> {
        let text = std::fs::read_to_string(path).map_err(|e| JobError {
            location: path.display().to_string(),
            message: format!("cannot read the job file: {e}"),
        })?;
        Ok(Source::new(path, text))
    }

    /// A job file's text, with the name to report it by.
    pub fn new(path: &Path, text: String) -> Source {
        let json = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("json"));
        // A byte-order mark (editors on Windows write one) is not part of
        // the document.
        let text = match text.strip_prefix('\u{feff}') {
            Some(rest) => rest.to_string(),
            None => text,
        };
        Source { path: path.to_path_buf(), text, syntax: if json { Syntax::Json } else { Syntax::Toml } }
    }

    /// `path:line:col` of a byte offset (1-based; columns count characters).
    pub fn at_offset(&self, offset: usize) -> String {
        let offset = offset.min(self.text.len());
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let col = before[before.rfind('\n').map_or(0, |i| i + 1)..].chars().count() + 1;
        format!("{}:{line}:{col}", self.path.display())
    }

    /// The best location of a field: its value's line and column (or its
    /// nearest enclosing table's or object's, if it is not written), in a
    /// TOML or a JSON file.
    pub fn locate(&self, field: &FieldPath) -> String {
        let offset = match self.syntax {
            Syntax::Toml => toml_edit::Document::parse(self.text.as_str())
                .ok()
                .and_then(|doc| item_span(doc.as_item(), &field.0))
                .map(|span| span.start),
            Syntax::Json => {
                let path: Vec<crate::json_span::Seg<'_>> = (field.0.iter())
                    .map(|s| match s {
                        Seg::Key(k) => crate::json_span::Seg::Key(k),
                        Seg::Index(i) => crate::json_span::Seg::Index(*i),
                    })
                    .collect();
                crate::json_span::offset(&self.text, &path)
            }
        };
        offset.map_or_else(|| self.path.display().to_string(), |o| self.at_offset(o))
    }

    /// Deserializes the file as written.
    fn parse(&self) -> Result<JobFile, JobError> {
        match self.syntax {
            Syntax::Toml => toml::from_str(&self.text).map_err(|e| JobError {
                location: e.span().map_or_else(|| self.path.display().to_string(), |s| self.at_offset(s.start)),
                message: e.message().trim().to_string(),
            }),
            Syntax::Json if self.text.trim().is_empty() => Err(JobError {
                location: self.path.display().to_string(),
                message: "the job file is empty (a JSON job is one object: {\"input\": ..., \"output\": ...})".into(),
            }),
            Syntax::Json => serde_json::from_str(&self.text).map_err(|e| {
                let full = e.to_string();
                let message = full.split(" at line ").next().unwrap_or(&full).to_string();
                // serde_json's column is 0 at the end of a line (an
                // unexpected end of the file); columns count from 1.
                let column = e.column().max(1);
                JobError { location: format!("{}:{}:{column}", self.path.display(), e.line()), message }
            }),
        }
    }

    /// The file as a generic value, for overrides.
    fn value(&self) -> Value {
        match self.syntax {
            Syntax::Toml => toml::from_str(&self.text).expect("the file parsed before"),
            Syntax::Json => serde_json::from_str(&self.text).expect("the file parsed before"),
        }
    }
}

/// The span of the deepest written node along `path`.
fn item_span(item: &toml_edit::Item, path: &[Seg]) -> Option<Range<usize>> {
    let Some((first, rest)) = path.split_first() else {
        return item.span();
    };
    let deeper = match (item, first) {
        (toml_edit::Item::Table(t), Seg::Key(k)) => t.get(k).and_then(|i| item_span(i, rest)),
        (toml_edit::Item::ArrayOfTables(a), Seg::Index(i)) => a.get(*i).and_then(|t| table_span(t, rest)),
        (toml_edit::Item::Value(v), _) => value_span(v, path),
        _ => None,
    };
    deeper.or_else(|| item.span())
}

fn table_span(t: &toml_edit::Table, path: &[Seg]) -> Option<Range<usize>> {
    match path.split_first() {
        Some((Seg::Key(k), rest)) => t.get(k).and_then(|i| item_span(i, rest)).or_else(|| t.span()),
        _ => t.span(),
    }
}

fn value_span(v: &toml_edit::Value, path: &[Seg]) -> Option<Range<usize>> {
    let deeper = match (v, path.split_first()) {
        (_, None) => None,
        (toml_edit::Value::InlineTable(t), Some((Seg::Key(k), rest))) => t.get(k).and_then(|v| value_span(v, rest)),
        (toml_edit::Value::Array(a), Some((Seg::Index(i), rest))) => a.get(*i).and_then(|v| value_span(v, rest)),
        _ => None,
    };
    deeper.or_else(|| v.span())
}

/// A `--set KEY=VALUE` override. VALUE is read as a TOML value (`4`,
/// `true`, `"x"`, `["a", "b"]`) or, failing that, as a plain string.
#[derive(Debug, Clone, PartialEq)]
pub struct Override {
    /// The key as written, such as `platform.concurrency` or
    /// `stage.count.params.lowercase` (stages by name or 0-based index).
    pub key: String,
    /// The value as written.
    pub raw: String,
    value: Value,
}

impl Override {
    /// How the override is named in errors.
    pub fn label(&self) -> String {
        format!("--set {}={}", self.key, self.raw)
    }
}

impl FromStr for Override {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (key, raw) =
            s.split_once('=').ok_or_else(|| format!("--set {s}: expected KEY=VALUE, e.g. platform.concurrency=4"))?;
        let key = key.trim();
        if key.is_empty() || key.split('.').any(str::is_empty) {
            return Err(format!("--set {s}: `{key}` is not a key such as platform.concurrency"));
        }
        let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .and_then(|v| serde_json::to_value(v).ok())
            .unwrap_or_else(|| Value::String(raw.to_string()));
        Ok(Override { key: key.to_string(), raw: raw.to_string(), value })
    }
}

/// A job file as read, with the overrides applied.
#[derive(Debug, Clone)]
pub struct LoadedJob {
    /// The file's text.
    pub source: Source,
    /// The job after overrides.
    pub file: JobFile,
    /// The overrides, each with the field path it resolved to.
    pub overrides: Vec<(Override, FieldPath)>,
}

impl LoadedJob {
    /// The location to report a problem with `field` at: the override that
    /// set it (or a field inside it), or its place in the file.
    pub fn locate(&self, field: &FieldPath) -> String {
        self.overrides
            .iter()
            .rev()
            .find(|(_, p)| field.starts_with(p) || p.starts_with(field))
            .map(|(o, _)| o.label())
            .unwrap_or_else(|| self.source.locate(field))
    }

    /// An error about `field`, located.
    pub fn error(&self, field: &FieldPath, message: impl Into<String>) -> JobError {
        JobError { location: self.locate(field), message: message.into() }
    }
}

/// Reads the job file at `path` and applies `overrides` in order.
pub fn load(path: &Path, overrides: &[Override]) -> Result<LoadedJob, JobErrors> {
    load_source(Source::read(path)?, overrides)
}

/// Parses `source` and applies `overrides` in order.
pub fn load_source(source: Source, overrides: &[Override]) -> Result<LoadedJob, JobErrors> {
    let mut file = source.parse()?;
    let mut resolved = Vec::new();
    if !overrides.is_empty() {
        let mut value = source.value();
        for o in overrides {
            let fail = |message: String| JobError { location: o.label(), message };
            let path = set(&mut value, &o.key, o.value.clone()).map_err(fail)?;
            file = JobFile::deserialize(&value).map_err(|e| fail(e.to_string()))?;
            resolved.push((o.clone(), path));
        }
    }
    Ok(LoadedJob { source, file, overrides: resolved })
}

/// Sets the field named by dotted `key` in `root`, creating tables on the
/// way; returns its resolved path.
fn set(root: &mut Value, key: &str, new: Value) -> Result<FieldPath, String> {
    let parts: Vec<&str> = key.split('.').collect();
    let mut path = FieldPath::default();
    let mut node = root;
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        node = match node {
            Value::Array(items) => {
                let at = match part.parse::<usize>() {
                    Ok(n) if n < items.len() => n,
                    Ok(n) => return Err(format!("`{path}` has {} entries; there is no entry {n}", items.len())),
                    Err(_) => items
                        .iter()
                        .position(|s| stage_name(s) == Some(part))
                        .ok_or_else(|| format!("`{path}` has no entry named `{part}`"))?,
                };
                path = path.index(at);
                &mut items[at]
            }
            Value::Object(map) => {
                path = path.key(part);
                if last {
                    map.insert(part.to_string(), new);
                    return Ok(path);
                }
                map.entry(part.to_string()).or_insert_with(|| Value::Object(Default::default()))
            }
            _ => return Err(format!("`{path}` is not a table, so `{part}` cannot be set in it")),
        };
        if last {
            *node = new;
            return Ok(path);
        }
    }
    unreachable!("a key has at least one part")
}

/// The name of a stage value: its `name`, or its builtin function's name.
fn stage_name(stage: &Value) -> Option<&str> {
    stage.get("name").or_else(|| stage.get("function")).and_then(Value::as_str)
}
