//! Helpers for tests that must fail when their guarantee breaks: exact record counts instead of
//! "at least", read from the brokers rather than from what a reader happened to receive.
//!
//! - [`record_count`] / [`Watermarks`]: how many records some topics hold now (every partition's
//!   high watermark minus its low watermark).
//! - [`read_all`]: reads every record some topics hold, by that count, so a test can assert on
//!   all of them (no extra record hides behind the one it waited for). Call it once nothing
//!   writes to the topics any more (the process under test stopped, or caught up with a
//!   sentinel read).

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use storefront_plumbing::kafka::TracingContext;

use crate::{DEADLINE, Record, TopicReader, stack, unique};

/// Reads the brokers' watermarks through one consumer connection (made once: cheap to poll).
pub struct Watermarks {
    consumer: BaseConsumer<TracingContext>,
}

impl std::fmt::Debug for Watermarks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watermarks").finish_non_exhaustive()
    }
}

impl Default for Watermarks {
    fn default() -> Self {
        Self::new()
    }
}

impl Watermarks {
    /// A reader of the local stack's (or the external) brokers.
    pub fn new() -> Self {
        let consumer = storefront_plumbing::kafka::consumer_config(
            &stack().kafka_settings(),
            "storefront-tests",
            &unique("watermarks"),
            &[],
        )
        .create_with_context(TracingContext)
        .expect("a consumer for watermarks");
        Self { consumer }
    }

    /// The number of records `topics` hold now: the sum over their partitions of high minus low
    /// watermark. Exact for topics written without transactions (no control records), as every
    /// topic of this project is.
    #[expect(
        clippy::disallowed_methods,
        reason = "a test's synchronous check, waiting on the local broker only"
    )]
    pub fn record_count(&self, topics: &[&str]) -> i64 {
        let timeout = Duration::from_secs(10);
        topics
            .iter()
            .map(|topic| {
                let metadata = retried(&format!("metadata of {topic}"), || {
                    self.consumer.fetch_metadata(Some(topic), timeout)
                });
                let partitions = metadata.topics()[0].partitions();
                assert!(!partitions.is_empty(), "topic {topic} has no partitions");
                partitions
                    .iter()
                    .map(|partition| {
                        let (low, high) =
                            retried(&format!("watermarks of {topic}/{}", partition.id()), || {
                                self.consumer
                                    .fetch_watermarks(topic, partition.id(), timeout)
                            });
                        high - low
                    })
                    .sum::<i64>()
            })
            .sum()
    }
}

/// `call` until it succeeds, for up to [`DEADLINE`]: right after a broker restart (the fault
/// suite restarts Kafka) metadata and watermark requests fail for a while before the broker
/// serves them again. Panics with the last error after the deadline.
fn retried<T>(what: &str, mut call: impl FnMut() -> rdkafka::error::KafkaResult<T>) -> T {
    let started = Instant::now();
    loop {
        match call() {
            Ok(value) => return value,
            Err(error) if started.elapsed() < DEADLINE => {
                eprintln!("{what}: {error} (asking again)");
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(error) => panic!("{what}: {error} (for {DEADLINE:?})"),
        }
    }
}

/// The number of records `topics` hold now (see [`Watermarks::record_count`]).
pub fn record_count(topics: &[&str]) -> i64 {
    Watermarks::new().record_count(topics)
}

/// Reads with `reader` (a reader of exactly `topics`, from their beginning) until it holds every
/// record the topics hold now, and returns them all. Nothing may write to the topics meanwhile.
pub async fn read_all(
    reader: &mut TopicReader,
    topics: &[&str],
    deadline: Duration,
) -> Vec<Record> {
    let total = usize::try_from(record_count(topics)).expect("a record count");
    let records = reader
        .read_until(
            deadline,
            &format!("all {total} records of {topics:?}"),
            |r| r.len() >= total,
        )
        .await;
    assert_eq!(
        records.len(),
        total,
        "read more records of {topics:?} than they hold: something still writes to them"
    );
    records.to_vec()
}
