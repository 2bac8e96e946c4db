//! One active connector per set of streams: a lease in MongoDB, held by one process while any
//! number of others stand by.
//!
//! # Guarantees
//! - **One publisher at a time.** Every record and dead letter passes the [`LeaseGate`] before it
//!   is handed to Kafka, and the gate is open only while this process's lease is valid by its own
//!   monotonic clock: until `ttl` after it *sent* its last renewal that MongoDB accepted. A
//!   standby takes over only once it has seen the same renewal count for `ttl`, and it saw that
//!   count after the renewal was written, so the holder's validity ends first. No wall clocks are
//!   compared; processes only need their clocks to run at about the same rate.
//! - **Fenced after a pause.** A holder that was paused (SIGSTOP, a frozen VM) wakes with its
//!   lease expired by its own clock: the gate is closed before anything else runs, so it hands
//!   nothing more to Kafka. If its renewal then finds another owner, the process stops with
//!   [`LeaseError::Lost`]; if nobody took over, the renewal succeeds and it goes on. Checkpoint
//!   saves are fenced too: the new holder claims each stream's checkpoint, so the old one's saves
//!   are refused ([`crate::checkpoint`]).
//! - **Takeover in bounded time.** After `kill -9` of the holder, a standby takes over within
//!   `ttl` plus one poll (`ttl / 4`, at most a second) and resumes every stream from its last
//!   checkpoint: nothing is lost, changes after the checkpoint are published again (duplicates
//!   with the same event ids, which the projectors ignore).
//! - **Clean stops hand over at once.** A holder that stops cleanly releases its lease, so a
//!   standby takes over on its next poll.
//!
//! The lease document (`_id` the lease name, in `checkpoints.database`.`lease.collection`) has
//! the holder (`owner`, null once released), `epoch` (one more at each change of holder),
//! `renewals` and, for people, `host`, `pid` and `renewed_at`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mongodb::bson::{Bson, DateTime, Document, doc};
use mongodb::{Client, Collection};
use storefront_plumbing::telemetry::{ComponentState, Health};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::LeaseSettings;

/// The `/health` component of the lease.
pub const COMPONENT: &str = "lease";

/// Why the lease ended for this process.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// Another process holds the lease now.
    #[error(
        "the lease `{name}` was taken over by another connector process ({owner}); this one \
         stops so that only one process publishes its streams"
    )]
    Lost {
        /// The lease's name.
        name: String,
        /// The process now holding it.
        owner: String,
    },
    /// MongoDB failed in a way retrying does not fix.
    #[error("the lease store failed")]
    Mongo(#[from] mongodb::error::Error),
}

/// Whether records may be handed to Kafka now: open while the lease is valid; always open when
/// the connector runs without a lease.
#[derive(Debug, Clone, Default)]
pub struct LeaseGate {
    state: Option<Arc<GateState>>,
}

#[derive(Debug)]
struct GateState {
    origin: Instant,
    /// Milliseconds since `origin` until which the lease is valid.
    valid_until_ms: AtomicU64,
    lost: AtomicBool,
    changed: Notify,
}

/// The gate refused: the lease was lost.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("this process no longer holds the connector's lease")]
pub struct LeaseLost;

impl LeaseGate {
    /// A gate that is always open (no lease).
    pub fn always_open() -> Self {
        Self::default()
    }

    fn held(valid_until: Instant) -> Self {
        let origin = Instant::now();
        let gate = Self {
            state: Some(Arc::new(GateState {
                origin,
                valid_until_ms: AtomicU64::new(0),
                lost: AtomicBool::new(false),
                changed: Notify::new(),
            })),
        };
        gate.extend(valid_until);
        gate
    }

    /// Returns at once while the lease is valid; while it has expired, waits until a renewal
    /// extends it; fails once it is lost.
    pub async fn permit(&self) -> Result<(), LeaseLost> {
        let Some(state) = &self.state else {
            return Ok(());
        };
        loop {
            let changed = state.changed.notified();
            tokio::pin!(changed);
            // Registered before the check, so a change between the check and the wait wakes it.
            changed.as_mut().enable();
            if state.lost.load(Ordering::Acquire) {
                return Err(LeaseLost);
            }
            if self.is_valid() {
                return Ok(());
            }
            changed.await;
        }
    }

    /// Whether the lease is valid now (always, without a lease).
    pub fn is_valid(&self) -> bool {
        self.state.as_ref().is_none_or(|state| {
            !state.lost.load(Ordering::Acquire)
                && state.origin.elapsed().as_millis()
                    < u128::from(state.valid_until_ms.load(Ordering::Acquire))
        })
    }

    fn extend(&self, until: Instant) {
        if let Some(state) = &self.state {
            let until_ms = u64::try_from(until.saturating_duration_since(state.origin).as_millis())
                .unwrap_or(u64::MAX);
            state.valid_until_ms.store(until_ms, Ordering::Release);
            state.changed.notify_waiters();
        }
    }

    fn lose(&self) {
        if let Some(state) = &self.state {
            state.lost.store(true, Ordering::Release);
            state.changed.notify_waiters();
        }
    }
}

/// The lease of one connector process.
#[derive(Debug, Clone)]
pub struct Lease {
    leases: Collection<Document>,
    name: String,
    owner: String,
    ttl: Duration,
    renew_every: Duration,
    health: Health,
}

/// What a standby has seen of the holder: the same `(owner, epoch, renewals)` since `since`.
#[derive(Debug, Clone, PartialEq)]
struct Sighting {
    holder: (Bson, i64, i64),
    since: Instant,
}

impl Lease {
    /// The lease `name` for this process, kept in `database`.`settings.collection`.
    pub fn new(
        client: &Client,
        database: &str,
        name: String,
        settings: &LeaseSettings,
        health: Health,
    ) -> Self {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "unknown-host".into());
        Self {
            leases: client.database(database).collection(&settings.collection),
            name,
            owner: format!(
                "{host}:{}:{}",
                std::process::id(),
                mongodb::bson::oid::ObjectId::new().to_hex()
            ),
            ttl: Duration::from_millis(settings.ttl_ms),
            renew_every: Duration::from_millis(settings.renew_interval_ms),
            health,
        }
    }

    /// Waits, as a standby, until this process holds the lease; `None` on shutdown.
    pub async fn acquire(
        &self,
        shutdown: &CancellationToken,
    ) -> Result<Option<LeaseGate>, LeaseError> {
        let poll = (self.ttl / 4).min(Duration::from_secs(1));
        let mut sighting: Option<Sighting> = None;
        let mut reported_holder = None;
        loop {
            let asked = Instant::now();
            match self.try_acquire(&mut sighting, asked).await {
                Ok(Some(epoch)) => {
                    tracing::info!(lease = %self.name, owner = %self.owner, epoch, "lease acquired; this process publishes the streams");
                    metrics::gauge!("cdc_lease_held").set(1.0);
                    self.health.set(COMPONENT, ComponentState::Ready);
                    return Ok(Some(LeaseGate::held(asked + self.ttl)));
                }
                Ok(None) => {
                    let holder = sighting
                        .as_ref()
                        .map_or_else(String::new, |seen| holder_name(&seen.holder.0));
                    if reported_holder.as_ref() != Some(&holder) {
                        tracing::info!(lease = %self.name, %holder, "standing by: another process holds the lease");
                        metrics::gauge!("cdc_lease_held").set(0.0);
                        self.health.set(
                            COMPONENT,
                            ComponentState::Standby(format!(
                                "standing by; lease `{}` is held by {holder}",
                                self.name
                            )),
                        );
                        reported_holder = Some(holder);
                    }
                }
                Err(error) if crate::source::is_transient(&error) => {
                    tracing::warn!(lease = %self.name, error = %storefront_plumbing::errors::chain(&error), "reading the lease failed; trying again");
                    self.health.set(
                        COMPONENT,
                        ComponentState::Failing(format!(
                            "cannot read the lease: {}",
                            storefront_plumbing::errors::chain(&error)
                        )),
                    );
                    reported_holder = None;
                }
                Err(error) => return Err(error.into()),
            }
            tokio::select! {
                () = shutdown.cancelled() => return Ok(None),
                () = tokio::time::sleep(poll) => {}
            }
        }
    }

    /// One attempt: the new epoch when this process now holds the lease.
    async fn try_acquire(
        &self,
        sighting: &mut Option<Sighting>,
        now: Instant,
    ) -> Result<Option<i64>, mongodb::error::Error> {
        let Some(found) = self.leases.find_one(doc! { "_id": &self.name }).await? else {
            let created = self
                .leases
                .insert_one(self.holder_fields(1, doc! { "_id": &self.name }))
                .await;
            return match created {
                Ok(_) => Ok(Some(1)),
                Err(error) if is_duplicate_key(&error) => Ok(None),
                Err(error) => Err(error),
            };
        };
        let owner = found.get("owner").cloned().unwrap_or(Bson::Null);
        let epoch = found.get_i64("epoch").unwrap_or(0);
        let renewals = found.get_i64("renewals").unwrap_or(0);
        let holder = (owner.clone(), epoch, renewals);
        let released = owner == Bson::Null;
        let expired = sighting.as_ref().is_some_and(|seen| {
            seen.holder == holder && now.duration_since(seen.since) >= self.ttl
        });
        if !released && !expired {
            if sighting.as_ref().is_none_or(|seen| seen.holder != holder) {
                *sighting = Some(Sighting { holder, since: now });
            }
            return Ok(None);
        }
        // Taken only if the holder has not renewed since it was seen (or released it).
        let taken = self
            .leases
            .update_one(
                doc! { "_id": &self.name, "owner": owner, "epoch": epoch, "renewals": renewals },
                doc! { "$set": self.holder_fields(epoch + 1, Document::new()) },
            )
            .await?;
        if taken.matched_count == 1 {
            if !released {
                tracing::warn!(lease = %self.name, previous = %holder_name(&holder.0), "the lease holder stopped renewing; taking over from its checkpoints");
            }
            return Ok(Some(epoch + 1));
        }
        *sighting = None;
        Ok(None)
    }

    fn holder_fields(&self, epoch: i64, mut fields: Document) -> Document {
        fields.insert("owner", &self.owner);
        fields.insert("epoch", epoch);
        fields.insert("renewals", 0_i64);
        fields.insert("renewed_at", DateTime::now());
        fields.insert(
            "host",
            std::env::var("HOSTNAME").unwrap_or_else(|_| "unknown-host".into()),
        );
        fields.insert("pid", i64::from(std::process::id()));
        fields
    }

    /// Renews the lease every `renew_interval_ms` until `stop` (the process has drained and
    /// saved its checkpoints; then [`Self::release`]) or until it is lost (then closes `gate` for
    /// good and returns the error). While renewals fail, the gate closes once the lease expires
    /// by this process's clock, and opens again if a later renewal succeeds.
    pub async fn keep(&self, gate: LeaseGate, stop: CancellationToken) -> Result<(), LeaseError> {
        let mut failing = false;
        loop {
            tokio::select! {
                () = stop.cancelled() => return Ok(()),
                () = tokio::time::sleep(self.renew_every) => {}
            }
            let asked = Instant::now();
            let renewed = self
                .leases
                .update_one(
                    doc! { "_id": &self.name, "owner": &self.owner },
                    doc! { "$inc": { "renewals": 1_i64 }, "$set": { "renewed_at": DateTime::now() } },
                )
                .await;
            match renewed {
                Ok(result) if result.matched_count == 1 => {
                    gate.extend(asked + self.ttl);
                    if failing {
                        tracing::info!(lease = %self.name, "lease renewed again");
                        self.health.set(COMPONENT, ComponentState::Ready);
                        failing = false;
                    }
                }
                Ok(_) => {
                    gate.lose();
                    metrics::gauge!("cdc_lease_held").set(0.0);
                    let owner = self
                        .leases
                        .find_one(doc! { "_id": &self.name })
                        .await
                        .ok()
                        .flatten()
                        .and_then(|found| found.get("owner").map(holder_name))
                        .unwrap_or_else(|| "unknown".into());
                    let error = LeaseError::Lost {
                        name: self.name.clone(),
                        owner,
                    };
                    self.health
                        .set(COMPONENT, ComponentState::Failing(error.to_string()));
                    return Err(error);
                }
                Err(error) => {
                    let reason = storefront_plumbing::errors::chain(&error);
                    let valid = gate.is_valid();
                    tracing::warn!(lease = %self.name, error = %reason, valid, "renewing the lease failed; trying again");
                    if !valid {
                        self.health.set(
                            COMPONENT,
                            ComponentState::Failing(format!(
                                "the lease expired and cannot be renewed (publishing paused): \
                                 {reason}"
                            )),
                        );
                        failing = true;
                    }
                }
            }
        }
    }

    /// Gives the lease up, so a standby takes over at once.
    pub async fn release(&self) {
        let released = self
            .leases
            .update_one(
                doc! { "_id": &self.name, "owner": &self.owner },
                doc! { "$set": { "owner": Bson::Null, "renewed_at": DateTime::now() } },
            )
            .await;
        match released {
            Ok(_) => tracing::info!(lease = %self.name, "lease released"),
            Err(error) => {
                tracing::warn!(lease = %self.name, error = %storefront_plumbing::errors::chain(&error), "releasing the lease failed; a standby takes over when it expires");
            }
        }
        metrics::gauge!("cdc_lease_held").set(0.0);
    }
}

fn holder_name(owner: &Bson) -> String {
    match owner {
        Bson::String(owner) => owner.clone(),
        Bson::Null => "nobody (released)".into(),
        other => other.to_string(),
    }
}

fn is_duplicate_key(error: &mongodb::error::Error) -> bool {
    const DUPLICATE_KEY: i32 = 11000;
    match error.kind.as_ref() {
        mongodb::error::ErrorKind::Write(mongodb::error::WriteFailure::WriteError(write)) => {
            write.code == DUPLICATE_KEY
        }
        mongodb::error::ErrorKind::Command(command) => command.code == DUPLICATE_KEY,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_gate_is_open_while_valid_waits_while_expired_and_fails_once_lost() {
        let gate = LeaseGate::held(Instant::now() + Duration::from_secs(60));
        assert!(gate.is_valid());
        gate.permit().await.unwrap();

        gate.extend(Instant::now());
        assert!(!gate.is_valid(), "expired by this process's clock");
        let waiting = tokio::spawn({
            let gate = gate.clone();
            async move { gate.permit().await }
        });
        tokio::task::yield_now().await;
        assert!(
            !waiting.is_finished(),
            "an expired lease holds records back"
        );
        gate.extend(Instant::now() + Duration::from_secs(60));
        waiting.await.unwrap().unwrap();

        gate.extend(Instant::now());
        let waiting = tokio::spawn({
            let gate = gate.clone();
            async move { gate.permit().await }
        });
        tokio::task::yield_now().await;
        gate.lose();
        assert!(waiting.await.unwrap().is_err(), "a lost lease refuses");
        gate.extend(Instant::now() + Duration::from_secs(60));
        assert!(gate.permit().await.is_err(), "lost for good");
    }

    #[tokio::test]
    async fn without_a_lease_the_gate_is_always_open() {
        let gate = LeaseGate::always_open();
        assert!(gate.is_valid());
        gate.permit().await.unwrap();
    }
}
