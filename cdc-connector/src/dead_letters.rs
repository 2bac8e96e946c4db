//! `cdc-connector dead-letters list|redrive`: the connector's dead letters for operators.
//!
//! Listing is [`storefront_plumbing::dead_letters`] (shared with the projectors). Redriving
//! differs from the projectors': a connector's dead letter is a source change the connector could
//! not map, and its body is the document (or entry) as it was then. Once the cause is fixed (the
//! document corrected in MongoDB, whose new change also flows by itself, or the mapping fixed in
//! code), redriving re-reads the **current** source document and publishes what it maps to now,
//! through [`crate::republish`]: at a fresh position, so it never overwrites a newer change, and
//! applied by the projectors' idempotent, position-guarded writes, so it never duplicates an
//! effect.
//!
//! # Scope
//! A dead letter keyed by its document `_id` (a defect of the whole document) re-emits every
//! event of the document; one keyed by an order guid re-emits only that order's events (for
//! `customer.orders`, its fulfillment request as approved, see [`Scope::ApprovalOf`]). Several
//! dead letters of one document and scope are one re-emit.
//!
//! # Failing again, once per selection
//! A document that still has a defect at the dead letter's field (or, for a whole-document
//! defect, any defect without a field) fails again: a new dead letter goes to the connector's
//! dead-letter topic with the old one's key, body and headers, the new reason, and the history
//! (`dlq_history`: the earlier attempts and the redriven dead letter; `dlq_redriven_from`).
//! Every redriven dead letter is recorded in the ledger `<dead-letter topic>.redriven` after
//! Kafka acknowledged what it caused, so redriving the same selection again sends nothing unless
//! `--again`, as for the projectors.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::Duration;

use mongodb::bson::Bson;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::Serialize;
pub use storefront_plumbing::dead_letters::RedriveOptions;
use storefront_plumbing::dead_letters::{self, DeadLetter, NotSent, Writer};
use storefront_plumbing::kafka::{KafkaSetupError, TracingContext};
use storefront_schemas::dead_letter::{self as schema, header};

use crate::config::{ConnectorConfig, WatchedSource};
use crate::republish::{RepublishError, RepublishTarget, Republisher, Scope};

/// Why a redrive failed.
#[derive(Debug, thiserror::Error)]
pub enum RedriveError {
    /// The dead letters or the ledger could not be read.
    #[error(transparent)]
    Read(#[from] dead_letters::ReadError),
    /// Kafka could not be set up.
    #[error(transparent)]
    Kafka(#[from] KafkaSetupError),
    /// Re-emitting the documents failed; nothing was recorded in the ledger.
    #[error(transparent)]
    Republish(#[from] RepublishError),
    /// A dead letter or ledger entry was not acknowledged.
    #[error("kafka did not acknowledge a record for {topic}")]
    Delivery {
        /// The topic.
        topic: String,
        /// librdkafka's error.
        #[source]
        source: rdkafka::error::KafkaError,
    },
}

/// One dead letter redriven (or that would be).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Redriven {
    /// The dead letter, `<topic>/<partition>/<offset>`.
    pub from: String,
    /// The source collection, `database.collection`.
    pub source: String,
    /// The document `_id` (relaxed extended JSON).
    pub document_id: String,
    /// The record keys re-emitted (empty: every event of the document).
    pub keys: Vec<String>,
    /// The new reason when the document fails again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed_again: Option<String>,
}

/// What a redrive did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RedriveReport {
    /// Nothing was sent.
    pub dry_run: bool,
    /// The dead letters redriven.
    pub redriven: Vec<Redriven>,
    /// Events Kafka acknowledged, as `topic key`.
    pub events: Vec<String>,
    /// Selected but redriven before (without `--again`).
    pub skipped_redriven_before: Vec<String>,
    /// Selected but not a connector's dead letter of a watched collection.
    pub skipped_not_redrivable: Vec<String>,
}

impl RedriveReport {
    /// For people.
    pub fn to_text(&self) -> String {
        let mut out = format!(
            "{} {} dead letter(s)\n",
            if self.dry_run {
                "would redrive"
            } else {
                "redrove"
            },
            self.redriven.len()
        );
        for r in &self.redriven {
            out.push_str(&format!(
                "  {} -> {} _id {}{}{}\n",
                r.from,
                r.source,
                r.document_id,
                if r.keys.is_empty() {
                    String::new()
                } else {
                    format!(" keys {}", r.keys.join(","))
                },
                r.failed_again
                    .as_ref()
                    .map(|reason| format!("; failed again: {reason}"))
                    .unwrap_or_default()
            ));
        }
        if !self.dry_run {
            out.push_str(&format!("events published: {}\n", self.events.len()));
        }
        for (list, what) in [
            (
                &self.skipped_redriven_before,
                "redriven before (use --again to send again)",
            ),
            (
                &self.skipped_not_redrivable,
                "not connector dead letters of a watched collection",
            ),
        ] {
            if !list.is_empty() {
                out.push_str(&format!(
                    "skipped {} {what}: {}\n",
                    list.len(),
                    list.join(", ")
                ));
            }
        }
        out
    }
}

/// The document a dead letter is about, and which of its events to re-emit.
fn target(config: &ConnectorConfig, letter: &DeadLetter) -> Option<RepublishTarget> {
    if letter.writer() != Writer::Connector {
        return None;
    }
    let source_header = letter.header(header::SOURCE)?;
    let (database, collection) = source_header.strip_prefix("/mongodb/")?.split_once('/')?;
    let source = WatchedSource::ALL.into_iter().find(|source| {
        let namespace = source.namespace(&config.sources);
        namespace.database == database && namespace.collection == collection
    })?;
    let id_text = letter.header(header::DOCUMENT_ID)?;
    let id = Bson::try_from(serde_json::from_str::<serde_json::Value>(&id_text).ok()?).ok()?;
    let scope = match letter.key_text() {
        // Keyed by the document (`_id` as relaxed extended JSON): a defect of the whole document.
        Some(key) if key != id_text && key != id_key(&id) => match source {
            WatchedSource::Orders => Scope::ApprovalOf(key),
            _ => Scope::Keys(BTreeSet::from([key])),
        },
        _ => Scope::Document,
    };
    Some(RepublishTarget { source, id, scope })
}

/// A document id as an event key: ObjectId hex, or the string.
fn id_key(id: &Bson) -> String {
    match id {
        Bson::ObjectId(oid) => oid.to_hex(),
        Bson::String(text) => text.clone(),
        other => other.clone().into_relaxed_extjson().to_string(),
    }
}

/// Redrives the dead letters `options` selects.
pub async fn redrive(
    config: &ConnectorConfig,
    options: &RedriveOptions,
) -> Result<RedriveReport, RedriveError> {
    let client_id = format!("{}.dead-letters", crate::APP_NAME);
    let selected = dead_letters::choose_for_redrive(&config.kafka, &client_id, options, |letter| {
        target(config, letter).ok_or(NotSent::NotRedrivable)
    })
    .await?;
    let mut report = RedriveReport {
        dry_run: options.dry_run,
        skipped_redriven_before: selected.redriven_before,
        skipped_not_redrivable: selected.not_redrivable,
        ..RedriveReport::default()
    };
    let chosen = selected.chosen;
    // One re-emit per document and scope.
    let mut targets: Vec<RepublishTarget> = Vec::new();
    for (_, target) in &chosen {
        if !targets.contains(target) {
            targets.push(target.clone());
        }
    }
    report.redriven = chosen
        .iter()
        .map(|(letter, target)| Redriven {
            from: letter.coordinates(),
            source: target.source.namespace(&config.sources).to_string(),
            document_id: letter.header(header::DOCUMENT_ID).unwrap_or_default(),
            keys: match &target.scope {
                Scope::Document => Vec::new(),
                Scope::Keys(keys) => keys.iter().cloned().collect(),
                Scope::ApprovalOf(guid) => vec![guid.clone()],
            },
            failed_again: None,
        })
        .collect();
    if options.dry_run || chosen.is_empty() {
        return Ok(report);
    }

    let mut republisher = Republisher::connect(config).await?;
    let republished = republisher.republish(&targets).await?;
    report.events = republished
        .events
        .iter()
        .map(|(topic, key)| format!("{topic} {key}"))
        .collect();
    // The defects each document still has: (namespace, id) -> (field, reason).
    let mut defects: BTreeMap<(String, String), Vec<(String, String)>> = BTreeMap::new();
    for (namespace, id, reason, field) in &republished.defects {
        let id = serde_json::from_str::<serde_json::Value>(id)
            .ok()
            .and_then(|value| Bson::try_from(value).ok())
            .map_or_else(|| id.clone(), |id| id.into_relaxed_extjson().to_string());
        defects
            .entry((namespace.clone(), id))
            .or_default()
            .push((field.clone(), reason.clone()));
    }

    let (ledger_topic, producer) = dead_letters::redrive_producer(
        &config.kafka,
        &client_id,
        &config.new_topics,
        &options.topic,
    )
    .await?;
    let position = republished.position.as_u64().to_string();
    for ((letter, target), redriven) in chosen.iter().zip(report.redriven.iter_mut()) {
        let key = (
            target.source.namespace(&config.sources).to_string(),
            target.id.clone().into_relaxed_extjson().to_string(),
        );
        let field = letter.header(header::FIELD).unwrap_or_default();
        let again = defects
            .get(&key)
            .and_then(|found| found.iter().find(|(f, _)| *f == field));
        if let Some((new_field, reason)) = again {
            redriven.failed_again = Some(reason.clone());
            let headers = failed_again_headers(letter, reason, new_field, &position);
            send(
                &producer,
                &options.topic,
                letter.key.as_deref(),
                letter.value.as_deref(),
                &headers,
            )
            .await?;
        }
        let entry = serde_json::json!({ "at_ms": dead_letters::now_ms(), "position": position })
            .to_string();
        send(
            &producer,
            &ledger_topic,
            Some(letter.coordinates().as_bytes()),
            Some(entry.as_bytes()),
            &[],
        )
        .await?;
    }
    Ok(report)
}

/// The headers of the dead letter of a redrive that failed again: the old one's, with this
/// attempt's reason, field and position, and the history.
pub fn failed_again_headers(
    letter: &DeadLetter,
    reason: &str,
    field: &str,
    position: &str,
) -> Vec<(String, Vec<u8>)> {
    let mut history = letter.history().unwrap_or_default();
    history.push(letter.as_attempt());
    let replaced = [
        header::REASON,
        header::FIELD,
        header::CLUSTER_TIME,
        header::OPERATION,
        header::HISTORY,
        header::REDRIVEN_FROM,
    ];
    let mut headers: Vec<(String, Vec<u8>)> = letter
        .headers
        .iter()
        .filter(|(key, _)| !replaced.contains(&key.as_str()))
        .filter_map(|(key, value)| Some((key.clone(), value.clone()?)))
        .collect();
    headers.push((header::REASON.to_owned(), reason.as_bytes().to_vec()));
    if !field.is_empty() {
        headers.push((header::FIELD.to_owned(), field.as_bytes().to_vec()));
    }
    headers.push((header::OPERATION.to_owned(), b"redrive".to_vec()));
    headers.push((
        header::CLUSTER_TIME.to_owned(),
        position.as_bytes().to_vec(),
    ));
    headers.push((
        header::HISTORY.to_owned(),
        schema::history_value(&history).into_bytes(),
    ));
    headers.push((
        header::REDRIVEN_FROM.to_owned(),
        letter.coordinates().into_bytes(),
    ));
    headers
}

async fn send(
    producer: &FutureProducer<TracingContext>,
    topic: &str,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: &[(String, Vec<u8>)],
) -> Result<(), RedriveError> {
    let mut owned = OwnedHeaders::new_with_capacity(headers.len());
    for (name, value) in headers {
        owned = owned.insert(Header {
            key: name,
            value: Some(value),
        });
    }
    let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).headers(owned);
    if let Some(key) = key {
        record = record.key(key);
    }
    if let Some(value) = value {
        record = record.payload(value);
    }
    producer
        .send(record, Duration::from_secs(60))
        .await
        .map(drop)
        .map_err(|(source, _)| RedriveError::Delivery {
            topic: topic.to_owned(),
            source,
        })
}

/// Runs `cdc-connector dead-letters <command>`; the text or JSON goes to stdout.
pub async fn command(
    config: &ConnectorConfig,
    command: dead_letters::DeadLettersCommand,
) -> Result<String, CommandError> {
    use dead_letters::{DeadLettersCommand, Format};
    let client_id = format!("{}.dead-letters", crate::APP_NAME);
    match command {
        DeadLettersCommand::List(args) => {
            let topics = if args.topics.is_empty() {
                vec![config.stream.dead_letter_topic.clone()]
            } else {
                args.topics.clone()
            };
            let mut redriven = HashSet::new();
            for topic in &topics {
                redriven.extend(dead_letters::redriven(&config.kafka, &client_id, topic).await?);
            }
            let listing =
                dead_letters::list(&config.kafka, &client_id, &topics, &args, &redriven).await?;
            Ok(match args.format {
                Format::Text => listing.to_text(),
                Format::Json => format!("{}\n", serde_json::to_string_pretty(&listing)?),
            })
        }
        DeadLettersCommand::Redrive(args) => {
            if args.select.is_empty() {
                return Err(CommandError::NoSelection);
            }
            let options = RedriveOptions::from_args(&args, &config.stream.dead_letter_topic);
            let report = redrive(config, &options).await?;
            Ok(match args.format {
                Format::Text => report.to_text(),
                Format::Json => format!("{}\n", serde_json::to_string_pretty(&report)?),
            })
        }
    }
}

/// Why `cdc-connector dead-letters` failed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// Reading failed.
    #[error(transparent)]
    Read(#[from] dead_letters::ReadError),
    /// Redriving failed.
    #[error(transparent)]
    Redrive(#[from] RedriveError),
    /// JSON output failed.
    #[error("writing json")]
    Json(#[from] serde_json::Error),
    /// `redrive` without a selection.
    #[error(
        "choose the dead letters to redrive (--kind, --reason, --group, --key, --partition, \
         --from-offset, --to-offset or --since)"
    )]
    NoSelection,
}
