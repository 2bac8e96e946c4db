//! librdkafka's blocking calls, run off the async runtime. This is the one module allowed to make
//! them: `clippy.toml` (`disallowed-methods`) refuses them everywhere else.
//!
//! Each of these calls waits on the network, up to its timeout (a synchronous commit, a flush, a
//! metadata or watermark request). On a runtime thread that wait would stall every other task the
//! thread runs: another stream, the HTTP endpoint, timers. Here the wait runs on tokio's blocking
//! pool, so each function takes its client by `Arc` (a producer by clone, which shares its
//! client). A panic inside a call is resumed in the caller, as if it had been called in place.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::TopicPartitionList;
use rdkafka::client::{Client, ClientContext};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::KafkaResult;
use rdkafka::metadata::Metadata;
use rdkafka::producer::{Producer, ProducerContext};

/// Runs `call` on the blocking pool and returns its result, resuming its panic if it panicked.
async fn off_runtime<T: Send + 'static>(call: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(call)
        .await
        .unwrap_or_else(|join_error| std::panic::resume_unwind(join_error.into_panic()))
}

/// Waits until every record `producer` holds is delivered or `timeout` passes.
#[expect(clippy::disallowed_methods, reason = "this module is the wrapper")]
pub async fn flush<P, C>(producer: P, timeout: Duration) -> KafkaResult<()>
where
    P: Producer<C> + Send + 'static,
    C: ProducerContext,
{
    off_runtime(move || producer.flush(timeout)).await
}

/// Commits `offsets` for `consumer`'s group and waits for the broker's answer.
#[expect(clippy::disallowed_methods, reason = "this module is the wrapper")]
pub async fn commit<K, C>(consumer: &Arc<K>, offsets: TopicPartitionList) -> KafkaResult<()>
where
    K: Consumer<C> + Send + Sync + 'static,
    C: ConsumerContext + 'static,
{
    let consumer = Arc::clone(consumer);
    off_runtime(move || consumer.commit(&offsets, CommitMode::Sync)).await
}

/// Commits the offsets `consumer` has stored and waits for the broker's answer.
#[expect(clippy::disallowed_methods, reason = "this module is the wrapper")]
pub async fn commit_stored<K, C>(consumer: &Arc<K>) -> KafkaResult<()>
where
    K: Consumer<C> + Send + Sync + 'static,
    C: ConsumerContext + 'static,
{
    let consumer = Arc::clone(consumer);
    off_runtime(move || consumer.commit_consumer_state(CommitMode::Sync)).await
}

/// Starts a commit of the offsets `consumer` has stored and returns at once; its outcome reaches
/// the consumer context's `commit_callback`.
#[expect(
    clippy::disallowed_methods,
    reason = "an asynchronous commit does not wait on the network"
)]
pub fn commit_stored_in_background<K, C>(consumer: &K) -> KafkaResult<()>
where
    K: Consumer<C>,
    C: ConsumerContext,
{
    consumer.commit_consumer_state(CommitMode::Async)
}

/// Commits the offsets `consumer` has stored and waits for the broker, from inside a rebalance
/// callback: librdkafka calls it synchronously (on the task polling the consumer) and moves the
/// partitions only when it returns, so the commit has to finish there, and that task waits for
/// the rebalance anyway.
#[expect(
    clippy::disallowed_methods,
    reason = "a rebalance callback is synchronous and the rebalance waits for it"
)]
pub fn commit_stored_during_rebalance<C>(consumer: &BaseConsumer<C>) -> KafkaResult<()>
where
    C: ConsumerContext,
{
    consumer.commit_consumer_state(CommitMode::Sync)
}

/// The cluster's metadata (of `topic` only, when given), from the client `client_of(owner)`.
#[expect(clippy::disallowed_methods, reason = "this module is the wrapper")]
pub async fn fetch_metadata<T, C>(
    owner: &Arc<T>,
    client_of: fn(&T) -> &Client<C>,
    topic: Option<&str>,
    timeout: Duration,
) -> KafkaResult<Metadata>
where
    T: Send + Sync + 'static,
    C: ClientContext + 'static,
{
    let owner = Arc::clone(owner);
    let topic = topic.map(str::to_owned);
    off_runtime(move || client_of(&owner).fetch_metadata(topic.as_deref(), timeout)).await
}

/// The low and high watermarks of `topic`'s `partition`, from the client `client_of(owner)`.
#[expect(clippy::disallowed_methods, reason = "this module is the wrapper")]
pub async fn fetch_watermarks<T, C>(
    owner: &Arc<T>,
    client_of: fn(&T) -> &Client<C>,
    topic: &str,
    partition: i32,
    timeout: Duration,
) -> KafkaResult<(i64, i64)>
where
    T: Send + Sync + 'static,
    C: ClientContext + 'static,
{
    let owner = Arc::clone(owner);
    let topic = topic.to_owned();
    off_runtime(move || client_of(&owner).fetch_watermarks(&topic, partition, timeout)).await
}

/// How many members `group` has (0 when it has none or does not exist), from the client
/// `client_of(owner)`.
#[expect(clippy::disallowed_methods, reason = "this module is the wrapper")]
pub async fn group_member_count<T, C>(
    owner: &Arc<T>,
    client_of: fn(&T) -> &Client<C>,
    group: &str,
    timeout: Duration,
) -> KafkaResult<usize>
where
    T: Send + Sync + 'static,
    C: ClientContext + 'static,
{
    let owner = Arc::clone(owner);
    let group = group.to_owned();
    // The group list holds a native pointer and cannot leave the blocking thread: count there.
    off_runtime(move || {
        let list = client_of(&owner).fetch_group_list(Some(&group), timeout)?;
        Ok(list
            .groups()
            .iter()
            .filter(|found| found.name() == group)
            .map(|found| found.members().len())
            .sum())
    })
    .await
}
