//! Event metadata: what every record carries besides its payload, and its Kafka binding.
//!
//! Metadata travels as CloudEvents 1.0 headers in Kafka *binary* mode (`ce_id`, `ce_type`,
//! `ce_source`, `ce_time`, `ce_specversion`, `ce_subject`, plus the extensions `ce_clustertime`
//! and `ce_schemaversion`), with the payload as the record body. Binary mode keeps the body
//! exactly the original services' JSON, so consumers written for the original topics read it
//! unchanged, while CloudEvents-aware tooling routes on the headers. A tombstone (null body) keeps
//! its headers, so even a deletion says where and when it came from.
//!
//! - `ce_id` is deterministic ([`event_id`]): the same source change always yields the same id, so
//!   duplicates are recognisable.
//! - `ce_clustertime` is the change's MongoDB cluster time as one integer
//!   ([`SourcePosition::as_u64`]); it orders the changes of one document, and projections guard
//!   their writes with it so a stale event never overwrites newer data.

use std::borrow::Cow;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::topology::Namespace;

/// CloudEvents spec version written in `ce_specversion`.
pub const CLOUDEVENTS_SPEC_VERSION: &str = "1.0";

/// Header names of the Kafka binding.
pub mod header {
    /// Event id.
    pub const ID: &str = "ce_id";
    /// Event type.
    pub const TYPE: &str = "ce_type";
    /// Source collection, as `/mongodb/<database>/<collection>`.
    pub const SOURCE: &str = "ce_source";
    /// Time of the source change, RFC 3339.
    pub const TIME: &str = "ce_time";
    /// CloudEvents version.
    pub const SPEC_VERSION: &str = "ce_specversion";
    /// The aggregate id (also the record key).
    pub const SUBJECT: &str = "ce_subject";
    /// Extension: the source change's cluster time as one integer.
    pub const CLUSTER_TIME: &str = "ce_clustertime";
    /// Extension: version of the payload schema.
    pub const SCHEMA_VERSION: &str = "ce_schemaversion";
    /// Media type of the body.
    pub const CONTENT_TYPE: &str = "content-type";
}

/// A MongoDB cluster time: seconds since the epoch and an increment ordering operations within
/// one second. Ordered the same way MongoDB orders timestamps.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct SourcePosition {
    /// Seconds since the Unix epoch.
    pub seconds: u32,
    /// Ordinal within the second.
    pub increment: u32,
}

impl SourcePosition {
    /// One integer with the same order: `seconds << 32 | increment`.
    pub fn as_u64(self) -> u64 {
        (u64::from(self.seconds) << 32) | u64::from(self.increment)
    }

    /// The inverse of [`SourcePosition::as_u64`].
    pub fn from_u64(value: u64) -> Self {
        Self {
            seconds: (value >> 32) as u32,
            increment: value as u32,
        }
    }
}

impl std::fmt::Display for SourcePosition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.seconds, self.increment)
    }
}

/// The kinds of event the pipeline publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventType {
    /// A customer was inserted, updated or replaced (payload: CustomerChangeEvent).
    CustomerChanged,
    /// A customer was deleted (a tombstone: no payload).
    CustomerDeleted,
    /// An order reached APPROVED (payload: FulfillmentRequestEvent).
    FulfillmentRequested,
    /// A fulfillment's status changed to anything but APPROVED (payload: OrderStatusChangeEvent).
    OrderStatusChanged,
}

impl EventType {
    /// Every event type.
    pub const ALL: [EventType; 4] = [
        EventType::CustomerChanged,
        EventType::CustomerDeleted,
        EventType::FulfillmentRequested,
        EventType::OrderStatusChanged,
    ];

    /// The `ce_type` value.
    pub fn ce_type(self) -> &'static str {
        match self {
            EventType::CustomerChanged => "storefront.customer.changed",
            EventType::CustomerDeleted => "storefront.customer.deleted",
            EventType::FulfillmentRequested => "storefront.order.fulfillment-requested",
            EventType::OrderStatusChanged => "storefront.order.status-changed",
        }
    }

    /// The type whose `ce_type` is `value`.
    pub fn from_ce_type(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.ce_type() == value)
    }
}

/// Version of every payload schema in this release. Fields may be added without a new version;
/// renaming or removing one would need a new version (and is forbidden by the domain contract).
pub const SCHEMA_VERSION: u32 = 1;

/// What a record carries besides its payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventMetadata {
    /// Deterministic id (see [`event_id`]).
    pub id: String,
    /// Event type.
    pub event_type: EventType,
    /// Payload schema version.
    pub schema_version: u32,
    /// The collection the change came from.
    pub source: Namespace,
    /// The change's cluster time.
    pub position: SourcePosition,
    /// The change's wall-clock time, epoch milliseconds.
    pub time_ms: i64,
    /// The aggregate id (customer id hex or order guid), also the record key.
    pub subject: String,
}

/// Why headers could not be read as [`EventMetadata`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// A required header is absent.
    #[error("missing header {0}")]
    Missing(&'static str),
    /// A header is present but unusable.
    #[error("header {name}: {reason}")]
    Invalid {
        /// Header name.
        name: &'static str,
        /// What is wrong.
        reason: String,
    },
}

impl EventMetadata {
    /// The Kafka headers of the CloudEvents binary binding, in a fixed order, borrowing what
    /// needs no formatting (the producer copies every value anyway).
    pub fn headers(&self) -> [(&'static str, Cow<'_, str>); 9] {
        [
            (
                header::SPEC_VERSION,
                Cow::Borrowed(CLOUDEVENTS_SPEC_VERSION),
            ),
            (header::ID, Cow::Borrowed(&self.id)),
            (header::TYPE, Cow::Borrowed(self.event_type.ce_type())),
            (
                header::SOURCE,
                Cow::Owned(format!(
                    "/mongodb/{}/{}",
                    self.source.database, self.source.collection
                )),
            ),
            (header::TIME, Cow::Owned(format_time(self.time_ms))),
            (header::SUBJECT, Cow::Borrowed(&self.subject)),
            (
                header::CLUSTER_TIME,
                Cow::Owned(self.position.as_u64().to_string()),
            ),
            (
                header::SCHEMA_VERSION,
                Cow::Owned(self.schema_version.to_string()),
            ),
            (header::CONTENT_TYPE, Cow::Borrowed("application/json")),
        ]
    }

    /// [`EventMetadata::headers`] as owned strings.
    pub fn to_headers(&self) -> Vec<(&'static str, String)> {
        self.headers()
            .into_iter()
            .map(|(name, value)| (name, value.into_owned()))
            .collect()
    }

    /// Reads metadata back from headers (`name`, raw value) as a consumer sees them.
    pub fn from_headers<'a>(
        headers: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    ) -> Result<Self, HeaderError> {
        let mut found: std::collections::HashMap<&str, &[u8]> = std::collections::HashMap::new();
        for (name, value) in headers {
            found.insert(name, value);
        }
        let text = |name: &'static str| -> Result<&str, HeaderError> {
            let raw = found.get(name).ok_or(HeaderError::Missing(name))?;
            std::str::from_utf8(raw).map_err(|e| HeaderError::Invalid {
                name,
                reason: e.to_string(),
            })
        };
        let invalid = |name: &'static str, reason: String| HeaderError::Invalid { name, reason };
        let spec = text(header::SPEC_VERSION)?;
        if spec != CLOUDEVENTS_SPEC_VERSION {
            return Err(invalid(
                header::SPEC_VERSION,
                format!("unsupported version `{spec}`"),
            ));
        }
        let ce_type = text(header::TYPE)?;
        let event_type = EventType::from_ce_type(ce_type)
            .ok_or_else(|| invalid(header::TYPE, format!("unknown event type `{ce_type}`")))?;
        let source = text(header::SOURCE)?;
        let (database, collection) = source
            .strip_prefix("/mongodb/")
            .and_then(|rest| rest.split_once('/'))
            .ok_or_else(|| {
                invalid(
                    header::SOURCE,
                    format!("`{source}` is not /mongodb/<db>/<coll>"),
                )
            })?;
        let cluster_time = text(header::CLUSTER_TIME)?;
        let position = cluster_time
            .parse::<u64>()
            .map(SourcePosition::from_u64)
            .map_err(|e| invalid(header::CLUSTER_TIME, e.to_string()))?;
        let schema_version = text(header::SCHEMA_VERSION)?
            .parse::<u32>()
            .map_err(|e| invalid(header::SCHEMA_VERSION, e.to_string()))?;
        let time = text(header::TIME)?;
        let time_ms = parse_time(time).map_err(|reason| invalid(header::TIME, reason))?;
        Ok(Self {
            id: text(header::ID)?.to_owned(),
            event_type,
            schema_version,
            source: Namespace::new(database, collection),
            position,
            time_ms,
            subject: text(header::SUBJECT)?.to_owned(),
        })
    }
}

/// A deterministic event id: a UUID (version 5) over the event type and the parts that identify
/// the business fact. Equal inputs give equal ids on every machine and in every release.
pub fn event_id(event_type: EventType, parts: &[&str]) -> String {
    deterministic_id(event_type.ce_type(), parts)
}

/// A UUID (v5) derived from `kind` and `parts` alone: [`event_id`] for ids that are not events'
/// (such as the connector's dead letters of defects).
pub fn deterministic_id(kind: &str, parts: &[&str]) -> String {
    // A fixed namespace UUID for this project; changing it would change every id.
    const NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x5f0e_c3d1_7a2b_4c9e_8d61_2b3f_4a5c_6e70);
    let mut name = String::from(kind);
    for part in parts {
        // A separator that cannot appear in ids, guids or namespace names keeps ("ab","c") and
        // ("a","bc") apart.
        name.push('\u{1f}');
        name.push_str(part);
    }
    uuid::Uuid::new_v5(&NAMESPACE, name.as_bytes()).to_string()
}

/// RFC 3339 with milliseconds, UTC.
pub fn format_time(time_ms: i64) -> String {
    let time = if time_ms >= 0 {
        UNIX_EPOCH + Duration::from_millis(time_ms as u64)
    } else {
        UNIX_EPOCH - Duration::from_millis(time_ms.unsigned_abs())
    };
    humantime::format_rfc3339_millis(time).to_string()
}

fn parse_time(text: &str) -> Result<i64, String> {
    let time: SystemTime = humantime::parse_rfc3339_weak(text).map_err(|e| e.to_string())?;
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => Ok(after.as_millis() as i64),
        Err(before) => Ok(-(before.duration().as_millis() as i64)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> EventMetadata {
        EventMetadata {
            id: event_id(EventType::CustomerChanged, &["accounts", "abc", "1"]),
            event_type: EventType::CustomerChanged,
            schema_version: SCHEMA_VERSION,
            source: Namespace::new("accounts", "customer.accounts"),
            position: SourcePosition {
                seconds: 1_764_000_000,
                increment: 7,
            },
            time_ms: 1_764_000_000_123,
            subject: "65f1c0ffee0000000000beef".into(),
        }
    }

    #[test]
    fn positions_order_as_integers_and_round_trip() {
        let earlier = SourcePosition {
            seconds: 10,
            increment: 99,
        };
        let later = SourcePosition {
            seconds: 11,
            increment: 0,
        };
        assert!(earlier < later);
        assert!(earlier.as_u64() < later.as_u64());
        assert_eq!(SourcePosition::from_u64(later.as_u64()), later);
    }

    #[test]
    fn ids_are_deterministic_and_separate_their_parts() {
        let a = event_id(EventType::FulfillmentRequested, &["guid-1"]);
        assert_eq!(a, event_id(EventType::FulfillmentRequested, &["guid-1"]));
        assert_ne!(a, event_id(EventType::OrderStatusChanged, &["guid-1"]));
        assert_ne!(
            event_id(EventType::OrderStatusChanged, &["ab", "c"]),
            event_id(EventType::OrderStatusChanged, &["a", "bc"])
        );
        // Pinned: ids must never change between releases, or duplicates stop being recognisable.
        assert_eq!(a, "49590a80-23c2-5461-a86e-ebc97facb1fd");
    }

    #[test]
    fn headers_round_trip() {
        let metadata = sample();
        let headers = metadata.to_headers();
        let as_bytes: Vec<(&str, &[u8])> =
            headers.iter().map(|(k, v)| (*k, v.as_bytes())).collect();
        assert_eq!(EventMetadata::from_headers(as_bytes).unwrap(), metadata);
        let find = |name| headers.iter().find(|(k, _)| *k == name).unwrap().1.clone();
        assert_eq!(find(header::SOURCE), "/mongodb/accounts/customer.accounts");
        assert_eq!(find(header::TIME), "2025-11-24T16:00:00.123Z");
        assert_eq!(find(header::SPEC_VERSION), "1.0");
    }

    #[test]
    fn bad_headers_are_named() {
        let metadata = sample();
        let mut headers = metadata.to_headers();
        headers.retain(|(k, _)| *k != header::CLUSTER_TIME);
        let as_bytes: Vec<(&str, &[u8])> =
            headers.iter().map(|(k, v)| (*k, v.as_bytes())).collect();
        assert_eq!(
            EventMetadata::from_headers(as_bytes),
            Err(HeaderError::Missing(header::CLUSTER_TIME))
        );
        let mut headers = metadata.to_headers();
        headers[2].1 = "storefront.unknown".into();
        let as_bytes: Vec<(&str, &[u8])> =
            headers.iter().map(|(k, v)| (*k, v.as_bytes())).collect();
        let error = EventMetadata::from_headers(as_bytes)
            .unwrap_err()
            .to_string();
        assert!(error.contains("unknown event type"), "{error}");
    }
}
