//! End-to-end latency: a source write acknowledged -> its effect visible in the projection,
//! against a bare change stream's latency for the same writes, in the same run. Prints figures;
//! asserts nothing about speed (the targets are compared in the output and in
//! docs/benchmarks.md).
//!
//! The flow measured is the customer flow: an update of `customer.accounts` -> connector ->
//! `accounts.customer.change` -> orders projector -> the customer copy in `customer.orders`.
//!
//! 1. Starts the connector and both projectors in this process (release build, default settings
//!    except unique names) and seeds `BENCH_CUSTOMERS` customers (default 200), waiting until
//!    every one is projected.
//! 2. Opens two change streams in this process: a bare one on the source collection and one on
//!    the projection collection. Each write sets the customer's first name to a marker carrying
//!    its sequence number; each stream records when it saw which marker for which customer.
//! 3. Capacity: `BENCH_CAPACITY_WRITES` (default 3,000) updates as fast as 8 writers go, timed
//!    from the first write to the projection showing the last.
//! 4. Latency: updates at half that rate (or `BENCH_RATE` per second) for `BENCH_SECS` (default
//!    20), round-robin over the
//!    customers, each from its scheduled instant (an open loop: a slow write never delays the
//!    next). A write is visible in the projection once the copy shows it or a write of the same
//!    customer committed after it (the projector applies only the newest of a customer's events
//!    in a batch; the bare stream gives the commit order).
//!    Latencies are from the write's acknowledgement; "added" is, per write, the projection's
//!    latency minus the bare stream's.
//!
//! Every write of both phases must be seen by both streams (exact counts), or the bench fails.
//! `BENCH_LINGER_MS` sets the connector's `linger.ms` (default 5) through `kafka.properties`.
//!
//! Run: `cargo bench -p storefront-tests --bench end_to_end_latency` (starts the local stack if
//! needed).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cdc_connector::config::ConnectorConfig;
use futures::StreamExt;
use mongodb::bson::oid::ObjectId;
use mongodb::bson::{Document, doc};
use mongodb::{Client, Collection};
use projectors::config::ProjectorsConfig;
use storefront_tests::{DEADLINE, stack};

// The tests' in-process pipeline; the bench brings its own configs (the shipped defaults).
#[allow(dead_code)]
#[path = "../tests/pipeline/mod.rs"]
mod pipeline;
use pipeline::Pipeline;

const MARKER: &str = "lat-";

/// When a stream saw each (customer, sequence number).
type Seen = Arc<Mutex<Vec<(ObjectId, u64, Instant)>>>;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The shipped defaults with unique names, and `BENCH_LINGER_MS` applied.
fn configs() -> (ConnectorConfig, ProjectorsConfig) {
    let (mut connector, projectors) = pipeline::default_configs();
    if let Ok(linger) = std::env::var("BENCH_LINGER_MS") {
        connector
            .kafka
            .properties
            .insert("linger.ms".into(), linger);
    }
    (connector, projectors)
}

fn customer(id: ObjectId) -> Document {
    doc! {
        "_id": id,
        "name": { "title": "Ms", "firstName": "Seed", "lastName": "Latency" },
        "contact": { "primaryPhone": "555-0100", "email": "latency@example.com" },
        "addresses": [{
            "type": "SHIPPING", "description": "home", "address1": "1 Main St",
            "city": "London", "state": "LDN", "postalCode": "N1"
        }],
    }
}

/// The sequence number of the first marker in `text`, if any.
fn marker_in(text: &str) -> Option<u64> {
    let start = text.find(MARKER)? + MARKER.len();
    let digits: String = text[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// Records, for every update event of `collection`, its document id, marker and arrival.
async fn watch(collection: Collection<Document>, seen: Seen) -> tokio::task::JoinHandle<()> {
    let mut stream = collection.watch().await.unwrap();
    tokio::spawn(async move {
        while let Some(event) = stream.next().await {
            let arrived = Instant::now();
            let event = event.unwrap();
            let Some(id) = event
                .document_key
                .as_ref()
                .and_then(|key| key.get_object_id("_id").ok())
            else {
                continue;
            };
            let Some(update) = event.update_description else {
                continue;
            };
            let text = mongodb::bson::Bson::Document(update.updated_fields)
                .into_relaxed_extjson()
                .to_string();
            if let Some(seq) = marker_in(&text) {
                seen.lock().unwrap().push((id, seq, arrived));
            }
        }
    })
}

/// Per write `(customer, seq)`: the instant the bare stream saw it (`None` while unseen).
fn seen_at(writes: &[(ObjectId, u64)], bare: &Seen) -> Vec<Option<Instant>> {
    let at: HashMap<u64, Instant> = bare
        .lock()
        .unwrap()
        .iter()
        .map(|(_, s, at)| (*s, *at))
        .collect();
    writes.iter().map(|(_, seq)| at.get(seq).copied()).collect()
}

/// Per write `(customer, seq)`: the first instant the projection showed that write or a later
/// one of the same customer, "later" in commit order (the bare stream's order: concurrent
/// writers may commit one customer's writes out of sequence); `None` while not shown.
fn projected_at(writes: &[(ObjectId, u64)], bare: &Seen, projected: &Seen) -> Vec<Option<Instant>> {
    let commit_rank: HashMap<u64, usize> = bare
        .lock()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(rank, (_, seq, _))| (*seq, rank))
        .collect();
    let mut shown: HashMap<ObjectId, Vec<(usize, Instant)>> = HashMap::new();
    for (id, seq, at) in projected.lock().unwrap().iter() {
        if let Some(rank) = commit_rank.get(seq) {
            shown.entry(*id).or_default().push((*rank, *at));
        }
    }
    writes
        .iter()
        .map(|(id, seq)| {
            let rank = commit_rank.get(seq)?;
            shown
                .get(id)?
                .iter()
                .filter(|(r, _)| r >= rank)
                .map(|(_, at)| *at)
                .min()
        })
        .collect()
}

async fn until_all(what: &str, mut probe: impl FnMut() -> Vec<Option<Instant>>) -> Vec<Instant> {
    storefront_tests::eventually(DEADLINE, what, async || {
        probe().into_iter().collect::<Option<Vec<_>>>()
    })
    .await
}

async fn write(accounts: &Collection<Document>, id: ObjectId, seq: u64) -> Instant {
    accounts
        .update_one(
            doc! { "_id": id },
            doc! { "$set": { "name.firstName": format!("{MARKER}{seq}-") } },
        )
        .await
        .unwrap();
    Instant::now()
}

/// p50, p99 and max of `values` (milliseconds), sorted in place.
fn percentiles(values: &mut [f64]) -> (f64, f64, f64) {
    values.sort_by(f64::total_cmp);
    let at =
        |q: f64| values[((values.len() as f64 * q).ceil() as usize).clamp(1, values.len()) - 1];
    (at(0.50), at(0.99), at(1.0))
}

#[tokio::main]
async fn main() {
    let customers = env("BENCH_CUSTOMERS", 200).max(1) as usize;
    let capacity_writes = env("BENCH_CAPACITY_WRITES", 3_000).max(100);
    let seconds = env("BENCH_SECS", 20).max(1);
    let (connector_config, projectors_config) = configs();
    let client: Client = stack().mongo_client().await;
    let source = &connector_config.sources.accounts;
    let accounts: Collection<Document> = client
        .database(&source.database)
        .collection(&source.collection);
    let target = &projectors_config.targets.orders;
    let copies: Collection<Document> = client
        .database(&target.database)
        .collection(&target.collection);

    let pipeline = Pipeline::start(&connector_config, &projectors_config).await;

    let ids: Vec<ObjectId> = (0..customers).map(|_| ObjectId::new()).collect();
    accounts
        .insert_many(ids.iter().map(|id| customer(*id)))
        .await
        .unwrap();
    storefront_tests::eventually(DEADLINE, "every seeded customer projected", async || {
        let projected = copies.count_documents(doc! {}).await.ok()?;
        (projected == customers as u64).then_some(())
    })
    .await;

    let bare: Seen = Arc::default();
    let projected: Seen = Arc::default();
    let bare_watch = watch(accounts.clone(), bare.clone()).await;
    let projected_watch = watch(copies.clone(), projected.clone()).await;

    // Capacity: as fast as 8 writers go.
    let mut seq = 0_u64;
    let burst: Vec<(ObjectId, u64)> = (0..capacity_writes)
        .map(|_| {
            seq += 1;
            (ids[seq as usize % customers], seq)
        })
        .collect();
    let started = Instant::now();
    let writers: Vec<_> = burst
        .chunks(burst.len().div_ceil(8))
        .map(|share| {
            let share = share.to_vec();
            let accounts = accounts.clone();
            tokio::spawn(async move {
                for (id, seq) in share {
                    write(&accounts, id, seq).await;
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    let written = started.elapsed();
    let on_bare = until_all("the burst on the bare stream", || seen_at(&burst, &bare)).await;
    let visible = until_all("the burst projected", || {
        projected_at(&burst, &bare, &projected)
    })
    .await;
    let elapsed = visible.iter().max().unwrap().duration_since(started);
    let capacity = capacity_writes as f64 / elapsed.as_secs_f64();
    // Half the capacity, unless BENCH_RATE (updates per second) says otherwise.
    let rate = std::env::var("BENCH_RATE")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(capacity / 2.0);
    println!(
        "capacity: {capacity_writes} updates written in {:.2} s, on the bare stream in {:.2} s, \
         projected in {:.2} s = {capacity:.0} updates/s; measuring at {rate:.0}/s for {seconds} s \
         over {customers} customers",
        written.as_secs_f64(),
        on_bare
            .iter()
            .max()
            .unwrap()
            .duration_since(started)
            .as_secs_f64(),
        elapsed.as_secs_f64()
    );

    // Latency at half the capacity, open loop.
    let count = (rate * seconds as f64) as u64;
    let paced: Vec<(ObjectId, u64)> = (0..count)
        .map(|_| {
            seq += 1;
            (ids[seq as usize % customers], seq)
        })
        .collect();
    let begin = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(paced.len());
    for (n, (id, seq)) in paced.iter().copied().enumerate() {
        tokio::time::sleep_until(begin + Duration::from_secs_f64(n as f64 / rate)).await;
        let accounts = accounts.clone();
        tasks.push(tokio::spawn(async move { write(&accounts, id, seq).await }));
    }
    let mut acknowledged = Vec::with_capacity(tasks.len());
    for task in tasks {
        acknowledged.push(task.await.unwrap());
    }
    let achieved = count as f64 / begin.elapsed().as_secs_f64();
    let on_bare = until_all("every paced write on the bare stream", || {
        seen_at(&paced, &bare)
    })
    .await;
    let on_projection = until_all("every paced write projected", || {
        projected_at(&paced, &bare, &projected)
    })
    .await;
    let signed_ms = |later: Instant, earlier: Instant| match later.checked_duration_since(earlier) {
        Some(d) => d.as_secs_f64() * 1e3,
        None => -(earlier.duration_since(later).as_secs_f64() * 1e3),
    };
    let mut bare_ms = Vec::new();
    let mut pipeline_ms = Vec::new();
    let mut added_ms = Vec::new();
    for ((ack, projected_at), bare_at) in acknowledged.iter().zip(&on_projection).zip(&on_bare) {
        let bare = signed_ms(*bare_at, *ack);
        let pipeline = signed_ms(*projected_at, *ack);
        bare_ms.push(bare);
        pipeline_ms.push(pipeline);
        added_ms.push(pipeline - bare);
    }
    println!("{count} updates at {achieved:.0}/s, every one seen by both streams");
    for (what, values) in [
        ("bare change stream", &mut bare_ms),
        ("through the pipeline", &mut pipeline_ms),
        ("added by the pipeline", &mut added_ms),
    ] {
        let (p50, p99, max) = percentiles(values);
        println!("  {what:<22} p50 {p50:7.1} ms  p99 {p99:7.1} ms  max {max:7.1} ms");
    }
    let (p50, p99, _) = percentiles(&mut added_ms);
    println!(
        "  targets (added): p50 <= 10 ms: {}; p99 <= 40 ms: {}",
        if p50 <= 10.0 { "met" } else { "missed" },
        if p99 <= 40.0 { "met" } else { "missed" }
    );

    bare_watch.abort();
    projected_watch.abort();
    pipeline.stop().await;
}
