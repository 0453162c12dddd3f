//! What a simulation runs: the job's steps, and the input's splits, as
//! a run would list them, or planned from a generated input's size.

use std::path::Path;

use fanout_datasets::Dataset;
use fanout_datasets::generator::Amount;
use fanout_jobs::{InputSource, Plan};

use super::model::Calibration;
use crate::error::EngineError;
use crate::step::Step;

/// The job's steps, in order: a map per stage, a combine and a reduce per
/// keyed stage.
pub(super) fn steps_of(plan: &Plan) -> Vec<Step> {
    let mut steps = Vec::new();
    for (i, s) in plan.stages.iter().enumerate() {
        if s.key.is_some() {
            steps.extend([Step::combine(i), Step::reduce(i)]);
        } else {
            steps.push(Step::map(i));
        }
    }
    steps
}

/// A phase's tasks: (id, bytes, records), listed lazily.
pub(super) type Tasks<'a> = Box<dyn Iterator<Item = Result<(u64, u64, u64), EngineError>> + 'a>;

/// The input's splits: listed as a run lists them when the input is
/// there (a generated input already in the cache included); for a
/// generated input that is not, even splits of `chunk_size` (never
/// generated: `--set input.generate.size=1TiB` costs nothing).
pub(super) fn splits<'a>(plan: &'a Plan, cal: &'a Calibration) -> Result<Tasks<'a>, EngineError> {
    let per_byte = cal.records_per_byte;
    let paths = match &plan.input.source {
        InputSource::Paths(p) => Some(p.clone()),
        InputSource::Generate(g) => {
            let cached = Path::new(".fanout/cache").join(fanout_jobs::generated_name(g));
            cached.is_file().then(|| vec![cached.display().to_string()])
        }
    };
    if let Some(paths) = paths {
        let ds = Dataset::open(paths, plan.input.options.clone()).map_err(EngineError::Input)?;
        let splits: Vec<(u64, u64)> = ds
            .splits()
            .map(|s| s.map(|s| (s.index, s.bytes())))
            .collect::<Result<_, _>>()
            .map_err(EngineError::Input)?;
        return Ok(Box::new(splits.into_iter().map(move |(i, b)| Ok((i, b, (b as f64 * per_byte).round() as u64)))));
    }
    let InputSource::Generate(g) = &plan.input.source else { unreachable!("paths are listed above") };
    let total = match g.amount {
        Amount::Bytes(b) => b,
        Amount::Rows(r) => (r as f64 / per_byte.max(1e-12)) as u64,
    };
    let chunk = plan.input.options.chunk_size.max(1);
    let n = total.div_ceil(chunk);
    Ok(Box::new((0..n).map(move |i| {
        let b = if i + 1 == n { total - chunk * (n - 1) } else { chunk };
        Ok((i, b, (b as f64 * per_byte).round() as u64))
    })))
}
