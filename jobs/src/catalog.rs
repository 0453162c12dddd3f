//! The functions a job may name: the catalog validation asks about each
//! stage's function (the workers' registry implements it), and a stage's
//! function reference once resolved.

use serde_json::{Map, Value};

use crate::environment::Environment;
use crate::external::{ExternalCheck, ExternalChecked, ExternalKind, ExternalRef};

/// A problem a catalog finds with a function reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionProblem {
    /// The parameter at fault, if the problem is with one.
    pub param: Option<String>,
    /// What is wrong.
    pub message: String,
}

/// The functions a job may name, and their parameters. The workers'
/// registry implements this; validation asks it about every stage: about
/// a builtin by name, or about a function table (an external function)
/// by its kind.
pub trait FunctionCatalog {
    /// Checks that `name` is a function, that it may run in a keyed stage
    /// (`keyed`) or a map stage, and that `params` suit it.
    fn check(&self, name: &str, params: &Map<String, Value>, keyed: bool) -> Result<(), FunctionProblem>;

    /// The kinds of external function, in the order messages list them,
    /// each with the keys its function tables accept. None by default: a
    /// catalog of builtins only.
    fn external_kinds(&self) -> Vec<ExternalKind<'_>> {
        Vec::new()
    }

    /// Checks the settings of an external function whose kind is one of
    /// [`external_kinds`](Self::external_kinds), asking `env` about
    /// programs and files. By default there is nothing to check.
    fn check_external(&self, function: &ExternalCheck<'_>, env: &dyn Environment) -> ExternalChecked {
        let _ = env;
        ExternalChecked { name: function.kind.to_string(), problems: Vec::new() }
    }
}

/// A function reference, resolved.
#[derive(Debug, Clone, PartialEq)]
pub enum FunctionRef {
    /// A builtin (or registered) function by name.
    Builtin(String),
    /// A function outside the process, of a kind the catalog knows.
    External(ExternalRef),
}

impl std::fmt::Display for FunctionRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FunctionRef::Builtin(n) => f.write_str(n),
            FunctionRef::External(x) => write!(f, "{x}"),
        }
    }
}
