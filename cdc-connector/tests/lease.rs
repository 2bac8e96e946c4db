//! Two connector processes on the same streams: one holds the lease and publishes, the other
//! stands by. A `kill -9` of the holder hands the streams to the standby within the default
//! bound with nothing lost; a holder paused (SIGSTOP) until the standby took over wakes and
//! hands nothing more to Kafka, then stops. The processes are the built binary, so they can be
//! killed and paused.

#![allow(
    clippy::disallowed_methods,
    reason = "test code reads topics with librdkafka's blocking calls directly"
)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use mongodb::bson::{Document, oid::ObjectId};
use storefront_tests::{DEADLINE, LoggedRun, TopicReader, eventually, guard, http_get, stack};

mod common;
use common::customer;

const BINARY: &str = env!("CARGO_BIN_EXE_cdc-connector");

/// The component state `/health` shows for `component`, such as `"ready"` or `"standby"`.
async fn component_state(addr: SocketAddr, component: &str) -> Option<String> {
    let (_, body) = http_get(addr, "/health").await?;
    let health: serde_json::Value = serde_json::from_str(&body).ok()?;
    health["components"][component]["state"]
        .as_str()
        .map(str::to_owned)
}

/// Waits until the process at `addr` holds the lease and every stream is open.
async fn until_publishing(addr: SocketAddr, what: &str) {
    eventually(DEADLINE, what, async || {
        let (status, body) = http_get(addr, "/health").await?;
        let health: serde_json::Value = serde_json::from_str(&body).ok()?;
        let components = health["components"].as_object()?;
        let streams = components
            .keys()
            .filter(|k| k.starts_with("stream "))
            .count();
        (status == 200 && streams == 3 && components["lease"]["state"] == "ready").then_some(())
    })
    .await;
}

async fn start(config: &cdc_connector::config::ConnectorConfig) -> LoggedRun {
    LoggedRun::start(
        Path::new(BINARY),
        &toml::to_string(config).unwrap(),
        &["run"],
    )
    .await
}

fn customers(
    client: &mongodb::Client,
    config: &cdc_connector::config::ConnectorConfig,
) -> mongodb::Collection<Document> {
    client
        .database(&config.sources.accounts.database)
        .collection(&config.sources.accounts.collection)
}

/// Record keys of `topic` read until `sentinel`'s key is among them.
async fn keys_until(reader: &mut TopicReader, sentinel: &ObjectId) -> Vec<String> {
    let sentinel = sentinel.to_hex();
    reader
        .read_until(DEADLINE, "the sentinel", |records| {
            records
                .iter()
                .any(|record| record.key.as_deref() == Some(sentinel.as_str()))
        })
        .await
        .iter()
        .filter_map(|record| record.key.clone())
        .collect()
}

#[tokio::test]
async fn a_standby_takes_over_from_a_killed_holder_within_fifteen_seconds_and_nothing_is_lost() {
    // The shipped lease settings: the bound is the default's.
    let config = common::config();
    let topic = config.topics.customer_change.clone();
    let client = stack().mongo_client().await;
    let customers = customers(&client, &config);
    let mut reader = TopicReader::new(&[&topic]);

    let holder = start(&config).await;
    until_publishing(holder.listen, "the first process to hold the lease").await;
    let standby = start(&config).await;
    assert_eq!(
        component_state(standby.listen, "lease").await.as_deref(),
        Some("standby"),
        "the second process stands by, and /health counts it ready"
    );

    let mut written: Vec<ObjectId> = Vec::new();
    for _ in 0..5 {
        let id = ObjectId::new();
        customers.insert_one(customer(id, "Before")).await.unwrap();
        written.push(id);
    }
    keys_until(&mut reader, written.last().unwrap()).await;

    holder.daemon.signal("KILL");
    let killed = Instant::now();
    // Written while nobody publishes: the standby must pick them up from the checkpoint.
    for _ in 0..5 {
        let id = ObjectId::new();
        customers.insert_one(customer(id, "During")).await.unwrap();
        written.push(id);
    }
    until_publishing(standby.listen, "the standby to take over").await;
    let takeover = killed.elapsed();
    eprintln!("takeover after kill -9: {} ms", takeover.as_millis());
    assert!(
        takeover < Duration::from_secs(15),
        "the standby took over after {takeover:?}"
    );

    let sentinel = ObjectId::new();
    customers
        .insert_one(customer(sentinel, "After"))
        .await
        .unwrap();
    written.push(sentinel);
    let mut keys = keys_until(&mut reader, &sentinel).await;
    keys.sort();
    keys.dedup();
    let mut expected: Vec<String> = written.iter().map(|id| id.to_hex()).collect();
    expected.sort();
    assert_eq!(keys, expected, "every change is in Kafka, none lost");
    let mut standby = standby;
    let (status, log) = standby.stop().await;
    assert!(status.success(), "the new holder stops cleanly: {log}");
}

#[tokio::test]
async fn a_holder_paused_until_the_standby_took_over_publishes_nothing_when_it_wakes() {
    let mut config = common::config();
    config.lease.ttl_ms = 2_000;
    config.lease.renew_interval_ms = 500;
    let topic = config.topics.customer_change.clone();
    let client = stack().mongo_client().await;
    let customers = customers(&client, &config);
    let mut reader = TopicReader::new(&[&topic]);

    // The holder's next getMore, sent right after it read `first`, waits long on the server: the
    // changes written after the takeover answer it while the holder is paused, so they are in
    // its hands the moment it wakes. Unbatched records would reach Kafka at once: only the lease
    // stops them.
    let mut holder_config = config.clone();
    holder_config.stream.max_await_ms = 20_000;
    holder_config.stream.read_stall_ms = 25_000;
    holder_config
        .kafka
        .properties
        .insert("linger.ms".into(), "0".into());
    let mut holder = start(&holder_config).await;
    until_publishing(holder.listen, "the first process to hold the lease").await;
    let mut standby = start(&config).await;
    let first = ObjectId::new();
    customers
        .insert_one(customer(first, "First"))
        .await
        .unwrap();
    keys_until(&mut reader, &first).await;

    holder.daemon.signal("STOP");
    until_publishing(standby.listen, "the standby to take over").await;
    // Written after the takeover: the paused holder's cursor still has them to read when it
    // wakes, and only its lease keeps it from publishing them.
    let mut after: Vec<ObjectId> = (0..5).map(|_| ObjectId::new()).collect();
    for id in &after {
        customers.insert_one(customer(*id, "After")).await.unwrap();
    }
    let sentinel = ObjectId::new();
    customers
        .insert_one(customer(sentinel, "Sentinel"))
        .await
        .unwrap();
    after.push(sentinel);
    keys_until(&mut reader, &sentinel).await;

    holder.daemon.signal("CONT");
    let (status, log) = holder.exited().await;
    assert!(
        !status.success(),
        "the woken holder stops with an error: {log}"
    );
    assert!(
        log.contains("was taken over by another connector process"),
        "it says why: {log}"
    );
    let (status, log) = standby.stop().await;
    assert!(status.success(), "the new holder stops cleanly: {log}");

    // Nothing writes to the topic any more: count every record.
    let records = guard::read_all(&mut TopicReader::new(&[&topic]), &[&topic], DEADLINE).await;
    for id in &after {
        let key = id.to_hex();
        let copies = records
            .iter()
            .filter(|record| record.key.as_deref() == Some(key.as_str()))
            .count();
        assert_eq!(
            copies, 1,
            "{key}, written after the takeover, is published once (by the new holder), \
             {copies} found"
        );
    }
}
