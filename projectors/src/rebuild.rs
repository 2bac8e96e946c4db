//! `projectors rebuild <projector>`: re-derive a projection from the retained topics.
//!
//! # Semantics
//! A projection's collection is not the projector's alone: `customer.orders` holds the Orders
//! application's `orders`, and `fulfillment.requests` the Fulfillment application's status
//! progress and `shippingMethod`. Rebuilding into a fresh collection would lose those, and
//! swapping collections would lose every write made to the live one meanwhile. So a rebuild
//! re-derives the **projected fields in place**:
//!
//! 1. It refuses to start while any instance of the projector's consumer group is running (two
//!    writers replaying different positions would undo each other's repair).
//! 2. It notes each source partition's end (high watermark) and commits the group's offsets to
//!    each partition's beginning, so that from here on an interruption only means "the live
//!    projector replays everything", never a gap.
//! 3. It clears the projection's guard positions (`_cdc.*Position`) in every document, so every
//!    replayed event applies again, even over data that drifted while keeping a newer position.
//! 4. It replays every source topic from its beginning to the noted end through the live
//!    projector's batch loop ([`crate::batch_loop`]: same writes, same dead letters), committing
//!    the group's offsets as it goes, with a progress bar and periodic progress logs (rate, ETA).
//! 5. It commits the noted ends: live instances started afterwards continue exactly after the
//!    replayed records, with events published during the rebuild.
//!
//! Afterwards the projected fields equal what the live projector derives from the same records:
//! each customer's newest change and newest tombstone, each order's newest request, every
//! retained status (missing ones are added again; statuses are never removed, since the Orders
//! application's own are indistinguishable). Documents no retained record mentions are left as
//! they are. While it runs, a document shows its projected fields as of the replay's progress.
//!
//! What it can restore depends on retention (see [`crate::topics`]); mismatched topic settings
//! are reported before the replay starts.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use rdkafka::client::Client;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::OwnedMessage;
use rdkafka::{Message, Offset, TopicPartitionList};
use storefront_plumbing::kafka::KafkaSetupError;
use storefront_plumbing::kafka_io;
use storefront_plumbing::mongo::{self, MongoConnectError};
use storefront_plumbing::telemetry::Health;
use tokio_util::sync::CancellationToken;

use crate::apply::{Applier, BatchSummary};
use crate::batch_loop::{self, Batch, BatchSettings, LoopError, Source, Stop};
use crate::config::{APP_NAME, Projector, ProjectorsConfig};
use crate::consumer::{self, ProjectorContext, report_commit};
use crate::store::StoreError;
use crate::topics::{self, Mismatch};

/// Why a rebuild stopped.
#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    /// Instances of the projector are running: stop them first.
    #[error(
        "consumer group {group} has {members} active member(s): stop every `projectors run` \
         instance of this projector before rebuilding it"
    )]
    GroupActive {
        /// The consumer group.
        group: String,
        /// How many members it has.
        members: usize,
    },
    /// MongoDB could not be reached.
    #[error(transparent)]
    Mongo(#[from] MongoConnectError),
    /// Kafka could not be used.
    #[error(transparent)]
    Kafka(#[from] KafkaSetupError),
    /// A Kafka request (metadata, watermarks, group, commit, assignment) failed.
    #[error("a kafka request failed")]
    KafkaRequest(#[from] KafkaError),
    /// Resetting the guards failed.
    #[error("resetting the guards of {target}")]
    Reset {
        /// The collection.
        target: String,
        /// What failed.
        #[source]
        source: StoreError,
    },
    /// The replay's batch loop failed.
    #[error(transparent)]
    Batch(#[from] LoopError),
    /// Stopped (SIGINT/SIGTERM) before the end.
    #[error(
        "rebuild interrupted after {done} of {total} records; the group's offsets point at the \
         replay's progress, so `projectors run` finishes it (or run the rebuild again)"
    )]
    Interrupted {
        /// Records replayed.
        done: u64,
        /// Records to replay.
        total: u64,
    },
}

/// What a rebuild did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RebuildReport {
    /// Records replayed (with their outcomes).
    pub replayed: BatchSummary,
    /// Documents whose guards were cleared.
    pub guards_reset: u64,
    /// Topics whose settings do not keep what a rebuild needs.
    pub mismatches: Vec<String>,
    /// How long it took.
    pub elapsed: Duration,
}

/// One partition to replay: `[start, end)`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Range {
    start: i64,
    end: i64,
    /// One past the last offset replayed so far.
    reached: i64,
}

/// Rebuilds `projector`'s projection; `show_progress` draws a progress bar on stderr.
pub async fn rebuild(
    config: ProjectorsConfig,
    projector: Projector,
    shutdown: impl Future<Output = ()> + Send + 'static,
    show_progress: bool,
) -> Result<RebuildReport, RebuildError> {
    let started = Instant::now();
    let shutdown = storefront_plumbing::shutdown::token_from(shutdown);
    let client_id = format!("{APP_NAME}.rebuild");
    let client = mongo::connect(&config.mongo, APP_NAME).await?;
    let mismatches = topics::ensure(&config, &client_id).await?;
    for mismatch in &mismatches {
        tracing::warn!(%mismatch, "topic settings do not keep everything a rebuild needs");
    }
    let group = config.consumer_group(projector);
    let health = Health::new();
    let applier = Applier::build(
        &config,
        projector,
        &client,
        health.clone(),
        shutdown.clone(),
    )?;
    let topics = config.source_topics(projector);

    // 1. Nobody else may be applying this projection.
    let probe = Arc::new(consumer::consumer(
        &config,
        projector,
        &client_id,
        health.clone(),
        &[],
    )?);
    let members = group_members(&probe, &group).await?;
    if members > 0 {
        return Err(RebuildError::GroupActive { group, members });
    }

    // 2. The ranges to replay, and the group rewound to their start.
    let mut ranges: BTreeMap<(String, i32), Range> = BTreeMap::new();
    for topic in &topics {
        for (partition, (low, high)) in watermarks(&probe, topic).await? {
            ranges.insert(
                (topic.clone(), partition),
                Range {
                    start: low,
                    end: high,
                    reached: low,
                },
            );
        }
    }
    let total: u64 = ranges.values().map(|r| (r.end - r.start) as u64).sum();
    commit(&probe, &ranges, |r| r.start).await?;
    drop(probe);
    tracing::info!(%projector, %group, offsets = total, partitions = ranges.len(), "rebuild: group rewound to the beginning");

    // 3. Every replayed event applies again.
    let guards_reset = applier
        .store()
        .unset_everywhere(applier.projection().guard_fields())
        .await
        .map_err(|source| RebuildError::Reset {
            target: config.target(projector).to_string(),
            source,
        })?;
    tracing::info!(%projector, documents = guards_reset, fields = ?applier.projection().guard_fields(), "rebuild: guards cleared");

    // 4. Replay, one topic after another (topics are independent; one consumer per topic keeps
    //    end-of-partition notices unambiguous).
    let progress = Progress::new(total, show_progress);
    let mut report = RebuildReport {
        guards_reset,
        mismatches: mismatches.iter().map(Mismatch::to_string).collect(),
        ..RebuildReport::default()
    };
    for topic in &topics {
        replay(
            &config,
            projector,
            &client_id,
            &applier,
            topic,
            &mut ranges,
            &progress,
            &mut report.replayed,
            &shutdown,
        )
        .await?;
    }

    // 5. Live instances continue after what was replayed.
    let finisher = Arc::new(consumer::consumer(
        &config,
        projector,
        &client_id,
        health,
        &[],
    )?);
    commit(&finisher, &ranges, |r| r.end).await?;
    progress.finish();
    report.elapsed = started.elapsed();
    tracing::info!(
        %projector,
        records = report.replayed.total(),
        applied = report.replayed.applied,
        dead_letters = report.replayed.dead_letters,
        seconds = report.elapsed.as_secs_f64(),
        "rebuild finished; the group's offsets are at the replayed end"
    );
    Ok(report)
}

#[allow(clippy::too_many_arguments)] // the rebuild's state, passed down once per topic
async fn replay(
    config: &ProjectorsConfig,
    projector: Projector,
    client_id: &str,
    applier: &Applier,
    topic: &str,
    ranges: &mut BTreeMap<(String, i32), Range>,
    progress: &Progress,
    summary: &mut BatchSummary,
    shutdown: &CancellationToken,
) -> Result<(), RebuildError> {
    let open: Vec<i32> = ranges
        .iter()
        .filter(|((t, _), r)| t == topic && r.end > r.start)
        .map(|((_, p), _)| *p)
        .collect();
    if open.is_empty() {
        return Ok(());
    }
    let consumer = Arc::new(consumer::consumer(
        config,
        projector,
        client_id,
        Health::new(),
        &[("enable.partition.eof", "true")],
    )?);
    let mut assignment = TopicPartitionList::new();
    for partition in &open {
        let range = &ranges[&(topic.to_owned(), *partition)];
        assignment.add_partition_offset(topic, *partition, Offset::Offset(range.start))?;
    }
    consumer.assign(&assignment)?;
    consumer
        .context()
        .assigned_manually(open.iter().map(|p| (topic.to_owned(), *p)));
    // A backlog is there from the start: let a batch fill for at least 100 ms.
    let wait = Duration::from_millis(config.apply.batch_wait_ms.max(100));
    let settings = BatchSettings {
        batch_size: config.apply.batch_size,
        batch_wait: wait,
        idle: wait,
        commit_interval: Duration::from_millis(config.apply.commit_interval_ms),
    };
    let mut pass = Replay {
        projector,
        topic,
        ends: open
            .iter()
            .map(|p| (*p, ranges[&(topic.to_owned(), *p)].end))
            .collect(),
        reading: open.clone(),
        ranges,
        progress,
        summary,
    };
    let stopped = batch_loop::run(&consumer, applier, &settings, &mut pass, shutdown).await;
    // What is stored is written: keep it as the group's progress whatever stopped the replay
    // (the rebuild's last step commits the replayed ends, so a failure here only loses a mark).
    report_commit(
        projector,
        kafka_io::commit_stored(&consumer).await,
        "rebuild: offset commit after a topic's replay failed; a rebuild run again replays from \
         the start",
    );
    match stopped? {
        Stop::Shutdown => Err(RebuildError::Interrupted {
            done: progress.done(),
            total: progress.total(),
        }),
        Stop::Drained => {
            // Every record before the ends is written; compaction can leave the last offsets
            // empty.
            for partition in open {
                if let Some(range) = pass.ranges.get_mut(&(topic.to_owned(), partition)) {
                    progress.advance((range.end - range.reached).max(0) as u64);
                    range.reached = range.end;
                }
            }
            Ok(())
        }
    }
}

/// One topic's replay: the records before the noted ends, until every partition reached its end.
struct Replay<'a> {
    projector: Projector,
    topic: &'a str,
    /// Per partition, the end noted when the rebuild started.
    ends: BTreeMap<i32, i64>,
    /// Partitions whose end is not reached yet.
    reading: Vec<i32>,
    ranges: &'a mut BTreeMap<(String, i32), Range>,
    progress: &'a Progress,
    summary: &'a mut BatchSummary,
}

impl Source for Replay<'_> {
    fn exhausted(&self) -> bool {
        self.reading.is_empty()
    }

    fn keep(&mut self, _: &StreamConsumer<ProjectorContext>, batch: Batch) -> Vec<OwnedMessage> {
        let mut ended = batch.ended;
        let mut keep = Vec::with_capacity(batch.records.len());
        for record in batch.records {
            match self.ends.get(&record.partition()) {
                Some(end) if record.offset() < *end => keep.push(record),
                // Published after the rebuild started: the live projector's. Records come in
                // offset order, so everything before the end has been read.
                Some(_) => ended.push(record.partition()),
                None => {}
            }
        }
        // A partition is also done once its last record before the end is read.
        let read_to = batch_loop::next_offsets(&keep);
        let (topic, ends) = (self.topic, &self.ends);
        self.reading.retain(|p| {
            !ended.contains(p)
                && read_to
                    .get(&(topic.to_owned(), *p))
                    .is_none_or(|next| *next < ends[p])
        });
        keep
    }

    fn written(&mut self, records: &[OwnedMessage], summary: &BatchSummary) {
        self.summary.applied += summary.applied;
        self.summary.stale += summary.stale;
        self.summary.duplicates += summary.duplicates;
        self.summary.dead_letters += summary.dead_letters;
        for (key, next) in batch_loop::next_offsets(records) {
            if let Some(range) = self.ranges.get_mut(&key) {
                self.progress.advance((next - range.reached).max(0) as u64);
                range.reached = range.reached.max(next);
            }
        }
    }

    fn tick(&mut self) {
        self.progress.log(self.projector);
    }
}

async fn group_members(
    consumer: &Arc<StreamConsumer<ProjectorContext>>,
    group: &str,
) -> Result<usize, KafkaError> {
    kafka_io::group_member_count(consumer, client_of, group, Duration::from_secs(10)).await
}

/// The librdkafka client of a projector's consumer.
fn client_of(consumer: &StreamConsumer<ProjectorContext>) -> &Client<ProjectorContext> {
    consumer.client()
}

async fn watermarks(
    consumer: &Arc<StreamConsumer<ProjectorContext>>,
    topic: &str,
) -> Result<Vec<(i32, (i64, i64))>, KafkaError> {
    let timeout = Duration::from_secs(10);
    let metadata = kafka_io::fetch_metadata(consumer, client_of, Some(topic), timeout).await?;
    let mut found = Vec::new();
    for entry in metadata.topics() {
        if let Some(error) = entry.error() {
            return Err(KafkaError::MetadataFetch(error.into()));
        }
        for partition in entry.partitions() {
            let marks =
                kafka_io::fetch_watermarks(consumer, client_of, topic, partition.id(), timeout)
                    .await?;
            found.push((partition.id(), marks));
        }
    }
    Ok(found)
}

/// Commits, for every partition, the offset `pick` chooses, as the projector's group.
async fn commit(
    consumer: &Arc<StreamConsumer<ProjectorContext>>,
    ranges: &BTreeMap<(String, i32), Range>,
    pick: impl Fn(&Range) -> i64,
) -> Result<(), KafkaError> {
    let mut list = TopicPartitionList::new();
    for ((topic, partition), range) in ranges {
        list.add_partition_offset(topic, *partition, Offset::Offset(pick(range)))?;
    }
    if list.count() == 0 {
        return Ok(());
    }
    kafka_io::commit(consumer, list).await
}

/// Progress on stderr (a bar when interactive) and in the log every few seconds.
struct Progress {
    bar: ProgressBar,
    started: Instant,
    last_log: std::sync::Mutex<Instant>,
}

impl Progress {
    fn new(total: u64, show: bool) -> Self {
        let bar = if show {
            ProgressBar::new(total)
        } else {
            ProgressBar::hidden()
        };
        if let Ok(style) = ProgressStyle::with_template(
            "{spinner} rebuild [{elapsed_precise}] {wide_bar} {pos}/{len} offsets ({per_sec}, ETA {eta})",
        ) {
            bar.set_style(style);
        }
        bar.set_length(total);
        Self {
            bar,
            started: Instant::now(),
            last_log: std::sync::Mutex::new(Instant::now()),
        }
    }

    fn total(&self) -> u64 {
        self.bar.length().unwrap_or(0)
    }

    fn done(&self) -> u64 {
        self.bar.position()
    }

    fn advance(&self, offsets: u64) {
        self.bar.inc(offsets);
    }

    fn log(&self, projector: Projector) {
        let mut last = self
            .last_log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if last.elapsed() < Duration::from_secs(5) {
            return;
        }
        *last = Instant::now();
        let done = self.done();
        let total = self.total();
        let seconds = self.started.elapsed().as_secs_f64();
        let rate = done as f64 / seconds.max(0.001);
        let eta = if rate > 0.0 {
            (total.saturating_sub(done)) as f64 / rate
        } else {
            f64::INFINITY
        };
        tracing::info!(%projector, done, total, per_second = rate.round(), eta_seconds = eta.round(), "rebuild progress");
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
