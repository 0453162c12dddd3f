//! Task sources: where a phase's tasks come from. The first phase's tasks
//! are the input's splits, listed lazily; a keyed stage's reduce phase has
//! a task per partition of its shuffle. The coordinator takes tasks from a
//! [`TaskSource`] without knowing which (object-storage listings and
//! streams are the sources to come).

use std::sync::Arc;

use arrow_array::RecordBatch;
use fanout_datasets::{BadRecord, Dataset, OpenFiles, Split};
use fanout_workers::Piece;

use crate::error::EngineError;
use crate::inputs::Inputs;
use crate::shuffle::Shuffle;

/// A task's input.
#[derive(Clone)]
pub(crate) enum Input {
    /// A split of the input files.
    Split(Split),
    /// A partition of a shuffle, taken when its task runs.
    Partition(usize),
    /// A partition taken from its shuffle already (for a task that may get
    /// a backup, which needs the same batches).
    Taken(usize, Vec<RecordBatch>),
    /// A partition of a shuffle through object storage: its pieces, which
    /// the reduce function reads itself.
    Pieces(usize, Arc<[Piece]>),
}

impl Input {
    /// The split, if the task reads one.
    pub(crate) fn split(&self) -> Option<&Split> {
        match self {
            Input::Split(s) => Some(s),
            _ => None,
        }
    }

    /// The pieces, if the task's input is a partition in object storage.
    pub(crate) fn pieces(&self) -> Option<&[Piece]> {
        match self {
            Input::Pieces(_, p) => Some(p),
            _ => None,
        }
    }

    /// Where the task's input is, for messages: a file and byte range, or
    /// a partition.
    pub(crate) fn describe(&self) -> String {
        match self {
            Input::Split(s) => s.to_string(),
            Input::Partition(p) | Input::Taken(p, _) | Input::Pieces(p, _) => format!("partition {p}"),
        }
    }
}

/// A task's records, read.
pub(crate) struct Loaded {
    pub(crate) batches: Vec<RecordBatch>,
    /// Its size: a split's bytes on disk, else the batches' memory.
    pub(crate) bytes: u64,
    /// Records of a split that could not be read, when the job skips or
    /// rejects them.
    pub(crate) bad: Vec<BadRecord>,
}

/// Where a phase's tasks come from.
pub(crate) trait TaskSource: Sync {
    /// The tasks, in order and lazily: their ids and inputs.
    fn tasks(&self) -> Box<dyn Iterator<Item = Result<(u64, Input), EngineError>> + '_>;

    /// How many tasks there are, when known before they are listed.
    fn total(&self) -> Option<u64>;

    /// Whether tasks are small enough to travel to slots in groups
    /// (splits), rather than one by one (a partition is a whole reduce).
    fn grouped(&self) -> bool;

    /// A task taken from the journal instead of run: what its input holds
    /// is released.
    fn skip(&self, input: &Input) -> Result<(), EngineError>;

    /// The input as a backup of its task needs it: a partition is taken
    /// from the shuffle now, so that both runs get the same batches.
    fn shareable(&self, input: Input) -> Result<Input, EngineError>;

    /// Reads a task's input (`files`: the slot's open files).
    fn load(&self, input: &Input, files: &mut OpenFiles) -> Result<Loaded, EngineError>;
}

/// The input's splits.
pub(crate) struct Splits<'a> {
    pub(crate) dataset: &'a Dataset,
    /// The record of the files listed, for a resume's check.
    pub(crate) inputs: Option<&'a Inputs>,
}

impl TaskSource for Splits<'_> {
    fn tasks(&self) -> Box<dyn Iterator<Item = Result<(u64, Input), EngineError>> + '_> {
        let inputs = self.inputs;
        let splits = self.dataset.splits_noting(move |f| inputs.map_or(Ok(()), |i| i.listed(f)));
        Box::new(splits.map(|s| s.map(|s| (s.index, Input::Split(s))).map_err(EngineError::Input)))
    }

    fn total(&self) -> Option<u64> {
        None
    }

    fn grouped(&self) -> bool {
        true
    }

    fn skip(&self, _: &Input) -> Result<(), EngineError> {
        Ok(())
    }

    fn shareable(&self, input: Input) -> Result<Input, EngineError> {
        Ok(input)
    }

    fn load(&self, input: &Input, files: &mut OpenFiles) -> Result<Loaded, EngineError> {
        let split = input.split().expect("a split task");
        let (batches, bad) = self.dataset.read_salvaging(split, files).map_err(EngineError::Input)?;
        Ok(Loaded { batches, bytes: split.bytes(), bad })
    }
}

/// The partitions of a keyed stage's shuffle.
pub(crate) struct Partitions<'a, 'b> {
    pub(crate) shuffle: &'a Shuffle<'b>,
}

impl TaskSource for Partitions<'_, '_> {
    fn tasks(&self) -> Box<dyn Iterator<Item = Result<(u64, Input), EngineError>> + '_> {
        Box::new((0..self.shuffle.partitions()).map(|p| Ok((p as u64, Input::Partition(p)))))
    }

    fn total(&self) -> Option<u64> {
        Some(self.shuffle.partitions() as u64)
    }

    fn grouped(&self) -> bool {
        false
    }

    fn skip(&self, input: &Input) -> Result<(), EngineError> {
        // Its shuffle input is not needed again.
        match input {
            Input::Partition(p) => self.shuffle.take(*p).map(drop),
            _ => Ok(()),
        }
    }

    fn shareable(&self, input: Input) -> Result<Input, EngineError> {
        match input {
            Input::Partition(p) => Ok(Input::Taken(p, self.shuffle.take(p)?)),
            other => Ok(other),
        }
    }

    fn load(&self, input: &Input, _: &mut OpenFiles) -> Result<Loaded, EngineError> {
        let batches = match input {
            Input::Partition(p) => self.shuffle.take(*p)?,
            Input::Taken(_, batches) => batches.clone(),
            Input::Split(_) | Input::Pieces(..) => unreachable!("a partition task"),
        };
        let bytes = batches.iter().map(|b| b.get_array_memory_size() as u64).sum();
        Ok(Loaded { batches, bytes, bad: Vec::new() })
    }
}
