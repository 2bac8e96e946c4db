//! Running customers' stories against MongoDB: a scenario (N customers, M orders each, to the
//! end) or a load (a rate of changes per second for a duration).
//!
//! # One customer's story
//! 1. Accounts inserts the customer, then changes it a few times.
//! 2. Orders waits (with a deadline) until its collection holds the projected copy of that
//!    latest state, then pushes each order (CREATED) and its outcome (APPROVED, REJECTED or
//!    CANCELLED). Waiting for the *latest* state is what makes the requests deterministic: the
//!    connector builds a request from the customer copy the document holds when the order is
//!    approved, and no Accounts change of this customer happens until every outcome is pushed.
//! 3. Then, at the same time: Accounts changes the customer again (the copy follows, the
//!    requests already made do not), and for each approved order Fulfillment waits for the
//!    request and moves it PROCESSING, SHIPPED, IN_TRANSIT, RECEIVED.
//!
//! # Guarantees
//! - **The model is exactly what was written.** A write is applied to the model only once
//!   MongoDB acknowledged it, and cancellation (or another customer's failure) stops a story
//!   between writes, never during one; so [`Simulator::expected`] is consistent at any moment:
//!   a story stopped half-way leaves, for instance, an approved order whose request the
//!   projector still creates, which the model expects.
//! - **Reproducible content.** What is written comes from [`crate::data`] plans, so a seed gives
//!   the same documents whatever the interleaving of customers.
//! - **Load pacing.** In load mode every write takes a token from one bucket filled at the
//!   target rate; new customers are started while tokens go unused (stories spend much of
//!   their time waiting for the pipeline), so the rate is reached with as few concurrent stories
//!   as it needs. When the duration is over no customer starts, and the started ones are run to
//!   their end without pacing.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use mongodb::Client;
use storefront_schemas::topology::StorefrontNamespaces;
use tokio_util::sync::CancellationToken;

use crate::SimError;
use crate::apps::Apps;
use crate::config::SimConfig;
use crate::data::{CustomerPlan, plan_customer};
use crate::model::{ExpectedState, Model, Write, projected_copy};
use crate::progress::{Flow, Progress};

/// A scenario: `customers` customers with `orders` orders each, run to the end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScenarioSpec {
    /// How many customers.
    pub customers: u64,
    /// Orders per customer.
    pub orders: u32,
    /// Seed of every random choice.
    pub seed: u64,
}

/// A load: about `rate` source changes per second for `duration`, spread over as many customers
/// as that takes, each with 1 to `max_orders` orders.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadSpec {
    /// Target source changes per second, over the three applications.
    pub rate: f64,
    /// How long new customers are started.
    pub duration: Duration,
    /// Seed of every random choice.
    pub seed: u64,
    /// Most orders per customer.
    pub max_orders: u32,
    /// Most stories in progress at once.
    pub max_customers: usize,
}

/// The three applications, their model and their progress.
#[derive(Debug)]
pub struct Simulator {
    apps: Apps,
    namespaces: StorefrontNamespaces,
    concurrency: usize,
    model: Mutex<Model>,
    progress: Arc<Progress>,
    cancel: CancellationToken,
}

impl Simulator {
    /// Connects to the MongoDB of `config`.
    pub async fn connect(config: &SimConfig) -> Result<Self, SimError> {
        let client = storefront_plumbing::mongo::connect(&config.mongo, "storefront-sim").await?;
        Ok(Self::new(&client, config))
    }

    /// A simulator writing through `client` to the collections of `config`.
    pub fn new(client: &Client, config: &SimConfig) -> Self {
        Self {
            apps: Apps::new(
                client,
                &config.sources,
                Duration::from_millis(config.apps.wait_ms),
            ),
            namespaces: config.sources.clone(),
            concurrency: config.apps.concurrency,
            model: Mutex::new(Model::new()),
            progress: Arc::new(Progress::new()),
            cancel: CancellationToken::new(),
        }
    }

    /// The counters of this simulator's runs.
    pub fn progress(&self) -> Arc<Progress> {
        self.progress.clone()
    }

    /// Cancelling it stops every story between two writes.
    pub fn cancel_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// The final state the writes so far lead to.
    pub fn expected(&self) -> ExpectedState {
        self.model().expected(&self.namespaces)
    }

    fn model(&self) -> MutexGuard<'_, Model> {
        // A panic while the lock was held left a model that applied a write or not; either
        // is a consistent model, so the poison carries no information.
        self.model
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs a scenario to its end and returns the expected state.
    pub async fn run_scenario(&self, spec: &ScenarioSpec) -> Result<ExpectedState, SimError> {
        let plans: Vec<CustomerPlan> = (0..spec.customers)
            .map(|index| plan_customer(spec.seed, index, spec.orders..=spec.orders))
            .collect();
        for plan in &plans {
            self.plan_progress(plan);
        }
        let outcomes: Vec<Result<(), SimError>> = futures::stream::iter(plans)
            .map(|plan| async move {
                let result = self.run_customer(&plan, None).await;
                if result.is_err() {
                    // The others stop between writes; their results say Cancelled.
                    self.cancel.cancel();
                }
                result
            })
            .buffer_unordered(self.concurrency)
            .collect()
            .await;
        first_error(outcomes)?;
        Ok(self.expected())
    }

    /// Runs a load and returns the expected state once every started story has ended.
    pub async fn run_load(&self, spec: &LoadSpec) -> Result<ExpectedState, SimError> {
        let pacer = Pacer::new(spec.rate);
        let started = Instant::now();
        let mut next_index = 0_u64;
        let mut running = FuturesUnordered::new();
        let mut outcomes = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        let max_orders = spec.max_orders.max(1);
        while started.elapsed() < spec.duration && !self.cancel.is_cancelled() {
            tokio::select! {
                Some(outcome) = running.next() => {
                    if let Err(error) = &outcome
                        && !matches!(error, SimError::Cancelled)
                    {
                        self.cancel.cancel();
                    }
                    outcomes.push(outcome);
                }
                _ = tick.tick() => {
                    // Unused tokens mean the running stories are all waiting: start more.
                    let idle = pacer.spare().floor() as usize;
                    let room = spec.max_customers.saturating_sub(running.len());
                    for _ in 0..idle.min(room).max(usize::from(running.is_empty())) {
                        let plan = plan_customer(spec.seed, next_index, 1..=max_orders);
                        next_index += 1;
                        self.plan_progress(&plan);
                        let pacer = &pacer;
                        running.push(async move { self.run_customer(&plan, Some(pacer)).await });
                    }
                }
            }
        }
        pacer.open();
        while let Some(outcome) = running.next().await {
            if let Err(error) = &outcome
                && !matches!(error, SimError::Cancelled)
            {
                self.cancel.cancel();
            }
            outcomes.push(outcome);
        }
        first_error(outcomes)?;
        Ok(self.expected())
    }

    fn plan_progress(&self, plan: &CustomerPlan) {
        let (accounts, orders, fulfillment) = plan.write_counts();
        self.progress.plan(Flow::Accounts, accounts);
        self.progress.plan(Flow::Orders, orders);
        self.progress.plan(Flow::Fulfillment, fulfillment);
    }

    /// Plays one customer's story (see the module doc).
    async fn run_customer(
        &self,
        plan: &CustomerPlan,
        pacer: Option<&Pacer>,
    ) -> Result<(), SimError> {
        self.progress.customer_started();
        for write in &plan.accounts_before {
            self.send(write, pacer).await?;
        }
        if !plan.orders.is_empty() {
            let copy = self.expected_copy(&plan.key)?;
            self.apps
                .wait_for_copy(&plan.key, &copy, &self.cancel)
                .await?;
            for order in &plan.orders {
                self.send(&order.push, pacer).await?;
                self.send(&order.outcome, pacer).await?;
            }
        }
        // Both branches run to their end: dropping one while its write is in flight (as
        // `try_join` does when the other fails or is cancelled) would leave a write in MongoDB
        // that the model never saw. A failure cancels the run instead, so the other branch (and
        // the other stories) stop between two writes.
        let stop_on_error = |outcome: Result<(), SimError>| {
            if outcome.is_err() {
                self.cancel.cancel();
            }
            outcome
        };
        let accounts = async {
            for write in &plan.accounts_after {
                self.send(write, pacer).await?;
            }
            Ok::<(), SimError>(())
        };
        let fulfillment =
            futures::future::join_all(plan.orders.iter().filter(|order| order.approved()).map(
                |order| async move {
                    let outcome = async {
                        self.apps
                            .wait_for_request(&order.guid, &self.cancel)
                            .await?;
                        for write in &order.fulfillment {
                            self.send(write, pacer).await?;
                        }
                        Ok::<(), SimError>(())
                    }
                    .await;
                    stop_on_error(outcome)
                },
            ));
        let (accounts, fulfillment) =
            futures::future::join(async { stop_on_error(accounts.await) }, fulfillment).await;
        first_error(std::iter::once(accounts).chain(fulfillment).collect())?;
        self.progress.customer_done();
        Ok(())
    }

    /// The customer copy the Orders application must see: the model's latest customer state as
    /// the connector publishes it.
    fn expected_copy(&self, key: &str) -> Result<mongodb::bson::Document, SimError> {
        self.model()
            .account(key)
            .map(projected_copy)
            .ok_or_else(|| SimError::Unexpected(format!("customer {key} is not in the model")))
    }

    /// Sends one write (paced in load mode) and applies it to the model once acknowledged.
    async fn send(&self, write: &Write, pacer: Option<&Pacer>) -> Result<(), SimError> {
        if self.cancel.is_cancelled() {
            return Err(SimError::Cancelled);
        }
        if let Some(pacer) = pacer {
            tokio::select! {
                () = self.cancel.cancelled() => return Err(SimError::Cancelled),
                () = pacer.acquire() => {}
            }
        }
        self.apps.write(write).await?;
        self.model().apply(write)?;
        self.progress.wrote(Apps::flow(write));
        Ok(())
    }
}

/// The first real error of a run (a failure, rather than the cancellations it caused).
fn first_error(outcomes: Vec<Result<(), SimError>>) -> Result<(), SimError> {
    let mut cancelled = None;
    for outcome in outcomes {
        match outcome {
            Ok(()) => {}
            Err(SimError::Cancelled) => cancelled = Some(SimError::Cancelled),
            Err(error) => return Err(error),
        }
    }
    cancelled.map_or(Ok(()), Err)
}

/// A token bucket filled at `rate` tokens per second, holding at most a fifth of a second's
/// worth (at least one), so a burst after a quiet spell stays short.
#[derive(Debug)]
pub struct Pacer {
    rate: f64,
    capacity: f64,
    state: Mutex<PacerState>,
}

#[derive(Debug)]
struct PacerState {
    tokens: f64,
    updated: Instant,
    open: bool,
}

impl Pacer {
    /// A bucket filled at `rate` per second (at least one per minute).
    pub fn new(rate: f64) -> Self {
        let rate = if rate.is_finite() {
            rate.max(1.0 / 60.0)
        } else {
            1.0
        };
        Self {
            rate,
            capacity: (rate / 5.0).max(1.0),
            state: Mutex::new(PacerState {
                tokens: 0.0,
                updated: Instant::now(),
                open: false,
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, PacerState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn refill(&self, state: &mut PacerState) {
        let now = Instant::now();
        let elapsed = now.duration_since(state.updated).as_secs_f64();
        state.tokens = (state.tokens + elapsed * self.rate).min(self.capacity);
        state.updated = now;
    }

    /// Waits for a token.
    pub async fn acquire(&self) {
        loop {
            let wait = {
                let mut state = self.state();
                if state.open {
                    return;
                }
                self.refill(&mut state);
                if state.tokens >= 1.0 {
                    state.tokens -= 1.0;
                    return;
                }
                (1.0 - state.tokens) / self.rate
            };
            tokio::time::sleep(Duration::from_secs_f64(wait)).await;
        }
    }

    /// Tokens waiting to be taken now.
    pub fn spare(&self) -> f64 {
        let mut state = self.state();
        self.refill(&mut state);
        state.tokens
    }

    /// Lets every later [`Pacer::acquire`] through at once.
    pub fn open(&self) {
        self.state().open = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_pacer_keeps_the_rate() {
        let pacer = Pacer::new(100.0);
        let started = tokio::time::Instant::now();
        for _ in 0..200 {
            pacer.acquire().await;
        }
        let elapsed = started.elapsed().as_secs_f64();
        assert!((1.9..2.2).contains(&elapsed), "{elapsed}");
        pacer.open();
        let started = tokio::time::Instant::now();
        for _ in 0..1000 {
            pacer.acquire().await;
        }
        assert!(started.elapsed() < Duration::from_millis(1));
    }

    #[test]
    fn a_failure_wins_over_the_cancellations_it_caused() {
        let outcomes = vec![
            Err(SimError::Cancelled),
            Ok(()),
            Err(SimError::Unexpected("boom".into())),
        ];
        assert!(matches!(
            first_error(outcomes),
            Err(SimError::Unexpected(_))
        ));
        assert!(matches!(
            first_error(vec![Ok(()), Err(SimError::Cancelled)]),
            Err(SimError::Cancelled)
        ));
        assert!(first_error(vec![Ok(())]).is_ok());
    }
}
