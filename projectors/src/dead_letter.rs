//! Dead letters: records that cannot be applied, kept with their original bytes and the reason.
//!
//! A dead-letter record carries the source record's key and value **unchanged** (so nothing is
//! lost and a fixed record can be re-driven by copying it back), the source record's headers, and
//! these headers:
//!
//! | header | value |
//! |---|---|
//! | `dlq_reason` | why it cannot be applied |
//! | `dlq_kind` | `headers`, `not_json`, `schema`, `contract` or `rejected` |
//! | `dlq_projector` | the projector that refused it |
//! | `dlq_source_topic`, `dlq_source_partition`, `dlq_source_offset` | where it came from |
//!
//! A record sent back by `projectors dead-letters redrive` carries `dlq_history` (its earlier
//! failed attempts) and `dlq_redriven_from`; if it fails again, its dead letter keeps both, so
//! the history grows by one attempt per failure (`docs/dead-letters.md`). Headers naming an
//! attempt (`dlq_reason`, `dlq_kind`, ...) on the incoming record are not copied: the dead letter
//! carries each once, for this attempt.
//!
//! The producer is idempotent with `acks=all`; the runner commits a poisoned record's offset only
//! after its dead letter is acknowledged. A dead letter too large for the topic is sent without
//! its value (header `dlq_value_omitted`), pointing at the source offset instead of being lost.

use std::time::Duration;

use rdkafka::Message;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use storefront_plumbing::kafka::{self, KafkaSetupError, TracingContext};
use storefront_plumbing::settings::KafkaSettings;

use crate::config::Projector;
use crate::event::Poison;

/// Header names of dead-letter records (shared with the connector's dead letters).
pub use storefront_schemas::dead_letter::header;

/// Why a dead letter could not be written.
#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    /// Kafka did not acknowledge it (brokers unreachable, timed out). Retryable.
    #[error("dead letter to {topic} not delivered")]
    Delivery {
        /// The dead-letter topic.
        topic: String,
        /// librdkafka's error.
        #[source]
        source: KafkaError,
    },
}

/// The dead-letter producer of one projector.
pub struct DeadLetters {
    producer: FutureProducer<TracingContext>,
    topic: String,
    projector: Projector,
}

impl std::fmt::Debug for DeadLetters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetters")
            .field("topic", &self.topic)
            .field("projector", &self.projector)
            .finish_non_exhaustive()
    }
}

impl DeadLetters {
    /// An idempotent producer to `topic`.
    pub fn new(
        settings: &KafkaSettings,
        client_id: &str,
        topic: &str,
        projector: Projector,
    ) -> Result<Self, KafkaSetupError> {
        // Fail a delivery within a minute rather than librdkafka's five, so the runner's retry
        // (and /health) reports an unreachable cluster promptly; nothing is dropped either way.
        let producer =
            kafka::producer_config(settings, client_id, &[("message.timeout.ms", "60000")])
                .create_with_context(TracingContext)
                .map_err(KafkaSetupError::Config)?;
        Ok(Self {
            producer,
            topic: topic.to_owned(),
            projector,
        })
    }

    /// The dead-letter topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Sends one dead letter per `(record, poison)` and waits for every acknowledgement. Returns
    /// one result per letter, so a retry resends only the failed ones.
    pub async fn send_all(
        &self,
        letters: &[(&OwnedMessage, &Poison)],
    ) -> Vec<Result<(), DeadLetterError>> {
        let sends = letters
            .iter()
            .map(|(record, poison)| self.send(record, poison));
        futures::future::join_all(sends).await
    }

    async fn send(&self, record: &OwnedMessage, poison: &Poison) -> Result<(), DeadLetterError> {
        match self.deliver(record, poison, true).await {
            Err(KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge)) => {
                self.deliver(record, poison, false).await
            }
            other => other,
        }
        .map_err(|source| DeadLetterError::Delivery {
            topic: self.topic.clone(),
            source,
        })
    }

    async fn deliver(
        &self,
        record: &OwnedMessage,
        poison: &Poison,
        with_value: bool,
    ) -> Result<(), KafkaError> {
        let mut headers = OwnedHeaders::new();
        if let Some(original) = record.headers() {
            // A redriven record fails again: its earlier attempts travel in `dlq_history` (kept,
            // so the new dead letter shows how often it failed); headers describing an attempt
            // are this one's alone, so stale copies are left out.
            for h in original
                .iter()
                .filter(|h| !header::ATTEMPT.contains(&h.key))
            {
                headers = headers.insert(Header {
                    key: h.key,
                    value: h.value,
                });
            }
        }
        let partition = record.partition().to_string();
        let offset = record.offset().to_string();
        let ours = [
            (header::REASON, poison.reason.as_str()),
            (header::KIND, poison.kind.as_str()),
            (header::PROJECTOR, self.projector.name()),
            (header::SOURCE_TOPIC, record.topic()),
            (header::SOURCE_PARTITION, partition.as_str()),
            (header::SOURCE_OFFSET, offset.as_str()),
        ];
        for (key, value) in ours {
            headers = headers.insert(Header {
                key,
                value: Some(value.as_bytes()),
            });
        }
        if !with_value {
            headers = headers.insert(Header {
                key: header::VALUE_OMITTED,
                value: Some(
                    "larger than the dead-letter topic accepts; read it at the source offset"
                        .as_bytes(),
                ),
            });
        }
        let mut out: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&self.topic).headers(headers);
        if let Some(key) = record.key() {
            out = out.key(key);
        }
        if with_value && let Some(value) = record.payload() {
            out = out.payload(value);
        }
        // send() waits for room in a full local queue (backpressure, no drop) and then for the
        // broker's acknowledgement.
        self.producer
            .send(out, Duration::from_secs(60))
            .await
            .map(drop)
            .map_err(|(error, _)| error)
    }
}
