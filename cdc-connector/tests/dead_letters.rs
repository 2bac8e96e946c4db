//! The connector's dead letters for operators: listed by reason; redriven once the document is
//! fixed, which publishes the document's current state once (a second redrive sends nothing);
//! a document still broken is back in the dead-letter topic with its history. Real Kafka and
//! MongoDB, the connector in-process.

mod common;

use cdc_connector::config::ConnectorConfig;
use cdc_connector::dead_letters::{RedriveOptions, RedriveReport, redrive};
use mongodb::bson::{Document, doc, oid::ObjectId};
use storefront_plumbing::dead_letters::{self, DeadLetter, GroupBy, ReadRange, Selection};
use storefront_schemas::dead_letter::header;
use storefront_tests::{DEADLINE, InProcess, eventually, stack};

async fn all(config: &ConnectorConfig, topic: &str) -> Vec<DeadLetter> {
    let mut records = Vec::new();
    dead_letters::read(
        &config.kafka,
        "tests",
        &[topic.to_owned()],
        ReadRange::default(),
        true,
        |record| records.push(record),
    )
    .await
    .unwrap();
    records
}

async fn run(config: &ConnectorConfig, key: &str) -> RedriveReport {
    redrive(
        config,
        &RedriveOptions {
            topic: config.stream.dead_letter_topic.clone(),
            select: Selection {
                keys: vec![key.to_owned()],
                ..Selection::default()
            },
            by: GroupBy::Reason,
            dry_run: false,
            again: false,
        },
    )
    .await
    .unwrap()
}

fn oid_key(id: ObjectId) -> String {
    format!(r#"{{"$oid":"{}"}}"#, id.to_hex())
}

#[tokio::test]
async fn connector_dead_letters_redrive_the_current_document_once_and_keep_history() {
    let config = common::config();
    let dlq = config.stream.dead_letter_topic.clone();
    let customers = stack()
        .mongo_client()
        .await
        .database(&config.sources.accounts.database)
        .collection::<Document>(&config.sources.accounts.collection);
    let connector = InProcess::start(|stop| cdc_connector::start(config.clone(), stop)).await;
    let (fixed, broken) = (ObjectId::new(), ObjectId::new());
    for id in [fixed, broken] {
        let mut nameless = common::customer(id, "Nobody");
        nameless.remove("name");
        customers.insert_one(nameless).await.unwrap();
    }
    eventually(DEADLINE, "two dead letters", async || {
        (all(&config, &dlq).await.len() == 2).then_some(())
    })
    .await;
    // Stopped, so the fix below reaches Kafka only through the redrive.
    connector.stop().await;

    let redriven = dead_letters::redriven(&config.kafka, "tests", &dlq)
        .await
        .unwrap();
    let args = dead_letters::ListArgs {
        topics: vec![dlq.clone()],
        by: GroupBy::Reason,
        samples: 5,
        format: dead_letters::Format::Text,
        select: Selection::default(),
    };
    let listed = dead_letters::list(
        &config.kafka,
        "tests",
        std::slice::from_ref(&dlq),
        &args,
        &redriven,
    )
    .await
    .unwrap();
    println!("{}", listed.to_text());
    let groups: Vec<(bool, u64)> = listed
        .groups
        .iter()
        .map(|g| {
            (
                g.group.starts_with(&format!(
                    "connector /mongodb/{}/customer.accounts ",
                    config.sources.accounts.database
                )),
                g.count,
            )
        })
        .collect();
    assert_eq!(groups, [(true, 2)], "one group for one kind of defect");

    customers
        .update_one(
            doc! { "_id": fixed },
            doc! { "$set": { "name": { "title": "Ms", "firstName": "Fixed", "lastName": "Lovelace" } } },
        )
        .await
        .unwrap();
    let first = run(&config, &oid_key(fixed)).await;
    assert_eq!(
        first.events,
        [format!(
            "{} {}",
            config.topics.customer_change,
            fixed.to_hex()
        )]
    );
    assert_eq!(first.redriven.len(), 1);
    assert_eq!(first.redriven[0].failed_again, None);
    let published = all(&config, &config.topics.customer_change).await;
    assert_eq!(published.len(), 1, "the fixed document, once");
    let body: serde_json::Value =
        serde_json::from_slice(published[0].value.as_deref().unwrap()).unwrap();
    assert_eq!(body["name"]["firstName"], "Fixed");

    // Again: nothing.
    let second = run(&config, &oid_key(fixed)).await;
    assert_eq!(second.redriven, []);
    assert_eq!(second.skipped_redriven_before.len(), 1);
    assert_eq!(all(&config, &config.topics.customer_change).await.len(), 1);

    // Still broken: back in the topic, with its history, twice.
    let original = all(&config, &dlq)
        .await
        .into_iter()
        .find(|l| l.key_text() == Some(oid_key(broken)))
        .unwrap();
    for attempt in [2, 3] {
        let report = run(&config, &oid_key(broken)).await;
        assert_eq!(report.redriven.len(), 1, "the newest dead letter only");
        assert_eq!(
            report.redriven[0].failed_again.as_deref(),
            Some(original.reason().as_str())
        );
        assert_eq!(report.events, Vec::<String>::new());
        let letters: Vec<DeadLetter> = all(&config, &dlq)
            .await
            .into_iter()
            .filter(|l| l.key_text() == Some(oid_key(broken)))
            .collect();
        assert_eq!(letters.len(), attempt);
        let newest = letters.last().unwrap();
        assert_eq!(newest.attempts(), attempt);
        let history: Vec<String> = newest
            .history()
            .unwrap()
            .iter()
            .map(|a| format!("{}/{}", a.partition, a.offset))
            .collect();
        let earlier: Vec<String> = letters[..attempt - 1]
            .iter()
            .map(|l| format!("{}/{}", l.partition, l.offset))
            .collect();
        assert_eq!(history, earlier);
        assert_eq!(
            newest.header(header::REDRIVEN_FROM),
            Some(letters[attempt - 2].coordinates())
        );
        assert_eq!(
            newest.value, original.value,
            "the body of the first attempt"
        );
    }
    assert_eq!(all(&config, &config.topics.customer_change).await.len(), 1);
}
