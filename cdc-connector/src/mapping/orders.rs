//! `customer.orders` → one FulfillmentRequestEvent per order whose current status is APPROVED.
//!
//! ```text
//! post-image --for each order--> current status (latest timestamp; ties: the later in the list)
//!                                  APPROVED  -> FulfillmentRequestEvent (key: order guid)
//!                                  otherwise -> nothing
//! delete, or update whose post-image is gone -> nothing
//! ```
//!
//! **Once per order.** The id is derived from the order guid alone, so every change that shows
//! the order APPROVED (its approval, an address update, a re-snapshot, a re-read after a crash)
//! yields the same id, and the runtime publishes it once (`once_per_id`). The payload is the
//! state at the first of those changes.
//!
//! **No loop.** The orders projector appends the fulfillment's statuses (PROCESSING, SHIPPED, ...)
//! to the order; from then on its current status is no longer APPROVED and this mapper emits
//! nothing for it.
//!
//! **A bad order dead-letters the whole document.** The mapping interface returns events or one
//! error, and emitting the good orders while dropping the bad one would lose it silently. So any
//! invalid order (missing `guid`, mistyped field, ...) makes the change a [`MappingError`] naming
//! the order by its path (`orders.2.guid`); the good orders travel in the same dead letter. They
//! are delayed, not lost: once the document is repaired, the next change of it maps every order
//! that is still APPROVED again, and the runtime publishes each once.

use storefront_schemas::documents::{CustomerOrders, DocumentError, OrderStatusType};
use storefront_schemas::events::{EventPayload, FulfillmentRequestEvent};
use storefront_schemas::metadata::event_id;

use super::{
    ChangeMapper, MappingError, OutboundEvent, SourceChange, outbound, post_image, read,
    require_guid,
};

/// Maps changes of the Orders collection.
#[derive(Debug, Clone)]
pub struct OrdersMapper {
    topic: String,
}

impl OrdersMapper {
    /// Publishes on `topic` (normally `orders.order.fulfill`).
    pub fn new(topic: impl Into<String>) -> Self {
        Self {
            topic: topic.into(),
        }
    }
}

impl ChangeMapper for OrdersMapper {
    fn map(&self, change: &SourceChange) -> Result<Vec<OutboundEvent>, MappingError> {
        // A deleted order history requests nothing: fulfillment of what was already requested
        // goes on, and nothing new can be approved in a document that is gone.
        let Some(document) = post_image(change)? else {
            return Ok(Vec::new());
        };
        let customer: CustomerOrders = read(document)?;
        for (index, order) in customer.orders.iter().enumerate() {
            require_guid(&order.guid, &format!("orders.{index}.guid"))?;
        }
        let mut events = Vec::new();
        for order in &customer.orders {
            let Some(approved) = order
                .current_status()
                .filter(|status| status.order_status_type == OrderStatusType::Approved)
            else {
                continue;
            };
            let address = customer.shipping_address().ok_or_else(|| {
                MappingError::Document(DocumentError::InvalidField {
                    field: "addresses".to_owned(),
                    reason: format!(
                        "customer {} has no SHIPPING address to fulfill approved order {}",
                        customer.id.to_hex(),
                        order.guid
                    ),
                })
            })?;
            let payload = FulfillmentRequestEvent::new(&customer, order, approved, address);
            events.push(outbound(
                change,
                &self.topic,
                order.guid.clone(),
                FulfillmentRequestEvent::EVENT_TYPE,
                event_id(FulfillmentRequestEvent::EVENT_TYPE, &[&order.guid]),
                Some(payload.to_json()),
                true,
            ));
        }
        Ok(events)
    }
}

#[cfg(test)]
mod tests {
    use mongodb::bson::{Bson, Document, doc};
    use storefront_schemas::metadata::{EventType, SCHEMA_VERSION};

    use super::*;
    use crate::mapping::ChangeKind;
    use crate::mapping::testing::{
        CUSTOMER_HEX, address, change, customer_id, customer_orders_document, fixture, golden,
        order, orders_namespace, position,
    };

    const GUID_A: &str = "df78784f-4d1d-48ad-a3e3-26a4fe7317a4";
    const GUID_B: &str = "a9d5a5e9-4e5c-4c9c-8d1a-3c0b3f5e1e11";

    fn mapper() -> OrdersMapper {
        OrdersMapper::new("orders.order.fulfill")
    }

    fn map(
        kind: ChangeKind,
        document: Option<Document>,
    ) -> Result<Vec<OutboundEvent>, MappingError> {
        mapper().map(&change(
            orders_namespace(),
            kind,
            Bson::ObjectId(customer_id()),
            document,
            position(9),
        ))
    }

    fn approved(guid: &str) -> Document {
        order(guid, &[(1_000, "CREATED"), (2_000, "APPROVED")])
    }

    fn with_status_timestamps(guid: &str, timestamps: Vec<Bson>) -> Document {
        let mut document = order(guid, &[]);
        let statuses: Vec<Bson> = timestamps
            .into_iter()
            .zip(["CREATED", "APPROVED"])
            .map(|(timestamp, status)| {
                Bson::Document(doc! { "timestamp": timestamp, "orderStatusType": status })
            })
            .collect();
        document.insert("orderStatusEvents", statuses);
        document
    }

    /// What a change should map to.
    #[derive(Debug)]
    enum Expect {
        /// Requests for these order guids, in this order.
        Requests(&'static [&'static str]),
        /// An error on this field (and, if given, a reason containing this text).
        Error(&'static str, Option<&'static str>),
    }

    #[test]
    fn orders_map_by_their_current_status() {
        use ChangeKind::*;
        use Expect::*;
        let one = |order: Document| Some(customer_orders_document(vec![order]));
        let mut no_guid = approved(GUID_B);
        no_guid.remove("guid");
        let mut empty_guid = approved(GUID_B);
        empty_guid.insert("guid", "");
        let mut no_shipping = customer_orders_document(vec![approved(GUID_A)]);
        no_shipping.insert(
            "addresses",
            vec![Bson::Document(address("BILLING", "billing"))],
        );
        let mut no_shipping_nothing_approved =
            customer_orders_document(vec![order(GUID_A, &[(1, "CREATED")])]);
        no_shipping_nothing_approved.insert("addresses", Vec::<Bson>::new());
        let mut string_id = customer_orders_document(vec![approved(GUID_A)]);
        string_id.insert("_id", CUSTOMER_HEX);
        let mut orders_missing = customer_orders_document(vec![]);
        orders_missing.remove("orders");
        let cases: Vec<(&str, ChangeKind, Option<Document>, Expect)> = vec![
            (
                "insert approved",
                Insert,
                one(approved(GUID_A)),
                Requests(&[GUID_A]),
            ),
            (
                "update approved",
                Update,
                one(approved(GUID_A)),
                Requests(&[GUID_A]),
            ),
            (
                "replace approved",
                Replace,
                one(approved(GUID_A)),
                Requests(&[GUID_A]),
            ),
            (
                "snapshot approved",
                Snapshot,
                one(approved(GUID_A)),
                Requests(&[GUID_A]),
            ),
            ("delete", Delete, None, Requests(&[])),
            ("update, deleted before lookup", Update, None, Requests(&[])),
            (
                "insert without document",
                Insert,
                None,
                Error("fullDocument", None),
            ),
            (
                "created only",
                Insert,
                one(order(GUID_A, &[(1, "CREATED")])),
                Requests(&[]),
            ),
            (
                "no status yet",
                Insert,
                one(order(GUID_A, &[])),
                Requests(&[]),
            ),
            (
                "new customer, no orders",
                Insert,
                Some(customer_orders_document(vec![])),
                Requests(&[]),
            ),
            (
                "projector added PROCESSING",
                Update,
                one(order(
                    GUID_A,
                    &[(1, "CREATED"), (2, "APPROVED"), (3, "PROCESSING")],
                )),
                Requests(&[]),
            ),
            (
                "PROCESSING with the APPROVED timestamp, appended later",
                Update,
                one(order(
                    GUID_A,
                    &[(1, "CREATED"), (2, "APPROVED"), (2, "PROCESSING")],
                )),
                Requests(&[]),
            ),
            (
                "APPROVED listed before an older status",
                Update,
                one(order(GUID_A, &[(2, "APPROVED"), (1, "CREATED")])),
                Requests(&[GUID_A]),
            ),
            (
                "re-approved after ON_HOLD",
                Update,
                one(order(
                    GUID_A,
                    &[(1, "APPROVED"), (2, "ON_HOLD"), (3, "APPROVED")],
                )),
                Requests(&[GUID_A]),
            ),
            (
                "rejected",
                Update,
                one(order(GUID_A, &[(1, "CREATED"), (2, "REJECTED")])),
                Requests(&[]),
            ),
            (
                "unknown status",
                Update,
                one(order(GUID_A, &[(1, "APPROVED"), (2, "BACKORDERED")])),
                Requests(&[]),
            ),
            (
                "several approved orders, in document order",
                Update,
                Some(customer_orders_document(vec![
                    approved(GUID_B),
                    order("c-shipped", &[(1, "APPROVED"), (2, "SHIPPED")]),
                    approved(GUID_A),
                ])),
                Requests(&[GUID_B, GUID_A]),
            ),
            (
                "mongosh shapes: int32 and whole double timestamps",
                Insert,
                one(with_status_timestamps(
                    GUID_A,
                    vec![Bson::Int32(1), Bson::Double(2.0)],
                )),
                Requests(&[GUID_A]),
            ),
            (
                "fractional timestamp",
                Insert,
                one(with_status_timestamps(
                    GUID_A,
                    vec![Bson::Int64(1), Bson::Double(2.5)],
                )),
                Error("orders.0.orderStatusEvents.1.timestamp", None),
            ),
            (
                "string timestamp",
                Insert,
                one(with_status_timestamps(
                    GUID_A,
                    vec![Bson::String("1".into()), Bson::Int64(2)],
                )),
                Error("orders.0.orderStatusEvents.0.timestamp", None),
            ),
            (
                "a bad order beside a good approved one dead-letters the document",
                Update,
                Some(customer_orders_document(vec![approved(GUID_A), no_guid])),
                Error("orders.1.guid", None),
            ),
            (
                "empty guid",
                Update,
                Some(customer_orders_document(vec![approved(GUID_A), empty_guid])),
                Error("orders.1.guid", Some("is empty")),
            ),
            (
                "approved but no SHIPPING address",
                Update,
                Some(no_shipping),
                Error("addresses", Some(CUSTOMER_HEX)),
            ),
            (
                "no SHIPPING address and nothing approved",
                Update,
                Some(no_shipping_nothing_approved),
                Requests(&[]),
            ),
            (
                "_id is a hex string",
                Insert,
                Some(string_id),
                Error("_id", None),
            ),
            (
                "no orders field",
                Insert,
                Some(orders_missing),
                Error("orders", None),
            ),
        ];
        for (name, kind, document, expect) in cases {
            match (expect, map(kind, document)) {
                (Requests(guids), Ok(events)) => {
                    let keys: Vec<&str> = events.iter().map(|e| e.key.as_str()).collect();
                    assert_eq!(keys, guids, "{name}");
                    for event in &events {
                        assert_eq!(event.topic, "orders.order.fulfill", "{name}");
                        assert!(event.once_per_id, "{name}");
                        let metadata = &event.metadata;
                        assert_eq!(
                            metadata.event_type,
                            EventType::FulfillmentRequested,
                            "{name}"
                        );
                        assert_eq!(
                            metadata.id,
                            event_id(EventType::FulfillmentRequested, &[&event.key]),
                            "{name}"
                        );
                        assert_eq!(metadata.subject, event.key, "{name}");
                        assert_eq!(metadata.source, orders_namespace(), "{name}");
                        assert_eq!(metadata.position, position(9), "{name}");
                        assert_eq!(metadata.schema_version, SCHEMA_VERSION, "{name}");
                        let payload =
                            FulfillmentRequestEvent::from_json(event.payload.as_deref().unwrap())
                                .unwrap();
                        assert_eq!(payload.order.guid, event.key, "{name}");
                        assert_eq!(payload.customer_id.as_deref(), Some(CUSTOMER_HEX), "{name}");
                        let current = payload.order.current_status().unwrap();
                        assert_eq!(
                            current.order_status_type,
                            OrderStatusType::Approved,
                            "{name}"
                        );
                        assert_eq!(payload.timestamp, current.timestamp, "{name}");
                    }
                }
                (Error(field, reason), Err(error)) => {
                    let actual = match &error {
                        MappingError::Document(DocumentError::MissingField { field }) => field,
                        MappingError::Document(DocumentError::InvalidField { field, .. }) => field,
                        other => panic!("{name}: {other}"),
                    };
                    assert_eq!(actual, field, "{name}: {error}");
                    if let Some(reason) = reason {
                        assert!(error.to_string().contains(reason), "{name}: {error}");
                    }
                }
                (expect, result) => panic!("{name}: expected {expect:?}, got {result:?}"),
            }
        }
    }

    #[test]
    fn the_fixture_maps_to_the_golden_event() {
        let events = map(ChangeKind::Insert, Some(fixture("customer.orders"))).unwrap();
        assert_eq!(events.len(), 1);
        let expected = golden::<FulfillmentRequestEvent>();
        assert_eq!(events[0].key, expected.order.guid);
        assert_eq!(
            events[0].payload.as_deref(),
            Some(expected.to_json().as_slice())
        );
    }

    #[test]
    fn the_request_ships_to_the_first_shipping_address() {
        let mut document = customer_orders_document(vec![approved(GUID_A)]);
        document.insert(
            "addresses",
            vec![
                Bson::Document(address("SHIPPING_ALTERNATE", "office")),
                Bson::Document(address("BILLING", "billing")),
                Bson::Document(address("SHIPPING", "home")),
                Bson::Document(address("SHIPPING", "cottage")),
            ],
        );
        let events = map(ChangeKind::Update, Some(document)).unwrap();
        let payload =
            FulfillmentRequestEvent::from_json(events[0].payload.as_deref().unwrap()).unwrap();
        assert_eq!(payload.address.description, "home");
        assert_eq!(payload.timestamp, 2_000);
        assert_eq!(payload.name.first_name, "Ada");
    }

    #[test]
    fn one_order_keeps_one_id_whichever_change_reveals_it() {
        let before = map(
            ChangeKind::Insert,
            Some(customer_orders_document(vec![approved(GUID_A)])),
        )
        .unwrap();
        // The customer moves while the order waits for fulfillment: a new candidate with the
        // same id, which the runtime drops as already published.
        let mut moved = customer_orders_document(vec![approved(GUID_A)]);
        let mut new_home = address("SHIPPING", "new home");
        new_home.insert("city", "Bath");
        moved.insert("addresses", vec![Bson::Document(new_home)]);
        let after = mapper()
            .map(&change(
                orders_namespace(),
                ChangeKind::Update,
                Bson::ObjectId(customer_id()),
                Some(moved),
                position(10),
            ))
            .unwrap();
        assert_eq!(before[0].metadata.id, after[0].metadata.id);
        assert_ne!(before[0].payload, after[0].payload);
        assert!(after[0].once_per_id);
    }

    #[test]
    fn mapping_is_deterministic() {
        let document = customer_orders_document(vec![approved(GUID_A), approved(GUID_B)]);
        let first = map(ChangeKind::Update, Some(document.clone())).unwrap();
        let again = map(ChangeKind::Update, Some(document)).unwrap();
        assert_eq!(first, again);
        let bytes = |events: &[OutboundEvent]| -> Vec<Vec<u8>> {
            events.iter().map(|e| e.payload.clone().unwrap()).collect()
        };
        assert_eq!(bytes(&first), bytes(&again));
        assert_ne!(first[0].metadata.id, first[1].metadata.id);
    }
}
