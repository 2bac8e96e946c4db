//! Projections: events to guarded, idempotent write operations, one module per read model.
//!
//! - [`orders`]: customer copy and order status history in `customer.orders`.
//! - [`fulfillment`]: one request per approved order in `fulfillment.requests`.
//!
//! A projection is pure: it holds no MongoDB handle. [`Projection::plan`] turns a batch into a
//! [`Plan`] (collapsing it, building and serialising its writes) without I/O, so the runner plans
//! the next batch while the current one is written. An [`Execution`] then says, one [`Step`] at a
//! time, what to write or read next and what each result means; [`crate::executor`] performs
//! the steps through a [`Store`](crate::store::Store) and hands the results back. Both halves
//! are table-tested without a server here and in each module.
//!
//! ```text
//!  plan ──> Write(primaries + appends) ──> Write(follow-ups)? ──> [orders, statuses out of order:
//!           Read(orders) ──> Write(merged lists) ──> Read ...] ──> Done(one outcome per event)
//! ```
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
//! - **Every event accounted for.** An execution ends only when each event of the batch has an
//!   outcome; one left without is a [`ProjectionError::Invariant`], never a silent default.

pub mod fulfillment;
pub mod orders;

use std::borrow::Cow;

use mongodb::bson::{Bson, Document};
use serde::Serialize;

use crate::config::{Projector, ProjectorsConfig};
use crate::event::{Event, Poison};
use crate::store::{OpResult, Read, Statement, Unwritable, WriteOp, WriteReport};
use storefront_plumbing::errors;

/// Serialises a contract type to the BSON value it is stored as, through BSON's binary
/// serializer ([`mongodb::bson::to_raw_document_buf`]), which is not human-readable: a
/// [`Price`](storefront_schemas::documents::Price) becomes a Decimal128 with its exact digits,
/// everything else the same value [`mongodb::bson::to_bson`] gives. (`to_bson` serialises as a
/// human-readable format, where a price writes itself as a JSON number token: that would be
/// stored as a meaningless document.)
///
/// The contract types always serialise; a value that does not (an integer beyond BSON's range)
/// is an error, so its event is dead-lettered rather than stored as something else.
pub fn to_bson<T: Serialize + ?Sized>(value: &T) -> Result<Bson, Unwritable> {
    /// The one-field document the value is serialised in (the binary serializer writes
    /// documents only).
    #[derive(Serialize)]
    struct Field<'a, T: ?Sized> {
        value: &'a T,
    }
    let raw = mongodb::bson::to_raw_document_buf(&Field { value }).map_err(Unwritable::new)?;
    let value = raw
        .get("value")
        .map_err(Unwritable::new)?
        // The serializer wrote the field just above: a missing one is the serializer's bug.
        .ok_or_else(|| Unwritable::new(std::fmt::Error))?;
    Bson::try_from(value).map_err(Unwritable::new)
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

/// Why an execution could not settle its batch.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    /// A read-modify-write kept losing to concurrent writers. Retryable.
    #[error("order statuses of {0} kept changing under the projector")]
    Contention(String),
    /// A result did not fit what was asked, or an event was left without an outcome: a bug.
    /// Not retryable.
    #[error("projection invariant broken: {0}")]
    Invariant(String),
}

impl ProjectionError {
    /// Whether executing the batch again can succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Contention(_))
    }
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

    /// The execution of `plan` for `events`. A new one can start after a transient failure:
    /// every write is idempotent.
    pub fn execution<'a>(&'a self, events: &'a [&'a Event], plan: &'a Plan) -> Execution<'a> {
        Execution {
            projection: self,
            events,
            plan,
            outcomes: Outcomes::new(events.len(), &plan.settled),
            statuses: None,
            phase: Phase::Start,
        }
    }

    /// The guard fields a rebuild clears so that every replayed event applies again.
    pub fn guard_fields(&self) -> &'static [&'static str] {
        match self {
            Projection::Orders(_) => orders::GUARD_FIELDS,
            Projection::Fulfillment(_) => fulfillment::GUARD_FIELDS,
        }
    }

    /// What to try after `event`'s guarded upsert met a newer document.
    fn follow_ups(&self, event: &Event) -> Result<Vec<WriteOp>, Unwritable> {
        match self {
            Projection::Orders(_) => orders::follow_ups(event),
            Projection::Fulfillment(_) => fulfillment::follow_ups(event),
        }
    }
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
pub(crate) fn push_guarded(plan: &mut Plan, event: usize, op: Result<WriteOp, Unwritable>) {
    match op.and_then(|op| op.statement()) {
        Ok(primary) => plan.guarded.push(Guarded { event, primary }),
        Err(error) => plan.settled.push((event, unwritable(&error))),
    }
}

/// The dead-letter outcome of a write that cannot be serialised.
pub(crate) fn unwritable(error: &Unwritable) -> Outcome {
    Outcome::DeadLetter(Poison::rejected(format!(
        "the write {}",
        errors::chain(error)
    )))
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
pub fn after_follow_ups(results: &[OpResult]) -> Outcome {
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

/// What an [`Execution`] needs next.
#[derive(Debug, Clone, PartialEq)]
pub enum Step<'a> {
    /// Run these statements (unordered; split over commands as the store needs) and hand the
    /// report to [`Execution::written`].
    Write(Vec<Cow<'a, Statement>>),
    /// Run this read and hand the documents to [`Execution::read`].
    Read(Read),
    /// Every event is settled: one outcome per event of the batch, in order.
    Done(Vec<Outcome>),
}

/// One outcome slot per event of the batch, filled as results come in.
#[derive(Debug)]
pub(crate) struct Outcomes(Vec<Option<Outcome>>);

impl Outcomes {
    fn new(events: usize, settled: &[(usize, Outcome)]) -> Self {
        let mut slots = vec![None; events];
        for (index, outcome) in settled {
            slots[*index] = Some(outcome.clone());
        }
        Self(slots)
    }

    pub(crate) fn set(&mut self, index: usize, outcome: Outcome) {
        self.0[index] = Some(outcome);
    }

    /// Every outcome; an event without one is a bug reported, not counted as anything.
    fn take(&mut self) -> Result<Vec<Outcome>, ProjectionError> {
        std::mem::take(&mut self.0)
            .into_iter()
            .enumerate()
            .map(|(index, outcome)| {
                outcome.ok_or_else(|| {
                    ProjectionError::Invariant(format!("event {index} of the batch has no outcome"))
                })
            })
            .collect()
    }
}

fn no_merge() -> ProjectionError {
    ProjectionError::Invariant("no status merge under way".into())
}

/// Where an execution is.
#[derive(Debug)]
enum Phase {
    /// Nothing asked yet.
    Start,
    /// The primaries and the appends are being written.
    First,
    /// The follow-ups of these guarded events (batch index, statement count) are being written.
    FollowUps(Vec<(usize, usize)>),
    /// The status merge's reads and writes are under way (orders).
    Statuses,
    /// Done was returned.
    Done,
}

/// A plan being carried out: pure, it asks for IO with [`Step`]s and reads their results.
///
/// The first step writes every guarded upsert and status append in one command. Upserts that met
/// a newer document get their follow-ups in a second one; the orders projection's statuses that
/// could not simply be appended go through the orders module's status merge (read the orders, write the
/// merged lists, again while they change underneath).
#[derive(Debug)]
pub struct Execution<'a> {
    projection: &'a Projection,
    events: &'a [&'a Event],
    plan: &'a Plan,
    outcomes: Outcomes,
    statuses: Option<orders::Statuses<'a>>,
    phase: Phase,
}

impl<'a> Execution<'a> {
    /// The first step.
    pub fn start(&mut self) -> Result<Step<'a>, ProjectionError> {
        if !matches!(self.phase, Phase::Start) {
            return Err(self.unexpected("start"));
        }
        let plan = self.plan;
        let statements: Vec<Cow<'a, Statement>> = plan
            .guarded
            .iter()
            .map(|g| Cow::Borrowed(&g.primary))
            .chain(plan.appends.iter().map(|(_, s)| Cow::Borrowed(s)))
            .collect();
        if statements.is_empty() {
            return self.finish();
        }
        self.phase = Phase::First;
        Ok(Step::Write(statements))
    }

    /// The next step after the last [`Step::Write`]'s `report`.
    pub fn written(&mut self, report: &WriteReport) -> Result<Step<'a>, ProjectionError> {
        match std::mem::replace(&mut self.phase, Phase::Done) {
            Phase::First => self.after_first(report),
            Phase::FollowUps(pending) => {
                let expected: usize = pending.iter().map(|(_, count)| count).sum();
                self.expect_results(report, expected)?;
                let mut results = report.results.iter();
                for (index, count) in pending {
                    let mine: Vec<OpResult> = results.by_ref().take(count).cloned().collect();
                    self.outcomes.set(index, after_follow_ups(&mine));
                }
                self.statuses_step()
            }
            Phase::Statuses => {
                let statuses = self.statuses.as_mut().ok_or_else(no_merge)?;
                let read = statuses.written(report, &mut self.outcomes)?;
                self.continue_statuses(read.map(Step::Read))
            }
            phase => {
                self.phase = phase;
                Err(self.unexpected("a write's report"))
            }
        }
    }

    /// The next step after the last [`Step::Read`] found `documents`.
    pub fn read(&mut self, documents: &[Document]) -> Result<Step<'a>, ProjectionError> {
        if !matches!(self.phase, Phase::Statuses) {
            return Err(self.unexpected("a read's documents"));
        }
        let statuses = self.statuses.as_mut().ok_or_else(no_merge)?;
        let writes = statuses.read(documents, &mut self.outcomes)?;
        self.continue_statuses(writes.map(|w| Step::Write(w.into_iter().map(Cow::Owned).collect())))
    }

    fn after_first(&mut self, report: &WriteReport) -> Result<Step<'a>, ProjectionError> {
        let plan = self.plan;
        let guarded = plan.guarded.len();
        self.expect_results(report, guarded + plan.appends.len())?;
        let primaries: Vec<&Statement> = plan.guarded.iter().map(|g| &g.primary).collect();
        let upserts = report.successful_upserts(&primaries);
        // The reply counts matched documents in total only: what the upserts do not account
        // for, the appends matched (one each).
        let appended = report.matched.saturating_sub(upserts);
        let mut pending = Vec::new();
        let mut follow_ups = Vec::new();
        for (g, result) in plan.guarded.iter().zip(&report.results) {
            if let Some(outcome) = after_primary(result) {
                self.outcomes.set(g.event, outcome);
                continue;
            }
            let statements: Result<Vec<Statement>, Unwritable> = self
                .projection
                .follow_ups(self.events[g.event])
                .and_then(|ops| ops.iter().map(WriteOp::statement).collect());
            match statements {
                Ok(statements) => {
                    pending.push((g.event, statements.len()));
                    follow_ups.extend(statements.into_iter().map(Cow::Owned));
                }
                Err(error) => self.outcomes.set(g.event, unwritable(&error)),
            }
        }
        if !plan.appends.is_empty() {
            let Projection::Orders(projection) = self.projection else {
                return Err(ProjectionError::Invariant(
                    "status appends planned outside the orders projection".into(),
                ));
            };
            self.statuses = Some(orders::Statuses::after_appends(
                projection.target(),
                self.events,
                &plan.appends,
                &report.results[guarded..],
                appended,
                &mut self.outcomes,
            ));
        }
        if follow_ups.is_empty() {
            return self.statuses_step();
        }
        self.phase = Phase::FollowUps(pending);
        Ok(Step::Write(follow_ups))
    }

    /// The status merge's first step, or done.
    fn statuses_step(&mut self) -> Result<Step<'a>, ProjectionError> {
        let read = match self.statuses.as_mut() {
            Some(statuses) => statuses.start(&mut self.outcomes),
            None => None,
        };
        self.continue_statuses(read.map(Step::Read))
    }

    fn continue_statuses(&mut self, step: Option<Step<'a>>) -> Result<Step<'a>, ProjectionError> {
        match step {
            Some(step) => {
                self.phase = Phase::Statuses;
                Ok(step)
            }
            None => self.finish(),
        }
    }

    fn finish(&mut self) -> Result<Step<'a>, ProjectionError> {
        self.phase = Phase::Done;
        Ok(Step::Done(self.outcomes.take()?))
    }

    fn unexpected(&self, what: &str) -> ProjectionError {
        ProjectionError::Invariant(format!(
            "{what} handed to an execution in phase {:?}",
            self.phase
        ))
    }

    fn expect_results(&self, report: &WriteReport, expected: usize) -> Result<(), ProjectionError> {
        if report.results.len() == expected {
            Ok(())
        } else {
            Err(ProjectionError::Invariant(format!(
                "{} results for {expected} statements",
                report.results.len()
            )))
        }
    }
}
/// Drives an [`Execution`] through scripted IO, for the projections' table tests.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// One expected step and the result handed back for it.
    #[derive(Debug)]
    pub enum Io {
        /// These statements, exactly; then this report.
        Write(Vec<Statement>, WriteReport),
        /// This read, exactly; then these documents.
        Read(Read, Vec<Document>),
    }

    /// A report: per-statement results and the total matched.
    pub fn report(results: Vec<OpResult>, matched: u64) -> WriteReport {
        WriteReport { results, matched }
    }

    /// `op` serialised.
    pub fn statement(op: Result<WriteOp, Unwritable>) -> Statement {
        op.unwrap().statement().unwrap()
    }

    /// Plans `events` with `projection` and executes the plan against `io`: the outcomes, or
    /// the error's chain. Panics (naming `what`) when a step differs from the script.
    pub fn drive(
        what: &str,
        projection: &Projection,
        events: &[Event],
        io: Vec<Io>,
    ) -> Result<Vec<Outcome>, String> {
        let refs: Vec<&Event> = events.iter().collect();
        let plan = projection.plan(&refs);
        let mut execution = projection.execution(&refs, &plan);
        let mut io = io.into_iter();
        let mut step = execution.start();
        loop {
            let next = match step.map_err(|e| errors::chain(&e))? {
                Step::Done(outcomes) => {
                    let left: Vec<Io> = io.collect();
                    assert!(left.is_empty(), "{what}: done with steps left: {left:?}");
                    return Ok(outcomes);
                }
                Step::Write(statements) => {
                    let Some(Io::Write(expected, reply)) = io.next() else {
                        panic!("{what}: unexpected write {statements:?}");
                    };
                    let statements: Vec<Statement> =
                        statements.into_iter().map(Cow::into_owned).collect();
                    assert_eq!(statements, expected, "{what}: the writes");
                    execution.written(&reply)
                }
                Step::Read(read) => {
                    let Some(Io::Read(expected, documents)) = io.next() else {
                        panic!("{what}: unexpected read {read:?}");
                    };
                    assert_eq!(read, expected, "{what}: the read");
                    execution.read(&documents)
                }
            };
            step = next;
        }
    }
}

#[cfg(test)]
mod tests {
    use mongodb::bson::doc;
    use storefront_schemas::documents::Price;
    use storefront_schemas::fixtures::sample;

    use super::*;

    #[test]
    fn values_are_stored_as_bson_with_prices_exact() {
        let item = sample::order_item(Price::parse("3.99").unwrap(), 2);
        assert_eq!(
            to_bson(&vec![item]).unwrap(),
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
        let status = sample::status(5, "SHIPPED", None);
        assert_eq!(
            to_bson(&status).unwrap(),
            mongodb::bson::to_bson(&status).unwrap()
        );
        assert_eq!(
            to_bson(&status).unwrap(),
            Bson::Document(doc! { "timestamp": 5_i64, "orderStatusType": "SHIPPED" })
        );
        assert_eq!(to_bson("text").unwrap(), Bson::String("text".into()));
    }

    #[test]
    fn a_value_bson_cannot_hold_is_an_error_not_null() {
        // Was stored as Null before. No contract type holds one; the error dead-letters the
        // event (see `plan_and_execute`).
        let error = to_bson(&u64::MAX).unwrap_err();
        assert!(
            errors::chain(&error).starts_with("cannot be serialised as BSON: "),
            "{}",
            errors::chain(&error)
        );
        assert_eq!(to_bson(&7_u64).unwrap(), Bson::Int64(7));
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
        let cases: Vec<(Vec<OpResult>, &str)> = vec![
            (vec![OpResult::DuplicateId, OpResult::DuplicateId], "stale"),
            (vec![OpResult::DuplicateId, OpResult::Ok], "applied"),
            (vec![OpResult::Upserted, OpResult::DuplicateId], "applied"),
            (vec![refused.clone(), OpResult::DuplicateId], "dead letter"),
            (vec![refused.clone(), OpResult::Ok], "applied"),
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
