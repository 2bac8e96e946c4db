//! The live loop of one projector: consume a batch, apply it, store its offsets, commit.
//!
//! ```text
//!  Kafka (group <prefix>.<projector>) --recv--> batch N+1 (<= apply.batch_size; grows while
//!                                                 batch N is written, then <= batch_wait_ms)
//!        ^                                        | decode + plan (while batch N is written)
//!        |  commit (every apply.commit_interval_ms, on revoke, at shutdown)
//!        |                                        v
//!   stored offsets <-- after batch N is applied -- Applier (MongoDB writes, dead letters)
//! ```
//!
//! # Delivery guarantees
//! - **At least once, never ahead of MongoDB.** Offsets are stored (`enable.auto.offset.store`
//!   is off) only after [`Applier::apply_prepared`] reported the whole batch written or
//!   dead-lettered, and only stored offsets are ever committed (`enable.auto.commit` is off). A
//!   crash replays the records after the last commit; every write is idempotent, so replaying is
//!   harmless.
//! - **Per-key order.** A key's events are in one partition, a partition is consumed by one
//!   instance at a time, and batches are written one after another (the next one is only read
//!   and planned meanwhile); within a batch the projections collapse a key's events to the
//!   newest. The writes are guarded by source position anyway, so even the overlap of a
//!   rebalance (two instances briefly applying one partition's records) cannot regress a
//!   document.
//! - **Rebalances.** librdkafka runs the rebalance callbacks inside `recv`, on this task: when
//!   partitions are revoked, the offsets stored so far (all of them applied) are committed
//!   synchronously before the partitions move. Records of a revoked partition still in a batch
//!   being read are dropped, and a batch being written when its partitions move stores no
//!   offsets for them: the new owner applies those records again, harmlessly.
//! - **Shutdown.** The batch being written is finished (its writes complete, its offsets are
//!   stored), a batch only read is dropped, then the offsets are committed and the consumer
//!   leaves the group.
//! - **Long outages.** While a batch is retried the consumer is not polled: lag metrics pause,
//!   and past librdkafka's `max.poll.interval.ms` (5 minutes) the instance leaves the group and
//!   rejoins when the write succeeds (its partitions may have moved meanwhile; nothing is lost).
//!
//! Consumer lag per partition comes from librdkafka's statistics (`apply.lag_interval_ms`).

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::OwnedMessage;
use rdkafka::statistics::Statistics;
use rdkafka::{Message, Offset, TopicPartitionList};
use storefront_plumbing::kafka::{self, KafkaSetupError, TracingContext};
use storefront_plumbing::kafka_io;
use storefront_plumbing::telemetry::{ComponentState, Health};
use tokio_util::sync::CancellationToken;

use crate::apply::{Applier, ApplyError, Prepared};
use crate::config::{ApplySettings, Projector, ProjectorsConfig};
use crate::metrics;

/// Consumer callbacks: rebalance bookkeeping and commits, lag metrics, librdkafka logs.
pub struct ProjectorContext {
    projector: Projector,
    /// Partitions currently assigned, as `(topic, partition)`.
    assignment: Mutex<HashSet<(String, i32)>>,
    health: Health,
    component: String,
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
        }
    }

    fn assignment(&self) -> std::sync::MutexGuard<'_, HashSet<(String, i32)>> {
        self.assignment
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
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
        TracingContext.error(error, reason);
    }

    fn stats(&self, statistics: Statistics) {
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

/// Why a projector's consumer stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    /// The consumer could not be created or subscribed. Not retryable.
    #[error("projector {projector}: kafka consumer: {source}")]
    Consumer {
        /// The projector.
        projector: Projector,
        /// librdkafka's error.
        #[source]
        source: Box<KafkaSetupError>,
    },
    /// A batch could not be applied.
    #[error(transparent)]
    Apply(#[from] ApplyError),
}

impl RunnerError {
    /// Whether restarting the projector can help: not without an operator.
    pub fn is_retryable(&self) -> bool {
        false
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
) -> Result<StreamConsumer<ProjectorContext>, RunnerError> {
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
        .map_err(|source| RunnerError::Consumer {
            projector,
            source: Box::new(KafkaSetupError::Config(source)),
        })
}

/// Receives up to `settings.batch_size` records, waiting up to `idle` for the first. After it,
/// while the previous batch is still being written (`write_done` not yet cancelled), every record
/// that arrives joins this batch, so batches grow with the write time under load; once nothing is
/// being written, the batch takes only what arrives within `settings.batch_wait_ms` of its first
/// record (with 0, what is already received), so a lone event is applied at once. Consumer errors
/// are logged and end the batch early.
pub async fn next_batch(
    consumer: &StreamConsumer<ProjectorContext>,
    settings: &ApplySettings,
    idle: Duration,
    write_done: &CancellationToken,
) -> Vec<OwnedMessage> {
    let projector = consumer.context().projector;
    let mut batch = Vec::new();
    match tokio::time::timeout(idle, consumer.recv()).await {
        Err(_) => return batch,
        Ok(Err(error)) => {
            log_consumer_error(projector, &error);
            return batch;
        }
        Ok(Ok(message)) => batch.push(message.detach()),
    }
    let deadline = tokio::time::Instant::now() + Duration::from_millis(settings.batch_wait_ms);
    while batch.len() < settings.batch_size {
        let received = if write_done.is_cancelled() {
            // A deadline already past still returns a record that is ready: Timeout polls the
            // receive before its timer.
            match tokio::time::timeout_at(deadline, consumer.recv()).await {
                Err(_) => break,
                Ok(received) => received,
            }
        } else {
            tokio::select! {
                biased;
                received = consumer.recv() => received,
                () = write_done.cancelled() => continue,
            }
        };
        match received {
            Ok(message) => batch.push(message.detach()),
            Err(error) => {
                log_consumer_error(projector, &error);
                break;
            }
        }
    }
    batch
}

fn log_consumer_error(projector: Projector, error: &KafkaError) {
    // librdkafka reports broker disconnects and similar here and recovers by itself.
    tracing::warn!(%projector, %error, "kafka consumer error");
}

/// The highest offset per partition of `records`, plus one: what to store once they are applied.
pub fn next_offsets(records: &[OwnedMessage]) -> BTreeMap<(String, i32), i64> {
    let mut next: BTreeMap<(String, i32), i64> = BTreeMap::new();
    for record in records {
        let slot = next
            .entry((record.topic().to_owned(), record.partition()))
            .or_insert(0);
        *slot = (*slot).max(record.offset() + 1);
    }
    next
}

/// Stores `offsets` for the partitions still assigned (a revoked partition's records are the new
/// owner's to commit).
pub fn store_offsets(
    consumer: &StreamConsumer<ProjectorContext>,
    offsets: &BTreeMap<(String, i32), i64>,
) -> bool {
    let context = consumer.context();
    let mut list = TopicPartitionList::new();
    for ((topic, partition), offset) in offsets {
        if context.is_assigned(topic, *partition) {
            // Fails only for an invalid offset value, which one past a consumed record is not.
            let _ = list.add_partition_offset(topic, *partition, Offset::Offset(*offset));
        }
    }
    if list.count() == 0 {
        return false;
    }
    match consumer.store_offsets(&list) {
        Ok(()) => true,
        Err(error) => {
            tracing::debug!(projector = %context.projector, %error, "offsets not stored (partitions moved)");
            false
        }
    }
}

/// Runs one projector until `shutdown` or a permanent failure.
pub async fn run(
    config: &ProjectorsConfig,
    projector: Projector,
    client_id: &str,
    applier: Applier,
    health: Health,
    shutdown: CancellationToken,
) -> Result<(), RunnerError> {
    let consumer = Arc::new(consumer(config, projector, client_id, health.clone(), &[])?);
    let topics = config.source_topics(projector);
    let topic_refs: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer
        .subscribe(&topic_refs)
        .map_err(|source| RunnerError::Consumer {
            projector,
            source: Box::new(KafkaSetupError::Config(source)),
        })?;
    tracing::info!(
        %projector,
        group = %config.consumer_group(projector),
        topics = ?topics,
        target = %config.target(projector),
        "projector consuming"
    );
    let commit_interval = Duration::from_millis(config.apply.commit_interval_ms);
    let mut last_commit = Instant::now();
    let mut uncommitted = false;
    // The batch collected and planned, waiting to be written.
    let mut in_hand: Option<Prepared> = None;
    let outcome = loop {
        if shutdown.is_cancelled() {
            // A batch in hand is not written: nothing of it is stored, the next owner reads it.
            break Ok(());
        }
        // Cancelled once nothing is being written (at once when no batch is in hand).
        let write_done = CancellationToken::new();
        let collect = collect_next(
            &consumer,
            &applier,
            &config.apply,
            commit_interval,
            &shutdown,
            &write_done,
        );
        let next = match in_hand.take() {
            None => {
                write_done.cancel();
                collect.await
            }
            Some(current) => {
                // Write this batch while the next one is received, decoded and planned: the
                // two meet only at await points of this one task, so the rebalance callbacks
                // (which run inside recv) never see a batch half-stored.
                let writing = async {
                    let written = write(&consumer, &applier, &current).await;
                    write_done.cancel();
                    written
                };
                let (written, next) = tokio::join!(writing, collect);
                match written {
                    Ok(Some(stored)) => uncommitted |= stored,
                    Ok(None) => break Ok(()),
                    Err(error) => break Err(error),
                }
                next
            }
        };
        match next {
            None => break Ok(()),
            Some(prepared) if prepared.records().is_empty() => {}
            Some(prepared) => in_hand = Some(prepared),
        }
        if uncommitted && last_commit.elapsed() >= commit_interval {
            // Its outcome reaches `commit_callback`.
            report_commit(
                projector,
                kafka_io::commit_stored_in_background(&*consumer),
                "starting an offset commit failed; retried at the next interval",
            );
            last_commit = Instant::now();
            uncommitted = false;
        }
    };
    if let Err(error) = &outcome {
        health.set(
            &component(projector),
            ComponentState::Failing(error.to_string()),
        );
    }
    // Applied batches are stored: commit them before leaving the group.
    report_commit(
        projector,
        kafka_io::commit_stored(&consumer).await,
        "offset commit at shutdown failed; the next owner replays from the last commit",
    );
    tracing::info!(%projector, "projector stopped");
    outcome
}

/// The next batch, without records of partitions revoked while it was received, decoded and
/// planned; `None` at shutdown.
async fn collect_next(
    consumer: &StreamConsumer<ProjectorContext>,
    applier: &Applier,
    settings: &ApplySettings,
    idle: Duration,
    shutdown: &CancellationToken,
    write_done: &CancellationToken,
) -> Option<Prepared> {
    let batch = tokio::select! {
        biased;
        () = shutdown.cancelled() => return None,
        batch = next_batch(consumer, settings, idle, write_done) => batch,
    };
    // Rebalance callbacks ran inside recv: drop what now belongs to another instance.
    let batch: Vec<OwnedMessage> = batch
        .into_iter()
        .filter(|r| consumer.context().is_assigned(r.topic(), r.partition()))
        .collect();
    Some(applier.prepare(batch))
}

/// Writes `prepared` and stores its offsets. `Some(stored)`: written (`stored`: offsets were
/// stored for partitions still assigned); `None`: abandoned at shutdown while retrying.
async fn write(
    consumer: &StreamConsumer<ProjectorContext>,
    applier: &Applier,
    prepared: &Prepared,
) -> Result<Option<bool>, RunnerError> {
    let started = Instant::now();
    let Some(summary) = applier.apply_prepared(prepared).await? else {
        return Ok(None);
    };
    tracing::debug!(
        projector = %consumer.context().projector,
        records = summary.total(),
        applied = summary.applied,
        apply_ms = started.elapsed().as_millis() as u64,
        "batch applied"
    );
    Ok(Some(store_offsets(
        consumer,
        &next_offsets(prepared.records()),
    )))
}

/// Logs a failed commit and counts it (nothing stored to commit is no failure). A failed commit
/// loses nothing: the offsets stay stored and the next commit, or the next owner's replay, covers
/// them.
pub(crate) fn report_commit(projector: Projector, result: KafkaResult<()>, what: &str) {
    match result {
        Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
        Err(error) => {
            metrics::commit_failed(projector);
            tracing::warn!(%projector, %error, "{what}");
        }
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::Timestamp;

    use super::*;

    fn record(topic: &str, partition: i32, offset: i64) -> OwnedMessage {
        OwnedMessage::new(
            None,
            None,
            topic.to_owned(),
            Timestamp::NotAvailable,
            partition,
            offset,
            None,
        )
    }

    #[test]
    fn offsets_to_store_are_one_past_the_highest_per_partition() {
        let records = vec![
            record("a", 0, 5),
            record("a", 1, 9),
            record("a", 0, 7),
            record("b", 0, 0),
            record("a", 0, 6),
        ];
        let next = next_offsets(&records);
        assert_eq!(
            next.into_iter().collect::<Vec<_>>(),
            vec![
                (("a".into(), 0), 8),
                (("a".into(), 1), 10),
                (("b".into(), 0), 1)
            ]
        );
    }
}
