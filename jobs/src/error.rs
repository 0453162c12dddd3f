//! Job errors: each names where in the job file (or which `--set`) it is.

use std::fmt;

/// One problem with a job, and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobError {
    /// `path:line:col`, `path` or `--set KEY=VALUE`.
    pub location: String,
    /// What is wrong, and what was expected.
    pub message: String,
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.message)
    }
}

impl std::error::Error for JobError {}

/// Every problem found in a job; never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobErrors(pub Vec<JobError>);

impl fmt::Display for JobErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for JobErrors {}

impl From<JobError> for JobErrors {
    fn from(e: JobError) -> Self {
        JobErrors(vec![e])
    }
}
