//! `fanout functions [NAME]`: the builtin catalog.

use std::io::Write;

use anyhow::anyhow;
use fanout_workers::builtins::{catalog as builtins, info};
use fanout_workers::catalog::Shape;

use crate::{Failure, Outcome};

/// Lists every builtin, or explains one.
pub fn list(name: Option<&str>) -> Outcome {
    let mut out = std::io::stdout().lock();
    let Some(name) = name else {
        let width = builtins().iter().map(|f| f.name.len()).max().unwrap_or(0);
        for f in builtins() {
            writeln!(out, "{:width$}  {}", f.name, f.summary)?;
        }
        writeln!(out, "\n`fanout functions NAME` explains one.")?;
        writeln!(
            out,
            "A stage may also run a program: function = {{ exec = [\"awk\", \"NF > 3\"] }} (a process per task,\n\
             records on stdin and stdout) or function = {{ lambda = [\"python3\", \"handler.py\"] }} (worker\n\
             processes on the AWS Lambda Runtime API); see docs/functions.md."
        )?;
        return Ok(());
    };
    let f = info(name).ok_or_else(|| {
        let known: Vec<&str> = builtins().iter().map(|f| f.name).collect();
        Failure::invalid(anyhow!("unknown function `{name}`, expected one of: {}", known.join(", ")))
    })?;
    let shape = match f.shape {
        Shape::Map => "map stage (per split)",
        Shape::Keyed => "keyed stage (map-side partial, then per key partition)",
        Shape::Both => "map or keyed stage",
    };
    writeln!(out, "{} — {}\n\nruns in: a {shape}\n\n{}\n", f.name, f.summary, f.doc)?;
    if f.params.is_empty() {
        writeln!(out, "parameters: none")?;
    } else {
        writeln!(out, "parameters:")?;
        for p in f.params {
            let default = p.default.map_or_else(|| "required".to_string(), |d| format!("default {d}"));
            writeln!(out, "  {} ({}, {default})\n      {}", p.name, p.ty.name(), p.doc)?;
        }
    }
    Ok(())
}
