//! The http backend (`http = "url"`: POST to remote function endpoints),
//! not supported by this version of fanout. Its kind is registered so
//! that a function table naming it is told so at its key, and so that
//! messages listing the kinds a table may name include it; the backend
//! itself belongs in this file, with keys, a check and a plan of its own.

use std::sync::Arc;

use fanout_jobs::{Environment, ExternalCheck, ExternalChecked, ExternalRef, FieldPath, SettingProblem};

use crate::external::{Backend, ExternalContext};
use crate::function::{FunctionError, Planned};

/// The http backend (`http = "url"`), which rejects every function: not
/// supported yet.
#[derive(Debug, Clone, Copy, Default)]
pub struct Http;

impl Backend for Http {
    fn kind(&self) -> &str {
        "http"
    }

    fn check(&self, _: &ExternalCheck<'_>, _: &dyn Environment) -> ExternalChecked {
        ExternalChecked {
            name: "http".to_string(),
            problems: vec![SettingProblem::new(
                FieldPath::keys(["http"]),
                "http functions are not supported by this version of fanout; use exec, lambda or a builtin",
            )],
        }
    }

    fn plan(&self, f: &ExternalRef, _: &ExternalContext<'_>) -> Result<Arc<dyn Planned>, FunctionError> {
        let url = f.settings.get("http").and_then(|v| v.as_str()).unwrap_or_default();
        Err(FunctionError::permanent(format!("http functions ({url}) are not supported yet")))
    }
}
