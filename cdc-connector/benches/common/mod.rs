//! What the connector benches share: the release connector on fresh names, run as a process.

use std::path::PathBuf;

use cdc_connector::config::{CheckpointSettings, ConnectorConfig, StreamSettings};
use storefront_plumbing::settings::HttpSettings;
use storefront_schemas::topology::{Namespace, StorefrontNamespaces, StorefrontTopics};
use storefront_tests::{Daemon, free_port, stack, unique};

/// A connector configured on fresh names, its topics created and its config file written.
pub struct BenchConnector {
    /// What the process runs with.
    pub config: ConnectorConfig,
    dir: PathBuf,
}

impl BenchConnector {
    /// A connector watching `accounts`, every other name fresh (`<prefix>_...`), with `stream`'s
    /// settings and its own dead-letter topic. Its topics exist before it starts, as in a
    /// deployment: creating them is not publishing.
    pub async fn prepare(prefix: &str, accounts: &Namespace, stream: StreamSettings) -> Self {
        let name = |what: &str| unique(&format!("{prefix}_{what}"));
        let config = ConnectorConfig {
            mongo: stack().mongo_settings(),
            kafka: stack().kafka_settings(),
            http: HttpSettings::on_port(free_port()),
            sources: StorefrontNamespaces {
                accounts: accounts.clone(),
                orders: Namespace::new(name("orders"), "customer.orders"),
                fulfillment: Namespace::new(name("fulfillment"), "fulfillment.requests"),
            },
            topics: StorefrontTopics {
                customer_change: name("customer"),
                fulfillment_request: name("fulfill"),
                order_status_change: name("status"),
            },
            stream: StreamSettings {
                dead_letter_topic: name("dead"),
                ..stream
            },
            checkpoints: CheckpointSettings {
                database: name("state"),
                ..CheckpointSettings::default()
            },
            ..ConnectorConfig::default()
        };
        storefront_plumbing::kafka::ensure_topics(
            &config.kafka,
            "bench",
            &cdc_connector::topic_specs(&config),
        )
        .await
        .unwrap();
        let mut file_config = config.clone();
        file_config.log.filter = "warn".into();
        let dir = std::env::temp_dir().join(name("connector"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("connector.toml"),
            toml::to_string(&file_config).unwrap(),
        )
        .unwrap();
        Self { config, dir }
    }

    /// Starts the process: this build's binary, or `BENCH_CONNECTOR_BIN` (another build, to
    /// compare two versions of the code on the same stack in one session).
    pub fn spawn(&self) -> Daemon {
        let binary = std::env::var_os("BENCH_CONNECTOR_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_cdc-connector")));
        let path = self.dir.join("connector.toml");
        Daemon::spawn(&binary, &["--config", path.to_str().unwrap(), "run"])
    }
}

impl Drop for BenchConnector {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
