//! The store against the local test server: statements split over several commands, each
//! result reaching the statement it belongs to.

mod common;

use std::time::Duration;

use common::*;
use mongodb::bson::doc;
use projectors::store::{OpResult, Statement, Store, WriteOp};
use storefront_tests::unique;

#[tokio::test]
async fn each_statement_gets_its_own_result_across_commands() {
    let database = client().await.database(&unique("store"));
    let documents = database.collection::<mongodb::bson::Document>("customer.orders");
    documents
        .insert_many([
            doc! { "_id": "b", "_cdc": "corrupt" },
            doc! { "_id": "d", "v": 9 },
        ])
        .await
        .unwrap();
    // Two statements per command: the five go out in three commands.
    let store = Store::new(database, "customer.orders", 2, Duration::from_secs(30));
    let guarded = |id: &str, v: i32| {
        WriteOp::upsert(
            doc! { "_id": id, "v": { "$not": { "$gte": v } } },
            doc! { "$set": { "v": v } },
        )
    };
    let ops = [
        guarded("e", 1),
        guarded("d", 5),
        WriteOp::upsert(doc! { "_id": "c" }, doc! { "$set": { "v": 3 } }),
        WriteOp::update(doc! { "_id": "b" }, doc! { "$set": { "_cdc.position": 1 } }),
        guarded("a", 2),
    ];
    let statements: Vec<Statement> = ops.iter().map(|op| op.statement().unwrap()).collect();
    let report = store
        .write(&statements.iter().collect::<Vec<_>>())
        .await
        .unwrap();
    let kinds: Vec<&str> = report
        .results
        .iter()
        .map(|result| match result {
            OpResult::Ok => "ok",
            OpResult::Upserted => "upserted",
            OpResult::DuplicateId => "duplicate",
            OpResult::Rejected { .. } => "rejected",
        })
        .collect();
    assert_eq!(
        kinds,
        ["upserted", "duplicate", "upserted", "rejected", "upserted"]
    );
    // Upserted e, c and a count in `n`; the stale d and the refused b do not.
    assert_eq!(report.matched, 3);
    let d = documents
        .find_one(doc! { "_id": "d" })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        d.get_i32("v").unwrap(),
        9,
        "the stale statement changed nothing"
    );
}
