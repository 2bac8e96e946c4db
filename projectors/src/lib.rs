//! projectors: consume the storefront's domain events and maintain the denormalized copies in the
//! other services' collections.
//!
//! ```text
//!  accounts.customer.change ─┐   runner / rebuild                                    ┌─> customer.orders
//!  fulfillment.order.change ─┼─> batch_loop ─> apply ─> projection ─> executor ─> store ─┤
//!  orders.order.fulfill ─────┘   (batches,     (decode,  (pure: plan,  (runs the   (commands) └─> fulfillment.requests
//!                                 offsets,      retry)    interpret)    steps)
//!                                 commits)        └──────> dead letters (poison, refused writes)
//! ```
//!
//! - [`config`]: the configuration and the list of projectors.
//! - [`event`]: Kafka records to typed events, or the reason they are poison (pure).
//! - [`projection`]: events to planned writes and reads, and what their results mean (pure),
//!   one module per read model.
//! - [`executor`]: runs a projection's steps through the store; the only MongoDB IO of a batch.
//! - [`store`]: unordered multi-statement `update` commands with per-statement outcomes, reads.
//! - [`dead_letter`]: the dead-letter producer (original bytes, reason and origin as headers).
//! - [`apply`]: one batch: decode, plan, execute, dead-letter, retry transient failures.
//! - [`consumer`]: a projector's Kafka consumer and its callbacks (rebalances, lag).
//! - [`fetch_watch`]: which assigned partitions have records the consumer does not receive (pure).
//! - [`batch_loop`]: read the next batch while the current one is written, store offsets,
//!   commit; shared by the live runner and the rebuild.
//! - [`runner`]: the live consumer group of one projector.
//! - [`rebuild`](mod@rebuild): `projectors rebuild`: replay the retained topics into the projection.
//! - [`redrive`]: `projectors dead-letters redrive`: send chosen dead letters back for processing.
//! - [`topics`]: the topics and the retention a rebuild needs; creating the missing ones.
//! - [`metrics`]: the projectors' metrics.
//! - [`start`] / [`run`]: the process entry point, which takes its shutdown signal as a future so
//!   tests can run projectors in-process.
//!
//! # Guarantees
//! - **No loss.** An offset is committed only after the MongoDB write of its record succeeded or
//!   the record's dead letter was acknowledged ([`batch_loop`], [`runner`]).
//! - **Duplicates, replays and reordering are harmless.** Every write is idempotent and guarded
//!   by the event's source position ([`projection`]).
//! - **Never stuck, never silent.** A record that cannot be applied goes to the dead-letter topic
//!   with its reason and the rest flows on; transient failures are retried with capped backoff
//!   and jitter while `/health` names the failing component ([`apply`]).
//! - **No loops.** The projections write only fields no event of their own kind is derived from
//!   ([`projection::orders`], [`projection::fulfillment`]).
//! - **Replayable.** [`rebuild()`] re-derives a projection from the retained topics.

#![cfg_attr(not(test), warn(clippy::unwrap_used))] // product code says why it cannot fail

pub mod apply;
pub mod batch_loop;
pub mod config;
pub mod consumer;
pub mod dead_letter;
pub mod event;
pub mod executor;
pub mod fetch_watch;
pub mod metrics;
pub mod projection;
pub mod rebuild;
pub mod redrive;
pub mod runner;
pub mod store;
pub mod topics;

use std::future::Future;

use storefront_plumbing::errors;
use storefront_plumbing::kafka::KafkaSetupError;
use storefront_plumbing::mongo::MongoConnectError;
use storefront_plumbing::process::{self, ProcessContext, RunningProcess};
use storefront_plumbing::telemetry::{ComponentState, TelemetryError};

use crate::apply::Applier;
use crate::config::{Projector, ProjectorsConfig};
use crate::runner::RunnerError;

pub use crate::config::APP_NAME;
pub use crate::rebuild::{RebuildError, RebuildReport, rebuild};

/// Why the projectors stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ProjectorError {
    /// Logging, metrics or the HTTP endpoint could not start. Not retryable.
    #[error(transparent)]
    Telemetry(#[from] TelemetryError),
    /// MongoDB could not be used.
    #[error(transparent)]
    Mongo(#[from] MongoConnectError),
    /// Kafka could not be used.
    #[error(transparent)]
    Kafka(#[from] KafkaSetupError),
    /// A projector stopped with an error.
    #[error(transparent)]
    Runner(#[from] RunnerError),
}

/// Projectors running in the background.
pub type RunningProjectors = RunningProcess<ProjectorError>;

/// Starts `projectors`; they run until `shutdown` resolves or one fails.
pub async fn start(
    config: ProjectorsConfig,
    projectors: Vec<Projector>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<RunningProjectors, ProjectorError> {
    let (log, http) = (config.log.clone(), config.http.clone());
    Ok(process::spawn(&log, &http, shutdown, |context| {
        work(config, projectors, context)
    })
    .await?)
}

/// Runs `projectors` until `shutdown` resolves or one fails.
pub async fn run(
    config: ProjectorsConfig,
    projectors: Vec<Projector>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ProjectorError> {
    start(config, projectors, shutdown).await?.wait().await
}

/// Creates the missing topics; returns the existing ones whose settings do not keep what a
/// rebuild needs.
pub async fn setup_topics(
    config: &ProjectorsConfig,
) -> Result<Vec<topics::Mismatch>, KafkaSetupError> {
    topics::ensure(config, APP_NAME).await
}

async fn work(
    config: ProjectorsConfig,
    projectors: Vec<Projector>,
    context: ProcessContext,
) -> Result<(), ProjectorError> {
    let names: Vec<&str> = projectors.iter().map(|p| p.name()).collect();
    tracing::info!(projectors = ?names, "projectors starting");
    for projector in &projectors {
        context
            .health
            .set(&consumer::component(*projector), ComponentState::Starting);
    }
    let Some(client) = context.connect_mongo(&config.mongo, APP_NAME).await? else {
        return Ok(());
    };
    if context
        .await_kafka(&config.kafka, APP_NAME)
        .await?
        .is_none()
    {
        return Ok(());
    }
    for mismatch in setup_topics(&config).await? {
        tracing::warn!(%mismatch, "topic settings do not keep everything a rebuild needs");
    }
    let mut tasks = tokio::task::JoinSet::new();
    for projector in projectors {
        let applier = Applier::build(
            &config,
            projector,
            &client,
            context.health.clone(),
            context.shutdown.clone(),
        )?;
        if projector == Projector::Orders {
            // Status events find their order by guid: without this index every one scans the
            // collection on MongoDB. Creating an index that exists is a no-op.
            if let Err(error) = applier.store().ensure_index("orders.guid").await {
                let error = errors::chain(&error);
                tracing::warn!(%error, target = %config.targets.orders, "index on orders.guid not created; status updates scan the collection");
            }
        }
        let config = config.clone();
        let health = context.health.clone();
        let shutdown = context.shutdown.clone();
        tasks.spawn(async move {
            runner::run(&config, projector, APP_NAME, applier, health, shutdown).await
        });
    }
    tracing::info!("projectors running");
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        let outcome =
            joined.unwrap_or_else(|join_error| std::panic::resume_unwind(join_error.into_panic()));
        if let Err(error) = outcome {
            // One failed projector stops the process: they finish their batch and commit. The
            // first error is the process's, logged once by `process::spawn`; any later one only
            // here.
            context.shutdown.cancel();
            if first_error.is_none() {
                tracing::info!("a projector failed; stopping the others");
                first_error = Some(error);
            } else {
                tracing::error!(error = %errors::chain(&error), "another projector failed too");
            }
        }
    }
    tracing::info!("projectors stopped");
    first_error.map_or(Ok(()), |error| Err(error.into()))
}
