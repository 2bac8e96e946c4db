//! `projectors rebuild` against the local stack: a rebuild of a drifted projection ends equal to
//! the live one, refuses to run beside live instances, and hands over to them without a gap.

mod common;

use common::scenario::{Ids, scenario, seed};
use common::*;
use mongodb::bson::doc;
use projectors::RebuildError;
use projectors::config::Projector;

#[tokio::test]
async fn a_rebuild_of_a_drifted_projection_equals_the_live_one() {
    let config = test_config();
    create_topics(&config).await;
    let ids = Ids::new();
    seed(&config, &ids).await;
    let producer = Producer::new();
    producer.send_all(&scenario(&config, &ids), None).await;

    // Live.
    let running = start(&config, &Projector::ALL).await;
    caught_up(&config, Projector::Orders).await;
    caught_up(&config, Projector::Fulfillment).await;

    // While instances run, a rebuild refuses to start.
    let refused = projectors::rebuild(
        config.clone(),
        Projector::Orders,
        std::future::pending(),
        false,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(refused, RebuildError::GroupActive { members: 1, .. }),
        "{refused}"
    );
    running.stop().await;
    let live_orders = snapshot(&config.targets.orders).await;
    let live_requests = snapshot(&config.targets.fulfillment).await;

    // Drift: data changed behind the projector (one change even claims a newer position), a
    // status and a whole request lost, a guard removed.
    let orders = collection(&config.targets.orders).await;
    orders
        .update_one(
            doc! { "_id": &ids.a },
            doc! { "$set": {
                "name.firstName": "Drifted",
                "_cdc.customerPosition": i64::MAX,
                "customerDeleted": true,
            } },
        )
        .await
        .unwrap();
    orders
        .update_one(
            doc! { "_id": &ids.a },
            doc! { "$pull": { "orders.0.orderStatusEvents": { "orderStatusType": "SHIPPED" } } },
        )
        .await
        .unwrap();
    orders
        .update_one(
            doc! { "_id": &ids.b },
            doc! { "$unset": { "_cdc": "", "contact": "" } },
        )
        .await
        .unwrap();
    let requests = collection(&config.targets.fulfillment).await;
    requests.delete_one(doc! { "_id": "g-2" }).await.unwrap();
    requests
        .update_one(
            doc! { "_id": "g-1" },
            doc! { "$set": { "address.city": "Nowhere" } },
        )
        .await
        .unwrap();
    assert_ne!(snapshot(&config.targets.orders).await, live_orders);
    assert_ne!(snapshot(&config.targets.fulfillment).await, live_requests);

    for projector in Projector::ALL {
        let report = projectors::rebuild(config.clone(), projector, std::future::pending(), false)
            .await
            .unwrap();
        assert!(report.replayed.total() > 0, "{report:?}");
        assert_eq!(report.replayed.dead_letters, 0, "{report:?}");
        assert!(report.mismatches.is_empty(), "{report:?}");
        assert!(
            is_caught_up(&config, projector),
            "the group is left at the replayed end"
        );
    }
    assert_eq!(snapshot(&config.targets.orders).await, live_orders);
    assert_eq!(snapshot(&config.targets.fulfillment).await, live_requests);

    // Live instances take over after the replayed end: a new event is applied, and nothing
    // replayed is read again (the group was left at the end).
    let e = new_customer_id();
    producer
        .send(&customer_change(&config, &e, position(100), "E"), None)
        .await;
    let topic = format!("topic=\"{}\"", config.topics.customer_change);
    let read_before = metric_sum("projector_events_total", &[&topic]);
    let running = start(&config, &Projector::ALL).await;
    caught_up(&config, Projector::Orders).await;
    running.stop().await;
    assert_eq!(
        metric_sum("projector_events_total", &[&topic]) - read_before,
        1.0,
        "only the new event is read"
    );
    let new = find(&config.targets.orders, &e).await.unwrap();
    assert_eq!(
        new.get_document("name").unwrap().get_str("firstName"),
        Ok("E")
    );
    let mut expected = live_orders.clone();
    expected.push(canonical(new));
    expected.sort_by_key(id_order);
    assert_eq!(snapshot(&config.targets.orders).await, expected);
}
