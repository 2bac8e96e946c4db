//! The projectors' metrics, one function per fact so names and labels stay consistent.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `projector_events_total` | counter | `projector`, `topic`, `outcome` (`applied`, `stale`, `duplicate`, `dead_letter`) |
//! | `projector_apply_duration_seconds` | histogram (rendered as a summary) | `projector` |
//! | `projector_seconds_behind_source` | gauge | `projector` |
//! | `projector_end_to_end_latency_seconds` | histogram (buckets) | `projector`, `topic` |
//! | `projector_consumer_lag` | gauge | `projector`, `topic`, `partition` |
//! | `projector_fetch_stalled_seconds` | gauge: how long the broker has held records for the partition that none of its fetches returned (0 when none wait); `/health` fails at `apply.fetch_stall_ms` | `projector`, `topic`, `partition` |
//! | `projector_dead_letters_total` | counter | `projector`, `topic`, `kind` |
//! | `projector_retries_total` | counter | `projector`, `operation` (`mongo_write`, `dead_letter`) |
//! | `projector_offset_commit_failures_total` | counter | `projector` |
//!
//! Labels are low-cardinality: projector, topic, partition number, outcome; never ids.

use std::time::Duration;

use crate::config::Projector;
use crate::event::PoisonKind;

/// `count` events of `topic` ended as `outcome`.
pub fn events(projector: Projector, topic: &str, outcome: &'static str, count: u64) {
    metrics::counter!(
        "projector_events_total",
        "projector" => projector.name(),
        "topic" => topic.to_owned(),
        "outcome" => outcome,
    )
    .increment(count);
}

/// A batch was applied (MongoDB writes and dead letters acknowledged) in `elapsed`, retries
/// included.
pub fn applied(projector: Projector, elapsed: Duration) {
    metrics::histogram!("projector_apply_duration_seconds", "projector" => projector.name())
        .record(elapsed.as_secs_f64());
}

/// The newest applied event was written at the source at `time_ms`.
pub fn behind_source(projector: Projector, time_ms: i64, now_ms: i64) {
    metrics::gauge!("projector_seconds_behind_source", "projector" => projector.name())
        .set((now_ms - time_ms).max(0) as f64 / 1000.0);
}

/// An event of `topic` written at the source at `time_ms` is now applied: the end-to-end latency
/// from the source's commit (its change's wall time) to the projection, per flow. Only applied
/// events count; a redelivered or stale one says nothing about the pipeline's speed.
pub fn end_to_end(projector: Projector, topic: &str, time_ms: i64, now_ms: i64) {
    metrics::histogram!(
        "projector_end_to_end_latency_seconds",
        "projector" => projector.name(),
        "topic" => topic.to_owned(),
    )
    .record((now_ms - time_ms).max(0) as f64 / 1000.0);
}

/// Records of `topic`/`partition` not yet applied by this instance.
pub fn consumer_lag(projector: Projector, topic: &str, partition: i32, lag: i64) {
    metrics::gauge!(
        "projector_consumer_lag",
        "projector" => projector.name(),
        "topic" => topic.to_owned(),
        "partition" => partition.to_string(),
    )
    .set(lag.max(0) as f64);
}

/// Records of `topic`/`partition` have waited `waited` at the broker while the consumer's
/// fetches returned none ([`crate::fetch_watch`]); zero when none wait.
pub fn fetch_stalled(projector: Projector, topic: &str, partition: i32, waited: Duration) {
    metrics::gauge!(
        "projector_fetch_stalled_seconds",
        "projector" => projector.name(),
        "topic" => topic.to_owned(),
        "partition" => partition.to_string(),
    )
    .set(waited.as_secs_f64());
}

/// A record of `topic` went to the dead-letter topic.
pub fn dead_letter(projector: Projector, topic: &str, kind: PoisonKind) {
    metrics::counter!(
        "projector_dead_letters_total",
        "projector" => projector.name(),
        "topic" => topic.to_owned(),
        "kind" => kind.as_str(),
    )
    .increment(1);
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// A transient failure of `operation` is being retried.
pub fn retry(projector: Projector, operation: &'static str) {
    metrics::counter!(
        "projector_retries_total",
        "projector" => projector.name(),
        "operation" => operation,
    )
    .increment(1);
}

/// An offset commit failed (the offsets are committed again later; a crash before that replays
/// the records, harmlessly).
pub fn commit_failed(projector: Projector) {
    metrics::counter!("projector_offset_commit_failures_total", "projector" => projector.name())
        .increment(1);
}
