//! Two instances of one projector in one consumer group, as separate processes (the release
//! path an operator scales with): they share the partitions, everything is applied, and no
//! record is applied by both.
#![allow(
    clippy::disallowed_methods,
    reason = "test code: synchronous Kafka calls wait on the local broker only"
)]

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use projectors::config::Projector;
use rdkafka::consumer::{BaseConsumer, Consumer};
use storefront_plumbing::kafka::TracingContext;
use storefront_plumbing::settings::HttpSettings;
use storefront_schemas::documents::CustomerId;
use storefront_tests::{DEADLINE, Daemon, eventually, free_port, http_get, stack, until_healthy};

const BINARY: &str = env!("CARGO_BIN_EXE_projectors");

/// Records an instance has taken from Kafka and settled (applied, stale, duplicate or dead
/// letter), from its `/metrics`.
async fn records_settled(addr: std::net::SocketAddr) -> f64 {
    let (_, body) = http_get(addr, "/metrics").await.expect("metrics answer");
    body.lines()
        .filter(|line| line.starts_with("projector_events_total{"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn group_members(group: &str) -> usize {
    let consumer: BaseConsumer<TracingContext> = storefront_plumbing::kafka::client_config(
        &stack().kafka_settings(),
        "projectors-tests",
        &[],
        &[],
    )
    .create_with_context(TracingContext)
    .unwrap();
    consumer
        .fetch_group_list(Some(group), Duration::from_secs(10))
        .map(|list| {
            list.groups()
                .iter()
                .filter(|g| g.name() == group && g.state() == "Stable")
                .map(|g| g.members().len())
                .sum()
        })
        .unwrap_or(0)
}

#[tokio::test]
async fn two_instances_share_the_partitions_and_apply_each_record_once() {
    let config = test_config();
    create_topics(&config).await;
    let dir = tempfile::tempdir().unwrap();
    let mut instances = Vec::new();
    for n in 0..2 {
        let mut own = config.clone();
        own.http = HttpSettings::on_port(free_port());
        let path = dir.path().join(format!("projectors-{n}.toml"));
        std::fs::write(&path, toml::to_string(&own).unwrap()).unwrap();
        let daemon = Daemon::spawn(
            Path::new(BINARY),
            &["--config", path.to_str().unwrap(), "run", "orders"],
        );
        until_healthy(own.http.listen).await;
        instances.push((daemon, own.http.listen));
    }
    let group = config.consumer_group(Projector::Orders);
    eventually(DEADLINE, "both instances in the stable group", async || {
        (group_members(&group) == 2).then_some(())
    })
    .await;

    // Many customers, so every partition gets some.
    let customers: Vec<CustomerId> = (0..300).map(|_| new_customer_id()).collect();
    let records: Vec<Outbound> = customers
        .iter()
        .enumerate()
        .map(|(n, id)| customer_change(&config, id, position(n as u32), &format!("C{n}")))
        .collect();
    Producer::new().send_all(&records, None).await;
    caught_up(&config, Projector::Orders).await;

    let mut settled = Vec::new();
    for (_, addr) in &instances {
        settled.push(records_settled(*addr).await);
    }
    for (mut daemon, _) in instances {
        daemon.signal("TERM");
        assert!(daemon.exit_status().await.success());
    }
    assert_eq!(
        snapshot(&config.targets.orders).await.len(),
        customers.len()
    );
    assert!(
        settled.iter().all(|n| *n > 0.0),
        "both instances applied records: {settled:?}"
    );
    assert_eq!(
        settled.iter().sum::<f64>(),
        customers.len() as f64,
        "each record settled by exactly one instance: {settled:?}"
    );
}
