//! The source documents of the three collections, typed, with the field names the original
//! services store (`docs/domain.md`).
//!
//! Reading rules, the same for every document:
//! - **Extra fields are ignored.** Applications may add fields; a mapper reads only what the
//!   contract names. (Those extra fields are therefore not carried into events.)
//! - **Required fields are required.** A missing or mistyped field is a [`DocumentError`] naming
//!   the field by its dotted MongoDB path (`orders.2.orderStatusEvents.0.timestamp`), so a dead
//!   letter says exactly what to repair. Optional fields (`?` in the contract) are `Option`s;
//!   `null` reads as absent, and absent fields are left out when written.
//! - **Every stored shape is read** (`domain.md`'s "Stored shapes"): whole numbers (`timestamp`,
//!   `quantity`) from int32, int64, a double without fraction or a BSON date; a [`Price`] exactly
//!   from a decimal string, Decimal128, a double or an integer; a [`CustomerId`] from an ObjectId
//!   or a string. A list stored as `null` or left out reads as empty. A value that cannot be read
//!   exactly (a fraction where a whole number belongs, a double beyond 2^53, a price with more
//!   digits than JSON readers keep) is an error, never a silently rounded value.
//! - **Enumerations are open.** A value this release does not know (say a new
//!   [`OrderStatusType`]) reads as `Other(text)` and is written back unchanged, so an older
//!   connector keeps mapping documents written by newer applications.
//!
//! Credit cards exist only on [`Customer`]; no event type has a field that could hold one (see
//! [`crate::events`]), and their `Debug` output hides the number.

use std::borrow::Cow;
use std::fmt;

use bson::oid::ObjectId;
use bson::{Bson, Document};
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::de::{self, DeserializeOwned, Deserializer};
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

/// A price: an exact decimal, read from every BSON type real data stores it as.
///
/// - **Read from** a decimal string (`"3.99"`, how Spring Data writes a Java `BigDecimal`),
///   Decimal128, a double, int32 or int64. A double is read as the shortest decimal that
///   round-trips to it (`3.99`, never `3.9900000000000002`).
/// - **Exact for every reader.** A price is a decimal that a JSON reader keeping numbers as IEEE
///   doubles (JavaScript, Jackson's and Python's defaults, this project's projectors) reads back
///   as that same decimal: every decimal of up to [`Price::MAX_SIGNIFICANT_DIGITS`] significant
///   digits, and every double. A decimal with more digits than a double holds is a defect, never
///   a silently rounded price; so are NaN and infinities.
/// - **Written** to JSON (human-readable serializers) as a number with the decimal's own digits,
///   less trailing fractional zeros (`"3.99"` gives `3.99`, `"3.50"` gives `3.5`), and to BSON's binary serializer ([`bson::to_raw_document_buf`],
///   non-human-readable) as Decimal128.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Price(rust_decimal::Decimal);

impl Price {
    /// Up to this many significant digits, every decimal is a price (see the type's doc).
    pub const MAX_SIGNIFICANT_DIGITS: u32 = 15;

    /// Reads decimal text: an optional `-`, digits, an optional fraction and an optional exponent
    /// (`1.05E+3`, as Decimal128 prints large and small values). No spaces, no `+` sign, no
    /// digit separators.
    pub fn parse(text: &str) -> Result<Self, String> {
        if !is_decimal_text(text) {
            return Err(format!("`{text}` is not a decimal number"));
        }
        let exact = |text: &str| {
            if text.contains(['e', 'E']) {
                rust_decimal::Decimal::from_scientific(text)
            } else {
                rust_decimal::Decimal::from_str_exact(text)
            }
        };
        let decimal = exact(text)
            // A Decimal128 may carry more trailing fractional zeros than the scale a decimal
            // holds; they add no digit.
            .or_else(|_| exact(&trim_fraction_zeros(text)))
            .map_err(|_| format!("`{text}` is out of range or more precise than a price can be"))?;
        Self::checked(decimal)
    }

    /// A price stored as a double: the shortest decimal that reads back as `value`.
    pub fn from_f64(value: f64) -> Result<Self, String> {
        if !value.is_finite() {
            return Err(format!("{value} is not a price"));
        }
        // `Display` of an f64 prints the shortest digits that round-trip, without an exponent.
        Self::parse(&value.to_string())
    }

    /// A price from a stored BSON value of any type real data uses for prices.
    pub fn from_bson(value: &Bson) -> Result<Self, String> {
        match value {
            Bson::String(text) => Self::parse(text),
            Bson::Double(value) => Self::from_f64(*value),
            Bson::Int32(value) => Self::checked((*value).into()),
            Bson::Int64(value) => Self::checked((*value).into()),
            Bson::Decimal128(value) => {
                Self::parse(&value.to_string()).map_err(|reason| format!("Decimal128 {reason}"))
            }
            other => Err(format!(
                "expected a decimal string, Decimal128, double, int32 or int64, found {}",
                bson_type_name(other)
            )),
        }
    }

    /// `decimal` if a JSON reader that keeps numbers as doubles reads back this very decimal.
    fn checked(decimal: rust_decimal::Decimal) -> Result<Self, String> {
        let as_double: f64 = decimal.to_string().parse().unwrap_or(f64::NAN);
        let read_back = as_double
            .is_finite()
            .then(|| rust_decimal::Decimal::from_str_exact(&as_double.to_string()).ok())
            .flatten();
        if read_back != Some(decimal) {
            return Err(format!(
                "{decimal} cannot be published exactly: a JSON reader using doubles reads it as \
                 {as_double}"
            ));
        }
        // Trailing fractional zeros add no value and a JSON reader drops them: without them, a
        // price reads back to the same bytes it was written as.
        Ok(Price(decimal.normalize()))
    }

    /// The exact value.
    pub fn decimal(&self) -> rust_decimal::Decimal {
        self.0
    }

    /// The value as BSON Decimal128, with the same digits.
    pub fn to_decimal128(&self) -> bson::Decimal128 {
        // A finite decimal of at most 28 digits always fits a Decimal128 (34 digits).
        self.0
            .to_string()
            .parse()
            .expect("every rust_decimal value is a valid Decimal128")
    }
}

impl fmt::Display for Price {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl From<i64> for Price {
    fn from(value: i64) -> Self {
        Price(value.into())
    }
}

impl std::str::FromStr for Price {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        Self::parse(text)
    }
}

impl Serialize for Price {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            // A JSON number token with exactly these digits (serde_json writes a RawValue as is).
            serde_json::value::RawValue::from_string(self.0.to_string())
                .map_err(serde::ser::Error::custom)?
                .serialize(serializer)
        } else {
            self.to_decimal128().serialize(serializer)
        }
    }
}

impl<'de> Deserialize<'de> for Price {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Through `Bson`, so every stored type arrives as itself (Decimal128 included) from
        // BSON, and JSON numbers and strings arrive as doubles, integers and strings.
        let value = Bson::deserialize(deserializer)?;
        Price::from_bson(&value).map_err(de::Error::custom)
    }
}

impl JsonSchema for Price {
    fn schema_name() -> Cow<'static, str> {
        "Price".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        schemars::json_schema!({
            "type": "number",
            "description": format!(
                "An exact decimal written with its own digits (3.99, never 3.9900000000000002) \
                 that a reader using IEEE doubles reads exactly (any decimal of up to {} \
                 significant digits is one).",
                Price::MAX_SIGNIFICANT_DIGITS
            ),
            "examples": [3.99, 10, 12.5],
        })
    }
}

/// `-?digits(.digits)?([eE][+-]?digits)?`
fn is_decimal_text(text: &str) -> bool {
    let all_digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    let unsigned = text.strip_prefix('-').unwrap_or(text);
    let (number, exponent) = match unsigned.split_once(['e', 'E']) {
        Some((number, exponent)) => (number, Some(exponent)),
        None => (unsigned, None),
    };
    let (whole, fraction) = match number.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (number, None),
    };
    all_digits(whole)
        && fraction.is_none_or(all_digits)
        && exponent.is_none_or(|e| all_digits(e.strip_prefix(['+', '-']).unwrap_or(e)))
}

/// `text` (valid decimal text) without the trailing zeros of its fraction.
fn trim_fraction_zeros(text: &str) -> String {
    let (number, exponent) = match text.find(['e', 'E']) {
        Some(at) => text.split_at(at),
        None => (text, ""),
    };
    let number = if number.contains('.') {
        number.trim_end_matches('0').trim_end_matches('.')
    } else {
        number
    };
    format!("{number}{exponent}")
}

/// A BSON type's name as the MongoDB manual spells it, for error messages.
pub fn bson_type_name(value: &Bson) -> &'static str {
    element_type_name(value.element_type())
}

/// The name MongoDB's `$type` gives BSON type `kind`.
pub fn element_type_name(kind: bson::spec::ElementType) -> &'static str {
    use bson::spec::ElementType::*;
    match kind {
        Double => "double",
        String => "string",
        EmbeddedDocument => "object",
        Array => "array",
        Binary => "binData",
        Undefined => "undefined",
        ObjectId => "objectId",
        Boolean => "bool",
        DateTime => "date",
        Null => "null",
        RegularExpression => "regex",
        DbPointer => "dbPointer",
        JavaScriptCode => "javascript",
        Symbol => "symbol",
        JavaScriptCodeWithScope => "javascriptWithScope",
        Int32 => "int",
        Timestamp => "timestamp",
        Int64 => "long",
        Decimal128 => "decimal",
        MaxKey => "maxKey",
        MinKey => "minKey",
    }
}

/// Reads a whole number (epoch milliseconds, quantities) from int32, int64, a double without
/// fraction (the mongo shell writes every number as a double) or a BSON date (its epoch
/// milliseconds). A fraction, or a double beyond 2^53 (where doubles skip integers, so the value
/// may already be rounded), is an error rather than a number nobody wrote.
pub(crate) fn whole_number<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    let value = Bson::deserialize(deserializer)?;
    whole_number_from(&value).map_err(de::Error::custom)
}

fn whole_number_from(value: &Bson) -> Result<i64, String> {
    const EXACT: f64 = 9_007_199_254_740_992.0;
    match value {
        Bson::Int32(value) => Ok(i64::from(*value)),
        Bson::Int64(value) => Ok(*value),
        Bson::Double(value) if value.fract() == 0.0 && value.abs() <= EXACT => Ok(*value as i64),
        Bson::Double(value) => Err(format!("{value} is not a whole number")),
        Bson::DateTime(date) => Ok(date.timestamp_millis()),
        other => Err(format!(
            "expected a whole number (int, long, a double without fraction, or a date), found {}",
            bson_type_name(other)
        )),
    }
}

/// A list that real data may store as `null` or leave out (Spring omits null fields): both read
/// as empty.
pub(crate) fn list<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<Vec<T>>::deserialize(deserializer).map(Option::unwrap_or_default)
}

/// A customer id: the `_id` of `customer.accounts` and of `customer.orders`.
///
/// Spring stores a Java `String` id as an ObjectId when it is 24 hex digits and as a string
/// otherwise; both occur. The record key (and the payloads' `id` / `customerId`) is the
/// ObjectId's hex or the string itself, and [`CustomerId::from_key`] applies Spring's rule to
/// find the `_id` again.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CustomerId {
    /// Stored as an ObjectId.
    ObjectId(ObjectId),
    /// Stored as a string (not empty).
    Text(String),
}

impl CustomerId {
    /// The record key: ObjectId hex, or the string.
    pub fn key(&self) -> String {
        match self {
            CustomerId::ObjectId(id) => id.to_hex(),
            CustomerId::Text(text) => text.clone(),
        }
    }

    /// The id a key stands for, by Spring's rule: 24 hex digits are an ObjectId, anything else a
    /// string. `None` for an empty key.
    pub fn from_key(key: &str) -> Option<Self> {
        if key.is_empty() {
            return None;
        }
        Some(match ObjectId::parse_str(key) {
            Ok(id) if key.len() == 24 => CustomerId::ObjectId(id),
            _ => CustomerId::Text(key.to_owned()),
        })
    }

    /// Reads a stored `_id`: an ObjectId or a non-empty string.
    pub fn from_bson(value: &Bson) -> Result<Self, String> {
        match value {
            Bson::ObjectId(id) => Ok(CustomerId::ObjectId(*id)),
            Bson::String(text) if !text.is_empty() => Ok(CustomerId::Text(text.clone())),
            Bson::String(_) => Err("is an empty string".to_owned()),
            other => Err(format!(
                "expected an objectId or a string, found {}",
                bson_type_name(other)
            )),
        }
    }
}

impl fmt::Display for CustomerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key())
    }
}

impl From<CustomerId> for Bson {
    fn from(id: CustomerId) -> Self {
        match id {
            CustomerId::ObjectId(id) => Bson::ObjectId(id),
            CustomerId::Text(text) => Bson::String(text),
        }
    }
}

impl Serialize for CustomerId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            CustomerId::ObjectId(id) => id.serialize(serializer),
            CustomerId::Text(text) => serializer.serialize_str(text),
        }
    }
}

impl<'de> Deserialize<'de> for CustomerId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Bson::deserialize(deserializer)?;
        CustomerId::from_bson(&value).map_err(de::Error::custom)
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
    #[serde(default, deserialize_with = "list")]
    pub order_status_events: Vec<OrderStatusEvent>,
    /// What was ordered.
    #[serde(default, deserialize_with = "list")]
    pub order_items: Vec<OrderItem>,
}

impl Order {
    /// The current status: the status event with the greatest timestamp; on equal timestamps
    /// the later one in the list (the one appended last). `None` when there is no status yet.
    pub fn current_status(&self) -> Option<&OrderStatusEvent> {
        OrderStatusEvent::current(&self.order_status_events)
    }
}

impl OrderStatusEvent {
    /// The current status of a history: the event with the greatest timestamp; on equal
    /// timestamps the later one in the list (the one appended last).
    pub fn current(history: &[OrderStatusEvent]) -> Option<&OrderStatusEvent> {
        // `max_by_key` returns the last of equal maxima, which is the tie rule above.
        history.iter().max_by_key(|e| e.timestamp)
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
    #[serde(rename = "_id")]
    pub id: CustomerId,
    /// Name.
    pub name: Name,
    /// Contact details.
    pub contact: Contact,
    /// Addresses.
    #[serde(default, deserialize_with = "list")]
    pub addresses: Vec<Address>,
    /// Payment cards. Absent reads as none: cards are never published, so a customer without
    /// them is not worth a dead letter.
    #[serde(default, deserialize_with = "list")]
    pub credit_cards: Vec<CreditCard>,
}

/// A customer's order history (`customer.orders`), with a projected copy of the customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CustomerOrders {
    /// The customer id, the same as the Accounts customer's.
    #[serde(rename = "_id")]
    pub id: CustomerId,
    /// Name (projected).
    pub name: Name,
    /// Contact details (projected).
    pub contact: Contact,
    /// Addresses (projected).
    #[serde(default, deserialize_with = "list")]
    pub addresses: Vec<Address>,
    /// The orders.
    #[serde(default, deserialize_with = "list")]
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

    fn order_with_price(price: impl Into<Bson>) -> Document {
        let mut document = order_document(vec![]);
        let mut items = document.get_array("orderItems").unwrap().clone();
        let item = items[0].as_document_mut().unwrap();
        item.get_document_mut("product")
            .unwrap()
            .insert("price", price.into());
        document.insert("orderItems", items);
        document
    }

    #[test]
    fn prices_read_exactly_from_every_stored_type() {
        let decimal = |text: &str| text.parse::<bson::Decimal128>().unwrap();
        // (stored, the JSON an event carries)
        let cases: Vec<(Bson, &str)> = vec![
            (Bson::String("3.99".into()), "3.99"),
            (Bson::Decimal128(decimal("3.99")), "3.99"),
            (Bson::Double(3.99), "3.99"),
            (Bson::Double(0.1 + 0.2), "0.30000000000000004"),
            (Bson::String("3.50".into()), "3.5"),
            (Bson::Decimal128(decimal("3.50")), "3.5"),
            (Bson::Double(10.0), "10"),
            (Bson::Int32(10), "10"),
            (Bson::Int64(1_249), "1249"),
            (Bson::String("-0.01".into()), "-0.01"),
            (Bson::Decimal128(decimal("1.05E+3")), "1050"),
            (
                Bson::Decimal128(decimal("1.990000000000000000000000000000000")),
                "1.99",
            ),
            (Bson::String("999999999999999".into()), "999999999999999"),
        ];
        for (stored, json) in cases {
            let order = from_document::<Order>(&order_with_price(stored.clone())).unwrap();
            let price = &order.order_items[0].product.price;
            assert_eq!(serde_json::to_string(price).unwrap(), json, "{stored:?}");
            // What a JSON reader gets back is the same decimal.
            let read: Price = serde_json::from_str(json).unwrap();
            assert_eq!(read.decimal(), price.decimal(), "{stored:?}");
        }
    }

    #[test]
    fn prices_that_cannot_be_exact_are_errors_naming_the_field() {
        let decimal = |text: &str| text.parse::<bson::Decimal128>().unwrap();
        let cases: Vec<(Bson, &str)> = vec![
            (Bson::String("abc".into()), "not a decimal"),
            (Bson::String("".into()), "not a decimal"),
            (Bson::String(" 3.99".into()), "not a decimal"),
            (Bson::String("1_000".into()), "not a decimal"),
            (Bson::String("+3".into()), "not a decimal"),
            (Bson::String("3.".into()), "not a decimal"),
            (Bson::String("1.00000000000000001".into()), "reads it as 1"),
            (
                Bson::Decimal128(decimal("0.1000000000000000055511151231257827")),
                "more precise",
            ),
            (
                Bson::String("0.100000000000000005551".into()),
                "reads it as 0.1",
            ),
            (Bson::Decimal128(decimal("NaN")), "Decimal128"),
            (Bson::Decimal128(decimal("-Infinity")), "Decimal128"),
            (Bson::Decimal128(decimal("1E+6000")), "out of range"),
            (
                Bson::String("79228162514264337593543950335".into()),
                "reads it as",
            ),
            (Bson::Double(f64::NAN), "not a price"),
            (Bson::Boolean(true), "found bool"),
            (Bson::Null, "found null"),
        ];
        for (stored, reason) in cases {
            match from_document::<Order>(&order_with_price(stored.clone())) {
                Err(DocumentError::InvalidField { field, reason: why }) => {
                    assert_eq!(field, "orderItems.0.product.price", "{stored:?}");
                    assert!(why.contains(reason), "{stored:?}: {why}");
                }
                other => panic!("{stored:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn prices_write_decimal128_to_binary_bson() {
        let price = Price::parse("3.99").unwrap();
        #[derive(Serialize)]
        struct Holder {
            price: Price,
        }
        let raw = bson::to_raw_document_buf(&Holder { price }).unwrap();
        let document = Document::try_from(raw.as_ref()).unwrap();
        assert_eq!(
            document.get("price"),
            Some(&Bson::Decimal128("3.99".parse().unwrap()))
        );
    }

    #[test]
    fn timestamps_read_from_dates_and_lists_from_null() {
        let date = bson::DateTime::from_millis(1_700_000_000_123);
        let mut document = order_document(vec![Bson::Document(
            doc! { "timestamp": date, "orderStatusType": "CREATED", "note": Bson::Null },
        )]);
        document.insert("orderItems", Bson::Null);
        let order = from_document::<Order>(&document).unwrap();
        assert_eq!(order.order_status_events[0].timestamp, 1_700_000_000_123);
        assert_eq!(order.order_status_events[0].note, None);
        assert!(order.order_items.is_empty());
        document.remove("orderItems");
        assert!(
            from_document::<Order>(&document)
                .unwrap()
                .order_items
                .is_empty()
        );
    }

    #[test]
    fn customer_ids_are_object_ids_or_strings_and_card_numbers_stay_out_of_debug() {
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
                "_class": "com.storefront.accounts.Customer",
            }
        };
        let read = from_document::<Customer>(&customer(Bson::ObjectId(id))).unwrap();
        assert_eq!(read.id, CustomerId::ObjectId(id));
        assert_eq!(read.id.key(), id.to_hex());
        assert_eq!(read.name.middle_name, None);
        assert!(!format!("{read:?}").contains("4111"));
        let read = from_document::<Customer>(&customer(Bson::String("ada-1".into()))).unwrap();
        assert_eq!(read.id, CustomerId::Text("ada-1".into()));
        assert_invalid(
            from_document::<Customer>(&customer(Bson::String(String::new()))),
            "_id",
        );
        assert_invalid(from_document::<Customer>(&customer(Bson::Int32(7))), "_id");
    }

    #[test]
    fn keys_find_the_id_by_springs_rule() {
        let hex = "65f1c0ffee0000000000beef";
        assert_eq!(
            CustomerId::from_key(hex),
            Some(CustomerId::ObjectId(ObjectId::parse_str(hex).unwrap()))
        );
        assert_eq!(
            CustomerId::from_key("ada-1"),
            Some(CustomerId::Text("ada-1".into()))
        );
        // 24 characters but not hex: a string.
        let not_hex = "zzf1c0ffee0000000000beef";
        assert_eq!(
            CustomerId::from_key(not_hex),
            Some(CustomerId::Text(not_hex.into()))
        );
        assert_eq!(CustomerId::from_key(""), None);
        for id in [
            CustomerId::ObjectId(ObjectId::parse_str(hex).unwrap()),
            CustomerId::Text("ada-1".into()),
        ] {
            assert_eq!(CustomerId::from_key(&id.key()), Some(id));
        }
    }
}
