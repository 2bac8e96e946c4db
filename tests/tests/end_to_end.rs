//! The whole storefront, end to end: the simulator (`storefront-sim`) plays the Accounts, Orders
//! and Fulfillment applications against unique collections while the connector and both
//! projectors run in this process, and the three collections must end exactly as the
//! simulator's model says (every customer copy the latest, every order's full status history in
//! timestamp order, one request per approved order taken to RECEIVED).
//!
//! Then, once a sentinel written after everything else has come through (so the pipeline is
//! quiescent), the topics are read whole and the counts must be exact, which is what catches a
//! loop or a duplicate: one FulfillmentRequestEvent per approved order, one
//! OrderStatusChangeEvent per status the Fulfillment application set, one CustomerChangeEvent per
//! Accounts write, no dead letter. And no card number the simulator stored appears in any topic
//! or projection collection (the Accounts collection holds them all: the control).

use std::collections::BTreeMap;

use futures::TryStreamExt;
use mongodb::bson::{Bson, Document, doc};
use storefront_sim::config::AppSettings;
use storefront_sim::report::{self, Scrapes};
use storefront_sim::scrape::Scrape;
use storefront_sim::{Flow, LoadSpec, ScenarioSpec, SimConfig, Simulator};
use storefront_tests::{DEADLINE, Record, TopicReader, guard, stack, unique};

mod pipeline;

use pipeline::{Pipeline, configs, converged};

const CUSTOMERS: u64 = 20;
const ORDERS: u32 = 3;
const SEED: u64 = 20_251_130;

async fn documents(namespace: &storefront_schemas::topology::Namespace) -> Vec<Document> {
    stack()
        .mongo_client()
        .await
        .database(&namespace.database)
        .collection::<Document>(&namespace.collection)
        .find(doc! {})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap()
}

/// Every record of `topic`, read whole (nothing writes to it any more).
async fn whole_topic(topic: &str) -> Vec<Record> {
    let mut reader = TopicReader::new(&[topic]);
    guard::read_all(&mut reader, &[topic], DEADLINE).await
}

/// The simulator on the local stack, writing `sources`, waiting up to the tests' deadline.
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

/// This process's metrics: the in-process connector's and projectors' alike.
fn scrapes() -> Scrapes {
    let text = storefront_plumbing::telemetry::metrics_handle()
        .unwrap()
        .render();
    Scrapes {
        connector: Scrape::parse(&text),
        projectors: Scrape::parse(&text),
    }
}

fn record_text(record: &Record) -> String {
    format!(
        "{:?} {} {:?}",
        record.key,
        String::from_utf8_lossy(record.payload.as_deref().unwrap_or_default()),
        record.headers
    )
}

#[tokio::test]
async fn a_simulated_storefront_ends_as_the_model_says_with_exact_event_counts() {
    let (connector_config, projectors_config) = configs();
    let pipeline = Pipeline::start(&connector_config, &projectors_config).await;
    let metrics_before = scrapes();
    let sources = connector_config.sources.clone();
    let topics = connector_config.topics.clone();

    // The three applications, to the end of every story.
    let config = sim_config(&sources);
    let simulator = Simulator::connect(&config).await.unwrap();
    let expected = simulator
        .run_scenario(&ScenarioSpec {
            customers: CUSTOMERS,
            orders: ORDERS,
            seed: SEED,
        })
        .await
        .unwrap();
    let counts = expected.counts;
    assert_eq!(counts.customers, CUSTOMERS);
    assert_eq!(counts.orders, CUSTOMERS * u64::from(ORDERS));
    assert!(counts.approved_orders > 0 && counts.approved_orders < counts.orders);
    assert_eq!(counts.status_changes, counts.approved_orders * 4);
    let progress = simulator.progress().snapshot();
    assert_eq!(progress.customers_done, CUSTOMERS);
    for flow in Flow::ALL {
        let flow_progress = progress.flow(flow);
        assert_eq!(flow_progress.written, flow_progress.planned, "{flow:?}");
    }
    assert_eq!(
        progress.flow(Flow::Fulfillment).written,
        counts.status_changes
    );

    // The databases reach the model's state: every field the domain defines, nothing else.
    let client = stack().mongo_client().await;
    let report = converged(&client, &expected).await;
    assert_eq!(
        report.compared.values().sum::<u64>(),
        counts.customers * 2 + counts.approved_orders
    );

    // Quiescence: a sentinel approved order and a sentinel fulfillment status, written after
    // everything (including the projectors' last writes, which verify just saw), are published
    // only after every change before them (one partition per topic, changes in order per
    // collection).
    let approved_sentinel = unique("sentinel_approved");
    let status_sentinel = unique("sentinel_status");
    let database = |ns: &storefront_schemas::topology::Namespace| {
        client
            .database(&ns.database)
            .collection::<Document>(&ns.collection)
    };
    database(&sources.orders)
        .insert_one(doc! {
            "_id": unique("sentinel_customer"),
            "name": { "title": "Mx.", "firstName": "Sentinel", "lastName": "Last" },
            "contact": { "primaryPhone": "555-0000", "email": "sentinel@example.com" },
            "addresses": [{ "type": "SHIPPING", "description": "end", "address1": "1 End St",
                            "city": "Omega", "state": "ZZ", "postalCode": "99999" }],
            "orders": [
                { "guid": &approved_sentinel, "orderItems": [],
                  "orderStatusEvents": [{ "timestamp": 1_i64, "orderStatusType": "APPROVED" }] },
                { "guid": &status_sentinel, "orderItems": [],
                  "orderStatusEvents": [{ "timestamp": 1_i64, "orderStatusType": "CREATED" }] },
            ],
        })
        .await
        .unwrap();
    database(&sources.fulfillment)
        .insert_one(doc! {
            "_id": &status_sentinel,
            "order": { "guid": &status_sentinel,
                       "orderStatusEvents": [{ "timestamp": 2_i64, "orderStatusType": "RECEIVED" }] },
        })
        .await
        .unwrap();
    let mut reader = TopicReader::new(&[&topics.fulfillment_request, &topics.order_status_change]);
    reader
        .read_until(DEADLINE, "both sentinels", |records| {
            let seen = |key: &str| records.iter().any(|r| r.key.as_deref() == Some(key));
            seen(&approved_sentinel) && seen(&status_sentinel)
        })
        .await;
    pipeline.stop().await;
    let metrics_after = scrapes();

    // Exact counts, read whole from the brokers.
    let not_sentinel = |r: &&Record| {
        r.key.as_deref() != Some(&approved_sentinel) && r.key.as_deref() != Some(&status_sentinel)
    };
    let requests = whole_topic(&topics.fulfillment_request).await;
    let mut requested: BTreeMap<String, usize> = BTreeMap::new();
    for record in requests.iter().filter(not_sentinel) {
        *requested.entry(record.key.clone().unwrap()).or_default() += 1;
    }
    let approved: BTreeMap<String, usize> = expected
        .requests
        .iter()
        .map(|r| (r.get_str("_id").unwrap().to_owned(), 1))
        .collect();
    assert_eq!(
        requested, approved,
        "one request per approved order, no other"
    );
    assert_eq!(
        requests.iter().filter(not_sentinel).count() as u64,
        counts.approved_orders
    );

    let statuses = whole_topic(&topics.order_status_change).await;
    let mut changes: BTreeMap<(String, String), usize> = BTreeMap::new();
    for record in statuses.iter().filter(not_sentinel) {
        let body = record.json();
        let kind = body["orderStatusEvent"]["orderStatusType"]
            .as_str()
            .unwrap()
            .to_owned();
        *changes
            .entry((record.key.clone().unwrap(), kind))
            .or_default() += 1;
    }
    let mut expected_changes = BTreeMap::new();
    for guid in approved.keys() {
        for kind in ["PROCESSING", "SHIPPED", "IN_TRANSIT", "RECEIVED"] {
            expected_changes.insert((guid.clone(), kind.to_owned()), 1);
        }
    }
    assert_eq!(
        changes, expected_changes,
        "one status change per status set"
    );
    assert_eq!(
        statuses.iter().filter(not_sentinel).count() as u64,
        counts.status_changes
    );

    let customer_changes = whole_topic(&topics.customer_change).await;
    assert_eq!(
        customer_changes.len() as u64,
        progress.flow(Flow::Accounts).written,
        "one customer change per Accounts write"
    );
    let connector_dead = whole_topic(&connector_config.stream.dead_letter_topic).await;
    let projectors_dead = whole_topic(&projectors_config.apply.dead_letter_topic).await;
    assert!(connector_dead.is_empty(), "{connector_dead:?}");
    assert!(projectors_dead.is_empty(), "{projectors_dead:?}");

    // The demo's report, from the processes' metrics, tells the same story: per flow the
    // events published are exactly the records in its topic (sentinels included), and the
    // projectors took them all, bar perhaps the sentinel still on its way when they stopped.
    let demo = report::build(
        &sources,
        &progress,
        &metrics_before,
        &metrics_after,
        &report,
    );
    for (figures, topic, records) in [
        (
            &demo.flows[0],
            &topics.customer_change,
            customer_changes.len(),
        ),
        (&demo.flows[1], &topics.fulfillment_request, requests.len()),
        (&demo.flows[2], &topics.order_status_change, statuses.len()),
    ] {
        let flow = figures.flow.name();
        assert_eq!(figures.topics, std::slice::from_ref(topic), "{flow}");
        assert_eq!(figures.published, records as u64, "{flow}");
        assert!(
            figures.projected <= figures.published && figures.projected + 1 >= figures.published,
            "{flow}: {} projected of {} published",
            figures.projected,
            figures.published
        );
        assert!(figures.latency.is_some(), "{flow}: no end-to-end latency");
        assert_eq!(figures.dead_letters, 0, "{flow}");
    }
    assert_eq!(demo.flows[0].changes, progress.flow(Flow::Accounts).written);
    assert!(demo.converged(), "{}", demo.render());

    // No card number outside Accounts.
    let cards = expected.card_numbers();
    assert!(cards.len() as u64 >= CUSTOMERS);
    let mut haystacks: Vec<(String, String)> = Vec::new();
    for record in requests
        .iter()
        .chain(&statuses)
        .chain(&customer_changes)
        .chain(&connector_dead)
        .chain(&projectors_dead)
    {
        haystacks.push((format!("topic {}", record.topic), record_text(record)));
    }
    for namespace in [&sources.orders, &sources.fulfillment] {
        for document in documents(namespace).await {
            haystacks.push((
                namespace.to_string(),
                Bson::Document(document).into_relaxed_extjson().to_string(),
            ));
        }
    }
    let leaks: Vec<(&str, &str)> = haystacks
        .iter()
        .flat_map(|(place, text)| {
            cards
                .iter()
                .filter(|card| text.contains(card.as_str()))
                .map(move |_| (place.as_str(), "a card number"))
        })
        .collect();
    assert!(leaks.is_empty(), "card numbers found in {leaks:?}");
    let source: String = documents(&sources.accounts)
        .await
        .into_iter()
        .map(|d| Bson::Document(d).into_relaxed_extjson().to_string())
        .collect();
    assert!(
        cards.iter().all(|card| source.contains(card.as_str())),
        "the control: the Accounts collection holds every card number"
    );
}

/// The load mode: about 40 source changes per second for four seconds, then every started story
/// to its end; the databases reach the model's state, with every customer's story complete. (The
/// pacer's rate has its own unit test, `run::tests::the_pacer_keeps_the_rate`.)
#[tokio::test]
async fn a_load_at_a_fixed_rate_ends_as_the_model_says() {
    let (connector_config, projectors_config) = configs();
    let pipeline = Pipeline::start(&connector_config, &projectors_config).await;
    let config = sim_config(&connector_config.sources);
    let simulator = Simulator::connect(&config).await.unwrap();
    let expected = simulator
        .run_load(&LoadSpec {
            rate: 40.0,
            duration: std::time::Duration::from_secs(4),
            seed: SEED,
            max_orders: 2,
            max_customers: 50,
        })
        .await
        .unwrap();
    let progress = simulator.progress().snapshot();
    assert!(progress.customers_done > 0);
    assert_eq!(progress.customers_done, progress.customers_started);
    for flow in Flow::ALL {
        let counts = progress.flow(flow);
        assert_eq!(
            counts.written, counts.planned,
            "{flow:?}: every story ran to its end"
        );
    }
    assert_eq!(expected.counts.customers, progress.customers_done);

    let client = stack().mongo_client().await;
    converged(&client, &expected).await;
    pipeline.stop().await;
}
