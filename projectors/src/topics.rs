//! The topics the projectors read and write, and the retention a rebuild needs.
//!
//! A rebuild replays the event topics from their beginning, so it can only restore what they
//! still hold: the retention each topic needs, and why, is in `storefront_schemas::retention`
//! (one definition, shared with the connector, which creates the event topics too). The
//! projectors' dead-letter topic keeps every record forever.
//!
//! [`ensure`] creates the missing topics with those settings (partitions and replicas from
//! `new_topics`) and reports existing topics whose settings differ; it never alters an existing
//! topic.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use storefront_plumbing::kafka::{self, KafkaSetupError, TopicSpec, TracingContext};
use storefront_plumbing::kafka_io;
use storefront_schemas::retention::{TopicRequirement, check, event_topics};

use crate::config::ProjectorsConfig;

/// Every topic the projectors need, with its settings.
pub fn requirements(config: &ProjectorsConfig) -> Vec<TopicRequirement> {
    event_topics(&config.topics)
        .into_iter()
        .chain([TopicRequirement::everything(
            &config.apply.dead_letter_topic,
        )])
        .collect()
}

/// The [`TopicSpec`]s to create.
pub fn specs(config: &ProjectorsConfig) -> Vec<TopicSpec> {
    requirements(config)
        .iter()
        .map(|requirement| config.new_topics.spec(requirement))
        .collect()
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
        kafka::client_config(&config.kafka, client_id, &[], &[])
            .create_with_context(TracingContext)
            .map_err(KafkaSetupError::Config)?,
    );
    let existing = existing_topics(&admin).await?;
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
    admin: &Arc<AdminClient<TracingContext>>,
) -> Result<std::collections::HashSet<String>, KafkaSetupError> {
    let timeout = Duration::from_secs(10);
    kafka_io::fetch_metadata(admin, AdminClient::inner, None, timeout)
        .await
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

    #[test]
    fn new_topics_are_the_event_topics_and_the_dead_letter_topic() {
        // That the retention configs pass their own check is schemas::retention's test.
        let config = ProjectorsConfig::default();
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
