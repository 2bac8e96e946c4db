//! The Kafka broker stopped under a running connector: `/health` reports the stream failing
//! within `stream.delivery_stall_ms` (plus a tick of the watch) while its records wait, and
//! ready again once the broker is back; every change is then in Kafka, none lost. Alone in its
//! own test binary: it stops the shared local broker.

use mongodb::bson::{Document, oid::ObjectId};
use storefront_tests::{DEADLINE, InProcess, TopicReader, eventually, http_get, stack};

mod common;
use common::{customer, metric_value};

#[tokio::test]
async fn health_reports_kafka_not_acknowledging_and_recovers_with_nothing_lost() {
    if !stack().local_kafka {
        eprintln!("skipped: Kafka is external and cannot be stopped");
        return;
    }
    let mut config = common::config();
    config.stream.delivery_stall_ms = 2_000;
    let topic = config.topics.customer_change.clone();
    let stream = config.sources.accounts.to_string();
    let connector = InProcess::start(|stop| cdc_connector::start(config.clone(), stop)).await;
    let addr = connector.http_addr();
    let customers = stack()
        .mongo_client()
        .await
        .database(&config.sources.accounts.database)
        .collection::<Document>(&config.sources.accounts.collection);
    let mut reader = TopicReader::new(&[&topic]);
    let before = ObjectId::new();
    customers
        .insert_one(customer(before, "Before"))
        .await
        .unwrap();
    reader
        .read_until(DEADLINE, "the change before the outage", |r| !r.is_empty())
        .await;

    let stopped = stack().stop_kafka();
    let during: Vec<ObjectId> = (0..3).map(|_| ObjectId::new()).collect();
    for id in &during {
        customers.insert_one(customer(*id, "During")).await.unwrap();
    }
    let failing = eventually(
        DEADLINE,
        "/health to report the stalled stream",
        async || {
            http_get(addr, "/health")
                .await
                .filter(|(status, body)| {
                    *status == 503 && body.contains("kafka has not acknowledged")
                })
                .map(|(_, body)| body)
        },
    )
    .await;
    assert!(failing.contains(&stream), "{failing}");
    let (_, metrics) = http_get(addr, "/metrics").await.unwrap();
    let waited = metric_value(
        &metrics,
        &format!("cdc_oldest_unacknowledged_seconds{{collection=\"{stream}\"}}"),
    );
    assert!(waited >= 2.0, "the metric shows the wait: {waited}");

    stopped.start();
    storefront_tests::until_healthy(addr).await;
    let sentinel = ObjectId::new();
    customers
        .insert_one(customer(sentinel, "After"))
        .await
        .unwrap();
    let key = |id: &ObjectId| id.to_hex();
    let records = reader
        .read_until(DEADLINE, "the sentinel after the outage", |r| {
            r.iter()
                .any(|record| record.key.as_deref() == Some(&key(&sentinel)))
        })
        .await
        .to_vec();
    connector.stop().await;
    let mut keys: Vec<String> = records.iter().filter_map(|r| r.key.clone()).collect();
    keys.sort();
    keys.dedup();
    let mut expected: Vec<String> = std::iter::once(before)
        .chain(during)
        .chain([sentinel])
        .map(|id| key(&id))
        .collect();
    expected.sort();
    assert_eq!(keys, expected, "every change is in Kafka, none lost");
}
