//! Reading one change stream, in its own task, ahead of the pipeline that publishes.
//!
//! Reading (waiting on MongoDB round trips) and publishing (mapping, serialising, handing to
//! Kafka) overlap: the reader fills a bounded channel while the pipeline works, and waits when it
//! is full, so memory stays bounded and nothing is dropped. The reader owns the stream's
//! lifecycle: it polls with `next_if_any`, each poll one `getMore` that the server holds open until
//! a change arrives or `stream.max_await_ms` passes (MongoDB's awaitData), so an idle stream asks
//! about once a second and a change is read the moment it is written. With a server that answers
//! an empty `getMore` at once instead, it backs off between polls (up to
//! `stream.idle_poll_max_ms`) rather than spin a core. It reopens after an `invalidate` with `startAfter`, and
//! reopens after a failure from the last change it read. Everything it read reaches the pipeline
//! in order, so the pipeline's checkpoints stay exact.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mongodb::Collection;
use mongodb::bson::{Bson, RawDocument, RawDocumentBuf};
use mongodb::change_stream::ChangeStream;
use mongodb::change_stream::event::{ChangeStreamEvent, OperationType, ResumeToken};
use mongodb::error::ErrorKind;
use mongodb::options::FullDocumentType;
use storefront_plumbing::retry::Backoff;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use storefront_schemas::metadata::SourcePosition;
use storefront_schemas::sensitive::Redaction;
use storefront_schemas::topology::Namespace;

use crate::config::{FullDocumentMode, StreamSettings};
use crate::mapping::{ChangeKind, SourceChange};
use crate::watch::{ReadFailure, ReadPoint, StreamWatch};

/// Enables `changeStreamPreAndPostImages` on `collection`, creating it when missing.
pub async fn enable_post_images(
    collection: &Collection<RawDocumentBuf>,
) -> Result<(), mongodb::error::Error> {
    const NAMESPACE_NOT_FOUND: i32 = 26;
    const NAMESPACE_EXISTS: i32 = 48;
    let database = collection
        .client()
        .database(collection.namespace().db.as_str());
    let name = collection.name();
    let enable = mongodb::bson::doc! { "enabled": true };
    let coll_mod =
        mongodb::bson::doc! { "collMod": name, "changeStreamPreAndPostImages": enable.clone() };
    match database.run_command(coll_mod.clone()).await {
        Ok(_) => Ok(()),
        Err(error) if command_code(&error) == Some(NAMESPACE_NOT_FOUND) => {
            let create =
                mongodb::bson::doc! { "create": name, "changeStreamPreAndPostImages": enable };
            match database.run_command(create).await {
                Ok(_) => Ok(()),
                // Created by someone else meanwhile: enable it on theirs.
                Err(error) if command_code(&error) == Some(NAMESPACE_EXISTS) => {
                    database.run_command(coll_mod).await.map(drop)
                }
                Err(error) => Err(error),
            }
        }
        Err(error) => Err(error),
    }
}

fn command_code(error: &mongodb::error::Error) -> Option<i32> {
    match error.kind.as_ref() {
        ErrorKind::Command(command) => Some(command.code),
        _ => None,
    }
}

/// What the reader passes to the pipeline.
#[derive(Debug)]
pub enum SourceMessage {
    /// The next change event.
    Change(Box<SourceEvent>),
    /// The stream had nothing new; its current resume token (a post-batch token on MongoDB) is
    /// safe to checkpoint once everything before it is acknowledged.
    Idle(Option<ResumeToken>),
    /// The stream failed and retrying does not help.
    Failed(SourceError),
}

/// What one change stream event is to the pipeline.
#[derive(Debug)]
pub enum SourceEvent {
    /// A change of one document, already redacted.
    Document {
        /// The change.
        change: SourceChange,
        /// Its resume token.
        token: ResumeToken,
    },
    /// A collection-level event (drop, rename, dropDatabase, invalidate, DDL): it carries no
    /// document, but its token still advances the checkpoint.
    Collection {
        /// What happened.
        operation: OperationType,
        /// Its resume token.
        token: ResumeToken,
    },
}

/// How the reader turns driver events into [`SourceEvent`]s: the stream's namespace and the
/// redaction applied to every document as it is read, before anything else sees it.
#[derive(Debug, Clone)]
pub struct Conversion {
    /// The stream's namespace.
    pub namespace: Namespace,
    /// The source's sensitive fields.
    pub redaction: Redaction,
}

impl Conversion {
    /// `event` as the pipeline sees it. A change without a cluster time (which MongoDB always
    /// reports) gets position zero; without a wall time, its cluster time's seconds.
    pub fn event(&self, event: ChangeStreamEvent<RawDocumentBuf>) -> SourceEvent {
        let kind = match event.operation_type {
            OperationType::Insert => ChangeKind::Insert,
            OperationType::Update => ChangeKind::Update,
            OperationType::Replace => ChangeKind::Replace,
            OperationType::Delete => ChangeKind::Delete,
            operation => {
                return SourceEvent::Collection {
                    operation,
                    token: event.id,
                };
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
        SourceEvent::Document {
            change: SourceChange {
                namespace: self.namespace.clone(),
                kind,
                document_id,
                full_document: event.full_document.map(|document| self.redacted(document)),
                position,
                time_ms,
            },
            token: event.id,
        }
    }

    /// A snapshot read of `document` at `position` (the cluster time the snapshot started at).
    pub fn snapshot(
        &self,
        document: RawDocumentBuf,
        position: SourcePosition,
        time_ms: i64,
    ) -> SourceChange {
        SourceChange {
            namespace: self.namespace.clone(),
            kind: ChangeKind::Snapshot,
            document_id: raw_id(&document).unwrap_or(Bson::Null),
            full_document: Some(self.redacted(document)),
            position,
            time_ms,
        }
    }

    /// `document` with its sensitive values replaced by markers (the same buffer when it has
    /// none).
    fn redacted(&self, document: RawDocumentBuf) -> RawDocumentBuf {
        match self.redaction.apply(&document) {
            Cow::Borrowed(_) => document,
            Cow::Owned(redacted) => redacted,
        }
    }
}

/// The `_id` of a raw document, when it has a readable one.
pub fn raw_id(document: &RawDocument) -> Option<Bson> {
    let value = document.get("_id").ok().flatten()?;
    Bson::try_from(value.to_raw_bson()).ok()
}

/// Why reading stopped.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SourceError {
    /// The server no longer has the history after the token (not retryable).
    #[error("the resume token is no longer accepted: {0}")]
    HistoryLost(String),
    /// An update's post-image is missing: the change predates enabling post-images on the
    /// collection, or they were disabled (not retryable).
    #[error(
        "a change has no post-image ({0}); enable changeStreamPreAndPostImages on the collection, \
         or set stream.full_document = \"lookup\""
    )]
    PostImageMissing(String),
}

/// Server error code for a required post-image that was not recorded (NoMatchingDocument).
const POST_IMAGE_MISSING_CODE: i32 = 47;

/// A fatal reading error, when `error` is one.
pub fn fatal_source_error(error: &mongodb::error::Error) -> Option<SourceError> {
    if let Some(reason) = lost_history_reason(error) {
        return Some(SourceError::HistoryLost(reason));
    }
    match error.kind.as_ref() {
        ErrorKind::Command(command) if command.code == POST_IMAGE_MISSING_CODE => Some(
            SourceError::PostImageMissing(format!("{} (code {})", command.message, command.code)),
        ),
        _ => None,
    }
}

/// Server error codes meaning the resume point is gone: ChangeStreamFatalError (280),
/// ChangeStreamHistoryLost (286), CappedPositionLost (136).
const LOST_HISTORY_CODES: [i32; 3] = [280, 286, 136];

/// The server's words when `error` means the resume point is gone.
pub fn lost_history_reason(error: &mongodb::error::Error) -> Option<String> {
    match error.kind.as_ref() {
        ErrorKind::Command(command) if LOST_HISTORY_CODES.contains(&command.code) => {
            Some(format!("{} (code {})", command.message, command.code))
        }
        _ => None,
    }
}

/// The client the change streams (and the unread-change probe) run on: the process's settings
/// with retryable reads off. mongodb 3.9.1 retries a failed resume `aggregate` without its resume
/// token (`ChangeStreamAggregate::build` takes it on the first attempt), so the retry reopens the
/// stream where it was first opened: every change since is read again, and on a real replica set
/// that point may be gone from the oplog. Without the retry the failure reaches the reader, which
/// reopens after the last change it read. Found by the fault suite (`tests/tests/faults.rs`).
pub async fn change_stream_client(
    settings: &storefront_plumbing::settings::MongoSettings,
    app_name: &str,
) -> Result<mongodb::Client, storefront_plumbing::mongo::MongoConnectError> {
    let mut options = storefront_plumbing::mongo::options(settings, app_name).await?;
    options.retry_reads = Some(false);
    mongodb::Client::with_options(options)
        .map_err(storefront_plumbing::mongo::MongoConnectError::InvalidUri)
}

/// Opens a change stream on `collection` as `settings` say (which document update events carry,
/// how long an empty `getMore` waits): after `token` when given (`startAfter`, which also
/// accepts an invalidate's token), else at the current time.
pub async fn open(
    collection: &Collection<RawDocumentBuf>,
    settings: &StreamSettings,
    token: Option<ResumeToken>,
) -> Result<ChangeStream<ChangeStreamEvent<RawDocumentBuf>>, mongodb::error::Error> {
    let full_document = match settings.full_document {
        FullDocumentMode::PostImage => FullDocumentType::Required,
        FullDocumentMode::Lookup => FullDocumentType::UpdateLookup,
    };
    let watch = collection
        .watch()
        .full_document(full_document)
        .max_await_time(Duration::from_millis(settings.max_await_ms));
    match token {
        Some(token) => watch.start_after(token).await,
        None => watch.await,
    }
}

/// What the reader task needs besides the stream.
#[derive(Debug)]
pub struct ReaderContext {
    /// The stream's name (its namespace).
    pub name: String,
    /// The watched collection, to reopen the stream on.
    pub collection: Collection<RawDocumentBuf>,
    /// Driver events to source changes.
    pub conversion: Conversion,
    /// Where read changes go, in order.
    pub sink: mpsc::Sender<SourceMessage>,
    /// Stream settings.
    pub settings: StreamSettings,
    /// Process shutdown.
    pub shutdown: CancellationToken,
    /// Where the reader reports what it read and how MongoDB answers.
    pub watch: Arc<StreamWatch>,
}

/// Reads `stream` until shutdown, the pipeline going away, or a fatal error.
///
/// A failed read is counted (`cdc_source_errors_total{collection, resumable}`) and logged, and
/// the stream reopened after the last change read, with backoff; one that resuming cannot fix
/// (other than lost history, which stops the stream) is logged as an error and shows the stream
/// failing in `/health` until a read succeeds again.
pub async fn read(
    context: ReaderContext,
    mut stream: ChangeStream<ChangeStreamEvent<RawDocumentBuf>>,
) {
    let errors = ReadErrors::new(&context.name);
    let mut reader = Reader {
        context,
        failures: Backoff::default(),
    };
    let mut idle = Backoff::new(
        Duration::from_millis(5),
        Duration::from_millis(reader.context.settings.idle_poll_max_ms),
    );
    // An empty poll that took at least this long was a server waiting for a change (awaitData).
    let server_waited = Duration::from_millis(reader.context.settings.max_await_ms / 2);
    if let Some(token) = stream.resume_token() {
        reader.context.watch.read(ReadPoint {
            token,
            cluster_time: None,
        });
    }
    loop {
        let started = Instant::now();
        reader.context.watch.asking();
        let polled = tokio::select! {
            () = reader.context.shutdown.cancelled() => return,
            polled = stream.next_if_any() => polled,
        };
        if polled.is_ok() {
            reader.context.watch.answered();
            reader.failures.reset();
        }
        let reopen_after = match polled {
            Ok(Some(event)) => {
                idle.reset();
                let invalidated = event.operation_type == OperationType::Invalidate;
                let token = event.id.clone();
                reader.context.watch.read(ReadPoint {
                    token: token.clone(),
                    cluster_time: event.cluster_time,
                });
                if reader
                    .context
                    .sink
                    .send(SourceMessage::Change(Box::new(
                        reader.context.conversion.event(event),
                    )))
                    .await
                    .is_err()
                {
                    return;
                }
                if !invalidated {
                    continue;
                }
                // The collection was dropped or renamed; a new one of the same name streams on
                // from here. A new collection has no post-images until they are enabled again:
                // do it now, creating the collection if nobody has yet, so its first update
                // already records one.
                reader.reenable_post_images().await;
                Some(token)
            }
            Ok(None) => {
                if reader
                    .context
                    .sink
                    .send(SourceMessage::Idle(stream.resume_token()))
                    .await
                    .is_err()
                {
                    return;
                }
                if started.elapsed() >= server_waited {
                    // The server held the getMore until maxAwaitTimeMS: ask again at once, and a
                    // change will answer the moment it is written.
                    idle.reset();
                    continue;
                }
                // The server answered at once: pause, or this loop would spin a core.
                let pause = idle.next_delay();
                tokio::select! {
                    () = reader.context.shutdown.cancelled() => return,
                    () = tokio::time::sleep(pause) => {}
                }
                continue;
            }
            Err(error) => {
                if reader.report_if_fatal(&error).await {
                    return;
                }
                // The driver already resumed once on a resumable error. Reopen after the last
                // change read (not the last checkpoint: those changes are already in flight),
                // after a pause, so a refusal that persists is not asked again in a tight loop.
                errors.record(&reader.context, &error, "reading the change stream failed");
                let pause = reader.failures.next_delay();
                tokio::select! {
                    () = reader.context.shutdown.cancelled() => return,
                    () = tokio::time::sleep(pause) => {}
                }
                stream.resume_token()
            }
        };
        match reader.reopen(reopen_after, &errors).await {
            Some(reopened) => stream = reopened,
            None => return,
        }
    }
}

/// Whether reopening a change stream may fix `error`, as MongoDB's drivers decide: any failure
/// that is not a server's answer (network, timeouts), `CursorNotFound`, or a server error labelled
/// `ResumableChangeStreamError`.
pub fn is_resumable(error: &mongodb::error::Error) -> bool {
    const CURSOR_NOT_FOUND: i32 = 43;
    match error.kind.as_ref() {
        ErrorKind::Command(command) => {
            command.code == CURSOR_NOT_FOUND || error.contains_label("ResumableChangeStreamError")
        }
        _ => true,
    }
}

/// Whether `error` is MongoDB being unreachable or not answering in time (no server answered),
/// which passes when the server is back.
pub fn is_transient(error: &mongodb::error::Error) -> bool {
    matches!(
        error.kind.as_ref(),
        ErrorKind::Io(_)
            | ErrorKind::ServerSelection { .. }
            | ErrorKind::ConnectionPoolCleared { .. }
    ) || error.contains_label("RetryableWriteError")
}

/// The `cdc_source_errors_total{collection, resumable}` counters of one stream.
struct ReadErrors {
    resumable: metrics::Counter,
    other: metrics::Counter,
}

impl ReadErrors {
    fn new(stream: &str) -> Self {
        let counter = |resumable: &'static str| metrics::counter!("cdc_source_errors_total", "collection" => stream.to_owned(), "resumable" => resumable);
        Self {
            resumable: counter("true"),
            other: counter("false"),
        }
    }

    /// Counts, logs and reports a failed read or reopen.
    fn record(&self, context: &ReaderContext, error: &mongodb::error::Error, what: &str) {
        let resumable = is_resumable(error);
        let reason = storefront_plumbing::errors::chain(error);
        if resumable {
            self.resumable.increment(1);
            tracing::warn!(stream = %context.name, error = %reason, "{what}; trying again");
        } else {
            self.other.increment(1);
            tracing::error!(stream = %context.name, error = %reason, "{what}, and resuming cannot fix it; retrying until it is fixed");
        }
        context.watch.failed(ReadFailure { reason, resumable });
    }
}

/// The reader task's state besides the stream itself.
struct Reader {
    context: ReaderContext,
    failures: Backoff,
}

impl Reader {
    /// Passes a fatal `error` on to the pipeline; `true` when it was one.
    async fn report_if_fatal(&self, error: &mongodb::error::Error) -> bool {
        match fatal_source_error(error) {
            Some(fatal) => {
                let _ = self.context.sink.send(SourceMessage::Failed(fatal)).await;
                true
            }
            None => false,
        }
    }

    async fn reenable_post_images(&self) {
        if self.context.settings.full_document == FullDocumentMode::PostImage
            && self.context.settings.enable_post_images
            && let Err(error) = enable_post_images(&self.context.collection).await
        {
            tracing::warn!(stream = %self.context.name, %error, "re-enabling post-images after the collection was dropped failed");
        }
    }

    /// Reopens after `token`, retrying with backoff; `None` on shutdown or a fatal error
    /// (reported).
    async fn reopen(
        &mut self,
        token: Option<ResumeToken>,
        errors: &ReadErrors,
    ) -> Option<ChangeStream<ChangeStreamEvent<RawDocumentBuf>>> {
        loop {
            self.context.watch.asking();
            match open(
                &self.context.collection,
                &self.context.settings,
                token.clone(),
            )
            .await
            {
                Ok(stream) => return Some(stream),
                Err(error) => {
                    if self.report_if_fatal(&error).await {
                        return None;
                    }
                    errors.record(&self.context, &error, "reopening the change stream failed");
                    let pause = self.failures.next_delay();
                    tokio::select! {
                        () = self.context.shutdown.cancelled() => return None,
                        () = tokio::time::sleep(pause) => {}
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use mongodb::bson::{DateTime, Document, Timestamp, doc};
    use storefront_schemas::sensitive::SensitiveFields;

    use super::*;
    use crate::config::WatchedSource;

    fn conversion() -> Conversion {
        Conversion {
            namespace: Namespace::new("customer", "accounts"),
            redaction: WatchedSource::Accounts.redaction(&SensitiveFields::default()),
        }
    }

    /// A driver event as the server sends it.
    fn event(fields: Document) -> ChangeStreamEvent<RawDocumentBuf> {
        let mut event = doc! { "_id": { "_data": "token-1" } };
        event.extend(fields);
        mongodb::bson::from_document(event).unwrap()
    }

    fn full_document(change: &SourceChange) -> Document {
        Document::try_from(change.full_document.as_deref().unwrap()).unwrap()
    }

    #[test]
    fn driver_events_become_source_changes() {
        let at = Timestamp {
            time: 1_764_000_000,
            increment: 7,
        };
        // (case, event fields, expected kind, _id, position, time in ms)
        let cases: Vec<(&str, Document, ChangeKind, Bson, SourcePosition, i64)> = vec![
            (
                "insert, wall time given",
                doc! {
                    "operationType": "insert", "clusterTime": at,
                    "wallTime": DateTime::from_millis(1_764_000_000_123),
                    "documentKey": { "_id": 1 }, "fullDocument": { "_id": 1, "name": "a" },
                },
                ChangeKind::Insert,
                Bson::Int32(1),
                SourcePosition {
                    seconds: 1_764_000_000,
                    increment: 7,
                },
                1_764_000_000_123,
            ),
            (
                "update without a wall time: the cluster time's seconds",
                doc! {
                    "operationType": "update", "clusterTime": at,
                    "documentKey": { "_id": "a-string-id" },
                    "fullDocument": { "_id": "a-string-id" },
                },
                ChangeKind::Update,
                Bson::String("a-string-id".into()),
                SourcePosition {
                    seconds: 1_764_000_000,
                    increment: 7,
                },
                1_764_000_000_000,
            ),
            (
                "replace without a document key: the document's _id",
                doc! {
                    "operationType": "replace", "clusterTime": at,
                    "fullDocument": { "_id": 5_i64 },
                },
                ChangeKind::Replace,
                Bson::Int64(5),
                SourcePosition {
                    seconds: 1_764_000_000,
                    increment: 7,
                },
                1_764_000_000_000,
            ),
            (
                "delete without a cluster time",
                doc! { "operationType": "delete", "documentKey": { "_id": 9 } },
                ChangeKind::Delete,
                Bson::Int32(9),
                SourcePosition::default(),
                0,
            ),
        ];
        for (case, fields, kind, id, position, time_ms) in cases {
            let SourceEvent::Document { change, token } = conversion().event(event(fields)) else {
                panic!("{case}: not a document change");
            };
            assert_eq!(change.kind, kind, "{case}");
            assert_eq!(change.document_id, id, "{case}");
            assert_eq!(change.position, position, "{case}");
            assert_eq!(change.time_ms, time_ms, "{case}");
            assert_eq!(change.namespace, conversion().namespace, "{case}");
            assert_eq!(
                token,
                mongodb::bson::from_bson::<ResumeToken>(Bson::Document(
                    doc! { "_data": "token-1" }
                ))
                .unwrap(),
                "{case}"
            );
        }
    }

    #[test]
    fn collection_level_events_keep_their_token_and_operation() {
        for (name, operation) in [
            ("drop", OperationType::Drop),
            ("rename", OperationType::Rename),
            ("dropDatabase", OperationType::DropDatabase),
            ("invalidate", OperationType::Invalidate),
        ] {
            let converted = conversion().event(event(doc! { "operationType": name }));
            let SourceEvent::Collection {
                operation: got,
                token,
            } = converted
            else {
                panic!("{name}: {converted:?}");
            };
            assert_eq!(got, operation, "{name}");
            assert_eq!(
                mongodb::bson::to_bson(&token).unwrap(),
                Bson::Document(doc! { "_data": "token-1" }),
                "{name}"
            );
        }
    }

    #[test]
    fn documents_are_redacted_as_they_are_read() {
        let card = doc! { "number": "4111111111111111", "expiry": "12/30" };
        let SourceEvent::Document { change, .. } = conversion().event(event(doc! {
            "operationType": "insert",
            "documentKey": { "_id": 1 },
            "fullDocument": { "_id": 1, "creditCards": [card.clone()] },
        })) else {
            panic!("not a document change");
        };
        let streamed = full_document(&change);
        let snapshot = conversion().snapshot(
            RawDocumentBuf::from_document(&doc! { "_id": 2, "creditCards": [card] }).unwrap(),
            SourcePosition::default(),
            0,
        );
        assert_eq!(snapshot.kind, ChangeKind::Snapshot);
        assert_eq!(snapshot.document_id, Bson::Int32(2));
        for document in [streamed, full_document(&snapshot)] {
            let text = document.to_string();
            assert!(!text.contains("4111111111111111"), "{text}");
            assert!(text.contains("[redacted"), "{text}");
        }
    }
}
