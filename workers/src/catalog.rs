//! The builtin function catalog: every builtin's name, what it does, and
//! its documented parameters, as `fanout functions` lists them and as job
//! validation checks them. Each builtin's entry is a const beside its
//! code (`builtins/`), gathered by [`crate::builtins::catalog`]; this
//! module holds their shape.

use crate::params::{self, ParamSpec};

/// Where a function may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Per split: a map stage.
    Map,
    /// Map side per split and reduce side per key partition: a keyed stage.
    Keyed,
    /// Either.
    Both,
}

/// A builtin function's documentation.
#[derive(Debug, Clone, Copy)]
pub struct FunctionInfo {
    /// Its name in job files.
    pub name: &'static str,
    /// Map, keyed or both.
    pub shape: Shape,
    /// One line on what it does.
    pub summary: &'static str,
    /// Input, output and behaviour in full.
    pub doc: &'static str,
    /// Its parameters.
    pub params: &'static [ParamSpec],
}

/// A parameter's documentation, as a builtin's catalog entry lists it.
pub(crate) const fn p(
    name: &'static str,
    ty: params::ParamType,
    default: Option<&'static str>,
    doc: &'static str,
) -> ParamSpec {
    ParamSpec { name, ty, default, doc }
}
