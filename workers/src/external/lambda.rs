//! The lambda backend: worker processes that speak the AWS Lambda Runtime
//! API. Each process is a container (a sandbox, `sandbox.rs`): it gets a
//! Runtime API of its own on a loopback port (`AWS_LAMBDA_RUNTIME_API`)
//! and the standard `AWS_LAMBDA_*` variables, so functions written for
//! Lambda's runtimes (awslambdaric, the Rust `lambda_runtime` crate, a
//! custom `bootstrap`) run unchanged.
//!
//! Its function table: `lambda = ["program", "arg", ...]`, and besides the
//! common keys `event` (what an event carries: "records", "split" or
//! "auto") and `handler` (the `_HANDLER` variable).

use std::sync::Arc;

use fanout_jobs::{Environment, ExternalCheck, ExternalChecked, ExternalRef, FieldPath};

use crate::external::event::EventMode;
use crate::external::sandbox::{LambdaSpec, Sandbox};
use crate::external::settings::{Settings, stem};
use crate::external::{Backend, Container, ExternalContext, Launch, planned};
use crate::function::{FunctionError, Planned};

/// The lambda backend (`lambda = [argv]`): Runtime API worker processes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Lambda;

/// The settings of a lambda function table.
struct LambdaSettings {
    command: Vec<String>,
    event: EventMode,
    handler: String,
}

impl LambdaSettings {
    fn read(s: &mut Settings<'_>, lookup: Option<(&dyn Environment, Option<&std::path::Path>)>) -> Self {
        LambdaSettings {
            command: s.command("lambda", lookup),
            event: s.parse("event").unwrap_or(EventMode::Records),
            handler: s.string("handler").unwrap_or("handler.handler").to_string(),
        }
    }
}

impl Backend for Lambda {
    fn kind(&self) -> &str {
        "lambda"
    }

    fn keys(&self) -> &[&str] {
        &["event", "handler"]
    }

    fn check(&self, f: &ExternalCheck<'_>, env: &dyn Environment) -> ExternalChecked {
        let mut s = Settings::new(f.settings);
        let x = LambdaSettings::read(&mut s, Some((env, f.cwd)));
        if x.event != EventMode::Records && f.stage > 0 {
            s.problem(
                FieldPath::keys(["event"]),
                "only the first stage reads the input's splits; later stages get records (event = \"records\")",
            );
        }
        // The stage is named for its script (its stem).
        ExternalChecked {
            name: x.command.last().map_or_else(String::new, |p| stem(p, true)),
            problems: s.into_problems(),
        }
    }

    fn plan(&self, f: &ExternalRef, ctx: &ExternalContext<'_>) -> Result<Arc<dyn Planned>, FunctionError> {
        let mut s = Settings::new(&f.settings);
        let x = LambdaSettings::read(&mut s, None);
        s.finish()?;
        let input = ctx.input.clone();
        let keyed = ctx.key.is_some();
        if keyed && x.event != EventMode::Records {
            return Err(FunctionError::permanent("a keyed stage gets its partitions as records: remove event"));
        }
        let output = f.schema.clone().unwrap_or_else(|| input.clone());
        let spec = LambdaSpec {
            command: x.command,
            env: f.env.clone(),
            cwd: f.cwd.clone(),
            handler: x.handler,
            stage: ctx.stage.to_string(),
            events: ctx.events(x.event, output.clone()),
            memory_limit: ctx.memory_limit,
            memory_mb: ctx.memory_mb,
        };
        Ok(planned(Arc::new(spec), input, output, keyed))
    }
}

impl Launch for LambdaSpec {
    fn start(self: Arc<Self>) -> Result<Box<dyn Container>, FunctionError> {
        Ok(Box::new(Sandbox::start(self)?))
    }

    fn reads_split(&self) -> bool {
        self.events.event == EventMode::Split
    }
}
