//! The connector and both projectors running in this process against the local stack, with
//! unique names, as the end-to-end tests use them.

use cdc_connector::config::{CheckpointSettings, ConnectorConfig, StreamSettings};
use projectors::config::{ApplySettings, ProjectionTargets, Projector, ProjectorsConfig};
use storefront_plumbing::settings::{HttpSettings, LogSettings};
use storefront_schemas::topology::{Namespace, StorefrontNamespaces, StorefrontTopics};
use storefront_tests::{InProcess, stack, unique};

/// The running connector and projectors.
pub struct Pipeline {
    connector: InProcess<cdc_connector::ConnectorError>,
    projectors: InProcess<projectors::ProjectorError>,
}

impl Pipeline {
    /// Starts the connector, then the projectors, each once healthy.
    pub async fn start(connector: &ConnectorConfig, projectors: &ProjectorsConfig) -> Self {
        let connector =
            InProcess::start(|stop| cdc_connector::start(connector.clone(), stop)).await;
        let projectors = InProcess::start(|stop| {
            projectors::start(
                projectors.clone(),
                vec![Projector::Orders, Projector::Fulfillment],
                stop,
            )
        })
        .await;
        Self {
            connector,
            projectors,
        }
    }

    /// Stops both, waiting for a clean exit.
    pub async fn stop(self) {
        self.connector.stop().await;
        self.projectors.stop().await;
    }
}

/// The shipped defaults, with unique databases, topics, checkpoints and groups on the local
/// stack (logging at `TEST_LOG`, default `warn`).
pub fn default_configs() -> (ConnectorConfig, ProjectorsConfig) {
    let sources = StorefrontNamespaces {
        accounts: Namespace::new(unique("accounts"), "customer.accounts"),
        orders: Namespace::new(unique("orders"), "customer.orders"),
        fulfillment: Namespace::new(unique("fulfillment"), "fulfillment.requests"),
    };
    let topics = StorefrontTopics {
        customer_change: unique("customer"),
        fulfillment_request: unique("fulfill"),
        order_status_change: unique("status"),
    };
    let log = LogSettings {
        filter: std::env::var("TEST_LOG").unwrap_or_else(|_| "warn".into()),
        ..LogSettings::default()
    };
    let connector = ConnectorConfig {
        mongo: stack().mongo_settings(),
        kafka: stack().kafka_settings(),
        http: HttpSettings::on_port(0),
        log: log.clone(),
        sources: sources.clone(),
        topics: topics.clone(),
        stream: StreamSettings {
            dead_letter_topic: unique("connector_dead"),
            ..StreamSettings::default()
        },
        checkpoints: CheckpointSettings {
            database: unique("cdc_state"),
            ..CheckpointSettings::default()
        },
        ..ConnectorConfig::default()
    };
    let projectors = ProjectorsConfig {
        consumer_group_prefix: unique("projectors"),
        mongo: stack().mongo_settings(),
        kafka: stack().kafka_settings(),
        http: HttpSettings::on_port(0),
        log,
        topics,
        targets: ProjectionTargets {
            orders: sources.orders,
            fulfillment: sources.fulfillment,
        },
        apply: ApplySettings {
            dead_letter_topic: unique("projectors_dead"),
            ..ApplySettings::default()
        },
        ..ProjectorsConfig::default()
    };
    (connector, projectors)
}

/// [`default_configs`] tuned for tests: every topic has one partition, so a sentinel is read
/// only after everything published before it, and checkpoints, commits and retries come fast.
pub fn configs() -> (ConnectorConfig, ProjectorsConfig) {
    let (mut connector, mut projectors) = default_configs();
    connector.stream.idle_poll_max_ms = 50;
    connector.checkpoints.interval_ms = 50;
    connector.new_topics.partitions = 1;
    projectors.apply.batch_wait_ms = 5;
    projectors.apply.commit_interval_ms = 50;
    projectors.apply.retry_initial_ms = 20;
    projectors.new_topics.partitions = 1;
    (connector, projectors)
}

/// Waits until the databases equal `expected` (the run owns the collections: nothing else may
/// be there) and returns the verification; fails with the first differences otherwise.
#[allow(dead_code)] // not every test binary running the pipeline compares it with a model
pub async fn converged(
    client: &mongodb::Client,
    expected: &storefront_sim::model::ExpectedState,
) -> storefront_sim::verify::Report {
    use storefront_sim::verify::{self, VerifyOptions};
    let report = verify::verify_until(
        client,
        expected,
        VerifyOptions { exclusive: true },
        storefront_tests::DEADLINE,
    )
    .await
    .unwrap();
    assert!(
        report.differences.is_empty(),
        "{} differences ({:?}), the first ones:\n{}",
        report.differences.len(),
        report.differences_per_collection(),
        report
            .differences
            .iter()
            .take(10)
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    );
    report
}
