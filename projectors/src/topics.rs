//! The topics the projectors read and write, and the retention a rebuild needs.
//!
//! A rebuild replays the event topics from their beginning, so it can only restore what they
//! still hold:
//!
//! | topic | needs | why |
//! |---|---|---|
//! | `accounts.customer.change` | `cleanup.policy=compact`, `delete.retention.ms=604800000` | the projection depends only on each customer's newest change and newest tombstone; compaction keeps exactly the newest record of each key, forever. Tombstones stay 7 days, so a projector down for less still sees every delete. |
//! | `orders.order.fulfill` | `cleanup.policy=compact` | the projection keeps the newest request per order; compaction keeps it (one record per order). |
//! | `fulfillment.order.change` | `cleanup.policy=delete`, `retention.ms=-1` | every status is its own history entry: compaction would keep only an order's last status, and time-based deletion would drop old history. |
//! | `storefront-cdc.projectors.dead-letter` | `cleanup.policy=delete`, `retention.ms=-1` | a dead letter stays until an operator deals with it. |
//!
//! [`ensure`] creates the missing topics with those settings (partitions and replicas from
//! `new_topics`) and reports existing topics whose settings differ; it never alters an existing
//! topic. The connector creates the event topics too: both must use the same settings.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use storefront_plumbing::kafka::{self, KafkaSetupError, TopicSpec, TracingContext};

use crate::config::ProjectorsConfig;

/// Tombstones of the customer topic are kept this long (7 days) after compaction.
pub const TOMBSTONE_RETENTION_MS: &str = "604800000";

/// What a topic's settings must allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retention {
    /// The newest record of every key, forever (`cleanup.policy` includes `compact` and not
    /// `delete`).
    Compacted,
    /// Every record, forever (`cleanup.policy=delete`, `retention.ms=-1`, `retention.bytes=-1`).
    Everything,
}

/// A topic with the settings it is created with and must keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicRequirement {
    /// Topic name.
    pub name: String,
    /// What it must retain.
    pub retention: Retention,
    /// Topic configs set when it is created.
    pub configs: Vec<(String, String)>,
}

/// Every topic the projectors need, with its settings.
pub fn requirements(config: &ProjectorsConfig) -> Vec<TopicRequirement> {
    let compacted = |name: &str, extra: &[(&str, &str)]| TopicRequirement {
        name: name.to_owned(),
        retention: Retention::Compacted,
        configs: std::iter::once(("cleanup.policy", "compact"))
            .chain(extra.iter().copied())
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
    };
    let everything = |name: &str| TopicRequirement {
        name: name.to_owned(),
        retention: Retention::Everything,
        configs: [("cleanup.policy", "delete"), ("retention.ms", "-1")]
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    };
    vec![
        compacted(
            &config.topics.customer_change,
            &[("delete.retention.ms", TOMBSTONE_RETENTION_MS)],
        ),
        compacted(&config.topics.fulfillment_request, &[]),
        everything(&config.topics.order_status_change),
        everything(&config.apply.dead_letter_topic),
    ]
}

/// The [`TopicSpec`]s to create.
pub fn specs(config: &ProjectorsConfig) -> Vec<TopicSpec> {
    requirements(config)
        .into_iter()
        .map(|requirement| TopicSpec {
            name: requirement.name,
            partitions: config.new_topics.partitions,
            replication_factor: config.new_topics.replication_factor,
            configs: requirement.configs,
        })
        .collect()
}

/// Why an existing topic's settings do not allow a faithful rebuild, if they do not.
pub fn check(retention: Retention, actual: &BTreeMap<String, String>) -> Option<String> {
    let get = |key: &str| actual.get(key).map(String::as_str);
    let policy = get("cleanup.policy").unwrap_or("delete");
    let policies: Vec<&str> = policy.split(',').map(str::trim).collect();
    match retention {
        Retention::Compacted => {
            if !policies.contains(&"compact") {
                Some(format!(
                    "cleanup.policy is `{policy}`; it must be `compact` (the newest record of \
                     every key, kept forever)"
                ))
            } else if policies.contains(&"delete") {
                Some(format!(
                    "cleanup.policy is `{policy}`; `delete` drops the newest records of keys \
                     that do not change, so it must be `compact` alone"
                ))
            } else {
                None
            }
        }
        Retention::Everything => {
            if policies.contains(&"compact") {
                Some(format!(
                    "cleanup.policy is `{policy}`; compaction keeps only the last record of \
                     each key, but every record is needed: it must be `delete` with \
                     retention.ms=-1"
                ))
            } else if get("retention.ms").unwrap_or("604800000") != "-1" {
                Some(format!(
                    "retention.ms is {}; records older than that are deleted, but every record \
                     is needed: it must be -1",
                    get("retention.ms").unwrap_or("604800000 (the broker default)")
                ))
            } else if get("retention.bytes").is_some_and(|bytes| bytes != "-1") {
                Some(format!(
                    "retention.bytes is {}; it must be -1",
                    get("retention.bytes").unwrap_or_default()
                ))
            } else {
                None
            }
        }
    }
}

/// A topic whose settings differ from what the projectors need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// Topic name.
    pub topic: String,
    /// What is wrong and what it must be.
    pub problem: String,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "topic {}: {}", self.topic, self.problem)
    }
}

/// Creates the missing topics and returns the existing ones whose settings differ.
pub async fn ensure(
    config: &ProjectorsConfig,
    client_id: &str,
) -> Result<Vec<Mismatch>, KafkaSetupError> {
    let admin: Arc<AdminClient<TracingContext>> = Arc::new(
        kafka::client_config(&config.kafka, client_id)
            .create_with_context(TracingContext)
            .map_err(KafkaSetupError::Config)?,
    );
    let existing = existing_topics(admin.clone()).await?;
    let (present, missing): (Vec<TopicSpec>, Vec<TopicSpec>) = specs(config)
        .into_iter()
        .partition(|spec| existing.contains(&spec.name));
    if !missing.is_empty() {
        // An empty CreateTopics request is refused as an invalid argument.
        kafka::ensure_topics(&config.kafka, client_id, &missing).await?;
    }
    // Only topics that existed are checked: a topic just created has the settings above, and a
    // broker may still describe it with the defaults for a moment.
    let requirements: Vec<TopicRequirement> = requirements(config)
        .into_iter()
        .filter(|r| present.iter().any(|spec| spec.name == r.name))
        .collect();
    if requirements.is_empty() {
        return Ok(Vec::new());
    }
    let resources: Vec<ResourceSpecifier<'_>> = requirements
        .iter()
        .map(|r| ResourceSpecifier::Topic(&r.name))
        .collect();
    let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(30)));
    let described = admin
        .describe_configs(&resources, &options)
        .await
        .map_err(KafkaSetupError::Admin)?;
    let mut mismatches = Vec::new();
    for (requirement, result) in requirements.iter().zip(described) {
        let actual: BTreeMap<String, String> = match result {
            Ok(resource) => resource
                .entries
                .into_iter()
                .filter_map(|entry| entry.value.map(|value| (entry.name, value)))
                .collect(),
            Err(code) => {
                mismatches.push(Mismatch {
                    topic: requirement.name.clone(),
                    problem: format!("its settings cannot be read: {code}"),
                });
                continue;
            }
        };
        if let Some(problem) = check(requirement.retention, &actual) {
            mismatches.push(Mismatch {
                topic: requirement.name.clone(),
                problem,
            });
        }
    }
    Ok(mismatches)
}

/// The names of the cluster's topics.
async fn existing_topics(
    admin: Arc<AdminClient<TracingContext>>,
) -> Result<std::collections::HashSet<String>, KafkaSetupError> {
    let timeout = Duration::from_secs(10);
    // fetch_metadata blocks its thread until the brokers answer or the timeout passes.
    tokio::task::spawn_blocking(move || admin.inner().fetch_metadata(None, timeout))
        .await
        .unwrap_or_else(|join_error| std::panic::resume_unwind(join_error.into_panic()))
        .map(|metadata| {
            metadata
                .topics()
                .iter()
                .map(|t| t.name().to_owned())
                .collect()
        })
        .map_err(KafkaSetupError::Admin)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn topic_settings_are_checked_against_what_a_rebuild_needs() {
        use Retention::*;
        // (retention needed, actual settings, problem text or none)
        type Case = (
            Retention,
            Vec<(&'static str, &'static str)>,
            Option<&'static str>,
        );
        let cases: Vec<Case> = vec![
            (Compacted, vec![("cleanup.policy", "compact")], None),
            (
                Compacted,
                vec![("cleanup.policy", "delete")],
                Some("must be `compact`"),
            ),
            (Compacted, vec![], Some("must be `compact`")),
            (
                Compacted,
                vec![("cleanup.policy", "compact,delete")],
                Some("`compact` alone"),
            ),
            (
                Everything,
                vec![("cleanup.policy", "delete"), ("retention.ms", "-1")],
                None,
            ),
            (
                Everything,
                vec![("cleanup.policy", "delete"), ("retention.ms", "604800000")],
                Some("retention.ms is 604800000"),
            ),
            (Everything, vec![], Some("broker default")),
            (
                Everything,
                vec![("cleanup.policy", "compact"), ("retention.ms", "-1")],
                Some("compaction keeps only the last"),
            ),
            (
                Everything,
                vec![("retention.ms", "-1"), ("retention.bytes", "1073741824")],
                Some("retention.bytes"),
            ),
        ];
        for (retention, actual, expected) in cases {
            let problem = check(retention, &settings(&actual));
            match (problem, expected) {
                (None, None) => {}
                (Some(problem), Some(text)) => {
                    assert!(problem.contains(text), "{actual:?}: {problem}")
                }
                (got, _) => panic!("{retention:?} {actual:?}: unexpected {got:?}"),
            }
        }
    }

    #[test]
    fn new_topics_get_the_settings_they_are_checked_against() {
        let config = ProjectorsConfig::default();
        for requirement in requirements(&config) {
            let created: BTreeMap<String, String> = requirement.configs.iter().cloned().collect();
            assert_eq!(
                check(requirement.retention, &created),
                None,
                "{}",
                requirement.name
            );
        }
        let specs = specs(&config);
        assert_eq!(specs.len(), 4);
        assert_eq!(specs[0].name, "accounts.customer.change");
        assert!(
            specs[0]
                .configs
                .contains(&("cleanup.policy".into(), "compact".into()))
        );
        assert_eq!(specs[2].name, "fulfillment.order.change");
        assert!(
            specs[2]
                .configs
                .contains(&("retention.ms".into(), "-1".into()))
        );
        assert_eq!(specs[3].name, "storefront-cdc.projectors.dead-letter");
    }
}
