//! Reconcile: compare each source of truth with its copies, report the drift, and repair it by
//! re-emitting the drifted sources' current state through Kafka ([`republish`]).
//!
//! - [`republish`]: re-emit chosen source documents (also what a dead-letter redrive calls).

pub mod republish;
