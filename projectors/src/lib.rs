//! projectors: consume the storefront's domain events and maintain the denormalized copies in the
//! other services' collections.
//!
//! - [`config`]: the projectors' configuration and the list of projectors.
//! - [`run`] / [`start`]: the process entry point, which takes its shutdown signal as a future so
//!   tests can run projectors in-process.
//!
//! Today the process connects to MongoDB and Kafka (retrying while either is unreachable), reports
//! `/health` and `/metrics`, and stops cleanly on SIGTERM or SIGINT. Consumption and the
//! projections build on this frame.

#![cfg_attr(not(test), warn(clippy::unwrap_used))] // product code says why it cannot fail

pub mod config;

use std::future::Future;

use storefront_plumbing::kafka::KafkaSetupError;
use storefront_plumbing::mongo::MongoConnectError;
use storefront_plumbing::process::{self, ProcessContext, RunningProcess};
use storefront_plumbing::telemetry::TelemetryError;

use crate::config::{Projector, ProjectorsConfig};

/// The name the projectors give themselves in MongoDB and Kafka client ids.
pub const APP_NAME: &str = "storefront-projectors";

/// Why the projectors stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ProjectorError {
    /// Logging, metrics or the HTTP endpoint could not start.
    #[error(transparent)]
    Telemetry(#[from] TelemetryError),
    /// MongoDB could not be used.
    #[error(transparent)]
    Mongo(#[from] MongoConnectError),
    /// Kafka could not be used.
    #[error(transparent)]
    Kafka(#[from] KafkaSetupError),
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

async fn work(
    config: ProjectorsConfig,
    projectors: Vec<Projector>,
    context: ProcessContext,
) -> Result<(), ProjectorError> {
    let names: Vec<&str> = projectors.iter().map(|p| p.name()).collect();
    tracing::info!(projectors = ?names, "projectors starting");
    let Some(_client) = context.connect_mongo(&config.mongo, APP_NAME).await? else {
        return Ok(());
    };
    if context
        .await_kafka(&config.kafka, APP_NAME)
        .await?
        .is_none()
    {
        return Ok(());
    }
    tracing::info!("projectors ready");
    context.shutdown.cancelled().await;
    tracing::info!("projectors stopped");
    Ok(())
}
