//! Tumbling windows over event time: each record's time read from its
//! field (or its arrival), the watermark (the newest time seen, less the
//! allowed lateness), which records come too late, and the keyed partial
//! aggregates each open window holds until the watermark passes its end.

use std::collections::{BTreeMap, BTreeSet};

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float32Type, Float64Type, Int32Type, Int64Type, TimestampMicrosecondType, TimestampMillisecondType,
    TimestampNanosecondType, TimestampSecondType, UInt32Type, UInt64Type,
};
use arrow_array::{Array, ArrayRef, RecordBatch, StringArray, UInt32Array};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};

/// Epoch values at or above this are milliseconds, below it seconds
/// (10^11 seconds is the year 5138; 10^11 milliseconds is 1973).
const MILLIS_FROM: f64 = 1e11;

/// A record whose event time cannot be read: its row in the batch (from
/// 0), and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TimeError {
    pub(crate) row: Option<usize>,
    pub(crate) message: String,
}

/// The event times of `batch`'s rows, in epoch milliseconds, read from
/// its column `field`: RFC 3339 text, epoch seconds or milliseconds
/// (integers or floats, told apart by size; as numbers or as text), or an
/// Arrow timestamp. A row without a time is an error naming it.
pub(crate) fn event_times(batch: &RecordBatch, field: &str) -> Result<Vec<i64>, TimeError> {
    let at = |row: usize, message: String| TimeError { row: Some(row), message };
    let column = batch.column_by_name(field).ok_or_else(|| TimeError {
        row: None,
        message: format!("window.time `{field}` is not a column of what the keyed stage reads"),
    })?;
    let missing = |row: usize| at(row, format!("a record has no event time in `{field}`"));
    let epoch = |v: f64| if v.abs() >= MILLIS_FROM { v.round() as i64 } else { (v * 1000.0).round() as i64 };
    let mut out = Vec::with_capacity(column.len());
    for row in 0..column.len() {
        if column.is_null(row) {
            return Err(missing(row));
        }
        let ms = match column.data_type() {
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
                let text = match column.data_type() {
                    DataType::Utf8 => column.as_string::<i32>().value(row),
                    DataType::LargeUtf8 => column.as_string::<i64>().value(row),
                    _ => column.as_string_view().value(row),
                };
                // Epoch seconds or milliseconds written as text (a csv
                // field) count as the numbers they are.
                match text.trim().parse::<f64>() {
                    Ok(v) if v.is_finite() => epoch(v),
                    _ => {
                        let nanos = arrow_cast::parse::string_to_timestamp_nanos(text.trim()).map_err(|_| {
                            at(
                                row,
                                format!(
                                    "`{field}` = {text:?} is not a time (RFC 3339, e.g. 2026-12-07T10:00:00Z, or epoch seconds or milliseconds)"
                                ),
                            )
                        })?;
                        nanos.div_euclid(1_000_000)
                    }
                }
            }
            DataType::Int64 => epoch(column.as_primitive::<Int64Type>().value(row) as f64),
            DataType::Int32 => epoch(column.as_primitive::<Int32Type>().value(row) as f64),
            DataType::UInt64 => epoch(column.as_primitive::<UInt64Type>().value(row) as f64),
            DataType::UInt32 => epoch(column.as_primitive::<UInt32Type>().value(row) as f64),
            DataType::Float64 => epoch(column.as_primitive::<Float64Type>().value(row)),
            DataType::Float32 => epoch(column.as_primitive::<Float32Type>().value(row) as f64),
            DataType::Timestamp(unit, _) => match unit {
                TimeUnit::Second => column.as_primitive::<TimestampSecondType>().value(row) * 1000,
                TimeUnit::Millisecond => column.as_primitive::<TimestampMillisecondType>().value(row),
                TimeUnit::Microsecond => column.as_primitive::<TimestampMicrosecondType>().value(row).div_euclid(1000),
                TimeUnit::Nanosecond => {
                    column.as_primitive::<TimestampNanosecondType>().value(row).div_euclid(1_000_000)
                }
            },
            other => {
                return Err(TimeError {
                    row: None,
                    message: format!(
                        "window.time `{field}` is {other}; an event time is RFC 3339 text, epoch seconds or milliseconds, or a timestamp"
                    ),
                });
            }
        };
        out.push(ms);
    }
    Ok(out)
}

/// Whether a column of `ty` can hold event times.
pub(crate) fn is_time_type(ty: &DataType) -> bool {
    matches!(
        ty,
        DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Utf8View
            | DataType::Int64
            | DataType::Int32
            | DataType::UInt64
            | DataType::UInt32
            | DataType::Float64
            | DataType::Float32
            | DataType::Timestamp(..)
    )
}

/// The start of the last window of those starting every `size_ms` that
/// holds `t`: the tumbling window of `size_ms` that holds it.
pub(crate) fn window_start(t: i64, size_ms: i64) -> i64 {
    t.div_euclid(size_ms) * size_ms
}

/// Where each row of a batch goes: the window it counts in, or late.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Assigned {
    /// Per window start: the rows (indices into the batch) it takes.
    pub(crate) windows: BTreeMap<i64, Vec<u32>>,
    /// Rows whose window had closed (its end at or before the watermark
    /// when they came).
    pub(crate) late: Vec<u32>,
}

/// The watermark's state: the newest event time seen.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Clock {
    /// The newest event time seen, epoch ms.
    pub(crate) newest: Option<i64>,
    /// The newest event time seen in each source partition (a Kinesis
    /// shard), for a source that has them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) partitions: BTreeMap<String, i64>,
    /// The watermark reached: it never moves back, so that no window is
    /// emitted twice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) mark: Option<i64>,
}

impl Clock {
    /// The watermark: the newest time seen less `lateness_ms` — for a
    /// source with partitions (`known`: those it reads now; and those seen
    /// and not yet ended), the oldest of their newest times, once each has
    /// been seen — and never less than it was.
    pub(crate) fn watermark(&self, lateness_ms: i64, known: &BTreeSet<String>) -> Option<i64> {
        let now = if known.is_empty() && self.partitions.is_empty() {
            self.newest
        } else {
            // A partition the source reads and has not shown a record yet
            // holds the watermark back, as one seen and not yet ended does.
            let waiting = known.iter().chain(self.partitions.keys());
            waiting.map(|p| self.partitions.get(p).copied()).min().flatten()
        };
        now.map(|n| n - lateness_ms).max(self.mark)
    }

    /// Assigns `times` (in the order the records came) to windows of
    /// `size_ms`, one starting every `every_ms` (tumbling windows: every
    /// `size_ms`), advancing the watermark record by record: a record
    /// goes into each of its windows still open, and is late when every
    /// one has ended at or before the watermark of the records before it,
    /// so the result depends on the records' order alone, not on how they
    /// were batched. The records are all from `partition`, where the
    /// source has partitions (`known`).
    pub(crate) fn assign(
        &mut self,
        times: &[i64],
        partition: Option<&str>,
        known: &BTreeSet<String>,
        (size_ms, every_ms): (i64, i64),
        lateness_ms: i64,
    ) -> Assigned {
        let mut out = Assigned::default();
        for (row, &t) in times.iter().enumerate() {
            let mut start = window_start(t, every_ms);
            let mut placed = false;
            while start + size_ms > t {
                if self.mark.is_none_or(|w| start + size_ms > w) {
                    out.windows.entry(start).or_default().push(row as u32);
                    placed = true;
                }
                start -= every_ms;
            }
            if !placed {
                out.late.push(row as u32);
            }
            self.advance(t, partition, known, lateness_ms);
        }
        out
    }

    /// Takes in a record of event time `t` from `partition`: the newest
    /// times and the watermark move on.
    pub(crate) fn advance(&mut self, t: i64, partition: Option<&str>, known: &BTreeSet<String>, lateness_ms: i64) {
        self.newest = Some(self.newest.map_or(t, |n| n.max(t)));
        if let Some(p) = partition {
            let newest = self.partitions.entry(p.to_string()).or_insert(t);
            *newest = (*newest).max(t);
        }
        self.mark = self.watermark(lateness_ms, known);
    }
}

/// The rows `rows` of `batch`.
pub(crate) fn take(batch: &RecordBatch, rows: &[u32]) -> Result<RecordBatch, arrow_schema::ArrowError> {
    if rows.len() == batch.num_rows() {
        return Ok(batch.clone());
    }
    let indices = UInt32Array::from(rows.to_vec());
    let columns = (batch.columns().iter())
        .map(|c| arrow_select::take::take(c, &indices, None))
        .collect::<Result<Vec<ArrayRef>, _>>()?;
    RecordBatch::try_new(batch.schema(), columns)
}

/// An epoch-ms time as RFC 3339 (`2026-12-07T10:00:00Z`, with
/// milliseconds when it has some).
pub(crate) fn rfc3339(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    match ms % 1000 {
        0 => humantime::format_rfc3339_seconds(t).to_string(),
        _ => humantime::format_rfc3339_millis(t).to_string(),
    }
}

/// The schema of a window's output: the reduce's, then `window_start`
/// and `window_end`.
pub(crate) fn windowed_schema(reduced: &Schema) -> SchemaRef {
    let mut fields: Vec<Field> = reduced.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new("window_start", DataType::Utf8, false));
    fields.push(Field::new("window_end", DataType::Utf8, false));
    std::sync::Arc::new(Schema::new(fields))
}

/// `batch` with the window's bounds as two more columns.
pub(crate) fn with_window(
    batch: &RecordBatch,
    schema: &SchemaRef,
    start: i64,
    size_ms: i64,
) -> Result<RecordBatch, arrow_schema::ArrowError> {
    let n = batch.num_rows();
    let mut columns = batch.columns().to_vec();
    columns.push(std::sync::Arc::new(StringArray::from(vec![rfc3339(start); n])));
    columns.push(std::sync::Arc::new(StringArray::from(vec![rfc3339(start + size_ms); n])));
    RecordBatch::try_new(schema.clone(), columns)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{Float64Array, Int64Array};

    use super::*;

    fn batch(column: ArrayRef) -> RecordBatch {
        RecordBatch::try_from_iter([("ts", column)]).unwrap()
    }

    #[test]
    fn event_times_read_text_seconds_milliseconds_and_floats() {
        let text = batch(Arc::new(StringArray::from(vec![
            "2026-12-07T10:00:01Z",
            "2026-12-07T11:00:00.250+01:00",
            "1796637601",
            " 1796637601500",
        ])));
        assert_eq!(
            event_times(&text, "ts").unwrap(),
            [1_796_637_601_000, 1_796_637_600_250, 1_796_637_601_000, 1_796_637_601_500]
        );
        let ints = batch(Arc::new(Int64Array::from(vec![1_796_637_601, 1_796_637_601_500])));
        assert_eq!(event_times(&ints, "ts").unwrap(), [1_796_637_601_000, 1_796_637_601_500]);
        let floats = batch(Arc::new(Float64Array::from(vec![1.5])));
        assert_eq!(event_times(&floats, "ts").unwrap(), [1500]);
        let bad = batch(Arc::new(StringArray::from(vec!["soon"])));
        let e = event_times(&bad, "ts").unwrap_err();
        assert!(e.message.starts_with("`ts` = \"soon\" is not a time") && e.row == Some(0), "{e:?}");
        let none = batch(Arc::new(Int64Array::from(vec![Some(1), None])));
        let e = event_times(&none, "ts").unwrap_err();
        assert_eq!((e.row, e.message.as_str()), (Some(1), "a record has no event time in `ts`"));
        assert!(event_times(&none, "t").unwrap_err().message.contains("`t` is not a column"));
    }

    #[test]
    fn lateness_depends_on_record_order_not_batching() {
        let times = [1000, 12_000, 9_000, 4_000, 21_000, 14_000, 3_000];
        let mut whole = Clock::default();
        let all = whole.assign(&times, None, &BTreeSet::new(), (10_000, 10_000), 5_000);
        // At 9 s the watermark is 7 s (12 - 5): window [0, 10) is open.
        // At 4 s it still is. At 14 s the watermark is 16 s (21 - 5):
        // [10, 20) is open; at 3 s, [0, 10) has closed.
        assert_eq!(all.late, [6]);
        assert_eq!(all.windows[&0], [0, 2, 3]);
        assert_eq!(all.windows[&10_000], [1, 5]);
        assert_eq!(all.windows[&20_000], [4]);
        let mut split = Clock::default();
        let (a, b) = (
            split.assign(&times[..3], None, &BTreeSet::new(), (10_000, 10_000), 5_000),
            split.assign(&times[3..], None, &BTreeSet::new(), (10_000, 10_000), 5_000),
        );
        assert_eq!(a.late.len() + b.late.len(), 1);
        assert_eq!(b.late, [3]);
        assert_eq!(split, whole);
        assert_eq!(window_start(-1, 10_000), -10_000);
    }

    #[test]
    fn a_partitioned_watermark_waits_for_each_partition_and_never_moves_back() {
        let known: BTreeSet<String> = ["s0", "s1"].into_iter().map(String::from).collect();
        let mut clock = Clock::default();
        // Shard s0 runs ahead: until s1 is seen, there is no watermark.
        let a = clock.assign(&[25_000, 31_000], Some("s0"), &known, (10_000, 10_000), 0);
        assert_eq!(clock.mark, None);
        assert!(a.late.is_empty());
        // s1's older records are not late; the watermark is s1's.
        let b = clock.assign(&[3_000, 12_000], Some("s1"), &known, (10_000, 10_000), 0);
        assert!(b.late.is_empty());
        assert_eq!(clock.mark, Some(12_000));
        // A record of a window the watermark passed is late, whichever
        // shard it is from.
        let c = clock.assign(&[9_000], Some("s0"), &known, (10_000, 10_000), 0);
        assert_eq!(c.late, [0]);
        // A new shard, not seen yet, does not move the watermark back.
        let more: BTreeSet<String> = ["s0", "s1", "s2"].into_iter().map(String::from).collect();
        clock.assign(&[13_000], Some("s1"), &more, (10_000, 10_000), 0);
        assert_eq!(clock.mark, Some(12_000));
        // A partition read to its end (its end marker taken, and gone from
        // the source's) holds it no more.
        clock.assign(&[14_000], Some("s2"), &more, (10_000, 10_000), 0);
        assert_eq!(clock.mark, Some(13_000));
        clock.partitions.remove("s1");
        let left: BTreeSet<String> = ["s0", "s2"].into_iter().map(String::from).collect();
        clock.assign(&[15_000], Some("s2"), &left, (10_000, 10_000), 0);
        assert_eq!(clock.mark, Some(15_000));
    }

    #[test]
    fn a_sliding_window_takes_each_record_in_every_window_that_holds_it() {
        let none = BTreeSet::new();
        let mut clock = Clock::default();
        // 10 s windows, one every 5 s: 12 s is in [5, 15) and [10, 20).
        let a = clock.assign(&[12_000, 3_000], None, &none, (10_000, 5_000), 0);
        assert_eq!(a.windows[&5_000], [0]);
        assert_eq!(a.windows[&10_000], [0]);
        // 3 s is in [-5, 5) and [0, 10), both ended at the watermark (12 s).
        assert!(!a.windows.contains_key(&0) && !a.windows.contains_key(&-5_000));
        assert_eq!(a.late, [1]);
        // 9 s is in [0, 10), closed, and [5, 15), open: not late.
        let b = clock.assign(&[9_000], None, &none, (10_000, 5_000), 0);
        assert!(b.late.is_empty());
        assert_eq!(b.windows.keys().copied().collect::<Vec<_>>(), [5_000]);
    }

    #[test]
    fn window_bounds_are_rfc3339() {
        assert_eq!(rfc3339(1_796_637_600_000), "2026-12-07T10:00:00Z");
        assert_eq!(rfc3339(1_796_637_600_250), "2026-12-07T10:00:00.250Z");
    }
}
