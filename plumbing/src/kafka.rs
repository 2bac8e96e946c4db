//! The one place that builds Kafka clients.
//!
//! Every client gets the same bootstrap servers, the operator's extra properties, and librdkafka's
//! own log lines forwarded to `tracing` (target `librdkafka`). Properties the delivery guarantees
//! rest on (idempotence, `acks=all`, manual offset commits) are set here and cannot be overridden
//! from config: [`crate::settings::KafkaSettings`] refuses them.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use crate::settings::KafkaSettings;

/// Forwards librdkafka's logs and client errors to `tracing`.
///
/// Client errors (a broker going away, a timed-out request) are warnings, not errors: librdkafka
/// retries them itself, and an error-level line is reserved for data loss or operator action.
#[derive(Debug, Clone, Copy, Default)]
pub struct TracingContext;

impl ClientContext for TracingContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::error!(target: "librdkafka", facility, "{message}")
            }
            RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", facility, "{message}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", facility, "{message}")
            }
            RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", facility, "{message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(target: "librdkafka", %error, reason, "kafka client error");
    }
}

impl ConsumerContext for TracingContext {}

/// Base configuration shared by every client of a process.
pub fn client_config(settings: &KafkaSettings, client_id: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &settings.bootstrap_servers)
        .set("client.id", client_id);
    for (key, value) in &settings.properties {
        config.set(key, value);
    }
    config
}

/// A producer that never duplicates or reorders on its own retries and waits for every in-sync
/// replica: the basis of at-least-once delivery with per-key order.
pub fn producer_config(settings: &KafkaSettings, client_id: &str) -> ClientConfig {
    let mut config = client_config(settings, client_id);
    config.set("enable.idempotence", "true").set("acks", "all");
    config
}

/// A consumer in `group_id` whose offsets move only when the caller stores and commits them.
pub fn consumer_config(settings: &KafkaSettings, client_id: &str, group_id: &str) -> ClientConfig {
    let mut config = client_config(settings, client_id);
    config
        .set("group.id", group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed");
    config
}

/// A topic the process needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    /// Topic name.
    pub name: String,
    /// Partitions when created; an existing topic keeps its own.
    pub partitions: i32,
    /// Replicas when created.
    pub replication_factor: i32,
    /// Topic-level configs such as `cleanup.policy`, applied only when the topic is created.
    pub configs: Vec<(String, String)>,
}

/// Why Kafka could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KafkaSetupError {
    /// A client could not be built from the config: retrying cannot help.
    #[error("kafka client config rejected: {0}")]
    Config(#[source] KafkaError),
    /// The brokers did not answer a metadata request in time.
    #[error("kafka brokers at {servers} did not answer within {timeout:?}: {source}")]
    Unreachable {
        servers: String,
        timeout: Duration,
        #[source]
        source: KafkaError,
    },
    /// Creating topic `topic` failed for a reason other than it already existing.
    #[error("creating kafka topic {topic} failed: {code}")]
    CreateTopic {
        topic: String,
        code: RDKafkaErrorCode,
    },
    /// The admin request as a whole failed.
    #[error("kafka admin request failed: {0}")]
    Admin(#[source] KafkaError),
}

impl KafkaSetupError {
    /// Whether trying again later can succeed.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, Self::Config(_))
    }
}

fn admin(
    settings: &KafkaSettings,
    client_id: &str,
) -> Result<AdminClient<TracingContext>, KafkaSetupError> {
    client_config(settings, client_id)
        .create_with_context(TracingContext)
        .map_err(KafkaSetupError::Config)
}

/// Asks the cluster for its metadata; returns the number of brokers that answered.
pub async fn broker_count(
    settings: &KafkaSettings,
    client_id: &str,
    timeout: Duration,
) -> Result<usize, KafkaSetupError> {
    let admin = admin(settings, client_id)?;
    let servers = settings.bootstrap_servers.clone();
    // fetch_metadata blocks its thread until the brokers answer or the timeout passes.
    tokio::task::spawn_blocking(move || {
        admin
            .inner()
            .fetch_metadata(None, timeout)
            .map(|metadata| metadata.brokers().len())
            .map_err(|source| KafkaSetupError::Unreachable {
                servers,
                timeout,
                source,
            })
    })
    .await
    .unwrap_or_else(|join_error| std::panic::resume_unwind(join_error.into_panic()))
}

/// Creates every topic in `topics` that does not exist yet; existing topics are left as they are.
pub async fn ensure_topics(
    settings: &KafkaSettings,
    client_id: &str,
    topics: &[TopicSpec],
) -> Result<(), KafkaSetupError> {
    let admin = admin(settings, client_id)?;
    let new_topics: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|spec| {
            spec.configs.iter().fold(
                NewTopic::new(
                    &spec.name,
                    spec.partitions,
                    TopicReplication::Fixed(spec.replication_factor),
                ),
                |topic, (key, value)| topic.set(key, value),
            )
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin
        .create_topics(&new_topics, &options)
        .await
        .map_err(KafkaSetupError::Admin)?;
    for result in results {
        match result {
            Ok(topic) => tracing::info!(topic, "kafka topic created"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => return Err(KafkaSetupError::CreateTopic { topic, code }),
        }
    }
    Ok(())
}
