//! Reconcile: compares each source of truth with its copies, reports the drift, and with
//! `--repair` re-emits the drifted sources' current state through Kafka so the projectors' normal
//! path repairs the copies.
//!
//! - [`compare`]: what a copy should hold, derived from its source through the connector's
//!   mapping and the projectors' pure projection; how copies differ (pure, unit-tested).
//! - [`report`]: counts and samples per check and kind; text, JSON, Prometheus text.
//! - [`republish`]: re-emit chosen source documents (also what a dead-letter redrive calls).
//!
//! # Checks (five passes, each over one collection in batches)
//! 1. `customer.accounts` → `customer.orders`: each account's copy is there and equal
//!    (missing, mismatched).
//! 2. `customer.orders` → `customer.accounts`: a copy whose account is gone is marked deleted
//!    (extra otherwise).
//! 3. `customer.orders` → `fulfillment.requests`: every order ever approved has its request
//!    (missing).
//! 4. `fulfillment.requests` → `customer.orders`: every request belongs to an order that was
//!    approved (extra otherwise).
//! 5. `fulfillment.requests` → `customer.orders`: each request's published status is in its
//!    order's history (missing).
//!
//! # Guarantees
//! - **Bounded memory.** Each pass reads one cursor in `reconcile.batch_size` batches (sorted by
//!   `_id`) and looks up the other side of each batch by `$in`; nothing holds more than a batch
//!   and its lookups, whatever the collections' sizes. Passes 4 and 5 look orders up by
//!   `orders.guid`, which wants an index there on a large collection.
//! - **Throttled.** Documents read (both sides) are paced to
//!   `reconcile.max_documents_per_second`.
//! - **Repairs only the drifted keys, safely while the pipeline runs**: after each batch, the
//!   sources of its drifted keys are re-emitted at a fresh position ([`republish`]), so a change
//!   made since wins and the repair beats the stale copy. Extra requests are not deleted: a
//!   request belongs to the Fulfillment application once created; they are reported as not
//!   repairable.
//! - **No sensitive value is shown**: samples are keys and field names.

pub mod compare;
pub mod report;
pub mod republish;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use mongodb::bson::{Bson, Document, RawDocumentBuf, doc};
use mongodb::{Client, Collection, Cursor};
use storefront_schemas::documents::{CustomerId, OrderStatusEvent};
use storefront_schemas::topology::Namespace;

use crate::config::{ConnectorConfig, WatchedSource};
use crate::mapping::StorefrontMapper;
use crate::source::Conversion;
use compare::Expected;
pub use report::{Check, Kind, Report};
use republish::{RepublishError, RepublishTarget, Republisher, Scope};

/// How a run goes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// Re-emit the drifted keys' sources.
    pub repair: bool,
    /// Print progress lines to stderr.
    pub progress: bool,
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// MongoDB could not be reached.
    #[error(transparent)]
    Connect(#[from] storefront_plumbing::mongo::MongoConnectError),
    /// A read failed.
    #[error("reading {what} failed")]
    Mongo {
        /// What was read.
        what: String,
        /// The driver's error.
        #[source]
        source: mongodb::error::Error,
    },
    /// A repair failed.
    #[error("repair failed")]
    Repair(#[from] RepublishError),
}

/// Compares every source with its copies (and repairs, with `options.repair`).
pub async fn run(config: &ConnectorConfig, options: &Options) -> Result<Report, ReconcileError> {
    let client = storefront_plumbing::mongo::client(&config.mongo, crate::APP_NAME).await?;
    let republisher = if options.repair {
        Some(Republisher::connect(config).await?)
    } else {
        None
    };
    let mut run = Run {
        mapper: StorefrontMapper::new(config.sources.clone(), config.topics.clone()),
        report: Report::new(config.reconcile.samples),
        pacer: Pacer::new(config.reconcile.max_documents_per_second),
        pending: Vec::new(),
        client,
        config,
        options: options.clone(),
        republisher,
        started: Instant::now(),
        last_progress: Instant::now(),
        pass: "",
        pass_started: (Instant::now(), 0),
    };
    if options.repair {
        run.report.repair = Some(report::RepairSummary::default());
    }
    run.customer_copies().await?;
    run.pass_done();
    run.copies_without_account().await?;
    run.pass_done();
    run.approved_orders().await?;
    run.pass_done();
    run.requests_without_approval().await?;
    run.pass_done();
    run.published_statuses().await?;
    run.pass_done();
    run.report.seconds = run.started.elapsed().as_secs_f64();
    run.report.documents_read = run.pacer.read;
    Ok(run.report)
}

struct Run<'a> {
    config: &'a ConnectorConfig,
    options: Options,
    client: Client,
    mapper: StorefrontMapper,
    report: Report,
    pacer: Pacer,
    /// Repairs of the current batch.
    pending: Vec<RepublishTarget>,
    republisher: Option<Republisher>,
    started: Instant,
    last_progress: Instant,
    pass: &'static str,
    /// When the current pass started, and the documents read before it.
    pass_started: (Instant, u64),
}

impl Run<'_> {
    /// Records the pass just finished.
    fn pass_done(&mut self) {
        let (started, read_before) = self.pass_started;
        self.report.passes.push(report::Pass {
            name: self.pass,
            documents: self.pacer.read - read_before,
            seconds: started.elapsed().as_secs_f64(),
        });
        self.pass_started = (Instant::now(), self.pacer.read);
    }
    fn collection<T: Send + Sync>(&self, namespace: &Namespace) -> Collection<T> {
        self.client
            .database(&namespace.database)
            .collection(&namespace.collection)
    }

    fn conversion(&self, source: WatchedSource) -> Conversion {
        Conversion {
            namespace: source.namespace(&self.config.sources).clone(),
            redaction: source.redaction(&self.config.sensitive),
        }
    }

    async fn cursor(
        &self,
        namespace: &Namespace,
        projection: Option<Document>,
    ) -> Result<Cursor<RawDocumentBuf>, ReconcileError> {
        self.collection::<RawDocumentBuf>(namespace)
            .find(doc! {})
            .sort(doc! { "_id": 1 })
            .batch_size(self.config.reconcile.batch_size)
            .projection(projection.unwrap_or_default())
            .await
            .map_err(|source| mongo(namespace, source))
    }

    /// The next batch of `cursor`, or `None` at its end.
    async fn batch(
        &mut self,
        namespace: &Namespace,
        cursor: &mut Cursor<RawDocumentBuf>,
    ) -> Result<Option<Vec<RawDocumentBuf>>, ReconcileError> {
        let mut batch = Vec::new();
        while batch.len() < self.config.reconcile.batch_size as usize {
            match cursor.try_next().await.map_err(|e| mongo(namespace, e))? {
                Some(document) => batch.push(document),
                None => break,
            }
        }
        Ok((!batch.is_empty()).then_some(batch))
    }

    /// The documents of `namespace` whose `field` is in `values`.
    async fn lookup(
        &mut self,
        namespace: &Namespace,
        field: &str,
        values: Vec<Bson>,
        projection: Option<Document>,
    ) -> Result<Vec<Document>, ReconcileError> {
        if values.is_empty() {
            return Ok(Vec::new());
        }
        let found: Vec<Document> = self
            .collection::<Document>(namespace)
            .find(doc! { field: { "$in": values } })
            .projection(projection.unwrap_or_default())
            .await
            .map_err(|e| mongo(namespace, e))?
            .try_collect()
            .await
            .map_err(|e| mongo(namespace, e))?;
        Ok(found)
    }

    /// Paces and reports after a batch of `read` documents; repairs the batch's drift.
    async fn after_batch(&mut self, read: usize) -> Result<(), ReconcileError> {
        if let Some(republisher) = self.republisher.as_mut()
            && !self.pending.is_empty()
        {
            let targets = std::mem::take(&mut self.pending);
            let done = republisher.republish(&targets).await?;
            let repair = self.report.repair.get_or_insert_with(Default::default);
            repair.documents += targets.len() as u64;
            repair.events += done.events.len() as u64;
        }
        self.pending.clear();
        self.pacer.pace(read as u64).await;
        if self.options.progress && self.last_progress.elapsed() >= Duration::from_secs(5) {
            self.last_progress = Instant::now();
            let seconds = self.started.elapsed().as_secs_f64();
            eprintln!(
                "reconcile: {}: {} documents read in {:.0} s ({:.0} documents/s), {} drifted keys so far",
                self.pass,
                self.pacer.read,
                seconds,
                self.pacer.read as f64 / seconds.max(0.001),
                self.report.total()
            );
        }
        Ok(())
    }

    fn repair(&mut self, source: WatchedSource, id: &Bson, scope: Scope) {
        if self.options.repair {
            self.pending.push(RepublishTarget {
                source,
                id: id.clone(),
                scope,
            });
        }
    }

    /// Pass 1: each account's copy is there and equal.
    async fn customer_copies(&mut self) -> Result<(), ReconcileError> {
        self.pass = "customer copies";
        let accounts = self.config.sources.accounts.clone();
        let copies = self.config.reconcile.targets.orders.clone();
        let conversion = self.conversion(WatchedSource::Accounts);
        let mut cursor = self.cursor(&accounts, None).await?;
        while let Some(batch) = self.batch(&accounts, &mut cursor).await? {
            let ids: Vec<Bson> = batch.iter().filter_map(raw_id).collect();
            let found = self
                .lookup(
                    &copies,
                    "_id",
                    ids,
                    Some(
                        doc! { "name": 1, "contact": 1, "addresses": 1, compare::DELETED_MARK: 1 },
                    ),
                )
                .await?;
            let read = batch.len() + found.len();
            let mut by_id: HashMap<String, Document> = found
                .into_iter()
                .filter_map(|copy| Some((copy.get("_id")?.to_string(), copy)))
                .collect();
            for account in batch {
                let Some(id) = raw_id(&account) else {
                    self.report.source_defects += 1;
                    continue;
                };
                let (events, defects) = compare::map_current(&self.mapper, &conversion, account);
                let expected = compare::expected_copy(&events, &defects, &self.config.topics);
                let Expected::Copy(expected) = expected else {
                    self.report.source_defects += 1;
                    continue;
                };
                self.report.compared(Check::CustomerCopy);
                let key = customer_key(&id);
                match by_id.remove(&id.to_string()) {
                    None => {
                        self.report
                            .found(Check::CustomerCopy, Kind::Missing, &key, Vec::new());
                        self.repair(WatchedSource::Accounts, &id, Scope::Document);
                    }
                    Some(copy) => {
                        let fields = compare::copy_differences(&expected, &copy);
                        if !fields.is_empty() {
                            self.report
                                .found(Check::CustomerCopy, Kind::Mismatched, &key, fields);
                            self.repair(WatchedSource::Accounts, &id, Scope::Document);
                        }
                    }
                }
            }
            self.after_batch(read).await?;
        }
        Ok(())
    }

    /// Pass 2: a copy whose account is gone is marked deleted.
    async fn copies_without_account(&mut self) -> Result<(), ReconcileError> {
        self.pass = "copies without account";
        let accounts = self.config.sources.accounts.clone();
        let copies = self.config.reconcile.targets.orders.clone();
        let mut cursor = self
            .cursor(&copies, Some(doc! { compare::DELETED_MARK: 1 }))
            .await?;
        while let Some(batch) = self.batch(&copies, &mut cursor).await? {
            let ids: Vec<Bson> = batch.iter().filter_map(raw_id).collect();
            let found = self
                .lookup(&accounts, "_id", ids, Some(doc! { "_id": 1 }))
                .await?;
            let read = batch.len() + found.len();
            let present: HashSet<String> = found
                .iter()
                .filter_map(|account| Some(account.get("_id")?.to_string()))
                .collect();
            for copy in batch {
                let Some(id) = raw_id(&copy) else { continue };
                if present.contains(&id.to_string()) {
                    continue;
                }
                let copy = Document::try_from(copy.as_ref()).unwrap_or_default();
                if !compare::is_marked_deleted(&copy) {
                    self.report.found(
                        Check::CustomerCopy,
                        Kind::Extra,
                        &customer_key(&id),
                        Vec::new(),
                    );
                    // The account is gone: republishing it publishes its tombstone.
                    self.repair(WatchedSource::Accounts, &id, Scope::Document);
                }
            }
            self.after_batch(read).await?;
        }
        Ok(())
    }

    /// Pass 3: every order ever approved has its request.
    async fn approved_orders(&mut self) -> Result<(), ReconcileError> {
        self.pass = "approved orders";
        let orders = self.config.sources.orders.clone();
        let requests = self.config.reconcile.targets.fulfillment.clone();
        let mut cursor = self.cursor(&orders, None).await?;
        while let Some(batch) = self.batch(&orders, &mut cursor).await? {
            let mut approved: Vec<(Bson, String)> = Vec::new();
            for document in &batch {
                let Some(id) = raw_id(document) else { continue };
                let Ok(document) = Document::try_from(document.as_ref()) else {
                    self.report.source_defects += 1;
                    continue;
                };
                for order in compare::orders(&document) {
                    if compare::was_approved(&order) {
                        approved.push((id.clone(), order.guid));
                    }
                }
            }
            let guids: Vec<Bson> = approved
                .iter()
                .map(|(_, guid)| Bson::String(guid.clone()))
                .collect();
            let found = self
                .lookup(&requests, "_id", guids, Some(doc! { "_id": 1 }))
                .await?;
            let read = batch.len() + found.len();
            let present: HashSet<String> = found
                .iter()
                .filter_map(|request| request.get_str("_id").ok().map(str::to_owned))
                .collect();
            for (id, guid) in approved {
                self.report.compared(Check::FulfillmentRequest);
                if !present.contains(&guid) {
                    self.report
                        .found(Check::FulfillmentRequest, Kind::Missing, &guid, Vec::new());
                    self.repair(WatchedSource::Orders, &id, Scope::ApprovalOf(guid));
                }
            }
            self.after_batch(read).await?;
        }
        Ok(())
    }

    /// The orders with these guids, from `namespace`: guid → (approved, statuses).
    async fn orders_by_guid(
        &mut self,
        namespace: &Namespace,
        guids: Vec<String>,
    ) -> Result<(usize, HashMap<String, (bool, Vec<OrderStatusEvent>)>), ReconcileError> {
        let wanted: HashSet<String> = guids.iter().cloned().collect();
        let values = guids.into_iter().map(Bson::String).collect();
        let found = self
            .lookup(namespace, "orders.guid", values, Some(doc! { "orders": 1 }))
            .await?;
        let read = found.len();
        let mut orders = HashMap::new();
        for document in found {
            for order in compare::orders(&document) {
                if wanted.contains(&order.guid) {
                    let approved = compare::was_approved(&order);
                    orders.insert(order.guid, (approved, order.order_status_events));
                }
            }
        }
        Ok((read, orders))
    }

    /// Pass 4: every request belongs to an order that was approved.
    async fn requests_without_approval(&mut self) -> Result<(), ReconcileError> {
        self.pass = "requests";
        let orders = self.config.sources.orders.clone();
        let requests = self.config.reconcile.targets.fulfillment.clone();
        let mut cursor = self.cursor(&requests, Some(doc! { "_id": 1 })).await?;
        while let Some(batch) = self.batch(&requests, &mut cursor).await? {
            let guids: Vec<String> = batch
                .iter()
                .filter_map(|request| request.get_str("_id").ok().map(str::to_owned))
                .collect();
            let (found, by_guid) = self.orders_by_guid(&orders, guids.clone()).await?;
            for guid in guids {
                let approved = by_guid.get(&guid).is_some_and(|(approved, _)| *approved);
                if !approved {
                    self.report
                        .found(Check::FulfillmentRequest, Kind::Extra, &guid, Vec::new());
                    if self.options.repair {
                        self.report.not_repairable(&guid);
                    }
                }
            }
            self.after_batch(batch.len() + found).await?;
        }
        Ok(())
    }

    /// Pass 5: each request's published status is in its order's history.
    async fn published_statuses(&mut self) -> Result<(), ReconcileError> {
        self.pass = "fulfillment statuses";
        let fulfillment = self.config.sources.fulfillment.clone();
        let histories = self.config.reconcile.targets.orders.clone();
        let conversion = self.conversion(WatchedSource::Fulfillment);
        let mut cursor = self.cursor(&fulfillment, None).await?;
        while let Some(batch) = self.batch(&fulfillment, &mut cursor).await? {
            let read = batch.len();
            let mut expected: Vec<(Bson, String, OrderStatusEvent)> = Vec::new();
            for request in batch {
                let Some(id) = raw_id(&request) else { continue };
                let (events, defects) = compare::map_current(&self.mapper, &conversion, request);
                match compare::expected_status(&events, &defects, &self.config.topics) {
                    Expected::Copy((guid, status)) => expected.push((id, guid, status)),
                    Expected::Nothing => {}
                    Expected::Defect(_) => self.report.source_defects += 1,
                }
            }
            let guids = expected.iter().map(|(_, guid, _)| guid.clone()).collect();
            let (found, by_guid) = self.orders_by_guid(&histories, guids).await?;
            for (id, guid, status) in expected {
                self.report.compared(Check::OrderStatus);
                let held = by_guid
                    .get(&guid)
                    .is_some_and(|(_, history)| compare::holds_status(history, &status));
                if !held {
                    let fields = vec![format!(
                        "orderStatusEvents[{} {}]",
                        status.order_status_type.as_str(),
                        status.timestamp
                    )];
                    self.report
                        .found(Check::OrderStatus, Kind::Missing, &guid, fields);
                    self.repair(WatchedSource::Fulfillment, &id, Scope::Document);
                }
            }
            self.after_batch(read + found).await?;
        }
        Ok(())
    }
}

fn mongo(namespace: &Namespace, source: mongodb::error::Error) -> ReconcileError {
    ReconcileError::Mongo {
        what: namespace.to_string(),
        source,
    }
}

fn raw_id(document: &RawDocumentBuf) -> Option<Bson> {
    document
        .get("_id")
        .ok()
        .flatten()
        .and_then(|id| Bson::try_from(id.to_raw_bson()).ok())
}

/// A customer's record key (the ObjectId's hex, or the string), as events carry it.
fn customer_key(id: &Bson) -> String {
    CustomerId::from_bson(id).map_or_else(|_| id.to_string(), |id| id.key())
}

/// Paces reads to a rate (documents per second; 0: no limit).
#[derive(Debug)]
struct Pacer {
    rate: u64,
    started: tokio::time::Instant,
    read: u64,
}

impl Pacer {
    fn new(rate: u64) -> Self {
        Self {
            rate,
            started: tokio::time::Instant::now(),
            read: 0,
        }
    }

    /// Counts `read` documents and waits until the rate allows the next ones.
    async fn pace(&mut self, read: u64) {
        self.read += read;
        let wait = pause(self.read, self.rate, self.started.elapsed());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// How long to wait after `read` documents in `elapsed` to hold `rate` per second (0: none).
fn pause(read: u64, rate: u64, elapsed: Duration) -> Duration {
    if rate == 0 {
        return Duration::ZERO;
    }
    Duration::from_secs_f64(read as f64 / rate as f64).saturating_sub(elapsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_held_to_the_rate() {
        // 5,000 documents at 1,000/s take five seconds: after one, four more.
        assert_eq!(
            pause(5_000, 1_000, Duration::from_secs(1)),
            Duration::from_secs(4)
        );
        assert_eq!(pause(5_000, 1_000, Duration::from_secs(6)), Duration::ZERO);
        assert_eq!(pause(1_000_000, 0, Duration::ZERO), Duration::ZERO);
    }
}
