//! `fanout` as an AWS Lambda custom runtime: a client of the Lambda
//! Runtime API that runs a builtin on each event it is given.

use std::io;

use super::invoke::{Served, invoke};
use crate::registry::Registry;

/// Runs as an AWS Lambda custom runtime (`provided.al2023`): asks the
/// Runtime API at `api` (`AWS_LAMBDA_RUNTIME_API`) for the next event,
/// runs builtin `function` on it and posts the response or the error, for
/// as long as the API answers. An unknown function is an init error.
pub fn lambda_runtime(api: &str, registry: &Registry, function: &str) -> io::Result<()> {
    let base = format!("http://{api}/2018-06-01/runtime");
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let failed = |e: ureq::Error| io::Error::other(format!("the Runtime API at {api}: {e}"));
    let Some(builtin) = registry.get(function) else {
        let body = serde_json::json!({
            "errorType": "Runtime.HandlerNotFound",
            "errorMessage": format!("no builtin function `{function}` (the handler names it)"),
        });
        agent
            .post(format!("{base}/init/error"))
            .header("Lambda-Runtime-Function-Error-Type", "Runtime.HandlerNotFound")
            .send(body.to_string().as_bytes())
            .map_err(failed)?;
        return Err(io::Error::other(format!("no builtin function `{function}`")));
    };
    let mut warm = None;
    loop {
        let mut next = agent.get(format!("{base}/invocation/next")).call().map_err(failed)?;
        if !next.status().is_success() {
            return Err(io::Error::other(format!("the Runtime API at {api} answered {}", next.status())));
        }
        let id = next
            .headers()
            .get("lambda-runtime-aws-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let event = next.body_mut().with_config().limit(u64::MAX).read_to_vec().map_err(failed)?;
        match invoke(function, &Served::Builtin(builtin.as_ref()), &event, &mut warm, u64::MAX) {
            Ok(body) => {
                agent.post(format!("{base}/invocation/{id}/response")).send(&body[..]).map_err(failed)?;
            }
            Err(e) => {
                let kind = if e.permanent { "InvalidParameter" } else { "FunctionError" };
                let body = serde_json::json!({ "errorType": kind, "errorMessage": e.message });
                agent
                    .post(format!("{base}/invocation/{id}/error"))
                    .header("Lambda-Runtime-Function-Error-Type", kind)
                    .send(body.to_string().as_bytes())
                    .map_err(failed)?;
            }
        }
    }
}
