//! The connector's metrics, one function per fact so names and labels stay consistent. Labels are
//! low-cardinality: `collection` (the namespace) and `topic`, never document ids.

use std::time::Duration;

use storefront_schemas::metadata::SourcePosition;
use storefront_schemas::topology::Namespace;

/// A change was read from a stream.
pub fn change_read(namespace: &Namespace, position: SourcePosition, time_ms: i64) {
    let collection = namespace.to_string();
    metrics::counter!("cdc_changes_read_total", "collection" => collection.clone()).increment(1);
    metrics::gauge!("cdc_last_cluster_time_seconds", "collection" => collection.clone())
        .set(f64::from(position.seconds));
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default();
    let behind = (now_ms - time_ms).max(0) as f64 / 1000.0;
    metrics::gauge!("cdc_seconds_behind_source", "collection" => collection).set(behind);
}

/// An event was handed to Kafka.
pub fn published(topic: &str) {
    metrics::counter!("cdc_events_published_total", "topic" => topic.to_owned()).increment(1);
}

/// A once-per-id event was dropped because it had been published before.
pub fn deduplicated(topic: &str) {
    metrics::counter!("cdc_events_deduplicated_total", "topic" => topic.to_owned()).increment(1);
}

/// A source change went to the dead-letter topic.
pub fn dead_letter(namespace: &Namespace) {
    metrics::counter!("cdc_dead_letters_total", "collection" => namespace.to_string()).increment(1);
}

/// Records awaiting Kafka's acknowledgement.
pub fn in_flight(namespace: &Namespace, records: usize) {
    metrics::gauge!("cdc_in_flight_records", "collection" => namespace.to_string())
        .set(records as f64);
}

/// Time since the stream last saved its checkpoint.
pub fn checkpoint_age(namespace: &Namespace, age: Duration) {
    metrics::gauge!("cdc_checkpoint_age_seconds", "collection" => namespace.to_string())
        .set(age.as_secs_f64());
}

/// Snapshot progress.
pub fn snapshot_progress(namespace: &Namespace, done: u64, total: u64) {
    let collection = namespace.to_string();
    metrics::gauge!("cdc_snapshot_documents_done", "collection" => collection.clone())
        .set(done as f64);
    metrics::gauge!("cdc_snapshot_documents_estimated", "collection" => collection)
        .set(total as f64);
}

/// A stream's resume token was no longer accepted.
pub fn history_lost(namespace: &Namespace) {
    metrics::counter!("cdc_history_lost_total", "collection" => namespace.to_string()).increment(1);
}

/// A stream was invalidated (collection dropped or renamed).
pub fn invalidated(namespace: &Namespace) {
    metrics::counter!("cdc_stream_invalidations_total", "collection" => namespace.to_string())
        .increment(1);
}
