//! `customer.orders`: the customer copy (from CustomerChangeEvent and tombstones) and each
//! order's status history (from OrderStatusChangeEvent).
//!
//! ```text
//! CustomerChangeEvent(id, p)  --> upsert _id=id: set name, contact, addresses, _cdc.customerPosition=p,
//!                                 unset customerDeleted; insert with orders: []
//!                                 guard: customerPosition !>= p and customerDeletedPosition !> p
//! tombstone(id, p)            --> upsert _id=id: set customerDeleted=true, _cdc.customerDeletedPosition=p
//!                                 guard: customerDeletedPosition !>= p and customerPosition !> p
//! OrderStatusChangeEvent(g,s) --> append s to orders[guid=g].orderStatusEvents when the order has
//!                                 no status at or after s.timestamp; otherwise read the order and
//!                                 insert s at its place unless it is already there
//! ```
//!
//! # Customer ids
//! The `_id` is the customer id as Accounts stores it, an ObjectId or a string: the record key
//! (the ObjectId's hex, or the string) read back by Spring's rule ([`CustomerId::from_key`]: 24
//! hex digits are an ObjectId, anything else a string), so the copy lands in the document the
//! Orders application keeps for that customer.
//!
//! # Fields this projection owns
//! `name`, `contact`, `addresses` (the copy), `customerDeleted` (present and `true` only while
//! the customer is deleted), `_cdc.customerPosition` (source position of the change the copy
//! holds) and `_cdc.customerDeletedPosition` (position of the newest tombstone). `orders` belongs
//! to the Orders application: it is written only as `[]` when the document is created, and by
//! adding a status to an existing order.
//!
//! # Why two positions
//! A tombstone has no body, so it cannot carry the customer's data, and a change older than it
//! must still land its data when it arrives late. Keeping the newest change's position and the
//! newest tombstone's position apart makes the state a function of "the newest change" and "the
//! newest tombstone", whatever order they arrive in: the copy is the newest change, and the
//! customer is deleted when its newest tombstone is newer than that change (so a customer
//! re-created after a delete comes back). A tombstone for a customer the projection has never
//! seen creates a placeholder (`_id`, `orders: []`, `customerDeleted`, `_cdc`) so that an older
//! change arriving later cannot bring the customer back to life.
//!
//! # Status history
//! A status is identified by its `timestamp` and `orderStatusType` (the connector's event id
//! covers the same), so a redelivered status is recognised even if its note differs. The list
//! stays in timestamp order without `$sort` (whose tie order is unspecified on MongoDB and would
//! also reorder the Orders application's own entries): the common case appends to an order
//! whose every status is older; anything else reads the order and writes the merged list back,
//! guarded by the list it read. A new status goes after existing ones with the same timestamp,
//! so it becomes the current status. No APPROVED status is ever added (the event decoder refuses
//! it), so the projection never makes an order current APPROVED again, which is what would
//! request its fulfillment once more. A status for an order that is in no document goes to the
//! dead-letter topic. The read-and-merge rounds are planned and interpreted here, without IO
//! (`Statuses`, driven by [`super::Execution`]); the executor runs them.

use std::collections::HashMap;

use mongodb::bson::{Bson, Document, doc};
use storefront_schemas::documents::{CustomerId, OrderStatusEvent};
use storefront_schemas::events::CustomerChangeEvent;

use super::{Outcome, Outcomes, Plan, ProjectionError, push_guarded, to_bson, unwritable};
use crate::event::{Event, EventBody, Poison};
use crate::store::{OpResult, Read, Statement, Unwritable, WriteOp, WriteReport};

/// Position of the customer change whose data the document holds.
pub const CUSTOMER_POSITION: &str = "_cdc.customerPosition";
/// Position of the newest customer tombstone applied.
pub const CUSTOMER_DELETED_POSITION: &str = "_cdc.customerDeletedPosition";
/// `true` while the customer is deleted; absent otherwise.
pub const CUSTOMER_DELETED: &str = "customerDeleted";
/// The guards a rebuild clears.
pub const GUARD_FIELDS: &[&str] = &[CUSTOMER_POSITION, CUSTOMER_DELETED_POSITION];

/// How often a status merge is retried within one batch when the order keeps changing.
const MERGE_ATTEMPTS: usize = 5;

/// The orders projection.
#[derive(Debug, Clone)]
pub struct OrdersProjection {
    /// `database.collection`, for messages.
    target: String,
}

/// The upsert of a change of customer `id` at `position`. The plain form applies when the
/// customer's newest tombstone (if any) is not newer than the change, and clears the deleted
/// mark; the `deleted_since` form applies when the newest tombstone is newer: the data lands,
/// the customer stays deleted.
pub fn change_write(
    id: &CustomerId,
    position: i64,
    payload: &CustomerChangeEvent,
    deleted_since: bool,
) -> Result<WriteOp, Unwritable> {
    let data = doc! {
        "name": to_bson(&payload.name)?,
        "contact": to_bson(&payload.contact)?,
        "addresses": to_bson(&payload.addresses)?,
        CUSTOMER_POSITION: position,
    };
    Ok(if deleted_since {
        WriteOp::upsert(
            doc! {
                "_id": id,
                CUSTOMER_POSITION: { "$not": { "$gte": position } },
                CUSTOMER_DELETED_POSITION: { "$gt": position },
            },
            doc! { "$set": data, "$setOnInsert": { "orders": [] } },
        )
    } else {
        WriteOp::upsert(
            doc! {
                "_id": id,
                CUSTOMER_POSITION: { "$not": { "$gte": position } },
                CUSTOMER_DELETED_POSITION: { "$not": { "$gt": position } },
            },
            doc! {
                "$set": data,
                "$unset": { CUSTOMER_DELETED: "" },
                "$setOnInsert": { "orders": [] },
            },
        )
    })
}

/// What to try after a change's upsert met a newer document: the plain upsert again (another
/// writer may have created the document meanwhile) and the `deleted_since` form.
pub fn change_follow_ups(
    id: &CustomerId,
    position: i64,
    payload: &CustomerChangeEvent,
) -> Result<Vec<WriteOp>, Unwritable> {
    Ok(vec![
        change_write(id, position, payload, false)?,
        change_write(id, position, payload, true)?,
    ])
}

/// The upsert of a tombstone of customer `id` at `position`. The plain form applies when the
/// copy is not newer than the tombstone, marks the customer deleted, and creates a placeholder
/// for a customer never seen; the `recreated_since` form applies when the copy is newer (a
/// customer re-created since): only the tombstone's position is recorded.
pub fn tombstone_write(id: &CustomerId, position: i64, recreated_since: bool) -> WriteOp {
    if recreated_since {
        WriteOp::upsert(
            doc! {
                "_id": id,
                CUSTOMER_DELETED_POSITION: { "$not": { "$gte": position } },
                CUSTOMER_POSITION: { "$gt": position },
            },
            doc! {
                "$set": { CUSTOMER_DELETED_POSITION: position },
                "$setOnInsert": { "orders": [] },
            },
        )
    } else {
        WriteOp::upsert(
            doc! {
                "_id": id,
                CUSTOMER_DELETED_POSITION: { "$not": { "$gte": position } },
                CUSTOMER_POSITION: { "$not": { "$gt": position } },
            },
            doc! {
                "$set": { CUSTOMER_DELETED: true, CUSTOMER_DELETED_POSITION: position },
                "$setOnInsert": { "orders": [] },
            },
        )
    }
}

/// What to try after a tombstone's upsert met a newer document: the plain upsert again and the
/// `recreated_since` form.
pub fn tombstone_follow_ups(id: &CustomerId, position: i64) -> Vec<WriteOp> {
    vec![
        tombstone_write(id, position, false),
        tombstone_write(id, position, true),
    ]
}

/// The follow-ups of a customer event (see [`change_follow_ups`], [`tombstone_follow_ups`]).
pub fn follow_ups(event: &Event) -> Result<Vec<WriteOp>, Unwritable> {
    Ok(match &event.body {
        EventBody::CustomerChanged { id, payload } => {
            change_follow_ups(id, event.position(), payload)?
        }
        EventBody::CustomerDeleted { id } => tombstone_follow_ups(id, event.position()),
        // Only customer events are guarded upserts here.
        EventBody::OrderStatusChanged(_) | EventBody::FulfillmentRequested(_) => Vec::new(),
    })
}

/// Appends `status` to order `guid` when the order has no status at or after its timestamp
/// (then the list stays in order and the status is certainly new). Matches nothing otherwise.
pub fn append_status(guid: &str, status: &OrderStatusEvent) -> Result<WriteOp, Unwritable> {
    Ok(WriteOp::update(
        doc! {
            "orders": { "$elemMatch": {
                "guid": guid,
                "orderStatusEvents": { "$not": { "$elemMatch": {
                    "timestamp": { "$gte": status.timestamp },
                } } },
            } },
        },
        doc! { "$push": { "orders.$[order].orderStatusEvents": to_bson(status)? } },
    )
    .with_array_filters(vec![doc! { "order.guid": guid }]))
}

/// Replaces order `guid`'s statuses in document `id` by `merged`, if they are still `read`.
pub fn replace_statuses(id: &Bson, guid: &str, read: &[Bson], merged: Vec<Bson>) -> WriteOp {
    WriteOp::update(
        doc! {
            "_id": id.clone(),
            "orders": { "$elemMatch": { "guid": guid, "orderStatusEvents": read.to_vec() } },
        },
        doc! { "$set": { "orders.$[order].orderStatusEvents": merged } },
    )
    .with_array_filters(vec![doc! { "order.guid": guid }])
}

/// The result of merging new statuses into an order's list.
#[derive(Debug, Clone, PartialEq)]
pub struct Merged {
    /// The list with the new statuses in place.
    pub statuses: Vec<Bson>,
    /// Per new status: whether it was added (`false`: the order already had it).
    pub added: Vec<bool>,
}

/// Inserts each of `new` into `existing` after the last status whose timestamp is not later
/// than its own, unless a status with the same timestamp and type is already there. Entries
/// this release cannot read (no numeric timestamp) are kept where they are and do not place the
/// new ones.
pub fn merge_statuses(existing: &[Bson], new: &[&OrderStatusEvent]) -> Result<Merged, Unwritable> {
    let mut statuses = existing.to_vec();
    let mut added = Vec::with_capacity(new.len());
    for status in new {
        let present = statuses.iter().any(|entry| {
            identity(entry).is_some_and(|(t, kind)| {
                t == status.timestamp && kind == status.order_status_type.as_str()
            })
        });
        if present {
            added.push(false);
            continue;
        }
        let position = statuses
            .iter()
            .rposition(|entry| timestamp(entry).is_some_and(|t| t <= status.timestamp))
            .map_or(0, |last| last + 1);
        statuses.insert(position, to_bson(status)?);
        added.push(true);
    }
    Ok(Merged { statuses, added })
}

fn identity(entry: &Bson) -> Option<(i64, &str)> {
    let entry = entry.as_document()?;
    Some((timestamp_of(entry)?, entry.get_str("orderStatusType").ok()?))
}

fn timestamp(entry: &Bson) -> Option<i64> {
    timestamp_of(entry.as_document()?)
}

/// A status timestamp as stored: int32, int64, or a double without fraction (as the mongo shell
/// writes numbers).
fn timestamp_of(entry: &Document) -> Option<i64> {
    match entry.get("timestamp")? {
        Bson::Int64(t) => Some(*t),
        Bson::Int32(t) => Some(i64::from(*t)),
        Bson::Double(t) if t.fract() == 0.0 && t.abs() < 9.0e15 => Some(*t as i64),
        _ => None,
    }
}

/// The customer events of one customer in a batch, collapsed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CustomerEvents {
    /// Index of the newest change (by position; equal positions: the later in the batch).
    pub change: Option<usize>,
    /// Index of the newest tombstone.
    pub tombstone: Option<usize>,
}

/// What a batch asks of this projection once collapsed.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Collapsed<'a> {
    /// Per customer (in first-seen order): the events that matter.
    pub customers: Vec<(&'a CustomerId, CustomerEvents)>,
    /// Status events, first of each identity (guid, timestamp, type) in the batch.
    pub statuses: Vec<usize>,
    /// Events made redundant by another of the batch, with what they count as.
    pub settled: Vec<(usize, Outcome)>,
}

/// Keeps, per customer, the newest change and the newest tombstone (the state depends on nothing
/// else, so applying only them equals applying all in order), and each distinct status once.
pub fn collapse<'a>(events: &[&'a Event]) -> Collapsed<'a> {
    let mut collapsed = Collapsed::default();
    let mut customers: HashMap<&CustomerId, usize> = HashMap::new();
    let mut statuses: HashMap<(&str, i64, &str), usize> = HashMap::new();
    let newer = |index: usize, current: Option<usize>| {
        current.is_none_or(|current| events[index].position() >= events[current].position())
    };
    for (index, event) in events.iter().enumerate() {
        match &event.body {
            EventBody::CustomerChanged { id, .. } | EventBody::CustomerDeleted { id } => {
                let slot = *customers.entry(id).or_insert_with(|| {
                    collapsed.customers.push((id, CustomerEvents::default()));
                    collapsed.customers.len() - 1
                });
                let entry = &mut collapsed.customers[slot].1;
                let current = match event.body {
                    EventBody::CustomerChanged { .. } => &mut entry.change,
                    _ => &mut entry.tombstone,
                };
                if newer(index, *current) {
                    if let Some(older) = current.replace(index) {
                        collapsed.settled.push((older, Outcome::Stale));
                    }
                } else {
                    collapsed.settled.push((index, Outcome::Stale));
                }
            }
            EventBody::OrderStatusChanged(change) => {
                let status = &change.order_status_event;
                let identity = (
                    change.guid.as_str(),
                    status.timestamp,
                    status.order_status_type.as_str(),
                );
                match statuses.entry(identity) {
                    std::collections::hash_map::Entry::Occupied(_) => {
                        collapsed.settled.push((index, Outcome::Duplicate));
                    }
                    std::collections::hash_map::Entry::Vacant(slot) => {
                        slot.insert(index);
                        collapsed.statuses.push(index);
                    }
                }
            }
            EventBody::FulfillmentRequested(_) => collapsed.settled.push((
                index,
                Outcome::DeadLetter(Poison::contract(
                    "a FulfillmentRequestEvent reached the orders projection",
                )),
            )),
        }
    }
    collapsed
}

/// Plans a batch: per customer the newest change and the newest tombstone as guarded upserts,
/// and each distinct status as an append.
pub fn plan(events: &[&Event]) -> Plan {
    let collapsed = collapse(events);
    let mut plan = Plan {
        settled: collapsed.settled,
        guarded: Vec::new(),
        appends: Vec::new(),
    };
    for (id, customer) in &collapsed.customers {
        if let Some(index) = customer.change
            && let EventBody::CustomerChanged { payload, .. } = &events[index].body
        {
            let op = change_write(id, events[index].position(), payload, false);
            push_guarded(&mut plan, index, op);
        }
        if let Some(index) = customer.tombstone {
            let op = tombstone_write(id, events[index].position(), false);
            push_guarded(&mut plan, index, Ok(op));
        }
    }
    for index in collapsed.statuses {
        if let EventBody::OrderStatusChanged(change) = &events[index].body {
            match append_status(&change.guid, &change.order_status_event)
                .and_then(|op| op.statement())
            {
                Ok(statement) => plan.appends.push((index, statement)),
                Err(error) => plan.settled.push((index, unwritable(&error))),
            }
        }
    }
    plan
}

impl OrdersProjection {
    /// The projection writing `target` (`database.collection`, used in messages).
    pub fn new(target: String) -> Self {
        Self { target }
    }

    /// `database.collection` written.
    pub fn target(&self) -> &str {
        &self.target
    }
}

/// The read of the documents holding any of `guids` (`_id` and `orders` only).
pub fn find_orders(guids: &[&str]) -> Read {
    Read {
        filter: doc! { "orders.guid": { "$in": guids } },
        projection: doc! { "orders": 1 },
    }
}

/// The statuses of a batch after its first write: the appends that did not take (out of order,
/// already present, or of an order no document has) go through read-and-merge rounds: read the
/// orders, write each merged list guarded by the list read, and read again the orders that
/// changed in between, up to [`MERGE_ATTEMPTS`] times. Pure: [`super::Execution`] hands it the
/// results of the reads and writes it asks for.
#[derive(Debug)]
pub(crate) struct Statuses<'a> {
    /// `database.collection`, for messages.
    target: &'a str,
    /// Statuses not settled yet: batch index, order guid, status.
    pending: Vec<(usize, &'a str, &'a OrderStatusEvent)>,
    /// How many of `pending` the first write appended (which ones its reply does not say; they
    /// read as present).
    appended: usize,
    /// How many statuses found present were counted as appended.
    credited: usize,
    /// Reads done so far.
    attempt: usize,
    /// The merged lists being written: per statement, its order and the statuses it adds.
    written: Vec<(&'a str, Vec<usize>)>,
}

impl<'a> Statuses<'a> {
    /// Settles the refused appends (`results`, one per append) and keeps the others pending;
    /// `appended` of those matched.
    pub(crate) fn after_appends(
        target: &'a str,
        events: &[&'a Event],
        appends: &[(usize, Statement)],
        results: &[OpResult],
        appended: u64,
        outcomes: &mut Outcomes,
    ) -> Self {
        let mut pending = Vec::new();
        for ((index, _), result) in appends.iter().zip(results) {
            match result {
                OpResult::Rejected { code, message } => {
                    outcomes.set(*index, super::rejected(*code, message));
                }
                _ => {
                    if let EventBody::OrderStatusChanged(change) = &events[*index].body {
                        pending.push((*index, change.guid.as_str(), &change.order_status_event));
                    }
                }
            }
        }
        Self {
            target,
            pending,
            appended: appended as usize,
            credited: 0,
            attempt: 0,
            written: Vec::new(),
        }
    }

    /// The first read, or `None` when every pending status was appended (settled then).
    pub(crate) fn start(&mut self, outcomes: &mut Outcomes) -> Option<Read> {
        if self.appended >= self.pending.len() {
            for (index, _, _) in self.pending.drain(..) {
                outcomes.set(index, Outcome::Applied);
            }
            return None;
        }
        Some(self.next_read())
    }

    /// The merged lists to write after reading `documents`, or `None` when nothing is left to
    /// write (everything settled).
    pub(crate) fn read(
        &mut self,
        documents: &[Document],
        outcomes: &mut Outcomes,
    ) -> Result<Option<Vec<Statement>>, ProjectionError> {
        let guids = self.guids();
        let orders = index_orders(documents, &guids);
        let mut by_guid: Vec<(&'a str, Vec<(usize, &'a OrderStatusEvent)>)> = Vec::new();
        for (index, guid, status) in &self.pending {
            match by_guid.iter_mut().find(|(g, _)| g == guid) {
                Some((_, list)) => list.push((*index, *status)),
                None => by_guid.push((guid, vec![(*index, *status)])),
            }
        }
        let mut writes = Vec::new();
        self.written.clear();
        for (guid, list) in by_guid {
            let Some((id, read)) = orders.get(guid) else {
                for (index, _) in list {
                    outcomes.set(
                        index,
                        Outcome::DeadLetter(Poison::contract(format!(
                            "order {guid} is in no document of {}",
                            self.target
                        ))),
                    );
                }
                continue;
            };
            let new: Vec<&OrderStatusEvent> = list.iter().map(|(_, s)| *s).collect();
            let merged = match merge_statuses(read, &new) {
                Ok(merged) => merged,
                Err(error) => {
                    for (index, _) in list {
                        outcomes.set(index, unwritable(&error));
                    }
                    continue;
                }
            };
            let mut adds = Vec::new();
            for ((index, _), added) in list.iter().zip(&merged.added) {
                if *added {
                    adds.push(*index);
                } else if self.attempt == 0 && self.credited < self.appended {
                    // Found present on the first read: appended just now or delivered before;
                    // the first `appended` of them count as applied.
                    self.credited += 1;
                    outcomes.set(*index, Outcome::Applied);
                } else if self.attempt == 0 {
                    outcomes.set(*index, Outcome::Duplicate);
                } else {
                    // Present now, absent on an earlier read of this batch: our own merge whose
                    // success the reply could not attribute.
                    outcomes.set(*index, Outcome::Applied);
                }
            }
            if adds.is_empty() {
                continue;
            }
            match replace_statuses(id, guid, read, merged.statuses).statement() {
                Ok(statement) => {
                    writes.push(statement);
                    self.written.push((guid, adds));
                }
                Err(error) => {
                    for index in adds {
                        outcomes.set(index, unwritable(&error));
                    }
                }
            }
        }
        self.attempt += 1;
        Ok((!writes.is_empty()).then_some(writes))
    }

    /// The next read after the merged lists' `report`, or `None` when every status is settled.
    pub(crate) fn written(
        &mut self,
        report: &WriteReport,
        outcomes: &mut Outcomes,
    ) -> Result<Option<Read>, ProjectionError> {
        if report.results.len() != self.written.len() {
            return Err(ProjectionError::Invariant(format!(
                "{} results for {} merged status lists",
                report.results.len(),
                self.written.len()
            )));
        }
        let mut retry = Vec::new();
        let mut refused = 0;
        for ((_, adds), result) in self.written.iter().zip(&report.results) {
            if let OpResult::Rejected { code, message } = result {
                refused += 1;
                for index in adds {
                    outcomes.set(*index, super::rejected(*code, message));
                }
            } else {
                retry.extend(adds.iter().copied());
            }
        }
        if report.matched as usize + refused >= self.written.len() {
            for index in retry {
                outcomes.set(index, Outcome::Applied);
            }
            self.pending.clear();
            return Ok(None);
        }
        // Some order changed between the read and the write: read again the ones not settled
        // yet (a merge that did land reads as present and is credited then).
        self.pending.retain(|(index, _, _)| retry.contains(index));
        if self.attempt >= MERGE_ATTEMPTS {
            return Err(ProjectionError::Contention(format!(
                "orders {}",
                self.guids().join(", ")
            )));
        }
        Ok(Some(self.next_read()))
    }

    fn guids(&self) -> Vec<&'a str> {
        let mut guids: Vec<&'a str> = self.pending.iter().map(|(_, guid, _)| *guid).collect();
        guids.sort_unstable();
        guids.dedup();
        guids
    }

    fn next_read(&self) -> Read {
        find_orders(&self.guids())
    }
}

/// For each of `guids`, the first document holding that order: its `_id` and the order's
/// status list as stored.
fn index_orders(documents: &[Document], guids: &[&str]) -> HashMap<String, (Bson, Vec<Bson>)> {
    let mut found = HashMap::new();
    for document in documents {
        let Some(id) = document.get("_id") else {
            continue;
        };
        let Ok(orders) = document.get_array("orders") else {
            continue;
        };
        for order in orders.iter().filter_map(Bson::as_document) {
            let Ok(guid) = order.get_str("guid") else {
                continue;
            };
            if !guids.contains(&guid) || found.contains_key(guid) {
                continue;
            }
            let statuses = order
                .get_array("orderStatusEvents")
                .cloned()
                .unwrap_or_default();
            found.insert(guid.to_owned(), (id.clone(), statuses));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use mongodb::bson::oid::ObjectId;
    use storefront_schemas::documents::AddressType;
    use storefront_schemas::fixtures::sample;
    use storefront_schemas::metadata::{EventMetadata, EventType, SCHEMA_VERSION, SourcePosition};
    use storefront_schemas::topology::Namespace;

    use super::*;
    use crate::projection::Projection;

    fn oid(n: u8) -> CustomerId {
        CustomerId::ObjectId(ObjectId::from_bytes([n; 12]))
    }

    fn metadata(event_type: EventType, position: u64) -> EventMetadata {
        EventMetadata {
            id: format!("id-{position}"),
            event_type,
            schema_version: SCHEMA_VERSION,
            source: Namespace::new("accounts", "customer.accounts"),
            position: SourcePosition::from_u64(position),
            time_ms: 0,
            subject: String::new(),
        }
    }

    /// Customer `id`'s change with a BILLING address (the projection copies addresses of any
    /// type).
    fn payload(id: &CustomerId, first_name: &str) -> CustomerChangeEvent {
        sample::customer_change(
            &id.key(),
            first_name,
            vec![sample::address(AddressType::Billing, "London")],
        )
    }

    fn change(id: &CustomerId, position: u64) -> Event {
        Event {
            metadata: metadata(EventType::CustomerChanged, position),
            body: EventBody::CustomerChanged {
                id: id.clone(),
                payload: payload(id, &format!("v{position}")),
            },
        }
    }

    fn tombstone(id: &CustomerId, position: u64) -> Event {
        Event {
            metadata: metadata(EventType::CustomerDeleted, position),
            body: EventBody::CustomerDeleted { id: id.clone() },
        }
    }

    fn status(guid: &str, timestamp: i64, kind: &str) -> Event {
        Event {
            metadata: metadata(EventType::OrderStatusChanged, 1),
            body: EventBody::OrderStatusChanged(sample::status_change(
                guid,
                sample::status(timestamp, kind, None),
            )),
        }
    }

    #[test]
    fn a_batch_collapses_to_the_newest_change_and_tombstone_per_customer() {
        let (a, b) = (&oid(1), &CustomerId::Text("ada-1".into()));
        // (events, expected customers, expected statuses, expected settled)
        type Case<'a> = (
            &'static str,
            Vec<Event>,
            Vec<(&'a CustomerId, CustomerEvents)>,
            Vec<usize>,
            Vec<(usize, Outcome)>,
        );
        let cases: Vec<Case> = vec![
            (
                "in order",
                vec![change(a, 1), change(a, 2), tombstone(a, 3)],
                vec![(
                    a,
                    CustomerEvents {
                        change: Some(1),
                        tombstone: Some(2),
                    },
                )],
                vec![],
                vec![(0, Outcome::Stale)],
            ),
            (
                "reversed",
                vec![tombstone(a, 3), change(a, 2), change(a, 1)],
                vec![(
                    a,
                    CustomerEvents {
                        change: Some(1),
                        tombstone: Some(0),
                    },
                )],
                vec![],
                vec![(2, Outcome::Stale)],
            ),
            (
                "duplicates: the later copy wins, the earlier is settled",
                vec![change(a, 5), change(b, 1), change(a, 5)],
                vec![
                    (
                        a,
                        CustomerEvents {
                            change: Some(2),
                            tombstone: None,
                        },
                    ),
                    (
                        b,
                        CustomerEvents {
                            change: Some(1),
                            tombstone: None,
                        },
                    ),
                ],
                vec![],
                vec![(0, Outcome::Stale)],
            ),
            (
                "statuses once per identity, notes aside",
                vec![
                    status("g", 5, "SHIPPED"),
                    status("g", 5, "SHIPPED"),
                    status("g", 5, "IN_TRANSIT"),
                    status("h", 5, "SHIPPED"),
                ],
                vec![],
                vec![0, 2, 3],
                vec![(1, Outcome::Duplicate)],
            ),
        ];
        for (what, events, customers, statuses, settled) in cases {
            let refs: Vec<&Event> = events.iter().collect();
            let collapsed = collapse(&refs);
            assert_eq!(collapsed.customers, customers, "{what}");
            assert_eq!(collapsed.statuses, statuses, "{what}");
            assert_eq!(collapsed.settled, settled, "{what}");
        }
    }

    fn statuses(list: &[(i64, &str)]) -> Vec<Bson> {
        list.iter()
            .map(|(t, kind)| Bson::Document(doc! { "timestamp": *t, "orderStatusType": *kind }))
            .collect()
    }

    #[test]
    fn statuses_merge_in_timestamp_order_once() {
        type Case = (
            &'static str,
            Vec<Bson>,
            Vec<(i64, &'static str)>,
            Vec<(i64, &'static str)>,
            Vec<bool>,
        );
        let cases: Vec<Case> = vec![
            (
                "append the newest",
                statuses(&[(1, "CREATED"), (2, "APPROVED")]),
                vec![(3, "PROCESSING")],
                vec![(1, "CREATED"), (2, "APPROVED"), (3, "PROCESSING")],
                vec![true],
            ),
            (
                "late arrival goes to its place",
                statuses(&[(1, "CREATED"), (2, "APPROVED"), (5, "SHIPPED")]),
                vec![(3, "PROCESSING")],
                vec![
                    (1, "CREATED"),
                    (2, "APPROVED"),
                    (3, "PROCESSING"),
                    (5, "SHIPPED"),
                ],
                vec![true],
            ),
            (
                "already there (identity is timestamp and type)",
                statuses(&[(1, "CREATED"), (3, "PROCESSING")]),
                vec![(3, "PROCESSING")],
                vec![(1, "CREATED"), (3, "PROCESSING")],
                vec![false],
            ),
            (
                "same timestamp, other type: after the existing one, so it becomes current",
                statuses(&[(1, "CREATED"), (2, "APPROVED")]),
                vec![(2, "PROCESSING")],
                vec![(1, "CREATED"), (2, "APPROVED"), (2, "PROCESSING")],
                vec![true],
            ),
            (
                "older than everything goes first",
                statuses(&[(5, "APPROVED")]),
                vec![(1, "CREATED")],
                vec![(1, "CREATED"), (5, "APPROVED")],
                vec![true],
            ),
            (
                "several, reversed, with a repeat",
                statuses(&[(1, "CREATED")]),
                vec![(4, "SHIPPED"), (3, "PROCESSING"), (4, "SHIPPED")],
                vec![(1, "CREATED"), (3, "PROCESSING"), (4, "SHIPPED")],
                vec![true, true, false],
            ),
            (
                "empty history",
                vec![],
                vec![(3, "PROCESSING")],
                vec![(3, "PROCESSING")],
                vec![true],
            ),
        ];
        for (what, existing, new, expected, added) in cases {
            let new: Vec<OrderStatusEvent> = new
                .iter()
                .map(|(t, kind)| sample::status(*t, kind, None))
                .collect();
            let refs: Vec<&OrderStatusEvent> = new.iter().collect();
            let merged = merge_statuses(&existing, &refs).unwrap();
            assert_eq!(merged.statuses, statuses(&expected), "{what}");
            assert_eq!(merged.added, added, "{what}");
        }
    }

    #[test]
    fn stored_timestamps_of_any_numeric_type_compare_by_value() {
        let existing = vec![
            Bson::Document(doc! { "timestamp": 1_i32, "orderStatusType": "CREATED" }),
            Bson::Document(doc! { "timestamp": 3.0_f64, "orderStatusType": "PROCESSING" }),
            Bson::Document(doc! { "orderStatusType": "UNREADABLE" }),
        ];
        let repeat = sample::status(3, "PROCESSING", None);
        let between = sample::status(2, "APPROVED_ELSEWHERE", None);
        let merged = merge_statuses(&existing, &[&repeat, &between]).unwrap();
        assert_eq!(merged.added, vec![false, true]);
        assert_eq!(
            merged.statuses[1],
            Bson::Document(doc! { "timestamp": 2_i64, "orderStatusType": "APPROVED_ELSEWHERE" })
        );
    }

    #[test]
    fn change_writes_guard_on_both_positions_and_never_touch_orders() {
        let customer = payload(&oid(1), "Ada");
        let primary = change_write(&oid(1), 42, &customer, false).unwrap();
        assert_eq!(
            primary.filter,
            doc! {
                "_id": oid(1),
                "_cdc.customerPosition": { "$not": { "$gte": 42_i64 } },
                "_cdc.customerDeletedPosition": { "$not": { "$gt": 42_i64 } },
            }
        );
        assert!(primary.upsert);
        let update = &primary.update;
        let set = update.get_document("$set").unwrap();
        assert_eq!(
            set.keys().collect::<Vec<_>>(),
            ["name", "contact", "addresses", "_cdc.customerPosition"]
        );
        assert_eq!(
            update.get_document("$unset").unwrap(),
            &doc! { "customerDeleted": "" }
        );
        assert_eq!(
            update.get_document("$setOnInsert").unwrap(),
            &doc! { "orders": [] }
        );
        let follow_ups = change_follow_ups(&oid(1), 42, &customer).unwrap();
        assert_eq!(follow_ups[0], primary);
        let variant = &follow_ups[1];
        assert_eq!(
            variant
                .filter
                .get_document("_cdc.customerDeletedPosition")
                .unwrap(),
            &doc! { "$gt": 42_i64 }
        );
        assert!(variant.update.get("$unset").is_none(), "stays deleted");
        for op in std::iter::once(&primary).chain(&follow_ups) {
            let set = op.update.get_document("$set").unwrap();
            assert!(
                !set.contains_key("orders"),
                "orders belong to the Orders app"
            );
            assert!(!set.contains_key("creditCards"));
        }
    }

    #[test]
    fn the_id_is_the_key_by_springs_rule_an_object_id_or_a_string() {
        let hex = "65f1c0ffee0000000000beef";
        let cases = [
            ("ada-1", Bson::String("ada-1".into())),
            (hex, Bson::ObjectId(ObjectId::parse_str(hex).unwrap())),
        ];
        for (key, expected) in cases {
            let id = CustomerId::from_key(key).unwrap();
            let writes = follow_ups(&change(&id, 3))
                .unwrap()
                .into_iter()
                .chain(follow_ups(&tombstone(&id, 4)).unwrap());
            for op in writes {
                assert_eq!(op.filter.get("_id"), Some(&expected), "{key}");
            }
        }
    }

    #[test]
    fn tombstone_writes_mark_deleted_only_when_newer_than_the_copy() {
        let primary = tombstone_write(&oid(1), 7, false);
        assert_eq!(
            primary.filter,
            doc! {
                "_id": oid(1),
                "_cdc.customerDeletedPosition": { "$not": { "$gte": 7_i64 } },
                "_cdc.customerPosition": { "$not": { "$gt": 7_i64 } },
            }
        );
        assert_eq!(
            primary.update.get_document("$set").unwrap(),
            &doc! { "customerDeleted": true, "_cdc.customerDeletedPosition": 7_i64 }
        );
        let follow_ups = tombstone_follow_ups(&oid(1), 7);
        assert_eq!(follow_ups[0], primary);
        let variant = &follow_ups[1];
        assert_eq!(
            variant.update.get_document("$set").unwrap(),
            &doc! { "_cdc.customerDeletedPosition": 7_i64 },
            "a customer re-created since is not marked deleted"
        );
    }

    #[test]
    fn appends_only_to_an_order_whose_statuses_are_all_older() {
        let op = append_status("g-1", &sample::status(9, "SHIPPED", None)).unwrap();
        assert!(!op.upsert);
        assert_eq!(
            op.filter,
            doc! { "orders": { "$elemMatch": {
                "guid": "g-1",
                "orderStatusEvents": { "$not": { "$elemMatch": { "timestamp": { "$gte": 9_i64 } } } },
            } } }
        );
        assert_eq!(
            op.update,
            doc! { "$push": { "orders.$[order].orderStatusEvents": {
                "timestamp": 9_i64, "orderStatusType": "SHIPPED",
            } } }
        );
        assert_eq!(op.array_filters, Some(vec![doc! { "order.guid": "g-1" }]));
        let replace = replace_statuses(&Bson::Int32(1), "g-1", &statuses(&[(1, "A")]), vec![]);
        assert_eq!(
            replace.filter.get_document("orders").unwrap(),
            &doc! { "$elemMatch": { "guid": "g-1", "orderStatusEvents": statuses(&[(1, "A")]) } },
            "guarded by the list it read"
        );
    }

    #[test]
    fn the_first_document_holding_an_order_is_used() {
        let documents = vec![
            doc! { "_id": 1, "orders": [{ "guid": "a", "orderStatusEvents": statuses(&[(1, "X")]) }] },
            doc! { "_id": 2, "orders": [
                { "guid": "a", "orderStatusEvents": [] },
                { "guid": "b" },
                { "guid": "c", "orderStatusEvents": [] },
            ] },
        ];
        let found = index_orders(&documents, &["a", "b"]);
        assert_eq!(found["a"], (Bson::Int32(1), statuses(&[(1, "X")])));
        assert_eq!(found["b"], (Bson::Int32(2), vec![]));
        assert!(!found.contains_key("c"));
    }

    fn order_doc(id: i32, guid: &str, list: &[(i64, &str)]) -> Document {
        doc! { "_id": id, "orders": [{ "guid": guid, "orderStatusEvents": statuses(list) }] }
    }

    #[test]
    fn executions_write_read_and_settle_every_event() {
        use super::super::testing::{Io, drive, report, statement};
        use OpResult::{DuplicateId, Ok as Done, Upserted};
        let projection = Projection::Orders(OrdersProjection::new("db.customer.orders".into()));
        let a = &oid(1);
        let change_a = |p: u64| {
            statement(change_write(
                a,
                p as i64,
                &payload(a, &format!("v{p}")),
                false,
            ))
        };
        let follow_ups_of = |event: &Event| -> Vec<_> {
            follow_ups(event)
                .unwrap()
                .into_iter()
                .map(|op| statement(Ok(op)))
                .collect()
        };
        let append = |guid: &str, t: i64, kind: &str| {
            statement(append_status(guid, &sample::status(t, kind, None)))
        };
        let refused = OpResult::Rejected {
            code: 28,
            message: "Cannot create field".into(),
        };
        let g_list = [(1, "CREATED"), (5, "SHIPPED")];
        let merged_g = || {
            statement(Ok(replace_statuses(
                &Bson::Int32(1),
                "g",
                &statuses(&g_list),
                statuses(&[(1, "CREATED"), (3, "PROCESSING"), (5, "SHIPPED")]),
            )))
        };
        let find_g = || find_orders(&["g"]);
        // (what, batch, scripted IO, outcomes or error text)
        type Case = (
            &'static str,
            Vec<Event>,
            Vec<Io>,
            Result<Vec<Outcome>, &'static str>,
        );
        let cases: Vec<Case> = vec![
            (
                "a new customer: one upsert",
                vec![change(a, 1)],
                vec![Io::Write(vec![change_a(1)], report(vec![Upserted], 1))],
                Ok(vec![Outcome::Applied]),
            ),
            (
                "collapsed: the older change settles without a write",
                vec![change(a, 1), change(a, 2), tombstone(a, 3)],
                vec![Io::Write(
                    vec![change_a(2), statement(Ok(tombstone_write(a, 3, false)))],
                    report(vec![Done, Done], 2),
                )],
                Ok(vec![Outcome::Stale, Outcome::Applied, Outcome::Applied]),
            ),
            (
                "a newer document: the follow-ups, all stale",
                vec![change(a, 5)],
                vec![
                    Io::Write(vec![change_a(5)], report(vec![DuplicateId], 0)),
                    Io::Write(
                        follow_ups_of(&change(a, 5)),
                        report(vec![DuplicateId, DuplicateId], 0),
                    ),
                ],
                Ok(vec![Outcome::Stale]),
            ),
            (
                "a newer tombstone: the deleted_since follow-up lands the data",
                vec![change(a, 5)],
                vec![
                    Io::Write(vec![change_a(5)], report(vec![DuplicateId], 0)),
                    Io::Write(
                        follow_ups_of(&change(a, 5)),
                        report(vec![DuplicateId, Done], 1),
                    ),
                ],
                Ok(vec![Outcome::Applied]),
            ),
            (
                "refused for good: a dead letter",
                vec![change(a, 1)],
                vec![Io::Write(
                    vec![change_a(1)],
                    report(vec![refused.clone()], 0),
                )],
                Ok(vec![super::super::rejected(28, "Cannot create field")]),
            ),
            (
                "a status appended, beside an upsert (which counts 1 in n)",
                vec![change(a, 1), status("g", 5, "SHIPPED")],
                vec![Io::Write(
                    vec![change_a(1), append("g", 5, "SHIPPED")],
                    report(vec![Upserted, Done], 2),
                )],
                Ok(vec![Outcome::Applied, Outcome::Applied]),
            ),
            (
                "a late status: read the order, write the merged list",
                vec![status("g", 3, "PROCESSING")],
                vec![
                    Io::Write(vec![append("g", 3, "PROCESSING")], report(vec![Done], 0)),
                    Io::Read(find_g(), vec![order_doc(1, "g", &g_list)]),
                    Io::Write(vec![merged_g()], report(vec![Done], 1)),
                ],
                Ok(vec![Outcome::Applied]),
            ),
            (
                "a status the order has: a duplicate, nothing written",
                vec![status("g", 5, "SHIPPED")],
                vec![
                    Io::Write(vec![append("g", 5, "SHIPPED")], report(vec![Done], 0)),
                    Io::Read(find_g(), vec![order_doc(1, "g", &g_list)]),
                ],
                Ok(vec![Outcome::Duplicate]),
            ),
            (
                "the order changed between read and write: read again, our status is there",
                vec![status("g", 3, "PROCESSING")],
                vec![
                    Io::Write(vec![append("g", 3, "PROCESSING")], report(vec![Done], 0)),
                    Io::Read(find_g(), vec![order_doc(1, "g", &g_list)]),
                    Io::Write(vec![merged_g()], report(vec![Done], 0)),
                    Io::Read(
                        find_g(),
                        vec![order_doc(
                            1,
                            "g",
                            &[(1, "CREATED"), (3, "PROCESSING"), (5, "SHIPPED")],
                        )],
                    ),
                ],
                Ok(vec![Outcome::Applied]),
            ),
            (
                "an order no document has: a dead letter naming the collection",
                vec![status("g", 3, "PROCESSING")],
                vec![
                    Io::Write(vec![append("g", 3, "PROCESSING")], report(vec![Done], 0)),
                    Io::Read(find_g(), vec![]),
                ],
                Ok(vec![Outcome::DeadLetter(Poison::contract(
                    "order g is in no document of db.customer.orders",
                ))]),
            ),
            (
                "the order keeps changing: contention after five rounds",
                vec![status("g", 3, "PROCESSING")],
                std::iter::once(Io::Write(
                    vec![append("g", 3, "PROCESSING")],
                    report(vec![Done], 0),
                ))
                .chain((0..MERGE_ATTEMPTS).flat_map(|_| {
                    [
                        Io::Read(find_g(), vec![order_doc(1, "g", &g_list)]),
                        Io::Write(vec![merged_g()], report(vec![Done], 0)),
                    ]
                }))
                .collect(),
                Err("order statuses of orders g kept changing under the projector"),
            ),
            (
                "a reply with fewer results than statements: an invariant broken",
                vec![change(a, 1)],
                vec![Io::Write(vec![change_a(1)], report(vec![], 0))],
                Err("projection invariant broken: 0 results for 1 statements"),
            ),
        ];
        for (what, events, io, expected) in cases {
            let found = drive(what, &projection, &events, io);
            match (found, expected) {
                (Ok(outcomes), Ok(expected)) => assert_eq!(outcomes, expected, "{what}"),
                (Err(error), Err(text)) => assert_eq!(error, text, "{what}"),
                (found, expected) => panic!("{what}: {found:?}, expected {expected:?}"),
            }
        }
    }
}
