//! Guarded writes: the query and upsert semantics the projectors' idempotent writes rely on,
//! checked through the Rust driver against the local test server (or the MongoDB named by
//! `STOREFRONT_TEST_MONGO_URI`).
//!
//! A projector writes `{_id: <key>, <guard>: {$lt: <position>}}` with `upsert: true`: the
//! document is updated only when it is older than the event, created when missing, and left
//! alone (a duplicate-key error, E11000) when it is already newer. MongoDB serves such a filter
//! from the `_id` index; the test server does so through the launcher's `EqualityFirstIndex`
//! (the stock server scans the collection), so these tests also pin that the shortcut keeps
//! the filter's meaning: every condition besides `_id` still applies.
//! Manual: "Upsert with Duplicate Values" and the `update` command,
//! <https://www.mongodb.com/docs/manual/reference/command/update/>.

use mongodb::bson::{Document, doc};
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::{Collection, Database};
use storefront_tests::{stack, unique};

async fn fresh_collection() -> (Database, Collection<Document>) {
    let client = stack().mongo_client().await;
    let db = client.database(&unique("guarded"));
    let collection = db.collection("customer.orders");
    (db, collection)
}

fn is_duplicate_key(error: &mongodb::error::Error) -> bool {
    matches!(
        error.kind.as_ref(),
        ErrorKind::Write(WriteFailure::WriteError(e)) if e.code == 11000
    )
}

#[tokio::test]
async fn an_id_among_other_conditions_still_applies_every_condition() {
    let (_db, orders) = fresh_collection().await;
    orders
        .insert_many([
            doc! {"_id": "a", "position": 3},
            doc! {"_id": "b", "position": 7},
            doc! {"_id": {"tenant": 1, "key": "c"}, "position": 5},
        ])
        .await
        .unwrap();

    let find = async |filter: Document| {
        orders
            .find_one(filter)
            .await
            .unwrap()
            .map(|d| d.get("_id").unwrap().clone())
    };
    assert_eq!(
        find(doc! {"_id": "a", "position": {"$lt": 5}}).await,
        Some("a".into())
    );
    assert_eq!(find(doc! {"_id": "b", "position": {"$lt": 5}}).await, None);
    assert_eq!(find(doc! {"_id": "z", "position": {"$lt": 5}}).await, None);
    // An embedded-document `_id` is one exact value too.
    assert_eq!(
        find(doc! {"_id": {"tenant": 1, "key": "c"}, "position": {"$gt": 4}}).await,
        Some(doc! {"tenant": 1, "key": "c"}.into())
    );
    assert_eq!(
        find(doc! {"_id": {"tenant": 1, "key": "c"}, "position": {"$gt": 5}}).await,
        None
    );
    // Operators on `_id` are not one value: `$in` with another condition, and `$ne`.
    assert_eq!(
        find(doc! {"_id": {"$in": ["a", "b"]}, "position": {"$gt": 5}}).await,
        Some("b".into())
    );
    assert_eq!(
        find(doc! {"_id": {"$ne": "a"}, "position": {"$lt": 6}}).await,
        Some(doc! {"tenant": 1, "key": "c"}.into())
    );
}

#[tokio::test]
async fn a_guarded_upsert_updates_older_creates_missing_and_refuses_newer() {
    let (_db, orders) = fresh_collection().await;
    orders
        .insert_one(doc! {"_id": "a", "position": 3, "name": "old"})
        .await
        .unwrap();
    let guarded = |id: &str, position: i32, name: &str| {
        let filter = doc! {"_id": id, "position": {"$lt": position}};
        let update = doc! {"$set": {"position": position, "name": name}};
        let orders = orders.clone();
        async move { orders.update_one(filter, update).upsert(true).await }
    };

    // Older document: updated in place.
    let newer = guarded("a", 5, "newer").await.unwrap();
    assert_eq!((newer.matched_count, newer.upserted_id), (1, None));
    // Missing document: created with the filter's `_id`.
    let created = guarded("b", 1, "created").await.unwrap();
    assert_eq!(created.upserted_id, Some("b".into()));
    // Stale event: the guard filters the document out, the upsert collides with its `_id`.
    let stale = guarded("a", 4, "stale").await.unwrap_err();
    assert!(is_duplicate_key(&stale), "{stale}");

    let a = orders.find_one(doc! {"_id": "a"}).await.unwrap().unwrap();
    assert_eq!(a, doc! {"_id": "a", "position": 5, "name": "newer"});
    let b = orders.find_one(doc! {"_id": "b"}).await.unwrap().unwrap();
    assert_eq!(b, doc! {"_id": "b", "position": 1, "name": "created"});
    assert_eq!(orders.count_documents(doc! {}).await.unwrap(), 2);
}
