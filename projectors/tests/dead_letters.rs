//! Dead letters an operator can work with: `dead-letters list` groups the projectors' dead letters
//! by reason with exact counts; `dead-letters redrive` sends chosen ones back once their cause is
//! fixed, applies them once, sends nothing twice without `--again`, and a redriven record that
//! fails again is back in the dead-letter topic with every earlier attempt in its history.
//! Real Kafka and MongoDB, the projectors in-process.

mod common;

use common::*;
use mongodb::bson::{Document, doc};
use projectors::config::{Projector, ProjectorsConfig};
use projectors::redrive::{RedriveOptions, RedriveReport, redrive};
use storefront_plumbing::dead_letters::{
    self, DeadLetter, Format, GroupBy, ListArgs, Listing, ReadRange, Selection,
};
use storefront_schemas::dead_letter::{Attempt, header, parse_history};

async fn listing(config: &ProjectorsConfig, select: Selection) -> Listing {
    let topic = config.apply.dead_letter_topic.clone();
    let redriven = dead_letters::redriven(&config.kafka, "tests", &topic)
        .await
        .unwrap();
    let args = ListArgs {
        topics: vec![topic.clone()],
        by: GroupBy::Reason,
        samples: 10,
        format: Format::Text,
        select,
    };
    dead_letters::list(&config.kafka, "tests", &[topic], &args, &redriven)
        .await
        .unwrap()
}

/// (group, count, redriven) of every group.
fn groups(listing: &Listing) -> Vec<(String, u64, u64)> {
    listing
        .groups
        .iter()
        .map(|g| (g.group.clone(), g.count, g.redriven))
        .collect()
}

async fn run_redrive(
    config: &ProjectorsConfig,
    select: Selection,
    dry_run: bool,
    again: bool,
) -> RedriveReport {
    redrive(
        config,
        &RedriveOptions {
            topic: config.apply.dead_letter_topic.clone(),
            select,
            by: GroupBy::Reason,
            dry_run,
            again,
        },
    )
    .await
    .unwrap()
}

/// `(from, key)` of what a redrive sent.
fn sent(report: &RedriveReport) -> Vec<(String, Option<String>)> {
    report
        .redriven
        .iter()
        .map(|r| (r.from.clone(), r.key.clone()))
        .collect()
}

async fn all_dead_letters(config: &ProjectorsConfig) -> Vec<DeadLetter> {
    let mut letters = Vec::new();
    dead_letters::read(
        &config.kafka,
        "tests",
        std::slice::from_ref(&config.apply.dead_letter_topic),
        ReadRange::default(),
        false,
        |letter| letters.push(letter),
    )
    .await
    .unwrap();
    letters
}

fn by_key(key: &str) -> Selection {
    Selection {
        keys: vec![key.to_owned()],
        ..Selection::default()
    }
}

/// Appends order `guid` (CREATED, APPROVED) to customer `id`'s document, as the Orders
/// application does: the fix of "order ... is in no document".
async fn add_order(
    config: &ProjectorsConfig,
    id: &storefront_schemas::documents::CustomerId,
    guid: &str,
) {
    let order = projectors::projection::to_bson(&approved_order(guid)).unwrap();
    collection(&config.targets.orders)
        .await
        .update_one(doc! { "_id": id }, doc! { "$push": { "orders": order } })
        .await
        .unwrap();
}

async fn caught_up_both(config: &ProjectorsConfig) {
    caught_up(config, Projector::Orders).await;
    caught_up(config, Projector::Fulfillment).await;
}

#[tokio::test]
async fn dead_letters_are_grouped_redriven_once_and_keep_their_history() {
    let config = test_config();
    create_topics(&config).await;
    let dlq = config.apply.dead_letter_topic.clone();
    let id = &new_customer_id();
    collection(&config.targets.orders)
        .await
        .insert_one(customer_orders(id, "Ada", &[]))
        .await
        .unwrap();
    // A request document damaged by hand: MongoDB refuses to set `order.orderItems` in it.
    collection(&config.targets.fulfillment)
        .await
        .insert_one(doc! { "_id": "g-3", "order": "damaged" })
        .await
        .unwrap();
    let mut not_json = status_change(&config, "g-9", position(5), status(3_000, "SHIPPED", None));
    not_json.body = Some(b"{\"orderGuid\": \"g-9\", ".to_vec());
    let producer = Producer::new();
    producer
        .send_all(
            &[
                status_change(
                    &config,
                    "g-1",
                    position(1),
                    status(3_000, "PROCESSING", None),
                ),
                status_change(
                    &config,
                    "g-2",
                    position(2),
                    status(3_000, "PROCESSING", None),
                ),
                not_json,
                fulfillment_request(&config, "g-3", position(3), "Paris"),
                fulfillment_request(&config, "g-4", position(4), "Rome"),
            ],
            None,
        )
        .await;
    let running = start(&config, &[Projector::Orders, Projector::Fulfillment]).await;
    caught_up_both(&config).await;

    // 1. Listed by reason: one group per kind of failure, whatever guid or target it names.
    let contract = "projectors orders contract: order … is in no document of …".to_owned();
    let rejected_group;
    let not_json_group;
    {
        let listed = listing(&config, Selection::default()).await;
        println!("{}", listed.to_text());
        assert_eq!(listed.read[&dlq], 4);
        assert_eq!(listed.selected, 4);
        rejected_group = listed
            .groups
            .iter()
            .find(|g| g.group.starts_with("projectors fulfillment rejected: "))
            .map(|g| g.group.clone())
            .expect("a group of refused writes");
        // Its text belongs to the decoder; its class is what matters here.
        not_json_group = listed
            .groups
            .iter()
            .find(|g| g.group.starts_with("projectors orders not_json: "))
            .map(|g| g.group.clone())
            .expect("a group of bodies that are not JSON");
        assert_eq!(
            groups(&listed),
            vec![
                (contract.clone(), 2, 0),
                (rejected_group.clone(), 1, 0),
                (not_json_group.clone(), 1, 0),
            ]
        );
        let keys: Vec<Option<&str>> = listed.groups[0]
            .samples
            .iter()
            .map(|s| s.key.as_deref())
            .collect();
        assert_eq!(keys, [Some("g-1"), Some("g-2")]);
        let json = serde_json::to_value(&listed).unwrap();
        assert_eq!(json["groups"][0]["count"], 2, "{json}");
        assert!(
            !json.to_string().contains("PROCESSING"),
            "no body in a listing: {json}"
        );
    }

    // 2. A dry run sends nothing.
    let contract_only = Selection {
        group: Some(contract.clone()),
        ..Selection::default()
    };
    let dry = run_redrive(&config, contract_only.clone(), true, false).await;
    assert_eq!(dry.redriven.len(), 2);
    assert_eq!(all_dead_letters(&config).await.len(), 4);

    // 3. Fix g-1 (its order now exists) but not g-2, and the damaged request; redrive both
    //    groups. g-1 and g-3 apply; g-2 fails again.
    add_order(&config, id, "g-1").await;
    collection(&config.targets.fulfillment)
        .await
        .delete_one(doc! { "_id": "g-3" })
        .await
        .unwrap();
    let first = run_redrive(&config, contract_only.clone(), false, false).await;
    let letters = all_dead_letters(&config).await;
    let at = |key: &str, nth: usize| -> String {
        letters
            .iter()
            .filter(|l| l.key_text().as_deref() == Some(key))
            .nth(nth)
            .unwrap()
            .coordinates()
    };
    assert_eq!(
        sent(&first),
        vec![
            (at("g-1", 0), Some("g-1".into())),
            (at("g-2", 0), Some("g-2".into()))
        ]
    );
    let rejected_only = Selection {
        kinds: vec!["rejected".into()],
        ..Selection::default()
    };
    let fixed_request = run_redrive(&config, rejected_only.clone(), false, false).await;
    assert_eq!(
        sent(&fixed_request),
        vec![(at("g-3", 0), Some("g-3".into()))]
    );
    caught_up_both(&config).await;

    let document = find(&config.targets.orders, id).await.unwrap();
    assert_eq!(
        status_types(&document, "g-1"),
        ["CREATED", "APPROVED", "PROCESSING"]
    );
    let request = find(&config.targets.fulfillment, "g-3").await.unwrap();
    let statuses: Vec<&str> = request
        .get_document("order")
        .unwrap()
        .get_array("orderStatusEvents")
        .unwrap()
        .iter()
        .map(|s| s.as_document().unwrap().get_str("orderStatusType").unwrap())
        .collect();
    assert_eq!(statuses, ["CREATED", "APPROVED"]);

    // 4. The same selections again send nothing: the ledger has them.
    let again = run_redrive(&config, by_key("g-1"), false, false).await;
    assert_eq!(sent(&again), vec![]);
    assert_eq!(again.skipped_redriven_before, vec![at("g-1", 0)]);
    let again = run_redrive(&config, rejected_only.clone(), false, false).await;
    assert_eq!(sent(&again), vec![]);

    // 5. g-2 failed again: back in the topic with its first attempt as history. Redriven
    //    unfixed once more, it is back with two.
    let letters = all_dead_letters(&config).await;
    assert_eq!(letters.len(), 5);
    // One key's dead letters share a partition: in offset order, oldest first.
    let of_g2 = |letters: &[DeadLetter]| -> Vec<DeadLetter> {
        letters
            .iter()
            .filter(|l| l.key_text().as_deref() == Some("g-2"))
            .cloned()
            .collect()
    };
    let second_g2 = of_g2(&letters)[1].clone();
    assert_eq!(second_g2.attempts(), 2);
    let retry = run_redrive(&config, by_key("g-2"), false, false).await;
    assert_eq!(
        sent(&retry),
        vec![(second_g2.coordinates(), Some("g-2".into()))]
    );
    caught_up_both(&config).await;
    let letters = all_dead_letters(&config).await;
    assert_eq!(letters.len(), 6);
    let g2s = of_g2(&letters);
    assert_eq!(g2s.len(), 3);
    let (first_g2, third_g2) = (&g2s[0], g2s[2].clone());
    assert_eq!(g2s[1], second_g2);
    let history_value = third_g2
        .headers
        .iter()
        .filter(|(k, _)| k == header::HISTORY)
        .map(|(_, v)| v.clone().unwrap())
        .collect::<Vec<_>>();
    assert_eq!(history_value.len(), 1, "one history header");
    let history = parse_history(&history_value[0]).unwrap();
    let attempt = |letter: &DeadLetter| Attempt {
        reason: format!("order g-2 is in no document of {}", config.targets.orders),
        kind: Some("contract".into()),
        projector: Some("orders".into()),
        at_ms: letter.timestamp_ms,
        topic: dlq.clone(),
        partition: letter.partition,
        offset: letter.offset,
    };
    assert_eq!(history, vec![attempt(first_g2), attempt(&second_g2)]);
    assert_eq!(
        third_g2.header(header::REDRIVEN_FROM),
        Some(second_g2.coordinates())
    );
    // Each attempt header once: this attempt's.
    for name in header::ATTEMPT
        .iter()
        .filter(|n| **n != header::VALUE_OMITTED)
    {
        let count = third_g2.headers.iter().filter(|(k, _)| k == name).count();
        assert_eq!(count, 1, "{name}");
    }
    assert_eq!(
        third_g2.value, first_g2.value,
        "the event's body travels unchanged"
    );
    let ce = |letter: &DeadLetter| -> Vec<(String, Option<Vec<u8>>)> {
        letter
            .headers
            .iter()
            .filter(|(k, _)| k.starts_with("ce_"))
            .cloned()
            .collect()
    };
    assert_eq!(
        ce(&third_g2),
        ce(first_g2),
        "the event's headers travel unchanged"
    );
    let listed = listing(&config, by_key("g-2")).await;
    let attempts: Vec<usize> = listed.groups[0]
        .samples
        .iter()
        .map(|s| s.attempts)
        .collect();
    assert_eq!(attempts, [1, 2, 3]);

    // 6. Fixed, g-2 is redriven once: only its newest dead letter (the others are in the
    //    ledger).
    add_order(&config, id, "g-2").await;
    let last = run_redrive(&config, by_key("g-2"), false, false).await;
    assert_eq!(
        sent(&last),
        vec![(third_g2.coordinates(), Some("g-2".into()))]
    );
    assert_eq!(
        last.skipped_redriven_before,
        vec![first_g2.coordinates(), second_g2.coordinates()]
    );
    caught_up_both(&config).await;

    // 7. A redrive whose effect already happened is harmless: the Fulfillment application moved
    //    g-3 on; sent again with --again, it creates no second request and does not move it back.
    let progressed = doc! { "timestamp": 5_000_i64, "orderStatusType": "PROCESSING" };
    collection(&config.targets.fulfillment)
        .await
        .update_one(
            doc! { "_id": "g-3" },
            doc! { "$set": { "order.orderStatusEvents": [progressed], "shippingMethod": "EXPRESS" } },
        )
        .await
        .unwrap();
    let before = snapshot(&config.targets.fulfillment).await;
    let forced = run_redrive(&config, rejected_only, false, true).await;
    assert_eq!(sent(&forced), vec![(at("g-3", 0), Some("g-3".into()))]);
    caught_up_both(&config).await;
    running.stop().await;
    assert_eq!(snapshot(&config.targets.fulfillment).await, before);
    let ids: Vec<&str> = before.iter().map(|d| d.get_str("_id").unwrap()).collect();
    assert_eq!(ids, ["g-3", "g-4"], "one request per order");

    // The end state: every fixed status applied once, nothing else written.
    let mut g1 = approved_order("g-1");
    g1.order_status_events
        .push(status(3_000, "PROCESSING", None));
    let mut g2 = approved_order("g-2");
    g2.order_status_events
        .push(status(3_000, "PROCESSING", None));
    let expected: Document = canonical(customer_orders(id, "Ada", &[g1, g2]));
    assert_eq!(snapshot(&config.targets.orders).await, vec![expected]);
    assert_eq!(
        all_dead_letters(&config).await.len(),
        6,
        "nothing failed after the fixes"
    );
    let listed = listing(&config, Selection::default()).await;
    assert_eq!(
        groups(&listed),
        vec![
            (contract, 4, 4),
            (rejected_group, 1, 1),
            (not_json_group, 1, 0),
        ]
    );
}
