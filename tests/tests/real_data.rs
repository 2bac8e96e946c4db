//! The storefront's real data through the whole pipeline: the corpus of real-shaped documents
//! (`schemas/fixtures/corpus/`: string, Decimal128, double and integer prices, NumberLong and
//! date timestamps, `_class`, string customer ids, malformed entries) is written to the source
//! collections while the connector and both projectors run in this process, and the projections
//! must end equal to what the corpus specifies. Then the test plays the Fulfillment application
//! (statuses flow back into the orders' histories) and the Orders application (a customer with a
//! bad order keeps getting requests for its other orders; the bad order is requested once
//! repaired), and ends on sentinels with exact counts: every request published exactly once, every
//! defect dead-lettered exactly once.

use std::collections::BTreeMap;

use mongodb::bson::{Bson, Document, doc};
use mongodb::{Collection, Database};
use storefront_schemas::documents::CustomerId;
use storefront_schemas::metadata::EventType;
use storefront_schemas::topology::Namespace;
use storefront_tests::corpus::{self, Case};
use storefront_tests::{Record, TopicReader, eventually, stack};

mod pipeline;

use pipeline::{Pipeline, configs};
use storefront_tests::DEADLINE;

async fn collection(namespace: &Namespace) -> Collection<Document> {
    database(namespace).await.collection(&namespace.collection)
}

async fn database(namespace: &Namespace) -> Database {
    stack().mongo_client().await.database(&namespace.database)
}

/// A stored document (or part of one) as JSON, with Decimal128 prices as the JSON numbers they
/// stand for and `_cdc` guard fields removed, to compare with event payloads.
fn as_json(value: &Bson) -> serde_json::Value {
    fn decimals_to_numbers(value: &mut serde_json::Value) {
        match value {
            serde_json::Value::Object(map) => {
                if let Some(serde_json::Value::String(text)) = map.get("$numberDecimal") {
                    *value = serde_json::from_str(text).unwrap();
                    return;
                }
                map.remove("_cdc");
                map.values_mut().for_each(decimals_to_numbers);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(decimals_to_numbers),
            _ => {}
        }
    }
    let mut json = value.clone().into_relaxed_extjson();
    decimals_to_numbers(&mut json);
    json
}

/// Every stored price of a fulfillment document, as BSON.
fn stored_prices(document: &Document) -> Vec<Bson> {
    document
        .get_document("order")
        .and_then(|order| order.get_array("orderItems"))
        .map(|items| {
            items
                .iter()
                .filter_map(|item| {
                    let product = item.as_document()?.get_document("product").ok()?;
                    product.get("price").cloned()
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The fulfillment document of order `guid` once it exists.
async fn fulfillment_of(requests: &Collection<Document>, guid: &str) -> Document {
    eventually(
        DEADLINE,
        &format!("the fulfillment of {guid}"),
        async || requests.find_one(doc! { "_id": guid }).await.unwrap(),
    )
    .await
}

/// The status types of order `guid` in `customer.orders`, once `done` holds for them.
async fn history_of(
    orders: &Collection<Document>,
    guid: &str,
    what: &str,
    done: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    eventually(DEADLINE, what, async || {
        let document = orders
            .find_one(doc! { "orders.guid": guid })
            .await
            .unwrap()?;
        let order = document
            .get_array("orders")
            .unwrap()
            .iter()
            .filter_map(Bson::as_document)
            .find(|order| order.get_str("guid") == Ok(guid))?
            .clone();
        let statuses: Vec<String> = order
            .get_array("orderStatusEvents")
            .unwrap()
            .iter()
            .filter_map(|status| status.as_document()?.get_str("orderStatusType").ok())
            .map(str::to_owned)
            .collect();
        done(&statuses).then_some(statuses)
    })
    .await
}

fn approved_order(guid: &str, price: Bson) -> Document {
    doc! {
        "_class": "demo.storefront.orders.model.Order",
        "guid": guid,
        "orderStatusEvents": [
            { "timestamp": 10_000_i64, "orderStatusType": "CREATED" },
            { "timestamp": 20_000_i64, "orderStatusType": "APPROVED" },
        ],
        "orderItems": [{
            "product": { "guid": "p-lamp", "title": "Lamp", "description": "A lamp", "price": price },
            "quantity": 1_i32,
        }],
    }
}

fn of_type(cases: &[Case], event_type: EventType) -> Vec<&corpus::ExpectedEvent> {
    cases
        .iter()
        .flat_map(|case| &case.events)
        .filter(|event| event.event_type == event_type.ce_type())
        .collect()
}

#[tokio::test]
async fn the_corpus_flows_end_to_end_and_the_projections_equal_what_it_specifies() {
    let (connector_config, projectors_config) = configs();
    let pipeline = Pipeline::start(&connector_config, &projectors_config).await;
    let sources = &connector_config.sources;
    let accounts = collection(&sources.accounts).await;
    let orders = collection(&sources.orders).await;
    let requests = collection(&sources.fulfillment).await;
    let cases = corpus::cases();

    // The Orders application's documents first (the orders projector then updates the customer
    // copies in place), then the customers, then the Fulfillment application's documents.
    for collection_name in [
        "customer.orders",
        "customer.accounts",
        "fulfillment.requests",
    ] {
        let target = match collection_name {
            "customer.orders" => &orders,
            "customer.accounts" => &accounts,
            _ => &requests,
        };
        for case in cases.iter().filter(|c| c.collection == collection_name) {
            target.insert_one(case.document.clone()).await.unwrap();
        }
    }

    // Customers: each published change is the customer copy in `customer.orders`, whose `_id`
    // is the Accounts `_id` (an ObjectId or a string).
    for event in of_type(&cases, EventType::CustomerChanged) {
        let id = CustomerId::from_key(&event.key).unwrap();
        let copy = eventually(DEADLINE, &format!("customer {}", event.key), async || {
            let copy = orders
                .find_one(doc! { "_id": Bson::from(id.clone()) })
                .await
                .unwrap()?;
            let json = as_json(&Bson::Document(copy.clone()));
            (json["name"] == event.payload["name"]).then_some(copy)
        })
        .await;
        let json = as_json(&Bson::Document(copy));
        for field in ["name", "contact", "addresses"] {
            assert_eq!(json[field], event.payload[field], "{}: {field}", event.key);
        }
    }

    // Requests: one fulfillment document per approved order, equal to the request, its prices
    // stored exactly as Decimal128.
    let expected_requests = of_type(&cases, EventType::FulfillmentRequested);
    assert!(expected_requests.len() >= 5);
    for event in &expected_requests {
        let document = fulfillment_of(&requests, &event.key).await;
        for price in stored_prices(&document) {
            assert!(
                matches!(price, Bson::Decimal128(_)),
                "{}: {price:?}",
                event.key
            );
        }
        let json = as_json(&Bson::Document(document));
        for field in ["timestamp", "name", "contact", "address"] {
            assert_eq!(json[field], event.payload[field], "{}: {field}", event.key);
        }
        assert_eq!(
            json["order"]["orderItems"], event.payload["order"]["orderItems"],
            "{}",
            event.key
        );
        assert_eq!(
            json["order"]["orderStatusEvents"], event.payload["order"]["orderStatusEvents"],
            "{}",
            event.key
        );
    }

    // The original Fulfillment document's SHIPPED status is in the order's history.
    let shipped = "6a2b1c4d-0001-4000-8000-000000000001";
    let history = history_of(&orders, shipped, "SHIPPED in the history", |statuses| {
        statuses.last().map(String::as_str) == Some("SHIPPED")
    })
    .await;
    assert_eq!(history, ["CREATED", "APPROVED", "SHIPPED"]);

    // The Fulfillment application moves every request it received to PROCESSING, replacing the
    // one-element status list as the original service does; each status flows back once.
    let now = 1_800_000_000_000_i64;
    for event in &expected_requests {
        requests
            .update_one(
                doc! { "_id": &event.key },
                doc! { "$set": {
                    "order.orderStatusEvents": [
                        { "timestamp": now, "orderStatusType": "PROCESSING", "note": Bson::Null },
                    ],
                    "_class": "demo.storefront.fulfillment.model.Fulfillment",
                } },
            )
            .await
            .unwrap();
    }
    for event in &expected_requests {
        let history = history_of(&orders, &event.key, "PROCESSING in the history", |s| {
            s.last().map(String::as_str) == Some("PROCESSING")
        })
        .await;
        assert_eq!(
            history.iter().filter(|s| *s == "PROCESSING").count(),
            1,
            "{}: {history:?}",
            event.key
        );
    }

    // The customer with bad orders keeps getting requests for its new ones, and a bad order
    // gets its request once repaired.
    let bad_luck = mongodb::bson::oid::ObjectId::parse_str("5b4ea1b8a3c8a7c6d4f1e303").unwrap();
    // A new order: created, then approved by a partial update, as the Orders application does.
    let mut created = approved_order(
        "6a2b1c4d-0003-4000-8000-00000000000c",
        Bson::Decimal128("3.99".parse().unwrap()),
    );
    let approval = created
        .get_array_mut("orderStatusEvents")
        .unwrap()
        .pop()
        .unwrap();
    orders
        .update_one(
            doc! { "_id": bad_luck },
            doc! { "$push": { "orders": created } },
        )
        .await
        .unwrap();
    orders
        .update_one(
            doc! { "_id": bad_luck, "orders.guid": "6a2b1c4d-0003-4000-8000-00000000000c" },
            doc! { "$push": { "orders.$.orderStatusEvents": approval } },
        )
        .await
        .unwrap();
    orders
        .update_one(
            doc! { "_id": bad_luck },
            doc! { "$set": { "orders.0.orderItems.0.product.price": "3.99" } },
        )
        .await
        .unwrap();
    for guid in [
        "6a2b1c4d-0003-4000-8000-00000000000c",
        "6a2b1c4d-0003-4000-8000-00000000000b",
    ] {
        let document = fulfillment_of(&requests, guid).await;
        assert_eq!(
            stored_prices(&document),
            [Bson::Decimal128("3.99".parse().unwrap())],
            "{guid}"
        );
    }

    // Sentinels: an approved order (the last request) and a bad one (the last dead letter).
    let sentinel = doc! {
        "_id": "sentinel-customer",
        "name": { "title": "Ms.", "firstName": "Last", "lastName": "One" },
        "contact": { "primaryPhone": "555-0000", "email": "last@example.com" },
        "addresses": [{ "type": "SHIPPING", "description": "home", "address1": "1 End Rd",
                        "city": "Omega", "state": "ZZ", "postalCode": "99999" }],
        "orders": [
            approved_order("sentinel-request", Bson::Double(3.99)),
            approved_order("sentinel-defect", Bson::String("n/a".into())),
        ],
    };
    orders.insert_one(sentinel).await.unwrap();
    let topics = &connector_config.topics;
    let dead_letter_topic = &connector_config.stream.dead_letter_topic;
    let mut reader = TopicReader::new(&[&topics.fulfillment_request, dead_letter_topic]);
    let records = reader
        .read_until(DEADLINE, "both sentinels", |records| {
            let seen = |key: &str| records.iter().any(|r| r.key.as_deref() == Some(key));
            seen("sentinel-request") && seen("sentinel-defect")
        })
        .await
        .to_vec();
    pipeline.stop().await;

    // Every request exactly once, with its price digits.
    let published: Vec<&Record> = records
        .iter()
        .filter(|r| r.topic == topics.fulfillment_request)
        .collect();
    let mut per_key = BTreeMap::<&str, usize>::new();
    for record in &published {
        *per_key.entry(record.key.as_deref().unwrap()).or_default() += 1;
    }
    let mut expected_keys: Vec<&str> = expected_requests.iter().map(|e| e.key.as_str()).collect();
    expected_keys.extend([
        "6a2b1c4d-0003-4000-8000-00000000000c",
        "6a2b1c4d-0003-4000-8000-00000000000b",
        "sentinel-request",
    ]);
    expected_keys.sort();
    assert_eq!(per_key.keys().copied().collect::<Vec<_>>(), expected_keys);
    assert!(per_key.values().all(|n| *n == 1), "{per_key:?}");
    for record in &published {
        let body = String::from_utf8(record.payload.clone().unwrap()).unwrap();
        assert!(!body.contains("0000000000002"), "{body}");
    }
    let repaired = published
        .iter()
        .find(|r| r.key.as_deref() == Some("6a2b1c4d-0003-4000-8000-00000000000b"))
        .unwrap();
    assert!(
        String::from_utf8(repaired.payload.clone().unwrap())
            .unwrap()
            .contains(r#""price":3.99"#)
    );

    // Every defect of the corpus dead-lettered exactly once, though later changes (statuses
    // appended, an order pushed) left most of them as they were; then the sentinel's.
    let letters: Vec<&Record> = records
        .iter()
        .filter(|r| &r.topic == dead_letter_topic)
        .collect();
    let expected_defects: usize = cases.iter().map(|c| c.defects.len()).sum();
    assert_eq!(
        letters.len(),
        expected_defects + 1,
        "{:#?}",
        letters
            .iter()
            .map(|l| (l.key.clone(), l.header("dlq_reason").to_owned()))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        letters.last().unwrap().key.as_deref(),
        Some("sentinel-defect")
    );
    let mut fields: Vec<String> = letters[..expected_defects]
        .iter()
        .map(|l| l.headers.get("dlq_field").cloned().unwrap_or_default())
        .collect();
    let mut expected_fields: Vec<String> = cases
        .iter()
        .flat_map(|c| c.defects.iter().map(|d| d.field.clone()))
        .collect();
    fields.sort();
    expected_fields.sort();
    assert_eq!(fields, expected_fields);
}
