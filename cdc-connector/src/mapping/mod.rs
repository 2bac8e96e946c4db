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

use mongodb::bson::{Bson, Document};
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
    /// The document after the change (`fullDocument`, looked up for updates). `None` for deletes,
    /// and for updates of a document deleted before the lookup (a later delete event follows).
    pub full_document: Option<Document>,
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
    /// A required field is absent.
    #[error("missing required field `{field}`")]
    MissingField {
        /// Dotted path of the field.
        field: String,
    },
    /// A field has the wrong BSON type or an invalid value.
    #[error("field `{field}`: {reason}")]
    InvalidField {
        /// Dotted path of the field.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The change names a collection this mapper does not handle.
    #[error("no mapping for collection {0}")]
    UnknownNamespace(String),
}

/// Maps changes of the watched collections to events. Another domain plugs in its own.
pub trait ChangeMapper: Send + Sync {
    /// The events for `change`, in publish order (possibly none).
    fn map(&self, change: &SourceChange) -> Result<Vec<OutboundEvent>, MappingError>;
}
