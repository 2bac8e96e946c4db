//! The orders projection's rules against the local stack: events produced into Kafka with the
//! connector's headers, the projector in-process, `customer.orders` read back.

mod common;

use common::*;
use mongodb::bson::{Bson, doc};
use projectors::config::Projector;
use storefront_schemas::documents::CustomerId;
use storefront_tests::guard::read_all;
use storefront_tests::{DEADLINE, TopicReader};

#[tokio::test]
async fn a_customer_change_copies_the_customer_and_never_touches_orders() {
    let config = test_config();
    create_topics(&config).await;
    let (known, new) = (new_customer_id(), new_customer_id());
    // Accounts stores an id that is not 24 hex digits as a string.
    let text = CustomerId::Text("ada-1".into());
    let orders = collection(&config.targets.orders).await;
    orders
        .insert_one(customer_orders(&known, "Old", &[approved_order("g-1")]))
        .await
        .unwrap();
    let producer = Producer::new();
    producer
        .send_all(
            &[
                customer_change(&config, &known, position(10), "Ada"),
                customer_change(&config, &new, position(11), "Grace"),
                customer_change(&config, &text, position(12), "Text"),
            ],
            None,
        )
        .await;
    let running = start(&config, &[Projector::Orders]).await;
    caught_up(&config, Projector::Orders).await;
    running.stop().await;

    let known_doc = find(&config.targets.orders, &known).await.unwrap();
    assert_eq!(known_doc.get("_id"), Some(&Bson::from(&known)));
    assert_eq!(
        known_doc.get_document("name").unwrap().get_str("firstName"),
        Ok("Ada")
    );
    assert_eq!(
        known_doc.get_document("contact").unwrap().get_str("email"),
        Ok("ada@example.com")
    );
    assert_eq!(
        status_types(&known_doc, "g-1"),
        ["CREATED", "APPROVED"],
        "orders untouched"
    );
    assert_eq!(known_doc.get_array("orders").unwrap().len(), 1);
    assert_eq!(
        known_doc
            .get_document("_cdc")
            .unwrap()
            .get_i64("customerPosition"),
        Ok(position(10) as i64)
    );
    let new_doc = find(&config.targets.orders, &new).await.unwrap();
    assert_eq!(new_doc.get_array("orders").unwrap(), &Vec::<Bson>::new());
    assert_eq!(
        new_doc.get_document("name").unwrap().get_str("firstName"),
        Ok("Grace")
    );
    assert!(!new_doc.contains_key("customerDeleted"));
    assert!(!new_doc.contains_key("creditCards"));
    // A string id is the string `_id`, not an ObjectId.
    let text_doc = find(&config.targets.orders, "ada-1").await.unwrap();
    assert_eq!(text_doc.get("_id"), Some(&Bson::String("ada-1".into())));
    assert_eq!(
        text_doc.get_document("name").unwrap().get_str("firstName"),
        Ok("Text")
    );
    assert_eq!(text_doc.get_array("orders").unwrap(), &Vec::<Bson>::new());
    assert_eq!(snapshot(&config.targets.orders).await.len(), 3);
}

#[tokio::test]
async fn a_tombstone_marks_the_customer_deleted_and_keeps_the_orders() {
    let config = test_config();
    create_topics(&config).await;
    let id = &new_customer_id();
    collection(&config.targets.orders)
        .await
        .insert_one(customer_orders(id, "Ada", &[approved_order("g-1")]))
        .await
        .unwrap();
    let producer = Producer::new();
    producer
        .send_all(
            &[
                customer_change(&config, id, position(1), "Ada"),
                customer_deleted(&config, id, position(2)),
            ],
            None,
        )
        .await;
    let running = start(&config, &[Projector::Orders]).await;
    caught_up(&config, Projector::Orders).await;
    let deleted = find(&config.targets.orders, id).await.unwrap();
    assert_eq!(deleted.get_bool("customerDeleted"), Ok(true));
    assert_eq!(status_types(&deleted, "g-1"), ["CREATED", "APPROVED"]);
    assert_eq!(
        deleted.get_document("name").unwrap().get_str("firstName"),
        Ok("Ada"),
        "the last known copy stays"
    );

    // The same id inserted again at the source later: the customer is back.
    producer
        .send(&customer_change(&config, id, position(3), "Augusta"), None)
        .await;
    caught_up(&config, Projector::Orders).await;
    running.stop().await;
    let back = find(&config.targets.orders, id).await.unwrap();
    assert!(!back.contains_key("customerDeleted"), "{back}");
    assert_eq!(
        back.get_document("name").unwrap().get_str("firstName"),
        Ok("Augusta")
    );
    assert_eq!(status_types(&back, "g-1"), ["CREATED", "APPROVED"]);
}

#[tokio::test]
async fn an_older_change_never_overwrites_a_newer_one() {
    // One event per batch, so the guard (not the batch's collapsing) decides.
    let config = with_batch_size(test_config(), 1);
    create_topics(&config).await;
    let id = &new_customer_id();
    let producer = Producer::new();
    producer
        .send_all(
            &[
                customer_change(&config, id, position(20), "Newer"),
                customer_change(&config, id, position(10), "Older"),
                customer_deleted(&config, id, position(5)),
            ],
            None,
        )
        .await;
    let running = start(&config, &[Projector::Orders]).await;
    caught_up(&config, Projector::Orders).await;
    running.stop().await;
    let document = find(&config.targets.orders, id).await.unwrap();
    assert_eq!(
        document.get_document("name").unwrap().get_str("firstName"),
        Ok("Newer")
    );
    assert!(
        !document.contains_key("customerDeleted"),
        "a tombstone older than the copy does not delete: {document}"
    );
    let cdc = document.get_document("_cdc").unwrap();
    assert_eq!(cdc.get_i64("customerPosition"), Ok(position(20) as i64));
    assert_eq!(
        cdc.get_i64("customerDeletedPosition"),
        Ok(position(5) as i64)
    );
}

#[tokio::test]
async fn a_status_is_added_once_and_the_history_stays_in_timestamp_order() {
    let config = with_batch_size(test_config(), 1);
    create_topics(&config).await;
    let id = &new_customer_id();
    let other = &new_customer_id();
    let orders = collection(&config.targets.orders).await;
    orders
        .insert_one(customer_orders(
            id,
            "Ada",
            &[approved_order("g-1"), approved_order("g-2")],
        ))
        .await
        .unwrap();
    orders
        .insert_one(customer_orders(other, "Grace", &[approved_order("g-3")]))
        .await
        .unwrap();
    let producer = Producer::new();
    producer
        .send_all(
            &[
                status_change(&config, "g-1", position(1), status(4_000, "SHIPPED", None)),
                // Late: goes before SHIPPED.
                status_change(
                    &config,
                    "g-1",
                    position(2),
                    status(3_000, "PROCESSING", None),
                ),
                // Redelivered with another note: the same status, not added again.
                status_change(
                    &config,
                    "g-1",
                    position(3),
                    status(4_000, "SHIPPED", Some("again")),
                ),
                status_change(&config, "g-3", position(4), status(3_500, "ON_HOLD", None)),
            ],
            None,
        )
        .await;
    let running = start(&config, &[Projector::Orders]).await;
    caught_up(&config, Projector::Orders).await;
    running.stop().await;
    let document = find(&config.targets.orders, id).await.unwrap();
    assert_eq!(
        status_types(&document, "g-1"),
        ["CREATED", "APPROVED", "PROCESSING", "SHIPPED"]
    );
    assert_eq!(status_types(&document, "g-2"), ["CREATED", "APPROVED"]);
    let other_doc = find(&config.targets.orders, other).await.unwrap();
    assert_eq!(
        status_types(&other_doc, "g-3"),
        ["CREATED", "APPROVED", "ON_HOLD"]
    );
    let first = document.get_array("orders").unwrap()[0]
        .as_document()
        .unwrap()
        .get_array("orderStatusEvents")
        .unwrap()[3]
        .as_document()
        .unwrap()
        .clone();
    assert_eq!(
        first,
        doc! { "timestamp": 4_000_i64, "orderStatusType": "SHIPPED" },
        "the first delivery is kept"
    );
}

#[tokio::test]
async fn a_status_for_an_order_no_document_has_is_dead_lettered() {
    let config = test_config();
    create_topics(&config).await;
    let id = &new_customer_id();
    collection(&config.targets.orders)
        .await
        .insert_one(customer_orders(id, "Ada", &[approved_order("g-1")]))
        .await
        .unwrap();
    let producer = Producer::new();
    producer
        .send_all(
            &[
                status_change(
                    &config,
                    "g-missing",
                    position(1),
                    status(3_000, "SHIPPED", None),
                ),
                status_change(
                    &config,
                    "g-1",
                    position(2),
                    status(3_000, "PROCESSING", None),
                ),
            ],
            None,
        )
        .await;
    let running = start(&config, &[Projector::Orders]).await;
    caught_up(&config, Projector::Orders).await;
    running.stop().await;
    let document = find(&config.targets.orders, id).await.unwrap();
    assert_eq!(
        status_types(&document, "g-1"),
        ["CREATED", "APPROVED", "PROCESSING"]
    );
    // Caught up and stopped: every dead letter it will ever send for these records is in the
    // topic (a record's offset is committed only once its dead letter is acknowledged).
    let mut reader = TopicReader::new(&[&config.apply.dead_letter_topic]);
    let letters = read_all(&mut reader, &[&config.apply.dead_letter_topic], DEADLINE).await;
    assert_eq!(
        letters.iter().map(|l| l.key.as_deref()).collect::<Vec<_>>(),
        [Some("g-missing")],
        "one dead letter, for the status of the unknown order"
    );
    assert_eq!(letters[0].header("dlq_kind"), "contract");
    assert!(
        letters[0]
            .header("dlq_reason")
            .contains("g-missing is in no document"),
        "{:?}",
        letters[0].headers
    );
}
