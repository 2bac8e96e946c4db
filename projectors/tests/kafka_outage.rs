//! The Kafka broker stopped under running projectors: `/health` reports the projector failing
//! (no broker reachable, nothing can be fetched) within seconds, and ready again once a broker
//! is up; the records produced after it is back are applied. Alone in its file: stopping the
//! broker disturbs every other test, and the tests of one binary run in parallel.

mod common;

use common::*;
use projectors::config::Projector;
use storefront_schemas::documents::CustomerId;
use storefront_tests::{DEADLINE, eventually, http_get, stack, until_healthy};

#[tokio::test]
async fn health_reports_no_reachable_broker_and_recovers() {
    if !stack().local_kafka {
        eprintln!("skipped: Kafka is external and cannot be stopped");
        return;
    }
    let config = test_config();
    create_topics(&config).await;
    let producer = Producer::new();
    let before = new_customer_id();
    producer
        .send(&customer_change(&config, &before, position(0), "Ada"), None)
        .await;
    let running = start(&config, &[Projector::Orders]).await;
    caught_up(&config, Projector::Orders).await;

    let stopped = stack().stop_kafka();
    let component = projectors::consumer::component(Projector::Orders);
    let health = eventually(
        DEADLINE,
        "/health to report Kafka unreachable",
        async || match http_get(running.http_addr(), "/health").await {
            Some((503, body)) => Some(serde_json::from_str::<serde_json::Value>(&body).unwrap()),
            _ => None,
        },
    )
    .await;
    let reason = health["components"][&component]["reason"]
        .as_str()
        .unwrap_or_default();
    assert_eq!(
        health["components"][&component]["state"], "failing",
        "{health}"
    );
    assert!(reason.contains("kafka"), "{health}");

    stopped.start();
    until_healthy(running.http_addr()).await;
    let after: CustomerId = new_customer_id();
    producer
        .send(
            &customer_change(&config, &after, position(1), "Grace"),
            None,
        )
        .await;
    caught_up(&config, Projector::Orders).await;
    running.stop().await;
    let documents = snapshot(&config.targets.orders).await;
    assert_eq!(documents.len(), 2, "{documents:?}");
    for id in [&before, &after] {
        assert!(documents.iter().any(|d| has_id(d, id)), "{id} applied");
    }
}
