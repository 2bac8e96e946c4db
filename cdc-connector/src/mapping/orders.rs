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
//! # Defects, per field
//! Each order is read on its own: a bad order is that order's problem, and the document's other
//! orders still produce their requests. A bad order produces its request as soon as a later
//! change repairs it (its request was never published, so the ledger does not hold its id).
//!
//! | field | defect | effect |
//! |---|---|---|
//! | `orders` | not a list | the change is not published |
//! | `orders.N` | not an object; a required field (`guid`, a status's `timestamp` or `orderStatusType`, an item's `product` fields or `quantity`) missing or mistyped; an empty `guid`; a price that is not an exact decimal | that order is left out (its status is unknown, so it cannot be requested) |
//! | `_id`, `name`, `contact` | `_id` not an ObjectId or a string; `name` or `contact` missing or malformed | no request for each APPROVED order (they need the customer); orders not APPROVED are unaffected |
//! | `addresses` | no SHIPPING address; the first SHIPPING address malformed; an entry before it whose `type` cannot be read (it may be the first SHIPPING address) | no request for each APPROVED order |
//! | other `addresses` entries, unknown fields | anything | never read |
//!
//! A status inside an order is not dropped on its own: a malformed status could be the newest,
//! and requesting fulfillment for an order that was since cancelled would be worse than waiting
//! for the repair. A defect that blocks the request of an order already published is no defect
//! (nothing is kept back), and the runtime drops it.

use mongodb::bson::{RawBsonRef, RawDocument};
use storefront_schemas::documents::{
    Address, AddressType, Contact, DocumentError, Name, Order, OrderStatusType,
};
use storefront_schemas::events::{EventPayload, FulfillmentRequestEvent};
use storefront_schemas::metadata::event_id;

use super::{
    ChangeMapper, Defect, Mapped, SourceChange, customer_id, entries, or_change_defect, outbound,
    post_image, read_entry, require_guid, required, text,
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
    fn map(&self, change: &SourceChange) -> Mapped {
        or_change_defect(change, self.map_orders(change))
    }
}

impl OrdersMapper {
    fn map_orders(&self, change: &SourceChange) -> Result<Mapped, DocumentError> {
        // A deleted order history requests nothing: fulfillment of what was already requested
        // goes on, and nothing new can be approved in a document that is gone.
        let Some(document) = post_image(change)? else {
            return Ok(Mapped::default());
        };
        let orders = entries(document, "", "orders")?;
        let mut mapped = Mapped::default();
        let mut approved = Vec::new();
        for (path, entry) in orders {
            match read_order(&path, entry) {
                Ok(order) => {
                    let status = order
                        .current_status()
                        .filter(|status| status.order_status_type == OrderStatusType::Approved);
                    if let Some(status) = status {
                        let timestamp = status.timestamp;
                        approved.push((order, timestamp));
                    }
                }
                Err(error) => {
                    let guid = text(entry, "guid").filter(|guid| !guid.trim().is_empty());
                    let what = match guid {
                        Some(guid) => format!("order {guid}"),
                        None => "order".to_owned(),
                    };
                    mapped
                        .defects
                        .push(Defect::of_entry(change, &path, entry, guid, &what, error));
                }
            }
        }
        if approved.is_empty() {
            return Ok(mapped);
        }
        match Customer::read(document) {
            Ok(customer) => {
                for (order, approved_at) in approved {
                    let payload = FulfillmentRequestEvent {
                        timestamp: approved_at,
                        name: customer.name.clone(),
                        contact: customer.contact.clone(),
                        address: customer.shipping_address.clone(),
                        customer_id: Some(customer.id.clone()),
                        order,
                    };
                    let guid = payload.order.guid.clone();
                    mapped.events.push(outbound(
                        change,
                        &self.topic,
                        guid.clone(),
                        FulfillmentRequestEvent::EVENT_TYPE,
                        request_id(&guid),
                        Some(payload.to_json()),
                        true,
                    ));
                }
            }
            Err(errors) => {
                for (order, _) in &approved {
                    let guid = order.guid.as_str();
                    let what = format!("fulfillment request for approved order {guid}");
                    for error in &errors {
                        mapped.defects.push(Defect::of_event(
                            change,
                            guid,
                            &what,
                            request_id(guid),
                            error.clone(),
                        ));
                    }
                }
            }
        }
        Ok(mapped)
    }
}

/// The id of order `guid`'s fulfillment request.
fn request_id(guid: &str) -> String {
    event_id(FulfillmentRequestEvent::EVENT_TYPE, &[guid])
}

fn read_order(path: &str, entry: RawBsonRef<'_>) -> Result<Order, DocumentError> {
    let order: Order = read_entry(path, entry)?;
    require_guid(&order.guid, &format!("{path}.guid"))?;
    Ok(order)
}

/// What a request needs of the customer.
struct Customer {
    id: String,
    name: Name,
    contact: Contact,
    shipping_address: Address,
}

impl Customer {
    /// Reads the customer's part of `document`, or every reason it cannot be.
    fn read(document: &RawDocument) -> Result<Self, Vec<DocumentError>> {
        match (
            customer_id(document),
            required::<Name>(document, "", "name"),
            required::<Contact>(document, "", "contact"),
            shipping_address(document),
        ) {
            (Ok(id), Ok(name), Ok(contact), Ok(shipping_address)) => Ok(Self {
                id: id.key(),
                name,
                contact,
                shipping_address,
            }),
            (id, name, contact, address) => {
                Err([id.err(), name.err(), contact.err(), address.err()]
                    .into_iter()
                    .flatten()
                    .collect())
            }
        }
    }
}

/// The address fulfillment ships to: the first SHIPPING address.
fn shipping_address(document: &RawDocument) -> Result<Address, DocumentError> {
    for (path, entry) in entries(document, "", "addresses")? {
        let address_type = match entry {
            RawBsonRef::Document(address) => address.get_str("type").ok(),
            _ => None,
        };
        match address_type {
            Some(text) if AddressType::parse(text) == AddressType::Shipping => {
                return read_entry(&path, entry);
            }
            Some(_) => {}
            None => {
                return Err(DocumentError::InvalidField {
                    field: format!("{path}.type"),
                    reason: "unreadable, so the first SHIPPING address cannot be told".to_owned(),
                });
            }
        }
    }
    Err(DocumentError::InvalidField {
        field: "addresses".to_owned(),
        reason: "no SHIPPING address to ship to".to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use mongodb::bson::{Bson, Document, doc};
    use storefront_schemas::metadata::{EventType, SCHEMA_VERSION};

    use super::*;
    use crate::mapping::testing::{
        CUSTOMER_HEX, address, change, customer_id, customer_orders_document, fixture, golden,
        order, orders_namespace, position,
    };
    use crate::mapping::{ChangeKind, OutboundEvent};

    const GUID_A: &str = "df78784f-4d1d-48ad-a3e3-26a4fe7317a4";
    const GUID_B: &str = "a9d5a5e9-4e5c-4c9c-8d1a-3c0b3f5e1e11";

    fn mapper() -> OrdersMapper {
        OrdersMapper::new("orders.order.fulfill")
    }

    fn map(
        kind: ChangeKind,
        document: Option<Document>,
    ) -> Result<Vec<OutboundEvent>, Vec<Defect>> {
        map_whole(kind, document).into_result()
    }

    fn map_whole(kind: ChangeKind, document: Option<Document>) -> Mapped {
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
        /// No requests; a defect on this field (and, if given, a reason containing this text).
        Error(&'static str, Option<&'static str>),
        /// Requests for these order guids, and one defect on this field, with this reason.
        Partial(&'static [&'static str], &'static str, &'static str),
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
        let mut orders_not_a_list = customer_orders_document(vec![]);
        orders_not_a_list.insert("orders", "none");
        let priced = |guid: &str, price: Bson| {
            let mut order = approved(guid);
            let mut items = order.get_array("orderItems").unwrap().clone();
            let item = items[0].as_document_mut().unwrap();
            item.get_document_mut("product")
                .unwrap()
                .insert("price", price);
            order.insert("orderItems", items);
            order
        };
        let bad_price = priced(GUID_B, Bson::String("3,99".into()));
        let with_addresses = |addresses: Vec<Document>| {
            let mut document = customer_orders_document(vec![approved(GUID_A)]);
            let addresses: Vec<Bson> = addresses.into_iter().map(Bson::Document).collect();
            document.insert("addresses", addresses);
            document
        };
        let mut city_missing = address("SHIPPING", "home");
        city_missing.remove("city");
        let bad_shipping = with_addresses(vec![
            address("BILLING", "billing"),
            city_missing.clone(),
            address("SHIPPING", "cottage"),
        ]);
        let mut untyped = address("SHIPPING", "home");
        untyped.remove("type");
        let untyped_address = with_addresses(vec![untyped, address("SHIPPING", "cottage")]);
        let mut billing_missing_city = address("BILLING", "billing");
        billing_missing_city.remove("city");
        let bad_billing =
            with_addresses(vec![billing_missing_city, address("SHIPPING", "cottage")]);
        let mut bad_name = customer_orders_document(vec![approved(GUID_A)]);
        bad_name.insert("name", "Ada");
        let mut bad_name_nothing_approved =
            customer_orders_document(vec![order(GUID_A, &[(1, "CREATED")])]);
        bad_name_nothing_approved.insert("name", "Ada");
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
                "a bad order beside a good approved one is left out alone",
                Update,
                Some(customer_orders_document(vec![approved(GUID_A), no_guid])),
                Partial(&[GUID_A], "orders.1.guid", "order at orders.1 left out"),
            ),
            (
                "empty guid",
                Update,
                Some(customer_orders_document(vec![approved(GUID_A), empty_guid])),
                Partial(&[GUID_A], "orders.1.guid", "is empty"),
            ),
            (
                "a bad price names the order by its guid",
                Update,
                Some(customer_orders_document(vec![bad_price, approved(GUID_A)])),
                Partial(
                    &[GUID_A],
                    "orders.0.orderItems.0.product.price",
                    "order a9d5a5e9-4e5c-4c9c-8d1a-3c0b3f5e1e11 at orders.0 left out",
                ),
            ),
            (
                "approved but no SHIPPING address",
                Update,
                Some(no_shipping),
                Error("addresses", Some(GUID_A)),
            ),
            (
                "a malformed first SHIPPING address",
                Update,
                Some(bad_shipping),
                Error("addresses.1.city", Some(GUID_A)),
            ),
            (
                "an address of unreadable type before the SHIPPING one",
                Update,
                Some(untyped_address),
                Error("addresses.0.type", Some(GUID_A)),
            ),
            (
                "a malformed BILLING address is never read",
                Update,
                Some(bad_billing),
                Requests(&[GUID_A]),
            ),
            (
                "a bad name blocks only approved orders",
                Update,
                Some(bad_name_nothing_approved),
                Requests(&[]),
            ),
            (
                "a bad name blocks each approved order",
                Update,
                Some(bad_name),
                Error("name", Some(GUID_A)),
            ),
            (
                "every stored price type",
                Update,
                Some(customer_orders_document(vec![
                    priced(GUID_A, Bson::String("3.99".into())),
                    priced(GUID_B, Bson::Decimal128("3.99".parse().unwrap())),
                    priced("c-double", Bson::Double(3.99)),
                    priced("c-int", Bson::Int32(4)),
                ])),
                Requests(&[GUID_A, GUID_B, "c-double", "c-int"]),
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
                Requests(&[GUID_A]),
            ),
            (
                "no orders field",
                Insert,
                Some(orders_missing),
                Requests(&[]),
            ),
            (
                "orders not a list",
                Insert,
                Some(orders_not_a_list),
                Error("orders", None),
            ),
        ];
        for (name, kind, document, expect) in cases {
            let mapped = map_whole(kind, document);
            let (expect, result) = match expect {
                Partial(guids, field, reason) => {
                    assert_eq!(mapped.defects.len(), 1, "{name}: {:?}", mapped.defects);
                    let defect = &mapped.defects[0];
                    assert_eq!(defect.field, field, "{name}");
                    assert!(defect.reason.contains(reason), "{name}: {}", defect.reason);
                    (Requests(guids), Ok(mapped.events))
                }
                expect => (expect, mapped.into_result()),
            };
            match (expect, result) {
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
                (Error(field, reason), Err(defects)) => {
                    let defect = &defects[0];
                    assert_eq!(defect.field, field, "{name}: {defects:?}");
                    if let Some(reason) = reason {
                        assert!(defect.reason.contains(reason), "{name}: {}", defect.reason);
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
            .into_result()
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
