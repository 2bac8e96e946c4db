//! A projector's Kafka consumer: its configuration, and the callbacks librdkafka runs on it
//! (rebalance bookkeeping and commits, lag metrics, logs). The live runner and the rebuild build
//! theirs here and drive them with [`crate::batch_loop`].

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use rdkafka::TopicPartitionList;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::statistics::Statistics;
use storefront_plumbing::kafka::{self, KafkaSetupError, TracingContext};
use storefront_plumbing::kafka_io;
use storefront_plumbing::telemetry::{ComponentState, Health};

use crate::config::{Projector, ProjectorsConfig};
use crate::metrics;
use storefront_plumbing::errors;

/// Consumer callbacks: rebalance bookkeeping and commits, lag metrics, librdkafka logs.
pub struct ProjectorContext {
    projector: Projector,
    /// Partitions currently assigned, as `(topic, partition)`.
    assignment: Mutex<HashSet<(String, i32)>>,
    health: Health,
    component: String,
    /// Whether partitions were assigned (the component is ready when Kafka is reachable).
    assigned_once: AtomicBool,
    /// Whether librdkafka reported every broker down and no broker is up again yet.
    brokers_down: AtomicBool,
}

impl std::fmt::Debug for ProjectorContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProjectorContext")
            .field("projector", &self.projector)
            .finish_non_exhaustive()
    }
}

impl ProjectorContext {
    fn new(projector: Projector, health: Health) -> Self {
        Self {
            projector,
            assignment: Mutex::new(HashSet::new()),
            health,
            component: component(projector),
            assigned_once: AtomicBool::new(false),
            brokers_down: AtomicBool::new(false),
        }
    }

    /// Every broker is down: records cannot be fetched, which `/health` shows until one is up.
    fn brokers_went_down(&self, reason: &str) {
        if !self.brokers_down.swap(true, Ordering::Relaxed) {
            tracing::warn!(projector = %self.projector, reason, "no kafka broker reachable; nothing can be fetched");
        }
        self.health.set(
            &self.component,
            ComponentState::Failing(format!("kafka: no broker reachable ({reason})")),
        );
    }

    /// A broker is up again (seen in librdkafka's statistics).
    fn broker_up(&self) {
        if self.brokers_down.swap(false, Ordering::Relaxed) {
            tracing::info!(projector = %self.projector, "a kafka broker is reachable again");
            let state = if self.assigned_once.load(Ordering::Relaxed) {
                ComponentState::Ready
            } else {
                ComponentState::Starting
            };
            self.health.set(&self.component, state);
        }
    }

    fn assignment(&self) -> std::sync::MutexGuard<'_, HashSet<(String, i32)>> {
        self.assignment
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The projector consuming.
    pub fn projector(&self) -> Projector {
        self.projector
    }

    /// Records partitions assigned with `assign` (no rebalance callbacks run then).
    pub fn assigned_manually(&self, partitions: impl IntoIterator<Item = (String, i32)>) {
        self.assignment().extend(partitions);
    }

    /// Whether `topic`/`partition` is assigned to this instance now.
    pub fn is_assigned(&self, topic: &str, partition: i32) -> bool {
        self.assignment().contains(&(topic.to_owned(), partition))
    }
}

/// The health component of `projector`'s consumer.
pub fn component(projector: Projector) -> String {
    format!("projector {projector}")
}

impl ClientContext for ProjectorContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        TracingContext.log(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        // End of partition is how a rebuild learns it is done, not a failure.
        if matches!(error, KafkaError::PartitionEOF(_))
            || error.rdkafka_error_code() == Some(RDKafkaErrorCode::PartitionEOF)
        {
            return;
        }
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            self.brokers_went_down(reason);
        }
        TracingContext.error(error, reason);
    }

    fn stats(&self, statistics: Statistics) {
        // Bootstrap entries (node id -1) are not brokers of the cluster.
        if statistics
            .brokers
            .values()
            .any(|broker| broker.nodeid >= 0 && broker.state == "UP")
        {
            self.broker_up();
        }
        for (name, topic) in &statistics.topics {
            for (id, partition) in &topic.partitions {
                // Partition -1 is librdkafka's internal "unassigned" queue; a lag of -1 means
                // unknown (not assigned here, or no offset yet).
                if *id < 0 || !self.is_assigned(name, *id) {
                    continue;
                }
                // Lag behind the offsets stored after applying; before anything is stored or
                // committed (a new group), everything retained is still to do.
                let lag = [partition.consumer_lag_stored, partition.consumer_lag]
                    .into_iter()
                    .find(|lag| *lag >= 0)
                    .or_else(|| {
                        (partition.hi_offset >= 0 && partition.lo_offset >= 0)
                            .then(|| partition.hi_offset - partition.lo_offset)
                    });
                if let Some(lag) = lag {
                    metrics::consumer_lag(self.projector, name, *id, lag);
                }
            }
        }
    }
}

impl ConsumerContext for ProjectorContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(partitions) = rebalance else {
            return;
        };
        // Everything stored has been applied: commit it before the partitions move, so the
        // next owner starts exactly after it.
        report_commit(
            self.projector,
            kafka_io::commit_stored_during_rebalance(consumer),
            "commit before revocation failed; the next owner replays from the last commit",
        );
        let mut assignment = self.assignment();
        for element in partitions.elements() {
            assignment.remove(&(element.topic().to_owned(), element.partition()));
            // This instance no longer owns the partition: its lag is reported by the next owner.
            metrics::consumer_lag(self.projector, element.topic(), element.partition(), 0);
        }
        tracing::info!(projector = %self.projector, revoked = partitions.count(), "partitions revoked");
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(partitions) => {
                let mut assignment = self.assignment();
                for element in partitions.elements() {
                    assignment.insert((element.topic().to_owned(), element.partition()));
                }
                let mut listed: Vec<String> = assignment
                    .iter()
                    .map(|(topic, partition)| format!("{topic}/{partition}"))
                    .collect();
                listed.sort();
                tracing::info!(projector = %self.projector, partitions = ?listed, "partitions assigned");
                self.assigned_once.store(true, Ordering::Relaxed);
                self.health.set(&self.component, ComponentState::Ready);
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(error) => {
                tracing::warn!(projector = %self.projector, %error, "rebalance failed");
            }
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        report_commit(
            self.projector,
            result,
            "offset commit failed; retried at the next interval",
        );
    }
}

/// Builds the consumer of `projector`: manual offset store and commit (from
/// [`kafka::consumer_config`]), statistics for lag, our callbacks, and `guarantees` (keys of
/// [`GUARANTEED_KAFKA_PROPERTIES`] this client needs besides the consumer's own).
///
/// [`GUARANTEED_KAFKA_PROPERTIES`]: storefront_plumbing::settings::GUARANTEED_KAFKA_PROPERTIES
pub fn consumer(
    config: &ProjectorsConfig,
    projector: Projector,
    client_id: &str,
    health: Health,
    guarantees: &[(&str, &str)],
) -> Result<StreamConsumer<ProjectorContext>, KafkaSetupError> {
    let statistics_interval = config.apply.lag_interval_ms.to_string();
    let tuning = [
        // Lag metrics come from librdkafka's statistics.
        ("statistics.interval.ms", statistics_interval.as_str()),
        // librdkafka lets a fetch wait up to 500 ms for data by default; a projector is latency
        // bound (and a newly assigned partition's first fetch often waits the whole time).
        ("fetch.wait.max.ms", "100"),
    ];
    let mut client = kafka::consumer_config(
        &config.kafka,
        client_id,
        &config.consumer_group(projector),
        &tuning,
    );
    // What this client's guarantees need besides the consumer's own (refused in
    // `kafka.properties`, so never the operator's choice overridden).
    for (key, value) in guarantees {
        client.set(*key, *value);
    }
    client
        .create_with_context(ProjectorContext::new(projector, health))
        .map_err(KafkaSetupError::Config)
}

/// Logs a failed commit and counts it (nothing stored to commit is no failure). A failed commit
/// loses nothing: the offsets stay stored and the next commit, or the next owner's replay, covers
/// them.
pub(crate) fn report_commit(projector: Projector, result: KafkaResult<()>, what: &str) {
    match result {
        Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
        Err(error) => {
            metrics::commit_failed(projector);
            let error = errors::chain(&error);
            tracing::warn!(%projector, %error, "{what}");
        }
    }
}
