//! A column as a job file writes one (`name:type`, in an input's or an
//! external function's `schema`), and the type names it takes.

use std::str::FromStr;

use arrow_schema::{DataType, Field, TimeUnit};

/// Type names accepted in `input.schema`, besides Arrow's own spelling.
pub const TYPE_NAMES: &str = "bool, int8, int16, int32, int64, uint8, uint16, uint32, uint64, float32, float64, \
    utf8 (string), date, timestamp, json (any JSON value, kept as its text)";

/// Parses a column given as `name:type`; `json` is a JSON text column
/// ([`fanout_datasets::json_text_field`]), which holds any JSON value.
pub fn parse_column(s: &str) -> Result<Field, String> {
    let (name, ty) =
        s.split_once(':').ok_or_else(|| format!("column `{s}` must be written name:type, e.g. amount:float64"))?;
    let (name, ty) = (name.trim(), ty.trim());
    if name.is_empty() {
        return Err(format!("column `{s}` has no name"));
    }
    let dt = match ty.to_ascii_lowercase().as_str() {
        "bool" | "boolean" => DataType::Boolean,
        "int8" => DataType::Int8,
        "int16" => DataType::Int16,
        "int32" => DataType::Int32,
        "int64" | "int" | "integer" => DataType::Int64,
        "uint8" => DataType::UInt8,
        "uint16" => DataType::UInt16,
        "uint32" => DataType::UInt32,
        "uint64" => DataType::UInt64,
        "float32" | "float" => DataType::Float32,
        "float64" | "double" => DataType::Float64,
        "utf8" | "string" | "str" | "text" => DataType::Utf8,
        "date" | "date32" => DataType::Date32,
        "timestamp" => DataType::Timestamp(TimeUnit::Microsecond, None),
        "json" => return Ok(fanout_datasets::json_text_field(name)),
        _ => DataType::from_str(ty)
            .map_err(|_| format!("unknown type `{ty}` for column `{name}`, expected one of: {TYPE_NAMES}"))?,
    };
    // A zone Arrow knows: a fixed offset, or a name of the tz database.
    if let DataType::Timestamp(_, Some(zone)) = &dt
        && zone.parse::<arrow_array::timezone::Tz>().is_err()
    {
        return Err(format!(
            "column `{name}`: `{zone}` is not a time zone; write an offset such as +02:00, or a name of the tz \
             database such as Europe/Paris or UTC"
        ));
    }
    Ok(Field::new(name, dt, true))
}
