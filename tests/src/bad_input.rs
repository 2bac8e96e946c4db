//! The bad-input corpus (issue 16): malformed source documents and malformed event records,
//! generated from a seed, each classified from the contract (`docs/domain.md`,
//! `docs/mapping.md`, the projectors' decoder rules) as either "must dead-letter with a reason
//! naming X" or "must map to Y".
//!
//! - [`Corpus::documents`]: every field of every source document (`customer.accounts`,
//!   `customer.orders`, `fulfillment.requests`), nested list entries included (addresses, orders,
//!   status history, order items), with a wrong type, missing, `null` and oversized, and the
//!   stored shapes the contract accepts in the same places. Each goes to the connector: a defect
//!   ends in its dead-letter topic once, with `dlq_field` the field's dotted path.
//! - [`Corpus::records`]: records written straight to the three event topics: truncated JSON,
//!   invalid UTF-8 (value, key, header values), each payload field with a wrong type, missing or
//!   `null`, huge values (one record near Kafka's maximum message size), unknown and
//!   contradictory CloudEvents headers, and wrong, empty and missing keys. Each goes to the
//!   projectors: poison ends in their dead-letter topic once, with its kind and a reason naming
//!   the header or field.
//!
//! The same seed gives the same corpus (values, wrong types and the order of everything);
//! [`seed`] reads it from `STOREFRONT_BAD_INPUT_SEED` (default [`DEFAULT_SEED`], as CI runs).
//! Every document and record carries its own ids, so each outcome is traced to its item.

use mongodb::bson::oid::ObjectId;
use mongodb::bson::{Bson, DateTime, Decimal128, Document, doc};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

/// The environment variable that sets the seed.
pub const SEED_VAR: &str = "STOREFRONT_BAD_INPUT_SEED";
/// The seed CI runs with.
pub const DEFAULT_SEED: u64 = 16;

/// Test card numbers (Luhn-valid) planted in every customer document: none may leave Accounts.
pub const CARDS: [&str; 3] = ["4111111111111111", "5500005555555559", "6011000990139424"];

/// Larger than the connector's `stream.max_event_bytes` (1,000,000).
const OVERSIZED: usize = 1_100_000;

/// The seed: `STOREFRONT_BAD_INPUT_SEED`, or [`DEFAULT_SEED`].
pub fn seed() -> u64 {
    match std::env::var(SEED_VAR) {
        Ok(text) => text
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{SEED_VAR}={text} is not an unsigned integer")),
        Err(_) => DEFAULT_SEED,
    }
}

/// A source collection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Source {
    /// `customer.accounts`.
    Accounts,
    /// `customer.orders`.
    Orders,
    /// `fulfillment.requests`.
    Fulfillment,
}

/// An event topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Topic {
    /// `accounts.customer.change`.
    Customer,
    /// `fulfillment.order.change`.
    Status,
    /// `orders.order.fulfill`.
    Request,
}

/// What a corpus item must become.
#[derive(Debug, Clone, PartialEq)]
pub enum Mapping {
    /// No event and no projection change.
    Nothing,
    /// The customer copy in `customer.orders` (`_id`) holds exactly these `name`, `contact`,
    /// `addresses`.
    Customer {
        /// The `_id` of the copy.
        id: Bson,
        /// `{name, contact, addresses}` as JSON.
        copy: Value,
    },
    /// A fulfillment request document `_id = guid` in `fulfillment.requests` with these fields.
    Request {
        /// The order guid.
        guid: String,
        /// `{name, contact, address, order: {guid, orderStatusEvents, orderItems}}` as JSON,
        /// prices as numbers.
        request: Value,
    },
    /// The order `guid` (in a host document of `customer.orders`) ends with exactly this
    /// history: its CREATED status, then `(timestamp, type)`.
    Status {
        /// The order guid.
        guid: String,
        /// Timestamp of the new status.
        timestamp: i64,
        /// Its type.
        status: String,
    },
}

/// A dead letter an item must produce.
#[derive(Debug, Clone, PartialEq)]
pub struct Letter {
    /// Connector: `dlq_field` (empty: no such header). Projectors: `dlq_kind`.
    pub field: String,
    /// `dlq_field` may also name a field inside `field`: an object field holding a BSON value
    /// the driver reads as a document (a date is `{"$date": ...}`) is reported by the first
    /// field that document lacks.
    pub or_inside: bool,
    /// The reason contains every one of these.
    pub reason: Vec<String>,
}

/// A source document of the corpus.
#[derive(Debug, Clone)]
pub struct DocumentItem {
    /// What it is (`orders: orders.0.guid wrong type (int32)`).
    pub name: String,
    /// `wrong type`, `missing`, `null`, `oversized`, `stored shape`, `good`, ...
    pub category: &'static str,
    /// Where it is written.
    pub source: Source,
    /// The stored document.
    pub document: Document,
    /// The dead letters it must produce (each exactly once).
    pub letters: Vec<Letter>,
    /// What it must map to.
    pub mapping: Mapping,
    /// How many events the connector must publish for it (0 or 1, 2 for a customer changed
    /// again: every change of a customer is its own event).
    pub events: usize,
    /// After this document is written, the document at this index of [`Corpus::documents`] is
    /// changed again without touching its defect (`$set` of `_class`): what was dead-lettered
    /// is not dead-lettered again, and what was published once per fact is not published again.
    pub touch: Option<usize>,
}

/// Raw record headers (`None` value: a header without a value).
pub type Headers = Vec<(String, Option<Vec<u8>>)>;

/// An event record of the corpus.
#[derive(Debug, Clone)]
pub struct RecordItem {
    /// What it is.
    pub name: String,
    /// `truncated`, `wrong type`, `headers`, `key`, `huge`, `good`, ...
    pub category: &'static str,
    /// The topic it is written to.
    pub topic: Topic,
    /// Key bytes (`None`: no key).
    pub key: Option<Vec<u8>>,
    /// Value bytes (`None`: a tombstone).
    pub value: Option<Vec<u8>>,
    /// Headers, raw (`None` value: a header without a value).
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    /// The dead letter it must produce (`field` is the `dlq_kind`), if any.
    pub letter: Option<Letter>,
    /// What it must map to.
    pub mapping: Mapping,
    /// The broker refuses to store it (a record without a key on a compacted topic): writing
    /// it must fail, and nothing reaches the projectors.
    pub refused_by_broker: bool,
}

/// The whole corpus of one seed.
#[derive(Debug, Clone)]
pub struct Corpus {
    /// Its seed.
    pub seed: u64,
    /// `customer.orders` documents written first, holding the orders (status CREATED) that the
    /// fulfillment documents and the status records refer to.
    pub hosts: Vec<Document>,
    /// Source documents, in write order (good ones interleaved, sentinels last per source).
    pub documents: Vec<DocumentItem>,
    /// Event records, in write order (good ones interleaved, sentinels last per topic).
    pub records: Vec<RecordItem>,
}

impl Corpus {
    /// Items per category, for the docs and the report: `(source or topic, category, count)`.
    pub fn sizes(&self) -> Vec<(String, &'static str, usize)> {
        let mut counts = std::collections::BTreeMap::<(String, &'static str), usize>::new();
        for item in &self.documents {
            *counts
                .entry((format!("{:?}", item.source), item.category))
                .or_default() += 1;
        }
        for item in &self.records {
            *counts
                .entry((format!("{:?} topic", item.topic), item.category))
                .or_default() += 1;
        }
        counts.into_iter().map(|((a, b), n)| (a, b, n)).collect()
    }
}

/// The status every host order starts with.
pub const HOST_CREATED_AT: i64 = 1_000;

// ---------------------------------------------------------------------------------------------
// Values
// ---------------------------------------------------------------------------------------------

struct Gen {
    rng: StdRng,
    seed: u64,
    next: u64,
}

/// A wrong-typed stand-in of each BSON type, chosen among the types a field must not have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Int32,
    Int64,
    Double,
    Bool,
    Text,
    Array,
    Object,
    Date,
    Oid,
}

const KINDS: [Kind; 9] = [
    Kind::Int32,
    Kind::Int64,
    Kind::Double,
    Kind::Bool,
    Kind::Text,
    Kind::Array,
    Kind::Object,
    Kind::Date,
    Kind::Oid,
];

impl Gen {
    fn new(seed: u64) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed),
            seed,
            next: 0,
        }
    }

    /// A fresh id suffix.
    fn n(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    /// A fresh id with `prefix` and the seed.
    fn id(&mut self, prefix: &str) -> String {
        let n = self.n();
        format!("{prefix}-{}-{n}", self.seed)
    }

    fn guid(&mut self) -> String {
        let a: u32 = self.rng.random();
        let b: u16 = self.rng.random();
        let n = self.n();
        format!("{a:08x}-{b:04x}-4{:03x}-8000-{:012x}", self.seed % 4096, n)
    }

    /// An ObjectId from the seed (`ObjectId::new` would differ on every run).
    fn oid(&mut self) -> ObjectId {
        ObjectId::from_bytes(self.rng.random())
    }

    fn word(&mut self) -> String {
        const WORDS: [&str; 12] = [
            "Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Radia",
            "Leslie", "Margaret", "Tony",
        ];
        (*WORDS.choose(&mut self.rng).unwrap()).to_owned()
    }

    fn phone(&mut self) -> String {
        format!("555-{:04}", self.rng.random_range(0..10_000))
    }

    /// A value of a type in `wrong` (unique enough to tell items apart).
    fn wrong(&mut self, wrong: &[Kind]) -> (Bson, &'static str) {
        let kind = *wrong.choose(&mut self.rng).unwrap();
        let n = self.n() as i64;
        match kind {
            Kind::Int32 => (Bson::Int32(1_000 + n as i32), "int32"),
            Kind::Int64 => (Bson::Int64(5_000_000_000 + n), "int64"),
            Kind::Double => (Bson::Double(n as f64 + 0.25), "double"),
            Kind::Bool => (Bson::Boolean(self.rng.random()), "bool"),
            Kind::Text => (Bson::String(format!("text-{n}")), "string"),
            Kind::Array => (Bson::Array(vec![Bson::Int32(n as i32)]), "array"),
            Kind::Object => (Bson::Document(doc! { "n": n }), "object"),
            Kind::Date => (
                Bson::DateTime(DateTime::from_millis(1_700_000_000_000 + n)),
                "date",
            ),
            Kind::Oid => (Bson::ObjectId(self.oid()), "objectId"),
        }
    }
}

fn except(allowed: &[Kind]) -> Vec<Kind> {
    KINDS
        .iter()
        .copied()
        .filter(|k| !allowed.contains(k))
        .collect()
}

/// Sets `path` (dotted, numeric segments index arrays) in `root` to `value`; `None` removes it.
fn set_path(root: &mut Document, path: &str, value: Option<Bson>) {
    fn walk(node: &mut Bson, parts: &[&str], value: Option<Bson>) {
        let (head, rest) = (parts[0], &parts[1..]);
        match node {
            Bson::Document(document) => {
                if rest.is_empty() {
                    match value {
                        Some(value) => {
                            document.insert(head, value);
                        }
                        None => {
                            document.remove(head);
                        }
                    }
                } else {
                    walk(document.get_mut(head).expect(head), rest, value);
                }
            }
            Bson::Array(items) => {
                let index: usize = head.parse().expect("an index");
                if rest.is_empty() {
                    match value {
                        Some(value) => items[index] = value,
                        None => {
                            items.remove(index);
                        }
                    }
                } else {
                    walk(&mut items[index], rest, value);
                }
            }
            other => panic!("{head} under {other:?}"),
        }
    }
    let parts: Vec<&str> = path.split('.').collect();
    let mut node = Bson::Document(std::mem::take(root));
    walk(&mut node, &parts, value);
    let Bson::Document(document) = node else {
        unreachable!()
    };
    *root = document;
}

/// The value at `path` of a JSON value (numeric segments index arrays), mutable.
fn json_at<'a>(root: &'a mut Value, path: &str) -> &'a mut Value {
    path.split('.').fold(root, |node, part| match node {
        Value::Array(items) => &mut items[part.parse::<usize>().unwrap()],
        other => &mut other[part],
    })
}

fn set_json(root: &mut Value, path: &str, value: Option<Value>) {
    let (parent, last) = match path.rsplit_once('.') {
        Some((parent, last)) => (json_at(root, parent), last),
        None => (root, path),
    };
    match (parent, value) {
        (Value::Array(items), Some(value)) => items[last.parse::<usize>().unwrap()] = value,
        (Value::Array(items), None) => {
            items.remove(last.parse::<usize>().unwrap());
        }
        (Value::Object(map), Some(value)) => {
            map.insert(last.to_owned(), value);
        }
        (Value::Object(map), None) => {
            map.remove(last);
        }
        (other, _) => panic!("{path} under {other}"),
    }
}

fn huge(seed_char: char) -> String {
    seed_char.to_string().repeat(OVERSIZED)
}

// ---------------------------------------------------------------------------------------------
// Valid documents and their expected copies
// ---------------------------------------------------------------------------------------------

struct People {
    name: Document,
    contact: Document,
    addresses: Vec<Document>,
}

fn people(g: &mut Gen) -> People {
    let first = g.word();
    let last = g.word();
    People {
        name: doc! { "title": "Dr.", "firstName": &first, "middleName": "Q", "lastName": &last,
        "suffix": "III" },
        contact: doc! { "primaryPhone": g.phone(), "secondaryPhone": g.phone(),
        "email": format!("{}.{}@example.com", first.to_lowercase(), g.n()) },
        addresses: vec![
            doc! { "type": "SHIPPING", "description": "home", "address1": format!("{} Main St", g.n()),
            "address2": "Apt 2", "city": "Springfield", "state": "IL", "postalCode": "62704" },
            doc! { "type": "BILLING", "description": "office", "address1": format!("{} Elm St", g.n()),
            "city": "Shelbyville", "state": "IL", "postalCode": "62565" },
        ],
    }
}

fn cards(g: &mut Gen) -> Bson {
    let card = |number: &str, kind: &str| {
        doc! { "type": kind, "description": "VISA", "number": number, "expiration": "12/30",
        "nameOnCard": "Card Holder" }
    };
    let first = *CARDS.choose(&mut g.rng).unwrap();
    Bson::Array(vec![
        Bson::Document(card(first, "PRIMARY")),
        Bson::Document(card(CARDS[2], "ALTERNATE")),
    ])
}

/// `{name, contact, addresses}` as the projection must hold them: JSON, `null` optional fields
/// left out (the contract publishes them as absent).
fn copy_json(name: &Bson, contact: &Bson, addresses: Option<&Bson>) -> Value {
    fn strip_nulls(value: &mut Value) {
        if let Value::Object(map) = value {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(strip_nulls);
        }
        if let Value::Array(items) = value {
            items.iter_mut().for_each(strip_nulls);
        }
    }
    let addresses = match addresses {
        None | Some(Bson::Null) => json!([]),
        Some(list) => list.clone().into_relaxed_extjson(),
    };
    let mut copy = json!({
        "name": name.clone().into_relaxed_extjson(),
        "contact": contact.clone().into_relaxed_extjson(),
        "addresses": addresses,
    });
    strip_nulls(&mut copy);
    copy
}

fn customer_copy(document: &Document) -> Value {
    copy_json(
        document.get("name").unwrap(),
        document.get("contact").unwrap(),
        document.get("addresses"),
    )
}

fn account(g: &mut Gen, id: Bson) -> Document {
    let p = people(g);
    doc! {
        "_id": id,
        "_class": "demo.storefront.accounts.model.CustomerAccount",
        "name": p.name,
        "contact": p.contact,
        "addresses": p.addresses,
        "creditCards": cards(g),
    }
}

fn order(g: &mut Gen, guid: &str) -> Document {
    doc! {
        "_class": "demo.storefront.orders.model.Order",
        "guid": guid,
        "orderStatusEvents": [
            { "timestamp": 10_000_i64, "orderStatusType": "CREATED", "note": Bson::Null },
            { "timestamp": 20_000_i64, "orderStatusType": "APPROVED", "note": "ok" },
        ],
        "orderItems": [{
            "product": { "guid": format!("p-{}", g.n()), "title": "Lamp", "description": "A lamp",
                         "price": "3.99" },
            "quantity": 2_i64,
        }],
    }
}

fn customer_orders(g: &mut Gen, id: Bson, guid: &str) -> Document {
    let p = people(g);
    doc! {
        "_id": id,
        "_class": "demo.storefront.orders.model.CustomerOrders",
        "name": p.name,
        "contact": p.contact,
        "addresses": p.addresses,
        "orders": [order(g, guid)],
    }
}

/// A number of a stored price or whole number as JSON (Decimal128 and decimal strings as their
/// digits, integers and dates as integers).
fn number_json(value: &Bson) -> Value {
    match value {
        Bson::String(text) => serde_json::from_str(text).unwrap(),
        Bson::Decimal128(d) => serde_json::from_str(&d.to_string()).unwrap(),
        Bson::Double(d) if d.fract() == 0.0 => json!(*d as i64),
        Bson::Double(d) => json!(d),
        Bson::Int32(i) => json!(i),
        Bson::Int64(i) => json!(i),
        Bson::DateTime(d) => json!(d.timestamp_millis()),
        other => panic!("not a number: {other:?}"),
    }
}

/// The request a well-formed (possibly reshaped) `customer.orders` document's one order asks for.
fn request_json(document: &Document) -> Value {
    let order = document.get_array("orders").unwrap()[0]
        .as_document()
        .unwrap();
    let name = Bson::Document(document.get_document("name").unwrap().clone());
    let contact = Bson::Document(document.get_document("contact").unwrap().clone());
    let address = document
        .get_array("addresses")
        .unwrap()
        .iter()
        .find(|a| a.as_document().and_then(|a| a.get_str("type").ok()) == Some("SHIPPING"))
        .unwrap()
        .clone();
    let copy = copy_json(&name, &contact, Some(&Bson::Array(vec![address])));
    let statuses: Vec<Value> = match order.get("orderStatusEvents") {
        Some(Bson::Array(list)) => list
            .iter()
            .map(|s| {
                let s = s.as_document().unwrap();
                let mut status = json!({
                    "timestamp": number_json(s.get("timestamp").unwrap()),
                    "orderStatusType": s.get_str("orderStatusType").unwrap(),
                });
                if let Ok(note) = s.get_str("note") {
                    status["note"] = json!(note);
                }
                status
            })
            .collect(),
        _ => Vec::new(),
    };
    let items: Vec<Value> = match order.get("orderItems") {
        Some(Bson::Array(list)) => list
            .iter()
            .map(|i| {
                let i = i.as_document().unwrap();
                let p = i.get_document("product").unwrap();
                json!({
                    "product": {
                        "guid": p.get_str("guid").unwrap(),
                        "title": p.get_str("title").unwrap(),
                        "description": p.get_str("description").unwrap(),
                        "price": number_json(p.get("price").unwrap()),
                    },
                    "quantity": number_json(i.get("quantity").unwrap()),
                })
            })
            .collect(),
        _ => Vec::new(),
    };
    json!({
        "name": copy["name"],
        "contact": copy["contact"],
        "address": copy["addresses"][0],
        "order": {
            "guid": order.get_str("guid").unwrap(),
            "orderStatusEvents": statuses,
            "orderItems": items,
        },
    })
}

fn fulfillment(g: &mut Gen, guid: &str, timestamp: i64, status: &str) -> Document {
    let p = people(g);
    doc! {
        "_id": guid,
        "_class": "demo.storefront.fulfillment.model.Fulfillment",
        "timestamp": 1_764_000_000_000_i64,
        "name": p.name,
        "contact": p.contact,
        "address": p.addresses[0].clone(),
        "order": {
            "guid": guid,
            "orderStatusEvents": [{ "timestamp": timestamp, "orderStatusType": status, "note": Bson::Null }],
            "orderItems": [{
                "product": { "guid": "p-1", "title": "Lamp", "description": "A lamp", "price": 3.99 },
                "quantity": 1_i32,
            }],
        },
        "shippingMethod": "USPS",
    }
}

/// A host `customer.orders` document holding one CREATED order per guid (no APPROVED one, so it
/// requests nothing).
fn host(g: &mut Gen, guids: &[String]) -> Document {
    let p = people(g);
    let orders: Vec<Bson> = guids
        .iter()
        .map(|guid| {
            Bson::Document(doc! {
                "guid": guid,
                "orderStatusEvents": [{ "timestamp": HOST_CREATED_AT, "orderStatusType": "CREATED" }],
                "orderItems": [],
            })
        })
        .collect();
    let id = g.id("host");
    doc! {
        "_id": id,
        "name": p.name,
        "contact": p.contact,
        "addresses": p.addresses,
        "orders": orders,
    }
}

// ---------------------------------------------------------------------------------------------
// Field rules
// ---------------------------------------------------------------------------------------------

/// How a field of a source document is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    /// A required string.
    Text,
    /// An optional string (`null` and absent are fine).
    OptionalText,
    /// A required object.
    Object,
    /// A list (`null` and absent read as empty).
    List,
    /// A whole number (int32, int64, a double without fraction, a date).
    Whole,
    /// A JSON integer, nothing else (the request's own `timestamp`, read as a plain `i64`).
    Integer,
    /// A price (decimal string, Decimal128, double, int32, int64).
    Price,
    /// An enumeration stored as a string (unknown values pass through).
    Enum,
    /// Never read.
    Ignored,
}

impl Field {
    fn accepted(self) -> &'static [Kind] {
        match self {
            Field::Text | Field::OptionalText | Field::Enum => &[Kind::Text],
            Field::Object => &[Kind::Object],
            Field::List => &[Kind::Array],
            // A double is fine when whole; one with a fraction is its own item.
            Field::Whole => &[Kind::Int32, Kind::Int64, Kind::Date, Kind::Double],
            Field::Integer => &[Kind::Int32, Kind::Int64],
            // Text that is not a decimal is its own item.
            Field::Price => &[Kind::Int32, Kind::Int64, Kind::Double, Kind::Text],
            // Never read: any type is fine; the "wrong" one is any but a string.
            Field::Ignored => &[Kind::Text],
        }
    }
}

/// What a defect at a field does to the item (beyond its dead letter).
#[derive(Debug, Clone)]
enum Effect {
    /// The whole change, or the one event, is kept back: `Nothing`.
    KeptBack,
    /// A list entry left out: the item maps to `Mapping` still.
    EntryLeftOut(Mapping),
}

/// Letter for a defect at `field` (the dotted path the connector must name).
fn letter(field: &str, words: &[&str]) -> Letter {
    let mut reason: Vec<String> = words.iter().map(|w| (*w).to_owned()).collect();
    if !field.is_empty() {
        reason.push(field.to_owned());
    }
    Letter {
        field: field.to_owned(),
        or_inside: false,
        reason,
    }
}

struct Builder {
    g: Gen,
    documents: Vec<DocumentItem>,
}

type Base = fn(&mut Gen) -> (Document, Mapping);

impl Builder {
    /// Every malformation of `path` in documents from `base` (each a fresh document).
    ///
    /// `defect_at` is where the defect is reported (usually `path`); `effect` is what a defect
    /// keeps back; `accept` maps an accepted reshaped document to what it must become.
    #[allow(clippy::too_many_arguments)]
    fn field(
        &mut self,
        source: Source,
        base: Base,
        path: &str,
        field: Field,
        defect_at: &str,
        effect: &dyn Fn(&Document) -> Effect,
        accept: &dyn Fn(&Document) -> Mapping,
    ) {
        let label = format!("{source:?}").to_lowercase();
        let push = |this: &mut Self,
                    category: &'static str,
                    what: String,
                    value: Option<Bson>,
                    defect: Option<&[&str]>| {
            let (mut document, _) = base(&mut this.g);
            set_path(&mut document, path, value);
            let (letters, mapping) = match defect {
                Some(words) => {
                    let mapping = match effect(&document) {
                        Effect::KeptBack => Mapping::Nothing,
                        Effect::EntryLeftOut(mapping) => mapping,
                    };
                    (vec![letter(defect_at, words)], mapping)
                }
                None => (Vec::new(), accept(&document)),
            };
            this.documents.push(DocumentItem {
                name: format!("{label}: {path} {what}"),
                category,
                source,
                document,
                letters,
                mapping,
                events: 0,
                touch: None,
            });
        };
        let (wrong, type_name) = self.g.wrong(&except(field.accepted()));
        let required = !matches!(field, Field::OptionalText | Field::List | Field::Ignored);
        match field {
            Field::Ignored => {
                push(
                    self,
                    "wrong type",
                    format!("wrong type ({type_name})"),
                    Some(wrong),
                    None,
                );
                push(self, "missing", "missing".into(), None, None);
                push(self, "null", "null".into(), Some(Bson::Null), None);
                push(
                    self,
                    "oversized",
                    "oversized".into(),
                    Some(Bson::String(huge('i'))),
                    None,
                );
                return;
            }
            _ => {
                let read_as_document = field == Field::Object
                    && matches!(wrong, Bson::DateTime(_) | Bson::ObjectId(_));
                push(
                    self,
                    "wrong type",
                    format!("wrong type ({type_name})"),
                    Some(wrong),
                    Some(if read_as_document { &[] } else { &["expected"] }),
                );
                if read_as_document {
                    let item = self.documents.last_mut().unwrap();
                    item.letters[0].or_inside = true;
                }
            }
        }
        if required {
            push(self, "missing", "missing".into(), None, Some(&["missing"]));
            // A stored null reads as absent where the mapper reads the field itself, and as a
            // wrong type where the field is inside a value read whole; either names the field.
            push(self, "null", "null".into(), Some(Bson::Null), Some(&[]));
        } else {
            push(self, "missing", "missing".into(), None, None);
            push(self, "null", "null".into(), Some(Bson::Null), None);
        }
        match field {
            Field::Text | Field::OptionalText => {
                let (document, _) = base(&mut self.g);
                let keeps_event = !matches!(accept(&document), Mapping::Nothing);
                let letters = if keeps_event {
                    vec![letter("", &["more than stream.max_event_bytes"])]
                } else {
                    Vec::new()
                };
                let mut document = document;
                set_path(&mut document, path, Some(Bson::String(huge('x'))));
                self.documents.push(DocumentItem {
                    name: format!("{label}: {path} oversized"),
                    category: "oversized",
                    source,
                    document,
                    letters,
                    mapping: Mapping::Nothing,
                    events: 0,
                    touch: None,
                });
            }
            Field::Whole => {
                for (what, value) in [
                    ("int32", Bson::Int32(30_000)),
                    ("whole double", Bson::Double(30_000.0)),
                    ("date", Bson::DateTime(DateTime::from_millis(30_000))),
                ] {
                    push(
                        self,
                        "stored shape",
                        format!("as {what}"),
                        Some(value),
                        None,
                    );
                }
                push(
                    self,
                    "wrong type",
                    "a double with a fraction".into(),
                    Some(Bson::Double(30_000.5)),
                    Some(&["not a whole number"]),
                );
            }
            Field::Price => {
                for (what, value) in [
                    (
                        "Decimal128",
                        Bson::Decimal128("12.5".parse::<Decimal128>().unwrap()),
                    ),
                    ("double", Bson::Double(12.5)),
                    ("int32", Bson::Int32(12)),
                    ("int64", Bson::Int64(12)),
                ] {
                    push(
                        self,
                        "stored shape",
                        format!("as {what}"),
                        Some(value),
                        None,
                    );
                }
                push(
                    self,
                    "wrong type",
                    "text that is not a decimal".into(),
                    Some(Bson::String("3,99".into())),
                    Some(&["3,99"]),
                );
                push(
                    self,
                    "wrong type",
                    "NaN".into(),
                    Some(Bson::Double(f64::NAN)),
                    Some(&[]),
                );
            }
            Field::Enum => {
                push(
                    self,
                    "stored shape",
                    "an unknown value".into(),
                    Some(Bson::String("TELEPORT".into())),
                    None,
                );
            }
            _ => {}
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The corpus
// ---------------------------------------------------------------------------------------------

/// The corpus of `seed`.
pub fn generate(seed: u64) -> Corpus {
    let mut b = Builder {
        g: Gen::new(seed),
        documents: Vec::new(),
    };
    accounts(&mut b);
    orders(&mut b);
    fulfillments(&mut b);
    let records = records(&mut b.g);
    let Builder { mut g, documents } = b;
    let documents = interleave(&mut g, documents);
    // Every order a status is appended to lives in a host document.
    let guids: Vec<String> = documents
        .iter()
        .map(|d| &d.mapping)
        .chain(records.iter().map(|r| &r.mapping))
        .filter_map(|m| match m {
            Mapping::Status { guid, .. } => Some(guid.clone()),
            _ => None,
        })
        .collect();
    let hosts: Vec<Document> = guids.chunks(100).map(|c| host(&mut g, c)).collect();
    Corpus {
        seed,
        hosts,
        documents,
        records,
    }
}

/// Shuffles the bad documents of each source, puts a good document after some of them, and ends
/// each source with a bad sentinel and then a good one.
fn interleave(g: &mut Gen, documents: Vec<DocumentItem>) -> Vec<DocumentItem> {
    use rand::seq::SliceRandom;
    let mut out = Vec::new();
    for source in [Source::Accounts, Source::Orders, Source::Fulfillment] {
        let mut bad: Vec<DocumentItem> = documents
            .iter()
            .filter(|d| d.source == source)
            .cloned()
            .collect();
        bad.shuffle(&mut g.rng);
        for item in bad {
            out.push(item);
            if g.rng.random_ratio(1, 4) {
                out.push(good(g, source, "good"));
            }
        }
        let mut sentinel = match source {
            Source::Accounts => {
                let id = format!("sentinel-bad-{}", g.n());
                let mut d = account(g, Bson::String(id));
                d.remove("name");
                (d, letter("name", &["missing"]), Mapping::Nothing)
            }
            Source::Orders => {
                let guid = g.guid();
                let id = Bson::String(g.id("sentinel-bad"));
                let mut d = customer_orders(g, id, &guid);
                set_path(&mut d, "orders.0.guid", Some(Bson::Int32(7)));
                (d, letter("orders.0.guid", &["expected"]), Mapping::Nothing)
            }
            Source::Fulfillment => {
                let guid = g.guid();
                let mut d = fulfillment(g, &guid, 5_000, "PROCESSING");
                set_path(&mut d, "order.guid", Some(Bson::Int32(7)));
                (d, letter("order.guid", &["expected"]), Mapping::Nothing)
            }
        };
        out.push(DocumentItem {
            name: format!("{source:?} sentinel: the last defect"),
            category: "sentinel",
            source,
            document: std::mem::take(&mut sentinel.0),
            letters: vec![sentinel.1],
            mapping: sentinel.2,
            events: 0,
            touch: None,
        });
        out.push(good(g, source, "sentinel"));
    }
    for item in &mut out {
        item.events = usize::from(!matches!(item.mapping, Mapping::Nothing));
    }
    touch(g, &mut out);
    out
}

/// Picks documents to change again after some writes (see [`DocumentItem::touch`]) and what
/// that adds: a customer's change is a new event (and, when too large, a new dead letter:
/// the event kept back is another one); everything else is once per fact or per defect.
fn touch(g: &mut Gen, out: &mut [DocumentItem]) {
    let mut touched = vec![false; out.len()];
    for position in 0..out.len() {
        if out[position].category == "sentinel" || !g.rng.random_ratio(1, 6) {
            continue;
        }
        let source = out[position].source;
        let candidates: Vec<usize> = (0..=position)
            .filter(|&i| out[i].source == source && !touched[i])
            .collect();
        let Some(&target) = candidates.choose(&mut g.rng) else {
            continue;
        };
        touched[target] = true;
        out[position].touch = Some(target);
        let item = &mut out[target];
        if source == Source::Accounts {
            if !matches!(item.mapping, Mapping::Nothing) {
                item.events += 1;
            }
            let too_large: Vec<Letter> = item
                .letters
                .iter()
                .filter(|l| l.reason.iter().any(|w| w.contains("max_event_bytes")))
                .cloned()
                .collect();
            item.letters.extend(too_large);
        }
        item.name.push_str(" (changed again)");
    }
}

/// A well-formed document of `source`.
fn good(g: &mut Gen, source: Source, category: &'static str) -> DocumentItem {
    let (document, mapping) = match source {
        Source::Accounts => good_account(g),
        Source::Orders => good_orders(g),
        Source::Fulfillment => good_fulfillment(g),
    };
    DocumentItem {
        name: format!("{source:?} {category}"),
        category,
        source,
        document,
        letters: Vec::new(),
        mapping,
        events: 0,
        touch: None,
    }
}

fn good_account(g: &mut Gen) -> (Document, Mapping) {
    let id = if g.rng.random_ratio(1, 2) {
        Bson::ObjectId(g.oid())
    } else {
        Bson::String(g.id("acct"))
    };
    let document = account(g, id);
    let mapping = account_mapping(&document);
    (document, mapping)
}

fn account_mapping(document: &Document) -> Mapping {
    Mapping::Customer {
        id: document.get("_id").unwrap().clone(),
        copy: customer_copy(document),
    }
}

fn good_orders(g: &mut Gen) -> (Document, Mapping) {
    let guid = g.guid();
    let id = Bson::String(g.id("orders"));
    let document = customer_orders(g, id, &guid);
    let mapping = orders_mapping(&document);
    (document, mapping)
}

fn orders_mapping(document: &Document) -> Mapping {
    let order = document.get_array("orders").unwrap()[0]
        .as_document()
        .unwrap();
    Mapping::Request {
        guid: order.get_str("guid").unwrap().to_owned(),
        request: request_json(document),
    }
}

/// Fulfillment documents refer to host orders: their guids are collected for the hosts.
fn good_fulfillment(g: &mut Gen) -> (Document, Mapping) {
    let guid = g.guid();
    let document = fulfillment(g, &guid, 50_000, "PROCESSING");
    (
        document,
        Mapping::Status {
            guid,
            timestamp: 50_000,
            status: "PROCESSING".into(),
        },
    )
}

fn fulfillment_mapping(document: &Document) -> Mapping {
    let order = document.get_document("order").unwrap();
    let status = order.get_array("orderStatusEvents").unwrap()[0]
        .as_document()
        .unwrap();
    let status_type = status.get_str("orderStatusType").unwrap().to_owned();
    if status_type == "APPROVED" {
        return Mapping::Nothing;
    }
    Mapping::Status {
        guid: order.get_str("guid").unwrap().to_owned(),
        timestamp: number_json(status.get("timestamp").unwrap())
            .as_i64()
            .unwrap(),
        status: status_type,
    }
}

fn accounts(b: &mut Builder) {
    fn base(g: &mut Gen) -> (Document, Mapping) {
        let id = Bson::String(g.id("acct"));
        let document = account(g, id);
        let mapping = account_mapping(&document);
        (document, mapping)
    }
    let kept_back: &dyn Fn(&Document) -> Effect = &|_| Effect::KeptBack;
    let accept: &dyn Fn(&Document) -> Mapping = &account_mapping;
    let s = Source::Accounts;
    for (path, field) in [
        ("name", Field::Object),
        ("name.title", Field::Text),
        ("name.firstName", Field::Text),
        ("name.middleName", Field::OptionalText),
        ("name.lastName", Field::Text),
        ("name.suffix", Field::OptionalText),
        ("contact", Field::Object),
        ("contact.primaryPhone", Field::Text),
        ("contact.secondaryPhone", Field::OptionalText),
        ("contact.email", Field::Text),
    ] {
        b.field(s, base, path, field, path, kept_back, accept);
    }
    // `addresses` itself: not a list stops the change; null or absent is an empty list.
    b.field(
        s,
        base,
        "addresses",
        Field::List,
        "addresses",
        kept_back,
        accept,
    );
    // An address entry: a defect leaves that address out; the event carries the other.
    let without_first: &dyn Fn(&Document) -> Effect = &|d: &Document| {
        let mut d = d.clone();
        set_path(&mut d, "addresses.0", None);
        Effect::EntryLeftOut(account_mapping(&d))
    };
    for (path, field) in [
        ("addresses.0.type", Field::Enum),
        ("addresses.0.description", Field::Text),
        ("addresses.0.address1", Field::Text),
        ("addresses.0.address2", Field::OptionalText),
        ("addresses.0.city", Field::Text),
        ("addresses.0.state", Field::Text),
        ("addresses.0.postalCode", Field::Text),
    ] {
        b.field(s, base, path, field, path, without_first, accept);
    }
    entry_not_an_object(
        b,
        s,
        base,
        "addresses.0",
        without_first,
        &["expected an object"],
    );
    // Never read: the cards (with card numbers in every shape) and unknown fields.
    for path in [
        "creditCards",
        "creditCards.0",
        "creditCards.0.number",
        "_class",
    ] {
        b.field(s, base, path, Field::Ignored, path, kept_back, accept);
    }
    ids(b, s, base, &|_| Effect::KeptBack);
}

/// `path` (a list entry) as a string and as `null`: the entry is left out.
fn entry_not_an_object(
    b: &mut Builder,
    source: Source,
    base: Base,
    path: &str,
    effect: &dyn Fn(&Document) -> Effect,
    words: &[&str],
) {
    for (what, value) in [
        ("wrong type (string)", Bson::String("not an entry".into())),
        ("null", Bson::Null),
    ] {
        let (mut document, _) = base(&mut b.g);
        set_path(&mut document, path, Some(value));
        let mapping = match effect(&document) {
            Effect::KeptBack => Mapping::Nothing,
            Effect::EntryLeftOut(mapping) => mapping,
        };
        b.documents.push(DocumentItem {
            name: format!("{source:?}: {path} {what}").to_lowercase(),
            category: if what == "null" { "null" } else { "wrong type" },
            source,
            document,
            letters: vec![letter(path, words)],
            mapping,
            events: 0,
            touch: None,
        });
    }
}

/// `_id` shapes: wrong types and an empty string are defects; a very long string is an id.
fn ids(b: &mut Builder, source: Source, base: Base, effect: &dyn Fn(&Document) -> Effect) {
    let n = b.g.n();
    for (what, id) in [
        ("int32", Bson::Int32(n as i32)),
        ("double", Bson::Double(n as f64 + 0.5)),
        ("object", Bson::Document(doc! { "n": n as i64 })),
        ("date", Bson::DateTime(DateTime::from_millis(n as i64))),
        ("empty string", Bson::String(String::new())),
        ("null", Bson::Null),
    ] {
        let (mut document, _) = base(&mut b.g);
        document.insert("_id", id);
        let mapping = match effect(&document) {
            Effect::KeptBack => Mapping::Nothing,
            Effect::EntryLeftOut(mapping) => mapping,
        };
        b.documents.push(DocumentItem {
            name: format!("{source:?}: _id {what}").to_lowercase(),
            category: "wrong type",
            source,
            document,
            letters: vec![letter("_id", &[])],
            mapping,
            events: 0,
            touch: None,
        });
    }
    // A 2,000-character string id is still an id.
    let (mut document, _) = base(&mut b.g);
    document.insert("_id", format!("long-{}-{}", n, "i".repeat(2_000)));
    let mapping = match source {
        Source::Accounts => account_mapping(&document),
        _ => orders_mapping(&document),
    };
    b.documents.push(DocumentItem {
        name: format!("{source:?}: _id a 2,000-character string").to_lowercase(),
        category: "stored shape",
        source,
        document,
        letters: Vec::new(),
        mapping,
        events: 0,
        touch: None,
    });
}

fn orders(b: &mut Builder) {
    fn base(g: &mut Gen) -> (Document, Mapping) {
        let guid = g.guid();
        let id = Bson::String(g.id("orders"));
        let document = customer_orders(g, id, &guid);
        let mapping = orders_mapping(&document);
        (document, mapping)
    }
    let kept_back: &dyn Fn(&Document) -> Effect = &|_| Effect::KeptBack;
    let accept: &dyn Fn(&Document) -> Mapping = &orders_mapping;
    let s = Source::Orders;
    // The customer's part: a defect keeps back the request of the approved order.
    for (path, field) in [
        ("name", Field::Object),
        ("name.title", Field::Text),
        ("name.firstName", Field::Text),
        ("name.middleName", Field::OptionalText),
        ("name.lastName", Field::Text),
        ("name.suffix", Field::OptionalText),
        ("contact", Field::Object),
        ("contact.primaryPhone", Field::Text),
        ("contact.secondaryPhone", Field::OptionalText),
        ("contact.email", Field::Text),
        ("addresses.0.description", Field::Text),
        ("addresses.0.address1", Field::Text),
        ("addresses.0.address2", Field::OptionalText),
        ("addresses.0.city", Field::Text),
        ("addresses.0.state", Field::Text),
        ("addresses.0.postalCode", Field::Text),
    ] {
        b.field(s, base, path, field, path, kept_back, accept);
    }
    // The first address's type: unreadable, it could be the SHIPPING one; an unknown value
    // makes the BILLING address the only one, so there is no SHIPPING address.
    for (category, what, value, field, words) in [
        (
            "wrong type",
            "wrong type (int32)",
            Some(Bson::Int32(3)),
            "addresses.0.type",
            "cannot be told",
        ),
        (
            "missing",
            "missing",
            None,
            "addresses.0.type",
            "cannot be told",
        ),
        (
            "null",
            "null",
            Some(Bson::Null),
            "addresses.0.type",
            "cannot be told",
        ),
        (
            "stored shape",
            "an unknown value",
            Some(Bson::String("TELEPORT".into())),
            "addresses",
            "no SHIPPING address",
        ),
    ] {
        let (mut document, _) = base(&mut b.g);
        set_path(&mut document, "addresses.0.type", value);
        b.documents.push(DocumentItem {
            name: format!("orders: addresses.0.type {what}"),
            category,
            source: s,
            document,
            letters: vec![letter(field, &[words])],
            mapping: Mapping::Nothing,
            events: 0,
            touch: None,
        });
    }
    // `addresses`: not a list stops the change; null or absent means no SHIPPING address.
    for (category, what, value, words) in [
        (
            "wrong type",
            "wrong type (string)",
            Some(Bson::String("home".into())),
            "expected",
        ),
        ("missing", "missing", None, "no SHIPPING address"),
        ("null", "null", Some(Bson::Null), "no SHIPPING address"),
    ] {
        let (mut document, _) = base(&mut b.g);
        set_path(&mut document, "addresses", value);
        b.documents.push(DocumentItem {
            name: format!("orders: addresses {what}"),
            category,
            source: s,
            document,
            letters: vec![letter("addresses", &[words])],
            mapping: Mapping::Nothing,
            events: 0,
            touch: None,
        });
    }
    // Addresses after the first SHIPPING one are never read.
    b.field(
        s,
        base,
        "addresses.1",
        Field::Ignored,
        "",
        kept_back,
        accept,
    );
    // The order itself: a defect leaves it out (its status is unknown), whatever its status.
    for (path, field) in [
        ("orders.0.guid", Field::Text),
        ("orders.0.orderStatusEvents.1.timestamp", Field::Whole),
        ("orders.0.orderStatusEvents.1.note", Field::OptionalText),
        ("orders.0.orderItems.0.product", Field::Object),
        ("orders.0.orderItems.0.product.guid", Field::Text),
        ("orders.0.orderItems.0.product.title", Field::Text),
        ("orders.0.orderItems.0.product.description", Field::Text),
        ("orders.0.orderItems.0.product.price", Field::Price),
        ("orders.0.orderItems.0.quantity", Field::Whole),
    ] {
        b.field(s, base, path, field, path, kept_back, accept);
    }
    // The APPROVED status's type: unknown, the order is not APPROVED and asks for nothing.
    b.field(
        s,
        base,
        "orders.0.orderStatusEvents.1.orderStatusType",
        Field::Enum,
        "orders.0.orderStatusEvents.1.orderStatusType",
        kept_back,
        &|_| Mapping::Nothing,
    );
    // Lists inside the order: not a list is a defect; absent or null is empty (no status: no
    // request; no items: a request without items).
    for (path, accept) in [
        (
            "orders.0.orderStatusEvents",
            &(|_: &Document| Mapping::Nothing) as &dyn Fn(&Document) -> Mapping,
        ),
        ("orders.0.orderItems", accept),
    ] {
        b.field(s, base, path, Field::List, path, kept_back, accept);
    }
    entry_not_an_object(b, s, base, "orders.0", kept_back, &["expected an object"]);
    // Inside an order, read whole: serde names the struct it expected.
    entry_not_an_object(
        b,
        s,
        base,
        "orders.0.orderStatusEvents.1",
        kept_back,
        &["expected"],
    );
    entry_not_an_object(
        b,
        s,
        base,
        "orders.0.orderItems.0",
        kept_back,
        &["expected"],
    );
    // `orders`: not a list stops the change; absent or null is no order at all.
    b.field(s, base, "orders", Field::List, "orders", kept_back, &|_| {
        Mapping::Nothing
    });
    // An empty guid.
    let (mut document, _) = base(&mut b.g);
    set_path(
        &mut document,
        "orders.0.guid",
        Some(Bson::String("  ".into())),
    );
    b.documents.push(DocumentItem {
        name: "orders: orders.0.guid blank".into(),
        category: "wrong type",
        source: s,
        document,
        letters: vec![letter("orders.0.guid", &["is empty"])],
        mapping: Mapping::Nothing,
        events: 0,
        touch: None,
    });
    // Never read: unknown fields.
    b.field(s, base, "_class", Field::Ignored, "", kept_back, accept);
    ids(b, s, base, &|_| Effect::KeptBack);
}

/// Fulfillment documents.
fn fulfillments(b: &mut Builder) {
    fn base(g: &mut Gen) -> (Document, Mapping) {
        let guid = g.guid();
        let document = fulfillment(g, &guid, 40_000, "SHIPPED");
        let mapping = fulfillment_mapping(&document);
        (document, mapping)
    }
    let kept_back: &dyn Fn(&Document) -> Effect = &|_| Effect::KeptBack;
    let accept: &dyn Fn(&Document) -> Mapping = &fulfillment_mapping;
    let s = Source::Fulfillment;
    b.field(s, base, "order", Field::Object, "order", kept_back, accept);
    b.field(
        s,
        base,
        "order.guid",
        Field::Text,
        "order.guid",
        kept_back,
        accept,
    );
    // The only status: a defect leaves it out, and with it the change's one event.
    for (path, field) in [
        ("order.orderStatusEvents.0.timestamp", Field::Whole),
        ("order.orderStatusEvents.0.orderStatusType", Field::Enum),
        ("order.orderStatusEvents.0.note", Field::OptionalText),
    ] {
        b.field(s, base, path, field, path, kept_back, accept);
    }
    entry_not_an_object(
        b,
        s,
        base,
        "order.orderStatusEvents.0",
        kept_back,
        &["expected an object"],
    );
    // `_id` is never read.
    for (what, id) in [("int32", Bson::Int32(4_242)), ("null", Bson::Null)] {
        let (mut document, mapping) = base(&mut b.g);
        document.insert("_id", id);
        b.documents.push(DocumentItem {
            name: format!("fulfillment: _id {what}"),
            category: if what == "null" { "null" } else { "wrong type" },
            source: s,
            document,
            letters: Vec::new(),
            mapping,
            events: 0,
            touch: None,
        });
    }
    // The history: not a list, absent or null leaves the order without a status.
    for (category, what, value, words) in [
        (
            "wrong type",
            "wrong type (object)",
            Some(Bson::Document(doc! { "0": 1 })),
            "expected",
        ),
        ("missing", "missing", None, "has no status"),
        ("null", "null", Some(Bson::Null), "has no status"),
    ] {
        let (mut document, _) = base(&mut b.g);
        set_path(&mut document, "order.orderStatusEvents", value);
        b.documents.push(DocumentItem {
            name: format!("fulfillment: order.orderStatusEvents {what}"),
            category,
            source: s,
            document,
            letters: vec![letter("order.orderStatusEvents", &[words])],
            mapping: Mapping::Nothing,
            events: 0,
            touch: None,
        });
    }
    // An empty guid.
    let (mut document, _) = base(&mut b.g);
    set_path(
        &mut document,
        "order.guid",
        Some(Bson::String(String::new())),
    );
    b.documents.push(DocumentItem {
        name: "fulfillment: order.guid empty".into(),
        category: "wrong type",
        source: s,
        document,
        letters: vec![letter("order.guid", &["is empty"])],
        mapping: Mapping::Nothing,
        events: 0,
        touch: None,
    });
    // Never read.
    for path in [
        "timestamp",
        "name",
        "name.firstName",
        "contact",
        "contact.email",
        "address",
        "address.city",
        "order.orderItems",
        "order.orderItems.0.product.price",
        "shippingMethod",
        "_class",
    ] {
        b.field(s, base, path, Field::Ignored, "", kept_back, accept);
    }
}

// ---------------------------------------------------------------------------------------------
// Event records
// ---------------------------------------------------------------------------------------------

const CE_TYPE_CUSTOMER: &str = "storefront.customer.changed";
const CE_TYPE_STATUS: &str = "storefront.order.status-changed";
const CE_TYPE_REQUEST: &str = "storefront.order.fulfillment-requested";

fn headers_for(ce_type: &str, subject: &str, n: u64) -> Vec<(String, Option<Vec<u8>>)> {
    let source = match ce_type {
        CE_TYPE_CUSTOMER => "/mongodb/accounts/customer.accounts",
        CE_TYPE_STATUS => "/mongodb/fulfillment/fulfillment.requests",
        _ => "/mongodb/orders/customer.orders",
    };
    [
        ("ce_specversion", "1.0".to_owned()),
        ("ce_id", format!("corpus-{n}")),
        ("ce_type", ce_type.to_owned()),
        ("ce_source", source.to_owned()),
        ("ce_time", "2026-01-01T00:00:00.000Z".to_owned()),
        ("ce_subject", subject.to_owned()),
        // Cluster times of 2026, each its own.
        (
            "ce_clustertime",
            ((1_767_225_600_u64 << 32) | n).to_string(),
        ),
        ("ce_schemaversion", "1".to_owned()),
        ("content-type", "application/json".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), Some(v.into_bytes())))
    .collect()
}

fn customer_event(g: &mut Gen, id: &str) -> Value {
    let p = people(g);
    let mut copy = copy_json(
        &Bson::Document(p.name),
        &Bson::Document(p.contact),
        Some(&Bson::Array(
            p.addresses.into_iter().map(Bson::Document).collect(),
        )),
    );
    copy["id"] = json!(id);
    copy
}

fn status_event(guid: &str, timestamp: i64, status: &str) -> Value {
    json!({ "guid": guid, "orderStatusEvent": { "timestamp": timestamp, "orderStatusType": status, "note": "n" } })
}

fn request_event(g: &mut Gen, guid: &str) -> Value {
    let p = people(g);
    let copy = copy_json(
        &Bson::Document(p.name),
        &Bson::Document(p.contact),
        Some(&Bson::Array(vec![Bson::Document(p.addresses[0].clone())])),
    );
    json!({
        "timestamp": 20_000,
        "name": copy["name"],
        "contact": copy["contact"],
        "address": copy["addresses"][0],
        "order": {
            "guid": guid,
            "orderStatusEvents": [
                { "timestamp": 10_000, "orderStatusType": "CREATED" },
                { "timestamp": 20_000, "orderStatusType": "APPROVED" },
            ],
            "orderItems": [{ "product": { "guid": "p-1", "title": "Lamp", "description": "A lamp",
                                          "price": 3.99 }, "quantity": 1 }],
        },
        "customerId": "c-1",
    })
}

/// What an accepted event must become.
fn event_mapping(topic: Topic, body: &Value) -> Mapping {
    match topic {
        Topic::Customer => Mapping::Customer {
            id: Bson::String(body["id"].as_str().unwrap().to_owned()),
            copy: {
                let mut copy = json!({
                    "name": body["name"], "contact": body["contact"], "addresses": body["addresses"],
                });
                // Optional fields that are null are left out of the copy.
                strip_json_nulls(&mut copy);
                copy
            },
        },
        Topic::Status => Mapping::Status {
            guid: body["guid"].as_str().unwrap().to_owned(),
            timestamp: body["orderStatusEvent"]["timestamp"].as_f64().unwrap() as i64,
            status: body["orderStatusEvent"]["orderStatusType"]
                .as_str()
                .unwrap()
                .to_owned(),
        },
        Topic::Request => {
            let mut request = body.clone();
            let request = request.as_object_mut().unwrap();
            request.remove("timestamp");
            request.remove("customerId");
            let mut request = Value::Object(request.clone());
            strip_json_nulls(&mut request);
            whole_numbers(&mut request);
            Mapping::Request {
                guid: body["order"]["guid"].as_str().unwrap().to_owned(),
                request,
            }
        }
    }
}

/// Doubles without a fraction as the integers the projection stores.
fn whole_numbers(value: &mut Value) {
    match value {
        Value::Object(map) => map.values_mut().for_each(whole_numbers),
        Value::Array(items) => items.iter_mut().for_each(whole_numbers),
        Value::Number(n) if n.is_f64() => {
            let f = n.as_f64().unwrap();
            if f.fract() == 0.0 {
                *value = json!(f as i64);
            }
        }
        _ => {}
    }
}

fn strip_json_nulls(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(strip_json_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_json_nulls),
        _ => {}
    }
}

struct Records<'a> {
    g: &'a mut Gen,
    items: Vec<RecordItem>,
}

impl Records<'_> {
    /// A fresh valid record of `topic`: (key, body, headers).
    fn base(&mut self, topic: Topic) -> (String, Value, Headers) {
        let n = self.g.n();
        let (key, body, ce_type) = match topic {
            Topic::Customer => {
                let id = format!("evt-cust-{}-{n}", self.g.seed);
                (id.clone(), customer_event(self.g, &id), CE_TYPE_CUSTOMER)
            }
            Topic::Status => {
                let guid = self.g.guid();
                (
                    guid.clone(),
                    status_event(&guid, 60_000, "IN_TRANSIT"),
                    CE_TYPE_STATUS,
                )
            }
            Topic::Request => {
                let guid = self.g.guid();
                (guid.clone(), request_event(self.g, &guid), CE_TYPE_REQUEST)
            }
        };
        let headers = headers_for(ce_type, &key, n);
        (key, body, headers)
    }

    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        topic: Topic,
        category: &'static str,
        name: String,
        key: Option<Vec<u8>>,
        value: Option<Vec<u8>>,
        headers: Vec<(String, Option<Vec<u8>>)>,
        outcome: Result<Mapping, (&str, &[&str])>,
    ) {
        let (letter, mapping) = match outcome {
            Ok(mapping) => (None, mapping),
            Err((kind, words)) => (
                Some(Letter {
                    field: kind.to_owned(),
                    or_inside: false,
                    reason: words.iter().map(|w| (*w).to_owned()).collect(),
                }),
                Mapping::Nothing,
            ),
        };
        self.items.push(RecordItem {
            name: format!("{topic:?}: {name}"),
            category,
            topic,
            key,
            value,
            headers,
            letter,
            mapping,
            refused_by_broker: false,
        });
    }

    /// A record of `topic` whose body is changed by `edit` and classified by `outcome` (given
    /// the edited body).
    fn body(
        &mut self,
        topic: Topic,
        category: &'static str,
        name: String,
        edit: impl FnOnce(&mut Value),
        outcome: impl FnOnce(&Value) -> Result<Mapping, (&'static str, Vec<String>)>,
    ) {
        let (key, mut body, headers) = self.base(topic);
        edit(&mut body);
        let outcome = outcome(&body);
        let value = serde_json::to_vec(&body).unwrap();
        match outcome {
            Ok(mapping) => self.push(
                topic,
                category,
                name,
                Some(key.into_bytes()),
                Some(value),
                headers,
                Ok(mapping),
            ),
            Err((kind, words)) => {
                let words: Vec<&str> = words.iter().map(String::as_str).collect();
                self.push(
                    topic,
                    category,
                    name,
                    Some(key.into_bytes()),
                    Some(value),
                    headers,
                    Err((kind, &words)),
                )
            }
        }
    }

    /// Each field at `path` of `topic`'s payload: wrong type, missing, null (and accepted
    /// shapes).
    fn field(&mut self, topic: Topic, path: &str, field: Field) {
        let (wrong, type_name) = self.g.wrong(&except(field.accepted()));
        let wrong = wrong.into_relaxed_extjson();
        let schema = |path: &str, word: &str| -> Result<Mapping, (&'static str, Vec<String>)> {
            Err(("schema", vec![format!("field `{path}"), word.to_owned()]))
        };
        let json_path = json_path(path);
        let required = !matches!(field, Field::OptionalText | Field::Ignored);
        {
            let p = path.to_owned();
            let jp = json_path.clone();
            self.body(
                topic,
                "wrong type",
                format!("{path} wrong type ({type_name})"),
                |b| set_json(b, &p, Some(wrong)),
                |_| schema(&jp, ""),
            );
        }
        // serde reports a missing field at the struct that lacks it.
        let missing_words = match json_path.rsplit_once('.') {
            Some((parent, last)) => vec![
                format!("field `{parent}`"),
                format!("missing field `{last}`"),
            ],
            None => vec![format!("missing field `{json_path}`")],
        };
        // Removing a list entry leaves a shorter, valid list.
        let is_entry = path.rsplit('.').next().unwrap().parse::<usize>().is_ok();
        for (category, value) in [("missing", None), ("null", Some(Value::Null))] {
            let p = path.to_owned();
            let jp = json_path.clone();
            let missing_words = missing_words.clone();
            self.body(
                topic,
                category,
                format!("{path} {category}"),
                |b| set_json(b, &p, value),
                move |b| {
                    if !required || (category == "missing" && is_entry) {
                        Ok(event_mapping(topic, b))
                    } else if category == "missing" {
                        Err(("schema", missing_words))
                    } else {
                        schema(&jp, "null")
                    }
                },
            );
        }
        match field {
            Field::Whole => {
                let p = path.to_owned();
                self.body(
                    topic,
                    "stored shape",
                    format!("{path} as a whole double"),
                    |b| set_json(b, &p, Some(json!(70_000.0))),
                    |b| Ok(event_mapping(topic, b)),
                );
                let p = path.to_owned();
                let jp = json_path.clone();
                self.body(
                    topic,
                    "wrong type",
                    format!("{path} with a fraction"),
                    |b| set_json(b, &p, Some(json!(70_000.5))),
                    |_| schema(&jp, "not a whole number"),
                );
            }
            Field::Integer => {
                for (what, value) in [("a whole double", 70_000.0), ("with a fraction", 70_000.5)] {
                    let p = path.to_owned();
                    let jp = json_path.clone();
                    self.body(
                        topic,
                        "wrong type",
                        format!("{path} {what}"),
                        |b| set_json(b, &p, Some(json!(value))),
                        |_| schema(&jp, "expected i64"),
                    );
                }
            }
            Field::Enum => {
                let p = path.to_owned();
                self.body(
                    topic,
                    "stored shape",
                    format!("{path} an unknown value"),
                    |b| set_json(b, &p, Some(json!("TELEPORT"))),
                    |b| Ok(event_mapping(topic, b)),
                );
            }
            Field::Price => {
                for (what, value, ok) in [
                    ("a decimal string", json!("12.5"), true),
                    ("an integer", json!(12), true),
                    ("text that is not a decimal", json!("3,99"), false),
                ] {
                    let p = path.to_owned();
                    let p2 = path.to_owned();
                    let jp = json_path.clone();
                    self.body(
                        topic,
                        if ok { "stored shape" } else { "wrong type" },
                        format!("{path} {what}"),
                        move |b| set_json(b, &p2, Some(value)),
                        move |b| {
                            if ok {
                                let mut b = b.clone();
                                if let Some(text) = json_at(&mut b, &p).as_str() {
                                    let number: Value = serde_json::from_str(text).unwrap();
                                    set_json(&mut b, &p, Some(number));
                                }
                                Ok(event_mapping(topic, &b))
                            } else {
                                schema(&jp, "3,99")
                            }
                        },
                    );
                }
            }
            _ => {}
        }
    }
}

/// `a.0.b` as serde_path_to_error prints it: `a[0].b`.
fn json_path(path: &str) -> String {
    let mut out = String::new();
    for part in path.split('.') {
        if part.parse::<usize>().is_ok() {
            out.push_str(&format!("[{part}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(part);
        }
    }
    out
}

fn records(g: &mut Gen) -> Vec<RecordItem> {
    let mut r = Records {
        g,
        items: Vec::new(),
    };
    use Field::*;
    for (path, field) in [
        ("id", Text),
        ("name", Object),
        ("name.title", Text),
        ("name.firstName", Text),
        ("name.middleName", OptionalText),
        ("name.lastName", Text),
        ("name.suffix", OptionalText),
        ("contact", Object),
        ("contact.primaryPhone", Text),
        ("contact.secondaryPhone", OptionalText),
        ("contact.email", Text),
        ("addresses.0", Object),
        ("addresses.0.type", Enum),
        ("addresses.0.description", Text),
        ("addresses.0.address1", Text),
        ("addresses.0.address2", OptionalText),
        ("addresses.0.city", Text),
        ("addresses.0.state", Text),
        ("addresses.0.postalCode", Text),
    ] {
        r.field(Topic::Customer, path, field);
    }
    for (path, field) in [
        ("guid", Text),
        ("orderStatusEvent", Object),
        ("orderStatusEvent.timestamp", Whole),
        ("orderStatusEvent.orderStatusType", Enum),
        ("orderStatusEvent.note", OptionalText),
    ] {
        r.field(Topic::Status, path, field);
    }
    for (path, field) in [
        ("timestamp", Integer),
        ("name", Object),
        ("name.title", Text),
        ("name.firstName", Text),
        ("name.middleName", OptionalText),
        ("name.lastName", Text),
        ("name.suffix", OptionalText),
        ("contact", Object),
        ("contact.primaryPhone", Text),
        ("contact.secondaryPhone", OptionalText),
        ("contact.email", Text),
        ("address", Object),
        ("address.type", Enum),
        ("address.description", Text),
        ("address.address1", Text),
        ("address.address2", OptionalText),
        ("address.city", Text),
        ("address.state", Text),
        ("address.postalCode", Text),
        ("order", Object),
        ("order.guid", Text),
        ("order.orderStatusEvents.1.timestamp", Whole),
        ("order.orderStatusEvents.0.note", OptionalText),
        ("order.orderItems.0", Object),
        ("order.orderItems.0.product", Object),
        ("order.orderItems.0.product.guid", Text),
        ("order.orderItems.0.product.title", Text),
        ("order.orderItems.0.product.description", Text),
        ("order.orderItems.0.product.price", Price),
        ("order.orderItems.0.quantity", Whole),
        ("customerId", OptionalText),
    ] {
        r.field(Topic::Request, path, field);
    }
    // Lists the payloads require; `addresses` may not be left out of a customer change.
    r.body(
        Topic::Customer,
        "missing",
        "addresses missing".into(),
        |b| set_json(b, "addresses", None),
        |_| Err(("schema", vec!["missing field `addresses`".into()])),
    );
    r.body(
        Topic::Customer,
        "wrong type",
        "addresses not a list".into(),
        |b| set_json(b, "addresses", Some(json!("home"))),
        |_| Err(("schema", vec!["field `addresses`".into()])),
    );
    // The APPROVED status entry: not an object is a schema error; without it the order is not
    // APPROVED.
    r.body(
        Topic::Request,
        "wrong type",
        "order.orderStatusEvents.1 wrong type (string)".into(),
        |b| set_json(b, "order.orderStatusEvents.1", Some(json!("APPROVED"))),
        |_| Err(("schema", vec!["field `order.orderStatusEvents[1]`".into()])),
    );
    r.body(
        Topic::Request,
        "null",
        "order.orderStatusEvents.1 null".into(),
        |b| set_json(b, "order.orderStatusEvents.1", Some(Value::Null)),
        |_| Err(("schema", vec!["field `order.orderStatusEvents[1]`".into()])),
    );
    r.body(
        Topic::Request,
        "missing",
        "order.orderStatusEvents.1 missing".into(),
        |b| set_json(b, "order.orderStatusEvents.1", None),
        |_| Err(("contract", vec!["not currently APPROVED".into()])),
    );
    // A request whose history is absent has no APPROVED status.
    r.body(
        Topic::Request,
        "missing",
        "order.orderStatusEvents missing".into(),
        |b| set_json(b, "order.orderStatusEvents", None),
        |_| Err(("contract", vec!["not currently APPROVED".into()])),
    );
    r.body(
        Topic::Request,
        "null",
        "order.orderItems null".into(),
        |b| set_json(b, "order.orderItems", Some(Value::Null)),
        |b| {
            let mut b = b.clone();
            set_json(&mut b, "order.orderItems", Some(json!([])));
            Ok(event_mapping(Topic::Request, &b))
        },
    );
    // APPROVED as a status change could request fulfillment again.
    r.body(
        Topic::Status,
        "contract",
        "APPROVED".into(),
        |b| {
            set_json(
                b,
                "orderStatusEvent.orderStatusType",
                Some(json!("APPROVED")),
            )
        },
        |_| Err(("contract", vec!["must not carry APPROVED".into()])),
    );
    // Unknown fields are ignored (fields may be added to the contract).
    for topic in [Topic::Customer, Topic::Status, Topic::Request] {
        r.body(
            topic,
            "stored shape",
            "an unknown field".into(),
            |b| set_json(b, "addedLater", Some(json!({"x": [1, 2]}))),
            |b| {
                let mut b = b.clone();
                set_json(&mut b, "addedLater", None);
                Ok(event_mapping(topic, &b))
            },
        );
    }
    raw_records(&mut r);
    let Records { items, g } = r;
    interleave_records(g, items)
}

/// Records broken below the payload: bytes, headers, keys, sizes.
fn raw_records(r: &mut Records<'_>) {
    for topic in [Topic::Customer, Topic::Status, Topic::Request] {
        // Truncated JSON, at a seeded point.
        let (key, body, headers) = r.base(topic);
        let bytes = serde_json::to_vec(&body).unwrap();
        let cut = r.g.rng.random_range(1..bytes.len() - 1);
        r.push(
            topic,
            "truncated",
            format!("JSON truncated at byte {cut}"),
            Some(key.into_bytes()),
            Some(bytes[..cut].to_vec()),
            headers,
            Err(("not_json", &["EOF"])),
        );
        // Invalid UTF-8 inside a string of the body.
        let (key, body, headers) = r.base(topic);
        let mut bytes = serde_json::to_vec(&body).unwrap();
        let at = bytes.windows(3).position(|w| w == b"\":\"").unwrap() + 3;
        bytes.insert(at, 0xff);
        r.push(
            topic,
            "invalid UTF-8",
            "invalid UTF-8 in the value".into(),
            Some(key.into_bytes()),
            Some(bytes),
            headers,
            Err(("not_json", &["not UTF-8"])),
        );
        // An empty body, and not JSON at all.
        let (key, _, headers) = r.base(topic);
        r.push(
            topic,
            "truncated",
            "an empty value".into(),
            Some(key.into_bytes()),
            Some(Vec::new()),
            headers,
            Err(("not_json", &["EOF"])),
        );
        let (key, _, headers) = r.base(topic);
        r.push(
            topic,
            "wrong type",
            "a JSON array as the value".into(),
            Some(key.into_bytes()),
            Some(b"[1,2]".to_vec()),
            headers,
            Err(("schema", &["invalid type"])),
        );
        // A tombstone where an event needs a body.
        let (key, _, headers) = r.base(topic);
        r.push(
            topic,
            "missing",
            "no value (a tombstone)".into(),
            Some(key.into_bytes()),
            None,
            headers,
            Err(("contract", &["needs a body"])),
        );
        // Keys.
        let (key, body, headers) = r.base(topic);
        let value = serde_json::to_vec(&body).unwrap();
        r.push(
            topic,
            "key",
            "key of another aggregate".into(),
            Some(format!("{key}-other").into_bytes()),
            Some(value.clone()),
            headers.clone(),
            Err(("contract", &["differs from the payload"])),
        );
        let (_, body2, headers2) = r.base(topic);
        let value2 = serde_json::to_vec(&body2).unwrap();
        r.push(
            topic,
            "key",
            "an empty key".into(),
            Some(Vec::new()),
            Some(value2),
            headers2,
            Err(("contract", &["record key ``"])),
        );
        let (_, body3, headers3) = r.base(topic);
        r.push(
            topic,
            "key",
            "no key".into(),
            None,
            Some(serde_json::to_vec(&body3).unwrap()),
            headers3,
            Err(("contract", &["no key"])),
        );
        // `accounts.customer.change` and `orders.order.fulfill` are compacted: Kafka refuses a
        // record without a key there, so only the status topic can deliver one.
        if topic != Topic::Status {
            let item = r.items.last_mut().unwrap();
            item.letter = None;
            item.refused_by_broker = true;
            item.name
                .push_str(" (compacted topic: the broker refuses it)");
        }
        let (key4, body4, headers4) = r.base(topic);
        let mut bad_key = key4.into_bytes();
        bad_key.push(0xfe);
        r.push(
            topic,
            "invalid UTF-8",
            "invalid UTF-8 in the key".into(),
            Some(bad_key),
            Some(serde_json::to_vec(&body4).unwrap()),
            headers4,
            Err(("contract", &["not UTF-8"])),
        );
        let _ = value;
        // Headers: each required CloudEvents header missing.
        for name in [
            "ce_specversion",
            "ce_id",
            "ce_type",
            "ce_source",
            "ce_time",
            "ce_subject",
            "ce_clustertime",
            "ce_schemaversion",
        ] {
            let (key, body, mut headers) = r.base(topic);
            headers.retain(|(k, _)| k != name);
            r.push(
                topic,
                "headers",
                format!("{name} missing"),
                Some(key.into_bytes()),
                Some(serde_json::to_vec(&body).unwrap()),
                headers,
                Err(("headers", &["missing header", name])),
            );
        }
        // Headers with values that are wrong, contradictory or not UTF-8.
        let other_type = match topic {
            Topic::Customer => CE_TYPE_STATUS,
            _ => CE_TYPE_CUSTOMER,
        };
        // (category, what, the header's new value, dlq_kind, reason words)
        type Bad<'a> = (&'a str, &'a str, Option<Vec<u8>>, &'a str, Vec<&'a str>);
        let bad: Vec<Bad<'_>> = vec![
            (
                "headers",
                "ce_type of another topic",
                Some(other_type.as_bytes().to_vec()),
                "headers",
                vec!["not carried by topic"],
            ),
            (
                "headers",
                "ce_type unknown",
                Some(b"storefront.order.teleported".to_vec()),
                "headers",
                vec!["unknown event type"],
            ),
            (
                "headers",
                "ce_clustertime garbage",
                Some(b"soon".to_vec()),
                "headers",
                vec!["ce_clustertime"],
            ),
            (
                "headers",
                "ce_clustertime negative",
                Some(b"-42".to_vec()),
                "headers",
                vec!["ce_clustertime"],
            ),
            (
                "headers",
                "ce_clustertime beyond any cluster time",
                Some(u64::MAX.to_string().into_bytes()),
                "headers",
                vec!["ce_clustertime", "beyond any cluster time"],
            ),
            (
                "headers",
                "ce_time garbage",
                Some(b"yesterday".to_vec()),
                "headers",
                vec!["ce_time"],
            ),
            (
                "headers",
                "ce_specversion 0.3",
                Some(b"0.3".to_vec()),
                "headers",
                vec!["ce_specversion", "unsupported"],
            ),
            (
                "headers",
                "ce_source not a collection",
                Some(b"kafka://elsewhere".to_vec()),
                "headers",
                vec!["ce_source"],
            ),
            (
                "headers",
                "ce_schemaversion garbage",
                Some(b"one".to_vec()),
                "headers",
                vec!["ce_schemaversion"],
            ),
            (
                "headers",
                "ce_schemaversion newer",
                Some(b"2".to_vec()),
                "contract",
                vec!["schema version 2"],
            ),
            (
                "headers",
                "ce_subject of another aggregate",
                Some(b"someone-else".to_vec()),
                "headers",
                vec!["ce_subject", "differs from the record key"],
            ),
            (
                "headers",
                "content-type not JSON",
                Some(b"application/avro".to_vec()),
                "headers",
                vec!["content-type", "not application/json"],
            ),
            (
                "headers",
                "content-type structured CloudEvents",
                Some(b"application/cloudevents+json".to_vec()),
                "headers",
                vec!["content-type", "not application/json"],
            ),
            (
                "invalid UTF-8",
                "ce_id not UTF-8",
                Some(vec![b'i', 0xff, b'd']),
                "headers",
                vec!["ce_id"],
            ),
            (
                "invalid UTF-8",
                "ce_type not UTF-8",
                Some(vec![0xc3, 0x28]),
                "headers",
                vec!["ce_type"],
            ),
            (
                "headers",
                "ce_id without a value",
                None,
                "headers",
                vec!["missing header", "ce_id"],
            ),
        ];
        for (category, what, value, kind, words) in bad {
            let name = what.split(' ').next().unwrap().to_owned();
            let (key, body, mut headers) = r.base(topic);
            for (k, v) in &mut headers {
                if *k == name {
                    *v = value.clone();
                }
            }
            r.push(
                topic,
                category,
                what.into(),
                Some(key.into_bytes()),
                Some(serde_json::to_vec(&body).unwrap()),
                headers,
                Err((kind, &words)),
            );
        }
        // A CloudEvents header twice with different values.
        let (key, body, mut headers) = r.base(topic);
        headers.push(("ce_type".into(), Some(other_type.as_bytes().to_vec())));
        r.push(
            topic,
            "headers",
            "ce_type twice, differing".into(),
            Some(key.into_bytes()),
            Some(serde_json::to_vec(&body).unwrap()),
            headers,
            Err(("headers", &["ce_type appears twice"])),
        );
        // Accepted: no content-type, a charset, an unknown header that is not UTF-8, the same
        // header twice with the same value.
        for (what, edit) in [
            ("no content-type", 0),
            ("content-type with a charset", 1),
            ("an unknown header that is not UTF-8", 2),
            ("ce_id twice, equal", 3),
        ] {
            let (key, body, mut headers) = r.base(topic);
            match edit {
                0 => headers.retain(|(k, _)| k != "content-type"),
                1 => {
                    for (k, v) in &mut headers {
                        if k == "content-type" {
                            *v = Some(b"application/json; charset=utf-8".to_vec());
                        }
                    }
                }
                2 => headers.push(("x-trace".into(), Some(vec![0xff, 0xfe, 0x00]))),
                _ => {
                    let id = headers.iter().find(|(k, _)| k == "ce_id").unwrap().clone();
                    headers.push(id);
                }
            }
            let mapping = event_mapping(topic, &body);
            r.push(
                topic,
                "headers",
                what.into(),
                Some(key.into_bytes()),
                Some(serde_json::to_vec(&body).unwrap()),
                headers,
                Ok(mapping),
            );
        }
    }
    // Huge: a valid customer change of 600 KB is applied; a poison record near Kafka's maximum
    // message size is dead-lettered (without its value if the letter would be too large).
    let (key, mut body, headers) = r.base(Topic::Customer);
    body["addresses"][0]["address1"] = json!("h".repeat(600_000));
    let mapping = event_mapping(Topic::Customer, &body);
    r.push(
        Topic::Customer,
        "huge",
        "a 600 KB address, valid".into(),
        Some(key.into_bytes()),
        Some(serde_json::to_vec(&body).unwrap()),
        headers,
        Ok(mapping),
    );
    let (key, mut body, headers) = r.base(Topic::Request);
    body["order"]["orderItems"][0]["product"]["description"] = json!("d".repeat(998_000));
    body["order"]["orderItems"][0]["quantity"] = json!("two");
    r.push(
        Topic::Request,
        "huge",
        "near Kafka's maximum message size, a quantity that is text".into(),
        Some(key.into_bytes()),
        Some(serde_json::to_vec(&body).unwrap()),
        headers,
        Err(("schema", &["field `order.orderItems[0].quantity`"])),
    );
    let (key, mut body, headers) = r.base(Topic::Customer);
    body["name"]["firstName"] = json!(12);
    body["name"]["lastName"] = json!("l".repeat(900_000));
    r.push(
        Topic::Customer,
        "huge",
        "900 KB, a first name that is a number".into(),
        Some(key.into_bytes()),
        Some(serde_json::to_vec(&body).unwrap()),
        headers,
        Err(("schema", &["field `name.firstName`"])),
    );
}

/// Shuffles the records of each topic, puts a good record after some, and ends each topic with
/// a poison sentinel and then a good one.
fn interleave_records(g: &mut Gen, items: Vec<RecordItem>) -> Vec<RecordItem> {
    use rand::seq::SliceRandom;
    let mut r = Records {
        g,
        items: Vec::new(),
    };
    let mut out = Vec::new();
    for topic in [Topic::Customer, Topic::Status, Topic::Request] {
        let mut bad: Vec<RecordItem> = items.iter().filter(|i| i.topic == topic).cloned().collect();
        bad.shuffle(&mut r.g.rng);
        for item in bad {
            out.push(item);
            if r.g.rng.random_ratio(1, 4) {
                let (key, body, headers) = r.base(topic);
                let mapping = event_mapping(topic, &body);
                r.push(
                    topic,
                    "good",
                    "good".into(),
                    Some(key.into_bytes()),
                    Some(serde_json::to_vec(&body).unwrap()),
                    headers,
                    Ok(mapping),
                );
                out.push(r.items.pop().unwrap());
            }
        }
        let (key, _, headers) = r.base(topic);
        r.push(
            topic,
            "sentinel",
            "sentinel: the last poison".into(),
            Some(key.into_bytes()),
            Some(b"{".to_vec()),
            headers,
            Err(("not_json", &["EOF"])),
        );
        out.push(r.items.pop().unwrap());
        let (key, body, headers) = r.base(topic);
        let mapping = event_mapping(topic, &body);
        r.push(
            topic,
            "sentinel",
            "sentinel: good".into(),
            Some(key.into_bytes()),
            Some(serde_json::to_vec(&body).unwrap()),
            headers,
            Ok(mapping),
        );
        out.push(r.items.pop().unwrap());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_corpus_and_another_seed_another() {
        let a = generate(7);
        let b = generate(7);
        let c = generate(8);
        let names = |c: &Corpus| -> Vec<String> {
            c.documents
                .iter()
                .map(|d| format!("{}{:?}", d.name, d.document))
                .collect()
        };
        let records = |c: &Corpus| -> Vec<(String, Option<Vec<u8>>)> {
            c.records
                .iter()
                .map(|r| (r.name.clone(), r.value.clone()))
                .collect()
        };
        assert_eq!(names(&a), names(&b));
        assert_eq!(records(&a), records(&b));
        assert_ne!(records(&a), records(&c));
    }

    #[test]
    fn every_item_is_classified_once() {
        let corpus = generate(DEFAULT_SEED);
        for item in &corpus.documents {
            assert!(
                item.letters.len() <= 1 || item.name.ends_with("(changed again)"),
                "{}: {} letters",
                item.name,
                item.letters.len()
            );
        }
        for item in &corpus.records {
            assert!(
                item.refused_by_broker
                    || item.letter.is_some() != !matches!(item.mapping, Mapping::Nothing),
                "{}: a record is either poison or applied",
                item.name
            );
        }
    }
}
