//! Event payloads: the JSON bodies of the records on the event topics.
//!
//! Field names are the original services', so a consumer written for the original topics reads
//! ours; fields may be added, never renamed or removed (`docs/domain.md`). Metadata
//! (id, type, position) travels in headers, see [`crate::metadata`].
//!
//! Guarantees:
//! - **Deterministic bytes.** [`EventPayload::to_json`] writes fields in declaration order with no
//!   maps and no floating-point formatting choices left open, so equal payloads give equal bytes
//!   on every run.
//! - **No card data, structurally.** [`CustomerChangeEvent`] has no field that could hold a credit
//!   card, and is built from a [`Customer`] by picking fields, never by copying the document.
//! - **Described.** Each payload has a JSON Schema generated from these types
//!   ([`json_schemas`]), checked in under `schemas/json/` and tested for drift.

use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::documents::{Address, Contact, Customer, CustomerOrders, Name, Order, OrderStatusEvent};
use crate::metadata::EventType;

/// A payload of one event type.
pub trait EventPayload: Serialize + DeserializeOwned + JsonSchema {
    /// The event's name, also its schema file's stem (`<NAME>.schema.json`).
    const NAME: &'static str;
    /// The event type records of this payload carry.
    const EVENT_TYPE: EventType;

    /// The record body: compact JSON.
    fn to_json(&self) -> Vec<u8> {
        // Serialising these types cannot fail: every map key is a string and every number
        // finite (`Price` refuses NaN and infinities when read).
        serde_json::to_vec(self).expect("event payloads always serialise")
    }

    /// Reads a record body. Unknown fields are ignored (fields may be added to the contract).
    /// The reason names the offending field's path (`name.firstName`, `addresses[0].city`), since
    /// serde's own message says only what was expected and where in the text.
    fn from_json(body: &[u8]) -> Result<Self, PayloadError> {
        let mut deserializer = serde_json::Deserializer::from_slice(body);
        let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
            let path = e.path().to_string();
            let reason = e.into_inner().to_string();
            PayloadError {
                event: Self::NAME,
                // An error in the body as a whole (not JSON at all) has the path ".".
                reason: if path == "." {
                    reason
                } else {
                    format!("field `{path}`: {reason}")
                },
            }
        })?;
        // Trailing characters after the payload, as serde_json::from_slice refuses them.
        deserializer.end().map_err(|e| PayloadError {
            event: Self::NAME,
            reason: e.to_string(),
        })?;
        Ok(value)
    }
}

/// A record body that is not a valid payload of the expected event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a valid {event}: {reason}")]
pub struct PayloadError {
    /// The expected event's name.
    pub event: &'static str,
    /// What is wrong (with line and column).
    pub reason: String,
}

/// A customer was inserted, updated or replaced (`accounts.customer.change`, keyed by `id`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CustomerChangeEvent {
    /// The customer id: an ObjectId `_id` as its 24 hex digits, a string `_id` as itself.
    pub id: String,
    /// Name.
    pub name: Name,
    /// Contact details.
    pub contact: Contact,
    /// Addresses.
    pub addresses: Vec<Address>,
}

impl CustomerChangeEvent {
    /// The public part of `customer`: everything but its credit cards.
    pub fn from_customer(customer: &Customer) -> Self {
        Self {
            id: customer.id.key(),
            name: customer.name.clone(),
            contact: customer.contact.clone(),
            addresses: customer.addresses.clone(),
        }
    }
}

impl EventPayload for CustomerChangeEvent {
    const NAME: &'static str = "CustomerChangeEvent";
    const EVENT_TYPE: EventType = EventType::CustomerChanged;
}

/// An order reached APPROVED and should be fulfilled (`orders.order.fulfill`, keyed by the order
/// guid).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FulfillmentRequestEvent {
    /// When the order was approved (its APPROVED status event), epoch milliseconds.
    pub timestamp: i64,
    /// Customer name.
    pub name: Name,
    /// Customer contact details.
    pub contact: Contact,
    /// Where to ship: the customer's first SHIPPING address.
    pub address: Address,
    /// The approved order.
    pub order: Order,
    /// The customer id, as in [`CustomerChangeEvent::id`]. Added by this pipeline; absent in the
    /// original.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_id: Option<String>,
}

impl FulfillmentRequestEvent {
    /// The request for `order` of `customer`, approved by `approved`, shipped to `address`.
    pub fn new(
        customer: &CustomerOrders,
        order: &Order,
        approved: &OrderStatusEvent,
        address: &Address,
    ) -> Self {
        Self {
            timestamp: approved.timestamp,
            name: customer.name.clone(),
            contact: customer.contact.clone(),
            address: address.clone(),
            order: order.clone(),
            customer_id: Some(customer.id.key()),
        }
    }
}

impl EventPayload for FulfillmentRequestEvent {
    const NAME: &'static str = "FulfillmentRequestEvent";
    const EVENT_TYPE: EventType = EventType::FulfillmentRequested;
}

/// A fulfillment's status changed to anything but APPROVED (`fulfillment.order.change`, keyed by
/// `guid`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderStatusChangeEvent {
    /// The order guid.
    pub guid: String,
    /// The new status.
    pub order_status_event: OrderStatusEvent,
}

impl EventPayload for OrderStatusChangeEvent {
    const NAME: &'static str = "OrderStatusChangeEvent";
    const EVENT_TYPE: EventType = EventType::OrderStatusChanged;
}

/// Every payload's JSON Schema as `(file name, pretty JSON with a final newline)`, in a fixed
/// order. These are the contents of `schemas/json/`.
pub fn json_schemas() -> Vec<(String, String)> {
    fn one<T: EventPayload>() -> (String, String) {
        // The serialize contract: a schema of what the connector publishes (lists the reader
        // would also accept missing are always written, so they stay required).
        let schema = schemars::generate::SchemaSettings::default()
            .for_serialize()
            .into_generator()
            .into_root_schema_for::<T>();
        // A schema is a JSON value; writing one cannot fail.
        let text = serde_json::to_string_pretty(&schema).expect("schemas always serialise");
        (format!("{}.schema.json", T::NAME), text + "\n")
    }
    vec![
        one::<CustomerChangeEvent>(),
        one::<FulfillmentRequestEvent>(),
        one::<OrderStatusChangeEvent>(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_invalid_payload_names_the_offending_field() {
        let cases: [(&[u8], &str); 5] = [
            (
                br#"{"guid":"g","orderStatusEvent":{"timestamp":"soon","orderStatusType":"SHIPPED"}}"#,
                "field `orderStatusEvent.timestamp`: expected a whole number",
            ),
            (
                br#"{"guid":7,"orderStatusEvent":{"timestamp":1,"orderStatusType":"SHIPPED"}}"#,
                "field `guid`: invalid type: integer `7`, expected a string",
            ),
            (
                br#"{"guid":"g","orderStatusEvent":{"timestamp":1}}"#,
                "field `orderStatusEvent`: missing field `orderStatusType`",
            ),
            (br#"{"guid":"g","orderStat"#, "EOF while parsing"),
            (
                br#"{"guid":"g","orderStatusEvent":{"timestamp":1,"orderStatusType":"SHIPPED"}} x"#,
                "trailing characters",
            ),
        ];
        for (body, expected) in cases {
            let error = OrderStatusChangeEvent::from_json(body).unwrap_err();
            assert!(
                error.reason.contains(expected),
                "{}: `{}` lacks `{expected}`",
                String::from_utf8_lossy(body),
                error.reason
            );
        }
        let error = CustomerChangeEvent::from_json(
            br#"{"id":"c","name":{"title":"Ms.","firstName":"A","lastName":"B"},
                 "contact":{"primaryPhone":"1","email":"e"},
                 "addresses":[{"type":"SHIPPING","description":"d","address1":"a","city":5,
                               "state":"s","postalCode":"p"}]}"#,
        )
        .unwrap_err();
        assert!(
            error
                .reason
                .starts_with("field `addresses[0].city`: invalid type"),
            "{}",
            error.reason
        );
    }
}
