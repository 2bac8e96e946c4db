//! The projectors' configuration: `projectors.toml`, `PROJECTORS_*` variables and flags.

use serde::{Deserialize, Serialize};
use storefront_plumbing::config::{Validate, key_path};
use storefront_plumbing::settings::{HttpSettings, KafkaSettings, LogSettings, MongoSettings};
use storefront_schemas::topology::{Namespace, StorefrontNamespaces, StorefrontTopics};

/// Prefix of the environment variables that override config keys.
pub const ENV_PREFIX: &str = "PROJECTORS_";

/// Default port of the projectors' `/health` and `/metrics` endpoint.
pub const DEFAULT_HTTP_PORT: u16 = 9465;

/// Everything the projectors can be told.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectorsConfig {
    /// The MongoDB deployment holding the projected collections.
    #[serde(default)]
    pub mongo: MongoSettings,
    /// The Kafka cluster the events come from.
    #[serde(default)]
    pub kafka: KafkaSettings,
    /// The `/health` and `/metrics` endpoint.
    #[serde(default = "default_http")]
    pub http: HttpSettings,
    /// Log output.
    #[serde(default)]
    pub log: LogSettings,
    /// The event topics consumed.
    #[serde(default)]
    pub topics: StorefrontTopics,
    /// The collections the projectors write.
    #[serde(default)]
    pub targets: ProjectionTargets,
    /// Consumer groups are `<prefix>.<projector>`; instances sharing a group share the partitions.
    #[serde(default = "default_group_prefix")]
    pub consumer_group_prefix: String,
}

fn default_http() -> HttpSettings {
    HttpSettings::on_port(DEFAULT_HTTP_PORT)
}

fn default_group_prefix() -> String {
    "storefront-projectors".to_owned()
}

impl Default for ProjectorsConfig {
    fn default() -> Self {
        Self {
            mongo: MongoSettings::default(),
            kafka: KafkaSettings::default(),
            http: default_http(),
            log: LogSettings::default(),
            topics: StorefrontTopics::default(),
            targets: ProjectionTargets::default(),
            consumer_group_prefix: default_group_prefix(),
        }
    }
}

/// The collections written by projections.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProjectionTargets {
    /// Written by the orders projector: the customer copy and order status history.
    pub orders: Namespace,
    /// Written by the fulfillment projector: one request per approved order.
    pub fulfillment: Namespace,
}

impl Default for ProjectionTargets {
    fn default() -> Self {
        let namespaces = StorefrontNamespaces::default();
        Self {
            orders: namespaces.orders,
            fulfillment: namespaces.fulfillment,
        }
    }
}

impl Validate for ProjectorsConfig {
    fn validate(&self, _path: &str, problems: &mut Vec<String>) {
        self.mongo.validate("mongo", problems);
        self.kafka.validate("kafka", problems);
        self.http.validate("http", problems);
        self.log.validate("log", problems);
        problems.extend(self.topics.problems("topics"));
        problems.extend(self.targets.orders.problems("targets.orders"));
        problems.extend(self.targets.fulfillment.problems("targets.fulfillment"));
        if self.targets.orders == self.targets.fulfillment {
            problems.push("targets.orders and targets.fulfillment are the same collection".into());
        }
        let prefix = &self.consumer_group_prefix;
        if prefix.is_empty() || prefix.chars().any(char::is_whitespace) {
            problems.push(format!(
                "{} must be non-empty and without spaces",
                key_path("", "consumer_group_prefix")
            ));
        }
    }
}

impl ProjectorsConfig {
    /// A copy safe to print or log: passwords replaced.
    pub fn redacted(&self) -> Self {
        Self {
            mongo: self.mongo.redacted(),
            kafka: self.kafka.redacted(),
            ..self.clone()
        }
    }

    /// The consumer group of `projector`.
    pub fn consumer_group(&self, projector: Projector) -> String {
        format!("{}.{}", self.consumer_group_prefix, projector.name())
    }
}

/// The read models this binary maintains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum)]
pub enum Projector {
    /// Customer copy and order status history in `customer.orders`.
    Orders,
    /// One fulfillment request per approved order in `fulfillment.requests`.
    Fulfillment,
}

impl Projector {
    /// Every projector.
    pub const ALL: [Projector; 2] = [Projector::Orders, Projector::Fulfillment];

    /// The projector's name in config, metrics and consumer groups.
    pub fn name(self) -> &'static str {
        match self {
            Projector::Orders => "orders",
            Projector::Fulfillment => "fulfillment",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use storefront_plumbing::config::{Overrides, load};

    #[test]
    fn defaults_are_valid_and_name_the_groups() {
        let config = ProjectorsConfig::default();
        let mut problems = Vec::new();
        config.validate("", &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            config.consumer_group(Projector::Orders),
            "storefront-projectors.orders"
        );
        assert_eq!(
            config.targets.fulfillment.collection,
            "fulfillment.requests"
        );
    }

    #[test]
    fn the_same_target_twice_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.toml");
        std::fs::write(
            &path,
            "[targets.fulfillment]\ndatabase = \"orders\"\ncollection = \"customer.orders\"\n",
        )
        .unwrap();
        let error = load::<ProjectorsConfig>(Some(&path), "PROJECTORS_TEST_", Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(error.contains("same collection"), "{error}");
    }
}
