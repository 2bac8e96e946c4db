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
//! Statuses this release does not know are published as they are (forward compatible). A
//! request whose order has no status at all is malformed: a [`MappingError`].

use storefront_schemas::documents::{DocumentError, Fulfillment, OrderStatusType};
use storefront_schemas::events::{EventPayload, OrderStatusChangeEvent};
use storefront_schemas::metadata::event_id;

use super::{
    ChangeMapper, MappingError, OutboundEvent, SourceChange, outbound, post_image, read,
    require_guid,
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
    fn map(&self, change: &SourceChange) -> Result<Vec<OutboundEvent>, MappingError> {
        // A deleted request has no status to report.
        let Some(document) = post_image(change)? else {
            return Ok(Vec::new());
        };
        let fulfillment: Fulfillment = read(document)?;
        let order = &fulfillment.order;
        require_guid(&order.guid, "order.guid")?;
        let status = order.current_status().ok_or_else(|| {
            MappingError::Document(DocumentError::InvalidField {
                field: "order.orderStatusEvents".to_owned(),
                reason: format!("order {} has no status", order.guid),
            })
        })?;
        if status.order_status_type == OrderStatusType::Approved {
            return Ok(Vec::new());
        }
        let id = event_id(
            OrderStatusChangeEvent::EVENT_TYPE,
            &[
                &order.guid,
                status.order_status_type.as_str(),
                &status.timestamp.to_string(),
            ],
        );
        let payload = OrderStatusChangeEvent {
            guid: order.guid.clone(),
            order_status_event: status.clone(),
        };
        Ok(vec![outbound(
            change,
            &self.topic,
            order.guid.clone(),
            OrderStatusChangeEvent::EVENT_TYPE,
            id,
            Some(payload.to_json()),
            true,
        )])
    }
}

#[cfg(test)]
mod tests {
    use mongodb::bson::{Bson, Document, doc};
    use storefront_schemas::metadata::{EventType, SCHEMA_VERSION};

    use super::*;
    use crate::mapping::ChangeKind;
    use crate::mapping::testing::{
        change, fixture, fulfillment_document, fulfillment_namespace, golden, order, position,
    };

    const GUID: &str = "df78784f-4d1d-48ad-a3e3-26a4fe7317a4";

    fn mapper() -> FulfillmentMapper {
        FulfillmentMapper::new("fulfillment.order.change")
    }

    fn map_at(
        kind: ChangeKind,
        document: Option<Document>,
        increment: u32,
    ) -> Result<Vec<OutboundEvent>, MappingError> {
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
    ) -> Result<Vec<OutboundEvent>, MappingError> {
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
        /// An error on this field.
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
            ("no address", Update, Some(no_address), Error("address")),
            (
                "timestamp is a string",
                Update,
                Some(wrong_timestamp),
                Error("timestamp"),
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
                (Error(field), Err(error)) => {
                    let actual = match &error {
                        MappingError::Document(DocumentError::MissingField { field }) => field,
                        MappingError::Document(DocumentError::InvalidField { field, .. }) => field,
                        other => panic!("{name}: {other}"),
                    };
                    assert_eq!(actual, field, "{name}: {error}");
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
}
