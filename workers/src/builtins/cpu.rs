//! Compute stand-ins: `pi` (Monte Carlo, CPU-bound), `burn` (spin) and
//! `sleep` (wait, like an I/O-bound function).

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{ArrayRef, Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema};

use crate::catalog::{FunctionInfo, Shape, p};
use crate::function::{Builtin, FunctionError, Invocation, MapInstance, PerBatch, Planned, StageSpec, per_batch};
use crate::params::{Params, column};

/// SplitMix64: a tiny, fast, well-mixed generator.
#[derive(Debug, Clone)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    /// The next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform float in [0, 1).
    #[inline]
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// Points of `samples` draws inside the quarter circle, for the row whose
/// seed value is `value`.
pub fn pi_inside(seed: u64, value: i64, samples: u64) -> u64 {
    let mut rng = SplitMix64(seed ^ (value as u64).wrapping_mul(0xD1B5_4A32_D192_ED03));
    (0..samples)
        .filter(|_| {
            let (x, y) = (rng.next_f64(), rng.next_f64());
            x * x + y * y <= 1.0
        })
        .count() as u64
}

/// The registered `pi`.
pub struct Pi;

impl Builtin for Pi {
    fn info(&self) -> &'static FunctionInfo {
        &PI
    }

    fn plan(&self, spec: &StageSpec<'_>) -> Result<Arc<dyn Planned>, FunctionError> {
        let p = Params::new("pi", self.info().params, spec.params)?;
        let name = p.string("column");
        let col = column(spec.input, &name)?;
        if !spec.input.field(col).data_type().is_integer() {
            return Err(FunctionError::permanent(format!("pi: column `{name}` is not an integer column")));
        }
        let samples = p.int("samples");
        if samples < 0 {
            return Err(FunctionError::permanent("pi: samples must be at least 0"));
        }
        let seed = p.int("seed") as u64;
        let schema = Arc::new(Schema::new(vec![
            Field::new(&name, DataType::Int64, true),
            Field::new("inside", DataType::Int64, false),
            Field::new("samples", DataType::Int64, false),
        ]));
        let out = schema.clone();
        Ok(Arc::new(PerBatch {
            schema,
            make: move || {
                let out = out.clone();
                Ok(per_batch(move |_: &Invocation<'_>, batch: &RecordBatch| {
                    let values = arrow_cast::cast(batch.column(col), &DataType::Int64)?;
                    let values = values.as_primitive::<Int64Type>();
                    let inside: Int64Array = values
                        .iter()
                        .map(|v| v.map_or(0, |v| pi_inside(seed, v, samples as u64) as i64))
                        .map(Some)
                        .collect();
                    let n = Int64Array::from_value(samples, batch.num_rows());
                    let columns: Vec<ArrayRef> = vec![Arc::new(values.clone()), Arc::new(inside), Arc::new(n)];
                    Ok(RecordBatch::try_new(out.clone(), columns)?)
                }))
            },
        }))
    }
}

/// The registered `burn` (`spin = true`) and `sleep` (`spin = false`).
pub struct Wait {
    /// Whether to busy-loop (burn) or sleep.
    pub spin: bool,
}

impl Builtin for Wait {
    fn info(&self) -> &'static FunctionInfo {
        if self.spin { &BURN } else { &SLEEP }
    }

    fn plan(&self, spec: &StageSpec<'_>) -> Result<Arc<dyn Planned>, FunctionError> {
        let info = self.info();
        let p = Params::new(info.name, info.params, spec.params)?;
        let ms = p.int("ms");
        if ms < 0 {
            return Err(FunctionError::permanent(format!("{}: ms must be at least 0", info.name)));
        }
        Ok(Arc::new(WaitPlan { schema: spec.input.clone(), spin: self.spin, time: Duration::from_millis(ms as u64) }))
    }
}

#[derive(Clone)]
struct WaitPlan {
    schema: arrow_schema::SchemaRef,
    spin: bool,
    time: Duration,
}

impl Planned for WaitPlan {
    fn output_schema(&self) -> arrow_schema::SchemaRef {
        self.schema.clone()
    }

    fn init(&self) -> Result<Box<dyn MapInstance>, FunctionError> {
        Ok(Box::new(self.clone()))
    }
}

impl MapInstance for WaitPlan {
    fn call(&mut self, inv: &Invocation<'_>, input: Vec<RecordBatch>) -> Result<Vec<RecordBatch>, FunctionError> {
        let start = Instant::now();
        // Both stop early when the invocation's deadline passes.
        while start.elapsed() < self.time && !inv.expired() {
            if self.spin {
                let mut x = 0u64;
                for _ in 0..1000 {
                    x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                }
            } else {
                std::thread::sleep((self.time - start.elapsed()).min(Duration::from_millis(10)));
            }
        }
        if inv.cancelled() {
            return Err(FunctionError::transient("cancelled"));
        }
        if inv.expired() {
            return Err(FunctionError::transient("deadline passed"));
        }
        Ok(input)
    }
}

/// `pi` in the catalog: what `fanout functions pi` says, and the
/// parameters validation checks.
pub(crate) const PI: FunctionInfo = {
    use crate::params::ParamType::*;
    FunctionInfo {
        name: "pi",
        shape: Shape::Map,
        summary: "estimate pi by Monte Carlo (CPU-bound)",
        doc: "For each input row, draws `samples` points in the unit square from a SplitMix64 generator seeded \
              from `seed` and the row's integer `column`, and counts those inside the quarter circle. Output: \
              the column, inside (int64) and samples (int64) per row; pi = 4 * sum(inside) / sum(samples). \
              Feed it a range: `generate = { kind = \"range\", rows = 1000 }` gives a column i = 0..999.",
        params: &[
            p("samples", Int, None, "points drawn per input row"),
            p("column", Str, Some("\"i\""), "an integer column that seeds each row"),
            p("seed", Int, Some("0"), "the seed"),
        ],
    }
};

/// `burn` in the catalog: what `fanout functions burn` says, and the
/// parameters validation checks.
pub(crate) const BURN: FunctionInfo = {
    use crate::params::ParamType::*;
    FunctionInfo {
        name: "burn",
        shape: Shape::Map,
        summary: "spin the CPU for a fixed time, then pass the input through",
        doc: "A CPU-bound stand-in for real work: busy-loops for `ms` milliseconds per invocation.",
        params: &[p("ms", Int, None, "milliseconds to spin")],
    }
};

/// `sleep` in the catalog: what `fanout functions sleep` says, and the
/// parameters validation checks.
pub(crate) const SLEEP: FunctionInfo = {
    use crate::params::ParamType::*;
    FunctionInfo {
        name: "sleep",
        shape: Shape::Map,
        summary: "wait a fixed time, then pass the input through",
        doc: "An I/O-bound stand-in: sleeps `ms` milliseconds per invocation without using a core.",
        params: &[p("ms", Int, None, "milliseconds to wait")],
    }
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pi_converges() {
        let inside: u64 = (0..100).map(|i| pi_inside(7, i, 10_000)).sum();
        let pi = 4.0 * inside as f64 / 1e6;
        assert!((pi - std::f64::consts::PI).abs() < 0.01, "{pi}");
        assert_eq!(pi_inside(7, 3, 1000), pi_inside(7, 3, 1000));
    }
}
