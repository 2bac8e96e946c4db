//! The storefront simulator: the Accounts, Orders and Fulfillment applications played against
//! MongoDB, each writing only its own collection in the stored shapes of `docs/domain.md`, and a
//! model of the final state every collection must reach once the connector and the projectors
//! have carried the changes across.
//!
//! - [`data`]: seeded plans, every write of one customer's story decided up front (pure).
//! - [`model`]: the writes applied to a model, and the expected final state derived from it by
//!   the domain's projection rules (pure; JSON-serialisable as [`ExpectedState`]).
//! - [`compare`]: document comparison, strict on structure, numbers by value.
//! - [`apps`]: the three applications' writes and waits against MongoDB.
//! - [`run`]: [`Simulator`], which runs a scenario or a load, with [`Progress`] counters.
//! - [`verify`]: the databases compared with an expected state, once or until they agree.
//! - [`config`]: where MongoDB and the three collections are (the connector's defaults).
//! - [`scrape`] and [`report`]: the demo's report, from the connector's and the projectors'
//!   `/metrics` before and after a run, and the verification.
//!
//! A caller runs a scenario with [`Simulator::connect`], [`Simulator::run_scenario`] (reading
//! [`Simulator::progress`] meanwhile), then [`verify::verify_until`] with the returned
//! [`ExpectedState`].

#![cfg_attr(not(test), warn(clippy::unwrap_used))] // product code says why it cannot fail

pub mod apps;
pub mod compare;
pub mod config;
pub mod data;
pub mod model;
pub mod progress;
pub mod report;
pub mod run;
pub mod scrape;
pub mod verify;

use std::time::Duration;

pub use compare::Difference;
pub use config::SimConfig;
pub use model::{Counts, ExpectedState, Model, Write};
pub use progress::{Flow, Progress, ProgressSnapshot};
pub use run::{LoadSpec, ScenarioSpec, Simulator};
pub use verify::{Report, VerifyOptions};

/// Why a simulation or a verification failed.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// MongoDB cannot be reached, or the URI is wrong.
    #[error(transparent)]
    Connect(#[from] storefront_plumbing::mongo::MongoConnectError),
    /// A read or write failed.
    #[error("{what}")]
    Mongo {
        /// What was being done.
        what: String,
        /// The driver's error.
        #[source]
        source: mongodb::error::Error,
    },
    /// A projection the applications wait for did not appear in time (the connector or the
    /// projectors are not running, or are behind).
    #[error("timed out after {waited:?} waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long.
        waited: Duration,
    },
    /// A write did not do what the application relies on (no document matched).
    #[error("{0}")]
    Unexpected(String),
    /// The simulator produced writes its model cannot follow (a bug of the simulator).
    #[error(transparent)]
    Model(#[from] model::ModelError),
    /// The expected-state file cannot be read or written.
    #[error("expected state: {0}")]
    Expected(String),
    /// The run was cancelled; every write done so far is in the model.
    #[error("the run was cancelled")]
    Cancelled,
}

impl SimError {
    pub(crate) fn mongo(what: impl Into<String>) -> impl FnOnce(mongodb::error::Error) -> Self {
        let what = what.into();
        move |source| SimError::Mongo { what, source }
    }
}
