//! Settings of the topics a process creates when they do not exist. What each storefront topic
//! must retain, and why, is a domain fact: `storefront_schemas::retention`.

use serde::{Deserialize, Serialize};
use storefront_schemas::retention::TopicRequirement;

use crate::config::{Validate, key_path};
use crate::kafka::TopicSpec;

/// Settings for the topics a process creates when they do not exist. Existing topics are never
/// altered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NewTopicSettings {
    /// Partitions of each new topic. Events are keyed per aggregate, so more partitions spread
    /// load (and a projector's instances) without breaking per-entity order.
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

impl NewTopicSettings {
    /// How to create `requirement`'s topic.
    pub fn spec(&self, requirement: &TopicRequirement) -> TopicSpec {
        TopicSpec {
            name: requirement.name.clone(),
            partitions: self.partitions,
            replication_factor: self.replication_factor,
            configs: requirement.configs.clone(),
        }
    }
}

impl Validate for NewTopicSettings {
    fn validate(&self, path: &str, problems: &mut Vec<String>) {
        for (key, value) in [
            ("partitions", self.partitions),
            ("replication_factor", self.replication_factor),
        ] {
            if value < 1 {
                problems.push(format!("{} must be at least 1", key_path(path, key)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_topic_gets_its_requirements_configs_and_the_configured_counts() {
        let requirement =
            TopicRequirement::compacted("events", &[("min.cleanable.dirty.ratio", "0.1")]);
        let spec = NewTopicSettings {
            partitions: 6,
            replication_factor: 3,
        }
        .spec(&requirement);
        assert_eq!(spec.name, "events");
        assert_eq!((spec.partitions, spec.replication_factor), (6, 3));
        assert_eq!(spec.configs, requirement.configs);
    }

    #[test]
    fn new_topic_counts_must_be_positive() {
        let mut problems = Vec::new();
        NewTopicSettings {
            partitions: 0,
            replication_factor: 0,
        }
        .validate("new_topics", &mut problems);
        assert_eq!(
            problems,
            [
                "new_topics.partitions must be at least 1",
                "new_topics.replication_factor must be at least 1"
            ]
        );
    }
}
