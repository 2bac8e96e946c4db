//! A stream that reports itself idle while its collection has changes it never reads (what the
//! old test server did after a restart, when a getMore got another stream's cursor) shows in
//! `/health` and in `cdc_unread_change_seconds` within `stream.unread_check_ms` plus
//! `stream.read_stall_ms`, and is ready again once it reads them; nothing is lost. The failure
//! is brought back by the test server's `storefrontStarveChangeStream` fail point, scoped to this
//! test's collection (so tests running alongside are unaffected).

use mongodb::bson::doc;
use storefront_tests::{DEADLINE, eventually, http_get, stack};

mod common;
use common::{AccountsRun, Copies, metric_value};

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
    let stream = config.sources.accounts.to_string();
    let mut run = AccountsRun::start(&config).await;
    let addr = run.addr();

    starve(&stream, true).await;
    run.write("Unread").await;
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
    run.finish(Copies::None).await;
}
