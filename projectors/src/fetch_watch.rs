//! Fetch-stall detection: a partition the broker holds records for, that the consumer does not
//! receive. Pure: fed with librdkafka's statistics and the high watermarks a probe reads, it
//! says which partitions stall and for how long; [`crate::consumer`] reports it.
//!
//! # What counts as a stall
//! An assigned partition stalls when its fetchable end (the last stable offset, which is the high
//! watermark unless a transaction is open) lies beyond the consumer's next fetch offset, and the
//! next fetch offset has not moved for `apply.fetch_stall_ms` while the fetcher was active and not
//! held back by a full queue. A broker that is reachable but returns nothing (fetches throttled
//! to nothing by a quota, a leader that does not serve, a stuck fetcher) looks like that.
//!
//! The end comes from two places: the statistics' `ls_offset`, from the last fetch response, and a
//! probe of the high watermark through another client (the consumer's own statistics never see
//! records that no fetch response mentions: when fetches return nothing, `hi_offset` stays where
//! the last answer left it).
//!
//! # Guarantees
//! - **Never before `fetch_stall_ms`.** The stall clock of a partition starts at the first evidence
//!   that records wait while its offset stands still, never earlier than its last progress; a
//!   report comes between `fetch_stall_ms` and `fetch_stall_ms` plus two statistics intervals and
//!   a probe's round trip after the records became fetchable (with the defaults, 8 s and 1 s:
//!   within about 10 s).
//! - **No stall for a busy or blocked projector.** Any move of the next fetch offset, or records
//!   in the fetch queue up to librdkafka's own limit (`queued.min.messages`,
//!   `queued.max.messages.kbytes`: the fetcher waits for the application then), restarts the
//!   clock. A consumer that is not polled delivers no statistics; those queued meanwhile are
//!   placed at the time they were taken ([`SnapshotClock`]), not when they arrive.
//! - **No stall when caught up, or right after an assignment.** A partition without records past
//!   its next fetch offset has no clock; a newly seen partition, one whose fetcher is not
//!   `active` (querying its offset, revoked) or whose position is unknown starts afresh.

use std::collections::BTreeMap;
use std::time::Duration;

/// librdkafka's `queued.min.messages` default: the fetcher waits while the queue holds this many.
pub const DEFAULT_QUEUED_MIN_MESSAGES: i64 = 100_000;
/// librdkafka's `queued.max.messages.kbytes` default, in bytes.
pub const DEFAULT_QUEUED_MAX_BYTES: u64 = 65_536 * 1024;

/// How often librdkafka reports statistics: every `lag_interval`, and often enough that a stall is
/// reported within a quarter of `fetch_stall` past it (an eighth per interval, two intervals).
/// librdkafka refuses intervals below 10 ms.
pub fn statistics_interval(lag_interval: Duration, fetch_stall: Duration) -> Duration {
    lag_interval
        .min(fetch_stall / 8)
        .max(Duration::from_millis(10))
}

/// What one snapshot of librdkafka's statistics says about an assigned partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionStats {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// The fetcher's state (`fetch_state`): `active` while it fetches.
    pub fetch_state: String,
    /// Next offset to fetch (`next_offset`); negative while unknown.
    pub next_offset: i64,
    /// Last stable offset of the last fetch response (`ls_offset`); negative for none.
    pub last_stable_offset: i64,
    /// Messages in the fetch queue (`fetchq_cnt`; librdkafka counts the queue the partitions
    /// share with the consumer, its events included).
    pub queued_messages: i64,
    /// Bytes in the fetch queue (`fetchq_size`).
    pub queued_bytes: u64,
}

/// Where librdkafka's fetcher waits for the application instead of fetching.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    /// `queued.min.messages`.
    pub messages: i64,
    /// `queued.max.messages.kbytes`, in bytes.
    pub bytes: u64,
}

impl Default for QueueLimits {
    fn default() -> Self {
        Self {
            messages: DEFAULT_QUEUED_MIN_MESSAGES,
            bytes: DEFAULT_QUEUED_MAX_BYTES,
        }
    }
}

impl QueueLimits {
    /// The limits of a client configured with these librdkafka `properties` (librdkafka's
    /// defaults for those not given or not numbers; librdkafka refuses those anyway).
    pub fn from_properties<'a>(properties: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let mut limits = Self::default();
        for (key, value) in properties {
            match key {
                "queued.min.messages" => {
                    if let Ok(messages) = value.trim().parse() {
                        limits.messages = messages;
                    }
                }
                "queued.max.messages.kbytes" => {
                    if let Ok(kbytes) = value.trim().parse::<u64>() {
                        limits.bytes = kbytes.saturating_mul(1024);
                    }
                }
                _ => {}
            }
        }
        limits
    }

    fn holds_back(&self, stats: &PartitionStats) -> bool {
        stats.queued_messages >= self.messages || stats.queued_bytes >= self.bytes
    }
}

/// Places statistics snapshots on the watch's clock: when each was taken, not when it arrived.
/// librdkafka stamps a snapshot with its monotonic clock (`ts`, µs) and queues it until the
/// consumer is polled; the smallest gap seen between arrival and stamp is the offset between the
/// two clocks (a snapshot delivered at once), so a snapshot queued for a minute counts a minute
/// earlier.
#[derive(Debug, Default)]
pub struct SnapshotClock {
    offset_us: Option<i64>,
}

impl SnapshotClock {
    /// When the snapshot stamped `ts_us` was taken, on the clock of `arrived` (time since the
    /// watch's origin).
    pub fn taken_at(&mut self, arrived: Duration, ts_us: i64) -> Duration {
        let arrived_us = i64::try_from(arrived.as_micros()).unwrap_or(i64::MAX);
        let offset = arrived_us.saturating_sub(ts_us);
        let offset = self.offset_us.map_or(offset, |known| known.min(offset));
        self.offset_us = Some(offset);
        let taken = ts_us.saturating_add(offset).clamp(0, arrived_us);
        Duration::from_micros(u64::try_from(taken).unwrap_or(0))
    }
}

/// A partition that stalls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stall {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// The consumer's next fetch offset.
    pub next_offset: i64,
    /// The fetchable end the broker has (exclusive).
    pub end: i64,
    /// How long records have waited with nothing arriving.
    pub waited: Duration,
}

/// What one snapshot shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Every watched partition with how long records have waited unfetched (zero for none).
    pub waits: Vec<(String, i32, Duration)>,
    /// Partitions watched until now and absent from the snapshot (no longer assigned): their
    /// wait is over.
    pub forgotten: Vec<(String, i32)>,
    /// The partitions whose records have waited `fetch_stall_ms` or longer.
    pub stalls: Vec<Stall>,
}

impl Verdict {
    /// The health reason for the stalls, if there are any.
    pub fn reason(&self) -> Option<String> {
        if self.stalls.is_empty() {
            return None;
        }
        let partitions: Vec<String> = self
            .stalls
            .iter()
            .map(|stall| {
                format!(
                    "{}/{} (offsets {}..{} waiting, nothing fetched for {} s)",
                    stall.topic,
                    stall.partition,
                    stall.next_offset,
                    stall.end,
                    stall.waited.as_secs()
                )
            })
            .collect();
        Some(format!(
            "kafka: fetches return no records while the broker has some: {}",
            partitions.join(", ")
        ))
    }
}

#[derive(Debug)]
struct Watched {
    next_offset: i64,
    /// Since when the next fetch offset has stood still with the fetcher free to fetch.
    still_since: Option<Duration>,
    /// Whether it stood still at the last snapshot (a probe can tell whether records wait).
    still: bool,
    /// The highest fetchable end a probe read, and when.
    probed: Option<(i64, Duration)>,
    /// Since when records are known to wait while nothing arrives.
    waiting_since: Option<Duration>,
}

/// The stall state of one consumer's assigned partitions.
#[derive(Debug)]
pub struct FetchWatch {
    limit: Duration,
    queue: QueueLimits,
    partitions: BTreeMap<(String, i32), Watched>,
}

impl FetchWatch {
    /// A watch reporting records that wait `limit` with a fetcher held back at `queue`.
    pub fn new(limit: Duration, queue: QueueLimits) -> Self {
        Self {
            limit,
            queue,
            partitions: BTreeMap::new(),
        }
    }

    /// A snapshot taken `at` of every assigned partition.
    pub fn observe(&mut self, at: Duration, snapshot: &[PartitionStats]) -> Verdict {
        let mut verdict = Verdict::default();
        let present: std::collections::BTreeSet<(&str, i32)> = snapshot
            .iter()
            .map(|stats| (stats.topic.as_str(), stats.partition))
            .collect();
        self.partitions.retain(|(topic, partition), _| {
            let keep = present.contains(&(topic.as_str(), *partition));
            if !keep {
                verdict.forgotten.push((topic.clone(), *partition));
            }
            keep
        });
        for stats in snapshot {
            let key = (stats.topic.clone(), stats.partition);
            let waited = self.observe_partition(at, stats);
            if let Some((waited, end)) = waited.filter(|(waited, _)| *waited >= self.limit) {
                verdict.stalls.push(Stall {
                    topic: key.0.clone(),
                    partition: key.1,
                    next_offset: stats.next_offset,
                    end,
                    waited,
                });
            }
            verdict.waits.push((
                key.0,
                key.1,
                waited.map_or(Duration::ZERO, |(waited, _)| waited),
            ));
        }
        // In partition order, whatever the order of librdkafka's statistics.
        verdict
            .stalls
            .sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        verdict
    }

    /// How long records have waited on this partition and its end, if any wait.
    fn observe_partition(
        &mut self,
        at: Duration,
        stats: &PartitionStats,
    ) -> Option<(Duration, i64)> {
        let key = (stats.topic.clone(), stats.partition);
        let fresh = !self.partitions.contains_key(&key);
        let watched = self.partitions.entry(key).or_insert(Watched {
            next_offset: stats.next_offset,
            still_since: None,
            still: false,
            probed: None,
            waiting_since: None,
        });
        // The fetcher should be fetching: active, at a known offset, not waiting for the
        // application to drain its queue.
        let free = stats.fetch_state == "active"
            && stats.next_offset >= 0
            && !self.queue.holds_back(stats);
        let moved = watched.next_offset != stats.next_offset;
        if fresh || moved || !free {
            // Progress, or nothing to judge: the clock starts again (from this snapshot, when
            // the fetcher is free now; from the next one it is free at, otherwise).
            watched.next_offset = stats.next_offset;
            watched.still_since = free.then_some(at);
            watched.still = false;
            watched.waiting_since = None;
            if !free {
                return None;
            }
        } else {
            watched.still = true;
        }
        let still_since = *watched.still_since.get_or_insert(at);
        // Records wait when any source shows an end past the next fetch offset; the earliest
        // such evidence dates the wait, but never before the offset stood still with the
        // fetcher free.
        let from_stats = (stats.last_stable_offset > stats.next_offset)
            .then_some((stats.last_stable_offset, at));
        let from_probe = watched.probed.filter(|(end, _)| *end > stats.next_offset);
        let evidence = [from_stats, from_probe].into_iter().flatten();
        let (Some(end), Some(seen)) = (
            evidence.clone().map(|(end, _)| end).max(),
            evidence.map(|(_, seen)| seen).min(),
        ) else {
            watched.waiting_since = None;
            return None;
        };
        let since = *watched.waiting_since.get_or_insert(seen.max(still_since));
        Some((at.saturating_sub(since), end))
    }

    /// The partitions whose offset stood still at the last snapshot: a probe of their high
    /// watermark tells whether records wait (and how many, for those known to).
    pub fn to_probe(&self) -> Vec<(String, i32)> {
        self.partitions
            .iter()
            .filter(|(_, watched)| watched.still)
            .map(|(key, _)| key.clone())
            .collect()
    }

    /// A probe read `end` as the fetchable end of `topic`/`partition` at `at`.
    pub fn probed(&mut self, topic: &str, partition: i32, end: i64, at: Duration) {
        if let Some(watched) = self.partitions.get_mut(&(topic.to_owned(), partition)) {
            // Ends only grow: an older, higher reading still shows records waiting.
            watched.probed = match watched.probed {
                Some((known, seen)) if known >= end => Some((known, seen)),
                _ => Some((end, at)),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: Duration = Duration::from_secs(8);

    fn s(seconds: u64) -> Duration {
        Duration::from_secs(seconds)
    }

    fn stats(partition: i32, next: i64, ls: i64) -> PartitionStats {
        PartitionStats {
            topic: "t".into(),
            partition,
            fetch_state: "active".into(),
            next_offset: next,
            last_stable_offset: ls,
            queued_messages: 0,
            queued_bytes: 0,
        }
    }

    /// What happens to one partition at each step.
    enum Step {
        /// A snapshot at second `.0`.
        Snap(u64, PartitionStats),
        /// A probe answered the end `.1` at second `.0`.
        Probe(u64, i64),
    }
    use Step::{Probe, Snap};

    /// Runs `steps` on partition 0 and returns, for each snapshot, the seconds waited and
    /// whether it stalls.
    fn run(steps: Vec<Step>) -> Vec<(u64, bool)> {
        let mut watch = FetchWatch::new(LIMIT, QueueLimits::default());
        let mut out = Vec::new();
        for step in steps {
            match step {
                Snap(at, stats) => {
                    let verdict = watch.observe(s(at), &[stats]);
                    out.push((verdict.waits[0].2.as_secs(), !verdict.stalls.is_empty()));
                }
                Probe(at, end) => watch.probed("t", 0, end, s(at)),
            }
        }
        out
    }

    #[test]
    fn records_the_probe_finds_unfetched_stall_after_the_limit_and_clear_when_fetched() {
        let steps = vec![
            Snap(0, stats(0, 5, 5)),
            Snap(1, stats(0, 5, 5)),
            Probe(1, 5),
            Snap(2, stats(0, 5, 5)),
            // Records arrive at the broker; the consumer's statistics never hear of them.
            Probe(2, 9),
            Snap(3, stats(0, 5, 5)),
            Snap(10, stats(0, 5, 5)),
            Snap(11, stats(0, 5, 5)),
            Snap(12, stats(0, 5, 5)),
            // They arrive.
            Snap(13, stats(0, 9, 9)),
            Snap(14, stats(0, 9, 9)),
        ];
        assert_eq!(
            run(steps),
            [
                (0, false),
                (0, false),
                (0, false),
                (1, false),
                (8, true),
                (9, true),
                (10, true),
                (0, false),
                (0, false)
            ]
        );
    }

    #[test]
    fn no_stall_while_the_offset_moves_the_queue_is_full_or_the_partition_is_caught_up() {
        let full = PartitionStats {
            queued_messages: DEFAULT_QUEUED_MIN_MESSAGES,
            ..stats(0, 7, 7)
        };
        let full_bytes = PartitionStats {
            queued_bytes: DEFAULT_QUEUED_MAX_BYTES,
            ..stats(0, 7, 7)
        };
        let steps = vec![
            Snap(0, stats(0, 1, 1)),
            Probe(0, 50),
            // Busy: every snapshot a little further, records always waiting.
            Snap(5, stats(0, 2, 3)),
            Snap(10, stats(0, 4, 4)),
            Snap(15, stats(0, 7, 7)),
            // Blocked downstream: the queue is full, the fetcher waits for the application.
            Snap(20, full.clone()),
            Snap(30, full),
            Snap(40, full_bytes),
            // The application drains the queue: the clock starts afresh.
            Snap(41, stats(0, 7, 7)),
            Snap(48, stats(0, 7, 7)),
            Snap(49, stats(0, 7, 7)),
        ];
        assert_eq!(
            run(steps),
            [
                (0, false),
                (0, false),
                (0, false),
                (0, false),
                (0, false),
                (0, false),
                (0, false),
                (0, false),
                (7, false),
                (8, true)
            ]
        );
        // Caught up for a minute: nothing waits, whatever the time.
        let caught_up = vec![
            Snap(0, stats(0, 9, 9)),
            Probe(1, 9),
            Snap(30, stats(0, 9, 9)),
            Probe(31, 9),
            Snap(60, stats(0, 9, 9)),
        ];
        assert_eq!(run(caught_up), [(0, false), (0, false), (0, false)]);
    }

    #[test]
    fn a_new_partition_an_inactive_fetcher_or_an_unknown_position_starts_the_clock_afresh() {
        let state = |fetch_state: &str, next: i64| PartitionStats {
            fetch_state: fetch_state.into(),
            ..stats(0, next, 3)
        };
        let steps = vec![
            // Assigned with records waiting: the first snapshot only starts the clock.
            Snap(100, stats(0, 0, 3)),
            Snap(107, stats(0, 0, 3)),
            Snap(108, stats(0, 0, 3)),
            // Its fetcher queries its offset again: no verdict, then afresh.
            Snap(109, state("offset-query", 0)),
            Snap(110, state("active", -1001)),
            Snap(111, stats(0, 0, 3)),
            Snap(118, stats(0, 0, 3)),
            Snap(119, stats(0, 0, 3)),
        ];
        assert_eq!(
            run(steps),
            [
                (0, false),
                (7, false),
                (8, true),
                (0, false),
                (0, false),
                (0, false),
                (7, false),
                (8, true)
            ]
        );
    }

    #[test]
    fn the_wait_is_dated_from_the_first_evidence_and_never_before_the_offset_stood_still() {
        let steps = vec![
            Snap(0, stats(0, 5, 5)),
            // A probe answered long before the offset last moved: the wait counts from the move.
            Probe(1, 20),
            Snap(2, stats(0, 6, 6)),
            Snap(3, stats(0, 6, 6)),
            Snap(10, stats(0, 6, 6)),
            // A later, lower reading changes nothing.
            Probe(10, 8),
            Snap(11, stats(0, 6, 6)),
        ];
        assert_eq!(
            run(steps),
            [(0, false), (0, false), (1, false), (8, true), (9, true)]
        );
        // Evidence from the statistics alone (a fetch response that names records and returns
        // none), first seen at 4.
        let steps = vec![
            Snap(0, stats(0, 5, 5)),
            Snap(1, stats(0, 5, 5)),
            Snap(4, stats(0, 5, 12)),
            Snap(11, stats(0, 5, 12)),
            Snap(12, stats(0, 5, 12)),
        ];
        assert_eq!(
            run(steps),
            [(0, false), (0, false), (0, false), (7, false), (8, true)]
        );
    }

    #[test]
    fn partitions_are_probed_while_still_and_forgotten_once_revoked() {
        let mut watch = FetchWatch::new(LIMIT, QueueLimits::default());
        watch.observe(s(0), &[stats(0, 1, 1), stats(1, 1, 1)]);
        assert!(
            watch.to_probe().is_empty(),
            "fresh partitions wait a snapshot"
        );
        watch.observe(s(1), &[stats(0, 1, 1), stats(1, 2, 2)]);
        assert_eq!(watch.to_probe(), [("t".to_owned(), 0)]);
        // Known to wait, it is asked again: more records may have come.
        watch.probed("t", 0, 4, s(1));
        watch.observe(s(2), &[stats(0, 1, 1), stats(1, 2, 2)]);
        assert_eq!(watch.to_probe(), [("t".to_owned(), 0), ("t".to_owned(), 1)]);
        watch.probed("t", 0, 6, s(2));
        let verdict = watch.observe(s(9), &[stats(0, 1, 1), stats(1, 2, 2)]);
        assert_eq!(
            verdict.stalls,
            [Stall {
                topic: "t".into(),
                partition: 0,
                next_offset: 1,
                end: 6,
                waited: s(8)
            }]
        );
        // A probe of a partition not watched (revoked meanwhile) is dropped.
        watch.probed("t", 7, 4, s(9));
        let verdict = watch.observe(s(9), &[stats(1, 2, 2)]);
        assert_eq!(verdict.forgotten, [("t".to_owned(), 0)]);
        assert_eq!(verdict.waits, [("t".to_owned(), 1, Duration::ZERO)]);
        assert!(verdict.stalls.is_empty());
        // Assigned again later: it starts afresh, its old reading gone.
        let verdict = watch.observe(s(20), &[stats(0, 1, 1), stats(1, 2, 2)]);
        assert_eq!(
            verdict.waits,
            [
                ("t".to_owned(), 0, Duration::ZERO),
                ("t".to_owned(), 1, Duration::ZERO)
            ]
        );
        let verdict = watch.observe(s(30), &[stats(0, 1, 1), stats(1, 2, 2)]);
        assert!(verdict.stalls.is_empty(), "{verdict:?}");
    }

    #[test]
    fn the_reason_names_every_stalled_partition_with_its_offsets_and_wait() {
        let mut watch = FetchWatch::new(LIMIT, QueueLimits::default());
        watch.observe(s(0), &[stats(0, 3, 3), stats(2, 0, 0)]);
        watch.observe(s(1), &[stats(0, 3, 3), stats(2, 0, 0)]);
        watch.probed("t", 0, 10, s(1));
        watch.probed("t", 2, 4, s(1));
        let verdict = watch.observe(s(9), &[stats(2, 0, 0), stats(0, 3, 3)]);
        assert_eq!(
            verdict.reason().unwrap(),
            "kafka: fetches return no records while the broker has some: t/0 (offsets 3..10 \
             waiting, nothing fetched for 8 s), t/2 (offsets 0..4 waiting, nothing fetched for 8 s)"
        );
        let verdict = watch.observe(s(10), &[stats(0, 10, 10), stats(2, 4, 4)]);
        assert_eq!(verdict.reason(), None);
    }

    #[test]
    fn snapshots_queued_while_the_consumer_was_not_polled_count_when_they_were_taken() {
        let mut clock = SnapshotClock::default();
        // Delivered at once: librdkafka's clock runs 1000 s ahead of the watch's.
        assert_eq!(clock.taken_at(s(10), 1_010_000_000), s(10));
        assert_eq!(clock.taken_at(s(11), 1_011_000_000), s(11));
        // Not polled from 11 to 60: the snapshots of 12, 13 and 14 arrive together at 60.
        assert_eq!(clock.taken_at(s(60), 1_012_000_000), s(12));
        assert_eq!(clock.taken_at(s(60), 1_013_000_000), s(13));
        assert_eq!(clock.taken_at(s(60), 1_014_000_000), s(14));
        // A first snapshot that was itself queued is placed late until a prompt one corrects it.
        let mut clock = SnapshotClock::default();
        assert_eq!(clock.taken_at(s(30), 1_010_000_000), s(30));
        assert_eq!(clock.taken_at(s(31), 1_031_000_000), s(31));
        assert_eq!(clock.taken_at(s(32), 1_012_000_000), s(12));
        // With the watch, a queued snapshot with records waiting and nothing moving does not
        // count the time it spent queued.
        let mut watch = FetchWatch::new(LIMIT, QueueLimits::default());
        let mut clock = SnapshotClock::default();
        let mut at = |arrived: u64, stamp: i64| {
            clock.taken_at(s(arrived), 1_000_000_000 + stamp * 1_000_000)
        };
        watch.observe(at(0, 0), &[stats(0, 5, 5)]);
        watch.observe(at(1, 1), &[stats(0, 5, 9)]);
        let verdict = watch.observe(at(120, 2), &[stats(0, 5, 9)]);
        assert_eq!(verdict.waits[0].2, s(1));
        assert!(verdict.stalls.is_empty());
    }

    #[test]
    fn queue_limits_follow_the_operators_properties() {
        assert_eq!(QueueLimits::from_properties([]), QueueLimits::default());
        assert_eq!(
            QueueLimits::from_properties([
                ("queued.min.messages", "500"),
                ("queued.max.messages.kbytes", "1024"),
                ("linger.ms", "5"),
            ]),
            QueueLimits {
                messages: 500,
                bytes: 1024 * 1024
            }
        );
        assert_eq!(
            QueueLimits::from_properties([("queued.min.messages", "lots")]),
            QueueLimits::default()
        );
    }

    #[test]
    fn statistics_come_often_enough_for_the_bound() {
        let ms = Duration::from_millis;
        assert_eq!(statistics_interval(ms(5_000), ms(8_000)), ms(1_000));
        assert_eq!(statistics_interval(ms(200), ms(2_000)), ms(200));
        assert_eq!(statistics_interval(ms(5_000), ms(60_000)), ms(5_000));
        assert_eq!(statistics_interval(ms(5_000), ms(40)), ms(10));
    }
}
