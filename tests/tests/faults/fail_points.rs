//! MongoDB's errors injected into the connector's change streams with `configureFailPoint`
//! (`failCommand`, and `failGetMoreAfterCursorCheckout` to make a stream resume), scoped by
//! `appName` to the connector's client and by `namespace` to one watched collection, so the
//! simulator, the projectors and the suite's own clients are never failed.

use mongodb::Client;
use mongodb::bson::oid::ObjectId;
use mongodb::bson::{Bson, Document, Timestamp, doc};

/// The connector's MongoDB client's `appName` (`cdc_connector::APP_NAME`).
pub const CONNECTOR_APP: &str = "storefront-cdc-connector";
pub const FAIL_COMMAND: &str = "failCommand";
pub const FAIL_GET_MORE: &str = "failGetMoreAfterCursorCheckout";

/// The errors MongoDB's manual lists as resumable for change streams (the server labels them
/// `ResumableChangeStreamError`; `CursorNotFound` is resumable by its code): code and name.
pub const RESUMABLE: [(i32, &str); 18] = [
    (6, "HostUnreachable"),
    (7, "HostNotFound"),
    (89, "NetworkTimeout"),
    (91, "ShutdownInProgress"),
    (189, "PrimarySteppedDown"),
    (262, "ExceededTimeLimit"),
    (9001, "SocketException"),
    (10107, "NotWritablePrimary"),
    (11600, "InterruptedAtShutdown"),
    (11602, "InterruptedDueToReplStateChange"),
    (13435, "NotPrimaryNoSecondaryOk"),
    (13436, "NotPrimaryOrSecondary"),
    (63, "StaleShardVersion"),
    (150, "StaleEpoch"),
    (13388, "StaleConfig"),
    (234, "RetryChangeStream"),
    (133, "FailedToSatisfyReadPreference"),
    (43, "CursorNotFound"),
];

/// StaleConfig, whose error carries extra info.
const STALE_CONFIG: i32 = 13388;
/// ChangeStreamHistoryLost: the oplog no longer holds the resume point (not resumable).
pub const HISTORY_LOST: i32 = 286;
/// Unauthorized: the connector's user may not read the collection (not resumable).
pub const UNAUTHORIZED: i32 = 13;

/// `configureFailPoint` on `admin`; the fail point's hit count before this call.
pub async fn configure(admin: &Client, name: &str, mode: impl Into<Bson>, data: Document) -> i64 {
    let command = doc! { "configureFailPoint": name, "mode": mode.into(), "data": data };
    let reply = admin
        .database("admin")
        .run_command(command)
        .await
        .unwrap_or_else(|error| panic!("configureFailPoint {name}: {error}"));
    match reply.get("count") {
        Some(Bson::Int32(n)) => i64::from(*n),
        Some(Bson::Int64(n)) => *n,
        other => panic!("configureFailPoint replied without a count: {other:?} in {reply}"),
    }
}

/// Turns a fail point off; its hit count so far.
pub async fn off(admin: &Client, name: &str) -> i64 {
    configure(admin, name, "off", doc! {}).await
}

/// `failCommand` data failing `commands` of the connector on `namespace` with `code`, labelled
/// `ResumableChangeStreamError` as MongoDB labels a change stream's resumable errors
/// (failCommand fires before a getMore finds its cursor, so the label is given, as the drivers'
/// own change-stream tests give it).
pub fn resumable_error(commands: &[&str], namespace: &str, code: i32) -> Document {
    let mut data = doc! {
        "failCommands": commands,
        "errorCode": code,
        "errorLabels": ["ResumableChangeStreamError"],
        "appName": CONNECTOR_APP,
        "namespace": namespace,
    };
    if code == STALE_CONFIG {
        // MongoDB replaces a StaleConfig without its extra info by 40671 ("Missing required
        // extra info"): the fields of its StaleConfigInfo.
        data.insert(
            "errorExtraInfo",
            doc! {
                "ns": namespace,
                "vReceived": { "e": ObjectId::new(), "t": Timestamp { time: 1, increment: 0 }, "v": Timestamp { time: 1, increment: 0 } },
                "shardId": "shard0",
            },
        );
    }
    data
}

/// `failCommand` data closing the connector's connection on `commands` on `namespace`.
pub fn closed_connection(commands: &[&str], namespace: &str) -> Document {
    doc! {
        "failCommands": commands,
        "closeConnection": true,
        "appName": CONNECTOR_APP,
        "namespace": namespace,
    }
}

/// `failCommand` data failing `commands` of the connector on `namespace` with `code` and the
/// labels the server gives it (none, for the non-resumable codes).
pub fn error(commands: &[&str], namespace: &str, code: i32) -> Document {
    doc! {
        "failCommands": commands,
        "errorCode": code,
        "appName": CONNECTOR_APP,
        "namespace": namespace,
    }
}

/// The value of the counter `cdc_source_errors_total{collection=<namespace>, resumable=...}` in a
/// `/metrics` text (0 before its first increment).
pub fn source_errors(metrics: &str, namespace: &str, resumable: bool) -> f64 {
    let collection = format!("collection=\"{namespace}\"");
    let resumable = format!("resumable=\"{resumable}\"");
    metrics
        .lines()
        .filter(|line| line.starts_with("cdc_source_errors_total{"))
        .filter(|line| line.contains(&collection) && line.contains(&resumable))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The JSON log lines at level ERROR that contain every one of `words`.
pub fn error_lines<'a>(log: &'a str, words: &[&str]) -> Vec<&'a str> {
    log.lines()
        .filter(|line| {
            serde_json::from_str::<serde_json::Value>(line)
                .is_ok_and(|event| event["level"] == "ERROR")
        })
        .filter(|line| words.iter().all(|word| line.contains(word)))
        .collect()
}
