//! The connector's metrics. Handles are resolved once per stream, so recording costs no label
//! formatting or registry lookup on the per-event path. Labels are low-cardinality: `collection`
//! (the namespace) on every metric, and `topic` on the event counters; never document ids.

use std::collections::HashMap;
use std::time::Duration;

use metrics::{Counter, Gauge};
use storefront_schemas::metadata::SourcePosition;
use storefront_schemas::topology::Namespace;

/// Metrics of one stream.
#[derive(Debug)]
pub struct StreamMetrics {
    changes_read: Counter,
    last_cluster_time: Gauge,
    seconds_behind: Gauge,
    dead_letters: Counter,
    in_flight: Gauge,
    checkpoint_age: Gauge,
    snapshot_done: Gauge,
    snapshot_estimated: Gauge,
    history_lost: Counter,
    invalidations: Counter,
    published: HashMap<String, Counter>,
    deduplicated: HashMap<String, Counter>,
    collection: String,
}

impl StreamMetrics {
    /// Handles for the stream of `namespace`.
    pub fn new(namespace: &Namespace) -> Self {
        let collection = namespace.to_string();
        let label = || [("collection", collection.clone())];
        Self {
            changes_read: metrics::counter!("cdc_changes_read_total", &label()),
            last_cluster_time: metrics::gauge!("cdc_last_cluster_time_seconds", &label()),
            seconds_behind: metrics::gauge!("cdc_seconds_behind_source", &label()),
            dead_letters: metrics::counter!("cdc_dead_letters_total", &label()),
            in_flight: metrics::gauge!("cdc_in_flight_records", &label()),
            checkpoint_age: metrics::gauge!("cdc_checkpoint_age_seconds", &label()),
            snapshot_done: metrics::gauge!("cdc_snapshot_documents_done", &label()),
            snapshot_estimated: metrics::gauge!("cdc_snapshot_documents_estimated", &label()),
            history_lost: metrics::counter!("cdc_history_lost_total", &label()),
            invalidations: metrics::counter!("cdc_stream_invalidations_total", &label()),
            published: HashMap::new(),
            deduplicated: HashMap::new(),
            collection,
        }
    }

    /// A change was read: counts it and records how far behind the source the stream is.
    pub fn change_read(&self, position: SourcePosition, time_ms: i64, now_ms: i64) {
        self.changes_read.increment(1);
        self.last_cluster_time.set(f64::from(position.seconds));
        self.seconds_behind
            .set((now_ms - time_ms).max(0) as f64 / 1000.0);
    }

    /// An event was handed to Kafka.
    pub fn published(&mut self, topic: &str) {
        counter_for(
            &mut self.published,
            "cdc_events_published_total",
            &self.collection,
            topic,
        )
        .increment(1);
    }

    /// A once-per-id event was dropped because it had been published before.
    pub fn deduplicated(&mut self, topic: &str) {
        counter_for(
            &mut self.deduplicated,
            "cdc_events_deduplicated_total",
            &self.collection,
            topic,
        )
        .increment(1);
    }

    /// A source change went to the dead-letter topic.
    pub fn dead_letter(&self) {
        self.dead_letters.increment(1);
    }

    /// Records awaiting Kafka's acknowledgement.
    pub fn in_flight(&self, records: usize) {
        self.in_flight.set(records as f64);
    }

    /// Time since the stream last saved its checkpoint.
    pub fn checkpoint_age(&self, age: Duration) {
        self.checkpoint_age.set(age.as_secs_f64());
    }

    /// Snapshot progress.
    pub fn snapshot_progress(&self, done: u64, estimated: u64) {
        self.snapshot_done.set(done as f64);
        self.snapshot_estimated.set(estimated as f64);
    }

    /// The stream's resume token was no longer accepted.
    pub fn history_lost(&self) {
        self.history_lost.increment(1);
    }

    /// The stream was invalidated (collection dropped or renamed).
    pub fn invalidated(&self) {
        self.invalidations.increment(1);
    }
}

fn counter_for<'a>(
    cache: &'a mut HashMap<String, Counter>,
    name: &'static str,
    collection: &str,
    topic: &str,
) -> &'a Counter {
    if !cache.contains_key(topic) {
        let counter = metrics::counter!(
            name,
            "collection" => collection.to_owned(),
            "topic" => topic.to_owned(),
        );
        cache.insert(topic.to_owned(), counter);
    }
    &cache[topic]
}
