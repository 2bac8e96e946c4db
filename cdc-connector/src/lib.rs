//! cdc-connector: streams changes of the storefront's MongoDB collections into domain events on
//! Kafka, so that no application code has to write to both (the dual write this project removes).
//!
//! - [`config`]: the connector's configuration.
//! - [`dead_letters`]: `dead-letters list|redrive`: the connector's dead letters for operators.
//! - [`mapping`]: source changes to domain events (pure; one module per source collection).
//! - [`pipeline`]: one change stream to Kafka: snapshot, stream, checkpoints, dead letters (its
//!   module doc states the delivery guarantees).
//! - [`acks`]: the ordered-acknowledgement queue that decides which resume token may be saved
//!   (pure, tested alone).
//! - [`source`]: reads one change stream in its own task, ahead of the pipeline, and turns the
//!   driver's events into redacted source changes.
//! - [`publisher`]: the idempotent Kafka producer and dead-letter records.
//! - [`checkpoint`]: resume tokens and the once-per-id ledger, stored in MongoDB.
//! - [`lease`]: one active process per set of streams, others standing by.
//! - [`metrics`]: the connector's metrics.
//! - [`reconcile`]: `reconcile` compares sources with their copies and repairs drift;
//!   [`republish`] re-emits chosen source documents (repairs, dead-letter redrives).
//! - [`watch`]: stall detection per stream (Kafka not acknowledging, MongoDB not answering,
//!   changes left unread), reported in `/health` and metrics.
//! - [`run`] / [`start`]: the process entry point, which takes its shutdown signal as a future so
//!   tests can run the connector in-process.
//!
//! The process connects to MongoDB and Kafka (retrying while either is unreachable), creates the
//! event and dead-letter topics when missing, runs one [`pipeline::StreamPipeline`] per watched
//! collection, reports `/health` and `/metrics`, and on SIGTERM or SIGINT stops reading, waits for
//! Kafka to acknowledge everything in flight, saves checkpoints and exits. When one stream fails,
//! the others drain and stop too, and the process exits with that stream's error.

#![cfg_attr(not(test), warn(clippy::unwrap_used))] // product code says why it cannot fail

pub mod acks;
pub mod checkpoint;
pub mod config;
pub mod dead_letters;
pub mod lease;
pub mod mapping;
pub mod metrics;
pub mod pipeline;
pub mod publisher;
pub mod reconcile;
pub mod source;
pub mod watch;

/// Re-emitting source documents' current state through Kafka (see [`reconcile::republish`]).
pub use reconcile::republish;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use storefront_plumbing::kafka::{self, KafkaSetupError, TopicSpec};
use storefront_plumbing::mongo::MongoConnectError;
use storefront_plumbing::process::{self, ProcessContext, RunningProcess};
use storefront_plumbing::telemetry::{ComponentState, TelemetryError};
use storefront_schemas::retention::{self, TopicRequirement};
use storefront_schemas::sensitive::Redaction;
use storefront_schemas::topology::Namespace;
use tokio_util::sync::CancellationToken;

use crate::checkpoint::CheckpointStore;
use crate::config::ConnectorConfig;
use crate::lease::{Lease, LeaseError, LeaseGate};
use crate::mapping::{ChangeMapper, StorefrontMapper};
use crate::pipeline::{StreamContext, StreamError, StreamPipeline};
use crate::publisher::Publisher;

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
    /// A stream stopped with an error.
    #[error(transparent)]
    Stream(#[from] StreamError),
    /// The lease could not be kept.
    #[error(transparent)]
    Lease(#[from] LeaseError),
}

/// A connector running in the background.
pub type RunningConnector = RunningProcess<ConnectorError>;

/// Starts the connector with the storefront mapping; it runs until `shutdown` resolves or it
/// fails.
pub async fn start(
    config: ConnectorConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<RunningConnector, ConnectorError> {
    let mapper = Arc::new(StorefrontMapper::new(
        config.sources.clone(),
        config.topics.clone(),
    ));
    start_with_mapper(config, mapper, shutdown).await
}

/// Starts the connector with another domain's mapping.
pub async fn start_with_mapper(
    config: ConnectorConfig,
    mapper: Arc<dyn ChangeMapper>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<RunningConnector, ConnectorError> {
    let (log, http) = (config.log.clone(), config.http.clone());
    Ok(process::spawn(&log, &http, shutdown, |context| {
        work(config, mapper, context)
    })
    .await?)
}

/// Runs the connector until `shutdown` resolves or it fails.
pub async fn run(
    config: ConnectorConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ConnectorError> {
    start(config, shutdown).await?.wait().await
}

async fn work(
    config: ConnectorConfig,
    mapper: Arc<dyn ChangeMapper>,
    context: ProcessContext,
) -> Result<(), ConnectorError> {
    let namespaces: Vec<Namespace> = config
        .stream
        .watch
        .iter()
        .map(|source| source.namespace(&config.sources).clone())
        .collect();
    let redactions: Vec<Redaction> = config
        .stream
        .watch
        .iter()
        .map(|source| source.redaction(&config.sensitive))
        .collect();
    let watched: Vec<String> = namespaces.iter().map(Namespace::to_string).collect();
    tracing::info!(
        watched = ?watched,
        snapshot = ?config.stream.snapshot,
        "connector starting"
    );
    context
        .health
        .set(lease::COMPONENT, ComponentState::Starting);
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
    kafka::ensure_topics(&config.kafka, APP_NAME, &topic_specs(&config)).await?;
    let lease = config.lease.enabled.then(|| {
        Lease::new(
            &client,
            &config.checkpoints.database,
            config.lease_name(),
            &config.lease,
            context.health.clone(),
        )
    });
    let gate = match &lease {
        Some(lease) => match lease.acquire(&context.shutdown).await? {
            Some(gate) => gate,
            None => return Ok(()),
        },
        None => {
            context.health.set(lease::COMPONENT, ComponentState::Ready);
            LeaseGate::always_open()
        }
    };
    // Streams count in /health from here: the process is not ready until every stream is open
    // (and its snapshot done), whatever else is.
    for namespace in &namespaces {
        context.health.set(
            &pipeline::component_name(namespace),
            ComponentState::Starting,
        );
    }
    let publisher = Arc::new(Publisher::new(
        &config.kafka,
        APP_NAME,
        &config.stream.dead_letter_topic,
        gate.clone(),
    )?);
    let change_stream_client = source::change_stream_client(&config.mongo, APP_NAME).await?;
    let stream_context = StreamContext {
        client: client.clone(),
        change_stream_client,
        mapper,
        publisher: publisher.clone(),
        store: CheckpointStore::new(&client, &config.checkpoints),
        settings: config.stream.clone(),
        checkpoint_interval: Duration::from_millis(config.checkpoints.interval_ms),
        idle_checkpoint_interval: Duration::from_millis(config.checkpoints.idle_interval_ms),
        shutdown: context.shutdown.clone(),
        health: context.health.clone(),
    };
    let pipelines: Vec<StreamPipeline> = namespaces
        .into_iter()
        .zip(redactions)
        .map(|(namespace, redaction)| {
            StreamPipeline::new(namespace, redaction, stream_context.clone())
        })
        .collect();
    let mut streams = tokio::task::JoinSet::new();
    for pipeline in pipelines {
        streams.spawn(async move { pipeline.run().await.map_err(ConnectorError::from) });
    }
    // Renewed until the streams have drained and saved their checkpoints, so no standby takes
    // over while this process still finishes its work.
    let stop_renewing = CancellationToken::new();
    if let Some(lease) = lease.clone() {
        let (gate, stop) = (gate.clone(), stop_renewing.clone());
        streams.spawn(async move { lease.keep(gate, stop).await.map_err(ConnectorError::from) });
    }
    tracing::info!("connector running");
    let mut first_error = None;
    let mut lease_lost = false;
    while let Some(joined) = streams.join_next().await {
        let outcome =
            joined.unwrap_or_else(|join_error| std::panic::resume_unwind(join_error.into_panic()));
        if let Err(error) = outcome {
            if matches!(error, ConnectorError::Lease(LeaseError::Lost { .. })) {
                // What is still queued must not reach Kafka after the new holder's records.
                lease_lost = true;
                publisher.purge_unsent();
            }
            // One failed stream stops the others: they drain and checkpoint on the way out. The
            // first failure is the process's error, logged once when it stops; any later one is
            // logged here, or it would not be reported at all.
            context.shutdown.cancel();
            if first_error.is_none() {
                tracing::info!("stopping every stream after a failure");
                first_error = Some(error);
            } else {
                tracing::error!(
                    error = %storefront_plumbing::errors::chain(&error),
                    "another failure while stopping"
                );
            }
        }
        if streams.len() == 1 && !stop_renewing.is_cancelled() && lease.is_some() {
            // Only the renewal is left: every stream has drained and saved.
            finish_publishing(&publisher, lease_lost).await;
            stop_renewing.cancel();
        }
    }
    if lease.is_none() {
        finish_publishing(&publisher, lease_lost).await;
    }
    if let Some(lease) = &lease
        && !lease_lost
    {
        lease.release().await;
    }
    tracing::info!("connector stopped");
    first_error.map_or(Ok(()), Err)
}

/// Waits for Kafka to acknowledge what is queued (at shutdown), unless the lease was lost.
async fn finish_publishing(publisher: &Publisher, lease_lost: bool) {
    if lease_lost {
        return;
    }
    if let Err(error) = publisher.flush(Duration::from_secs(30)).await {
        tracing::warn!(%error, "kafka flush at shutdown");
    }
}

/// The event and dead-letter topics with the settings they get when the connector creates them:
/// the retention a projection rebuild needs (`storefront_schemas::retention`, which the projectors
/// create and check topics with too), and dead letters kept forever.
pub fn topic_specs(config: &ConnectorConfig) -> Vec<TopicSpec> {
    retention::event_topics(&config.topics)
        .into_iter()
        .chain([TopicRequirement::everything(
            &config.stream.dead_letter_topic,
        )])
        .map(|requirement| config.new_topics.spec(&requirement))
        .collect()
}
