//! cdc-connector: streams changes of the storefront's MongoDB collections into domain events on
//! Kafka, so that no application code has to write to both (the dual write this project removes).
//!
//! - [`config`]: the connector's configuration.
//! - [`run`] / [`start`]: the process entry point, which takes its shutdown signal as a future so
//!   tests can run the connector in-process.
//!
//! Today the process connects to MongoDB and Kafka (retrying while either is unreachable), creates
//! the event topics when missing, reports `/health` and `/metrics`, and stops cleanly on SIGTERM or
//! SIGINT. The change streams and mapping build on this frame.

#![cfg_attr(not(test), warn(clippy::unwrap_used))] // product code says why it cannot fail

pub mod config;
pub mod mapping;

use std::future::Future;

use storefront_plumbing::kafka::{self, KafkaSetupError, TopicSpec};
use storefront_plumbing::mongo::MongoConnectError;
use storefront_plumbing::process::{self, ProcessContext, RunningProcess};
use storefront_plumbing::telemetry::TelemetryError;

use crate::config::ConnectorConfig;

/// The name the connector gives itself in MongoDB and Kafka client ids.
pub const APP_NAME: &str = "storefront-cdc-connector";

/// Why the connector stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
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

/// A connector running in the background.
pub type RunningConnector = RunningProcess<ConnectorError>;

/// Starts the connector; it runs until `shutdown` resolves or it fails.
pub async fn start(
    config: ConnectorConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<RunningConnector, ConnectorError> {
    let (log, http) = (config.log.clone(), config.http.clone());
    Ok(process::spawn(&log, &http, shutdown, |context| work(config, context)).await?)
}

/// Runs the connector until `shutdown` resolves or it fails.
pub async fn run(
    config: ConnectorConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ConnectorError> {
    start(config, shutdown).await?.wait().await
}

async fn work(config: ConnectorConfig, context: ProcessContext) -> Result<(), ConnectorError> {
    tracing::info!(
        accounts = %config.sources.accounts,
        orders = %config.sources.orders,
        fulfillment = %config.sources.fulfillment,
        "connector starting"
    );
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
    kafka::ensure_topics(&config.kafka, APP_NAME, &topic_specs(&config)).await?;
    tracing::info!("connector ready");
    context.shutdown.cancelled().await;
    tracing::info!("connector stopped");
    Ok(())
}

/// The event topics with the settings they get when the connector creates them.
pub fn topic_specs(config: &ConnectorConfig) -> Vec<TopicSpec> {
    config
        .topics
        .all()
        .iter()
        .map(|name| TopicSpec {
            name: (*name).to_owned(),
            partitions: config.new_topics.partitions,
            replication_factor: config.new_topics.replication_factor,
            configs: Vec::new(),
        })
        .collect()
}
