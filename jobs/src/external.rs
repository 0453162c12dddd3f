//! Functions outside the process, as validation sees them.
//!
//! A function table (`function = { exec = [...], cwd = "..." }`) names its
//! kind with one key. Which kinds exist, and which further keys each
//! accepts, is the [`FunctionCatalog`]'s to say (the workers' registry
//! holds one backend per kind), so this crate keeps no list of them: it
//! checks the table's keys against the catalog's kinds, checks the
//! settings every kind shares ([`COMMON_KEYS`]), and hands the rest to the
//! kind's own check, placing each problem it reports at its field.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_schema::{Schema, SchemaRef};
use serde_json::{Map, Value};

use crate::environment::Environment;
use crate::error::JobError;
use crate::load::{FieldPath, LoadedJob};
use crate::plan::{FunctionCatalog, FunctionRef, parse_column};
use crate::schema::FunctionTable;

/// The keys every kind of external function accepts besides its own.
pub const COMMON_KEYS: &[&str] = &["schema", "env", "cwd"];

/// A kind of external function, as a catalog describes it to validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExternalKind<'a> {
    /// The key that names the kind in a function table: `exec`, `lambda`.
    pub name: &'a str,
    /// The keys it accepts besides its own and [`COMMON_KEYS`].
    pub keys: &'a [&'a str],
}

/// A function table, as validation hands it to its kind's check.
#[derive(Debug, Clone, Copy)]
pub struct ExternalCheck<'a> {
    /// The kind.
    pub kind: &'a str,
    /// The kind's key and the other keys of the kind's own, as written.
    pub settings: &'a Map<String, Value>,
    /// The columns the function returns (`schema`), if given.
    pub schema: Option<&'a SchemaRef>,
    /// The working directory of the function's processes (`cwd`), if given.
    pub cwd: Option<&'a Path>,
    /// The stage's position in the job (0 is the stage that reads the
    /// input's splits).
    pub stage: usize,
}

/// What a kind's check makes of a function table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExternalChecked {
    /// The stage's name when the job gives none (exec: its program;
    /// lambda: its script's stem).
    pub name: String,
    /// What is wrong, each at its field.
    pub problems: Vec<SettingProblem>,
}

/// A problem with one field of a function table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingProblem {
    /// The field, from the function table down (`exec.0`, `io`); empty
    /// for the table itself.
    pub field: FieldPath,
    /// What is wrong.
    pub message: String,
}

impl SettingProblem {
    /// A problem at `field`.
    pub fn new(field: FieldPath, message: impl Into<String>) -> Self {
        SettingProblem { field, message: message.into() }
    }
}

/// An external function, validated: its kind, which the engine looks up
/// in the registry, and the settings the kind's backend plans from.
#[derive(Debug, Clone, PartialEq)]
pub struct ExternalRef {
    /// The kind: `exec`, `lambda`.
    pub kind: String,
    /// The kind's key and its own other keys, as written (and checked by
    /// the kind).
    pub settings: Map<String, Value>,
    /// The columns the function returns (`None`: the kind's default).
    pub schema: Option<SchemaRef>,
    /// Extra environment variables for the function's processes.
    pub env: Vec<(String, String)>,
    /// The working directory of its processes (`None`: the current one).
    pub cwd: Option<PathBuf>,
}

impl fmt::Display for ExternalRef {
    /// The kind and the value of its key: `exec ["awk", "{print}"]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.settings.get(&self.kind) {
            Some(Value::String(s)) => write!(f, "{} {s}", self.kind),
            Some(Value::Array(items)) if items.iter().all(Value::is_string) => {
                let items: Vec<&str> = items.iter().filter_map(Value::as_str).collect();
                write!(f, "{} {items:?}", self.kind)
            }
            Some(v) => write!(f, "{} {v}", self.kind),
            None => f.write_str(&self.kind),
        }
    }
}

/// Validates the function table of stage `index` (at `at`): returns the
/// reference and the stage's default name.
pub(crate) fn validate_external(
    job: &LoadedJob,
    at: &FieldPath,
    index: usize,
    table: &FunctionTable,
    catalog: &dyn FunctionCatalog,
    env: &dyn Environment,
    errors: &mut Vec<JobError>,
) -> (FunctionRef, String) {
    let at = at.key("function");
    let kinds = catalog.external_kinds();
    // A null (in a JSON job) is a key not given.
    let given = |key: &str| table.settings.get(key).is_some_and(|v| !v.is_null());
    let named: Vec<&ExternalKind<'_>> = kinds.iter().filter(|k| given(k.name)).collect();
    if named.len() != 1 {
        let names: Vec<&str> = kinds.iter().map(|k| k.name).collect();
        let message = if names.is_empty() {
            "no kind of external function is available; use a builtin".to_string()
        } else {
            format!("a function table needs exactly one of {}", one_of(&names))
        };
        errors.push(job.error(&at, message));
    }
    let kind = named.first().copied();
    // Keys of other kinds, in the catalog's order; then keys of none.
    if let Some(kind) = kind {
        let mut told: Vec<&str> = Vec::new();
        for key in kinds.iter().flat_map(|k| k.keys.iter().copied()) {
            if given(key) && !kind.keys.contains(&key) && !told.contains(&key) {
                told.push(key);
                let owners: Vec<&str> = kinds.iter().filter(|k| k.keys.contains(&key)).map(|k| k.name).collect();
                errors.push(job.error(&at.key(key), format!("`{key}` applies to {} functions only", one_of(&owners))));
            }
        }
    }
    for key in table.settings.keys().filter(|k| given(k)) {
        if kinds.iter().any(|k| k.name == key || k.keys.contains(&key.as_str())) {
            continue;
        }
        let mut expected: Vec<&str> = kinds.iter().map(|k| k.name).chain(COMMON_KEYS.iter().copied()).collect();
        for k in kinds.iter().flat_map(|k| k.keys.iter().copied()) {
            if !expected.contains(&k) {
                expected.push(k);
            }
        }
        let expected: Vec<String> = expected.iter().map(|k| format!("`{k}`")).collect();
        errors.push(job.error(&at.key(key), format!("unknown field `{key}`, expected one of {}", expected.join(", "))));
    }
    let Some(kind) = kind else { return (FunctionRef::Builtin(String::new()), String::new()) };

    let schema = table.schema.as_ref().map(|columns| {
        let mut fields = Vec::new();
        for (i, c) in columns.iter().enumerate() {
            match parse_column(c) {
                Ok(f) => fields.push(f),
                Err(m) => errors.push(job.error(&at.key("schema").index(i), m)),
            }
        }
        if columns.is_empty() {
            errors.push(job.error(&at.key("schema"), "schema needs at least one column"));
        }
        Arc::new(Schema::new(fields))
    });
    let cwd = table.cwd.as_ref().map(PathBuf::from);
    if let Some(dir) = &cwd
        && !env.is_dir(dir)
    {
        errors.push(job.error(&at.key("cwd"), format!("{}: not a directory", dir.display())));
    }
    let settings: Map<String, Value> = table
        .settings
        .iter()
        .filter(|(k, v)| !v.is_null() && (*k == kind.name || kind.keys.contains(&k.as_str())))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let check = ExternalCheck {
        kind: kind.name,
        settings: &settings,
        schema: schema.as_ref(),
        cwd: cwd.as_deref(),
        stage: index,
    };
    let checked = catalog.check_external(&check, env);
    for p in checked.problems {
        errors.push(job.error(&at.join(&p.field), p.message));
    }
    let external = ExternalRef {
        kind: kind.name.to_string(),
        settings,
        schema,
        env: table.env.iter().flatten().map(|(k, v)| (k.clone(), v.clone())).collect(),
        cwd,
    };
    (FunctionRef::External(external), checked.name)
}

/// `a`, `a or b`, `a, b or c`.
fn one_of(names: &[&str]) -> String {
    match names {
        [] => String::new(),
        [one] => one.to_string(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}
