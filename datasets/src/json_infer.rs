//! Schema inference for JSON lines whose fields change type from record to
//! record, as DuckDB's `read_json_auto` does it, and the JSON text columns
//! it falls back to.
//!
//! Each field (and, recursively, each object member and list element) gets
//! a type that holds every value sampled:
//!
//! - nulls say nothing: a field only ever null is `Null`, a list of only
//!   null elements `List<Utf8>` (both as arrow-json infers them);
//! - integers mixed with floats are Float64; other scalars that disagree
//!   (a string and a number, a boolean and a number) are Utf8, read with
//!   numbers and booleans as their text;
//! - objects are a Struct of the union of their members, in first-seen
//!   order; lists a List of their elements' merged type;
//! - a scalar in some records and an object or a list in others, or an
//!   object in some and a list in others, is a JSON text column
//!   ([`json_text_field`]): Utf8 holding each value as its JSON text.
//!
//! Data without such conflicts gets exactly the schema arrow-json's
//! `infer_json_schema` gives it (a test holds the two together), field
//! order included: first seen across records, and within a record in the
//! line's own order (serde_json is built with `preserve_order`), as DuckDB,
//! Polars and pyarrow order them.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::sync::Arc;

use arrow_schema::extension::EXTENSION_TYPE_NAME_KEY;
use arrow_schema::{DataType, Field, Fields, Schema};
use serde_json::{Map, Value};

/// The canonical Arrow extension type of JSON text (`arrow.json`).
const JSON_EXTENSION: &str = "arrow.json";

/// A nullable Utf8 field marked as Arrow's canonical JSON extension type
/// (`ARROW:extension:name` = `arrow.json`): each value is the compact JSON
/// text of whatever the input held there — `"MIT"` (with its quotes),
/// `{"type":"MIT"}`, `[1,2]`, `3` — and a JSON null is a null. The jsonl
/// reader decodes such fields so; `json_extract` parses them.
pub fn json_text_field(name: &str) -> Field {
    Field::new(name, DataType::Utf8, true)
        .with_metadata(HashMap::from([(EXTENSION_TYPE_NAME_KEY.to_string(), JSON_EXTENSION.to_string())]))
}

/// Whether `field` is a JSON text column (see [`json_text_field`]): Utf8
/// marked with the `arrow.json` extension name.
pub fn is_json_text(field: &Field) -> bool {
    field.data_type() == &DataType::Utf8
        && field.metadata().get(EXTENSION_TYPE_NAME_KEY).is_some_and(|name| name == JSON_EXTENSION)
}

/// Infers a schema from the first `rows` non-blank lines of `source`
/// (at least one). A line that is not a JSON object is skipped with
/// `skip_invalid` (it is a bad record the job skips, and counts towards
/// `rows`), else an error naming its 1-based line.
pub(crate) fn infer(source: impl Read, rows: usize, skip_invalid: bool) -> Result<Schema, String> {
    let mut reader = BufReader::new(source);
    let mut root = Members::default();
    let (mut line, mut number, mut seen) = (Vec::new(), 0u64, 0usize);
    while seen < rows.max(1) {
        line.clear();
        if reader.read_until(b'\n', &mut line).map_err(|e| format!("cannot read: {e}"))? == 0 {
            break;
        }
        number += 1;
        // Blank as arrow-json's sampler sees it (Unicode whitespace).
        if std::str::from_utf8(&line).is_ok_and(|s| s.trim().is_empty()) {
            continue;
        }
        seen += 1;
        match serde_json::from_slice::<Value>(&line) {
            Ok(Value::Object(record)) => root.observe(&record),
            _ if skip_invalid => {}
            Ok(_) => return Err(format!("line {number} is not a JSON object")),
            Err(e) => return Err(format!("line {number} is not valid JSON: {e}")),
        }
    }
    Ok(Schema::new(root.fields()))
}

/// A scalar type, widened as values are seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scalar {
    Bool,
    Int,
    Float,
    Text,
}

impl Scalar {
    /// The narrowest scalar that holds both.
    fn merge(self, other: Scalar) -> Scalar {
        match (self, other) {
            (a, b) if a == b => a,
            (Scalar::Int | Scalar::Float, Scalar::Int | Scalar::Float) => Scalar::Float,
            _ => Scalar::Text,
        }
    }

    fn data_type(self) -> DataType {
        match self {
            Scalar::Bool => DataType::Boolean,
            Scalar::Int => DataType::Int64,
            Scalar::Float => DataType::Float64,
            Scalar::Text => DataType::Utf8,
        }
    }
}

/// What the values of one field (or list element) have been so far.
#[derive(Debug, Clone)]
enum Kind {
    /// Nothing but nulls, or nothing: `Null`.
    Null,
    /// Only null list elements: `Utf8`, as arrow-json has it.
    NullItems,
    /// Scalars.
    Scalar(Scalar),
    /// Lists, with their elements' kind.
    List(Box<Kind>),
    /// Objects, with the union of their members.
    Object(Members),
    /// Values of different shapes: JSON text.
    Json,
}

impl Kind {
    /// Widens the kind to hold `value` too.
    fn observe(&mut self, value: &Value) {
        match value {
            Value::Null => {}
            Value::Bool(_) => self.scalar(Scalar::Bool),
            Value::Number(n) => self.scalar(if n.is_i64() { Scalar::Int } else { Scalar::Float }),
            Value::String(_) => self.scalar(Scalar::Text),
            Value::Array(items) => {
                if matches!(self, Kind::Null | Kind::NullItems) {
                    *self = Kind::List(Box::new(Kind::Null));
                }
                match self {
                    Kind::List(element) => {
                        for item in items {
                            match (item, element.as_mut()) {
                                (Value::Null, e @ Kind::Null) => *e = Kind::NullItems,
                                (item, e) => e.observe(item),
                            }
                        }
                    }
                    _ => *self = Kind::Json,
                }
            }
            Value::Object(map) => {
                if matches!(self, Kind::Null | Kind::NullItems) {
                    *self = Kind::Object(Members::default());
                }
                match self {
                    Kind::Object(members) => members.observe(map),
                    _ => *self = Kind::Json,
                }
            }
        }
    }

    fn scalar(&mut self, s: Scalar) {
        match self {
            Kind::Null | Kind::NullItems => *self = Kind::Scalar(s),
            Kind::Scalar(t) => *t = t.merge(s),
            Kind::List(_) | Kind::Object(_) | Kind::Json => *self = Kind::Json,
        }
    }

    /// The field named `name` that holds these values.
    fn field(&self, name: &str) -> Field {
        let data_type = match self {
            Kind::Json => return json_text_field(name),
            Kind::Null => DataType::Null,
            Kind::NullItems => DataType::Utf8,
            Kind::Scalar(s) => s.data_type(),
            Kind::List(element) => DataType::List(Arc::new(element.field(Field::LIST_FIELD_DEFAULT_NAME))),
            Kind::Object(members) => DataType::Struct(members.fields()),
        };
        Field::new(name, data_type, true)
    }
}

/// The members of the objects seen, in first-seen order.
#[derive(Debug, Clone, Default)]
struct Members {
    /// Name and kind, in the order first seen.
    members: Vec<(String, Kind)>,
    /// Where each name is in `members`.
    index: HashMap<String, usize>,
}

impl Members {
    fn observe(&mut self, object: &Map<String, Value>) {
        for (name, value) in object {
            let i = match self.index.get(name) {
                Some(&i) => i,
                None => {
                    self.index.insert(name.clone(), self.members.len());
                    self.members.push((name.clone(), Kind::Null));
                    self.members.len() - 1
                }
            };
            self.members[i].1.observe(value);
        }
    }

    fn fields(&self) -> Fields {
        self.members.iter().map(|(name, kind)| kind.field(name)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn infer_str(data: &str) -> Schema {
        infer(data.as_bytes(), 1000, false).unwrap()
    }

    fn arrow(data: &str) -> Schema {
        arrow_json::reader::infer_json_schema(data.as_bytes(), Some(1000)).unwrap().0
    }

    fn list(field: Field) -> DataType {
        DataType::List(Arc::new(field))
    }

    fn item(dt: DataType) -> DataType {
        list(Field::new_list_field(dt, true))
    }

    #[test]
    fn conflict_free_samples_match_arrow() {
        for data in [
            "{\"a\": 1, \"b\": 2.5, \"c\": \"x\", \"d\": true}\n{\"a\": 2.5, \"e\": null}\n",
            "{\"z\": 1, \"a\": {\"y\": [1, 2], \"b\": {\"c\": \"t\"}}}\n\n{\"a\": {\"b\": null, \"x\": false}}\n",
            "{\"c1\": [{\"a\": \"foo\", \"b\": 100}], \"c2\": 1, \"c3\": []}\n\
             {\"c1\": [{\"a\": \"bar\", \"b\": 2}, {\"a\": \"foo\", \"c\": true}], \"c2\": 0, \"c3\": []}\n\
             {\"c1\": [], \"c2\": 0.5, \"c3\": []}",
            "{\"n\": [], \"l\": [[\"a\"], []]}\n{\"n\": [[]], \"l\": [[null, \"b\"]], \"e\": [null]}\n",
            "{\"big\": 18446744073709551615, \"neg\": -9223372036854775808, \"f\": 1e3}",
            "{\"in\":1, \"ni\":null, \"an\":[], \"na\":null}\n{\"in\":null, \"ni\":2, \"an\":null, \"na\":[]}\n",
            "{\"obj\": null}\n{\"obj\": {\"foo\": 1}}\n{\"obj\": {}}\n",
            "{\"l\": [1, null, 2.5]}\n{\"l\": null}\n{\"m\": {}}\n",
        ] {
            assert_eq!(infer_str(data), arrow(data), "{data}");
        }
    }

    /// A conflict-free shape: every value of a field has it (or is null,
    /// or is missing from its object).
    #[derive(Debug, Clone)]
    enum Shape {
        Bool,
        Int,
        Number,
        Text,
        List(Box<Shape>),
        Object(Vec<(String, Shape)>),
    }

    fn shape() -> impl Strategy<Value = Shape> {
        let leaf = prop_oneof![Just(Shape::Bool), Just(Shape::Int), Just(Shape::Number), Just(Shape::Text)];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                inner.clone().prop_map(|s| Shape::List(Box::new(s))),
                proptest::collection::btree_map("[a-d]", inner, 0..4)
                    .prop_map(|m| Shape::Object(m.into_iter().collect())),
            ]
        })
    }

    /// A value of `shape`; `item`: a list element (arrow-json fails on a
    /// null before an object or a list, so those are not null).
    fn value(shape: &Shape, item: bool) -> BoxedStrategy<Value> {
        let leaf: BoxedStrategy<Value> = match shape {
            Shape::Bool => any::<bool>().prop_map(Value::from).boxed(),
            Shape::Int => any::<i64>().prop_map(Value::from).boxed(),
            Shape::Number => {
                prop_oneof![any::<i32>().prop_map(Value::from), (-1e6..1e6f64).prop_map(Value::from)].boxed()
            }
            Shape::Text => "[a-z\"\\\\é]{0,3}".prop_map(Value::from).boxed(),
            Shape::List(s) => proptest::collection::vec(value(s, true), 0..3).prop_map(Value::Array).boxed(),
            Shape::Object(members) => {
                let members: Vec<_> = members
                    .iter()
                    .map(|(name, s)| (Just(name.clone()), proptest::option::of(value(s, false))))
                    .collect();
                members
                    .prop_map(|members| Value::Object(members.into_iter().filter_map(|(n, v)| Some((n, v?))).collect()))
                    .boxed()
            }
        };
        match (shape, item) {
            (Shape::List(_) | Shape::Object(_), true) => leaf,
            _ => prop_oneof![1 => Just(Value::Null), 4 => leaf].boxed(),
        }
    }

    proptest! {
        #[test]
        fn inference_follows_arrow_json_without_conflicts(
            records in proptest::collection::btree_map("[a-f]", shape(), 1..5).prop_flat_map(|fields| {
                proptest::collection::vec(value(&Shape::Object(fields.into_iter().collect()), true), 1..6)
            })
        ) {
            let data: String = records.iter().map(|r| format!("{r}\n")).collect();
            prop_assert_eq!(infer_str(&data), arrow(&data), "{}", data);
        }
    }

    fn types(schema: &Schema) -> Vec<(String, DataType, bool)> {
        schema.fields().iter().map(|f| (f.name().clone(), f.data_type().clone(), is_json_text(f))).collect()
    }

    #[test]
    fn conflicting_scalars_widen() {
        let s = infer_str(
            "{\"a\": 1, \"b\": 1, \"c\": true, \"d\": 1}\n{\"a\": 2.5, \"b\": \"x\", \"c\": 3, \"d\": null}\n",
        );
        assert_eq!(
            types(&s),
            [
                ("a".into(), DataType::Float64, false),
                ("b".into(), DataType::Utf8, false),
                ("c".into(), DataType::Utf8, false),
                ("d".into(), DataType::Int64, false),
            ]
        );
        // A field only ever null is Null, as arrow-json has it.
        assert_eq!(types(&infer_str("{\"n\": null}\n{\"n\": null}")), [("n".into(), DataType::Null, false)]);
    }

    #[test]
    fn different_shapes_are_json_text() {
        let s = infer_str(concat!(
            r#"{"license": "MIT", "bin": "./cli.js", "repo": {"url": "u"}, "n": 1}"#,
            "\n",
            r#"{"license": {"type": "MIT"}, "bin": {"x": "./x.js"}, "repo": ["u"], "n": [2]}"#,
            "\n",
            r#"{"license": null, "bin": true}"#,
        ));
        let json: Vec<_> = s.fields().iter().map(|f| (f.name().as_str(), is_json_text(f))).collect();
        // Fields in the file's order, as DuckDB, Polars and pyarrow read them.
        assert_eq!(json, [("license", true), ("bin", true), ("repo", true), ("n", true)]);
        let f = s.field_with_name("license").unwrap();
        assert_eq!((f.data_type(), f.is_nullable()), (&DataType::Utf8, true));
        assert_eq!(f.metadata().get("ARROW:extension:name").map(String::as_str), Some("arrow.json"));
        assert_eq!(f, &json_text_field("license"));
    }

    #[test]
    fn objects_union_their_members_and_lists_merge_elements() {
        let s = infer_str(concat!(
            r#"{"author": {"name": "a", "email": "e"}, "files": [1, {"x": 1}], "tags": [["a"], [1]]}"#,
            "\n",
            r#"{"author": {"name": "b", "url": "u", "n": 1}, "files": ["y"], "tags": [[2.5, true]]}"#,
        ));
        // Members in first-seen order, across records and within one.
        let author: Vec<_> = ["name", "email", "url", "n"]
            .map(|n| Field::new(n, if n == "n" { DataType::Int64 } else { DataType::Utf8 }, true))
            .into();
        let expected = Schema::new(vec![
            Field::new("author", DataType::Struct(author.into()), true),
            Field::new("files", list(json_text_field("item")), true),
            Field::new("tags", item(item(DataType::Utf8)), true),
        ]);
        assert_eq!(s, expected);
        // Member conflicts are settled member by member.
        let s = infer_str("{\"a\": {\"b\": 1, \"c\": 1}}\n{\"a\": {\"b\": {}, \"c\": 2.0}}\n");
        let a = Fields::from(vec![json_text_field("b"), Field::new("c", DataType::Float64, true)]);
        assert_eq!(s, Schema::new(vec![Field::new("a", DataType::Struct(a), true)]));
    }

    #[test]
    fn invalid_lines_are_errors_or_skipped() {
        let data = "{\"a\": 1}\n\n[1]\n{\"a\": \n{\"a\": \"x\"}\n";
        assert_eq!(infer(data.as_bytes(), 10, false).unwrap_err(), "line 3 is not a JSON object");
        let e = infer("{\"a\": 1}\n{\"a\": \n".as_bytes(), 10, false).unwrap_err();
        assert!(e.starts_with("line 2 is not valid JSON: "), "{e}");
        let s = infer(data.as_bytes(), 10, true).unwrap();
        assert_eq!(types(&s), [("a".into(), DataType::Utf8, false)]);
        // Skipped lines count towards the sample.
        let s = infer(data.as_bytes(), 3, true).unwrap();
        assert_eq!(types(&s), [("a".into(), DataType::Int64, false)]);
    }
}
