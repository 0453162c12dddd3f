//! A run's topology: where each phase's tasks come from and where their
//! outputs go — per keyed stage, its shuffle on this machine or through
//! object storage (`[storage] scratch`, when its function runs
//! elsewhere), and the gather that stages the output.

use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

use fanout_jobs::Plan;

use super::{RunOptions, Writer};
use crate::compile::{Compiled, CompiledStage, Sink, Tasks};
use crate::error::EngineError;
use crate::gather::Gather;
use crate::inputs::Inputs;
use crate::run_dir::RunDir;
use crate::scratch::{Scratch, ScratchPartitions};
use crate::shuffle::Shuffle;
use crate::sink::{GatherSink, TaskSink};
use crate::source::{Partitions, Splits, TaskSource};
use crate::step::{Step, StepKind};

/// The shuffles and the gather of a run.
pub(super) struct Topology<'a> {
    compiled: &'a Compiled,
    /// Per phase: its remote map step that writes the next keyed stage's
    /// shuffle to object storage itself (the step before that stage's
    /// pass-through combine, which ends the phase).
    writing: Vec<Option<Step>>,
    /// Per stage: its shuffle on this machine, when keyed.
    pub(super) shuffles: Vec<Option<Shuffle<'a>>>,
    /// Per stage: its shuffle through object storage, when keyed and its
    /// function runs elsewhere with a scratch prefix.
    pub(super) scratches: Vec<Option<Scratch>>,
    pub(super) gather: GatherSink,
}

impl<'a> Topology<'a> {
    /// The topology of `compiled`'s run in `dir`, its output staged at
    /// `staged`; local shuffles count their memory in `used`.
    pub(super) fn build(
        compiled: &'a Compiled,
        plan: &Plan,
        dir: &RunDir,
        staged: &Path,
        opts: &RunOptions,
        used: &'a AtomicU64,
    ) -> Result<Topology<'a>, EngineError> {
        let scratch_of = |s: &CompiledStage| {
            let prefix = plan.storage.scratch().filter(|_| s.function.reads_shuffle())?;
            Some(format!("{prefix}{}/{}/", dir.id, s.name))
        };
        let writing: Vec<Option<Step>> = (compiled.phases.iter())
            .map(|p| match (p.sink, &p.steps[..]) {
                (Sink::Shuffle(k), [.., map, combine])
                    if *combine == Step::combine(k)
                        && map.kind == StepKind::Map
                        && scratch_of(&compiled.stages[k]).is_some()
                        && compiled.stages[map.stage].function.writes_shuffle() =>
                {
                    Some(*map)
                }
                _ => None,
            })
            .collect();
        let (mut shuffles, mut scratches) = (Vec::new(), Vec::new());
        for (k, s) in compiled.stages.iter().enumerate() {
            let schema = s.function.output_schema();
            let (local, scratch) = match (&s.key, scratch_of(s)) {
                (None, _) => (None, None),
                (Some(key), Some(prefix)) => {
                    let pieces_in =
                        (compiled.phases.iter().zip(&writing)).any(|(p, w)| p.sink == Sink::Shuffle(k) && w.is_some());
                    let storage = plan.storage.clone();
                    (None, Some(Scratch::new(schema, key.clone(), s.partitions, storage, prefix, pieces_in)?))
                }
                (Some(key), None) => {
                    let spill = dir.path.join("shuffle").join(&s.name);
                    let memory = opts.shuffle_memory;
                    (Some(Shuffle::new(schema, key.clone(), s.partitions, memory, used, spill)?), None)
                }
            };
            shuffles.push(local);
            scratches.push(scratch);
        }
        let output = compiled.output.clone();
        let sort = compiled.sort.clone();
        let gather = Gather::new(output.clone(), plan.output.format, staged.to_path_buf(), sort, plan.output.limit)?;
        let gather = GatherSink { gather: Mutex::new(Some(gather)), schema: output };
        Ok(Topology { compiled, writing, shuffles, scratches, gather })
    }

    /// Per phase: where its tasks come from (the input's splits, listed
    /// in `inputs` when kept, or a shuffle's partitions).
    pub(super) fn sources<'t>(&'t self, inputs: Option<&'t Inputs>) -> Vec<Box<dyn TaskSource + 't>> {
        let dataset = &self.compiled.dataset;
        (self.compiled.phases.iter())
            .map(|p| match p.tasks {
                Tasks::Splits => Box::new(Splits { dataset, inputs }) as Box<dyn TaskSource>,
                Tasks::Partitions(stage) => match (&self.shuffles[stage], &self.scratches[stage]) {
                    (_, Some(scratch)) => Box::new(ScratchPartitions { scratch }) as Box<dyn TaskSource>,
                    (Some(shuffle), None) => Box::new(Partitions { shuffle }),
                    (None, None) => unreachable!("a keyed stage has a shuffle"),
                },
            })
            .collect()
    }

    /// Per phase: where its tasks' outputs go.
    pub(super) fn sinks(&self) -> Vec<&dyn TaskSink> {
        (self.compiled.phases.iter())
            .map(|p| match p.sink {
                Sink::Gather => &self.gather as &dyn TaskSink,
                Sink::Shuffle(stage) => match (&self.shuffles[stage], &self.scratches[stage]) {
                    (_, Some(scratch)) => scratch as &dyn TaskSink,
                    (Some(shuffle), None) => shuffle,
                    (None, None) => unreachable!("a keyed stage has a shuffle"),
                },
            })
            .collect()
    }

    /// Per phase: its remote map step that writes the shuffle itself.
    pub(super) fn writers(&self) -> Vec<Option<Writer<'_>>> {
        (self.compiled.phases.iter().zip(&self.writing))
            .map(|(p, w)| {
                let Sink::Shuffle(k) = p.sink else { return None };
                Some(Writer { step: (*w)?, scratch: self.scratches[k].as_ref()? })
            })
            .collect()
    }
}
