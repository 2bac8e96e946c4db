//! Each of the storefront's three flows alone, end to end through the connector and both
//! projectors running in this process (the whole storefront together is `end_to_end.rs`):
//!
//! - **customer**: Accounts writes only; every customer's copy in `customer.orders` ends as its
//!   last state (a delete marks the copy), and no other event is published.
//! - **order**: Orders writes only; exactly one fulfillment request per approved order, with the
//!   order's customer and shipping address, however often the order's document is saved again.
//! - **fulfillment**: Fulfillment writes only; every status it sets is appended once to its
//!   order's history in `customer.orders`, in timestamp order, and no request is published.
//!
//! Each test ends on sentinels written to the source collections after everything else, so
//! the counts it reads from the topics are final (one partition per topic, changes published in
//! order per collection).

use cdc_connector::config::SnapshotMode;
use futures::TryStreamExt;
use mongodb::bson::oid::ObjectId;
use mongodb::bson::{Bson, Document, doc};
use mongodb::{Client, Collection};
use storefront_schemas::topology::Namespace;
use storefront_tests::{DEADLINE, Record, TopicReader, eventually, guard, stack, unique};

mod pipeline;

use pipeline::{Pipeline, configs};

fn collection(client: &Client, namespace: &Namespace) -> Collection<Document> {
    client
        .database(&namespace.database)
        .collection(&namespace.collection)
}

async fn all(collection: &Collection<Document>) -> Vec<Document> {
    collection
        .find(doc! {})
        .sort(doc! { "_id": 1 })
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap()
}

fn customer(id: impl Into<Bson>, first_name: &str, city: &str) -> Document {
    doc! {
        "_id": id.into(),
        "_class": "demo.domain.Customer",
        "name": { "title": "Ms", "firstName": first_name, "lastName": "Flow" },
        "contact": { "primaryPhone": "555-0100", "email": format!("{first_name}@example.com") },
        "addresses": [{
            "type": "SHIPPING", "description": "home", "address1": "1 Main St",
            "city": city, "state": "ST", "postalCode": "00001"
        }],
        "creditCards": [{
            "type": "PRIMARY", "description": "visa", "number": "4111111111111111",
            "expiration": "12/30", "nameOnCard": "A Flow"
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
            "product": { "guid": "p-1", "title": "Lamp", "description": "A lamp", "price": "19.50" },
            "quantity": 2_i64
        }],
    }
}

/// A customer's document in `customer.orders` as the Orders application holds it.
fn customer_orders(id: &str, orders: Vec<Document>) -> Document {
    let mut document = customer(id, "Orders", "Ordertown");
    document.remove("creditCards");
    document.insert("orders", orders);
    document
}

/// The statuses of order `guid` in `customer.orders`, as (type, timestamp) pairs.
fn statuses_of(document: &Document, guid: &str) -> Vec<(String, i64)> {
    document
        .get_array("orders")
        .unwrap()
        .iter()
        .filter_map(Bson::as_document)
        .find(|order| order.get_str("guid") == Ok(guid))
        .map(|order| {
            order
                .get_array("orderStatusEvents")
                .unwrap()
                .iter()
                .filter_map(Bson::as_document)
                .map(|s| {
                    (
                        s.get_str("orderStatusType").unwrap().to_owned(),
                        s.get_i64("timestamp").unwrap(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Writes a sentinel to each source collection that publishes (an approved order, a fulfillment
/// status), waits until both events are in Kafka, and returns every record of the three topics:
/// final, since each collection's changes are published in order. `customer_sentinel` also
/// writes a customer and waits for its event.
async fn quiesce(
    client: &Client,
    connector: &cdc_connector::config::ConnectorConfig,
    projectors: &projectors::config::ProjectorsConfig,
    customer_sentinel: bool,
) -> Topics {
    let sources = &connector.sources;
    let approved = unique("sentinel_approved");
    let shipped = unique("sentinel_status");
    collection(client, &sources.orders)
        .insert_one(customer_orders(
            &unique("sentinel_customer"),
            vec![
                order(&approved, vec![status("APPROVED", 1)]),
                order(&shipped, vec![status("CREATED", 1)]),
            ],
        ))
        .await
        .unwrap();
    collection(client, &sources.fulfillment)
        .insert_one(doc! {
            "_id": &shipped,
            "order": { "guid": &shipped, "orderStatusEvents": [status("RECEIVED", 2)] },
        })
        .await
        .unwrap();
    let customer_key = ObjectId::new();
    if customer_sentinel {
        collection(client, &sources.accounts)
            .insert_one(customer(customer_key, "Sentinel", "End"))
            .await
            .unwrap();
    }
    let topics = &connector.topics;
    let mut reader = TopicReader::new(&[
        &topics.customer_change,
        &topics.fulfillment_request,
        &topics.order_status_change,
    ]);
    reader
        .read_until(DEADLINE, "the sentinels' events", |records| {
            let seen = |key: &str| records.iter().any(|r| r.key.as_deref() == Some(key));
            seen(&approved)
                && seen(&shipped)
                && (!customer_sentinel || seen(&customer_key.to_hex()))
        })
        .await;
    let sentinels = [approved, shipped, customer_key.to_hex()];
    let whole = async |topic: &str| -> Vec<Record> {
        let mut reader = TopicReader::new(&[topic]);
        guard::read_all(&mut reader, &[topic], DEADLINE)
            .await
            .into_iter()
            .filter(|r| !sentinels.iter().any(|s| r.key.as_deref() == Some(s)))
            .collect()
    };
    Topics {
        customers: whole(&topics.customer_change).await,
        requests: whole(&topics.fulfillment_request).await,
        statuses: whole(&topics.order_status_change).await,
        dead_letters: [
            whole(&connector.stream.dead_letter_topic).await,
            whole(&projectors.apply.dead_letter_topic).await,
        ]
        .concat(),
    }
}

/// Every record of each event topic, sentinels left out.
struct Topics {
    customers: Vec<Record>,
    requests: Vec<Record>,
    statuses: Vec<Record>,
    /// Both binaries' dead letters.
    dead_letters: Vec<Record>,
}

impl Topics {
    /// Nothing was dead-lettered by either binary.
    fn assert_no_dead_letters(&self) {
        assert!(self.dead_letters.is_empty(), "{:?}", self.dead_letters);
    }
}

fn keys(records: &[Record]) -> Vec<String> {
    let mut keys: Vec<String> = records.iter().filter_map(|r| r.key.clone()).collect();
    keys.sort();
    keys
}

#[tokio::test]
async fn the_customer_flow_alone_copies_every_customer_and_publishes_nothing_else() {
    let (connector, projectors) = configs();
    let pipeline = Pipeline::start(&connector, &projectors).await;
    let client = stack().mongo_client().await;
    let accounts = collection(&client, &connector.sources.accounts);
    let copies = collection(&client, &projectors.targets.orders);

    let (kept, renamed, deleted) = (ObjectId::new(), ObjectId::new(), "a-string-id");
    accounts
        .insert_many([
            customer(kept, "Kept", "Keptville"),
            customer(renamed, "Before", "Oldtown"),
            customer(deleted, "Gone", "Nowhere"),
        ])
        .await
        .unwrap();
    // A partial update, a Spring `save` (whole-document replace), a delete.
    accounts
        .update_one(
            doc! { "_id": kept },
            doc! { "$set": { "contact.email": "kept@new.example.com" } },
        )
        .await
        .unwrap();
    accounts
        .replace_one(
            doc! { "_id": renamed },
            customer(renamed, "After", "Newtown"),
        )
        .await
        .unwrap();
    accounts.delete_one(doc! { "_id": deleted }).await.unwrap();

    let copies = eventually(DEADLINE, "three customer copies, final", async || {
        let found = all(&copies).await;
        let final_state = found.len() == 3
            && found.iter().any(|d| {
                d.get_document("contact").and_then(|c| c.get_str("email"))
                    == Ok("kept@new.example.com")
            })
            && found.iter().any(|d| {
                d.get_document("name").and_then(|n| n.get_str("firstName")) == Ok("After")
            })
            && found
                .iter()
                .any(|d| d.get_bool("customerDeleted") == Ok(true));
        final_state.then_some(found)
    })
    .await;
    let sources = all(&accounts).await;
    for copy in &copies {
        assert_eq!(copy.get_array("orders").unwrap().len(), 0, "{copy}");
        assert!(
            !copy.contains_key("creditCards"),
            "no card in a copy: {copy}"
        );
        let Some(source) = sources.iter().find(|s| s.get("_id") == copy.get("_id")) else {
            assert_eq!(
                copy.get_str("_id"),
                Ok(deleted),
                "only the deleted one is gone"
            );
            continue;
        };
        for field in ["name", "contact", "addresses"] {
            assert_eq!(copy.get(field), source.get(field), "{field} of {copy}");
        }
        assert!(!copy.contains_key("customerDeleted"), "{copy}");
    }

    let topics = quiesce(&client, &connector, &projectors, false).await;
    pipeline.stop().await;
    assert_eq!(topics.customers.len(), 6, "one event per Accounts write");
    assert_eq!(
        topics
            .customers
            .iter()
            .filter(|r| r.payload.is_none())
            .count(),
        1,
        "the delete is one tombstone"
    );
    assert!(keys(&topics.requests).is_empty(), "no request");
    assert!(keys(&topics.statuses).is_empty(), "no status change");
    topics.assert_no_dead_letters();
}

#[tokio::test]
async fn the_order_flow_alone_requests_fulfillment_once_per_approved_order() {
    let (connector, projectors) = configs();
    let pipeline = Pipeline::start(&connector, &projectors).await;
    let client = stack().mongo_client().await;
    let orders = collection(&client, &connector.sources.orders);
    let requests = collection(&client, &projectors.targets.fulfillment);

    let customer_id = unique("customer");
    let (approved, later, rejected) = (unique("approved"), unique("later"), unique("rejected"));
    orders
        .insert_one(customer_orders(
            &customer_id,
            vec![
                order(
                    &approved,
                    vec![status("CREATED", 10), status("APPROVED", 11)],
                ),
                order(&later, vec![status("CREATED", 12)]),
                order(
                    &rejected,
                    vec![status("CREATED", 13), status("REJECTED", 14)],
                ),
            ],
        ))
        .await
        .unwrap();
    // The second order approved by a partial update, then the whole document saved again
    // (Spring) unchanged but for `_class`: neither may request anything twice.
    orders
        .update_one(
            doc! { "_id": &customer_id, "orders.guid": &later },
            doc! { "$push": { "orders.$.orderStatusEvents": status("APPROVED", 15) } },
        )
        .await
        .unwrap();
    let mut saved = orders
        .find_one(doc! { "_id": &customer_id })
        .await
        .unwrap()
        .unwrap();
    saved.insert("_class", "demo.domain.CustomerOrders.v2");
    orders
        .replace_one(doc! { "_id": &customer_id }, saved)
        .await
        .unwrap();

    let found = eventually(DEADLINE, "both requests", async || {
        let found = all(&requests).await;
        (found.len() >= 2).then_some(found)
    })
    .await;
    let topics = quiesce(&client, &connector, &projectors, true).await;
    pipeline.stop().await;
    let found: Vec<&Document> = found
        .iter()
        .filter(|d| !d.get_str("_id").unwrap_or_default().starts_with("sentinel"))
        .collect();
    let mut ids: Vec<&str> = found.iter().map(|d| d.get_str("_id").unwrap()).collect();
    ids.sort_unstable();
    let mut expected = vec![approved.as_str(), later.as_str()];
    expected.sort_unstable();
    assert_eq!(
        ids, expected,
        "one request per approved order, none for the rejected one"
    );
    for request in found {
        let name = request.get_document("name").unwrap();
        assert_eq!(name.get_str("firstName"), Ok("Orders"), "{request}");
        let address = request.get_document("address").unwrap();
        assert_eq!(address.get_str("type"), Ok("SHIPPING"));
        assert_eq!(address.get_str("city"), Ok("Ordertown"));
        let guid = request.get_str("_id").unwrap();
        let order = request.get_document("order").unwrap();
        assert_eq!(order.get_str("guid"), Ok(guid));
        let last = order
            .get_array("orderStatusEvents")
            .unwrap()
            .last()
            .and_then(Bson::as_document)
            .unwrap();
        assert_eq!(last.get_str("orderStatusType"), Ok("APPROVED"), "{request}");
    }
    assert_eq!(
        keys(&topics.requests),
        expected,
        "one request event per approved order"
    );
    assert!(topics.customers.is_empty(), "no customer event");
    assert!(
        topics.statuses.is_empty(),
        "a request in APPROVED is no status change"
    );
    topics.assert_no_dead_letters();
}

#[tokio::test]
async fn the_fulfillment_flow_alone_appends_each_status_once_in_order() {
    let (mut connector, projectors) = configs();
    let client = stack().mongo_client().await;
    let orders = collection(&client, &connector.sources.orders);
    let fulfillment = collection(&client, &connector.sources.fulfillment);
    // The state before the flow: an approved order and its request, already carried across.
    // The connector starts after it and does not snapshot, so the flow is all it sees.
    let customer_id = unique("customer");
    let guid = unique("order");
    orders
        .insert_one(customer_orders(
            &customer_id,
            vec![order(
                &guid,
                vec![status("CREATED", 100), status("APPROVED", 101)],
            )],
        ))
        .await
        .unwrap();
    let request = doc! {
        "_id": &guid,
        "_class": "demo.domain.Fulfillment",
        "timestamp": 101_i64,
        "order": order(&guid, vec![status("APPROVED", 101)]),
    };
    fulfillment.insert_one(request.clone()).await.unwrap();
    connector.stream.snapshot = SnapshotMode::Never;
    let pipeline = Pipeline::start(&connector, &projectors).await;

    // The Fulfillment application replaces the one-element status list each time: a whole
    // document save twice, a `$set` twice.
    let mut saved = request.clone();
    for (kind, timestamp) in [("PROCESSING", 102), ("SHIPPED", 103)] {
        saved.insert("order", order(&guid, vec![status(kind, timestamp)]));
        if kind == "SHIPPED" {
            saved.insert("shippingMethod", "Drone");
        }
        fulfillment
            .replace_one(doc! { "_id": &guid }, saved.clone())
            .await
            .unwrap();
    }
    for (kind, timestamp) in [("IN_TRANSIT", 104), ("RECEIVED", 105)] {
        fulfillment
            .update_one(
                doc! { "_id": &guid },
                doc! { "$set": { "order.orderStatusEvents": [status(kind, timestamp)] } },
            )
            .await
            .unwrap();
    }

    let expected: Vec<(String, i64)> = [
        ("CREATED", 100),
        ("APPROVED", 101),
        ("PROCESSING", 102),
        ("SHIPPED", 103),
        ("IN_TRANSIT", 104),
        ("RECEIVED", 105),
    ]
    .into_iter()
    .map(|(kind, t)| (kind.to_owned(), t))
    .collect();
    eventually(
        DEADLINE,
        "the whole history in customer.orders",
        async || {
            let document = orders.find_one(doc! { "_id": &customer_id }).await.ok()??;
            (statuses_of(&document, &guid) == expected).then_some(())
        },
    )
    .await;
    let topics = quiesce(&client, &connector, &projectors, true).await;
    pipeline.stop().await;
    let document = orders
        .find_one(doc! { "_id": &customer_id })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        statuses_of(&document, &guid),
        expected,
        "each status once, in order"
    );
    let mut changes: Vec<String> = topics
        .statuses
        .iter()
        .map(|r| {
            r.json()["orderStatusEvent"]["orderStatusType"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    changes.sort();
    assert_eq!(
        changes,
        ["IN_TRANSIT", "PROCESSING", "RECEIVED", "SHIPPED"],
        "one status change per status set"
    );
    assert!(topics.requests.is_empty(), "no request from status appends");
    assert!(topics.customers.is_empty(), "no customer event");
    topics.assert_no_dead_letters();
}
