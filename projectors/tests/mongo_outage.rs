//! The MongoDB test server stopped during a run and started again: the projector retries, shows
//! MongoDB failing on `/health`, commits nothing it has not written, and applies everything once
//! the server is back. Alone in its file: stopping the server disturbs every other test, and the
//! tests of one binary run in parallel.

mod common;

use std::process::Command;

use common::*;
use projectors::config::Projector;
use storefront_schemas::documents::CustomerId;
use storefront_tests::{DEADLINE, eventually, http_get, repo_root, stack, until_healthy};

fn dev_stack(args: &[&str]) {
    let status = Command::new(repo_root().join("dev").join("stack"))
        .args(args)
        .status()
        .unwrap();
    assert!(status.success(), "dev/stack {args:?} failed");
}

/// Starts the server again even if the test fails half-way, so later tests find it up.
struct RestartOnDrop;

impl Drop for RestartOnDrop {
    fn drop(&mut self) {
        dev_stack(&["up", "mongo"]);
    }
}

#[tokio::test]
async fn nothing_is_lost_while_mongodb_is_down() {
    assert!(
        stack().local_mongo,
        "needs the local MongoDB test server to stop it"
    );
    let config = test_config();
    create_topics(&config).await;
    let producer = Producer::new();
    let before: Vec<CustomerId> = (0..20).map(|_| new_customer_id()).collect();
    let during: Vec<CustomerId> = (0..20).map(|_| new_customer_id()).collect();
    let changes = |ids: &[CustomerId], first: u32| -> Vec<Outbound> {
        ids.iter()
            .enumerate()
            .map(|(n, id)| customer_change(&config, id, position(first + n as u32), "Ada"))
            .collect()
    };
    producer.send_all(&changes(&before, 0), None).await;
    let running = start(&config, &[Projector::Orders]).await;
    caught_up(&config, Projector::Orders).await;
    let committed_before: Vec<(String, i32, i64)> = progress(&config, Projector::Orders)
        .into_iter()
        .map(|(topic, partition, committed, _)| (topic, partition, committed))
        .collect();
    let retries_before = metric_sum("projector_retries_total", &["operation=\"mongo_write\""]);

    let restart = RestartOnDrop;
    dev_stack(&["down", "mongo"]);
    producer.send_all(&changes(&during, 100), None).await;
    // The projector read the new records and its writes failed: several retries, which also
    // spans several commit intervals (50 ms; the retries pause 20, 40, 80, ... ms).
    eventually(DEADLINE, "three failed writes", async || {
        let retries = metric_sum("projector_retries_total", &["operation=\"mongo_write\""]);
        (retries >= retries_before + 3.0).then_some(())
    })
    .await;
    let health = eventually(DEADLINE, "/health to answer 503", async || match http_get(
        running.http_addr(),
        "/health",
    )
    .await
    {
        Some((503, body)) => Some(serde_json::from_str::<serde_json::Value>(&body).unwrap()),
        _ => None,
    })
    .await;
    let components = health["components"].as_object().unwrap();
    assert_eq!(components["mongo"]["state"], "failing", "{health}");
    assert!(
        !components["mongo"]["reason"]
            .as_str()
            .unwrap_or("")
            .is_empty(),
        "the failure is explained: {health}"
    );
    let failing: Vec<&String> = components
        .iter()
        .filter(|(_, state)| state["state"] != "ready")
        .map(|(name, _)| name)
        .collect();
    assert_eq!(failing, ["mongo"], "only MongoDB is failing: {health}");
    // Nothing written, nothing committed: the group's offsets are where they were before the
    // outage, while the topic holds the new records.
    let during_outage = progress(&config, Projector::Orders);
    assert_eq!(
        during_outage
            .iter()
            .map(|(topic, partition, committed, _)| (topic.clone(), *partition, *committed))
            .collect::<Vec<_>>(),
        committed_before,
        "offsets committed for records whose writes failed: {during_outage:?}"
    );
    assert_eq!(
        during_outage
            .iter()
            .map(|(_, _, _, high)| high)
            .sum::<i64>(),
        (before.len() + during.len()) as i64
    );
    drop(restart);

    caught_up(&config, Projector::Orders).await;
    until_healthy(running.http_addr()).await;
    // Nothing left to apply: the lag of every partition reads 0 again.
    let topic = format!("topic=\"{}\"", config.topics.customer_change);
    eventually(DEADLINE, "consumer lag back to 0", async || {
        let body = http_get(running.http_addr(), "/metrics").await?.1;
        let lines: Vec<&str> = body
            .lines()
            .filter(|l| l.starts_with("projector_consumer_lag{") && l.contains(&topic))
            .collect();
        (lines.len() == 3 && lines.iter().all(|l| l.ends_with(" 0"))).then_some(())
    })
    .await;
    running.stop().await;
    let documents = snapshot(&config.targets.orders).await;
    assert_eq!(documents.len(), before.len() + during.len());
    for id in before.iter().chain(&during) {
        assert!(documents.iter().any(|d| has_id(d, id)), "{id} applied");
    }
    assert!(
        metric_sum("projector_retries_total", &["operation=\"mongo_write\""]) > retries_before,
        "the outage was retried"
    );
}
