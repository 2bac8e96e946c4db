//! Reconcile: compares each source of truth with its copies, reports the drift, and with
//! `--repair` re-emits the drifted sources' current state through Kafka so the projectors' normal
//! path repairs the copies.
//!
//! - [`compare`]: what a copy should hold, derived from its source through the connector's
//!   mapping and the projectors' pure projection; how copies differ (pure, unit-tested).
//! - [`report`]: counts and samples per check and kind; text, JSON, Prometheus text.
//! - [`republish`]: re-emit chosen source documents (also what a dead-letter redrive calls).
//!
//! # Checks (four passes, each over one collection in batches)
//! 1. `customer.accounts` → `customer.orders`: each account's copy is there and equal
//!    (missing, mismatched).
//! 2. `customer.orders` → `customer.accounts`: a copy whose account is gone is marked deleted
//!    (extra otherwise).
//! 3. `customer.orders` → `fulfillment.requests`: every order ever approved has its request
//!    (missing), and the request's published status is in the order's history (missing).
//! 4. `fulfillment.requests` against the approved orders' guids, both sorted by guid and merged:
//!    every request belongs to an order that was approved (extra otherwise).
//!
//! # Guarantees
//! - **Bounded memory, linear cost.** Passes 1 to 3 read one cursor in `reconcile.batch_size`
//!   batches (sorted by `_id`) and look up the other side of each batch by `_id` (`$in`); pass 4
//!   merges two cursors sorted by guid (the approved orders' guids unwound and sorted by the
//!   server, which may use disk). Nothing holds more than a batch and its lookups, whatever the
//!   collections' sizes, and no lookup needs an index besides `_id`.
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

    /// Pass 3: every order ever approved has its request, and the request's published status
    /// is in the order's history. Everything is looked up by `_id`: the requests by the order
    /// guids (their `_id`), the histories in the same `customer.orders` documents (or, with
    /// other target collections, by the customer's `_id`).
    async fn approved_orders(&mut self) -> Result<(), ReconcileError> {
        self.pass = "orders and requests";
        let orders = self.config.sources.orders.clone();
        let histories_ns = self.config.reconcile.targets.orders.clone();
        let requests_ns = self.config.reconcile.targets.fulfillment.clone();
        let fulfillment = self.config.sources.fulfillment.clone();
        let conversion = self.conversion(WatchedSource::Fulfillment);
        let mut cursor = self.cursor(&orders, None).await?;
        while let Some(batch) = self.batch(&orders, &mut cursor).await? {
            let mut read = batch.len();
            let mut approved: Vec<(Bson, String)> = Vec::new();
            let mut histories: HashMap<String, Vec<OrderStatusEvent>> = HashMap::new();
            let mut ids = Vec::new();
            for document in &batch {
                let Some(id) = raw_id(document) else { continue };
                let Ok(document) = Document::try_from(document.as_ref()) else {
                    self.report.source_defects += 1;
                    continue;
                };
                ids.push(id.clone());
                for order in compare::orders(&document) {
                    if compare::was_approved(&order) {
                        approved.push((id.clone(), order.guid.clone()));
                    }
                    histories.insert(order.guid, order.order_status_events);
                }
            }
            if histories_ns != orders {
                // The copies of the histories live elsewhere: the same customers, by `_id`.
                let copies = self
                    .lookup(&histories_ns, "_id", ids, Some(doc! { "orders": 1 }))
                    .await?;
                read += copies.len();
                histories = copies
                    .iter()
                    .flat_map(compare::orders)
                    .map(|order| (order.guid, order.order_status_events))
                    .collect();
            }
            let guids: Vec<Bson> = approved
                .iter()
                .map(|(_, guid)| Bson::String(guid.clone()))
                .collect();
            // The requests' statuses come from the Fulfillment application's documents: with the
            // default collections the very documents looked up, else the same `_id`s there.
            let sources = self
                .lookup(&fulfillment, "_id", guids.clone(), None)
                .await?;
            read += sources.len();
            let present: HashSet<String> = if requests_ns == fulfillment {
                sources
                    .iter()
                    .filter_map(|request| request.get_str("_id").ok().map(str::to_owned))
                    .collect()
            } else {
                let found = self
                    .lookup(&requests_ns, "_id", guids, Some(doc! { "_id": 1 }))
                    .await?;
                read += found.len();
                found
                    .iter()
                    .filter_map(|request| request.get_str("_id").ok().map(str::to_owned))
                    .collect()
            };
            let mut published: HashMap<String, (Bson, OrderStatusEvent)> = HashMap::new();
            for request in sources {
                let Some(id) = request.get("_id").cloned() else {
                    continue;
                };
                let Ok(raw) = RawDocumentBuf::from_document(&request) else {
                    continue;
                };
                let (events, defects) = compare::map_current(&self.mapper, &conversion, raw);
                match compare::expected_status(&events, &defects, &self.config.topics) {
                    Expected::Copy((guid, status)) => {
                        published.insert(guid, (id, status));
                    }
                    Expected::Nothing => {}
                    Expected::Defect(_) => self.report.source_defects += 1,
                }
            }
            for (id, guid) in approved {
                self.report.compared(Check::FulfillmentRequest);
                if !present.contains(&guid) {
                    self.report
                        .found(Check::FulfillmentRequest, Kind::Missing, &guid, Vec::new());
                    self.repair(WatchedSource::Orders, &id, Scope::ApprovalOf(guid.clone()));
                }
                let Some((request_id, status)) = published.remove(&guid) else {
                    continue;
                };
                self.report.compared(Check::OrderStatus);
                let held = histories
                    .get(&guid)
                    .is_some_and(|history| compare::holds_status(history, &status));
                if !held {
                    let fields = vec![format!(
                        "orderStatusEvents[{} {}]",
                        status.order_status_type.as_str(),
                        status.timestamp
                    )];
                    self.report
                        .found(Check::OrderStatus, Kind::Missing, &guid, fields);
                    self.repair(WatchedSource::Fulfillment, &request_id, Scope::Document);
                }
            }
            self.after_batch(read).await?;
        }
        Ok(())
    }

    /// Pass 4: every request belongs to an order that was approved. A merge of two streams
    /// sorted by guid, so neither side is looked up per batch (no index on `orders.guid` is
    /// needed) and memory stays one batch: the requests by `_id`, and the approved orders'
    /// guids, unwound and sorted by the server (`allowDiskUse`).
    async fn requests_without_approval(&mut self) -> Result<(), ReconcileError> {
        self.pass = "requests";
        let orders = self.config.sources.orders.clone();
        let requests = self.config.reconcile.targets.fulfillment.clone();
        let mut approved = ApprovedGuids {
            cursor: self
                .collection::<Document>(&orders)
                .aggregate([
                    doc! { "$unwind": "$orders" },
                    doc! { "$project": {
                        "_id": 0,
                        "guid": "$orders.guid",
                        "statuses": "$orders.orderStatusEvents",
                    } },
                    doc! { "$sort": { "guid": 1 } },
                ])
                .allow_disk_use(true)
                .batch_size(self.config.reconcile.batch_size)
                .await
                .map_err(|e| mongo(&orders, e))?,
            next: None,
            started: false,
            read: 0,
        };
        let mut cursor = self.cursor(&requests, Some(doc! { "_id": 1 })).await?;
        while let Some(batch) = self.batch(&requests, &mut cursor).await? {
            for request in &batch {
                let guid = match raw_id(request) {
                    Some(Bson::String(guid)) => guid,
                    Some(other) => other.to_string(),
                    None => continue,
                };
                if !approved
                    .contains(&guid)
                    .await
                    .map_err(|e| mongo(&orders, e))?
                {
                    self.report
                        .found(Check::FulfillmentRequest, Kind::Extra, &guid, Vec::new());
                    if self.options.repair {
                        self.report.not_repairable(&guid);
                    }
                }
            }
            let read = batch.len() + std::mem::take(&mut approved.read);
            self.after_batch(read).await?;
        }
        Ok(())
    }
}

/// The guids of approved orders, ascending (one server-side sorted cursor), asked in ascending
/// order: [`ApprovedGuids::contains`] moves forward only.
struct ApprovedGuids {
    cursor: Cursor<Document>,
    /// The smallest approved guid not yet passed.
    next: Option<String>,
    started: bool,
    /// Documents read since last asked.
    read: usize,
}

impl ApprovedGuids {
    /// Whether `guid` is an approved order's; `guid`s must come in ascending order.
    async fn contains(&mut self, guid: &str) -> Result<bool, mongodb::error::Error> {
        if !self.started {
            self.started = true;
            self.advance().await?;
        }
        while self.next.as_deref().is_some_and(|next| next < guid) {
            self.advance().await?;
        }
        Ok(self.next.as_deref() == Some(guid))
    }

    /// Moves to the next approved guid (orders never approved, or unreadable, are skipped).
    async fn advance(&mut self) -> Result<(), mongodb::error::Error> {
        self.next = None;
        while let Some(entry) = self.cursor.try_next().await? {
            self.read += 1;
            let Ok(guid) = entry.get_str("guid") else {
                continue;
            };
            let approved = entry.get_array("statuses").is_ok_and(|statuses| {
                statuses
                    .iter()
                    .filter_map(Bson::as_document)
                    .filter_map(|status| {
                        storefront_schemas::documents::from_document::<OrderStatusEvent>(status)
                            .ok()
                    })
                    .any(|status| {
                        status.order_status_type
                            == storefront_schemas::documents::OrderStatusType::Approved
                    })
            });
            if approved {
                self.next = Some(guid.to_owned());
                return Ok(());
            }
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
