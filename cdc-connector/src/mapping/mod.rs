//! Mapping: source changes to domain events, as pure functions (no I/O), one module per source
//! collection. The runtime feeds every change of a watched collection through a
//! [`ChangeMapper`] and publishes what comes out: events, and a dead letter per [`Defect`].
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
//! - **Every stored shape.** Fields are read as real data stores them (see
//!   `storefront_schemas::documents`): prices as decimal strings, Decimal128, doubles or integers;
//!   timestamps as integers, whole doubles or dates; customer ids as ObjectIds or strings; unknown
//!   fields such as Spring's `_class` ignored; `null` and a missing optional field alike.
//! - **One bad entry is that entry's problem.** A list entry (an order, an address, a status) is
//!   read on its own, so a defect in it drops that entry or the one event it feeds, and the rest of
//!   the document still flows. Each module's doc states, per field, which defects drop an entry,
//!   which drop one event and which stop the whole change.
//! - **Never silent, never repeated.** Whatever a defect kept back is a [`Defect`] the runtime
//!   dead-letters with its reason and field path. A defect's id is derived from what it is (the
//!   document, the entry's guid or path, the reason and, for an entry, its bytes), so a later
//!   change that leaves the defect as it was repeats the id and is not dead-lettered again, while
//!   a change to the defective entry is reported anew.

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

impl ChangeKind {
    /// The operation's name, as MongoDB spells it (`snapshot` for a snapshot read).
    pub fn operation_name(self) -> &'static str {
        match self {
            ChangeKind::Snapshot => "snapshot",
            ChangeKind::Insert => "insert",
            ChangeKind::Update => "update",
            ChangeKind::Replace => "replace",
            ChangeKind::Delete => "delete",
        }
    }
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

/// What one change maps to.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Mapped {
    /// Records to publish, in order.
    pub events: Vec<OutboundEvent>,
    /// What could not be mapped; each is dead-lettered once.
    pub defects: Vec<Defect>,
}

impl Mapped {
    /// Only `defect`: nothing of the change is published.
    pub fn defect(defect: Defect) -> Self {
        Self {
            events: Vec::new(),
            defects: vec![defect],
        }
    }
}

/// Part of a change that could not become (part of) an event, and what that kept back.
#[derive(Debug, Clone, PartialEq)]
pub struct Defect {
    /// The dead letter's reason: what was kept back, and why.
    pub reason: String,
    /// Dotted path of the offending field (empty for the document itself).
    pub field: String,
    /// The order guid the defect concerns, when known: the dead letter's key (otherwise the
    /// document's `_id`).
    pub order_guid: Option<String>,
    /// The list entry left out, carried as the dead letter's body (otherwise the whole document).
    pub entry: Option<Entry>,
    /// The once-per-id event this defect kept from being published, if any: when the runtime
    /// has already published that event, nothing was kept back and no dead letter is sent.
    pub blocked_event: Option<String>,
    /// Deterministic id: the same defect in the same data always has the same id.
    pub id: String,
}

/// A list entry a defect left out.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Its dotted path (`orders.2`).
    pub path: String,
    /// Its stored value.
    pub value: RawBson,
}

impl Defect {
    /// A defect that stops the whole change.
    pub fn of_change(change: &SourceChange, error: DocumentError) -> Self {
        let reason = format!("change not published: {error}");
        Self {
            id: defect_id(change, &["change", &reason]),
            field: error_field(&error),
            reason,
            order_guid: None,
            entry: None,
            blocked_event: None,
        }
    }

    /// A list entry left out of what is published. `what` names it for a person (`order
    /// <guid>`, `address`).
    fn of_entry(
        change: &SourceChange,
        path: &str,
        value: RawBsonRef<'_>,
        order_guid: Option<&str>,
        what: &str,
        error: DocumentError,
    ) -> Self {
        let reason = format!("{what} at {path} left out: {error}");
        // Located by guid when it has one, so an entry moving within its list stays the same
        // defect; its bytes make a changed entry a new one.
        let content = Uuid::new_v5(&Uuid::NAMESPACE_OID, raw_bytes(value).as_slice()).to_string();
        Self {
            id: defect_id(
                change,
                &["entry", order_guid.unwrap_or(path), &reason, &content],
            ),
            field: error_field(&error),
            reason,
            order_guid: order_guid.map(str::to_owned),
            entry: Some(Entry {
                path: path.to_owned(),
                value: value.to_raw_bson(),
            }),
            blocked_event: None,
        }
    }

    /// One event not published: `blocked_event` (`what`, for a person) for order `order_guid`.
    fn of_event(
        change: &SourceChange,
        order_guid: &str,
        what: &str,
        blocked_event: String,
        error: DocumentError,
    ) -> Self {
        let reason = format!("{what} not published: {error}");
        Self {
            id: defect_id(change, &["event", order_guid, &reason]),
            field: error_field(&error),
            reason,
            order_guid: Some(order_guid.to_owned()),
            entry: None,
            blocked_event: Some(blocked_event),
        }
    }

    /// An event larger than the connector may publish: its own dead letter, once per event id.
    pub fn too_large(event: &OutboundEvent, size: usize, limit: usize) -> Self {
        let reason = format!(
            "event for topic {} is {size} bytes, more than stream.max_event_bytes ({limit})",
            event.topic
        );
        let keyed_by_order = matches!(
            event.metadata.event_type,
            EventType::FulfillmentRequested | EventType::OrderStatusChanged
        );
        Self {
            id: deterministic_id(DEFECT_ID_KIND, &[&event.metadata.id, "too large"]),
            field: String::new(),
            reason,
            order_guid: keyed_by_order.then(|| event.key.clone()),
            entry: None,
            blocked_event: None,
        }
    }
}

const DEFECT_ID_KIND: &str = "storefront.connector.defect";

fn defect_id(change: &SourceChange, parts: &[&str]) -> String {
    let document = change
        .document_id
        .clone()
        .into_relaxed_extjson()
        .to_string();
    let mut all = vec![
        change.namespace.database.as_str(),
        change.namespace.collection.as_str(),
        document.as_str(),
    ];
    all.extend_from_slice(parts);
    deterministic_id(DEFECT_ID_KIND, &all)
}

fn error_field(error: &DocumentError) -> String {
    match error {
        DocumentError::MissingField { field } | DocumentError::InvalidField { field, .. } => {
            field.clone()
        }
        DocumentError::NotExtendedJson(_) => String::new(),
    }
}

/// The bytes of a raw value, to fingerprint it (documents and arrays as stored; a scalar as its
/// extended JSON, which is exact).
fn raw_bytes(value: RawBsonRef<'_>) -> Vec<u8> {
    match value {
        RawBsonRef::Document(document) => document.as_bytes().to_vec(),
        RawBsonRef::Array(array) => array.as_bytes().to_vec(),
        other => Bson::try_from(other.to_raw_bson())
            .map(|bson| bson.into_canonical_extjson().to_string().into_bytes())
            .unwrap_or_default(),
    }
}

/// Maps changes of the watched collections to events. Another domain plugs in its own.
pub trait ChangeMapper: Send + Sync {
    /// The events for `change`, in publish order (possibly none), and its defects.
    fn map(&self, change: &SourceChange) -> Mapped;
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

use mongodb::bson::{RawBson, RawBsonRef};
use storefront_schemas::documents::{self, CustomerId, DocumentError};
use storefront_schemas::metadata::{EventType, SCHEMA_VERSION, deterministic_id};
use uuid::Uuid;

/// The document to map, or `None` when the change leaves nothing to map: a delete, or an update
/// whose post-image is gone because the document was deleted before the server looked it up.
/// In that second case the delete's own change follows in the stream and supersedes this one,
/// so mapping nothing loses nothing. Every other kind must carry its document.
fn post_image(change: &SourceChange) -> Result<Option<&RawDocument>, DocumentError> {
    match (change.kind, &change.full_document) {
        (ChangeKind::Delete, _) => Ok(None),
        (ChangeKind::Update, None) => Ok(None),
        (_, Some(document)) => Ok(Some(document.as_ref())),
        (ChangeKind::Snapshot | ChangeKind::Insert | ChangeKind::Replace, None) => {
            Err(DocumentError::MissingField {
                field: "fullDocument".to_owned(),
            })
        }
    }
}

/// Reads a typed value straight from the raw bytes of `document`, found at `path`. Only when
/// that fails is it decoded again, more slowly, to name the offending field: errors are rare,
/// speed on the good path is not.
fn read<T: serde::de::DeserializeOwned>(
    document: &RawDocument,
    path: &str,
) -> Result<T, DocumentError> {
    match mongodb::bson::from_slice(document.as_bytes()) {
        Ok(value) => Ok(value),
        Err(fast_error) => {
            let tree = Document::try_from(document).map_err(|e| DocumentError::InvalidField {
                field: path.to_owned(),
                reason: e.to_string(),
            })?;
            match documents::from_document::<T>(&tree) {
                Err(error) => Err(under(path, error)),
                // Both decoders accept the same documents; should they ever disagree, the
                // document is still refused, with the fast decoder's words.
                Ok(_) => Err(DocumentError::InvalidField {
                    field: path.to_owned(),
                    reason: fast_error.to_string(),
                }),
            }
        }
    }
}

/// `error`, of a value found at `path`, with its field path made whole.
fn under(path: &str, error: DocumentError) -> DocumentError {
    match error {
        DocumentError::MissingField { field } => DocumentError::MissingField {
            field: join(path, &field),
        },
        DocumentError::InvalidField { field, reason } => DocumentError::InvalidField {
            field: join(path, &field),
            reason,
        },
        other => other,
    }
}

fn join(parent: &str, child: &str) -> String {
    match (parent.is_empty(), child.is_empty()) {
        (true, _) => child.to_owned(),
        (_, true) => parent.to_owned(),
        _ => format!("{parent}.{child}"),
    }
}

/// Field `key` of `document` (at `path`); a stored `null` reads as absent.
fn field<'a>(
    document: &'a RawDocument,
    path: &str,
    key: &str,
) -> Result<Option<RawBsonRef<'a>>, DocumentError> {
    match document.get(key) {
        Ok(Some(RawBsonRef::Null)) | Ok(None) => Ok(None),
        Ok(Some(value)) => Ok(Some(value)),
        Err(error) => Err(DocumentError::InvalidField {
            field: join(path, key),
            reason: error.to_string(),
        }),
    }
}

/// Required field `key` of `document` (at `path`), which `pick` accepts (`expected` names what
/// it accepts, for the error).
fn required_value<'a, T>(
    document: &'a RawDocument,
    path: &str,
    key: &str,
    expected: &str,
    pick: impl FnOnce(RawBsonRef<'a>) -> Option<T>,
) -> Result<T, DocumentError> {
    let at = join(path, key);
    let value =
        field(document, path, key)?.ok_or(DocumentError::MissingField { field: at.clone() })?;
    pick(value).ok_or_else(|| wrong_type(&at, expected, value))
}

/// Required sub-document `key` of `document`, read as `T`.
fn required<T: serde::de::DeserializeOwned>(
    document: &RawDocument,
    path: &str,
    key: &str,
) -> Result<T, DocumentError> {
    let value = required_value(document, path, key, "an object", RawBsonRef::as_document)?;
    read(value, &join(path, key))
}

/// The mapping of a change whose change-level error, if any, becomes its one defect.
fn or_change_defect(change: &SourceChange, mapped: Result<Mapped, DocumentError>) -> Mapped {
    mapped.unwrap_or_else(|error| Mapped::defect(Defect::of_change(change, error)))
}

/// The entries of list `key` of `document` with their paths; a list stored as `null` or left out
/// is empty (Spring omits null fields).
fn entries<'a>(
    document: &'a RawDocument,
    path: &str,
    key: &str,
) -> Result<Vec<(String, RawBsonRef<'a>)>, DocumentError> {
    let at = join(path, key);
    let array = match field(document, path, key)? {
        None => return Ok(Vec::new()),
        Some(RawBsonRef::Array(array)) => array,
        Some(other) => return Err(wrong_type(&at, "an array", other)),
    };
    let mut entries = Vec::new();
    for (index, entry) in array.into_iter().enumerate() {
        let entry = entry.map_err(|e| DocumentError::InvalidField {
            field: format!("{at}.{index}"),
            reason: e.to_string(),
        })?;
        entries.push((format!("{at}.{index}"), entry));
    }
    Ok(entries)
}

/// A list entry read as `T`: it must be an object.
fn read_entry<T: serde::de::DeserializeOwned>(
    path: &str,
    entry: RawBsonRef<'_>,
) -> Result<T, DocumentError> {
    match entry {
        RawBsonRef::Document(document) => read(document, path),
        other => Err(wrong_type(path, "an object", other)),
    }
}

/// The text of string field `key`, if it has one (for naming an entry in a reason).
fn text<'a>(document: RawBsonRef<'a>, key: &str) -> Option<&'a str> {
    match document {
        RawBsonRef::Document(document) => document.get_str(key).ok(),
        _ => None,
    }
}

fn wrong_type(path: &str, expected: &str, found: RawBsonRef<'_>) -> DocumentError {
    DocumentError::InvalidField {
        field: path.to_owned(),
        reason: format!(
            "expected {expected}, found {}",
            Bson::try_from(found.to_raw_bson())
                .map(|value| documents::bson_type_name(&value))
                .unwrap_or("unreadable BSON")
        ),
    }
}

/// The customer id in `_id` of `document`.
fn customer_id(document: &RawDocument) -> Result<CustomerId, DocumentError> {
    let value = required_value(document, "", "_id", "an objectId or a string", |value| {
        Bson::try_from(value.to_raw_bson()).ok()
    })?;
    CustomerId::from_bson(&value).map_err(|reason| DocumentError::InvalidField {
        field: "_id".to_owned(),
        reason,
    })
}

/// A guid used as a record key must not be empty (an empty key would put every such order in
/// one partition and make its events indistinguishable).
fn require_guid(guid: &str, field: &str) -> Result<(), DocumentError> {
    if guid.trim().is_empty() {
        return Err(DocumentError::InvalidField {
            field: field.to_owned(),
            reason: "is empty".to_owned(),
        });
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
