//! The three applications' writes and waits against MongoDB.
//!
//! # Guarantees
//! - **Own collection only.** Accounts writes `customer.accounts`, Orders `customer.orders`,
//!   Fulfillment `fulfillment.requests`; the others are only read (the Orders application
//!   reading the customer copy it holds, the Fulfillment application its requests).
//! - **Never clobbers a projector.** The Orders application writes `customer.orders` only with
//!   `$push` (an order into `orders`; a status into one order, found by `orders.guid`, through
//!   the positional `$`), so the projector's customer copy and the statuses it appends are never
//!   overwritten. The Fulfillment application replaces only a request that exists, keeping every
//!   field it read, as a Spring `save` of the loaded entity does (the projector's bookkeeping
//!   `_cdc` is not part of that entity, so a `save` drops it, as the real service's would).
//! - **Checked.** A write that matches no document is an error, never a silent no-op; change
//!   events are produced by plain `insert`, `update` and `replace` commands (never
//!   `findAndModify`, which the test server keeps out of its change streams).
//! - **Bounded waits.** Waiting for a projection polls with a growing pause (10 ms to 250 ms)
//!   until the configured deadline, and stops at once when the run is cancelled.

use std::time::{Duration, Instant};

use mongodb::bson::{Bson, Document, doc};
use mongodb::{Client, Collection};
use storefront_schemas::topology::StorefrontNamespaces;
use tokio_util::sync::CancellationToken;

use crate::SimError;
use crate::compare::Comparison;
use crate::model::{FULFILLMENT_CLASS, Write, orders_id};
use crate::progress::Flow;

/// The applications' handles on their collections.
#[derive(Debug, Clone)]
pub struct Apps {
    accounts: Collection<Document>,
    orders: Collection<Document>,
    requests: Collection<Document>,
    namespaces: StorefrontNamespaces,
    wait: Duration,
}

impl Apps {
    /// The applications writing `namespaces` through `client`, waiting up to `wait` for
    /// projections.
    pub fn new(client: &Client, namespaces: &StorefrontNamespaces, wait: Duration) -> Self {
        let collection = |ns: &storefront_schemas::topology::Namespace| {
            client.database(&ns.database).collection(&ns.collection)
        };
        Self {
            accounts: collection(&namespaces.accounts),
            orders: collection(&namespaces.orders),
            requests: collection(&namespaces.fulfillment),
            namespaces: namespaces.clone(),
            wait,
        }
    }

    /// Which application makes `write`.
    pub fn flow(write: &Write) -> Flow {
        match write {
            Write::InsertAccount(_) | Write::ReplaceAccount(_) | Write::SetAccount { .. } => {
                Flow::Accounts
            }
            Write::PushOrder { .. } | Write::PushStatus { .. } => Flow::Orders,
            Write::AdvanceRequest { .. } => Flow::Fulfillment,
        }
    }

    /// Sends `write` to MongoDB.
    pub async fn write(&self, write: &Write) -> Result<(), SimError> {
        match write {
            Write::InsertAccount(document) => {
                self.accounts
                    .insert_one(document)
                    .await
                    .map_err(SimError::mongo(format!(
                        "insert into {}",
                        self.namespaces.accounts
                    )))?;
                Ok(())
            }
            Write::ReplaceAccount(document) => {
                let id = document.get("_id").cloned().unwrap_or(Bson::Null);
                let result = self
                    .accounts
                    .replace_one(doc! { "_id": id.clone() }, document)
                    .await
                    .map_err(SimError::mongo(format!(
                        "replace in {}",
                        self.namespaces.accounts
                    )))?;
                matched(result.matched_count, || format!("customer {id} to replace"))
            }
            Write::SetAccount { id, set } => {
                let result = self
                    .accounts
                    .update_one(doc! { "_id": id.clone() }, doc! { "$set": set.clone() })
                    .await
                    .map_err(SimError::mongo(format!(
                        "update of {}",
                        self.namespaces.accounts
                    )))?;
                matched(result.matched_count, || format!("customer {id} to update"))
            }
            Write::PushOrder { customer, order } => {
                let result = self
                    .orders
                    .update_one(
                        doc! { "_id": orders_id(customer) },
                        doc! { "$push": { "orders": order.clone() } },
                    )
                    .await
                    .map_err(SimError::mongo(format!(
                        "order push into {}",
                        self.namespaces.orders
                    )))?;
                matched(result.matched_count, || {
                    format!("the orders document of customer {customer}")
                })
            }
            Write::PushStatus {
                customer,
                guid,
                status,
            } => {
                let result = self
                    .orders
                    .update_one(
                        doc! { "_id": orders_id(customer), "orders.guid": guid },
                        doc! { "$push": { "orders.$.orderStatusEvents": status.clone() } },
                    )
                    .await
                    .map_err(SimError::mongo(format!(
                        "status push into {}",
                        self.namespaces.orders
                    )))?;
                matched(result.matched_count, || {
                    format!("order {guid} of customer {customer}")
                })
            }
            Write::AdvanceRequest {
                guid,
                status,
                shipping_method,
                replace: true,
            } => {
                let mut document = self.request(guid).await?.ok_or_else(|| {
                    SimError::Unexpected(format!("request {guid} vanished before its save"))
                })?;
                document.remove("_cdc");
                document.insert("_class", FULFILLMENT_CLASS);
                let order = match document.get_document_mut("order") {
                    Ok(order) => order,
                    Err(_) => {
                        return Err(SimError::Unexpected(format!(
                            "request {guid} has no order to advance"
                        )));
                    }
                };
                order.insert("orderStatusEvents", vec![Bson::Document(status.clone())]);
                if let Some(method) = shipping_method {
                    document.insert("shippingMethod", method.clone());
                }
                let result = self
                    .requests
                    .replace_one(doc! { "_id": guid }, document)
                    .await
                    .map_err(SimError::mongo(format!(
                        "replace in {}",
                        self.namespaces.fulfillment
                    )))?;
                matched(result.matched_count, || format!("request {guid} to save"))
            }
            Write::AdvanceRequest {
                guid,
                status,
                shipping_method,
                replace: false,
            } => {
                let mut set = doc! { "order.orderStatusEvents": [status.clone()] };
                if let Some(method) = shipping_method {
                    set.insert("shippingMethod", method.clone());
                }
                let result = self
                    .requests
                    .update_one(doc! { "_id": guid }, doc! { "$set": set })
                    .await
                    .map_err(SimError::mongo(format!(
                        "update of {}",
                        self.namespaces.fulfillment
                    )))?;
                matched(result.matched_count, || format!("request {guid} to update"))
            }
        }
    }

    async fn request(&self, guid: &str) -> Result<Option<Document>, SimError> {
        self.requests
            .find_one(doc! { "_id": guid })
            .await
            .map_err(SimError::mongo(format!(
                "read of {}",
                self.namespaces.fulfillment
            )))
    }

    /// Orders: waits until the customer copy in `customer.orders` is `copy` (its `name`,
    /// `contact` and `addresses`), so that an order approved now is requested with the
    /// customer's latest state.
    pub async fn wait_for_copy(
        &self,
        key: &str,
        copy: &Document,
        cancel: &CancellationToken,
    ) -> Result<(), SimError> {
        let id = orders_id(key);
        let what = format!("the copy of customer {key} in {}", self.namespaces.orders);
        let collection = self.namespaces.orders.to_string();
        poll(&what, self.wait, cancel, async || {
            let found = self
                .orders
                .find_one(doc! { "_id": id.clone() })
                .await
                .map_err(SimError::mongo(format!("read of {collection}")))?;
            let Some(found) = found else {
                return Ok(None);
            };
            let mut part = Document::new();
            for field in ["name", "contact", "addresses"] {
                if let Some(value) = found.get(field) {
                    part.insert(field, value.clone());
                }
            }
            let mut comparison = Comparison::new(&collection, &id, &[]);
            comparison.documents(copy, &part);
            Ok(comparison.differences.is_empty().then_some(()))
        })
        .await
    }

    /// Fulfillment: waits until the request of order `guid` exists.
    pub async fn wait_for_request(
        &self,
        guid: &str,
        cancel: &CancellationToken,
    ) -> Result<(), SimError> {
        let what = format!(
            "the request of order {guid} in {}",
            self.namespaces.fulfillment
        );
        poll(&what, self.wait, cancel, async || {
            Ok(self.request(guid).await?.map(drop))
        })
        .await
    }
}

fn matched(count: u64, what: impl FnOnce() -> String) -> Result<(), SimError> {
    if count == 1 {
        Ok(())
    } else {
        Err(SimError::Unexpected(format!("no {} matched", what())))
    }
}

/// Calls `probe` until it returns `Some`, pausing 10 ms, doubling up to 250 ms, between calls;
/// gives up after `wait`, or at once when `cancel` fires.
pub async fn poll<T>(
    what: &str,
    wait: Duration,
    cancel: &CancellationToken,
    mut probe: impl AsyncFnMut() -> Result<Option<T>, SimError>,
) -> Result<T, SimError> {
    let started = Instant::now();
    let mut pause = Duration::from_millis(10);
    loop {
        if let Some(value) = probe().await? {
            return Ok(value);
        }
        if started.elapsed() >= wait {
            return Err(SimError::Timeout {
                what: what.to_owned(),
                waited: wait,
            });
        }
        tokio::select! {
            () = cancel.cancelled() => return Err(SimError::Cancelled),
            () = tokio::time::sleep(pause.min(wait.saturating_sub(started.elapsed()))) => {}
        }
        pause = (pause * 2).min(Duration::from_millis(250));
    }
}
