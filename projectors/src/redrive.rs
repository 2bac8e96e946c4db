//! `projectors dead-letters redrive`: send chosen dead letters back for processing once their
//! cause is fixed.
//!
//! # Semantics
//! A projectors' dead letter holds the event's record unchanged (key, value, headers) and where
//! it was consumed (`dlq_source_topic`, `_partition`, `_offset`). Redriving one produces that
//! record again to the **same topic and partition** with the same key, value and event headers,
//! plus:
//!
//! - `dlq_history`: the earlier failed attempts (the dead letter's own history, then the dead
//!   letter itself), so if it fails again its new dead letter shows every attempt;
//! - `dlq_redriven_from`: the dead letter's `<topic>/<partition>/<offset>`.
//!
//! The dead letter's own attempt headers (`dlq_reason`, `dlq_kind`, ...) are not sent.
//!
//! # Why it cannot duplicate effects
//! A redriven record is the original event, with its deterministic `ce_id` and its
//! `ce_clustertime`; the projector applies it like a redelivery. Every projection write is
//! idempotent and guarded by the source position: a request whose document exists updates only
//! the request's own fields (never a second document, never the status back to APPROVED), a
//! status already in the history is not added again, and an event older than what a document
//! holds is stale. So a redrive of an event whose effect already happened, a redrive sent twice,
//! and a redrive arriving after newer events change nothing.
//!
//! # Once per selection
//! After Kafka acknowledged the redriven records, each dead letter's coordinates go to the redrive
//! ledger, the compacted topic `<dead-letter topic>.redriven` (key: the coordinates; value: when
//! and where it was sent). A later redrive skips what the ledger holds unless `--again`, and
//! `list` marks it. Recorded after the acknowledgement: a redrive interrupted in between sends
//! those records again next time, which is harmless (above), whereas recording first could lose
//! them.

use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use serde::Serialize;
pub use storefront_plumbing::dead_letters::RedriveOptions;
use storefront_plumbing::dead_letters::{self, DeadLetter, NotSent, Writer};
use storefront_plumbing::kafka::{KafkaSetupError, TracingContext};
use storefront_schemas::dead_letter::{self as schema, header};

use crate::config::{APP_NAME, ProjectorsConfig};

/// Why a redrive failed.
#[derive(Debug, thiserror::Error)]
pub enum RedriveError {
    /// The dead letters or the ledger could not be read.
    #[error(transparent)]
    Read(#[from] dead_letters::ReadError),
    /// Kafka could not be set up (producer, ledger topic).
    #[error(transparent)]
    Kafka(#[from] KafkaSetupError),
    /// Records were not acknowledged; those that were are in the ledger.
    #[error("{failed} of {total} redriven records were not acknowledged by kafka (run it again)")]
    Delivery {
        /// Not acknowledged.
        failed: usize,
        /// Sent.
        total: usize,
        /// The first error.
        #[source]
        source: KafkaError,
    },
}

/// One dead letter sent back (or that would be).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Redriven {
    /// The dead letter, `<topic>/<partition>/<offset>`.
    pub from: String,
    /// The topic it goes back to.
    pub topic: String,
    /// The partition it goes back to.
    pub partition: i32,
    /// Its offset there, once acknowledged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<i64>,
    /// The record's key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Why it was dead-lettered.
    pub reason: String,
    /// Failed attempts so far.
    pub attempts: usize,
}

/// What a redrive did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RedriveReport {
    /// Nothing was sent.
    pub dry_run: bool,
    /// Sent (or to send, in a dry run), in dead-letter order.
    pub redriven: Vec<Redriven>,
    /// Selected but redriven before (not sent without `--again`): coordinates.
    pub skipped_redriven_before: Vec<String>,
    /// Selected but without a value (too large for the dead-letter topic): read them at the
    /// source offset instead.
    pub skipped_value_omitted: Vec<String>,
    /// Selected but not a projectors' dead letter (no source topic, partition or offset).
    pub skipped_not_redrivable: Vec<String>,
}

impl RedriveReport {
    /// The report for people.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let verb = if self.dry_run {
            "would redrive"
        } else {
            "redrove"
        };
        out.push_str(&format!("{verb} {} dead letter(s)\n", self.redriven.len()));
        for r in &self.redriven {
            out.push_str(&format!(
                "  {} -> {}/{}{} key {} (failed {} time(s)): {}\n",
                r.from,
                r.topic,
                r.partition,
                r.offset.map(|o| format!("/{o}")).unwrap_or_default(),
                r.key.as_deref().unwrap_or("(none)"),
                r.attempts,
                r.reason
            ));
        }
        for (list, what) in [
            (
                &self.skipped_redriven_before,
                "redriven before (use --again to send again)",
            ),
            (
                &self.skipped_value_omitted,
                "without their value (too large; read at the source offset)",
            ),
            (
                &self.skipped_not_redrivable,
                "not projectors' dead letters (no source topic, partition or offset)",
            ),
        ] {
            if !list.is_empty() {
                out.push_str(&format!(
                    "skipped {} {what}: {}\n",
                    list.len(),
                    list.join(", ")
                ));
            }
        }
        out
    }
}

/// A dead letter's way back: topic and partition.
fn destination(letter: &DeadLetter) -> Option<(String, i32)> {
    if letter.writer() != Writer::Projectors {
        return None;
    }
    let topic = letter.header(header::SOURCE_TOPIC)?;
    let partition = letter.header(header::SOURCE_PARTITION)?.parse().ok()?;
    Some((topic, partition))
}

/// The headers of the redriven record: the event's own, then its history and origin.
pub fn redrive_headers(letter: &DeadLetter) -> Vec<(String, Vec<u8>)> {
    let mut history = letter.history().unwrap_or_default();
    history.push(letter.as_attempt());
    letter
        .headers
        .iter()
        .filter(|(key, _)| !key.starts_with("dlq_"))
        .filter_map(|(key, value)| Some((key.clone(), value.clone()?)))
        .chain([
            (
                header::HISTORY.to_owned(),
                schema::history_value(&history).into_bytes(),
            ),
            (
                header::REDRIVEN_FROM.to_owned(),
                letter.coordinates().into_bytes(),
            ),
        ])
        .collect()
}

/// Redrives the dead letters `options` selects.
pub async fn redrive(
    config: &ProjectorsConfig,
    options: &RedriveOptions,
) -> Result<RedriveReport, RedriveError> {
    let client_id = format!("{APP_NAME}.dead-letters");
    let selected = dead_letters::choose_for_redrive(&config.kafka, &client_id, options, |letter| {
        let (topic, partition) = destination(letter).ok_or(NotSent::NotRedrivable)?;
        if letter.header(header::VALUE_OMITTED).is_some() {
            return Err(NotSent::ValueOmitted);
        }
        Ok((topic, partition))
    })
    .await?;
    let mut report = RedriveReport {
        dry_run: options.dry_run,
        skipped_redriven_before: selected.redriven_before,
        skipped_value_omitted: selected.value_omitted,
        skipped_not_redrivable: selected.not_redrivable,
        ..RedriveReport::default()
    };
    let chosen = selected.chosen;
    report.redriven = chosen
        .iter()
        .map(|(letter, (topic, partition))| Redriven {
            from: letter.coordinates(),
            topic: topic.clone(),
            partition: *partition,
            offset: None,
            key: letter.key_text(),
            reason: letter.reason(),
            attempts: letter.attempts(),
        })
        .collect();
    if options.dry_run || chosen.is_empty() {
        return Ok(report);
    }

    let (ledger_topic, producer) = dead_letters::redrive_producer(
        &config.kafka,
        &client_id,
        &config.new_topics,
        &options.topic,
    )
    .await?;

    // Enqueued in dead-letter order (the idempotent producer keeps it per partition), then
    // acknowledged.
    let mut deliveries = Vec::with_capacity(chosen.len());
    for (letter, (topic, partition)) in &chosen {
        let headers = redrive_headers(letter);
        let mut owned = OwnedHeaders::new_with_capacity(headers.len());
        for (key, value) in &headers {
            owned = owned.insert(Header {
                key,
                value: Some(value),
            });
        }
        let mut record: FutureRecord<'_, [u8], [u8]> =
            FutureRecord::to(topic).partition(*partition).headers(owned);
        if let Some(key) = &letter.key {
            record = record.key(key);
        }
        if let Some(value) = &letter.value {
            record = record.payload(value);
        }
        deliveries.push(enqueue(&producer, record).await);
    }
    let mut first_error = None;
    let mut delivered: Vec<(usize, i64)> = Vec::new();
    for (index, delivery) in deliveries.into_iter().enumerate() {
        match delivery {
            Ok(future) => match future.await {
                Ok(Ok(delivery)) => delivered.push((index, delivery.offset)),
                Ok(Err((error, _))) => {
                    first_error.get_or_insert(error);
                }
                Err(_cancelled) => {
                    first_error.get_or_insert(KafkaError::Canceled);
                }
            },
            Err(error) => {
                first_error.get_or_insert(error);
            }
        }
    }
    for (index, offset) in &delivered {
        report.redriven[*index].offset = Some(*offset);
    }

    // The ledger, for what Kafka acknowledged.
    let now_ms = dead_letters::now_ms();
    let mut entries = Vec::with_capacity(delivered.len());
    for (index, offset) in &delivered {
        let sent = &report.redriven[*index];
        let value = serde_json::json!({
            "at_ms": now_ms,
            "to": schema::coordinates(&sent.topic, sent.partition, *offset),
        })
        .to_string();
        let record: FutureRecord<'_, str, str> = FutureRecord::to(&ledger_topic)
            .key(sent.from.as_str())
            .payload(value.as_str());
        entries.push(enqueue(&producer, record).await);
    }
    for entry in entries {
        let acknowledged = match entry {
            Ok(future) => match future.await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err((error, _))) => Err(error),
                Err(_cancelled) => Err(KafkaError::Canceled),
            },
            Err(error) => Err(error),
        };
        if let Err(error) = acknowledged {
            first_error.get_or_insert(error);
        }
    }
    match first_error {
        None => Ok(report),
        Some(source) => Err(RedriveError::Delivery {
            failed: chosen.len() - delivered.len(),
            total: chosen.len(),
            source,
        }),
    }
}

/// Enqueues `record`, waiting while the producer's queue is full; the delivery is awaited later.
async fn enqueue<K, P>(
    producer: &FutureProducer<TracingContext>,
    mut record: FutureRecord<'_, K, P>,
) -> Result<DeliveryFuture, KafkaError>
where
    K: rdkafka::message::ToBytes + ?Sized,
    P: rdkafka::message::ToBytes + ?Sized,
{
    loop {
        match producer.send_result(record) {
            Ok(delivery) => return Ok(delivery),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                // Room frees as the broker acknowledges earlier records.
                record = back;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err((error, _)) => return Err(error),
        }
    }
}
