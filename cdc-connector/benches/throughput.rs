//! Connector throughput against a bare change-stream drain of the same backlog, same server, same
//! run. Prints figures; asserts nothing about speed (timed tests are flaky by nature).
//!
//! 1. Writes a marker document, keeps the change stream's token after it, then writes a backlog
//!    of `BENCH_EVENTS` (default 20,000) customer documents of about 1 KB.
//! 2. Bare drain: a change stream opened after the marker reads the whole backlog (the floor any
//!    connector pays to the server).
//! 3. Connector: the release binary, its accounts checkpoint set to the marker token, publishes the
//!    backlog to Kafka; done when the topic's high watermarks sum to the backlog. Its CPU time
//!    comes from /proc/<pid>/stat, taken from when it reports healthy to when the last event is
//!    acknowledged.
//!
//! Run: `cargo bench -p cdc-connector --bench throughput` (starts the local stack if needed).

use std::path::Path;
use std::time::{Duration, Instant};

use cdc_connector::checkpoint::CheckpointStore;
use cdc_connector::config::{CheckpointSettings, ConnectorConfig, StreamSettings};
use mongodb::bson::oid::ObjectId;
use mongodb::bson::{Document, doc};
use rdkafka::consumer::{BaseConsumer, Consumer};
use storefront_plumbing::kafka::TracingContext;
use storefront_plumbing::settings::HttpSettings;
use storefront_schemas::topology::{Namespace, StorefrontNamespaces, StorefrontTopics};
use storefront_tests::{Daemon, free_port, next_events, stack, unique, until_healthy};

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

/// CPU seconds (user + system) used so far by process `pid`.
fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0 // USER_HZ is 100 on Linux
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

#[tokio::main]
async fn main() {
    let events: usize = std::env::var("BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let client = stack().mongo_client().await;
    let accounts = Namespace::new(unique("bench_accounts"), "customer.accounts");
    let collection = client
        .database(&accounts.database)
        .collection::<Document>(&accounts.collection);

    // The marker's token is where both readers start.
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

    // Bare drain, in this process: nothing else runs here meanwhile.
    let own_pid = std::process::id().to_string();
    let cpu_before = cpu_seconds(&own_pid);
    let started = Instant::now();
    let mut drain = collection
        .watch()
        .full_document(mongodb::options::FullDocumentType::UpdateLookup)
        .start_after(marker.clone())
        .await
        .unwrap();
    let mut drained = 0;
    while drained < events {
        match drain.next_if_any().await.unwrap() {
            Some(_) => drained += 1,
            None => tokio::task::yield_now().await,
        }
    }
    let bare_seconds = started.elapsed().as_secs_f64();
    let bare_cpu = cpu_seconds(&own_pid) - cpu_before;
    drop(drain);

    // The connector, as a release binary in its own process.
    let topics = StorefrontTopics {
        customer_change: unique("bench_customer"),
        fulfillment_request: unique("bench_fulfill"),
        order_status_change: unique("bench_status"),
    };
    let config = ConnectorConfig {
        mongo: stack().mongo_settings(),
        kafka: stack().kafka_settings(),
        http: HttpSettings::on_port(free_port()),
        sources: StorefrontNamespaces {
            accounts: accounts.clone(),
            orders: Namespace::new(unique("bench_orders"), "customer.orders"),
            fulfillment: Namespace::new(unique("bench_fulfillment"), "fulfillment.requests"),
        },
        topics: topics.clone(),
        stream: StreamSettings {
            dead_letter_topic: unique("bench_dead"),
            ..StreamSettings::default()
        },
        checkpoints: CheckpointSettings {
            database: unique("bench_state"),
            ..CheckpointSettings::default()
        },
        ..ConnectorConfig::default()
    };
    CheckpointStore::new(&client, &config.checkpoints)
        .save(&accounts.to_string(), &marker, None, &[])
        .await
        .unwrap();
    let mut file_config = config.clone();
    file_config.log.filter = "warn".into();
    let dir = std::env::temp_dir().join(unique("bench"));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("connector.toml");
    std::fs::write(&path, toml::to_string(&file_config).unwrap()).unwrap();

    let mut daemon = Daemon::spawn(
        Path::new(env!("CARGO_BIN_EXE_cdc-connector")),
        &["--config", path.to_str().unwrap(), "run"],
    );
    let pid = daemon.pid().to_string();
    until_healthy(config.http.listen).await;
    let cpu_before = cpu_seconds(&pid);
    let started = Instant::now();
    let watermarks: BaseConsumer<TracingContext> =
        storefront_plumbing::kafka::client_config(&stack().kafka_settings(), "bench")
            .create_with_context(TracingContext)
            .unwrap();
    while high_watermark_sum(&watermarks, &topics.customer_change) < events as i64 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "connector stalled"
        );
    }
    let connector_seconds = started.elapsed().as_secs_f64();
    let connector_cpu = cpu_seconds(&pid) - cpu_before;
    daemon.signal("TERM");
    daemon.exit_status().await;
    let _ = std::fs::remove_dir_all(&dir);

    let per_second = |seconds: f64| events as f64 / seconds;
    println!("\n| run | events/s | CPU s per 10,000 events | events per CPU s |");
    println!("|---|---|---|---|");
    println!(
        "| bare change-stream drain | {:.0} | {:.3} | {:.0} |",
        per_second(bare_seconds),
        bare_cpu / events as f64 * 10_000.0,
        events as f64 / bare_cpu
    );
    println!(
        "| cdc-connector (to Kafka, acked) | {:.0} | {:.3} | {:.0} |",
        per_second(connector_seconds),
        connector_cpu / events as f64 * 10_000.0,
        events as f64 / connector_cpu
    );
    println!(
        "\nthroughput ratio connector / bare drain: {:.2} (target >= 0.80)",
        bare_seconds / connector_seconds
    );
    println!(
        "connector events per CPU-second: {:.0} (target >= 45,000)",
        events as f64 / connector_cpu
    );
}
