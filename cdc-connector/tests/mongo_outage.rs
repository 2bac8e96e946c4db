//! The MongoDB server stopped under a running connector: `/health` reports every stream failing
//! within `stream.read_stall_ms` (plus a tick of the watch), with the wait as a metric, and the
//! process keeps running (a checkpoint it cannot save is tried again); once MongoDB is back the
//! streams are ready again and every change, before and after, is in Kafka. Alone in its own
//! test binary: it stops the shared local MongoDB.

use storefront_tests::{DEADLINE, eventually, http_get, stack};

mod common;
use common::{AccountsRun, Copies, metric_value};

#[tokio::test]
async fn health_reports_mongodb_not_answering_and_recovers_with_nothing_lost() {
    if !stack().local_mongo {
        eprintln!("skipped: MongoDB is external and cannot be stopped");
        return;
    }
    let mut config = common::config();
    config.stream.max_await_ms = 500;
    config.stream.read_stall_ms = 2_000;
    // Saves come due during the outage, so the test sees them retried rather than fatal.
    config.checkpoints.interval_ms = 100;
    config.checkpoints.idle_interval_ms = 100;
    config.mongo.server_selection_timeout_ms = 1_000;
    let streams: Vec<String> = [
        &config.sources.accounts,
        &config.sources.orders,
        &config.sources.fulfillment,
    ]
    .map(ToString::to_string)
    .to_vec();
    let run = AccountsRun::start(&config).await;
    let addr = run.addr();

    let stopped = stack().stop_mongo();
    let failing = eventually(
        DEADLINE,
        "/health to report every stream waiting for MongoDB",
        async || {
            http_get(addr, "/health")
                .await
                .filter(|(status, body)| {
                    *status == 503 && body.matches("mongodb has not answered").count() == 3
                })
                .map(|(_, body)| body)
        },
    )
    .await;
    for stream in &streams {
        assert!(failing.contains(&format!("stream {stream}")), "{failing}");
    }
    let (_, metrics) = http_get(addr, "/metrics").await.unwrap();
    let waited = metric_value(
        &metrics,
        &format!(
            "cdc_source_unanswered_seconds{{collection=\"{}\"}}",
            streams[0]
        ),
    );
    assert!(waited >= 2.0, "the metric shows the wait: {waited}");
    let component_ready = format!(
        "storefront_component_ready{{component=\"stream {}\"}}",
        streams[0]
    );
    assert_eq!(
        metric_value(&metrics, &component_ready),
        0.0,
        "the health state is a metric too"
    );

    stopped.start();
    storefront_tests::until_healthy(addr).await;
    let (_, metrics) = http_get(addr, "/metrics").await.unwrap();
    let metric = format!(
        "cdc_source_unanswered_seconds{{collection=\"{}\"}}",
        streams[0]
    );
    assert!(
        metric_value(&metrics, &metric) < 2.0,
        "the wait is over once healthy: {metrics}"
    );
    assert_eq!(metric_value(&metrics, &component_ready), 1.0);
    run.finish(Copies::Allowed).await;
}
