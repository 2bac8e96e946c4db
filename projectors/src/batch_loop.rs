//! The batch loop of the live runner and of the rebuild: read a batch, apply it, store its
//! offsets, commit now and then. The two differ only in their [`Source`]: which records of a
//! batch to apply, when everything is read, and what to note after a batch is written.
//!
//! ```text
//!  consumer --recv--> batch N+1 (<= batch_size; grows while batch N is written, then waits
//!                      | decode + plan             <= batch_wait)
//!                      v
//!           Applier writes batch N --> offsets of N stored --> commit every commit_interval
//! ```
//!
//! # Guarantees
//! - **Offsets only after the writes.** A batch's offsets are stored only after
//!   [`Applier::apply_prepared`] reported it written or dead-lettered, and only for partitions
//!   still assigned (a revoked partition's records are the new owner's to apply again).
//! - **One batch written at a time.** The next batch is only read and planned while the current
//!   one is written: the two meet only at await points of one task, so the rebalance callbacks
//!   (which run inside `recv`) never see a batch half-stored.
//! - **Shutdown.** The batch being written is finished (its writes complete, its offsets are
//!   stored); a batch only read is dropped, and nothing of it is stored. A write abandoned while
//!   retrying at shutdown stores nothing either.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::OwnedMessage;
use rdkafka::{Message, Offset, TopicPartitionList};
use storefront_plumbing::kafka_io;
use tokio_util::sync::CancellationToken;

use crate::apply::{Applier, ApplyError, BatchSummary, Prepared};
use crate::config::Projector;
use crate::consumer::{ProjectorContext, report_commit};
use storefront_plumbing::errors;

/// How batches are read and committed.
#[derive(Debug, Clone, Copy)]
pub struct BatchSettings {
    /// Most records per batch.
    pub batch_size: usize,
    /// Once a batch has its first record and nothing is being written, how long it waits for
    /// more.
    pub batch_wait: Duration,
    /// How long a batch waits for its first record.
    pub idle: Duration,
    /// How often stored offsets are committed.
    pub commit_interval: Duration,
}

/// Records received, and the partitions that reported their end (only with
/// `enable.partition.eof`, which the rebuild sets).
#[derive(Debug, Default)]
pub struct Batch {
    /// In consumption order.
    pub records: Vec<OwnedMessage>,
    /// Partitions of the consumer's topic at their end.
    pub ended: Vec<i32>,
}

/// Where a loop's records come from.
pub trait Source {
    /// Whether everything to apply has been read (the live runner never is).
    fn exhausted(&self) -> bool {
        false
    }

    /// The records of `batch` to apply, in order.
    fn keep(
        &mut self,
        consumer: &StreamConsumer<ProjectorContext>,
        batch: Batch,
    ) -> Vec<OwnedMessage>;

    /// `records` are written (`summary`) and their offsets stored.
    fn written(&mut self, _records: &[OwnedMessage], _summary: &BatchSummary) {}

    /// Called once per round of the loop (progress logs).
    fn tick(&mut self) {}
}

/// Why the loop stopped without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Every record of an exhausted source is written.
    Drained,
    /// Shut down; what was written is stored.
    Shutdown,
}

/// Why the loop stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum LoopError {
    /// A batch could not be applied.
    #[error(transparent)]
    Apply(#[from] ApplyError),
    /// An offset to store is not one Kafka takes (a record with a negative offset): a bug,
    /// reported rather than leaving the batch unstored unnoticed.
    #[error("offset {offset} of {topic}/{partition} cannot be stored")]
    Offset {
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// The offset.
        offset: i64,
        /// librdkafka's refusal.
        #[source]
        source: KafkaError,
    },
}

/// Reads, applies and stores batches from `consumer` with `applier` until `source` is
/// exhausted, `shutdown`, or an error. The caller commits what is stored at the end.
pub async fn run(
    consumer: &StreamConsumer<ProjectorContext>,
    applier: &Applier,
    settings: &BatchSettings,
    source: &mut impl Source,
    shutdown: &CancellationToken,
) -> Result<Stop, LoopError> {
    let projector = consumer.context().projector();
    let mut last_commit = Instant::now();
    let mut uncommitted = false;
    // The batch read and planned, waiting to be written.
    let mut in_hand: Option<Prepared> = None;
    loop {
        if shutdown.is_cancelled() {
            return Ok(Stop::Shutdown);
        }
        if in_hand.is_none() && source.exhausted() {
            return Ok(Stop::Drained);
        }
        // Cancelled once nothing is being written (at once when no batch is in hand).
        let write_done = CancellationToken::new();
        let reading = !source.exhausted();
        let read = async {
            if !reading {
                return None;
            }
            let batch = tokio::select! {
                biased;
                () = shutdown.cancelled() => return None,
                batch = next_batch(consumer, settings, &write_done) => batch,
            };
            Some(applier.prepare(source.keep(consumer, batch)))
        };
        let next = match in_hand.take() {
            None => {
                write_done.cancel();
                read.await
            }
            Some(current) => {
                let writing = async {
                    let started = Instant::now();
                    let written = applier.apply_prepared(&current).await;
                    write_done.cancel();
                    (written, started.elapsed())
                };
                let ((written, took), next) = tokio::join!(writing, read);
                let Some(summary) = written? else {
                    return Ok(Stop::Shutdown);
                };
                tracing::debug!(
                    %projector,
                    records = summary.total(),
                    applied = summary.applied,
                    apply_ms = took.as_millis() as u64,
                    "batch applied"
                );
                uncommitted |= store_offsets(consumer, &next_offsets(current.records()))?;
                source.written(current.records(), &summary);
                next
            }
        };
        if let Some(prepared) = next
            && !prepared.records().is_empty()
        {
            in_hand = Some(prepared);
        }
        if uncommitted && last_commit.elapsed() >= settings.commit_interval {
            // Its outcome reaches `commit_callback`.
            report_commit(
                projector,
                kafka_io::commit_stored_in_background(consumer),
                "starting an offset commit failed; retried at the next interval",
            );
            last_commit = Instant::now();
            uncommitted = false;
        }
        source.tick();
    }
}

/// Receives up to `settings.batch_size` records, waiting up to `settings.idle` for the first.
/// After it, while the previous batch is still being written (`write_done` not yet cancelled),
/// every record that arrives joins this batch, so batches grow with the write time under load;
/// once nothing is being written, the batch takes only what arrives within
/// `settings.batch_wait` of its first record (with 0, what is already received), so a lone
/// event is applied at once. A partition's end ends the batch (noted in [`Batch::ended`]);
/// other consumer errors are logged and end it early.
pub async fn next_batch(
    consumer: &StreamConsumer<ProjectorContext>,
    settings: &BatchSettings,
    write_done: &CancellationToken,
) -> Batch {
    let projector = consumer.context().projector();
    let mut batch = Batch::default();
    match tokio::time::timeout(settings.idle, consumer.recv()).await {
        Err(_) => return batch,
        Ok(Err(error)) => {
            note_error(projector, &mut batch, error);
            return batch;
        }
        Ok(Ok(message)) => batch.records.push(message.detach()),
    }
    let deadline = tokio::time::Instant::now() + settings.batch_wait;
    while batch.records.len() < settings.batch_size {
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
            Ok(message) => batch.records.push(message.detach()),
            Err(error) => {
                note_error(projector, &mut batch, error);
                break;
            }
        }
    }
    batch
}

fn note_error(projector: Projector, batch: &mut Batch, error: KafkaError) {
    if let KafkaError::PartitionEOF(partition) = error {
        batch.ended.push(partition);
        return;
    }
    // librdkafka reports broker disconnects and similar here and recovers by itself.
    let error = errors::chain(&error);
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

/// The list of `offsets` to store, for the partitions `assigned` says are still this
/// instance's (a revoked partition's records are the new owner's to commit).
fn offsets_to_store(
    offsets: &BTreeMap<(String, i32), i64>,
    assigned: impl Fn(&str, i32) -> bool,
) -> Result<TopicPartitionList, LoopError> {
    let mut list = TopicPartitionList::new();
    for ((topic, partition), offset) in offsets {
        if assigned(topic, *partition) {
            list.add_partition_offset(topic, *partition, Offset::Offset(*offset))
                .map_err(|source| LoopError::Offset {
                    topic: topic.clone(),
                    partition: *partition,
                    offset: *offset,
                    source,
                })?;
        }
    }
    Ok(list)
}

/// Stores `offsets` for the partitions still assigned; whether any was stored.
fn store_offsets(
    consumer: &StreamConsumer<ProjectorContext>,
    offsets: &BTreeMap<(String, i32), i64>,
) -> Result<bool, LoopError> {
    let context = consumer.context();
    let list = offsets_to_store(offsets, |topic, partition| {
        context.is_assigned(topic, partition)
    })?;
    if list.count() == 0 {
        return Ok(false);
    }
    match consumer.store_offsets(&list) {
        Ok(()) => Ok(true),
        Err(error) => {
            // The partitions moved between the check and the store: the new owner replays.
            let error = errors::chain(&error);
            tracing::debug!(projector = %context.projector(), %error, "offsets not stored (partitions moved)");
            Ok(false)
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

    #[test]
    fn only_assigned_partitions_are_stored_and_an_invalid_offset_is_an_error() {
        let offsets: BTreeMap<(String, i32), i64> = [
            (("a".into(), 0), 8),
            (("a".into(), 1), 10),
            (("b".into(), 0), 1),
        ]
        .into();
        let list =
            offsets_to_store(&offsets, |topic, partition| (topic, partition) != ("a", 1)).unwrap();
        let stored: Vec<(String, i32, Offset)> = list
            .elements()
            .iter()
            .map(|e| (e.topic().to_owned(), e.partition(), e.offset()))
            .collect();
        assert_eq!(
            stored,
            [
                ("a".to_owned(), 0, Offset::Offset(8)),
                ("b".to_owned(), 0, Offset::Offset(1))
            ]
        );
        // A negative offset was skipped without a word before.
        let invalid: BTreeMap<(String, i32), i64> = [(("a".into(), 0), -5)].into();
        let error = offsets_to_store(&invalid, |_, _| true).unwrap_err();
        assert!(
            matches!(error, LoopError::Offset { offset: -5, .. }),
            "{error:?}"
        );
    }
}
