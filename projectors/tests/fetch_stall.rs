//! A broker that is reachable but returns nothing: a Kafka client quota throttles the orders
//! projector's fetches to nothing (`consumer_byte_rate` of 1 byte/s for its client id; the broker
//! answers throttled fetches with no records and holds the connection) while records wait on
//! two of three partitions. `/health` reports the projector failing within
//! `apply.fetch_stall_ms` plus two statistics intervals, naming those partitions and their
//! waiting offsets, and `projector_fetch_stalled_seconds` shows the wait; once the quota is gone
//! it is ready again and every record is applied, the projection whole and exact.
//!
//! Alone in its file: a quota is broker-wide state (scoped to this test's client id, and removed
//! again even when the test fails). The quota is set with kafka-clients' Admin through
//! `fetch_stall/ClientQuota.java`, on the jars `dev/stack` resolved (librdkafka has no
//! AlterClientQuotas), so it needs the local stack.

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use mongodb::bson::{Document, doc};
use projectors::config::Projector;
use storefront_schemas::documents::CustomerId;
use storefront_tests::{DEADLINE, eventually, http_get, repo_root, stack, unique, until_healthy};

/// The local stack's folder, as `dev/stack` resolves it (its jars are under `kafka/lib`).
fn stack_dir() -> String {
    let output = Command::new(repo_root().join("dev").join("stack"))
        .arg("env")
        .output()
        .unwrap();
    assert!(output.status.success(), "dev/stack env failed");
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .find_map(|line| line.strip_prefix("export STACK_DIR="))
        .expect("dev/stack env names STACK_DIR")
        .trim_matches('\'')
        .to_owned()
}

/// Sets (`bytes_per_second`) or removes (`"remove"`) the fetch quota of `client_id`; returns once
/// the broker describes it so.
fn client_quota(client_id: &str, value: &str) -> Result<(), String> {
    let dir = stack_dir();
    let output = Command::new("java")
        .arg(format!(
            "-Dlog4j2.configurationFile={dir}/kafka/tools-log4j2.properties"
        ))
        .arg("-cp")
        .arg(format!("{dir}/kafka/lib/*"))
        .arg(repo_root().join("projectors/tests/fetch_stall/ClientQuota.java"))
        .args([&stack().kafka_bootstrap, client_id, value])
        .output()
        .map_err(|error| format!("cannot run java: {error}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ClientQuota {client_id} {value}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// A quota throttling one client's fetches to nothing, removed by [`Self::remove`] or, if the
/// test fails first, when dropped.
struct Throttled {
    client_id: String,
    removed: bool,
}

impl Throttled {
    fn new(client_id: &str) -> Self {
        client_quota(client_id, "1").unwrap();
        Self {
            client_id: client_id.to_owned(),
            removed: false,
        }
    }

    fn remove(mut self) {
        self.removed = true;
        client_quota(&self.client_id, "remove").unwrap();
    }
}

impl Drop for Throttled {
    fn drop(&mut self) {
        if !self.removed
            && let Err(error) = client_quota(&self.client_id, "remove")
        {
            eprintln!("the quota of {} stays: {error}", self.client_id);
        }
    }
}

/// The samples of `metric` for `topic`, by partition, from the body of `/metrics`.
fn samples(body: &str, metric: &str, topic: &str) -> BTreeMap<i32, f64> {
    let topic = format!("topic=\"{topic}\"");
    body.lines()
        .filter(|line| line.starts_with(&format!("{metric}{{")) && line.contains(&topic))
        .map(|line| {
            let partition = line
                .split("partition=\"")
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .and_then(|partition| partition.parse().ok())
                .unwrap_or_else(|| panic!("no partition in {line}"));
            let value = line.rsplit(' ').next().unwrap().parse().unwrap();
            (partition, value)
        })
        .collect()
}

/// The projection of one customer change: the customer copy, no orders, its guard position.
fn projected(id: &CustomerId, first_name: &str, position: u64) -> Document {
    let mut document = customer_orders(id, first_name, &[]);
    document.insert("_cdc", doc! { "customerPosition": position as i64 });
    canonical(document)
}

#[tokio::test]
async fn a_broker_that_returns_no_records_fails_health_until_they_arrive() {
    if !stack().local_kafka {
        eprintln!("skipped: the quota tool runs on the local stack's jars");
        return;
    }
    let client_id = unique("fetch-stall");
    let mut config = test_config();
    config
        .kafka
        .properties
        .insert("client.id".into(), client_id.clone());
    // The broker answers a throttled fetch at once with no records, then leaves the connection
    // unread for the throttle time, far longer than the test (1 byte/s), and removing the quota
    // does not shorten it: librdkafka gives up on the fetch waiting there after
    // socket.timeout.ms (60 s by default) and reconnects. 10 s keeps the recovery short.
    config
        .kafka
        .properties
        .insert("socket.timeout.ms".into(), "10000".into());
    config.apply.fetch_stall_ms = 2_000;
    let topic = config.topics.customer_change.clone();
    create_topics(&config).await;
    let producer = Producer::new();
    let mut expected = Vec::new();
    // One customer on every partition, applied before the throttle.
    for partition in 0..3 {
        let id = new_customer_id();
        let at = position(partition as u32);
        producer
            .send(&customer_change(&config, &id, at, "Ada"), Some(partition))
            .await;
        expected.push(projected(&id, "Ada", at));
    }
    let running = start(&config, &[Projector::Orders]).await;
    caught_up(&config, Projector::Orders).await;
    until_healthy(running.http_addr()).await;

    let throttled = Throttled::new(&client_id);
    // Two records on partition 0 (offsets 1 and 2), three on partition 2 (1 to 3), none on 1.
    for (n, partition) in [0, 0, 2, 2, 2].into_iter().enumerate() {
        let id = new_customer_id();
        let at = position(10 + n as u32);
        producer
            .send(&customer_change(&config, &id, at, "Grace"), Some(partition))
            .await;
        expected.push(projected(&id, "Grace", at));
    }
    let produced = Instant::now();
    let component = projectors::consumer::component(Projector::Orders);
    let waiting = [(0, "1..3"), (2, "1..4")]
        .map(|(partition, offsets)| format!("{topic}/{partition} (offsets {offsets} waiting"));
    // Partition 0's records came first, so it may be named alone for a moment.
    let health = eventually(
        DEADLINE,
        "/health to report the fetch stall of both partitions",
        async || match http_get(running.http_addr(), "/health").await {
            Some((503, body)) if waiting.iter().all(|listed| body.contains(listed)) => {
                Some(serde_json::from_str::<serde_json::Value>(&body).unwrap())
            }
            _ => None,
        },
    )
    .await;
    let took = produced.elapsed();
    eprintln!("fetch stall reported {took:?} after the last record was produced");
    // The statistics come every 200 ms (lag_interval_ms); a report needs at most two after the
    // limit, and this test's polling adds up to 250 ms.
    assert!(
        took < Duration::from_millis(2_000 + 2 * 200 + 2_000),
        "reported {took:?} after the records were produced"
    );
    let components = health["components"].as_object().unwrap();
    let failing: Vec<&String> = components
        .iter()
        .filter(|(_, state)| state["state"] != "ready")
        .map(|(name, _)| name)
        .collect();
    assert_eq!(failing, [&component], "{health}");
    assert_eq!(components[&component]["state"], "failing", "{health}");
    let reason = components[&component]["reason"].as_str().unwrap();
    // Exactly the partitions with records waiting, with their offsets, each for 2 s or more.
    let prefix = "kafka: fetches return no records while the broker has some: ";
    let partitions: Vec<&str> = reason
        .strip_prefix(prefix)
        .unwrap_or_else(|| panic!("{reason}"))
        .split("), ")
        .collect();
    assert_eq!(partitions.len(), 2, "{reason}");
    for (listed, waiting) in partitions.iter().zip(&waiting) {
        let seconds: u64 = listed
            .strip_prefix(&format!("{waiting}, nothing fetched for "))
            .and_then(|rest| rest.split(' ').next())
            .and_then(|seconds| seconds.parse().ok())
            .unwrap_or_else(|| panic!("{waiting}... in {reason}"));
        assert!(seconds >= 2, "{reason}");
    }
    // The condition is real: none of the records produced under the quota was applied.
    assert_eq!(
        snapshot(&config.targets.orders).await,
        {
            let mut before = expected[..3].to_vec();
            before.sort_by_key(id_order);
            before
        },
        "only the records from before the quota are applied"
    );
    let metrics = http_get(running.http_addr(), "/metrics").await.unwrap().1;
    let stalled = samples(&metrics, "projector_fetch_stalled_seconds", &topic);
    assert_eq!(stalled.keys().copied().collect::<Vec<_>>(), [0, 1, 2]);
    assert!(stalled[&0] >= 2.0 && stalled[&2] >= 2.0, "{stalled:?}");
    assert_eq!(
        stalled[&1], 0.0,
        "nothing waits on partition 1: {stalled:?}"
    );

    throttled.remove();
    let removed = Instant::now();
    until_healthy(running.http_addr()).await;
    eprintln!(
        "ready again {:?} after the quota was removed",
        removed.elapsed()
    );
    caught_up(&config, Projector::Orders).await;
    eventually(DEADLINE, "the stall gauges back to 0", async || {
        let body = http_get(running.http_addr(), "/metrics").await?.1;
        let stalled = samples(&body, "projector_fetch_stalled_seconds", &topic);
        (stalled.len() == 3 && stalled.values().all(|waited| *waited == 0.0)).then_some(())
    })
    .await;
    running.stop().await;
    expected.sort_by_key(id_order);
    assert_eq!(snapshot(&config.targets.orders).await, expected);
}
