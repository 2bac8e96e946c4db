//! Counters a caller reads while a run goes on (to draw progress bars or log lines).
//!
//! Each flow (one application) counts the source changes it has written and the changes planned
//! so far: a scenario plans everything before it starts, a load plans each customer as it
//! starts. Counters only grow; a snapshot is a consistent enough view for display (each counter
//! is read atomically, not all at once).

use std::sync::atomic::{AtomicU64, Ordering};

use storefront_schemas::topology::{Namespace, StorefrontNamespaces};

/// One application.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Writes `customer.accounts`.
    Accounts,
    /// Writes `customer.orders`.
    Orders,
    /// Writes `fulfillment.requests`.
    Fulfillment,
}

impl Flow {
    /// Every flow, in display order.
    pub const ALL: [Flow; 3] = [Flow::Accounts, Flow::Orders, Flow::Fulfillment];

    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            Flow::Accounts => "accounts",
            Flow::Orders => "orders",
            Flow::Fulfillment => "fulfillment",
        }
    }

    /// The collection this application writes.
    pub fn source(self, sources: &StorefrontNamespaces) -> &Namespace {
        match self {
            Flow::Accounts => &sources.accounts,
            Flow::Orders => &sources.orders,
            Flow::Fulfillment => &sources.fulfillment,
        }
    }

    fn index(self) -> usize {
        match self {
            Flow::Accounts => 0,
            Flow::Orders => 1,
            Flow::Fulfillment => 2,
        }
    }
}

#[derive(Debug, Default)]
struct Counter {
    written: AtomicU64,
    planned: AtomicU64,
}

/// Shared counters of a run.
#[derive(Debug, Default)]
pub struct Progress {
    flows: [Counter; 3],
    customers_started: AtomicU64,
    customers_done: AtomicU64,
}

/// One flow's counts.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FlowProgress {
    /// Source changes written (acknowledged by MongoDB).
    pub written: u64,
    /// Source changes planned so far.
    pub planned: u64,
}

/// The counters at one moment.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ProgressSnapshot {
    /// Per flow, in [`Flow::ALL`] order.
    pub flows: [FlowProgress; 3],
    /// Customers whose story started.
    pub customers_started: u64,
    /// Customers whose story ended.
    pub customers_done: u64,
}

impl ProgressSnapshot {
    /// The counts of `flow`.
    pub fn flow(&self, flow: Flow) -> FlowProgress {
        self.flows[flow.index()]
    }

    /// Changes written by all flows.
    pub fn written(&self) -> u64 {
        self.flows.iter().map(|f| f.written).sum()
    }
}

impl Progress {
    /// Counters at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// `count` more changes of `flow` are planned.
    pub fn plan(&self, flow: Flow, count: u64) {
        self.flows[flow.index()]
            .planned
            .fetch_add(count, Ordering::Relaxed);
    }

    /// One change of `flow` was written.
    pub fn wrote(&self, flow: Flow) {
        self.flows[flow.index()]
            .written
            .fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn customer_started(&self) {
        self.customers_started.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn customer_done(&self) {
        self.customers_done.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters now.
    pub fn snapshot(&self) -> ProgressSnapshot {
        let flow = |f: Flow| FlowProgress {
            written: self.flows[f.index()].written.load(Ordering::Relaxed),
            planned: self.flows[f.index()].planned.load(Ordering::Relaxed),
        };
        ProgressSnapshot {
            flows: Flow::ALL.map(flow),
            customers_started: self.customers_started.load(Ordering::Relaxed),
            customers_done: self.customers_done.load(Ordering::Relaxed),
        }
    }
}
