//! The connector as an operator meets it: its command line, its config errors, its health
//! endpoint, and a clean stop on SIGTERM, against the real local stack.
#![allow(
    clippy::disallowed_methods,
    reason = "test code: synchronous Kafka calls wait on the local broker only"
)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use cdc_connector::checkpoint::CheckpointStore;
use cdc_connector::config::{CheckpointSettings, ConnectorConfig};
use rdkafka::consumer::{BaseConsumer, Consumer};
use storefront_plumbing::kafka::TracingContext;
use storefront_plumbing::settings::HttpSettings;
use storefront_schemas::topology::{Namespace, StorefrontTopics};
use storefront_tests::{
    DEADLINE, Daemon, InProcess, LoggedRun, client_config, eventually, free_port, http_get, stack,
    unique, until_healthy,
};

const BINARY: &str = env!("CARGO_BIN_EXE_cdc-connector");

fn test_config() -> ConnectorConfig {
    ConnectorConfig {
        mongo: stack().mongo_settings(),
        kafka: stack().kafka_settings(),
        http: HttpSettings::on_port(0),
        topics: StorefrontTopics {
            customer_change: unique("customer"),
            fulfillment_request: unique("fulfill"),
            order_status_change: unique("status"),
        },
        // Checkpoints of its own: the tests here run at once and watch the same default
        // collections, and one writer per stream means two connectors would stop each other.
        checkpoints: CheckpointSettings {
            database: unique("cdc_state"),
            ..CheckpointSettings::default()
        },
        ..ConnectorConfig::default()
    }
}

/// Partitions of `topic` once the broker's metadata lists them (a topic just created can show
/// none, with `LeaderNotAvailable`, for a moment).
async fn partitions_of(topic: &str) -> usize {
    let consumer: BaseConsumer<TracingContext> = storefront_plumbing::kafka::client_config(
        &stack().kafka_settings(),
        "storefront-tests",
        &[],
        &[],
    )
    .create_with_context(TracingContext)
    .unwrap();
    eventually(DEADLINE, &format!("partitions of {topic}"), async || {
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .unwrap();
        let topic = &metadata.topics()[0];
        (topic.error().is_none() && !topic.partitions().is_empty())
            .then(|| topic.partitions().len())
    })
    .await
}

#[test]
fn help_lists_every_flag_and_command() {
    let output = Command::new(BINARY).arg("--help").output().unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for expected in [
        "--config",
        "--mongo-uri",
        "--kafka-bootstrap-servers",
        "--http-listen",
        "--log-filter",
        "--log-format",
        "check-config",
        "CDC_CONNECTOR_KAFKA__BOOTSTRAP_SERVERS",
    ] {
        assert!(help.contains(expected), "--help lacks {expected}:\n{help}");
    }
}

#[test]
fn an_invalid_config_is_refused_with_every_problem_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[new_topics]\npartitions = 0\n[topics]\norder_status_change = \"has space\"\n",
    )
    .unwrap();
    let output = Command::new(BINARY)
        .args(["--config", path.to_str().unwrap(), "check-config"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("new_topics.partitions"), "{stderr}");
    assert!(stderr.contains("topics.order_status_change"), "{stderr}");
}

#[test]
fn check_config_prints_the_layered_config_with_secrets_redacted() {
    let output = Command::new(BINARY)
        .args([
            "--mongo-uri",
            "mongodb://app:hunter2@db1:27017/?replicaSet=rs0",
            "check-config",
        ])
        .env("CDC_CONNECTOR_NEW_TOPICS__PARTITIONS", "7")
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let printed = String::from_utf8(output.stdout).unwrap();
    assert!(
        printed.contains("mongodb://app:****@db1:27017"),
        "{printed}"
    );
    assert!(!printed.contains("hunter2"), "{printed}");
    assert!(printed.contains("partitions = 7"), "{printed}");
}

#[tokio::test]
async fn in_process_it_creates_its_topics_reports_health_and_stops_on_signal() {
    let config = test_config();
    let topics = config.topics.clone();
    let connector = InProcess::start(|stop| cdc_connector::start(config, stop)).await;

    let body = until_healthy(connector.http_addr()).await;
    assert!(
        body.contains("\"mongo\"") && body.contains("\"kafka\""),
        "{body}"
    );
    for topic in topics.all() {
        assert_eq!(partitions_of(topic).await, 3, "{topic}");
    }
    let (status, metrics) = http_get(connector.http_addr(), "/metrics").await.unwrap();
    assert_eq!(status, 200);
    assert!(metrics.contains("storefront_build_info"), "{metrics}");

    connector.stop().await;
}

#[tokio::test]
async fn the_binary_stops_cleanly_on_sigterm() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("connector.toml");
    let config = test_config();
    let text = format!(
        "[mongo]\nuri = \"{}\"\n[kafka]\nbootstrap_servers = \"{}\"\n[topics]\ncustomer_change = \"{}\"\nfulfillment_request = \"{}\"\norder_status_change = \"{}\"\n[checkpoints]\ndatabase = \"{}\"\n",
        config.mongo.uri,
        config.kafka.bootstrap_servers,
        config.topics.customer_change,
        config.topics.fulfillment_request,
        config.topics.order_status_change,
        config.checkpoints.database,
    );
    std::fs::write(&config_path, text).unwrap();
    let mut daemon = Daemon::spawn(
        Path::new(BINARY),
        &[
            "--config",
            config_path.to_str().unwrap(),
            "--http-listen",
            &listen,
            "run",
        ],
    );
    until_healthy(listen.parse().unwrap()).await;
    daemon.signal("TERM");
    let status = daemon.exit_status().await;
    assert!(status.success(), "exit status after SIGTERM: {status}");
}

/// `kafka.properties` is applied after the product's own tuning: the producer runs with the
/// operator's `linger.ms` and `compression.type`, as the client itself reports it, and keeps the
/// guarantees' settings.
#[tokio::test]
async fn the_producer_runs_with_the_operators_kafka_properties() {
    let mut config = test_config();
    for (key, value) in [
        ("linger.ms", "37"),
        ("compression.type", "gzip"),
        client_config::DEBUG_PROPERTY,
    ] {
        config.kafka.properties.insert(key.into(), value.into());
    }
    let mut run = LoggedRun::start(
        Path::new(BINARY),
        &toml::to_string(&config).unwrap(),
        &["run"],
    )
    .await;
    // `/health` can answer before the process has registered its components (noted on issue
    // 15): wait for the producer itself.
    let idempotent = |client: &std::collections::BTreeMap<String, String>| {
        client.get("enable.idempotence").map(String::as_str) == Some("true")
    };
    eventually(
        DEADLINE,
        "the producer's reported configuration",
        async || {
            client_config::reported(&run.log())
                .iter()
                .any(idempotent)
                .then_some(())
        },
    )
    .await;
    let (status, log) = run.stop().await;
    assert!(status.success(), "exit status {status}:\n{log}");

    let clients = client_config::reported(&log);
    let producer = clients
        .iter()
        .find(|client| client.get("enable.idempotence").map(String::as_str) == Some("true"))
        .unwrap_or_else(|| panic!("no idempotent producer reported its configuration:\n{log}"));
    // librdkafka's canonical names for linger.ms and compression.type.
    assert_eq!(producer["queue.buffering.max.ms"], "37", "{producer:?}");
    assert_eq!(producer["compression.codec"], "gzip", "{producer:?}");
    assert_eq!(
        producer["queue.buffering.max.messages"], "200000",
        "the product's default stays where the operator set nothing: {producer:?}"
    );
    assert_eq!(producer["request.required.acks"], "-1", "{producer:?}");
}

/// A fatal error is logged once, with its whole chain, and not printed again when the process
/// exits: here the stream's checkpoint claimed by another process.
#[tokio::test]
async fn a_fatal_error_is_logged_once_with_its_causes() {
    let mut config = test_config();
    config.sources.accounts = Namespace::new(unique("accounts"), "customer.accounts");
    config.checkpoints.interval_ms = 50;
    let mut run = LoggedRun::start(
        Path::new(BINARY),
        &toml::to_string(&config).unwrap(),
        &["run"],
    )
    .await;

    let client = stack().mongo_client().await;
    let stream = config.sources.accounts.to_string();
    let store = CheckpointStore::new(&client, &config.checkpoints);
    let customers = client
        .database(&config.sources.accounts.database)
        .collection::<mongodb::bson::Document>(&config.sources.accounts.collection);
    customers
        .insert_one(mongodb::bson::doc! { "first": true })
        .await
        .unwrap();
    eventually(DEADLINE, "the connector's first checkpoint", async || {
        store.load(&stream).await.unwrap()?.position
    })
    .await;
    let intruder = CheckpointStore::new(&client, &config.checkpoints);
    intruder.claim(&stream).await.unwrap();
    customers
        .insert_one(mongodb::bson::doc! { "second": true })
        .await
        .unwrap();
    let (status, log) = run.exited().await;
    assert_eq!(status.code(), Some(1), "{log}");

    let errors: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|event| event["level"] == "ERROR")
        .collect();
    assert_eq!(errors.len(), 1, "one error line: {errors:#?}\n{log}");
    let error = errors[0]["error"].as_str().unwrap();
    // Every layer, each once: the stream, the checkpoint store, the new owner.
    assert!(error.contains(&stream), "{error}");
    assert!(error.contains(intruder.owner()), "{error}");
    assert_eq!(error.matches(intruder.owner()).count(), 1, "{error}");
    assert_eq!(error.matches(&stream).count(), 1, "{error}");
    assert_eq!(
        log.matches(intruder.owner()).count(),
        1,
        "the error is not printed again at exit:\n{log}"
    );
}
