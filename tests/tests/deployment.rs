//! The Docker Compose deployment, checked without a Docker engine (none runs on the development
//! machines): the compose file parses and wires the four services, and every config file it
//! mounts loads with the binaries' own config loader and agrees with the compose wiring.

use std::path::Path;

use cdc_connector::config::ConnectorConfig;
use projectors::config::ProjectorsConfig;
use serde_yaml::Value;
use storefront_plumbing::config::{Overrides, load};
use storefront_sim::SimConfig;
use storefront_tests::repo_root;

fn compose() -> Value {
    let path = repo_root().join("docker/compose.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{} does not parse: {e}", path.display()))
}

fn service<'a>(compose: &'a Value, name: &str) -> &'a Value {
    compose["services"]
        .get(name)
        .unwrap_or_else(|| panic!("compose has no service {name}"))
}

/// The host path of the config file a service mounts at `target`.
fn mounted_config(service: &Value, target: &str) -> std::path::PathBuf {
    let volumes = service["volumes"].as_sequence().expect("volumes");
    let source = volumes
        .iter()
        .find_map(|volume| match volume {
            Value::String(short) => {
                let (source, rest) = short.split_once(':')?;
                rest.starts_with(target).then(|| source.to_owned())
            }
            long => (long["target"].as_str() == Some(target))
                .then(|| long["source"].as_str().map(str::to_owned))
                .flatten(),
        })
        .unwrap_or_else(|| panic!("no volume mounted at {target}"));
    repo_root().join("docker").join(source)
}

/// A config file loaded with the binaries' own loader (no environment, no flags).
fn load_file<T: serde::de::DeserializeOwned + storefront_plumbing::config::Validate>(
    path: &Path,
) -> T {
    load(Some(path), "UNUSED_PREFIX_", Overrides::default())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// One of the configs in `docker/config/`.
fn docker_config<T: serde::de::DeserializeOwned + storefront_plumbing::config::Validate>(
    file: &str,
) -> T {
    load_file(&repo_root().join("docker/config").join(file))
}

fn command(service: &Value) -> Vec<String> {
    service["command"]
        .as_sequence()
        .expect("command as a list")
        .iter()
        .map(|part| part.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn compose_has_the_four_services_with_healthchecked_dependencies() {
    let compose = compose();
    for name in ["mongo", "kafka", "cdc-connector", "projectors"] {
        service(&compose, name);
    }
    assert!(
        service(&compose, "mongo")["image"]
            .as_str()
            .unwrap()
            .starts_with("mongo:7")
    );
    let mongo_command = format!("{:?}", service(&compose, "mongo")["command"]);
    assert!(
        mongo_command.contains("--replSet"),
        "mongo must run as a replica set: {mongo_command}"
    );
    let connector = service(&compose, "cdc-connector");
    for dependency in ["mongo", "kafka"] {
        assert_eq!(
            connector["depends_on"][dependency]["condition"].as_str(),
            Some("service_healthy"),
            "cdc-connector must wait for a healthy {dependency}"
        );
    }
    let dockerfile = connector["build"]["dockerfile"].as_str().unwrap();
    assert!(
        repo_root().join(dockerfile).is_file(),
        "{dockerfile} exists"
    );
}

#[test]
fn the_mounted_connector_config_loads_and_matches_the_compose_wiring() {
    let compose = compose();
    let connector = service(&compose, "cdc-connector");
    let argv = command(connector);
    let target = &argv[argv.iter().position(|a| a == "--config").unwrap() + 1];
    let path = mounted_config(connector, target);
    let config: ConnectorConfig = load_file(&path);
    assert!(
        config.mongo.uri.contains("mongo:27017"),
        "{}",
        config.mongo.uri
    );
    assert_eq!(config.kafka.bootstrap_servers, "kafka:9092");
    let port = config.http.listen.port().to_string();
    let ports = format!("{:?}", connector["ports"]);
    assert!(ports.contains(&port), "http port {port} published: {ports}");
    assert!(
        config.http.listen.ip().is_unspecified(),
        "listens on every interface in a container"
    );
}

#[test]
fn the_mounted_projectors_config_loads_and_agrees_with_the_connector() {
    let compose = compose();
    let projectors = service(&compose, "projectors");
    let argv = command(projectors);
    let target = &argv[argv.iter().position(|a| a == "--config").unwrap() + 1];
    let path = mounted_config(projectors, target);
    let config: ProjectorsConfig = load_file(&path);
    let connector: ConnectorConfig = docker_config("cdc-connector.toml");
    assert_eq!(
        config.topics, connector.topics,
        "both sides name the same topics"
    );
    assert_eq!(config.targets.orders, connector.sources.orders);
    assert_eq!(config.targets.fulfillment, connector.sources.fulfillment);
    let ports = format!("{:?}", projectors["ports"]);
    assert!(
        ports.contains(&config.http.listen.port().to_string()),
        "{ports}"
    );
}

/// The demo service (profile `demo`): its config loads and writes where the connector reads, it
/// waits for a healthy pipeline, and it reads both processes' metrics at their compose addresses.
#[test]
fn the_demo_service_writes_the_connectors_sources_and_reads_both_processes_metrics() {
    let compose = compose();
    let demo = service(&compose, "storefront-sim");
    let profiles: Vec<&str> = demo["profiles"]
        .as_sequence()
        .expect("profiles as a list")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(profiles, ["demo"], "the demo runs only when asked for");
    let argv = command(demo);
    assert_eq!(argv[0], "storefront-sim");
    let target = &argv[argv.iter().position(|a| a == "--config").unwrap() + 1];
    let path = mounted_config(demo, target);
    let config: SimConfig = load_file(&path);
    let connector: ConnectorConfig = docker_config("cdc-connector.toml");
    assert_eq!(config.mongo.uri, connector.mongo.uri);
    assert_eq!(config.sources, connector.sources);
    let after = |flag: &str| &argv[argv.iter().position(|a| a == flag).unwrap() + 1];
    assert_eq!(
        after("--connector-http"),
        &format!("cdc-connector:{}", connector.http.listen.port())
    );
    let projectors: ProjectorsConfig = docker_config("projectors.toml");
    assert_eq!(
        after("--projectors-http"),
        &format!("projectors:{}", projectors.http.listen.port())
    );
    for dependency in ["cdc-connector", "projectors"] {
        assert_eq!(
            demo["depends_on"][dependency]["condition"].as_str(),
            Some("service_healthy"),
            "the demo waits for a healthy {dependency}"
        );
    }
}
