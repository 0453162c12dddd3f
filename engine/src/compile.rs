//! Compiling a validated [`Plan`] against its data and the function
//! registry: the input is opened (and its schema read or inferred), every
//! stage's function is planned against the schema its input will have,
//! and the job is cut into phases at its keyed stages.

use std::path::Path;
use std::sync::Arc;

use arrow_ord::sort::SortOptions;
use arrow_schema::SchemaRef;
use fanout_datasets::Dataset;
use fanout_jobs::{FunctionRef, Plan};
use fanout_workers::external::ExternalContext;
use fanout_workers::{Planned, Registry, StageSpec};

use crate::error::{CompileError, EngineError};
use crate::step::Step;

/// One stage, compiled.
#[derive(Clone)]
pub struct CompiledStage {
    /// Its name.
    pub name: String,
    /// Its position in the job (0-based).
    pub index: usize,
    /// The planned function.
    pub function: Arc<dyn Planned>,
    /// Key columns (positions in the combiner's output) of a keyed stage.
    pub key: Option<Vec<usize>>,
    /// Partitions of a keyed stage.
    pub partitions: usize,
    /// In-flight invocations of this stage.
    pub concurrency: usize,
    /// The schema of what the stage passes on.
    pub output: SchemaRef,
    /// Whether its function runs outside the process (exec, lambda): each
    /// invocation then costs far more than a hand-off between threads.
    pub external: bool,
}

/// Where a phase's tasks come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tasks {
    /// The input's splits, one task each.
    Splits,
    /// The partitions of keyed stage `stage`'s shuffle, one task each.
    Partitions(usize),
}

/// Where a phase's tasks send their output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sink {
    /// Partitioned by key into the shuffle of this keyed stage.
    Shuffle(usize),
    /// To the output.
    Gather,
}

/// A phase: tasks (splits, or the partitions of a keyed stage) that run a
/// chain of steps each, with no barrier in between.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Phase {
    /// Its tasks.
    pub tasks: Tasks,
    /// The steps each task runs, in order.
    pub steps: Vec<Step>,
    /// Where the output goes.
    pub sink: Sink,
}

/// A job ready to run.
pub struct Compiled {
    /// The input.
    pub dataset: Dataset,
    /// The stages.
    pub stages: Vec<CompiledStage>,
    /// The phases, in order.
    pub phases: Vec<Phase>,
    /// The schema of the output.
    pub output: SchemaRef,
    /// Output sort keys: positions in `output` and directions.
    pub sort: Vec<(usize, SortOptions)>,
}

/// Opens the input and plans every stage. Generated inputs are made in
/// `cache_dir` if they are not there yet.
pub fn compile(plan: &Plan, registry: &Registry, cache_dir: &Path) -> Result<Compiled, EngineError> {
    let paths = plan.input.paths(cache_dir).map_err(EngineError::Input)?;
    let mut dataset = Dataset::open(paths, plan.input.options.clone()).map_err(EngineError::Input)?;
    let format = dataset.format();
    let (stages, schema, mut errors) = plan_stages(plan, registry, format, Some(&mut dataset))?;
    let mut sort = Vec::new();
    if errors.is_empty() {
        let by: Vec<String> =
            plan.output.sort.iter().map(|k| format!("{}{}", if k.descending { "-" } else { "" }, k.column)).collect();
        match fanout_workers::builtins::sort_keys(&schema, &by) {
            Ok(keys) => sort = keys,
            Err(e) => errors.push(CompileError::output_sort(format!("output.sort: {}", e.message))),
        }
    }
    if !errors.is_empty() {
        return Err(EngineError::Compile(errors));
    }
    let phases = phases(stages.iter().map(|s| s.key.is_some()));
    Ok(Compiled { dataset, stages, phases, output: schema, sort })
}

/// Plans every stage of `plan` over an input of `format` whose schema is
/// `dataset`'s (with a dataset: a first builtin stage that reads some
/// columns only gets it projected to them), else the plan's own (a
/// stream's declared schema, or text's). Returns the stages, the output
/// schema and what does not fit.
pub(crate) fn plan_stages(
    plan: &Plan,
    registry: &Registry,
    format: fanout_datasets::Format,
    mut dataset: Option<&mut Dataset>,
) -> Result<(Vec<CompiledStage>, SchemaRef, Vec<CompileError>), EngineError> {
    let mut schema = match &dataset {
        Some(d) => d.schema(),
        None => plan.input.options.schema.clone().unwrap_or_else(fanout_datasets::text::schema),
    };
    let mut stages = Vec::new();
    let mut errors = Vec::new();
    for (index, s) in plan.stages.iter().enumerate() {
        let planned = match &s.function {
            FunctionRef::Builtin(name) => {
                let Some(builtin) = registry.get(name) else {
                    errors.push(CompileError::stage(index, None, format!("unknown function `{name}`")));
                    continue;
                };
                builtin.plan(&StageSpec { params: &s.params, input: &schema, key: s.key.as_deref() })
            }
            FunctionRef::External(x) => {
                let Some(backend) = registry.backend(&x.kind) else {
                    errors.push(CompileError::stage(index, None, format!("unknown kind of function `{}`", x.kind)));
                    continue;
                };
                let ctx = ExternalContext {
                    stage: &s.name,
                    input: &schema,
                    input_format: (index == 0).then_some(format),
                    csv_header: plan.input.options.csv.header,
                    csv: plan.input.options.csv,
                    key: s.key.as_deref(),
                    params: &s.params,
                    payload_limit: plan.platform.payload_limit,
                    memory_limit: plan.platform.memory_limit,
                    memory_mb: plan.platform.pricing.memory_mb,
                };
                backend.plan(x, &ctx)
            }
        };
        let name = &s.name;
        let mut function = match planned {
            Ok(f) => f,
            Err(e) => {
                errors.push(CompileError::stage(index, None, e.message));
                // Later stages cannot be planned without this one's schema.
                break;
            }
        };
        // Projection pushdown: a first builtin stage that reads only some
        // columns gets the input read for those alone (planned again on
        // that schema; its output must not change).
        if index == 0
            && let Some(dataset) = dataset.as_deref_mut()
            && let FunctionRef::Builtin(name) = &s.function
            && let Some(columns) = function.input_columns()
            && let Some(projected) = dataset.project(&columns).map_err(EngineError::Input)?
            && let Some(builtin) = registry.get(name)
        {
            let input = projected.schema();
            if let Ok(f) = builtin.plan(&StageSpec { params: &s.params, input: &input, key: s.key.as_deref() })
                && f.output_schema() == function.output_schema()
                && f.reduce_schema() == function.reduce_schema()
            {
                function = f;
                *dataset = projected;
            }
        }
        let (key, output) = match &s.key {
            Some(cols) => {
                let combined = function.output_schema();
                let mut key = Vec::new();
                for c in cols {
                    match combined.index_of(c) {
                        Ok(i) => key.push(i),
                        Err(_) => errors.push(CompileError::stage(
                            index,
                            None,
                            format!("key column `{c}` is not in what {name} passes to the shuffle"),
                        )),
                    }
                }
                let reduced = function.reduce_schema().unwrap_or(combined);
                (Some(key), reduced)
            }
            None => (None, function.output_schema()),
        };
        schema = output.clone();
        stages.push(CompiledStage {
            name: s.name.clone(),
            index,
            function,
            key,
            partitions: s.partitions,
            concurrency: s.concurrency,
            output,
            external: !matches!(s.function, FunctionRef::Builtin(_)),
        });
    }
    Ok((stages, schema, errors))
}

/// Cuts a job's stages into phases at each keyed stage (`keyed[i]`:
/// whether stage `i` is keyed): a phase runs its steps back to back on a
/// slot, up to a keyed stage's combine, which ends it at the shuffle's
/// barrier; the next phase starts with that stage's reduce.
pub(crate) fn phases(keyed: impl Iterator<Item = bool>) -> Vec<Phase> {
    let mut phases = Vec::new();
    let mut current = Phase { tasks: Tasks::Splits, steps: Vec::new(), sink: Sink::Gather };
    for (i, keyed) in keyed.enumerate() {
        if keyed {
            current.steps.push(Step::combine(i));
            current.sink = Sink::Shuffle(i);
            phases.push(std::mem::replace(
                &mut current,
                Phase { tasks: Tasks::Partitions(i), steps: vec![Step::reduce(i)], sink: Sink::Gather },
            ));
        } else {
            current.steps.push(Step::map(i));
        }
    }
    phases.push(current);
    phases
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_are_cut_at_keyed_stages() {
        // [map, map, keyed, map, keyed, map]
        let keyed = [false, false, true, false, true, false];
        let phases = phases(keyed.into_iter());
        let want = vec![
            Phase {
                tasks: Tasks::Splits,
                steps: vec![Step::map(0), Step::map(1), Step::combine(2)],
                sink: Sink::Shuffle(2),
            },
            Phase {
                tasks: Tasks::Partitions(2),
                steps: vec![Step::reduce(2), Step::map(3), Step::combine(4)],
                sink: Sink::Shuffle(4),
            },
            Phase { tasks: Tasks::Partitions(4), steps: vec![Step::reduce(4), Step::map(5)], sink: Sink::Gather },
        ];
        assert_eq!(phases, want);
        // No stage: one phase that writes the splits as they are.
        assert_eq!(phases_of(&[]), vec![Phase { tasks: Tasks::Splits, steps: vec![], sink: Sink::Gather }]);
        // A keyed stage last: its reduce phase gathers.
        let two = phases_of(&[true]);
        assert_eq!(two.len(), 2);
        assert_eq!(two[1], Phase { tasks: Tasks::Partitions(0), steps: vec![Step::reduce(0)], sink: Sink::Gather });
    }

    fn phases_of(keyed: &[bool]) -> Vec<Phase> {
        phases(keyed.iter().copied())
    }
}
