//! `fulfillment.requests` → OrderStatusChangeEvent when the order's current status is anything
//! but APPROVED.
//!
//! ```text
//! post-image --> current status of `order` (latest timestamp; ties: the later in the list)
//!                  APPROVED  -> nothing (a request the fulfillment projector just created)
//!                  otherwise -> OrderStatusChangeEvent (key: order guid)
//! delete, or update whose post-image is gone -> nothing
//! ```
//!
//! **Once per status.** The id is derived from the guid, the status and its timestamp, so a
//! change that does not add a status (say `shippingMethod` set while SHIPPED) repeats the id
//! and the runtime drops it (`once_per_id`), while a new status always has a new id.
//!
//! **No loop.** The fulfillment projector creates requests in status APPROVED; they map to
//! nothing, so a request never echoes back as a status change.
//!
//! Statuses this release does not know are published as they are (forward compatible).
//!
//! # Defects, per field
//! Only what the event needs is read: `order.guid` and `order.orderStatusEvents`.
//!
//! | field | defect | effect |
//! |---|---|---|
//! | `order` | missing or not an object | the change is not published |
//! | `order.guid` | missing, not a string, or empty | the change is not published |
//! | `order.orderStatusEvents` | not a list; or no status at all (and none malformed) | the change is not published |
//! | `order.orderStatusEvents.N` | not an object, `timestamp` or `orderStatusType` missing or mistyped | that status is left out; the current status is the newest of the others |
//! | `timestamp`, `name`, `contact`, `address`, `order.orderItems`, `shippingMethod`, unknown fields | anything | never read |
//!
//! Leaving a bad status out is safe here: the newest readable status was real, and its event
//! was published already (the runtime drops the repeat) or is published now; the left-out
//! status follows as soon as it is repaired.

use storefront_schemas::documents::{DocumentError, OrderStatusEvent, OrderStatusType};
use storefront_schemas::events::{EventPayload, OrderStatusChangeEvent};
use storefront_schemas::metadata::event_id;

use mongodb::bson::RawBsonRef;

use super::{
    ChangeMapper, Defect, Mapped, SourceChange, entries, or_change_defect, outbound, post_image,
    read_entry, require_guid, required_value,
};

/// Maps changes of the Fulfillment collection.
#[derive(Debug, Clone)]
pub struct FulfillmentMapper {
    topic: String,
}

impl FulfillmentMapper {
    /// Publishes on `topic` (normally `fulfillment.order.change`).
    pub fn new(topic: impl Into<String>) -> Self {
        Self {
            topic: topic.into(),
        }
    }
}

impl ChangeMapper for FulfillmentMapper {
    fn map(&self, change: &SourceChange) -> Mapped {
        or_change_defect(change, self.map_request(change))
    }
}

impl FulfillmentMapper {
    fn map_request(&self, change: &SourceChange) -> Result<Mapped, DocumentError> {
        // A deleted request has no status to report.
        let Some(document) = post_image(change)? else {
            return Ok(Mapped::default());
        };
        let order = required_value(document, "", "order", "an object", RawBsonRef::as_document)?;
        let guid = required_value(order, "order", "guid", "a string", RawBsonRef::as_str)?;
        require_guid(guid, "order.guid")?;
        let history = entries(order, "order", "orderStatusEvents")?;
        let mut mapped = Mapped::default();
        let mut statuses = Vec::new();
        for (path, entry) in history {
            match read_entry::<OrderStatusEvent>(&path, entry) {
                Ok(status) => statuses.push(status),
                Err(error) => {
                    let what = format!("status of order {guid}");
                    mapped.defects.push(Defect::of_entry(
                        change,
                        &path,
                        entry,
                        Some(guid),
                        &what,
                        error,
                    ));
                }
            }
        }
        let Some(status) = OrderStatusEvent::current(&statuses) else {
            if mapped.defects.is_empty() {
                return Err(DocumentError::InvalidField {
                    field: "order.orderStatusEvents".to_owned(),
                    reason: format!("order {guid} has no status"),
                });
            }
            return Ok(mapped);
        };
        if status.order_status_type == OrderStatusType::Approved {
            return Ok(mapped);
        }
        let id = event_id(
            OrderStatusChangeEvent::EVENT_TYPE,
            &[
                guid,
                status.order_status_type.as_str(),
                &status.timestamp.to_string(),
            ],
        );
        let payload = OrderStatusChangeEvent {
            guid: guid.to_owned(),
            order_status_event: status.clone(),
        };
        mapped.events.push(outbound(
            change,
            &self.topic,
            guid.to_owned(),
            OrderStatusChangeEvent::EVENT_TYPE,
            id,
            Some(payload.to_json()),
            true,
        ));
        Ok(mapped)
    }
}

#[cfg(test)]
mod tests {
    use mongodb::bson::{Bson, Document, doc};
    use storefront_schemas::metadata::{EventType, SCHEMA_VERSION};

    use super::*;
    use crate::mapping::testing::{
        change, fixture, fulfillment_document, fulfillment_namespace, golden, order, position,
    };
    use crate::mapping::{ChangeKind, OutboundEvent};

    const GUID: &str = "df78784f-4d1d-48ad-a3e3-26a4fe7317a4";

    fn mapper() -> FulfillmentMapper {
        FulfillmentMapper::new("fulfillment.order.change")
    }

    fn map_at(
        kind: ChangeKind,
        document: Option<Document>,
        increment: u32,
    ) -> Result<Vec<OutboundEvent>, Vec<Defect>> {
        map_whole(kind, document, increment).into_result()
    }

    fn map_whole(kind: ChangeKind, document: Option<Document>, increment: u32) -> Mapped {
        let id = Bson::ObjectId("65f1c0ffee0000000000f001".parse().unwrap());
        mapper().map(&change(
            fulfillment_namespace(),
            kind,
            id,
            document,
            position(increment),
        ))
    }

    fn map(
        kind: ChangeKind,
        document: Option<Document>,
    ) -> Result<Vec<OutboundEvent>, Vec<Defect>> {
        map_at(kind, document, 4)
    }

    fn request(statuses: &[(i64, &str)]) -> Option<Document> {
        Some(fulfillment_document(order(GUID, statuses)))
    }

    /// What a change should map to.
    #[derive(Debug)]
    enum Expect {
        /// One status change with this status and timestamp.
        Status(&'static str, i64),
        /// No events.
        Nothing,
        /// No events; one defect of the change, on this field.
        Error(&'static str),
    }

    #[test]
    fn requests_map_by_their_current_status() {
        use ChangeKind::*;
        use Expect::*;
        let approved = [(1, "CREATED"), (2, "APPROVED")];
        let processing = [(1, "CREATED"), (2, "APPROVED"), (3, "PROCESSING")];
        let mut no_guid = fulfillment_document(order(GUID, &approved));
        no_guid.get_document_mut("order").unwrap().remove("guid");
        let mut no_address = fulfillment_document(order(GUID, &processing));
        no_address.remove("address");
        let mut wrong_timestamp = fulfillment_document(order(GUID, &processing));
        wrong_timestamp.insert("timestamp", "yesterday");
        let mut whole_double = fulfillment_document(order(GUID, &[]));
        whole_double.get_document_mut("order").unwrap().insert(
            "orderStatusEvents",
            vec![
                Bson::Document(doc! { "timestamp": 2.0, "orderStatusType": "APPROVED" }),
                Bson::Document(doc! { "timestamp": 3_i32, "orderStatusType": "PROCESSING" }),
            ],
        );
        let mut bad_items = fulfillment_document(order(GUID, &processing));
        bad_items
            .get_document_mut("order")
            .unwrap()
            .insert("orderItems", vec![Bson::Document(doc! { "price": "abc" })]);
        let mut date_timestamp = fulfillment_document(order(GUID, &[]));
        date_timestamp.get_document_mut("order").unwrap().insert(
            "orderStatusEvents",
            vec![
                Bson::Document(doc! { "timestamp": 2_i64, "orderStatusType": "APPROVED" }),
                Bson::Document(doc! {
                    "timestamp": mongodb::bson::DateTime::from_millis(1_700_000_000_000),
                    "orderStatusType": "SHIPPED",
                }),
            ],
        );
        let mut number_guid = fulfillment_document(order(GUID, &processing));
        number_guid
            .get_document_mut("order")
            .unwrap()
            .insert("guid", 42);
        let mut no_order = fulfillment_document(order(GUID, &processing));
        no_order.remove("order");
        let mut statuses_not_a_list = fulfillment_document(order(GUID, &processing));
        statuses_not_a_list
            .get_document_mut("order")
            .unwrap()
            .insert("orderStatusEvents", "SHIPPED");
        let mut shipped_by_ups =
            fulfillment_document(order(GUID, &[(2, "APPROVED"), (5, "SHIPPED")]));
        shipped_by_ups.insert("shippingMethod", "UPS");
        let cases: Vec<(&str, ChangeKind, Option<Document>, Expect)> = vec![
            (
                "projector created the request",
                Insert,
                request(&approved),
                Nothing,
            ),
            (
                "snapshot of a new request",
                Snapshot,
                request(&approved),
                Nothing,
            ),
            (
                "replace keeping APPROVED",
                Replace,
                request(&approved),
                Nothing,
            ),
            (
                "PROCESSING pushed",
                Update,
                request(&processing),
                Status("PROCESSING", 3),
            ),
            (
                "PROCESSING saved whole",
                Replace,
                request(&processing),
                Status("PROCESSING", 3),
            ),
            (
                "snapshot of one in progress",
                Snapshot,
                request(&processing),
                Status("PROCESSING", 3),
            ),
            (
                "inserted already in progress",
                Insert,
                request(&processing),
                Status("PROCESSING", 3),
            ),
            (
                "shipped with a carrier",
                Update,
                Some(shipped_by_ups),
                Status("SHIPPED", 5),
            ),
            (
                "tie: the later in the list",
                Update,
                request(&[(2, "APPROVED"), (2, "ON_HOLD")]),
                Status("ON_HOLD", 2),
            ),
            (
                "older status listed last",
                Update,
                request(&[(3, "IN_TRANSIT"), (2, "SHIPPED")]),
                Status("IN_TRANSIT", 3),
            ),
            (
                "unknown status",
                Update,
                request(&[(2, "APPROVED"), (3, "LOST_AT_SEA")]),
                Status("LOST_AT_SEA", 3),
            ),
            (
                "back to APPROVED",
                Update,
                request(&[(2, "ON_HOLD"), (3, "APPROVED")]),
                Nothing,
            ),
            (
                "mongosh number shapes",
                Update,
                Some(whole_double),
                Status("PROCESSING", 3),
            ),
            ("delete", Delete, None, Nothing),
            ("update, deleted before lookup", Update, None, Nothing),
            (
                "insert without document",
                Insert,
                None,
                Error("fullDocument"),
            ),
            (
                "no status at all",
                Update,
                request(&[]),
                Error("order.orderStatusEvents"),
            ),
            ("no order guid", Update, Some(no_guid), Error("order.guid")),
            (
                "no address (never read)",
                Update,
                Some(no_address),
                Status("PROCESSING", 3),
            ),
            (
                "root timestamp is a string (never read)",
                Update,
                Some(wrong_timestamp),
                Status("PROCESSING", 3),
            ),
            (
                "prices and items malformed (never read)",
                Update,
                Some(bad_items),
                Status("PROCESSING", 3),
            ),
            (
                "a date timestamp",
                Update,
                Some(date_timestamp),
                Status("SHIPPED", 1_700_000_000_000),
            ),
            (
                "guid is a number",
                Update,
                Some(number_guid),
                Error("order.guid"),
            ),
            ("order missing", Update, Some(no_order), Error("order")),
            (
                "statuses not a list",
                Update,
                Some(statuses_not_a_list),
                Error("order.orderStatusEvents"),
            ),
        ];
        for (name, kind, document, expect) in cases {
            match (expect, map(kind, document)) {
                (Status(status, timestamp), Ok(events)) => {
                    assert_eq!(events.len(), 1, "{name}");
                    let event = &events[0];
                    assert_eq!(event.topic, "fulfillment.order.change", "{name}");
                    assert_eq!(event.key, GUID, "{name}");
                    assert!(event.once_per_id, "{name}");
                    let metadata = &event.metadata;
                    assert_eq!(metadata.event_type, EventType::OrderStatusChanged, "{name}");
                    assert_eq!(
                        metadata.id,
                        event_id(
                            EventType::OrderStatusChanged,
                            &[GUID, status, &timestamp.to_string()]
                        ),
                        "{name}"
                    );
                    assert_eq!(metadata.subject, GUID, "{name}");
                    assert_eq!(metadata.source, fulfillment_namespace(), "{name}");
                    assert_eq!(metadata.position, position(4), "{name}");
                    assert_eq!(metadata.schema_version, SCHEMA_VERSION, "{name}");
                    let payload =
                        OrderStatusChangeEvent::from_json(event.payload.as_deref().unwrap())
                            .unwrap();
                    assert_eq!(payload.guid, GUID, "{name}");
                    assert_eq!(
                        payload.order_status_event.order_status_type.as_str(),
                        status,
                        "{name}"
                    );
                    assert_eq!(payload.order_status_event.timestamp, timestamp, "{name}");
                }
                (Nothing, Ok(events)) => assert!(events.is_empty(), "{name}: {events:?}"),
                (Error(field), Err(defects)) => {
                    assert_eq!(defects.len(), 1, "{name}: {defects:?}");
                    assert_eq!(defects[0].field, field, "{name}: {defects:?}");
                    assert!(defects[0].entry.is_none(), "{name}");
                }
                (expect, result) => panic!("{name}: expected {expect:?}, got {result:?}"),
            }
        }
    }

    #[test]
    fn the_fixture_maps_to_the_golden_event() {
        let events = map(ChangeKind::Update, Some(fixture("fulfillment.requests"))).unwrap();
        let expected = golden::<OrderStatusChangeEvent>();
        assert_eq!(events.len(), 1);
        assert_eq!(
            events[0].payload.as_deref(),
            Some(expected.to_json().as_slice())
        );
    }

    #[test]
    fn a_change_without_a_new_status_repeats_the_id() {
        let shipped = [(2, "APPROVED"), (5, "SHIPPED")];
        let first = map_at(ChangeKind::Update, request(&shipped), 4).unwrap();
        let mut with_carrier = fulfillment_document(order(GUID, &shipped));
        with_carrier.insert("shippingMethod", "Drone");
        let second = map_at(ChangeKind::Update, Some(with_carrier), 5).unwrap();
        assert_eq!(first[0].metadata.id, second[0].metadata.id);
        let next = map_at(
            ChangeKind::Update,
            request(&[(2, "APPROVED"), (5, "SHIPPED"), (6, "IN_TRANSIT")]),
            6,
        )
        .unwrap();
        assert_ne!(first[0].metadata.id, next[0].metadata.id);
    }

    #[test]
    fn mapping_is_deterministic() {
        let document = request(&[(2, "APPROVED"), (3, "PROCESSING")]);
        let first = map(ChangeKind::Update, document.clone()).unwrap();
        let again = map(ChangeKind::Update, document).unwrap();
        assert_eq!(first, again);
        assert_eq!(first[0].payload, again[0].payload);
    }

    #[test]
    fn a_bad_status_is_left_out_and_the_newest_readable_one_flows() {
        let mut document = fulfillment_document(order(GUID, &[]));
        document.get_document_mut("order").unwrap().insert(
            "orderStatusEvents",
            vec![
                Bson::Document(doc! { "timestamp": 2_i64, "orderStatusType": "APPROVED" }),
                Bson::Document(doc! { "timestamp": 3_i64, "orderStatusType": "PROCESSING" }),
                Bson::Document(doc! { "timestamp": "4", "orderStatusType": "SHIPPED" }),
            ],
        );
        let mapped = map_whole(ChangeKind::Update, Some(document.clone()), 4);
        assert_eq!(mapped.events.len(), 1);
        let payload =
            OrderStatusChangeEvent::from_json(mapped.events[0].payload.as_deref().unwrap())
                .unwrap();
        assert_eq!(payload.order_status_event.timestamp, 3);
        assert_eq!(mapped.defects.len(), 1);
        let defect = &mapped.defects[0];
        assert_eq!(defect.field, "order.orderStatusEvents.2.timestamp");
        assert_eq!(defect.order_guid.as_deref(), Some(GUID));
        assert_eq!(
            defect.entry.as_ref().unwrap().path,
            "order.orderStatusEvents.2"
        );
        assert!(defect.reason.contains(GUID), "{}", defect.reason);
        // Nothing readable but bad statuses: only their defects, no event.
        document.get_document_mut("order").unwrap().insert(
            "orderStatusEvents",
            vec![Bson::Document(doc! { "orderStatusType": "SHIPPED" })],
        );
        let mapped = map_whole(ChangeKind::Update, Some(document), 5);
        assert!(mapped.events.is_empty());
        assert_eq!(mapped.defects.len(), 1);
        assert_eq!(
            mapped.defects[0].field,
            "order.orderStatusEvents.0.timestamp"
        );
    }
}
