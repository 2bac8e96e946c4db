//! The connector's configuration: `cdc-connector.toml`, `CDC_CONNECTOR_*` variables and flags.

use serde::{Deserialize, Serialize};
use storefront_plumbing::config::{Validate, key_path};
use storefront_plumbing::settings::{HttpSettings, KafkaSettings, LogSettings, MongoSettings};
use storefront_schemas::topology::{StorefrontNamespaces, StorefrontTopics};

/// Prefix of the environment variables that override config keys.
pub const ENV_PREFIX: &str = "CDC_CONNECTOR_";

/// Default port of the connector's `/health` and `/metrics` endpoint.
pub const DEFAULT_HTTP_PORT: u16 = 9464;

/// Everything the connector can be told.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectorConfig {
    /// The MongoDB replica set whose collections are watched.
    #[serde(default)]
    pub mongo: MongoSettings,
    /// The Kafka cluster the events go to.
    #[serde(default)]
    pub kafka: KafkaSettings,
    /// The `/health` and `/metrics` endpoint.
    #[serde(default = "default_http")]
    pub http: HttpSettings,
    /// Log output.
    #[serde(default)]
    pub log: LogSettings,
    /// The watched collections.
    #[serde(default)]
    pub sources: StorefrontNamespaces,
    /// The event topics.
    #[serde(default)]
    pub topics: StorefrontTopics,
    /// How topics are created when missing.
    #[serde(default)]
    pub new_topics: NewTopicSettings,
}

fn default_http() -> HttpSettings {
    HttpSettings::on_port(DEFAULT_HTTP_PORT)
}

impl Default for ConnectorConfig {
    fn default() -> Self {
        Self {
            mongo: MongoSettings::default(),
            kafka: KafkaSettings::default(),
            http: default_http(),
            log: LogSettings::default(),
            sources: StorefrontNamespaces::default(),
            topics: StorefrontTopics::default(),
            new_topics: NewTopicSettings::default(),
        }
    }
}

/// Settings for the topics the connector creates when they do not exist. Existing topics are
/// never altered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NewTopicSettings {
    /// Partitions of each new topic. Events are keyed per aggregate, so more partitions spread
    /// load without breaking per-entity order.
    pub partitions: i32,
    /// Replicas of each new topic (3 in production; 1 on a single broker).
    pub replication_factor: i32,
}

impl Default for NewTopicSettings {
    fn default() -> Self {
        Self {
            partitions: 3,
            replication_factor: 1,
        }
    }
}

impl Validate for ConnectorConfig {
    fn validate(&self, _path: &str, problems: &mut Vec<String>) {
        self.mongo.validate("mongo", problems);
        self.kafka.validate("kafka", problems);
        self.http.validate("http", problems);
        self.log.validate("log", problems);
        problems.extend(self.sources.problems("sources"));
        problems.extend(self.topics.problems("topics"));
        if self.new_topics.partitions < 1 {
            problems.push(format!(
                "{} must be at least 1",
                key_path("new_topics", "partitions")
            ));
        }
        if self.new_topics.replication_factor < 1 {
            problems.push(format!(
                "{} must be at least 1",
                key_path("new_topics", "replication_factor")
            ));
        }
    }
}

impl ConnectorConfig {
    /// A copy safe to print or log: passwords replaced.
    pub fn redacted(&self) -> Self {
        Self {
            mongo: self.mongo.redacted(),
            kafka: self.kafka.redacted(),
            ..self.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use storefront_plumbing::config::{Overrides, load};

    #[test]
    fn defaults_are_valid() {
        let mut problems = Vec::new();
        ConnectorConfig::default().validate("", &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
    }

    #[test]
    fn a_file_sets_sections_and_keeps_other_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "[sources.accounts]\ndatabase = \"acc\"\ncollection = \"people\"\n[new_topics]\npartitions = 6\n",
        )
        .unwrap();
        let config: ConnectorConfig =
            load(Some(&path), "CDC_CONNECTOR_TEST_", Overrides::default()).unwrap();
        assert_eq!(config.sources.accounts.to_string(), "acc.people");
        assert_eq!(config.sources.orders.collection, "customer.orders");
        assert_eq!(config.new_topics.partitions, 6);
        assert_eq!(config.new_topics.replication_factor, 1);
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "[new_topics]\npartitions = 0\n[topics]\ncustomer_change = \"bad topic\"\n[mongo]\nuri = \"localhost\"\n",
        )
        .unwrap();
        let error =
            load::<ConnectorConfig>(Some(&path), "CDC_CONNECTOR_TEST_", Overrides::default())
                .unwrap_err()
                .to_string();
        for expected in [
            "new_topics.partitions",
            "topics.customer_change",
            "mongo.uri",
        ] {
            assert!(error.contains(expected), "{expected} missing in: {error}");
        }
    }
}
