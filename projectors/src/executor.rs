//! The one place a projection's plan meets MongoDB: runs the steps of an
//! [`Execution`](crate::projection::Execution) through a [`Store`] and hands the results back
//! until every event of the batch has its outcome.
//!
//! The projections decide what to write and read and what each result means
//! ([`crate::projection`]); the store knows commands, not projections ([`crate::store`]); this
//! loop only carries one to the other. A failure of any step fails the whole execution: the
//! caller ([`crate::apply`]) retries it from the start when [`ExecuteError::is_retryable`], which
//! is harmless because every write is idempotent.

use crate::event::Event;
use crate::projection::{Outcome, Plan, Projection, ProjectionError, Step};
use crate::store::{Store, StoreError};

/// Why a batch's execution failed.
#[derive(Debug, thiserror::Error)]
pub enum ExecuteError {
    /// A read or write failed as a whole.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The projection could not settle the batch.
    #[error(transparent)]
    Projection(#[from] ProjectionError),
}

impl ExecuteError {
    /// Whether executing the batch again can succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Store(error) => error.is_retryable(),
            Self::Projection(error) => error.is_retryable(),
        }
    }
}

/// Carries out `plan` for `events` with `projection`, through `store`: one outcome per event, in
/// order.
pub async fn execute(
    store: &Store,
    projection: &Projection,
    events: &[&Event],
    plan: &Plan,
) -> Result<Vec<Outcome>, ExecuteError> {
    let mut execution = projection.execution(events, plan);
    let mut step = execution.start()?;
    loop {
        step = match step {
            Step::Write(statements) => {
                let refs: Vec<_> = statements.iter().map(AsRef::as_ref).collect();
                let report = store.write(&refs).await?;
                execution.written(&report)?
            }
            Step::Read(read) => {
                let documents = store.find(&read).await?;
                execution.read(&documents)?
            }
            Step::Done(outcomes) => return Ok(outcomes),
        };
    }
}
