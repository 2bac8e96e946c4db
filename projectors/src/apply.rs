//! Applying one batch of records: decode, project, write, dead-letter, retry.
//!
//! ```text
//! records --decode--> events --plan--> Prepared --executor (store)--> outcomes
//!            \--> poison                                      \--> refused writes
//!                   \___________________ dead letters (acknowledged) ________/
//! ```
//!
//! [`Applier::prepare`] decodes and plans (CPU only, so the batch loop does it for the next batch
//! while the current one is written); [`Applier::apply_prepared`] writes through
//! [`crate::executor`] and sends the dead letters.
//!
//! # Delivery guarantees
//! [`Applier::apply_prepared`] returns `Ok(Some(_))` only when every event of the batch is in
//! MongoDB (applied, or already there) or its dead letter is acknowledged by Kafka: the caller may
//! then store the batch's offsets. Nothing is committed otherwise; in particular a batch whose
//! outcomes do not line up with its records is an error ([`ApplyError::Unsettled`]), never
//! counted as anything.
//!
//! # Retries
//! Transient failures (MongoDB unreachable, stepping down, a timeout, Kafka not acknowledging a
//! dead letter) are retried with capped exponential backoff and jitter ([`Backoff`]), forever,
//! while `/health` shows the failing component (`mongo` or `kafka`) and
//! `projector_retries_total` counts. Every write is idempotent, so retrying a batch that was
//! partly applied is harmless. A write already sent is allowed to finish at shutdown; only the
//! pause between attempts is cut short, and then the batch is abandoned uncommitted
//! (`Ok(None)`): the next owner of its partitions applies it again. A permanent failure
//! (MongoDB refusing the command itself, a broken invariant) returns [`ApplyError`] and stops the
//! projector.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::Message;
use rdkafka::message::OwnedMessage;
use storefront_plumbing::kafka::KafkaSetupError;
use storefront_plumbing::retry::Backoff;
use storefront_plumbing::telemetry::{ComponentState, Health};
use storefront_schemas::topology::StorefrontTopics;
use tokio_util::sync::CancellationToken;

use crate::config::{APP_NAME, Projector, ProjectorsConfig};
use crate::dead_letter::DeadLetters;
use crate::event::{self, Event, Poison};
use crate::executor::{self, ExecuteError};
use crate::metrics;
use crate::projection::{Outcome, Plan, Projection};
use crate::store::Store;
use storefront_plumbing::errors;

/// Why a batch could not be applied (the applier already retried everything transient).
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// MongoDB refused the writes, or the projection could not settle them, in a way retrying
    /// cannot fix.
    #[error("projector {projector}: writing a batch failed")]
    Write {
        /// The projector.
        projector: Projector,
        /// What failed.
        #[source]
        source: ExecuteError,
    },
    /// The outcomes did not line up with the batch's events: a bug, reported rather than
    /// counting the batch as anything.
    #[error("projector {projector}: {outcomes} outcomes for a batch of {events} events")]
    Unsettled {
        /// The projector.
        projector: Projector,
        /// Events decoded from the batch.
        events: usize,
        /// Outcomes the execution returned.
        outcomes: usize,
    },
}

/// What became of a batch.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BatchSummary {
    /// Events that changed a document.
    pub applied: u64,
    /// Events already superseded.
    pub stale: u64,
    /// Events applied before.
    pub duplicates: u64,
    /// Records sent to the dead-letter topic.
    pub dead_letters: u64,
}

impl BatchSummary {
    /// Every record of the batch.
    pub fn total(&self) -> u64 {
        self.applied + self.stale + self.duplicates + self.dead_letters
    }
}

/// A batch decoded and planned, ready to be written.
#[derive(Debug)]
pub struct Prepared {
    records: Vec<OwnedMessage>,
    decoded: Vec<Result<Event, Poison>>,
    plan: Plan,
}

impl Prepared {
    /// The batch's records, in consumption order.
    pub fn records(&self) -> &[OwnedMessage] {
        &self.records
    }
}

/// Applies batches for one projector.
#[derive(Debug)]
pub struct Applier {
    projector: Projector,
    topics: StorefrontTopics,
    projection: Projection,
    store: Store,
    dead_letters: DeadLetters,
    retry_initial: Duration,
    retry_max: Duration,
    health: Health,
    shutdown: CancellationToken,
}

impl Applier {
    /// The applier of `projector` as `config` describes it, writing through `client` and
    /// reporting to `health`; its retries stop at `shutdown`.
    pub fn build(
        config: &ProjectorsConfig,
        projector: Projector,
        client: &mongodb::Client,
        health: Health,
        shutdown: CancellationToken,
    ) -> Result<Self, KafkaSetupError> {
        let target = config.target(projector);
        let store = Store::new(
            client.database(&target.database),
            &target.collection,
            config.apply.batch_size,
            Duration::from_millis(config.apply.write_timeout_ms),
        );
        let dead_letters = DeadLetters::new(
            &config.kafka,
            APP_NAME,
            &config.apply.dead_letter_topic,
            projector,
        )?;
        Ok(Self {
            projector,
            topics: config.topics.clone(),
            projection: Projection::for_projector(projector, config),
            store,
            dead_letters,
            retry_initial: Duration::from_millis(config.apply.retry_initial_ms),
            retry_max: Duration::from_millis(config.apply.retry_max_ms),
            health,
            shutdown,
        })
    }

    /// The projection applied.
    pub fn projection(&self) -> &Projection {
        &self.projection
    }

    /// The store written.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Decodes and plans `records` (one batch, in consumption order): CPU only, no I/O, so the
    /// runner does it for the next batch while the current one is being written.
    pub fn prepare(&self, records: Vec<OwnedMessage>) -> Prepared {
        let decoded: Vec<Result<Event, Poison>> = records
            .iter()
            .map(|record| event::decode(record, &self.topics))
            .collect();
        let events: Vec<&Event> = decoded.iter().filter_map(|d| d.as_ref().ok()).collect();
        let plan = self.projection.plan(&events);
        Prepared {
            records,
            decoded,
            plan,
        }
    }

    /// Writes a prepared batch and sends its dead letters. `Ok(None)`: shut down while waiting to
    /// retry; the batch must not be committed.
    pub async fn apply_prepared(
        &self,
        prepared: &Prepared,
    ) -> Result<Option<BatchSummary>, ApplyError> {
        let started = Instant::now();
        let events: Vec<&Event> = prepared
            .decoded
            .iter()
            .filter_map(|d| d.as_ref().ok())
            .collect();
        let Some(outcomes) = self.project(&events, &prepared.plan).await? else {
            return Ok(None);
        };
        let outcomes = line_up(&prepared.decoded, outcomes).map_err(|(events, outcomes)| {
            ApplyError::Unsettled {
                projector: self.projector,
                events,
                outcomes,
            }
        })?;
        let mut letters: Vec<(&OwnedMessage, Poison)> = Vec::new();
        let mut summary = BatchSummary::default();
        let mut newest_time = None;
        let mut counts: BTreeMap<(&str, &'static str), u64> = BTreeMap::new();
        let mut applied_times: Vec<(&str, i64)> = Vec::new();
        for ((record, decoded), outcome) in
            prepared.records.iter().zip(&prepared.decoded).zip(outcomes)
        {
            if let Ok(event) = decoded {
                newest_time = newest_time.max(Some(event.metadata.time_ms));
                if outcome == Outcome::Applied {
                    applied_times.push((record.topic(), event.metadata.time_ms));
                }
            }
            let label = match outcome {
                Outcome::Applied => {
                    summary.applied += 1;
                    "applied"
                }
                Outcome::Stale => {
                    summary.stale += 1;
                    "stale"
                }
                Outcome::Duplicate => {
                    summary.duplicates += 1;
                    "duplicate"
                }
                Outcome::DeadLetter(poison) => {
                    summary.dead_letters += 1;
                    letters.push((record, poison));
                    "dead_letter"
                }
            };
            *counts.entry((record.topic(), label)).or_default() += 1;
        }
        if !letters.is_empty() && !self.dead_letter(&letters).await {
            return Ok(None);
        }
        // Counted once the batch is settled, so the counters never run ahead of what is
        // written or dead-lettered.
        for ((topic, label), count) in counts {
            metrics::events(self.projector, topic, label, count);
        }
        let now_ms = metrics::now_ms();
        if let Some(time_ms) = newest_time {
            metrics::behind_source(self.projector, time_ms, now_ms);
        }
        for (topic, time_ms) in applied_times {
            metrics::end_to_end(self.projector, topic, time_ms, now_ms);
        }
        metrics::applied(self.projector, started.elapsed());
        Ok(Some(summary))
    }

    /// Runs the projection, retrying transient failures; `None` at shutdown.
    async fn project(
        &self,
        events: &[&Event],
        plan: &Plan,
    ) -> Result<Option<Vec<Outcome>>, ApplyError> {
        if events.is_empty() {
            return Ok(Some(Vec::new()));
        }
        let mut backoff = Backoff::new(self.retry_initial, self.retry_max);
        loop {
            match executor::execute(&self.store, &self.projection, events, plan).await {
                Ok(outcomes) => {
                    self.health.set("mongo", ComponentState::Ready);
                    return Ok(Some(outcomes));
                }
                Err(error) if error.is_retryable() => {
                    metrics::retry(self.projector, "mongo_write");
                    let error = errors::chain(&error);
                    self.health
                        .set("mongo", ComponentState::Failing(error.clone()));
                    let delay = backoff.next_delay();
                    tracing::warn!(
                        projector = %self.projector,
                        %error,
                        retry_in_ms = delay.as_millis() as u64,
                        "writing a batch to mongodb failed; retrying"
                    );
                    if !self.pause(delay).await {
                        tracing::info!(projector = %self.projector, "shutdown while retrying; batch left uncommitted");
                        return Ok(None);
                    }
                }
                Err(source) => {
                    self.health
                        .set("mongo", ComponentState::Failing(errors::chain(&source)));
                    return Err(ApplyError::Write {
                        projector: self.projector,
                        source,
                    });
                }
            }
        }
    }

    /// Sends the dead letters, retrying undelivered ones; `false` at shutdown.
    async fn dead_letter(&self, letters: &[(&OwnedMessage, Poison)]) -> bool {
        let mut pending: Vec<(&OwnedMessage, &Poison)> = letters
            .iter()
            .map(|(record, poison)| (*record, poison))
            .collect();
        let mut backoff = Backoff::new(self.retry_initial, self.retry_max);
        loop {
            let results = self.dead_letters.send_all(&pending).await;
            let mut failed = Vec::new();
            let mut last_error = None;
            for ((record, poison), result) in pending.iter().zip(results) {
                match result {
                    Ok(()) => {
                        metrics::dead_letter(self.projector, record.topic(), poison.kind);
                        // The reason can quote parts of the record (serde names the offending
                        // value), so it goes to the dead-letter header, not to the log.
                        tracing::warn!(
                            projector = %self.projector,
                            topic = record.topic(),
                            partition = record.partition(),
                            offset = record.offset(),
                            kind = poison.kind.as_str(),
                            dead_letter_topic = self.dead_letters.topic(),
                            "record sent to the dead-letter topic (reason in its dlq_reason header)"
                        );
                    }
                    Err(error) => {
                        last_error = Some(error);
                        failed.push((*record, *poison));
                    }
                }
            }
            let Some(error) = last_error else {
                self.health.set("kafka", ComponentState::Ready);
                return true;
            };
            metrics::retry(self.projector, "dead_letter");
            let error = errors::chain(&error);
            self.health
                .set("kafka", ComponentState::Failing(error.clone()));
            let delay = backoff.next_delay();
            tracing::warn!(
                projector = %self.projector,
                %error,
                undelivered = failed.len(),
                retry_in_ms = delay.as_millis() as u64,
                "dead letters not acknowledged; retrying"
            );
            if !self.pause(delay).await {
                return false;
            }
            pending = failed;
        }
    }

    /// Sleeps `delay`; `false` if shut down first.
    async fn pause(&self, delay: Duration) -> bool {
        tokio::select! {
            () = self.shutdown.cancelled() => false,
            () = tokio::time::sleep(delay) => true,
        }
    }
}

/// Each record's outcome: its poison, or the next of `outcomes` (one per decoded event, in
/// order). `Err((events, outcomes))` when the counts differ.
fn line_up(
    decoded: &[Result<Event, Poison>],
    outcomes: Vec<Outcome>,
) -> Result<Vec<Outcome>, (usize, usize)> {
    let events = decoded.iter().filter(|d| d.is_ok()).count();
    // A missing outcome must not pass as stale (or anything): the batch would be committed with
    // an event never written.
    let mismatch = (events, outcomes.len());
    if mismatch.0 != mismatch.1 {
        return Err(mismatch);
    }
    let mut outcomes = outcomes.into_iter();
    let mut lined = Vec::with_capacity(decoded.len());
    for decoded in decoded {
        lined.push(match decoded {
            Ok(_) => outcomes.next().ok_or(mismatch)?,
            Err(poison) => Outcome::DeadLetter(poison.clone()),
        });
    }
    Ok(lined)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_line_up_with_the_records_or_the_batch_fails() {
        use storefront_schemas::metadata::{
            EventMetadata, EventType, SCHEMA_VERSION, SourcePosition,
        };
        use storefront_schemas::topology::Namespace;
        let event = || {
            Ok(Event {
                metadata: EventMetadata {
                    id: "e".into(),
                    event_type: EventType::CustomerDeleted,
                    schema_version: SCHEMA_VERSION,
                    source: Namespace::new("accounts", "customer.accounts"),
                    position: SourcePosition::from_u64(1),
                    time_ms: 0,
                    subject: "c".into(),
                },
                body: crate::event::EventBody::CustomerDeleted {
                    id: storefront_schemas::documents::CustomerId::Text("c".into()),
                },
            })
        };
        let poison = Poison::contract("bad");
        let decoded = vec![event(), Err(poison.clone()), event()];
        // (what, outcomes of the two events, records' outcomes | (events, outcomes))
        type Case = (
            &'static str,
            Vec<Outcome>,
            Result<Vec<Outcome>, (usize, usize)>,
        );
        let cases: Vec<Case> = vec![
            (
                "one per event; poison in its place",
                vec![Outcome::Applied, Outcome::Stale],
                Ok(vec![
                    Outcome::Applied,
                    Outcome::DeadLetter(poison.clone()),
                    Outcome::Stale,
                ]),
            ),
            // Was counted stale before, and the batch committed with the event never written.
            ("one missing", vec![Outcome::Applied], Err((2, 1))),
            (
                "one too many",
                vec![Outcome::Applied, Outcome::Applied, Outcome::Applied],
                Err((2, 3)),
            ),
        ];
        for (what, outcomes, expected) in cases {
            assert_eq!(line_up(&decoded, outcomes), expected, "{what}");
        }
    }
}
