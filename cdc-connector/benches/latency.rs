//! The first change after a quiet spell: how long it takes to reach Kafka through the connector,
//! against a bare change stream waiting for the same change; and what the idle connector costs
//! itself and the servers. Prints figures; asserts nothing about speed.
//!
//! 1. Measures the servers' own idle CPU (MongoDB test server, Kafka broker) over one quiet spell
//!    with no connector running.
//! 2. Starts the release connector on fresh collections and topics and waits until a first
//!    customer reached Kafka (the consumer below has joined, every stream is open).
//! 3. `BENCH_SAMPLES` times (default 3): a bare change stream on the accounts collection (opened
//!    in this process as the connector's reader opens its own, `cdc_connector::source::open`)
//!    waits in a `getMore`; nothing is written for `BENCH_QUIET_SECS` (default 60), while the CPU
//!    of the connector, the MongoDB server and the Kafka broker is sampled from `/proc`; then one
//!    customer is inserted, and the bench times the bare stream receiving its change (the floor:
//!    server wake-up and one round trip) and a consumer receiving the connector's event from
//!    Kafka (connector, producer, broker and consumer together).
//!
//! Run: `cargo bench -p cdc-connector --bench latency` (starts the local stack if needed).
//! `BENCH_CONNECTOR_BIN=<path>` runs another build of the connector instead of this one's.

use std::time::{Duration, Instant};

use cdc_connector::config::{SnapshotMode, StreamSettings};
use mongodb::bson::oid::ObjectId;
use mongodb::bson::{Document, RawDocumentBuf, doc};
use storefront_schemas::topology::Namespace;
use storefront_tests::{DEADLINE, TopicReader, cpu_seconds, stack, unique};

mod common;
use common::BenchConnector;

/// The process whose command line contains `needle` (a server of the local stack).
fn process_with(needle: &str) -> u32 {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|line| String::from_utf8_lossy(&line).contains(needle))
        })
        .unwrap_or_else(|| panic!("no process running {needle}"))
}

/// Percent of one core each process used over `quiet`, in the order given.
async fn idle_cpu(pids: &[u32], quiet: Duration) -> Vec<f64> {
    let before: Vec<f64> = pids.iter().map(|pid| cpu_seconds(*pid)).collect();
    let started = Instant::now();
    tokio::time::sleep(quiet).await;
    let seconds = started.elapsed().as_secs_f64();
    pids.iter()
        .zip(before)
        .map(|(pid, before)| (cpu_seconds(*pid) - before) / seconds * 100.0)
        .collect()
}

fn customer(n: usize) -> Document {
    doc! {
        "_id": ObjectId::new(),
        "name": { "title": "Ms", "firstName": format!("Quiet{n}"), "lastName": "Latency" },
        "contact": { "primaryPhone": "555-0100", "email": format!("quiet{n}@example.com") },
        "addresses": [],
    }
}

#[tokio::main]
async fn main() {
    let env = |name: &str, default: u64| -> u64 {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let samples = env("BENCH_SAMPLES", 3).max(1) as usize;
    let quiet = Duration::from_secs(env("BENCH_QUIET_SECS", 60).max(1));
    let client = stack().mongo_client().await;
    let mongo = process_with("MongoTestServer");
    let kafka = process_with("kafka.Kafka");

    let servers_alone = idle_cpu(&[mongo, kafka], quiet).await;
    println!(
        "no connector, {quiet:?} quiet: MongoDB server {:.2} % of a core, Kafka broker {:.2} %",
        servers_alone[0], servers_alone[1]
    );

    let accounts = Namespace::new(unique("latency_accounts"), "customer.accounts");
    let bench = BenchConnector::prepare(
        "latency",
        &accounts,
        StreamSettings {
            snapshot: SnapshotMode::Never,
            ..StreamSettings::default()
        },
    )
    .await;
    let config = &bench.config;
    let topics = &config.topics;
    let mut daemon = bench.spawn();
    let connector = daemon.pid();
    storefront_tests::until_healthy(config.http.listen).await;

    let collection = client
        .database(&accounts.database)
        .collection::<Document>(&accounts.collection);
    let raw = client
        .database(&accounts.database)
        .collection::<RawDocumentBuf>(&accounts.collection);
    let mut reader = TopicReader::new(&[&topics.customer_change]);
    // A first customer through the whole path: the consumer has joined and every stream is open.
    collection.insert_one(customer(0)).await.unwrap();
    reader
        .read_until(DEADLINE, "the first customer's event", |records| {
            records.len() == 1
        })
        .await;

    println!(
        "\n| sample | quiet s | bare stream: write to change, ms | connector: write to event in Kafka, ms | connector % of a core, idle | MongoDB server % | Kafka broker % |"
    );
    println!("|---|---|---|---|---|---|---|");
    for sample in 1..=samples {
        let mut bare = cdc_connector::source::open(&raw, &config.stream, None)
            .await
            .unwrap();
        // The bare stream waits in a getMore from here on, as the connector's streams do.
        let bare_wait = tokio::spawn(async move {
            loop {
                if let Some(change) = bare.next_if_any().await.unwrap() {
                    return (Instant::now(), change.operation_type);
                }
            }
        });
        let idle = idle_cpu(&[connector, mongo, kafka], quiet).await;
        let written = Instant::now();
        collection.insert_one(customer(sample)).await.unwrap();
        reader
            .read_until(DEADLINE, "the sample's event", |records| {
                records.len() == sample + 1
            })
            .await;
        let in_kafka = written.elapsed();
        let (changed, _) = bare_wait.await.unwrap();
        let bare_latency = changed.saturating_duration_since(written);
        println!(
            "| {sample} | {} | {:.1} | {:.1} | {:.2} | {:.2} | {:.2} |",
            quiet.as_secs(),
            bare_latency.as_secs_f64() * 1000.0,
            in_kafka.as_secs_f64() * 1000.0,
            idle[0],
            idle[1],
            idle[2],
        );
    }
    daemon.signal("TERM");
    daemon.exit_status().await;
}
