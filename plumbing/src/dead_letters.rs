//! Dead letters for operators: reading dead-letter topics, grouping them by reason, selecting
//! some. Shared by `projectors dead-letters` and `cdc-connector dead-letters`, so both binaries
//! read every dead-letter topic the same way (the header names are one definition,
//! [`storefront_schemas::dead_letter::header`]).
//!
//! # Guarantees
//! - **Bounded.** [`read`] notes each partition's high watermark when it starts and stops there:
//!   it never waits for records written after it started. Partitions are read one topic at a
//!   time, each record handed to the caller and dropped (grouping keeps counts and a few samples).
//! - **Nothing sensitive printed.** Dead letters are redacted by the binaries that write them;
//!   listings show keys, positions and reasons, never record bodies.
//! - **Groups are stable.** A reason is grouped by its template ([`reason_template`]): the same
//!   kind of failure with different values (guids, offsets, field indexes, quoted values) lands
//!   in one group, labelled by who wrote it (projector and `dlq_kind`, or the connector's source
//!   collection and field path with list indexes as `*`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use rdkafka::client::{Client, ClientContext};
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Headers};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde::Serialize;
use storefront_schemas::dead_letter::{self as schema, Attempt, header};

use crate::kafka::{self, TracingContext};
use crate::kafka_io;
use crate::settings::KafkaSettings;

/// How long [`read`] waits for the next record it knows exists before giving up.
const RECORD_WAIT: Duration = Duration::from_secs(30);
/// How often [`read`] reports its progress on a long read.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// Why dead letters could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The consumer could not be built.
    #[error("kafka client config rejected")]
    Config(#[source] KafkaError),
    /// A metadata or watermark request failed.
    #[error("reading the partitions of {topic}")]
    Metadata {
        /// The topic.
        topic: String,
        /// What failed.
        #[source]
        source: KafkaError,
    },
    /// The topic does not exist.
    #[error("topic {0} does not exist")]
    NoSuchTopic(String),
    /// Consuming failed.
    #[error("reading {topic}")]
    Consume {
        /// The topic.
        topic: String,
        /// What failed.
        #[source]
        source: KafkaError,
    },
    /// Records below the high watermark did not arrive.
    #[error(
        "reading {topic}: no record for {wait:?} with {left} partition(s) short of the end noted at start"
    )]
    Stalled {
        /// The topic.
        topic: String,
        /// How long it waited.
        wait: Duration,
        /// Partitions not read to their end.
        left: usize,
    },
}

/// One dead-letter record, as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The dead-letter topic.
    pub topic: String,
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// The record's timestamp (ms since the Unix epoch), if it has one.
    pub timestamp_ms: Option<i64>,
    /// The record's key.
    pub key: Option<Vec<u8>>,
    /// The record's value (never printed by the listing).
    pub value: Option<Vec<u8>>,
    /// Every header, in record order.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

/// Who wrote a dead letter, as its headers say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Writer {
    /// A projector (headers `dlq_projector`, `dlq_source_topic`).
    Projectors,
    /// The connector (header `dlq_source`).
    Connector,
    /// Neither: not one of ours.
    Unknown,
}

impl DeadLetter {
    /// From a consumed record.
    pub fn from_message(message: &BorrowedMessage<'_>) -> Self {
        let headers = message
            .headers()
            .map(|headers| {
                headers
                    .iter()
                    .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
                    .collect()
            })
            .unwrap_or_default();
        Self {
            topic: message.topic().to_owned(),
            partition: message.partition(),
            offset: message.offset(),
            timestamp_ms: message.timestamp().to_millis(),
            key: message.key().map(<[u8]>::to_vec),
            value: message.payload().map(<[u8]>::to_vec),
            headers,
        }
    }

    /// The last header named `name`, as text (lossy).
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .rev()
            .find(|(key, _)| key == name)
            .and_then(|(_, value)| value.as_deref())
            .map(|value| String::from_utf8_lossy(value).into_owned())
    }

    /// `dlq_reason`, or a note that it has none.
    pub fn reason(&self) -> String {
        self.header(header::REASON)
            .unwrap_or_else(|| "(no dlq_reason header)".to_owned())
    }

    /// Who wrote it.
    pub fn writer(&self) -> Writer {
        if self.header(header::SOURCE_TOPIC).is_some() || self.header(header::PROJECTOR).is_some() {
            Writer::Projectors
        } else if self.header(header::SOURCE).is_some() {
            Writer::Connector
        } else {
            Writer::Unknown
        }
    }

    /// The record's key as text (lossy), if it has one.
    pub fn key_text(&self) -> Option<String> {
        self.key
            .as_deref()
            .map(|key| String::from_utf8_lossy(key).into_owned())
    }

    /// `<topic>/<partition>/<offset>`.
    pub fn coordinates(&self) -> String {
        schema::coordinates(&self.topic, self.partition, self.offset)
    }

    /// The earlier failed attempts (`dlq_history`), oldest first; unreadable history is an error
    /// text.
    pub fn history(&self) -> Result<Vec<Attempt>, String> {
        let Some((_, Some(value))) = self
            .headers
            .iter()
            .rev()
            .find(|(k, _)| k == header::HISTORY)
        else {
            return Ok(Vec::new());
        };
        schema::parse_history(value).map_err(|error| format!("unreadable dlq_history: {error}"))
    }

    /// How many times the record failed: its earlier attempts and this one.
    pub fn attempts(&self) -> usize {
        self.history().map_or(1, |history| history.len() + 1)
    }

    /// This dead letter as an entry of the history of a record redriven from it.
    pub fn as_attempt(&self) -> Attempt {
        Attempt {
            reason: self.reason(),
            kind: self.header(header::KIND),
            projector: self.header(header::PROJECTOR),
            at_ms: self.timestamp_ms,
            topic: self.topic.clone(),
            partition: self.partition,
            offset: self.offset,
        }
    }

    /// Where the failed record came from: the source record (projectors) or the source change
    /// (connector).
    pub fn source_position(&self) -> String {
        match self.writer() {
            Writer::Projectors => format!(
                "{}/{}/{}",
                self.header(header::SOURCE_TOPIC).unwrap_or_default(),
                self.header(header::SOURCE_PARTITION).unwrap_or_default(),
                self.header(header::SOURCE_OFFSET).unwrap_or_default()
            ),
            Writer::Connector => {
                let mut text = format!(
                    "{} {} _id {} clustertime {}",
                    self.header(header::SOURCE).unwrap_or_default(),
                    self.header(header::OPERATION).unwrap_or_default(),
                    self.header(header::DOCUMENT_ID).unwrap_or_default(),
                    self.header(header::CLUSTER_TIME).unwrap_or_default()
                );
                if let Some(entry) = self.header(header::ENTRY) {
                    text.push_str(&format!(" entry {entry}"));
                }
                text
            }
            Writer::Unknown => String::new(),
        }
    }

    /// The group this dead letter belongs to, grouped `by`.
    pub fn group_key(&self, by: GroupBy) -> String {
        match (self.writer(), by) {
            (Writer::Projectors, GroupBy::Kind) => format!(
                "projectors {} {}",
                self.header(header::PROJECTOR).unwrap_or_default(),
                self.header(header::KIND).unwrap_or_default()
            ),
            (Writer::Projectors, GroupBy::Reason) => format!(
                "projectors {} {}: {}",
                self.header(header::PROJECTOR).unwrap_or_default(),
                self.header(header::KIND).unwrap_or_default(),
                reason_template(&self.reason())
            ),
            (Writer::Connector, by) => {
                let field = self
                    .header(header::FIELD)
                    .map(|field| path_template(&field))
                    .unwrap_or_else(|| "(document)".to_owned());
                let source = self.header(header::SOURCE).unwrap_or_default();
                match by {
                    GroupBy::Kind => format!("connector {source} {field}"),
                    GroupBy::Reason => format!(
                        "connector {source} {field}: {}",
                        reason_template(&self.reason())
                    ),
                }
            }
            (Writer::Unknown, _) => format!("unknown: {}", reason_template(&self.reason())),
        }
    }
}

/// How dead letters are grouped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum GroupBy {
    /// By writer, its class (`dlq_kind`, or the connector's field) and the reason's template.
    #[default]
    Reason,
    /// By writer and class only.
    Kind,
}

/// `reason` with its values left out, so one kind of failure groups together: quoted text and
/// braced documents become `…`, numbers `N`, list indexes in dotted paths `*`, and any other word
/// holding a digit (guids, ids, offsets) `…`.
pub fn reason_template(reason: &str) -> String {
    // First the quoted and braced spans, which may hold spaces.
    let mut flat = String::with_capacity(reason.len());
    let mut chars = reason.chars().peekable();
    while let Some(c) = chars.next() {
        let close = match c {
            '"' => Some('"'),
            '`' => Some('`'),
            '{' => Some('}'),
            '\'' if flat.is_empty() || flat.ends_with([' ', '(', ':', '=']) => Some('\''),
            _ => None,
        };
        let Some(close) = close else {
            flat.push(c);
            continue;
        };
        let mut depth = 1;
        let mut closed = false;
        let mut inner = String::new();
        for d in chars.by_ref() {
            if d == close && (close != '}' || depth == 1) {
                closed = true;
                break;
            }
            if close == '}' && d == '{' {
                depth += 1;
            } else if close == '}' && d == '}' {
                depth -= 1;
            }
            inner.push(d);
        }
        if closed {
            flat.push(c);
            flat.push('…');
            flat.push(close);
        } else {
            flat.push(c);
            flat.push_str(&inner);
        }
    }
    flat.split(' ')
        .map(|word| {
            let core = word.trim_end_matches([',', ';', ':', ')', '.']);
            let tail = &word[core.len()..];
            let core_start = core.trim_start_matches('(');
            let head = &core[..core.len() - core_start.len()];
            let core = core_start;
            // Words without digits, and type names such as `u64` or `Decimal128` (letters, then
            // digits), are part of the template.
            let letters = core.trim_start_matches(|c: char| c.is_ascii_alphabetic());
            if !core.chars().any(|c| c.is_ascii_digit())
                || (letters.len() < core.len() && letters.chars().all(|c| c.is_ascii_digit()))
            {
                return word.to_owned();
            }
            let replaced = if core.chars().all(|c| c.is_ascii_digit() || c == '-') {
                "N".to_owned()
            } else if core.contains('.')
                && core.split('.').all(|part| {
                    !part.is_empty()
                        && (part.chars().all(|c| c.is_ascii_digit())
                            || !part.chars().any(|c| c.is_ascii_digit()))
                })
            {
                path_template(core)
            } else {
                "…".to_owned()
            };
            format!("{head}{replaced}{tail}")
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A dotted path with its list indexes as `*` (`orders.2.orderItems.0` -> `orders.*.orderItems.*`).
pub fn path_template(path: &str) -> String {
    path.split('.')
        .map(|part| {
            if !part.is_empty() && part.chars().all(|c| c.is_ascii_digit()) {
                "*"
            } else {
                part
            }
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// Which dead letters a command works on. Every given condition must hold.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Selection {
    /// Only this `dlq_kind` (projectors: headers, not_json, schema, contract, rejected); repeat
    /// for several.
    #[arg(long = "kind", value_name = "KIND")]
    pub kinds: Vec<String>,
    /// Only dead letters whose reason, or its group, contains this text.
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
    /// Only this group, exactly as the listing names it (grouped by reason or kind).
    #[arg(long, value_name = "GROUP")]
    pub group: Option<String>,
    /// Only records with this key; repeat for several.
    #[arg(long = "key", value_name = "KEY")]
    pub keys: Vec<String>,
    /// Only dead letters of records from this source topic (projectors).
    #[arg(long, value_name = "TOPIC")]
    pub source_topic: Option<String>,
    /// Only this partition of the dead-letter topic.
    #[arg(long, value_name = "P")]
    pub partition: Option<i32>,
    /// Only dead letters at or after this offset (of each partition read).
    #[arg(long, value_name = "OFFSET")]
    pub from_offset: Option<i64>,
    /// Only dead letters at or before this offset (of each partition read).
    #[arg(long, value_name = "OFFSET")]
    pub to_offset: Option<i64>,
    /// Only dead letters written at or after this time (RFC 3339, such as 2026-11-30T21:00:00Z).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub since: Option<i64>,
}

fn parse_time(text: &str) -> Result<i64, String> {
    let time = humantime::parse_rfc3339_weak(text).map_err(|error| error.to_string())?;
    let since = time
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| "before 1970".to_owned())?;
    Ok(since.as_millis() as i64)
}

impl Selection {
    /// Whether `letter` is selected (grouped `by` for `--group`).
    pub fn matches(&self, letter: &DeadLetter, by: GroupBy) -> bool {
        let kind_ok = self.kinds.is_empty()
            || letter
                .header(header::KIND)
                .is_some_and(|kind| self.kinds.contains(&kind));
        let reason_ok = self.reason.as_ref().is_none_or(|text| {
            letter.reason().contains(text.as_str()) || letter.group_key(by).contains(text.as_str())
        });
        let group_ok = self
            .group
            .as_ref()
            .is_none_or(|group| letter.group_key(by) == *group);
        let key_ok = self.keys.is_empty()
            || letter
                .key_text()
                .is_some_and(|key| self.keys.contains(&key));
        let source_ok = self
            .source_topic
            .as_ref()
            .is_none_or(|topic| letter.header(header::SOURCE_TOPIC).as_ref() == Some(topic));
        let since_ok = self
            .since
            .is_none_or(|since| letter.timestamp_ms.is_some_and(|at| at >= since));
        kind_ok
            && reason_ok
            && group_ok
            && key_ok
            && source_ok
            && since_ok
            && self.range().contains(letter.partition, letter.offset)
    }

    /// The part of the topics to read at all.
    pub fn range(&self) -> ReadRange {
        ReadRange {
            partition: self.partition,
            from_offset: self.from_offset,
            to_offset: self.to_offset,
        }
    }
}

/// What part of a topic [`read`] reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadRange {
    /// Only this partition.
    pub partition: Option<i32>,
    /// From this offset on.
    pub from_offset: Option<i64>,
    /// Up to this offset, inclusive.
    pub to_offset: Option<i64>,
}

impl ReadRange {
    /// Whether the record at `partition`/`offset` lies in the range.
    pub fn contains(&self, partition: i32, offset: i64) -> bool {
        self.partition.is_none_or(|p| p == partition)
            && self.from_offset.is_none_or(|from| offset >= from)
            && self.to_offset.is_none_or(|to| offset <= to)
    }
}

/// What [`read`] read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReadSummary {
    /// Records read, per topic.
    pub records: BTreeMap<String, u64>,
}

/// Reads every record of `topics` in `range` up to the high watermarks noted when each topic's
/// read starts, handing each to `visit` in partition order. `missing_ok`: a topic that does not
/// exist reads as empty instead of failing. Progress goes to stderr every few seconds on a long
/// read.
pub async fn read(
    settings: &KafkaSettings,
    client_id: &str,
    topics: &[String],
    range: ReadRange,
    missing_ok: bool,
    mut visit: impl FnMut(DeadLetter),
) -> Result<ReadSummary, ReadError> {
    let mut summary = ReadSummary::default();
    for topic in topics {
        let count = read_topic(settings, client_id, topic, range, missing_ok, &mut visit).await?;
        summary.records.insert(topic.clone(), count);
    }
    Ok(summary)
}

/// [`TracingContext`], except that reaching the end of a partition, which the reader asks to be
/// told about, is not logged as a client error.
#[derive(Debug, Clone, Copy, Default)]
struct ReaderContext;

impl ClientContext for ReaderContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        TracingContext.log(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() != Some(RDKafkaErrorCode::PartitionEOF) {
            TracingContext.error(error, reason);
        }
    }
}

impl ConsumerContext for ReaderContext {}

fn client_of(consumer: &StreamConsumer<ReaderContext>) -> &Client<ReaderContext> {
    consumer.client()
}

async fn read_topic(
    settings: &KafkaSettings,
    client_id: &str,
    topic: &str,
    range: ReadRange,
    missing_ok: bool,
    visit: &mut impl FnMut(DeadLetter),
) -> Result<u64, ReadError> {
    // One consumer per topic (end-of-partition notices name only the partition), assigned its
    // partitions: it never joins its group (librdkafka wants one named) and commits nothing.
    let consumer: Arc<StreamConsumer<ReaderContext>> = Arc::new(
        kafka::client_config(
            settings,
            client_id,
            &[("isolation.level", "read_committed")],
            &[
                ("group.id", &format!("{client_id}.reader")),
                ("enable.auto.commit", "false"),
                ("enable.partition.eof", "true"),
            ],
        )
        .create_with_context(ReaderContext)
        .map_err(ReadError::Config)?,
    );
    let timeout = Duration::from_secs(10);
    let metadata_error = |source| ReadError::Metadata {
        topic: topic.to_owned(),
        source,
    };
    let metadata = kafka_io::fetch_metadata(&consumer, client_of, Some(topic), timeout)
        .await
        .map_err(metadata_error)?;
    let mut ends: HashMap<i32, i64> = HashMap::new();
    let mut assignment = TopicPartitionList::new();
    let mut total: u64 = 0;
    for entry in metadata.topics() {
        match entry.error().map(RDKafkaErrorCode::from) {
            None => {}
            Some(RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic) => {
                return if missing_ok {
                    Ok(0)
                } else {
                    Err(ReadError::NoSuchTopic(topic.to_owned()))
                };
            }
            Some(code) => return Err(metadata_error(KafkaError::MetadataFetch(code))),
        }
        for partition in entry.partitions() {
            let id = partition.id();
            if range.partition.is_some_and(|p| p != id) {
                continue;
            }
            let (low, high) = kafka_io::fetch_watermarks(&consumer, client_of, topic, id, timeout)
                .await
                .map_err(metadata_error)?;
            let start = range.from_offset.map_or(low, |from| from.max(low));
            let end = range.to_offset.map_or(high, |to| (to + 1).min(high));
            if start >= end {
                continue;
            }
            total += (end - start) as u64;
            ends.insert(id, end);
            assignment
                .add_partition_offset(topic, id, Offset::Offset(start))
                .map_err(metadata_error)?;
        }
    }
    if ends.is_empty() {
        return Ok(0);
    }
    consumer
        .assign(&assignment)
        .map_err(|source| ReadError::Consume {
            topic: topic.to_owned(),
            source,
        })?;
    let started = Instant::now();
    let mut reported = Instant::now();
    let mut read: u64 = 0;
    let mut stream = consumer.stream();
    while !ends.is_empty() {
        let next = tokio::time::timeout(RECORD_WAIT, stream.next()).await;
        let Ok(Some(next)) = next else {
            return Err(ReadError::Stalled {
                topic: topic.to_owned(),
                wait: RECORD_WAIT,
                left: ends.len(),
            });
        };
        match next {
            Ok(message) => {
                let partition = message.partition();
                let Some(&end) = ends.get(&partition) else {
                    continue;
                };
                if message.offset() < end {
                    read += 1;
                    visit(DeadLetter::from_message(&message));
                }
                if message.offset() + 1 >= end {
                    ends.remove(&partition);
                }
            }
            // Read to the partition's current end: nothing below the noted end is left
            // (offsets can skip, e.g. over a transaction marker).
            Err(KafkaError::PartitionEOF(partition)) => {
                ends.remove(&partition);
            }
            Err(source) => {
                return Err(ReadError::Consume {
                    topic: topic.to_owned(),
                    source,
                });
            }
        }
        if reported.elapsed() >= PROGRESS_EVERY {
            reported = Instant::now();
            let rate = read as f64 / started.elapsed().as_secs_f64().max(0.001);
            eprintln!(
                "{topic}: read {read} of {total} dead letters ({rate:.0}/s, {:.0} s left)",
                (total.saturating_sub(read)) as f64 / rate.max(1.0)
            );
        }
    }
    if started.elapsed() >= PROGRESS_EVERY {
        eprintln!("{topic}: read {read} of {total} dead letters");
    }
    Ok(read)
}

/// A sample dead letter of a group, as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Sample {
    /// Dead-letter topic.
    pub topic: String,
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// When it was written (ms since the Unix epoch).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at_ms: Option<i64>,
    /// The record's key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Where the failed record came from.
    pub source: String,
    /// The whole reason.
    pub reason: String,
    /// How many times the record failed (earlier attempts plus this one).
    pub attempts: usize,
    /// The earlier attempts' reasons, oldest first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<String>,
    /// Set when the record was redriven already (from the redrive ledger).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub redriven: bool,
}

impl Sample {
    /// The listing's view of `letter`.
    pub fn of(letter: &DeadLetter, redriven: bool) -> Self {
        let history = match letter.history() {
            Ok(history) => history.into_iter().map(|a| a.reason).collect(),
            Err(error) => vec![error],
        };
        Self {
            topic: letter.topic.clone(),
            partition: letter.partition,
            offset: letter.offset,
            at_ms: letter.timestamp_ms,
            key: letter.key_text(),
            source: letter.source_position(),
            reason: letter.reason(),
            attempts: letter.attempts(),
            history,
            redriven,
        }
    }
}

/// One group of dead letters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Group {
    /// The group, as `--group` takes it.
    pub group: String,
    /// Who wrote them.
    pub writer: Writer,
    /// How many dead letters.
    pub count: u64,
    /// How many of them are of records that failed more than once.
    pub failed_again: u64,
    /// How many of them were redriven already.
    pub redriven: u64,
    /// Oldest and newest timestamp.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_ms: Option<i64>,
    /// Newest timestamp.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_ms: Option<i64>,
    /// The first few.
    pub samples: Vec<Sample>,
}

/// Dead letters grouped, with counts and samples.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Listing {
    /// What was read, per topic.
    pub read: BTreeMap<String, u64>,
    /// How many were selected.
    pub selected: u64,
    /// The groups, largest first.
    pub groups: Vec<Group>,
}

/// Groups dead letters as they are read.
#[derive(Debug)]
pub struct Grouper {
    by: GroupBy,
    samples: usize,
    groups: BTreeMap<String, Group>,
    selected: u64,
}

impl Grouper {
    /// Grouping `by`, keeping `samples` per group.
    pub fn new(by: GroupBy, samples: usize) -> Self {
        Self {
            by,
            samples,
            groups: BTreeMap::new(),
            selected: 0,
        }
    }

    /// Adds `letter`; `redriven` when the ledger says it was sent back already.
    pub fn add(&mut self, letter: &DeadLetter, redriven: bool) {
        self.selected += 1;
        let key = letter.group_key(self.by);
        let group = self.groups.entry(key.clone()).or_insert_with(|| Group {
            group: key,
            writer: letter.writer(),
            count: 0,
            failed_again: 0,
            redriven: 0,
            first_ms: None,
            last_ms: None,
            samples: Vec::new(),
        });
        group.count += 1;
        if letter.attempts() > 1 {
            group.failed_again += 1;
        }
        if redriven {
            group.redriven += 1;
        }
        if let Some(at) = letter.timestamp_ms {
            group.first_ms = Some(group.first_ms.map_or(at, |first| first.min(at)));
            group.last_ms = Some(group.last_ms.map_or(at, |last| last.max(at)));
        }
        if group.samples.len() < self.samples {
            group.samples.push(Sample::of(letter, redriven));
        }
    }

    /// The groups, largest first (then by name).
    pub fn finish(self, read: &ReadSummary) -> Listing {
        let mut groups: Vec<Group> = self.groups.into_values().collect();
        groups.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.group.cmp(&b.group)));
        Listing {
            read: read.records.clone(),
            selected: self.selected,
            groups,
        }
    }
}

/// Output format of the operator commands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// For people.
    #[default]
    Text,
    /// One JSON document, for tools.
    Json,
}

impl Listing {
    /// The listing for people.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let read: Vec<String> = self
            .read
            .iter()
            .map(|(topic, count)| format!("{topic} {count}"))
            .collect();
        out.push_str(&format!(
            "dead letters read: {}; selected {} in {} group(s)\n",
            if read.is_empty() {
                "none".to_owned()
            } else {
                read.join(", ")
            },
            self.selected,
            self.groups.len()
        ));
        for group in &self.groups {
            out.push_str(&format!("\n{:>6}  {}\n", group.count, group.group));
            let mut notes = Vec::new();
            if group.failed_again > 0 {
                notes.push(format!("{} failed more than once", group.failed_again));
            }
            if group.redriven > 0 {
                notes.push(format!("{} redriven already", group.redriven));
            }
            if let (Some(first), Some(last)) = (group.first_ms, group.last_ms) {
                notes.push(format!("from {} to {}", time_text(first), time_text(last)));
            }
            if !notes.is_empty() {
                out.push_str(&format!("        {}\n", notes.join("; ")));
            }
            for sample in &group.samples {
                out.push_str(&format!(
                    "        {}/{}/{} key {} from {}{}\n          {}\n",
                    sample.topic,
                    sample.partition,
                    sample.offset,
                    sample.key.as_deref().unwrap_or("(none)"),
                    sample.source,
                    if sample.attempts > 1 {
                        format!(", attempt {}", sample.attempts)
                    } else {
                        String::new()
                    },
                    sample.reason
                ));
                for earlier in &sample.history {
                    out.push_str(&format!("          earlier: {earlier}\n"));
                }
            }
        }
        out
    }
}

/// A timestamp as RFC 3339 (seconds).
pub fn time_text(ms: i64) -> String {
    let time = std::time::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(time).to_string()
}

/// Arguments of `<binary> dead-letters list`.
#[derive(Debug, Clone, clap::Args)]
pub struct ListArgs {
    /// The dead-letter topics to read (default: this binary's `dead_letter_topic`); repeat to
    /// read the other binary's too.
    #[arg(long = "topic", value_name = "TOPIC")]
    pub topics: Vec<String>,
    /// How to group.
    #[arg(long, value_enum, default_value_t)]
    pub by: GroupBy,
    /// Sample dead letters shown per group.
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub samples: usize,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
    /// Which dead letters.
    #[command(flatten)]
    pub select: Selection,
}

/// Arguments of `<binary> dead-letters redrive`.
#[derive(Debug, Clone, clap::Args)]
pub struct RedriveArgs {
    /// The dead-letter topic to redrive from (default: this binary's `dead_letter_topic`).
    #[arg(long, value_name = "TOPIC")]
    pub topic: Option<String>,
    /// Show what would be sent, send nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Send dead letters again that were redriven before.
    #[arg(long)]
    pub again: bool,
    /// How `--group` names groups.
    #[arg(long, value_enum, default_value_t)]
    pub by: GroupBy,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
    /// Which dead letters (at least one condition is required).
    #[command(flatten)]
    pub select: Selection,
}

/// What to redrive: which dead letters of which topic, and how.
#[derive(Debug, Clone)]
pub struct RedriveOptions {
    /// The dead-letter topic.
    pub topic: String,
    /// Which dead letters.
    pub select: Selection,
    /// How `select.group` names groups.
    pub by: GroupBy,
    /// Send nothing, report what would be sent.
    pub dry_run: bool,
    /// Send dead letters the ledger records as redriven too.
    pub again: bool,
}

impl RedriveOptions {
    /// The options `args` give, reading `default_topic` (the binary's own dead-letter topic)
    /// unless `--topic` names another.
    pub fn from_args(args: &RedriveArgs, default_topic: &str) -> Self {
        Self {
            topic: args
                .topic
                .clone()
                .unwrap_or_else(|| default_topic.to_owned()),
            select: args.select.clone(),
            by: args.by,
            dry_run: args.dry_run,
            again: args.again,
        }
    }
}

/// Why a selected dead letter cannot be sent back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotSent {
    /// It does not say where it would go (not this binary's dead letter, or headers missing).
    NotRedrivable,
    /// Its value was left out for size (`dlq_value_omitted`): there is nothing to send.
    ValueOmitted,
}

/// The dead letters a redrive selected, each with what the binary made of it, and the
/// coordinates of those it leaves out, by reason.
#[derive(Debug)]
pub struct Chosen<T> {
    /// To be sent.
    pub chosen: Vec<(DeadLetter, T)>,
    /// [`NotSent::NotRedrivable`].
    pub not_redrivable: Vec<String>,
    /// [`NotSent::ValueOmitted`].
    pub value_omitted: Vec<String>,
    /// Recorded in the redrive ledger, and `again` not given.
    pub redriven_before: Vec<String>,
}

/// Reads the dead letters `options` selects from `options.topic` and sorts them: `classify`
/// turns each into what the binary sends (or says why it cannot), then those the redrive ledger
/// records as sent before are left out unless `options.again`.
pub async fn choose_for_redrive<T>(
    settings: &KafkaSettings,
    client_id: &str,
    options: &RedriveOptions,
    mut classify: impl FnMut(&DeadLetter) -> Result<T, NotSent>,
) -> Result<Chosen<T>, ReadError> {
    let ledger = if options.again {
        std::collections::HashSet::new()
    } else {
        redriven(settings, client_id, &options.topic).await?
    };
    let mut chosen = Chosen {
        chosen: Vec::new(),
        not_redrivable: Vec::new(),
        value_omitted: Vec::new(),
        redriven_before: Vec::new(),
    };
    read(
        settings,
        client_id,
        std::slice::from_ref(&options.topic),
        options.select.range(),
        false,
        |letter| {
            if !options.select.matches(&letter, options.by) {
                return;
            }
            let coordinates = letter.coordinates();
            match classify(&letter) {
                Err(NotSent::NotRedrivable) => chosen.not_redrivable.push(coordinates),
                Err(NotSent::ValueOmitted) => chosen.value_omitted.push(coordinates),
                Ok(_) if ledger.contains(&coordinates) => chosen.redriven_before.push(coordinates),
                Ok(what) => chosen.chosen.push((letter, what)),
            }
        },
    )
    .await?;
    Ok(chosen)
}

/// `<binary> dead-letters <command>`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum DeadLettersCommand {
    /// List dead letters grouped by reason, with counts and samples (never bodies).
    List(ListArgs),
    /// Send chosen dead letters back for processing after the cause is fixed.
    Redrive(RedriveArgs),
}

impl Selection {
    /// Whether no condition is given (everything selected).
    pub fn is_empty(&self) -> bool {
        self.kinds.is_empty()
            && self.reason.is_none()
            && self.group.is_none()
            && self.keys.is_empty()
            && self.source_topic.is_none()
            && self.partition.is_none()
            && self.from_offset.is_none()
            && self.to_offset.is_none()
            && self.since.is_none()
    }
}

/// Lists `topics` as `args` asks. `redriven` says which dead letters the redrive ledger records.
pub async fn list(
    settings: &KafkaSettings,
    client_id: &str,
    topics: &[String],
    args: &ListArgs,
    redriven: &std::collections::HashSet<String>,
) -> Result<Listing, ReadError> {
    let mut grouper = Grouper::new(args.by, args.samples);
    let summary = read(
        settings,
        client_id,
        topics,
        args.select.range(),
        false,
        |letter| {
            if args.select.matches(&letter, args.by) {
                let done = redriven.contains(&letter.coordinates());
                grouper.add(&letter, done);
            }
        },
    )
    .await?;
    Ok(grouper.finish(&summary))
}

/// The redrive ledger of dead-letter topic `topic`: a compacted topic keyed by the coordinates of
/// each dead letter sent back (see [`schema::coordinates`]).
pub fn ledger_topic(topic: &str) -> String {
    format!("{topic}.redriven")
}

/// What a redrive of dead-letter topic `topic` writes with: the name of its redrive ledger
/// (created when missing: compacted, one partition, so entries keep their order) and a producer
/// for the ledger and the records sent back.
pub async fn redrive_producer(
    settings: &KafkaSettings,
    client_id: &str,
    new_topics: &crate::topics::NewTopicSettings,
    topic: &str,
) -> Result<(String, rdkafka::producer::FutureProducer<TracingContext>), kafka::KafkaSetupError> {
    let ledger = ledger_topic(topic);
    let requirement = storefront_schemas::retention::TopicRequirement::compacted(&ledger, &[]);
    kafka::ensure_topics(
        settings,
        client_id,
        &[kafka::TopicSpec {
            partitions: 1,
            ..new_topics.spec(&requirement)
        }],
    )
    .await?;
    let producer = kafka::producer_config(settings, client_id, &[("message.timeout.ms", "60000")])
        .create_with_context(TracingContext)
        .map_err(kafka::KafkaSetupError::Config)?;
    Ok((ledger, producer))
}

/// Now, in milliseconds since the Unix epoch, as a ledger entry records it.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The coordinates of every dead letter of `topic` the ledger records as redriven.
pub async fn redriven(
    settings: &KafkaSettings,
    client_id: &str,
    topic: &str,
) -> Result<std::collections::HashSet<String>, ReadError> {
    let mut done = std::collections::HashSet::new();
    read(
        settings,
        client_id,
        &[ledger_topic(topic)],
        ReadRange::default(),
        true,
        |entry| {
            if let Some(key) = entry.key_text() {
                // A null value would retract the entry (not written today).
                if entry.value.is_some() {
                    done.insert(key);
                } else {
                    done.remove(&key);
                }
            }
        },
    )
    .await?;
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_of_one_kind_share_a_template() {
        let cases = [
            (
                "order 7f3c-12 is in no document of orders_ab12.customer.orders",
                "order … is in no document of …",
            ),
            (
                "invalid type: string \"abc def\", expected u64 at line 1 column 23",
                "invalid type: string \"…\", expected u64 at line N column N",
            ),
            (
                "address at addresses.2 left out: street is empty",
                "address at addresses.* left out: street is empty",
            ),
            (
                "MongoDB refused the write (code 28): Cannot create field 'orderItems' in element {order: \"x\"}",
                "MongoDB refused the write (code N): Cannot create field '…' in element {…}",
            ),
            ("record has no key", "record has no key"),
        ];
        for (reason, template) in cases {
            assert_eq!(reason_template(reason), template, "{reason}");
        }
        assert_eq!(
            path_template("orders.12.orderItems.0.price"),
            "orders.*.orderItems.*.price"
        );
    }

    fn letter(headers: &[(&str, &str)], offset: i64) -> DeadLetter {
        DeadLetter {
            topic: "dead".into(),
            partition: 1,
            offset,
            timestamp_ms: Some(1_000),
            key: Some(b"k".to_vec()),
            value: Some(b"{}".to_vec()),
            headers: headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), Some(v.as_bytes().to_vec())))
                .collect(),
        }
    }

    #[test]
    fn groups_count_by_writer_class_and_template() {
        let projector = |guid: &str, offset| {
            letter(
                &[
                    (
                        header::REASON,
                        &format!("order {guid} is in no document of o.c"),
                    ),
                    (header::KIND, "contract"),
                    (header::PROJECTOR, "orders"),
                    (header::SOURCE_TOPIC, "status"),
                    (header::SOURCE_PARTITION, "0"),
                    (header::SOURCE_OFFSET, "4"),
                ],
                offset,
            )
        };
        let connector = letter(
            &[
                (header::REASON, "address at addresses.3 left out: no city"),
                (header::SOURCE, "/mongodb/customer/accounts"),
                (header::FIELD, "addresses.3.city"),
            ],
            9,
        );
        let mut grouper = Grouper::new(GroupBy::Reason, 1);
        for l in [projector("g-1", 1), projector("g-2", 2), connector] {
            grouper.add(&l, false);
        }
        let listing = grouper.finish(&ReadSummary::default());
        let groups: Vec<(&str, u64)> = listing
            .groups
            .iter()
            .map(|g| (g.group.as_str(), g.count))
            .collect();
        assert_eq!(
            groups,
            vec![
                (
                    "projectors orders contract: order … is in no document of o.c",
                    2
                ),
                (
                    "connector /mongodb/customer/accounts addresses.*.city: address at addresses.* left out: no city",
                    1
                ),
            ]
        );
        assert_eq!(listing.groups[0].samples.len(), 1);
        assert_eq!(listing.groups[0].samples[0].source, "status/0/4");
    }

    #[test]
    fn history_counts_attempts() {
        let earlier = Attempt {
            reason: "r".into(),
            kind: None,
            projector: None,
            at_ms: None,
            topic: "dead".into(),
            partition: 0,
            offset: 0,
        };
        let value = schema::history_value(&[earlier.clone(), earlier]);
        let l = letter(&[(header::REASON, "x"), (header::HISTORY, &value)], 3);
        assert_eq!(l.attempts(), 3);
        assert_eq!(l.as_attempt().offset, 3);
        assert_eq!(letter(&[(header::REASON, "x")], 3).attempts(), 1);
    }
}
