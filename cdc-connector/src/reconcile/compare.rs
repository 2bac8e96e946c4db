//! The pure half of reconcile: what a copy should hold, derived from its source through the
//! connector's mapping and the projectors' own projection, and how copies differ from it. No I/O;
//! [`super::run`] feeds it documents.
//!
//! - A customer copy (`name`, `contact`, `addresses` in `customer.orders`) is what the orders
//!   projector writes for the CustomerChangeEvent the connector publishes for the account now:
//!   the account is mapped by [`StorefrontMapper`], the record decoded by
//!   `projectors::event::decode_parts` and turned into the projector's upsert by
//!   `projectors::projection::orders::change_write`, whose `$set` is the expected copy.
//! - A fulfillment status is expected in its order's history when the connector maps the
//!   request document to an OrderStatusChangeEvent (current status not APPROVED); the orders
//!   projector identifies a status by `timestamp` and `orderStatusType`, so those are compared.
//! - An order whose history holds APPROVED was requested once (the connector publishes the
//!   request when the order's current status becomes APPROVED), so it has exactly one request,
//!   whose `_id` and `order.guid` are the order's guid; a request of any other order is extra.
//!
//! Differences are named by field, never shown by value, so no report carries a sensitive value.

use mongodb::bson::{Bson, Document, RawDocumentBuf};
use projectors::event::{EventBody, decode_parts};
use projectors::projection::orders::change_write;
use storefront_schemas::documents::{Order, OrderStatusEvent, OrderStatusType, from_document};
use storefront_schemas::metadata::SourcePosition;
use storefront_schemas::topology::{Namespace, StorefrontTopics};

use crate::mapping::{ChangeKind, ChangeMapper, OutboundEvent, SourceChange, StorefrontMapper};
use crate::source::Conversion;

/// The fields of a customer copy the orders projector owns and sets from an event.
pub const COPY_FIELDS: &[&str] = &["name", "contact", "addresses"];
/// Set on a copy whose customer is deleted.
pub const DELETED_MARK: &str = "customerDeleted";

/// What the mapping and projection make of one source document.
#[derive(Debug, Clone, PartialEq)]
pub enum Expected<T> {
    /// The copy's expected content.
    Copy(T),
    /// The source maps to nothing for this copy (e.g. a fulfillment still APPROVED).
    Nothing,
    /// The source has a defect; the connector dead-letters it, so no copy can be expected.
    Defect(String),
}

/// Maps `document` of `namespace` as the connector would map a change of it now.
pub fn map_current(
    mapper: &StorefrontMapper,
    conversion: &Conversion,
    document: RawDocumentBuf,
) -> (Vec<OutboundEvent>, Vec<String>) {
    let change: SourceChange = conversion.snapshot(document, SourcePosition::from_u64(1), 0);
    let mapped = mapper.map(&change);
    (
        mapped.events,
        mapped.defects.into_iter().map(|d| d.reason).collect(),
    )
}

/// A tombstone's change for a gone document (for symmetry with [`map_current`]).
pub fn deleted_change(namespace: &Namespace, id: Bson) -> SourceChange {
    SourceChange {
        namespace: namespace.clone(),
        kind: ChangeKind::Delete,
        document_id: id,
        full_document: None,
        position: SourcePosition::from_u64(1),
        time_ms: 0,
    }
}

/// The projectors' typed event for `event`, decoded from the record the connector would send.
fn decoded(
    event: &OutboundEvent,
    topics: &StorefrontTopics,
) -> Result<projectors::event::Event, String> {
    let headers = event.metadata.headers();
    decode_parts(
        &event.topic,
        Some(event.key.as_bytes()),
        event.payload.as_deref(),
        headers.iter().map(|(k, v)| (*k, v.as_bytes())),
        topics,
    )
    .map_err(|poison| poison.reason)
}

/// The customer copy the orders projector writes for the account's current event:
/// [`COPY_FIELDS`] as the projector's upsert sets them.
pub fn expected_copy(
    events: &[OutboundEvent],
    defects: &[String],
    topics: &StorefrontTopics,
) -> Expected<Document> {
    let Some(event) = events.iter().find(|e| e.topic == topics.customer_change) else {
        return match defects.first() {
            Some(reason) => Expected::Defect(reason.clone()),
            None => Expected::Nothing,
        };
    };
    let decoded = match decoded(event, topics) {
        Ok(decoded) => decoded,
        Err(reason) => return Expected::Defect(reason),
    };
    let EventBody::CustomerChanged { id, payload } = &decoded.body else {
        return Expected::Nothing;
    };
    match change_write(id, decoded.position(), payload, false) {
        Ok(op) => {
            let set = op.update.get_document("$set").cloned().unwrap_or_default();
            Expected::Copy(
                COPY_FIELDS
                    .iter()
                    .filter_map(|field| set.get(*field).map(|v| ((*field).to_owned(), v.clone())))
                    .collect(),
            )
        }
        Err(error) => Expected::Defect(error.to_string()),
    }
}

/// The fields in which `copy` differs from `expected` (a copy of a customer that exists): each
/// of [`COPY_FIELDS`] not equal, and [`DELETED_MARK`] when set.
pub fn copy_differences(expected: &Document, copy: &Document) -> Vec<String> {
    let mut fields: Vec<String> = COPY_FIELDS
        .iter()
        .filter(|field| expected.get(**field) != copy.get(**field))
        .map(|field| (*field).to_owned())
        .collect();
    if copy.get_bool(DELETED_MARK).unwrap_or(false) {
        fields.push(DELETED_MARK.to_owned());
    }
    fields
}

/// Whether a copy whose customer is gone is as the projector leaves it: marked deleted.
pub fn is_marked_deleted(copy: &Document) -> bool {
    copy.get_bool(DELETED_MARK).unwrap_or(false)
}

/// The orders of a `customer.orders` document, each readable one by guid with its statuses
/// (unreadable ones are the connector's dead letters, not drift).
pub fn orders(document: &Document) -> Vec<Order> {
    match document.get_array("orders") {
        Ok(orders) => orders
            .iter()
            .filter_map(Bson::as_document)
            .filter_map(|order| from_document::<Order>(order).ok())
            .filter(|order| !order.guid.trim().is_empty())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Whether `order` was ever approved (and so requested once).
pub fn was_approved(order: &Order) -> bool {
    order
        .order_status_events
        .iter()
        .any(|status| status.order_status_type == OrderStatusType::Approved)
}

/// The status the orders projector appends for the request's current state: the connector's
/// OrderStatusChangeEvent for it, decoded by the projectors. `Nothing` when the request is
/// APPROVED (no event).
pub fn expected_status(
    events: &[OutboundEvent],
    defects: &[String],
    topics: &StorefrontTopics,
) -> Expected<(String, OrderStatusEvent)> {
    let Some(event) = events
        .iter()
        .find(|e| e.topic == topics.order_status_change)
    else {
        return match defects.first() {
            Some(reason) => Expected::Defect(reason.clone()),
            None => Expected::Nothing,
        };
    };
    match decoded(event, topics) {
        Ok(projectors::event::Event {
            body: EventBody::OrderStatusChanged(change),
            ..
        }) => Expected::Copy((change.guid, change.order_status_event)),
        Ok(_) => Expected::Nothing,
        Err(reason) => Expected::Defect(reason),
    }
}

/// Whether `history` holds `status`, as the orders projector identifies one.
pub fn holds_status(history: &[OrderStatusEvent], status: &OrderStatusEvent) -> bool {
    history.iter().any(|held| {
        held.timestamp == status.timestamp && held.order_status_type == status.order_status_type
    })
}

#[cfg(test)]
mod tests {
    use mongodb::bson::{doc, oid::ObjectId};
    use storefront_schemas::sensitive::Redaction;
    use storefront_schemas::topology::StorefrontNamespaces;

    use super::*;

    fn mapper() -> StorefrontMapper {
        StorefrontMapper::new(StorefrontNamespaces::default(), StorefrontTopics::default())
    }

    fn conversion(namespace: Namespace, redaction: Redaction) -> Conversion {
        Conversion {
            namespace,
            redaction,
        }
    }

    fn account(id: ObjectId) -> Document {
        doc! {
            "_id": id,
            "_class": "com.example.Customer",
            "name": { "title": "Dr.", "firstName": "Ada", "lastName": "Lovelace" },
            "contact": { "primaryPhone": "555-0100", "email": "ada@example.com" },
            "addresses": [{ "type": "SHIPPING", "description": "home", "address1": "1 Main St",
                            "city": "Springfield", "state": "IL", "postalCode": "62701" }],
            "creditCards": [{ "type": "PRIMARY", "description": "visa",
                              "number": "4111111111111111", "expiration": "12/30",
                              "nameOnCard": "Ada Lovelace" }],
        }
    }

    fn expected_for(account: &Document) -> Expected<Document> {
        let accounts = StorefrontNamespaces::default().accounts;
        let redaction = crate::config::WatchedSource::Accounts
            .redaction(&storefront_schemas::sensitive::SensitiveFields::default());
        let (events, defects) = map_current(
            &mapper(),
            &conversion(accounts, redaction),
            RawDocumentBuf::from_document(account).unwrap(),
        );
        expected_copy(&events, &defects, &StorefrontTopics::default())
    }

    #[test]
    fn the_expected_copy_is_what_the_projector_sets_and_never_the_cards() {
        let id = ObjectId::new();
        let Expected::Copy(copy) = expected_for(&account(id)) else {
            panic!("the account maps to a copy");
        };
        assert_eq!(
            copy,
            doc! {
                "name": { "title": "Dr.", "firstName": "Ada", "lastName": "Lovelace" },
                "contact": { "primaryPhone": "555-0100", "email": "ada@example.com" },
                "addresses": [{ "type": "SHIPPING", "description": "home",
                                "address1": "1 Main St", "city": "Springfield", "state": "IL",
                                "postalCode": "62701" }],
            }
        );
    }

    #[test]
    fn a_copy_differs_by_the_fields_that_differ_and_the_deleted_mark() {
        let Expected::Copy(expected) = expected_for(&account(ObjectId::new())) else {
            panic!("the account maps to a copy");
        };
        let mut copy = expected.clone();
        copy.insert("orders", Vec::<Bson>::new());
        copy.insert("_cdc", doc! { "customerPosition": 7_i64 });
        assert!(copy_differences(&expected, &copy).is_empty());
        copy.insert(
            "name",
            doc! { "title": "Dr.", "firstName": "X", "lastName": "Y" },
        );
        copy.remove("addresses");
        copy.insert(DELETED_MARK, true);
        assert_eq!(
            copy_differences(&expected, &copy),
            vec!["name", "addresses", DELETED_MARK]
        );
    }

    #[test]
    fn an_unmappable_account_is_a_defect_not_drift() {
        let mut broken = account(ObjectId::new());
        broken.remove("name");
        assert!(matches!(expected_for(&broken), Expected::Defect(_)));
    }

    fn request(guid: &str, status: &str, timestamp: i64) -> Document {
        doc! { "_id": guid, "order": { "guid": guid,
        "orderStatusEvents": [{ "timestamp": timestamp, "orderStatusType": status }] } }
    }

    fn status_of(request: &Document) -> Expected<(String, OrderStatusEvent)> {
        let namespace = StorefrontNamespaces::default().fulfillment;
        let (events, defects) = map_current(
            &mapper(),
            &conversion(namespace, Redaction::default()),
            RawDocumentBuf::from_document(request).unwrap(),
        );
        expected_status(&events, &defects, &StorefrontTopics::default())
    }

    #[test]
    fn a_request_expects_its_current_status_in_the_order_unless_approved() {
        let Expected::Copy((guid, status)) = status_of(&request("g1", "SHIPPED", 30)) else {
            panic!("a SHIPPED request publishes its status");
        };
        assert_eq!(guid, "g1");
        let order = orders(&doc! { "orders": [{ "guid": "g1", "orderItems": [],
        "orderStatusEvents": [
            { "timestamp": 10_i64, "orderStatusType": "APPROVED" },
            { "timestamp": 30_i32, "orderStatusType": "SHIPPED" } ] }] });
        assert!(holds_status(&order[0].order_status_events, &status));
        assert!(was_approved(&order[0]));
        let other = orders(&doc! { "orders": [{ "guid": "g1", "orderItems": [],
        "orderStatusEvents": [
            { "timestamp": 10_i64, "orderStatusType": "APPROVED" },
            { "timestamp": 31_i64, "orderStatusType": "SHIPPED" } ] }] });
        assert!(!holds_status(&other[0].order_status_events, &status));
        assert_eq!(status_of(&request("g1", "APPROVED", 10)), Expected::Nothing);
    }

    #[test]
    fn only_orders_with_an_approval_are_approved() {
        let found = orders(&doc! { "orders": [
            { "guid": "a", "orderItems": [],
              "orderStatusEvents": [{ "timestamp": 1_i64, "orderStatusType": "CREATED" }] },
            { "guid": "b", "orderItems": [],
              "orderStatusEvents": [{ "timestamp": 1_i64, "orderStatusType": "APPROVED" },
                                    { "timestamp": 2_i64, "orderStatusType": "CANCELLED" }] },
            { "guid": 5 },
        ] });
        let approved: Vec<&str> = found
            .iter()
            .filter(|o| was_approved(o))
            .map(|o| o.guid.as_str())
            .collect();
        assert_eq!(found.len(), 2);
        assert_eq!(approved, vec!["b"]);
    }
}
