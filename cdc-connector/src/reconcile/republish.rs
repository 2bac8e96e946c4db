//! Re-emitting the current state of chosen source documents through Kafka, so the projectors'
//! normal path applies it: the repair of `reconcile --repair`, and the redrive of the connector's
//! dead letters once a document (or the mapping) is fixed.
//!
//! # Guarantees
//! - **Same mapping.** Each document is read from its source, redacted as the change streams
//!   redact it, and mapped by the connector's own [`StorefrontMapper`]: the events are exactly
//!   those a change of the document would publish now. A document that is gone maps as a delete
//!   (a customer's tombstone).
//! - **A repair never overwrites a newer change.** Before the documents are read, a marker is
//!   written to the connector's state database and its own cluster time `W` is read back from a
//!   change stream on it. Every change the read can miss is later than `W`, so its event carries a
//!   later position and wins over the repair in the projectors' guards; every change the copy can
//!   hold is visible to the read, and older than `W` unless it happened between the marker and the
//!   read (then the read already shows it, and the repair is stale to it, harmlessly). Positions
//!   are unique in the oplog, so no tie can let a repair and a real change shadow each other. (A
//!   `ping`'s `operationTime` is not enough: the test server reports a time the next write may
//!   get as well, and MongoDB reports the last write's, which a copy may hold.)
//! - **Past the once-per-id ledger, under a new id.** A fulfillment request or status change was
//!   published once already (that is why its copy could drift), so the ledger would swallow it:
//!   republished events skip the ledger, and carry an id derived from the original id and `W`, so
//!   a consumer deduplicating by `ce_id` does not take the repair for the original. The projectors
//!   apply it by position; they keep one request per order (`_id` is the guid) and one status per
//!   `(timestamp, type)`, so a repair never duplicates an effect.
//! - **Only what was asked.** A [`Scope`] limits the events of a document to chosen keys (one
//!   order's request, one customer), so repairing one order does not re-send its neighbours.
//! - **Defects are returned, not dead-lettered**: the caller decides (a redrive puts them back on
//!   the dead-letter topic with their history).

use std::collections::BTreeSet;
use std::sync::Arc;

use futures::StreamExt;
use mongodb::bson::{Bson, Document, RawDocumentBuf, doc};
use mongodb::change_stream::ChangeStream;
use mongodb::change_stream::event::ChangeStreamEvent;
use mongodb::{Client, Collection};
use storefront_plumbing::kafka::KafkaSetupError;
use storefront_plumbing::mongo::MongoConnectError;
use storefront_schemas::metadata::{SourcePosition, deterministic_id};
use storefront_schemas::topology::Namespace;
use tokio_util::sync::CancellationToken;

use crate::acks::Delivery;
use crate::config::{ConnectorConfig, WatchedSource};
use crate::lease::LeaseGate;
use crate::mapping::{ChangeKind, ChangeMapper, SourceChange, StorefrontMapper};
use crate::publisher::{PublishError, Publisher};
use crate::source::Conversion;

/// Id kind of republished events (see the module doc).
const REPUBLISH_ID_KIND: &str = "storefront.connector.republish";
/// Collection of markers, in `checkpoints.database`.
pub const MARKER_COLLECTION: &str = "republish_markers";

/// One source document to re-emit.
#[derive(Debug, Clone, PartialEq)]
pub struct RepublishTarget {
    /// Its collection.
    pub source: WatchedSource,
    /// Its `_id`.
    pub id: Bson,
    /// Which of its events.
    pub scope: Scope,
}

/// Which events of a document are re-emitted.
#[derive(Debug, Clone, PartialEq)]
pub enum Scope {
    /// Every event the document maps to.
    Document,
    /// Only events with these record keys (order guids, customer ids).
    Keys(BTreeSet<String>),
    /// The fulfillment request of this order of a `customer.orders` document, as the mapper
    /// published it when the order was approved: the order's statuses after its (last) approval
    /// are left out, so the request is built even when the order has moved on since (its
    /// fulfillment statuses appended). The request's other fields are the customer's now.
    ApprovalOf(String),
}

/// What a republish did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Republished {
    /// The position every event carried (`W` of the module doc).
    pub position: SourcePosition,
    /// Events Kafka acknowledged, as (topic, key).
    pub events: Vec<(String, String)>,
    /// Targets whose document is gone (mapped as deletes).
    pub missing: usize,
    /// Defects the mapper found, per document: (namespace, `_id` as extended JSON, reason, field).
    pub defects: Vec<(String, String, String, String)>,
}

/// Why a republish failed.
#[derive(Debug, thiserror::Error)]
pub enum RepublishError {
    /// MongoDB could not be reached.
    #[error(transparent)]
    Connect(#[from] MongoConnectError),
    /// A read or the marker write failed.
    #[error("mongodb failed while republishing")]
    Mongo(#[from] mongodb::error::Error),
    /// The producer could not be created.
    #[error(transparent)]
    Kafka(#[from] KafkaSetupError),
    /// A record could not be handed to Kafka.
    #[error(transparent)]
    Publish(#[from] PublishError),
    /// Kafka did not acknowledge a record.
    #[error("kafka did not acknowledge the republished record for topic {topic}: {reason}")]
    Delivery {
        /// Its topic.
        topic: String,
        /// librdkafka's words.
        reason: String,
    },
    /// The marker's change event did not come.
    #[error("the marker's change event did not arrive; cannot take a position")]
    NoMarker,
}

/// Re-emits documents' current state (see the module doc). One per process is enough.
pub struct Republisher {
    client: Client,
    config: ConnectorConfig,
    mapper: StorefrontMapper,
    publisher: Arc<Publisher>,
    markers: Collection<Document>,
    marker_stream: Option<ChangeStream<ChangeStreamEvent<Document>>>,
    shutdown: CancellationToken,
}

impl std::fmt::Debug for Republisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Republisher").finish_non_exhaustive()
    }
}

impl Republisher {
    /// Connects to the connector's MongoDB and Kafka as `config` says.
    pub async fn connect(config: &ConnectorConfig) -> Result<Self, RepublishError> {
        let client = storefront_plumbing::mongo::client(&config.mongo, crate::APP_NAME).await?;
        // As the connector does at start: the topics exist even before it ever ran.
        storefront_plumbing::kafka::ensure_topics(
            &config.kafka,
            crate::APP_NAME,
            &crate::topic_specs(config),
        )
        .await?;
        let publisher = Publisher::new(
            &config.kafka,
            crate::APP_NAME,
            &config.stream.dead_letter_topic,
            // Not the connector's stream: these records do not take turns with its checkpoints,
            // and the positions order them in the projectors whoever sends them.
            LeaseGate::always_open(),
        )?;
        let markers = client
            .database(&config.checkpoints.database)
            .collection(MARKER_COLLECTION);
        Ok(Self {
            mapper: StorefrontMapper::new(config.sources.clone(), config.topics.clone()),
            client,
            config: config.clone(),
            publisher: Arc::new(publisher),
            markers,
            marker_stream: None,
            shutdown: CancellationToken::new(),
        })
    }

    /// The source MongoDB client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// A position later than every change visible to reads made after this returns, and earlier
    /// than every change they cannot see (see the module doc).
    pub async fn fresh_position(&mut self) -> Result<SourcePosition, RepublishError> {
        if self.marker_stream.is_none() {
            self.marker_stream = Some(self.markers.watch().await?);
        }
        let mark = uuid::Uuid::new_v4().to_string();
        self.markers
            .insert_one(doc! { "_id": &mark, "at": mongodb::bson::DateTime::now() })
            .await?;
        let stream = self
            .marker_stream
            .as_mut()
            .ok_or(RepublishError::NoMarker)?;
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        let position = loop {
            let next = tokio::time::timeout_at(deadline, stream.next())
                .await
                .map_err(|_| RepublishError::NoMarker)?;
            let event = match next {
                Some(event) => event?,
                None => return Err(RepublishError::NoMarker),
            };
            let is_ours = event
                .document_key
                .as_ref()
                .and_then(|key| key.get_str("_id").ok())
                == Some(mark.as_str());
            if is_ours {
                let time = event.cluster_time.ok_or(RepublishError::NoMarker)?;
                break SourcePosition {
                    seconds: time.time,
                    increment: time.increment,
                };
            }
        };
        // The marker has served; the collection stays small.
        self.markers.delete_one(doc! { "_id": &mark }).await?;
        Ok(position)
    }

    /// Re-emits `targets` at one fresh position and waits until Kafka acknowledged every record.
    pub async fn republish(
        &mut self,
        targets: &[RepublishTarget],
    ) -> Result<Republished, RepublishError> {
        let position = self.fresh_position().await?;
        let mut outcome = Republished {
            position,
            ..Republished::default()
        };
        let mut deliveries = Vec::new();
        for target in targets {
            let namespace = target.source.namespace(&self.config.sources).clone();
            let change = self.read(target, &namespace, position).await?;
            if change.kind == ChangeKind::Delete {
                outcome.missing += 1;
            }
            let mapped = self.mapper.map(&change);
            for defect in mapped.defects {
                outcome.defects.push((
                    namespace.to_string(),
                    target.id.clone().into_relaxed_extjson().to_string(),
                    defect.reason,
                    defect.field,
                ));
            }
            for mut event in mapped.events {
                let wanted = match &target.scope {
                    Scope::Document => true,
                    Scope::Keys(keys) => keys.contains(&event.key),
                    Scope::ApprovalOf(guid) => event.key == *guid,
                };
                if !wanted {
                    continue;
                }
                event.metadata.id = republished_id(&event.metadata.id, position);
                event.once_per_id = false;
                let delivery = self.publisher.send_event(&event, &self.shutdown).await?;
                deliveries.push((event.topic.clone(), event.key.clone(), delivery));
            }
        }
        for (topic, key, delivery) in deliveries {
            match delivery.await {
                Delivery::Acknowledged => outcome.events.push((topic, key)),
                Delivery::TooLarge(_) => {
                    return Err(RepublishError::Delivery {
                        topic,
                        reason: "refused as too large".to_owned(),
                    });
                }
                Delivery::Failed(error) => {
                    return Err(RepublishError::Delivery {
                        topic,
                        reason: error.to_string(),
                    });
                }
            }
        }
        Ok(outcome)
    }

    /// The target's document as a change at `position`: its current state, redacted (and cut to
    /// the approval for [`Scope::ApprovalOf`]), or a delete when it is gone.
    async fn read(
        &self,
        target: &RepublishTarget,
        namespace: &Namespace,
        position: SourcePosition,
    ) -> Result<SourceChange, RepublishError> {
        let collection: Collection<RawDocumentBuf> = self
            .client
            .database(&namespace.database)
            .collection(&namespace.collection);
        let found = collection
            .find_one(doc! { "_id": target.id.clone() })
            .await?;
        let time_ms = now_ms();
        let Some(document) = found else {
            return Ok(SourceChange {
                namespace: namespace.clone(),
                kind: ChangeKind::Delete,
                document_id: target.id.clone(),
                full_document: None,
                position,
                time_ms,
            });
        };
        let document = match &target.scope {
            Scope::ApprovalOf(guid) => as_approved(&document, guid).unwrap_or(document),
            _ => document,
        };
        let conversion = Conversion {
            namespace: namespace.clone(),
            redaction: target.source.redaction(&self.config.sensitive),
        };
        Ok(conversion.snapshot(document, position, time_ms))
    }
}

/// The id of a republished event: the original's and the position, so repairs at different
/// times differ from the original and from each other.
pub fn republished_id(original: &str, position: SourcePosition) -> String {
    deterministic_id(REPUBLISH_ID_KIND, &[original, &position.to_string()])
}

/// `document` (a `customer.orders` document) with order `guid` alone in `orders`, its statuses cut
/// after its last APPROVED one (and any later in time), so its current status is APPROVED; `None`
/// when the order or an approval is not there (the document is then mapped as it is).
pub fn as_approved(document: &RawDocumentBuf, guid: &str) -> Option<RawDocumentBuf> {
    let mut whole = Document::try_from(document.as_ref()).ok()?;
    let orders = whole.get_array("orders").ok()?;
    let mut order = orders
        .iter()
        .filter_map(Bson::as_document)
        .find(|order| order.get_str("guid").ok() == Some(guid))?
        .clone();
    let statuses = order.get_array("orderStatusEvents").ok()?.clone();
    let approval = statuses.iter().rposition(|status| {
        status
            .as_document()
            .and_then(|s| s.get_str("orderStatusType").ok())
            == Some("APPROVED")
    })?;
    let approved_at = statuses[approval]
        .as_document()
        .and_then(|s| s.get("timestamp"))
        .and_then(millis)?;
    let kept: Vec<Bson> = statuses
        .into_iter()
        .take(approval + 1)
        .filter(|status| {
            status
                .as_document()
                .and_then(|s| s.get("timestamp"))
                .and_then(millis)
                .is_some_and(|at| at <= approved_at)
        })
        .collect();
    order.insert("orderStatusEvents", kept);
    whole.insert("orders", vec![Bson::Document(order)]);
    RawDocumentBuf::from_document(&whole).ok()
}

/// A status timestamp in every shape the mapping reads (integers, whole doubles, dates).
fn millis(value: &Bson) -> Option<i64> {
    match value {
        Bson::Int64(v) => Some(*v),
        Bson::Int32(v) => Some(i64::from(*v)),
        Bson::Double(v) if v.fract() == 0.0 => Some(*v as i64),
        Bson::DateTime(v) => Some(v.timestamp_millis()),
        _ => None,
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn orders_document() -> RawDocumentBuf {
        RawDocumentBuf::from_document(&doc! {
            "_id": "c1",
            "orders": [
                { "guid": "g1", "orderStatusEvents": [
                    { "timestamp": 1_i64, "orderStatusType": "CREATED" },
                    { "timestamp": 2_i32, "orderStatusType": "APPROVED" },
                    { "timestamp": 3_i64, "orderStatusType": "PROCESSING" },
                    { "timestamp": 4.0, "orderStatusType": "SHIPPED" },
                ]},
                { "guid": "g2", "orderStatusEvents": [
                    { "timestamp": 1_i64, "orderStatusType": "APPROVED" },
                ]},
            ],
        })
        .unwrap()
    }

    #[test]
    fn an_order_as_approved_keeps_its_statuses_up_to_the_approval_and_no_other_order() {
        let cut =
            Document::try_from(as_approved(&orders_document(), "g1").unwrap().as_ref()).unwrap();
        assert_eq!(
            cut,
            doc! {
                "_id": "c1",
                "orders": [
                    { "guid": "g1", "orderStatusEvents": [
                        { "timestamp": 1_i64, "orderStatusType": "CREATED" },
                        { "timestamp": 2_i32, "orderStatusType": "APPROVED" },
                    ]},
                ],
            }
        );
    }

    #[test]
    fn an_order_never_approved_or_missing_is_left_as_it_is() {
        let document = RawDocumentBuf::from_document(&doc! {
            "_id": "c1",
            "orders": [{ "guid": "g1", "orderStatusEvents": [
                { "timestamp": 1_i64, "orderStatusType": "CREATED" } ]}],
        })
        .unwrap();
        assert_eq!(as_approved(&document, "g1"), None);
        assert_eq!(as_approved(&document, "g9"), None);
    }

    #[test]
    fn republished_ids_differ_from_the_original_and_between_positions() {
        let first = republished_id("original", SourcePosition::from_u64(1));
        assert_ne!(first, "original");
        assert_ne!(
            first,
            republished_id("original", SourcePosition::from_u64(2))
        );
        assert_eq!(
            first,
            republished_id("original", SourcePosition::from_u64(1))
        );
    }
}
