//! Fault injection the MongoDB way: `configureFailPoint` with the `failCommand` fail point (and
//! `failGetMoreAfterCursorCheckout`), as a `mongod` started with
//! `--setParameter enableTestCommands=1` answers it, checked through the Rust driver. Runs against
//! the local test server by default and against any MongoDB named by `STOREFRONT_TEST_MONGO_URI`
//! (a replica set started with `enableTestCommands`), so the fault tests built on top behave the
//! same on both. The behaviour checked is MongoDB's (`src/mongo/db/commands.cpp`
//! `shouldActivateFailCommandFailPoint` / `evaluateFailCommandFailPoint`, `error_labels.cpp`,
//! `fail_point.cpp`; the drivers' "Fail Points" testing spec and the change-stream spec tests
//! `change-streams-resume-errorLabels`):
//!
//! - modes `{times: n}`, `{skip: n}`, `alwaysOn`, `off`, `{activationProbability: p}`; the reply's
//!   `count` is how often the fail point fired since the server started;
//! - `errorCode` fails a command with `code`, `codeName` and "Failing command via 'failCommand'
//!   failpoint"; the server's own error labels unless `errorLabels` replaces them; a failed
//!   `getMore` of a change stream gets no `ResumableChangeStreamError` from failCommand (it
//!   fires before the server knows the cursor), so the driver resumes only when the test gives
//!   that label, on `CursorNotFound`, on a closed connection, or with
//!   `failGetMoreAfterCursorCheckout`;
//! - `closeConnection`, `blockConnection`/`blockTimeMS`, `writeConcernError`;
//! - `appName` and `namespace` scope a fail point to one client and one collection.
//!
//! `failCommand` is ONE server-wide setting: configuring it replaces the previous configuration
//! whatever its `appName`. So the tests of this binary take turns ([`serial`]), and each scopes
//! its fail point to its own client's `appName`, so other test binaries' clients are never
//! failed. (Two binaries configuring `failCommand` on one server at the same time would replace
//! each other's settings; CI runs binaries one after another.) A restart clears every fail point:
//! `conformance_restart.rs` checks that.
//!
//! The test server's own `storefrontStarveChangeStream` fail point (not MongoDB's) is checked at
//! the end, against the test server only.

use std::collections::BTreeSet;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use mongodb::bson::oid::ObjectId;
use mongodb::bson::{Bson, Document, doc};
use mongodb::change_stream::ChangeStream;
use mongodb::change_stream::event::{ChangeStreamEvent, OperationType};
use mongodb::error::{Error, ErrorKind, WriteFailure};
use mongodb::options::ClientOptions;
use mongodb::{Client, Collection, Database};
use storefront_tests::{DEADLINE, eventually, next_events, stack, unique};

type Event = ChangeStreamEvent<Document>;

const FAIL_COMMAND: &str = "failCommand";
const FAIL_GET_MORE: &str = "failGetMoreAfterCursorCheckout";
const STARVE: &str = "storefrontStarveChangeStream";

/// One test at a time configures fail points: `failCommand` is one setting per server.
async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    static TURN: LazyLock<tokio::sync::Mutex<()>> = LazyLock::new(|| tokio::sync::Mutex::new(()));
    TURN.lock().await
}

/// A client of its own, named by a unique `appName` its fail points are scoped to.
struct App {
    name: String,
    client: Client,
}

async fn app(prefix: &str) -> App {
    let name = unique(prefix);
    let mut options = ClientOptions::parse(&stack().mongo_uri).await.unwrap();
    options.app_name = Some(name.clone());
    App {
        client: Client::with_options(options).unwrap(),
        name,
    }
}

/// The harness's client (its own appName): it configures fail points and is never failed.
async fn admin() -> Client {
    stack().mongo_client().await
}

/// `configureFailPoint` on `admin`; the reply's `count` (times fired before this call).
async fn configure(client: &Client, name: &str, mode: impl Into<Bson>, data: Document) -> i64 {
    let command = doc! { "configureFailPoint": name, "mode": mode.into(), "data": data };
    let reply = match client.database("admin").run_command(command).await {
        Ok(reply) => reply,
        Err(error) if matches!(server_error(&error), Some((59, _, _))) => panic!(
            "the server does not know configureFailPoint: a MongoDB needs `--setParameter \
             enableTestCommands=1`; a local test server started before fail points existed \
             needs `dev/stack restart mongo` ({error})"
        ),
        Err(error) => panic!("configureFailPoint {name}: {error}"),
    };
    count_of(&reply)
}

/// Turns a fail point off; its `count` (times fired so far).
async fn off(client: &Client, name: &str) -> i64 {
    configure(client, name, "off", doc! {}).await
}

/// `count` is an int32 while it fits (MongoDB's appendIntOrLL / appendNumber).
fn count_of(reply: &Document) -> i64 {
    match reply.get("count") {
        Some(Bson::Int32(n)) => i64::from(*n),
        Some(Bson::Int64(n)) => *n,
        other => panic!("configureFailPoint replied without a count: {other:?} in {reply}"),
    }
}

/// `(code, codeName, errmsg)` of a server error, `None` for any other error.
fn server_error(error: &Error) -> Option<(i32, String, String)> {
    match error.kind.as_ref() {
        ErrorKind::Command(command) => Some((
            command.code,
            command.code_name.clone(),
            command.message.clone(),
        )),
        _ => None,
    }
}

fn code_of(error: &Error) -> i32 {
    server_error(error)
        .unwrap_or_else(|| panic!("expected a server error, got {error:?}"))
        .0
}

fn labels(error: &Error) -> BTreeSet<String> {
    error.labels().iter().cloned().collect()
}

fn set(labels: &[&str]) -> BTreeSet<String> {
    labels.iter().map(|label| (*label).to_owned()).collect()
}

async fn ping(client: &Client) -> Result<Document, Error> {
    client
        .database("admin")
        .run_command(doc! { "ping": 1 })
        .await
}

/// Whether each of `n` pings succeeded.
async fn pings(client: &Client, n: usize) -> Vec<bool> {
    let mut outcomes = Vec::new();
    for _ in 0..n {
        outcomes.push(ping(client).await.is_ok());
    }
    outcomes
}

/// Writes a sentinel document and asserts that the stream's next event is its insert: nothing
/// else (a lost, repeated or extra event) was pending before it.
async fn assert_next_is_sentinel(stream: &mut ChangeStream<Event>, coll: &Collection<Document>) {
    let sentinel = ObjectId::new();
    coll.insert_one(doc! { "_id": sentinel, "sentinel": true })
        .await
        .unwrap();
    let next = next_events(stream, 1).await.remove(0);
    assert_eq!(
        (next.operation_type, next.document_key),
        (OperationType::Insert, Some(doc! { "_id": sentinel })),
        "the next event should be the sentinel's insert: something else was pending"
    );
}

/// The `_id`s of insert events (anything else fails the test).
fn inserted_ids(events: &[Event]) -> Vec<Bson> {
    events
        .iter()
        .map(|event| {
            assert_eq!(event.operation_type, OperationType::Insert, "{event:?}");
            event
                .document_key
                .as_ref()
                .unwrap()
                .get("_id")
                .unwrap()
                .clone()
        })
        .collect()
}

/// Polls the stream until it fails; an event instead is a test failure.
async fn next_error(stream: &mut ChangeStream<Event>) -> Error {
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

/// Opens a change stream on `collection` with an empty first batch; its cursor id.
async fn open_change_stream_cursor(db: &Database, collection: &str) -> i64 {
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

async fn get_more(
    db: &Database,
    collection: &str,
    id: i64,
    max_time_ms: i64,
) -> Result<Document, Error> {
    db.run_command(doc! { "getMore": id, "collection": collection, "maxTimeMS": max_time_ms })
        .await
}

/// Modes: `{times: n}` fires n times and turns itself off, `{skip: n}` lets n commands pass then
/// fires on every one, `alwaysOn` until `off`, `{activationProbability: 0 | 1}` never / always;
/// only the commands the fail point matches count. `count` in the reply is how often it fired
/// before this call. `configureFailPoint` itself is never failed, even when listed.
#[tokio::test]
async fn modes_fire_and_count_as_mongodb_does() {
    let _turn = serial().await;
    let admin = admin().await;
    let app = app("fp_modes").await;
    let data = doc! { "failCommands": ["ping"], "errorCode": 2, "appName": &app.name };

    let start = configure(&admin, FAIL_COMMAND, doc! { "times": 2 }, data.clone()).await;
    // buildInfo is not listed: it neither fails nor counts
    app.client
        .database("admin")
        .run_command(doc! { "buildInfo": 1 })
        .await
        .unwrap();
    assert_eq!(
        pings(&app.client, 3).await,
        [false, false, true],
        "times: 2"
    );

    let after_times = configure(&admin, FAIL_COMMAND, doc! { "skip": 1 }, data.clone()).await;
    assert_eq!(after_times - start, 2, "times: 2 fired twice");
    assert_eq!(pings(&app.client, 3).await, [true, false, false], "skip: 1");

    let after_skip = configure(&admin, FAIL_COMMAND, "alwaysOn", data.clone()).await;
    assert_eq!(
        after_skip - after_times,
        2,
        "skip: 1 fired on the 2nd and 3rd"
    );
    assert_eq!(pings(&app.client, 2).await, [false, false], "alwaysOn");

    let after_always = off(&admin, FAIL_COMMAND).await;
    assert_eq!(after_always - after_skip, 2, "alwaysOn fired twice");
    assert_eq!(pings(&app.client, 1).await, [true], "off");

    for (probability, outcome) in [(1.0, false), (0.0, true)] {
        let mode = doc! { "activationProbability": probability };
        configure(&admin, FAIL_COMMAND, mode, data.clone()).await;
        assert_eq!(
            pings(&app.client, 3).await,
            [outcome; 3],
            "activationProbability {probability}"
        );
    }
    off(&admin, FAIL_COMMAND).await;

    // Listed, configureFailPoint still works (here from the failed client itself).
    let mut listed = data.clone();
    listed.insert("failCommands", vec!["configureFailPoint", "ping"]);
    configure(&app.client, FAIL_COMMAND, "alwaysOn", listed).await;
    assert_eq!(pings(&app.client, 1).await, [false]);
    off(&app.client, FAIL_COMMAND).await;
    assert_eq!(pings(&app.client, 1).await, [true]);
}

/// `errorCode`: the command fails with that code, MongoDB's `codeName` and "Failing command via
/// 'failCommand' failpoint", and (on a command that is neither a change stream's nor a retryable
/// write) no error labels. A code whose error must carry extra info (StaleConfig) becomes 40671,
/// as on a release build of MongoDB; StaleShardVersion (63) is obsolete from 6.1.
#[tokio::test]
async fn an_error_code_fails_the_command_with_mongodbs_code_name_and_message() {
    let _turn = serial().await;
    let admin = admin().await;
    let app = app("fp_codes").await;
    let version = admin
        .database("admin")
        .run_command(doc! { "buildInfo": 1 })
        .await
        .unwrap()
        .get_str("version")
        .unwrap()
        .to_owned();
    let stale_shard_version = if version.starts_with("6.0") {
        "StaleShardVersion"
    } else {
        "OBSOLETE_StaleShardVersion"
    };
    let message = "Failing command via 'failCommand' failpoint";
    let codes = [
        (6, "HostUnreachable"),
        (7, "HostNotFound"),
        (8, "UnknownError"),
        (13, "Unauthorized"),
        (43, "CursorNotFound"),
        (63, stale_shard_version),
        (89, "NetworkTimeout"),
        (91, "ShutdownInProgress"),
        (133, "FailedToSatisfyReadPreference"),
        (150, "StaleEpoch"),
        (189, "PrimarySteppedDown"),
        (234, "RetryChangeStream"),
        (262, "ExceededTimeLimit"),
        (280, "ChangeStreamFatalError"),
        (286, "ChangeStreamHistoryLost"),
        (9001, "SocketException"),
        (10107, "NotWritablePrimary"),
        (11600, "InterruptedAtShutdown"),
        (11602, "InterruptedDueToReplStateChange"),
        (13435, "NotPrimaryNoSecondaryOk"),
        (13436, "NotPrimaryOrSecondary"),
    ];
    for (code, name) in codes {
        let data = doc! { "failCommands": ["ping"], "errorCode": code, "appName": &app.name };
        configure(&admin, FAIL_COMMAND, doc! { "times": 1 }, data).await;
        let error = ping(&app.client).await.expect_err("the ping fails");
        assert_eq!(
            server_error(&error),
            Some((code, name.to_owned(), message.to_owned())),
            "{error:?}"
        );
        // 280 and 286 are NonResumableChangeStreamErrors whatever the command.
        let expected = if code == 280 || code == 286 {
            set(&["NonResumableChangeStreamError"])
        } else {
            set(&[])
        };
        assert_eq!(labels(&error), expected, "code {code}");
    }
    let data = doc! { "failCommands": ["ping"], "errorCode": 13388, "appName": &app.name };
    configure(&admin, FAIL_COMMAND, doc! { "times": 1 }, data).await;
    let error = ping(&app.client).await.expect_err("the ping fails");
    assert_eq!(
        server_error(&error),
        Some((
            40671,
            "Location40671".to_owned(),
            "Missing required extra info for error code 13388".to_owned()
        ))
    );
    off(&admin, FAIL_COMMAND).await;
}

/// Error labels (`error_labels.cpp`): failCommand on an `aggregate` that opens a change stream
/// gets the server's `ResumableChangeStreamError` for a resumable code; on a change stream's
/// `getMore` it does not (the fail point fires before the cursor is checked out, SERVER-46091),
/// but `failGetMoreAfterCursorCheckout` does, and deletes the cursor. `errorLabels` replaces the
/// server's labels (an empty array: none). failCommand leaves a failed getMore's cursor open.
#[tokio::test]
async fn labels_are_the_servers_unless_the_fail_point_gives_them() {
    let _turn = serial().await;
    let admin = admin().await;
    let app = app("fp_labels").await;
    let db = app.client.database(&unique("fail_point"));
    db.collection::<Document>("customer.accounts")
        .insert_one(doc! { "_id": 1 })
        .await
        .unwrap();
    let change_stream = doc! {
        "aggregate": "customer.accounts",
        "pipeline": [{ "$changeStream": {} }],
        "cursor": {},
    };
    let plain_aggregate = doc! { "aggregate": "customer.accounts", "pipeline": [], "cursor": {} };
    let cases = [
        (&change_stream, None, set(&["ResumableChangeStreamError"])),
        (&change_stream, Some(vec!["Custom"]), set(&["Custom"])),
        (&change_stream, Some(vec![]), set(&[])),
        (&plain_aggregate, None, set(&[])),
    ];
    for (command, given, expected) in cases {
        let mut data = doc! { "failCommands": ["aggregate"], "errorCode": 6, "appName": &app.name };
        if let Some(given) = &given {
            data.insert("errorLabels", given.clone());
        }
        configure(&admin, FAIL_COMMAND, doc! { "times": 1 }, data).await;
        let error = db.run_command(command.clone()).await.expect_err("fails");
        assert_eq!(code_of(&error), 6);
        assert_eq!(
            labels(&error),
            expected,
            "{command} with errorLabels {given:?}"
        );
    }

    let id = open_change_stream_cursor(&db, "customer.accounts").await;
    for (code, expected) in [
        (6, set(&[])),
        (10107, set(&[])),
        (286, set(&["NonResumableChangeStreamError"])),
        (13, set(&[])),
    ] {
        let data = doc! { "failCommands": ["getMore"], "errorCode": code, "appName": &app.name };
        configure(&admin, FAIL_COMMAND, doc! { "times": 1 }, data).await;
        let error = get_more(&db, "customer.accounts", id, 100)
            .await
            .expect_err("fails");
        assert_eq!(code_of(&error), code);
        assert_eq!(labels(&error), expected, "getMore failed with {code}");
    }
    get_more(&db, "customer.accounts", id, 100)
        .await
        .expect("failCommand leaves the cursor open");

    let data = doc! { "errorCode": 6, "appName": &app.name };
    configure(&admin, FAIL_GET_MORE, doc! { "times": 1 }, data).await;
    let error = get_more(&db, "customer.accounts", id, 100)
        .await
        .expect_err("fails");
    assert_eq!(
        server_error(&error),
        Some((
            6,
            "HostUnreachable".to_owned(),
            "Hit the 'failGetMoreAfterCursorCheckout' failpoint".to_owned()
        ))
    );
    assert_eq!(labels(&error), set(&["ResumableChangeStreamError"]));
    let gone = get_more(&db, "customer.accounts", id, 100)
        .await
        .expect_err("deleted");
    assert_eq!(code_of(&gone), 43, "the cursor was deleted: {gone:?}");
    // A query's cursor (documents left after its first batch): no change-stream label.
    for id in 2..=3 {
        db.collection::<Document>("customer.accounts")
            .insert_one(doc! { "_id": id })
            .await
            .unwrap();
    }
    let reply = db
        .run_command(doc! { "find": "customer.accounts", "batchSize": 1 })
        .await
        .unwrap();
    let find_id = reply.get_document("cursor").unwrap().get_i64("id").unwrap();
    assert_ne!(find_id, 0, "an open query cursor");
    configure(
        &admin,
        FAIL_GET_MORE,
        doc! { "times": 1 },
        doc! { "errorCode": 6, "appName": &app.name },
    )
    .await;
    let error = get_more(&db, "customer.accounts", find_id, 100)
        .await
        .expect_err("fails");
    assert_eq!((code_of(&error), labels(&error)), (6, set(&[])));
    off(&admin, FAIL_GET_MORE).await;
    off(&admin, FAIL_COMMAND).await;
}

/// `closeConnection`: the server closes the connection without a reply; the driver reports a
/// network error, and the next command, on a new connection, works.
#[tokio::test]
async fn close_connection_is_a_network_error_and_the_next_command_works() {
    let _turn = serial().await;
    let admin = admin().await;
    let app = app("fp_close").await;
    let data = doc! { "failCommands": ["ping"], "closeConnection": true, "appName": &app.name };
    let before = configure(&admin, FAIL_COMMAND, doc! { "times": 1 }, data).await;
    let error = ping(&app.client)
        .await
        .expect_err("the connection is closed");
    assert!(
        matches!(error.kind.as_ref(), ErrorKind::Io(_)),
        "a network error: {error:?}"
    );
    ping(&app.client).await.expect("the next ping works");
    assert_eq!(off(&admin, FAIL_COMMAND).await - before, 1);
}

/// `blockConnection` + `blockTimeMS`: the command waits at least that long, then runs (or fails
/// with `errorCode`); other connections are served meanwhile.
#[tokio::test]
async fn block_connection_delays_the_command_then_runs_or_fails_it() {
    let _turn = serial().await;
    let admin = admin().await;
    let app = app("fp_block").await;
    for error_code in [None, Some(2)] {
        let mut data = doc! {
            "failCommands": ["ping"],
            "blockConnection": true,
            "blockTimeMS": 500,
            "appName": &app.name,
        };
        if let Some(code) = error_code {
            data.insert("errorCode", code);
        }
        configure(&admin, FAIL_COMMAND, doc! { "times": 1 }, data).await;
        let started = Instant::now();
        let outcome = ping(&app.client).await;
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(500),
            "blocked {took:?}, less than blockTimeMS"
        );
        match error_code {
            None => assert!(outcome.is_ok(), "{outcome:?}"),
            Some(code) => assert_eq!(code_of(&outcome.unwrap_err()), code),
        }
    }

    let data = doc! {
        "failCommands": ["ping"],
        "blockConnection": true,
        "blockTimeMS": 5000,
        "appName": &app.name,
    };
    let before = configure(&admin, FAIL_COMMAND, doc! { "times": 1 }, data.clone()).await;
    let blocked = {
        let client = app.client.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            (ping(&client).await, started.elapsed())
        })
    };
    // The ping is blocked once the fail point counted it (configuring it again, unchanged, is
    // the only way to read the count).
    eventually(DEADLINE, "the ping to be blocked", async || {
        let count = configure(&admin, FAIL_COMMAND, doc! { "times": 1 }, data.clone()).await;
        (count > before).then_some(())
    })
    .await;
    off(&admin, FAIL_COMMAND).await;
    let other = crate::app("fp_block_other").await;
    for _ in 0..5 {
        ping(&other.client).await.unwrap();
    }
    assert!(
        !blocked.is_finished(),
        "other clients' pings are answered while one connection is blocked"
    );
    let (outcome, took) = blocked.await.unwrap();
    outcome.unwrap();
    assert!(took >= Duration::from_millis(5000), "blocked {took:?}");
}

/// `appName` and `namespace` scope a fail point: only commands of the client whose handshake
/// named that appName, on that collection, fail; another client, another collection and a
/// command on another namespace run.
#[tokio::test]
async fn app_name_and_namespace_scope_the_fail_point() {
    let _turn = serial().await;
    let admin = admin().await;
    let app = app("fp_scope").await;
    let other = crate::app("fp_scope_other").await;
    let database = unique("fail_point");
    let data = doc! {
        "failCommands": ["find", "ping"],
        "errorCode": 2,
        "appName": &app.name,
        "namespace": format!("{database}.customer.accounts"),
    };
    configure(&admin, FAIL_COMMAND, "alwaysOn", data).await;
    let find = async |client: &Client, collection: &str| {
        client
            .database(&database)
            .collection::<Document>(collection)
            .find_one(doc! {})
            .await
    };
    let error = find(&app.client, "customer.accounts")
        .await
        .expect_err("scoped");
    assert_eq!(code_of(&error), 2);
    find(&app.client, "customer.orders")
        .await
        .expect("another collection");
    ping(&app.client).await.expect("another namespace (admin)");
    find(&other.client, "customer.accounts")
        .await
        .expect("another client");
    find(&admin, "customer.accounts")
        .await
        .expect("the harness's client");
    off(&admin, FAIL_COMMAND).await;
    find(&app.client, "customer.accounts").await.expect("off");
}

/// `writeConcernError` alone: the write runs, and its reply carries the given write-concern
/// error, which the driver reports; the document is written.
#[tokio::test]
async fn write_concern_error_is_added_to_a_write_that_ran() {
    let _turn = serial().await;
    let admin = admin().await;
    let app = app("fp_wce").await;
    let coll = app
        .client
        .database(&unique("fail_point"))
        .collection::<Document>("customer.accounts");
    let data = doc! {
        "failCommands": ["insert"],
        "writeConcernError": { "code": 100, "codeName": "UnsatisfiableWriteConcern", "errmsg": "Not enough data-bearing nodes" },
        "appName": &app.name,
    };
    configure(&admin, FAIL_COMMAND, doc! { "times": 1 }, data).await;
    let error = coll
        .insert_one(doc! { "_id": 1 })
        .await
        .expect_err("write concern error");
    match error.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteConcernError(wce)) => {
            assert_eq!(
                (wce.code, wce.code_name.as_str(), wce.message.as_str()),
                (
                    100,
                    "UnsatisfiableWriteConcern",
                    "Not enough data-bearing nodes"
                )
            );
        }
        other => panic!("expected a write concern error, got {other:?}"),
    }
    assert_eq!(
        coll.find_one(doc! { "_id": 1 }).await.unwrap(),
        Some(doc! { "_id": 1 }),
        "the write ran"
    );
    coll.insert_one(doc! { "_id": 2 }).await.expect("times: 1");
    off(&admin, FAIL_COMMAND).await;
}

/// failCommand applies when a command starts: a change stream's getMore that would wait
/// (awaitData) fails at once instead; `killCursors` can be failed too (the cursor stays open).
#[tokio::test]
async fn a_waiting_get_more_and_kill_cursors_are_failed_too() {
    let _turn = serial().await;
    let admin = admin().await;
    let app = app("fp_waiting").await;
    let db = app.client.database(&unique("fail_point"));
    let id = open_change_stream_cursor(&db, "customer.accounts").await;

    let data = doc! { "failCommands": ["getMore"], "errorCode": 2, "appName": &app.name };
    configure(&admin, FAIL_COMMAND, doc! { "times": 1 }, data).await;
    let started = Instant::now();
    let error = get_more(&db, "customer.accounts", id, 30_000)
        .await
        .expect_err("fails");
    assert_eq!(code_of(&error), 2);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "failed at once, not after waiting {:?}",
        started.elapsed()
    );

    let data = doc! { "failCommands": ["killCursors"], "errorCode": 2, "appName": &app.name };
    configure(&admin, FAIL_COMMAND, doc! { "times": 1 }, data).await;
    let kill = doc! { "killCursors": "customer.accounts", "cursors": [id] };
    let error = db.run_command(kill.clone()).await.expect_err("fails");
    assert_eq!(code_of(&error), 2);
    get_more(&db, "customer.accounts", id, 100)
        .await
        .expect("the cursor is still open");
    let killed = db.run_command(kill).await.unwrap();
    assert_eq!(
        killed.get_array("cursorsKilled").unwrap(),
        &vec![Bson::Int64(id)]
    );
    off(&admin, FAIL_COMMAND).await;
}

/// A change stream driven by the driver resumes by itself, losing and repeating nothing, after
/// each resumable error injected on its getMore: failCommand with the
/// `ResumableChangeStreamError` label given (the server adds none there), CursorNotFound (which
/// the driver resumes without a label), a closed connection, and
/// `failGetMoreAfterCursorCheckout` (labelled by the server).
#[tokio::test]
async fn a_stream_resumes_exactly_after_each_resumable_get_more_error() {
    let _turn = serial().await;
    let admin = admin().await;
    let app = app("fp_resume").await;
    let resumable = ["ResumableChangeStreamError"];
    let cases = [
        (
            FAIL_COMMAND,
            doc! { "errorCode": 6, "errorLabels": resumable.to_vec() },
        ),
        (
            FAIL_COMMAND,
            doc! { "errorCode": 10107, "errorLabels": resumable.to_vec() },
        ),
        (
            FAIL_COMMAND,
            doc! { "errorCode": 91, "errorLabels": resumable.to_vec() },
        ),
        (FAIL_COMMAND, doc! { "errorCode": 43 }),
        (FAIL_COMMAND, doc! { "closeConnection": true }),
        (FAIL_GET_MORE, doc! { "errorCode": 6 }),
        (FAIL_GET_MORE, doc! { "errorCode": 11602 }),
    ];
    for (fail_point, mut data) in cases {
        let case = format!("{fail_point} {data}");
        let db = app.client.database(&unique("fail_point"));
        let coll = db.collection::<Document>("customer.accounts");
        let mut stream = coll.watch().await.unwrap();
        for id in 1..=2 {
            coll.insert_one(doc! { "_id": id }).await.unwrap();
        }
        let ids = inserted_ids(&next_events(&mut stream, 2).await);
        assert_eq!(ids, [Bson::Int32(1), Bson::Int32(2)], "{case}");

        data.insert("appName", &app.name);
        if fail_point == FAIL_COMMAND {
            data.insert("failCommands", vec!["getMore"]);
        }
        let before = configure(&admin, fail_point, doc! { "times": 1 }, data).await;
        for id in 3..=4 {
            coll.insert_one(doc! { "_id": id }).await.unwrap();
        }
        let ids = inserted_ids(&next_events(&mut stream, 2).await);
        assert_eq!(
            ids,
            [Bson::Int32(3), Bson::Int32(4)],
            "{case}: after resuming"
        );
        assert_next_is_sentinel(&mut stream, &coll).await;
        assert_eq!(
            off(&admin, fail_point).await - before,
            1,
            "{case}: fired once"
        );
    }
}

/// A non-resumable error on a change stream's getMore ends the stream with the server's error:
/// ChangeStreamHistoryLost (labelled NonResumableChangeStreamError), Unauthorized, and a
/// resumable code that failCommand leaves without a label (as MongoDB does: the driver only
/// follows the label).
#[tokio::test]
async fn a_non_resumable_get_more_error_ends_the_stream_with_that_error() {
    let _turn = serial().await;
    let admin = admin().await;
    let app = app("fp_fatal").await;
    for (code, expected_labels) in [
        (286, set(&["NonResumableChangeStreamError"])),
        (13, set(&[])),
        (6, set(&[])),
    ] {
        let coll = app
            .client
            .database(&unique("fail_point"))
            .collection::<Document>("customer.accounts");
        let mut stream = coll.watch().await.unwrap();
        coll.insert_one(doc! { "_id": 1 }).await.unwrap();
        next_events(&mut stream, 1).await;
        let data = doc! { "failCommands": ["getMore"], "errorCode": code, "appName": &app.name };
        let before = configure(&admin, FAIL_COMMAND, doc! { "times": 1 }, data).await;
        coll.insert_one(doc! { "_id": 2 }).await.unwrap();
        let error = next_error(&mut stream).await;
        assert_eq!(code_of(&error), code, "{error:?}");
        assert_eq!(labels(&error), expected_labels, "code {code}");
        assert_eq!(
            off(&admin, FAIL_COMMAND).await - before,
            1,
            "code {code}: fired once"
        );
    }
}

/// On the `aggregate` that opens a change stream: a resumable code is retried once by the
/// driver (a retryable read), so `watch()` succeeds and the stream works; ChangeStreamHistoryLost
/// fails `watch()` with that error and its NonResumableChangeStreamError label.
#[tokio::test]
async fn an_aggregate_error_is_retried_once_or_fails_the_watch() {
    let _turn = serial().await;
    let admin = admin().await;
    let app = app("fp_aggregate").await;
    let coll = app
        .client
        .database(&unique("fail_point"))
        .collection::<Document>("customer.accounts");

    let data = doc! { "failCommands": ["aggregate"], "errorCode": 6, "appName": &app.name };
    let before = configure(&admin, FAIL_COMMAND, doc! { "times": 1 }, data).await;
    let mut stream = coll.watch().await.expect("retried once");
    assert_eq!(off(&admin, FAIL_COMMAND).await - before, 1, "fired once");
    coll.insert_one(doc! { "_id": 1 }).await.unwrap();
    assert_eq!(
        inserted_ids(&next_events(&mut stream, 1).await),
        [Bson::Int32(1)]
    );
    assert_next_is_sentinel(&mut stream, &coll).await;

    let data = doc! { "failCommands": ["aggregate"], "errorCode": 286, "appName": &app.name };
    configure(&admin, FAIL_COMMAND, doc! { "times": 1 }, data).await;
    let error = coll.watch().await.expect_err("not retried");
    assert_eq!(code_of(&error), 286);
    assert_eq!(labels(&error), set(&["NonResumableChangeStreamError"]));
    off(&admin, FAIL_COMMAND).await;
}

/// The test server's own `storefrontStarveChangeStream` (not MongoDB's): while it is on, every
/// getMore of a stream on the named collection answers an empty batch whose resume token is the
/// newest oplog entry's, so the stream looks idle and its token moves past changes it never
/// read (a stream resumed from that token misses them); once it is off, the stream goes on from
/// where it really was and delivers the held-back changes.
#[tokio::test]
async fn a_starved_stream_reports_moving_tokens_then_delivers_what_it_held_back() {
    if !stack().local_mongo {
        eprintln!("skipped: storefrontStarveChangeStream is the test server's own fail point");
        return;
    }
    let _turn = serial().await;
    let admin = admin().await;
    let app = app("fp_starve").await;
    let database = unique("fail_point");
    let coll = app
        .client
        .database(&database)
        .collection::<Document>("customer.accounts");
    let admin_coll = admin
        .database(&database)
        .collection::<Document>("customer.accounts");
    let mut stream = coll
        .watch()
        .max_await_time(Duration::from_millis(100))
        .await
        .unwrap();
    coll.insert_one(doc! { "_id": 1 }).await.unwrap();
    assert_eq!(
        inserted_ids(&next_events(&mut stream, 1).await),
        [Bson::Int32(1)]
    );
    let read_up_to = stream.resume_token().expect("a token after an event");

    let data = doc! { "namespace": format!("{database}.customer.accounts"), "appName": &app.name };
    let before = configure(&admin, STARVE, "alwaysOn", data).await;
    for id in 2..=3 {
        admin_coll.insert_one(doc! { "_id": id }).await.unwrap();
    }
    let starved_token = eventually(DEADLINE, "a starved batch's token to move", async || {
        if let Some(event) = stream.next_if_any().await.unwrap() {
            panic!("a starved stream delivered {event:?}");
        }
        stream.resume_token().filter(|token| *token != read_up_to)
    })
    .await;
    let mut resumed = admin_coll
        .watch()
        .resume_after(starved_token)
        .await
        .unwrap();
    assert_next_is_sentinel(&mut resumed, &admin_coll).await;
    assert!(
        stream.next_if_any().await.unwrap().is_none(),
        "still starved"
    );
    let fired = off(&admin, STARVE).await - before;
    assert!(fired >= 2, "every starved getMore counts: {fired}");

    let events = next_events(&mut stream, 3).await;
    let ids = inserted_ids(&events);
    assert_eq!(
        &ids[..2],
        [Bson::Int32(2), Bson::Int32(3)],
        "the held-back changes"
    );
    assert!(
        ids[2].as_object_id().is_some(),
        "then the first sentinel: {events:?}"
    );
    assert_next_is_sentinel(&mut stream, &coll).await;
}
