//! Change-stream conformance across a server restart: "Resume a Change Stream"
//! (<https://www.mongodb.com/docs/manual/changeStreams/#resume-a-change-stream>) says a resume
//! token resumes the stream as long as the oplog still holds the token's event; on a replica set
//! that survives a restart of the server. The connector's checkpoints rely on it.
//!
//! In its own test binary because restarting the server disturbs tests running in parallel.
//! Against an external MongoDB (`STOREFRONT_TEST_MONGO_URI`) the tests cannot restart it and
//! say so; the rest of the suite (`conformance.rs`) still runs there.

use mongodb::Collection;
use mongodb::bson::{Document, doc};
use mongodb::change_stream::event::{ChangeStreamEvent, OperationType};
use mongodb::options::FullDocumentType;
use storefront_tests::{next_events, stack, unique};

type Event = ChangeStreamEvent<Document>;

fn key_id(event: &Event) -> i32 {
    event
        .document_key
        .as_ref()
        .and_then(|k| k.get_i32("_id").ok())
        .unwrap_or(-1)
}

/// Writes a sentinel document and returns it: after the events a test expects, the next event
/// of every stream must be its insert, proof that nothing else (an extra or repeated event) was
/// pending before it.
async fn write_sentinel(coll: &Collection<Document>) -> Document {
    let sentinel = doc! { "_id": 1_000, "sentinel": true };
    coll.insert_one(sentinel.clone()).await.unwrap();
    sentinel
}

/// A client whose handshake names `app_name` (fail points can be scoped to it).
async fn client_named(app_name: &str) -> mongodb::Client {
    let mut options = mongodb::options::ClientOptions::parse(&stack().mongo_uri)
        .await
        .unwrap();
    options.app_name = Some(app_name.to_owned());
    mongodb::Client::with_options(options).unwrap()
}

fn assert_is_insert_of(event: &Event, document: &Document, stream: &str) {
    assert_eq!(
        (&event.operation_type, event.full_document.as_ref()),
        (&OperationType::Insert, Some(document)),
        "{stream}: the next event should be the sentinel's insert, so something else was \
         pending: {event:?}"
    );
}

/// One scenario, so the server restarts once: a stream on a dotted collection that was dropped
/// and re-created before, with updateLookup; a token kept from before the restart resumes
/// exactly after it (events written before and after the restart, none twice, none extra); an
/// open stream resumes by itself across the restart and delivers the same events (same tokens,
/// cluster times, operations and documents); cluster times keep growing; a fail point set
/// before the restart is gone after it (fail points live in memory, as on MongoDB).
#[tokio::test]
async fn a_token_from_before_a_restart_resumes_exactly() {
    if !stack().local_mongo {
        eprintln!("skipped: STOREFRONT_TEST_MONGO_URI names an external MongoDB we cannot restart");
        return;
    }
    // A fresh start first, so the cursors this test opens are the server's first ones: a server
    // that numbered cursors from 1 at every start would then certainly reuse one below.
    stack().restart_mongo();
    let database = unique("conformance_restart");
    let client = stack().mongo_client().await;
    let coll: Collection<Document> = client.database(&database).collection("customer.accounts");
    coll.insert_one(doc! { "_id": 0 }).await.unwrap();
    coll.drop().await.unwrap(); // an earlier drop must not make the resume invalidate

    let mut open_stream = coll
        .watch()
        .full_document(FullDocumentType::UpdateLookup)
        .await
        .unwrap();
    for id in 1..=2 {
        coll.insert_one(doc! { "_id": id, "v": 0 }).await.unwrap();
    }
    let before = next_events(&mut open_stream, 2).await;
    let token = before[1].id.clone();
    let time_before = before[1].cluster_time.expect("clusterTime");
    // Written before the restart, after the token: must come after resuming.
    coll.update_one(doc! { "_id": 1 }, doc! { "$set": { "v": 1 } })
        .await
        .unwrap();
    coll.delete_one(doc! { "_id": 2 }).await.unwrap();

    // A cursor opened before the restart, by hand (the driver would resume by itself).
    let open_cursor = async |db: &mongodb::Database| {
        let reply = db
            .run_command(doc! {
                "aggregate": "customer.accounts",
                "pipeline": [{ "$changeStream": {} }],
                "cursor": { "batchSize": 0 },
            })
            .await
            .unwrap();
        reply.get_document("cursor").unwrap().get_i64("id").unwrap()
    };
    let old_cursor = open_cursor(&client.database(&database)).await;

    // A failCommand fail point scoped to a client of its own, so no other client is failed.
    let app_name = unique("conformance_restart_app");
    client
        .database("admin")
        .run_command(doc! {
            "configureFailPoint": "failCommand",
            "mode": "alwaysOn",
            "data": { "failCommands": ["ping"], "errorCode": 2, "appName": &app_name },
        })
        .await
        .unwrap();
    let ping = doc! { "ping": 1 };
    client_named(&app_name)
        .await
        .database("admin")
        .run_command(ping.clone())
        .await
        .expect_err("the fail point is on");

    stack().restart_mongo();
    client_named(&app_name)
        .await
        .database("admin")
        .run_command(ping)
        .await
        .expect("a restart turns every fail point off");
    // A new client: the old one's pooled connections died with the server (commands sent with
    // `run_command` are not retried on a new connection).
    let db = stack().mongo_client().await.database(&database);

    // "Cursor ids are unique 64-bit integers" (getMore, Output): a cursor id from before the
    // restart names no cursor of the new process, not a new cursor that happens to reuse it
    // (another stream's, which would feed this stream that stream's empty batches).
    for _ in 0..30 {
        assert_ne!(open_cursor(&db).await, old_cursor, "a cursor id was reused");
    }
    let stale = db
        .run_command(doc! { "getMore": old_cursor, "collection": "customer.accounts" })
        .await
        .expect_err("a getMore with a cursor id from before the restart must fail");
    match stale.kind.as_ref() {
        mongodb::error::ErrorKind::Command(error) => {
            assert_eq!(error.code, 43, "CursorNotFound: {error:?}")
        }
        other => panic!("expected CursorNotFound, got {other:?}"),
    }

    assert_eq!(
        coll.count_documents(doc! {}).await.unwrap(),
        1,
        "data kept across the restart"
    );
    coll.insert_one(doc! { "_id": 3 }).await.unwrap();
    let sentinel = write_sentinel(&coll).await;

    let mut resumed = coll
        .watch()
        .full_document(FullDocumentType::UpdateLookup)
        .resume_after(token)
        .await
        .unwrap();
    let events = next_events(&mut resumed, 4).await;
    let seen: Vec<(OperationType, i32)> = events[..3]
        .iter()
        .map(|e| (e.operation_type.clone(), key_id(e)))
        .collect();
    assert_eq!(
        seen,
        vec![
            (OperationType::Update, 1),
            (OperationType::Delete, 2),
            (OperationType::Insert, 3)
        ]
    );
    assert_is_insert_of(&events[3], &sentinel, "the resumed stream");
    // updateLookup after the restart: the document as it is now.
    assert_eq!(events[0].full_document, Some(doc! { "_id": 1, "v": 1 }));
    assert_eq!(events[1].full_document, None, "a delete has no document");
    assert_eq!(events[2].full_document, Some(doc! { "_id": 3 }));
    let time_after = events[2].cluster_time.expect("clusterTime");
    assert!(
        time_after > time_before,
        "cluster time keeps growing across the restart: {time_before:?} then {time_after:?}"
    );
    let times: Vec<_> = events.iter().map(|e| e.cluster_time.unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] < w[1]), "{times:?}");

    // The stream that was open during the restart: its next read fails on the dead connection,
    // the driver resumes from its last token, and it delivers the same events, then the
    // sentinel.
    let survived = next_events(&mut open_stream, 4).await;
    for (survivor, resumed) in survived.iter().zip(&events) {
        assert_eq!(
            (
                &survivor.id,
                survivor.cluster_time,
                &survivor.operation_type,
                &survivor.document_key,
                &survivor.full_document
            ),
            (
                &resumed.id,
                resumed.cluster_time,
                &resumed.operation_type,
                &resumed.document_key,
                &resumed.full_document
            ),
            "the open stream and the resumed one disagree"
        );
    }
    assert!(
        survived[0]
            .update_description
            .as_ref()
            .is_some_and(|d| d.updated_fields == doc! { "v": 1 } && d.removed_fields.is_empty()),
        "{:?}",
        survived[0]
    );
}
