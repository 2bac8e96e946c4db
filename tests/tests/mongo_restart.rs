//! A resume token kept before the MongoDB test server restarts still resumes exactly after it:
//! the connector's checkpoints rely on this. In its own test binary because restarting the server
//! would disturb tests running in parallel.

use mongodb::bson::{Document, doc};
use storefront_tests::{next_events, stack, unique};

mod common;
use common::{id_of, token_after};

#[tokio::test]
async fn a_token_from_before_a_restart_resumes_exactly() {
    if !stack().local_mongo {
        eprintln!("skipped: STOREFRONT_TEST_MONGO_URI names an external MongoDB we cannot restart");
        return;
    }
    let database = unique("restart");
    let client = stack().mongo_client().await;
    let collection = client.database(&database).collection::<Document>("items");
    let token = token_after(&collection, 0..3).await;
    for id in 3..5 {
        collection.insert_one(doc! { "_id": id }).await.unwrap();
    }
    drop(collection);
    drop(client);

    stack().restart_mongo();

    let client = stack().mongo_client().await;
    let collection = client.database(&database).collection::<Document>("items");
    assert_eq!(
        collection.count_documents(doc! {}).await.unwrap(),
        5,
        "data kept"
    );
    collection.insert_one(doc! { "_id": 5 }).await.unwrap();
    let mut resumed = collection.watch().resume_after(token).await.unwrap();
    let events = next_events(&mut resumed, 3).await;
    assert_eq!(events.iter().map(id_of).collect::<Vec<_>>(), vec![3, 4, 5]);
    collection.insert_one(doc! { "_id": 100 }).await.unwrap();
    assert_eq!(id_of(&next_events(&mut resumed, 1).await[0]), 100);
}
