//! The model: what each application wrote, and the final state of every collection that
//! follows from it.
//!
//! The three applications' writes are [`Write`]s. The runner applies a write to the [`Model`]
//! only after MongoDB acknowledged it, so at any moment the model holds exactly the writes that
//! happened. [`Model::expected`] derives the final state of the three collections from them by
//! the rules of `docs/domain.md`, written here independently of the connector and projector
//! code so that a bug there shows up as a difference:
//!
//! - **`customer.accounts`**: each customer as the Accounts application left it (inserts,
//!   whole-document replaces, `$set` of dotted paths), cards and `_class` included.
//! - **`customer.orders`**: one document per customer (the projector creates it from the
//!   customer's first event), `_id` the customer id by Spring's rule (24 hex digits are an
//!   ObjectId); `name`, `contact`, `addresses` the *last* customer state as the connector
//!   publishes it (optional fields that are `null` or absent left out); `orders` as the Orders
//!   application pushed them, each order's history being the Orders application's statuses as
//!   stored, plus every status the Fulfillment application set, as the orders projector adds
//!   it (`timestamp` int64, `orderStatusType`, `note` when not null), inserted after the last
//!   status whose timestamp is not later. Never `creditCards`, never `customerDeleted` (the
//!   simulator deletes no customer).
//! - **`fulfillment.requests`**: one document per order whose current status became APPROVED
//!   (greatest timestamp; ties: the later in the list), `_id` the order guid, created by the
//!   fulfillment projector from the request the connector published at that moment: `timestamp`
//!   the APPROVED status's, `name`, `contact`, the first SHIPPING `address` of the customer copy
//!   at approval, `order` with the history at approval and the items (prices exact, quantities
//!   integers). Then the Fulfillment application's changes: the one-element status list,
//!   `shippingMethod` from SHIPPED on, `_class` once it saved the whole document.
//!
//! The derived state ([`ExpectedState`]) is plain data, serialised as JSON with every BSON value
//! in canonical extended JSON (types kept), so a separate `verify` run reads it back exactly.

use std::collections::BTreeMap;

use mongodb::bson::{Bson, Decimal128, Document, doc};
use serde::{Deserialize, Serialize};
use storefront_schemas::documents::CustomerId;
use storefront_schemas::topology::StorefrontNamespaces;

use crate::SimError;
use crate::compare::number;

/// Statuses the domain knows, as stored.
pub mod status {
    /// The order was placed.
    pub const CREATED: &str = "CREATED";
    /// The order was approved: fulfillment is requested.
    pub const APPROVED: &str = "APPROVED";
    /// The order was rejected.
    pub const REJECTED: &str = "REJECTED";
    /// The customer cancelled the order.
    pub const CANCELLED: &str = "CANCELLED";
    /// Fulfillment started.
    pub const PROCESSING: &str = "PROCESSING";
    /// Handed to the carrier.
    pub const SHIPPED: &str = "SHIPPED";
    /// On its way.
    pub const IN_TRANSIT: &str = "IN_TRANSIT";
    /// Delivered.
    pub const RECEIVED: &str = "RECEIVED";
}

/// Spring Data's type hint of an Accounts customer.
pub const ACCOUNT_CLASS: &str = "demo.storefront.accounts.model.CustomerAccount";
/// Spring Data's type hint of a Fulfillment document.
pub const FULFILLMENT_CLASS: &str = "demo.storefront.fulfillment.model.Fulfillment";

/// One write of one application, with every value it stores.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    /// Accounts: a new customer (the whole document, with `_id`).
    InsertAccount(Document),
    /// Accounts: a Spring `save` of an existing customer (the whole new document, with `_id`).
    ReplaceAccount(Document),
    /// Accounts: `$set` of dotted paths (`contact.email`, `addresses.1.city`).
    SetAccount {
        /// The customer's `_id` as stored.
        id: Bson,
        /// The `$set` document.
        set: Document,
    },
    /// Orders: `$push` of a new order into the customer's `orders`.
    PushOrder {
        /// The customer's key (ObjectId hex or string id).
        customer: String,
        /// The order as stored.
        order: Document,
    },
    /// Orders: `$push` of a status into one order's `orderStatusEvents`.
    PushStatus {
        /// The customer's key.
        customer: String,
        /// The order's guid.
        guid: String,
        /// The status as stored.
        status: Document,
    },
    /// Fulfillment: the request's status list replaced by `[status]` (and `shippingMethod`
    /// set), either as a Spring `save` of the whole document or as a `$set`.
    AdvanceRequest {
        /// The order guid (the request's `_id`).
        guid: String,
        /// The new current status.
        status: Document,
        /// The carrier, set with SHIPPED.
        shipping_method: Option<String>,
        /// Whole-document replace (adds `_class`) rather than `$set`.
        replace: bool,
    },
}

/// Why a write cannot apply to the model: the simulator produced it out of order. Never
/// expected; reported rather than ignored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("write does not apply to the model: {0}")]
pub struct ModelError(pub String);

/// Everything the applications wrote, per customer (by key).
#[derive(Debug, Default, Clone)]
pub struct Model {
    customers: BTreeMap<String, CustomerState>,
    /// Order guid to customer key.
    orders: BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
struct CustomerState {
    account: Document,
    orders: Vec<OrderState>,
}

#[derive(Debug, Clone)]
struct OrderState {
    /// As pushed, its `orderStatusEvents` extended by every later push.
    stored: Document,
    /// The request the fulfillment projector creates, once the order was approved.
    request: Option<RequestState>,
}

#[derive(Debug, Clone)]
struct RequestState {
    created: Document,
    /// Every status the Fulfillment application set, in order.
    statuses: Vec<Document>,
    shipping_method: Option<String>,
    replaced: bool,
}

impl Model {
    /// An empty model.
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies one acknowledged write.
    pub fn apply(&mut self, write: &Write) -> Result<(), ModelError> {
        match write {
            Write::InsertAccount(document) => {
                let key = account_key(document)?;
                if self.customers.contains_key(&key) {
                    return Err(ModelError(format!("customer {key} inserted twice")));
                }
                self.customers.insert(
                    key,
                    CustomerState {
                        account: document.clone(),
                        orders: Vec::new(),
                    },
                );
            }
            Write::ReplaceAccount(document) => {
                let key = account_key(document)?;
                self.customer(&key)?.account = document.clone();
            }
            Write::SetAccount { id, set } => {
                let key = CustomerId::from_bson(id).map_err(ModelError)?.key();
                let account = &mut self.customer(&key)?.account;
                for (path, value) in set {
                    set_path(account, path, value.clone())?;
                }
            }
            Write::PushOrder { customer, order } => {
                let guid = order
                    .get_str("guid")
                    .map_err(|_| ModelError("order without guid".into()))?
                    .to_owned();
                if self.orders.contains_key(&guid) {
                    return Err(ModelError(format!("order {guid} pushed twice")));
                }
                let state = self.customer(customer)?;
                state.orders.push(OrderState {
                    stored: order.clone(),
                    request: None,
                });
                let index = state.orders.len() - 1;
                self.orders.insert(guid, customer.clone());
                self.after_status(customer, index)?;
            }
            Write::PushStatus {
                customer,
                guid,
                status,
            } => {
                let state = self.customer(customer)?;
                let index = state
                    .orders
                    .iter()
                    .position(|o| o.stored.get_str("guid").ok() == Some(guid.as_str()))
                    .ok_or_else(|| ModelError(format!("no order {guid}")))?;
                let order = &mut state.orders[index].stored;
                match order.get_mut("orderStatusEvents") {
                    Some(Bson::Array(list)) => list.push(Bson::Document(status.clone())),
                    _ => {
                        order.insert("orderStatusEvents", vec![Bson::Document(status.clone())]);
                    }
                }
                self.after_status(customer, index)?;
            }
            Write::AdvanceRequest {
                guid,
                status,
                shipping_method,
                replace,
            } => {
                let customer = self
                    .orders
                    .get(guid)
                    .cloned()
                    .ok_or_else(|| ModelError(format!("no order {guid}")))?;
                let request = self
                    .customer(&customer)?
                    .orders
                    .iter_mut()
                    .find(|o| o.stored.get_str("guid").ok() == Some(guid.as_str()))
                    .and_then(|o| o.request.as_mut())
                    .ok_or_else(|| ModelError(format!("order {guid} has no request")))?;
                request.statuses.push(status.clone());
                if shipping_method.is_some() {
                    request.shipping_method.clone_from(shipping_method);
                }
                request.replaced |= *replace;
            }
        }
        Ok(())
    }

    /// The customer `key` as the Accounts application last wrote it.
    pub fn account(&self, key: &str) -> Option<&Document> {
        self.customers.get(key).map(|c| &c.account)
    }

    fn customer(&mut self, key: &str) -> Result<&mut CustomerState, ModelError> {
        self.customers
            .get_mut(key)
            .ok_or_else(|| ModelError(format!("no customer {key}")))
    }

    /// After a status change of order `index`: when its current status is APPROVED and no
    /// request exists yet, the connector publishes one from this very state (the customer copy
    /// the document holds now, which the Orders application made sure is the latest), and the
    /// fulfillment projector creates the request from it.
    fn after_status(&mut self, customer: &str, index: usize) -> Result<(), ModelError> {
        let state = self.customer(customer)?;
        let order = &state.orders[index];
        if order.request.is_some() {
            return Ok(());
        }
        let statuses = published_statuses(&order.stored);
        let Some(current) = current_status(&statuses) else {
            return Ok(());
        };
        if current.get_str("orderStatusType").ok() != Some(status::APPROVED) {
            return Ok(());
        }
        let timestamp = current.get_i64("timestamp").unwrap_or_default();
        let copy = projected_copy(&state.account);
        let Some(address) = copy
            .get_array("addresses")
            .ok()
            .and_then(|list| {
                list.iter().find(|a| {
                    a.as_document()
                        .and_then(|a| a.get_str("type").ok())
                        .is_some_and(|t| t == "SHIPPING")
                })
            })
            .cloned()
        else {
            // No SHIPPING address: the connector dead-letters the request; the simulator's
            // customers always have one.
            return Err(ModelError(format!(
                "customer {customer} has no SHIPPING address"
            )));
        };
        let guid = order.stored.get_str("guid").unwrap_or_default().to_owned();
        let items: Vec<Bson> = order
            .stored
            .get_array("orderItems")
            .map(|items| items.iter().map(published_item).collect())
            .unwrap_or_default();
        let created = doc! {
            "_id": guid.clone(),
            "timestamp": timestamp,
            "name": copy.get("name").cloned().unwrap_or(Bson::Null),
            "contact": copy.get("contact").cloned().unwrap_or(Bson::Null),
            "address": address,
            "order": {
                "guid": guid,
                "orderStatusEvents": statuses.into_iter().map(Bson::Document).collect::<Vec<_>>(),
                "orderItems": items,
            },
        };
        self.customer(customer)?.orders[index].request = Some(RequestState {
            created,
            statuses: Vec::new(),
            shipping_method: None,
            replaced: false,
        });
        Ok(())
    }

    /// The final state the writes so far lead to.
    pub fn expected(&self, namespaces: &StorefrontNamespaces) -> ExpectedState {
        let mut state = ExpectedState {
            namespaces: namespaces.clone(),
            accounts: Vec::new(),
            orders: Vec::new(),
            requests: Vec::new(),
            order_guids: self.orders.keys().cloned().collect(),
            counts: Counts::default(),
        };
        for (key, customer) in &self.customers {
            state.accounts.push(customer.account.clone());
            let copy = projected_copy(&customer.account);
            let mut orders = Vec::new();
            for order in &customer.orders {
                let mut stored = order.stored.clone();
                if let Some(request) = &order.request {
                    state.counts.approved_orders += 1;
                    state.counts.status_changes += request.statuses.len() as u64;
                    let mut list = stored
                        .get_array("orderStatusEvents")
                        .cloned()
                        .unwrap_or_default();
                    for status in &request.statuses {
                        insert_in_timestamp_order(&mut list, published_status(status));
                    }
                    stored.insert("orderStatusEvents", list);
                    state.requests.push(request.expected());
                }
                orders.push(Bson::Document(stored));
            }
            state.counts.orders += orders.len() as u64;
            let mut document = doc! { "_id": orders_id(key) };
            document.extend(copy);
            document.insert("orders", orders);
            state.orders.push(document);
        }
        state.counts.customers = self.customers.len() as u64;
        state
    }
}

impl RequestState {
    fn expected(&self) -> Document {
        let mut document = self.created.clone();
        if let Some(status) = self.statuses.last()
            && let Ok(order) = document.get_document_mut("order")
        {
            order.insert("orderStatusEvents", vec![Bson::Document(status.clone())]);
        }
        if let Some(method) = &self.shipping_method {
            document.insert("shippingMethod", method.clone());
        }
        if self.replaced {
            document.insert("_class", FULFILLMENT_CLASS);
        }
        document
    }
}

/// The key of a stored customer: its `_id` read as a customer id.
fn account_key(document: &Document) -> Result<String, ModelError> {
    let id = document
        .get("_id")
        .ok_or_else(|| ModelError("customer without _id".into()))?;
    Ok(CustomerId::from_bson(id).map_err(ModelError)?.key())
}

/// The `_id` of a customer's `customer.orders` document: the key read by Spring's rule.
pub fn orders_id(key: &str) -> Bson {
    CustomerId::from_key(key).map_or(Bson::Null, Bson::from)
}

/// `$set` of one dotted path: intermediate documents are created, numeric segments index into
/// arrays (which must be long enough, as MongoDB pads with nulls only past the end).
pub fn set_path(document: &mut Document, path: &str, value: Bson) -> Result<(), ModelError> {
    let segments: Vec<&str> = path.split('.').collect();
    set_in_document(document, &segments, value, path)
}

fn set_in_document(
    document: &mut Document,
    segments: &[&str],
    value: Bson,
    path: &str,
) -> Result<(), ModelError> {
    let (first, rest) = segments
        .split_first()
        .ok_or_else(|| ModelError(format!("empty path {path}")))?;
    if rest.is_empty() {
        document.insert(*first, value);
        return Ok(());
    }
    if !document.contains_key(*first) {
        document.insert(*first, Document::new());
    }
    match document.get_mut(*first) {
        Some(child) => set_in_value(child, rest, value, path),
        None => Err(ModelError(format!("{path}: {first} cannot be created"))),
    }
}

fn set_in_value(
    target: &mut Bson,
    segments: &[&str],
    value: Bson,
    path: &str,
) -> Result<(), ModelError> {
    match target {
        Bson::Document(document) => set_in_document(document, segments, value, path),
        Bson::Array(list) => {
            let (first, rest) = segments
                .split_first()
                .ok_or_else(|| ModelError(format!("empty path {path}")))?;
            let index: usize = first
                .parse()
                .map_err(|_| ModelError(format!("{path}: {first} is no index")))?;
            let slot = list
                .get_mut(index)
                .ok_or_else(|| ModelError(format!("{path}: no entry {index}")))?;
            if rest.is_empty() {
                *slot = value;
                Ok(())
            } else {
                set_in_value(slot, rest, value, path)
            }
        }
        _ => Err(ModelError(format!("{path}: a segment is below a scalar"))),
    }
}

/// `name`, `contact`, `addresses` of a customer as the connector publishes them and the orders
/// projector copies them: required fields as stored, optional fields only when they hold a
/// value (`null` and absent alike are left out), addresses in stored order.
pub fn projected_copy(account: &Document) -> Document {
    let pick = |source: Option<&Document>, required: &[&str], optional: &[&str]| {
        let mut out = Document::new();
        let Some(source) = source else {
            return out;
        };
        for field in required {
            out.insert(*field, source.get(*field).cloned().unwrap_or(Bson::Null));
        }
        for field in optional {
            match source.get(*field) {
                None | Some(Bson::Null) => {}
                Some(value) => {
                    out.insert(*field, value.clone());
                }
            }
        }
        out
    };
    let addresses: Vec<Bson> = account
        .get_array("addresses")
        .map(|list| {
            list.iter()
                .map(|a| {
                    Bson::Document(pick(
                        a.as_document(),
                        &[
                            "type",
                            "description",
                            "address1",
                            "city",
                            "state",
                            "postalCode",
                        ],
                        &["address2"],
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    doc! {
        "name": pick(
            account.get_document("name").ok(),
            &["title", "firstName", "lastName"],
            &["middleName", "suffix"],
        ),
        "contact": pick(
            account.get_document("contact").ok(),
            &["primaryPhone", "email"],
            &["secondaryPhone"],
        ),
        "addresses": addresses,
    }
}

/// A stored timestamp's epoch milliseconds: int64, int32, a double without fraction, a date.
pub fn timestamp_millis(value: &Bson) -> Option<i64> {
    match value {
        Bson::Int64(t) => Some(*t),
        Bson::Int32(t) => Some(i64::from(*t)),
        Bson::Double(t) if t.fract() == 0.0 && t.abs() < 9.0e15 => Some(*t as i64),
        Bson::DateTime(d) => Some(d.timestamp_millis()),
        _ => None,
    }
}

/// A status as an event carries it and a projector stores it: `timestamp` int64,
/// `orderStatusType`, `note` only when it is a string.
pub fn published_status(status: &Document) -> Document {
    let mut out = doc! {
        "timestamp": status.get("timestamp").and_then(timestamp_millis).unwrap_or_default(),
        "orderStatusType": status.get("orderStatusType").cloned().unwrap_or(Bson::Null),
    };
    if let Some(Bson::String(note)) = status.get("note") {
        out.insert("note", note.clone());
    }
    out
}

fn published_statuses(order: &Document) -> Vec<Document> {
    order
        .get_array("orderStatusEvents")
        .map(|list| {
            list.iter()
                .filter_map(Bson::as_document)
                .map(published_status)
                .collect()
        })
        .unwrap_or_default()
}

/// An item as the fulfillment projector stores it: the product's four fields with the price as
/// Decimal128 of the same value, the quantity as int64.
fn published_item(item: &Bson) -> Bson {
    let Some(item) = item.as_document() else {
        return item.clone();
    };
    let product = item.get_document("product").cloned().unwrap_or_default();
    let price = match product.get("price") {
        Some(Bson::String(text)) => text.parse::<Decimal128>().ok().map(Bson::Decimal128),
        Some(other) => number(other)
            .and_then(|d| d.normalize().to_string().parse::<Decimal128>().ok())
            .map(Bson::Decimal128),
        None => None,
    };
    Bson::Document(doc! {
        "product": {
            "guid": product.get("guid").cloned().unwrap_or(Bson::Null),
            "title": product.get("title").cloned().unwrap_or(Bson::Null),
            "description": product.get("description").cloned().unwrap_or(Bson::Null),
            "price": price.unwrap_or(Bson::Null),
        },
        "quantity": item.get("quantity").and_then(timestamp_millis).unwrap_or_default(),
    })
}

/// The current status: greatest timestamp; on equal timestamps the later in the list.
pub fn current_status(statuses: &[Document]) -> Option<&Document> {
    statuses
        .iter()
        .max_by_key(|s| s.get("timestamp").and_then(timestamp_millis))
}

/// Inserts `status` after the last entry whose timestamp is not later than its own (the domain's
/// "timestamp order, a new status after existing ones of the same time").
pub fn insert_in_timestamp_order(list: &mut Vec<Bson>, status: Document) {
    let timestamp = status.get("timestamp").and_then(timestamp_millis);
    let position = list
        .iter()
        .rposition(|entry| {
            entry
                .as_document()
                .and_then(|e| e.get("timestamp"))
                .and_then(timestamp_millis)
                .zip(timestamp)
                .is_some_and(|(t, new)| t <= new)
        })
        .map_or(0, |last| last + 1);
    list.insert(position, Bson::Document(status));
}

/// Totals of an expected state.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Customers (documents in `customer.accounts`, and in `customer.orders`).
    pub customers: u64,
    /// Orders pushed.
    pub orders: u64,
    /// Orders approved: requests, and FulfillmentRequestEvents.
    pub approved_orders: u64,
    /// Statuses the Fulfillment application set: OrderStatusChangeEvents.
    pub status_changes: u64,
}

/// The expected final state of the three collections (see the module doc).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExpectedState {
    /// Where the run wrote.
    pub namespaces: StorefrontNamespaces,
    /// `customer.accounts` documents.
    #[serde(with = "extjson")]
    pub accounts: Vec<Document>,
    /// `customer.orders` documents.
    #[serde(with = "extjson")]
    pub orders: Vec<Document>,
    /// `fulfillment.requests` documents.
    #[serde(with = "extjson")]
    pub requests: Vec<Document>,
    /// Every order of the run, approved or not (a request for any other is unexpected).
    pub order_guids: Vec<String>,
    /// Totals.
    pub counts: Counts,
}

impl ExpectedState {
    /// Every card number the Accounts application stored.
    pub fn card_numbers(&self) -> Vec<String> {
        let mut numbers: Vec<String> = self
            .accounts
            .iter()
            .filter_map(|a| a.get_array("creditCards").ok())
            .flatten()
            .filter_map(|card| card.as_document()?.get_str("number").ok())
            .map(str::to_owned)
            .collect();
        numbers.sort();
        numbers.dedup();
        numbers
    }

    /// As JSON text.
    pub fn to_json(&self) -> Result<String, SimError> {
        serde_json::to_string_pretty(self).map_err(|e| SimError::Expected(e.to_string()))
    }

    /// From JSON text written by [`ExpectedState::to_json`].
    pub fn from_json(text: &str) -> Result<Self, SimError> {
        serde_json::from_str(text).map_err(|e| SimError::Expected(e.to_string()))
    }
}

/// Documents as canonical extended JSON, so every BSON type survives the file.
mod extjson {
    use mongodb::bson::{Bson, Document};
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(documents: &[Document], s: S) -> Result<S::Ok, S::Error> {
        let values: Vec<serde_json::Value> = documents
            .iter()
            .map(|d| Bson::Document(d.clone()).into_canonical_extjson())
            .collect();
        values.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Document>, D::Error> {
        let values = Vec::<serde_json::Value>::deserialize(d)?;
        values
            .into_iter()
            .map(
                |value| match Bson::try_from(value).map_err(D::Error::custom)? {
                    Bson::Document(document) => Ok(document),
                    other => Err(D::Error::custom(format!(
                        "expected a document, found {other}"
                    ))),
                },
            )
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use mongodb::bson::DateTime;
    use mongodb::bson::oid::ObjectId;

    use super::*;

    fn account(id: Bson) -> Document {
        doc! {
            "_id": id,
            "_class": ACCOUNT_CLASS,
            "name": { "title": "Ms.", "firstName": "Ada", "middleName": Bson::Null, "lastName": "Lovelace" },
            "contact": { "primaryPhone": "555-0100", "secondaryPhone": "555-0101", "email": "ada@example.com" },
            "addresses": [
                { "type": "BILLING", "description": "office", "address1": "2 Side St",
                  "city": "Leeds", "state": "WYK", "postalCode": "LS1" },
                { "type": "SHIPPING", "description": "home", "address1": "1 Main St",
                  "address2": Bson::Null, "city": "London", "state": "LDN", "postalCode": "N1" },
            ],
            "creditCards": [{ "type": "PRIMARY", "description": "VISA", "number": "4111111111111111",
                              "expiration": "12/30", "nameOnCard": "Ada Lovelace" }],
        }
    }

    fn status(timestamp: Bson, kind: &str) -> Document {
        doc! { "timestamp": timestamp, "orderStatusType": kind }
    }

    fn order(guid: &str) -> Document {
        doc! {
            "guid": guid,
            "orderStatusEvents": [status(Bson::DateTime(DateTime::from_millis(1_000)), "CREATED")],
            "orderItems": [{
                "product": { "guid": "p-1", "title": "Lamp", "description": "A lamp", "price": "12.50" },
                "quantity": 2,
            }],
        }
    }

    /// One customer with one approved order taken to RECEIVED and one rejected order, with
    /// account changes before and after approval.
    fn writes(id: &Bson) -> Vec<Write> {
        let key = CustomerId::from_bson(id).unwrap().key();
        let mut replaced = account(id.clone());
        replaced.insert(
            "contact",
            doc! { "primaryPhone": "555-0199", "email": "ada@new.example" },
        );
        let mut writes = vec![
            Write::InsertAccount(account(id.clone())),
            Write::SetAccount {
                id: id.clone(),
                set: doc! { "addresses.1.city": "Bath" },
            },
            Write::PushOrder {
                customer: key.clone(),
                order: order("g-1"),
            },
            Write::PushOrder {
                customer: key.clone(),
                order: order("g-2"),
            },
            Write::PushStatus {
                customer: key.clone(),
                guid: "g-1".into(),
                status: doc! { "timestamp": 2_000_i64, "orderStatusType": "APPROVED", "note": Bson::Null },
            },
            Write::PushStatus {
                customer: key.clone(),
                guid: "g-2".into(),
                status: status(Bson::Double(2_500.0), "REJECTED"),
            },
            // After approval: the request keeps the old state, the copy follows.
            Write::ReplaceAccount(replaced),
        ];
        for (n, kind) in ["PROCESSING", "SHIPPED", "IN_TRANSIT", "RECEIVED"]
            .iter()
            .enumerate()
        {
            writes.push(Write::AdvanceRequest {
                guid: "g-1".into(),
                status: doc! { "timestamp": 3_000 + n as i64, "orderStatusType": *kind },
                shipping_method: (*kind == "SHIPPED").then(|| "UPS".to_owned()),
                replace: n == 1,
            });
        }
        writes
    }

    fn run(writes: &[Write]) -> ExpectedState {
        let mut model = Model::new();
        for write in writes {
            model.apply(write).unwrap();
        }
        model.expected(&StorefrontNamespaces::default())
    }

    #[test]
    fn a_customer_and_an_approved_order_project_as_the_domain_says() {
        let id = Bson::ObjectId(ObjectId::from_bytes([7; 12]));
        let expected = run(&writes(&id));
        assert_eq!(
            expected.counts,
            Counts {
                customers: 1,
                orders: 2,
                approved_orders: 1,
                status_changes: 4
            }
        );
        // Accounts: as written, cards included.
        assert_eq!(
            expected.accounts[0]
                .get_document("contact")
                .unwrap()
                .get_str("email"),
            Ok("ada@new.example")
        );
        assert_eq!(expected.card_numbers(), vec!["4111111111111111".to_owned()]);
        // Orders: the last customer state, nulls and cards left out, statuses merged in order.
        let orders = &expected.orders[0];
        assert_eq!(orders.get("_id"), Some(&id));
        assert!(!orders.contains_key("creditCards") && !orders.contains_key("_class"));
        assert_eq!(
            orders.get_document("contact").unwrap(),
            &doc! { "primaryPhone": "555-0199", "email": "ada@new.example" }
        );
        assert_eq!(
            orders.get_document("name").unwrap(),
            &doc! { "title": "Ms.", "firstName": "Ada", "lastName": "Lovelace" }
        );
        let order = orders.get_array("orders").unwrap()[0]
            .as_document()
            .unwrap();
        let kinds: Vec<&str> = order
            .get_array("orderStatusEvents")
            .unwrap()
            .iter()
            .map(|s| s.as_document().unwrap().get_str("orderStatusType").unwrap())
            .collect();
        assert_eq!(
            kinds,
            [
                "CREATED",
                "APPROVED",
                "PROCESSING",
                "SHIPPED",
                "IN_TRANSIT",
                "RECEIVED"
            ]
        );
        // The Orders application's own statuses stay as stored (a date, a null note).
        let first = order.get_array("orderStatusEvents").unwrap()[0]
            .as_document()
            .unwrap();
        assert_eq!(
            first.get("timestamp"),
            Some(&Bson::DateTime(DateTime::from_millis(1_000)))
        );
        // Requests: one, for the approved order only, with the state at approval.
        assert_eq!(expected.requests.len(), 1);
        let request = &expected.requests[0];
        assert_eq!(request.get_str("_id"), Ok("g-1"));
        assert_eq!(request.get_i64("timestamp"), Ok(2_000));
        assert_eq!(
            request.get_document("contact").unwrap().get_str("email"),
            Ok("ada@example.com")
        );
        assert_eq!(
            request.get_document("address").unwrap().get_str("city"),
            Ok("Bath")
        );
        assert!(
            !request
                .get_document("address")
                .unwrap()
                .contains_key("address2")
        );
        assert_eq!(request.get_str("shippingMethod"), Ok("UPS"));
        assert_eq!(request.get_str("_class"), Ok(FULFILLMENT_CLASS));
        let request_order = request.get_document("order").unwrap();
        assert_eq!(
            request_order.get_array("orderStatusEvents").unwrap(),
            &vec![Bson::Document(
                doc! { "timestamp": 3_003_i64, "orderStatusType": "RECEIVED" }
            )]
        );
        let item = request_order.get_array("orderItems").unwrap()[0]
            .as_document()
            .unwrap();
        assert_eq!(
            item.get_document("product").unwrap().get("price"),
            Some(&Bson::Decimal128("12.50".parse().unwrap()))
        );
        assert_eq!(item.get("quantity"), Some(&Bson::Int64(2)));
    }

    #[test]
    fn string_ids_follow_springs_rule() {
        let text = Bson::String("cust-42".into());
        assert_eq!(run(&writes(&text)).orders[0].get("_id"), Some(&text));
        let hex = "0123456789abcdef01234567";
        let expected = run(&writes(&Bson::String(hex.into())));
        assert_eq!(
            expected.accounts[0].get("_id"),
            Some(&Bson::String(hex.into()))
        );
        assert_eq!(
            expected.orders[0].get("_id"),
            Some(&Bson::ObjectId(ObjectId::parse_str(hex).unwrap()))
        );
    }

    #[test]
    fn no_request_before_approval_and_none_for_other_outcomes() {
        let id = Bson::String("c-1".into());
        let all = writes(&id);
        // Up to the pushes of both orders: no request.
        assert!(run(&all[..4]).requests.is_empty());
        // The rejected order never gets one.
        let expected = run(&all[..6]);
        assert_eq!(expected.requests.len(), 1);
        assert_eq!(
            expected.order_guids,
            vec!["g-1".to_owned(), "g-2".to_owned()]
        );
        // Advancing a request that does not exist is a simulator error, not silently ignored.
        let mut model = Model::new();
        for write in &all[..4] {
            model.apply(write).unwrap();
        }
        assert!(model.apply(&all[7]).is_err());
    }

    #[test]
    fn statuses_merge_in_timestamp_order_after_equal_ones() {
        let mut list = vec![
            Bson::Document(status(Bson::Int64(10), "A")),
            Bson::Document(status(Bson::Int64(30), "C")),
        ];
        insert_in_timestamp_order(&mut list, status(Bson::Int64(30), "D"));
        insert_in_timestamp_order(&mut list, status(Bson::Int64(20), "B"));
        insert_in_timestamp_order(&mut list, status(Bson::Int64(5), "Z"));
        let kinds: Vec<&str> = list
            .iter()
            .map(|s| s.as_document().unwrap().get_str("orderStatusType").unwrap())
            .collect();
        assert_eq!(kinds, ["Z", "A", "B", "C", "D"]);
        let statuses = [status(Bson::Int32(5), "X"), status(Bson::Double(5.0), "Y")];
        assert_eq!(
            current_status(&statuses)
                .unwrap()
                .get_str("orderStatusType"),
            Ok("Y")
        );
    }

    #[test]
    fn set_paths_reach_into_documents_and_lists() {
        let mut document = doc! { "a": { "b": [ { "c": 1 }, { "c": 2 } ] } };
        set_path(&mut document, "a.b.1.c", Bson::Int32(9)).unwrap();
        set_path(&mut document, "a.d.e", Bson::Null).unwrap();
        set_path(&mut document, "f", Bson::Boolean(true)).unwrap();
        assert_eq!(
            document,
            doc! { "a": { "b": [ { "c": 1 }, { "c": 9 } ], "d": { "e": Bson::Null } }, "f": true }
        );
        assert!(set_path(&mut document, "a.b.7.c", Bson::Int32(1)).is_err());
        assert!(set_path(&mut document, "f.g", Bson::Int32(1)).is_err());
    }

    #[test]
    fn the_expected_state_survives_json_with_every_type() {
        let id = Bson::ObjectId(ObjectId::from_bytes([1; 12]));
        let expected = run(&writes(&id));
        let back = ExpectedState::from_json(&expected.to_json().unwrap()).unwrap();
        assert_eq!(back, expected);
    }
}
