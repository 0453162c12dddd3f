//! Reading a kind's own settings from its function table. A backend reads
//! them the same way twice: when the job is validated, where every
//! problem is reported at its field, and when the stage is planned, where
//! (validation having passed) the first problem is an error.

use std::path::Path;
use std::str::FromStr;

use fanout_jobs::{Environment, FieldPath, SettingProblem};
use serde_json::{Map, Value};

use crate::function::FunctionError;

/// A function table's settings, and the problems found reading them.
pub(crate) struct Settings<'a> {
    map: &'a Map<String, Value>,
    problems: Vec<SettingProblem>,
}

impl<'a> Settings<'a> {
    /// Reads `map`: the kind's key and its own keys.
    pub(crate) fn new(map: &'a Map<String, Value>) -> Self {
        Settings { map, problems: Vec::new() }
    }

    /// The argv under the kind's key `kind`, never run through a shell.
    /// With `lookup`, its program must be found in that environment
    /// (relative to the function's working directory, if it has one).
    pub(crate) fn command(&mut self, kind: &str, lookup: Option<(&dyn Environment, Option<&Path>)>) -> Vec<String> {
        let at = FieldPath::keys([kind]);
        let needs = format!("{kind} needs a command: [\"program\", \"arg\", ...]");
        let Some(Value::Array(items)) = self.map.get(kind) else {
            self.problem(at, needs);
            return Vec::new();
        };
        let mut argv = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            match item.as_str() {
                Some(s) => argv.push(s.to_string()),
                None => self.problem(at.index(i), format!("a command's arguments are strings, not {item}")),
            }
        }
        if argv.len() < items.len() {
            return Vec::new();
        }
        match argv.first() {
            None => self.problem(at, needs),
            Some(program) if program.is_empty() => self.problem(at.index(0), "the command's program is empty"),
            Some(program) => {
                if let Some((env, cwd)) = lookup
                    && let Err(m) = env.find_program(program, cwd)
                {
                    self.problem(at.index(0), m);
                }
            }
        }
        argv
    }

    /// The string under `key`, if it is given.
    pub(crate) fn string(&mut self, key: &str) -> Option<&'a str> {
        match self.map.get(key) {
            None => None,
            Some(Value::String(s)) => Some(s),
            Some(v) => {
                self.problem(FieldPath::keys([key]), format!("`{key}` must be a string, not {v}"));
                None
            }
        }
    }

    /// The value named by the string under `key`, if it is given and
    /// names one.
    pub(crate) fn parse<T: FromStr<Err = String>>(&mut self, key: &str) -> Option<T> {
        let text = self.string(key)?;
        text.parse().map_err(|m| self.problem(FieldPath::keys([key]), m)).ok()
    }

    /// Adds a problem at `field`.
    pub(crate) fn problem(&mut self, field: FieldPath, message: impl Into<String>) {
        self.problems.push(SettingProblem::new(field, message));
    }

    /// Every problem found, for validation.
    pub(crate) fn into_problems(self) -> Vec<SettingProblem> {
        self.problems
    }

    /// The first problem found, as an error, for planning.
    pub(crate) fn finish(self) -> Result<(), FunctionError> {
        match self.problems.into_iter().next() {
            None => Ok(()),
            Some(p) => Err(FunctionError::permanent(format!("{}: {}", p.field, p.message))),
        }
    }
}

/// The file name of `path`, without its extension if `strip`: a stage's
/// default name.
pub(crate) fn stem(path: &str, strip: bool) -> String {
    let p = Path::new(path);
    let name = if strip { p.file_stem() } else { p.file_name() };
    name.map_or_else(|| path.to_string(), |n| n.to_string_lossy().into_owned())
}
