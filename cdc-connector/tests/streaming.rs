//! The connector end to end on the local stack: MongoDB changes in, domain events in Kafka out.
//! Each test gets its own databases, topics and checkpoint store, and runs the connector
//! in-process (or as a child process for `kill -9`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use cdc_connector::ConnectorError;
use cdc_connector::checkpoint::CheckpointStore;
use cdc_connector::config::{
    CheckpointSettings, ConnectorConfig, LostHistoryPolicy, SnapshotMode, StreamSettings,
};
use mongodb::Collection;
use mongodb::bson::oid::ObjectId;
use mongodb::bson::{Document, doc};
use mongodb::change_stream::event::ResumeToken;
use storefront_plumbing::settings::HttpSettings;
use storefront_schemas::metadata::SourcePosition;
use storefront_schemas::topology::{Namespace, StorefrontNamespaces, StorefrontTopics};
use storefront_tests::guard::{Watermarks, read_all};
use storefront_tests::{
    DEADLINE, Daemon, InProcess, Record, TopicReader, eventually, free_port, next_events, stack,
    unique, until_healthy,
};

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

type Running = InProcess<ConnectorError>;

/// The connector with `config`, in this process, once healthy.
async fn start(config: &ConnectorConfig) -> Running {
    InProcess::start(|stop| cdc_connector::start(config.clone(), stop)).await
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
    reader
        .read_until(DEADLINE, "the sentinel request", |r| {
            r.iter().any(|r| r.key.as_deref() == Some("order-2"))
        })
        .await;
    connector.stop().await;
    // Everything the topic holds, not only what came before the sentinel.
    let records = read_all(&mut reader, &[&config.topics.fulfillment_request], DEADLINE).await;

    assert_eq!(keys(&records), ["order-1", "order-2"]);
    // Each request whole, as the customer and the order were when the order was approved.
    let request = |guid: &str, statuses: serde_json::Value, approved_at: i64| {
        serde_json::json!({
            "timestamp": approved_at,
            "name": { "title": "Ms", "firstName": "Ada", "lastName": "Lovelace" },
            "contact": { "primaryPhone": "555-0100", "email": "Ada@example.com" },
            "address": {
                "type": "SHIPPING", "description": "home", "address1": "1 Main St",
                "city": "London", "state": "LDN", "postalCode": "N1"
            },
            "order": {
                "guid": guid,
                "orderStatusEvents": statuses,
                "orderItems": [{
                    "product": {
                        "guid": "p-1", "title": "Lamp", "description": "A lamp", "price": 19.5
                    },
                    "quantity": 2
                }]
            },
            "customerId": id.to_hex()
        })
    };
    assert_eq!(
        records[0].json(),
        request(
            "order-1",
            serde_json::json!([
                { "timestamp": 1000, "orderStatusType": "CREATED" },
                { "timestamp": 2000, "orderStatusType": "APPROVED" }
            ]),
            2000
        )
    );
    assert_eq!(
        records[1].json(),
        request(
            "order-2",
            serde_json::json!([
                { "timestamp": 4000, "orderStatusType": "CREATED" },
                { "timestamp": 5000, "orderStatusType": "APPROVED" }
            ]),
            5000
        )
    );
    for record in &records {
        assert_eq!(
            record.header("ce_type"),
            "storefront.order.fulfillment-requested"
        );
    }
    assert_ne!(records[0].header("ce_id"), records[1].header("ce_id"));
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

/// Existing documents are snapshotted, and changes made *while* the snapshot runs are not lost:
/// the stream is opened before the collection is read, so an update and a delete of documents
/// the snapshot already published, and new inserts, all made while the connector still reports
/// the snapshot unfinished, are published after it. Documents nobody touched are published once.
#[tokio::test]
async fn existing_documents_are_snapshotted_then_streamed_without_a_gap() {
    const BEFORE: usize = 5_000;
    let mut config = test_config();
    // Few records in flight: the snapshot takes long enough for the test to write during it.
    config.stream.max_in_flight = 10;
    let topic = config.topics.customer_change.clone();
    let customers = collection(&config.sources.accounts).await;
    let before: Vec<ObjectId> = (0..BEFORE).map(|_| ObjectId::new()).collect();
    for chunk in before.chunks(1_000) {
        customers
            .insert_many(chunk.iter().map(|id| customer(*id, "Before")))
            .await
            .unwrap();
    }
    // Not waiting for health: it is not ready until the snapshot is done.
    let connector = Running::launch(|stop| cdc_connector::start(config.clone(), stop)).await;
    let http = connector.http_addr();

    // Once the snapshot has published some documents: update and delete some of those, insert
    // new ones.
    let mut reader = TopicReader::new(&[&topic]);
    let snapshotted: Vec<ObjectId> = keys(
        reader
            .read_until(DEADLINE, "the snapshot's first records", |r| r.len() >= 40)
            .await,
    )
    .iter()
    .map(|key| ObjectId::parse_str(key).unwrap())
    .collect();
    let (updated, deleted) = snapshotted[..40].split_at(30);
    customers
        .update_many(
            doc! { "_id": { "$in": updated.to_vec() } },
            doc! { "$set": { "name.firstName": "During" } },
        )
        .await
        .unwrap();
    customers
        .delete_many(doc! { "_id": { "$in": deleted.to_vec() } })
        .await
        .unwrap();
    let inserted: Vec<ObjectId> = (0..25).map(|_| ObjectId::new()).collect();
    customers
        .insert_many(inserted.iter().map(|id| customer(*id, "Inserted")))
        .await
        .unwrap();
    // Those writes happened during the snapshot: the stream is not ready until it is done.
    let (status, body) = storefront_tests::http_get(http, "/health").await.unwrap();
    assert_eq!(
        status, 503,
        "the snapshot finished before the test wrote during it (make it longer): {body}"
    );
    assert!(body.contains("starting"), "{body}");

    until_healthy(http).await;
    // A sentinel after the snapshot: once it is read, everything before it was published.
    let sentinel = ObjectId::new();
    customers
        .insert_one(customer(sentinel, "Sentinel"))
        .await
        .unwrap();
    reader
        .read_until(DEADLINE, "the sentinel", |r| {
            keys(r).contains(&sentinel.to_hex())
        })
        .await;
    connector.stop().await;
    let records = read_all(&mut reader, &[&topic], DEADLINE).await;

    let mut per_key: BTreeMap<String, Vec<&Record>> = BTreeMap::new();
    for record in &records {
        per_key
            .entry(record.key.clone().unwrap())
            .or_default()
            .push(record);
    }
    let first_name = |record: &Record| {
        record.payload.as_ref().map(|_| {
            record.json()["name"]["firstName"]
                .as_str()
                .unwrap()
                .to_owned()
        })
    };
    let last = |id: &ObjectId| {
        let copies = per_key
            .get(&id.to_hex())
            .unwrap_or_else(|| panic!("nothing published for {id}"));
        first_name(copies.last().unwrap())
    };
    for id in updated {
        assert_eq!(
            last(id).as_deref(),
            Some("During"),
            "{id}: the update made during the snapshot is lost"
        );
    }
    for id in deleted {
        assert_eq!(
            last(id),
            None,
            "{id}: the delete made during the snapshot is lost"
        );
    }
    for id in &inserted {
        assert_eq!(last(id).as_deref(), Some("Inserted"), "{id}");
    }
    // Documents nobody touched: exactly one record each, from the snapshot.
    let touched: BTreeSet<String> = snapshotted[..40]
        .iter()
        .chain(&inserted)
        .map(|id| id.to_hex())
        .collect();
    for id in &before {
        let key = id.to_hex();
        if touched.contains(&key) {
            continue;
        }
        let copies: Vec<Option<String>> = per_key
            .get(&key)
            .unwrap_or_else(|| panic!("{key} was not snapshotted"))
            .iter()
            .map(|r| first_name(r))
            .collect();
        assert_eq!(copies, [Some("Before".to_owned())], "{key}");
    }
    assert_eq!(per_key[&sentinel.to_hex()].len(), 1);
    assert_eq!(
        per_key.len(),
        BEFORE + inserted.len() + 1,
        "records for documents that never existed"
    );
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
    events
        .read_until(DEADLINE, "the good customer", |r| !r.is_empty())
        .await;
    // The good change was read after the bad one: once the connector stopped (delivering what
    // it had in flight), both topics hold everything both changes produced.
    connector.stop().await;
    let published = read_all(&mut events, &[&config.topics.customer_change], DEADLINE).await;
    let mut dead = TopicReader::new(&[&config.stream.dead_letter_topic]);
    let letters = read_all(&mut dead, &[&config.stream.dead_letter_topic], DEADLINE).await;

    assert_eq!(
        keys(&letters),
        [format!(r#"{{"$oid":"{}"}}"#, bad.to_hex())],
        "one dead letter, keyed by the bad document's _id"
    );
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

/// `kill -9` of the connector process, three times in the middle of a burst of 10,000 inserts
/// written while it was stopped, so that each restarted process has a backlog to publish and
/// records in flight when it is killed.
///
/// At each kill the topic holds only part of the burst and the process had saved a checkpoint, and
/// every change that checkpoint covers is already in Kafka (a token is saved only after Kafka
/// acknowledged everything before it). In the end every change is in Kafka; a change appears more
/// than once only if it had been published after the checkpoint of a kill, once more per such kill
/// at most (a restart resumes from its checkpoint, not from before it), and every copy carries the
/// change's cluster time and one event id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_a_burst_loses_no_change() {
    const BURST: usize = 10_000;
    const KILLS: usize = 3;
    let mut config = test_config();
    // A checkpoint every few milliseconds, and a producer that waits up to 50 ms to fill a batch:
    // the saved token stays right behind the acknowledged records while there are nearly always
    // records sent but not yet acknowledged, so a token saved before its record's
    // acknowledgement shows at the polls and kills below.
    config.checkpoints.interval_ms = 5;
    config
        .kafka
        .properties
        .insert("linger.ms".into(), "50".into());
    // Each restart waits for the killed process's lease to expire: keep that short.
    config.lease.ttl_ms = 1_000;
    config.lease.renew_interval_ms = 300;
    let topic = config.topics.customer_change.clone();
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("connector.toml");
    let mut file_config = config.clone();
    file_config.http = HttpSettings::on_port(free_port());
    file_config.log.filter = "warn".into();
    std::fs::write(&config_path, toml::to_string(&file_config).unwrap()).unwrap();
    let binary = Path::new(env!("CARGO_BIN_EXE_cdc-connector"));
    let args = ["--config", config_path.to_str().unwrap(), "run"];
    let client = stack().mongo_client().await;
    let store = CheckpointStore::new(&client, &config.checkpoints);
    let stream_name = config.sources.accounts.to_string();
    let saved_position = async || -> Option<u64> {
        let checkpoint = store.load(&stream_name).await.unwrap()?;
        checkpoint.position.map(SourcePosition::as_u64)
    };
    // Claims the checkpoint after each kill (and never saves).
    let settled = CheckpointStore::new(&client, &config.checkpoints);
    let watermarks = Watermarks::new();

    // A first process publishes and checkpoints one change, and stops.
    let mut daemon = Daemon::spawn(binary, &args);
    until_healthy(file_config.http.listen).await;
    let customers = collection(&config.sources.accounts).await;
    let first = ObjectId::new();
    customers
        .insert_one(customer(first, "First"))
        .await
        .unwrap();
    // On a timeout, say what there was: the checkpoint document (a claim only, a token without
    // a position, or nothing) and whether the change reached Kafka.
    let deadline = std::time::Instant::now() + DEADLINE;
    while saved_position().await.is_none() {
        if std::time::Instant::now() > deadline {
            let raw = client
                .database(&config.checkpoints.database)
                .collection::<Document>(&config.checkpoints.collection)
                .find_one(doc! { "_id": &stream_name })
                .await
                .unwrap();
            panic!(
                "timed out waiting for the first change's checkpoint: checkpoint {raw:?}, \
                 {} record(s) in {topic}, process running: {}",
                watermarks.record_count(&[&topic]),
                daemon.is_running()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    daemon.signal("TERM");
    assert!(daemon.exit_status().await.success());

    // The burst, and the source's own account of each change's cluster time (to tell which
    // changes a checkpoint covers).
    let mut source = customers.watch().await.unwrap();
    let ids: Vec<ObjectId> = (0..BURST).map(|_| ObjectId::new()).collect();
    for chunk in ids.chunks(1_000) {
        customers
            .insert_many(chunk.iter().map(|id| customer(*id, "Burst")))
            .await
            .unwrap();
    }
    let source_position: BTreeMap<String, u64> = next_events(&mut source, BURST)
        .await
        .iter()
        .map(|change| {
            let key = change.document_key.as_ref().unwrap().get_object_id("_id");
            let time = change.cluster_time.unwrap();
            let position = SourcePosition {
                seconds: time.time,
                increment: time.increment,
            };
            (key.unwrap().to_hex(), position.as_u64())
        })
        .collect();
    assert_eq!(source_position.len(), BURST);
    let mut positions: Vec<u64> = source_position.values().copied().collect();
    positions.sort_unstable();
    let last_change = *positions.last().unwrap();
    // How many changes of the burst lie in (after, upto].
    let changes_between = |after: u64, upto: u64| {
        positions.partition_point(|p| *p <= upto) - positions.partition_point(|p| *p <= after)
    };

    // Follows one process, every few milliseconds (the burst moves fast), until `done(records in
    // Kafka, checkpoint)`. A process resumed after `resumed_from` publishes every later change,
    // each as a new record, so at every instant the records it added to Kafka are at least the
    // changes its checkpoint covers (read first; the count only grows). A checkpoint saved
    // before Kafka's acknowledgement fails this within a few polls.
    let follow = async |what: &str,
                        resumed_from: u64,
                        records_before: i64,
                        done: &dyn Fn(i64, u64) -> bool| {
        let started = std::time::Instant::now();
        loop {
            let saved = saved_position().await.unwrap();
            let records = watermarks.record_count(&[&topic]);
            let covered = changes_between(resumed_from, saved);
            assert!(
                records - records_before >= covered as i64,
                "{what}: the checkpoint at {} covers {covered} changes after {}, but Kafka has \
                 acknowledged only {} records since",
                SourcePosition::from_u64(saved),
                SourcePosition::from_u64(resumed_from),
                records - records_before
            );
            if done(records, saved) {
                return;
            }
            assert!(started.elapsed() < DEADLINE, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };

    let mut reader = TopicReader::new(&[&topic]);
    // Per kill: the checkpoint's position, and the keys Kafka held when the process died.
    let mut kills: Vec<(u64, BTreeSet<String>)> = Vec::new();
    let mut last_position = saved_position().await.unwrap();
    let mut records_before = watermarks.record_count(&[&topic]);
    for kill in 1..=KILLS {
        // Killed as soon as this process has published and saved a checkpoint past the previous
        // one: early, so the kill lands inside the burst however fast the pipeline runs (a kill
        // at a fixed share of the burst came too late once a restart published the rest within
        // one poll of this loop).
        let threshold = records_before + 1;
        let mut daemon = Daemon::spawn(binary, &args);
        follow(
            &format!("kill {kill}"),
            last_position,
            records_before,
            &|records, saved| records >= threshold && saved > last_position,
        )
        .await;
        daemon.signal("KILL");
        daemon.exit_status().await;
        // What the next process resumes from: the test claims the checkpoint as the next process
        // will. The killed process's last save may still reach the server after its death (it was
        // in the socket's buffer); the claim includes it if it came first and refuses it after.
        let position = settled
            .claim(&stream_name)
            .await
            .unwrap()
            .and_then(|checkpoint| checkpoint.position)
            .unwrap()
            .as_u64();
        // And what Kafka holds: nothing writes to the topic until the restart (read until two
        // counts agree, in case a request sent just before the kill was still being appended).
        assert!(
            position > last_position,
            "kill {kill}: the checkpoint went back"
        );
        let mut records = read_all(&mut reader, &[&topic], DEADLINE).await;
        while watermarks.record_count(&[&topic]) != records.len() as i64 {
            records = read_all(&mut reader, &[&topic], DEADLINE).await;
        }
        let published: BTreeSet<String> = keys(&records).into_iter().collect();
        assert!(
            published.len() < BURST + 1,
            "kill {kill}: Kafka already held the whole burst, so the kill was not in the middle \
             of it"
        );
        eprintln!(
            "kill {kill}: {} records ({} changes) in Kafka, checkpoint at {}",
            records.len(),
            published.len(),
            SourcePosition::from_u64(position)
        );
        // Every change the checkpoint covers was in Kafka when the process died.
        let missing: Vec<&String> = source_position
            .iter()
            .filter(|(key, at)| **at <= position && !published.contains(*key))
            .map(|(key, _)| key)
            .collect();
        assert!(
            missing.is_empty(),
            "kill {kill}: the checkpoint covered {} changes Kafka did not hold, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(3)]
        );
        kills.push((position, published));
        last_position = position;
        records_before = records.len() as i64;
    }
    // The last process publishes the rest: done once its checkpoint covers the last change.
    let mut daemon = Daemon::spawn(binary, &args);
    // Healthy before anything else: a SIGTERM that arrived before the process installed its
    // handler would end it by the signal's default action.
    until_healthy(file_config.http.listen).await;
    follow(
        "the last process",
        last_position,
        records_before,
        &|_, saved| saved >= last_change,
    )
    .await;
    daemon.signal("TERM");
    assert!(daemon.exit_status().await.success());
    let records = read_all(&mut reader, &[&topic], DEADLINE).await;

    // Every change is in Kafka, each copy with the change's cluster time and one event id, and
    // no more copies than the kills that found it published but not yet checkpointed.
    let mut per_key: BTreeMap<String, Vec<&Record>> = BTreeMap::new();
    for record in &records {
        per_key
            .entry(record.key.clone().unwrap())
            .or_default()
            .push(record);
    }
    let missing: Vec<&String> = source_position
        .keys()
        .filter(|key| !per_key.contains_key(*key))
        .collect();
    assert!(
        missing.is_empty(),
        "{} changes lost, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(3)]
    );
    assert_eq!(
        per_key.len(),
        BURST + 1,
        "nothing but the first change and the burst"
    );
    assert_eq!(per_key[&first.to_hex()].len(), 1, "the first change");
    let mut duplicates = 0;
    for (key, position) in &source_position {
        let copies = &per_key[key];
        let ids: BTreeSet<&str> = copies.iter().map(|r| r.header("ce_id")).collect();
        assert_eq!(
            ids.len(),
            1,
            "{key}: copies with different event ids: {ids:?}"
        );
        for copy in copies {
            assert_eq!(copy.header("ce_clustertime"), position.to_string(), "{key}");
        }
        let republished_by = kills
            .iter()
            .filter(|(checkpoint, published)| position > checkpoint && published.contains(key))
            .count();
        assert!(
            copies.len() <= 1 + republished_by,
            "{key} at {} was published {} times, but only {republished_by} kill(s) found it \
             published after their checkpoint: a restart resumed from before its checkpoint",
            SourcePosition::from_u64(*position),
            copies.len()
        );
        duplicates += copies.len() - 1;
    }
    eprintln!(
        "kill -9 test: {} records for {} changes ({duplicates} duplicates) over {KILLS} kills",
        records.len(),
        BURST + 1
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
    let lost = token_at(1);
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

/// A resume token of cluster time `seconds`.1 (the test server's and MongoDB's `_data` layout).
fn token_at(seconds: u64) -> ResumeToken {
    mongodb::bson::from_document(doc! {
        "_data": format!("82{:016X}{:016X}00", seconds << 32, 1)
    })
    .unwrap()
}

/// One writer per checkpoint: once a process claimed a stream, an earlier owner's save is refused
/// with the new owner named, even a first save when nothing had been saved before the claim.
#[tokio::test]
async fn a_claimed_checkpoint_refuses_the_earlier_owners_saves() {
    let config = test_config();
    let client = stack().mongo_client().await;
    let stream = config.sources.accounts.to_string();
    let first = CheckpointStore::new(&client, &config.checkpoints);
    let second = CheckpointStore::new(&client, &config.checkpoints);
    assert_ne!(first.owner(), second.owner());

    assert_eq!(
        second.claim(&stream).await.unwrap(),
        None,
        "nothing saved yet"
    );
    let refused = first.save(&stream, &token_at(7), None, &[]).await;
    let message = refused
        .expect_err("the first owner's first save")
        .to_string();
    assert!(message.contains(second.owner()), "{message}");

    second.save(&stream, &token_at(8), None, &[]).await.unwrap();
    let claimed = first.claim(&stream).await.unwrap().expect("saved");
    assert_eq!(claimed.resume_token, token_at(8));
    assert_eq!(claimed.owner.as_deref(), Some(first.owner()));
    assert!(second.save(&stream, &token_at(9), None, &[]).await.is_err());
    first.save(&stream, &token_at(10), None, &[]).await.unwrap();
    let saved = first.load(&stream).await.unwrap().unwrap();
    assert_eq!(saved.resume_token, token_at(10));
}

/// A running connector whose stream another process claims stops with an error naming that
/// process at its next save, and leaves the claimed checkpoint as it was.
#[tokio::test]
async fn a_connector_whose_checkpoint_is_claimed_by_another_process_stops() {
    let config = test_config();
    let client = stack().mongo_client().await;
    let stream = config.sources.accounts.to_string();
    let store = CheckpointStore::new(&client, &config.checkpoints);
    // Healthy first, so the change below is streamed (a snapshot's checkpoint has no position).
    let running = start(&config).await;
    let customers = collection(&config.sources.accounts).await;
    customers
        .insert_one(customer(ObjectId::new(), "Before"))
        .await
        .unwrap();
    storefront_tests::eventually(DEADLINE, "the connector's first checkpoint", async || {
        store.load(&stream).await.unwrap()?.position
    })
    .await;

    let intruder = CheckpointStore::new(&client, &config.checkpoints);
    let claimed = intruder.claim(&stream).await.unwrap().unwrap();
    customers
        .insert_one(customer(ObjectId::new(), "After"))
        .await
        .unwrap();
    let error = running
        .wait()
        .await
        .expect_err("the connector stops by itself, with an error");
    let error = storefront_plumbing::errors::chain(&error);
    assert!(error.contains(&stream), "{error}");
    assert!(error.contains(intruder.owner()), "{error}");
    let after = store.load(&stream).await.unwrap().unwrap();
    assert_eq!(after, claimed, "the claimed checkpoint is unchanged");
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
    let (status, metrics) = storefront_tests::http_get(connector.http_addr(), "/metrics")
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

/// The `cdc_checkpoint_age_seconds` of `stream`, from `/metrics` at `addr`.
async fn checkpoint_age(addr: std::net::SocketAddr, stream: &str) -> Option<f64> {
    let (_, metrics) = storefront_tests::http_get(addr, "/metrics").await?;
    metrics
        .lines()
        .find(|line| line.starts_with("cdc_checkpoint_age_seconds") && line.contains(stream))?
        .rsplit(' ')
        .next()?
        .parse()
        .ok()
}

/// A stream whose token only its idle polls moved saves it every `checkpoints.idle_interval_ms`,
/// not at the progress interval: each save is a write to the source deployment, which moves
/// every stream's post-batch token again, so saving idle tokens as often as progress kept an idle
/// connector writing for ever. A published change is still saved at the progress interval.
#[tokio::test]
async fn idle_tokens_wait_for_the_idle_interval_and_progress_is_saved_at_once() {
    let mut config = test_config();
    config.stream.max_await_ms = 100;
    config.checkpoints.idle_interval_ms = 600_000;
    let connector = start(&config).await;
    let addr = connector.http_addr();
    let accounts = config.sources.accounts.to_string();
    // Writes to another collection move the idle streams' tokens at every poll (100 ms).
    let noise = collection(&Namespace::new(unique("noise"), "noise")).await;
    // The age counts from the stream's start, which on a loaded machine can be seconds before it
    // is healthy: measure 2 s of moving tokens from the first age seen.
    let first_age = eventually(DEADLINE, "the checkpoint age metric", async || {
        checkpoint_age(addr, &accounts).await
    })
    .await;
    let written = std::sync::atomic::AtomicI32::new(0);
    let idle_age = eventually(
        DEADLINE,
        "the idle accounts stream's checkpoint to age 2 s more while its token moves",
        async || {
            let n = written.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            noise.insert_one(doc! { "_id": n }).await.unwrap();
            checkpoint_age(addr, &accounts)
                .await
                .filter(|age| *age > first_age + 2.0)
        },
    )
    .await;
    assert!(written.into_inner() > 5, "the tokens moved meanwhile");
    collection(&config.sources.accounts)
        .await
        .insert_one(customer(ObjectId::new(), "Progress"))
        .await
        .unwrap();
    eventually(
        DEADLINE,
        "the accounts checkpoint saved after its change was published",
        async || {
            checkpoint_age(addr, &accounts)
                .await
                .filter(|age| *age < 1.0)
        },
    )
    .await;
    println!("idle checkpoint aged {idle_age:.1} s unsaved; progress saved at once");
    connector.stop().await;
}
