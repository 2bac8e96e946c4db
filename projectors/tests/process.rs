//! The projectors as an operator meets them: command line, config errors, health endpoint and a
//! clean stop on SIGTERM, against the real local stack.

mod common;

use std::path::Path;
use std::process::Command;

use common::{test_config, until_metrics_list};
use projectors::config::Projector;
use storefront_plumbing::settings::HttpSettings;
use storefront_tests::{Daemon, InProcess, free_port, stack, until_healthy};

const BINARY: &str = env!("CARGO_BIN_EXE_projectors");

#[test]
fn help_lists_every_flag_and_command() {
    let output = Command::new(BINARY).arg("--help").output().unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for expected in [
        "--config",
        "--mongo-uri",
        "--http-listen",
        "run",
        "rebuild",
        "setup-topics",
        "check-config",
        "PROJECTORS_MONGO__URI",
    ] {
        assert!(help.contains(expected), "--help lacks {expected}:\n{help}");
    }
    let run_help = Command::new(BINARY)
        .args(["run", "--help"])
        .output()
        .unwrap();
    let run_help = String::from_utf8(run_help.stdout).unwrap();
    assert!(
        run_help.contains("orders") && run_help.contains("fulfillment"),
        "{run_help}"
    );
}

#[test]
fn an_unknown_key_is_refused_by_name() {
    let output = Command::new(BINARY)
        .arg("check-config")
        .env("PROJECTORS_CONSUMER_GROUP_PREFX", "typo")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("consumer_group_prefx"), "{stderr}");
}

#[test]
fn check_config_prints_every_apply_key_with_its_default() {
    let output = Command::new(BINARY)
        .arg("check-config")
        .env("PROJECTORS_APPLY__BATCH_SIZE", "250")
        .output()
        .unwrap();
    assert!(output.status.success());
    let printed = String::from_utf8(output.stdout).unwrap();
    for expected in [
        "[apply]",
        "batch_size = 250",
        "batch_wait_ms = 0",
        "commit_interval_ms = 1000",
        "dead_letter_topic = \"storefront-cdc.projectors.dead-letter\"",
        "[new_topics]",
    ] {
        assert!(printed.contains(expected), "lacks {expected}:\n{printed}");
    }
}

#[test]
fn rebuild_names_its_projector() {
    let output = Command::new(BINARY)
        .args(["rebuild", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8(output.stdout).unwrap();
    assert!(
        help.contains("orders") && help.contains("fulfillment"),
        "{help}"
    );
    let output = Command::new(BINARY).arg("rebuild").output().unwrap();
    assert!(!output.status.success(), "a projector must be named");
}

#[tokio::test]
async fn in_process_they_report_health_and_metrics_and_stop_on_signal() {
    let config = test_config();
    // Launched, not started: the health body is what this test reads.
    let running =
        InProcess::launch(|stop| projectors::start(config, Projector::ALL.to_vec(), stop)).await;
    let health = until_healthy(running.http_addr()).await;
    for component in [
        "mongo",
        "kafka",
        "projector orders",
        "projector fulfillment",
    ] {
        assert!(health.contains(component), "{health}");
    }
    until_metrics_list(running.http_addr(), &["projector_consumer_lag"]).await;
    running.stop().await;
}

#[tokio::test]
async fn the_binary_stops_cleanly_on_sigterm() {
    let listen = format!("127.0.0.1:{}", free_port());
    let mut config = test_config();
    config.http = HttpSettings::on_port(0);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("projectors.toml");
    std::fs::write(&path, toml::to_string(&config).unwrap()).unwrap();
    let mut daemon = Daemon::spawn(
        Path::new(BINARY),
        &[
            "--config",
            path.to_str().unwrap(),
            "--mongo-uri",
            &stack().mongo_uri,
            "--kafka-bootstrap-servers",
            &stack().kafka_bootstrap,
            "--http-listen",
            &listen,
            "run",
            "orders",
        ],
    );
    until_healthy(listen.parse().unwrap()).await;
    daemon.signal("TERM");
    let status = daemon.exit_status().await;
    assert!(status.success(), "exit status after SIGTERM: {status}");
}

#[tokio::test]
async fn setup_topics_reports_a_topic_that_cannot_keep_what_a_rebuild_needs() {
    let config = test_config();
    // Created by someone else with the broker's defaults: deleted after 7 days, not compacted.
    storefront_plumbing::kafka::ensure_topics(
        &config.kafka,
        "projectors-tests",
        &[storefront_plumbing::kafka::TopicSpec {
            name: config.topics.customer_change.clone(),
            partitions: 1,
            replication_factor: 1,
            configs: Vec::new(),
        }],
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("projectors.toml");
    std::fs::write(&path, toml::to_string(&config).unwrap()).unwrap();
    let output = Command::new(BINARY)
        .args(["--config", path.to_str().unwrap(), "setup-topics"])
        .output()
        .unwrap();
    let printed = String::from_utf8(output.stdout).unwrap();
    assert_eq!(output.status.code(), Some(1), "{printed}");
    assert!(
        printed.contains(&config.topics.customer_change) && printed.contains("compact"),
        "{printed}"
    );
    assert_eq!(printed.lines().count(), 1, "only that topic: {printed}");
    // The others were created with the settings they need: a second run reports the same one.
    let again = Command::new(BINARY)
        .args(["--config", path.to_str().unwrap(), "setup-topics"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8(again.stdout).unwrap(), printed);
}
