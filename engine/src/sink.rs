//! Task sinks: where a phase's tasks send their outputs — the shuffle of
//! the next keyed stage, or the gather that writes the output. A slot
//! hands a [`TaskSink`] the outputs of a task group at once.

use std::sync::Mutex;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;

use crate::error::EngineError;
use crate::gather::Gather;
use crate::shuffle::Shuffle;

/// Finished tasks' outputs: task id and batches.
pub(crate) type Outputs = Vec<(u64, Vec<RecordBatch>)>;

/// Where a phase's task outputs go. Each task is sent once.
pub(crate) trait TaskSink: Sync {
    /// The schema of what the phase's tasks send.
    fn schema(&self) -> &SchemaRef;

    /// Takes the outputs (leaving `outputs` empty).
    fn push(&self, outputs: &mut Outputs) -> Result<(), EngineError>;
}

/// A keyed stage's shuffle on this machine.
impl TaskSink for Shuffle<'_> {
    fn schema(&self) -> &SchemaRef {
        self.schema()
    }

    fn push(&self, outputs: &mut Outputs) -> Result<(), EngineError> {
        outputs.drain(..).try_for_each(|(task, out)| self.insert(task, out))
    }
}

/// The output's gather (one lock per task group).
pub(crate) struct GatherSink {
    pub(crate) gather: Mutex<Option<Gather>>,
    pub(crate) schema: SchemaRef,
}

impl GatherSink {
    /// The gather, once the run is over.
    pub(crate) fn finish(&self) -> Gather {
        self.gather.lock().expect("not poisoned").take().expect("finished once")
    }
}

impl TaskSink for GatherSink {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn push(&self, outputs: &mut Outputs) -> Result<(), EngineError> {
        let mut gather = self.gather.lock().expect("not poisoned");
        let gather = gather.as_mut().expect("open until the run ends");
        let pushed = outputs.drain(..).try_for_each(|(task, out)| gather.push(task, out));
        // A failed push leaves no outputs behind for the next group.
        outputs.clear();
        pushed
    }
}
