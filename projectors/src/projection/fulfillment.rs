//! `fulfillment.requests`: one Fulfillment document per approved order.
//!
//! ```text
//! FulfillmentRequestEvent(order g, p) --> upsert _id=g:
//!     set       timestamp, name, contact, address, order.orderItems, _cdc.requestPosition=p
//!     on insert order.guid, order.orderStatusEvents (the order's history, current: APPROVED)
//!     guard     requestPosition !>= p
//! ```
//!
//! # One document per order
//! The document's `_id` is the order guid, so a repeated request (redelivery, a replay, the
//! connector publishing it again) meets the same document: it can never create a second one, and
//! a concurrent insert of the same request fails on the `_id` index instead of duplicating.
//!
//! # Never back to APPROVED
//! The status history (`order.orderStatusEvents`) is written only when the document is created;
//! after that it belongs to the Fulfillment application, as does `shippingMethod`, which the
//! projection never writes. A request arriving again, even one with a newer position, updates
//! only the request's own fields (who, where, what), so a request already PROCESSING or SHIPPED
//! stays so. Creating a request in APPROVED emits no OrderStatusChangeEvent (the connector
//! publishes none for APPROVED), and the decoder refuses a request whose order is not currently
//! APPROVED, so this projection's writes never cause an event of the kind that caused them.
//!
//! # Fields this projection owns
//! `_id`, `timestamp`, `name`, `contact`, `address`, `order.guid`, `order.orderItems`,
//! `order.orderStatusEvents` (at creation only) and `_cdc.requestPosition` (the source position
//! of the request the fields come from; the newest wins). The items' prices are stored exactly,
//! as Decimal128 (see [`to_bson`]).

use std::collections::HashMap;

use mongodb::bson::doc;
use storefront_schemas::events::FulfillmentRequestEvent;

use super::{Outcome, Plan, push_guarded, to_bson};
use crate::event::{Event, EventBody, Poison};
use crate::store::{Unwritable, WriteOp};

/// Position of the request the document's request fields come from.
pub const REQUEST_POSITION: &str = "_cdc.requestPosition";
/// The guards a rebuild clears.
pub const GUARD_FIELDS: &[&str] = &[REQUEST_POSITION];

/// The fulfillment projection.
#[derive(Debug, Clone, Default)]
pub struct FulfillmentProjection;

/// The guarded upsert of request `payload` at `position`.
pub fn request_write(
    position: i64,
    payload: &FulfillmentRequestEvent,
) -> Result<WriteOp, Unwritable> {
    let guid = payload.order.guid.as_str();
    Ok(WriteOp::upsert(
        doc! {
            "_id": guid,
            REQUEST_POSITION: { "$not": { "$gte": position } },
        },
        doc! {
            "$set": {
                "timestamp": payload.timestamp,
                "name": to_bson(&payload.name)?,
                "contact": to_bson(&payload.contact)?,
                "address": to_bson(&payload.address)?,
                "order.orderItems": to_bson(&payload.order.order_items)?,
                REQUEST_POSITION: position,
            },
            "$setOnInsert": {
                "order.guid": guid,
                "order.orderStatusEvents": to_bson(&payload.order.order_status_events)?,
            },
        },
    ))
}

/// What to try after a request's upsert met a newer document: the same upsert again (another
/// writer may have created the document between its query and its insert).
pub fn request_follow_ups(
    position: i64,
    payload: &FulfillmentRequestEvent,
) -> Result<Vec<WriteOp>, Unwritable> {
    Ok(vec![request_write(position, payload)?])
}

/// The follow-ups of a request event (see [`request_follow_ups`]).
pub fn follow_ups(event: &Event) -> Result<Vec<WriteOp>, Unwritable> {
    match &event.body {
        EventBody::FulfillmentRequested(request) => request_follow_ups(event.position(), request),
        // Only requests are guarded upserts here.
        EventBody::CustomerChanged { .. }
        | EventBody::CustomerDeleted { .. }
        | EventBody::OrderStatusChanged(_) => Ok(Vec::new()),
    }
}

/// Per order guid, the index of the newest request of the batch (equal positions: the later);
/// the others are settled as stale.
pub fn collapse(events: &[&Event]) -> (Vec<usize>, Vec<(usize, Outcome)>) {
    let mut newest: Vec<usize> = Vec::new();
    let mut slots: HashMap<&str, usize> = HashMap::new();
    let mut settled = Vec::new();
    for (index, event) in events.iter().enumerate() {
        let EventBody::FulfillmentRequested(request) = &event.body else {
            settled.push((
                index,
                Outcome::DeadLetter(Poison::contract(
                    "only FulfillmentRequestEvents reach the fulfillment projection",
                )),
            ));
            continue;
        };
        match slots.get(request.order.guid.as_str()) {
            None => {
                slots.insert(&request.order.guid, newest.len());
                newest.push(index);
            }
            Some(&slot) => {
                let current = newest[slot];
                if event.position() >= events[current].position() {
                    newest[slot] = index;
                    settled.push((current, Outcome::Stale));
                } else {
                    settled.push((index, Outcome::Stale));
                }
            }
        }
    }
    (newest, settled)
}

/// Plans a batch: the newest request per order, as a guarded upsert.
pub fn plan(events: &[&Event]) -> Plan {
    let (newest, settled) = collapse(events);
    let mut plan = Plan {
        settled,
        guarded: Vec::new(),
        appends: Vec::new(),
    };
    for index in newest {
        if let EventBody::FulfillmentRequested(request) = &events[index].body {
            push_guarded(
                &mut plan,
                index,
                request_write(events[index].position(), request),
            );
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use mongodb::bson::Bson;
    use storefront_schemas::documents::{AddressType, Price};
    use storefront_schemas::fixtures::sample;
    use storefront_schemas::metadata::{EventMetadata, EventType, SCHEMA_VERSION, SourcePosition};
    use storefront_schemas::topology::Namespace;

    use super::*;
    use crate::projection::Projection;

    fn request(guid: &str, city: &str) -> FulfillmentRequestEvent {
        sample::fulfillment_request(
            sample::approved_order(guid),
            sample::address(AddressType::Shipping, city),
        )
    }

    fn event(guid: &str, position: u64) -> Event {
        Event {
            metadata: EventMetadata {
                id: format!("{guid}-{position}"),
                event_type: EventType::FulfillmentRequested,
                schema_version: SCHEMA_VERSION,
                source: Namespace::new("orders", "customer.orders"),
                position: SourcePosition::from_u64(position),
                time_ms: 0,
                subject: guid.into(),
            },
            body: EventBody::FulfillmentRequested(Box::new(request(
                guid,
                &format!("city{position}"),
            ))),
        }
    }

    #[test]
    fn the_status_history_is_written_only_when_the_request_is_created() {
        let payload = request("g-1", "London");
        let op = &request_write(9, &payload).unwrap();
        assert!(op.upsert);
        assert_eq!(
            op.filter,
            doc! { "_id": "g-1", "_cdc.requestPosition": { "$not": { "$gte": 9_i64 } } }
        );
        let set = op.update.get_document("$set").unwrap();
        assert_eq!(
            set.keys().collect::<Vec<_>>(),
            [
                "timestamp",
                "name",
                "contact",
                "address",
                "order.orderItems",
                "_cdc.requestPosition"
            ]
        );
        assert!(!set.contains_key("shippingMethod"));
        let on_insert = op.update.get_document("$setOnInsert").unwrap();
        assert_eq!(on_insert.get_str("order.guid").unwrap(), "g-1");
        let history = on_insert.get_array("order.orderStatusEvents").unwrap();
        assert_eq!(
            history
                .last()
                .unwrap()
                .as_document()
                .unwrap()
                .get_str("orderStatusType"),
            Ok("APPROVED")
        );
        assert_eq!(request_follow_ups(9, &payload).unwrap(), vec![op.clone()]);
    }

    #[test]
    fn prices_are_written_exactly_as_decimal128() {
        let mut payload = request("g-1", "London");
        payload.order.order_items = vec![sample::order_item(Price::parse("3.99").unwrap(), 2)];
        let op = request_write(9, &payload).unwrap();
        let items = op
            .update
            .get_document("$set")
            .unwrap()
            .get_array("order.orderItems")
            .unwrap();
        let item = items[0].as_document().unwrap();
        assert_eq!(
            item.get_document("product").unwrap().get("price"),
            Some(&Bson::Decimal128("3.99".parse().unwrap()))
        );
        assert_eq!(item.get("quantity"), Some(&Bson::Int64(2)));
        // The statement sent to MongoDB carries it too.
        assert!(op.statement().is_ok());
    }

    #[test]
    fn a_batch_keeps_the_newest_request_per_order() {
        // (what, batch, newest per order, settled as stale)
        type Case = (&'static str, Vec<Event>, Vec<usize>, Vec<usize>);
        let cases: Vec<Case> = vec![
            ("one", vec![event("a", 1)], vec![0], vec![]),
            (
                "in order",
                vec![event("a", 1), event("a", 2)],
                vec![1],
                vec![0],
            ),
            (
                "reversed",
                vec![event("a", 2), event("a", 1)],
                vec![0],
                vec![1],
            ),
            (
                "repeated: the later copy",
                vec![event("a", 3), event("b", 1), event("a", 3)],
                vec![2, 1],
                vec![0],
            ),
        ];
        for (what, events, expected_newest, expected_stale) in cases {
            let refs: Vec<&Event> = events.iter().collect();
            let (newest, settled) = collapse(&refs);
            assert_eq!(newest, expected_newest, "{what}");
            let stale: Vec<usize> = settled
                .iter()
                .filter(|(_, o)| *o == Outcome::Stale)
                .map(|(i, _)| *i)
                .collect();
            assert_eq!(stale, expected_stale, "{what}");
        }
    }

    #[test]
    fn executions_upsert_the_newest_request_and_follow_up_a_newer_document() {
        use super::super::testing::{Io, drive, report, statement};
        use crate::store::OpResult::{self, DuplicateId, Ok as Done, Upserted};
        let projection = Projection::Fulfillment(FulfillmentProjection);
        let write = |guid: &str, position: u64| {
            let Event {
                body: EventBody::FulfillmentRequested(payload),
                ..
            } = event(guid, position)
            else {
                unreachable!("a request event")
            };
            statement(request_write(event(guid, position).position(), &payload))
        };
        let status = Event {
            body: EventBody::OrderStatusChanged(sample::status_change(
                "x",
                sample::status(1, "SHIPPED", None),
            )),
            ..event("x", 1)
        };
        // (what, batch, scripted IO, outcomes)
        type Case = (&'static str, Vec<Event>, Vec<Io>, Vec<Outcome>);
        let cases: Vec<Case> = vec![
            (
                "one new request",
                vec![event("a", 1)],
                vec![Io::Write(vec![write("a", 1)], report(vec![Upserted], 1))],
                vec![Outcome::Applied],
            ),
            (
                "two orders, one repeated: the newest per order",
                vec![event("a", 1), event("b", 1), event("a", 2)],
                vec![Io::Write(
                    vec![write("a", 2), write("b", 1)],
                    report(vec![Done, Upserted], 2),
                )],
                vec![Outcome::Stale, Outcome::Applied, Outcome::Applied],
            ),
            (
                "a newer request there: the upsert again, stale",
                vec![event("a", 1)],
                vec![
                    Io::Write(vec![write("a", 1)], report(vec![DuplicateId], 0)),
                    Io::Write(vec![write("a", 1)], report(vec![DuplicateId], 0)),
                ],
                vec![Outcome::Stale],
            ),
            (
                "an event of another kind: a dead letter without a write",
                vec![status],
                vec![],
                vec![Outcome::DeadLetter(Poison::contract(
                    "only FulfillmentRequestEvents reach the fulfillment projection",
                ))],
            ),
            (
                "refused: a dead letter",
                vec![event("a", 1)],
                vec![Io::Write(
                    vec![write("a", 1)],
                    report(
                        vec![OpResult::Rejected {
                            code: 121,
                            message: "Document failed validation".into(),
                        }],
                        0,
                    ),
                )],
                vec![crate::projection::rejected(
                    121,
                    "Document failed validation",
                )],
            ),
        ];
        for (what, events, io, expected) in cases {
            assert_eq!(
                drive(what, &projection, &events, io),
                Ok(expected),
                "{what}"
            );
        }
    }
}
