//! What a simulation runs: the job's steps, and the input's splits, as
//! a run would list them, or planned from a generated input's size.

use std::path::Path;
use std::sync::Arc;

use fanout_datasets::generator::Amount;
use fanout_datasets::{ChunkSize, Dataset};
use fanout_jobs::{InputSource, Plan};

use crate::error::EngineError;

/// A phase's tasks: (id, bytes, records), listed lazily.
pub(super) type Tasks<'a> = Box<dyn Iterator<Item = (u64, u64, u64)> + 'a>;

/// The input's splits, known before a simulation starts: listed as a run
/// lists them when the input is there (a generated input already in the
/// cache included), so that seeds and the points of a sweep share one
/// listing; for a generated input that is not, even splits of the chunk
/// size (never generated: `--set input.generate.size=1TiB` costs nothing).
#[derive(Debug, Clone)]
pub(crate) enum Listing {
    /// Each split's bytes, in task order.
    Listed(Arc<Vec<u64>>),
    /// `total` bytes in splits of the target sizes (the last one
    /// shorter).
    Even {
        /// The input's size.
        total: u64,
        /// The splits' target sizes.
        chunks: ChunkSize,
    },
}

impl Listing {
    /// Lists `plan`'s input (an `Amount::Rows` input is sized by the
    /// calibration's bytes per record).
    pub(crate) fn of(plan: &Plan, records_per_byte: f64) -> Result<Listing, EngineError> {
        let paths = match &plan.input.source {
            InputSource::Paths(p) => Some(p.clone()),
            InputSource::Generate(g) => {
                let cached = Path::new(".fanout/cache").join(fanout_jobs::generated_name(g));
                cached.is_file().then(|| vec![cached.display().to_string()])
            }
            InputSource::Stream(_) => {
                return Err(EngineError::Stream(
                    "fanout simulate models batch jobs; a stream input has no files to size (simulating streams is not supported yet)"
                        .into(),
                ));
            }
        };
        if let Some(paths) = paths {
            let ds = Dataset::open(paths, plan.input.options.clone()).map_err(EngineError::Input)?;
            let bytes: Vec<u64> =
                ds.splits().map(|s| s.map(|s| s.bytes())).collect::<Result<_, _>>().map_err(EngineError::Input)?;
            return Ok(Listing::Listed(Arc::new(bytes)));
        }
        let InputSource::Generate(g) = &plan.input.source else { unreachable!("paths are listed above") };
        let total = match g.amount {
            Amount::Bytes(b) => b,
            Amount::Rows(r) => (r as f64 / records_per_byte.max(1e-12)) as u64,
        };
        Ok(Listing::Even { total, chunks: plan.input.options.chunks() })
    }

    /// A key that is the same for two plans whose inputs list the same.
    pub(crate) fn key(plan: &Plan) -> String {
        format!("{:?}{:?}", plan.input.source, plan.input.options)
    }

    /// The splits as tasks: (id, bytes, records).
    pub(super) fn tasks(&self, records_per_byte: f64) -> Tasks<'_> {
        let records = move |b: u64| (b as f64 * records_per_byte).round() as u64;
        match self {
            Listing::Listed(bytes) => Box::new(bytes.iter().enumerate().map(move |(i, &b)| (i as u64, b, records(b)))),
            &Listing::Even { total, chunks } => {
                let mut left = total;
                Box::new((0..).map_while(move |i| {
                    let b = chunks.nth(i).min(left);
                    left -= b;
                    (b > 0).then(|| (i, b, records(b)))
                }))
            }
        }
    }
}
