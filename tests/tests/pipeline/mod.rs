//! The connector and both projectors running in this process against the local stack, with
//! unique names, as the end-to-end tests use them.

use std::time::Duration;

use cdc_connector::config::{CheckpointSettings, ConnectorConfig, StreamSettings};
use projectors::config::{ApplySettings, ProjectionTargets, Projector, ProjectorsConfig};
use storefront_plumbing::settings::{HttpSettings, LogSettings};
use storefront_schemas::topology::{Namespace, StorefrontNamespaces, StorefrontTopics};
use storefront_tests::{stack, unique, until_healthy};

/// How long any step of an end-to-end test may take.
pub const DEADLINE: Duration = Duration::from_secs(90);

/// The running connector and projectors.
pub struct Pipeline {
    connector: cdc_connector::RunningConnector,
    projectors: projectors::RunningProjectors,
    stop_connector: tokio::sync::oneshot::Sender<()>,
    stop_projectors: tokio::sync::oneshot::Sender<()>,
}

impl Pipeline {
    /// Starts the connector, then the projectors, each once healthy.
    pub async fn start(connector: &ConnectorConfig, projectors: &ProjectorsConfig) -> Self {
        let (stop_connector, stopped) = tokio::sync::oneshot::channel::<()>();
        let running_connector = cdc_connector::start(connector.clone(), async move {
            let _ = stopped.await;
        })
        .await
        .unwrap();
        until_healthy(running_connector.http_addr).await;
        let (stop_projectors, stopped) = tokio::sync::oneshot::channel::<()>();
        let running_projectors = projectors::start(
            projectors.clone(),
            vec![Projector::Orders, Projector::Fulfillment],
            async move {
                let _ = stopped.await;
            },
        )
        .await
        .unwrap();
        until_healthy(running_projectors.http_addr).await;
        Self {
            connector: running_connector,
            projectors: running_projectors,
            stop_connector,
            stop_projectors,
        }
    }

    /// Stops both, waiting for a clean exit.
    pub async fn stop(self) {
        let _ = self.stop_connector.send(());
        let _ = self.stop_projectors.send(());
        tokio::time::timeout(DEADLINE, self.connector.wait())
            .await
            .expect("the connector stops before the deadline")
            .unwrap();
        tokio::time::timeout(DEADLINE, self.projectors.wait())
            .await
            .expect("the projectors stop before the deadline")
            .unwrap();
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
