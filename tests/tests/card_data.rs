//! Card data never leaves Accounts. Customer documents with card numbers in every position of
//! their cards (the right field, wrong types, unexpected fields, values nested where another
//! shape belongs, huge values, the whole list of the wrong type), each with every other field
//! malformed in turn so that they are dead-lettered, run through the connector and both projectors
//! with every log at `debug`. Then every Kafka topic (events and both dead-letter topics: keys,
//! bodies, headers), every projection collection, the checkpoints and the ledger, and every
//! captured log line are scanned: no card number anywhere, and no value of a field the operator
//! declared sensitive (`contact.email`). The source collection is scanned too, as the control
//! that shows the scan finds what it looks for.
#![allow(
    clippy::disallowed_methods,
    reason = "test code: synchronous Kafka calls wait on the local broker only"
)]

use mongodb::bson::oid::ObjectId;
use mongodb::bson::{Bson, Document, doc};
use rdkafka::consumer::{BaseConsumer, Consumer};
use storefront_plumbing::kafka::TracingContext;
use storefront_tests::{Record, TopicReader, capture_logs, eventually, stack, unique};

mod pipeline;

use pipeline::{Pipeline, configs};
use storefront_tests::DEADLINE;

/// Test card numbers (they pass the Luhn check, like real ones).
const CARDS: [&str; 5] = [
    "4111111111111111",
    "5500005555555559",
    "340000000000009",
    "6011000990139424",
    "4012888888881881",
];
/// A value of a field the operator declares sensitive.
const SECRET_EMAIL: &str = "secret.mailbox@example.com";

/// The `creditCards` values of the corpus: card numbers everywhere a card can hold one.
fn card_shapes() -> Vec<Bson> {
    let card = |number: Bson| {
        doc! {
            "type": "PRIMARY", "description": "VISA", "number": number,
            "expiration": "12/30", "nameOnCard": "Ada Lovelace",
        }
    };
    vec![
        // The right field.
        Bson::Array(vec![Bson::Document(card(CARDS[0].into()))]),
        // Wrong types: the number as a long, an unknown card type.
        Bson::Array(vec![Bson::Document({
            let mut c = card(Bson::Int64(CARDS[4].parse().unwrap()));
            c.insert("type", "DEBIT");
            c
        })]),
        // Unexpected fields.
        Bson::Array(vec![Bson::Document({
            let mut c = card(CARDS[1].into());
            c.insert("pan", CARDS[2]);
            c.insert("cvv", "123");
            c
        })]),
        // Nested where another shape belongs.
        Bson::Document(doc! { "primary": { "number": CARDS[3] } }),
        Bson::Array(vec![Bson::Document(
            doc! { "expiration": { "number": CARDS[0], "history": [CARDS[1]] } },
        )]),
        // Huge values.
        Bson::Array(vec![Bson::Document(card(CARDS[2].repeat(10_000).into()))]),
        // The list as a plain string.
        Bson::String(CARDS[3].into()),
    ]
}

fn customer(id: Bson, cards: Bson) -> Document {
    doc! {
        "_id": id,
        "_class": "demo.storefront.accounts.model.CustomerAccount",
        "name": { "title": "Ms.", "firstName": "Ada", "lastName": "Lovelace" },
        "contact": { "primaryPhone": "555-0100", "email": SECRET_EMAIL },
        "addresses": [{ "type": "SHIPPING", "description": "home", "address1": "1 Main St",
                        "city": "London", "state": "LDN", "postalCode": "N1" }],
        "creditCards": cards,
    }
}

/// A named change to a customer document.
type Malformation = (&'static str, fn(&mut Document));

/// Each way of making a customer unpublishable (or partly so), one at a time.
fn malformations() -> Vec<Malformation> {
    vec![
        ("well-formed", |_| {}),
        ("name is a number", |d| {
            d.insert("name", Bson::Int64(12_345));
        }),
        ("contact missing", |d| {
            d.remove("contact");
        }),
        ("addresses is an object", |d| {
            d.insert("addresses", doc! { "home": "1 Main St" });
        }),
        ("an address is malformed", |d| {
            d.insert(
                "addresses",
                vec![Bson::Document(doc! { "type": "SHIPPING", "postalCode": 1 })],
            );
        }),
        ("_id is an int", |_| {}),
        ("firstName is a long", |d| {
            d.get_document_mut("name")
                .unwrap()
                .insert("firstName", Bson::Int64(7));
        }),
        ("email is a number", |d| {
            d.get_document_mut("contact")
                .unwrap()
                .insert("email", Bson::Int64(42));
        }),
    ]
}

/// Every record of `topic`, read from its beginning to its end.
async fn whole_topic(topic: &str) -> Vec<Record> {
    let probe: BaseConsumer<TracingContext> = storefront_plumbing::kafka::consumer_config(
        &stack().kafka_settings(),
        "storefront-tests",
        &unique("probe"),
        &[],
    )
    .create_with_context(TracingContext)
    .unwrap();
    let metadata = probe
        .fetch_metadata(Some(topic), std::time::Duration::from_secs(10))
        .unwrap();
    let partitions = metadata.topics()[0].partitions().len() as i32;
    let mut end = 0;
    for partition in 0..partitions {
        let (_, high) = probe
            .fetch_watermarks(topic, partition, std::time::Duration::from_secs(10))
            .unwrap();
        end += high;
    }
    let mut reader = TopicReader::new(&[topic]);
    reader
        .read_until(DEADLINE, &format!("all of {topic}"), |records| {
            records.len() as i64 >= end
        })
        .await
        .to_vec()
}

/// Where `needle` occurs in `haystack`s, by name.
fn occurrences<'a>(needles: &[&str], haystacks: &'a [(String, String)]) -> Vec<(String, &'a str)> {
    let mut found = Vec::new();
    for (place, text) in haystacks {
        for needle in needles {
            if text.contains(needle) {
                found.push(((*needle).to_owned(), place.as_str()));
            }
        }
    }
    found
}

async fn collection_texts(database: &str, collection: &str) -> Vec<(String, String)> {
    use futures::TryStreamExt;
    let documents: Vec<Document> = stack()
        .mongo_client()
        .await
        .database(database)
        .collection::<Document>(collection)
        .find(doc! {})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    documents
        .into_iter()
        .map(|d| {
            (
                format!("{database}.{collection}"),
                Bson::Document(d).into_relaxed_extjson().to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn no_card_number_and_no_declared_sensitive_value_leaves_accounts() {
    let logs = capture_logs();
    let (mut connector_config, mut projectors_config) = configs();
    connector_config.log.filter = "debug".into();
    projectors_config.log.filter = "debug".into();
    connector_config.sensitive.accounts = vec!["contact.email".into()];
    let pipeline = Pipeline::start(&connector_config, &projectors_config).await;
    let sources = &connector_config.sources;
    let accounts = stack()
        .mongo_client()
        .await
        .database(&sources.accounts.database)
        .collection::<Document>(&sources.accounts.collection);

    let mut expected_letters = 0;
    let mut published = Vec::new();
    for (shape, cards) in card_shapes().into_iter().enumerate() {
        for (name, malform) in malformations() {
            let id = if name == "_id is an int" {
                Bson::Int32(1_000 + shape as i32)
            } else {
                Bson::ObjectId(ObjectId::new())
            };
            let mut document = customer(id.clone(), cards.clone());
            malform(&mut document);
            accounts.insert_one(document).await.unwrap();
            match name {
                "well-formed" | "email is a number" => published.push(id),
                "an address is malformed" => {
                    published.push(id);
                    expected_letters += 1;
                }
                _ => expected_letters += 1,
            }
        }
    }
    // Changes of cards only, then a delete: events and a tombstone, never cards.
    let Bson::ObjectId(first) = published[0] else {
        unreachable!("the first published customer has an ObjectId")
    };
    accounts
        .update_one(
            doc! { "_id": first },
            doc! { "$set": { "creditCards.0.number": CARDS[1], "creditCards.0.cvv": 999 } },
        )
        .await
        .unwrap();
    accounts.delete_one(doc! { "_id": first }).await.unwrap();
    // Sentinels: a customer published last and a dead letter sent last.
    let sentinel = ObjectId::new();
    accounts
        .insert_one(customer(Bson::ObjectId(sentinel), card_shapes()[0].clone()))
        .await
        .unwrap();
    let dead_sentinel = ObjectId::new();
    let mut nameless = customer(Bson::ObjectId(dead_sentinel), card_shapes()[0].clone());
    nameless.remove("name");
    accounts.insert_one(nameless).await.unwrap();
    expected_letters += 1;

    let topics = &connector_config.topics;
    let connector_dead = &connector_config.stream.dead_letter_topic;
    let mut reader = TopicReader::new(&[&topics.customer_change, connector_dead]);
    let records = reader
        .read_until(DEADLINE, "both sentinels", |records| {
            let seen = |key: &str| records.iter().any(|r| r.key.as_deref() == Some(key));
            seen(&sentinel.to_hex()) && seen(&format!(r#"{{"$oid":"{}"}}"#, dead_sentinel.to_hex()))
        })
        .await
        .to_vec();
    // The projection caught up with the sentinel too.
    let orders = stack()
        .mongo_client()
        .await
        .database(&sources.orders.database)
        .collection::<Document>(&sources.orders.collection);
    eventually(DEADLINE, "the sentinel's projection", async || {
        orders.find_one(doc! { "_id": sentinel }).await.unwrap()
    })
    .await;
    pipeline.stop().await;

    let letters: Vec<&Record> = records
        .iter()
        .filter(|r| &r.topic == connector_dead)
        .collect();
    assert_eq!(
        letters.len(),
        expected_letters,
        "one dead letter per defect"
    );
    let events: Vec<&Record> = records
        .iter()
        .filter(|r| r.topic == topics.customer_change)
        .collect();
    // Every published customer (plus the card change, the tombstone and the sentinel).
    assert_eq!(events.len(), published.len() + 3);
    // The dead letters still say what is wrong, and keep the cards' shape.
    let card_letter = letters
        .iter()
        .find(|l| l.header("dlq_reason").contains("name"))
        .unwrap();
    let body = card_letter.json();
    assert!(body["creditCards"].is_array() || body["creditCards"].is_object());
    assert!(body.to_string().contains("[redacted"), "{body}");

    // Scan everything the pipeline wrote.
    let mut haystacks: Vec<(String, String)> = Vec::new();
    for topic in [
        topics.customer_change.clone(),
        topics.fulfillment_request.clone(),
        topics.order_status_change.clone(),
        connector_dead.clone(),
        projectors_config.apply.dead_letter_topic.clone(),
    ] {
        for record in whole_topic(&topic).await {
            haystacks.push((
                format!("topic {topic}"),
                format!(
                    "{:?} {} {:?}",
                    record.key,
                    String::from_utf8_lossy(record.payload.as_deref().unwrap_or_default()),
                    record.headers
                ),
            ));
        }
    }
    let checkpoints = &connector_config.checkpoints;
    for (database, collection) in [
        (&sources.orders.database, &sources.orders.collection),
        (
            &sources.fulfillment.database,
            &sources.fulfillment.collection,
        ),
        (&checkpoints.database, &checkpoints.collection),
        (&checkpoints.database, &checkpoints.ledger_collection),
    ] {
        haystacks.extend(collection_texts(database, collection).await);
    }
    let log_text = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(
        log_text.contains("DEBUG"),
        "debug logs were captured: {} bytes",
        log_text.len()
    );
    haystacks.push(("the logs".to_owned(), log_text));

    let mut needles: Vec<&str> = CARDS.to_vec();
    needles.push(SECRET_EMAIL);
    assert_eq!(
        occurrences(&needles, &haystacks),
        Vec::<(String, &str)>::new(),
        "sensitive values found outside the source"
    );
    // The control: the source itself holds every needle, so the scan can find them.
    let source = collection_texts(&sources.accounts.database, &sources.accounts.collection).await;
    let mut found: Vec<String> = occurrences(&needles, &source)
        .into_iter()
        .map(|(needle, _)| needle)
        .collect();
    found.sort();
    found.dedup();
    let mut all: Vec<String> = needles.iter().map(|n| (*n).to_owned()).collect();
    all.sort();
    assert_eq!(found, all);
}
