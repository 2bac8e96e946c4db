//! The source documents of the three collections, typed, with the field names the original
//! services store (`shared/design/domain.md`).
//!
//! Reading rules, the same for every document:
//! - **Extra fields are ignored.** Applications may add fields; a mapper reads only what the
//!   contract names. (Those extra fields are therefore not carried into events.)
//! - **Required fields are required.** A missing or mistyped field is a [`DocumentError`] naming
//!   the field by its dotted MongoDB path (`orders.2.orderStatusEvents.0.timestamp`), so a dead
//!   letter says exactly what to repair. Optional fields (`?` in the contract) are `Option`s;
//!   `null` reads as absent, and absent fields are left out when written.
//! - **Whole numbers are read by value.** `timestamp` (epoch milliseconds) and `quantity` accept
//!   BSON int32, int64 and a double without fraction (the mongo shell writes every number as a
//!   double); anything else, including a fraction or a double beyond 2^53, is an error rather
//!   than a silently rounded value. They are always written back as integers.
//! - **Prices are kept as stored.** [`Price`] holds the number the document holds: an integer
//!   stays an integer and a double stays a double (the original services store a double), so
//!   `10.0` is published as `10.0` and `10` as `10`. Decimal128 is rejected, not approximated.
//! - **Enumerations are open.** A value this release does not know (say a new
//!   [`OrderStatusType`]) reads as `Other(text)` and is written back unchanged, so an older
//!   connector keeps mapping documents written by newer applications.
//! - **`_id`s are strict.** `Customer` and `CustomerOrders` `_id`s must be BSON ObjectIds (not
//!   their hex strings): the orders projection joins the two collections on that value.
//!
//! Credit cards exist only on [`Customer`]; no event type has a field that could hold one (see
//! [`crate::events`]), and their `Debug` output hides the number.

use std::borrow::Cow;
use std::fmt;

use bson::oid::ObjectId;
use bson::{Bson, Document};
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::de::{self, DeserializeOwned, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// Why a source document could not be read. Field paths are dotted MongoDB paths.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DocumentError {
    /// A required field is absent.
    #[error("missing required field `{field}`")]
    MissingField {
        /// Dotted path of the field.
        field: String,
    },
    /// A field has the wrong BSON type or an invalid value.
    #[error("field `{field}`: {reason}")]
    InvalidField {
        /// Dotted path of the field (empty for the document itself).
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Text given as MongoDB Extended JSON is not a JSON object in that format.
    #[error("not a MongoDB Extended JSON document: {0}")]
    NotExtendedJson(String),
}

/// Parses one document from MongoDB Extended JSON (canonical or relaxed, as `mongoexport` and
/// `mongosh` print it), so fixtures and tools can keep documents with their exact BSON types
/// (`{"$numberLong": "1700000000000"}`, `{"$oid": "..."}`).
pub fn document_from_extended_json(text: &str) -> Result<Document, DocumentError> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| DocumentError::NotExtendedJson(e.to_string()))?;
    match Bson::try_from(value) {
        Ok(Bson::Document(document)) => Ok(document),
        Ok(other) => Err(DocumentError::NotExtendedJson(format!(
            "expected an object, found {:?}",
            other.element_type()
        ))),
        Err(e) => Err(DocumentError::NotExtendedJson(e.to_string())),
    }
}

/// Reads `document` as `T`, naming the offending field on failure.
pub fn from_document<T: DeserializeOwned>(document: &Document) -> Result<T, DocumentError> {
    let deserializer = bson::Deserializer::new(Bson::Document(document.clone()));
    serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let path = dotted_path(error.path());
        let reason = error.into_inner().to_string();
        // serde reports a missing field at the struct holding it, as "missing field `name`".
        match reason
            .strip_prefix("missing field `")
            .and_then(|rest| rest.strip_suffix('`'))
        {
            Some(name) => DocumentError::MissingField {
                field: join_path(&path, name),
            },
            None => DocumentError::InvalidField {
                field: path,
                reason,
            },
        }
    })
}

fn dotted_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut dotted = String::new();
    for segment in path.iter() {
        let part = match segment {
            Segment::Seq { index } => index.to_string(),
            Segment::Map { key } => key.clone(),
            Segment::Enum { variant } => variant.clone(),
            Segment::Unknown => "?".to_owned(),
        };
        dotted = join_path(&dotted, &part);
    }
    dotted
}

fn join_path(parent: &str, child: &str) -> String {
    if parent.is_empty() {
        child.to_owned()
    } else {
        format!("{parent}.{child}")
    }
}

// ---------------------------------------------------------------------------------------------
// Open enumerations
// ---------------------------------------------------------------------------------------------

/// An enumeration stored as a string, whose unknown values are kept as `Other(text)`.
/// Equality, hashing and serialisation go by the text, so `Other("APPROVED")` (constructible by
/// hand) still equals `Approved`.
macro_rules! open_enum {
    (
        $(#[$meta:meta])*
        $name:ident {
            $( $(#[$variant_meta:meta])* $variant:ident = $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone)]
        #[non_exhaustive]
        pub enum $name {
            $( $(#[$variant_meta])* $variant, )+
            /// A value this release does not know, kept verbatim.
            Other(String),
        }

        impl $name {
            /// Every known value, in the contract's order.
            pub const KNOWN: &'static [&'static str] = &[$($text),+];

            /// The stored text.
            pub fn as_str(&self) -> &str {
                match self {
                    $( $name::$variant => $text, )+
                    $name::Other(text) => text,
                }
            }

            /// The value for `text`; unknown text becomes `Other`.
            pub fn parse(text: &str) -> Self {
                match text {
                    $( $text => $name::$variant, )+
                    other => $name::Other(other.to_owned()),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl PartialEq for $name {
            fn eq(&self, other: &Self) -> bool {
                self.as_str() == other.as_str()
            }
        }

        impl Eq for $name {}

        impl std::hash::Hash for $name {
            fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
                self.as_str().hash(state);
            }
        }

        impl From<&str> for $name {
            fn from(text: &str) -> Self {
                Self::parse(text)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                Ok(Self::parse(&text))
            }
        }

        impl JsonSchema for $name {
            fn schema_name() -> Cow<'static, str> {
                stringify!($name).into()
            }

            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                // A plain string: consumers must accept values added after they were written.
                schemars::json_schema!({
                    "type": "string",
                    "description": format!(
                        "One of {}; values added later pass through unchanged.",
                        Self::KNOWN.join(", ")
                    ),
                    "examples": Self::KNOWN,
                })
            }
        }
    };
}

open_enum! {
    /// Where an address is used.
    AddressType {
        /// `BILLING`.
        Billing = "BILLING",
        /// `SHIPPING`: fulfillment ships to the first of these.
        Shipping = "SHIPPING",
        /// `SHIPPING_ALTERNATE`.
        ShippingAlternate = "SHIPPING_ALTERNATE",
    }
}

open_enum! {
    /// A step in an order's life. Happy path: CREATED, APPROVED, PROCESSING, SHIPPED, IN_TRANSIT,
    /// RECEIVED.
    OrderStatusType {
        /// `CREATED`.
        Created = "CREATED",
        /// `APPROVED`: the order is ready for fulfillment.
        Approved = "APPROVED",
        /// `REJECTED`.
        Rejected = "REJECTED",
        /// `CANCELLED`.
        Cancelled = "CANCELLED",
        /// `PROCESSING`.
        Processing = "PROCESSING",
        /// `ON_HOLD`.
        OnHold = "ON_HOLD",
        /// `SHIPPED`.
        Shipped = "SHIPPED",
        /// `IN_TRANSIT`.
        InTransit = "IN_TRANSIT",
        /// `RECEIVED`.
        Received = "RECEIVED",
        /// `RETURNED`.
        Returned = "RETURNED",
    }
}

open_enum! {
    /// Which of a customer's cards this is.
    CreditCardType {
        /// `PRIMARY`.
        Primary = "PRIMARY",
        /// `ALTERNATE`.
        Alternate = "ALTERNATE",
    }
}

open_enum! {
    /// The carrier of a shipped order.
    ShippingMethod {
        /// `USPS`.
        Usps = "USPS",
        /// `FedEx`.
        FedEx = "FedEx",
        /// `UPS`.
        Ups = "UPS",
        /// `Uber`.
        Uber = "Uber",
        /// `Drone`.
        Drone = "Drone",
    }
}

// ---------------------------------------------------------------------------------------------
// Numbers and ids
// ---------------------------------------------------------------------------------------------

/// A price exactly as the document stores it (an integer or a finite double).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(transparent)]
pub struct Price(serde_json::Number);

impl<'de> Deserialize<'de> for Price {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PriceVisitor;

        impl Visitor<'_> for PriceVisitor {
            type Value = Price;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                // Decimal128 reaches here as a map; naming it saves the reader a guess.
                f.write_str("a number (int32, int64 or double; Decimal128 is not supported)")
            }

            fn visit_i64<E: de::Error>(self, value: i64) -> Result<Price, E> {
                Ok(Price(value.into()))
            }

            fn visit_u64<E: de::Error>(self, value: u64) -> Result<Price, E> {
                Ok(Price(value.into()))
            }

            fn visit_f64<E: de::Error>(self, value: f64) -> Result<Price, E> {
                Price::from_f64(value)
                    .ok_or_else(|| E::invalid_value(de::Unexpected::Float(value), &self))
            }
        }

        deserializer.deserialize_any(PriceVisitor)
    }
}

impl Price {
    /// A price stored as a double; `None` if it is not finite.
    pub fn from_f64(value: f64) -> Option<Self> {
        serde_json::Number::from_f64(value).map(Price)
    }

    /// The price as a double (exact for doubles, and for integers up to 2^53).
    pub fn as_f64(&self) -> f64 {
        // Every finite JSON number has an f64 approximation; `Number` holds no other kind.
        self.0.as_f64().unwrap_or(f64::NAN)
    }

    /// The stored number.
    pub fn as_number(&self) -> &serde_json::Number {
        &self.0
    }
}

impl From<i64> for Price {
    fn from(value: i64) -> Self {
        Price(value.into())
    }
}

/// Reads a whole number from int32, int64, or a double without fraction (see the module doc).
pub(crate) fn whole_number<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    struct WholeNumber;

    impl Visitor<'_> for WholeNumber {
        type Value = i64;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a whole number (int32, int64, or a double without fraction)")
        }

        fn visit_i64<E: de::Error>(self, value: i64) -> Result<i64, E> {
            Ok(value)
        }

        fn visit_u64<E: de::Error>(self, value: u64) -> Result<i64, E> {
            i64::try_from(value)
                .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(value), &self))
        }

        fn visit_f64<E: de::Error>(self, value: f64) -> Result<i64, E> {
            // Beyond 2^53 a double no longer holds every integer, so the value may already be
            // rounded: refuse rather than publish a number nobody wrote.
            const EXACT: f64 = 9_007_199_254_740_992.0;
            if value.fract() == 0.0 && value.abs() <= EXACT {
                Ok(value as i64)
            } else {
                Err(E::invalid_value(de::Unexpected::Float(value), &self))
            }
        }
    }

    deserializer.deserialize_any(WholeNumber)
}

/// Reads a BSON ObjectId and nothing else (the driver's own impl also accepts a hex string).
pub(crate) fn strict_object_id<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<ObjectId, D::Error> {
    match Bson::deserialize(deserializer)? {
        Bson::ObjectId(id) => Ok(id),
        other => Err(de::Error::custom(format!(
            "expected an ObjectId, found {:?}",
            other.element_type()
        ))),
    }
}

// ---------------------------------------------------------------------------------------------
// Shared value types
// ---------------------------------------------------------------------------------------------

/// A person's name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Name {
    /// Title, such as `Mr.`.
    pub title: String,
    /// First name.
    pub first_name: String,
    /// Middle name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub middle_name: Option<String>,
    /// Last name.
    pub last_name: String,
    /// Suffix, such as `Jr.`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suffix: Option<String>,
}

/// How to reach a customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Contact {
    /// Primary phone number.
    pub primary_phone: String,
    /// Secondary phone number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secondary_phone: Option<String>,
    /// Email address.
    pub email: String,
}

/// A postal address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Address {
    /// What the address is used for.
    #[serde(rename = "type")]
    pub address_type: AddressType,
    /// Free-text label.
    pub description: String,
    /// First address line.
    pub address1: String,
    /// Second address line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address2: Option<String>,
    /// City.
    pub city: String,
    /// State or region.
    pub state: String,
    /// Postal code.
    pub postal_code: String,
}

impl Address {
    /// The first address of `addresses` with type `address_type`.
    pub fn first_of_type<'a>(
        addresses: &'a [Address],
        address_type: &AddressType,
    ) -> Option<&'a Address> {
        addresses.iter().find(|a| &a.address_type == address_type)
    }
}

/// One step in an order's status history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderStatusEvent {
    /// When the status was set, epoch milliseconds.
    #[serde(deserialize_with = "whole_number")]
    pub timestamp: i64,
    /// The status.
    pub order_status_type: OrderStatusType,
    /// Free-text note.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// A product as ordered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Product {
    /// Product id (UUID string).
    pub guid: String,
    /// Title.
    pub title: String,
    /// Description.
    pub description: String,
    /// Unit price, as stored.
    pub price: Price,
}

/// One line of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderItem {
    /// The product.
    pub product: Product,
    /// How many.
    #[serde(deserialize_with = "whole_number")]
    pub quantity: i64,
}

/// An order with its status history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Order {
    /// Order id (UUID string); the key of its events.
    pub guid: String,
    /// Status history, normally in timestamp order.
    pub order_status_events: Vec<OrderStatusEvent>,
    /// What was ordered.
    pub order_items: Vec<OrderItem>,
}

impl Order {
    /// The current status: the status event with the greatest timestamp; on equal timestamps
    /// the later one in the list (the one appended last). `None` when there is no status yet.
    pub fn current_status(&self) -> Option<&OrderStatusEvent> {
        // `max_by_key` returns the last of equal maxima, which is the tie rule above.
        self.order_status_events.iter().max_by_key(|e| e.timestamp)
    }
}

// ---------------------------------------------------------------------------------------------
// Source documents
// ---------------------------------------------------------------------------------------------

/// A payment card. Held only by [`Customer`]; never published.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreditCard {
    /// Which card this is.
    #[serde(rename = "type")]
    pub card_type: CreditCardType,
    /// Free-text label.
    pub description: String,
    /// Card number.
    pub number: String,
    /// Expiration, as stored (for example `12/28`).
    pub expiration: String,
    /// Name printed on the card.
    pub name_on_card: String,
}

impl fmt::Debug for CreditCard {
    // Debug output ends up in logs and panic messages; card data must not.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreditCard")
            .field("card_type", &self.card_type)
            .field("description", &self.description)
            .finish_non_exhaustive()
    }
}

/// A customer (`customer.accounts`), the system of record for customer data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Customer {
    /// The customer id.
    #[serde(rename = "_id", deserialize_with = "strict_object_id")]
    pub id: ObjectId,
    /// Name.
    pub name: Name,
    /// Contact details.
    pub contact: Contact,
    /// Addresses.
    pub addresses: Vec<Address>,
    /// Payment cards. Absent reads as none: cards are never published, so a customer without
    /// them is not worth a dead letter.
    #[serde(default)]
    pub credit_cards: Vec<CreditCard>,
}

/// A customer's order history (`customer.orders`), with a projected copy of the customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CustomerOrders {
    /// The customer id, the same ObjectId as the Accounts customer.
    #[serde(rename = "_id", deserialize_with = "strict_object_id")]
    pub id: ObjectId,
    /// Name (projected).
    pub name: Name,
    /// Contact details (projected).
    pub contact: Contact,
    /// Addresses (projected).
    pub addresses: Vec<Address>,
    /// The orders.
    pub orders: Vec<Order>,
}

impl CustomerOrders {
    /// The address fulfillment ships to: the first SHIPPING address.
    pub fn shipping_address(&self) -> Option<&Address> {
        Address::first_of_type(&self.addresses, &AddressType::Shipping)
    }
}

/// The fulfillment of one approved order (`fulfillment.requests`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Fulfillment {
    /// When the request was created, epoch milliseconds.
    #[serde(deserialize_with = "whole_number")]
    pub timestamp: i64,
    /// Customer name.
    pub name: Name,
    /// Customer contact details.
    pub contact: Contact,
    /// Where to ship (one SHIPPING address).
    pub address: Address,
    /// The order; its `orderStatusEvents` hold the fulfillment status.
    pub order: Order,
    /// The carrier, set when shipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shipping_method: Option<ShippingMethod>,
}

#[cfg(test)]
mod tests {
    use bson::doc;

    use super::*;

    fn status(timestamp: i64, status: &str) -> Bson {
        Bson::Document(doc! { "timestamp": timestamp, "orderStatusType": status })
    }

    fn assert_invalid<T: fmt::Debug>(read: Result<T, DocumentError>, path: &str) {
        match read {
            Err(DocumentError::InvalidField { field, .. }) => assert_eq!(field, path),
            other => panic!("expected an invalid `{path}`, got {other:?}"),
        }
    }

    fn order_document(statuses: Vec<Bson>) -> Document {
        doc! {
            "guid": "order-1",
            "orderStatusEvents": statuses,
            "orderItems": [{
                "product": {
                    "guid": "p-1", "title": "Lamp", "description": "A lamp", "price": 12.5,
                },
                "quantity": 2,
            }],
        }
    }

    #[test]
    fn whole_numbers_accept_every_integer_shape_and_refuse_fractions() {
        let cases: Vec<(Bson, Result<i64, &str>)> = vec![
            (Bson::Int64(1_700_000_000_123), Ok(1_700_000_000_123)),
            (Bson::Int32(42), Ok(42)),
            (Bson::Double(1_700_000_000_123.0), Ok(1_700_000_000_123)),
            (Bson::Double(1.5), Err("orderStatusEvents.0.timestamp")),
            (Bson::Double(1e300), Err("orderStatusEvents.0.timestamp")),
            (
                Bson::String("1".into()),
                Err("orderStatusEvents.0.timestamp"),
            ),
        ];
        for (value, expected) in cases {
            let document = order_document(vec![Bson::Document(
                doc! { "timestamp": value.clone(), "orderStatusType": "CREATED" },
            )]);
            let read = from_document::<Order>(&document);
            match expected {
                Ok(ms) => assert_eq!(read.unwrap().order_status_events[0].timestamp, ms),
                Err(field) => match read.unwrap_err() {
                    DocumentError::InvalidField { field: f, .. } => assert_eq!(f, field, "{value}"),
                    other => panic!("{value}: {other:?}"),
                },
            }
        }
    }

    #[test]
    fn missing_and_mistyped_fields_are_named_by_path() {
        let mut document = order_document(vec![status(1, "CREATED")]);
        document.remove("guid");
        assert_eq!(
            from_document::<Order>(&document),
            Err(DocumentError::MissingField {
                field: "guid".into()
            })
        );
        let mut document = order_document(vec![status(1, "CREATED")]);
        document.insert("orderItems", vec![Bson::Document(doc! { "quantity": 1 })]);
        assert_eq!(
            from_document::<Order>(&document),
            Err(DocumentError::MissingField {
                field: "orderItems.0.product".into()
            })
        );
        let mut document = order_document(vec![status(1, "CREATED")]);
        document.insert("orderStatusEvents", "CREATED");
        assert_invalid(from_document::<Order>(&document), "orderStatusEvents");
    }

    #[test]
    fn unknown_enum_values_pass_through() {
        let document = order_document(vec![status(1, "BACKORDERED")]);
        let order = from_document::<Order>(&document).unwrap();
        let current = order.current_status().unwrap();
        assert_eq!(
            current.order_status_type,
            OrderStatusType::Other("BACKORDERED".into())
        );
        assert_eq!(
            serde_json::to_string(&current.order_status_type).unwrap(),
            "\"BACKORDERED\""
        );
        // Equality goes by text, so a hand-built Other of a known value is that value.
        assert_eq!(
            OrderStatusType::Other("APPROVED".into()),
            OrderStatusType::Approved
        );
        assert_eq!(
            OrderStatusType::parse("APPROVED"),
            OrderStatusType::Approved
        );
    }

    #[test]
    fn current_status_is_the_latest_and_the_last_on_ties() {
        let cases = [
            (vec![], None),
            (vec![status(1, "CREATED")], Some("CREATED")),
            (
                vec![
                    status(1, "CREATED"),
                    status(3, "APPROVED"),
                    status(2, "REJECTED"),
                ],
                Some("APPROVED"),
            ),
            (
                vec![
                    status(1, "CREATED"),
                    status(2, "APPROVED"),
                    status(2, "PROCESSING"),
                ],
                Some("PROCESSING"),
            ),
        ];
        for (statuses, expected) in cases {
            let order = from_document::<Order>(&order_document(statuses)).unwrap();
            assert_eq!(
                order.current_status().map(|s| s.order_status_type.as_str()),
                expected
            );
        }
    }

    #[test]
    fn prices_keep_their_stored_kind() {
        for (stored, json) in [
            (Bson::Double(12.5), "12.5"),
            (Bson::Double(10.0), "10.0"),
            (Bson::Int32(10), "10"),
            (Bson::Int64(10), "10"),
        ] {
            let mut document = order_document(vec![]);
            let mut items = document.get_array("orderItems").unwrap().clone();
            let item = items[0].as_document_mut().unwrap();
            item.get_document_mut("product")
                .unwrap()
                .insert("price", stored);
            document.insert("orderItems", items);
            let order = from_document::<Order>(&document).unwrap();
            let price = &order.order_items[0].product.price;
            assert_eq!(serde_json::to_string(price).unwrap(), json);
        }
        let decimal = "1.5".parse::<bson::Decimal128>().unwrap();
        let mut document = order_document(vec![]);
        let mut items = document.get_array("orderItems").unwrap().clone();
        let item = items[0].as_document_mut().unwrap();
        item.get_document_mut("product")
            .unwrap()
            .insert("price", decimal);
        document.insert("orderItems", items);
        assert_invalid(
            from_document::<Order>(&document),
            "orderItems.0.product.price",
        );
    }

    #[test]
    fn ids_must_be_object_ids_and_card_numbers_stay_out_of_debug() {
        let id = ObjectId::parse_str("65f1c0ffee0000000000beef").unwrap();
        let customer = |id: Bson| {
            doc! {
                "_id": id,
                "name": { "title": "Ms.", "firstName": "Ada", "lastName": "Lovelace" },
                "contact": { "primaryPhone": "555-0100", "email": "ada@example.com" },
                "addresses": [],
                "creditCards": [{
                    "type": "PRIMARY", "description": "Visa", "number": "4111111111111111",
                    "expiration": "12/28", "nameOnCard": "Ada Lovelace",
                }],
                "loyaltyTier": "gold",
            }
        };
        let read = from_document::<Customer>(&customer(Bson::ObjectId(id))).unwrap();
        assert_eq!(read.id, id);
        assert_eq!(read.name.middle_name, None);
        assert!(!format!("{read:?}").contains("4111"));
        assert_invalid(
            from_document::<Customer>(&customer(Bson::String(id.to_hex()))),
            "_id",
        );
    }
}
