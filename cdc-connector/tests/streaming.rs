//! The connector end to end on the local stack: MongoDB changes in, domain events in Kafka out.
//! Each test gets its own databases, topics and checkpoint store, and runs the connector
//! in-process (or as a child process for `kill -9`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use cdc_connector::RunningConnector;
use cdc_connector::checkpoint::CheckpointStore;
use cdc_connector::config::{
    CheckpointSettings, ConnectorConfig, LostHistoryPolicy, SnapshotMode, StreamSettings,
};
use mongodb::Collection;
use mongodb::bson::oid::ObjectId;
use mongodb::bson::{Document, doc};
use mongodb::change_stream::event::ResumeToken;
use storefront_plumbing::settings::HttpSettings;
use storefront_schemas::topology::{Namespace, StorefrontNamespaces, StorefrontTopics};
use storefront_tests::{Daemon, Record, TopicReader, free_port, stack, unique, until_healthy};

const DEADLINE: Duration = Duration::from_secs(60);

fn test_config() -> ConnectorConfig {
    ConnectorConfig {
        mongo: stack().mongo_settings(),
        kafka: stack().kafka_settings(),
        http: HttpSettings::on_port(0),
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
        stream: StreamSettings {
            idle_poll_max_ms: 50,
            dead_letter_topic: unique("dead"),
            ..StreamSettings::default()
        },
        checkpoints: CheckpointSettings {
            database: unique("cdc_state"),
            interval_ms: 50,
            ..CheckpointSettings::default()
        },
        ..ConnectorConfig::default()
    }
}

struct Running {
    connector: RunningConnector,
    stop: tokio::sync::oneshot::Sender<()>,
}

async fn start(config: &ConnectorConfig) -> Running {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let connector = cdc_connector::start(config.clone(), async move {
        let _ = stopped.await;
    })
    .await
    .unwrap();
    until_healthy(connector.http_addr).await;
    Running { connector, stop }
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(DEADLINE, self.connector.wait())
            .await
            .expect("stops before the deadline")
            .unwrap();
    }
}

async fn collection(namespace: &Namespace) -> Collection<Document> {
    stack()
        .mongo_client()
        .await
        .database(&namespace.database)
        .collection(&namespace.collection)
}

fn customer(id: ObjectId, first_name: &str) -> Document {
    doc! {
        "_id": id,
        "name": { "title": "Ms", "firstName": first_name, "lastName": "Lovelace" },
        "contact": { "primaryPhone": "555-0100", "email": format!("{first_name}@example.com") },
        "addresses": [{
            "type": "SHIPPING", "description": "home", "address1": "1 Main St",
            "city": "London", "state": "LDN", "postalCode": "N1"
        }],
        "creditCards": [{
            "type": "PRIMARY", "description": "visa", "number": "4111111111111111",
            "expiration": "12/30", "nameOnCard": "A Lovelace"
        }],
    }
}

fn status(kind: &str, timestamp: i64) -> Document {
    doc! { "timestamp": timestamp, "orderStatusType": kind }
}

fn order(guid: &str, statuses: Vec<Document>) -> Document {
    doc! {
        "guid": guid,
        "orderStatusEvents": statuses,
        "orderItems": [{
            "product": { "guid": "p-1", "title": "Lamp", "description": "A lamp", "price": 19.5 },
            "quantity": 2
        }],
    }
}

fn keys(records: &[Record]) -> Vec<String> {
    records
        .iter()
        .map(|r| r.key.clone().unwrap_or_default())
        .collect()
}

#[tokio::test]
async fn customer_changes_become_events_and_a_delete_becomes_a_tombstone() {
    let config = test_config();
    let connector = start(&config).await;
    let customers = collection(&config.sources.accounts).await;
    let id = ObjectId::new();
    customers.insert_one(customer(id, "Ada")).await.unwrap();
    customers
        .update_one(
            doc! { "_id": id },
            doc! { "$set": { "name.firstName": "Augusta" } },
        )
        .await
        .unwrap();
    customers
        .replace_one(doc! { "_id": id }, customer(id, "Countess"))
        .await
        .unwrap();
    customers.delete_one(doc! { "_id": id }).await.unwrap();

    let mut reader = TopicReader::new(&[&config.topics.customer_change]);
    let records = reader
        .read_until(DEADLINE, "4 customer records", |r| r.len() >= 4)
        .await
        .to_vec();
    connector.stop().await;

    assert_eq!(keys(&records), vec![id.to_hex(); 4], "keyed by customer id");
    let first_names: Vec<String> = records[..3]
        .iter()
        .map(|r| r.json()["name"]["firstName"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(first_names, ["Ada", "Augusta", "Countess"]);
    for record in &records[..3] {
        let text = String::from_utf8(record.payload.clone().unwrap()).unwrap();
        assert!(
            !text.contains("creditCards") && !text.contains("4111"),
            "{text}"
        );
        assert_eq!(record.json()["id"], id.to_hex());
        assert_eq!(record.header("ce_type"), "storefront.customer.changed");
    }
    assert_eq!(records[3].payload, None, "a delete is a tombstone");
    assert_eq!(records[3].header("ce_type"), "storefront.customer.deleted");
    let positions: Vec<u64> = records
        .iter()
        .map(|r| r.header("ce_clustertime").parse().unwrap())
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
    let ids: BTreeSet<&str> = records.iter().map(|r| r.header("ce_id")).collect();
    assert_eq!(ids.len(), 4, "every change has its own event id");
}

#[tokio::test]
async fn an_approved_order_requests_fulfillment_exactly_once() {
    let mut config = test_config();
    // One partition, so the sentinel (order-2) is read only after everything published before it.
    config.new_topics.partitions = 1;
    let connector = start(&config).await;
    let orders = collection(&config.sources.orders).await;
    let id = ObjectId::new();
    let mut document = customer(id, "Ada");
    document.remove("creditCards");
    document.insert(
        "orders",
        vec![order("order-1", vec![status("CREATED", 1000)])],
    );
    orders.insert_one(document).await.unwrap();
    // Approval by a partial update, as the Orders app's $push would do it.
    orders
        .update_one(
            doc! { "_id": id, "orders.guid": "order-1" },
            doc! { "$push": { "orders.$.orderStatusEvents": status("APPROVED", 2000) } },
        )
        .await
        .unwrap();
    // Unrelated change while the order is approved: no second request.
    orders
        .update_one(
            doc! { "_id": id },
            doc! { "$set": { "contact.email": "new@example.com" } },
        )
        .await
        .unwrap();
    // The projector adding PROCESSING: no request either (no loop).
    orders
        .update_one(
            doc! { "_id": id, "orders.guid": "order-1" },
            doc! { "$push": { "orders.$.orderStatusEvents": status("PROCESSING", 3000) } },
        )
        .await
        .unwrap();
    // A second order approved by a whole-document replace (a Spring save) is the sentinel: once
    // it arrives, everything before it has been processed.
    let mut replaced = customer(id, "Ada");
    replaced.remove("creditCards");
    replaced.insert(
        "orders",
        vec![
            order(
                "order-1",
                vec![
                    status("CREATED", 1000),
                    status("APPROVED", 2000),
                    status("PROCESSING", 3000),
                ],
            ),
            order(
                "order-2",
                vec![status("CREATED", 4000), status("APPROVED", 5000)],
            ),
        ],
    );
    orders
        .replace_one(doc! { "_id": id }, replaced)
        .await
        .unwrap();

    let mut reader = TopicReader::new(&[&config.topics.fulfillment_request]);
    let records = reader
        .read_until(DEADLINE, "the sentinel request", |r| {
            r.iter().any(|r| r.key.as_deref() == Some("order-2"))
        })
        .await
        .to_vec();
    connector.stop().await;

    assert_eq!(keys(&records), ["order-1", "order-2"]);
    let request = records[0].json();
    assert_eq!(request["order"]["guid"], "order-1");
    assert_eq!(request["address"]["type"], "SHIPPING");
    assert_eq!(request["name"]["firstName"], "Ada");
    assert_eq!(
        records[0].header("ce_type"),
        "storefront.order.fulfillment-requested"
    );
}

#[tokio::test]
async fn fulfillment_status_changes_are_published_but_new_requests_are_not() {
    let config = test_config();
    let connector = start(&config).await;
    let requests = collection(&config.sources.fulfillment).await;
    let mut request = customer(ObjectId::new(), "Ada");
    request.remove("creditCards");
    let address = request.get_array("addresses").unwrap()[0].clone();
    request.remove("addresses");
    request.insert("address", address);
    request.insert("timestamp", 1000_i64);
    request.insert("order", order("order-9", vec![status("APPROVED", 1000)]));
    let inserted = requests.insert_one(request).await.unwrap().inserted_id;
    for (kind, at) in [("PROCESSING", 2000), ("SHIPPED", 3000)] {
        requests
            .update_one(
                doc! { "_id": inserted.clone() },
                doc! { "$push": { "order.orderStatusEvents": status(kind, at) } },
            )
            .await
            .unwrap();
    }

    let mut reader = TopicReader::new(&[&config.topics.order_status_change]);
    let records = reader
        .read_until(DEADLINE, "the SHIPPED status", |r| {
            r.iter()
                .any(|r| r.json()["orderStatusEvent"]["orderStatusType"] == "SHIPPED")
        })
        .await
        .to_vec();
    connector.stop().await;
    let kinds: Vec<String> = records
        .iter()
        .map(|r| {
            r.json()["orderStatusEvent"]["orderStatusType"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        kinds,
        ["PROCESSING", "SHIPPED"],
        "the APPROVED request itself emits nothing"
    );
    assert_eq!(keys(&records), ["order-9", "order-9"]);
}

#[tokio::test]
async fn existing_documents_are_snapshotted_then_streamed_without_a_gap() {
    let config = test_config();
    let customers = collection(&config.sources.accounts).await;
    let before: Vec<ObjectId> = (0..25).map(|_| ObjectId::new()).collect();
    customers
        .insert_many(before.iter().map(|id| customer(*id, "Before")))
        .await
        .unwrap();
    let connector = start(&config).await;
    let after: Vec<ObjectId> = (0..25).map(|_| ObjectId::new()).collect();
    customers
        .insert_many(after.iter().map(|id| customer(*id, "After")))
        .await
        .unwrap();
    let expected: BTreeSet<String> = before.iter().chain(&after).map(|id| id.to_hex()).collect();
    let mut reader = TopicReader::new(&[&config.topics.customer_change]);
    reader
        .read_until(DEADLINE, "every customer", |r| {
            expected.is_subset(&keys(r).into_iter().collect())
        })
        .await;
    connector.stop().await;
}

#[tokio::test]
async fn a_restart_resumes_from_the_checkpoint_without_gaps() {
    let mut config = test_config();
    config.stream.snapshot = SnapshotMode::Initial;
    let customers = collection(&config.sources.accounts).await;
    let connector = start(&config).await;
    let first: Vec<ObjectId> = (0..20).map(|_| ObjectId::new()).collect();
    customers
        .insert_many(first.iter().map(|id| customer(*id, "First")))
        .await
        .unwrap();
    let mut reader = TopicReader::new(&[&config.topics.customer_change]);
    let first_keys: BTreeSet<String> = first.iter().map(|id| id.to_hex()).collect();
    reader
        .read_until(DEADLINE, "the first batch", |r| {
            first_keys.is_subset(&keys(r).into_iter().collect())
        })
        .await;
    connector.stop().await;

    // Written while the connector is down.
    let second: Vec<ObjectId> = (0..20).map(|_| ObjectId::new()).collect();
    customers
        .insert_many(second.iter().map(|id| customer(*id, "Second")))
        .await
        .unwrap();
    let connector = start(&config).await;
    let second_keys: BTreeSet<String> = second.iter().map(|id| id.to_hex()).collect();
    let records = reader
        .read_until(DEADLINE, "the second batch", |r| {
            second_keys.is_subset(&keys(r).into_iter().collect())
        })
        .await
        .to_vec();
    connector.stop().await;
    // Resumed, not snapshotted again: the first batch was not published a second time.
    let per_key = records
        .iter()
        .fold(BTreeMap::<String, usize>::new(), |mut counts, r| {
            *counts.entry(r.key.clone().unwrap()).or_default() += 1;
            counts
        });
    assert!(per_key.values().all(|n| *n == 1), "{per_key:?}");
}

#[tokio::test]
async fn bad_documents_go_to_the_dead_letter_topic_while_good_ones_flow() {
    let config = test_config();
    let connector = start(&config).await;
    let customers = collection(&config.sources.accounts).await;
    let bad = ObjectId::new();
    let mut nameless = customer(bad, "Nobody");
    nameless.remove("name");
    customers.insert_one(nameless).await.unwrap();
    let good = ObjectId::new();
    customers.insert_one(customer(good, "Good")).await.unwrap();

    let mut events = TopicReader::new(&[&config.topics.customer_change]);
    let published = events
        .read_until(DEADLINE, "the good customer", |r| !r.is_empty())
        .await
        .to_vec();
    let mut dead = TopicReader::new(&[&config.stream.dead_letter_topic]);
    let letters = dead
        .read_until(DEADLINE, "the dead letter", |r| !r.is_empty())
        .await
        .to_vec();
    connector.stop().await;

    assert_eq!(keys(&published), [good.to_hex()]);
    let letter = &letters[0];
    assert!(
        letter.header("dlq_reason").contains("name"),
        "{:?}",
        letter.headers
    );
    assert_eq!(
        letter.header("dlq_source"),
        format!(
            "/mongodb/{}/customer.accounts",
            config.sources.accounts.database
        )
    );
    let raw = letter.json();
    assert_eq!(raw["_id"]["$oid"], bad.to_hex(), "the raw document is kept");
    assert_eq!(raw["contact"]["email"], "Nobody@example.com");
}

/// `kill -9` of the connector process in the middle of a burst of 10,000 changes loses none:
/// after a restart every change is in Kafka, and a change published twice carries the same id.
#[tokio::test]
async fn kill_9_during_a_burst_loses_no_change() {
    const BURST: usize = 10_000;
    let config = test_config();
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("connector.toml");
    let mut file_config = config.clone();
    file_config.http = HttpSettings::on_port(free_port());
    file_config.log.filter = "warn".into();
    std::fs::write(&config_path, toml::to_string(&file_config).unwrap()).unwrap();
    let binary = Path::new(env!("CARGO_BIN_EXE_cdc-connector"));
    let args = ["--config", config_path.to_str().unwrap(), "run"];

    let mut daemon = Daemon::spawn(binary, &args);
    until_healthy(file_config.http.listen).await;
    let customers = collection(&config.sources.accounts).await;
    let ids: Vec<ObjectId> = (0..BURST).map(|_| ObjectId::new()).collect();
    let writer = {
        let customers = customers.clone();
        let ids = ids.clone();
        tokio::spawn(async move {
            for chunk in ids.chunks(500) {
                customers
                    .insert_many(chunk.iter().map(|id| customer(*id, "Burst")))
                    .await
                    .unwrap();
            }
        })
    };
    let mut reader = TopicReader::new(&[&config.topics.customer_change]);
    reader
        .read_until(DEADLINE, "part of the burst", |r| r.len() >= BURST / 5)
        .await;
    daemon.signal("KILL");
    daemon.exit_status().await;
    writer.await.unwrap();

    let mut daemon = Daemon::spawn(binary, &args);
    // Healthy before anything else: a SIGTERM that arrived before the process installed its
    // handler would end it by the signal's default action.
    until_healthy(file_config.http.listen).await;
    let expected: BTreeSet<String> = ids.iter().map(|id| id.to_hex()).collect();
    let records = reader
        .read_until(Duration::from_secs(180), "every change of the burst", |r| {
            expected.is_subset(&keys(r).into_iter().collect())
        })
        .await
        .to_vec();
    daemon.signal("TERM");
    assert!(daemon.exit_status().await.success());

    // Inserts only: one change per key, so every record of a key must carry one event id.
    let mut ids_per_key: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for record in &records {
        ids_per_key
            .entry(record.key.clone().unwrap())
            .or_default()
            .insert(record.header("ce_id").to_owned());
    }
    assert_eq!(ids_per_key.len(), BURST);
    let inconsistent: Vec<_> = ids_per_key
        .iter()
        .filter(|(_, ids)| ids.len() != 1)
        .collect();
    assert!(
        inconsistent.is_empty(),
        "duplicates with different ids: {inconsistent:?}"
    );
    eprintln!(
        "kill -9 test: {} records for {BURST} changes ({} duplicates)",
        records.len(),
        records.len() - BURST
    );
}

#[tokio::test]
async fn a_lost_resume_token_stops_the_connector_or_resnapshots_by_policy() {
    let mut config = test_config();
    let customers = collection(&config.sources.accounts).await;
    let id = ObjectId::new();
    customers.insert_one(customer(id, "Kept")).await.unwrap();
    // A token from a position the server no longer has (cluster time 1.0, long before any entry
    // it keeps): on MongoDB that is ChangeStreamHistoryLost, on the test server "resume token
    // not found"; both mean the changes after it can no longer be read.
    let lost: ResumeToken = mongodb::bson::from_document(doc! {
        "_data": format!("82{:016X}{:016X}00", 1_u64 << 32, 1)
    })
    .unwrap();
    let client = stack().mongo_client().await;
    let stream_name = config.sources.accounts.to_string();
    CheckpointStore::new(&client, &config.checkpoints)
        .save(&stream_name, &lost, None, &[])
        .await
        .unwrap();

    let error = tokio::time::timeout(
        DEADLINE,
        cdc_connector::run(config.clone(), std::future::pending()),
    )
    .await
    .expect("the connector stops by itself")
    .unwrap_err()
    .to_string();
    assert!(error.contains(&stream_name), "{error}");
    assert!(error.contains("resnapshot"), "the remedy is named: {error}");

    config.stream.on_lost_history = LostHistoryPolicy::Resnapshot;
    let connector = start(&config).await;
    let mut reader = TopicReader::new(&[&config.topics.customer_change]);
    reader
        .read_until(DEADLINE, "the re-snapshotted customer", |r| {
            keys(r).contains(&id.to_hex())
        })
        .await;
    connector.stop().await;
}

/// Whether `namespace` exists with change-stream post-images enabled.
async fn has_post_images(namespace: &Namespace) -> bool {
    let database = stack().mongo_client().await.database(&namespace.database);
    let listed = database
        .run_command(doc! { "listCollections": 1, "filter": { "name": &namespace.collection } })
        .await
        .unwrap();
    let batch = listed
        .get_document("cursor")
        .and_then(|cursor| cursor.get_array("firstBatch"))
        .cloned()
        .unwrap_or_default();
    batch.iter().any(|entry| {
        entry.as_document().is_some_and(|entry| {
            entry.get_str("name") == Ok(namespace.collection.as_str())
                && entry
                    .get_document("options")
                    .and_then(|o| o.get_document("changeStreamPreAndPostImages"))
                    .and_then(|o| o.get_bool("enabled"))
                    .unwrap_or(false)
        })
    })
}

#[tokio::test]
async fn a_dropped_collection_is_watched_again_when_it_comes_back() {
    let config = test_config();
    let connector = start(&config).await;
    let customers = collection(&config.sources.accounts).await;
    assert!(
        has_post_images(&config.sources.accounts).await,
        "enabled at start"
    );
    let before = ObjectId::new();
    customers
        .insert_one(customer(before, "Before"))
        .await
        .unwrap();
    let mut reader = TopicReader::new(&[&config.topics.customer_change]);
    reader
        .read_until(DEADLINE, "the customer before the drop", |r| !r.is_empty())
        .await;

    customers.drop().await.unwrap();
    // After the invalidate the connector recreates the collection with post-images, so the
    // application's next writes are captured exactly.
    storefront_tests::eventually(DEADLINE, "post-images enabled again", async || {
        has_post_images(&config.sources.accounts)
            .await
            .then_some(())
    })
    .await;
    let after = ObjectId::new();
    customers
        .insert_one(customer(after, "After"))
        .await
        .unwrap();
    customers
        .update_one(
            doc! { "_id": after },
            doc! { "$set": { "name.firstName": "Updated" } },
        )
        .await
        .unwrap();
    let records = reader
        .read_until(DEADLINE, "the customer's update after the drop", |r| {
            r.iter()
                .filter(|r| r.key.as_deref() == Some(after.to_hex().as_str()))
                .count()
                >= 2
        })
        .await
        .to_vec();
    connector.stop().await;
    let last = records.last().unwrap().json();
    assert_eq!(last["name"]["firstName"], "Updated");
}

#[tokio::test]
async fn wrong_types_and_oversized_events_are_dead_letters_with_reasons() {
    let mut config = test_config();
    config.stream.max_event_bytes = 4096;
    let connector = start(&config).await;
    let customers = collection(&config.sources.accounts).await;
    let wrong_type = ObjectId::new();
    let mut numbered = customer(wrong_type, "Typed");
    numbered.insert("contact", 42);
    customers.insert_one(numbered).await.unwrap();
    let oversized = ObjectId::new();
    customers
        .insert_one(customer(oversized, &"x".repeat(5000)))
        .await
        .unwrap();
    let fine = ObjectId::new();
    customers.insert_one(customer(fine, "Fine")).await.unwrap();

    let mut dead = TopicReader::new(&[&config.stream.dead_letter_topic]);
    let letters = dead
        .read_until(DEADLINE, "two dead letters", |r| r.len() >= 2)
        .await
        .to_vec();
    let mut events = TopicReader::new(&[&config.topics.customer_change]);
    events
        .read_until(DEADLINE, "the fine customer", |r| {
            keys(r).contains(&fine.to_hex())
        })
        .await;
    let (status, metrics) = storefront_tests::http_get(connector.connector.http_addr, "/metrics")
        .await
        .unwrap();
    connector.stop().await;

    let reason_for = |id: ObjectId| {
        letters
            .iter()
            .find(|l| l.json()["_id"]["$oid"] == id.to_hex())
            .map(|l| l.header("dlq_reason").to_owned())
            .unwrap_or_else(|| panic!("no dead letter for {id}"))
    };
    assert!(
        reason_for(wrong_type).contains("contact"),
        "{}",
        reason_for(wrong_type)
    );
    assert!(
        reason_for(oversized).contains("max_event_bytes"),
        "{}",
        reason_for(oversized)
    );
    // Each carries its change's real operation and cluster time.
    for letter in &letters {
        assert_eq!(letter.header("dlq_operation"), "insert");
        let cluster_time: u64 = letter.header("dlq_clustertime").parse().unwrap();
        assert!(cluster_time >> 32 > 1_700_000_000, "{cluster_time}");
    }
    assert_eq!(status, 200);
    let accounts = config.sources.accounts.to_string();
    let line = |name: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(name) && l.contains(&accounts))
            .unwrap_or_else(|| panic!("no {name} for {accounts} in:\n{metrics}"))
            .to_owned()
    };
    assert!(
        line("cdc_dead_letters_total").ends_with(" 2"),
        "{}",
        line("cdc_dead_letters_total")
    );
    assert!(
        line("cdc_changes_read_total").ends_with(" 3"),
        "{}",
        line("cdc_changes_read_total")
    );
    line("cdc_checkpoint_age_seconds");
    line("cdc_seconds_behind_source");
}

/// One customer's orders in every stored price shape, one of them malformed: the malformed
/// order is dead-lettered once (not again on each later change that leaves it as it was), the
/// customer's other orders get their requests, and the bad order gets its own once repaired.
#[tokio::test]
async fn a_bad_order_is_dead_lettered_once_and_never_blocks_its_customer() {
    let mut config = test_config();
    // One partition per topic, so the sentinel is read only after everything published before.
    config.new_topics.partitions = 1;
    let connector = start(&config).await;
    let orders = collection(&config.sources.orders).await;
    let priced = |guid: &str, price: mongodb::bson::Bson| {
        let mut order = order(
            guid,
            vec![status("CREATED", 1_000), status("APPROVED", 2_000)],
        );
        order
            .get_array_mut("orderItems")
            .unwrap()
            .first_mut()
            .and_then(|item| item.as_document_mut())
            .and_then(|item| item.get_document_mut("product").ok())
            .unwrap()
            .insert("price", price);
        order
    };
    let decimal = |text: &str| mongodb::bson::Bson::Decimal128(text.parse().unwrap());
    let id = ObjectId::new();
    let mut document = customer(id, "Mixed");
    document.remove("creditCards");
    document.insert(
        "orders",
        vec![
            priced("order-string", "3.99".into()),
            priced("order-bad", "3,99".into()),
        ],
    );
    orders.insert_one(document).await.unwrap();
    let mut reader = TopicReader::new(&[
        &config.topics.fulfillment_request,
        &config.stream.dead_letter_topic,
    ]);
    let requested = |records: &[Record], guid: &str| {
        records
            .iter()
            .any(|r| r.topic == config.topics.fulfillment_request && r.key.as_deref() == Some(guid))
    };
    reader
        .read_until(DEADLINE, "the good order's request", |r| {
            requested(r, "order-string")
        })
        .await;
    // Later changes that leave the bad order as it was: a new order, then a name change.
    orders
        .update_one(
            doc! { "_id": id },
            doc! { "$push": { "orders": priced("order-decimal", decimal("3.99")) } },
        )
        .await
        .unwrap();
    reader
        .read_until(DEADLINE, "the decimal order's request", |r| {
            requested(r, "order-decimal")
        })
        .await;
    orders
        .update_one(
            doc! { "_id": id },
            doc! { "$set": { "name.firstName": "Renamed", "orders.2.note": "gift" } },
        )
        .await
        .unwrap();
    // The repair: the bad order gets its request.
    orders
        .update_one(
            doc! { "_id": id },
            doc! { "$set": { "orders.1.orderItems.0.product.price": 3.99 } },
        )
        .await
        .unwrap();
    // Sentinels, one per topic (records of two topics may arrive in any order): another
    // customer with a good order (its request comes last) and a bad one (its dead letter
    // comes last).
    let sentinel = ObjectId::new();
    let mut document = customer(sentinel, "Sentinel");
    document.insert(
        "orders",
        vec![
            priced("sentinel-good", "3.99".into()),
            priced("sentinel-bad", mongodb::bson::Bson::Boolean(true)),
        ],
    );
    orders.insert_one(document).await.unwrap();
    let records = reader
        .read_until(DEADLINE, "both sentinels", |r| {
            let seen = |key: &str| r.iter().any(|r| r.key.as_deref() == Some(key));
            seen("sentinel-good") && seen("sentinel-bad")
        })
        .await
        .to_vec();
    connector.stop().await;

    let requests: Vec<&Record> = records
        .iter()
        .filter(|r| r.topic == config.topics.fulfillment_request)
        .collect();
    assert_eq!(
        keys(&requests.iter().map(|r| (*r).clone()).collect::<Vec<_>>()),
        [
            "order-string",
            "order-decimal",
            "order-bad",
            "sentinel-good"
        ]
    );
    for request in &requests {
        // Every stored shape is the JSON number 3.99 in the event, whatever BSON type held it.
        let body = String::from_utf8(request.payload.clone().unwrap()).unwrap();
        assert!(body.contains(r#""price":3.99"#), "{body}");
    }
    for request in &requests[..3] {
        assert_eq!(request.json()["customerId"], id.to_hex());
    }
    let letters: Vec<&Record> = records
        .iter()
        .filter(|r| r.topic == config.stream.dead_letter_topic)
        .collect();
    let letter_keys: Vec<&str> = letters.iter().filter_map(|r| r.key.as_deref()).collect();
    assert_eq!(
        letter_keys,
        ["order-bad", "sentinel-bad"],
        "one dead letter per defect"
    );
    let letter = letters[0];
    assert_eq!(
        letter.header("dlq_field"),
        "orders.1.orderItems.0.product.price"
    );
    assert_eq!(letter.header("dlq_entry"), "orders.1");
    assert!(
        letter.header("dlq_reason").contains("order order-bad"),
        "{}",
        letter.header("dlq_reason")
    );
    assert_eq!(letter.header("dlq_operation"), "insert");
    assert_eq!(
        letter.header("dlq_document_id"),
        format!(r#"{{"$oid":"{}"}}"#, id.to_hex())
    );
    // The real change's cluster time: the same as the request published from that change.
    assert_eq!(
        letter.header("dlq_clustertime"),
        requests[0].header("ce_clustertime")
    );
    assert_eq!(letter.json()["guid"], "order-bad", "the body is the order");
}

/// A request already published is not dead-lettered when a later change would make it too large
/// (nothing is kept back); a request too large from the start is, keyed by its order.
#[tokio::test]
async fn only_requests_kept_back_are_dead_lettered_as_too_large() {
    let mut config = test_config();
    config.new_topics.partitions = 1;
    config.stream.max_event_bytes = 2_000;
    let connector = start(&config).await;
    let orders = collection(&config.sources.orders).await;
    let approved = |guid: &str| {
        order(
            guid,
            vec![status("CREATED", 1_000), status("APPROVED", 2_000)],
        )
    };
    let id = ObjectId::new();
    let mut document = customer(id, "Small");
    document.insert("orders", vec![approved("order-small")]);
    orders.insert_one(document).await.unwrap();
    let mut reader = TopicReader::new(&[
        &config.topics.fulfillment_request,
        &config.stream.dead_letter_topic,
    ]);
    reader
        .read_until(DEADLINE, "the request", |r| !r.is_empty())
        .await;
    // The shipping address grows past the limit while the order is still APPROVED.
    orders
        .update_one(
            doc! { "_id": id },
            doc! { "$set": { "addresses.0.description": "x".repeat(3_000) } },
        )
        .await
        .unwrap();
    let sentinel = ObjectId::new();
    let mut document = customer(sentinel, &"y".repeat(3_000));
    document.insert("orders", vec![approved("order-large")]);
    orders.insert_one(document).await.unwrap();
    // A request sentinel too: records of two topics may arrive in any order.
    let last = ObjectId::new();
    let mut document = customer(last, "Last");
    document.insert("orders", vec![approved("order-last")]);
    orders.insert_one(document).await.unwrap();
    let records = reader
        .read_until(DEADLINE, "both sentinels", |r| {
            let seen = |key: &str| r.iter().any(|r| r.key.as_deref() == Some(key));
            seen("order-large") && seen("order-last")
        })
        .await
        .to_vec();
    connector.stop().await;
    let on = |topic: &str| -> Vec<&str> {
        records
            .iter()
            .filter(|r| r.topic == topic)
            .map(|r| r.key.as_deref().unwrap_or_default())
            .collect()
    };
    assert_eq!(
        on(&config.topics.fulfillment_request),
        ["order-small", "order-last"]
    );
    assert_eq!(on(&config.stream.dead_letter_topic), ["order-large"]);
    let letter = records
        .iter()
        .find(|r| r.topic == config.stream.dead_letter_topic)
        .unwrap();
    assert!(letter.header("dlq_reason").contains("max_event_bytes"));
}
