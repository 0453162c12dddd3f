//! The function registry: names to [`Builtin`]s. It holds the builtins,
//! and a program using the library can register its own.

use std::collections::BTreeMap;
use std::sync::Arc;

use fanout_jobs::{FunctionCatalog, FunctionProblem};
use serde_json::{Map, Value};

use crate::builtins;
use crate::catalog::Shape;
use crate::function::Builtin;
use crate::params;

/// Functions by name.
#[derive(Clone)]
pub struct Registry {
    functions: BTreeMap<String, Arc<dyn Builtin>>,
}

impl Registry {
    /// An empty registry.
    pub fn empty() -> Self {
        Registry { functions: BTreeMap::new() }
    }

    /// Every builtin of [`crate::catalog::BUILTINS`].
    pub fn builtins() -> Self {
        let mut r = Registry::empty();
        let all: [Arc<dyn Builtin>; 13] = [
            Arc::new(builtins::WordCount),
            Arc::new(builtins::Grep),
            Arc::new(builtins::Filter),
            Arc::new(builtins::Select),
            Arc::new(builtins::Aggregate),
            Arc::new(builtins::Sort),
            Arc::new(builtins::TopK),
            Arc::new(builtins::Sample),
            Arc::new(builtins::Hash),
            Arc::new(builtins::JsonExtract),
            Arc::new(builtins::Pi),
            Arc::new(builtins::Wait { spin: true }),
            Arc::new(builtins::Wait { spin: false }),
        ];
        for f in all {
            r.register(f);
        }
        r
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
            let known: Vec<&str> = crate::catalog::BUILTINS
                .iter()
                .map(|f| f.name)
                .chain(self.names().filter(|n| crate::catalog::info(n).is_none()))
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
}
