//! One change stream, from MongoDB to Kafka, with checkpoints.
//!
//! ```text
//!  snapshot (find) ─┐
//!                   ├─> SourceChange ─> mapper ─> once-per-id filter ─> publisher ─> in-flight queue
//!  change stream ───┘                     │                                              │
//!                                         └─> dead letter (reason, raw document) ───────>│
//!                                                                                         v
//!                               checkpoint store <── token of the oldest fully acked change
//! ```
//!
//! # Delivery guarantees
//! - **No loss.** Every change becomes an entry of the in-flight queue ([`crate::acks`]) holding
//!   the delivery futures of its records, in source order. Entries leave the queue from the front
//!   only, once all their records are acknowledged, so the saved resume token never passes a
//!   record Kafka has not acknowledged. A `kill -9` at any instant resumes from a token whose every
//!   earlier change is in Kafka; the changes after it are read and published again (duplicates
//!   with the same ids).
//! - **Backpressure.** At most `stream.max_in_flight` records are unacknowledged; then the stream
//!   waits for the oldest. A full producer queue also waits. Nothing is dropped.
//! - **Never silent.** A change that cannot be mapped, or an event larger than
//!   `stream.max_event_bytes` (or refused by the broker as too large), becomes a dead letter with
//!   the reason, and the stream goes on. Any other publish failure stops the connector without
//!   checkpointing past it.
//! - **One writer.** The stream's checkpoint is claimed at start (`CheckpointStore::claim`) and
//!   every save is refused once another process claimed it since; the stream then stops with
//!   that error, so two processes never both move one checkpoint.
//! - **Lost history.** A resume token the server no longer accepts stops the stream with an error
//!   naming it and the remedy, or (policy `resnapshot`) snapshots the collection again.
//! - **Sensitive data stays home.** Every document (streamed or snapshotted) is redacted by the
//!   source's [`Redaction`] as it is read ([`source::Conversion`]), before the mapper, the
//!   publisher, a dead letter or a log line sees it.
//! - **No gap after a snapshot.** The stream is opened (at the current cluster time when the server
//!   reports one) *before* the collection is read, so every change after the snapshot's start is
//!   streamed; changes during the snapshot may appear twice, which is harmless.
//!
//! A checkpoint needs a resume token. Until the stream has one (a fresh stream on a server that
//! reports no post-batch token, before its first change), nothing is saved, and a restart
//! snapshots again rather than risk a gap.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mongodb::bson::{Bson, RawDocumentBuf, doc};
use mongodb::change_stream::ChangeStream;
use mongodb::change_stream::event::{ChangeStreamEvent, OperationType, ResumeToken};
use mongodb::{Client, Collection};
use rdkafka::error::KafkaError;
use storefront_plumbing::retry::Backoff;
use storefront_plumbing::telemetry::{ComponentState, Health};
use storefront_schemas::metadata::SourcePosition;
use storefront_schemas::sensitive::Redaction;
use storefront_schemas::topology::Namespace;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use crate::acks::{Entry, InFlight, Refusal, SaveIntervals};
use crate::checkpoint::{CheckpointError, CheckpointStore};
use crate::config::{FullDocumentMode, LostHistoryPolicy, SnapshotMode, StreamSettings};
use crate::mapping::{ChangeKind, ChangeMapper, Defect, Mapped, SourceChange};
use crate::metrics::StreamMetrics;
use crate::publisher::{DeadLetter, KafkaDelivery, PublishError, Publisher};
use crate::source::{
    self, Conversion, SourceError, SourceEvent, SourceMessage, lost_history_reason,
};
use crate::watch::{self, StallLimits, StreamWatch};

/// Why a stream stopped.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The server no longer has the history after the saved resume token.
    #[error(
        "stream {stream}: the saved resume token is no longer accepted ({reason}); changes after \
         it may be lost. Remedy: restart with stream.on_lost_history = \"resnapshot\" to publish \
         the collection's current documents again, or delete checkpoint `{stream}` and restart \
         with --snapshot initial"
    )]
    HistoryLost {
        /// The stream's name.
        stream: String,
        /// The server's words.
        reason: String,
    },
    /// Reading the stream failed for good.
    #[error("stream {stream}")]
    Source {
        /// The stream's name.
        stream: String,
        /// What failed.
        #[source]
        source: SourceError,
    },
    /// MongoDB failed in a way retrying did not fix.
    #[error("stream {stream}: mongodb failed")]
    Mongo {
        /// The stream's name.
        stream: String,
        /// The driver's error.
        #[source]
        source: Box<mongodb::error::Error>,
    },
    /// Kafka failed to take or deliver a record.
    #[error("stream {stream}")]
    Publish {
        /// The stream's name.
        stream: String,
        /// What failed.
        #[source]
        source: Box<PublishError>,
    },
    /// Kafka reported a delivery failure that is not the record's fault.
    #[error("stream {stream}: kafka delivery failed")]
    Delivery {
        /// The stream's name.
        stream: String,
        /// librdkafka's error.
        #[source]
        source: Box<KafkaError>,
    },
    /// The checkpoint store failed.
    #[error("stream {stream}")]
    Checkpoint {
        /// The stream's name.
        stream: String,
        /// What failed.
        #[source]
        source: Box<CheckpointError>,
    },
}

/// One collection's stream.
pub struct StreamPipeline {
    name: String,
    namespace: Namespace,
    collection: Collection<RawDocumentBuf>,
    client: Client,
    mapper: Arc<dyn ChangeMapper>,
    publisher: Arc<Publisher>,
    store: CheckpointStore,
    settings: StreamSettings,
    save_intervals: SaveIntervals,
    shutdown: CancellationToken,
    health: Health,
    /// Every change's records until Kafka acknowledged them: what the checkpoint may cover.
    in_flight: InFlight<KafkaDelivery>,
    last_saved: Instant,
    /// No save is tried before this, after one failed because MongoDB was unreachable.
    next_save_attempt: Instant,
    /// Pauses between saves MongoDB did not take.
    save_failures: Backoff,
    /// Once-per-id events published by this process (acknowledged or not), so a quick second
    /// change revealing the same fact is dropped before the ledger knows it.
    published_once: HashSet<String>,
    metrics: StreamMetrics,
    /// Driver events to source changes, redacting every document as it is read.
    conversion: Conversion,
    /// What the stall watch reads ([`crate::watch`]).
    watch: Arc<StreamWatch>,
}

impl std::fmt::Debug for StreamPipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamPipeline")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Everything a stream needs besides its namespace.
#[derive(Clone)]
pub struct StreamContext {
    /// MongoDB client of the source.
    pub client: Client,
    /// The client the stream and the snapshot read with ([`source::change_stream_client`]:
    /// retryable reads off).
    pub change_stream_client: Client,
    /// Maps changes to events.
    pub mapper: Arc<dyn ChangeMapper>,
    /// The process's producer.
    pub publisher: Arc<Publisher>,
    /// Checkpoints and ledger.
    pub store: CheckpointStore,
    /// Stream settings.
    pub settings: StreamSettings,
    /// How often to save checkpoints.
    pub checkpoint_interval: Duration,
    /// How often to save a checkpoint that only an idle stream's token moved.
    pub idle_checkpoint_interval: Duration,
    /// Process shutdown.
    pub shutdown: CancellationToken,
    /// Process health.
    pub health: Health,
}

impl std::fmt::Debug for StreamContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamContext").finish_non_exhaustive()
    }
}

/// How a stream starts.
enum Start {
    Resume(ResumeToken),
    Snapshot,
    Now,
}

impl StreamPipeline {
    /// A pipeline for `namespace`; its checkpoint is named after the namespace. It shows as
    /// `starting` in `/health` from here until its stream is open.
    pub fn new(namespace: Namespace, redaction: Redaction, context: StreamContext) -> Self {
        context
            .health
            .set(&component_name(&namespace), ComponentState::Starting);
        let collection = context
            .change_stream_client
            .database(&namespace.database)
            .collection(&namespace.collection);
        Self {
            name: namespace.to_string(),
            collection,
            client: context.client,
            mapper: context.mapper,
            publisher: context.publisher,
            store: context.store,
            settings: context.settings,
            save_intervals: SaveIntervals {
                progress: context.checkpoint_interval,
                idle: context.idle_checkpoint_interval,
            },
            shutdown: context.shutdown,
            health: context.health,
            in_flight: InFlight::new(),
            last_saved: Instant::now(),
            next_save_attempt: Instant::now(),
            save_failures: Backoff::default(),
            published_once: HashSet::new(),
            metrics: StreamMetrics::new(&namespace),
            conversion: Conversion {
                namespace: namespace.clone(),
                redaction,
            },
            namespace,
            watch: Arc::new(StreamWatch::default()),
        }
    }

    fn component(&self) -> String {
        component_name(&self.namespace)
    }

    fn mongo_error(&self, source: mongodb::error::Error) -> StreamError {
        StreamError::Mongo {
            stream: self.name.clone(),
            source: Box::new(source),
        }
    }

    fn checkpoint_error(&self, source: CheckpointError) -> StreamError {
        StreamError::Checkpoint {
            stream: self.name.clone(),
            source: Box::new(source),
        }
    }

    /// Runs until shutdown (then drains and checkpoints) or a fatal error.
    pub async fn run(mut self) -> Result<(), StreamError> {
        self.health.set(&self.component(), ComponentState::Starting);
        let outcome = self.stream().await;
        if let Err(error) = &outcome {
            self.health.set(
                &self.component(),
                ComponentState::Failing(storefront_plumbing::errors::chain(error)),
            );
        }
        outcome
    }

    async fn stream(&mut self) -> Result<(), StreamError> {
        // Stopped when this returns, before `run` reports how the stream ended.
        let _stall_watch = AbortOnDropHandle::new(tokio::spawn(watch::watch(
            self.name.clone(),
            self.component(),
            self.health.clone(),
            self.watch.clone(),
            StallLimits {
                delivery: Duration::from_millis(self.settings.delivery_stall_ms),
                read: Duration::from_millis(self.settings.read_stall_ms),
            },
        )));
        if self.settings.full_document == FullDocumentMode::PostImage
            && self.settings.enable_post_images
        {
            source::enable_post_images(&self.collection)
                .await
                .map_err(|e| self.mongo_error(e))?;
        }
        let checkpoint = self
            .store
            .claim(&self.name)
            .await
            .map_err(|e| self.checkpoint_error(e))?;
        let start = match (self.settings.snapshot, checkpoint) {
            (SnapshotMode::Always, _) => Start::Snapshot,
            (_, Some(checkpoint)) => Start::Resume(checkpoint.resume_token),
            (SnapshotMode::Initial, None) => Start::Snapshot,
            (SnapshotMode::Never, None) => Start::Now,
        };
        let stream = match start {
            Start::Resume(token) => match self.open(Some(token)).await {
                Ok(stream) => {
                    tracing::info!(stream = %self.name, "resumed from checkpoint");
                    Some(stream)
                }
                Err(error) => self.on_open_failure(error).await?,
            },
            Start::Snapshot => self.open_and_snapshot().await?,
            Start::Now => {
                tracing::info!(stream = %self.name, "no checkpoint; streaming from now on");
                Some(self.open(None).await.map_err(|e| self.mongo_error(e))?)
            }
        };
        if let Some(stream) = stream {
            self.watch.opened();
            self.health.set(&self.component(), ComponentState::Ready);
            self.follow(stream).await?;
        }
        // Shut down (possibly mid-snapshot): deliver what is in flight, then save what it covers.
        self.drain().await?;
        self.save_checkpoint(true).await
    }

    async fn open(
        &self,
        token: Option<ResumeToken>,
    ) -> Result<ChangeStream<ChangeStreamEvent<RawDocumentBuf>>, mongodb::error::Error> {
        source::open(&self.collection, &self.settings, token).await
    }

    async fn on_open_failure(
        &mut self,
        error: mongodb::error::Error,
    ) -> Result<Option<ChangeStream<ChangeStreamEvent<RawDocumentBuf>>>, StreamError> {
        let Some(reason) = lost_history_reason(&error) else {
            return Err(self.mongo_error(error));
        };
        match self.settings.on_lost_history {
            LostHistoryPolicy::Fail => {
                tracing::error!(stream = %self.name, %reason, "resume token no longer accepted");
                Err(StreamError::HistoryLost {
                    stream: self.name.clone(),
                    reason,
                })
            }
            LostHistoryPolicy::Resnapshot => {
                tracing::warn!(stream = %self.name, %reason, "resume token no longer accepted; snapshotting the collection again");
                self.metrics.history_lost();
                self.open_and_snapshot().await
            }
        }
    }

    /// Opens a stream at the current time, then publishes every existing document.
    async fn open_and_snapshot(
        &mut self,
    ) -> Result<Option<ChangeStream<ChangeStreamEvent<RawDocumentBuf>>>, StreamError> {
        let position = self.current_cluster_time().await;
        let stream = self.open(None).await.map_err(|e| self.mongo_error(e))?;
        if !self.snapshot(position).await? {
            return Ok(None);
        }
        Ok(Some(stream))
    }

    /// The deployment's current cluster time, read before the snapshot so snapshot events order
    /// before every change streamed after them. Falls back to the wall clock when the server
    /// reports none (the test server; see docs/test-stack.md).
    async fn current_cluster_time(&self) -> SourcePosition {
        let from_server = async {
            let mut session = self.client.start_session().await.ok()?;
            self.client
                .database("admin")
                .run_command(doc! { "ping": 1 })
                .session(&mut session)
                .await
                .ok()?;
            session.operation_time()
        };
        match from_server.await {
            Some(time) => SourcePosition {
                seconds: time.time,
                increment: time.increment,
            },
            None => SourcePosition {
                seconds: now_ms().div_euclid(1000) as u32,
                increment: 0,
            },
        }
    }

    /// Publishes every document of the collection as a snapshot change; `false` if shut down.
    async fn snapshot(&mut self, position: SourcePosition) -> Result<bool, StreamError> {
        use futures::TryStreamExt;
        let total = self
            .collection
            .estimated_document_count()
            .await
            .map_err(|e| self.mongo_error(e))?;
        tracing::info!(stream = %self.name, documents = total, "snapshot started");
        let started = Instant::now();
        let mut last_report = Instant::now();
        let mut done: u64 = 0;
        let mut cursor = self
            .collection
            .find(doc! {})
            .sort(doc! { "_id": 1 })
            .await
            .map_err(|e| self.mongo_error(e))?;
        while let Some(document) = cursor.try_next().await.map_err(|e| self.mongo_error(e))? {
            if self.shutdown.is_cancelled() {
                tracing::info!(stream = %self.name, done, "snapshot interrupted by shutdown; it restarts next time");
                return Ok(false);
            }
            let change = self.conversion.snapshot(document, position, now_ms());
            self.publish_change(change, None).await?;
            done += 1;
            self.metrics.snapshot_progress(done, total);
            if last_report.elapsed() >= Duration::from_secs(2) {
                last_report = Instant::now();
                let rate = done as f64 / started.elapsed().as_secs_f64().max(0.001);
                let eta = total.saturating_sub(done) as f64 / rate.max(0.001);
                tracing::info!(stream = %self.name, done, total, rate = rate as u64, eta_seconds = eta as u64, "snapshot progress");
            }
            self.settle(Wait::No).await?;
        }
        tracing::info!(stream = %self.name, documents = done, seconds = started.elapsed().as_secs_f64(), "snapshot finished");
        Ok(true)
    }

    /// Publishes what the reader task reads from `stream`, until shutdown.
    async fn follow(
        &mut self,
        stream: ChangeStream<ChangeStreamEvent<RawDocumentBuf>>,
    ) -> Result<(), StreamError> {
        // Room for a few server batches: enough to overlap reading with publishing, small enough
        // to bound memory (the in-flight limit bounds what is past this channel).
        let (sink, mut messages) = tokio::sync::mpsc::channel(2_048);
        // Aborted when this returns, on any path: a reader never outlives its pipeline.
        let _reader = AbortOnDropHandle::new(tokio::spawn(source::read(
            source::ReaderContext {
                name: self.name.clone(),
                collection: self.collection.clone(),
                conversion: self.conversion.clone(),
                sink,
                settings: self.settings.clone(),
                shutdown: self.shutdown.clone(),
                watch: self.watch.clone(),
            },
            stream,
        )));
        let _probe = (self.settings.unread_check_ms > 0).then(|| {
            AbortOnDropHandle::new(tokio::spawn(watch::probe_unread(
                self.name.clone(),
                self.collection.clone(),
                self.watch.clone(),
                Duration::from_millis(self.settings.unread_check_ms),
            )))
        });
        // Acknowledgements arrive while the stream is quiet too; look at them regularly.
        let mut tick =
            tokio::time::interval(self.save_intervals.progress.min(Duration::from_millis(200)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let message = tokio::select! {
                () = self.shutdown.cancelled() => return Ok(()),
                _ = tick.tick() => {
                    self.settle(Wait::No).await?;
                    self.save_checkpoint(false).await?;
                    continue;
                }
                message = messages.recv() => message,
            };
            match message {
                Some(SourceMessage::Change(event)) => self.handle_event(*event).await?,
                Some(SourceMessage::Idle(token)) => {
                    self.settle(Wait::No).await?;
                    // A post-batch token is later than every change read: safe to save once
                    // nothing is in flight, and it keeps an idle stream's checkpoint fresh.
                    if let Some(token) = token {
                        self.in_flight.idle_token(token);
                    }
                }
                Some(SourceMessage::Failed(SourceError::HistoryLost(reason))) => {
                    return Err(StreamError::HistoryLost {
                        stream: self.name.clone(),
                        reason,
                    });
                }
                Some(SourceMessage::Failed(error)) => {
                    return Err(StreamError::Source {
                        stream: self.name.clone(),
                        source: error,
                    });
                }
                // The reader stops only at shutdown or after reporting a failure.
                None => return Ok(()),
            }
            self.settle(Wait::No).await?;
            self.save_checkpoint(false).await?;
        }
    }

    /// Handles one event of the stream.
    async fn handle_event(&mut self, event: SourceEvent) -> Result<(), StreamError> {
        match event {
            SourceEvent::Document { change, token } => {
                self.metrics
                    .change_read(change.position, change.time_ms, now_ms());
                self.publish_change(change, Some(token)).await
            }
            SourceEvent::Collection { operation, token } => {
                // The reader reopens after an invalidate; every collection-level event's token
                // still advances the checkpoint, in its turn.
                if operation == OperationType::Invalidate {
                    self.metrics.invalidated();
                }
                tracing::warn!(stream = %self.name, ?operation, "collection-level change event");
                self.track(Entry {
                    token: Some(token),
                    position: None,
                    origin: None,
                    deliveries: Vec::new(),
                    once_ids: Vec::new(),
                });
                Ok(())
            }
        }
    }

    /// Maps `change` and enqueues its records and dead letters as one in-flight entry.
    async fn publish_change(
        &mut self,
        change: SourceChange,
        token: Option<ResumeToken>,
    ) -> Result<(), StreamError> {
        let mut entry = Entry {
            token,
            position: Some(change.position),
            origin: Some((change.kind, change.document_id.clone())),
            deliveries: Vec::new(),
            once_ids: Vec::new(),
        };
        let Mapped {
            events,
            mut defects,
        } = self.mapper.map(&change);
        tracing::debug!(stream = %self.name, kind = ?change.kind, position = %change.position, has_document = change.full_document.is_some(), events = events.len(), defects = defects.len(), "change mapped");
        for event in events {
            if event.once_per_id && self.already_published(&event.metadata.id).await? {
                self.metrics.deduplicated(&event.topic);
                continue;
            }
            let size = event.payload.as_ref().map_or(0, Vec::len);
            if size > self.settings.max_event_bytes {
                defects.push(Defect::too_large(
                    &event,
                    size,
                    self.settings.max_event_bytes,
                ));
                continue;
            }
            if event.once_per_id {
                self.remember_once(&mut entry, &event.metadata.id);
            }
            self.metrics.published(&event.topic);
            let delivery = self
                .publisher
                .send_event(&event, &self.shutdown)
                .await
                .map_err(|source| self.publish_error(source))?;
            entry.deliveries.push(delivery);
        }
        for defect in defects {
            // A defect that kept back an event already published kept back nothing.
            if let Some(blocked) = &defect.blocked_event
                && self.already_published(blocked).await?
            {
                continue;
            }
            // The same defect, unchanged since it was dead-lettered, is not sent again.
            if self.already_published(&defect.id).await? {
                self.metrics
                    .deduplicated(self.publisher.dead_letter_topic());
                continue;
            }
            self.remember_once(&mut entry, &defect.id);
            let letter = DeadLetter {
                change: &change,
                reason: &defect.reason,
                field: &defect.field,
                key: defect.order_guid.as_deref(),
                entry: defect.entry.as_ref(),
            };
            let delivery = self.dead_letter(&letter).await?;
            entry.deliveries.push(delivery);
        }
        self.track(entry);
        while self.in_flight.records() >= self.settings.max_in_flight {
            self.settle(Wait::Oldest).await?;
        }
        Ok(())
    }

    /// Records that `id` (a once-per-id event or a defect) is published with `entry`.
    fn remember_once(&mut self, entry: &mut Entry<KafkaDelivery>, id: &str) {
        self.published_once.insert(id.to_owned());
        entry.once_ids.push(id.to_owned());
    }

    fn publish_error(&self, source: PublishError) -> StreamError {
        StreamError::Publish {
            stream: self.name.clone(),
            source: Box::new(source),
        }
    }

    async fn dead_letter(&self, letter: &DeadLetter<'_>) -> Result<KafkaDelivery, StreamError> {
        tracing::warn!(stream = %self.name, reason = letter.reason, field = letter.field, "dead letter");
        self.metrics.dead_letter();
        self.publisher
            .send_dead_letter(letter, &self.shutdown)
            .await
            .map_err(|source| self.publish_error(source))
    }

    /// Whether a once-per-id event was published before. While MongoDB cannot be reached the
    /// lookup is retried with backoff (the stream waits, as its reads do), so an outage does not
    /// stop the connector; it fails only at shutdown or on another error.
    async fn already_published(&self, id: &str) -> Result<bool, StreamError> {
        if self.published_once.contains(id) {
            return Ok(true);
        }
        let mut failures = Backoff::default();
        loop {
            match self.store.was_published(id).await {
                Err(CheckpointError::Mongo(error))
                    if source::is_transient(&error) && !self.shutdown.is_cancelled() =>
                {
                    let pause = failures.next_delay();
                    tracing::warn!(stream = %self.name, error = %storefront_plumbing::errors::chain(&error), retry_in_ms = pause.as_millis() as u64, "looking up the once-per-id ledger failed; trying again");
                    tokio::select! {
                        () = self.shutdown.cancelled() => {}
                        () = tokio::time::sleep(pause) => {}
                    }
                }
                outcome => return outcome.map_err(|e| self.checkpoint_error(e)),
            }
        }
    }

    fn track(&mut self, entry: Entry<KafkaDelivery>) {
        self.in_flight.push(entry);
        self.in_flight_changed();
    }

    /// Publishes the in-flight state to the metrics and the stall watch.
    fn in_flight_changed(&self) {
        self.metrics.in_flight(self.in_flight.records());
        self.watch
            .delivery(self.in_flight.waiting_since(), self.in_flight.records());
    }

    /// Settles what Kafka answered: without waiting, or waiting for the oldest change. A record
    /// the broker refused as too large is replaced by a dead letter (awaited in its place); any
    /// other delivery failure stops the stream.
    async fn settle(&mut self, wait: Wait) -> Result<(), StreamError> {
        loop {
            let settled = match wait {
                Wait::No => self.in_flight.settle_ready(),
                Wait::Oldest => self.in_flight.settle_oldest().await,
            };
            let refusal = settled.map_err(|source| StreamError::Delivery {
                stream: self.name.clone(),
                source: Box::new(source),
            })?;
            let Some(refusal) = refusal else {
                break;
            };
            let replacement = self.replace_too_large(refusal).await?;
            self.in_flight.replace_refused(replacement);
        }
        self.in_flight_changed();
        Ok(())
    }

    /// A dead letter in place of an event the broker refused as too large, with the operation,
    /// `_id` and cluster time of the change it came from, the event's JSON as the document and
    /// its key as the key.
    async fn replace_too_large(&self, refusal: Refusal) -> Result<KafkaDelivery, StreamError> {
        let Refusal {
            record,
            origin,
            position,
        } = refusal;
        let document = serde_json::from_slice::<serde_json::Value>(&record.payload)
            .ok()
            .and_then(|json| mongodb::bson::to_document(&json).ok());
        // Every entry that can hold a record has an origin; only collection-level ones have none.
        let (kind, document_id) = origin.unwrap_or((ChangeKind::Update, Bson::Null));
        let change = SourceChange {
            namespace: self.namespace.clone(),
            kind,
            document_id,
            full_document: document.and_then(|d| RawDocumentBuf::from_document(&d).ok()),
            position: position.unwrap_or_default(),
            time_ms: now_ms(),
        };
        let reason = format!(
            "kafka refused the event for topic {} as too large",
            record.topic
        );
        self.dead_letter(&DeadLetter {
            change: &change,
            reason: &reason,
            field: "",
            key: Some(&record.key),
            entry: None,
        })
        .await
    }

    /// Waits for every record in flight (at shutdown).
    async fn drain(&mut self) -> Result<(), StreamError> {
        while !self.in_flight.is_empty() {
            self.settle(Wait::Oldest).await?;
        }
        Ok(())
    }

    /// Saves the checkpoint when it moved and its interval passed (or `force`).
    /// Saves the checkpoint when one is due. While MongoDB cannot be reached, a save that is not
    /// forced is tried again later (with backoff) instead of stopping the stream: the changes it
    /// covers stay unsaved, so a crash meanwhile re-publishes them, which is harmless. A forced
    /// save (at shutdown) and every other failure stop the stream.
    async fn save_checkpoint(&mut self, force: bool) -> Result<(), StreamError> {
        let since_saved = self.last_saved.elapsed();
        self.metrics.checkpoint_age(since_saved);
        if !force && Instant::now() < self.next_save_attempt {
            return Ok(());
        }
        let Some(checkpoint) =
            self.in_flight
                .checkpoint_due(force, since_saved, self.save_intervals)
        else {
            return Ok(());
        };
        let saved = self
            .store
            .save(
                &self.name,
                checkpoint.token,
                checkpoint.position,
                checkpoint.once_ids,
            )
            .await;
        match saved {
            Ok(()) => {}
            Err(CheckpointError::Mongo(error)) if !force && source::is_transient(&error) => {
                let pause = self.save_failures.next_delay();
                self.next_save_attempt = Instant::now() + pause;
                tracing::warn!(stream = %self.name, error = %storefront_plumbing::errors::chain(&error), retry_in_ms = pause.as_millis() as u64, "saving the checkpoint failed; it is tried again");
                return Ok(());
            }
            Err(error) => return Err(self.checkpoint_error(error)),
        }
        self.save_failures.reset();
        self.in_flight.saved();
        self.last_saved = Instant::now();
        Ok(())
    }
}

/// Whether [`StreamPipeline::settle`] waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    /// Settle only what Kafka already answered.
    No,
    /// Wait until the oldest change's records are answered.
    Oldest,
}

/// The `/health` component of the stream of `namespace`.
pub fn component_name(namespace: &Namespace) -> String {
    format!("stream {namespace}")
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}
