//! Memory under a stalled sink: the connector with Kafka down and the projectors with MongoDB
//! down, each behind a backlog of `BENCH_CHANGES` (default 100,000) source changes or events,
//! against the same process idle. Prints figures; asserts nothing about them (the target, peak
//! RSS under 100 MB per process, is compared in the output and in docs/benchmarks.md), but
//! asserts the conditions they were measured under and that nothing was lost:
//!
//! - the sink was down while the process held the most it may: for the connector, the whole
//!   backlog written and the connector reading nothing more (changes read and records in flight
//!   unchanged for 3 s: blocked on its in-flight limit or the producer's full queue) with
//!   `/health` failing; for the projectors both projectors' writes failing (`projector_retries_total`)
//!   and `/health` failing;
//! - once the sink is back, everything arrived: every topic holds exactly the expected keys, once
//!   each, and no dead letter (connector); every consumer group committed every record, and the
//!   projections hold exactly the expected documents, each in its last state (projectors).
//!
//! Scenarios (`BENCH_SCENARIOS`, comma-separated, default all four):
//!
//! - `connector-kafka-down`: the connector idle on empty collections, then Kafka stopped, then
//!   the backlog written: 40 % customers (about 1 KB each, a customer event each), 30 % customers'
//!   orders documents (every other one with an approved order: a fulfillment request; the others
//!   only CREATED: nothing published), 30 % fulfillment requests (every other one PROCESSING: a
//!   status change; the others APPROVED, as the projector creates them: nothing), three writers
//!   at once, inserts in batches of 500. Held `BENCH_HOLD_SECS` (default 30) once the backlog is
//!   written and the connector blocked; then Kafka started and drained.
//! - `connector-kafka-stops`: the same backlog written with Kafka up; Kafka stopped while the
//!   connector streams it (once a tenth of its events are in Kafka); then as above.
//! - `projectors-mongo-down`: both projectors (one process) idle on empty topics, then MongoDB
//!   stopped, then `BENCH_CHANGES` events produced to their topics: half CustomerChangeEvents (two
//!   per customer), half FulfillmentRequestEvents (one per order), the connector's headers.
//!   Held once both projectors' writes have failed; then MongoDB started and drained.
//! - `projectors-kafka-down`: the same backlog produced with everything up; Kafka stopped while
//!   the projectors apply it (once a tenth is applied); held; Kafka started and drained.
//!
//! Measurement: the release binaries run as child processes with the shipped settings (fresh
//! names, logs at `warn`). Every 100 ms the bench reads the child's `VmRSS` from
//! `/proc/<pid>/status` and scrapes its `/metrics` (the connector's records in flight; the
//! projectors' events not yet applied). The idle figure is the largest RSS over 3 s after
//! `/health` first answered 200 with nothing to do; the peak is the kernel's high-water mark
//! (`VmHWM`, which no sampling can miss) at the end of the run, after the drain; the end figure
//! is the RSS once everything arrived and `/health` is 200 again.
//!
//! `BENCH_KEEP_LOGS` keeps each child's config and log, `BENCH_LOG` sets their log filter. `BENCH_MAX_IN_FLIGHT` sets the connector's `stream.max_in_flight`, and
//! `BENCH_KAFKA_PROPERTIES` (`key=value,...`) both binaries' `kafka.properties`, to compare
//! bounds.
//!
//! The binaries are the release builds next to this bench (`target/release/cdc-connector` and
//! `target/release/projectors`; cargo builds no other package's binaries for a bench), refused
//! when older than their sources; `BENCH_CONNECTOR_BIN` / `BENCH_PROJECTORS_BIN` name others.
//!
//! Run (the bench stops and starts Kafka and MongoDB: give it a stack of its own, see
//! docs/benchmarks.md):
//!
//! ```sh
//! cargo build --release -p cdc-connector -p projectors
//! cargo bench -p storefront-tests --bench memory
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::{Duration, Instant, SystemTime};

use cdc_connector::config::{CheckpointSettings, ConnectorConfig, StreamSettings};
use mongodb::bson::oid::ObjectId;
use mongodb::bson::{Document, doc};
use mongodb::{Client, Collection};
use projectors::config::{ApplySettings, ProjectionTargets, Projector, ProjectorsConfig};
use rdkafka::producer::FutureProducer;
use storefront_plumbing::kafka::TracingContext;
use storefront_plumbing::settings::{HttpSettings, KafkaSettings, LogSettings};
use storefront_schemas::documents::CustomerId;
use storefront_schemas::topology::{Namespace, StorefrontNamespaces, StorefrontTopics};
use storefront_tests::guard::{self, Watermarks};
use storefront_tests::{
    DEADLINE, Daemon, TopicReader, eventually, free_port, http_get, stack, unique, until_healthy,
};

// The projectors' test helpers: events with the connector's headers, topics, "caught up".
#[path = "../../projectors/tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;

/// How often the child's memory and metrics are sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// How long the idle figure is sampled for.
const IDLE: Duration = Duration::from_secs(3);
/// The bound on one step over a whole backlog (writing, draining): far above what it takes.
const BACKLOG_DEADLINE: Duration = Duration::from_secs(600);
/// How long a connector's reading must stand still to count as blocked.
const STILL: Duration = Duration::from_secs(3);
/// Documents per write command.
const WRITE_BATCH: usize = 500;
/// The target: peak RSS per process, in MB (10^6 bytes).
const TARGET_MB: f64 = 100.0;

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).ok()?.modified().ok()
}

/// The newest file under `dir`, with its modification time.
fn newest_file(dir: &Path) -> Option<(SystemTime, PathBuf)> {
    let mut newest = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let candidate = if path.is_dir() {
            newest_file(&path)
        } else {
            modified(&path).map(|time| (time, path))
        };
        newest = newest.max(candidate);
    }
    newest
}

/// A release binary: `variable` when set, else `target/release/<name>` beside this bench (built
/// by `cargo build --release`), refused when older than any file of `sources` (folders of the
/// repository): a stale binary would measure other code.
fn release_binary(name: &str, variable: &str, sources: &[&str]) -> PathBuf {
    if let Some(path) = std::env::var_os(variable) {
        return PathBuf::from(path);
    }
    let bench = std::env::current_exe().unwrap();
    // target/release/deps/memory-<hash> -> target/release/<name>
    let path = bench.parent().and_then(Path::parent).unwrap().join(name);
    let build = "cargo build --release -p cdc-connector -p projectors";
    let built = modified(&path).unwrap_or_else(|| {
        panic!(
            "{} missing: run `{build}` first (or set {variable})",
            path.display()
        )
    });
    let root = storefront_tests::repo_root();
    if let Some((newest, file)) = sources
        .iter()
        .filter_map(|dir| newest_file(&root.join(dir)))
        .max()
    {
        assert!(
            built >= newest,
            "{} is older than {}: run `{build}` again",
            path.display(),
            file.display()
        );
    }
    path
}

/// `VmRSS` of process `pid` in kB, `None` once it is gone.
fn rss_kb(pid: u32) -> Option<u64> {
    status_kb(pid, "VmRSS:")
}

/// A `kB` field of `/proc/<pid>/status` (`VmRSS:`, `VmHWM:`).
fn status_kb(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()
}

fn mb(kb: u64) -> f64 {
    kb as f64 * 1024.0 / 1e6
}

/// The sum of every series of `metric` in a Prometheus text body whose labels contain `label`
/// (every series when empty).
fn metric_sum(body: &str, metric: &str, label: &str) -> f64 {
    body.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let name = series.split('{').next()?;
            (name == metric && series.contains(label)).then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

async fn metrics(addr: SocketAddr) -> Option<String> {
    http_get(addr, "/metrics").await.map(|(_, body)| body)
}

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Healthy, nothing to do.
    Idle,
    /// Between idle and the sink going down (a backlog flowing).
    Busy,
    /// The sink down.
    Down,
    /// The sink back, the backlog draining.
    Draining,
    /// Everything arrived.
    Done,
}

impl Phase {
    const ALL: [Phase; 5] = [
        Phase::Idle,
        Phase::Busy,
        Phase::Down,
        Phase::Draining,
        Phase::Done,
    ];
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    phase: Phase,
    rss_kb: u64,
    /// Records the process holds or still has to take (see [`Sampler::start`]).
    waiting: Option<f64>,
}

/// Reads how many records a process holds or still has to take from its `/metrics` body.
type WaitingProbe = Box<dyn Fn(&str) -> f64 + Send + Sync>;

/// Samples a child's RSS and metrics every [`SAMPLE_EVERY`], tagged with the run's phase.
struct Sampler {
    pid: u32,
    phase: Arc<AtomicU8>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Vec<Sample>>,
}

impl Sampler {
    /// Starts sampling process `pid`, which serves `/metrics` at `addr`; `waiting` reads the
    /// records it holds or still has to take from a scrape.
    fn start(pid: u32, addr: SocketAddr, waiting: WaitingProbe) -> Self {
        let phase = Arc::new(AtomicU8::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let (phase, stop) = (phase.clone(), stop.clone());
            async move {
                let mut samples = Vec::new();
                let mut tick = tokio::time::interval(SAMPLE_EVERY);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                while !stop.load(Ordering::Relaxed) {
                    tick.tick().await;
                    let phase = Phase::ALL[phase.load(Ordering::Relaxed) as usize];
                    let Some(rss_kb) = rss_kb(pid) else { break };
                    let waiting = metrics(addr).await.map(|body| waiting(&body));
                    samples.push(Sample {
                        phase,
                        rss_kb,
                        waiting,
                    });
                }
                samples
            }
        });
        Self {
            pid,
            phase,
            stop,
            task,
        }
    }

    fn enter(&self, phase: Phase) {
        let index = Phase::ALL.iter().position(|p| *p == phase).unwrap();
        self.phase.store(index as u8, Ordering::Relaxed);
    }

    /// Samples `duration` more, then stops; the run's figures.
    async fn finish(self, duration: Duration) -> Figures {
        tokio::time::sleep(duration).await;
        let peak_kb = status_kb(self.pid, "VmHWM:").expect("the process still runs");
        self.stop.store(true, Ordering::Relaxed);
        let samples = self.task.await.unwrap();
        let max_in = |phase: Phase| {
            samples
                .iter()
                .filter(|s| s.phase == phase)
                .map(|s| s.rss_kb)
                .max()
        };
        let highest = samples.iter().max_by_key(|s| s.rss_kb).unwrap();
        Figures {
            idle_kb: max_in(Phase::Idle).expect("idle samples"),
            peak_kb,
            down_kb: max_in(Phase::Down).expect("samples while the sink was down"),
            draining_kb: max_in(Phase::Draining).unwrap_or_default(),
            end_kb: samples.last().unwrap().rss_kb,
            waiting_at_peak: highest.waiting,
            peak_phase: highest.phase,
            samples: samples.len(),
        }
    }
}

/// What a run measured.
#[derive(Debug)]
struct Figures {
    /// Largest RSS while idle.
    idle_kb: u64,
    /// The kernel's high-water mark of the RSS over the whole run.
    peak_kb: u64,
    /// Largest sampled RSS while the sink was down.
    down_kb: u64,
    /// Largest sampled RSS while the backlog drained.
    draining_kb: u64,
    /// RSS at the end, everything arrived.
    end_kb: u64,
    /// Records held or still to take at the largest sampled RSS.
    waiting_at_peak: Option<f64>,
    /// When the largest sampled RSS was.
    peak_phase: Phase,
    samples: usize,
}

/// One scenario's line of the report.
struct Row {
    scenario: &'static str,
    figures: Figures,
    /// How long the sink was down.
    outage: Duration,
    /// What the waiting figure counts.
    waiting: &'static str,
}

fn print_table(rows: &[Row]) {
    println!(
        "\n| scenario | idle RSS MB | peak RSS (VmHWM) MB | peak / idle | max RSS while down MB | \
         max RSS while draining MB | RSS at the end MB | records waiting at the largest sample | \
         sink down s | target | |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for row in rows {
        let f = &row.figures;
        println!(
            "| {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {} ({}, {:?}) | {:.0} | < {TARGET_MB:.0} MB | {} |",
            row.scenario,
            mb(f.idle_kb),
            mb(f.peak_kb),
            f.peak_kb as f64 / f.idle_kb as f64,
            mb(f.down_kb),
            mb(f.draining_kb),
            mb(f.end_kb),
            f.waiting_at_peak
                .map_or("?".to_owned(), |w| format!("{:.0}", w.max(0.0))),
            row.waiting,
            f.peak_phase,
            row.outage.as_secs_f64(),
            if mb(f.peak_kb) < TARGET_MB {
                "met"
            } else {
                "missed"
            },
        );
    }
}

/// A child process with its config file and log in a folder of its own.
struct Child {
    daemon: Daemon,
    listen: SocketAddr,
    dir: PathBuf,
}

impl Child {
    /// Starts `binary` with `config` (TOML) and `command`, and waits until it is healthy.
    async fn start(binary: &Path, config: &str, listen: SocketAddr, command: &[&str]) -> Self {
        let dir = std::env::temp_dir().join(unique("memory_bench"));
        std::fs::create_dir_all(&dir).unwrap();
        let config_path = dir.join("config.toml");
        std::fs::write(&config_path, config).unwrap();
        let mut args = vec!["--config", config_path.to_str().unwrap()];
        args.extend(command);
        let daemon = Daemon::spawn_logged(binary, &args, &dir.join("log"));
        println!("  {} started (log: {})", binary.display(), dir.display());
        until_healthy(listen).await;
        Self {
            daemon,
            listen,
            dir,
        }
    }

    /// Stops it with SIGTERM; it must exit cleanly.
    async fn stop(mut self) {
        self.daemon.signal("TERM");
        let status = self.daemon.exit_status().await;
        let log = std::fs::read_to_string(self.dir.join("log")).unwrap_or_default();
        assert!(status.success(), "exited with {status}; its log:\n{log}");
        if std::env::var_os("BENCH_KEEP_LOGS").is_some() {
            println!("  kept {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    /// Waits until `/health` answers 503, and returns the body.
    async fn failing(&self) -> String {
        eventually(DEADLINE, "/health to answer 503", async || {
            http_get(self.listen, "/health")
                .await
                .filter(|(status, _)| *status == 503)
                .map(|(_, body)| body)
        })
        .await
    }
}

async fn hold(seconds: u64) {
    println!("  holding {seconds} s");
    tokio::time::sleep(Duration::from_secs(seconds)).await;
}

// ---- the connector ----

/// `BENCH_KAFKA_PROPERTIES` (`key=value,key=value`): operator properties for both binaries'
/// clients, to compare settings (they win over the product's tuning).
fn kafka_settings() -> KafkaSettings {
    let mut settings = stack().kafka_settings();
    if let Ok(properties) = std::env::var("BENCH_KAFKA_PROPERTIES") {
        for pair in properties.split(',').filter(|pair| !pair.trim().is_empty()) {
            let (key, value) = pair
                .split_once('=')
                .unwrap_or_else(|| panic!("BENCH_KAFKA_PROPERTIES: `{pair}` is no key=value"));
            settings
                .properties
                .insert(key.trim().to_owned(), value.trim().to_owned());
        }
    }
    settings
}

/// The children log at `warn`, or `BENCH_LOG` (a `tracing` filter).
fn log_settings() -> LogSettings {
    LogSettings {
        filter: std::env::var("BENCH_LOG").unwrap_or_else(|_| "warn".into()),
        ..LogSettings::default()
    }
}

fn connector_config() -> ConnectorConfig {
    let name = |what: &str| unique(&format!("mem_{what}"));
    ConnectorConfig {
        mongo: stack().mongo_settings(),
        kafka: kafka_settings(),
        http: HttpSettings::on_port(free_port()),
        log: log_settings(),
        sources: StorefrontNamespaces {
            accounts: Namespace::new(name("accounts"), "customer.accounts"),
            orders: Namespace::new(name("orders"), "customer.orders"),
            fulfillment: Namespace::new(name("fulfillment"), "fulfillment.requests"),
        },
        topics: StorefrontTopics {
            customer_change: name("customer"),
            fulfillment_request: name("fulfill"),
            order_status_change: name("status"),
        },
        stream: StreamSettings {
            dead_letter_topic: name("dead"),
            max_in_flight: env_number(
                "BENCH_MAX_IN_FLIGHT",
                StreamSettings::default().max_in_flight as u64,
            ) as usize,
            ..StreamSettings::default()
        },
        checkpoints: CheckpointSettings {
            database: name("state"),
            ..CheckpointSettings::default()
        },
        ..ConnectorConfig::default()
    }
}

/// A customer of about 1 KB, as the connector's throughput bench writes them.
fn customer(id: ObjectId, n: usize) -> Document {
    doc! {
        "_id": id,
        "_class": "demo.domain.Customer",
        "name": { "title": "Mr", "firstName": format!("First{n}"), "lastName": "Memory" },
        "contact": { "primaryPhone": "555-0100", "email": format!("memory{n}@example.com") },
        "addresses": [{
            "type": "SHIPPING", "description": "home", "address1": "1 Main St",
            "city": "Springfield", "state": "IL", "postalCode": "62701"
        }, {
            "type": "BILLING", "description": "office", "address1": "2 Side St",
            "city": "Springfield", "state": "IL", "postalCode": "62702"
        }],
        "creditCards": [{
            "type": "PRIMARY", "description": "visa", "number": "4111111111111111",
            "expiration": "12/30", "nameOnCard": "Mem Ory"
        }],
        "notes": "x".repeat(560),
    }
}

fn status(kind: &str, timestamp: i64) -> Document {
    doc! { "timestamp": timestamp, "orderStatusType": kind }
}

fn order(guid: &str, statuses: Vec<Document>) -> Document {
    doc! {
        "guid": guid,
        "orderStatusEvents": statuses,
        "orderItems": [{
            "product": { "guid": "p-1", "title": "Lamp", "description": "A lamp", "price": "19.50" },
            "quantity": 2_i64
        }],
    }
}

/// A customer's document in `customer.orders` with one order, `approved` or only CREATED.
fn customer_orders(id: &str, guid: &str, approved: bool) -> Document {
    let mut statuses = vec![status("CREATED", 1)];
    if approved {
        statuses.push(status("APPROVED", 2));
    }
    doc! {
        "_id": id,
        "_class": "demo.domain.CustomerOrders",
        "name": { "title": "Ms", "firstName": "Orders", "lastName": "Memory" },
        "contact": { "primaryPhone": "555-0100", "email": "orders@example.com" },
        "addresses": [{
            "type": "SHIPPING", "description": "home", "address1": "1 Main St",
            "city": "Ordertown", "state": "ST", "postalCode": "00001"
        }],
        "orders": [order(guid, statuses)],
    }
}

/// A request in `kind`: APPROVED as the fulfillment projector creates it, or later.
fn request(guid: &str, kind: &str) -> Document {
    doc! {
        "_id": guid,
        "_class": "demo.domain.Fulfillment",
        "timestamp": 2_i64,
        "name": { "title": "Ms", "firstName": "Orders", "lastName": "Memory" },
        "contact": { "primaryPhone": "555-0100", "email": "orders@example.com" },
        "address": {
            "type": "SHIPPING", "description": "home", "address1": "1 Main St",
            "city": "Ordertown", "state": "ST", "postalCode": "00001"
        },
        "order": order(guid, vec![status(kind, 3)]),
    }
}

/// What the backlog holds: per source, the changes written; and the keys each event topic must
/// hold once it is in Kafka (sorted).
struct Written {
    changes: Vec<(Namespace, usize)>,
    customers: Vec<String>,
    requests: Vec<String>,
    statuses: Vec<String>,
}

impl Written {
    fn events(&self) -> usize {
        self.customers.len() + self.requests.len() + self.statuses.len()
    }
}

/// Inserts `documents` in batches of [`WRITE_BATCH`].
async fn insert_all(collection: Collection<Document>, documents: Vec<Document>) {
    let mut documents = documents.into_iter().peekable();
    while documents.peek().is_some() {
        let batch: Vec<Document> = documents.by_ref().take(WRITE_BATCH).collect();
        collection.insert_many(batch).await.unwrap();
    }
}

/// Writes `changes` source changes (see the module doc) with three writers at once. All are
/// inserts: the test server applies an update four times slower than an insert, and while Kafka
/// is down the backlog must be written well within librdkafka's `message.timeout.ms` (300 s).
async fn write_backlog(client: &Client, config: &ConnectorConfig, changes: usize) -> Written {
    let coll = |ns: &Namespace| -> Collection<Document> {
        client.database(&ns.database).collection(&ns.collection)
    };
    let sources = &config.sources;
    let order_count = changes * 3 / 10;
    let request_count = changes * 3 / 10;
    let customer_count = changes - order_count - request_count;
    let ids: Vec<ObjectId> = (0..customer_count).map(|_| ObjectId::new()).collect();
    let customers: Vec<Document> = ids
        .iter()
        .enumerate()
        .map(|(n, id)| customer(*id, n))
        .collect();
    // Every other order approved (a request), the others only CREATED (nothing published), so
    // changes without records sit between changes with records in the in-flight queue.
    let prefix = unique("order");
    let orders: Vec<(String, bool)> = (0..order_count)
        .map(|n| (format!("{prefix}-{n}"), n % 2 == 0))
        .collect();
    // Every other request PROCESSING (a status change), the others APPROVED as the projector
    // creates them (nothing published).
    let prefix = unique("request");
    let requests: Vec<(String, bool)> = (0..request_count)
        .map(|n| (format!("{prefix}-{n}"), n % 2 == 0))
        .collect();
    let started = Instant::now();
    let writers = [
        tokio::spawn(insert_all(coll(&sources.accounts), customers)),
        tokio::spawn(insert_all(
            coll(&sources.orders),
            orders
                .iter()
                .map(|(guid, approved)| customer_orders(guid, guid, *approved))
                .collect(),
        )),
        tokio::spawn(insert_all(
            coll(&sources.fulfillment),
            requests
                .iter()
                .map(|(guid, processing)| {
                    request(
                        guid,
                        if *processing {
                            "PROCESSING"
                        } else {
                            "APPROVED"
                        },
                    )
                })
                .collect(),
        )),
    ];
    for writer in writers {
        writer.await.unwrap();
    }
    println!(
        "  {changes} changes written in {:.1} s ({customer_count} customers; {order_count} \
         orders, every other one approved; {request_count} requests, every other one PROCESSING)",
        started.elapsed().as_secs_f64()
    );
    let publishing = |all: Vec<(String, bool)>| {
        let mut keys: Vec<String> = all
            .into_iter()
            .filter_map(|(key, publishes)| publishes.then_some(key))
            .collect();
        keys.sort();
        keys
    };
    let mut customers: Vec<String> = ids.iter().map(|id| id.to_hex()).collect();
    customers.sort();
    Written {
        changes: vec![
            (sources.accounts.clone(), customer_count),
            (sources.orders.clone(), order_count),
            (sources.fulfillment.clone(), request_count),
        ],
        customers,
        requests: publishing(orders),
        statuses: publishing(requests),
    }
}

/// Waits until the connector at `addr` reads nothing more: its changes read and records in
/// flight unchanged over [`STILL`] (blocked on backpressure: its in-flight limit, or the
/// producer's full queue; or every change read). Returns the records in flight, per stream and
/// in all.
async fn blocked(addr: SocketAddr, written: &Written) -> (Vec<(String, f64)>, f64) {
    let mut last: Option<(f64, f64)> = None;
    let mut since = Instant::now();
    eventually(
        BACKLOG_DEADLINE,
        "the connector to read nothing more",
        async || {
            let body = metrics(addr).await?;
            let now = (
                metric_sum(&body, "cdc_changes_read_total", ""),
                metric_sum(&body, "cdc_in_flight_records", ""),
            );
            if last != Some(now) {
                last = Some(now);
                since = Instant::now();
                return None;
            }
            (since.elapsed() >= STILL).then(|| {
                let per_stream = written
                    .changes
                    .iter()
                    .map(|(namespace, _)| {
                        let label = format!("collection=\"{namespace}\"");
                        let held = metric_sum(&body, "cdc_in_flight_records", &label);
                        (namespace.collection.clone(), held)
                    })
                    .collect();
                (per_stream, now.1)
            })
        },
    )
    .await
}

/// Reads every record of `topic` and checks its keys are exactly `expected` (sorted), once each.
async fn check_keys(topic: &str, expected: &[String], what: &str) {
    let mut reader = TopicReader::new(&[topic]);
    let records = guard::read_all(&mut reader, &[topic], BACKLOG_DEADLINE).await;
    let mut keys: Vec<String> = records.into_iter().filter_map(|r| r.key).collect();
    keys.sort();
    let distinct = {
        let mut distinct = keys.clone();
        distinct.dedup();
        distinct
    };
    let missing = expected
        .iter()
        .filter(|k| distinct.binary_search(k).is_err())
        .count();
    let unexpected = distinct
        .iter()
        .filter(|k| expected.binary_search(k).is_err())
        .count();
    assert!(
        missing == 0 && unexpected == 0 && keys.len() == expected.len(),
        "{what}: {} records for {} expected keys: {missing} missing, {unexpected} unexpected, {} \
         repeated",
        keys.len(),
        expected.len(),
        keys.len() - distinct.len()
    );
}

/// The connector behind a backlog with Kafka down: stopped before the backlog is written, or
/// while the connector streams it (`stops_while_streaming`).
async fn connector_scenario(
    binary: &Path,
    stops_while_streaming: bool,
    changes: usize,
    hold_secs: u64,
) -> Row {
    let scenario = if stops_while_streaming {
        "connector, Kafka stopped while it streams"
    } else {
        "connector, Kafka down before the backlog"
    };
    println!("\n## {scenario}");
    let config = connector_config();
    let topics = [
        config.topics.customer_change.clone(),
        config.topics.fulfillment_request.clone(),
        config.topics.order_status_change.clone(),
    ];
    let topic_refs: Vec<&str> = topics.iter().map(String::as_str).collect();
    let child = Child::start(
        binary,
        &toml::to_string(&config).unwrap(),
        config.http.listen,
        &["run"],
    )
    .await;
    let in_flight: WaitingProbe = Box::new(|body| metric_sum(body, "cdc_in_flight_records", ""));
    let sampler = Sampler::start(child.daemon.pid(), child.listen, in_flight);
    tokio::time::sleep(IDLE).await;
    let client = stack().mongo_client().await;

    let (outage, outage_started, keys) = if stops_while_streaming {
        sampler.enter(Phase::Busy);
        let writing = {
            let (client, config) = (client.clone(), config.clone());
            tokio::spawn(async move { write_backlog(&client, &config, changes).await })
        };
        let watermarks = Watermarks::new();
        let streaming = changes / 10;
        eventually(
            BACKLOG_DEADLINE,
            "a tenth of the backlog's events in Kafka",
            async || (watermarks.record_count(&topic_refs) >= streaming as i64).then_some(()),
        )
        .await;
        drop(watermarks);
        sampler.enter(Phase::Down);
        let outage = stack().stop_kafka();
        let outage_started = Instant::now();
        (outage, outage_started, writing.await.unwrap())
    } else {
        sampler.enter(Phase::Down);
        let outage = stack().stop_kafka();
        let outage_started = Instant::now();
        let keys = write_backlog(&client, &config, changes).await;
        (outage, outage_started, keys)
    };
    let (per_stream, in_flight) = blocked(child.listen, &keys).await;
    let health = child.failing().await;
    println!(
        "  blocked with {in_flight} records in flight ({per_stream:?}; limit {} per stream); \
         /health: {health}",
        config.stream.max_in_flight
    );
    hold(hold_secs).await;

    sampler.enter(Phase::Draining);
    outage.start();
    let outage = outage_started.elapsed();
    let events = keys.events() as i64;
    let watermarks = Watermarks::new();
    let drain_started = Instant::now();
    eventually(
        BACKLOG_DEADLINE,
        "every event of the backlog in Kafka",
        async || (watermarks.record_count(&topic_refs) >= events).then_some(()),
    )
    .await;
    until_healthy(child.listen).await;
    println!(
        "  drained {events} events in {:.1} s after Kafka was back",
        drain_started.elapsed().as_secs_f64()
    );
    sampler.enter(Phase::Done);
    let row = Row {
        scenario,
        figures: sampler.finish(Duration::from_secs(2)).await,
        outage,
        waiting: "in flight",
    };
    print_table(std::slice::from_ref(&row));

    check_keys(&topics[0], &keys.customers, "customer events").await;
    check_keys(&topics[1], &keys.requests, "fulfillment requests").await;
    check_keys(&topics[2], &keys.statuses, "status changes").await;
    assert_eq!(
        watermarks.record_count(&[&config.stream.dead_letter_topic]),
        0,
        "no dead letter"
    );
    child.stop().await;
    println!("  every change arrived: {events} events, each key once, no dead letter");
    row
}

// ---- the projectors ----

fn projectors_config() -> ProjectorsConfig {
    let name = |what: &str| unique(&format!("mem_{what}"));
    ProjectorsConfig {
        consumer_group_prefix: name("projectors"),
        mongo: stack().mongo_settings(),
        kafka: kafka_settings(),
        http: HttpSettings::on_port(free_port()),
        log: log_settings(),
        topics: StorefrontTopics {
            customer_change: name("customer"),
            fulfillment_request: name("fulfill"),
            order_status_change: name("status"),
        },
        targets: ProjectionTargets {
            orders: Namespace::new(name("orders"), "customer.orders"),
            fulfillment: Namespace::new(name("fulfillment"), "fulfillment.requests"),
        },
        apply: ApplySettings {
            dead_letter_topic: name("dead"),
            ..ApplySettings::default()
        },
        ..ProjectorsConfig::default()
    }
}

/// The events, and what the projections must hold afterwards.
struct EventBacklog {
    records: Vec<common::Outbound>,
    customers: usize,
    requests: usize,
}

/// `events` events: half CustomerChangeEvents, two per customer (the second, newer one named
/// `...r1`), and half FulfillmentRequestEvents, one per order; customers and requests alternate.
fn event_backlog(config: &ProjectorsConfig, events: usize) -> EventBacklog {
    let changes = events / 2;
    let customers = changes / 2;
    let requests = events - changes;
    let ids: Vec<CustomerId> = (0..customers).map(|_| common::new_customer_id()).collect();
    let prefix = unique("order");
    let mut records = Vec::with_capacity(events);
    for n in 0..changes.max(requests) {
        if n < changes {
            let first_name = format!("Customer{}r{}", n % customers, n / customers);
            records.push(common::customer_change(
                config,
                &ids[n % customers],
                common::position(n as u32),
                &first_name,
            ));
        }
        if n < requests {
            records.push(common::fulfillment_request(
                config,
                &format!("{prefix}-{n}"),
                common::position(n as u32),
                "Springfield",
            ));
        }
    }
    EventBacklog {
        records,
        customers,
        requests,
    }
}

/// Produces `records` as fast as the producer batches them; waits for every acknowledgement.
async fn produce(records: &[common::Outbound]) {
    let producer: FutureProducer<TracingContext> =
        storefront_plumbing::kafka::producer_config(&stack().kafka_settings(), "bench", &[])
            .set("linger.ms", "5")
            .set("queue.buffering.max.messages", "1000000")
            .create_with_context(TracingContext)
            .unwrap();
    let started = Instant::now();
    let mut deliveries = Vec::with_capacity(records.len());
    for record in records {
        deliveries.push(
            producer
                .send_result(record.to_record(None))
                .map_err(|(e, _)| e)
                .unwrap(),
        );
    }
    for delivery in deliveries {
        delivery.await.unwrap().map_err(|(e, _)| e).unwrap();
    }
    println!(
        "  {} events produced in {:.1} s",
        records.len(),
        started.elapsed().as_secs_f64()
    );
}

/// Events the projectors have settled (applied, stale, duplicate, dead-lettered), per scrape.
fn settled(body: &str) -> f64 {
    metric_sum(body, "projector_events_total", "")
}

/// Whether both projectors' groups committed every record of their topics.
fn caught_up(config: &ProjectorsConfig) -> bool {
    Projector::ALL
        .iter()
        .all(|projector| common::is_caught_up(config, *projector))
}

/// The projections hold exactly what the backlog says: one copy per customer in its last state,
/// one document per request; nothing dead-lettered.
async fn check_projections(config: &ProjectorsConfig, backlog: &EventBacklog) {
    use futures::TryStreamExt;
    let copies: Vec<Document> = common::collection(&config.targets.orders)
        .await
        .find(doc! {})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(copies.len(), backlog.customers, "one copy per customer");
    let stale = copies
        .iter()
        .filter(|copy| {
            !copy
                .get_document("name")
                .and_then(|name| name.get_str("firstName"))
                .is_ok_and(|name| name.ends_with("r1"))
        })
        .count();
    assert_eq!(stale, 0, "every copy in its customer's last state");
    let requests = common::collection(&config.targets.fulfillment)
        .await
        .count_documents(doc! {})
        .await
        .unwrap();
    assert_eq!(
        requests as usize, backlog.requests,
        "one document per request"
    );
    assert_eq!(
        guard::record_count(&[&config.apply.dead_letter_topic]),
        0,
        "no dead letter"
    );
}

/// The projectors behind a backlog with MongoDB down (`mongo_down`) or Kafka stopped while they
/// apply it.
async fn projectors_scenario(
    binary: &Path,
    mongo_down: bool,
    events: usize,
    hold_secs: u64,
) -> Row {
    let scenario = if mongo_down {
        "projectors, MongoDB down before the backlog"
    } else {
        "projectors, Kafka stopped while they apply"
    };
    println!("\n## {scenario}");
    let config = projectors_config();
    common::create_topics(&config).await;
    let backlog = event_backlog(&config, events);
    let child = Child::start(
        binary,
        &toml::to_string(&config).unwrap(),
        config.http.listen,
        &["run"],
    )
    .await;
    let total = backlog.records.len() as f64;
    let not_applied: WaitingProbe = Box::new(move |body| total - settled(body));
    let sampler = Sampler::start(child.daemon.pid(), child.listen, not_applied);
    tokio::time::sleep(IDLE).await;

    let (outage, outage_started) = if mongo_down {
        sampler.enter(Phase::Down);
        let outage = stack().stop_mongo();
        let outage_started = Instant::now();
        produce(&backlog.records).await;
        eventually(
            BACKLOG_DEADLINE,
            "both projectors' writes failing",
            async || {
                let body = metrics(child.listen).await?;
                let failing = |projector: &str| {
                    metric_sum(
                        &body,
                        "projector_retries_total",
                        &format!("projector=\"{projector}\""),
                    ) > 0.0
                };
                (failing("orders") && failing("fulfillment")).then_some(())
            },
        )
        .await;
        (outage, outage_started)
    } else {
        sampler.enter(Phase::Busy);
        produce(&backlog.records).await;
        eventually(
            BACKLOG_DEADLINE,
            "a tenth of the backlog applied",
            async || (settled(&metrics(child.listen).await?) >= total / 10.0).then_some(()),
        )
        .await;
        sampler.enter(Phase::Down);
        let outage = stack().stop_kafka();
        (outage, Instant::now())
    };
    let health = child.failing().await;
    println!("  /health: {health}");
    hold(hold_secs).await;

    sampler.enter(Phase::Draining);
    outage.start();
    let outage = outage_started.elapsed();
    let drain_started = Instant::now();
    eventually(
        BACKLOG_DEADLINE,
        "both projectors to commit every record",
        async || caught_up(&config).then_some(()),
    )
    .await;
    until_healthy(child.listen).await;
    println!(
        "  drained in {:.1} s after the sink was back",
        drain_started.elapsed().as_secs_f64()
    );
    sampler.enter(Phase::Done);
    let row = Row {
        scenario,
        figures: sampler.finish(Duration::from_secs(2)).await,
        outage,
        waiting: "not yet applied",
    };
    print_table(std::slice::from_ref(&row));
    check_projections(&config, &backlog).await;
    child.stop().await;
    println!(
        "  every event applied: {} customer copies in their last state, {} requests, no dead \
         letter",
        backlog.customers, backlog.requests
    );
    row
}

#[tokio::main]
async fn main() {
    let changes = env_number("BENCH_CHANGES", 100_000) as usize;
    let hold_secs = env_number("BENCH_HOLD_SECS", 30);
    let scenarios = std::env::var("BENCH_SCENARIOS").unwrap_or_else(|_| {
        "connector-kafka-down,connector-kafka-stops,projectors-mongo-down,projectors-kafka-down"
            .into()
    });
    let wanted = |name: &str| scenarios.split(',').any(|s| s.trim() == name);
    assert!(
        stack().local_kafka && stack().local_mongo,
        "the bench stops and starts the local stack's Kafka and MongoDB"
    );
    let connector = release_binary(
        "cdc-connector",
        "BENCH_CONNECTOR_BIN",
        &["cdc-connector/src", "plumbing/src", "schemas/src"],
    );
    let projectors = release_binary(
        "projectors",
        "BENCH_PROJECTORS_BIN",
        &["projectors/src", "plumbing/src", "schemas/src"],
    );
    println!(
        "memory under a stalled sink: {changes} changes / events per scenario, held {hold_secs} \
         s, sampled every {SAMPLE_EVERY:?}"
    );
    let mut rows = Vec::new();
    if wanted("connector-kafka-down") {
        rows.push(connector_scenario(&connector, false, changes, hold_secs).await);
    }
    if wanted("connector-kafka-stops") {
        rows.push(connector_scenario(&connector, true, changes, hold_secs).await);
    }
    if wanted("projectors-mongo-down") {
        rows.push(projectors_scenario(&projectors, true, changes, hold_secs).await);
    }
    if wanted("projectors-kafka-down") {
        rows.push(projectors_scenario(&projectors, false, changes, hold_secs).await);
    }
    println!("\n## all scenarios");
    print_table(&rows);
    for row in &rows {
        println!(
            "{}: {} samples; the largest sampled RSS was while {:?}",
            row.scenario, row.figures.samples, row.figures.peak_phase
        );
    }
}
