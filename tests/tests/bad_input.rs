//! The bad-input corpus (issue 16 item 4, `storefront_tests::bad_input`) through the running
//! connector and both projectors (in this process, every log line captured): malformed source
//! documents are written to the three source collections and malformed records to the three
//! event topics, interleaved with good ones, each source and topic ending on a bad sentinel and
//! then a good one. Then every item is accounted for:
//!
//! - each defect is in the connector's dead-letter topic exactly once (matched by its
//!   collection and `_id`), with `dlq_field` the field's dotted path and a reason naming it,
//!   also when its document was changed again after it was written;
//! - each poison record is in the projectors' dead-letter topic exactly once (matched by its
//!   source offset), with its `dlq_kind` and a reason naming the header or field;
//! - nothing else is in either dead-letter topic;
//! - the connector published exactly one event per accepted document (two for a customer
//!   changed again) and nothing for the rest;
//! - a record without a key on a compacted topic was refused by the broker;
//! - every projection equals what the items specify, document for document, and holds nothing
//!   else (customer copies, fulfillment requests, each host order's status history);
//! - both processes are still healthy, and no card number is in any topic (keys, values,
//!   headers), any projection or any log line.
//!
//! The seed is `STOREFRONT_BAD_INPUT_SEED` (default 16); a failure prints it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::TryStreamExt;
use mongodb::bson::{Bson, Document, doc};
use mongodb::{Client, Collection};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::Value;
use storefront_plumbing::kafka::TracingContext;
use storefront_schemas::documents::CustomerId;
use storefront_schemas::topology::Namespace;
use storefront_tests::bad_input::{
    self, CARDS, Corpus, DocumentItem, HOST_CREATED_AT, Mapping, RecordItem, Source, Topic,
};
use storefront_tests::{
    DEADLINE, InProcess, Record, TopicReader, capture_logs, eventually, guard, http_get, stack,
};

// Only its configurations: the processes run here directly, to read their /health.
#[allow(dead_code, reason = "Pipeline itself is not used here")]
mod pipeline;

use pipeline::configs;

/// Prints the seed when the test fails, so the run can be replayed, and keeps the log.
struct OnFailure {
    seed: u64,
    logs: Arc<Mutex<Vec<u8>>>,
}

impl Drop for OnFailure {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let path = std::env::temp_dir().join(format!(
                "bad_input-seed-{}-{}.log",
                self.seed,
                std::process::id()
            ));
            let written = self
                .logs
                .lock()
                .map(|logs| std::fs::write(&path, &*logs).is_ok())
                .unwrap_or(false);
            eprintln!(
                "bad-input corpus seed {}: rerun with {}={}{}",
                self.seed,
                bad_input::SEED_VAR,
                self.seed,
                if written {
                    format!("; the processes' log is in {}", path.display())
                } else {
                    String::new()
                }
            );
        }
    }
}

fn collection(client: &Client, namespace: &Namespace) -> Collection<Document> {
    client
        .database(&namespace.database)
        .collection(&namespace.collection)
}

/// A stored value as JSON, Decimal128 as the number it stands for, `_cdc` removed.
fn as_json(value: &Bson) -> Value {
    fn normalise(value: &mut Value) {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(text)) = map.get("$numberDecimal") {
                    *value = serde_json::from_str(text).unwrap();
                    return;
                }
                map.remove("_cdc");
                map.values_mut().for_each(normalise);
            }
            Value::Array(items) => items.iter_mut().for_each(normalise),
            _ => {}
        }
    }
    let mut json = value.clone().into_relaxed_extjson();
    normalise(&mut json);
    json
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

/// `_id` as the connector's `dlq_document_id` header spells it.
fn document_id(document: &Document) -> String {
    document
        .get("_id")
        .cloned()
        .unwrap_or(Bson::Null)
        .into_relaxed_extjson()
        .to_string()
}

/// The record key of a customer id stored as `id`.
fn customer_key(id: &Bson) -> String {
    CustomerId::from_bson(id).unwrap().key()
}

#[tokio::test]
async fn every_bad_input_is_dead_lettered_once_and_the_good_data_converges() {
    let seed = bad_input::seed();
    let logs = capture_logs();
    let _on_failure = OnFailure {
        seed,
        logs: logs.clone(),
    };
    let corpus = bad_input::generate(seed);
    eprintln!(
        "bad-input corpus, seed {seed}: {} documents, {} records, {} host documents",
        corpus.documents.len(),
        corpus.records.len(),
        corpus.hosts.len()
    );
    let letters = corpus.documents.iter().filter(|d| !d.letters.is_empty());
    let maps = |m: &Mapping| !matches!(m, Mapping::Nothing);
    eprintln!(
        "  documents: {} must dead-letter ({} of them also map: an entry left out), {} must map \
         only, {} must come to nothing; records: {} must dead-letter, {} must map, {} the broker \
         refuses",
        letters.clone().count(),
        letters.filter(|d| maps(&d.mapping)).count(),
        corpus
            .documents
            .iter()
            .filter(|d| d.letters.is_empty() && maps(&d.mapping))
            .count(),
        corpus
            .documents
            .iter()
            .filter(|d| d.letters.is_empty() && !maps(&d.mapping))
            .count(),
        corpus.records.iter().filter(|r| r.letter.is_some()).count(),
        corpus.records.iter().filter(|r| maps(&r.mapping)).count(),
        corpus
            .records
            .iter()
            .filter(|r| r.refused_by_broker)
            .count(),
    );
    eprintln!(
        "  {} documents changed again after they were written ({} of them with a dead letter)",
        corpus
            .documents
            .iter()
            .filter(|d| d.touch.is_some())
            .count(),
        corpus
            .documents
            .iter()
            .filter_map(|d| d.touch)
            .filter(|&i| !corpus.documents[i].letters.is_empty())
            .count(),
    );
    for (what, category, count) in corpus.sizes() {
        eprintln!("  {what:<18} {category:<14} {count}");
    }

    let (connector_config, projectors_config) = configs();
    let connector =
        InProcess::start(|stop| cdc_connector::start(connector_config.clone(), stop)).await;
    let projectors = InProcess::start(|stop| {
        projectors::start(
            projectors_config.clone(),
            vec![
                projectors::config::Projector::Orders,
                projectors::config::Projector::Fulfillment,
            ],
            stop,
        )
    })
    .await;

    let client = stack().mongo_client().await;
    let sources = &connector_config.sources;
    let accounts = collection(&client, &sources.accounts);
    let orders = collection(&client, &sources.orders);
    let requests = collection(&client, &sources.fulfillment);
    let topics = &connector_config.topics;
    let topic_name = |topic: Topic| match topic {
        Topic::Customer => topics.customer_change.clone(),
        Topic::Status => topics.order_status_change.clone(),
        Topic::Request => topics.fulfillment_request.clone(),
    };

    // The orders that statuses are appended to exist before anything refers to them.
    orders.insert_many(corpus.hosts.clone()).await.unwrap();

    // Documents and records written at the same time, each in corpus order: documents one by
    // one, records pipelined (the idempotent producer keeps their order), except the records
    // the broker refuses, which go alone (a refusal fails the whole batch it is in).
    let started = std::time::Instant::now();
    let producer: FutureProducer<TracingContext> = storefront_plumbing::kafka::producer_config(
        &stack().kafka_settings(),
        "bad-input-corpus",
        &[("message.max.bytes", "1048576")],
    )
    .create_with_context(TracingContext)
    .unwrap();
    let record_topics: Vec<String> = corpus.records.iter().map(|r| topic_name(r.topic)).collect();
    let write_documents = async {
        for item in &corpus.documents {
            let target = match item.source {
                Source::Accounts => &accounts,
                Source::Orders => &orders,
                Source::Fulfillment => &requests,
            };
            target
                .insert_one(item.document.clone())
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", item.name));
            if let Some(index) = item.touch {
                let again = &corpus.documents[index];
                let id = again.document.get("_id").cloned().unwrap_or(Bson::Null);
                let changed = target
                    .update_one(
                        doc! { "_id": id },
                        doc! { "$set": { "_class": "changed.again.Unread" } },
                    )
                    .await
                    .unwrap_or_else(|e| panic!("{}: {e}", again.name));
                assert_eq!(changed.matched_count, 1, "{}", again.name);
            }
        }
    };
    let write_records = async {
        let send = |index: usize| {
            let item = &corpus.records[index];
            let headers = item
                .headers
                .iter()
                .fold(OwnedHeaders::new(), |headers, (key, value)| {
                    headers.insert(Header {
                        key,
                        value: value.as_deref(),
                    })
                });
            let mut out: FutureRecord<'_, [u8], [u8]> =
                FutureRecord::to(&record_topics[index]).headers(headers);
            if let Some(key) = &item.key {
                out = out.key(key);
            }
            if let Some(value) = &item.value {
                out = out.payload(value);
            }
            producer.send(out, Duration::from_secs(60))
        };
        // (topic, partition, offset) of each record, in corpus order.
        let mut written: Vec<(String, i32, i64)> = Vec::new();
        let mut pending = Vec::new();
        for (index, item) in corpus.records.iter().enumerate() {
            if !item.refused_by_broker {
                pending.push(send(index));
                continue;
            }
            for (delivery, offset) in futures::future::join_all(pending.drain(..))
                .await
                .into_iter()
                .zip(written.len()..)
            {
                let delivery = delivery
                    .unwrap_or_else(|(e, _)| panic!("{}: {e}", corpus.records[offset].name));
                written.push((
                    record_topics[offset].clone(),
                    delivery.partition,
                    delivery.offset,
                ));
            }
            match send(index).await {
                Err((
                    rdkafka::error::KafkaError::MessageProduction(
                        rdkafka::types::RDKafkaErrorCode::InvalidRecord,
                    ),
                    _,
                )) => {
                    // Never stored: a position no record has, one per item.
                    let nowhere = -1 - written.len() as i64;
                    written.push((record_topics[index].clone(), -1, nowhere));
                }
                outcome => panic!("{}: the broker should refuse it: {outcome:?}", item.name),
            }
        }
        for (delivery, offset) in futures::future::join_all(pending)
            .await
            .into_iter()
            .zip(written.len()..)
        {
            let delivery =
                delivery.unwrap_or_else(|(e, _)| panic!("{}: {e}", corpus.records[offset].name));
            written.push((
                record_topics[offset].clone(),
                delivery.partition,
                delivery.offset,
            ));
        }
        written
    };
    let ((), written) = tokio::join!(write_documents, write_records);
    eprintln!("corpus written in {:.1} s", started.elapsed().as_secs_f64());
    let produced: BTreeSet<(String, i32, i64)> = written.iter().cloned().collect();

    // Wait for the sentinels: the last defect of each source and the last poison of each topic
    // in the dead-letter topics, and the last good item of each in its projection.
    let connector_dead = connector_config.stream.dead_letter_topic.clone();
    let projectors_dead = projectors_config.apply.dead_letter_topic.clone();
    let bad_sentinels: Vec<String> = corpus
        .documents
        .iter()
        .filter(|d| d.category == "sentinel" && !d.letters.is_empty())
        .map(|d| document_id(&d.document))
        .collect();
    let poison_sentinels: Vec<String> = corpus
        .records
        .iter()
        .zip(&written)
        .filter(|(r, _)| r.category == "sentinel" && r.letter.is_some())
        .map(|(_, (_, _, offset))| offset.to_string())
        .collect();
    // A sentinel that never comes is itself a failure, but the accounting below still runs, so
    // it names every item that went missing rather than only the sentinel.
    let mut failures: Vec<String> = Vec::new();
    let mut dead_reader = TopicReader::new(&[&connector_dead, &projectors_dead]);
    let sentinels_seen = tokio::time::timeout(
        DEADLINE,
        dead_reader.read_until(
            DEADLINE * 2,
            "the bad sentinels in the dead-letter topics",
            |records| {
                let seen = |topic: &str, header: &str, value: &str| {
                    records.iter().any(|r| {
                        r.topic == topic && r.headers.get(header).map(String::as_str) == Some(value)
                    })
                };
                bad_sentinels
                    .iter()
                    .all(|id| seen(&connector_dead, "dlq_document_id", id))
                    && poison_sentinels
                        .iter()
                        .all(|offset| seen(&projectors_dead, "dlq_source_offset", offset))
            },
        ),
    )
    .await;
    if sentinels_seen.is_err() {
        failures.push(format!(
            "the bad sentinels did not all reach the dead-letter topics within {DEADLINE:?}"
        ));
    }
    let good_sentinels: Vec<&Mapping> = corpus
        .documents
        .iter()
        .filter(|d| d.category == "sentinel" && d.letters.is_empty())
        .map(|d| &d.mapping)
        .chain(
            corpus
                .records
                .iter()
                .filter(|r| r.category == "sentinel" && r.letter.is_none())
                .map(|r| &r.mapping),
        )
        .collect();
    for mapping in good_sentinels {
        let arrived = tokio::time::timeout(
            DEADLINE,
            eventually(DEADLINE * 2, "a good sentinel", async || {
                projection_of(&orders, &requests, mapping).await
            }),
        )
        .await;
        if arrived.is_err() {
            failures.push(format!("the good sentinel {mapping:?} never arrived"));
        }
    }

    eprintln!(
        "sentinels through after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // Both pipelines kept running.
    for (what, addr) in [
        ("connector", connector.http_addr()),
        ("projectors", projectors.http_addr()),
    ] {
        let (status, body) = http_get(addr, "/health").await.unwrap();
        assert_eq!(status, 200, "{what} /health: {body}");
    }

    // Everything the dead-letter topics hold, to their end.
    let dead_letters = guard::read_all(
        &mut TopicReader::new(&[&connector_dead, &projectors_dead]),
        &[&connector_dead, &projectors_dead],
        DEADLINE,
    )
    .await;
    let omitted = dead_letters
        .iter()
        .filter(|r| r.headers.contains_key("dlq_value_omitted"))
        .count();
    eprintln!(
        "dead letters: {} from the connector, {} from the projectors, {omitted} of them without \
         their value (too large)",
        dead_letters
            .iter()
            .filter(|r| r.topic == connector_dead)
            .count(),
        dead_letters
            .iter()
            .filter(|r| r.topic == projectors_dead)
            .count(),
    );
    check_connector_letters(
        &corpus,
        dead_letters.iter().filter(|r| r.topic == connector_dead),
        &sources_by_name(&connector_config.sources),
        &mut failures,
    );
    check_projector_letters(
        &corpus,
        &written,
        dead_letters.iter().filter(|r| r.topic == projectors_dead),
        &mut failures,
    );

    // The events the connector published: one per accepted document, none for the rest.
    let event_topics = [
        topics.customer_change.as_str(),
        topics.order_status_change.as_str(),
        topics.fulfillment_request.as_str(),
    ];
    let events = guard::read_all(
        &mut TopicReader::new(&event_topics),
        &event_topics,
        DEADLINE,
    )
    .await;
    let mut published: BTreeMap<(String, String), usize> = BTreeMap::new();
    for record in &events {
        if produced.contains(&(record.topic.clone(), record.partition, record.offset)) {
            continue;
        }
        *published
            .entry((record.topic.clone(), record.key.clone().unwrap_or_default()))
            .or_default() += 1;
    }
    let mut expected_events: BTreeMap<(String, String), usize> = BTreeMap::new();
    for item in &corpus.documents {
        let key = match &item.mapping {
            Mapping::Nothing => continue,
            Mapping::Customer { id, .. } => (topics.customer_change.clone(), customer_key(id)),
            Mapping::Request { guid, .. } => (topics.fulfillment_request.clone(), guid.clone()),
            Mapping::Status { guid, .. } => (topics.order_status_change.clone(), guid.clone()),
        };
        *expected_events.entry(key).or_default() += item.events;
    }
    if published != expected_events {
        let extra: Vec<_> = published
            .iter()
            .filter(|(k, n)| expected_events.get(*k) != Some(n))
            .collect();
        let missing: Vec<_> = expected_events
            .iter()
            .filter(|(k, n)| published.get(*k) != Some(n))
            .collect();
        failures.push(format!(
            "connector events differ: published (with counts) but not expected so {extra:?}; \
             expected but not published so {missing:?}"
        ));
    }

    // The projections: every item's mapping, and nothing else.
    let mut expected_copies = 0;
    let mut expected_requests = 0;
    for (name, mapping) in corpus
        .documents
        .iter()
        .map(|d| (&d.name, &d.mapping))
        .chain(corpus.records.iter().map(|r| (&r.name, &r.mapping)))
    {
        match mapping {
            Mapping::Customer { .. } => expected_copies += 1,
            Mapping::Request { .. } => expected_requests += 1,
            _ => {}
        }
        if matches!(mapping, Mapping::Nothing) {
            continue;
        }
        if projection_of(&orders, &requests, mapping).await.is_none() {
            failures.push(format!(
                "{name}: projection differs from {mapping:?}: {}",
                describe(&orders, &requests, mapping).await
            ));
        }
    }
    let orders_written = corpus
        .documents
        .iter()
        .filter(|d| d.source == Source::Orders)
        .count();
    let fulfillments_written = corpus
        .documents
        .iter()
        .filter(|d| d.source == Source::Fulfillment)
        .count();
    let copies = orders.count_documents(doc! {}).await.unwrap() as usize;
    let expected = corpus.hosts.len() + orders_written + expected_copies;
    if copies != expected {
        failures.push(format!(
            "customer.orders holds {copies} documents, expected {expected} ({} hosts, \
             {orders_written} written, {expected_copies} customer copies)",
            corpus.hosts.len()
        ));
    }
    let fulfillment_count = requests.count_documents(doc! {}).await.unwrap() as usize;
    let expected = fulfillments_written + expected_requests;
    if fulfillment_count != expected {
        failures.push(format!(
            "fulfillment.requests holds {fulfillment_count} documents, expected {expected}"
        ));
    }
    // Host orders hold only the statuses the items specify.
    for host in &corpus.hosts {
        let id = host.get("_id").unwrap().clone();
        let stored = orders.find_one(doc! { "_id": id }).await.unwrap().unwrap();
        for order in stored.get_array("orders").unwrap() {
            let order = order.as_document().unwrap();
            let n = order.get_array("orderStatusEvents").unwrap().len();
            if n != 2 {
                failures.push(format!(
                    "host order {} holds {n} statuses: {:?}",
                    order.get_str("guid").unwrap(),
                    order.get_array("orderStatusEvents").unwrap()
                ));
            }
        }
    }

    // No card number anywhere it could leak to.
    let mut leaks = Vec::new();
    for record in dead_letters.iter().chain(&events) {
        let mut bytes = record.key.clone().unwrap_or_default().into_bytes();
        bytes.extend(record.payload.clone().unwrap_or_default());
        for (k, v) in &record.headers {
            bytes.extend(k.as_bytes());
            bytes.extend(v.as_bytes());
        }
        for card in CARDS {
            if contains(&bytes, card) {
                leaks.push(format!(
                    "{card} in {} offset {}",
                    record.topic, record.offset
                ));
            }
        }
    }
    for (what, target) in [
        ("customer.orders", &orders),
        ("fulfillment.requests", &requests),
    ] {
        let all: Vec<Document> = target
            .find(doc! {})
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        for document in all {
            let text = Bson::Document(document).into_relaxed_extjson().to_string();
            for card in CARDS {
                if text.contains(card) {
                    leaks.push(format!("{card} in {what}"));
                }
            }
        }
    }
    // The control: the scan finds the cards where they are.
    let stored: Vec<Document> = accounts
        .find(doc! {})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert!(
        stored.iter().any(|d| Bson::Document(d.clone())
            .into_relaxed_extjson()
            .to_string()
            .contains(CARDS[2])),
        "the control: customer.accounts holds the cards"
    );

    connector.stop().await;
    projectors.stop().await;
    {
        let logs = logs.lock().unwrap();
        for card in CARDS {
            if contains(&logs, card) {
                leaks.push(format!("{card} in the log"));
            }
        }
        assert!(!logs.is_empty(), "the control: logs were captured");
    }
    if !leaks.is_empty() {
        failures.push(format!("card numbers left Accounts: {leaks:?}"));
    }

    assert!(
        failures.is_empty(),
        "{} of {} items not accounted for:\n{}",
        failures.len(),
        corpus.documents.len() + corpus.records.len(),
        failures.join("\n")
    );

    // Passed: its databases (some 60 MB of oversized documents) leave the shared stack; a
    // failed run keeps them to look at.
    for database in [
        &sources.accounts.database,
        &sources.orders.database,
        &sources.fulfillment.database,
        &connector_config.checkpoints.database,
    ] {
        client.database(database).drop().await.unwrap();
    }
}

fn sources_by_name(
    sources: &storefront_schemas::topology::StorefrontNamespaces,
) -> BTreeMap<String, Source> {
    [
        (&sources.accounts, Source::Accounts),
        (&sources.orders, Source::Orders),
        (&sources.fulfillment, Source::Fulfillment),
    ]
    .into_iter()
    .map(|(n, s)| (format!("/mongodb/{}/{}", n.database, n.collection), s))
    .collect()
}

/// Every connector dead letter belongs to a document item that expects it, once, with its
/// field and reason.
fn check_connector_letters<'a>(
    corpus: &Corpus,
    letters: impl Iterator<Item = &'a Record>,
    sources: &BTreeMap<String, Source>,
    failures: &mut Vec<String>,
) {
    let mut by_item: BTreeMap<(Source, String), Vec<&Record>> = BTreeMap::new();
    for letter in letters {
        let source = sources[letter.header("dlq_source")];
        by_item
            .entry((source, letter.header("dlq_document_id").to_owned()))
            .or_default()
            .push(letter);
    }
    let items: BTreeMap<(Source, String), &DocumentItem> = corpus
        .documents
        .iter()
        .map(|d| ((d.source, document_id(&d.document)), d))
        .collect();
    for (key, letters) in &by_item {
        if !items.contains_key(key) {
            failures.push(format!(
                "connector dead letters for no item: {key:?}: {:?}",
                letters
                    .iter()
                    .map(|l| l.header("dlq_reason"))
                    .collect::<Vec<_>>()
            ));
        }
    }
    for (key, item) in items {
        let found = by_item.get(&key).cloned().unwrap_or_default();
        let reasons: Vec<(String, String)> = found
            .iter()
            .map(|l| {
                (
                    l.headers.get("dlq_field").cloned().unwrap_or_default(),
                    l.header("dlq_reason").to_owned(),
                )
            })
            .collect();
        if found.len() != item.letters.len() {
            failures.push(format!(
                "{}: {} connector dead letters, expected {} {:?}; found {reasons:?}",
                item.name,
                found.len(),
                item.letters.len(),
                item.letters
            ));
            continue;
        }
        for (expected, (field, reason)) in item.letters.iter().zip(&reasons) {
            // An object field holding a date or ObjectId is read as the document the driver
            // makes of it, so the first field that lacks is named, inside the field.
            let field_matches = &expected.field == field
                || (expected.or_inside && field.starts_with(&format!("{}.", expected.field)));
            if !field_matches
                || !expected
                    .reason
                    .iter()
                    .all(|word| reason.contains(word.as_str()))
            {
                failures.push(format!(
                    "{}: dead letter ({field:?}, {reason:?}), expected field {:?} and a \
                     reason with {:?}",
                    item.name, expected.field, expected.reason
                ));
            }
        }
    }
}

/// Every projector dead letter belongs to a record item that expects it, once, with its kind
/// and reason.
fn check_projector_letters<'a>(
    corpus: &Corpus,
    written: &[(String, i32, i64)],
    letters: impl Iterator<Item = &'a Record>,
    failures: &mut Vec<String>,
) {
    let mut by_offset: BTreeMap<(String, i32, i64), Vec<&Record>> = BTreeMap::new();
    for letter in letters {
        let key = (
            letter.header("dlq_source_topic").to_owned(),
            letter.header("dlq_source_partition").parse().unwrap(),
            letter.header("dlq_source_offset").parse().unwrap(),
        );
        by_offset.entry(key).or_default().push(letter);
    }
    let items: BTreeMap<(String, i32, i64), &RecordItem> =
        written.iter().cloned().zip(&corpus.records).collect();
    for (key, letters) in &by_offset {
        if !items.contains_key(key) {
            failures.push(format!(
                "projector dead letters for no item: {key:?}: {:?}",
                letters
                    .iter()
                    .map(|l| l.header("dlq_reason"))
                    .collect::<Vec<_>>()
            ));
        }
    }
    for (key, item) in items {
        let found = by_offset.get(&key).cloned().unwrap_or_default();
        let reasons: Vec<(String, String)> = found
            .iter()
            .map(|l| {
                (
                    l.header("dlq_kind").to_owned(),
                    l.header("dlq_reason").to_owned(),
                )
            })
            .collect();
        let expected = usize::from(item.letter.is_some());
        if found.len() != expected {
            failures.push(format!(
                "{}: {} projector dead letters, expected {:?}; found {reasons:?}",
                item.name,
                found.len(),
                item.letter
            ));
            continue;
        }
        if let (Some(letter), Some((kind, reason))) = (&item.letter, reasons.first()) {
            if &letter.field != kind
                || !letter
                    .reason
                    .iter()
                    .all(|word| reason.contains(word.as_str()))
            {
                failures.push(format!(
                    "{}: dead letter ({kind}, {reason:?}), expected kind {} and a reason \
                     with {:?}",
                    item.name, letter.field, letter.reason
                ));
            }
            // The record itself rides along, unless it was too large to.
            let letter_record = found[0];
            if letter_record.payload.as_deref() != item.value.as_deref()
                && !letter_record.headers.contains_key("dlq_value_omitted")
            {
                failures.push(format!("{}: the dead letter's value differs", item.name));
            }
        }
    }
}

/// `Some(())` when the projection holds what `mapping` specifies.
async fn projection_of(
    orders: &Collection<Document>,
    requests: &Collection<Document>,
    mapping: &Mapping,
) -> Option<()> {
    match mapping {
        Mapping::Nothing => Some(()),
        Mapping::Customer { id, copy } => {
            let id = Bson::from(CustomerId::from_key(&customer_key(id)).unwrap());
            let stored = orders.find_one(doc! { "_id": id }).await.unwrap()?;
            let json = as_json(&Bson::Document(stored));
            let found = serde_json::json!({
                "name": json["name"], "contact": json["contact"], "addresses": json["addresses"],
            });
            (&found == copy).then_some(())
        }
        Mapping::Request { guid, request } => {
            let stored = requests.find_one(doc! { "_id": guid }).await.unwrap()?;
            let json = as_json(&Bson::Document(stored));
            let found = serde_json::json!({
                "name": json["name"], "contact": json["contact"], "address": json["address"],
                "order": {
                    "guid": json["order"]["guid"],
                    "orderStatusEvents": json["order"]["orderStatusEvents"],
                    "orderItems": json["order"]["orderItems"],
                },
            });
            (&found == request).then_some(())
        }
        Mapping::Status {
            guid,
            timestamp,
            status,
        } => {
            let stored = orders
                .find_one(doc! { "orders.guid": guid })
                .await
                .unwrap()?;
            let order = stored
                .get_array("orders")
                .unwrap()
                .iter()
                .filter_map(Bson::as_document)
                .find(|o| o.get_str("guid") == Ok(guid))?;
            let history: Vec<(i64, String)> = order
                .get_array("orderStatusEvents")
                .unwrap()
                .iter()
                .filter_map(Bson::as_document)
                .map(|s| {
                    (
                        s.get_i64("timestamp")
                            .or_else(|_| s.get_i32("timestamp").map(i64::from))
                            .unwrap_or(-1),
                        s.get_str("orderStatusType").unwrap_or("?").to_owned(),
                    )
                })
                .collect();
            (history
                == [
                    (HOST_CREATED_AT, "CREATED".to_owned()),
                    (*timestamp, status.clone()),
                ])
            .then_some(())
        }
    }
}

/// What the projection holds for `mapping`, for a failure message (large values cut short).
async fn describe(
    orders: &Collection<Document>,
    requests: &Collection<Document>,
    mapping: &Mapping,
) -> String {
    let found = match mapping {
        Mapping::Customer { id, .. } => {
            let id = Bson::from(CustomerId::from_key(&customer_key(id)).unwrap());
            orders.find_one(doc! { "_id": id }).await.unwrap()
        }
        Mapping::Request { guid, .. } => requests.find_one(doc! { "_id": guid }).await.unwrap(),
        Mapping::Status { guid, .. } => {
            orders.find_one(doc! { "orders.guid": guid }).await.unwrap()
        }
        Mapping::Nothing => None,
    };
    let text = format!("{:?}", found.map(|d| as_json(&Bson::Document(d))));
    text.chars().take(1_500).collect()
}
