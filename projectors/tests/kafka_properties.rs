//! `kafka.properties` is applied after the product's own tuning, for every client of the
//! projectors: the consumer and the dead-letter producer run with the operator's values, as the
//! clients themselves report them (librdkafka `debug=conf`), and keep the guarantees' settings.

mod common;

use std::path::Path;

use common::test_config;
use storefront_tests::{DEADLINE, LoggedRun, client_config, eventually};

const BINARY: &str = env!("CARGO_BIN_EXE_projectors");

#[tokio::test]
async fn the_consumer_and_the_dead_letter_producer_run_with_the_operators_properties() {
    let mut config = test_config();
    let group = config.consumer_group(projectors::config::Projector::Orders);
    for (key, value) in [
        ("linger.ms", "37"),
        ("message.timeout.ms", "45000"),
        ("fetch.wait.max.ms", "77"),
        ("statistics.interval.ms", "3000"),
        client_config::DEBUG_PROPERTY,
    ] {
        config.kafka.properties.insert(key.into(), value.into());
    }
    let mut run = LoggedRun::start(
        Path::new(BINARY),
        &toml::to_string(&config).unwrap(),
        &["run", "orders"],
    )
    .await;
    // `/health` can answer before the process has registered its components: wait for both
    // clients themselves.
    eventually(
        DEADLINE,
        "the clients' reported configurations",
        async || {
            let clients = client_config::reported(&run.log());
            (clients.iter().any(|c| c.get("group.id") == Some(&group))
                && clients
                    .iter()
                    .any(|c| c.get("enable.idempotence").map(String::as_str) == Some("true")))
            .then_some(())
        },
    )
    .await;
    let (status, log) = run.stop().await;
    assert!(status.success(), "exit status {status}:\n{log}");

    let clients = client_config::reported(&log);
    let consumer = clients
        .iter()
        .find(|client| client.get("group.id") == Some(&group))
        .unwrap_or_else(|| panic!("the consumer of {group} reported no configuration:\n{log}"));
    assert_eq!(consumer["fetch.wait.max.ms"], "77", "{consumer:?}");
    assert_eq!(consumer["statistics.interval.ms"], "3000", "{consumer:?}");
    assert_eq!(consumer["enable.auto.commit"], "false", "{consumer:?}");
    assert_eq!(
        consumer["enable.auto.offset.store"], "false",
        "{consumer:?}"
    );

    let producer = clients
        .iter()
        .find(|client| client.get("enable.idempotence").map(String::as_str) == Some("true"))
        .unwrap_or_else(|| panic!("no dead-letter producer reported its configuration:\n{log}"));
    // librdkafka's canonical names for linger.ms and message.timeout.ms.
    assert_eq!(producer["queue.buffering.max.ms"], "37", "{producer:?}");
    assert_eq!(producer["message.timeout.ms"], "45000", "{producer:?}");
    assert_eq!(producer["request.required.acks"], "-1", "{producer:?}");
}
