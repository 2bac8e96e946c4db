//! The one place that builds Kafka clients.
//!
//! Every client gets the same bootstrap servers, the operator's security settings and extra
//! properties, and librdkafka's own log lines forwarded to `tracing` (target `librdkafka`).
//! Properties the delivery guarantees rest on (idempotence, `acks=all`, manual offset commits) are
//! set here and cannot be overridden from config: [`crate::settings::KafkaSettings`] refuses them.
//!
//! Refused credentials are not retried: [`broker_count`] (what a process waits on at start)
//! watches the client's error events and fails with [`KafkaSetupError::Authentication`] as soon as
//! a broker rejects the SASL login, instead of waiting out its timeout and trying again forever.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryResult, Producer, ProducerContext, ThreadedProducer};

use crate::settings::KafkaSettings;

/// Whether `error` means the broker refused the client's credentials (wrong user or password,
/// or a SASL mechanism it does not enable). Retrying cannot fix either.
pub fn is_authentication_error(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SaslAuthenticationFailed)
    )
}

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
        if is_authentication_error(&error) {
            // Not transient: someone has to fix the credentials (librdkafka keeps retrying).
            tracing::error!(
                target: "librdkafka",
                %error,
                reason,
                "kafka authentication failed; check kafka.sasl_username, kafka.sasl_password and \
                 kafka.sasl_mechanism"
            );
        } else {
            tracing::warn!(target: "librdkafka", %error, reason, "kafka client error");
        }
    }
}

impl ConsumerContext for TracingContext {}

/// The context of the client [`broker_count`] probes with: keeps the first authentication failure
/// for the probe to return, and logs everything else at debug only (the probe's caller reports a
/// failed attempt itself, once, instead of a line per connection attempt).
#[derive(Debug, Default)]
struct ProbeContext {
    authentication_failure: Mutex<Option<String>>,
}

impl ProbeContext {
    fn authentication_failure(&self) -> Option<String> {
        self.authentication_failure
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

impl ClientContext for ProbeContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        tracing::debug!(target: "librdkafka", ?level, facility, "{message}");
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if is_authentication_error(&error) {
            self.authentication_failure
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .get_or_insert_with(|| reason.to_owned());
        } else {
            tracing::debug!(target: "librdkafka", %error, reason, "kafka probe error");
        }
    }
}

impl ProducerContext for ProbeContext {
    type DeliveryOpaque = ();

    fn delivery(&self, _: &DeliveryResult<'_>, _: Self::DeliveryOpaque) {}
}

/// A client's configuration, with every client's properties in one order:
///
/// 1. `bootstrap.servers` and `client.id`;
/// 2. `tuning`: the product's defaults for this client (batching, timeouts, fetch waits);
/// 3. the operator's: the named `kafka.*` settings and `kafka.properties`, which replace any
///    default of step 2;
/// 4. `guarantees`: what the client's delivery guarantees rest on. The settings' validation
///    refuses these keys in `kafka.properties` ([`GUARANTEED_KAFKA_PROPERTIES`]), so they never
///    conflict with the operator's; setting them last only makes that structural.
///
/// [`GUARANTEED_KAFKA_PROPERTIES`]: crate::settings::GUARANTEED_KAFKA_PROPERTIES
pub fn client_config(
    settings: &KafkaSettings,
    client_id: &str,
    tuning: &[(&str, &str)],
    guarantees: &[(&str, &str)],
) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &settings.bootstrap_servers)
        .set("client.id", client_id);
    for (key, value) in tuning {
        config.set(*key, *value);
    }
    for (key, value) in settings.client_properties() {
        config.set(key, value);
    }
    for (key, value) in guarantees {
        config.set(*key, *value);
    }
    config
}

/// What every producer's guarantees rest on: it never duplicates or reorders on its own retries
/// and waits for every in-sync replica, the basis of at-least-once delivery with per-key order.
pub const PRODUCER_GUARANTEES: &[(&str, &str)] = &[("enable.idempotence", "true"), ("acks", "all")];

/// A producer with [`PRODUCER_GUARANTEES`], `tuning` as defaults the operator overrides.
pub fn producer_config(
    settings: &KafkaSettings,
    client_id: &str,
    tuning: &[(&str, &str)],
) -> ClientConfig {
    client_config(settings, client_id, tuning, PRODUCER_GUARANTEES)
}

/// A consumer in `group_id` whose offsets move only when the caller stores and commits them,
/// and that starts a new group at the earliest record (a group starting at the latest would skip
/// every event before its first commit). `tuning` are defaults the operator overrides.
pub fn consumer_config(
    settings: &KafkaSettings,
    client_id: &str,
    group_id: &str,
    tuning: &[(&str, &str)],
) -> ClientConfig {
    // Our producers are not transactional, so this changes nothing today; it keeps a future
    // transactional writer's aborted records out.
    let tuning: Vec<(&str, &str)> = [("isolation.level", "read_committed")]
        .into_iter()
        .chain(tuning.iter().copied())
        .collect();
    client_config(
        settings,
        client_id,
        &tuning,
        &[
            ("group.id", group_id),
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            ("auto.offset.reset", "earliest"),
        ],
    )
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
    #[error("kafka client config rejected")]
    Config(#[source] KafkaError),
    /// A broker refused the client's SASL credentials. The message never holds the password:
    /// `reason` (librdkafka's) has every configured secret replaced by `****`.
    #[error(
        "kafka authentication failed for user {user} ({mechanism}) at {servers}: {reason}; check \
         kafka.sasl_username, kafka.sasl_password and kafka.sasl_mechanism"
    )]
    Authentication {
        /// The SASL username, or `(none)`.
        user: String,
        /// The SASL mechanism, or `(none)`.
        mechanism: String,
        /// The bootstrap servers.
        servers: String,
        /// librdkafka's description, naming the broker.
        reason: String,
    },
    /// The brokers did not answer a metadata request in time.
    #[error("kafka brokers at {servers} did not answer within {timeout:?}")]
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
    #[error("kafka admin request failed")]
    Admin(#[source] KafkaError),
}

impl KafkaSetupError {
    /// Whether trying again later can succeed.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, Self::Config(_) | Self::Authentication { .. })
    }
}

fn admin(
    settings: &KafkaSettings,
    client_id: &str,
) -> Result<AdminClient<TracingContext>, KafkaSetupError> {
    client_config(settings, client_id, &[], &[])
        .create_with_context(TracingContext)
        .map_err(|error| KafkaSetupError::Config(scrub_error(settings, error)))
}

/// How often [`broker_count`] looks for an authentication failure while it waits for metadata.
const PROBE_SLICE: Duration = Duration::from_millis(200);

/// Asks the cluster for its metadata; returns the number of brokers that answered.
///
/// Fails with [`KafkaSetupError::Authentication`] (not retryable) as soon as a broker refuses the
/// credentials, and with [`KafkaSetupError::Unreachable`] (retryable) when no broker answers
/// within `timeout`.
pub async fn broker_count(
    settings: &KafkaSettings,
    client_id: &str,
    timeout: Duration,
) -> Result<usize, KafkaSetupError> {
    // A producer rather than an admin client: rust-rdkafka's admin client never polls the main
    // queue, where librdkafka puts its error events; a threaded producer polls it all the time, so
    // an authentication failure reaches the context within a poll interval.
    let probe: ThreadedProducer<ProbeContext> = client_config(settings, client_id, &[], &[])
        .create_with_context(ProbeContext::default())
        .map_err(|error| KafkaSetupError::Config(scrub_error(settings, error)))?;
    let probe = std::sync::Arc::new(probe);
    // Ask in short slices and look for a refused login in between.
    let started = Instant::now();
    loop {
        let left = timeout.saturating_sub(started.elapsed());
        let outcome = crate::kafka_io::fetch_metadata(
            &probe,
            ThreadedProducer::client,
            None,
            left.min(PROBE_SLICE),
        )
        .await;
        if let Some(reason) = probe.context().authentication_failure() {
            return Err(authentication_error(settings, &reason));
        }
        match outcome {
            Ok(metadata) => return Ok(metadata.brokers().len()),
            Err(source) if started.elapsed() >= timeout => {
                return Err(KafkaSetupError::Unreachable {
                    servers: settings.bootstrap_servers.clone(),
                    timeout,
                    source,
                });
            }
            Err(_) => {}
        }
    }
}

/// The error for a refused login, from librdkafka's `reason` (which names the broker), with every
/// configured secret scrubbed out of it.
fn authentication_error(settings: &KafkaSettings, reason: &str) -> KafkaSetupError {
    KafkaSetupError::Authentication {
        user: settings
            .effective_sasl_username()
            .unwrap_or("(none)")
            .to_owned(),
        mechanism: settings
            .effective_sasl_mechanism()
            .unwrap_or("(none)")
            .to_owned(),
        servers: settings.bootstrap_servers.clone(),
        reason: settings.scrub(reason),
    }
}

/// A client-creation error with every configured secret scrubbed out of its message.
fn scrub_error(settings: &KafkaSettings, error: KafkaError) -> KafkaError {
    match error {
        KafkaError::ClientCreation(message) => KafkaError::ClientCreation(settings.scrub(&message)),
        other => other,
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn sasl_settings() -> KafkaSettings {
        KafkaSettings {
            bootstrap_servers: "broker:9094".into(),
            security_protocol: Some("SASL_PLAINTEXT".into()),
            sasl_mechanism: Some("SCRAM-SHA-512".into()),
            sasl_username: Some("storefront".into()),
            sasl_password: Some("not-this-one".into()),
            ..KafkaSettings::default()
        }
    }

    #[test]
    fn clients_get_the_named_security_settings() {
        let config = producer_config(&sasl_settings(), "test-client", &[]);
        assert_eq!(config.get("bootstrap.servers"), Some("broker:9094"));
        assert_eq!(config.get("security.protocol"), Some("SASL_PLAINTEXT"));
        assert_eq!(config.get("sasl.mechanism"), Some("SCRAM-SHA-512"));
        assert_eq!(config.get("sasl.username"), Some("storefront"));
        assert_eq!(config.get("sasl.password"), Some("not-this-one"));
        assert_eq!(config.get("acks"), Some("all"));
    }

    #[test]
    fn authentication_failures_are_final_and_name_user_and_broker_not_the_password() {
        let settings = sasl_settings();
        // librdkafka's reasons do not carry the password; scrubbing makes sure of it.
        let error = authentication_error(
            &settings,
            "sasl_plaintext://broker:9094/bootstrap: SASL authentication error: not-this-one",
        );
        assert!(!error.is_retryable());
        let text = error.to_string();
        assert!(!text.contains("not-this-one"), "{text}");
        assert!(
            text.contains("kafka authentication failed for user storefront"),
            "{text}"
        );
        assert!(text.contains("SCRAM-SHA-512"), "{text}");
        assert!(text.contains("broker:9094"), "{text}");
        assert!(text.contains("kafka.sasl_password"), "{text}");
        assert!(!format!("{error:?}").contains("not-this-one"));
    }

    #[test]
    fn authentication_error_codes_are_recognised() {
        assert!(is_authentication_error(&KafkaError::Global(
            RDKafkaErrorCode::Authentication
        )));
        assert!(is_authentication_error(&KafkaError::Global(
            RDKafkaErrorCode::SaslAuthenticationFailed
        )));
        assert!(!is_authentication_error(&KafkaError::Global(
            RDKafkaErrorCode::BrokerTransportFailure
        )));
    }

    /// A broker that is not there is retried, not mistaken for refused credentials.
    #[tokio::test]
    async fn an_unreachable_broker_stays_retryable() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let settings = KafkaSettings {
            bootstrap_servers: format!("127.0.0.1:{port}"),
            ..sasl_settings()
        };
        let error = broker_count(&settings, "test-client", Duration::from_millis(600))
            .await
            .unwrap_err();
        assert!(
            matches!(error, KafkaSetupError::Unreachable { .. }),
            "{error}"
        );
        assert!(error.is_retryable());
    }
}
