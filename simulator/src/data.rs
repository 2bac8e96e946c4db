//! Seeded plans: every write of one customer's story, decided before any is sent.
//!
//! # Guarantees
//! - **Reproducible.** [`plan_customer`] is a pure function of the seed, the customer's index
//!   and the order count range: the same arguments give the same ids, names, cards, prices,
//!   timestamps, outcomes and write kinds, whatever order or concurrency the runner later uses
//!   (each customer draws from its own generator, seeded from the run's seed and its index).
//! - **Valid and in the stored shapes of `docs/domain.md`.** Every customer has a SHIPPING
//!   address; ids are mostly ObjectIds, some strings (a few of them 24 hex digits, which Spring
//!   reads as an ObjectId on the Orders side); prices are decimal strings (Spring's
//!   `BigDecimal`), Decimal128, doubles and integers; quantities int32, int64 and whole doubles;
//!   the Orders application's timestamps int64, whole doubles and dates (int32 for customers
//!   whose clock is small enough, as imported legacy data has); `_class` on Spring saves;
//!   optional fields present, absent or `null`.
//! - **Ordered.** Each customer's clock only moves forward, so every order's statuses (the
//!   Orders application's, then the Fulfillment application's) have increasing timestamps and the
//!   happy path is followed: CREATED, then APPROVED, REJECTED or CANCELLED; approved orders go
//!   PROCESSING, SHIPPED (with a carrier), IN_TRANSIT, RECEIVED.

use std::ops::RangeInclusive;

use mongodb::bson::oid::ObjectId;
use mongodb::bson::{Bson, DateTime, Decimal128, Document, doc};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};

use crate::model::{ACCOUNT_CLASS, Model, Write, set_path, status};

/// One customer's writes, per application and phase.
#[derive(Debug, Clone, PartialEq)]
pub struct CustomerPlan {
    /// Index of the customer in the run (seeds its generator).
    pub index: u64,
    /// The customer's key (ObjectId hex or string id).
    pub key: String,
    /// Accounts: the insert, then changes before any order.
    pub accounts_before: Vec<Write>,
    /// The orders, in the order they are placed.
    pub orders: Vec<OrderPlan>,
    /// Accounts: changes after every order's outcome (they reach the copy, not the requests).
    pub accounts_after: Vec<Write>,
}

/// One order's writes.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderPlan {
    /// The order's guid.
    pub guid: String,
    /// Orders: the push of the order in status CREATED.
    pub push: Write,
    /// Orders: the push of its outcome (APPROVED, REJECTED or CANCELLED).
    pub outcome: Write,
    /// Fulfillment: the status changes of an approved order (empty otherwise).
    pub fulfillment: Vec<Write>,
}

impl OrderPlan {
    /// Whether the outcome is APPROVED.
    pub fn approved(&self) -> bool {
        !self.fulfillment.is_empty()
    }
}

impl CustomerPlan {
    /// Writes per application: (accounts, orders, fulfillment).
    pub fn write_counts(&self) -> (u64, u64, u64) {
        let orders = self.orders.len() as u64 * 2;
        let fulfillment = self.orders.iter().map(|o| o.fulfillment.len() as u64).sum();
        (
            (self.accounts_before.len() + self.accounts_after.len()) as u64,
            orders,
            fulfillment,
        )
    }

    /// Every write in an order the applications could have done them in (one customer at a
    /// time): for the model's unit tests and as documentation of the story.
    pub fn sequential(&self) -> Vec<Write> {
        let mut writes = self.accounts_before.clone();
        for order in &self.orders {
            writes.push(order.push.clone());
            writes.push(order.outcome.clone());
        }
        writes.extend(self.accounts_after.iter().cloned());
        for order in &self.orders {
            writes.extend(order.fulfillment.iter().cloned());
        }
        writes
    }
}

/// The generator of customer `index` of a run seeded with `seed` (SplitMix64 of both, so
/// neighbouring indices get unrelated streams).
pub fn customer_rng(seed: u64, index: u64) -> StdRng {
    let mut z = seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    StdRng::seed_from_u64(z ^ (z >> 31))
}

/// The plan of customer `index`: see the module doc.
pub fn plan_customer(seed: u64, index: u64, orders: RangeInclusive<u32>) -> CustomerPlan {
    let mut rng = customer_rng(seed, index);
    let id = customer_id(&mut rng);
    let key = match &id {
        Bson::ObjectId(oid) => oid.to_hex(),
        Bson::String(text) => text.clone(),
        _ => unreachable!("customer_id makes ObjectIds and strings"),
    };
    let mut account = new_account(&mut rng, id.clone());
    let mut accounts_before = vec![Write::InsertAccount(account.clone())];
    for _ in 0..rng.random_range(0..=2) {
        accounts_before.push(account_change(&mut rng, &mut account));
    }
    let mut clock = Clock::new(&mut rng);
    let count = rng.random_range(orders);
    let mut planned = Vec::new();
    for _ in 0..count {
        planned.push(order_plan(&mut rng, &mut clock, &key));
    }
    let mut accounts_after = Vec::new();
    for _ in 0..rng.random_range(1..=2) {
        accounts_after.push(account_change(&mut rng, &mut account));
    }
    CustomerPlan {
        index,
        key,
        accounts_before,
        orders: planned,
        accounts_after,
    }
}

/// A model with every write of `plans` applied in [`CustomerPlan::sequential`] order.
pub fn model_of(plans: &[CustomerPlan]) -> Result<Model, crate::model::ModelError> {
    let mut model = Model::new();
    for plan in plans {
        for write in plan.sequential() {
            model.apply(&write)?;
        }
    }
    Ok(model)
}

const TITLES: &[&str] = &["Mr.", "Ms.", "Mrs.", "Dr.", "Mx."];
const FIRST: &[&str] = &[
    "Ada",
    "Alan",
    "Grace",
    "Edsger",
    "Barbara",
    "Donald",
    "Frances",
    "John",
    "Margaret",
    "Ken",
    "Radia",
    "Dennis",
    "Katherine",
    "Tim",
    "Hedy",
    "Linus",
];
const LAST: &[&str] = &[
    "Lovelace",
    "Turing",
    "Hopper",
    "Dijkstra",
    "Liskov",
    "Knuth",
    "Allen",
    "Backus",
    "Hamilton",
    "Thompson",
    "Perlman",
    "Ritchie",
    "Johnson",
    "Berners-Lee",
    "Lamarr",
    "Torvalds",
];
const SUFFIXES: &[&str] = &["Jr.", "Sr.", "III", "PhD"];
const STREETS: &[&str] = &[
    "Main St",
    "Oak Ave",
    "Pine Rd",
    "Elm St",
    "Maple Dr",
    "Cedar Ln",
    "Harbor Blvd",
    "Hill Rd",
];
const CITIES: &[(&str, &str)] = &[
    ("Springfield", "IL"),
    ("Portland", "OR"),
    ("Austin", "TX"),
    ("Madison", "WI"),
    ("Boulder", "CO"),
    ("Salem", "MA"),
    ("Fresno", "CA"),
    ("Ithaca", "NY"),
];
const PRODUCTS: &[(&str, &str)] = &[
    ("Desk lamp", "LED desk lamp, warm white"),
    ("Notebook", "Dotted A5 notebook"),
    ("Kettle", "Electric kettle, 1.7 l"),
    ("Headphones", "Wireless over-ear headphones"),
    ("Backpack", "Waterproof 20 l backpack"),
    ("Mug", "Stoneware mug"),
    ("Keyboard", "Mechanical keyboard"),
    ("Chair", "Ergonomic office chair"),
];
const CARRIERS: &[&str] = &["USPS", "FedEx", "UPS", "Uber", "Drone"];

fn pick<'a>(rng: &mut StdRng, list: &[&'a str]) -> &'a str {
    list.choose(rng).copied().unwrap_or_default()
}

fn customer_id(rng: &mut StdRng) -> Bson {
    let roll = rng.random_range(0..100);
    if roll < 80 {
        Bson::ObjectId(ObjectId::from_bytes(rng.random()))
    } else if roll < 95 {
        let tail: String = (0..12)
            .map(|_| char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[rng.random_range(0..36)]))
            .collect();
        Bson::String(format!("cust-{tail}"))
    } else {
        // 24 hex digits stored as a string (not by Spring, which would store an ObjectId).
        Bson::String(ObjectId::from_bytes(rng.random()).to_hex())
    }
}

/// `Some(value)` with probability `p_value`, explicit `null` with `p_null`, else absent.
fn optional(
    rng: &mut StdRng,
    p_value: f64,
    p_null: f64,
    value: impl FnOnce() -> String,
) -> Option<Bson> {
    let roll: f64 = rng.random();
    if roll < p_value {
        Some(Bson::String(value()))
    } else if roll < p_value + p_null {
        Some(Bson::Null)
    } else {
        None
    }
}

fn insert_optional(document: &mut Document, field: &str, value: Option<Bson>) {
    if let Some(value) = value {
        document.insert(field, value);
    }
}

fn phone(rng: &mut StdRng) -> String {
    format!("555-{:04}", rng.random_range(0..10_000))
}

fn contact(rng: &mut StdRng, first: &str, last: &str) -> Document {
    let mut contact = doc! { "primaryPhone": phone(rng) };
    let secondary = {
        let number = phone(rng);
        optional(rng, 0.4, 0.1, || number)
    };
    insert_optional(&mut contact, "secondaryPhone", secondary);
    let n: u16 = rng.random_range(1..1000);
    contact.insert(
        "email",
        format!(
            "{}.{}{n}@example.com",
            first.to_lowercase(),
            last.to_lowercase()
        ),
    );
    contact
}

fn address(rng: &mut StdRng, kind: &str, description: &str) -> Document {
    let (city, state) = *CITIES.choose(rng).unwrap_or(&CITIES[0]);
    let mut address = doc! {
        "type": kind,
        "description": description,
        "address1": format!("{} {}", rng.random_range(1..2000), pick(rng, STREETS)),
    };
    let apartment = rng.random_range(1..400);
    let address2 = optional(rng, 0.3, 0.1, || format!("Apt {apartment}"));
    insert_optional(&mut address, "address2", address2);
    address.insert("city", city);
    address.insert("state", state);
    address.insert(
        "postalCode",
        format!("{:05}", rng.random_range(1000..99_999)),
    );
    address
}

fn addresses(rng: &mut StdRng) -> Vec<Bson> {
    let mut list = vec![Bson::Document(address(rng, "SHIPPING", "home"))];
    if rng.random_bool(0.7) {
        let billing = Bson::Document(address(rng, "BILLING", "billing"));
        // Billing first sometimes, so the first SHIPPING address is not always the first one.
        if rng.random_bool(0.5) {
            list.insert(0, billing);
        } else {
            list.push(billing);
        }
    }
    if rng.random_bool(0.25) {
        list.push(Bson::Document(address(rng, "SHIPPING_ALTERNATE", "office")));
    }
    list
}

/// A 16-digit card number passing the Luhn check, as real ones do.
fn card_number(rng: &mut StdRng) -> String {
    let mut digits: Vec<u32> = vec![if rng.random_bool(0.5) { 4 } else { 5 }];
    for _ in 0..14 {
        digits.push(rng.random_range(0..10));
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, d)| {
            if i % 2 == 0 {
                let doubled = d * 2;
                if doubled > 9 { doubled - 9 } else { doubled }
            } else {
                *d
            }
        })
        .sum();
    digits.push((10 - sum % 10) % 10);
    digits
        .iter()
        .map(|d| char::from_digit(*d, 10).unwrap_or('0'))
        .collect()
}

fn new_account(rng: &mut StdRng, id: Bson) -> Document {
    let first = pick(rng, FIRST);
    let last = pick(rng, LAST);
    let mut account = doc! { "_id": id };
    if rng.random_bool(0.75) {
        account.insert("_class", ACCOUNT_CLASS);
    }
    let mut name = doc! { "title": pick(rng, TITLES), "firstName": first };
    let middle = pick(rng, FIRST).to_owned();
    insert_optional(&mut name, "middleName", optional(rng, 0.25, 0.1, || middle));
    name.insert("lastName", last);
    let suffix = pick(rng, SUFFIXES).to_owned();
    insert_optional(&mut name, "suffix", optional(rng, 0.08, 0.0, || suffix));
    account.insert("name", name);
    account.insert("contact", contact(rng, first, last));
    account.insert("addresses", addresses(rng));
    let mut cards = Vec::new();
    for kind in ["PRIMARY", "ALTERNATE"]
        .iter()
        .take(rng.random_range(1..=2))
    {
        let expiration = format!(
            "{:02}/{}",
            rng.random_range(1..=12),
            rng.random_range(27..=33)
        );
        cards.push(Bson::Document(doc! {
            "type": *kind,
            "description": if rng.random_bool(0.5) { "VISA" } else { "Mastercard" },
            "number": card_number(rng),
            "expiration": expiration,
            "nameOnCard": format!("{first} {last}"),
        }));
    }
    account.insert("creditCards", cards);
    account
}

/// One change of `account` (which is updated to the state after it), as a Spring `save` or a
/// `$set` of some paths.
fn account_change(rng: &mut StdRng, account: &mut Document) -> Write {
    let id = account.get("_id").cloned().unwrap_or(Bson::Null);
    let name = account.get_document("name").cloned().unwrap_or_default();
    let first = name.get_str("firstName").unwrap_or("Ada").to_owned();
    let last = name.get_str("lastName").unwrap_or("Lovelace").to_owned();
    let shipping = account
        .get_array("addresses")
        .ok()
        .and_then(|list| {
            list.iter().position(|a| {
                a.as_document().and_then(|a| a.get_str("type").ok()) == Some("SHIPPING")
            })
        })
        .unwrap_or(0);
    let set = match rng.random_range(0..6) {
        0 => {
            // Spring `save`: the whole document, moved house and new phone numbers.
            let mut replaced = account.clone();
            replaced.insert("_class", ACCOUNT_CLASS);
            replaced.insert("contact", contact(rng, &first, &last));
            if let Ok(list) = replaced.get_array_mut("addresses")
                && let Some(slot) = list.get_mut(shipping)
            {
                *slot = Bson::Document(address(rng, "SHIPPING", "new home"));
            }
            *account = replaced.clone();
            return Write::ReplaceAccount(replaced);
        }
        1 => doc! { "contact": contact(rng, &first, &last) },
        2 => {
            let n: u16 = rng.random_range(1..1000);
            doc! { "contact.email": format!("{}.{}{n}@mail.example", first.to_lowercase(), last.to_lowercase()) }
        }
        3 => doc! { "addresses": addresses(rng) },
        4 => {
            let moved = address(rng, "SHIPPING", "home");
            let mut set = Document::new();
            for field in ["address1", "city", "state", "postalCode"] {
                if let Some(value) = moved.get(field) {
                    set.insert(format!("addresses.{shipping}.{field}"), value.clone());
                }
            }
            set
        }
        _ => doc! {
            "name.lastName": pick(rng, LAST),
            "contact.secondaryPhone": Bson::Null,
        },
    };
    for (path, value) in &set {
        // The paths were built from this very document, so they apply.
        let _ = set_path(account, path, value.clone());
    }
    Write::SetAccount { id, set }
}

/// A customer's clock: epoch milliseconds that only move forward, and how the Orders
/// application stores them.
struct Clock {
    now: i64,
    legacy: bool,
}

impl Clock {
    fn new(rng: &mut StdRng) -> Self {
        // A few customers come from an import whose clock is small enough for int32.
        if rng.random_bool(0.05) {
            Self {
                now: rng.random_range(1_000..1_000_000),
                legacy: true,
            }
        } else {
            Self {
                // 2024-01-01 plus up to 90 days.
                now: 1_704_067_200_000 + rng.random_range(0..90 * 86_400_000),
                legacy: false,
            }
        }
    }

    fn tick(&mut self, rng: &mut StdRng) -> i64 {
        self.now += rng.random_range(1_000..600_000);
        self.now
    }

    /// The next timestamp as the Orders application stores it.
    fn orders_timestamp(&mut self, rng: &mut StdRng) -> Bson {
        let now = self.tick(rng);
        if self.legacy
            && let Ok(small) = i32::try_from(now)
        {
            return Bson::Int32(small);
        }
        match rng.random_range(0..100) {
            0..70 => Bson::Int64(now),
            70..85 => Bson::Double(now as f64),
            _ => Bson::DateTime(DateTime::from_millis(now)),
        }
    }

    /// The next timestamp as the Fulfillment application stores it (a Java `long`, sometimes
    /// written by a script as a double).
    fn fulfillment_timestamp(&mut self, rng: &mut StdRng) -> Bson {
        let now = self.tick(rng);
        if rng.random_bool(0.9) {
            Bson::Int64(now)
        } else {
            Bson::Double(now as f64)
        }
    }
}

fn guid(rng: &mut StdRng) -> String {
    uuid::Builder::from_random_bytes(rng.random())
        .into_uuid()
        .to_string()
}

fn price(rng: &mut StdRng) -> Bson {
    let cents: i64 = rng.random_range(99..50_000);
    let text = format!("{}.{:02}", cents / 100, cents % 100);
    match rng.random_range(0..100) {
        0..40 => Bson::String(text),
        40..65 => text
            .parse::<Decimal128>()
            .map_or(Bson::String(text), Bson::Decimal128),
        65..85 => Bson::Double(cents as f64 / 100.0),
        85..93 => Bson::Int32((cents / 100).max(1) as i32),
        _ => Bson::Int64((cents / 100).max(1)),
    }
}

fn quantity(rng: &mut StdRng) -> Bson {
    let n: i32 = rng.random_range(1..=5);
    match rng.random_range(0..100) {
        0..60 => Bson::Int32(n),
        60..85 => Bson::Int64(i64::from(n)),
        _ => Bson::Double(f64::from(n)),
    }
}

fn note(rng: &mut StdRng, text: &str) -> Option<Bson> {
    let text = text.to_owned();
    optional(rng, 0.3, 0.1, || text)
}

fn status_document(timestamp: Bson, kind: &str, note: Option<Bson>) -> Document {
    let mut status = doc! { "timestamp": timestamp, "orderStatusType": kind };
    insert_optional(&mut status, "note", note);
    status
}

fn order_plan(rng: &mut StdRng, clock: &mut Clock, customer: &str) -> OrderPlan {
    let guid = guid(rng);
    let mut items = Vec::new();
    for _ in 0..rng.random_range(1..=3) {
        let (title, description) = *PRODUCTS.choose(rng).unwrap_or(&PRODUCTS[0]);
        items.push(Bson::Document(doc! {
            "product": {
                "guid": self::guid(rng),
                "title": title,
                "description": description,
                "price": price(rng),
            },
            "quantity": quantity(rng),
        }));
    }
    let created = status_document(clock.orders_timestamp(rng), status::CREATED, None);
    let push = Write::PushOrder {
        customer: customer.to_owned(),
        order: doc! {
            "guid": guid.clone(),
            "orderStatusEvents": [created],
            "orderItems": items,
        },
    };
    let (kind, text) = match rng.random_range(0..100) {
        0..75 => (status::APPROVED, "payment authorised"),
        75..90 => (status::REJECTED, "payment declined"),
        _ => (status::CANCELLED, "cancelled by the customer"),
    };
    let outcome_note = note(rng, text);
    let outcome = Write::PushStatus {
        customer: customer.to_owned(),
        guid: guid.clone(),
        status: status_document(clock.orders_timestamp(rng), kind, outcome_note),
    };
    let mut fulfillment = Vec::new();
    if kind == status::APPROVED {
        for step in [
            status::PROCESSING,
            status::SHIPPED,
            status::IN_TRANSIT,
            status::RECEIVED,
        ] {
            let step_note = note(rng, "by the fulfillment service");
            fulfillment.push(Write::AdvanceRequest {
                guid: guid.clone(),
                status: status_document(clock.fulfillment_timestamp(rng), step, step_note),
                shipping_method: (step == status::SHIPPED).then(|| pick(rng, CARRIERS).to_owned()),
                replace: rng.random_bool(0.4),
            });
        }
    }
    OrderPlan {
        guid,
        push,
        outcome,
        fulfillment,
    }
}

#[cfg(test)]
mod tests {
    use storefront_schemas::topology::StorefrontNamespaces;

    use super::*;
    use crate::model::{Counts, projected_copy, timestamp_millis};

    #[test]
    fn a_seed_reproduces_the_same_plans() {
        for index in 0..20 {
            assert_eq!(
                plan_customer(7, index, 1..=3),
                plan_customer(7, index, 1..=3)
            );
        }
        assert_ne!(plan_customer(7, 0, 1..=3), plan_customer(8, 0, 1..=3));
        assert_ne!(
            plan_customer(7, 0, 1..=3).key,
            plan_customer(7, 1, 1..=3).key
        );
    }

    #[test]
    fn plans_cover_the_stored_shapes() {
        let plans: Vec<CustomerPlan> = (0..300).map(|i| plan_customer(1, i, 2..=2)).collect();
        let mut shapes = std::collections::BTreeSet::new();
        let mut ids = std::collections::BTreeSet::new();
        let mut writes = std::collections::BTreeSet::new();
        for plan in &plans {
            assert_eq!(plan.orders.len(), 2);
            for write in plan.sequential() {
                let kind = match &write {
                    Write::InsertAccount(d) => {
                        ids.insert(match d.get("_id").unwrap() {
                            Bson::ObjectId(_) => "objectId",
                            Bson::String(s) if s.len() == 24 => "hex string",
                            _ => "string",
                        });
                        "insert"
                    }
                    Write::ReplaceAccount(_) => "replace account",
                    Write::SetAccount { .. } => "set account",
                    Write::PushOrder { order, .. } => {
                        for item in order.get_array("orderItems").unwrap() {
                            let item = item.as_document().unwrap();
                            let price = item.get_document("product").unwrap().get("price").unwrap();
                            shapes.insert(format!("price {:?}", price.element_type()));
                            shapes.insert(format!(
                                "quantity {:?}",
                                item.get("quantity").unwrap().element_type()
                            ));
                        }
                        let created = order.get_array("orderStatusEvents").unwrap()[0]
                            .as_document()
                            .unwrap();
                        shapes.insert(format!(
                            "timestamp {:?}",
                            created.get("timestamp").unwrap().element_type()
                        ));
                        "push order"
                    }
                    Write::PushStatus { .. } => "push status",
                    Write::AdvanceRequest { replace, .. } => {
                        if *replace {
                            "replace request"
                        } else {
                            "set request"
                        }
                    }
                };
                writes.insert(kind);
            }
        }
        assert_eq!(ids.len(), 3, "{ids:?}");
        assert_eq!(writes.len(), 7, "{writes:?}");
        for expected in [
            "price String",
            "price Decimal128",
            "price Double",
            "price Int32",
            "price Int64",
            "quantity Int32",
            "quantity Int64",
            "quantity Double",
            "timestamp Int64",
            "timestamp Double",
            "timestamp DateTime",
            "timestamp Int32",
        ] {
            assert!(
                shapes.contains(expected),
                "{expected} missing from {shapes:?}"
            );
        }
    }

    #[test]
    fn every_order_follows_the_happy_path_with_increasing_timestamps() {
        for index in 0..100 {
            let plan = plan_customer(3, index, 1..=4);
            for order in &plan.orders {
                let mut timestamps = Vec::new();
                let mut kinds = Vec::new();
                let Write::PushOrder { order: pushed, .. } = &order.push else {
                    panic!()
                };
                let Write::PushStatus {
                    status: outcome, ..
                } = &order.outcome
                else {
                    panic!()
                };
                let mut statuses = vec![
                    pushed.get_array("orderStatusEvents").unwrap()[0]
                        .as_document()
                        .unwrap()
                        .clone(),
                    outcome.clone(),
                ];
                for step in &order.fulfillment {
                    let Write::AdvanceRequest { status, .. } = step else {
                        panic!()
                    };
                    statuses.push(status.clone());
                }
                for status in statuses {
                    timestamps.push(timestamp_millis(status.get("timestamp").unwrap()).unwrap());
                    kinds.push(status.get_str("orderStatusType").unwrap().to_owned());
                }
                assert!(timestamps.windows(2).all(|w| w[0] < w[1]), "{timestamps:?}");
                let expected: &[&str] = match kinds[1].as_str() {
                    "APPROVED" => &[
                        "CREATED",
                        "APPROVED",
                        "PROCESSING",
                        "SHIPPED",
                        "IN_TRANSIT",
                        "RECEIVED",
                    ],
                    "REJECTED" => &["CREATED", "REJECTED"],
                    _ => &["CREATED", "CANCELLED"],
                };
                assert_eq!(kinds, expected);
            }
        }
    }

    #[test]
    fn the_model_of_a_scenario_counts_every_fact() {
        let plans: Vec<CustomerPlan> = (0..50).map(|i| plan_customer(11, i, 3..=3)).collect();
        let expected = model_of(&plans)
            .unwrap()
            .expected(&StorefrontNamespaces::default());
        let approved: u64 = plans
            .iter()
            .flat_map(|p| &p.orders)
            .filter(|o| o.approved())
            .count() as u64;
        assert!(approved > 50 && approved < 150, "{approved}");
        assert_eq!(
            expected.counts,
            Counts {
                customers: 50,
                orders: 150,
                approved_orders: approved,
                status_changes: approved * 4
            }
        );
        assert_eq!(expected.requests.len() as u64, approved);
        // Every card number is a 16-digit Luhn number, and none leaks into a projection.
        let cards = expected.card_numbers();
        assert!(cards.len() >= 50);
        let projections = format!("{:?} {:?}", expected.orders, expected.requests);
        for card in &cards {
            assert_eq!(card.len(), 16);
            assert!(!projections.contains(card.as_str()));
        }
        // Every customer copy has a SHIPPING address, so every approved order has a request.
        for account in &expected.accounts {
            let copy = projected_copy(account);
            assert!(
                copy.get_array("addresses")
                    .unwrap()
                    .iter()
                    .any(|a| { a.as_document().unwrap().get_str("type") == Ok("SHIPPING") })
            );
        }
    }

    #[test]
    fn card_numbers_pass_the_luhn_check() {
        let mut rng = customer_rng(5, 5);
        for _ in 0..100 {
            let number = card_number(&mut rng);
            let sum: u32 = number
                .chars()
                .rev()
                .enumerate()
                .map(|(i, c)| {
                    let d = c.to_digit(10).unwrap();
                    if i % 2 == 1 {
                        if d * 2 > 9 { d * 2 - 9 } else { d * 2 }
                    } else {
                        d
                    }
                })
                .sum();
            assert_eq!(sum % 10, 0, "{number}");
        }
    }
}
