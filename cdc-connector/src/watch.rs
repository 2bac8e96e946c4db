//! Whatever stops a stream shows in `/health` and in metrics within a bounded time, and clears
//! when the stream moves again. Nothing here drops or skips a change: it only reports.
//!
//! Each stream has one watch task of its own, so it reports even while the pipeline is blocked
//! on backpressure or the reader on MongoDB. It reports the stream's component failing when:
//! - **Kafka does not acknowledge**: the oldest record in flight has waited
//!   `stream.delivery_stall_ms` (metric `cdc_oldest_unacknowledged_seconds`).
//! - **MongoDB does not answer**: a read (a `getMore`, or reopening the stream) has gone
//!   unanswered for `stream.read_stall_ms`, or MongoDB refused it with an error that resuming
//!   cannot fix, such as `Unauthorized` (at once; the reader keeps retrying with backoff)
//!   (metrics `cdc_source_unanswered_seconds`, `cdc_source_errors_total`).
//! - **Changes are left unread**: every `stream.unread_check_ms` a probe opens a second change
//!   stream just after the last change the stream read; when it finds a later change and the
//!   stream has still not read it `stream.read_stall_ms` later, the stream is stuck while it may
//!   report itself idle, as with a cursor that answers for another collection (metric
//!   `cdc_unread_change_seconds`). The probe costs one short `aggregate` per check.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use mongodb::Collection;
use mongodb::bson::{RawDocumentBuf, Timestamp};
use mongodb::change_stream::event::ResumeToken;
use storefront_plumbing::telemetry::{ComponentState, Health};

/// An instant published through an atomic: milliseconds since `origin` plus one, 0 for none.
#[derive(Debug)]
struct SharedInstant {
    origin: Instant,
    value: AtomicU64,
}

impl SharedInstant {
    fn new(origin: Instant) -> Self {
        Self {
            origin,
            value: AtomicU64::new(0),
        }
    }

    fn encode(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.origin).as_millis()).unwrap_or(u64::MAX - 1)
            + 1
    }

    fn set(&self, at: Option<Instant>) {
        let value = at.map_or(0, |at| self.encode(at));
        self.value.store(value, Ordering::Relaxed);
    }

    /// Sets `at` unless an instant is already set (the start of a streak is kept).
    fn set_if_none(&self, at: Instant) {
        let _ =
            self.value
                .compare_exchange(0, self.encode(at), Ordering::Relaxed, Ordering::Relaxed);
    }

    /// Time since the instant, if one is set.
    fn elapsed(&self) -> Option<Duration> {
        match self.value.load(Ordering::Relaxed) {
            0 => None,
            value => Some(
                self.origin
                    .elapsed()
                    .saturating_sub(Duration::from_millis(value - 1)),
            ),
        }
    }
}

/// A read MongoDB refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadFailure {
    /// The error with its causes.
    pub reason: String,
    /// Whether reopening the stream may fix it (MongoDB's resumable change stream errors and
    /// network failures).
    pub resumable: bool,
}

/// Where the stream has read up to: the resume token of the last change read (or the one it was
/// opened with) and that change's cluster time.
#[derive(Debug, Clone)]
pub struct ReadPoint {
    /// Resume token after which every change is unread.
    pub token: ResumeToken,
    /// Cluster time of the last change read; `None` before the first.
    pub cluster_time: Option<Timestamp>,
}

/// A change the probe found after the stream's read point.
#[derive(Debug, Clone, Copy)]
struct Unread {
    cluster_time: Timestamp,
    found_at: Instant,
}

/// The state the watch task reads, written by the pipeline, the reader and the probe.
#[derive(Debug)]
pub struct StreamWatch {
    /// When the oldest change still waiting for Kafka entered the in-flight queue.
    delivery_waiting: SharedInstant,
    /// Records not yet acknowledged.
    records: AtomicUsize,
    /// Whether the stream is open (its component is then ready when nothing stalls).
    ready: AtomicBool,
    /// Since when a read has gone unanswered (kept across failed attempts).
    read_waiting: SharedInstant,
    /// The last error of the current unanswered streak.
    read_failure: Mutex<Option<ReadFailure>>,
    /// What the stream has read.
    read_point: Mutex<Option<ReadPoint>>,
    /// A change the probe found that the stream had not read then.
    unread: Mutex<Option<Unread>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Default for StreamWatch {
    fn default() -> Self {
        let origin = Instant::now();
        Self {
            delivery_waiting: SharedInstant::new(origin),
            records: AtomicUsize::new(0),
            ready: AtomicBool::new(false),
            read_waiting: SharedInstant::new(origin),
            read_failure: Mutex::new(None),
            read_point: Mutex::new(None),
            unread: Mutex::new(None),
        }
    }
}

impl StreamWatch {
    /// The pipeline's in-flight queue changed.
    pub fn delivery(&self, oldest_waiting_since: Option<Instant>, records: usize) {
        self.delivery_waiting.set(oldest_waiting_since);
        self.records.store(records, Ordering::Relaxed);
    }

    /// The stream is open (snapshot done).
    pub fn opened(&self) {
        self.ready.store(true, Ordering::Relaxed);
    }

    /// The reader asks MongoDB (a poll or a reopen).
    pub fn asking(&self) {
        self.read_waiting.set_if_none(Instant::now());
    }

    /// A poll was answered: MongoDB serves the stream again.
    pub fn answered(&self) {
        self.read_waiting.set(None);
        *lock(&self.read_failure) = None;
    }

    /// MongoDB refused a read (the streak of unanswered reads goes on).
    pub fn failed(&self, failure: ReadFailure) {
        self.read_waiting.set_if_none(Instant::now());
        *lock(&self.read_failure) = Some(failure);
    }

    /// The stream read a change (or was opened at a point, when it has read none yet).
    pub fn read(&self, point: ReadPoint) {
        let mut current = lock(&self.read_point);
        if point.cluster_time.is_some() || current.is_none() {
            *current = Some(point);
        }
    }

    fn read_point(&self) -> Option<ReadPoint> {
        lock(&self.read_point).clone()
    }

    /// A change the stream has not read, found `found_for` ago, if any is still unread.
    fn unread_for(&self) -> Option<(Timestamp, Duration)> {
        let mut unread = lock(&self.unread);
        let found = (*unread)?;
        let read_past = self
            .read_point()
            .and_then(|point| point.cluster_time)
            .is_some_and(|read| read >= found.cluster_time);
        if read_past {
            *unread = None;
            return None;
        }
        Some((found.cluster_time, found.found_at.elapsed()))
    }
}

/// The limits the watch reports against.
#[derive(Debug, Clone, Copy)]
pub struct StallLimits {
    /// How long the oldest record may wait for Kafka.
    pub delivery: Duration,
    /// How long a read may go unanswered, and a change found by the probe stay unread.
    pub read: Duration,
}

/// Reports the stream's component failing while any stall condition holds, and as before
/// (`ready` once open, else `starting`) when none does.
pub async fn watch(
    stream: String,
    component: String,
    health: Health,
    watch: Arc<StreamWatch>,
    limits: StallLimits,
) {
    let oldest_wait =
        metrics::gauge!("cdc_oldest_unacknowledged_seconds", "collection" => stream.clone());
    let unanswered =
        metrics::gauge!("cdc_source_unanswered_seconds", "collection" => stream.clone());
    let unread_gauge = metrics::gauge!("cdc_unread_change_seconds", "collection" => stream.clone());
    let shortest = limits.delivery.min(limits.read);
    let mut tick = tokio::time::interval(
        (shortest / 4).clamp(Duration::from_millis(50), Duration::from_secs(1)),
    );
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut reported: Option<String> = None;
    loop {
        tick.tick().await;
        let mut problems = Vec::new();

        let waited = watch.delivery_waiting.elapsed();
        oldest_wait.set(waited.map_or(0.0, |waited| waited.as_secs_f64()));
        if let Some(waited) = waited.filter(|waited| *waited >= limits.delivery) {
            let records = watch.records.load(Ordering::Relaxed);
            problems.push(format!(
                "kafka has not acknowledged {records} records, the oldest for {} s",
                waited.as_secs()
            ));
        }

        let unanswered_for = watch.read_waiting.elapsed();
        unanswered.set(unanswered_for.map_or(0.0, |waited| waited.as_secs_f64()));
        let failure = lock(&watch.read_failure).clone();
        match (unanswered_for, failure) {
            (_, Some(failure)) if !failure.resumable => problems.push(format!(
                "mongodb refuses to serve the change stream (retrying): {}",
                failure.reason
            )),
            (Some(waited), failure) if waited >= limits.read => {
                let last_error = failure.map_or_else(String::new, |failure| {
                    format!("; last error: {}", failure.reason)
                });
                problems.push(format!(
                    "mongodb has not answered the change stream for {} s{last_error}",
                    waited.as_secs()
                ));
            }
            _ => {}
        }

        let unread = watch.unread_for();
        unread_gauge.set(unread.map_or(0.0, |(_, waited)| waited.as_secs_f64()));
        if let Some((cluster_time, waited)) = unread.filter(|(_, waited)| *waited >= limits.read) {
            problems.push(format!(
                "the collection has a change at cluster time {}.{} that the stream has not read \
                 {} s after it was found",
                cluster_time.time,
                cluster_time.increment,
                waited.as_secs()
            ));
        }

        if problems.is_empty() {
            if reported.take().is_some() {
                tracing::info!(stream = %stream, "the stream moves again");
                let state = if watch.ready.load(Ordering::Relaxed) {
                    ComponentState::Ready
                } else {
                    ComponentState::Starting
                };
                health.set(&component, state);
            }
            continue;
        }
        let reason = problems.join("; ");
        if reported.is_none() {
            tracing::warn!(stream = %stream, %reason, "the stream is stalled (no change is dropped)");
        }
        // Set on every tick: the pipeline may have set its own state meanwhile.
        health.set(&component, ComponentState::Failing(reason.clone()));
        reported = Some(reason);
    }
}

/// Looks for changes the stream has not read: every `interval`, when no earlier finding is
/// pending, opens a change stream on `collection` just after the stream's read point and
/// records the first change it returns. The watch reports it once it stays unread too long.
/// Probe failures are only logged at debug level: the stream's own reads report MongoDB's
/// state.
pub async fn probe_unread(
    stream: String,
    collection: Collection<RawDocumentBuf>,
    watch: Arc<StreamWatch>,
    interval: Duration,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        if watch.unread_for().is_some() {
            continue;
        }
        let Some(point) = watch.read_point() else {
            continue;
        };
        match first_change_after(&collection, &point, interval).await {
            Ok(Some(cluster_time)) => {
                *lock(&watch.unread) = Some(Unread {
                    cluster_time,
                    found_at: Instant::now(),
                });
            }
            Ok(None) => {}
            Err(error) => {
                tracing::debug!(stream = %stream, %error, "probing for unread changes failed");
            }
        }
    }
}

/// The cluster time of the first change after `point`, if the server has one now.
async fn first_change_after(
    collection: &Collection<RawDocumentBuf>,
    point: &ReadPoint,
    limit: Duration,
) -> Result<Option<Timestamp>, mongodb::error::Error> {
    let probe = async {
        let mut changes = collection
            .watch()
            .start_after(point.token.clone())
            .batch_size(16)
            .max_await_time(Duration::from_millis(100))
            .await?;
        // The first batch may come back empty while the server scans; one getMore follows.
        for _ in 0..2 {
            while let Some(change) = changes.next_if_any().await? {
                if let Some(cluster_time) = change.cluster_time {
                    return Ok(Some(cluster_time));
                }
            }
        }
        Ok(None)
    };
    tokio::time::timeout(limit, probe).await.unwrap_or(Ok(None))
}

#[cfg(test)]
mod tests {
    use mongodb::bson::doc;

    use super::*;

    const LIMIT: Duration = Duration::from_millis(150);

    fn token() -> ResumeToken {
        mongodb::bson::from_document(doc! { "_data": "00" }).unwrap()
    }

    fn at(time: u32) -> Option<Timestamp> {
        Some(Timestamp { time, increment: 1 })
    }

    /// Polls the component's state until `expected` holds, or panics with the last state.
    async fn until(health: &Health, expected: impl Fn(&ComponentState) -> bool) -> ComponentState {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let state = health.snapshot().get("stream s").cloned();
            if let Some(state) = state.filter(|state| expected(state)) {
                return state;
            }
            assert!(
                Instant::now() < deadline,
                "last state: {:?}",
                health.snapshot()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn failing_with(text: &'static str) -> impl Fn(&ComponentState) -> bool {
        move |state| matches!(state, ComponentState::Failing(reason) if reason.contains(text))
    }

    fn started() -> (Health, Arc<StreamWatch>, tokio::task::JoinHandle<()>) {
        let health = Health::new();
        let state = Arc::new(StreamWatch::default());
        state.opened();
        health.set("stream s", ComponentState::Ready);
        let task = tokio::spawn(watch(
            "s".into(),
            "stream s".into(),
            health.clone(),
            state.clone(),
            StallLimits {
                delivery: LIMIT,
                read: LIMIT,
            },
        ));
        (health, state, task)
    }

    #[tokio::test]
    async fn an_unanswered_read_fails_the_stream_until_an_answer() {
        let (health, state, task) = started();
        state.asking();
        until(&health, failing_with("mongodb has not answered")).await;
        state.failed(ReadFailure {
            reason: "connection refused".into(),
            resumable: true,
        });
        until(&health, failing_with("last error: connection refused")).await;
        // Asking again keeps the streak: the failure is not reset by a new attempt.
        state.asking();
        until(&health, failing_with("last error: connection refused")).await;
        state.answered();
        until(&health, |state| *state == ComponentState::Ready).await;
        task.abort();
    }

    #[tokio::test]
    async fn a_refusal_resuming_cannot_fix_fails_the_stream_at_once() {
        let (health, state, task) = started();
        state.failed(ReadFailure {
            reason: "not authorized (code 13)".into(),
            resumable: false,
        });
        until(&health, failing_with("refuses to serve the change stream")).await;
        state.answered();
        until(&health, |state| *state == ComponentState::Ready).await;
        task.abort();
    }

    #[tokio::test]
    async fn a_change_left_unread_fails_the_stream_until_it_is_read() {
        let (health, state, task) = started();
        state.read(ReadPoint {
            token: token(),
            cluster_time: at(10),
        });
        *lock(&state.unread) = Some(Unread {
            cluster_time: at(12).unwrap(),
            found_at: Instant::now(),
        });
        until(&health, failing_with("change at cluster time 12.1")).await;
        // Reading an earlier change does not clear it; reading it does.
        state.read(ReadPoint {
            token: token(),
            cluster_time: at(11),
        });
        assert!(state.unread_for().is_some());
        state.read(ReadPoint {
            token: token(),
            cluster_time: at(12),
        });
        until(&health, |state| *state == ComponentState::Ready).await;
        assert!(state.unread_for().is_none());
        task.abort();
    }

    #[test]
    fn an_opening_token_never_replaces_a_change_read() {
        let state = StreamWatch::default();
        state.read(ReadPoint {
            token: token(),
            cluster_time: None,
        });
        state.read(ReadPoint {
            token: token(),
            cluster_time: at(5),
        });
        state.read(ReadPoint {
            token: token(),
            cluster_time: None,
        });
        assert_eq!(state.read_point().unwrap().cluster_time, at(5));
    }

    #[tokio::test]
    async fn records_waiting_for_kafka_fail_the_stream_until_acknowledged() {
        let (health, state, task) = started();
        state.delivery(Some(Instant::now()), 7);
        until(
            &health,
            failing_with("kafka has not acknowledged 7 records"),
        )
        .await;
        state.delivery(None, 0);
        until(&health, |state| *state == ComponentState::Ready).await;
        task.abort();
    }
}
