//! `cdc-connector reconcile` as an operator runs it: the built binary with a config file. Exit
//! codes (0 no drift, 1 drift, 2 error), the JSON report, the Prometheus textfile, no card number
//! in anything it prints, and `--repair` re-emitting the drifted account through Kafka under a
//! new event id at a fresh position. The end-to-end repair with the projectors and the simulator
//! is `tests/tests/reconcile.rs`.

use std::process::Command;

use cdc_connector::config::{CheckpointSettings, ConnectorConfig, StreamSettings};
use mongodb::bson::{Document, doc, oid::ObjectId};
use storefront_schemas::topology::{Namespace, StorefrontNamespaces, StorefrontTopics};
use storefront_tests::{DEADLINE, TopicReader, free_port, guard, stack, unique};

const BINARY: &str = env!("CARGO_BIN_EXE_cdc-connector");
const CARD: &str = "4111222233334444";

fn config() -> ConnectorConfig {
    let sources = StorefrontNamespaces {
        accounts: Namespace::new(unique("accounts"), "customer.accounts"),
        orders: Namespace::new(unique("orders"), "customer.orders"),
        fulfillment: Namespace::new(unique("fulfillment"), "fulfillment.requests"),
    };
    let mut config = ConnectorConfig {
        mongo: stack().mongo_settings(),
        kafka: stack().kafka_settings(),
        topics: StorefrontTopics {
            customer_change: unique("customer"),
            fulfillment_request: unique("fulfill"),
            order_status_change: unique("status"),
        },
        stream: StreamSettings {
            dead_letter_topic: unique("connector_dead"),
            ..StreamSettings::default()
        },
        checkpoints: CheckpointSettings {
            database: unique("cdc_state"),
            ..CheckpointSettings::default()
        },
        sources: sources.clone(),
        ..ConnectorConfig::default()
    };
    config.new_topics.partitions = 1;
    config.reconcile.targets.orders = sources.orders;
    config.reconcile.targets.fulfillment = sources.fulfillment;
    config
}

/// Runs `reconcile` with `config` and `args`: exit code, stdout, stderr.
fn reconcile(config: &ConnectorConfig, args: &[&str]) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("connector.toml");
    std::fs::write(&path, toml::to_string(config).unwrap()).unwrap();
    let output = Command::new(BINARY)
        .arg("--config")
        .arg(&path)
        .arg("reconcile")
        .args(args)
        .output()
        .unwrap();
    (
        output.status.code().unwrap(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn account(id: ObjectId) -> Document {
    doc! {
        "_id": id,
        "name": { "title": "Mx.", "firstName": "Grace", "lastName": "Hopper" },
        "contact": { "primaryPhone": "555-0199", "email": "grace@example.com" },
        "addresses": [{ "type": "SHIPPING", "description": "home", "address1": "1 Navy Way",
                        "city": "Arlington", "state": "VA", "postalCode": "22202" }],
        "creditCards": [{ "type": "PRIMARY", "description": "visa", "number": CARD,
                          "expiration": "01/30", "nameOnCard": "Grace Hopper" }],
    }
}

#[tokio::test]
async fn exit_codes_reports_and_metrics_of_the_binary() {
    let config = config();
    let client = stack().mongo_client().await;
    let id = ObjectId::new();
    let accounts = client
        .database(&config.sources.accounts.database)
        .collection::<Document>(&config.sources.accounts.collection);
    accounts.insert_one(account(id)).await.unwrap();

    // Drift: the account has no copy.
    let metrics = tempfile::tempdir().unwrap();
    let metrics_file = metrics.path().join("reconcile.prom");
    let (code, stdout, stderr) = reconcile(
        &config,
        &[
            "--format",
            "json",
            "--metrics-file",
            metrics_file.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["drift"]["customer_copy"]["missing"]["count"], 1);
    assert_eq!(
        report["drift"]["customer_copy"]["missing"]["samples"],
        serde_json::json!([{ "key": id.to_hex() }])
    );
    let total: u64 = ["customer_copy", "fulfillment_request", "order_status"]
        .iter()
        .flat_map(|check| {
            ["missing", "extra", "mismatched"]
                .map(|kind| report["drift"][check][kind]["count"].as_u64().unwrap())
        })
        .sum();
    assert_eq!(total, 1, "{stdout}");
    let prom = std::fs::read_to_string(&metrics_file).unwrap();
    assert!(
        prom.contains("cdc_reconcile_drift{check=\"customer_copy\",kind=\"missing\"} 1\n"),
        "{prom}"
    );
    assert!(prom.contains("cdc_reconcile_drift{check=\"order_status\",kind=\"missing\"} 0\n"));
    assert!(!stdout.contains(CARD) && !stderr.contains(CARD) && !prom.contains(CARD));

    // The copy edited: mismatched, named by field only.
    let copies = client
        .database(&config.sources.orders.database)
        .collection::<Document>(&config.sources.orders.collection);
    copies
        .insert_one(doc! {
            "_id": id,
            "name": { "title": "Mx.", "firstName": "Grace", "lastName": "Hopper" },
            "contact": { "primaryPhone": "555-0000", "email": "grace@example.com" },
            "addresses": [{ "type": "SHIPPING", "description": "home", "address1": "1 Navy Way",
                            "city": "Arlington", "state": "VA", "postalCode": "22202" }],
            "orders": [],
        })
        .await
        .unwrap();
    let (code, stdout, _) = reconcile(&config, &["--quiet"]);
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stdout.contains(&format!(
            "  mismatched          1\n    {} (fields: contact)\n",
            id.to_hex()
        )),
        "{stdout}"
    );
    assert!(!stdout.contains("555-0000") && !stdout.contains("555-0199"));

    // --repair re-emits the account through Kafka: one record, a new id, a fresh position.
    let (code, stdout, stderr) = reconcile(&config, &["--repair", "--quiet"]);
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("repair: 1 source documents re-emitted, 1 events acknowledged by Kafka"),
        "{stdout}"
    );
    let topic = config.topics.customer_change.as_str();
    let mut reader = TopicReader::new(&[topic]);
    let records = guard::read_all(&mut reader, &[topic], DEADLINE).await;
    assert_eq!(records.len(), 1);
    let record = &records[0];
    assert_eq!(record.key.as_deref(), Some(id.to_hex().as_str()));
    let payload = String::from_utf8_lossy(record.payload.as_deref().unwrap()).into_owned();
    assert!(
        payload.contains("555-0199") && !payload.contains(CARD),
        "{payload}"
    );
    let position: u64 = record.header("ce_clustertime").parse().unwrap();
    assert!(
        position >> 32 > 1_700_000_000,
        "a fresh cluster time: {position}"
    );
    // The id a change at that position would have, made the repair's own: never a duplicate
    // of an original event for a consumer deduplicating by id.
    let position = storefront_schemas::metadata::SourcePosition::from_u64(position);
    let original = storefront_schemas::metadata::event_id(
        storefront_schemas::metadata::EventType::CustomerChanged,
        &[
            &config.sources.accounts.database,
            &config.sources.accounts.collection,
            &id.to_hex(),
            &position.as_u64().to_string(),
        ],
    );
    assert_eq!(
        record.header("ce_id"),
        cdc_connector::republish::republished_id(&original, position)
    );

    // No drift once the copy is right (the projectors are not running here: set by hand).
    copies
        .update_one(
            doc! { "_id": id },
            doc! { "$set": { "contact.primaryPhone": "555-0199" } },
        )
        .await
        .unwrap();
    let (code, stdout, _) = reconcile(&config, &["--quiet"]);
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.starts_with("reconcile: 0 drifted keys;"), "{stdout}");

    // MongoDB unreachable: an error, exit 2.
    let mut unreachable = config.clone();
    unreachable.mongo.uri = format!("mongodb://127.0.0.1:{}/?directConnection=true", free_port());
    unreachable.mongo.server_selection_timeout_ms = 500;
    let (code, stdout, stderr) = reconcile(&unreachable, &["--quiet"]);
    assert_eq!(code, 2, "{stdout}\n{stderr}");
    assert!(stderr.contains("reconcile failed"), "{stderr}");
}
