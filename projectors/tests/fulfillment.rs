//! The fulfillment projection's rules against the local stack.

mod common;

use common::*;
use mongodb::bson::{Bson, doc};
use projectors::config::Projector;

#[tokio::test]
async fn a_request_creates_one_fulfillment_in_the_domain_shape() {
    let config = test_config();
    create_topics(&config).await;
    let record = fulfillment_request(&config, "g-1", position(1), "London");
    // The event carries the price as a JSON number with its own digits.
    let body = String::from_utf8(record.body.clone().unwrap()).unwrap();
    assert!(body.contains(r#""price":3.99}"#), "{body}");
    Producer::new().send(&record, None).await;
    let running = start(&config, &[Projector::Fulfillment]).await;
    caught_up(&config, Projector::Fulfillment).await;
    running.stop().await;
    let documents = snapshot(&config.targets.fulfillment).await;
    assert_eq!(documents.len(), 1);
    let request = &documents[0];
    assert_eq!(request.get_str("_id"), Ok("g-1"));
    assert_eq!(request.get_i64("timestamp"), Ok(2_000));
    assert_eq!(
        request.get_document("name").unwrap().get_str("firstName"),
        Ok("Ada")
    );
    assert_eq!(
        request.get_document("contact").unwrap().get_str("email"),
        Ok("ada@example.com")
    );
    assert_eq!(
        request.get_document("address").unwrap().get_str("city"),
        Ok("London")
    );
    let order = request.get_document("order").unwrap();
    assert_eq!(order.get_str("guid"), Ok("g-1"));
    let items = order.get_array("orderItems").unwrap();
    assert_eq!(items.len(), 1);
    let item = items[0].as_document().unwrap();
    // Stored exactly: Decimal128 3.99, not the double nearest to it.
    assert_eq!(
        item.get_document("product").unwrap().get("price"),
        Some(&Bson::Decimal128("3.99".parse().unwrap()))
    );
    assert_eq!(item.get_i64("quantity"), Ok(2));
    let statuses: Vec<&str> = order
        .get_array("orderStatusEvents")
        .unwrap()
        .iter()
        .map(|s| s.as_document().unwrap().get_str("orderStatusType").unwrap())
        .collect();
    assert_eq!(statuses, ["CREATED", "APPROVED"]);
    assert!(!request.contains_key("shippingMethod"));
    assert!(!request.contains_key("customerId"));
    let keys: Vec<&str> = request.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "_cdc",
            "_id",
            "address",
            "contact",
            "name",
            "order",
            "timestamp"
        ]
    );
}

#[tokio::test]
async fn a_repeated_request_never_duplicates_nor_moves_a_later_status_back() {
    let config = test_config();
    create_topics(&config).await;
    let producer = Producer::new();
    let first = fulfillment_request(&config, "g-1", position(1), "London");
    producer.send(&first, None).await;
    let running = start(&config, &[Projector::Fulfillment]).await;
    caught_up(&config, Projector::Fulfillment).await;

    // The Fulfillment app moves on: PROCESSING, then shipped by drone.
    let requests = collection(&config.targets.fulfillment).await;
    requests
        .update_one(
            doc! { "_id": "g-1" },
            doc! {
                "$push": { "order.orderStatusEvents": { "timestamp": 3_000_i64, "orderStatusType": "PROCESSING" } },
                "$set": { "shippingMethod": "Drone" },
            },
        )
        .await
        .unwrap();
    // The same request again (redelivery), and a newer one (the connector publishing it again
    // with a changed address).
    producer.send(&first, None).await;
    producer
        .send(
            &fulfillment_request(&config, "g-1", position(2), "Paris"),
            None,
        )
        .await;
    caught_up(&config, Projector::Fulfillment).await;
    running.stop().await;

    let documents = snapshot(&config.targets.fulfillment).await;
    assert_eq!(
        documents.len(),
        1,
        "one fulfillment per order: {documents:?}"
    );
    let request = &documents[0];
    let statuses: Vec<&str> = request
        .get_document("order")
        .unwrap()
        .get_array("orderStatusEvents")
        .unwrap()
        .iter()
        .map(|s| s.as_document().unwrap().get_str("orderStatusType").unwrap())
        .collect();
    assert_eq!(statuses, ["CREATED", "APPROVED", "PROCESSING"]);
    assert_eq!(request.get_str("shippingMethod"), Ok("Drone"));
    assert_eq!(
        request.get_document("address").unwrap().get_str("city"),
        Ok("Paris"),
        "the newest request's own fields win"
    );
    assert_eq!(
        request.get_document("_cdc").unwrap().get("requestPosition"),
        Some(&Bson::Int64(position(2) as i64))
    );
}
