//! Connector throughput against a bare change-stream drain of the same backlog, same server, same
//! run. Prints figures; asserts nothing about speed (timed tests are flaky by nature).
//!
//! 1. Enables post-images on a fresh `customer.accounts` (as the connector does at start), writes
//!    a marker document, keeps the change stream's token after it, then writes a backlog of
//!    `BENCH_EVENTS` (default 20,000) customer documents of about 1 KB.
//! 2. Alternates `BENCH_RUNS` (default 3) connector runs with bare drains: drain, connector,
//!    drain, connector, ..., drain. Each connector run is compared with the mean of the drain
//!    before it and the drain after it, so neither side gets the cold (or the warm) server alone.
//!    - **Bare drain**: in this process, a new MongoDB client opens the stream exactly as the
//!      connector's reader does (`cdc_connector::source::open`, the same `fullDocument` mode,
//!      raw BSON events, `startAfter` the marker) and reads the whole backlog, asking again at
//!      once after an empty poll like the connector's reader (the server holds an empty getMore
//!      open until a change arrives): the floor any connector pays to the server. Timed from creating the client to the last event; CPU is this
//!      process's, sampled at both ends.
//!    - **Connector**: the release binary with an accounts checkpoint at the marker and its topics
//!      created beforehand (a deployment step). The clock starts before the process is spawned,
//!      so its whole start (connecting, checking topics, opening streams) is inside the window;
//!      its CPU is everything the process used (sampled right after the spawn and at the end).
//!      The run ends when the topic's high watermarks have grown by the backlog since the clock
//!      started (sampled before it): only events published inside the window count. Also
//!      printed: the rate and CPU from the first poll that finds events in Kafka to the end,
//!      counting only the events published after that poll (the start-up left out).
//!
//! Run: `cargo bench -p cdc-connector --bench throughput` (starts the local stack if needed).
//! `BENCH_CONNECTOR_BIN=<path>` runs another build of the connector instead of this one's.
#![allow(
    clippy::disallowed_methods,
    reason = "test code: synchronous Kafka calls wait on the local broker only"
)]

use std::time::{Duration, Instant};

use cdc_connector::checkpoint::CheckpointStore;
use cdc_connector::config::StreamSettings;
use mongodb::Collection;
use mongodb::bson::oid::ObjectId;
use mongodb::bson::{Document, RawDocumentBuf, doc};
use mongodb::change_stream::event::ResumeToken;
use rdkafka::consumer::{BaseConsumer, Consumer};
use storefront_plumbing::kafka::TracingContext;
use storefront_schemas::topology::Namespace;
use storefront_tests::{cpu_seconds, next_events, stack, unique};

mod common;
use common::BenchConnector;

fn customer(id: ObjectId, n: usize) -> Document {
    doc! {
        "_id": id,
        "name": { "title": "Mr", "firstName": format!("First{n}"), "lastName": "Benchmark" },
        "contact": { "primaryPhone": "555-0100", "email": format!("bench{n}@example.com") },
        "addresses": [{
            "type": "SHIPPING", "description": "home", "address1": "1 Main St",
            "city": "Springfield", "state": "IL", "postalCode": "62701"
        }, {
            "type": "BILLING", "description": "office", "address1": "2 Side St",
            "city": "Springfield", "state": "IL", "postalCode": "62702"
        }],
        "creditCards": [{
            "type": "PRIMARY", "description": "visa", "number": "4111111111111111",
            "expiration": "12/30", "nameOnCard": "Bench Mark"
        }],
        // Pads the document to about 1 KB, like a real customer record with notes.
        "notes": "x".repeat(560),
    }
}

fn high_watermark_sum(consumer: &BaseConsumer<TracingContext>, topic: &str) -> i64 {
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(5))
        .unwrap();
    metadata.topics()[0]
        .partitions()
        .iter()
        .map(|p| {
            consumer
                .fetch_watermarks(topic, p.id(), Duration::from_secs(5))
                .unwrap()
                .1
        })
        .sum()
}

/// One timed run: wall seconds and CPU seconds for `events` events.
#[derive(Debug, Clone, Copy)]
struct Run {
    seconds: f64,
    cpu: f64,
}

/// A connector run: from the spawn (`whole`), and from when Kafka first held one of its events
/// to the last (`publishing`: the events counted are those published after that first sample).
#[derive(Debug, Clone, Copy)]
struct ConnectorRun {
    whole: Run,
    publishing: Run,
    publishing_events: usize,
}

impl Run {
    fn rate(self, events: usize) -> f64 {
        events as f64 / self.seconds
    }

    fn cpu_per_10k(self, events: usize) -> f64 {
        self.cpu / events as f64 * 10_000.0
    }
}

/// Reads the backlog after `marker` as the connector's reader would, with nothing else to do.
async fn bare_drain(accounts: &Namespace, marker: &ResumeToken, events: usize) -> Run {
    let settings = StreamSettings::default();
    let own_pid = std::process::id();
    let cpu_before = cpu_seconds(own_pid);
    let started = Instant::now();
    let client = stack().mongo_client().await;
    let collection: Collection<RawDocumentBuf> = client
        .database(&accounts.database)
        .collection(&accounts.collection);
    let mut drain = cdc_connector::source::open(&collection, &settings, Some(marker.clone()))
        .await
        .unwrap();
    let mut drained = 0;
    while drained < events {
        // An empty poll is a getMore the server held open (awaitData): ask again at once.
        if drain.next_if_any().await.unwrap().is_some() {
            drained += 1;
        }
    }
    let run = Run {
        seconds: started.elapsed().as_secs_f64(),
        cpu: cpu_seconds(own_pid) - cpu_before,
    };
    drop(drain);
    drop(client);
    run
}

/// Runs the release connector from `marker` until Kafka acknowledged `events` events.
async fn connector(accounts: &Namespace, marker: &ResumeToken, events: usize) -> ConnectorRun {
    let bench = BenchConnector::prepare("bench", accounts, StreamSettings::default()).await;
    let client = stack().mongo_client().await;
    CheckpointStore::new(&client, &bench.config.checkpoints)
        .save(&accounts.to_string(), marker, None, &[])
        .await
        .unwrap();
    let watermarks: BaseConsumer<TracingContext> =
        storefront_plumbing::kafka::client_config(&stack().kafka_settings(), "bench", &[], &[])
            .create_with_context(TracingContext)
            .unwrap();
    let topic = &bench.config.topics.customer_change;
    let published_before = high_watermark_sum(&watermarks, topic);

    let started = Instant::now();
    let mut daemon = bench.spawn();
    let pid = daemon.pid();
    let cpu_before = cpu_seconds(pid);
    // (seconds, CPU seconds, events published) when Kafka first held one of its events.
    let mut first = None;
    loop {
        let published = high_watermark_sum(&watermarks, topic) - published_before;
        if published > 0 && first.is_none() {
            first = Some((started.elapsed().as_secs_f64(), cpu_seconds(pid), published));
        }
        if published >= events as i64 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "connector stalled"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (seconds, cpu) = (started.elapsed().as_secs_f64(), cpu_seconds(pid));
    daemon.signal("TERM");
    daemon.exit_status().await;
    let (first_seconds, first_cpu, first_published) = first.unwrap();
    println!(
        "  connector: first events in Kafka {first_seconds:.2} s after the spawn ({first_published} \
         of them), the last at {seconds:.2} s"
    );
    ConnectorRun {
        whole: Run {
            seconds,
            cpu: cpu - cpu_before,
        },
        publishing: Run {
            seconds: seconds - first_seconds,
            cpu: cpu - first_cpu,
        },
        publishing_events: events - first_published as usize,
    }
}

#[tokio::main]
async fn main() {
    let env = |name: &str, default: usize| -> usize {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let events = env("BENCH_EVENTS", 20_000);
    let runs = env("BENCH_RUNS", 3).max(1);
    let client = stack().mongo_client().await;
    let accounts = Namespace::new(unique("bench_accounts"), "customer.accounts");
    let collection = client
        .database(&accounts.database)
        .collection::<Document>(&accounts.collection);
    cdc_connector::source::enable_post_images(
        &client
            .database(&accounts.database)
            .collection::<RawDocumentBuf>(&accounts.collection),
    )
    .await
    .unwrap();

    // The marker's token is where every reader starts.
    let mut watcher = collection.watch().await.unwrap();
    collection
        .insert_one(doc! { "_id": "marker" })
        .await
        .unwrap();
    next_events(&mut watcher, 1).await;
    let marker = watcher.resume_token().unwrap();
    drop(watcher);

    let started = Instant::now();
    let backlog: Vec<Document> = (0..events).map(|n| customer(ObjectId::new(), n)).collect();
    let bytes: usize = backlog
        .iter()
        .map(|d| mongodb::bson::to_vec(d).unwrap().len())
        .sum();
    for chunk in backlog.chunks(1000) {
        collection.insert_many(chunk.to_vec()).await.unwrap();
    }
    println!(
        "backlog: {events} documents, {:.0} bytes each on average, written in {:.1} s",
        bytes as f64 / events as f64,
        started.elapsed().as_secs_f64()
    );

    let mut drains = vec![bare_drain(&accounts, &marker, events).await];
    println!("drain 1: {:.0} events/s", drains[0].rate(events));
    let mut connectors = Vec::new();
    for run in 1..=runs {
        connectors.push(connector(&accounts, &marker, events).await);
        println!(
            "connector {run}: {:.0} events/s",
            connectors[run - 1].whole.rate(events)
        );
        drains.push(bare_drain(&accounts, &marker, events).await);
        println!(
            "drain {}: {:.0} events/s",
            run + 1,
            drains[run].rate(events)
        );
    }

    println!(
        "\n| run | bare drain before / after, events/s | connector events/s, from the spawn | \
         throughput ratio (connector / mean of the drains) | drain CPU s per 10,000 (mean) | \
         connector CPU s per 10,000 | events per connector CPU-second | connector events/s from \
         its first event | events per connector CPU-second from its first event |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (n, connector) in connectors.iter().enumerate() {
        let (before, after) = (drains[n], drains[n + 1]);
        let drain_seconds = (before.seconds + after.seconds) / 2.0;
        let drain_cpu = (before.cpu + after.cpu) / 2.0;
        let ConnectorRun {
            whole,
            publishing,
            publishing_events,
        } = *connector;
        println!(
            "| {} | {:.0} / {:.0} | {:.0} | {:.2} | {:.3} | {:.3} | {:.0} | {:.0} | {:.0} |",
            n + 1,
            before.rate(events),
            after.rate(events),
            whole.rate(events),
            drain_seconds / whole.seconds,
            drain_cpu / events as f64 * 10_000.0,
            whole.cpu_per_10k(events),
            events as f64 / whole.cpu,
            publishing.rate(publishing_events),
            publishing_events as f64 / publishing.cpu
        );
    }
    println!("\ntargets: throughput ratio >= 0.80; events per connector CPU-second >= 45,000");
}
