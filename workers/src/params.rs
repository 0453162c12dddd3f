//! Function parameters: their documented specs, and checking a stage's
//! `params` table against them at validate time.

use serde_json::{Map, Value};

/// The type of a parameter's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamType {
    /// `true` or `false`.
    Bool,
    /// A whole number.
    Int,
    /// A number.
    Float,
    /// A string.
    Str,
    /// A list of strings.
    StrList,
}

impl ParamType {
    /// How the type is named in docs and errors.
    pub fn name(self) -> &'static str {
        match self {
            ParamType::Bool => "boolean",
            ParamType::Int => "integer",
            ParamType::Float => "number",
            ParamType::Str => "string",
            ParamType::StrList => "list of strings",
        }
    }

    fn accepts(self, v: &Value) -> bool {
        match self {
            ParamType::Bool => v.is_boolean(),
            ParamType::Int => v.is_i64() || v.is_u64(),
            ParamType::Float => v.is_number(),
            ParamType::Str => v.is_string(),
            ParamType::StrList => v.as_array().is_some_and(|a| a.iter().all(Value::is_string)),
        }
    }
}

/// One documented parameter of a function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParamSpec {
    /// Its key in `params`.
    pub name: &'static str,
    /// The type of its value.
    pub ty: ParamType,
    /// Its default, as shown to users; `None` means it is required.
    pub default: Option<&'static str>,
    /// What it does.
    pub doc: &'static str,
}

/// A problem with a stage's parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamError {
    /// The parameter at fault.
    pub param: String,
    /// What is wrong.
    pub message: String,
}

/// Checks `params` against `specs`: no unknown names, every required one
/// given, every value of the right type.
pub fn check(function: &str, specs: &[ParamSpec], params: &Map<String, Value>) -> Result<(), ParamError> {
    for (name, value) in params {
        let Some(spec) = specs.iter().find(|s| s.name == name) else {
            let known: Vec<&str> = specs.iter().map(|s| s.name).collect();
            let expected = if known.is_empty() {
                format!("{function} takes no parameters")
            } else {
                format!("expected one of: {}", known.join(", "))
            };
            return Err(ParamError {
                param: name.clone(),
                message: format!("unknown parameter `{name}` for {function}, {expected}"),
            });
        };
        if !spec.ty.accepts(value) {
            return Err(ParamError {
                param: name.clone(),
                message: format!("{function}: parameter `{name}` must be a {}, got {value}", spec.ty.name()),
            });
        }
    }
    if let Some(missing) = specs.iter().find(|s| s.default.is_none() && !params.contains_key(s.name)) {
        return Err(ParamError {
            param: missing.name.to_string(),
            message: format!("{function} needs parameter `{}` ({}: {})", missing.name, missing.ty.name(), missing.doc),
        });
    }
    Ok(())
}

/// Typed access to a stage's checked parameters, falling back to the
/// documented defaults.
pub(crate) struct Params<'a> {
    function: &'static str,
    specs: &'static [ParamSpec],
    values: &'a Map<String, Value>,
}

impl<'a> Params<'a> {
    /// Checks `values` against `specs` and wraps them.
    pub(crate) fn new(
        function: &'static str,
        specs: &'static [ParamSpec],
        values: &'a Map<String, Value>,
    ) -> Result<Self, crate::FunctionError> {
        check(function, specs, values).map_err(|e| crate::FunctionError::permanent(e.message))?;
        Ok(Params { function, specs, values })
    }

    fn value(&self, name: &str) -> Value {
        if let Some(v) = self.values.get(name) {
            return v.clone();
        }
        let spec = self.specs.iter().find(|s| s.name == name);
        let default = spec.and_then(|s| s.default).unwrap_or_else(|| panic!("{}: no parameter {name}", self.function));
        serde_json::from_str(default).unwrap_or_else(|_| panic!("{}: bad default for {name}", self.function))
    }

    /// A string parameter.
    pub(crate) fn string(&self, name: &str) -> String {
        self.value(name).as_str().unwrap_or_default().to_string()
    }

    /// A boolean parameter.
    pub(crate) fn boolean(&self, name: &str) -> bool {
        self.value(name).as_bool().unwrap_or_default()
    }

    /// An integer parameter.
    pub(crate) fn int(&self, name: &str) -> i64 {
        let v = self.value(name);
        v.as_i64().or_else(|| v.as_u64().map(|u| u as i64)).unwrap_or_default()
    }

    /// A number parameter.
    pub(crate) fn float(&self, name: &str) -> f64 {
        self.value(name).as_f64().unwrap_or_default()
    }

    /// A list-of-strings parameter.
    pub(crate) fn strings(&self, name: &str) -> Vec<String> {
        match self.value(name) {
            Value::Array(items) => items.iter().filter_map(|v| v.as_str().map(str::to_string)).collect(),
            _ => Vec::new(),
        }
    }
}

/// The index of column `name` in `schema`, or an error listing the columns.
pub(crate) fn column(schema: &arrow_schema::Schema, name: &str) -> Result<usize, crate::FunctionError> {
    schema.index_of(name).map_err(|_| {
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        crate::FunctionError::permanent(format!("no column `{name}` in the input; it has: {}", names.join(", ")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SPECS: &[ParamSpec] = &[
        ParamSpec { name: "pattern", ty: ParamType::Str, default: None, doc: "a regex" },
        ParamSpec { name: "invert", ty: ParamType::Bool, default: Some("false"), doc: "keep non-matching" },
        ParamSpec { name: "cols", ty: ParamType::StrList, default: Some("[]"), doc: "columns" },
    ];

    fn params(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn params_are_checked() {
        assert!(check("grep", SPECS, &params(json!({"pattern": "x", "cols": ["a"]}))).is_ok());
        let e = check("grep", SPECS, &params(json!({"pattern": "x", "invrt": true}))).unwrap_err();
        assert_eq!(e.param, "invrt");
        assert_eq!(e.message, "unknown parameter `invrt` for grep, expected one of: pattern, invert, cols");
        let e = check("grep", SPECS, &params(json!({"pattern": 3}))).unwrap_err();
        assert_eq!(e.message, "grep: parameter `pattern` must be a string, got 3");
        let e = check("grep", SPECS, &params(json!({"cols": ["a", 1], "pattern": "x"}))).unwrap_err();
        assert_eq!(e.param, "cols");
        let e = check("grep", SPECS, &params(json!({}))).unwrap_err();
        assert_eq!(e.message, "grep needs parameter `pattern` (string: a regex)");
    }
}
