//! The function registry: names to [`Builtin`]s, and kinds of external
//! function to their [`Backend`]s. It holds the builtins and the backends
//! of this crate, and a program using the library can register its own.
//! Validation learns from it, as a [`FunctionCatalog`], which functions
//! and which kinds of function table exist.

use std::collections::BTreeMap;
use std::sync::Arc;

use fanout_jobs::{Environment, ExternalCheck, ExternalChecked, ExternalKind, FunctionCatalog, FunctionProblem};
use serde_json::{Map, Value};

use crate::builtins;
use crate::catalog::Shape;
use crate::external::{self, Backend};
use crate::function::Builtin;
use crate::params;

/// Functions by name, and backends by kind.
#[derive(Clone)]
pub struct Registry {
    functions: BTreeMap<String, Arc<dyn Builtin>>,
    /// In the order they were registered, which messages follow.
    backends: Vec<Arc<dyn Backend>>,
}

impl Registry {
    /// An empty registry: no builtins, no backends.
    pub fn empty() -> Self {
        Registry { functions: BTreeMap::new(), backends: Vec::new() }
    }

    /// Every builtin of [`builtins::all`], and the backends of
    /// [`external`]: exec, lambda, http and aws_lambda.
    pub fn builtins() -> Self {
        let mut r = Registry::empty();
        for f in builtins::all() {
            r.register(f);
        }
        r.register_backend(Arc::new(external::Exec));
        r.register_backend(Arc::new(external::Lambda));
        r.register_backend(Arc::new(external::Http));
        r.register_backend(Arc::new(external::AwsLambda));
        r
    }

    /// Adds (or replaces) the backend of a kind of external function.
    pub fn register_backend(&mut self, b: Arc<dyn Backend>) {
        match self.backends.iter_mut().find(|old| old.kind() == b.kind()) {
            Some(old) => *old = b,
            None => self.backends.push(b),
        }
    }

    /// Looks a backend up by its kind (`exec`, `lambda`).
    pub fn backend(&self, kind: &str) -> Option<&Arc<dyn Backend>> {
        self.backends.iter().find(|b| b.kind() == kind)
    }

    /// Adds (or replaces) a function under its info's name.
    pub fn register(&mut self, f: Arc<dyn Builtin>) {
        self.functions.insert(f.info().name.to_string(), f);
    }

    /// Looks a function up.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn Builtin>> {
        self.functions.get(name)
    }

    /// The registered names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.functions.keys().map(String::as_str)
    }
}

impl Default for Registry {
    fn default() -> Self {
        Registry::builtins()
    }
}

impl FunctionCatalog for Registry {
    fn check(&self, name: &str, params: &Map<String, Value>, keyed: bool) -> Result<(), FunctionProblem> {
        let Some(f) = self.get(name) else {
            let known: Vec<&str> = builtins::catalog()
                .into_iter()
                .map(|f| f.name)
                .chain(self.names().filter(|n| builtins::info(n).is_none()))
                .collect();
            return Err(FunctionProblem {
                param: None,
                message: format!("unknown function `{name}`, expected one of: {}", known.join(", ")),
            });
        };
        let info = f.info();
        let problem = |message: String| Err(FunctionProblem { param: None, message });
        match (info.shape, keyed) {
            (Shape::Map, true) => return problem(format!("{name} is a map function; remove the stage's key")),
            (Shape::Keyed, false) => {
                return problem(format!("{name} needs a keyed stage: add key = [\"column\", ...]"));
            }
            _ => {}
        }
        params::check(name, info.params, params)
            .map_err(|e| FunctionProblem { param: Some(e.param), message: e.message })
    }

    fn external_kinds(&self) -> Vec<ExternalKind<'_>> {
        self.backends.iter().map(|b| ExternalKind { name: b.kind(), keys: b.keys() }).collect()
    }

    fn check_external(&self, function: &ExternalCheck<'_>, env: &dyn Environment) -> ExternalChecked {
        match self.backend(function.kind) {
            Some(b) => b.check(function, env),
            None => ExternalChecked { name: function.kind.to_string(), problems: Vec::new() },
        }
    }
}
