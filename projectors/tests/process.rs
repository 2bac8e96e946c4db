//! The projectors as an operator meets them: command line, config errors, health endpoint and a
//! clean stop on SIGTERM, against the real local stack.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use projectors::config::{Projector, ProjectorsConfig};
use storefront_plumbing::settings::HttpSettings;
use storefront_tests::{Daemon, free_port, stack, until_healthy};

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

#[tokio::test]
async fn in_process_they_report_health_and_stop_on_signal() {
    let config = ProjectorsConfig {
        mongo: stack().mongo_settings(),
        kafka: stack().kafka_settings(),
        http: HttpSettings::on_port(0),
        ..ProjectorsConfig::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = projectors::start(config, Projector::ALL.to_vec(), async move {
        let _ = stopped.await;
    })
    .await
    .unwrap();
    until_healthy(running.http_addr).await;
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(30), running.wait())
        .await
        .expect("stops within the deadline")
        .unwrap();
}

#[tokio::test]
async fn the_binary_stops_cleanly_on_sigterm() {
    let listen = format!("127.0.0.1:{}", free_port());
    let mut daemon = Daemon::spawn(
        Path::new(BINARY),
        &[
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
