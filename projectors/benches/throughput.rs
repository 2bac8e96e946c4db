//! Projector throughput and rebuild time against bare baselines on the same server, same run.
//! Prints figures; asserts nothing about speed (timed tests are flaky by nature).
//!
//! 1. **Live projector.** A backlog of `BENCH_EVENTS` (default 20,000) CustomerChangeEvents, two
//!    per customer (every customer's first change, then every second change, so no batch
//!    collapses anything), is produced to a fresh topic. Baselines, sent from this process in
//!    unordered `update` commands of the projector's batch size, each into a fresh collection:
//!    the same writes as plain upserts by `_id`, and the projector's own guarded statements
//!    (built by its code). Both write in the order a consumer receives the records (partitions
//!    interleave; the order of inserts into the `_id` index changes the server's work), and each
//!    runs before and after the projector, the mean counting (the server slows as its data file
//!    grows). Projector: the release binary (`projectors run orders`) drains the backlog into
//!    another fresh collection, with the shipped `apply` settings; timed from `/health` turning
//!    200 until its metrics count every record settled (its offsets are then checked
//!    committed); CPU from `/proc/<pid>/stat` over the same span. The same again for
//!    `BENCH_EVENTS` FulfillmentRequestEvents (one per order) and the fulfillment projector.
//! 2. **Rebuild.** `BENCH_REBUILD_EVENTS` (default 100,000) CustomerChangeEvents over
//!    `BENCH_REBUILD_CUSTOMERS` (default 5,000). Baseline: a raw consume of the topic (records
//!    copied out, not decoded) plus the raw bulk upsert of the same writes (in the consumed
//!    order), timed separately and summed. Rebuild: `projectors rebuild orders` (release
//!    binary), wall time from spawn to exit, into an empty collection; then once more over the
//!    now populated one.
//!
//! `BENCH_PARTS` (default `live,rebuild`) picks the parts; CPU columns cover the client, the
//! Kafka broker and the MongoDB server (`STACK_DIR` pid files, or `BENCH_KAFKA_PID` /
//! `BENCH_MONGO_PID`).
//!
//! `BENCH_PROJECTORS_BIN=<path>` runs another build of the projectors instead of this one's (to
//! compare two versions of the code on the same stack in one session).
//!
//! Run: `cargo bench -p projectors` (starts the local stack if needed).

#[path = "../tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use mongodb::bson::oid::ObjectId;
use mongodb::bson::{Document, RawArrayBuf, RawDocumentBuf, doc};
use projectors::config::ApplySettings;
use projectors::config::{Projector, ProjectorsConfig};
use projectors::projection::to_bson;
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::FutureProducer;
use storefront_plumbing::kafka::TracingContext;
use storefront_plumbing::settings::HttpSettings;
use storefront_schemas::documents::CustomerId;
use storefront_schemas::events::{CustomerChangeEvent, FulfillmentRequestEvent};
use storefront_tests::{Daemon, cpu_seconds, free_port, stack, unique, until_healthy};

/// This build's projectors binary, or `BENCH_PROJECTORS_BIN`.
fn binary() -> std::path::PathBuf {
    std::env::var_os("BENCH_PROJECTORS_BIN")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_BIN_EXE_projectors")))
}

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The stack's server processes, whose CPU time is reported beside each run: on a 2-core
/// machine the projector, Kafka and MongoDB compete for the same cores.
struct Servers {
    kafka: Option<u32>,
    mongo: Option<u32>,
}

/// CPU seconds the servers used over a run.
#[derive(Debug, Clone, Copy, Default)]
struct ServerCpu {
    kafka: Option<f64>,
    mongo: Option<f64>,
}

impl Servers {
    /// The local stack's pids from its pid files; `BENCH_MONGO_PID` / `BENCH_KAFKA_PID` name
    /// others (an external server).
    fn find() -> Self {
        let stack_dir = std::env::var("STACK_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|_| storefront_tests::repo_root().join(".stack"));
        let pid = |service: &str, variable: &str| {
            std::env::var(variable)
                .ok()
                .or_else(|| {
                    if service == "mongo" && std::env::var_os("STOREFRONT_TEST_MONGO_URI").is_some()
                    {
                        return None;
                    }
                    std::fs::read_to_string(stack_dir.join(service).join(format!("{service}.pid")))
                        .ok()
                })
                .and_then(|text| text.trim().parse::<u32>().ok())
                .filter(|pid| Path::new(&format!("/proc/{pid}")).exists())
        };
        Self {
            kafka: pid("kafka", "BENCH_KAFKA_PID"),
            mongo: pid("mongo", "BENCH_MONGO_PID"),
        }
    }

    fn now(&self) -> ServerCpu {
        ServerCpu {
            kafka: self.kafka.map(cpu_seconds),
            mongo: self.mongo.map(cpu_seconds),
        }
    }

    fn since(&self, before: ServerCpu) -> ServerCpu {
        let after = self.now();
        let delta = |a: Option<f64>, b: Option<f64>| Some(a? - b?);
        ServerCpu {
            kafka: delta(after.kafka, before.kafka),
            mongo: delta(after.mongo, before.mongo),
        }
    }
}

fn bench_config() -> ProjectorsConfig {
    let mut config = test_config();
    config.log.filter = std::env::var("BENCH_LOG").unwrap_or_else(|_| "warn".into());
    // The shipped defaults (the tests' short intervals would commit and gather statistics
    // many times a second); only the dead-letter topic stays the test's own.
    config.apply = ApplySettings {
        dead_letter_topic: config.apply.dead_letter_topic,
        ..ApplySettings::default()
    };
    config
}

/// Produces `records` as fast as the producer batches them; waits for every acknowledgement.
async fn produce(records: &[Outbound]) -> f64 {
    let producer: FutureProducer<TracingContext> =
        storefront_plumbing::kafka::producer_config(&stack().kafka_settings(), "bench", &[])
            .set("linger.ms", "5")
            .set("queue.buffering.max.messages", "1000000")
            .create_with_context(TracingContext)
            .unwrap();
    let started = Instant::now();
    let mut deliveries = Vec::with_capacity(records.len());
    for record in records {
        let out = record.to_record(None);
        deliveries.push(producer.send_result(out).map_err(|(e, _)| e).unwrap());
    }
    for delivery in deliveries {
        delivery.await.unwrap().map_err(|(e, _)| e).unwrap();
    }
    started.elapsed().as_secs_f64()
}

/// A backlog: the records, the same writes as plain upserts by `_id`, and the projector's own
/// guarded statements for them.
struct Backlog {
    records: Vec<Outbound>,
    plain: Vec<Document>,
    guarded: Vec<Document>,
}

fn statement(op: &projectors::store::WriteOp) -> Document {
    doc! { "q": op.filter.clone(), "u": op.update.clone(), "upsert": op.upsert, "multi": false }
}

/// `events` changes of `customers` customers, round by round: every customer's first change,
/// then every second change, ..., so one batch holds a customer at most once (or twice where two
/// rounds meet).
fn customer_backlog(config: &ProjectorsConfig, events: usize, customers: usize) -> Backlog {
    let ids: Vec<CustomerId> = (0..customers).map(|_| new_customer_id()).collect();
    let mut backlog = Backlog {
        records: Vec::with_capacity(events),
        plain: Vec::with_capacity(events),
        guarded: Vec::with_capacity(events),
    };
    for n in 0..events {
        let id = &ids[n % customers];
        let first_name = format!("Customer{}r{}", n % customers, n / customers);
        let record = customer_change(config, id, position(n as u32), &first_name);
        let payload: CustomerChangeEvent =
            serde_json::from_slice(record.body.as_ref().unwrap()).unwrap();
        backlog.guarded.push(statement(
            &projectors::projection::orders::change_write(
                id,
                position(n as u32) as i64,
                &payload,
                false,
            )
            .unwrap(),
        ));
        backlog.plain.push(doc! {
            "q": { "_id": id },
            "u": {
                "$set": {
                    "name": to_bson(&payload.name).unwrap(),
                    "contact": to_bson(&payload.contact).unwrap(),
                    "addresses": to_bson(&payload.addresses).unwrap(),
                },
                "$setOnInsert": { "orders": [] },
            },
            "upsert": true,
            "multi": false,
        });
        backlog.records.push(record);
    }
    backlog
}

/// One request per order.
fn request_backlog(config: &ProjectorsConfig, events: usize) -> Backlog {
    let mut backlog = Backlog {
        records: Vec::with_capacity(events),
        plain: Vec::with_capacity(events),
        guarded: Vec::with_capacity(events),
    };
    for n in 0..events {
        let guid = format!("{}-{n}", ObjectId::new().to_hex());
        let record = fulfillment_request(config, &guid, position(n as u32), "Springfield");
        let payload: FulfillmentRequestEvent =
            serde_json::from_slice(record.body.as_ref().unwrap()).unwrap();
        backlog.guarded.push(statement(
            &projectors::projection::fulfillment::request_write(
                position(n as u32) as i64,
                &payload,
            )
            .unwrap(),
        ));
        backlog.plain.push(doc! {
            "q": { "_id": &guid },
            "u": {
                "$set": {
                    "timestamp": payload.timestamp,
                    "name": to_bson(&payload.name).unwrap(),
                    "contact": to_bson(&payload.contact).unwrap(),
                    "address": to_bson(&payload.address).unwrap(),
                    "order.orderItems": to_bson(&payload.order.order_items).unwrap(),
                },
                "$setOnInsert": {
                    "order.guid": &guid,
                    "order.orderStatusEvents": to_bson(&payload.order.order_status_events).unwrap(),
                },
            },
            "upsert": true,
            "multi": false,
        });
        backlog.records.push(record);
    }
    backlog
}

/// A bare baseline: `writes` as unordered `update` commands of `batch` statements, one after
/// another, into `collection` of a fresh database. Prints its row as `label`; returns seconds.
async fn bare_upsert(
    client: &mongodb::Client,
    label: &str,
    collection: &str,
    writes: &[Document],
    batch: usize,
    servers: &Servers,
) -> f64 {
    let db = client.database(&unique("bench_baseline"));
    let own = std::process::id();
    let cpu_before = cpu_seconds(own);
    let servers_before = servers.now();
    let started = Instant::now();
    for chunk in writes.chunks(batch) {
        let mut statements = RawArrayBuf::new();
        for statement in chunk {
            statements.push(RawDocumentBuf::from_document(statement).unwrap());
        }
        let mut command = RawDocumentBuf::new();
        command.append("update", collection);
        command.append("updates", statements);
        command.append("ordered", false);
        let reply = db.run_raw_command(command).await.unwrap();
        assert!(reply.get_array("writeErrors").is_err(), "{reply}");
    }
    let seconds = started.elapsed().as_secs_f64();
    row(
        label,
        writes.len(),
        seconds,
        Some(cpu_seconds(own) - cpu_before),
        Some(servers.since(servers_before)),
    );
    seconds
}

fn write_config(dir: &Path, config: &ProjectorsConfig, name: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, toml::to_string(config).unwrap()).unwrap();
    path
}

/// Records the instance at `addr` has settled (applied, stale, duplicate, dead letter).
async fn settled(addr: std::net::SocketAddr) -> f64 {
    let Some((_, body)) = storefront_tests::http_get(addr, "/metrics").await else {
        return 0.0;
    };
    body.lines()
        .filter(|line| line.starts_with("projector_events_total{"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Runs `projectors run <projector>` over the produced backlog of `events` records, from
/// `/health` turning 200 until its metrics count every record settled (written or found
/// stale). Returns (seconds, CPU seconds, and the records and seconds after its first batch:
/// the steady state, without the consumer's start); checks the offsets get committed too.
async fn live(
    config: &ProjectorsConfig,
    projector: Projector,
    events: usize,
    dir: &Path,
    servers: &Servers,
) -> (f64, f64, Option<(usize, f64)>, ServerCpu) {
    let mut config = config.clone();
    config.http = HttpSettings::on_port(free_port());
    let path = write_config(dir, &config, &format!("{projector}.toml"));
    let mut daemon = Daemon::spawn(
        &binary(),
        &["--config", path.to_str().unwrap(), "run", projector.name()],
    );
    let pid = daemon.pid();
    until_healthy(config.http.listen).await;
    let cpu_before = cpu_seconds(pid);
    let servers_before = servers.now();
    let started = Instant::now();
    let mut first_batch: Option<(Instant, f64)> = None;
    loop {
        let done = settled(config.http.listen).await;
        if done > 0.0 && first_batch.is_none() {
            first_batch = Some((Instant::now(), done));
        }
        if done >= events as f64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            started.elapsed() < Duration::from_secs(900),
            "projector stalled"
        );
    }
    let steady = first_batch.map(|(at, done)| (events - done as usize, at.elapsed().as_secs_f64()));
    let seconds = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid) - cpu_before;
    let server_cpu = servers.since(servers_before);
    caught_up(&config, projector).await;
    daemon.signal("TERM");
    daemon.exit_status().await;
    (seconds, cpu, steady, server_cpu)
}

/// Reads every record of `topic` without decoding it. Returns the seconds and the payloads in
/// the order they arrived.
async fn raw_consume(topic: &str, expected: usize) -> (f64, Vec<Vec<u8>>) {
    let consumer: StreamConsumer<TracingContext> = storefront_plumbing::kafka::consumer_config(
        &stack().kafka_settings(),
        "bench",
        &unique("bench_raw"),
        &[],
    )
    .create_with_context(TracingContext)
    .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    // The first record marks the start: joining the group is not reading.
    let first = consumer.recv().await.unwrap().detach();
    let started = Instant::now();
    let mut records = Vec::with_capacity(expected);
    records.push(first);
    while records.len() < expected {
        // Copied out, as any consumer that keeps a record beyond the poll does.
        records.push(consumer.recv().await.unwrap().detach());
    }
    let seconds = started.elapsed().as_secs_f64();
    let payloads: Vec<Vec<u8>> = records
        .into_iter()
        .map(|record| record.payload().unwrap_or_default().to_vec())
        .collect();
    (seconds, payloads)
}

impl Backlog {
    /// Puts the baseline writes in the order a consumer received their records (`payloads`):
    /// partitions interleave, and the order of inserts into the `_id` index changes how much
    /// work the server does (a B-tree appended to in key order splits the fewest pages), so the
    /// baselines write in the order the projector does.
    fn in_consumption_order(mut self, payloads: &[Vec<u8>]) -> Self {
        let index: HashMap<&[u8], usize> = self
            .records
            .iter()
            .enumerate()
            .map(|(n, record)| (record.body.as_deref().unwrap(), n))
            .collect();
        assert_eq!(index.len(), self.records.len(), "payloads are unique");
        let order: Vec<usize> = payloads.iter().map(|p| index[p.as_slice()]).collect();
        assert_eq!(order.len(), self.records.len(), "every record consumed");
        self.plain = order.iter().map(|&n| self.plain[n].clone()).collect();
        self.guarded = order.iter().map(|&n| self.guarded[n].clone()).collect();
        self
    }
}

/// Runs `projectors rebuild orders`. Returns (wall seconds, waited-for children's CPU seconds
/// afterwards, its own report line).
fn rebuild(
    config: &ProjectorsConfig,
    dir: &Path,
    servers: &Servers,
) -> (f64, f64, String, ServerCpu) {
    let path = write_config(dir, config, "rebuild.toml");
    let servers_before = servers.now();
    let started = Instant::now();
    let child = std::process::Command::new(binary())
        .args(["--config", path.to_str().unwrap(), "rebuild", "orders"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // A child's CPU is counted in ours (cutime/cstime) once it has been waited for.
    let output = child.wait_with_output().unwrap();
    let seconds = started.elapsed().as_secs_f64();
    let server_cpu = servers.since(servers_before);
    assert!(output.status.success(), "rebuild failed");
    let report = String::from_utf8(output.stdout).unwrap();
    (
        seconds,
        children_cpu_seconds(),
        report.trim().to_owned(),
        server_cpu,
    )
}

/// CPU seconds of this process's waited-for children so far.
fn children_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // cutime and cstime are fields 16 and 17.
    (fields[13].parse::<f64>().unwrap() + fields[14].parse::<f64>().unwrap()) / 100.0
}

fn row(label: &str, events: usize, seconds: f64, cpu: Option<f64>, servers: Option<ServerCpu>) {
    let per_10k = |cpu: Option<f64>| {
        cpu.map_or("".to_owned(), |cpu| {
            format!("{:.3}", cpu / events as f64 * 10_000.0)
        })
    };
    let servers = servers.unwrap_or_default();
    println!(
        "| {label} | {events} | {seconds:.2} | {:.0} | {} | {} | {} |",
        events as f64 / seconds,
        per_10k(cpu),
        per_10k(servers.kafka),
        per_10k(servers.mongo),
    );
}

const HEADER: &str = "| run | events | seconds | events/s | client CPU s per 10,000 events | Kafka \
                      CPU s per 10,000 | MongoDB CPU s per 10,000 |\n|---|---|---|---|---|---|---|";

#[tokio::main]
async fn main() {
    let events = env_number("BENCH_EVENTS", 20_000);
    let customers = env_number("BENCH_CUSTOMERS", events / 2);
    let rebuild_events = env_number("BENCH_REBUILD_EVENTS", 100_000);
    let rebuild_customers = env_number("BENCH_REBUILD_CUSTOMERS", 5_000);
    let client = stack().mongo_client().await;
    let dir = std::env::temp_dir().join(unique("projectors_bench"));
    std::fs::create_dir_all(&dir).unwrap();

    // `BENCH_PARTS` (default `live,rebuild`) picks the parts to run.
    let parts = std::env::var("BENCH_PARTS").unwrap_or_else(|_| "live,rebuild".into());
    if parts.contains("live") {
        live_part(&client, events, customers, &dir).await;
    }
    if parts.contains("rebuild") {
        rebuild_part(&client, rebuild_events, rebuild_customers, &dir).await;
    }
    if std::env::var_os("BENCH_KEEP").is_some() {
        // For profiling: `projectors --config <dir>/rebuild.toml rebuild orders` replays again.
        println!("\nkept {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
}

async fn live_part(client: &mongodb::Client, events: usize, customers: usize, dir: &Path) {
    println!("## live projectors ({events} events each; orders: {customers} customers)\n");
    let servers = Servers::find();
    println!("{HEADER}");
    let mut ratios = Vec::new();
    for projector in [Projector::Orders, Projector::Fulfillment] {
        let config = bench_config();
        create_topics(&config).await;
        let backlog = match projector {
            Projector::Orders => customer_backlog(&config, events, customers),
            Projector::Fulfillment => request_backlog(&config, events),
        };
        produce(&backlog.records).await;
        let topic = match projector {
            Projector::Orders => &config.topics.customer_change,
            Projector::Fulfillment => &config.topics.fulfillment_request,
        };
        let (_, consumed) = raw_consume(topic, events).await;
        let backlog = backlog.in_consumption_order(&consumed);
        let target = config.target(projector);
        let plain_seconds = bare_upsert(
            client,
            &format!("bare unordered bulk upsert by `_id` ({projector} writes)"),
            &target.collection,
            &backlog.plain,
            config.apply.batch_size,
            &servers,
        )
        .await;
        let guarded_seconds = bare_upsert(
            client,
            &format!("bare unordered bulk of the projector's guarded upserts ({projector})"),
            &target.collection,
            &backlog.guarded,
            config.apply.batch_size,
            &servers,
        )
        .await;
        let (seconds, cpu, steady, live_servers) =
            live(&config, projector, events, dir, &servers).await;
        row(
            &format!("projectors run {projector} (release)"),
            events,
            seconds,
            Some(cpu),
            Some(live_servers),
        );
        if let Some((records, steady_seconds)) = steady {
            row(
                &format!("projectors run {projector}, after its first batch"),
                records,
                steady_seconds,
                None,
                None,
            );
        }
        // The server slows as its data file and oplog grow, so each baseline runs again after
        // the projector and the two are averaged: neither side gains from going first.
        let guarded_again = bare_upsert(
            client,
            &format!("bare guarded upserts again, after the projector ({projector})"),
            &target.collection,
            &backlog.guarded,
            config.apply.batch_size,
            &servers,
        )
        .await;
        let plain_again = bare_upsert(
            client,
            &format!("bare upsert by `_id` again, after the projector ({projector})"),
            &target.collection,
            &backlog.plain,
            config.apply.batch_size,
            &servers,
        )
        .await;
        let plain_seconds = (plain_seconds + plain_again) / 2.0;
        let guarded_seconds = (guarded_seconds + guarded_again) / 2.0;
        let documents = client
            .database(&target.database)
            .collection::<Document>(&target.collection)
            .estimated_document_count()
            .await
            .unwrap();
        let expected = match projector {
            Projector::Orders => customers.min(events),
            Projector::Fulfillment => events,
        };
        assert_eq!(documents as usize, expected, "every document written");
        ratios.push((
            projector,
            plain_seconds / seconds,
            guarded_seconds / seconds,
        ));
    }
    println!();
    for (projector, plain, guarded) in ratios {
        println!(
            "throughput ratio {projector} projector / bare upsert by `_id` (mean of before and \
             after): {plain:.2} (target >= 0.85); / bare guarded upserts: {guarded:.2}"
        );
    }
}

async fn rebuild_part(
    client: &mongodb::Client,
    rebuild_events: usize,
    rebuild_customers: usize,
    dir: &Path,
) {
    let servers = Servers::find();
    println!("\n## rebuild ({rebuild_events} events over {rebuild_customers} customers)\n");
    let config = bench_config();
    create_topics(&config).await;
    let backlog = customer_backlog(&config, rebuild_events, rebuild_customers);
    produce(&backlog.records).await;
    let (consume_seconds, consumed) =
        raw_consume(&config.topics.customer_change, rebuild_events).await;
    let backlog = backlog.in_consumption_order(&consumed);
    drop(consumed);
    println!("{HEADER}");
    row(
        "raw consume (no decoding)",
        rebuild_events,
        consume_seconds,
        None,
        None,
    );
    let plain_seconds = bare_upsert(
        client,
        "raw bulk upsert by `_id`",
        &config.targets.orders.collection,
        &backlog.plain,
        config.apply.batch_size,
        &servers,
    )
    .await;
    let guarded_seconds = bare_upsert(
        client,
        "raw bulk of the projector's guarded upserts",
        &config.targets.orders.collection,
        &backlog.guarded,
        config.apply.batch_size,
        &servers,
    )
    .await;
    let Backlog { plain, .. } = backlog;
    let guarded_baseline = consume_seconds + guarded_seconds;
    let cpu_before = children_cpu_seconds();
    let (fresh_seconds, cpu_after, fresh_report, fresh_servers) = rebuild(&config, dir, &servers);
    row(
        "projectors rebuild orders, empty collection (wall time of the command)",
        rebuild_events,
        fresh_seconds,
        Some(cpu_after - cpu_before),
        Some(fresh_servers),
    );
    let cpu_before = children_cpu_seconds();
    let (again_seconds, cpu_after, again_report, again_servers) = rebuild(&config, dir, &servers);
    row(
        "projectors rebuild orders, populated collection",
        rebuild_events,
        again_seconds,
        Some(cpu_after - cpu_before),
        Some(again_servers),
    );
    let plain_after = bare_upsert(
        client,
        "raw bulk upsert by `_id` again, after the rebuilds",
        &config.targets.orders.collection,
        &plain,
        config.apply.batch_size,
        &servers,
    )
    .await;
    let baseline = consume_seconds + (plain_seconds + plain_after) / 2.0;
    println!("\n{fresh_report}\n{again_report}");
    println!(
        "\nrebuild / (raw consume + raw bulk upsert by `_id`, mean of before and after): {:.2} \
         empty, {:.2} populated (target <= 1.2)",
        fresh_seconds / baseline,
        again_seconds / baseline
    );
    println!(
        "rebuild / (raw consume + raw bulk of the guarded upserts): {:.2} empty, {:.2} populated",
        fresh_seconds / guarded_baseline,
        again_seconds / guarded_baseline
    );
}
