//! A stream that reports itself idle while its collection has changes it never reads (what the
//! old test server did after a restart, when a getMore got another stream's cursor) shows in
//! `/health` and in `cdc_unread_change_seconds` within `stream.unread_check_ms` plus
//! `stream.read_stall_ms`, and is ready again once it reads them; nothing is lost. The failure
//! is brought back by the test server's `storefrontStarveChangeStream` fail point, scoped to this
//! test's collection (so tests running alongside are unaffected).

use mongodb::bson::{Document, doc, oid::ObjectId};
use storefront_tests::{DEADLINE, InProcess, TopicReader, eventually, http_get, stack};

mod common;
use common::{customer, metric_value};

/// Turns the fail point on or off for `namespace`: from then on (a getMore already waiting
/// included), the stream's getMores answer empty batches whose tokens move on.
async fn starve(namespace: &str, on: bool) {
    let mode = if on { "alwaysOn" } else { "off" };
    stack()
        .mongo_client()
        .await
        .database("admin")
        .run_command(doc! {
            "configureFailPoint": "storefrontStarveChangeStream",
            "mode": mode,
            "data": { "namespace": namespace },
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn a_stream_that_leaves_changes_unread_shows_failing_until_it_reads_them() {
    if !stack().local_mongo {
        eprintln!("skipped: the fail point is the test server's own");
        return;
    }
    let mut config = common::config();
    config.stream.max_await_ms = 500;
    config.stream.read_stall_ms = 2_000;
    config.stream.unread_check_ms = 500;
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
        .read_until(DEADLINE, "the change before the stall", |r| !r.is_empty())
        .await;

    starve(&stream, true).await;
    let unread = ObjectId::new();
    customers
        .insert_one(customer(unread, "Unread"))
        .await
        .unwrap();
    let failing = eventually(
        DEADLINE,
        "/health to report the change the stream has not read",
        async || {
            http_get(addr, "/health")
                .await
                .filter(|(status, body)| *status == 503 && body.contains("has not read"))
                .map(|(_, body)| body)
        },
    )
    .await;
    assert!(failing.contains(&format!("stream {stream}")), "{failing}");
    let (_, metrics) = http_get(addr, "/metrics").await.unwrap();
    let waited = metric_value(
        &metrics,
        &format!("cdc_unread_change_seconds{{collection=\"{stream}\"}}"),
    );
    assert!(waited >= 2.0, "the metric shows the wait: {waited}");

    starve(&stream, false).await;
    storefront_tests::until_healthy(addr).await;
    let sentinel = ObjectId::new();
    customers
        .insert_one(customer(sentinel, "After"))
        .await
        .unwrap();
    let records = reader
        .read_until(DEADLINE, "the sentinel", |r| {
            r.iter()
                .any(|record| record.key.as_deref() == Some(sentinel.to_hex().as_str()))
        })
        .await
        .to_vec();
    connector.stop().await;
    // Each customer is its own key (and partition): compare as sets, duplicates kept.
    let mut keys: Vec<String> = records.iter().filter_map(|r| r.key.clone()).collect();
    keys.sort();
    let mut expected = [before, unread, sentinel].map(|id| id.to_hex());
    expected.sort();
    assert_eq!(keys, expected, "every change once");
}
