//! The storefront topics' retention (a domain fact: what a projection rebuild needs), which both
//! binaries create topics with, and the check of an existing topic against it.
//!
//! A projection rebuild replays the event topics from their beginning, so it can only restore
//! what they still hold:
//!
//! | topic | needs | why |
//! |---|---|---|
//! | `accounts.customer.change` | `cleanup.policy=compact`, `delete.retention.ms=604800000` | the projection depends only on each customer's newest change and newest tombstone; compaction keeps exactly the newest record of each key, forever. Tombstones stay 7 days, so a projector down for less still sees every delete. |
//! | `orders.order.fulfill` | `cleanup.policy=compact` | the projection keeps the newest request per order; compaction keeps it (one record per order). |
//! | `fulfillment.order.change` | `cleanup.policy=delete`, `retention.ms=-1` | every status is its own history entry: compaction would keep only an order's last status, and time-based deletion would drop old history. |
//! | dead-letter topics | `cleanup.policy=delete`, `retention.ms=-1` | a dead letter stays until an operator deals with it. |
//!
//! The connector and the projectors both create missing topics from [`event_topics`] (one
//! definition, so they cannot disagree); neither alters an existing topic. How many partitions
//! and replicas a new topic gets is operator configuration, in `storefront_plumbing::topics`.

use std::collections::BTreeMap;

use crate::topology::StorefrontTopics;

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

impl TopicRequirement {
    /// The newest record of every key, forever, with `extra` topic configs.
    pub fn compacted(name: &str, extra: &[(&str, &str)]) -> Self {
        Self {
            name: name.to_owned(),
            retention: Retention::Compacted,
            configs: owned(std::iter::once(&("cleanup.policy", "compact")).chain(extra)),
        }
    }

    /// Every record, forever.
    pub fn everything(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            retention: Retention::Everything,
            configs: owned(&[("cleanup.policy", "delete"), ("retention.ms", "-1")]),
        }
    }
}

fn owned<'a>(pairs: impl IntoIterator<Item = &'a (&'a str, &'a str)>) -> Vec<(String, String)> {
    pairs
        .into_iter()
        .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
        .collect()
}

/// The three event topics with the retention a rebuild needs (see the module doc).
pub fn event_topics(topics: &StorefrontTopics) -> [TopicRequirement; 3] {
    [
        TopicRequirement::compacted(
            &topics.customer_change,
            &[("delete.retention.ms", TOMBSTONE_RETENTION_MS)],
        ),
        TopicRequirement::compacted(&topics.fulfillment_request, &[]),
        TopicRequirement::everything(&topics.order_status_change),
    ]
}

/// Why an existing topic's settings (`actual`, as the broker describes them) do not keep what
/// `retention` needs, if they do not.
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

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        owned(pairs).into_iter().collect()
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
    fn created_topic_configs_pass_their_own_check() {
        let topics = StorefrontTopics::default();
        let mut requirements = event_topics(&topics).to_vec();
        requirements.push(TopicRequirement::everything("dead-letters"));
        for requirement in &requirements {
            let created: BTreeMap<String, String> = requirement.configs.iter().cloned().collect();
            assert_eq!(
                check(requirement.retention, &created),
                None,
                "{}",
                requirement.name
            );
        }
        assert!(
            requirements[0]
                .configs
                .contains(&("delete.retention.ms".into(), TOMBSTONE_RETENTION_MS.into()))
        );
    }
}
