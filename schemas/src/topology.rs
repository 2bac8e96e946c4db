//! Where the storefront's data lives: MongoDB namespaces and Kafka topics.
//!
//! Every name is configurable; the defaults are the original services' names, so a consumer
//! written for the original topics reads ours unchanged.

use serde::{Deserialize, Serialize};

/// A MongoDB collection in a database. Collection names may contain dots
/// (`customer.accounts`), so the two parts are always kept apart rather than joined and split.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Namespace {
    /// Database name.
    pub database: String,
    /// Collection name.
    pub collection: String,
}

impl Namespace {
    /// A namespace from its two parts.
    pub fn new(database: impl Into<String>, collection: impl Into<String>) -> Self {
        Self {
            database: database.into(),
            collection: collection.into(),
        }
    }

    /// Problems with the names, each prefixed with `path`. MongoDB forbids empty names, `$` in
    /// collection names, and `/\. "$` in database names.
    pub fn problems(&self, path: &str) -> Vec<String> {
        let mut problems = Vec::new();
        if self.database.is_empty() || self.database.contains(['/', '\\', '.', ' ', '"', '$']) {
            problems.push(format!(
                "{path}.database `{}` is not a valid MongoDB database name",
                self.database
            ));
        }
        if self.collection.is_empty()
            || self.collection.contains('$')
            || self.collection.starts_with("system.")
        {
            problems.push(format!(
                "{path}.collection `{}` is not a valid MongoDB collection name",
                self.collection
            ));
        }
        problems
    }
}

impl std::fmt::Display for Namespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.database, self.collection)
    }
}

/// The three collections of the storefront, one per bounded context.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorefrontNamespaces {
    /// Accounts: system of record for customers.
    pub accounts: Namespace,
    /// Orders: each customer's order history, with a projected copy of the customer.
    pub orders: Namespace,
    /// Fulfillment: shipping progress of each approved order.
    pub fulfillment: Namespace,
}

impl Default for StorefrontNamespaces {
    fn default() -> Self {
        Self {
            accounts: Namespace::new("accounts", "customer.accounts"),
            orders: Namespace::new("orders", "customer.orders"),
            fulfillment: Namespace::new("fulfillment", "fulfillment.requests"),
        }
    }
}

impl StorefrontNamespaces {
    /// Problems with any namespace, or two contexts sharing one collection.
    pub fn problems(&self, path: &str) -> Vec<String> {
        let named = [
            ("accounts", &self.accounts),
            ("orders", &self.orders),
            ("fulfillment", &self.fulfillment),
        ];
        let mut problems: Vec<String> = named
            .iter()
            .flat_map(|(key, namespace)| namespace.problems(&format!("{path}.{key}")))
            .collect();
        for (i, (first_key, first)) in named.iter().enumerate() {
            for (second_key, second) in &named[i + 1..] {
                if first == second {
                    problems.push(format!(
                        "{path}.{first_key} and {path}.{second_key} are the same collection `{first}`"
                    ));
                }
            }
        }
        problems
    }
}

/// The event topics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorefrontTopics {
    /// CustomerChangeEvent, keyed by customer id.
    pub customer_change: String,
    /// FulfillmentRequestEvent, keyed by order guid.
    pub fulfillment_request: String,
    /// OrderStatusChangeEvent, keyed by order guid.
    pub order_status_change: String,
}

impl Default for StorefrontTopics {
    fn default() -> Self {
        Self {
            customer_change: "accounts.customer.change".to_owned(),
            fulfillment_request: "orders.order.fulfill".to_owned(),
            order_status_change: "fulfillment.order.change".to_owned(),
        }
    }
}

impl StorefrontTopics {
    /// Every topic name in a fixed order.
    pub fn all(&self) -> [&str; 3] {
        [
            &self.customer_change,
            &self.fulfillment_request,
            &self.order_status_change,
        ]
    }

    /// Problems with any topic name, or two events sharing one topic.
    pub fn problems(&self, path: &str) -> Vec<String> {
        let named = [
            ("customer_change", &self.customer_change),
            ("fulfillment_request", &self.fulfillment_request),
            ("order_status_change", &self.order_status_change),
        ];
        let mut problems: Vec<String> = named
            .iter()
            .filter_map(|(key, name)| {
                topic_name_problem(name).map(|p| format!("{path}.{key}: {p}"))
            })
            .collect();
        for (i, (first_key, first)) in named.iter().enumerate() {
            for (second_key, second) in &named[i + 1..] {
                if first == second {
                    problems.push(format!(
                        "{path}.{first_key} and {path}.{second_key} are the same topic `{first}`"
                    ));
                }
            }
        }
        problems
    }
}

/// Why `name` cannot be a Kafka topic, if it cannot: Kafka allows 1 to 249 characters of
/// `[a-zA-Z0-9._-]`, and not `.` or `..` alone.
pub fn topic_name_problem(name: &str) -> Option<String> {
    let legal = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if name.is_empty() || name.len() > 249 {
        Some(format!("topic `{name}` must have 1 to 249 characters"))
    } else if name == "." || name == ".." {
        Some(format!("topic `{name}` is reserved"))
    } else if !name.chars().all(legal) {
        Some(format!(
            "topic `{name}` may contain only ASCII letters, digits, `.`, `_` and `-`"
        ))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_original_services_names() {
        let namespaces = StorefrontNamespaces::default();
        assert_eq!(
            namespaces.accounts.to_string(),
            "accounts.customer.accounts"
        );
        assert_eq!(namespaces.orders.to_string(), "orders.customer.orders");
        assert_eq!(
            namespaces.fulfillment.to_string(),
            "fulfillment.fulfillment.requests"
        );
        assert!(namespaces.problems("sources").is_empty());
        let topics = StorefrontTopics::default();
        assert_eq!(
            topics.all(),
            [
                "accounts.customer.change",
                "orders.order.fulfill",
                "fulfillment.order.change"
            ]
        );
        assert!(topics.problems("topics").is_empty());
    }

    #[test]
    fn bad_names_are_reported_with_their_keys() {
        let namespaces = StorefrontNamespaces {
            accounts: Namespace::new("bad.db", "customer.accounts"),
            orders: Namespace::new("orders", "$cmd"),
            fulfillment: Namespace::new("orders", "$cmd"),
        };
        let problems = namespaces.problems("sources");
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with("sources.accounts.database")),
            "{problems:?}"
        );
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with("sources.orders.collection")),
            "{problems:?}"
        );
        assert!(
            problems
                .iter()
                .any(|p| p.contains("sources.orders and sources.fulfillment are the same")),
            "{problems:?}"
        );
    }

    #[test]
    fn topic_names_follow_kafka_rules() {
        assert_eq!(topic_name_problem("accounts.customer.change"), None);
        assert!(topic_name_problem("").is_some());
        assert!(topic_name_problem("..").is_some());
        assert!(topic_name_problem("with space").is_some());
        assert!(topic_name_problem(&"x".repeat(250)).is_some());
        let topics = StorefrontTopics {
            order_status_change: "orders.order.fulfill".into(),
            ..StorefrontTopics::default()
        };
        assert_eq!(topics.problems("topics").len(), 1);
    }

    #[test]
    fn partial_toml_keeps_the_other_defaults() {
        let topics: StorefrontTopics = toml::from_str("customer_change = \"c\"").unwrap();
        assert_eq!(topics.customer_change, "c");
        assert_eq!(topics.fulfillment_request, "orders.order.fulfill");
    }
}
