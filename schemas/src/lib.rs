//! The storefront domain contract as plain data, with no runtime dependencies.
//!
//! - [`dead_letter`]: the header names of both binaries' dead-letter records.
//! - [`documents`]: the source documents of the three collections, typed, read from BSON with
//!   field-path errors.
//! - [`events`]: the event payloads (the record bodies) and their JSON Schemas.
//! - [`fixtures`]: the hand-written golden events, as the exact bodies they specify, and the
//!   sample domain values every crate's tests build their events from ([`fixtures::sample`]).
//! - [`metadata`]: event metadata (deterministic ids, source positions) and its CloudEvents
//!   Kafka headers.
//! - [`retention`]: what each topic must retain for a projection rebuild, and the check of an
//!   existing topic against it.
//! - [`sensitive`]: the fields that never leave their source, and their redaction.
//! - [`topology`]: source/target namespaces and the event topics, with the defaults of
//!   `docs/domain.md`.

#![cfg_attr(not(test), warn(clippy::unwrap_used))] // product code says why it cannot fail

pub mod dead_letter;
pub mod documents;
pub mod events;
pub mod fixtures;
pub mod metadata;
pub mod retention;
pub mod sensitive;
pub mod topology;
