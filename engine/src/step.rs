//! The steps of a task's chain: a map stage's invocation, a keyed stage's
//! map-side combine, and its reduce. A job's steps are numbered
//! (`stage * 3 + kind`), so per-step tables (statistics, containers) are
//! plain vectors.

/// What a step does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StepKind {
    /// A map stage's invocation.
    Map,
    /// A keyed stage's map-side combiner.
    Combine,
    /// A keyed stage's reduce invocation.
    Reduce,
}

impl StepKind {
    /// Every kind, in index order.
    pub const ALL: [StepKind; 3] = [StepKind::Map, StepKind::Combine, StepKind::Reduce];

    /// How records and reports name it.
    pub fn name(self) -> &'static str {
        match self {
            StepKind::Map => "map",
            StepKind::Combine => "combine",
            StepKind::Reduce => "reduce",
        }
    }

    /// The kind a name gives.
    pub fn parse(name: &str) -> Option<StepKind> {
        StepKind::ALL.into_iter().find(|k| k.name() == name)
    }
}

impl std::fmt::Display for StepKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One step of a task's chain: a stage and what it does there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Step {
    /// The stage (0-based).
    pub stage: usize,
    /// What the step does.
    pub kind: StepKind,
}

impl Step {
    /// A map stage's step.
    pub fn map(stage: usize) -> Step {
        Step { stage, kind: StepKind::Map }
    }

    /// A keyed stage's combine.
    pub fn combine(stage: usize) -> Step {
        Step { stage, kind: StepKind::Combine }
    }

    /// A keyed stage's reduce.
    pub fn reduce(stage: usize) -> Step {
        Step { stage, kind: StepKind::Reduce }
    }

    /// Its number among a job's steps.
    pub fn index(self) -> usize {
        self.stage * StepKind::ALL.len() + self.kind as usize
    }

    /// The step numbered `index`.
    pub fn from_index(index: usize) -> Step {
        Step { stage: index / StepKind::ALL.len(), kind: StepKind::ALL[index % StepKind::ALL.len()] }
    }

    /// How many step numbers a job of `stages` stages has.
    pub fn count(stages: usize) -> usize {
        stages * StepKind::ALL.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_numbered_and_named_both_ways() {
        for i in 0..Step::count(4) {
            assert_eq!(Step::from_index(i).index(), i);
        }
        assert_eq!(Step::reduce(2).index(), 8);
        assert_eq!(StepKind::parse("combine"), Some(StepKind::Combine));
        assert_eq!(StepKind::parse("shuffle"), None);
        assert_eq!(Step::map(1).kind.to_string(), "map");
    }
}
