//! MongoDB refusing a change stream with an error that resuming cannot fix (`Unauthorized`,
//! injected with the `failCommand` fail point, which a real mongod started with
//! `enableTestCommands` has too): the stream shows failing in `/health` at once with the server's
//! error, the error is counted as not resumable, and the stream retries until it is fixed; then
//! it is ready again and every change, also those written meanwhile, is published once. Before
//! that, a resumable error (`HostUnreachable` labelled `ResumableChangeStreamError`) is resumed
//! and loses nothing.
//!
//! Alone in its test binary: `failCommand` is one setting per server, so two binaries setting it
//! at once would replace each other's. Scoped to this connector's `appName` (from its URI).

use mongodb::bson::{Document, doc};
use storefront_tests::{DEADLINE, eventually, http_get, stack, unique};

mod common;
use common::{AccountsRun, Copies, metric_value};

/// Sets the `failCommand` fail point: `mode` for the getMores and aggregates of `app`.
async fn fail_command(mode: mongodb::bson::Bson, data: Document) {
    stack()
        .mongo_client()
        .await
        .database("admin")
        .run_command(doc! { "configureFailPoint": "failCommand", "mode": mode, "data": data })
        .await
        .unwrap();
}

fn with_app_name(uri: &str, app: &str) -> String {
    let separator = if uri.contains('?') { '&' } else { '?' };
    format!("{uri}{separator}appName={app}")
}

#[tokio::test]
async fn refused_reads_show_failing_until_fixed_and_resumable_ones_lose_nothing() {
    let app = unique("connector_app");
    let mut config = common::config();
    config.mongo.uri = with_app_name(&config.mongo.uri, &app);
    config.stream.max_await_ms = 300;
    config.stream.read_stall_ms = 2_000;
    let stream = config.sources.accounts.to_string();
    let mut run = AccountsRun::start(&config).await;
    let addr = run.addr();

    // Resumable: the driver resumes after the last change it read.
    fail_command(
        doc! { "times": 2 }.into(),
        doc! {
            "failCommands": ["getMore"], "errorCode": 6,
            "errorLabels": ["ResumableChangeStreamError"], "appName": &app,
        },
    )
    .await;
    for _ in 0..3 {
        run.write("Resumed").await;
    }

    // Not resumable, for getMore and aggregate alike, until turned off.
    fail_command(
        "alwaysOn".into(),
        doc! { "failCommands": ["getMore", "aggregate"], "errorCode": 13, "appName": &app },
    )
    .await;
    let failing = eventually(
        DEADLINE,
        "/health to report MongoDB refusing the stream",
        async || {
            http_get(addr, "/health")
                .await
                .filter(|(status, body)| {
                    *status == 503 && body.contains("refuses to serve the change stream")
                })
                .map(|(_, body)| body)
        },
    )
    .await;
    assert!(failing.contains(&format!("stream {stream}")), "{failing}");
    assert!(
        failing.contains("Error code 13 (Unauthorized)"),
        "the server's error code and name: {failing}"
    );
    // The reason is for people: the driver's reply bytes and struct dump are left out.
    assert!(!failing.contains("server response"), "{failing}");
    for _ in 0..3 {
        run.write("Refused").await;
    }
    let (_, metrics) = http_get(addr, "/metrics").await.unwrap();
    let refused = metric_value(
        &metrics,
        &format!("cdc_source_errors_total{{collection=\"{stream}\",resumable=\"false\"}}"),
    );
    assert!(refused >= 1.0, "counted as not resumable: {refused}");
    fail_command("off".into(), doc! {}).await;

    storefront_tests::until_healthy(addr).await;
    run.finish(Copies::None).await;
}
