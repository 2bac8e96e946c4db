//! The live loop of one projector: subscribe its consumer group, then consume a batch, apply it,
//! store its offsets, commit ([`crate::batch_loop`], shared with the rebuild).
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
//!   is off) only after [`Applier::apply_prepared`](crate::apply::Applier::apply_prepared)
//!   reported the whole batch written or
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

use std::sync::Arc;
use std::time::Duration;

use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::OwnedMessage;
use storefront_plumbing::kafka::KafkaSetupError;
use storefront_plumbing::kafka_io;
use storefront_plumbing::telemetry::{ComponentState, Health};
use tokio_util::sync::CancellationToken;

use crate::apply::Applier;
use crate::batch_loop::{self, Batch, BatchSettings, LoopError, Source};
use crate::config::{Projector, ProjectorsConfig};
use crate::consumer::{self, ProjectorContext, report_commit};
use storefront_plumbing::errors;

/// Why a projector's consumer stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    /// The consumer could not be created or subscribed.
    #[error("projector {projector}: the kafka consumer cannot be created or subscribed")]
    Consumer {
        /// The projector.
        projector: Projector,
        /// librdkafka's error.
        #[source]
        source: Box<KafkaSetupError>,
    },
    /// The batch loop failed.
    #[error(transparent)]
    Batch(#[from] LoopError),
}

/// The live consumer group: records of partitions revoked while a batch was read are dropped.
struct Live;

impl Source for Live {
    fn keep(
        &mut self,
        consumer: &StreamConsumer<ProjectorContext>,
        batch: Batch,
    ) -> Vec<OwnedMessage> {
        // Rebalance callbacks ran inside recv: drop what now belongs to another instance.
        batch
            .records
            .into_iter()
            .filter(|r| consumer.context().is_assigned(r.topic(), r.partition()))
            .collect()
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
    let failed = |source| RunnerError::Consumer {
        projector,
        source: Box::new(source),
    };
    let consumer = Arc::new(
        consumer::consumer(config, projector, client_id, health.clone(), &[]).map_err(failed)?,
    );
    let topics = config.source_topics(projector);
    let topic_refs: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer
        .subscribe(&topic_refs)
        .map_err(|source| failed(KafkaSetupError::Config(source)))?;
    tracing::info!(
        %projector,
        group = %config.consumer_group(projector),
        topics = ?topics,
        target = %config.target(projector),
        "projector consuming"
    );
    let commit_interval = Duration::from_millis(config.apply.commit_interval_ms);
    let settings = BatchSettings {
        batch_size: config.apply.batch_size,
        batch_wait: Duration::from_millis(config.apply.batch_wait_ms),
        idle: commit_interval,
        commit_interval,
    };
    let outcome = batch_loop::run(&consumer, &applier, &settings, &mut Live, &shutdown)
        .await
        .map(drop)
        .map_err(RunnerError::from);
    if let Err(error) = &outcome {
        health.set(
            &consumer::component(projector),
            ComponentState::Failing(errors::chain(error)),
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
