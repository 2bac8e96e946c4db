//! A projector's Kafka consumer: its configuration, and the callbacks librdkafka runs on it
//! (rebalance bookkeeping and commits, lag metrics, logs). The live runner and the rebuild build
//! theirs here and drive them with [`crate::batch_loop`].
//!
//! The consumer's `/health` component (`projector <name>`) fails while librdkafka reports every
//! broker down, and while assigned partitions have records the broker does not return
//! ([`crate::fetch_watch`], judged at each statistics report, with the high watermarks read by a
//! probe client of its own: a fetch that returns nothing never updates the consumer's own
//! statistics). Each failure clears only itself; the component is ready when neither holds and
//! partitions were assigned.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use rdkafka::TopicPartitionList;
use rdkafka::client::{Client, ClientContext};
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::statistics::Statistics;
use storefront_plumbing::kafka::{self, KafkaSetupError, TracingContext};
use storefront_plumbing::kafka_io;
use storefront_plumbing::settings::KafkaSettings;
use storefront_plumbing::telemetry::{ComponentState, Health};

use crate::config::{Projector, ProjectorsConfig};
use crate::fetch_watch::{self, FetchWatch, PartitionStats, QueueLimits, SnapshotClock};
use crate::metrics;
use storefront_plumbing::errors;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What the consumer's component state is made of.
#[derive(Debug, Default)]
struct Status {
    /// Whether partitions were assigned (ready, when nothing fails).
    assigned: bool,
    /// librdkafka reported every broker down, and no broker is up again yet.
    brokers_down: Option<String>,
    /// Assigned partitions have records the broker does not return.
    fetch_stall: Option<String>,
}

impl Status {
    fn state(&self) -> ComponentState {
        let failures: Vec<&str> = [&self.brokers_down, &self.fetch_stall]
            .into_iter()
            .flatten()
            .map(String::as_str)
            .collect();
        if !failures.is_empty() {
            ComponentState::Failing(failures.join("; "))
        } else if self.assigned {
            ComponentState::Ready
        } else {
            ComponentState::Starting
        }
    }
}

/// Consumer callbacks: rebalance bookkeeping and commits, lag metrics, fetch stalls, librdkafka
/// logs.
pub struct ProjectorContext {
    projector: Projector,
    /// Partitions currently assigned, as `(topic, partition)`.
    assignment: Mutex<HashSet<(String, i32)>>,
    health: Health,
    component: String,
    status: Mutex<Status>,
    fetches: Arc<Fetches>,
}

impl std::fmt::Debug for ProjectorContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProjectorContext")
            .field("projector", &self.projector)
            .finish_non_exhaustive()
    }
}

impl ProjectorContext {
    fn new(projector: Projector, health: Health, fetches: Fetches) -> Self {
        Self {
            projector,
            assignment: Mutex::new(HashSet::new()),
            health,
            component: component(projector),
            status: Mutex::new(Status::default()),
            fetches: Arc::new(fetches),
        }
    }

    /// Changes the component's status and shows the result.
    fn update_status(&self, change: impl FnOnce(&mut Status)) {
        let mut status = lock(&self.status);
        change(&mut status);
        self.health.set(&self.component, status.state());
    }

    /// Every broker is down: records cannot be fetched, which `/health` shows until one is up.
    fn brokers_went_down(&self, reason: &str) {
        self.update_status(|status| {
            if status.brokers_down.is_none() {
                tracing::warn!(projector = %self.projector, reason, "no kafka broker reachable; nothing can be fetched");
            }
            status.brokers_down = Some(format!("kafka: no broker reachable ({reason})"));
        });
    }

    /// A broker is up again (seen in librdkafka's statistics).
    fn broker_up(&self) {
        if lock(&self.status).brokers_down.is_none() {
            return;
        }
        self.update_status(|status| {
            if status.brokers_down.take().is_some() {
                tracing::info!(projector = %self.projector, "a kafka broker is reachable again");
            }
        });
    }

    /// Judges the fetches of the assigned partitions in a statistics snapshot stamped
    /// `stamped_us`: gauges, the component's status, and a probe of the partitions whose
    /// offsets stood still.
    fn watch_fetches(&self, stamped_us: i64, assigned: &[PartitionStats]) {
        let (verdict, to_probe) = self.fetches.observe(stamped_us, assigned);
        for (topic, partition, waited) in &verdict.waits {
            metrics::fetch_stalled(self.projector, topic, *partition, *waited);
        }
        for (topic, partition) in &verdict.forgotten {
            metrics::fetch_stalled(self.projector, topic, *partition, Duration::ZERO);
        }
        let reason = verdict.reason();
        if reason != lock(&self.status).fetch_stall {
            self.update_status(|status| {
                match (&status.fetch_stall, &reason) {
                    (None, Some(reason)) => tracing::warn!(
                        projector = %self.projector,
                        %reason,
                        "kafka returns no records for partitions that have some (nothing is \
                         lost; the consumer keeps fetching)"
                    ),
                    (Some(_), None) => tracing::info!(
                        projector = %self.projector,
                        "records arrive again from every partition that had some waiting"
                    ),
                    _ => {}
                }
                status.fetch_stall = reason;
            });
        }
        if !to_probe.is_empty() {
            Fetches::probe(&self.fetches, self.projector, to_probe);
        }
    }

    fn assignment(&self) -> MutexGuard<'_, HashSet<(String, i32)>> {
        lock(&self.assignment)
    }

    /// The projector consuming.
    pub fn projector(&self) -> Projector {
        self.projector
    }

    /// Records partitions assigned with `assign` (no rebalance callbacks run then).
    pub fn assigned_manually(&self, partitions: impl IntoIterator<Item = (String, i32)>) {
        self.assignment().extend(partitions);
    }

    /// Whether `topic`/`partition` is assigned to this instance now.
    pub fn is_assigned(&self, topic: &str, partition: i32) -> bool {
        self.assignment().contains(&(topic.to_owned(), partition))
    }
}

/// The health component of `projector`'s consumer.
pub fn component(projector: Projector) -> String {
    format!("projector {projector}")
}

impl ClientContext for ProjectorContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        TracingContext.log(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        // End of partition is how a rebuild learns it is done, not a failure.
        if matches!(error, KafkaError::PartitionEOF(_))
            || error.rdkafka_error_code() == Some(RDKafkaErrorCode::PartitionEOF)
        {
            return;
        }
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            self.brokers_went_down(reason);
        }
        TracingContext.error(error, reason);
    }

    fn stats(&self, statistics: Statistics) {
        // Bootstrap entries (node id -1) are not brokers of the cluster.
        if statistics
            .brokers
            .values()
            .any(|broker| broker.nodeid >= 0 && broker.state == "UP")
        {
            self.broker_up();
        }
        let mut assigned = Vec::new();
        for (name, topic) in &statistics.topics {
            for (id, partition) in &topic.partitions {
                // Partition -1 is librdkafka's internal "unassigned" queue; a lag of -1 means
                // unknown (not assigned here, or no offset yet).
                if *id < 0 || !self.is_assigned(name, *id) {
                    continue;
                }
                // Lag behind the offsets stored after applying; before anything is stored or
                // committed (a new group), everything retained is still to do.
                let lag = [partition.consumer_lag_stored, partition.consumer_lag]
                    .into_iter()
                    .find(|lag| *lag >= 0)
                    .or_else(|| {
                        (partition.hi_offset >= 0 && partition.lo_offset >= 0)
                            .then(|| partition.hi_offset - partition.lo_offset)
                    });
                if let Some(lag) = lag {
                    metrics::consumer_lag(self.projector, name, *id, lag);
                }
                assigned.push(PartitionStats {
                    topic: name.clone(),
                    partition: *id,
                    fetch_state: partition.fetch_state.clone(),
                    next_offset: partition.next_offset,
                    last_stable_offset: partition.ls_offset,
                    queued_messages: partition.fetchq_cnt,
                    queued_bytes: partition.fetchq_size,
                });
            }
        }
        self.watch_fetches(statistics.ts, &assigned);
    }
}

impl ConsumerContext for ProjectorContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(partitions) = rebalance else {
            return;
        };
        // Everything stored has been applied: commit it before the partitions move, so the
        // next owner starts exactly after it.
        report_commit(
            self.projector,
            kafka_io::commit_stored_during_rebalance(consumer),
            "commit before revocation failed; the next owner replays from the last commit",
        );
        let mut assignment = self.assignment();
        for element in partitions.elements() {
            assignment.remove(&(element.topic().to_owned(), element.partition()));
            // This instance no longer owns the partition: its lag is reported by the next owner.
            metrics::consumer_lag(self.projector, element.topic(), element.partition(), 0);
            metrics::fetch_stalled(
                self.projector,
                element.topic(),
                element.partition(),
                Duration::ZERO,
            );
        }
        tracing::info!(projector = %self.projector, revoked = partitions.count(), "partitions revoked");
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(partitions) => {
                let mut assignment = self.assignment();
                for element in partitions.elements() {
                    assignment.insert((element.topic().to_owned(), element.partition()));
                }
                let mut listed: Vec<String> = assignment
                    .iter()
                    .map(|(topic, partition)| format!("{topic}/{partition}"))
                    .collect();
                listed.sort();
                tracing::info!(projector = %self.projector, partitions = ?listed, "partitions assigned");
                drop(assignment);
                self.update_status(|status| status.assigned = true);
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(error) => {
                tracing::warn!(projector = %self.projector, %error, "rebalance failed");
            }
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        report_commit(
            self.projector,
            result,
            "offset commit failed; retried at the next interval",
        );
    }
}

/// How much a consumer prefetches: the limit of librdkafka's queue of fetched records, in KiB of
/// record values, and the most one fetch response may carry. A projector takes one batch
/// (`apply.batch_size`, 1,000) while it writes the one before, so it needs little ahead of it:
/// 1 MiB of values is 2,000 to 3,000 of its events. librdkafka's own defaults (64 MiB per
/// consumer, responses up to 50 MiB) let a projector that cannot write (MongoDB down) fetch its
/// whole backlog: 186 MB of RSS with 100,000 events waiting, against 32 MB idle
/// (`docs/benchmarks.md`, "Memory under a stalled sink"). Each queued record costs about three
/// times its value (its headers, librdkafka's message, the response buffer it keeps alive).
const PREFETCH_KBYTES: &str = "1024";
const FETCH_MAX_BYTES: &str = "1048576";

/// The configuration of `projector`'s consumer: the consumers' tuning (defaults the operator's
/// `kafka.properties` replace), the manual offset store and commit of
/// [`kafka::consumer_config`], and `guarantees`; with the fetch queue's limits it runs with.
fn consumer_client_config(
    config: &ProjectorsConfig,
    projector: Projector,
    client_id: &str,
    guarantees: &[(&str, &str)],
) -> (ClientConfig, QueueLimits) {
    let fetch_stall = Duration::from_millis(config.apply.fetch_stall_ms);
    let statistics_interval = fetch_watch::statistics_interval(
        Duration::from_millis(config.apply.lag_interval_ms),
        fetch_stall,
    )
    .as_millis()
    .to_string();
    let tuning = [
        // Lag metrics and fetch stalls come from librdkafka's statistics.
        ("statistics.interval.ms", statistics_interval.as_str()),
        // librdkafka lets a fetch wait up to 500 ms for data by default; a projector is latency
        // bound (and a newly assigned partition's first fetch often waits the whole time).
        ("fetch.wait.max.ms", "100"),
        // Bounded memory while the projector cannot keep up or cannot write.
        ("queued.max.messages.kbytes", PREFETCH_KBYTES),
        ("fetch.max.bytes", FETCH_MAX_BYTES),
    ];
    let mut client = kafka::consumer_config(
        &config.kafka,
        client_id,
        &config.consumer_group(projector),
        &tuning,
    );
    // What this client's guarantees need besides the consumer's own (refused in
    // `kafka.properties`, so never the operator's choice overridden).
    for (key, value) in guarantees {
        client.set(*key, *value);
    }
    // Where the fetcher waits for the application: the tuning, unless the operator set them.
    let properties = config.kafka.client_properties();
    let queue = QueueLimits::from_properties(
        tuning.iter().copied().chain(
            properties
                .iter()
                .map(|(key, value)| (key.as_str(), value.as_str())),
        ),
    );
    (client, queue)
}

/// Builds the consumer of `projector`: manual offset store and commit (from
/// [`kafka::consumer_config`]), statistics for lag, a bounded prefetch, our callbacks, and
/// `guarantees` (keys of [`GUARANTEED_KAFKA_PROPERTIES`] this client needs besides the
/// consumer's own).
///
/// [`GUARANTEED_KAFKA_PROPERTIES`]: storefront_plumbing::settings::GUARANTEED_KAFKA_PROPERTIES
pub fn consumer(
    config: &ProjectorsConfig,
    projector: Projector,
    client_id: &str,
    health: Health,
    guarantees: &[(&str, &str)],
) -> Result<StreamConsumer<ProjectorContext>, KafkaSetupError> {
    let (client, queue) = consumer_client_config(config, projector, client_id, guarantees);
    let fetch_stall = Duration::from_millis(config.apply.fetch_stall_ms);
    let fetches = Fetches::new(
        &config.kafka,
        client_id,
        FetchWatch::new(fetch_stall, queue),
    );
    client
        .create_with_context(ProjectorContext::new(projector, health, fetches))
        .map_err(KafkaSetupError::Config)
}

/// The fetch-stall watch of one consumer and the client that probes high watermarks for it,
/// shared with the probe's tasks.
struct Fetches {
    /// The watch's clock starts here.
    origin: Instant,
    watch: Mutex<(SnapshotClock, FetchWatch)>,
    /// Whether a probe round runs (one at a time).
    probing: AtomicBool,
    /// The probe client, made at the first probe (a consumer that never reports statistics,
    /// like the rebuild's group probe, never needs one).
    client: OnceLock<Option<Arc<BaseConsumer<QuietContext>>>>,
    kafka: KafkaSettings,
    client_id: String,
    /// Longest wait for one high watermark.
    timeout: Duration,
}

impl Fetches {
    fn new(kafka: &KafkaSettings, client_id: &str, watch: FetchWatch) -> Self {
        Self {
            origin: Instant::now(),
            watch: Mutex::new((SnapshotClock::default(), watch)),
            probing: AtomicBool::new(false),
            client: OnceLock::new(),
            kafka: kafka.clone(),
            client_id: client_id.to_owned(),
            timeout: Duration::from_secs(5),
        }
    }

    /// Judges a snapshot stamped `stamped_us`; returns the verdict and the partitions to probe.
    fn observe(
        &self,
        stamped_us: i64,
        assigned: &[PartitionStats],
    ) -> (fetch_watch::Verdict, Vec<(String, i32)>) {
        let mut guard = lock(&self.watch);
        let (clock, watch) = &mut *guard;
        let at = clock.taken_at(self.origin.elapsed(), stamped_us);
        let verdict = watch.observe(at, assigned);
        (verdict, watch.to_probe())
    }

    /// Reads the high watermarks of `partitions` in the background, unless a round runs
    /// already; the watch uses them at the next statistics report.
    fn probe(fetches: &Arc<Self>, projector: Projector, partitions: Vec<(String, i32)>) {
        // The statistics callback runs inside the runner's `recv`, on the runtime.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if fetches.probing.swap(true, Ordering::AcqRel) {
            return;
        }
        let fetches = Arc::clone(fetches);
        runtime.spawn(async move {
            // Cleared even if a round panics, so probing goes on.
            struct Done<'a>(&'a AtomicBool);
            impl Drop for Done<'_> {
                fn drop(&mut self) {
                    self.0.store(false, Ordering::Release);
                }
            }
            let _done = Done(&fetches.probing);
            fetches.probe_round(projector, partitions).await;
        });
    }

    async fn probe_round(&self, projector: Projector, partitions: Vec<(String, i32)>) {
        let Some(client) = self.client(projector) else {
            return;
        };
        for (topic, partition) in partitions {
            let read =
                kafka_io::fetch_watermarks(&client, probe_client, &topic, partition, self.timeout)
                    .await;
            match read {
                Ok((_, end)) => {
                    let at = self.origin.elapsed();
                    lock(&self.watch).1.probed(&topic, partition, end, at);
                }
                // The consumer's own errors and statistics report an unreachable cluster.
                Err(error) => tracing::debug!(
                    %projector,
                    topic,
                    partition,
                    error = %errors::chain(&error),
                    "high watermark not read; this partition waits for the next probe"
                ),
            }
        }
        // Its error events wait in its queue: take them (nothing else arrives there).
        while let Some(event) = client.poll(Duration::ZERO) {
            if let Err(error) = event {
                let error = errors::chain(&error);
                tracing::debug!(%projector, %error, "watermark probe client error");
            }
        }
    }

    /// The probe client: the consumer's client id and settings, and its isolation level (so the
    /// end it reads is the end the consumer can fetch), without a group.
    fn client(&self, projector: Projector) -> Option<Arc<BaseConsumer<QuietContext>>> {
        self.client
            .get_or_init(|| {
                // The consumer's tuning in `kafka::consumer_config`; the operator's properties
                // replace it for both alike.
                let tuning = [("isolation.level", "read_committed")];
                match kafka::client_config(&self.kafka, &self.client_id, &tuning, &[])
                    .create_with_context(QuietContext)
                {
                    Ok(client) => Some(Arc::new(client)),
                    Err(error) => {
                        tracing::warn!(
                            %projector,
                            error = %errors::chain(&error),
                            "no high-watermark probe; fetch stalls show only in fetch responses"
                        );
                        None
                    }
                }
            })
            .clone()
    }
}

fn probe_client(consumer: &BaseConsumer<QuietContext>) -> &Client<QuietContext> {
    consumer.client()
}

/// The probe client's context: its logs at debug level only (the consumer reports the cluster's
/// state; the probe would repeat it).
struct QuietContext;

impl ClientContext for QuietContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        tracing::debug!(target: "librdkafka", ?level, facility, "{message}");
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::debug!(target: "librdkafka", %error, reason, "watermark probe client error");
    }
}

impl ConsumerContext for QuietContext {}

/// Logs a failed commit and counts it (nothing stored to commit is no failure). A failed commit
/// loses nothing: the offsets stay stored and the next commit, or the next owner's replay, covers
/// them.
pub(crate) fn report_commit(projector: Projector, result: KafkaResult<()>, what: &str) {
    match result {
        Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
        Err(error) => {
            metrics::commit_failed(projector);
            let error = errors::chain(&error);
            tracing::warn!(%projector, %error, "{what}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prefetch_is_bounded_unless_the_operator_says_otherwise() {
        let mut config = ProjectorsConfig::default();
        let guarantees = [("enable.partition.eof", "true")];
        let (client, queue) =
            consumer_client_config(&config, Projector::Orders, "test", &guarantees);
        assert_eq!(client.get("queued.max.messages.kbytes"), Some("1024"));
        assert_eq!(client.get("fetch.max.bytes"), Some("1048576"));
        assert_eq!(client.get("fetch.wait.max.ms"), Some("100"));
        assert_eq!(queue.bytes, 1024 * 1024, "the fetch watch knows the limit");

        for (key, value) in [
            ("queued.max.messages.kbytes", "65536"),
            ("fetch.max.bytes", "52428800"),
            ("group.id", "not-the-operators"),
        ] {
            config.kafka.properties.insert(key.into(), value.into());
        }
        let (client, queue) =
            consumer_client_config(&config, Projector::Orders, "test", &guarantees);
        assert_eq!(client.get("queued.max.messages.kbytes"), Some("65536"));
        assert_eq!(client.get("fetch.max.bytes"), Some("52428800"));
        assert_eq!(queue.bytes, 65536 * 1024);
        // The guarantees' settings are never the operator's.
        assert_eq!(
            client.get("group.id"),
            Some(config.consumer_group(Projector::Orders).as_str())
        );
        assert_eq!(client.get("enable.auto.offset.store"), Some("false"));
        assert_eq!(client.get("enable.partition.eof"), Some("true"));
    }

    #[test]
    fn each_kafka_failure_shows_and_clears_only_itself() {
        let mut status = Status::default();
        assert_eq!(status.state(), ComponentState::Starting);
        status.assigned = true;
        assert_eq!(status.state(), ComponentState::Ready);
        status.fetch_stall = Some("kafka: fetches return no records".into());
        status.brokers_down = Some("kafka: no broker reachable (1/1 brokers are down)".into());
        assert_eq!(
            status.state(),
            ComponentState::Failing(
                "kafka: no broker reachable (1/1 brokers are down); kafka: fetches return no \
                 records"
                    .into()
            )
        );
        // A broker up again leaves the stall failing, and the stall's end the brokers down.
        status.brokers_down = None;
        assert_eq!(
            status.state(),
            ComponentState::Failing("kafka: fetches return no records".into())
        );
        status.brokers_down = Some("kafka: no broker reachable (down)".into());
        status.fetch_stall = None;
        assert_eq!(
            status.state(),
            ComponentState::Failing("kafka: no broker reachable (down)".into())
        );
        status.brokers_down = None;
        assert_eq!(status.state(), ComponentState::Ready);
    }
}
