//! Reconcile and repair (issue 16, items 1 and 2), end to end: the connector and both projectors
//! run in this process while the simulator plays the storefront, then drift is injected by hand
//! into the copies, and `cdc_connector::reconcile`:
//!
//! 1. finds exactly that drift (counts and keys per check and kind) once the pipeline is quiet:
//!    a customer copy edited, a customer copy deleted, a fulfillment request deleted, a status
//!    removed from an order's history, and an extra request for an order never approved;
//! 2. with `--repair`, while the simulator keeps writing, re-emits the drifted sources through
//!    Kafka; the extra request is reported as not repairable (the operator removes it);
//! 3. a second run reports zero, and every collection equals the simulator's model (`verify`,
//!    exclusive). The deleted request comes back once, as the projector creates it: APPROVED,
//!    for the customer as the source has it now, without the Fulfillment application's later
//!    statuses and shipping method, which were only in that document; the test then plays the
//!    Fulfillment application restoring its own document.

use std::collections::BTreeSet;
use std::time::Duration;

use cdc_connector::reconcile::{self, Check, Kind, Options, Report};
use mongodb::bson::{Bson, Document, doc};
use storefront_sim::config::AppSettings;
use storefront_sim::{LoadSpec, ScenarioSpec, SimConfig, Simulator};
use storefront_tests::{DEADLINE, eventually, stack};

mod pipeline;

use pipeline::{Pipeline, configs, converged};

fn sim_config(sources: &storefront_schemas::topology::StorefrontNamespaces) -> SimConfig {
    SimConfig {
        mongo: stack().mongo_settings(),
        sources: sources.clone(),
        apps: AppSettings {
            wait_ms: DEADLINE.as_millis() as u64,
            concurrency: 8,
        },
        ..SimConfig::default()
    }
}

/// The keys of one check and kind (every one: samples are set to hold them all).
fn keys(report: &Report, check: Check, kind: Kind) -> BTreeSet<String> {
    report.drift[&check][&kind]
        .samples
        .iter()
        .map(|sample| sample.key.clone())
        .collect()
}

fn customer_key(id: &Bson) -> String {
    match id {
        Bson::ObjectId(oid) => oid.to_hex(),
        Bson::String(text) => text.clone(),
        other => panic!("unexpected customer id {other}"),
    }
}

fn status_types(order: &Document) -> Vec<String> {
    order
        .get_array("orderStatusEvents")
        .unwrap()
        .iter()
        .map(|s| {
            s.as_document()
                .unwrap()
                .get_str("orderStatusType")
                .unwrap()
                .to_owned()
        })
        .collect()
}

#[tokio::test]
async fn drift_injected_by_hand_is_found_exactly_and_repaired_while_the_simulator_writes() {
    let (mut connector_config, projectors_config) = configs();
    connector_config.reconcile.targets = projectors_config.targets.clone();
    connector_config.reconcile.samples = 1_000;
    connector_config.reconcile.batch_size = 7; // several batches per collection
    let pipeline = Pipeline::start(&connector_config, &projectors_config).await;
    let sources = connector_config.sources.clone();
    let client = stack().mongo_client().await;
    let collection = |ns: &storefront_schemas::topology::Namespace| {
        client
            .database(&ns.database)
            .collection::<Document>(&ns.collection)
    };

    // Customers without orders (their copy is all of their customer.orders document), then
    // customers with three orders each, every story to its end.
    let simulator = Simulator::connect(&sim_config(&sources)).await.unwrap();
    simulator
        .run_scenario(&ScenarioSpec {
            customers: 3,
            orders: 0,
            seed: 16_001,
        })
        .await
        .unwrap();
    let expected = simulator
        .run_scenario(&ScenarioSpec {
            customers: 6,
            orders: 3,
            seed: 16_002,
        })
        .await
        .unwrap();
    converged(&client, &expected).await;
    let approved = expected.counts.approved_orders;
    assert!(approved >= 3, "the scenario approves at least three orders");

    let clean = reconcile::run(&connector_config, &Options::default())
        .await
        .unwrap();
    assert_eq!(clean.total(), 0, "{}", clean.text());
    assert_eq!(clean.compared[&Check::CustomerCopy], 9);
    assert_eq!(clean.compared[&Check::FulfillmentRequest], approved);
    assert_eq!(clean.compared[&Check::OrderStatus], approved);

    // The drift, by hand.
    let without_orders = expected
        .orders
        .iter()
        .find(|d| d.get_array("orders").unwrap().is_empty())
        .unwrap()
        .get("_id")
        .unwrap()
        .clone();
    let with_orders: Vec<&Document> = expected
        .orders
        .iter()
        .filter(|d| !d.get_array("orders").unwrap().is_empty())
        .collect();
    let edited = with_orders[0].get("_id").unwrap().clone();
    let requests: Vec<String> = expected
        .requests
        .iter()
        .map(|r| r.get_str("_id").unwrap().to_owned())
        .collect();
    let (deleted_request, stripped_order) = (requests[0].clone(), requests[1].clone());
    let never_approved = expected
        .order_guids
        .iter()
        .find(|guid| !requests.contains(guid))
        .expect("the scenario leaves an order unapproved")
        .clone();
    let orders_ns = &connector_config.reconcile.targets.orders;
    let requests_ns = &connector_config.reconcile.targets.fulfillment;

    // 1. A copy edited directly.
    collection(orders_ns)
        .update_one(
            doc! { "_id": &edited },
            doc! { "$set": { "name.firstName": "Tampered" } },
        )
        .await
        .unwrap();
    // 2. A copy deleted (a customer without orders: the document is all copy).
    collection(orders_ns)
        .delete_one(doc! { "_id": &without_orders })
        .await
        .unwrap();
    // 3. A request deleted.
    let deleted = collection(requests_ns)
        .find_one_and_delete(doc! { "_id": &deleted_request })
        .await
        .unwrap()
        .unwrap();
    // 4. A published status removed from its order's history (the whole document saved back,
    //    as an application would).
    let owner = expected
        .orders
        .iter()
        .find(|d| {
            d.get_array("orders")
                .unwrap()
                .iter()
                .any(|o| o.as_document().unwrap().get_str("guid").unwrap() == stripped_order)
        })
        .unwrap()
        .get("_id")
        .unwrap()
        .clone();
    let mut stored = collection(orders_ns)
        .find_one(doc! { "_id": &owner })
        .await
        .unwrap()
        .unwrap();
    let mut removed_status = None;
    let orders: Vec<Bson> = stored
        .get_array("orders")
        .unwrap()
        .iter()
        .map(|order| {
            let mut order = order.as_document().unwrap().clone();
            if order.get_str("guid").unwrap() == stripped_order {
                let mut statuses = order.get_array("orderStatusEvents").unwrap().clone();
                removed_status = statuses.pop();
                order.insert("orderStatusEvents", statuses);
            }
            Bson::Document(order)
        })
        .collect();
    stored.insert("orders", orders);
    let removed_status = removed_status.unwrap();
    assert_eq!(
        removed_status
            .as_document()
            .unwrap()
            .get_str("orderStatusType")
            .unwrap(),
        "RECEIVED"
    );
    collection(orders_ns)
        .replace_one(doc! { "_id": &owner }, &stored)
        .await
        .unwrap();
    // 5. A request for an order that was never approved (APPROVED, so it publishes nothing).
    collection(requests_ns)
        .insert_one(doc! {
            "_id": &never_approved,
            "order": { "guid": &never_approved, "orderItems": [],
                       "orderStatusEvents": [{ "timestamp": 1_i64, "orderStatusType": "APPROVED" }] },
        })
        .await
        .unwrap();

    // Found exactly.
    let found = reconcile::run(&connector_config, &Options::default())
        .await
        .unwrap();
    let one = |key: String| BTreeSet::from([key]);
    assert_eq!(found.total(), 5, "{}", found.text());
    assert_eq!(
        keys(&found, Check::CustomerCopy, Kind::Mismatched),
        one(customer_key(&edited))
    );
    assert_eq!(
        found.drift[&Check::CustomerCopy][&Kind::Mismatched].samples[0].fields,
        vec!["name"]
    );
    assert_eq!(
        keys(&found, Check::CustomerCopy, Kind::Missing),
        one(customer_key(&without_orders))
    );
    assert_eq!(
        keys(&found, Check::FulfillmentRequest, Kind::Missing),
        one(deleted_request.clone())
    );
    assert_eq!(
        keys(&found, Check::FulfillmentRequest, Kind::Extra),
        one(never_approved.clone())
    );
    assert_eq!(
        keys(&found, Check::OrderStatus, Kind::Missing),
        one(stripped_order.clone())
    );
    assert_eq!(found.compared[&Check::OrderStatus], approved - 1);
    let text = found.text();
    for card in expected.card_numbers() {
        assert!(!text.contains(&card) && !found.json().contains(&card));
    }

    // Repaired while the simulator keeps writing.
    let progress = simulator.progress();
    let spec = LoadSpec {
        rate: 60.0,
        duration: Duration::from_secs(8),
        seed: 16_003,
        max_orders: 2,
        max_customers: 6,
    };
    let load = simulator.run_load(&spec);
    let repair = async {
        let before = progress.snapshot().written();
        eventually(DEADLINE, "the simulator writing", async || {
            (progress.snapshot().written() > before + 20).then_some(())
        })
        .await;
        let during = progress.snapshot().written();
        let repaired = reconcile::run(
            &connector_config,
            &Options {
                repair: true,
                progress: false,
            },
        )
        .await
        .unwrap();
        (during, progress.snapshot().written(), repaired)
    };
    let (expected, (writes_at_start, writes_at_end, repaired)) = tokio::join!(load, repair);
    let expected = expected.unwrap();
    assert!(
        writes_at_end > writes_at_start,
        "the simulator wrote while the repair ran"
    );
    // Every injected key was found again (the load's stories in flight may add their own).
    for (check, kind, key) in [
        (Check::CustomerCopy, Kind::Mismatched, customer_key(&edited)),
        (
            Check::CustomerCopy,
            Kind::Missing,
            customer_key(&without_orders),
        ),
        (
            Check::FulfillmentRequest,
            Kind::Missing,
            deleted_request.clone(),
        ),
        (Check::OrderStatus, Kind::Missing, stripped_order.clone()),
    ] {
        assert!(
            keys(&repaired, check, kind).contains(&key),
            "{check:?} {kind:?} {key}: {}",
            repaired.text()
        );
    }
    let summary = repaired.repair.clone().unwrap();
    assert!(
        summary.documents >= 4 && summary.events >= 4,
        "{}",
        repaired.text()
    );
    assert_eq!(
        summary
            .not_repairable
            .samples
            .iter()
            .map(|s| s.key.clone())
            .collect::<BTreeSet<_>>(),
        one(never_approved.clone()),
        "{}",
        repaired.text()
    );

    // The deleted request comes back once, as the projector creates it: the order as approved.
    let requests = collection(requests_ns);
    let restored = eventually(DEADLINE, "the deleted request back", async || {
        requests
            .find_one(doc! { "_id": &deleted_request })
            .await
            .unwrap()
    })
    .await;
    assert_eq!(
        requests
            .count_documents(doc! { "order.guid": &deleted_request })
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        status_types(restored.get_document("order").unwrap())
            .last()
            .unwrap(),
        "APPROVED"
    );
    assert!(!restored.contains_key("shippingMethod"));
    assert_eq!(restored.get("timestamp"), deleted.get("timestamp"));
    assert_eq!(
        restored.get_document("order").unwrap().get("orderItems"),
        deleted.get_document("order").unwrap().get("orderItems")
    );
    // Who and where are the customer's now (the source holds nothing older): the copy's.
    let customer = collection(orders_ns)
        .find_one(doc! { "orders.guid": &deleted_request })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(restored.get("name"), customer.get("name"));
    assert_eq!(restored.get("contact"), customer.get("contact"));
    // The Fulfillment application restores its own document (its statuses and shipping method
    // were only there); the operator removes the extra request.
    requests
        .replace_one(doc! { "_id": &deleted_request }, &deleted)
        .await
        .unwrap();
    requests
        .delete_one(doc! { "_id": &never_approved })
        .await
        .unwrap();

    // The end state is the model's, and a second run finds nothing.
    converged(&client, &expected).await;
    let second = reconcile::run(&connector_config, &Options::default())
        .await
        .unwrap();
    assert_eq!(second.total(), 0, "{}", second.text());
    assert_eq!(
        second.compared[&Check::CustomerCopy],
        expected.counts.customers
    );
    assert_eq!(
        second.compared[&Check::FulfillmentRequest],
        expected.counts.approved_orders
    );
    pipeline.stop().await;
}
