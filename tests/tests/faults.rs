//! The fault suite (issue 15): the storefront keeps its guarantees through crashes and outages.
//!
//! The connector and each projector run as child processes of their built binaries (one process
//! per projector), against unique collections and topics, while the simulator
//! (`storefront-sim`) plays the three applications at a steady rate. One fault after another:
//!
//! 1. `kill -9` of the connector at five random moments (a seeded generator; the seed is
//!    printed, and `FAULTS_SEED` repeats a run), started again at once each time;
//! 2. `kill -9` of the orders projector, then of the fulfillment projector, each started again;
//! 3. a restart of the Kafka broker; then a `kill -9` of the connector while the broker is down
//!    and it holds records Kafka has not acknowledged;
//! 4. a restart of the MongoDB test server, with the simulator's writes resuming right after it;
//! 5. MongoDB's errors, injected into one stream at a time with `failCommand` scoped to the
//!    connector's `appName` (`fail_points`): every resumable change-stream error of MongoDB's
//!    manual and a closed connection, on a `getMore` and on a `getMore` and the `aggregate` that
//!    resumes it; `Unauthorized` until the stream shows failing in `/health` (503, the error
//!    named), in `cdc_source_errors_total{resumable="false"}` and in an ERROR log line;
//!    `ChangeStreamHistoryLost` on a `getMore` and on a resume's `aggregate`, which stops the
//!    connector (non-zero exit, an ERROR line with the code) until it is started again.
//!
//! After each fault the suite waits until every process answers `/health` with 200 and a marker
//! story written after the fault has come through every leg of the pipeline (see `markers`), and
//! records how long both took from the fault. The table of recovery times is printed once the
//! faults are over (`-- --nocapture`), each bounded by [`DEADLINE`].
//!
//! Guarantees checked once every fault is over, after a last marker (the sentinel):
//! - **Nothing lost, no duplicate effect**: every projection equals the simulator's model
//!   exactly (`verify` in exclusive mode: every document whole, nothing missing, nothing extra),
//!   markers included.
//! - **At-least-once, never less**: Kafka may hold a change twice after a restart of the
//!   connector (a record acknowledged after the last checkpoint is published again), but every
//!   copy carries the change's one event id (`ce_id`), so the distinct ids per topic are exact:
//!   every change of `customer.accounts` its own change stream lists (by key and cluster time),
//!   one request per approved order, one status change per status set; nothing dead-lettered.
//! - **Copies only across restarts**: no change is published twice by one connector process
//!   (the records are split by run at the topics' ends when each process starts).
//!
//! The suite stops Kafka and MongoDB, so it is alone in its test binary; run it alone with
//! `cargo test -p storefront-tests --test faults -- --nocapture` (on a private stack while
//! others use the shared one: `STACK_DIR` and the `STACK_*_PORT` variables, see
//! `docs/test-stack.md`).

#[path = "faults/fail_points.rs"]
mod fail_points;
#[path = "faults/markers.rs"]
mod markers;
#[allow(
    dead_code,
    reason = "the in-process Pipeline is not used: the fault suite runs the binaries"
)]
mod pipeline;
#[path = "faults/processes.rs"]
mod processes;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use storefront_plumbing::settings::HttpSettings;
use storefront_sim::config::AppSettings;
use storefront_sim::{ExpectedState, Flow, LoadSpec, SimConfig, SimError, Simulator};
use storefront_tests::{
    DEADLINE, Record, TopicReader, eventually, free_port, guard, stack, unique,
};

use fail_points::{FAIL_COMMAND, FAIL_GET_MORE};
use markers::Markers;
use mongodb::bson::{Document, doc};
use processes::{Process, binaries};

/// The simulator's source changes per second while faults are injected: enough that every fault
/// lands while changes are on their way, little enough for the 2-core CI machine.
const LOAD_RATE: f64 = 15.0;
/// Kills of the connector at random moments.
const CONNECTOR_KILLS: usize = 5;

/// One fault and how long the pipeline took to recover from it.
#[derive(Debug)]
struct Recovery {
    fault: String,
    /// Source changes the simulator had written when the fault struck.
    written: u64,
    /// How long the fault lasted: a killed process until it was started again, a stopped
    /// service until it answered again.
    outage: Duration,
    /// From the fault until every process answered `/health` with 200 after the outage.
    healthy: Duration,
    /// From the fault until the marker written after it came through every leg.
    caught_up: Duration,
}

impl Recovery {
    fn total(&self) -> Duration {
        self.healthy.max(self.caught_up)
    }
}

fn render(recoveries: &[Recovery]) -> String {
    let mut out = format!(
        "{:<52} {:>8} {:>9} {:>10} {:>11}\n",
        "fault", "written", "outage s", "healthy s", "caught up s"
    );
    for r in recoveries {
        out.push_str(&format!(
            "{:<52} {:>8} {:>9.2} {:>10.2} {:>11.2}\n",
            r.fault,
            r.written,
            r.outage.as_secs_f64(),
            r.healthy.as_secs_f64(),
            r.caught_up.as_secs_f64()
        ));
    }
    out
}

/// The suite's seed: `FAULTS_SEED`, or a new one (printed, so a failing run can be repeated).
fn seed() -> u64 {
    std::env::var("FAULTS_SEED")
        .ok()
        .map(|seed| seed.parse().expect("FAULTS_SEED is a number"))
        .unwrap_or_else(rand::random)
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// The three processes.
struct Processes {
    connector: Process,
    orders: Process,
    fulfillment: Process,
}

impl Processes {
    fn all(&self) -> [&Process; 3] {
        [&self.connector, &self.orders, &self.fulfillment]
    }

    /// Waits until every process answers `/health` with 200; when that was.
    async fn healthy(&self) -> Instant {
        let mut last = Vec::new();
        let ready = tokio::time::timeout(DEADLINE, async {
            eventually(DEADLINE, "every process healthy", async || {
                last.clear();
                for process in self.all() {
                    let answer = process.health().await;
                    let ok = matches!(answer, Some((200, _)));
                    last.push((process.name, answer));
                    if !ok {
                        return None;
                    }
                }
                Some(Instant::now())
            })
            .await
        })
        .await;
        ready.unwrap_or_else(|_| panic!("not every process healthy; last answers: {last:?}"))
    }

    async fn stop(&mut self) {
        self.orders.stop().await;
        self.fulfillment.stop().await;
        self.connector.stop().await;
    }
}

/// The simulator's load, run while a sequence of faults plays.
struct Load {
    simulator: Simulator,
    seed: u64,
    /// How the load ended, once it has (before its faults were over, only by failing).
    ended: std::sync::Mutex<Option<String>>,
}

impl Load {
    async fn new(config: &SimConfig, seed: u64) -> Self {
        Self {
            simulator: Simulator::connect(config).await.unwrap(),
            seed,
            ended: std::sync::Mutex::new(None),
        }
    }

    /// Runs the load while `faults` play, then cancels it (every story stops between two
    /// writes; the model holds every write made) and waits for it to end.
    async fn during<T>(&self, faults: impl Future<Output = T>) -> T {
        let run = async {
            let outcome = self
                .simulator
                .run_load(&LoadSpec {
                    rate: LOAD_RATE,
                    // Ended by the cancellation below.
                    duration: Duration::from_secs(3_600),
                    seed: self.seed,
                    max_orders: 3,
                    max_customers: 24,
                })
                .await;
            let described = match &outcome {
                Ok(_) => "ended".to_owned(),
                Err(error) => storefront_plumbing::errors::chain(error),
            };
            *self.ended.lock().unwrap() = Some(described);
            outcome
        };
        let faults = async {
            let output = faults.await;
            self.simulator.cancel_token().cancel();
            output
        };
        let (outcome, output) = tokio::join!(run, faults);
        match outcome {
            Ok(_) | Err(SimError::Cancelled) => {}
            Err(error) => panic!(
                "the load failed: {}",
                storefront_plumbing::errors::chain(&error)
            ),
        }
        output
    }

    /// Source changes written so far; fails unless the load is still running (so the fault
    /// strikes mid-flow).
    fn written_while_running(&self, fault: &str) -> u64 {
        if let Some(ended) = &*self.ended.lock().unwrap() {
            panic!("the load ended before the fault {fault}: {ended}");
        }
        self.simulator.progress().snapshot().written()
    }

    fn written(&self) -> u64 {
        self.simulator.progress().snapshot().written()
    }

    /// What it wrote: the expected state and the number of Accounts writes.
    fn outcome(&self) -> (ExpectedState, u64) {
        let accounts = self
            .simulator
            .progress()
            .snapshot()
            .flow(Flow::Accounts)
            .written;
        (self.simulator.expected(), accounts)
    }
}

/// Where each run of the connector begins in each event topic, to tell a change published again
/// by a restart (at-least-once) from one a single process published twice.
struct Runs {
    topics: Vec<String>,
    watermarks: std::sync::Arc<guard::Watermarks>,
    /// Per run after the first, the offset of its first record in each topic (one partition).
    starts: Vec<Vec<i64>>,
}

impl Runs {
    fn new(topics: &storefront_schemas::topology::StorefrontTopics) -> Self {
        Self {
            topics: vec![
                topics.customer_change.clone(),
                topics.fulfillment_request.clone(),
                topics.order_status_change.clone(),
            ],
            watermarks: std::sync::Arc::new(guard::Watermarks::new()),
            starts: Vec::new(),
        }
    }

    /// Marks the start of the next run, between the death of one process and the first record
    /// of the next: the topics' ends, once two reads agree (a request the dead process sent may
    /// still be appended).
    async fn mark(&mut self) {
        let mut last: Option<Vec<i64>> = None;
        let ends = eventually(DEADLINE, "the topics' ends to settle", async || {
            let watermarks = self.watermarks.clone();
            let topics = self.topics.clone();
            let now = blocking(move || {
                topics
                    .iter()
                    .map(|topic| watermarks.record_count(&[topic]))
                    .collect::<Vec<_>>()
            })
            .await;
            let settled = last.as_ref() == Some(&now);
            last = Some(now.clone());
            settled.then_some(now)
        })
        .await;
        self.starts.push(ends);
    }

    /// The changes of `records` (one topic) that one run published more than once: (topic, run,
    /// event id, offsets).
    fn repeated_within_a_run(&self, records: &[Record]) -> Vec<(String, usize, String, Vec<i64>)> {
        let Some(topic) = records.first().map(|r| r.topic.clone()) else {
            return Vec::new();
        };
        let index = self.topics.iter().position(|t| *t == topic).unwrap();
        let mut copies: BTreeMap<(usize, String), Vec<i64>> = BTreeMap::new();
        for record in records {
            let run = self
                .starts
                .iter()
                .take_while(|starts| starts[index] <= record.offset)
                .count();
            copies
                .entry((run, record.header("ce_id").to_owned()))
                .or_default()
                .push(record.offset);
        }
        copies
            .into_iter()
            .filter(|(_, offsets)| offsets.len() > 1)
            .map(|((run, id), offsets)| (topic.clone(), run, id, offsets))
            .collect()
    }
}

/// The sum of a metric's values over its labels in a `/metrics` text.
fn metric_sum(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .filter(|line| {
            line.starts_with(&format!("{name}{{")) || line.starts_with(&format!("{name} "))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Several expected states of disjoint customers as one.
fn merge(states: Vec<ExpectedState>) -> ExpectedState {
    let mut merged = states[0].clone();
    for state in &states[1..] {
        merged.accounts.extend(state.accounts.iter().cloned());
        merged.orders.extend(state.orders.iter().cloned());
        merged.requests.extend(state.requests.iter().cloned());
        merged.order_guids.extend(state.order_guids.iter().cloned());
        merged.counts.customers += state.counts.customers;
        merged.counts.orders += state.counts.orders;
        merged.counts.approved_orders += state.counts.approved_orders;
        merged.counts.status_changes += state.counts.status_changes;
    }
    merged
}

/// Every record of `topic`, read whole (nothing writes to it any more).
async fn whole_topic(topic: &str) -> Vec<Record> {
    let mut reader = TopicReader::new(&[topic]);
    guard::read_all(&mut reader, &[topic], DEADLINE).await
}

/// Distinct event ids per key; fails if one id came with two different bodies.
fn event_ids(records: &[Record]) -> BTreeMap<String, BTreeSet<String>> {
    let mut bodies: BTreeMap<String, Option<Vec<u8>>> = BTreeMap::new();
    let mut ids: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for record in records {
        let id = record.header("ce_id").to_owned();
        let body = bodies
            .entry(id.clone())
            .or_insert_with(|| record.payload.clone());
        assert_eq!(
            body, &record.payload,
            "event {id} published twice with different bodies"
        );
        ids.entry(record.key.clone().unwrap_or_default())
            .or_default()
            .insert(id);
    }
    ids
}

/// Every change of `namespace` since its collection began, as (key, cluster time), read from a
/// change stream that starts at the beginning of the oplog (the test server keeps it whole)
/// until it has nothing more. Nothing may write to the collection any more.
async fn source_changes(
    client: &mongodb::Client,
    namespace: &storefront_schemas::topology::Namespace,
) -> BTreeSet<(String, u64)> {
    let mut stream = client
        .database(&namespace.database)
        .collection::<mongodb::bson::Document>(&namespace.collection)
        .watch()
        .start_at_operation_time(mongodb::bson::Timestamp {
            time: 0,
            increment: 1,
        })
        .await
        .unwrap();
    let mut changes = BTreeSet::new();
    let mut empty_batches = 0;
    // An empty batch once the server has waited for more means the stream is at the end; two in
    // a row, in case the first came before the server had read anything.
    while empty_batches < 2 {
        match stream.next_if_any().await.unwrap() {
            None => empty_batches += 1,
            Some(change) => {
                empty_batches = 0;
                let id = change.document_key.unwrap().get("_id").cloned().unwrap();
                let key = match id {
                    mongodb::bson::Bson::ObjectId(id) => id.to_hex(),
                    mongodb::bson::Bson::String(id) => id,
                    other => panic!("a customer id {other}"),
                };
                let time = change.cluster_time.unwrap();
                let position = storefront_schemas::metadata::SourcePosition {
                    seconds: time.time,
                    increment: time.increment,
                };
                changes.insert((key, position.as_u64()));
            }
        }
    }
    changes
}

/// Waits for recovery from a fault that struck at `struck` and lasted `outage`: every process
/// healthy after the outage, and a marker written after the fault through every leg.
async fn recover(
    fault: &str,
    written: u64,
    struck: Instant,
    outage: Duration,
    processes: &Processes,
    markers: &mut Markers,
) -> Recovery {
    let (healthy, caught_up) = tokio::join!(processes.healthy(), markers.pass(fault));
    let recovery = Recovery {
        fault: fault.to_owned(),
        written,
        outage,
        healthy: healthy - struck,
        caught_up: caught_up - struck,
    };
    eprintln!(
        "fault suite: {fault}: healthy after {:.2} s, caught up after {:.2} s",
        recovery.healthy.as_secs_f64(),
        recovery.caught_up.as_secs_f64()
    );
    assert!(
        recovery.total() < DEADLINE,
        "{fault}: recovery took {:?}",
        recovery.total()
    );
    recovery
}

/// Runs a blocking harness call (`dev/stack`) off the test's async workers, so the simulator
/// and the probes keep running meanwhile.
async fn blocking<T: Send + 'static>(call: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(call).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_storefront_recovers_from_every_fault_with_nothing_lost_and_no_duplicate_effect() {
    let seed = seed();
    eprintln!("fault suite: seed {seed} (FAULTS_SEED={seed} repeats this run's choices)");
    let mut rng = StdRng::seed_from_u64(seed);
    let stack = stack();
    assert!(
        stack.local_mongo && stack.local_kafka,
        "the fault suite restarts the local stack's services"
    );
    let suite_started = Instant::now();

    // The shipped defaults with the tests' tuning; the projectors' consumers leave a group
    // 6 s after their process died (the broker's least `session.timeout.ms`) instead of 45 s,
    // so a restarted projector gets its partition back soon.
    let (mut connector_config, mut projectors_config) = pipeline::configs();
    for (key, value) in [
        ("session.timeout.ms", "6000"),
        ("heartbeat.interval.ms", "500"),
    ] {
        projectors_config
            .kafka
            .properties
            .insert(key.into(), value.into());
    }
    // The unread-change probe opens change streams of its own on the watched collections, with
    // the connector's appName: it would take the fail points' hits meant for the streams.
    connector_config.stream.unread_check_ms = 0;
    // A connector started after a `kill -9` waits for the dead one's lease to expire: 1.5 s
    // instead of 10 s.
    connector_config.lease.ttl_ms = 1_500;
    connector_config.lease.renew_interval_ms = 500;
    let dir = std::env::temp_dir().join(unique("faults"));
    std::fs::create_dir_all(&dir).unwrap();
    eprintln!("fault suite: configs and process logs in {}", dir.display());
    let binaries = binaries();
    let connector_listen = loopback();
    connector_config.http = HttpSettings {
        listen: connector_listen,
    };
    let projector = |name: &'static str, listen: SocketAddr| {
        let mut config = projectors_config.clone();
        config.http = HttpSettings { listen };
        Process::new(
            name,
            &binaries.projectors,
            &toml::to_string(&config).unwrap(),
            &["run", name.split(' ').next().unwrap()],
            listen,
            &dir,
        )
    };
    let mut processes = Processes {
        connector: Process::new(
            "connector",
            &binaries.connector,
            &toml::to_string(&connector_config).unwrap(),
            &["run"],
            connector_listen,
            &dir,
        ),
        orders: projector("orders projector", loopback()),
        fulfillment: projector("fulfillment projector", loopback()),
    };
    // The connector creates the topics the projectors subscribe to.
    processes.connector.start();
    storefront_tests::until_healthy(connector_listen).await;
    let mut runs = Runs::new(&connector_config.topics);
    processes.orders.start();
    processes.fulfillment.start();
    processes.healthy().await;

    let sim_config = SimConfig {
        mongo: stack.mongo_settings(),
        sources: connector_config.sources.clone(),
        apps: AppSettings {
            wait_ms: DEADLINE.as_millis() as u64,
            concurrency: 8,
        },
        ..SimConfig::default()
    };
    let mut markers = Markers::new(&sim_config, seed.wrapping_add(2)).await;
    let mut recoveries = Vec::new();
    let baseline = Instant::now();
    recoveries.push(
        recover(
            "none (baseline)",
            0,
            baseline,
            Duration::ZERO,
            &processes,
            &mut markers,
        )
        .await,
    );

    // Phase 1: faults of the processes and of Kafka, while the first load writes.
    let load = Load::new(&sim_config, seed).await;
    load.during(async {
        eventually(DEADLINE, "the load under way", async || {
            (load.written() >= 50).then_some(())
        })
        .await;
        for kill in 1..=CONNECTOR_KILLS {
            // A random moment: the fault schedule, not a wait for a condition.
            let pause = Duration::from_millis(rng.random_range(100..2_500));
            tokio::time::sleep(pause).await;
            let fault = format!("kill -9 connector ({kill}/{CONNECTOR_KILLS})");
            let written = load.written_while_running(&fault);
            let struck = Instant::now();
            processes.connector.kill_9().await;
            processes.connector.start();
            let outage = struck.elapsed();
            // The new process waits for the dead one's lease before it publishes.
            runs.mark().await;
            recoveries
                .push(recover(&fault, written, struck, outage, &processes, &mut markers).await);
        }

        for which in ["orders", "fulfillment"] {
            let pause = Duration::from_millis(rng.random_range(100..2_500));
            tokio::time::sleep(pause).await;
            let fault = format!("kill -9 {which} projector");
            let written = load.written_while_running(&fault);
            let process = match which {
                "orders" => &mut processes.orders,
                _ => &mut processes.fulfillment,
            };
            let struck = Instant::now();
            process.kill_9().await;
            process.start();
            let outage = struck.elapsed();
            recoveries
                .push(recover(&fault, written, struck, outage, &processes, &mut markers).await);
        }

        let fault = "restart Kafka";
        let written = load.written_while_running(fault);
        let struck = Instant::now();
        let stopped = blocking(|| stack.stop_kafka()).await;
        // The marker is written while the broker is down; health is awaited once it is back.
        let restart = async {
            blocking(move || stopped.start()).await;
            let outage = struck.elapsed();
            (outage, processes.healthy().await)
        };
        let ((outage, healthy), caught_up) = tokio::join!(restart, markers.pass(fault));
        let recovery = Recovery {
            fault: fault.to_owned(),
            written,
            outage,
            healthy: healthy - struck,
            caught_up: caught_up - struck,
        };
        eprintln!(
            "fault suite: {fault}: healthy after {:.2} s, caught up after {:.2} s",
            recovery.healthy.as_secs_f64(),
            recovery.caught_up.as_secs_f64()
        );
        assert!(recovery.total() < DEADLINE, "{recovery:?}");
        recoveries.push(recovery);

        // And a kill while Kafka is down, so records are surely in flight: the checkpoint the
        // next process resumes from must not cover them.
        let fault = "kill -9 connector, Kafka down";
        let written = load.written_while_running(fault);
        let struck = Instant::now();
        let stopped = blocking(|| stack.stop_kafka()).await;
        let in_flight = eventually(DEADLINE, "records waiting for Kafka", async || {
            let waiting = metric_sum(
                &processes.connector.metrics().await,
                "cdc_in_flight_records",
            );
            (waiting >= 10.0).then_some(waiting)
        })
        .await;
        processes.connector.kill_9().await;
        blocking(move || stopped.start()).await;
        processes.connector.start();
        let outage = struck.elapsed();
        runs.mark().await;
        eprintln!("fault suite: {fault}: killed with {in_flight} records in flight");
        recoveries.push(recover(fault, written, struck, outage, &processes, &mut markers).await);
    })
    .await;
    let (first_expected, first_accounts) = load.outcome();

    // Phase 2: MongoDB restarts while the pipeline still works through the first load; the
    // second load's writes start right after it.
    let fault = "restart MongoDB";
    let struck = Instant::now();
    blocking(|| stack.restart_mongo()).await;
    let outage = struck.elapsed();
    let load = Load::new(&sim_config, seed.wrapping_add(1)).await;
    load.during(async {
        markers.reconnect().await;
        recoveries.push(recover(fault, 0, struck, outage, &processes, &mut markers).await);

        // Phase 3: MongoDB's errors, injected into one stream at a time (taking turns through
        // the three), while the second load writes.
        let admin = stack.mongo_client().await;
        let sources = &connector_config.sources;
        let namespaces = [&sources.accounts, &sources.orders, &sources.fulfillment]
            .map(ToString::to_string);
        let mut turn = namespaces.iter().cycle();
        let mut resumable: Vec<(String, Document)> = Vec::new();
        for (code, name) in fail_points::RESUMABLE {
            let namespace = turn.next().unwrap();
            resumable.push((
                format!("{name} ({code}) on getMore"),
                fail_points::resumable_error(&["getMore"], namespace, code),
            ));
            let namespace = turn.next().unwrap();
            resumable.push((
                format!("{name} ({code}) on getMore+aggregate"),
                fail_points::resumable_error(&["getMore", "aggregate"], namespace, code),
            ));
        }
        resumable.push((
            "closed connection on getMore".into(),
            fail_points::closed_connection(&["getMore"], turn.next().unwrap()),
        ));
        resumable.push((
            "closed connection on getMore+aggregate".into(),
            fail_points::closed_connection(&["getMore", "aggregate"], turn.next().unwrap()),
        ));
        for (fault, data) in resumable {
            // Once on getMore (the driver resumes), or on getMore and then on the aggregate
            // that resumes it (the connector reopens the stream).
            let times = if data.get_array("failCommands").unwrap().len() == 1 { 1 } else { 2 };
            let written = load.written_while_running(&fault);
            let struck = Instant::now();
            let mut base = fail_points::configure(&admin, FAIL_COMMAND, doc! { "times": times }, data.clone()).await;
            let mut fired = 0;
            // A stream's next getMore fires it, after a change or an empty wait: pass markers
            // until it has fired as often as it may (turning it off reads the count exactly).
            loop {
                markers.pass(&fault).await;
                fired += fail_points::off(&admin, FAIL_COMMAND).await - base;
                if fired >= times {
                    break;
                }
                assert!(struck.elapsed() < DEADLINE, "{fault}: fired {fired} of {times} times");
                base = fail_points::configure(&admin, FAIL_COMMAND, doc! { "times": times - fired }, data.clone()).await;
            }
            assert_eq!(fired, times, "{fault}");
            let outage = struck.elapsed();
            recoveries.push(recover(&fault, written, struck, outage, &processes, &mut markers).await);
        }

        // Unauthorized, for a few seconds: the stream shows failing in /health (503) with the
        // server's error, counts it, logs it as an ERROR, retries, and is ready again, with
        // nothing lost, once the server serves it again.
        let namespace = turn.next().unwrap();
        let fault = format!("Unauthorized ({}) for a while", fail_points::UNAUTHORIZED);
        let written = load.written_while_running(&fault);
        let component = format!("stream {namespace}");
        let errors_before = fail_points::source_errors(&processes.connector.metrics().await, namespace, false);
        let struck = Instant::now();
        let base = fail_points::configure(
            &admin,
            FAIL_COMMAND,
            "alwaysOn",
            fail_points::error(&["getMore", "aggregate"], namespace, fail_points::UNAUTHORIZED),
        )
        .await;
        let reason = eventually(DEADLINE, &format!("{component} failing with Unauthorized in /health"), async || {
            let (status, body) = processes.connector.health().await?;
            let health: serde_json::Value = serde_json::from_str(&body).ok()?;
            let state = &health["components"][&component];
            (status == 503 && state["state"] == "failing").then_some(())?;
            let reason = state["reason"].as_str()?.to_owned();
            (reason.contains("Unauthorized") && reason.contains("13")).then_some(reason)
        })
        .await;
        eprintln!("fault suite: {fault}: /health says {component}: {reason}");
        eventually(DEADLINE, "cdc_source_errors_total{resumable=\"false\"} to grow twice (retries)", async || {
            let errors = fail_points::source_errors(&processes.connector.metrics().await, namespace, false);
            (errors >= errors_before + 2.0).then_some(())
        })
        .await;
        let log = processes.connector.log();
        assert!(
            !fail_points::error_lines(&log, &[namespace, "Unauthorized"]).is_empty(),
            "no ERROR log line names {namespace} and Unauthorized"
        );
        assert!(
            matches!(processes.connector.health().await, Some((503, _))),
            "still failing while the server refuses"
        );
        let fired = fail_points::off(&admin, FAIL_COMMAND).await - base;
        assert!(fired >= 2, "{fault}: fired {fired} times");
        let outage = struck.elapsed();
        recoveries.push(recover(&fault, written, struck, outage, &processes, &mut markers).await);

        // ChangeStreamHistoryLost, on a getMore and on the aggregate that resumes a stream: with
        // `stream.on_lost_history = "fail"` the connector stops (exit status, an ERROR line
        // naming the error); started again, it resumes from its checkpoint.
        for on_aggregate in [false, true] {
            let namespace = turn.next().unwrap();
            let fault = format!(
                "ChangeStreamHistoryLost ({}) on {}",
                fail_points::HISTORY_LOST,
                if on_aggregate { "resume aggregate" } else { "getMore" }
            );
            let written = load.written_while_running(&fault);
            let struck = Instant::now();
            let base = if on_aggregate {
                let base = fail_points::configure(
                    &admin,
                    FAIL_COMMAND,
                    "alwaysOn",
                    fail_points::error(&["aggregate"], namespace, fail_points::HISTORY_LOST),
                )
                .await;
                // A resumable getMore error (server-labelled) makes the driver resume.
                fail_points::configure(
                    &admin,
                    FAIL_GET_MORE,
                    doc! { "times": 1 },
                    doc! { "errorCode": 6, "appName": fail_points::CONNECTOR_APP, "namespace": namespace },
                )
                .await;
                base
            } else {
                fail_points::configure(
                    &admin,
                    FAIL_COMMAND,
                    doc! { "times": 1 },
                    fail_points::error(&["getMore"], namespace, fail_points::HISTORY_LOST),
                )
                .await
            };
            let status = processes.connector.exited().await;
            let fired = fail_points::off(&admin, FAIL_COMMAND).await - base;
            fail_points::off(&admin, FAIL_GET_MORE).await;
            assert!(!status.success(), "{fault}: the connector exited with {status}");
            assert_eq!(fired, 1, "{fault}");
            let log = processes.connector.log();
            assert!(
                !fail_points::error_lines(&log, &[namespace, "code 286"]).is_empty(),
                "{fault}: no ERROR log line names the stream and the error:\n{log}"
            );
            runs.mark().await;
            processes.connector.start();
            let outage = struck.elapsed();
            recoveries.push(recover(&fault, written, struck, outage, &processes, &mut markers).await);
        }
    })
    .await;
    let (second_expected, second_accounts) = load.outcome();

    eprintln!(
        "\nfault suite: recovery times (seed {seed}, faults over after {:.0} s)\n{}",
        suite_started.elapsed().as_secs_f64(),
        render(&recoveries)
    );

    // The sentinel: a last marker, written after everything else.
    markers.pass("sentinel").await;
    let expected = merge(vec![first_expected, second_expected, markers.expected()]);
    let client = stack.mongo_client().await;
    let report = pipeline::converged(&client, &expected).await;
    let counts = expected.counts;
    assert_eq!(
        report.compared.values().sum::<u64>(),
        counts.customers * 2 + counts.approved_orders
    );
    for process in processes.all() {
        assert_eq!(
            process.health().await.map(|(status, _)| status),
            Some(200),
            "{} after the faults",
            process.name
        );
    }
    processes.stop().await;

    // Kafka, read whole: every change once or more, each copy with its one event id.
    let topics = &connector_config.topics;
    let customer_changes = whole_topic(&topics.customer_change).await;
    let requests = whole_topic(&topics.fulfillment_request).await;
    let statuses = whole_topic(&topics.order_status_change).await;
    // Every change of `customer.accounts`, as its own change stream tells from the start, is
    // one customer change (by key and cluster time). The simulator's count of Accounts writes is
    // no measure: a `$set` to the values a document already holds is a write but no change.
    let customer_ids = event_ids(&customer_changes);
    let published: BTreeSet<(String, u64)> = customer_changes
        .iter()
        .map(|record| {
            let position = record.header("ce_clustertime").parse().unwrap();
            (record.key.clone().unwrap(), position)
        })
        .collect();
    let changed = source_changes(&client, &connector_config.sources.accounts).await;
    let lost: Vec<_> = changed.difference(&published).collect();
    let invented: Vec<_> = published.difference(&changed).collect();
    assert!(
        lost.is_empty() && invented.is_empty(),
        "customer changes: {} of {} source changes not published ({lost:?}); {} published \
         without a source change ({invented:?})",
        lost.len(),
        changed.len(),
        invented.len()
    );
    assert_eq!(
        customer_ids.values().map(BTreeSet::len).sum::<usize>(),
        changed.len(),
        "one event id per source change"
    );
    let request_ids = event_ids(&requests);
    let approved: BTreeSet<String> = expected
        .requests
        .iter()
        .map(|r| r.get_str("_id").unwrap().to_owned())
        .collect();
    assert_eq!(
        request_ids.keys().cloned().collect::<BTreeSet<_>>(),
        approved,
        "a request for every approved order, no other"
    );
    assert!(
        request_ids.values().all(|ids| ids.len() == 1),
        "one request event per approved order"
    );
    let status_ids = event_ids(&statuses);
    assert!(
        status_ids.keys().all(|guid| approved.contains(guid)),
        "status changes only for approved orders"
    );
    assert_eq!(
        status_ids.values().map(BTreeSet::len).sum::<usize>() as u64,
        counts.status_changes,
        "one status change per status set"
    );
    // And each status once per order: no two events for one (order, status).
    let mut per_status: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for record in &statuses {
        let kind = record.json()["orderStatusEvent"]["orderStatusType"]
            .as_str()
            .unwrap()
            .to_owned();
        per_status
            .entry((record.key.clone().unwrap(), kind))
            .or_default()
            .insert(record.header("ce_id").to_owned());
    }
    let repeated: Vec<_> = per_status.iter().filter(|(_, ids)| ids.len() > 1).collect();
    assert!(
        repeated.is_empty(),
        "a status published as two events: {repeated:?}"
    );
    let connector_dead = whole_topic(&connector_config.stream.dead_letter_topic).await;
    let projectors_dead = whole_topic(&projectors_config.apply.dead_letter_topic).await;
    assert!(connector_dead.is_empty(), "{connector_dead:?}");
    assert!(projectors_dead.is_empty(), "{projectors_dead:?}");

    // A change may come twice only from two runs of the connector: one process publishes each
    // change once, and a restart resumes from its checkpoint.
    for records in [&customer_changes, &requests, &statuses] {
        let repeated = runs.repeated_within_a_run(records);
        assert!(
            repeated.is_empty(),
            "{} changes published more than once by one connector run, which no restart \
             explains (topic, run, event id, offsets): {:?}",
            repeated.len(),
            &repeated[..repeated.len().min(5)]
        );
    }
    let duplicates = |records: &[Record], ids: &BTreeMap<String, BTreeSet<String>>| {
        records.len() - ids.values().map(BTreeSet::len).sum::<usize>()
    };
    eprintln!(
        "fault suite: {:.0} s in all; {} customers, {} orders ({} approved), {} status changes, \
         {} markers; {} Accounts writes made {} changes; records published again after a \
         restart: {} customer changes, {} requests, {} status changes",
        suite_started.elapsed().as_secs_f64(),
        counts.customers,
        counts.orders,
        counts.approved_orders,
        counts.status_changes,
        markers.passed,
        first_accounts + second_accounts + markers.passed,
        changed.len(),
        duplicates(&customer_changes, &customer_ids),
        duplicates(&requests, &request_ids),
        duplicates(&statuses, &status_ids),
    );
    let _ = std::fs::remove_dir_all(&dir);
}
