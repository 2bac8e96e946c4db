//! Process plumbing shared by the `cdc-connector` and `projectors` binaries, so neither copies it.
//!
//! - [`cli`]: the command-line flags both binaries share.
//! - [`errors`]: the error policy: one layer per message, the chain printed once where reported.
//! - [`dead_letters`]: reading, grouping and selecting dead letters (both binaries' operator commands).
//! - [`config`]: layered configuration (defaults < TOML file < environment < flags) and validation.
//! - [`settings`]: the config sections every process has (MongoDB, Kafka, HTTP, logging).
//! - [`telemetry`]: logging, Prometheus metrics and the `/health` + `/metrics` HTTP endpoint.
//! - [`shutdown`]: SIGTERM/SIGINT handling and the cancellation token every task listens to.
//! - [`kafka`]: one place that builds every Kafka client and creates topics.
//! - [`kafka_io`]: librdkafka's blocking calls, run off the async runtime (the only place allowed to).
//! - [`mongo`]: one place that builds the MongoDB client.
//! - [`process`]: the frame around a process: telemetry, HTTP endpoint, shutdown token.
//! - [`retry`]: capped exponential backoff with jitter for transient failures.
//! - [`topics`]: the settings new topics get (partitions, replicas).

#![cfg_attr(not(test), warn(clippy::unwrap_used))] // product code says why it cannot fail

pub mod cli;
pub mod config;
pub mod dead_letters;
pub mod errors;
pub mod kafka;
pub mod kafka_io;
pub mod mongo;
pub mod process;
pub mod retry;
pub mod settings;
pub mod shutdown;
pub mod telemetry;
pub mod topics;
