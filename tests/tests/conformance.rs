//! Change-stream conformance: documented MongoDB behaviour the connector relies on, checked
//! through the Rust driver. Runs against the local test server by default and against any
//! MongoDB named by `STOREFRONT_TEST_MONGO_URI` (a replica set: change streams need one), so the
//! same assertions hold for both; where they cannot, the test says so.
//!
//! Each test cites the page of the MongoDB manual it checks:
//! - "Change Events": <https://www.mongodb.com/docs/manual/reference/change-events/> and one page
//!   per operation type below it (insert, update, replace, delete, drop, dropDatabase, rename,
//!   invalidate).
//! - "Change Streams": <https://www.mongodb.com/docs/manual/changeStreams/>, sections "Watch a
//!   Collection, Database, or Deployment", "Modify Change Stream Output", "Lookup Full Document
//!   for Update Operations", "Resume a Change Stream" (resumeAfter, startAfter,
//!   startAtOperationTime) and "Resume Tokens".
//! - "Change Streams with Document Pre- and Post-Images" (MongoDB 6.0+), a section of "Change
//!   Streams":
//!   <https://www.mongodb.com/docs/manual/changeStreams/#change-streams-with-document-pre--and-post-images>,
//!   with the `fullDocument` / `fullDocumentBeforeChange` options of `db.collection.watch()`
//!   (<https://www.mongodb.com/docs/manual/reference/method/db.collection.watch/>) and the
//!   `changeStreamPreAndPostImages` option of `create` and `collMod`.
//!
//! Collections are named like the project's own (`customer.accounts`, `customer.orders`: names
//! with dots) because that is where the stock test server lost events. The restart case is in
//! `conformance_restart.rs`: restarting the server would disturb the tests of this binary, which
//! run in parallel.

use futures::TryStreamExt;
use mongodb::bson::oid::ObjectId;
use mongodb::bson::{Bson, Document, Timestamp, doc};
use mongodb::change_stream::ChangeStream;
use mongodb::change_stream::event::{ChangeStreamEvent, OperationType, ResumeToken};
use mongodb::error::{Error, ErrorKind};
use mongodb::options::{
    ChangeStreamPreAndPostImages, FullDocumentBeforeChangeType, FullDocumentType, ReturnDocument,
};
use mongodb::{Client, Collection, Database};
use serde::de::DeserializeOwned;
use storefront_tests::{DEADLINE, eventually, next_events, stack, unique};

type Event = ChangeStreamEvent<Document>;

/// Writes a sentinel document and asserts that the stream's next event is its insert: proof
/// that nothing else was pending before it (a wait for "no event" could never be sure).
async fn assert_next_is_sentinel(
    stream: &mut ChangeStream<Event>,
    collection: &Collection<Document>,
) {
    let sentinel = ObjectId::new();
    collection
        .insert_one(doc! { "_id": sentinel, "sentinel": true })
        .await
        .unwrap();
    let next = next_events(stream, 1).await.remove(0);
    assert_eq!(
        (next.operation_type, next.document_key),
        (OperationType::Insert, Some(doc! { "_id": sentinel })),
        "the next event should be the sentinel's insert: something else was pending"
    );
}

async fn client() -> Client {
    stack().mongo_client().await
}

/// A fresh database with the project's dotted collection names.
async fn fresh_database(client: &Client) -> Database {
    client.database(&unique("conformance"))
}

fn accounts(db: &Database) -> Collection<Document> {
    db.collection("customer.accounts")
}

fn orders(db: &Database) -> Collection<Document> {
    db.collection("customer.orders")
}

fn customer(id: ObjectId) -> Document {
    doc! {
        "_id": id,
        "name": { "title": "Ms", "firstName": "Ada", "lastName": "Lovelace" },
        "contact": {
            "primaryPhone": "555-0100",
            "secondaryPhone": "555-0101",
            "email": "ada@example.com",
        },
        "addresses": [ { "type": "BILLING", "city": "London" } ],
    }
}

fn ns_of(event: &Event) -> (String, Option<String>) {
    let ns = event.ns.as_ref().expect("event has an ns");
    (ns.db.clone(), ns.coll.clone())
}

/// "Change Events" > insert: `documentKey` is `{_id}`, `fullDocument` the inserted document, `ns`
/// names database and collection; every event has a resume token `_id`, a `clusterTime` and
/// (6.0+) a `wallTime`. "Change Events" > clusterTime: the oplog time of the write, so later
/// writes have later times.
#[tokio::test]
async fn insert_events_carry_document_key_full_document_ns_and_times() {
    let client = client().await;
    let db = fresh_database(&client).await;
    let coll = accounts(&db);
    let mut stream = coll.watch().await.unwrap();

    let ids = [ObjectId::new(), ObjectId::new(), ObjectId::new()];
    for id in ids {
        coll.insert_one(customer(id)).await.unwrap();
    }
    let events = next_events(&mut stream, 3).await;

    for (event, id) in events.iter().zip(ids) {
        assert_eq!(event.operation_type, OperationType::Insert);
        assert_eq!(event.document_key, Some(doc! { "_id": id }));
        assert_eq!(event.full_document, Some(customer(id)));
        assert_eq!(
            ns_of(event),
            (db.name().to_owned(), Some("customer.accounts".to_owned()))
        );
        assert!(event.wall_time.is_some(), "wallTime (MongoDB 6.0+)");
    }
    let times: Vec<Timestamp> = events
        .iter()
        .map(|e| e.cluster_time.expect("clusterTime"))
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] < w[1]),
        "clusterTime grows with each write: {times:?}"
    );
}

/// "Change Events" > update: `documentKey` is `{_id}` (not the update), `updateDescription`
/// lists `updatedFields` (dotted paths into subdocuments; elements `$push`ed onto a non-empty
/// array as `field.<index>`) and `removedFields`; without `fullDocument: updateLookup` the event
/// has no `fullDocument`. A field `$set` to the value it already has is not a change and is not
/// listed.
#[tokio::test]
async fn update_events_describe_the_change_and_key_the_document_by_id() {
    let client = client().await;
    let db = fresh_database(&client).await;
    let coll = accounts(&db);
    let id = ObjectId::new();
    coll.insert_one(customer(id)).await.unwrap();
    let mut stream = coll.watch().await.unwrap().with_type::<Document>();

    coll.update_one(
        doc! { "_id": id, "contact.email": "ada@example.com" },
        doc! {
            "$set": { "contact.email": "ada@lovelace.org", "name.title": "Ms" },
            "$unset": { "contact.secondaryPhone": "" },
            "$push": { "addresses": { "type": "SHIPPING", "city": "Paris" } },
        },
    )
    .await
    .unwrap();
    let event = next_events(&mut stream, 1).await.remove(0);

    assert_eq!(event.get_str("operationType").unwrap(), "update");
    assert_eq!(
        event.get_document("documentKey").unwrap(),
        &doc! { "_id": id }
    );
    assert!(
        !event.contains_key("fullDocument"),
        "no fullDocument without updateLookup: {event}"
    );
    let description = event.get_document("updateDescription").unwrap();
    assert_eq!(
        description.get_document("updatedFields").unwrap(),
        &doc! {
            "contact.email": "ada@lovelace.org",
            "addresses.1": { "type": "SHIPPING", "city": "Paris" },
        }
    );
    assert_eq!(
        description.get_array("removedFields").unwrap(),
        &vec![Bson::String("contact.secondaryPhone".into())]
    );
}

/// "Change Events" > replace: a whole-document replacement (`replaceOne`) is a `replace` event,
/// not an `update`, and carries the new document as `fullDocument` even without updateLookup.
#[tokio::test]
async fn replacing_a_document_is_a_replace_event_with_the_new_document() {
    let client = client().await;
    let db = fresh_database(&client).await;
    let coll = accounts(&db);
    let id = ObjectId::new();
    coll.insert_one(customer(id)).await.unwrap();
    let mut stream = coll.watch().await.unwrap();

    let replacement = doc! { "_id": id, "name": { "firstName": "Grace", "lastName": "Hopper" } };
    coll.replace_one(doc! { "_id": id }, replacement.clone())
        .await
        .unwrap();
    let event = next_events(&mut stream, 1).await.remove(0);

    assert_eq!(event.operation_type, OperationType::Replace);
    assert_eq!(event.document_key, Some(doc! { "_id": id }));
    assert_eq!(event.full_document, Some(replacement));
    assert!(event.update_description.is_none());
}

/// "Change Events" > delete: `documentKey` is `{_id}`, `ns` is set, and there is no
/// `fullDocument` (the document is gone).
#[tokio::test]
async fn delete_events_carry_only_the_document_key() {
    let client = client().await;
    let db = fresh_database(&client).await;
    let coll = accounts(&db);
    let id = ObjectId::new();
    coll.insert_one(customer(id)).await.unwrap();
    let mut stream = coll.watch().await.unwrap().with_type::<Document>();

    coll.delete_one(doc! { "_id": id }).await.unwrap();
    let event = next_events(&mut stream, 1).await.remove(0);

    assert_eq!(event.get_str("operationType").unwrap(), "delete");
    assert_eq!(
        event.get_document("documentKey").unwrap(),
        &doc! { "_id": id }
    );
    assert_eq!(
        event.get_document("ns").unwrap(),
        &doc! { "db": db.name(), "coll": "customer.accounts" }
    );
    assert!(!event.contains_key("fullDocument"), "{event}");
}

/// "Change Streams" > "Lookup Full Document for Update Operations": with `fullDocument:
/// updateLookup` an update event carries the document's most current majority-committed
/// version (which can include later changes than the event's), and `null` when the document
/// has been deleted since. On a dotted collection name, where the stock test server failed and
/// the driver silently restarted the stream from "now".
#[tokio::test]
async fn update_lookup_returns_the_current_document_or_null_once_deleted() {
    let client = client().await;
    let db = fresh_database(&client).await;
    let coll = accounts(&db);
    let id = ObjectId::new();
    coll.insert_one(customer(id)).await.unwrap();
    let mut stream = coll
        .watch()
        .full_document(FullDocumentType::UpdateLookup)
        .await
        .unwrap()
        .with_type::<Document>();

    let set_email = |email: &str| doc! { "$set": { "contact.email": email } };
    coll.update_one(doc! { "_id": id }, set_email("a@example.com"))
        .await
        .unwrap();
    let first = next_events(&mut stream, 1).await.remove(0);
    let current = coll.find_one(doc! { "_id": id }).await.unwrap().unwrap();
    assert_eq!(first.get_document("fullDocument").unwrap(), &current);

    // Two updates, read after both: each event looks up the document as it is now.
    coll.update_one(doc! { "_id": id }, set_email("b@example.com"))
        .await
        .unwrap();
    coll.update_one(doc! { "_id": id }, set_email("c@example.com"))
        .await
        .unwrap();
    let both = next_events(&mut stream, 2).await;
    for event in &both {
        let full = event.get_document("fullDocument").unwrap();
        assert_eq!(
            full.get_document("contact")
                .unwrap()
                .get_str("email")
                .unwrap(),
            "c@example.com"
        );
    }
    assert_eq!(
        both[0]
            .get_document("updateDescription")
            .unwrap()
            .get_document("updatedFields")
            .unwrap(),
        &doc! { "contact.email": "b@example.com" },
        "updateDescription still describes its own update"
    );

    // Updated, then deleted before the event is read: the post-image is null, not the update.
    coll.update_one(doc! { "_id": id }, set_email("d@example.com"))
        .await
        .unwrap();
    coll.delete_one(doc! { "_id": id }).await.unwrap();
    let events = next_events(&mut stream, 2).await;
    assert_eq!(events[0].get_str("operationType").unwrap(), "update");
    assert_eq!(
        events[0].get("fullDocument"),
        Some(&Bson::Null),
        "{}",
        events[0]
    );
    assert_eq!(events[1].get_str("operationType").unwrap(), "delete");
}

/// Updates with updateLookup on the project's dotted collections, many in a row: none may be
/// lost ("Lookup Full Document for Update Operations" on `customer.accounts` and the stock
/// server's failure mode: a failed lookup made the driver reopen the stream from "now").
#[tokio::test]
async fn no_event_is_lost_on_dotted_collections_with_update_lookup() {
    let client = client().await;
    let db = fresh_database(&client).await;
    let coll = orders(&db);
    let id = ObjectId::new();
    coll.insert_one(doc! { "_id": id, "orders": [] })
        .await
        .unwrap();
    let mut stream = coll
        .watch()
        .full_document(FullDocumentType::UpdateLookup)
        .await
        .unwrap();

    for n in 0..20 {
        coll.update_one(
            doc! { "_id": id },
            doc! { "$push": { "orders": { "guid": format!("order-{n}") } } },
        )
        .await
        .unwrap();
    }
    let events = next_events(&mut stream, 20).await;

    for (n, event) in events.iter().enumerate() {
        assert_eq!(event.operation_type, OperationType::Update);
        assert_eq!(event.document_key, Some(doc! { "_id": id }));
        let updated = &event.update_description.as_ref().unwrap().updated_fields;
        let order = doc! { "guid": format!("order-{n}") };
        // MongoDB logs a push onto an empty array as the whole array, later ones by index.
        let expected = if n == 0 {
            doc! { "orders": [order] }
        } else {
            doc! { format!("orders.{n}"): order }
        };
        assert_eq!(updated, &expected, "event {n} describes push number {n}");
        assert_eq!(
            ns_of(event).1.as_deref(),
            Some("customer.orders"),
            "the whole dotted name"
        );
    }
}

/// "Watch a Collection, Database, or Deployment": a collection stream sees only its collection,
/// even when other collections' names share its prefix (`customer`, `customer.accounts`,
/// `customer.orders`).
#[tokio::test]
async fn a_collection_stream_sees_only_its_own_collection() {
    let client = client().await;
    let db = fresh_database(&client).await;
    let mut stream = accounts(&db).watch().await.unwrap();

    let prefix: Collection<Document> = db.collection("customer");
    prefix.insert_one(doc! { "_id": 1 }).await.unwrap();
    orders(&db).insert_one(doc! { "_id": 2 }).await.unwrap();
    db.collection::<Document>("customer.accounts.archive")
        .insert_one(doc! { "_id": 3 })
        .await
        .unwrap();
    accounts(&db).insert_one(doc! { "_id": 4 }).await.unwrap();

    let event = next_events(&mut stream, 1).await.remove(0);
    assert_eq!(event.document_key, Some(doc! { "_id": 4 }));
    assert_next_is_sentinel(&mut stream, &accounts(&db)).await;
}

/// "Watch a Collection, Database, or Deployment" (`db.watch()`): one stream over every
/// collection of the database, in the order of the writes, each event naming its collection.
/// "Change Events" > drop: dropping one collection is a `drop` event on the database stream,
/// which (unlike a collection stream) stays open.
#[tokio::test]
async fn a_database_stream_sees_every_collection_in_order() {
    let client = client().await;
    let db = fresh_database(&client).await;
    let mut stream = db.watch().await.unwrap();
    let fulfillment: Collection<Document> = db.collection("fulfillment.requests");

    accounts(&db).insert_one(doc! { "_id": 1 }).await.unwrap();
    orders(&db).insert_one(doc! { "_id": 2 }).await.unwrap();
    fulfillment.insert_one(doc! { "_id": 3 }).await.unwrap();
    accounts(&db)
        .update_one(doc! { "_id": 1 }, doc! { "$set": { "v": 2 } })
        .await
        .unwrap();
    orders(&db).drop().await.unwrap();
    fulfillment.delete_one(doc! { "_id": 3 }).await.unwrap();

    let events = next_events(&mut stream, 6).await;
    let seen: Vec<(OperationType, Option<String>)> = events
        .iter()
        .map(|e| (e.operation_type.clone(), ns_of(e).1))
        .collect();
    let coll = |name: &str| Some(name.to_owned());
    assert_eq!(
        seen,
        vec![
            (OperationType::Insert, coll("customer.accounts")),
            (OperationType::Insert, coll("customer.orders")),
            (OperationType::Insert, coll("fulfillment.requests")),
            (OperationType::Update, coll("customer.accounts")),
            (OperationType::Drop, coll("customer.orders")),
            (OperationType::Delete, coll("fulfillment.requests")),
        ]
    );
    assert!(events.iter().all(|e| ns_of(e).0 == db.name()));
    assert_next_is_sentinel(&mut stream, &accounts(&db)).await;
}

/// "Change Events" > dropDatabase and invalidate: dropping the database shows a `drop` per
/// collection, then `dropDatabase`, then `invalidate`, after which the stream is closed.
#[tokio::test]
async fn dropping_the_database_ends_a_database_stream_with_invalidate() {
    let client = client().await;
    let db = fresh_database(&client).await;
    accounts(&db).insert_one(doc! { "_id": 1 }).await.unwrap();
    let mut stream = db.watch().await.unwrap();

    db.drop().await.unwrap();
    let events = next_events(&mut stream, 3).await;

    assert_eq!(
        events
            .iter()
            .map(|e| e.operation_type.clone())
            .collect::<Vec<_>>(),
        vec![
            OperationType::Drop,
            OperationType::DropDatabase,
            OperationType::Invalidate
        ]
    );
    assert_eq!(
        ns_of(&events[1]),
        (db.name().to_owned(), None),
        "dropDatabase names only the database"
    );
    assert_stream_closed(&mut stream).await;
}

async fn assert_stream_closed(stream: &mut ChangeStream<Event>) {
    let after = stream.next_if_any().await.unwrap();
    assert!(after.is_none(), "no event after invalidate: {after:?}");
    assert!(
        !stream.is_alive(),
        "the server closes the stream after invalidate"
    );
}

/// "Change Events" > drop and invalidate: dropping the watched collection is a `drop` event,
/// then an `invalidate` event, and the stream is closed.
#[tokio::test]
async fn dropping_the_collection_ends_its_stream_with_drop_then_invalidate() {
    let client = client().await;
    let db = fresh_database(&client).await;
    let coll = accounts(&db);
    coll.insert_one(doc! { "_id": 1 }).await.unwrap();
    let mut stream = coll.watch().await.unwrap();

    coll.drop().await.unwrap();
    let events = next_events(&mut stream, 2).await;

    assert_eq!(events[0].operation_type, OperationType::Drop);
    assert_eq!(
        ns_of(&events[0]),
        (db.name().to_owned(), Some("customer.accounts".to_owned()))
    );
    assert_eq!(events[1].operation_type, OperationType::Invalidate);
    assert_stream_closed(&mut stream).await;
}

/// "Change Events" > rename: renaming the watched collection is a `rename` event with `ns` and
/// `to`, then `invalidate`.
#[tokio::test]
async fn renaming_the_collection_ends_its_stream_with_rename_then_invalidate() {
    let client = client().await;
    let db = fresh_database(&client).await;
    let coll = accounts(&db);
    coll.insert_one(doc! { "_id": 1 }).await.unwrap();
    let mut stream = coll.watch().await.unwrap();

    let from = format!("{}.customer.accounts", db.name());
    let to = format!("{}.customer.accounts.old", db.name());
    client
        .database("admin")
        .run_command(doc! { "renameCollection": &from, "to": &to })
        .await
        .unwrap();
    let events = next_events(&mut stream, 2).await;

    assert_eq!(events[0].operation_type, OperationType::Rename);
    let target = events[0].to.as_ref().expect("rename has `to`");
    assert_eq!(
        (target.db.as_str(), target.coll.as_deref()),
        (db.name(), Some("customer.accounts.old"))
    );
    assert_eq!(events[1].operation_type, OperationType::Invalidate);
}

/// Opens a stream, writes `ids`, reads their events and returns the resume token of the last.
async fn token_after_inserts(coll: &Collection<Document>, ids: &[i32]) -> ResumeToken {
    let mut stream = coll.watch().await.unwrap();
    for id in ids {
        coll.insert_one(doc! { "_id": id }).await.unwrap();
    }
    let events = next_events(&mut stream, ids.len()).await;
    events.last().expect("some events").id.clone()
}

fn key_ids(events: &[Event]) -> Vec<i32> {
    events
        .iter()
        .map(|e| {
            e.document_key
                .as_ref()
                .and_then(|k| k.get_i32("_id").ok())
                .unwrap_or(-1)
        })
        .collect()
}

/// "Resume a Change Stream" > resumeAfter: a stream opened with the resume token of an event
/// delivers exactly the events after it (none twice, none missed), also when the collection was
/// dropped and re-created at some time before the token (the stock server answered
/// `invalidate` to that).
#[tokio::test]
async fn resume_after_delivers_exactly_the_events_after_the_token_even_after_an_earlier_drop() {
    let client = client().await;
    let db = fresh_database(&client).await;
    let coll = accounts(&db);
    coll.insert_one(doc! { "_id": 0 }).await.unwrap();
    coll.drop().await.unwrap();

    let token = token_after_inserts(&coll, &[1, 2]).await;
    coll.insert_one(doc! { "_id": 3 }).await.unwrap();
    coll.update_one(doc! { "_id": 3 }, doc! { "$set": { "v": 1 } })
        .await
        .unwrap();
    coll.delete_one(doc! { "_id": 1 }).await.unwrap();

    let mut resumed = coll.watch().resume_after(token).await.unwrap();
    let events = next_events(&mut resumed, 3).await;
    assert_eq!(
        events
            .iter()
            .map(|e| e.operation_type.clone())
            .collect::<Vec<_>>(),
        vec![
            OperationType::Insert,
            OperationType::Update,
            OperationType::Delete
        ]
    );
    assert_eq!(key_ids(&events), vec![3, 3, 1]);
    assert_next_is_sentinel(&mut resumed, &coll).await;
}

/// "Resume a Change Stream" > startAfter: like resumeAfter, delivers exactly the events after
/// the token.
#[tokio::test]
async fn start_after_delivers_exactly_the_events_after_the_token() {
    let client = client().await;
    let db = fresh_database(&client).await;
    let coll = orders(&db);
    let token = token_after_inserts(&coll, &[1, 2, 3]).await;
    for id in 4..7 {
        coll.insert_one(doc! { "_id": id }).await.unwrap();
    }

    let mut started = coll.watch().start_after(token).await.unwrap();
    assert_eq!(key_ids(&next_events(&mut started, 3).await), vec![4, 5, 6]);
    assert_next_is_sentinel(&mut started, &coll).await;
}

/// "Resume a Change Stream": resumeAfter cannot resume after an `invalidate` (the stream it
/// belonged to is over); startAfter can, and opens a new stream on the re-created collection
/// that delivers the events after the invalidate.
#[tokio::test]
async fn after_an_invalidate_only_start_after_resumes() {
    let client = client().await;
    let db = fresh_database(&client).await;
    let coll = accounts(&db);
    coll.insert_one(doc! { "_id": 1 }).await.unwrap();
    let mut stream = coll.watch().await.unwrap();
    coll.drop().await.unwrap();
    let events = next_events(&mut stream, 2).await;
    assert_eq!(events[1].operation_type, OperationType::Invalidate);
    let invalidate = events[1].id.clone();

    coll.insert_one(doc! { "_id": 2 }).await.unwrap();

    let refused = coll.watch().resume_after(invalidate.clone()).await;
    assert!(
        refused.is_err(),
        "resumeAfter an invalidate must fail, got a stream"
    );
    let mut started = coll.watch().start_after(invalidate).await.unwrap();
    let event = next_events(&mut started, 1).await.remove(0);
    assert_eq!(
        (event.operation_type, event.document_key),
        (OperationType::Insert, Some(doc! { "_id": 2 }))
    );
}

/// "Resume a Change Stream" > resumeAfter with the token of the `drop` event: the stream resumes
/// just before the `invalidate`, so that is what it delivers.
#[tokio::test]
async fn resuming_after_a_drop_event_delivers_the_invalidate() {
    let client = client().await;
    let db = fresh_database(&client).await;
    let coll = orders(&db);
    coll.insert_one(doc! { "_id": 1 }).await.unwrap();
    let mut stream = coll.watch().await.unwrap();
    coll.drop().await.unwrap();
    let drop_token = next_events(&mut stream, 1).await.remove(0).id;

    let mut resumed = coll.watch().resume_after(drop_token).await.unwrap();
    let event = next_events(&mut resumed, 1).await.remove(0);
    assert_eq!(event.operation_type, OperationType::Invalidate);
}

/// "Resume Tokens" (from aggregate and getMore): the server reports a `postBatchResumeToken`
/// with every batch, so a stream that has seen no event yet still has a token, and resuming
/// with it delivers exactly what was written after the stream was opened.
#[tokio::test]
async fn an_idle_stream_has_a_resume_token_that_resumes_exactly() {
    let client = client().await;
    let db = fresh_database(&client).await;
    let coll = accounts(&db);
    coll.insert_one(doc! { "_id": 0 }).await.unwrap();
    let stream = coll.watch().await.unwrap();
    let token = stream
        .resume_token()
        .expect("a postBatchResumeToken before any event");
    drop(stream);

    coll.insert_one(doc! { "_id": 1 }).await.unwrap();
    coll.insert_one(doc! { "_id": 2 }).await.unwrap();
    let mut resumed = coll.watch().resume_after(token).await.unwrap();
    assert_eq!(key_ids(&next_events(&mut resumed, 2).await), vec![1, 2]);
    assert_next_is_sentinel(&mut resumed, &coll).await;
}

/// "Resume a Change Stream" > startAtOperationTime: the stream starts at the given cluster time,
/// inclusive: the event written at that time is the first one delivered.
#[tokio::test]
async fn start_at_operation_time_includes_the_event_at_that_time() {
    let client = client().await;
    let db = fresh_database(&client).await;
    let coll = accounts(&db);
    let mut stream = coll.watch().await.unwrap();
    for id in 1..=3 {
        coll.insert_one(doc! { "_id": id }).await.unwrap();
    }
    let events = next_events(&mut stream, 3).await;
    let second = events[1].cluster_time.expect("clusterTime");

    let mut started = coll.watch().start_at_operation_time(second).await.unwrap();
    assert_eq!(key_ids(&next_events(&mut started, 2).await), vec![2, 3]);
    assert_next_is_sentinel(&mut started, &coll).await;
}

/// "Modify Change Stream Output": a `$match` stage after `$changeStream` filters events; the
/// stream still resumes from the events it delivers.
#[tokio::test]
async fn a_match_stage_filters_events() {
    let client = client().await;
    let db = fresh_database(&client).await;
    let coll = accounts(&db);
    let mut stream = coll
        .watch()
        .pipeline([doc! { "$match": { "operationType": { "$in": ["delete", "replace"] } } }])
        .await
        .unwrap();

    coll.insert_one(doc! { "_id": 1 }).await.unwrap();
    coll.update_one(doc! { "_id": 1 }, doc! { "$set": { "v": 1 } })
        .await
        .unwrap();
    coll.replace_one(doc! { "_id": 1 }, doc! { "v": 2 })
        .await
        .unwrap();
    coll.delete_one(doc! { "_id": 1 }).await.unwrap();
    coll.insert_one(doc! { "_id": 2 }).await.unwrap();
    coll.delete_one(doc! { "_id": 2 }).await.unwrap();

    let events = next_events(&mut stream, 3).await;
    let seen: Vec<(OperationType, Vec<i32>)> = events
        .iter()
        .map(|e| (e.operation_type.clone(), key_ids(std::slice::from_ref(e))))
        .collect();
    assert_eq!(
        seen,
        vec![
            (OperationType::Replace, vec![1]),
            (OperationType::Delete, vec![1]),
            (OperationType::Delete, vec![2]),
        ]
    );
}

/// "Watch a Collection, Database, or Deployment" (`client.watch()`, all changes for the
/// deployment): one stream over several databases, in write order, each event naming its
/// database. Filtered to this test's databases: others write to the same server.
#[tokio::test]
async fn a_deployment_stream_sees_several_databases_in_order() {
    let client = client().await;
    let first = fresh_database(&client).await;
    let second = fresh_database(&client).await;
    let mut stream = client
        .watch()
        .pipeline([doc! { "$match": { "ns.db": { "$in": [first.name(), second.name()] } } }])
        .await
        .unwrap();

    accounts(&first)
        .insert_one(doc! { "_id": 1 })
        .await
        .unwrap();
    orders(&second).insert_one(doc! { "_id": 2 }).await.unwrap();
    accounts(&first)
        .delete_one(doc! { "_id": 1 })
        .await
        .unwrap();

    let events = next_events(&mut stream, 3).await;
    let seen: Vec<(String, Option<String>)> = events.iter().map(ns_of).collect();
    assert_eq!(
        seen,
        vec![
            (
                first.name().to_owned(),
                Some("customer.accounts".to_owned())
            ),
            (second.name().to_owned(), Some("customer.orders".to_owned())),
            (
                first.name().to_owned(),
                Some("customer.accounts".to_owned())
            ),
        ]
    );
    assert_eq!(key_ids(&events), vec![1, 2, 1]);
}

/// "Change Events" > update / replace / delete / insert: the events come from the write, not
/// from the command's name, so `findOneAndUpdate`, `findOneAndReplace`, `findOneAndDelete` and
/// an upserting `findOneAndUpdate` emit them too (the stock test server emitted none).
#[tokio::test]
async fn find_one_and_modify_commands_emit_change_events() {
    let client = client().await;
    let db = fresh_database(&client).await;
    let coll = orders(&db);
    coll.insert_one(doc! { "_id": 1, "v": 0 }).await.unwrap();
    let mut stream = coll.watch().await.unwrap();

    let before = coll
        .find_one_and_update(doc! { "_id": 1 }, doc! { "$set": { "v": 1 } })
        .await
        .unwrap();
    assert_eq!(before, Some(doc! { "_id": 1, "v": 0 }));
    coll.find_one_and_replace(doc! { "_id": 1 }, doc! { "w": 2 })
        .await
        .unwrap();
    let upserted = coll
        .find_one_and_update(doc! { "_id": 2 }, doc! { "$set": { "v": 3 } })
        .upsert(true)
        .return_document(ReturnDocument::After)
        .await
        .unwrap();
    assert_eq!(upserted, Some(doc! { "_id": 2, "v": 3 }));
    let not_returned = coll
        .find_one_and_update(doc! { "_id": 3 }, doc! { "$set": { "v": 4 } })
        .upsert(true)
        .await
        .unwrap();
    assert_eq!(not_returned, None, "no document before an upsert");
    coll.find_one_and_delete(doc! { "_id": 1 }).await.unwrap();

    let events = next_events(&mut stream, 5).await;
    let kinds: Vec<OperationType> = events.iter().map(|e| e.operation_type.clone()).collect();
    assert_eq!(
        kinds,
        vec![
            OperationType::Update,
            OperationType::Replace,
            OperationType::Insert,
            OperationType::Insert,
            OperationType::Delete
        ]
    );
    assert_eq!(key_ids(&events), vec![1, 1, 2, 3, 1]);
    assert_eq!(
        events[0]
            .update_description
            .as_ref()
            .unwrap()
            .updated_fields,
        doc! { "v": 1 }
    );
    assert_eq!(events[1].full_document, Some(doc! { "_id": 1, "w": 2 }));
    assert_eq!(events[3].full_document, Some(doc! { "_id": 3, "v": 4 }));
}

/// "Change Events": events describe changes that happened. An insert rejected for a duplicate
/// key and an update that changes nothing change nothing, so they emit no event; in an ordered
/// `insertMany`, only the documents before the failure are inserted and emitted.
#[tokio::test]
async fn writes_that_change_nothing_emit_nothing() {
    let client = client().await;
    let db = fresh_database(&client).await;
    let coll = accounts(&db);
    coll.insert_one(doc! { "_id": 1, "v": 1 }).await.unwrap();
    let mut stream = coll.watch().await.unwrap();

    let duplicate = coll.insert_one(doc! { "_id": 1, "v": 2 }).await;
    assert!(duplicate.is_err(), "duplicate _id must be rejected");
    let batch = coll
        .insert_many([doc! { "_id": 2 }, doc! { "_id": 1 }, doc! { "_id": 3 }])
        .await;
    assert!(batch.is_err(), "the batch holds a duplicate");
    let unchanged = coll
        .update_one(doc! { "_id": 1 }, doc! { "$set": { "v": 1 } })
        .await
        .unwrap();
    assert_eq!(unchanged.modified_count, 0);

    let event = next_events(&mut stream, 1).await.remove(0);
    assert_eq!(
        (event.operation_type, event.document_key),
        (OperationType::Insert, Some(doc! { "_id": 2 })),
        "only the first document of the ordered batch went in"
    );
    assert_next_is_sentinel(&mut stream, &coll).await;
}

// ---------------------------------------------------------------------------------------------
// Pre- and post-images ("Change Streams with Document Pre- and Post-Images", MongoDB 6.0+)
// ---------------------------------------------------------------------------------------------

/// Turns `changeStreamPreAndPostImages` on or off for an existing collection with `collMod`.
async fn set_pre_and_post_images(db: &Database, collection: &str, enabled: bool) {
    db.run_command(doc! {
        "collMod": collection,
        "changeStreamPreAndPostImages": { "enabled": enabled },
    })
    .await
    .unwrap();
}

/// The server error's code and message.
fn command_error(error: &Error) -> (i32, String) {
    match error.kind.as_ref() {
        ErrorKind::Command(command) => (command.code, command.message.clone()),
        other => panic!("expected a server error, got {other:?}"),
    }
}

/// Polls the stream until it fails; an event instead is a test failure.
async fn next_error<T>(stream: &mut ChangeStream<T>) -> Error
where
    T: DeserializeOwned + Unpin + Send + Sync + std::fmt::Debug,
{
    eventually(
        DEADLINE,
        "the change stream to fail",
        async || match stream.next_if_any().await {
            Ok(None) => None,
            Ok(Some(event)) => panic!("expected the stream to fail, got an event: {event:?}"),
            Err(error) => Some(error),
        },
    )
    .await
}

/// `customer(id)` with `contact.email` set to `email`.
fn customer_with_email(id: ObjectId, email: &str) -> Document {
    let mut document = customer(id);
    document
        .get_document_mut("contact")
        .unwrap()
        .insert("email", email);
    document
}

/// "Change Streams with Document Pre- and Post-Images": with `changeStreamPreAndPostImages`
/// enabled by `collMod`, `fullDocument: whenAvailable` gives each update event the post-image of
/// that update: the document as the update left it. Two updates written before either event is
/// read: the first event still shows the first update's state. "Lookup Full Document for Update
/// Operations": `updateLookup` instead gives both events the document as it is when read (the
/// second update's state), so the intermediate state is lost. That difference is why the
/// connector uses post-images.
#[tokio::test]
async fn post_images_are_the_state_each_update_left_unlike_update_lookup() {
    let client = client().await;
    let db = fresh_database(&client).await;
    let coll = accounts(&db);
    let id = ObjectId::new();
    coll.insert_one(customer(id)).await.unwrap();
    set_pre_and_post_images(&db, coll.name(), true).await;
    let mut post_images = coll
        .watch()
        .full_document(FullDocumentType::WhenAvailable)
        .await
        .unwrap();
    let mut looked_up = coll
        .watch()
        .full_document(FullDocumentType::UpdateLookup)
        .await
        .unwrap();

    let set_email = |email: &str| doc! { "$set": { "contact.email": email } };
    coll.update_one(doc! { "_id": id }, set_email("first@example.com"))
        .await
        .unwrap();
    coll.update_one(doc! { "_id": id }, set_email("second@example.com"))
        .await
        .unwrap();
    let first_state = customer_with_email(id, "first@example.com");
    let second_state = customer_with_email(id, "second@example.com");

    let events = next_events(&mut post_images, 2).await;
    assert!(
        events
            .iter()
            .all(|e| e.operation_type == OperationType::Update),
        "{events:?}"
    );
    assert_eq!(
        events[0].full_document.as_ref(),
        Some(&first_state),
        "the first update's post-image, although the second update had already happened"
    );
    assert_eq!(events[1].full_document.as_ref(), Some(&second_state));

    let events = next_events(&mut looked_up, 2).await;
    assert_eq!(
        events[0].full_document.as_ref(),
        Some(&second_state),
        "updateLookup reads the document as it is now: the first update's state is gone"
    );
    assert_eq!(events[1].full_document.as_ref(), Some(&second_state));
    assert_eq!(
        events[0]
            .update_description
            .as_ref()
            .unwrap()
            .updated_fields,
        doc! { "contact.email": "first@example.com" },
        "updateDescription still describes its own update"
    );
}

/// "Change Streams with Document Pre- and Post-Images": the option can be set when the
/// collection is created (`createCollection` / `create`), and `listCollections`
/// (`db.getCollectionInfos()`) reports it in `options`. With `required` for both images every
/// event has them: the pre-image is the document before an update, replace or delete (none for
/// an insert); the post-image is the document after an insert, replace or update (none for a
/// delete).
#[tokio::test]
async fn created_with_the_option_every_event_has_its_required_images() {
    let client = client().await;
    let db = fresh_database(&client).await;
    let name = "customer.orders";
    db.create_collection(name)
        .change_stream_pre_and_post_images(
            ChangeStreamPreAndPostImages::builder()
                .enabled(true)
                .build(),
        )
        .await
        .unwrap();
    let collections: Vec<_> = db
        .list_collections()
        .filter(doc! { "name": name })
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let spec = collections
        .iter()
        .find(|c| c.name == name)
        .expect("listCollections lists the collection");
    assert_eq!(
        spec.options
            .change_stream_pre_and_post_images
            .as_ref()
            .map(|o| o.enabled),
        Some(true),
        "{spec:?}"
    );

    let coll: Collection<Document> = db.collection(name);
    let mut stream = coll
        .watch()
        .full_document(FullDocumentType::Required)
        .full_document_before_change(FullDocumentBeforeChangeType::Required)
        .await
        .unwrap();
    coll.insert_one(doc! { "_id": 1, "v": 0 }).await.unwrap();
    coll.update_one(doc! { "_id": 1 }, doc! { "$set": { "v": 1 } })
        .await
        .unwrap();
    coll.replace_one(doc! { "_id": 1 }, doc! { "w": 2 })
        .await
        .unwrap();
    coll.find_one_and_update(doc! { "_id": 1 }, doc! { "$set": { "w": 3 } })
        .await
        .unwrap();
    coll.delete_one(doc! { "_id": 1 }).await.unwrap();

    let events = next_events(&mut stream, 5).await;
    let seen: Vec<_> = events
        .iter()
        .map(|e| {
            (
                e.operation_type.clone(),
                e.full_document_before_change.clone(),
                e.full_document.clone(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            (OperationType::Insert, None, Some(doc! { "_id": 1, "v": 0 })),
            (
                OperationType::Update,
                Some(doc! { "_id": 1, "v": 0 }),
                Some(doc! { "_id": 1, "v": 1 })
            ),
            (
                OperationType::Replace,
                Some(doc! { "_id": 1, "v": 1 }),
                Some(doc! { "_id": 1, "w": 2 })
            ),
            (
                OperationType::Update,
                Some(doc! { "_id": 1, "w": 2 }),
                Some(doc! { "_id": 1, "w": 3 })
            ),
            (OperationType::Delete, Some(doc! { "_id": 1, "w": 3 }), None),
        ]
    );
}

/// "Change Streams with Document Pre- and Post-Images": images are not available for a change
/// if the option was not enabled on the collection at the time of the update or delete.
/// `whenAvailable` then gives `null` (the field is there, with no document); `required` makes the
/// stream fail when it reaches such an event (MongoDB: NoMatchingDocument, code 47, "...but the
/// post-image was not found for event: ..."), while an insert event, which carries its document,
/// still comes through. Enabling the option later does not give earlier changes images; changes
/// after it have them.
#[tokio::test]
async fn without_the_option_when_available_is_null_and_required_fails() {
    let client = client().await;
    let db = fresh_database(&client).await;
    let coll = accounts(&db);
    coll.insert_one(doc! { "_id": 1, "v": 0 }).await.unwrap();
    let mut when_available = coll
        .watch()
        .full_document(FullDocumentType::WhenAvailable)
        .full_document_before_change(FullDocumentBeforeChangeType::WhenAvailable)
        .await
        .unwrap()
        .with_type::<Document>();
    let mut required = coll
        .watch()
        .full_document(FullDocumentType::Required)
        .await
        .unwrap();

    coll.insert_one(doc! { "_id": 2, "v": 0 }).await.unwrap();
    // Read before the update: a batch that reaches the update fails as a whole (on MongoDB too).
    let insert = next_events(&mut required, 1).await.remove(0);
    assert_eq!(
        insert.full_document,
        Some(doc! { "_id": 2, "v": 0 }),
        "an insert event carries its document whatever the option"
    );
    coll.update_one(doc! { "_id": 1 }, doc! { "$set": { "v": 1 } })
        .await
        .unwrap();
    let error = next_error(&mut required).await;
    let (code, message) = command_error(&error);
    assert_eq!(code, 47, "NoMatchingDocument: {message}");
    assert!(
        message.contains("post-image was not found for event"),
        "{message}"
    );

    set_pre_and_post_images(&db, coll.name(), true).await;
    coll.update_one(doc! { "_id": 1 }, doc! { "$set": { "v": 2 } })
        .await
        .unwrap();
    let events = next_events(&mut when_available, 3).await;
    assert_eq!(events[0].get_str("operationType").unwrap(), "insert");
    assert_eq!(
        events[1].get("fullDocument"),
        Some(&Bson::Null),
        "no post-image: the option was off at the time of the update: {}",
        events[1]
    );
    assert_eq!(
        events[1].get("fullDocumentBeforeChange"),
        Some(&Bson::Null),
        "{}",
        events[1]
    );
    assert_eq!(
        events[2].get_document("fullDocument").unwrap(),
        &doc! { "_id": 1, "v": 2 },
        "the option was on at the time of the second update: {}",
        events[2]
    );
    assert_eq!(
        events[2].get_document("fullDocumentBeforeChange").unwrap(),
        &doc! { "_id": 1, "v": 1 },
        "{}",
        events[2]
    );
}

/// `collMod` ("Change Streams with Document Pre- and Post-Images" sets the option with it) on a
/// collection that does not exist fails with NamespaceNotFound (code 26); turning the option off
/// removes it from `listCollections` and later updates have no post-image.
#[tokio::test]
async fn coll_mod_needs_the_collection_and_can_turn_images_off() {
    let client = client().await;
    let db = fresh_database(&client).await;
    let missing = db
        .run_command(doc! {
            "collMod": "customer.missing",
            "changeStreamPreAndPostImages": { "enabled": true },
        })
        .await
        .expect_err("collMod of a missing collection must fail");
    assert_eq!(
        command_error(&missing).0,
        26,
        "NamespaceNotFound: {missing}"
    );

    let coll = accounts(&db);
    coll.insert_one(doc! { "_id": 1, "v": 0 }).await.unwrap();
    set_pre_and_post_images(&db, coll.name(), true).await;
    set_pre_and_post_images(&db, coll.name(), false).await;
    let collections: Vec<_> = db
        .list_collections()
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let spec = collections
        .iter()
        .find(|c| c.name == coll.name())
        .expect("listCollections lists the collection");
    assert!(
        spec.options
            .change_stream_pre_and_post_images
            .as_ref()
            .is_none_or(|o| !o.enabled),
        "{spec:?}"
    );

    let mut stream = coll
        .watch()
        .full_document(FullDocumentType::WhenAvailable)
        .await
        .unwrap()
        .with_type::<Document>();
    coll.update_one(doc! { "_id": 1 }, doc! { "$set": { "v": 1 } })
        .await
        .unwrap();
    let event = next_events(&mut stream, 1).await.remove(0);
    assert_eq!(event.get("fullDocument"), Some(&Bson::Null), "{event}");
}

/// "getMore" (<https://www.mongodb.com/docs/manual/reference/command/getMore/>): a cursor
/// belongs to the namespace it was opened on; a getMore that names another collection is
/// refused (MongoDB: code 13, "Requested getMore on namespace ..., but cursor belongs to a
/// different namespace ..."), so a stream can never read another stream's batches. The cursor
/// itself stays usable from its own collection.
#[tokio::test]
async fn a_get_more_on_another_collection_than_the_cursors_is_refused() {
    let client = client().await;
    let db = fresh_database(&client).await;
    for _ in 0..3 {
        accounts(&db)
            .insert_one(customer(ObjectId::new()))
            .await
            .unwrap();
    }
    orders(&db).insert_one(doc! { "_id": 1 }).await.unwrap();
    // A change stream's cursor, and a query's with documents left after its first batch.
    let openings = [
        doc! {
            "aggregate": "customer.accounts",
            "pipeline": [{ "$changeStream": {} }],
            "cursor": { "batchSize": 0 },
        },
        doc! { "find": "customer.accounts", "batchSize": 1 },
    ];
    for pipeline in openings {
        let reply = db.run_command(pipeline.clone()).await.unwrap();
        let id = reply.get_document("cursor").unwrap().get_i64("id").unwrap();
        assert_ne!(id, 0, "{pipeline:?}: an open cursor");
        let refused = db
            .run_command(doc! { "getMore": id, "collection": "customer.orders" })
            .await
            .expect_err("a getMore on another collection must be refused");
        match refused.kind.as_ref() {
            mongodb::error::ErrorKind::Command(error) => {
                assert_eq!(error.code, 13, "{pipeline:?}: {error:?}");
                assert!(
                    error.message.contains("belongs to a different namespace"),
                    "{error:?}"
                );
            }
            other => panic!("{pipeline:?}: expected Unauthorized, got {other:?}"),
        }
        let own = db
            .run_command(doc! { "getMore": id, "collection": "customer.accounts", "batchSize": 1 })
            .await
            .unwrap();
        assert!(own.get_document("cursor").is_ok(), "{pipeline:?}: {own:?}");
    }
}

/// Opens a change stream on `collection` of `db` with an empty first batch; its cursor id.
async fn open_cursor(db: &Database, collection: &str) -> i64 {
    let reply = db
        .run_command(doc! {
            "aggregate": collection,
            "pipeline": [{ "$changeStream": {} }],
            "cursor": { "batchSize": 0 },
        })
        .await
        .unwrap();
    let id = reply.get_document("cursor").unwrap().get_i64("id").unwrap();
    assert_ne!(id, 0, "an open change stream cursor");
    id
}

/// A getMore of a change stream and how long the server took to answer it.
async fn timed_get_more(
    db: &Database,
    collection: &str,
    id: i64,
    max_time_ms: Option<i64>,
) -> (Result<Document, Error>, std::time::Duration) {
    let mut command = doc! { "getMore": id, "collection": collection };
    if let Some(max) = max_time_ms {
        command.insert("maxTimeMS", max);
    }
    let started = std::time::Instant::now();
    let reply = db.run_command(command).await;
    (reply, started.elapsed())
}

/// A getMore of `customer.accounts` with a 30 s maxTimeMS, in its own task.
fn spawn_long_get_more(
    db: &Database,
    id: i64,
) -> tokio::task::JoinHandle<(Result<Document, Error>, std::time::Duration)> {
    let db = db.clone();
    tokio::spawn(async move { timed_get_more(&db, "customer.accounts", id, Some(30_000)).await })
}

fn next_batch(reply: &Document) -> Vec<Document> {
    reply
        .get_document("cursor")
        .unwrap()
        .get_array("nextBatch")
        .unwrap()
        .iter()
        .map(|event| event.as_document().unwrap().clone())
        .collect()
}

/// "Change Streams" (the cursor waits: `maxAwaitTimeMS`, the `getMore` command's `maxTimeMS` for
/// tailable awaitData cursors): a getMore on a change stream with nothing to return waits up to
/// its maxTimeMS (1 s when it sends none) and then answers an empty batch with a resume token;
/// it does not answer at once.
#[tokio::test]
async fn an_empty_get_more_waits_for_its_max_await_time() {
    let client = client().await;
    let db = fresh_database(&client).await;
    let id = open_cursor(&db, "customer.accounts").await;
    for (max_time_ms, at_least_ms) in [(Some(600), 550), (None, 950)] {
        let (reply, took) = timed_get_more(&db, "customer.accounts", id, max_time_ms).await;
        let reply = reply.unwrap();
        println!("empty getMore, maxTimeMS {max_time_ms:?}: answered after {took:?}");
        assert!(next_batch(&reply).is_empty(), "{reply:?}");
        assert!(
            reply
                .get_document("cursor")
                .unwrap()
                .contains_key("postBatchResumeToken"),
            "{reply:?}"
        );
        assert!(
            took >= std::time::Duration::from_millis(at_least_ms),
            "maxTimeMS {max_time_ms:?}: an empty getMore answered after {took:?}, without waiting"
        );
    }
}

/// "Change Streams" (awaitData): a waiting getMore answers as soon as a change for its stream
/// is written, with that change, long before its maxTimeMS; a write to another collection does
/// not end its wait with an empty batch.
#[tokio::test]
async fn a_waiting_get_more_answers_as_soon_as_its_change_is_written() {
    let client = client().await;
    let db = fresh_database(&client).await;
    let id = open_cursor(&db, "customer.accounts").await;
    let waiting = spawn_long_get_more(&db, id);
    orders(&db).insert_one(doc! { "_id": 1 }).await.unwrap();
    let written = std::time::Instant::now();
    accounts(&db).insert_one(doc! { "_id": 2 }).await.unwrap();
    let (reply, took) = waiting.await.unwrap();
    let reply = reply.unwrap();
    println!(
        "waiting getMore: answered after {took:?}, {:?} after the write",
        written.elapsed()
    );
    let batch = next_batch(&reply);
    assert_eq!(batch.len(), 1, "the accounts insert alone: {batch:?}");
    assert_eq!(
        batch[0].get_document("documentKey").unwrap(),
        &doc! { "_id": 2 }
    );
    assert!(
        took < std::time::Duration::from_secs(15),
        "the getMore waited for its maxTimeMS ({took:?}) instead of answering the write"
    );
}

/// "killCursors": killing a cursor ends a getMore waiting on it at once (MongoDB answers it with
/// an error; the test server with CursorNotFound), rather than at its maxTimeMS.
#[tokio::test]
async fn killing_a_cursor_ends_its_waiting_get_more() {
    let client = client().await;
    let db = fresh_database(&client).await;
    let id = open_cursor(&db, "customer.accounts").await;
    let waiting = spawn_long_get_more(&db, id);
    let other = stack().mongo_client().await;
    other
        .database(db.name())
        .run_command(doc! { "killCursors": "customer.accounts", "cursors": [id] })
        .await
        .unwrap();
    let (reply, took) = waiting.await.unwrap();
    assert!(
        reply.is_err(),
        "a getMore on a killed cursor fails: {reply:?}"
    );
    assert!(
        took < std::time::Duration::from_secs(15),
        "the getMore waited for its maxTimeMS ({took:?}) although its cursor was killed"
    );
}

/// Each connection is served on its own, as on MongoDB: while getMores wait on several
/// connections, other clients' commands are answered.
#[tokio::test]
async fn other_clients_are_served_while_get_mores_wait() {
    let client = client().await;
    let db = fresh_database(&client).await;
    let mut waiting = Vec::new();
    // More waiting connections than the server has event-loop threads (2 per core).
    for _ in 0..8 {
        let own = stack().mongo_client().await;
        let db = own.database(db.name());
        let id = open_cursor(&db, "customer.accounts").await;
        waiting.push(tokio::spawn(async move {
            let reply = timed_get_more(&db, "customer.accounts", id, Some(20_000)).await;
            drop(own);
            reply
        }));
    }
    for n in 0..40 {
        let pinger = stack().mongo_client().await;
        pinger
            .database("admin")
            .run_command(doc! { "ping": 1 })
            .await
            .unwrap();
        orders(&db).insert_one(doc! { "_id": n }).await.unwrap();
    }
    assert!(
        waiting.iter().all(|task| !task.is_finished()),
        "every getMore is still waiting (only an accounts write ends it)"
    );
    accounts(&db).insert_one(doc! { "_id": 1 }).await.unwrap();
    for task in waiting {
        let (reply, _) = task.await.unwrap();
        assert_eq!(next_batch(&reply.unwrap()).len(), 1);
    }
}

/// Replica-set members put `operationTime` and `$clusterTime` on every command reply ("Causal
/// Consistency"; drivers read both), and neither goes backwards.
#[tokio::test]
async fn every_reply_carries_a_non_decreasing_operation_time_and_cluster_time() {
    let client = client().await;
    let db = fresh_database(&client).await;
    let commands = [
        doc! { "ping": 1 },
        doc! { "insert": "customer.accounts", "documents": [{ "_id": 1 }] },
        doc! { "find": "customer.accounts", "filter": {} },
        doc! { "aggregate": "customer.accounts", "pipeline": [{ "$changeStream": {} }], "cursor": {} },
        doc! { "update": "customer.accounts", "updates": [{ "q": { "_id": 1 }, "u": { "$set": { "a": 1 } } }] },
        doc! { "listCollections": 1 },
        doc! { "hello": 1 },
        doc! { "isMaster": 1 },
        doc! { "count": "customer.accounts" },
    ];
    let mut last = Timestamp {
        time: 0,
        increment: 0,
    };
    for command in commands {
        let reply = db.run_command(command.clone()).await.unwrap();
        let operation_time = reply
            .get_timestamp("operationTime")
            .unwrap_or_else(|_| panic!("{command:?}: no operationTime in {reply:?}"));
        let cluster_time = reply
            .get_document("$clusterTime")
            .and_then(|cluster| cluster.get_timestamp("clusterTime"))
            .unwrap_or_else(|_| panic!("{command:?}: no $clusterTime in {reply:?}"));
        assert!(
            (operation_time.time, operation_time.increment) >= (last.time, last.increment),
            "{command:?}: operationTime {operation_time:?} went back from {last:?}"
        );
        assert!(
            (cluster_time.time, cluster_time.increment)
                >= (operation_time.time, operation_time.increment),
            "{command:?}: $clusterTime {cluster_time:?} before operationTime {operation_time:?}"
        );
        last = operation_time;
    }
}

/// "hello" (MongoDB 4.4.2+; drivers use it once `isMaster` answers `helloOk`): the primary says
/// it takes writes, and a replica-set member lists itself among the set's hosts as the primary.
#[tokio::test]
async fn hello_answers_as_a_writable_primary() {
    let client = client().await;
    let admin = client.database("admin");
    let hello = admin.run_command(doc! { "hello": 1 }).await.unwrap();
    assert_eq!(hello.get_bool("isWritablePrimary"), Ok(true), "{hello:?}");
    let is_master = admin
        .run_command(doc! { "isMaster": 1, "helloOk": true })
        .await
        .unwrap();
    assert_eq!(is_master.get_bool("helloOk"), Ok(true), "{is_master:?}");
    if let Ok(set_name) = hello.get_str("setName") {
        let me = hello.get_str("me").unwrap();
        assert_eq!(hello.get_str("primary"), Ok(me), "{hello:?}");
        let hosts = hello.get_array("hosts").unwrap();
        assert!(
            hosts.iter().any(|host| host.as_str() == Some(me)),
            "set {set_name}: {me} not among its hosts {hosts:?}"
        );
        assert_eq!(hello.get_bool("secondary"), Ok(false), "{hello:?}");
    }
}
