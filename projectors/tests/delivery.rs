//! Delivery against the local stack: every event twice, each key's events in reverse, and
//! poison in the middle of a batch. The "same final state" comparisons run one scenario through
//! separate topics and collections and compare whole documents (guards included).

mod common;

use common::scenario::{Ids, assert_expected, first_name, scenario, seed};
use common::*;
use mongodb::bson::{Document, doc};
use projectors::config::Projector;
use storefront_tests::guard::read_all;
use storefront_tests::{DEADLINE, TopicReader};

/// Runs `records` (built by `arrange` from the scenario) through both projectors with
/// `batch_size`, and returns both collections.
async fn run(
    ids: &Ids,
    batch_size: usize,
    arrange: impl Fn(Vec<Outbound>) -> Vec<Outbound>,
) -> (Vec<Document>, Vec<Document>) {
    let config = with_batch_size(test_config(), batch_size);
    create_topics(&config).await;
    seed(&config, ids).await;
    let records = arrange(scenario(&config, ids));
    Producer::new().send_all(&records, None).await;
    let running = start(&config, &Projector::ALL).await;
    caught_up(&config, Projector::Orders).await;
    caught_up(&config, Projector::Fulfillment).await;
    running.stop().await;
    (
        snapshot(&config.targets.orders).await,
        snapshot(&config.targets.fulfillment).await,
    )
}

#[tokio::test]
async fn every_event_delivered_twice_ends_as_delivered_once() {
    let ids = Ids::new();
    let twice = |records: Vec<Outbound>| [records.clone(), records].concat();
    let (once, twice_each, twice_batched) = tokio::join!(
        run(&ids, 1_000, |records| records),
        // One event per batch: the guards meet every repeat.
        run(&ids, 1, twice),
        // Whole batches: repeats collapse within a batch too.
        run(&ids, 1_000, twice),
    );
    assert_expected(&ids, &once.0, &once.1);
    assert_eq!(twice_each, once, "twice, one event per batch");
    assert_eq!(twice_batched, once, "twice, batched");
}

#[tokio::test]
async fn each_keys_events_delivered_in_reverse_end_as_delivered_in_order() {
    let ids = Ids::new();
    // Reversing the whole sequence reverses every key's events (a key stays in its partition).
    let reversed = |mut records: Vec<Outbound>| {
        records.reverse();
        records
    };
    let (in_order, reversed_each, reversed_batched) = tokio::join!(
        run(&ids, 1, |records| records),
        run(&ids, 1, reversed),
        run(&ids, 1_000, reversed),
    );
    assert_expected(&ids, &in_order.0, &in_order.1);
    assert_eq!(reversed_each, in_order, "reversed, one event per batch");
    assert_eq!(reversed_batched, in_order, "reversed, batched");
}

#[tokio::test]
async fn poison_in_the_middle_of_a_batch_is_dead_lettered_and_the_rest_applied() {
    let config = test_config();
    create_topics(&config).await;
    let [x, y, z, w] = [(); 4].map(|()| new_customer_id());
    // A document the projector cannot write to: its `_cdc` is not a document.
    collection(&config.targets.orders)
        .await
        .insert_one(doc! { "_id": &z, "_cdc": "corrupt", "orders": [] })
        .await
        .unwrap();
    let not_json = Outbound {
        body: Some(b"{\"id\": not json".to_vec()),
        ..customer_change(&config, &new_customer_id(), position(2), "Bad")
    };
    let mut bad_headers = customer_change(&config, &new_customer_id(), position(3), "Bad");
    bad_headers.headers.retain(|(k, _)| k != "ce_type");
    let mut schema = customer_change(&config, &new_customer_id(), position(4), "Bad");
    let mut body: serde_json::Value =
        serde_json::from_slice(schema.body.as_ref().unwrap()).unwrap();
    body.as_object_mut().unwrap().remove("contact");
    schema.body = Some(serde_json::to_vec(&body).unwrap());
    let records = vec![
        customer_change(&config, &x, position(1), "X"),
        not_json,
        customer_change(&config, &y, position(5), "Y"),
        bad_headers,
        schema,
        customer_change(&config, &z, position(6), "Z"),
        customer_change(&config, &w, position(7), "W"),
    ];
    // One partition, so the poison sits between good records of the same batch.
    Producer::new().send_all(&records, Some(0)).await;
    let running = start(&config, &[Projector::Orders]).await;
    caught_up(&config, Projector::Orders).await;
    running.stop().await;

    for (id, name) in [(x, "X"), (y, "Y"), (w, "W")] {
        let document = find(&config.targets.orders, &id).await.unwrap();
        assert_eq!(first_name(&document), name);
    }
    // Caught up and stopped: every dead letter is in the topic (offsets are committed only once
    // the batch's dead letters are acknowledged), so all of them are read, not the first four.
    let mut reader = TopicReader::new(&[&config.apply.dead_letter_topic]);
    let mut letters = read_all(&mut reader, &[&config.apply.dead_letter_topic], DEADLINE).await;
    letters.sort_by_key(|r| r.header("dlq_source_offset").parse::<i64>().unwrap());
    let expected = [
        (1, "not_json"),
        (3, "headers"),
        (4, "schema"),
        (5, "rejected"),
    ];
    assert_eq!(
        letters
            .iter()
            .map(|l| l.header("dlq_source_offset").to_owned())
            .collect::<Vec<_>>(),
        expected.map(|(offset, _)| offset.to_string()),
        "one dead letter per poison record, none for the good ones"
    );
    for (letter, (offset, kind)) in letters.iter().zip(expected) {
        let original = &records[offset];
        assert_eq!(letter.header("dlq_source_offset"), offset.to_string());
        assert_eq!(letter.header("dlq_source_partition"), "0");
        assert_eq!(
            letter.header("dlq_source_topic"),
            config.topics.customer_change
        );
        assert_eq!(letter.header("dlq_kind"), kind);
        assert_eq!(letter.header("dlq_projector"), "orders");
        assert!(!letter.header("dlq_reason").is_empty());
        assert_eq!(
            letter.payload, original.body,
            "original value, byte for byte"
        );
        assert_eq!(
            letter.key.as_deref().map(str::as_bytes),
            original.key.as_deref(),
            "original key"
        );
        for (name, value) in &original.headers {
            assert_eq!(
                letter.header(name).as_bytes(),
                value.as_slice(),
                "original header {name}"
            );
        }
    }
    let topic = format!("topic=\"{}\"", config.topics.customer_change);
    assert_eq!(metric_sum("projector_dead_letters_total", &[&topic]), 4.0);
    for (outcome, count) in [("applied", 3.0), ("dead_letter", 4.0)] {
        assert_eq!(
            metric_sum(
                "projector_events_total",
                &[&topic, &format!("outcome=\"{outcome}\"")]
            ),
            count,
            "{outcome}"
        );
    }
    // End-to-end latency: one observation per applied event (never a dead letter), rendered as
    // a cumulative histogram whose +Inf bucket equals its count.
    let latency = "projector_end_to_end_latency_seconds";
    assert_eq!(metric_sum(&format!("{latency}_count"), &[&topic]), 3.0);
    assert_eq!(
        metric_sum(&format!("{latency}_bucket"), &[&topic, "le=\"+Inf\""]),
        3.0
    );
    assert!(metric_sum(&format!("{latency}_sum"), &[&topic]) >= 0.0);
    assert!(letters[2].header("dlq_reason").contains("contact"));
    assert!(letters[3].header("dlq_reason").contains("MongoDB refused"));
}
