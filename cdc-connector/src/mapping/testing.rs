//! Builders shared by the mappers' unit tests: changes, documents in the shapes MongoDB 6/7
//! really stores (ObjectId `_id`, NumberLong timestamps, int32 quantities, double prices), and
//! the golden fixtures of `schemas/fixtures/`.

use mongodb::bson::oid::ObjectId;
use mongodb::bson::{Bson, Document, RawDocumentBuf, doc};
use storefront_schemas::documents::document_from_extended_json;
use storefront_schemas::events::EventPayload;
use storefront_schemas::metadata::SourcePosition;
use storefront_schemas::topology::{Namespace, StorefrontNamespaces};

use super::{ChangeKind, SourceChange};

pub const CUSTOMER_HEX: &str = "65f1c0ffee0000000000beef";

pub fn customer_id() -> ObjectId {
    ObjectId::parse_str(CUSTOMER_HEX).unwrap()
}

pub fn accounts_namespace() -> Namespace {
    StorefrontNamespaces::default().accounts
}

pub fn orders_namespace() -> Namespace {
    StorefrontNamespaces::default().orders
}

pub fn fulfillment_namespace() -> Namespace {
    StorefrontNamespaces::default().fulfillment
}

/// A cluster time with a fixed second and the given increment.
pub fn position(increment: u32) -> SourcePosition {
    SourcePosition {
        seconds: 1_764_000_000,
        increment,
    }
}

pub fn change(
    namespace: Namespace,
    kind: ChangeKind,
    document_id: Bson,
    full_document: Option<Document>,
    position: SourcePosition,
) -> SourceChange {
    SourceChange {
        namespace,
        kind,
        document_id,
        full_document: full_document
            .map(|document| RawDocumentBuf::from_document(&document).unwrap()),
        position,
        time_ms: i64::from(position.seconds) * 1000 + 250,
    }
}

fn name() -> Document {
    doc! { "title": "Ms.", "firstName": "Ada", "lastName": "Lovelace" }
}

fn contact() -> Document {
    doc! { "primaryPhone": "555-0100", "email": "ada@example.com" }
}

pub fn address(address_type: &str, description: &str) -> Document {
    doc! {
        "type": address_type,
        "description": description,
        "address1": "12 St James's Square",
        "city": "London",
        "state": "LDN",
        "postalCode": "SW1Y 4JH",
    }
}

/// A Customer with a BILLING and a SHIPPING address, one card, and a field the contract does
/// not know (Spring's `_class`).
pub fn customer_document() -> Document {
    doc! {
        "_id": customer_id(),
        "name": name(),
        "contact": contact(),
        "addresses": [address("BILLING", "billing"), address("SHIPPING", "home")],
        "creditCards": [{
            "type": "PRIMARY",
            "description": "Visa",
            "number": "4111111111111111",
            "expiration": "12/28",
            "nameOnCard": "Ada Lovelace",
        }],
        "_class": "com.storefront.model.CustomerAccount",
    }
}

/// An order with the given `(timestamp, status)` history, timestamps as NumberLong.
pub fn order(guid: &str, statuses: &[(i64, &str)]) -> Document {
    let statuses: Vec<Bson> = statuses
        .iter()
        .map(|(timestamp, status)| {
            Bson::Document(doc! { "timestamp": *timestamp, "orderStatusType": *status })
        })
        .collect();
    doc! {
        "guid": guid,
        "orderStatusEvents": statuses,
        "orderItems": [{
            "product": {
                "guid": "7f3c9b3a-9ad9-4a76-9d6b-9b3b1e1ad6b2",
                "title": "Green Widget",
                "description": "Green Widget",
                "price": 7.99,
            },
            "quantity": 5_i32,
        }],
    }
}

/// A CustomerOrders document holding `orders` and the customer's projected fields.
pub fn customer_orders_document(orders: Vec<Document>) -> Document {
    doc! {
        "_id": customer_id(),
        "name": name(),
        "contact": contact(),
        "addresses": [address("BILLING", "billing"), address("SHIPPING", "home")],
        "orders": orders,
    }
}

/// A Fulfillment for `order`.
pub fn fulfillment_document(order: Document) -> Document {
    doc! {
        "_id": ObjectId::parse_str("65f1c0ffee0000000000f001").unwrap(),
        "timestamp": 1_700_000_061_000_i64,
        "name": name(),
        "contact": contact(),
        "address": address("SHIPPING", "home"),
        "order": order,
    }
}

/// A source fixture of `schemas/fixtures/`.
pub fn fixture(collection: &str) -> Document {
    let text = match collection {
        "customer.accounts" => include_str!("../../../schemas/fixtures/customer.accounts.json"),
        "customer.orders" => include_str!("../../../schemas/fixtures/customer.orders.json"),
        "fulfillment.requests" => {
            include_str!("../../../schemas/fixtures/fulfillment.requests.json")
        }
        other => panic!("no fixture for {other}"),
    };
    document_from_extended_json(text).unwrap()
}

/// A golden event of `schemas/fixtures/`: a specification written by hand, not by this code.
/// Its [`Golden::to_json`] is the file's text without the whitespace between tokens, so a mapper's
/// payload compares with what the file says byte for byte (never with the file read and written
/// again by the code under test); its fields read through `Deref`.
pub struct Golden<T> {
    event: T,
    body: Vec<u8>,
}

impl<T> Golden<T> {
    /// The exact record body the golden file specifies.
    pub fn to_json(&self) -> Vec<u8> {
        self.body.clone()
    }
}

impl<T> std::ops::Deref for Golden<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.event
    }
}

/// The golden event of `schemas/fixtures/` for `T`.
pub fn golden<T: EventPayload>() -> Golden<T> {
    let body = storefront_schemas::fixtures::golden_body(T::NAME)
        .unwrap_or_else(|| panic!("no golden event {}", T::NAME));
    let event = T::from_json(body.as_bytes()).unwrap();
    Golden {
        event,
        body: body.into_bytes(),
    }
}

impl super::Mapped {
    /// The events when the change mapped without a defect, else every defect.
    pub fn into_result(self) -> Result<Vec<super::OutboundEvent>, Vec<super::Defect>> {
        if self.defects.is_empty() {
            Ok(self.events)
        } else {
            Err(self.defects)
        }
    }
}
