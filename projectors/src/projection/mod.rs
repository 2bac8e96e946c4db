//! Projections: events to guarded, idempotent write operations, one module per read model.
//!
//! - [`orders`]: customer copy and order status history in `customer.orders`.
//! - [`fulfillment`]: one request per approved order in `fulfillment.requests`.
//!
//! Planning a batch (collapsing it, building and serialising its writes) and deciding what a
//! write's result means are pure functions (table-tested in each module): [`Projection::plan`]
//! runs without I/O, so the runner plans the next batch while [`Projection::execute`] writes the
//! current one through a [`Store`].
//!
//! # Guarantees every projection keeps
//! - **Idempotent.** Applying an event twice leaves the document as applying it once: state
//!   fields are set, never incremented or appended blindly; a status is added only when the
//!   order lacks it.
//! - **Stale never wins.** Each state write carries the event's source position (`ce_clustertime`)
//!   and is filtered on the position the document holds (`$not: {$gte: new}`, which also matches
//!   a document that has none yet). A filtered-out upsert fails with a duplicate `_id`: the
//!   document is already newer, and nothing changes. The result of a key's events is the same in
//!   any delivery order.
//! - **Batched.** A batch costs one unordered `update` command in the common case; a second
//!   round only for writes whose first attempt met a newer document or an out-of-order status.
//!   Within a batch, a key's events are collapsed to the newest (per customer: the newest
//!   change and the newest tombstone), which is equivalent because the resulting document
//!   depends only on those.
//! - **Only their own fields.** The orders projection never writes `orders` except to add a
//!   status to an existing order; the fulfillment projection never touches a request's status
//!   history after creating it, nor `shippingMethod`.

pub mod fulfillment;
pub mod orders;

use mongodb::bson::Bson;
use serde::Serialize;

use crate::config::{Projector, ProjectorsConfig};
use crate::event::{Event, EventBody, Poison};
use crate::store::{OpResult, Statement, Store, StoreError, WriteOp};

/// Serialises a contract type to the BSON value it is stored as, through BSON's binary
/// serializer ([`mongodb::bson::to_raw_document_buf`]), which is not human-readable: a
/// [`Price`](storefront_schemas::documents::Price) becomes a Decimal128 with its exact digits,
/// everything else the same value [`mongodb::bson::to_bson`] gives. (`to_bson` serialises as a
/// human-readable format, where a price writes itself as a JSON number token: that would be
/// stored as a meaningless document.)
///
/// The contract types hold only strings, integers, prices, optional fields and lists, which
/// always serialise; `Null` stands for a value that could not.
pub fn to_bson<T: Serialize + ?Sized>(value: &T) -> Bson {
    /// The one-field document the value is serialised in (the binary serializer writes
    /// documents only).
    #[derive(Serialize)]
    struct Field<'a, T: ?Sized> {
        value: &'a T,
    }
    mongodb::bson::to_raw_document_buf(&Field { value })
        .ok()
        .and_then(|raw| Bson::try_from(raw.get("value").ok()??).ok())
        .unwrap_or(Bson::Null)
}

/// What became of one event of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It changed the document.
    Applied,
    /// The document (or another event of the batch) is already newer: nothing to do.
    Stale,
    /// It was applied before (a status the order already has).
    Duplicate,
    /// It cannot be applied: it goes to the dead-letter topic.
    DeadLetter(Poison),
}

/// One read model.
#[derive(Debug, Clone)]
pub enum Projection {
    /// `customer.orders`.
    Orders(orders::OrdersProjection),
    /// `fulfillment.requests`.
    Fulfillment(fulfillment::FulfillmentProjection),
}

/// What a batch asks of a projection, computed without I/O (so the next batch can be planned
/// while the current one is written). Indices are positions in the batch's events.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Events settled without a write (collapsed into another, or unwritable).
    pub settled: Vec<(usize, Outcome)>,
    /// One guarded upsert per event that needs one.
    pub guarded: Vec<Guarded>,
    /// Status appends (orders only): the status event's index and its statement.
    pub appends: Vec<(usize, Statement)>,
}

impl Projection {
    /// The projection maintained by `projector`.
    pub fn for_projector(projector: Projector, config: &ProjectorsConfig) -> Self {
        match projector {
            Projector::Orders => Projection::Orders(orders::OrdersProjection::new(
                config.target(projector).to_string(),
            )),
            Projector::Fulfillment => Projection::Fulfillment(fulfillment::FulfillmentProjection),
        }
    }

    /// Plans `events` (one batch, in consumption order). Pure.
    pub fn plan(&self, events: &[&Event]) -> Plan {
        match self {
            Projection::Orders(_) => orders::plan(events),
            Projection::Fulfillment(_) => fulfillment::plan(events),
        }
    }

    /// Writes `plan` and says what became of each of `events`. Can run again after a transient
    /// failure: every write is idempotent.
    pub async fn execute(
        &self,
        store: &Store,
        events: &[&Event],
        plan: &Plan,
    ) -> Result<Vec<Outcome>, StoreError> {
        match self {
            Projection::Orders(projection) => projection.execute(store, events, plan).await,
            Projection::Fulfillment(_) => {
                let mut outcomes = settle(events.len(), plan);
                let run = run_guarded(store, events, &plan.guarded, &[], |event| {
                    match &event.body {
                        EventBody::FulfillmentRequested(request) => {
                            fulfillment::request_follow_ups(event.position(), request)
                        }
                        _ => Vec::new(),
                    }
                })
                .await?;
                for (g, outcome) in plan.guarded.iter().zip(run.outcomes) {
                    outcomes[g.event] = outcome;
                }
                Ok(outcomes)
            }
        }
    }

    /// Plans and writes `events`.
    pub async fn apply(
        &self,
        store: &Store,
        events: &[&Event],
    ) -> Result<Vec<Outcome>, StoreError> {
        let plan = self.plan(events);
        self.execute(store, events, &plan).await
    }

    /// The guard fields a rebuild clears so that every replayed event applies again.
    pub fn guard_fields(&self) -> &'static [&'static str] {
        match self {
            Projection::Orders(_) => orders::GUARD_FIELDS,
            Projection::Fulfillment(_) => fulfillment::GUARD_FIELDS,
        }
    }
}

/// Outcomes of a batch before its writes: the settled ones, and `Stale` for the rest (each
/// overwritten once its write's result is known).
fn settle(events: usize, plan: &Plan) -> Vec<Outcome> {
    let mut outcomes = vec![Outcome::Stale; events];
    for (index, outcome) in &plan.settled {
        outcomes[*index] = outcome.clone();
    }
    outcomes
}

/// A guarded upsert of one event, serialised. After a duplicate `_id` the projection builds its
/// follow-ups from the event: the upsert again (another writer may have created the document
/// between its query and its insert), and any variant for a document in another legitimate
/// state; the event applied if any of them succeeds.
#[derive(Debug, Clone, PartialEq)]
pub struct Guarded {
    /// Index of the event in the batch.
    pub event: usize,
    /// The upsert.
    pub primary: Statement,
}

/// Adds `op` as event `event`'s guarded write to `plan`, or settles the event as a dead letter
/// if it cannot be serialised.
pub(crate) fn push_guarded(plan: &mut Plan, event: usize, op: &WriteOp) {
    match op.statement() {
        Ok(primary) => plan.guarded.push(Guarded { event, primary }),
        Err(error) => plan.settled.push((
            event,
            Outcome::DeadLetter(Poison::rejected(error.to_string())),
        )),
    }
}

/// What a guarded upsert's first result means: an outcome, or `None` when the follow-ups must
/// run.
pub fn after_primary(result: &OpResult) -> Option<Outcome> {
    match result {
        OpResult::Ok | OpResult::Upserted => Some(Outcome::Applied),
        OpResult::DuplicateId => None,
        OpResult::Rejected { code, message } => Some(rejected(*code, message)),
    }
}

/// What the follow-ups' results mean: applied if one succeeded, stale if every one met a newer
/// document, dead letter if MongoDB refused one.
pub fn after_follow_ups(results: &[&OpResult]) -> Outcome {
    let mut outcome = Outcome::Stale;
    for result in results {
        match result {
            OpResult::Ok | OpResult::Upserted => return Outcome::Applied,
            OpResult::DuplicateId => {}
            OpResult::Rejected { code, message } => outcome = rejected(*code, message),
        }
    }
    outcome
}

/// The dead-letter outcome of a statement MongoDB refused.
pub fn rejected(code: i32, message: &str) -> Outcome {
    Outcome::DeadLetter(Poison::rejected(format!(
        "MongoDB refused the write (code {code}): {message}"
    )))
}

/// Runs the primaries of `guarded` and the `extra` statements in one command, then, in a second
/// command, the follow-ups (from `follow_ups`) of the primaries that met a newer document (both
/// rare after the first delivery of a key's events). Returns each guarded event's outcome and
/// what the first command did with the extras.
pub(crate) async fn run_guarded(
    store: &Store,
    events: &[&Event],
    guarded: &[Guarded],
    extra: &[&Statement],
    follow_ups: impl Fn(&Event) -> Vec<WriteOp>,
) -> Result<GuardedRun, StoreError> {
    let statements: Vec<&Statement> = guarded
        .iter()
        .map(|g| &g.primary)
        .chain(extra.iter().copied())
        .collect();
    let report = store.write(&statements).await?;
    let extra_matched = report
        .matched
        .saturating_sub(report.successful_upserts(&statements[..guarded.len()]));
    let mut outcomes = Vec::with_capacity(guarded.len());
    let mut pending = Vec::new();
    for (index, (g, result)) in guarded.iter().zip(&report.results).enumerate() {
        match after_primary(result) {
            Some(outcome) => outcomes.push(outcome),
            None => {
                outcomes.push(Outcome::Stale);
                pending.push((index, follow_ups(events[g.event])));
            }
        }
    }
    if !pending.is_empty() {
        let follow_ops: Vec<WriteOp> = pending.iter().flat_map(|(_, ops)| ops.clone()).collect();
        let follow_report = store.write_ops(&follow_ops).await?;
        let mut results = follow_report.results.iter();
        for (index, ops) in &pending {
            let mine: Vec<&OpResult> = results.by_ref().take(ops.len()).collect();
            outcomes[*index] = after_follow_ups(&mine);
        }
    }
    Ok(GuardedRun {
        outcomes,
        extra_results: report.results[guarded.len()..].to_vec(),
        extra_matched,
    })
}

/// What [`run_guarded`] found.
#[derive(Debug)]
pub(crate) struct GuardedRun {
    /// One outcome per guarded event, in order.
    pub outcomes: Vec<Outcome>,
    /// Results of the extra statements of the first command.
    pub extra_results: Vec<OpResult>,
    /// Documents the extra statements of the first command matched, in total.
    pub extra_matched: u64,
}

#[cfg(test)]
mod tests {
    use mongodb::bson::doc;
    use storefront_schemas::documents::{
        OrderItem, OrderStatusEvent, OrderStatusType, Price, Product,
    };

    use super::*;

    #[test]
    fn values_are_stored_as_bson_with_prices_exact() {
        let item = OrderItem {
            product: Product {
                guid: "p-1".into(),
                title: "Lamp".into(),
                description: "A lamp".into(),
                price: Price::parse("3.99").unwrap(),
            },
            quantity: 2,
        };
        assert_eq!(
            to_bson(&vec![item]),
            Bson::Array(vec![Bson::Document(doc! {
                "product": {
                    "guid": "p-1",
                    "title": "Lamp",
                    "description": "A lamp",
                    "price": Bson::Decimal128("3.99".parse().unwrap()),
                },
                "quantity": 2_i64,
            })])
        );
        // Everything but prices as `bson::to_bson` has it (absent options left out).
        let status = OrderStatusEvent {
            timestamp: 5,
            order_status_type: OrderStatusType::Shipped,
            note: None,
        };
        assert_eq!(to_bson(&status), mongodb::bson::to_bson(&status).unwrap());
        assert_eq!(
            to_bson(&status),
            Bson::Document(doc! { "timestamp": 5_i64, "orderStatusType": "SHIPPED" })
        );
        assert_eq!(to_bson("text"), Bson::String("text".into()));
    }

    #[test]
    fn guarded_results_decide_the_outcome() {
        let refused = OpResult::Rejected {
            code: 28,
            message: "Cannot create field".into(),
        };
        assert_eq!(after_primary(&OpResult::Ok), Some(Outcome::Applied));
        assert_eq!(after_primary(&OpResult::Upserted), Some(Outcome::Applied));
        assert_eq!(after_primary(&OpResult::DuplicateId), None);
        assert!(matches!(
            after_primary(&refused),
            Some(Outcome::DeadLetter(poison)) if poison.reason.contains("code 28")
        ));
        let cases: Vec<(Vec<&OpResult>, &str)> = vec![
            (
                vec![&OpResult::DuplicateId, &OpResult::DuplicateId],
                "stale",
            ),
            (vec![&OpResult::DuplicateId, &OpResult::Ok], "applied"),
            (vec![&OpResult::Upserted, &OpResult::DuplicateId], "applied"),
            (vec![&refused, &OpResult::DuplicateId], "dead letter"),
            (vec![&refused, &OpResult::Ok], "applied"),
            (vec![], "stale"),
        ];
        for (results, expected) in cases {
            let found = match after_follow_ups(&results) {
                Outcome::Applied => "applied",
                Outcome::Stale => "stale",
                Outcome::Duplicate => "duplicate",
                Outcome::DeadLetter(_) => "dead letter",
            };
            assert_eq!(found, expected, "{results:?}");
        }
    }
}
