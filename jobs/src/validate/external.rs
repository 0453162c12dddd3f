//! A stage's function table checked: its kind's key among the catalog's
//! kinds, the settings every kind shares, then the kind's own check, each
//! problem placed at its field.

use std::path::PathBuf;
use std::sync::Arc;

use arrow_schema::Schema;
use serde_json::{Map, Value};

use crate::catalog::{FunctionCatalog, FunctionRef};
use crate::column::parse_column;
use crate::environment::Environment;
use crate::error::JobError;
use crate::external::{COMMON_KEYS, ExternalCheck, ExternalKind, ExternalRef};
use crate::load::{FieldPath, LoadedJob};
use crate::schema::FunctionTable;

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
