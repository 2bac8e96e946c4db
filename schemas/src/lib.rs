//! The storefront domain contract as plain data, with no runtime dependencies.
//!
//! - [`topology`]: source/target namespaces and the event topics, with the defaults of
//!   `shared/design/domain.md`.

#![cfg_attr(not(test), warn(clippy::unwrap_used))] // product code says why it cannot fail

pub mod topology;
