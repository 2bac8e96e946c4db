//! Markers: after each fault, one small customer story whose every write must come through the
//! whole pipeline, one leg after the other, before the suite calls the fault recovered:
//!
//! 1. Accounts inserts a customer: the connector's accounts stream, the customer topic and the
//!    orders projector create its `customer.orders` copy.
//! 2. Orders pushes an approved order into that copy: the orders stream, the request topic and
//!    the fulfillment projector create the request.
//! 3. Fulfillment moves the request to PROCESSING: the fulfillment stream, the status topic and
//!    the orders projector append the status to the order.
//!
//! Each topic has one partition and each stream reads its collection in order, so a leg that
//! has come through means everything its stream and topic held before it has too. The markers
//! are stories of the simulator's own plans, kept in a model of their own, so the final
//! verification expects them like every other customer.

use std::time::Instant;

use mongodb::Client;
use mongodb::bson::{Bson, Document, doc};
use storefront_sim::apps::Apps;
use storefront_sim::data::plan_customer;
use storefront_sim::model::orders_id;
use storefront_sim::{ExpectedState, Model, SimConfig, Write};
use storefront_tests::{DEADLINE, eventually};

/// Writes markers and keeps their model.
#[derive(Debug)]
pub struct Markers {
    config: SimConfig,
    client: Client,
    apps: Apps,
    model: Model,
    seed: u64,
    next_index: u64,
    /// Markers passed.
    pub passed: u64,
}

impl Markers {
    /// Markers written with the simulator's `config`, their plans drawn from `seed`.
    pub async fn new(config: &SimConfig, seed: u64) -> Self {
        let client = storefront_plumbing::mongo::connect(&config.mongo, "storefront-tests")
            .await
            .unwrap();
        Self {
            config: config.clone(),
            apps: Apps::new(&client, &config.sources, DEADLINE),
            client,
            model: Model::new(),
            seed,
            next_index: 0,
            passed: 0,
        }
    }

    /// A new client, after MongoDB restarted (the old one's pooled connections are dead, and the
    /// test server offers no retryable writes).
    pub async fn reconnect(&mut self) {
        self.client = storefront_plumbing::mongo::connect(&self.config.mongo, "storefront-tests")
            .await
            .unwrap();
        self.apps = Apps::new(&self.client, &self.config.sources, DEADLINE);
    }

    /// Writes one marker story, each leg once the previous one came through; returns when the
    /// last did.
    pub async fn pass(&mut self, label: &str) -> Instant {
        // The next plan whose first order is approved (the seed decides; most are).
        let plan = loop {
            let plan = plan_customer(self.seed, self.next_index, 1..=1);
            self.next_index += 1;
            if plan.orders[0].approved() {
                break plan;
            }
        };
        let order = &plan.orders[0];
        let key = plan.key.clone();
        let guid = order.guid.clone();
        let id = orders_id(&key);
        let orders = self.collection(&self.config.sources.orders);
        let requests = self.collection(&self.config.sources.fulfillment);

        self.write(&plan.accounts_before[0]).await;
        eventually(
            DEADLINE,
            &format!("marker {label}: the copy of customer {key}"),
            async || {
                orders
                    .find_one(doc! { "_id": id.clone() })
                    .await
                    .ok()
                    .flatten()
            },
        )
        .await;

        self.write(&order.push).await;
        self.write(&order.outcome).await;
        eventually(
            DEADLINE,
            &format!("marker {label}: the request of order {guid}"),
            async || {
                requests
                    .find_one(doc! { "_id": &guid })
                    .await
                    .ok()
                    .flatten()
            },
        )
        .await;

        self.write(&order.fulfillment[0]).await;
        eventually(
            DEADLINE,
            &format!("marker {label}: PROCESSING in order {guid}"),
            async || {
                let found = orders.find_one(doc! { "_id": id.clone() }).await.ok()??;
                has_status(&found, &guid, "PROCESSING").then_some(())
            },
        )
        .await;
        self.passed += 1;
        Instant::now()
    }

    /// Sends `write` and applies it to the model.
    async fn write(&mut self, write: &Write) {
        self.apps
            .write(write)
            .await
            .unwrap_or_else(|error| panic!("a marker write failed: {error}"));
        self.model.apply(write).unwrap();
    }

    fn collection(
        &self,
        namespace: &storefront_schemas::topology::Namespace,
    ) -> mongodb::Collection<Document> {
        self.client
            .database(&namespace.database)
            .collection(&namespace.collection)
    }

    /// What the markers' writes lead to.
    pub fn expected(&self) -> ExpectedState {
        self.model.expected(&self.config.sources)
    }
}

/// Whether the `customer.orders` document holds status `kind` in order `guid`.
fn has_status(document: &Document, guid: &str, kind: &str) -> bool {
    document
        .get_array("orders")
        .into_iter()
        .flatten()
        .filter_map(Bson::as_document)
        .filter(|order| order.get_str("guid").ok() == Some(guid))
        .filter_map(|order| order.get_array("orderStatusEvents").ok())
        .flatten()
        .filter_map(Bson::as_document)
        .any(|status| status.get_str("orderStatusType").ok() == Some(kind))
}
