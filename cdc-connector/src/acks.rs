//! The ordered-acknowledgement queue: which resume token a stream may checkpoint.
//!
//! Changes enter in source order, each as one [`Entry`] holding the delivery outcomes (futures)
//! of the records it produced: events and dead letters, possibly none. Entries leave from the
//! front only, once every record of theirs is acknowledged, and each one leaving moves the
//! checkpoint to its token. This is the pure part of the no-loss guarantee, with no Kafka or
//! MongoDB in it, so it is tested alone.
//!
//! # Guarantees
//! - **Never past an unacknowledged record.** The checkpoint is the token of the newest change
//!   whose records, and every earlier change's records, Kafka acknowledged. Acknowledgements out
//!   of order change nothing until the oldest entry completes.
//! - **A failure stops progress.** A delivery failure is returned and the entry stays, so the
//!   checkpoint never covers it.
//! - **A refused record is replaced, not dropped.** A record the broker refused as too large is
//!   handed back ([`Refusal`], with its change's real kind, `_id` and position); its entry stays
//!   until the caller has added the replacement (a dead letter) with
//!   [`InFlight::replace_refused`] and that one is acknowledged too.
//! - **Idle tokens only when nothing is in flight.** A stream's own token while it has nothing
//!   new (a post-batch token) becomes the checkpoint only when no change is waiting, since it is
//!   later than all of them.
//! - **Records without a token** (snapshot reads) move the position and once-per-id ids, not the
//!   token; collection-level changes (drop, rename, invalidate) have a token and no records.

use std::collections::VecDeque;
use std::future::Future;
use std::time::{Duration, Instant};

use futures::FutureExt;
use mongodb::bson::Bson;
use mongodb::change_stream::event::ResumeToken;
use rdkafka::error::KafkaError;
use storefront_schemas::metadata::SourcePosition;

use crate::mapping::ChangeKind;

/// How Kafka answered one record.
#[derive(Debug)]
pub enum Delivery {
    /// Written to every in-sync replica.
    Acknowledged,
    /// Refused as larger than the topic allows: the record's fault, so it is dead-lettered.
    TooLarge(RefusedRecord),
    /// Any other failure: not the record's fault, so the stream stops.
    Failed(KafkaError),
}

/// A record the broker refused as too large.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedRecord {
    /// The topic it was for.
    pub topic: String,
    /// Its key.
    pub key: String,
    /// Its value.
    pub payload: Vec<u8>,
}

/// The change an entry came from: its kind and document `_id`.
pub type Origin = (ChangeKind, Bson);

/// One source change's records, in the queue until Kafka acknowledged all of them.
#[derive(Debug)]
pub struct Entry<D> {
    /// Resume token of the change (`None` for snapshot reads).
    pub token: Option<ResumeToken>,
    /// The change's position (`None` for collection-level events).
    pub position: Option<SourcePosition>,
    /// The change's kind and `_id` (`None` for collection-level events), so a record refused
    /// later is dead-lettered with its real origin.
    pub origin: Option<Origin>,
    /// The delivery outcomes of its records.
    pub deliveries: Vec<D>,
    /// Ids of once-per-id events and defects it published, recorded with the checkpoint.
    pub once_ids: Vec<String>,
}

/// A record of the oldest entry that must be replaced before that entry can complete.
#[derive(Debug)]
pub struct Refusal {
    /// What the broker refused.
    pub record: RefusedRecord,
    /// The change it came from.
    pub origin: Option<Origin>,
    /// That change's position.
    pub position: Option<SourcePosition>,
}

/// What a checkpoint saves: the token, the position it stands for, and the once-per-id ids
/// published since the last save.
#[derive(Debug, PartialEq)]
pub struct Checkpoint<'a> {
    /// The resume token.
    pub token: &'a ResumeToken,
    /// The newest acknowledged change's position.
    pub position: Option<SourcePosition>,
    /// Once-per-id ids acknowledged since the last save.
    pub once_ids: &'a [String],
}

/// How long an unsaved checkpoint may wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SaveIntervals {
    /// After acknowledged changes.
    pub progress: Duration,
    /// After only idle tokens. Each save is a write to the source deployment, which moves every
    /// stream's token again, so saving it as often as progress would keep an idle connector
    /// writing every second.
    pub idle: Duration,
}

/// What moved the checkpoint since the last save.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Unsaved {
    /// Nothing: the saved checkpoint is current.
    #[default]
    Nothing,
    /// Only idle tokens.
    IdleToken,
    /// Acknowledged changes.
    Progress,
}

#[derive(Debug)]
struct Queued<D> {
    entry: Entry<D>,
    /// Refused records whose replacement was not added yet.
    awaiting_replacement: usize,
    /// When it entered the queue.
    pushed: Instant,
}

/// The in-flight queue of one stream (see the module doc).
#[derive(Debug)]
pub struct InFlight<D> {
    entries: VecDeque<Queued<D>>,
    records: usize,
    token: Option<ResumeToken>,
    position: Option<SourcePosition>,
    once_ids: Vec<String>,
    unsaved: Unsaved,
}

impl<D> Default for InFlight<D> {
    fn default() -> Self {
        Self {
            entries: VecDeque::new(),
            records: 0,
            token: None,
            position: None,
            once_ids: Vec::new(),
            unsaved: Unsaved::Nothing,
        }
    }
}

impl<D> InFlight<D>
where
    D: Future<Output = Delivery> + Unpin,
{
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the next change's entry (changes must arrive in source order).
    pub fn push(&mut self, entry: Entry<D>) {
        self.records += entry.deliveries.len();
        self.entries.push_back(Queued {
            entry,
            awaiting_replacement: 0,
            pushed: Instant::now(),
        });
    }

    /// Records not yet acknowledged.
    pub fn records(&self) -> usize {
        self.records
    }

    /// Whether no change is waiting.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Since when the oldest change still waiting for Kafka has waited, if one does: how long
    /// the checkpoint has been held back by unacknowledged records.
    pub fn waiting_since(&self) -> Option<Instant> {
        self.entries
            .iter()
            .find(|queued| !queued.entry.deliveries.is_empty() || queued.awaiting_replacement > 0)
            .map(|queued| queued.pushed)
    }

    /// The stream's own token while it had nothing new: the checkpoint when nothing is in
    /// flight, ignored otherwise.
    pub fn idle_token(&mut self, token: ResumeToken) {
        if self.entries.is_empty() && self.token.as_ref() != Some(&token) {
            self.token = Some(token);
            if self.unsaved == Unsaved::Nothing {
                self.unsaved = Unsaved::IdleToken;
            }
        }
    }

    /// Settles what Kafka has already answered, waiting for nothing: completed entries leave the
    /// front. Stops at a refused record of the oldest entry (returned, to be replaced) or a
    /// failure.
    pub fn settle_ready(&mut self) -> Result<Option<Refusal>, KafkaError> {
        while let Some(front) = self.entries.front_mut() {
            let mut index = 0;
            while index < front.entry.deliveries.len() {
                let Some(outcome) = (&mut front.entry.deliveries[index]).now_or_never() else {
                    index += 1;
                    continue;
                };
                drop(front.entry.deliveries.swap_remove(index));
                self.records -= 1;
                if let Some(refusal) = Self::refusal(front, outcome)? {
                    return Ok(Some(refusal));
                }
            }
            if !front.entry.deliveries.is_empty() || front.awaiting_replacement > 0 {
                break;
            }
            self.complete_front();
        }
        Ok(None)
    }

    /// Waits until the oldest entry completes (then settles what else is ready), or one of its
    /// records is refused (returned, to be replaced) or fails.
    pub async fn settle_oldest(&mut self) -> Result<Option<Refusal>, KafkaError> {
        let Some(front) = self.entries.front_mut() else {
            return Ok(None);
        };
        while let Some(delivery) = front.entry.deliveries.last_mut() {
            let outcome = delivery.await;
            front.entry.deliveries.pop();
            self.records -= 1;
            if let Some(refusal) = Self::refusal(front, outcome)? {
                return Ok(Some(refusal));
            }
        }
        self.settle_ready()
    }

    /// Adds the replacement of the oldest entry's refused record (its dead letter).
    pub fn replace_refused(&mut self, replacement: D) {
        // A refusal only ever comes from the oldest entry, which stays until replaced.
        if let Some(front) = self.entries.front_mut() {
            front.awaiting_replacement = front.awaiting_replacement.saturating_sub(1);
            front.entry.deliveries.push(replacement);
            self.records += 1;
        }
    }

    /// The checkpoint to save now, if any: when something moved it and its interval passed
    /// since the last save (`since_saved`), or at once with `force`.
    pub fn checkpoint_due(
        &self,
        force: bool,
        since_saved: Duration,
        intervals: SaveIntervals,
    ) -> Option<Checkpoint<'_>> {
        let interval = match self.unsaved {
            Unsaved::Nothing => return None,
            Unsaved::IdleToken => intervals.idle,
            Unsaved::Progress => intervals.progress,
        };
        if !force && since_saved < interval {
            return None;
        }
        Some(Checkpoint {
            token: self.token.as_ref()?,
            position: self.position,
            once_ids: &self.once_ids,
        })
    }

    /// Marks the checkpoint last returned by [`Self::checkpoint_due`] as saved.
    pub fn saved(&mut self) {
        self.once_ids.clear();
        self.unsaved = Unsaved::Nothing;
    }

    fn refusal(front: &mut Queued<D>, outcome: Delivery) -> Result<Option<Refusal>, KafkaError> {
        match outcome {
            Delivery::Acknowledged => Ok(None),
            Delivery::TooLarge(record) => {
                front.awaiting_replacement += 1;
                Ok(Some(Refusal {
                    record,
                    origin: front.entry.origin.clone(),
                    position: front.entry.position,
                }))
            }
            Delivery::Failed(error) => Err(error),
        }
    }

    fn complete_front(&mut self) {
        let Some(Queued { entry, .. }) = self.entries.pop_front() else {
            return;
        };
        if let Some(token) = entry.token {
            self.token = Some(token);
            self.unsaved = Unsaved::Progress;
        }
        if entry.position.is_some() {
            self.position = entry.position;
        }
        self.once_ids.extend(entry.once_ids);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use futures::channel::oneshot;
    use rdkafka::error::RDKafkaErrorCode;

    use super::*;

    /// A delivery the test answers by hand.
    struct Answerable(oneshot::Receiver<Delivery>);

    impl Future for Answerable {
        type Output = Delivery;

        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Delivery> {
            self.0
                .poll_unpin(cx)
                .map(|answer| answer.unwrap_or(Delivery::Failed(KafkaError::Canceled)))
        }
    }

    fn token(change: u8) -> ResumeToken {
        mongodb::bson::from_bson(Bson::Document(
            mongodb::bson::doc! { "_data": format!("token-{change}") },
        ))
        .unwrap()
    }

    fn position(change: u8) -> SourcePosition {
        SourcePosition {
            seconds: 1_000,
            increment: u32::from(change),
        }
    }

    #[derive(Debug, Clone, Copy)]
    enum Kafka {
        Ack,
        TooLarge,
        Fail,
    }

    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Settled {
        Nothing,
        /// A record of this change was refused.
        Refused(u8),
        Failed,
    }

    #[derive(Debug, Clone, Copy)]
    enum Step {
        /// A document change with this many records.
        Change(u8, usize),
        /// A snapshot read (no token) with this many records.
        Snapshot(u8, usize),
        /// A collection-level event (token, no records).
        CollectionLevel(u8),
        /// Kafka answers record `.1` of change `.0` (replacements count on from its records).
        Answer(u8, usize, Kafka),
        /// The stream's own token while idle.
        Idle(u8),
        /// Settle without waiting, expecting this.
        SettleReady(Settled),
        /// Settle waiting for the oldest entry, expecting this.
        SettleOldest(Settled),
        /// Replace the refused record of change `.0`; the replacement is its next record.
        Replace(u8),
        /// The forced checkpoint's token (by change number) and position, and the records in
        /// flight.
        Expect(Option<u8>, Option<u8>, usize),
    }

    struct Harness {
        queue: InFlight<Answerable>,
        senders: HashMap<(u8, usize), oneshot::Sender<Delivery>>,
        next_record: HashMap<u8, usize>,
    }

    impl Harness {
        fn deliveries(&mut self, change: u8, count: usize) -> Vec<Answerable> {
            (0..count).map(|_| self.delivery(change)).collect()
        }

        fn delivery(&mut self, change: u8) -> Answerable {
            let record = self.next_record.entry(change).or_default();
            let (sender, receiver) = oneshot::channel();
            self.senders.insert((change, *record), sender);
            *record += 1;
            Answerable(receiver)
        }

        fn settled(&self, outcome: Result<Option<Refusal>, KafkaError>) -> Settled {
            match outcome {
                Ok(None) => Settled::Nothing,
                Ok(Some(refusal)) => Settled::Refused(
                    refusal
                        .position
                        .map(|p| u8::try_from(p.increment).unwrap())
                        .unwrap(),
                ),
                Err(_) => Settled::Failed,
            }
        }

        async fn run(&mut self, case: &str, step: Step) {
            match step {
                Step::Change(change, records) => {
                    let deliveries = self.deliveries(change, records);
                    self.queue.push(Entry {
                        token: Some(token(change)),
                        position: Some(position(change)),
                        origin: Some((ChangeKind::Update, Bson::Int32(change.into()))),
                        deliveries,
                        once_ids: vec![format!("once-{change}")],
                    });
                }
                Step::Snapshot(change, records) => {
                    let deliveries = self.deliveries(change, records);
                    self.queue.push(Entry {
                        token: None,
                        position: Some(position(change)),
                        origin: Some((ChangeKind::Snapshot, Bson::Int32(change.into()))),
                        deliveries,
                        once_ids: Vec::new(),
                    });
                }
                Step::CollectionLevel(change) => self.queue.push(Entry {
                    token: Some(token(change)),
                    position: None,
                    origin: None,
                    deliveries: Vec::new(),
                    once_ids: Vec::new(),
                }),
                Step::Answer(change, record, answer) => {
                    let outcome = match answer {
                        Kafka::Ack => Delivery::Acknowledged,
                        Kafka::TooLarge => Delivery::TooLarge(RefusedRecord {
                            topic: "events".into(),
                            key: format!("key-{change}"),
                            payload: b"{}".to_vec(),
                        }),
                        Kafka::Fail => Delivery::Failed(KafkaError::MessageProduction(
                            RDKafkaErrorCode::MessageTimedOut,
                        )),
                    };
                    let sender = self
                        .senders
                        .remove(&(change, record))
                        .unwrap_or_else(|| panic!("{case}: no record {change}.{record}"));
                    assert!(sender.send(outcome).is_ok(), "{case}");
                }
                Step::Idle(change) => self.queue.idle_token(token(change)),
                Step::SettleReady(expected) => {
                    let outcome = self.queue.settle_ready();
                    assert_eq!(self.settled(outcome), expected, "{case}: {step:?}");
                }
                Step::SettleOldest(expected) => {
                    let outcome = self.queue.settle_oldest().await;
                    assert_eq!(self.settled(outcome), expected, "{case}: {step:?}");
                }
                Step::Replace(change) => {
                    let replacement = self.delivery(change);
                    self.queue.replace_refused(replacement);
                }
                Step::Expect(expected_token, expected_position, records) => {
                    let due = self.queue.checkpoint_due(true, Duration::ZERO, INTERVALS);
                    assert_eq!(
                        due.as_ref().map(|c| c.token.clone()),
                        expected_token.map(token),
                        "{case}: {step:?} token"
                    );
                    if let Some(due) = due {
                        assert_eq!(
                            due.position,
                            expected_position.map(position),
                            "{case}: {step:?} position"
                        );
                    }
                    assert_eq!(self.queue.records(), records, "{case}: {step:?} records");
                }
            }
        }
    }

    const INTERVALS: SaveIntervals = SaveIntervals {
        progress: Duration::from_secs(1),
        idle: Duration::from_secs(60),
    };

    #[tokio::test]
    async fn the_checkpoint_never_passes_an_unacknowledged_record() {
        use Kafka::*;
        use Settled::*;
        use Step::*;
        let cases: Vec<(&str, Vec<Step>)> = vec![
            (
                "in order",
                vec![
                    Change(1, 1),
                    Change(2, 1),
                    Expect(None, None, 2),
                    Answer(1, 0, Ack),
                    SettleReady(Nothing),
                    Expect(Some(1), Some(1), 1),
                    Answer(2, 0, Ack),
                    SettleReady(Nothing),
                    Expect(Some(2), Some(2), 0),
                ],
            ),
            (
                "out of order: the later ack waits for the earlier",
                vec![
                    Change(1, 1),
                    Change(2, 1),
                    Answer(2, 0, Ack),
                    SettleReady(Nothing),
                    Expect(None, None, 2),
                    Answer(1, 0, Ack),
                    SettleReady(Nothing),
                    Expect(Some(2), Some(2), 0),
                ],
            ),
            (
                "every record of a change (event and dead letters) before its token",
                vec![
                    Change(1, 3),
                    Answer(1, 2, Ack),
                    Answer(1, 0, Ack),
                    SettleReady(Nothing),
                    Expect(None, None, 1),
                    Answer(1, 1, Ack),
                    SettleReady(Nothing),
                    Expect(Some(1), Some(1), 0),
                ],
            ),
            (
                "a failure stops progress before it",
                vec![
                    Change(1, 1),
                    Change(2, 1),
                    Change(3, 1),
                    Answer(1, 0, Ack),
                    Answer(2, 0, Fail),
                    Answer(3, 0, Ack),
                    SettleReady(Failed),
                    Expect(Some(1), Some(1), 1),
                ],
            ),
            (
                "a refused record holds its change until its replacement is acknowledged",
                vec![
                    Change(1, 2),
                    Change(2, 1),
                    Answer(1, 0, TooLarge),
                    Answer(1, 1, Ack),
                    Answer(2, 0, Ack),
                    SettleReady(Refused(1)),
                    SettleReady(Nothing),
                    Expect(None, None, 1),
                    Replace(1),
                    Expect(None, None, 2),
                    // Change 2's record is acknowledged, but counts until change 1 completes.
                    SettleReady(Nothing),
                    Expect(None, None, 2),
                    Answer(1, 2, Ack),
                    SettleReady(Nothing),
                    Expect(Some(2), Some(2), 0),
                ],
            ),
            (
                "a refused replacement is refused again, not lost",
                vec![
                    Change(1, 1),
                    Answer(1, 0, TooLarge),
                    SettleOldest(Refused(1)),
                    Replace(1),
                    Answer(1, 1, TooLarge),
                    SettleOldest(Refused(1)),
                    Replace(1),
                    Answer(1, 2, Ack),
                    SettleOldest(Nothing),
                    Expect(Some(1), Some(1), 0),
                ],
            ),
            (
                "waiting for the oldest settles the rest that is ready",
                vec![
                    Change(1, 2),
                    Change(2, 1),
                    Change(3, 1),
                    Answer(3, 0, Ack),
                    Answer(2, 0, Ack),
                    Answer(1, 1, Ack),
                    Answer(1, 0, Ack),
                    SettleOldest(Nothing),
                    Expect(Some(3), Some(3), 0),
                ],
            ),
            (
                "a change with no records completes at once, in its turn",
                vec![
                    Change(1, 1),
                    Change(2, 0),
                    SettleReady(Nothing),
                    Expect(None, None, 1),
                    Answer(1, 0, Ack),
                    SettleReady(Nothing),
                    Expect(Some(2), Some(2), 0),
                ],
            ),
            (
                "an invalidate moves the token, not the position",
                vec![
                    Change(1, 1),
                    CollectionLevel(2),
                    Answer(1, 0, Ack),
                    SettleReady(Nothing),
                    Expect(Some(2), Some(1), 0),
                ],
            ),
            (
                "snapshot reads move the position but have no token to save",
                vec![
                    Snapshot(1, 1),
                    Answer(1, 0, Ack),
                    SettleReady(Nothing),
                    Expect(None, None, 0),
                    Change(2, 1),
                    Answer(2, 0, Ack),
                    SettleReady(Nothing),
                    Expect(Some(2), Some(2), 0),
                ],
            ),
            (
                "an idle token counts only with nothing in flight",
                vec![
                    Idle(1),
                    Expect(Some(1), None, 0),
                    Change(2, 1),
                    Idle(3),
                    Expect(Some(1), None, 1),
                    Answer(2, 0, Ack),
                    SettleReady(Nothing),
                    Expect(Some(2), Some(2), 0),
                    Idle(4),
                    Expect(Some(4), Some(2), 0),
                ],
            ),
        ];
        for (case, steps) in cases {
            let mut harness = Harness {
                queue: InFlight::new(),
                senders: HashMap::new(),
                next_record: HashMap::new(),
            };
            for step in steps {
                harness.run(case, step).await;
            }
        }
    }

    #[test]
    fn the_wait_is_the_oldest_change_with_unacknowledged_records() {
        let mut queue: InFlight<Answerable> = InFlight::new();
        assert_eq!(queue.waiting_since(), None);
        let (first, first_answer) = oneshot::channel();
        queue.push(Entry {
            token: Some(token(1)),
            position: Some(position(1)),
            origin: None,
            deliveries: vec![Answerable(first_answer)],
            once_ids: Vec::new(),
        });
        let first_pushed = queue.waiting_since().unwrap();
        let (second, second_answer) = oneshot::channel();
        queue.push(Entry {
            token: Some(token(2)),
            position: Some(position(2)),
            origin: None,
            deliveries: vec![Answerable(second_answer)],
            once_ids: Vec::new(),
        });
        assert_eq!(queue.waiting_since(), Some(first_pushed));
        assert!(first.send(Delivery::Acknowledged).is_ok());
        queue.settle_ready().unwrap();
        let second_pushed = queue.waiting_since().unwrap();
        assert!(second_pushed >= first_pushed);
        assert!(second.send(Delivery::Acknowledged).is_ok());
        queue.settle_ready().unwrap();
        assert_eq!(queue.waiting_since(), None);
    }

    #[test]
    fn a_checkpoint_waits_for_its_interval_unless_forced() {
        let mut queue: InFlight<Answerable> = InFlight::new();
        let soon = Duration::from_millis(10);
        let later = Duration::from_secs(2);
        let much_later = Duration::from_secs(61);
        assert_eq!(queue.checkpoint_due(true, much_later, INTERVALS), None);

        // Only an idle token moved it: the long interval.
        queue.idle_token(token(1));
        assert_eq!(queue.checkpoint_due(false, later, INTERVALS), None);
        assert!(queue.checkpoint_due(false, much_later, INTERVALS).is_some());
        assert!(queue.checkpoint_due(true, soon, INTERVALS).is_some());
        queue.saved();
        assert_eq!(queue.checkpoint_due(true, much_later, INTERVALS), None);

        // Progress: the short interval, with the once-per-id ids acknowledged since the save.
        queue.push(Entry {
            token: Some(token(2)),
            position: Some(position(2)),
            origin: None,
            deliveries: Vec::new(),
            once_ids: vec!["fact".into()],
        });
        queue.settle_ready().unwrap();
        assert_eq!(queue.checkpoint_due(false, soon, INTERVALS), None);
        let due = queue.checkpoint_due(false, later, INTERVALS).unwrap();
        assert_eq!(due.token, &token(2));
        assert_eq!(due.once_ids, ["fact".to_owned()]);
        queue.saved();
        // An idle token after progress saved keeps the long interval.
        queue.idle_token(token(3));
        assert_eq!(queue.checkpoint_due(false, later, INTERVALS), None);
        let due = queue.checkpoint_due(true, soon, INTERVALS).unwrap();
        assert!(due.once_ids.is_empty());
    }
}
