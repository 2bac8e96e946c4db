//! The projectors' configuration: `projectors.toml`, `PROJECTORS_*` variables and flags.
//!
//! Every key is documented on its field (these comments are the reference for the TOML keys),
//! defaulted by a named function or `Default` impl, and checked by [`Validate`] so that every
//! problem of a config is reported at once.

use serde::{Deserialize, Serialize};
use storefront_plumbing::config::{Validate, key_path};
use storefront_plumbing::settings::{HttpSettings, KafkaSettings, LogSettings, MongoSettings};
use storefront_plumbing::topics::NewTopicSettings;
use storefront_schemas::topology::{
    Namespace, StorefrontNamespaces, StorefrontTopics, topic_name_problem,
};

/// Prefix of the environment variables that override config keys.
pub const ENV_PREFIX: &str = "PROJECTORS_";

/// The name the projectors give themselves in MongoDB and Kafka client ids.
pub const APP_NAME: &str = "storefront-projectors";

/// Default port of the projectors' `/health` and `/metrics` endpoint.
pub const DEFAULT_HTTP_PORT: u16 = 9465;

/// Everything the projectors can be told.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectorsConfig {
    /// Consumer groups are `<prefix>.<projector>`; instances sharing a group share the partitions.
    #[serde(default = "default_group_prefix")]
    pub consumer_group_prefix: String,
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
    /// How events are batched, written, retried, committed and dead-lettered.
    #[serde(default)]
    pub apply: ApplySettings,
    /// How topics are created when missing.
    #[serde(default)]
    pub new_topics: NewTopicSettings,
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
            consumer_group_prefix: default_group_prefix(),
            mongo: MongoSettings::default(),
            kafka: KafkaSettings::default(),
            http: default_http(),
            log: LogSettings::default(),
            topics: StorefrontTopics::default(),
            targets: ProjectionTargets::default(),
            apply: ApplySettings::default(),
            new_topics: NewTopicSettings::default(),
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

/// How events are batched, written, retried, committed and dead-lettered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApplySettings {
    /// Most events applied together: one batch costs one MongoDB round trip in the common case
    /// (two when some events need a follow-up write).
    pub batch_size: usize,
    /// Once a batch has its first event and nothing is being written, how long to wait for more
    /// before applying it, in milliseconds. Under load a batch needs no wait to grow: it takes
    /// every event that arrives while the previous one is written. 0 (the default) applies a
    /// lone event at once; a few milliseconds trade that latency for fewer, larger writes at
    /// moderate rates.
    pub batch_wait_ms: u64,
    /// How often the offsets of applied batches are committed to Kafka, in milliseconds. They are
    /// also committed when partitions are revoked and at shutdown. A crash replays at most this
    /// much (harmlessly: every write is idempotent).
    pub commit_interval_ms: u64,
    /// Longest one MongoDB write command may take before it counts as failed (and is retried), in
    /// milliseconds. Sent as the command's `maxTimeMS`, so MongoDB stops it too; after a timeout
    /// the following commands carry fewer statements (halved, down to one) and grow back once
    /// they succeed.
    pub write_timeout_ms: u64,
    /// First pause before retrying a transient failure (MongoDB or Kafka unreachable), in
    /// milliseconds. Pauses double up to `retry_max_ms`, with jitter.
    pub retry_initial_ms: u64,
    /// Longest pause between retries, in milliseconds.
    pub retry_max_ms: u64,
    /// How often consumer lag per partition is measured (librdkafka statistics), in
    /// milliseconds.
    pub lag_interval_ms: u64,
    /// How long, in milliseconds, an assigned partition may have records to fetch while none
    /// arrive (its next fetch offset unmoved, the fetcher not held back by a full queue) before
    /// `/health` reports the projector failing, as when the broker answers but returns nothing
    /// (fetches throttled to nothing by a quota, a leader that does not serve). Reported within
    /// two statistics intervals past it (statistics come every `lag_interval_ms`, and at least
    /// every eighth of this): with the default, within about 10 s. Ready again once records arrive.
    pub fetch_stall_ms: u64,
    /// Topic for records that cannot be applied (not JSON, unknown type, schema or contract
    /// violation, a write MongoDB refuses): the original key and value, the original headers,
    /// and `dlq_*` headers naming the source topic, partition, offset and the reason.
    pub dead_letter_topic: String,
}

impl Default for ApplySettings {
    fn default() -> Self {
        Self {
            batch_size: 1_000,
            batch_wait_ms: 0,
            commit_interval_ms: 1_000,
            write_timeout_ms: 30_000,
            retry_initial_ms: 100,
            retry_max_ms: 10_000,
            lag_interval_ms: 5_000,
            fetch_stall_ms: 8_000,
            dead_letter_topic: "storefront-cdc.projectors.dead-letter".to_owned(),
        }
    }
}

impl Validate for ApplySettings {
    fn validate(&self, path: &str, problems: &mut Vec<String>) {
        let at_least = |problems: &mut Vec<String>, key: &str, value: u64, min: u64| {
            if value < min {
                problems.push(format!("{} must be at least {min}", key_path(path, key)));
            }
        };
        at_least(problems, "batch_size", self.batch_size as u64, 1);
        if self.batch_size > 100_000 {
            // MongoDB's maxWriteBatchSize: one write command holds at most this many statements.
            problems.push(format!(
                "{} must be at most 100000",
                key_path(path, "batch_size")
            ));
        }
        at_least(problems, "commit_interval_ms", self.commit_interval_ms, 10);
        at_least(problems, "write_timeout_ms", self.write_timeout_ms, 100);
        at_least(problems, "retry_initial_ms", self.retry_initial_ms, 1);
        at_least(
            problems,
            "retry_max_ms",
            self.retry_max_ms,
            self.retry_initial_ms,
        );
        // librdkafka refuses statistics intervals below 10 ms (0 would turn them off).
        at_least(problems, "lag_interval_ms", self.lag_interval_ms, 10);
        // Shorter than a fetch round trip under load would report healthy partitions.
        at_least(problems, "fetch_stall_ms", self.fetch_stall_ms, 1_000);
        if let Some(problem) = topic_name_problem(&self.dead_letter_topic) {
            problems.push(format!(
                "{}: {problem}",
                key_path(path, "dead_letter_topic")
            ));
        }
    }
}

impl Validate for ProjectorsConfig {
    fn validate(&self, _path: &str, problems: &mut Vec<String>) {
        self.mongo.validate("mongo", problems);
        self.kafka.validate("kafka", problems);
        self.http.validate("http", problems);
        self.log.validate("log", problems);
        self.apply.validate("apply", problems);
        problems.extend(self.topics.problems("topics"));
        problems.extend(self.targets.orders.problems("targets.orders"));
        problems.extend(self.targets.fulfillment.problems("targets.fulfillment"));
        if self.targets.orders == self.targets.fulfillment {
            problems.push("targets.orders and targets.fulfillment are the same collection".into());
        }
        if self
            .topics
            .all()
            .contains(&self.apply.dead_letter_topic.as_str())
        {
            problems.push(format!(
                "apply.dead_letter_topic `{}` is one of the event topics",
                self.apply.dead_letter_topic
            ));
        }
        let prefix = &self.consumer_group_prefix;
        if prefix.is_empty() || prefix.chars().any(char::is_whitespace) {
            problems.push(format!(
                "{} must be non-empty and without spaces",
                key_path("", "consumer_group_prefix")
            ));
        }
        self.new_topics.validate("new_topics", problems);
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

    /// The topics `projector` consumes.
    pub fn source_topics(&self, projector: Projector) -> Vec<String> {
        match projector {
            Projector::Orders => vec![
                self.topics.customer_change.clone(),
                self.topics.order_status_change.clone(),
            ],
            Projector::Fulfillment => vec![self.topics.fulfillment_request.clone()],
        }
    }

    /// The collection `projector` writes.
    pub fn target(&self, projector: Projector) -> &Namespace {
        match projector {
            Projector::Orders => &self.targets.orders,
            Projector::Fulfillment => &self.targets.fulfillment,
        }
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

impl std::fmt::Display for Projector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
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
        assert_eq!(
            config.source_topics(Projector::Orders),
            ["accounts.customer.change", "fulfillment.order.change"]
        );
        assert_eq!(
            config.apply.dead_letter_topic,
            "storefront-cdc.projectors.dead-letter"
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

    #[test]
    fn every_bad_apply_value_is_reported_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.toml");
        std::fs::write(
            &path,
            "[apply]\nbatch_size = 0\ncommit_interval_ms = 1\nretry_initial_ms = 500\n\
             retry_max_ms = 100\nfetch_stall_ms = 999\n\
             dead_letter_topic = \"accounts.customer.change\"\n[new_topics]\npartitions = 0\n",
        )
        .unwrap();
        let error = load::<ProjectorsConfig>(Some(&path), "PROJECTORS_TEST_", Overrides::default())
            .unwrap_err()
            .to_string();
        for expected in [
            "apply.batch_size must be at least 1",
            "apply.commit_interval_ms must be at least 10",
            "apply.retry_max_ms must be at least 500",
            "apply.fetch_stall_ms must be at least 1000",
            "is one of the event topics",
            "new_topics.partitions must be at least 1",
        ] {
            assert!(error.contains(expected), "{expected}: {error}");
        }
    }

    #[test]
    fn apply_keys_keep_their_defaults_when_partly_given() {
        let apply: ApplySettings = toml::from_str("batch_size = 10").unwrap();
        assert_eq!(apply.batch_size, 10);
        assert_eq!(apply.commit_interval_ms, 1_000);
        let error = toml::from_str::<ApplySettings>("batch_sise = 10").unwrap_err();
        assert!(error.to_string().contains("batch_sise"), "{error}");
    }
}
