//! Smoke tests of the MongoDB test server as the product uses it, through the Rust driver:
//! CRUD, a change stream, and resuming exactly after a kept resume token.
//!
//! These stay deliberately plain (no dotted names, no `fullDocument: updateLookup`); the
//! conformance suite (`conformance.rs`) checks documented change-stream behaviour in depth.

use futures::TryStreamExt;
use mongodb::bson::{Document, doc};
use mongodb::change_stream::event::OperationType;
use storefront_tests::{next_events, stack, unique};

mod common;
use common::{id_of, token_after};

#[tokio::test]
async fn crud_and_a_change_stream_round_trip() {
    let client = stack().mongo_client().await;
    let collection = client
        .database(&unique("smoke"))
        .collection::<Document>("items");
    let mut stream = collection.watch().await.unwrap();

    collection
        .insert_one(doc! { "_id": 1, "v": 1 })
        .await
        .unwrap();
    collection
        .update_one(doc! { "_id": 1 }, doc! { "$set": { "v": 2 } })
        .await
        .unwrap();
    collection.delete_one(doc! { "_id": 1 }).await.unwrap();
    assert_eq!(collection.count_documents(doc! {}).await.unwrap(), 0);

    let events = next_events(&mut stream, 3).await;
    let kinds: Vec<OperationType> = events.iter().map(|e| e.operation_type.clone()).collect();
    assert_eq!(
        kinds,
        vec![
            OperationType::Insert,
            OperationType::Update,
            OperationType::Delete
        ]
    );
    assert_eq!(events[0].full_document, Some(doc! { "_id": 1, "v": 1 }));
    assert_eq!(events[2].document_key, Some(doc! { "_id": 1 }));
}

#[tokio::test]
async fn resume_after_a_token_delivers_exactly_the_later_changes() {
    let client = stack().mongo_client().await;
    let collection = client
        .database(&unique("smoke"))
        .collection::<Document>("items");
    let token = token_after(&collection, 0..3).await;
    for id in 3..6 {
        collection.insert_one(doc! { "_id": id }).await.unwrap();
    }

    let mut resumed = collection.watch().resume_after(token).await.unwrap();
    let events = next_events(&mut resumed, 3).await;
    assert_eq!(events.iter().map(id_of).collect::<Vec<_>>(), vec![3, 4, 5]);
    // Nothing else is pending: the next event is a change made after this point.
    collection.insert_one(doc! { "_id": 100 }).await.unwrap();
    let next = next_events(&mut resumed, 1).await;
    assert_eq!(id_of(&next[0]), 100);
}

#[tokio::test]
async fn documents_written_are_read_back() {
    let client = stack().mongo_client().await;
    let collection = client
        .database(&unique("smoke"))
        .collection::<Document>("items");
    collection
        .insert_many([doc! { "_id": 1, "n": "a" }, doc! { "_id": 2, "n": "b" }])
        .await
        .unwrap();
    let found: Vec<Document> = collection
        .find(doc! {})
        .sort(doc! { "_id": 1 })
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(
        found,
        vec![doc! { "_id": 1, "n": "a" }, doc! { "_id": 2, "n": "b" }]
    );
}
