//! What the connector's test binaries share: a configuration with unique names on the local
//! stack, and a customer document.

#![allow(dead_code, reason = "each test binary uses its own part")]

use cdc_connector::config::ConnectorConfig;
use mongodb::bson::{Document, doc, oid::ObjectId};
use storefront_schemas::topology::{Namespace, StorefrontNamespaces, StorefrontTopics};
use storefront_tests::{stack, unique};

/// The shipped defaults with unique sources, topics, checkpoints and dead-letter topic on the
/// local stack, and an HTTP endpoint on a free port.
pub fn config() -> ConnectorConfig {
    let mut config = ConnectorConfig {
        mongo: stack().mongo_settings(),
        kafka: stack().kafka_settings(),
        http: storefront_plumbing::settings::HttpSettings::on_port(0),
        sources: StorefrontNamespaces {
            accounts: Namespace::new(unique("accounts"), "customer.accounts"),
            orders: Namespace::new(unique("orders"), "customer.orders"),
            fulfillment: Namespace::new(unique("fulfillment"), "fulfillment.requests"),
        },
        topics: StorefrontTopics {
            customer_change: unique("customer"),
            fulfillment_request: unique("fulfill"),
            order_status_change: unique("status"),
        },
        ..Default::default()
    };
    config.checkpoints.database = unique("cdc_state");
    config.stream.dead_letter_topic = unique("dead");
    config
}

/// A well-formed customer account.
pub fn customer(id: ObjectId, first_name: &str) -> Document {
    doc! {
        "_id": id,
        "name": { "title": "Ms", "firstName": first_name, "lastName": "Lovelace" },
        "contact": { "primaryPhone": "555-0100", "email": format!("{first_name}@example.com") },
        "addresses": [{
            "type": "SHIPPING", "description": "home", "address1": "1 Main St",
            "city": "London", "state": "LDN", "postalCode": "N1"
        }],
    }
}

/// The value of `metric` (its full name with labels) in a `/metrics` text.
pub fn metric_value(metrics: &str, metric: &str) -> f64 {
    let prefix = format!("{metric} ");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("{metric} missing:\n{metrics}"))
        .parse()
        .unwrap()
}
