//! The Kafka broker stopped under a running connector: `/health` reports the stream failing
//! within `stream.delivery_stall_ms` (plus a tick of the watch) while its records wait, and
//! ready again once the broker is back; every change is then in Kafka, none lost. Alone in its
//! own test binary: it stops the shared local broker.

use storefront_tests::{DEADLINE, eventually, http_get, stack};

mod common;
use common::{AccountsRun, Copies, metric_value};

#[tokio::test]
async fn health_reports_kafka_not_acknowledging_and_recovers_with_nothing_lost() {
    if !stack().local_kafka {
        eprintln!("skipped: Kafka is external and cannot be stopped");
        return;
    }
    let mut config = common::config();
    config.stream.delivery_stall_ms = 2_000;
    let stream = config.sources.accounts.to_string();
    let mut run = AccountsRun::start(&config).await;
    let addr = run.addr();

    let stopped = stack().stop_kafka();
    for _ in 0..3 {
        run.write("During").await;
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
    // The producer retried through the outage: idempotence keeps copies out, but the contract
    // here is at-least-once.
    run.finish(Copies::Allowed).await;
}
