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

/// Whether a change may reach the topic more than once (at-least-once after an outage the
/// producer retried through) or must be there exactly once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Copies {
    /// Every change at least once.
    Allowed,
    /// Every change exactly once.
    None,
}

/// A connector running in this process, a writer of its `customer.accounts` source and a reader
/// of its customer topic, remembering every customer written.
pub struct AccountsRun {
    /// The connector.
    pub connector: storefront_tests::InProcess<cdc_connector::ConnectorError>,
    accounts: storefront_schemas::topology::Namespace,
    reader: storefront_tests::TopicReader,
    written: Vec<ObjectId>,
}

impl AccountsRun {
    /// Starts the connector (once healthy) with `config`, writes a first customer and waits
    /// until its record is in the topic.
    pub async fn start(config: &ConnectorConfig) -> Self {
        let connector =
            storefront_tests::InProcess::start(|stop| cdc_connector::start(config.clone(), stop))
                .await;
        let mut run = Self {
            connector,
            accounts: config.sources.accounts.clone(),
            reader: storefront_tests::TopicReader::new(&[&config.topics.customer_change]),
            written: Vec::new(),
        };
        run.write("Before").await;
        run.reader
            .read_until(storefront_tests::DEADLINE, "the first change", |r| {
                !r.is_empty()
            })
            .await;
        run
    }

    /// Where the connector serves `/health` and `/metrics`.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.connector.http_addr()
    }

    /// Writes a new customer, with a client of its own: after MongoDB restarted, a pooled
    /// connection is dead, and the test server (no sessions) does not retry writes.
    pub async fn write(&mut self, first_name: &str) -> ObjectId {
        let id = ObjectId::new();
        stack()
            .mongo_client()
            .await
            .database(&self.accounts.database)
            .collection::<Document>(&self.accounts.collection)
            .insert_one(customer(id, first_name))
            .await
            .unwrap();
        self.written.push(id);
        id
    }

    /// Writes a sentinel, reads the topic until it, stops the connector, and checks that every
    /// customer written is in the topic as `copies` allows, and nothing else. Each customer is
    /// its own key (and partition), so the keys are compared as a sorted list.
    pub async fn finish(mut self, copies: Copies) {
        let sentinel = self.write("Sentinel").await.to_hex();
        let records = self
            .reader
            .read_until(storefront_tests::DEADLINE, "the sentinel", |r| {
                r.iter()
                    .any(|record| record.key.as_deref() == Some(sentinel.as_str()))
            })
            .await
            .to_vec();
        self.connector.stop().await;
        let mut keys: Vec<String> = records.iter().filter_map(|r| r.key.clone()).collect();
        keys.sort();
        if copies == Copies::Allowed {
            keys.dedup();
        }
        let mut expected: Vec<String> = self.written.iter().map(|id| id.to_hex()).collect();
        expected.sort();
        assert_eq!(keys, expected, "every change in Kafka ({copies:?} copies)");
    }
}
