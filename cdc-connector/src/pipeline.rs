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
//! - **No loss.** Every change becomes an entry of the in-flight queue holding the delivery futures
//!   of its records, in source order. Entries leave the queue from the front only, once all their
//!   records are acknowledged, so the saved resume token never passes a record Kafka has not
//!   acknowledged. A `kill -9` at any instant resumes from a token whose every earlier change is in
//!   Kafka; the changes after it are read and published again (duplicates with the same ids).
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
//!   source's [`Redaction`] as it is read, before the mapper, the publisher, a dead letter or a
//!   log line sees it.
//! - **No gap after a snapshot.** The stream is opened (at the current cluster time when the server
//!   reports one) *before* the collection is read, so every change after the snapshot's start is
//!   streamed; changes during the snapshot may appear twice, which is harmless.
//!
//! A checkpoint needs a resume token. Until the stream has one (a fresh stream on a server that
//! reports no post-batch token, before its first change), nothing is saved, and a restart
//! snapshots again rather than risk a gap.

use std::borrow::Cow;
use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use mongodb::bson::{Bson, RawDocumentBuf, doc};
use mongodb::change_stream::ChangeStream;
use mongodb::change_stream::event::{ChangeStreamEvent, OperationType, ResumeToken};
use mongodb::{Client, Collection};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::DeliveryFuture;
use storefront_plumbing::telemetry::{ComponentState, Health};
use storefront_schemas::metadata::SourcePosition;
use storefront_schemas::sensitive::Redaction;
use storefront_schemas::topology::Namespace;
use tokio_util::sync::CancellationToken;

use crate::checkpoint::{CheckpointError, CheckpointStore};
use crate::config::{FullDocumentMode, LostHistoryPolicy, SnapshotMode, StreamSettings};
use crate::mapping::{ChangeKind, ChangeMapper, Defect, Mapped, SourceChange};
use crate::metrics::StreamMetrics;
use crate::publisher::{DeadLetter, PublishError, Publisher};
use crate::source::{self, SourceError, SourceMessage, lost_history_reason};

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
    #[error("stream {stream}: {source}")]
    Source {
        /// The stream's name.
        stream: String,
        /// What failed.
        #[source]
        source: SourceError,
    },
    /// MongoDB failed in a way retrying did not fix.
    #[error("stream {stream}: mongodb: {source}")]
    Mongo {
        /// The stream's name.
        stream: String,
        /// The driver's error.
        #[source]
        source: Box<mongodb::error::Error>,
    },
    /// Kafka failed to take or deliver a record.
    #[error("stream {stream}: {source}")]
    Publish {
        /// The stream's name.
        stream: String,
        /// What failed.
        #[source]
        source: Box<PublishError>,
    },
    /// Kafka reported a delivery failure that is not the record's fault.
    #[error("stream {stream}: kafka delivery failed: {source}")]
    Delivery {
        /// The stream's name.
        stream: String,
        /// librdkafka's error.
        #[source]
        source: Box<KafkaError>,
    },
    /// The checkpoint store failed.
    #[error("stream {stream}: {source}")]
    Checkpoint {
        /// The stream's name.
        stream: String,
        /// What failed.
        #[source]
        source: Box<CheckpointError>,
    },
}

/// Records of one source change, in the in-flight queue until Kafka acknowledged all of them.
struct Pending {
    /// Resume token of the change (`None` for snapshot reads).
    token: Option<ResumeToken>,
    position: Option<SourcePosition>,
    /// The change's kind and document `_id` (`None` for collection-level events), so a record the
    /// broker refuses later is dead-lettered with its real origin.
    origin: Option<(ChangeKind, Bson)>,
    deliveries: Vec<DeliveryFuture>,
    once_ids: Vec<String>,
}

/// An event the broker refused as larger than the topic allows.
struct TooLarge {
    topic: String,
    key: String,
    payload: Vec<u8>,
}

/// What to checkpoint next: the newest token whose change, and every earlier one, is acknowledged.
#[derive(Debug, Default)]
struct Acked {
    token: Option<ResumeToken>,
    position: Option<SourcePosition>,
    once_ids: Vec<String>,
    unsaved: Unsaved,
}

/// What moved the token since the last save, which sets how soon it is saved.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Unsaved {
    /// Nothing: the saved checkpoint is current.
    #[default]
    Nothing,
    /// Only idle polls (their post-batch tokens): saved at the idle interval.
    IdleToken,
    /// Acknowledged changes: saved at the checkpoint interval.
    Progress,
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
    checkpoint_interval: Duration,
    idle_checkpoint_interval: Duration,
    shutdown: CancellationToken,
    health: Health,
    in_flight: VecDeque<Pending>,
    in_flight_records: usize,
    acked: Acked,
    last_saved: Instant,
    /// Once-per-id events published by this process (acknowledged or not), so a quick second
    /// change revealing the same fact is dropped before the ledger knows it.
    published_once: HashSet<String>,
    metrics: StreamMetrics,
    /// Applied to every document as it is read, before anything else sees it.
    redaction: Redaction,
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
            .client
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
            checkpoint_interval: context.checkpoint_interval,
            idle_checkpoint_interval: context.idle_checkpoint_interval,
            shutdown: context.shutdown,
            health: context.health,
            in_flight: VecDeque::new(),
            in_flight_records: 0,
            acked: Acked::default(),
            last_saved: Instant::now(),
            published_once: HashSet::new(),
            metrics: StreamMetrics::new(&namespace),
            namespace,
            redaction,
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
                ComponentState::Failing(error.to_string()),
            );
        }
        outcome
    }

    async fn stream(&mut self) -> Result<(), StreamError> {
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
            let change = SourceChange {
                namespace: self.namespace.clone(),
                kind: ChangeKind::Snapshot,
                document_id: raw_id(&document).unwrap_or(Bson::Null),
                full_document: Some(self.redacted(document)),
                position,
                time_ms: now_ms(),
            };
            self.publish_change(change, None).await?;
            done += 1;
            self.metrics.snapshot_progress(done, total);
            if last_report.elapsed() >= Duration::from_secs(2) {
                last_report = Instant::now();
                let rate = done as f64 / started.elapsed().as_secs_f64().max(0.001);
                let eta = total.saturating_sub(done) as f64 / rate.max(0.001);
                tracing::info!(stream = %self.name, done, total, rate = rate as u64, eta_seconds = eta as u64, "snapshot progress");
            }
            self.collect_acked().await?;
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
        let reader = tokio::spawn(source::read(
            self.name.clone(),
            self.collection.clone(),
            stream,
            sink,
            self.settings.clone(),
            self.shutdown.clone(),
        ));
        // Acknowledgements arrive while the stream is quiet too; look at them regularly.
        let mut tick =
            tokio::time::interval(self.checkpoint_interval.min(Duration::from_millis(200)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let outcome = loop {
            let message = tokio::select! {
                () = self.shutdown.cancelled() => break Ok(()),
                _ = tick.tick() => {
                    self.collect_acked().await?;
                    self.save_checkpoint(false).await?;
                    continue;
                }
                message = messages.recv() => message,
            };
            match message {
                Some(SourceMessage::Change(event)) => self.handle_event(*event).await?,
                Some(SourceMessage::Idle(token)) => {
                    self.collect_acked().await?;
                    // Nothing in flight: the stream's own token (a post-batch token on MongoDB)
                    // is safe to save, and keeps an idle stream's checkpoint fresh.
                    if self.in_flight.is_empty()
                        && let Some(token) = token
                        && self.acked.token.as_ref() != Some(&token)
                    {
                        self.acked.token = Some(token);
                        if self.acked.unsaved == Unsaved::Nothing {
                            self.acked.unsaved = Unsaved::IdleToken;
                        }
                    }
                }
                Some(SourceMessage::Failed(SourceError::HistoryLost(reason))) => {
                    break Err(StreamError::HistoryLost {
                        stream: self.name.clone(),
                        reason,
                    });
                }
                Some(SourceMessage::Failed(error)) => {
                    break Err(StreamError::Source {
                        stream: self.name.clone(),
                        source: error,
                    });
                }
                // The reader stops only at shutdown or after reporting a failure.
                None => break Ok(()),
            }
            self.collect_acked().await?;
            self.save_checkpoint(false).await?;
        };
        reader.abort();
        outcome
    }

    /// Handles one change event.
    async fn handle_event(
        &mut self,
        event: ChangeStreamEvent<RawDocumentBuf>,
    ) -> Result<(), StreamError> {
        let kind = match event.operation_type {
            OperationType::Insert => ChangeKind::Insert,
            OperationType::Update => ChangeKind::Update,
            OperationType::Replace => ChangeKind::Replace,
            OperationType::Delete => ChangeKind::Delete,
            other => {
                // drop, rename, dropDatabase, invalidate (the reader reopens after it) and DDL
                // events carry no document. Their tokens still advance the checkpoint.
                if other == OperationType::Invalidate {
                    self.metrics.invalidated();
                }
                tracing::warn!(stream = %self.name, operation = ?other, "collection-level change event");
                self.track(Pending {
                    token: Some(event.id),
                    position: None,
                    origin: None,
                    deliveries: Vec::new(),
                    once_ids: Vec::new(),
                });
                return Ok(());
            }
        };
        let position = event
            .cluster_time
            .map(|ts| SourcePosition {
                seconds: ts.time,
                increment: ts.increment,
            })
            .unwrap_or_default();
        let time_ms = event
            .wall_time
            .map(|t| t.timestamp_millis())
            .unwrap_or_else(|| i64::from(position.seconds) * 1000);
        let document_id = event
            .document_key
            .as_ref()
            .and_then(|key| key.get("_id").cloned())
            .or_else(|| event.full_document.as_deref().and_then(raw_id))
            .unwrap_or(Bson::Null);
        self.metrics.change_read(position, time_ms, now_ms());
        let change = SourceChange {
            namespace: self.namespace.clone(),
            kind,
            document_id,
            full_document: event.full_document.map(|document| self.redacted(document)),
            position,
            time_ms,
        };
        self.publish_change(change, Some(event.id)).await
    }

    /// `document` with its sensitive values replaced by markers (the same buffer when it has
    /// none).
    fn redacted(&self, document: RawDocumentBuf) -> RawDocumentBuf {
        match self.redaction.apply(&document) {
            Cow::Borrowed(_) => document,
            Cow::Owned(redacted) => redacted,
        }
    }

    /// Maps `change` and enqueues its records and dead letters as one in-flight entry.
    async fn publish_change(
        &mut self,
        change: SourceChange,
        token: Option<ResumeToken>,
    ) -> Result<(), StreamError> {
        let mut pending = Pending {
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
                self.remember_once(&mut pending, &event.metadata.id);
            }
            self.metrics.published(&event.topic);
            let delivery = self
                .publisher
                .send_event(&event, &self.shutdown)
                .await
                .map_err(|source| self.publish_error(source))?;
            pending.deliveries.push(delivery);
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
            self.remember_once(&mut pending, &defect.id);
            let letter = DeadLetter {
                change: &change,
                reason: &defect.reason,
                field: &defect.field,
                key: defect.order_guid.as_deref(),
                entry: defect.entry.as_ref(),
            };
            let delivery = self.dead_letter(&letter).await?;
            pending.deliveries.push(delivery);
        }
        self.track(pending);
        while self.in_flight_records >= self.settings.max_in_flight {
            self.await_oldest().await?;
        }
        Ok(())
    }

    /// Records that `id` (a once-per-id event or a defect) is published with `pending`.
    fn remember_once(&mut self, pending: &mut Pending, id: &str) {
        self.published_once.insert(id.to_owned());
        pending.once_ids.push(id.to_owned());
    }

    fn publish_error(&self, source: PublishError) -> StreamError {
        StreamError::Publish {
            stream: self.name.clone(),
            source: Box::new(source),
        }
    }

    async fn dead_letter(&self, letter: &DeadLetter<'_>) -> Result<DeliveryFuture, StreamError> {
        tracing::warn!(stream = %self.name, reason = letter.reason, field = letter.field, "dead letter");
        self.metrics.dead_letter();
        self.publisher
            .send_dead_letter(letter, &self.shutdown)
            .await
            .map_err(|source| self.publish_error(source))
    }

    async fn already_published(&self, id: &str) -> Result<bool, StreamError> {
        if self.published_once.contains(id) {
            return Ok(true);
        }
        self.store
            .was_published(id)
            .await
            .map_err(|e| self.checkpoint_error(e))
    }

    fn track(&mut self, pending: Pending) {
        self.in_flight_records += pending.deliveries.len();
        self.in_flight.push_back(pending);
        self.metrics.in_flight(self.in_flight_records);
    }

    /// Checks one delivery outcome. A record the broker refuses as too large is replaced by a
    /// dead letter (returned, to be awaited in its place); any other failure is fatal.
    fn check_delivery(
        &self,
        outcome: Result<
            rdkafka::producer::future_producer::OwnedDeliveryResult,
            futures::channel::oneshot::Canceled,
        >,
    ) -> Result<Option<TooLarge>, StreamError> {
        match outcome {
            Ok(Ok(_)) => Ok(None),
            Ok(Err((
                KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge),
                message,
            ))) => {
                use rdkafka::message::Message;
                Ok(Some(TooLarge {
                    topic: message.topic().to_owned(),
                    key: String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned(),
                    payload: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                }))
            }
            Ok(Err((source, _))) => Err(StreamError::Delivery {
                stream: self.name.clone(),
                source: Box::new(source),
            }),
            Err(_) => Err(StreamError::Delivery {
                stream: self.name.clone(),
                source: Box::new(KafkaError::Canceled),
            }),
        }
    }

    /// A dead letter in place of an event the broker refused as too large, with the operation,
    /// `_id` and cluster time of the change it came from (`origin`), the event's JSON as the
    /// document and its key as the key.
    async fn replace_too_large(
        &self,
        refused: TooLarge,
        origin: &Pending,
    ) -> Result<DeliveryFuture, StreamError> {
        let TooLarge {
            topic,
            key,
            payload,
        } = refused;
        let document = serde_json::from_slice::<serde_json::Value>(&payload)
            .ok()
            .and_then(|json| mongodb::bson::to_document(&json).ok());
        let (kind, document_id) = origin
            .origin
            .clone()
            .unwrap_or((ChangeKind::Update, Bson::Null));
        let change = SourceChange {
            namespace: self.namespace.clone(),
            kind,
            document_id,
            full_document: document.and_then(|d| RawDocumentBuf::from_document(&d).ok()),
            position: origin.position.unwrap_or_default(),
            time_ms: now_ms(),
        };
        let reason = format!("kafka refused the event for topic {topic} as too large");
        self.dead_letter(&DeadLetter {
            change: &change,
            reason: &reason,
            field: "",
            key: Some(&key),
            entry: None,
        })
        .await
    }

    /// Removes acknowledged entries from the front of the queue, waiting for none.
    async fn collect_acked(&mut self) -> Result<(), StreamError> {
        while let Some(front) = self.in_flight.front_mut() {
            let mut outcomes = Vec::new();
            let mut index = 0;
            while index < front.deliveries.len() {
                match (&mut front.deliveries[index]).now_or_never() {
                    None => index += 1,
                    Some(outcome) => {
                        drop(front.deliveries.swap_remove(index));
                        outcomes.push(outcome);
                    }
                }
            }
            let front_done = front.deliveries.is_empty();
            self.in_flight_records -= outcomes.len();
            for outcome in outcomes {
                if let Some(refused) = self.check_delivery(outcome)? {
                    let Some(front) = self.in_flight.front() else {
                        break;
                    };
                    let replacement = self.replace_too_large(refused, front).await?;
                    if let Some(front) = self.in_flight.front_mut() {
                        front.deliveries.push(replacement);
                    }
                    self.in_flight_records += 1;
                }
            }
            let still_waiting = self
                .in_flight
                .front()
                .is_some_and(|f| !f.deliveries.is_empty());
            if !front_done || still_waiting {
                break;
            }
            if let Some(done) = self.in_flight.pop_front() {
                self.acknowledge(done);
            }
        }
        self.metrics.in_flight(self.in_flight_records);
        Ok(())
    }

    fn acknowledge(&mut self, done: Pending) {
        if let Some(token) = done.token {
            self.acked.token = Some(token);
            self.acked.unsaved = Unsaved::Progress;
        }
        if done.position.is_some() {
            self.acked.position = done.position;
        }
        self.acked.once_ids.extend(done.once_ids);
    }

    /// Waits for every record of the oldest entry.
    async fn await_oldest(&mut self) -> Result<(), StreamError> {
        let Some(mut front) = self.in_flight.pop_front() else {
            return Ok(());
        };
        while let Some(delivery) = front.deliveries.pop() {
            let outcome = delivery.await;
            self.in_flight_records -= 1;
            if let Some(refused) = self.check_delivery(outcome)? {
                let replacement = self.replace_too_large(refused, &front).await?;
                front.deliveries.push(replacement);
                self.in_flight_records += 1;
            }
        }
        self.acknowledge(front);
        self.metrics.in_flight(self.in_flight_records);
        Ok(())
    }

    /// Waits for every record in flight (at shutdown).
    async fn drain(&mut self) -> Result<(), StreamError> {
        while !self.in_flight.is_empty() {
            self.await_oldest().await?;
        }
        Ok(())
    }

    /// Saves the acknowledged token when it changed and the interval passed (or `force`). A token
    /// that only an idle poll moved waits for the longer idle interval: each save is a write to
    /// the source deployment, which moves every stream's token again, so saving it as often as
    /// progress would keep an idle connector writing every second.
    async fn save_checkpoint(&mut self, force: bool) -> Result<(), StreamError> {
        self.metrics.checkpoint_age(self.last_saved.elapsed());
        let interval = match self.acked.unsaved {
            Unsaved::Nothing => return Ok(()),
            Unsaved::IdleToken => self.idle_checkpoint_interval,
            Unsaved::Progress => self.checkpoint_interval,
        };
        if !force && self.last_saved.elapsed() < interval {
            return Ok(());
        }
        let Some(token) = self.acked.token.clone() else {
            return Ok(());
        };
        let once_ids = std::mem::take(&mut self.acked.once_ids);
        self.store
            .save(&self.name, &token, self.acked.position, &once_ids)
            .await
            .map_err(|e| self.checkpoint_error(e))?;
        self.acked.unsaved = Unsaved::Nothing;
        self.last_saved = Instant::now();
        Ok(())
    }
}

/// The `_id` of a raw document, when it has a readable one.
fn raw_id(document: &mongodb::bson::RawDocument) -> Option<Bson> {
    let value = document.get("_id").ok().flatten()?;
    Bson::try_from(value.to_raw_bson()).ok()
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
