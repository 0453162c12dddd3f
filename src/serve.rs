//! `fanout serve`: the builtins served over HTTP (see
//! [`fanout_workers::host`]) until SIGTERM or Ctrl-C, which drain: the
//! invocations in flight are answered, new ones get 503.

use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::sync::Arc;

use anyhow::Context;
use fanout_workers::Registry;
use fanout_workers::host::{Drain, HostOptions, JobFunction, beyond_loopback, serve as host};

use crate::args::ServeArgs;
use crate::signals::say;
use crate::{Failure, Outcome};

pub fn serve(a: &ServeArgs) -> Outcome {
    // Started by a Lambda runtime (AWS's, or fanout's lambda backend): a
    // custom runtime serving the builtin the handler names.
    if let Ok(api) = std::env::var("AWS_LAMBDA_RUNTIME_API") {
        let handler = std::env::var("_HANDLER").ok().filter(|h| !h.is_empty());
        let name = handler.or_else(|| std::env::var("AWS_LAMBDA_FUNCTION_NAME").ok()).unwrap_or_default();
        // A handler written as `file.function` names the function last.
        let name = name.rsplit('.').next().unwrap_or_default().to_string();
        fanout_workers::host::lambda_runtime(&api, &Registry::builtins(), &name)?;
        return Ok(());
    }
    let listen = match (&a.listen, std::env::var("PORT")) {
        (Some(l), _) => l.clone(),
        (None, Ok(port)) => format!("0.0.0.0:{port}"),
        (None, Err(_)) => "127.0.0.1:8080".to_string(),
    };
    let addr: SocketAddr = listen
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| Failure::invalid(anyhow::anyhow!("--listen {listen}: not an address to listen on")))?;
    let token = match &a.token_file {
        Some(f) => {
            let t = std::fs::read_to_string(f)
                .map_err(|e| Failure::invalid(anyhow::anyhow!("--token-file {}: {e}", f.display())))?;
            let t = t.trim().to_string();
            if t.is_empty() {
                return Err(Failure::invalid(anyhow::anyhow!("--token-file {}: the file is empty", f.display())));
            }
            Some(t)
        }
        None if beyond_loopback(&addr) => {
            return Err(Failure::invalid(anyhow::anyhow!(
                "listening on {addr}, beyond the loopback interface, needs a bearer token: --token-file FILE"
            )));
        }
        None => None,
    };
    let concurrency = a.concurrency.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if concurrency == 0 {
        return Err(Failure::invalid(anyhow::anyhow!("--concurrency must be at least 1")));
    }
    let listener = TcpListener::bind(addr).with_context(|| format!("listening on {addr}"))?;
    let bound = listener.local_addr()?;
    let drain = Drain::new();
    watch_signals(drain.clone());
    let registry = Registry::builtins();
    let functions = match &a.job {
        Some(path) => job_functions(path, &registry)?,
        None => Vec::new(),
    };
    let names: Vec<String> = registry.names().map(String::from).collect();
    say(&format!(
        "serving {} functions on http://{bound} ({concurrency} at once{}): POST /functions/NAME, \
         POST /2015-03-31/functions/NAME/invocations, GET /healthz",
        names.len(),
        if token.is_some() { ", bearer token required" } else { "" },
    ));
    let opts = HostOptions { concurrency, payload_limit: a.payload_limit.bytes(), token, functions };
    if !opts.functions.is_empty() {
        let served: Vec<&str> = opts.functions.iter().map(|f| f.name.as_str()).collect();
        say(&format!(
            "and from {}: {}",
            a.job.as_ref().map_or(String::new(), |j| j.display().to_string()),
            served.join(", ")
        ));
    }
    host(listener, Arc::new(registry), opts, drain)?;
    say("stopped: in-flight invocations answered");
    Ok(())
}

/// The external functions of the job file at `path`, by stage name.
fn job_functions(path: &std::path::Path, registry: &Registry) -> Result<Vec<JobFunction>, Failure> {
    let job = fanout_jobs::load(path, &[]).map_err(Failure::invalid)?;
    let plan = fanout_jobs::validate(&job, registry).map_err(Failure::invalid)?;
    let functions: Vec<JobFunction> = plan
        .stages
        .iter()
        .filter_map(|s| match &s.function {
            fanout_jobs::FunctionRef::External(f) => Some(JobFunction {
                name: s.name.clone(),
                function: f.clone(),
                memory_limit: plan.platform.memory_limit,
                memory_mb: plan.platform.pricing.memory_mb,
                timeout: plan.platform.timeout,
            }),
            fanout_jobs::FunctionRef::Builtin(_) => None,
        })
        .collect();
    if functions.is_empty() {
        return Err(Failure::invalid(anyhow::anyhow!(
            "--job {}: the job has no external function (exec, lambda, ...) to serve; its builtins are served anyway",
            path.display()
        )));
    }
    Ok(functions)
}

/// SIGTERM or SIGINT begins the drain: the host answers what is in flight
/// and returns. A second signal stops it at once, saying what is lost.
fn watch_signals(drain: Arc<Drain>) {
    let lost = drain.clone();
    crate::signals::on_signals(
        move |signal| {
            say(&format!("{}: draining: in-flight invocations are answered, new ones get 503", signal.as_str()));
            drain.begin();
        },
        move || {
            let (running, events) = lost.in_flight();
            let plural = |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
            let mut lost = Vec::new();
            if running > 0 {
                lost.push(plural(running, "invocation running is cut off", "invocations running are cut off"));
            }
            if events > 0 {
                lost.push(plural(
                    events,
                    "accepted Event invocation (answered 202) is lost",
                    "accepted Event invocations (answered 202) are lost",
                ));
            }
            (!lost.is_empty()).then(|| lost.join("; "))
        },
    );
}
