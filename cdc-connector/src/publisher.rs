//! Publishing to Kafka.
//!
//! One idempotent producer (`acks=all`) per process: librdkafka retries transient failures itself
//! without duplicating or reordering records of a partition, and every record of one aggregate has
//! the same key, so one customer's or order's events keep their order. `send` only enqueues: it
//! returns the delivery future the pipeline awaits before it checkpoints past the record. When
//! librdkafka's local queue is full, `send` waits for room; it never drops a record.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use mongodb::bson::{Bson, Document, doc};
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use storefront_plumbing::kafka::{self, KafkaSetupError, TracingContext};
use storefront_plumbing::settings::KafkaSettings;
use tokio_util::sync::CancellationToken;

use crate::acks::{Delivery, RefusedRecord};
use crate::lease::{LeaseGate, LeaseLost};
use crate::mapping::{Entry, OutboundEvent, SourceChange};

/// Header names of dead-letter records (shared with the projectors' dead letters).
pub use storefront_schemas::dead_letter::header as dead_letter_header;

/// The outcome of one record handed to Kafka, as the in-flight queue reads it: acknowledged,
/// refused as too large (the record's fault, so it is dead-lettered), or failed otherwise.
pub struct KafkaDelivery(DeliveryFuture);

impl std::fmt::Debug for KafkaDelivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaDelivery").finish_non_exhaustive()
    }
}

impl Future for KafkaDelivery {
    type Output = Delivery;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Delivery> {
        Pin::new(&mut self.0).poll(cx).map(|outcome| match outcome {
            Ok(Ok(_)) => Delivery::Acknowledged,
            Ok(Err((
                KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge),
                record,
            ))) => Delivery::TooLarge(RefusedRecord {
                topic: record.topic().to_owned(),
                key: String::from_utf8_lossy(record.key().unwrap_or_default()).into_owned(),
                payload: record.payload().map(<[u8]>::to_vec).unwrap_or_default(),
            }),
            Ok(Err((error, _))) => Delivery::Failed(error),
            // The producer went away with the record.
            Err(_) => Delivery::Failed(KafkaError::Canceled),
        })
    }
}

/// The most a dead letter's key and value may take together: below librdkafka's and the
/// broker's default maximum message size (1,000,000 and 1,048,588 bytes) with room for the
/// headers. A dead letter is what must always get through: one refused as too large would stop
/// the stream (an oversized field makes an event too large, and its document larger still).
const DEAD_LETTER_MAX_BYTES: usize = 900_000;
/// The most a dead letter's key or a header of it may take (a guid or `_id` can be huge, and a
/// reason can quote a value).
const DEAD_LETTER_MAX_TEXT: usize = 16 * 1024;

/// `text` cut to [`DEAD_LETTER_MAX_TEXT`] bytes (at a character boundary), marked as cut.
fn shorten(text: &str) -> std::borrow::Cow<'_, str> {
    if text.len() <= DEAD_LETTER_MAX_TEXT {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut end = DEAD_LETTER_MAX_TEXT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    std::borrow::Cow::Owned(format!("{}... ({} bytes)", &text[..end], text.len()))
}

/// The key and value of a dead letter that fits: the value replaced by `{}` when the two would
/// be larger than [`DEAD_LETTER_MAX_BYTES`] (`true`: omitted), the key [`shorten`]ed.
fn fit_dead_letter(key: &str, body: String) -> (std::borrow::Cow<'_, str>, String, bool) {
    let key = shorten(key);
    if key.len() + body.len() <= DEAD_LETTER_MAX_BYTES {
        (key, body, false)
    } else {
        (key, "{}".to_owned(), true)
    }
}

/// What a dead letter says.
#[derive(Debug)]
pub struct DeadLetter<'a> {
    /// The change it comes from (its operation, cluster time, `_id` and document).
    pub change: &'a SourceChange,
    /// Why.
    pub reason: &'a str,
    /// Dotted path of the offending field (empty: none).
    pub field: &'a str,
    /// The record key, when not the document `_id` (an order guid).
    pub key: Option<&'a str>,
    /// The list entry left out, carried instead of the whole document.
    pub entry: Option<&'a Entry>,
}

/// Why a record could not be handed to Kafka.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The producer refused the record for a reason that waiting cannot fix.
    #[error("kafka refused a record for topic {topic}")]
    Refused {
        /// Destination topic.
        topic: String,
        /// librdkafka's error.
        #[source]
        source: KafkaError,
    },
    /// The process is shutting down while waiting for room in the producer queue.
    #[error("shutdown while waiting for room in the producer queue")]
    ShuttingDown,
    /// Another process holds the connector's lease now; this one hands nothing more to Kafka.
    #[error(transparent)]
    LeaseLost(#[from] LeaseLost),
}

/// The process's Kafka producer.
pub struct Publisher {
    producer: FutureProducer<TracingContext>,
    dead_letter_topic: String,
    /// Every record passes it: nothing is handed to Kafka without a valid lease.
    lease: LeaseGate,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("dead_letter_topic", &self.dead_letter_topic)
            .finish_non_exhaustive()
    }
}

/// The producer's own tuning: batching for throughput (idempotence keeps order within a
/// partition anyway). Defaults only: an operator's `kafka.properties` wins, for example a
/// `linger.ms` of 1 that trades producer CPU for about 4 ms less latency at moderate rates
/// (docs/benchmarks.md).
///
/// `queue.buffering.max.kbytes` bounds the record values librdkafka holds until Kafka
/// acknowledges them (its default is 1 GiB): `stream.max_in_flight` counts records, and with
/// events near `stream.max_event_bytes` (1 MB) three streams could otherwise hold gigabytes while
/// Kafka is down. At 16 MiB it does not bind for the storefront's events (30,000 of them waiting
/// did not fill it); a full queue makes [`Publisher::send_event`] wait, never drop.
const PRODUCER_DEFAULTS: &[(&str, &str)] = &[
    ("linger.ms", "5"),
    ("compression.type", "lz4"),
    ("queue.buffering.max.messages", "200000"),
    ("queue.buffering.max.kbytes", "16384"),
];

/// The idempotent producer's configuration: [`PRODUCER_DEFAULTS`] as defaults the operator's
/// properties replace, and the guarantees' settings (never overridable; the settings' validation
/// refuses them in `properties`).
fn producer_client_config(settings: &KafkaSettings, client_id: &str) -> ClientConfig {
    kafka::producer_config(settings, client_id, PRODUCER_DEFAULTS)
}

impl Publisher {
    /// An idempotent producer for `settings` that sends only while `lease` is valid.
    pub fn new(
        settings: &KafkaSettings,
        client_id: &str,
        dead_letter_topic: &str,
        lease: LeaseGate,
    ) -> Result<Self, KafkaSetupError> {
        let producer = producer_client_config(settings, client_id)
            .create_with_context(TracingContext)
            .map_err(KafkaSetupError::Config)?;
        Ok(Self {
            producer,
            dead_letter_topic: dead_letter_topic.to_owned(),
            lease,
        })
    }

    /// Enqueues `event`; the returned future resolves when Kafka acknowledged it (or failed).
    pub async fn send_event(
        &self,
        event: &OutboundEvent,
        shutdown: &CancellationToken,
    ) -> Result<KafkaDelivery, PublishError> {
        let metadata = event.metadata.headers();
        let headers = metadata.iter().fold(
            OwnedHeaders::new_with_capacity(metadata.len()),
            |headers, (key, value)| {
                headers.insert(Header {
                    key,
                    value: Some(value.as_bytes()),
                })
            },
        );
        self.send(
            &event.topic,
            event.key.as_bytes(),
            event.payload.as_deref(),
            headers,
            shutdown,
        )
        .await
    }

    /// The topic dead letters go to.
    pub fn dead_letter_topic(&self) -> &str {
        &self.dead_letter_topic
    }

    /// Enqueues a dead letter: the defective list entry, or else the whole raw document, as
    /// relaxed extended JSON, keyed by the order guid when it concerns one order and by the
    /// document `_id` otherwise, with the reason and origin as headers.
    pub async fn send_dead_letter(
        &self,
        letter: &DeadLetter<'_>,
        shutdown: &CancellationToken,
    ) -> Result<KafkaDelivery, PublishError> {
        let change = letter.change;
        let body = match letter.entry {
            Some(entry) => Bson::try_from(entry.value.clone()).ok(),
            // A document whose BSON cannot even be decoded is represented by its `_id` alone (the
            // reason says why).
            None => change
                .full_document
                .as_deref()
                .and_then(|raw| Document::try_from(raw).ok())
                .map(Bson::Document),
        }
        .unwrap_or_else(|| Bson::Document(doc! { "_id": change.document_id.clone() }))
        .into_relaxed_extjson()
        .to_string();
        let document_id = change
            .document_id
            .clone()
            .into_relaxed_extjson()
            .to_string();
        let key = letter.key.unwrap_or(&document_id);
        let (key, body, value_omitted) = fit_dead_letter(key, body);
        let document_id = shorten(&document_id);
        let reason = shorten(letter.reason);
        let field = shorten(letter.field);
        let source = format!(
            "/mongodb/{}/{}",
            change.namespace.database, change.namespace.collection
        );
        let cluster_time = change.position.as_u64().to_string();
        let mut headers = vec![
            (dead_letter_header::REASON, reason.as_ref()),
            (dead_letter_header::SOURCE, source.as_str()),
            (dead_letter_header::OPERATION, change.kind.operation_name()),
            (dead_letter_header::CLUSTER_TIME, cluster_time.as_str()),
            (dead_letter_header::DOCUMENT_ID, document_id.as_ref()),
        ];
        if !field.is_empty() {
            headers.push((dead_letter_header::FIELD, field.as_ref()));
        }
        if let Some(entry) = letter.entry {
            headers.push((dead_letter_header::ENTRY, entry.path.as_str()));
        }
        if value_omitted {
            headers.push((
                dead_letter_header::VALUE_OMITTED,
                "larger than a dead letter may be; read the document in its source collection",
            ));
        }
        let headers = headers
            .into_iter()
            .fold(OwnedHeaders::new(), |headers, (key, value)| {
                headers.insert(Header {
                    key,
                    value: Some(value.as_bytes()),
                })
            });
        let topic = self.dead_letter_topic.clone();
        self.send(
            &topic,
            key.as_bytes(),
            Some(body.as_bytes()),
            headers,
            shutdown,
        )
        .await
    }

    async fn send(
        &self,
        topic: &str,
        key: &[u8],
        payload: Option<&[u8]>,
        headers: OwnedHeaders,
        shutdown: &CancellationToken,
    ) -> Result<KafkaDelivery, PublishError> {
        let mut record = FutureRecord::to(topic).key(key).headers(headers);
        if let Some(payload) = payload {
            record = record.payload(payload);
        }
        loop {
            // Checked before every hand-over, also after waiting for room: a process paused
            // meanwhile wakes with its lease expired and hands nothing over.
            self.lease.permit().await?;
            match self.producer.send_result(record) {
                Ok(delivery) => return Ok(KafkaDelivery(delivery)),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                    // librdkafka drains its queue on its own threads; wait a moment for room.
                    // Backpressure, never a drop.
                    record = returned;
                    tokio::select! {
                        () = shutdown.cancelled() => return Err(PublishError::ShuttingDown),
                        () = tokio::time::sleep(Duration::from_millis(5)) => {}
                    }
                }
                Err((source, _)) => {
                    return Err(PublishError::Refused {
                        topic: topic.to_owned(),
                        source,
                    });
                }
            }
        }
    }

    /// Drops every record not yet sent to a broker (their deliveries fail): after the lease was
    /// lost, what this process had queued must not reach Kafka late. Records already sent cannot
    /// be recalled; they are duplicates of what the new holder publishes from the checkpoint.
    pub fn purge_unsent(&self) {
        use rdkafka::producer::{Producer, PurgeConfig};
        self.producer
            .purge(PurgeConfig::default().queue().non_blocking());
    }

    /// Waits until every enqueued record is delivered or `timeout` passes.
    pub async fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        storefront_plumbing::kafka_io::flush(self.producer.clone(), timeout).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_letter_always_fits_in_a_kafka_record() {
        let small = fit_dead_letter("guid-1", "{\"a\":1}".to_owned());
        assert_eq!(small, ("guid-1".into(), "{\"a\":1}".to_owned(), false));
        let document = format!("{{\"x\":\"{}\"}}", "x".repeat(1_100_000));
        let (key, body, omitted) = fit_dead_letter("guid-2", document);
        assert_eq!(
            (key.as_ref(), body.as_str(), omitted),
            ("guid-2", "{}", true)
        );
        let huge_key = "k".repeat(1_100_000);
        let (key, body, omitted) = fit_dead_letter(&huge_key, "{}".to_owned());
        assert!(key.len() < DEAD_LETTER_MAX_TEXT + 64, "{}", key.len());
        assert!(key.ends_with("... (1100000 bytes)"), "{key}");
        assert_eq!((body.as_str(), omitted), ("{}", false));
        // Cut at a character boundary.
        let wide = "\u{e9}".repeat(DEAD_LETTER_MAX_TEXT);
        assert!(shorten(&wide).starts_with('\u{e9}'));
    }

    #[test]
    fn the_producers_tuning_is_a_default_the_operator_overrides() {
        let mut settings = KafkaSettings::default();
        let defaults = producer_client_config(&settings, "test");
        assert_eq!(defaults.get("linger.ms"), Some("5"));
        assert_eq!(defaults.get("queue.buffering.max.kbytes"), Some("16384"));
        assert_eq!(defaults.get("compression.type"), Some("lz4"));
        assert_eq!(defaults.get("enable.idempotence"), Some("true"));

        settings.properties.insert("linger.ms".into(), "1".into());
        settings
            .properties
            .insert("compression.type".into(), "zstd".into());
        settings
            .properties
            .insert("queue.buffering.max.kbytes".into(), "65536".into());
        let tuned = producer_client_config(&settings, "test");
        assert_eq!(tuned.get("linger.ms"), Some("1"));
        assert_eq!(tuned.get("queue.buffering.max.kbytes"), Some("65536"));
        assert_eq!(tuned.get("compression.type"), Some("zstd"));
        assert_eq!(tuned.get("queue.buffering.max.messages"), Some("200000"));
        assert_eq!(tuned.get("enable.idempotence"), Some("true"));
        assert_eq!(tuned.get("acks"), Some("all"));
    }
}
