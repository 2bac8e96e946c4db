//! The storefront domain contract as plain data, with no runtime dependencies.
//!
//! - [`topology`]: source/target namespaces and the event topics, with the defaults of
//!   `shared/design/domain.md`.

pub mod topology;
