//! Kafka records to typed events, or the reason they are poison.
//!
//! ```text
//! record (topic, key, headers, body) --headers--> EventMetadata (ce_type, ce_clustertime, ...)
//!                                    --topic + ce_type--> which payload is expected
//!                                    --body--> typed payload --contract checks--> Event
//!                                  any failure ------------------------------> Poison(kind, reason)
//! ```
//!
//! Pure functions with no I/O. A record is poison when applying it could only be wrong: it has no
//! valid CloudEvents headers, an event type the topic does not carry, a body that is not JSON or
//! not the payload, or a payload that breaks the contract the projections (and the no-loop rules
//! of `docs/domain.md`) rely on:
//! - the record key is the aggregate id (per-key order is what keeps one customer's or one
//!   order's events in sequence, so a mismatched key would break it);
//! - a customer id is not empty: an ObjectId in hex or a string, which Spring's rule
//!   ([`CustomerId::from_key`]: 24 hex digits are an ObjectId, anything else a string) maps back
//!   to the `_id` of `customer.orders`;
//! - an OrderStatusChangeEvent never carries APPROVED (adding it could make an order's current
//!   status APPROVED again, which is what triggers a FulfillmentRequestEvent);
//! - a FulfillmentRequestEvent's order is currently APPROVED (a request created in any other
//!   status would itself be published back as an OrderStatusChangeEvent);
//! - a tombstone has no body, and every other event has one;
//! - the payload's schema version is one this release reads.
//!
//! And the headers must not contradict themselves or the record: a CloudEvents header given
//! twice must have one value, `content-type` (when present) must be `application/json`,
//! `ce_subject` must be the record key, and `ce_clustertime` must fit the `i64` position guards
//! store. A value that is not UTF-8 is not JSON. Payload errors name the field's path.
//!
//! Poison never stops consumption: the runner sends it to the dead-letter topic with
//! [`Poison::reason`] and moves on.

use rdkafka::Message;
use rdkafka::message::{Headers, OwnedMessage};
use storefront_schemas::documents::{CustomerId, OrderStatusType};
use storefront_schemas::events::{
    CustomerChangeEvent, EventPayload, FulfillmentRequestEvent, OrderStatusChangeEvent,
};
use storefront_schemas::metadata::{EventMetadata, EventType, SCHEMA_VERSION, header};
use storefront_schemas::topology::StorefrontTopics;

/// A record that decoded into an event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The CloudEvents metadata (position, type, id).
    pub metadata: EventMetadata,
    /// The payload, typed.
    pub body: EventBody,
}

impl Event {
    /// The source position as the integer stored in guard fields.
    pub fn position(&self) -> i64 {
        // A cluster time's seconds fit in 31 bits until 2038 and in 32 until 2106, so the
        // combined value stays below 2^63 for the lifetime of this format.
        i64::try_from(self.metadata.position.as_u64()).unwrap_or(i64::MAX)
    }
}

/// The typed payload of an event.
#[derive(Debug, Clone, PartialEq)]
pub enum EventBody {
    /// A customer was inserted, updated or replaced.
    CustomerChanged {
        /// The customer id.
        id: CustomerId,
        /// Its public fields.
        payload: CustomerChangeEvent,
    },
    /// A customer was deleted (a tombstone).
    CustomerDeleted {
        /// The customer id (from the record key).
        id: CustomerId,
    },
    /// A fulfillment's status changed.
    OrderStatusChanged(OrderStatusChangeEvent),
    /// An order was approved and asks for fulfillment (boxed: it is the largest payload).
    FulfillmentRequested(Box<FulfillmentRequestEvent>),
}

/// Why a record cannot be applied; the kind is a metric label, the reason goes into the
/// dead-letter record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Poison {
    /// What class of problem (low-cardinality).
    pub kind: PoisonKind,
    /// What is wrong, for a person (never the record's content beyond field names and ids).
    pub reason: String,
}

/// Classes of poison, used as the `kind` label of `projector_dead_letters_total` and the
/// `dlq_kind` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PoisonKind {
    /// CloudEvents headers missing or invalid (including an unknown `ce_type`).
    Headers,
    /// The body is not JSON.
    NotJson,
    /// The body is JSON but not the payload its type promises.
    Schema,
    /// A valid payload that breaks a rule of the contract (see the module doc).
    Contract,
    /// MongoDB refused the write for good (not a transient failure).
    Rejected,
}

impl PoisonKind {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            PoisonKind::Headers => "headers",
            PoisonKind::NotJson => "not_json",
            PoisonKind::Schema => "schema",
            PoisonKind::Contract => "contract",
            PoisonKind::Rejected => "rejected",
        }
    }
}

impl Poison {
    fn new(kind: PoisonKind, reason: impl Into<String>) -> Self {
        Self {
            kind,
            reason: reason.into(),
        }
    }

    /// A write MongoDB refused for good.
    pub fn rejected(reason: impl Into<String>) -> Self {
        Self::new(PoisonKind::Rejected, reason)
    }

    /// A contract violation found while applying (for example an unknown order).
    pub fn contract(reason: impl Into<String>) -> Self {
        Self::new(PoisonKind::Contract, reason)
    }
}

/// Decodes one record consumed from `record.topic()`, given the configured topic names.
pub fn decode(record: &OwnedMessage, topics: &StorefrontTopics) -> Result<Event, Poison> {
    let headers: Vec<(&str, &[u8])> = record
        .headers()
        .map(|headers| {
            headers
                .iter()
                .filter_map(|h| h.value.map(|value| (h.key, value)))
                .collect()
        })
        .unwrap_or_default();
    decode_parts(
        record.topic(),
        record.key(),
        record.payload(),
        headers,
        topics,
    )
}

/// [`decode`] on the parts of a record.
pub fn decode_parts<'a>(
    topic: &str,
    key: Option<&[u8]>,
    body: Option<&[u8]>,
    headers: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    topics: &StorefrontTopics,
) -> Result<Event, Poison> {
    let headers: Vec<(&str, &[u8])> = headers.into_iter().collect();
    check_headers(&headers)?;
    let metadata = EventMetadata::from_headers(headers.iter().copied())
        .map_err(|e| Poison::new(PoisonKind::Headers, e.to_string()))?;
    // Guard fields hold the position as a signed 64-bit integer: a larger cluster time (no
    // MongoDB gives one before the year 2038) would be clamped and then outrank every real one.
    if i64::try_from(metadata.position.as_u64()).is_err() {
        return Err(Poison::new(
            PoisonKind::Headers,
            format!(
                "header {}: {} is beyond any cluster time (at most {})",
                header::CLUSTER_TIME,
                metadata.position.as_u64(),
                i64::MAX
            ),
        ));
    }
    let expected: &[EventType] = if topic == topics.customer_change {
        &[EventType::CustomerChanged, EventType::CustomerDeleted]
    } else if topic == topics.order_status_change {
        &[EventType::OrderStatusChanged]
    } else if topic == topics.fulfillment_request {
        &[EventType::FulfillmentRequested]
    } else {
        &[]
    };
    if !expected.contains(&metadata.event_type) {
        return Err(Poison::new(
            PoisonKind::Headers,
            format!(
                "event type `{}` is not carried by topic {topic}",
                metadata.event_type.ce_type()
            ),
        ));
    }
    if metadata.schema_version > SCHEMA_VERSION {
        return Err(Poison::contract(format!(
            "schema version {} is newer than this release reads ({SCHEMA_VERSION})",
            metadata.schema_version
        )));
    }
    let key = match key.map(std::str::from_utf8) {
        Some(Ok(key)) => key,
        Some(Err(_)) => return Err(Poison::contract("record key is not UTF-8")),
        None => return Err(Poison::contract("record has no key")),
    };
    let body = match (metadata.event_type, body) {
        (EventType::CustomerDeleted, None) => {
            let id = customer_id(key, "record key")?;
            return Ok(Event {
                metadata,
                body: EventBody::CustomerDeleted { id },
            });
        }
        (EventType::CustomerDeleted, Some(_)) => {
            return Err(Poison::contract("a customer tombstone must have no body"));
        }
        (_, None) => {
            return Err(Poison::contract(format!(
                "event type `{}` needs a body; the record is a tombstone",
                metadata.event_type.ce_type()
            )));
        }
        (_, Some(body)) => body,
    };
    let body = match metadata.event_type {
        EventType::CustomerChanged => {
            let payload: CustomerChangeEvent = payload(body)?;
            require_key(key, &payload.id, "id")?;
            let id = customer_id(&payload.id, "id")?;
            EventBody::CustomerChanged { id, payload }
        }
        EventType::OrderStatusChanged => {
            let payload: OrderStatusChangeEvent = payload(body)?;
            require_guid(&payload.guid, "guid")?;
            require_key(key, &payload.guid, "guid")?;
            if payload.order_status_event.order_status_type == OrderStatusType::Approved {
                return Err(Poison::contract(
                    "an OrderStatusChangeEvent must not carry APPROVED: adding it could make the \
                     order current APPROVED again and request its fulfillment a second time",
                ));
            }
            EventBody::OrderStatusChanged(payload)
        }
        EventType::FulfillmentRequested => {
            let payload: FulfillmentRequestEvent = payload(body)?;
            require_guid(&payload.order.guid, "order.guid")?;
            require_key(key, &payload.order.guid, "order.guid")?;
            let current = payload.order.current_status().map(|s| &s.order_status_type);
            if current != Some(&OrderStatusType::Approved) {
                return Err(Poison::contract(format!(
                    "order {} is not currently APPROVED (current status: {}); a request is only \
                     created for an approved order",
                    payload.order.guid,
                    current.map_or("none", |s| s.as_str())
                )));
            }
            EventBody::FulfillmentRequested(Box::new(payload))
        }
        EventType::CustomerDeleted => unreachable!("tombstones returned above"),
    };
    require_subject(&metadata, key)?;
    Ok(Event { metadata, body })
}

/// Headers that contradict themselves: a CloudEvents header given twice with different values
/// (which one would win is up to the reader), or a `content-type` that says the body is not the
/// JSON payload (absent is fine: JSON is the binding's default here).
fn check_headers(headers: &[(&str, &[u8])]) -> Result<(), Poison> {
    let poison = |reason: String| Err(Poison::new(PoisonKind::Headers, reason));
    for (index, (name, value)) in headers.iter().enumerate() {
        let ours = name.starts_with("ce_") || *name == header::CONTENT_TYPE;
        if ours
            && headers[..index]
                .iter()
                .any(|(other, earlier)| other == name && earlier != value)
        {
            return poison(format!("header {name} appears twice with different values"));
        }
    }
    if let Some((_, value)) = headers.iter().find(|(n, _)| *n == header::CONTENT_TYPE) {
        let Ok(text) = std::str::from_utf8(value) else {
            return poison(format!("header {} is not UTF-8", header::CONTENT_TYPE));
        };
        let media_type = text.split(';').next().unwrap_or_default().trim();
        if !media_type.eq_ignore_ascii_case("application/json") {
            return poison(format!(
                "header {}: `{text}` is not application/json, the only body this release reads",
                header::CONTENT_TYPE
            ));
        }
    }
    Ok(())
}

/// `ce_subject` names the aggregate, as the key does; a record whose two disagree is not one
/// this pipeline wrote.
fn require_subject(metadata: &EventMetadata, key: &str) -> Result<(), Poison> {
    if metadata.subject == key {
        Ok(())
    } else {
        Err(Poison::new(
            PoisonKind::Headers,
            format!(
                "header {} `{}` differs from the record key `{key}`",
                header::SUBJECT,
                metadata.subject
            ),
        ))
    }
}

/// Reads a payload, telling a body that is not JSON from one that is not the payload.
fn payload<T: EventPayload>(body: &[u8]) -> Result<T, Poison> {
    // JSON is UTF-8 (RFC 8259); serde_json checks it only in the strings it reads, so a body
    // whose invalid byte sits in a skipped string would otherwise pass as "JSON" here.
    if let Err(error) = std::str::from_utf8(body) {
        return Err(Poison::new(
            PoisonKind::NotJson,
            format!(
                "the value is not UTF-8 (invalid byte at offset {}), so not JSON",
                error.valid_up_to()
            ),
        ));
    }
    T::from_json(body).map_err(|error| {
        let kind = if serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok() {
            PoisonKind::Schema
        } else {
            PoisonKind::NotJson
        };
        Poison::new(kind, error.to_string())
    })
}

/// The customer id `key` stands for, by Spring's rule (24 hex digits are an ObjectId, anything
/// else a string); an empty key is no id.
fn customer_id(key: &str, field: &str) -> Result<CustomerId, Poison> {
    CustomerId::from_key(key).ok_or_else(|| {
        Poison::contract(format!(
            "{field} is empty: a customer id is an ObjectId in hex or a non-empty string"
        ))
    })
}

fn require_key(key: &str, id: &str, field: &str) -> Result<(), Poison> {
    if key == id {
        Ok(())
    } else {
        Err(Poison::contract(format!(
            "record key `{key}` differs from the payload's {field} `{id}`; events must be keyed \
             by their aggregate to stay in order"
        )))
    }
}

fn require_guid(guid: &str, field: &str) -> Result<(), Poison> {
    if guid.trim().is_empty() {
        Err(Poison::contract(format!("{field} is empty")))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use storefront_schemas::documents::{AddressType, Price};
    use storefront_schemas::fixtures::sample;
    use storefront_schemas::metadata::{SourcePosition, event_id};
    use storefront_schemas::topology::Namespace;

    use super::*;

    const CUSTOMER: &str = "65f1c0ffee0000000000beef";
    const GUID: &str = "df78784f-4d1d-48ad-a3e3-26a4fe7317a4";

    fn topics() -> StorefrontTopics {
        StorefrontTopics::default()
    }

    fn metadata(event_type: EventType, subject: &str) -> EventMetadata {
        EventMetadata {
            id: event_id(event_type, &[subject]),
            event_type,
            schema_version: SCHEMA_VERSION,
            source: Namespace::new("accounts", "customer.accounts"),
            position: SourcePosition {
                seconds: 1_764_000_000,
                increment: 3,
            },
            time_ms: 1_764_000_000_000,
            subject: subject.to_owned(),
        }
    }

    fn customer_json(id: &str) -> Vec<u8> {
        sample::customer_change(
            id,
            "Ada",
            vec![sample::address(AddressType::Shipping, "London")],
        )
        .to_json()
    }

    fn status_json(guid: &str, status: &str) -> Vec<u8> {
        sample::status_change(guid, sample::status(5, status, Some("note"))).to_json()
    }

    fn request_json(statuses: &[(i64, &str)]) -> Vec<u8> {
        let order = sample::order(GUID, statuses, vec![sample::order_item(Price::from(12), 1)]);
        FulfillmentRequestEvent {
            customer_id: Some(CUSTOMER.into()),
            ..sample::fulfillment_request(order, sample::address(AddressType::Shipping, "London"))
        }
        .to_json()
    }

    /// A record as the table describes it: topic, key, body, metadata (or raw headers).
    struct Case {
        what: &'static str,
        topic: String,
        key: Option<&'static str>,
        body: Option<Vec<u8>>,
        headers: Vec<(&'static str, String)>,
        expect: Result<&'static str, (PoisonKind, &'static str)>,
    }

    fn headers(event_type: EventType, subject: &str) -> Vec<(&'static str, String)> {
        metadata(event_type, subject).to_headers()
    }

    /// A customer change's headers with `name` set to `value` (replaced, or added).
    fn with_header(subject: &str, name: &'static str, value: &str) -> Vec<(&'static str, String)> {
        let mut h = without_header(subject, name);
        h.push((name, value.to_owned()));
        h
    }

    fn without_header(subject: &str, name: &str) -> Vec<(&'static str, String)> {
        let mut h = headers(EventType::CustomerChanged, subject);
        h.retain(|(k, _)| *k != name);
        h
    }

    #[test]
    fn records_decode_to_events_or_name_their_poison() {
        use EventType::*;
        use PoisonKind::*;
        let t = topics();
        let mut no_type = headers(CustomerChanged, CUSTOMER);
        no_type.retain(|(k, _)| *k != "ce_type");
        let mut unknown_type = headers(CustomerChanged, CUSTOMER);
        unknown_type[2].1 = "storefront.customer.renamed".into();
        let mut newer_schema = headers(CustomerChanged, CUSTOMER);
        for (k, v) in &mut newer_schema {
            if *k == "ce_schemaversion" {
                *v = (SCHEMA_VERSION + 1).to_string();
            }
        }
        let mut missing_name: serde_json::Value =
            serde_json::from_slice(&customer_json(CUSTOMER)).unwrap();
        missing_name.as_object_mut().unwrap().remove("name");
        let cases = vec![
            Case {
                what: "customer change",
                topic: t.customer_change.clone(),
                key: Some(CUSTOMER),
                body: Some(customer_json(CUSTOMER)),
                headers: headers(CustomerChanged, CUSTOMER),
                expect: Ok("changed"),
            },
            Case {
                what: "customer tombstone",
                topic: t.customer_change.clone(),
                key: Some(CUSTOMER),
                body: None,
                headers: headers(CustomerDeleted, CUSTOMER),
                expect: Ok("deleted"),
            },
            Case {
                what: "status change",
                topic: t.order_status_change.clone(),
                key: Some(GUID),
                body: Some(status_json(GUID, "SHIPPED")),
                headers: headers(OrderStatusChanged, GUID),
                expect: Ok("status"),
            },
            Case {
                what: "fulfillment request",
                topic: t.fulfillment_request.clone(),
                key: Some(GUID),
                body: Some(request_json(&[(1, "CREATED"), (2, "APPROVED")])),
                headers: headers(FulfillmentRequested, GUID),
                expect: Ok("request"),
            },
            Case {
                what: "not json",
                topic: t.customer_change.clone(),
                key: Some(CUSTOMER),
                body: Some(b"{not json".to_vec()),
                headers: headers(CustomerChanged, CUSTOMER),
                expect: Err((NotJson, "")),
            },
            Case {
                what: "schema violation",
                topic: t.customer_change.clone(),
                key: Some(CUSTOMER),
                body: Some(serde_json::to_vec(&missing_name).unwrap()),
                headers: headers(CustomerChanged, CUSTOMER),
                expect: Err((Schema, "name")),
            },
            Case {
                what: "no ce_type header",
                topic: t.customer_change.clone(),
                key: Some(CUSTOMER),
                body: Some(customer_json(CUSTOMER)),
                headers: no_type,
                expect: Err((Headers, "ce_type")),
            },
            Case {
                what: "unknown event type",
                topic: t.customer_change.clone(),
                key: Some(CUSTOMER),
                body: Some(customer_json(CUSTOMER)),
                headers: unknown_type,
                expect: Err((Headers, "unknown event type")),
            },
            Case {
                what: "event type of another topic",
                topic: t.customer_change.clone(),
                key: Some(GUID),
                body: Some(status_json(GUID, "SHIPPED")),
                headers: headers(OrderStatusChanged, GUID),
                expect: Err((Headers, "not carried by topic")),
            },
            Case {
                what: "newer schema version",
                topic: t.customer_change.clone(),
                key: Some(CUSTOMER),
                body: Some(customer_json(CUSTOMER)),
                headers: newer_schema,
                expect: Err((Contract, "schema version")),
            },
            Case {
                what: "key differs from the id",
                topic: t.customer_change.clone(),
                key: Some("65f1c0ffee0000000000aaaa"),
                body: Some(customer_json(CUSTOMER)),
                headers: headers(CustomerChanged, CUSTOMER),
                expect: Err((Contract, "differs")),
            },
            Case {
                what: "string id",
                topic: t.customer_change.clone(),
                key: Some("ada-1"),
                body: Some(customer_json("ada-1")),
                headers: headers(CustomerChanged, "ada-1"),
                expect: Ok("changed"),
            },
            Case {
                what: "tombstone of a string id",
                topic: t.customer_change.clone(),
                key: Some("ada-1"),
                body: None,
                headers: headers(CustomerDeleted, "ada-1"),
                expect: Ok("deleted"),
            },
            Case {
                what: "empty id",
                topic: t.customer_change.clone(),
                key: Some(""),
                body: Some(customer_json("")),
                headers: headers(CustomerChanged, ""),
                expect: Err((Contract, "id is empty")),
            },
            Case {
                what: "tombstone with an empty key",
                topic: t.customer_change.clone(),
                key: Some(""),
                body: None,
                headers: headers(CustomerDeleted, ""),
                expect: Err((Contract, "record key is empty")),
            },
            Case {
                what: "tombstone with a body",
                topic: t.customer_change.clone(),
                key: Some(CUSTOMER),
                body: Some(customer_json(CUSTOMER)),
                headers: headers(CustomerDeleted, CUSTOMER),
                expect: Err((Contract, "no body")),
            },
            Case {
                what: "change without a body",
                topic: t.customer_change.clone(),
                key: Some(CUSTOMER),
                body: None,
                headers: headers(CustomerChanged, CUSTOMER),
                expect: Err((Contract, "needs a body")),
            },
            Case {
                what: "tombstone without a key",
                topic: t.customer_change.clone(),
                key: None,
                body: None,
                headers: headers(CustomerDeleted, CUSTOMER),
                expect: Err((Contract, "no key")),
            },
            Case {
                what: "APPROVED as a status change",
                topic: t.order_status_change.clone(),
                key: Some(GUID),
                body: Some(status_json(GUID, "APPROVED")),
                headers: headers(OrderStatusChanged, GUID),
                expect: Err((Contract, "must not carry APPROVED")),
            },
            Case {
                what: "empty guid",
                topic: t.order_status_change.clone(),
                key: Some(""),
                body: Some(status_json("", "SHIPPED")),
                headers: headers(OrderStatusChanged, ""),
                expect: Err((Contract, "guid is empty")),
            },
            Case {
                what: "request for an order no longer APPROVED",
                topic: t.fulfillment_request.clone(),
                key: Some(GUID),
                body: Some(request_json(&[(2, "APPROVED"), (3, "PROCESSING")])),
                headers: headers(FulfillmentRequested, GUID),
                expect: Err((Contract, "not currently APPROVED")),
            },
            Case {
                what: "content-type that is not JSON",
                topic: t.customer_change.clone(),
                key: Some(CUSTOMER),
                body: Some(customer_json(CUSTOMER)),
                headers: with_header(CUSTOMER, "content-type", "application/avro"),
                expect: Err((Headers, "`application/avro` is not application/json")),
            },
            Case {
                what: "JSON content-type with a charset",
                topic: t.customer_change.clone(),
                key: Some(CUSTOMER),
                body: Some(customer_json(CUSTOMER)),
                headers: with_header(CUSTOMER, "content-type", "Application/JSON; charset=utf-8"),
                expect: Ok("changed"),
            },
            Case {
                what: "no content-type",
                topic: t.customer_change.clone(),
                key: Some(CUSTOMER),
                body: Some(customer_json(CUSTOMER)),
                headers: without_header(CUSTOMER, "content-type"),
                expect: Ok("changed"),
            },
            Case {
                what: "ce_type twice, differing",
                topic: t.customer_change.clone(),
                key: Some(CUSTOMER),
                body: Some(customer_json(CUSTOMER)),
                headers: {
                    let mut h = headers(CustomerChanged, CUSTOMER);
                    h.push(("ce_type", CustomerDeleted.ce_type().into()));
                    h
                },
                expect: Err((Headers, "ce_type appears twice")),
            },
            Case {
                what: "subject differs from the key",
                topic: t.customer_change.clone(),
                key: Some(CUSTOMER),
                body: Some(customer_json(CUSTOMER)),
                headers: with_header(CUSTOMER, "ce_subject", "someone-else"),
                expect: Err((Headers, "ce_subject `someone-else` differs")),
            },
            Case {
                what: "cluster time beyond i64",
                topic: t.customer_change.clone(),
                key: Some(CUSTOMER),
                body: Some(customer_json(CUSTOMER)),
                headers: with_header(CUSTOMER, "ce_clustertime", &u64::MAX.to_string()),
                expect: Err((Headers, "beyond any cluster time")),
            },
            Case {
                what: "negative cluster time",
                topic: t.customer_change.clone(),
                key: Some(CUSTOMER),
                body: Some(customer_json(CUSTOMER)),
                headers: with_header(CUSTOMER, "ce_clustertime", "-5"),
                expect: Err((Headers, "ce_clustertime")),
            },
            Case {
                what: "value not UTF-8",
                topic: t.customer_change.clone(),
                key: Some(CUSTOMER),
                body: Some({
                    let mut body = customer_json(CUSTOMER);
                    body.insert(8, 0xff);
                    body
                }),
                headers: headers(CustomerChanged, CUSTOMER),
                expect: Err((NotJson, "not UTF-8 (invalid byte at offset 8)")),
            },
            Case {
                what: "unknown statuses pass through",
                topic: t.order_status_change.clone(),
                key: Some(GUID),
                body: Some(status_json(GUID, "BACKORDERED")),
                headers: headers(OrderStatusChanged, GUID),
                expect: Ok("status"),
            },
        ];
        for case in cases {
            let as_bytes: Vec<(&str, &[u8])> = case
                .headers
                .iter()
                .map(|(k, v)| (*k, v.as_bytes()))
                .collect();
            let decoded = decode_parts(
                &case.topic,
                case.key.map(str::as_bytes),
                case.body.as_deref(),
                as_bytes,
                &t,
            );
            match (case.expect, decoded) {
                (Ok(kind), Ok(event)) => {
                    let found = match event.body {
                        EventBody::CustomerChanged { .. } => "changed",
                        EventBody::CustomerDeleted { .. } => "deleted",
                        EventBody::OrderStatusChanged(_) => "status",
                        EventBody::FulfillmentRequested(_) => "request",
                    };
                    assert_eq!(found, kind, "{}", case.what);
                }
                (Err((kind, text)), Err(poison)) => {
                    assert_eq!(poison.kind, kind, "{}: {}", case.what, poison.reason);
                    assert!(
                        poison.reason.contains(text),
                        "{}: `{}` lacks `{text}`",
                        case.what,
                        poison.reason
                    );
                }
                (expect, got) => panic!("{}: expected {expect:?}, got {got:?}", case.what),
            }
        }
    }

    #[test]
    fn customer_ids_follow_springs_rule() {
        use mongodb::bson::oid::ObjectId;
        let not_hex = "zzf1c0ffee0000000000beef";
        let cases = [
            (
                CUSTOMER,
                CustomerId::ObjectId(ObjectId::parse_str(CUSTOMER).unwrap()),
            ),
            ("ada-1", CustomerId::Text("ada-1".into())),
            (not_hex, CustomerId::Text(not_hex.into())),
        ];
        for (key, expected) in cases {
            for (event_type, body) in [
                (EventType::CustomerChanged, Some(customer_json(key))),
                (EventType::CustomerDeleted, None),
            ] {
                let headers = headers(event_type, key);
                let as_bytes: Vec<(&str, &[u8])> =
                    headers.iter().map(|(k, v)| (*k, v.as_bytes())).collect();
                let event = decode_parts(
                    &topics().customer_change,
                    Some(key.as_bytes()),
                    body.as_deref(),
                    as_bytes,
                    &topics(),
                )
                .unwrap();
                let id = match event.body {
                    EventBody::CustomerChanged { id, .. } | EventBody::CustomerDeleted { id } => id,
                    other => panic!("{key}: {other:?}"),
                };
                assert_eq!(id, expected, "{key} {event_type:?}");
            }
        }
    }

    #[test]
    fn positions_are_the_cluster_time_as_one_integer() {
        let body = customer_json(CUSTOMER);
        let headers = headers(EventType::CustomerChanged, CUSTOMER);
        let as_bytes: Vec<(&str, &[u8])> =
            headers.iter().map(|(k, v)| (*k, v.as_bytes())).collect();
        let event = decode_parts(
            "accounts.customer.change",
            Some(CUSTOMER.as_bytes()),
            Some(&body),
            as_bytes,
            &topics(),
        )
        .unwrap();
        assert_eq!(event.position(), (1_764_000_000_i64 << 32) | 3);
    }
}
