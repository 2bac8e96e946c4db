//! Mapping: source changes to domain events, as pure functions (no I/O), one module per source
//! collection. The runtime feeds every change of a watched collection through a
//! [`ChangeMapper`] and publishes what comes out.
//!
//! Guarantees the mappers keep:
//! - **Deterministic.** The same change always yields the same events with the same ids, so a
//!   change re-read after a crash produces recognisable duplicates.
//! - **State-based.** Mappers decide from the post-image (the document as it is after the
//!   change), never from what the update spec touched, so whole-document replaces (a Spring `save`)
//!   and partial updates (`$set`, `$push`) map alike. Events that must appear once per business
//!   fact (an order's fulfillment request, one status change) carry an id derived from that fact
//!   and are marked [`OutboundEvent::once_per_id`]; the runtime drops repeats it has already
//!   published.
//! - **Never silent.** A document that cannot be mapped is a [`MappingError`] whose message is the
//!   reason a dead letter carries.

use mongodb::bson::{Bson, Document, RawDocument, RawDocumentBuf};
use storefront_schemas::metadata::{EventMetadata, SourcePosition};
use storefront_schemas::topology::Namespace;

/// What happened to a source document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// Read by the initial snapshot (the document existed before streaming started).
    Snapshot,
    /// `insert`.
    Insert,
    /// `update` (partial).
    Update,
    /// `replace` (whole document).
    Replace,
    /// `delete`.
    Delete,
}

/// One change of one source document, normalised from a change stream event or a snapshot read.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceChange {
    /// The collection the document lives in.
    pub namespace: Namespace,
    /// What happened.
    pub kind: ChangeKind,
    /// The document's `_id`.
    pub document_id: Bson,
    /// The document after the change (`fullDocument`: the recorded post-image, or looked up for
    /// updates), as raw BSON so the hot path decodes it once, straight into typed documents.
    /// `None` for deletes, and for updates of a document deleted before a lookup (a later delete
    /// event follows).
    pub full_document: Option<RawDocumentBuf>,
    /// The change's cluster time: orders changes to one document.
    pub position: SourcePosition,
    /// Wall-clock time of the change in epoch milliseconds (`wallTime`, or the cluster time's
    /// seconds when the server sends no wall time).
    pub time_ms: i64,
}

/// A record to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboundEvent {
    /// Destination topic.
    pub topic: String,
    /// Record key: the aggregate id (customer id hex or order guid).
    pub key: String,
    /// JSON payload; `None` is a tombstone (a deleted customer).
    pub payload: Option<Vec<u8>>,
    /// Metadata carried as CloudEvents headers.
    pub metadata: EventMetadata,
    /// Publish at most once per `metadata.id`: a repeat of an id the runtime has already
    /// published is dropped (used for facts that happen once: an order approved, a status set).
    pub once_per_id: bool,
}

/// Why a document could not be mapped. The message is the dead letter's reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MappingError {
    /// A field is missing or invalid.
    #[error(transparent)]
    Document(#[from] DocumentError),
    /// The change names a collection this mapper does not handle.
    #[error("no mapping for collection {0}")]
    UnknownNamespace(String),
}

/// Maps changes of the watched collections to events. Another domain plugs in its own.
pub trait ChangeMapper: Send + Sync {
    /// The events for `change`, in publish order (possibly none).
    fn map(&self, change: &SourceChange) -> Result<Vec<OutboundEvent>, MappingError>;
}

// ---------------------------------------------------------------------------------------------
// The storefront's mappers, and what they share.
// ---------------------------------------------------------------------------------------------

mod accounts;
mod fulfillment;
mod orders;
mod storefront;
#[cfg(test)]
mod testing;

pub use accounts::AccountsMapper;
pub use fulfillment::FulfillmentMapper;
pub use orders::OrdersMapper;
pub use storefront::StorefrontMapper;

use storefront_schemas::documents::{self, DocumentError};
use storefront_schemas::metadata::{EventType, SCHEMA_VERSION};

/// The document to map, or `None` when the change leaves nothing to map: a delete, or an update
/// whose post-image is gone because the document was deleted before the server looked it up.
/// In that second case the delete's own change follows in the stream and supersedes this one,
/// so mapping nothing loses nothing. Every other kind must carry its document.
fn post_image(change: &SourceChange) -> Result<Option<&RawDocument>, MappingError> {
    match (change.kind, &change.full_document) {
        (ChangeKind::Delete, _) => Ok(None),
        (ChangeKind::Update, None) => Ok(None),
        (_, Some(document)) => Ok(Some(document.as_ref())),
        (ChangeKind::Snapshot | ChangeKind::Insert | ChangeKind::Replace, None) => {
            Err(MappingError::Document(DocumentError::MissingField {
                field: "fullDocument".to_owned(),
            }))
        }
    }
}

/// Reads a typed source document straight from its raw bytes. Only when that fails is the
/// document decoded again, more slowly, to name the offending field: errors are rare, speed on
/// the good path is not.
fn read<T: serde::de::DeserializeOwned>(document: &RawDocument) -> Result<T, MappingError> {
    match mongodb::bson::from_slice(document.as_bytes()) {
        Ok(value) => Ok(value),
        Err(fast_error) => {
            let tree = Document::try_from(document).map_err(|e| {
                MappingError::Document(DocumentError::InvalidField {
                    field: String::new(),
                    reason: e.to_string(),
                })
            })?;
            match documents::from_document::<T>(&tree) {
                Err(error) => Err(error.into()),
                // Both decoders accept the same documents; should they ever disagree, the
                // document is still refused, with the fast decoder's words.
                Ok(_) => Err(MappingError::Document(DocumentError::InvalidField {
                    field: String::new(),
                    reason: fast_error.to_string(),
                })),
            }
        }
    }
}

/// The hex form of an ObjectId `_id`; any other BSON type is an error.
fn object_id_hex(id: &Bson) -> Result<String, MappingError> {
    match id {
        Bson::ObjectId(id) => Ok(id.to_hex()),
        other => Err(MappingError::Document(DocumentError::InvalidField {
            field: "_id".to_owned(),
            reason: format!("expected an ObjectId, found {:?}", other.element_type()),
        })),
    }
}

/// A guid used as a record key must not be empty (an empty key would put every such order in
/// one partition and make its events indistinguishable).
fn require_guid(guid: &str, field: &str) -> Result<(), MappingError> {
    if guid.trim().is_empty() {
        return Err(MappingError::Document(DocumentError::InvalidField {
            field: field.to_owned(),
            reason: "is empty".to_owned(),
        }));
    }
    Ok(())
}

/// A record for `change`: metadata taken from the change, subject = key.
fn outbound(
    change: &SourceChange,
    topic: &str,
    key: String,
    event_type: EventType,
    id: String,
    payload: Option<Vec<u8>>,
    once_per_id: bool,
) -> OutboundEvent {
    OutboundEvent {
        topic: topic.to_owned(),
        metadata: EventMetadata {
            id,
            event_type,
            schema_version: SCHEMA_VERSION,
            source: change.namespace.clone(),
            position: change.position,
            time_ms: change.time_ms,
            subject: key.clone(),
        },
        key,
        payload,
        once_per_id,
    }
}
