//! Reconcile's speed (documents read per second) and memory on the local stack. Prints figures;
//! asserts only that the generated data reconciles with zero drift (so every document was
//! compared, not skipped).
//!
//! 1. Writes `BENCH_CUSTOMERS` (default 20,000) consistent customers in fresh collections: the
//!    account (with a card), its copy in `customer.orders` exactly as the orders projector writes
//!    it (derived with reconcile's own `expected_copy`) holding one order approved and then
//!    PROCESSING, and that order's request in `fulfillment.requests`, PROCESSING: 3 documents
//!    per customer.
//! 2. Runs reconcile without a rate limit, then with `BENCH_RATE` (default 5,000) documents/s.
//!    Before each run the process's peak resident memory is reset (`/proc/self/clear_refs`), and
//!    read after it, so the peak is the run's alone; run it with two sizes to see that it does
//!    not grow with the collections.
//!
//! `BENCH_INDEX=1` creates the index on `customer.orders` `orders.guid` that passes 4 and 5 want.
//!
//! Run: `cargo bench -p cdc-connector --bench reconcile` (starts the local stack if needed; the
//! data stays in the stack's oplog, so prefer a private stack: `STACK_DIR` and `STACK_*_PORT`).
#![allow(
    clippy::disallowed_methods,
    reason = "bench code: no Kafka calls, the attribute matches the other benches"
)]

use std::time::Instant;

use cdc_connector::config::{ConnectorConfig, WatchedSource};
use cdc_connector::mapping::StorefrontMapper;
use cdc_connector::reconcile::compare::{self, Expected};
use cdc_connector::reconcile::{self, Options};
use cdc_connector::source::Conversion;
use mongodb::bson::oid::ObjectId;
use mongodb::bson::{Document, RawDocumentBuf, doc};
use storefront_schemas::topology::{Namespace, StorefrontNamespaces};
use storefront_tests::{stack, unique};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn account(id: ObjectId, n: u64) -> Document {
    doc! {
        "_id": id,
        "_class": "com.example.Customer",
        "name": { "title": "Mr", "firstName": format!("First{n}"), "lastName": "Benchmark" },
        "contact": { "primaryPhone": "555-0100", "email": format!("bench{n}@example.com") },
        "addresses": [
            { "type": "SHIPPING", "description": "home", "address1": "1 Main St",
              "city": "Springfield", "state": "IL", "postalCode": "62701" },
            { "type": "BILLING", "description": "office", "address1": "2 Side St",
              "city": "Springfield", "state": "IL", "postalCode": "62702" },
        ],
        "creditCards": [{ "type": "PRIMARY", "description": "visa",
                          "number": "4111111111111111", "expiration": "12/30",
                          "nameOnCard": "Bench Mark" }],
    }
}

fn order(guid: &str) -> Document {
    doc! {
        "guid": guid,
        "orderItems": [{ "product": { "guid": "p1", "title": "Widget", "description": "w",
                                      "price": "3.99" }, "quantity": 2_i64 }],
        "orderStatusEvents": [
            { "timestamp": 1_000_i64, "orderStatusType": "CREATED" },
            { "timestamp": 2_000_i64, "orderStatusType": "APPROVED" },
            { "timestamp": 3_000_i64, "orderStatusType": "PROCESSING" },
        ],
    }
}

fn peak_reset() {
    // "5" resets the peak resident set size (Linux 4.0+).
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn peak_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_default()
}

#[tokio::main]
async fn main() {
    let customers = env("BENCH_CUSTOMERS", 20_000);
    let rate = env("BENCH_RATE", 5_000);
    let sources = StorefrontNamespaces {
        accounts: Namespace::new(unique("accounts"), "customer.accounts"),
        orders: Namespace::new(unique("orders"), "customer.orders"),
        fulfillment: Namespace::new(unique("fulfillment"), "fulfillment.requests"),
    };
    let mut config = ConnectorConfig {
        mongo: stack().mongo_settings(),
        kafka: stack().kafka_settings(),
        sources: sources.clone(),
        ..ConnectorConfig::default()
    };
    config.reconcile.targets.orders = sources.orders.clone();
    config.reconcile.targets.fulfillment = sources.fulfillment.clone();

    let client = stack().mongo_client().await;
    let collection = |ns: &Namespace| {
        client
            .database(&ns.database)
            .collection::<Document>(&ns.collection)
    };
    let mapper = StorefrontMapper::new(sources.clone(), config.topics.clone());
    let conversion = Conversion {
        namespace: sources.accounts.clone(),
        redaction: WatchedSource::Accounts.redaction(&config.sensitive),
    };
    let started = Instant::now();
    let mut n = 0;
    while n < customers {
        let (mut accounts, mut copies, mut requests) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..1_000.min(customers - n) {
            let id = ObjectId::new();
            let guid = uuid::Uuid::new_v4().to_string();
            let account = account(id, n);
            let (events, defects) = compare::map_current(
                &mapper,
                &conversion,
                RawDocumentBuf::from_document(&account).unwrap(),
            );
            let Expected::Copy(mut copy) =
                compare::expected_copy(&events, &defects, &config.topics)
            else {
                panic!("the bench account maps to a copy");
            };
            copy.insert("_id", id);
            copy.insert("orders", vec![order(&guid)]);
            let mut request = doc! { "_id": &guid, "order": order(&guid) };
            request.insert(
                "order",
                doc! { "guid": &guid, "orderStatusEvents": [
                { "timestamp": 3_000_i64, "orderStatusType": "PROCESSING" } ] },
            );
            accounts.push(account);
            copies.push(copy);
            requests.push(request);
            n += 1;
        }
        collection(&sources.accounts)
            .insert_many(accounts)
            .await
            .unwrap();
        collection(&sources.orders)
            .insert_many(copies)
            .await
            .unwrap();
        collection(&sources.fulfillment)
            .insert_many(requests)
            .await
            .unwrap();
    }
    if env("BENCH_INDEX", 0) == 1 {
        // The index docs/reconcile.md recommends for passes 4 and 5.
        collection(&sources.orders)
            .create_index(
                mongodb::IndexModel::builder()
                    .keys(doc! { "orders.guid": 1 })
                    .build(),
            )
            .await
            .unwrap();
        println!("index on orders.guid created");
    }
    println!(
        "wrote {customers} customers ({} documents) in {:.1} s",
        customers * 3,
        started.elapsed().as_secs_f64()
    );

    for limit in [0, rate] {
        config.reconcile.max_documents_per_second = limit;
        peak_reset();
        let report = reconcile::run(&config, &Options::default()).await.unwrap();
        assert_eq!(report.total(), 0, "{}", report.text());
        assert_eq!(report.compared[&reconcile::Check::CustomerCopy], customers);
        println!(
            "rate limit {:>6}: {} documents read in {:.1} s = {:.0} documents/s ({:.0} customers/s); peak RSS {} MiB",
            if limit == 0 {
                "none".to_owned()
            } else {
                limit.to_string()
            },
            report.documents_read,
            report.seconds,
            report.documents_read as f64 / report.seconds,
            customers as f64 / report.seconds,
            peak_kib() / 1024
        );
        for pass in &report.passes {
            println!(
                "    pass {:<24} {:>7} documents in {:>6.1} s = {:>6.0} documents/s",
                pass.name,
                pass.documents,
                pass.seconds,
                pass.documents as f64 / pass.seconds
            );
        }
    }
    for ns in [&sources.accounts, &sources.orders, &sources.fulfillment] {
        client.database(&ns.database).drop().await.unwrap();
    }
}
