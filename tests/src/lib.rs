//! Integration test harness shared by every test that needs the real services.
//!
//! - [`stack`]: starts the local stack (`dev/stack up`, idempotent and safe to call from parallel
//!   test binaries) or uses external services named by environment variables.
//! - [`unique`]: names that no other test, or earlier run, uses.
//! - [`eventually`]: polls a condition until it holds or a deadline passes; no test sleeps for a
//!   fixed time.
//!
//! Environment:
//! - `STOREFRONT_TEST_MONGO_URI`: use this MongoDB instead of the local test server.
//! - `STOREFRONT_TEST_KAFKA_BOOTSTRAP`: use these Kafka brokers instead of the local broker.
//! - `STACK_MONGO_PORT`, `STACK_KAFKA_PORT`: ports of the local stack (as `dev/stack` reads them).

#![allow(clippy::unwrap_used)] // a harness failure is a test failure; panicking says why

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use storefront_plumbing::settings::{KafkaSettings, MongoSettings};

/// The services the tests talk to.
#[derive(Debug, Clone)]
pub struct Stack {
    /// MongoDB connection string.
    pub mongo_uri: String,
    /// Kafka bootstrap servers.
    pub kafka_bootstrap: String,
    /// Whether MongoDB is the local test server (which tests may stop and restart).
    pub local_mongo: bool,
}

impl Stack {
    /// Mongo settings for a process under test.
    pub fn mongo_settings(&self) -> MongoSettings {
        MongoSettings {
            uri: self.mongo_uri.clone(),
            ..MongoSettings::default()
        }
    }

    /// Kafka settings for a process under test.
    pub fn kafka_settings(&self) -> KafkaSettings {
        KafkaSettings {
            bootstrap_servers: self.kafka_bootstrap.clone(),
            ..KafkaSettings::default()
        }
    }

    /// A new MongoDB client.
    pub async fn mongo_client(&self) -> mongodb::Client {
        storefront_plumbing::mongo::connect(&self.mongo_settings(), "storefront-tests")
            .await
            .unwrap()
    }

    /// Stops and starts the local MongoDB test server, keeping its data.
    pub fn restart_mongo(&self) {
        assert!(self.local_mongo, "cannot restart an external MongoDB");
        run_stack(&["restart", "mongo"]);
    }
}

/// The repository's root folder.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn env_or(key: &str, default: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| default.to_owned())
}

fn run_stack(args: &[&str]) {
    let script = repo_root().join("dev").join("stack");
    let status = Command::new(&script)
        .args(args)
        .status()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        status.success(),
        "`dev/stack {}` failed ({status}); see `dev/stack logs`",
        args.join(" ")
    );
}

/// The services for this test binary, starting the local ones on first use.
pub fn stack() -> &'static Stack {
    static STACK: OnceLock<Stack> = OnceLock::new();
    STACK.get_or_init(|| {
        let external_mongo = std::env::var("STOREFRONT_TEST_MONGO_URI").ok();
        let external_kafka = std::env::var("STOREFRONT_TEST_KAFKA_BOOTSTRAP").ok();
        match (&external_mongo, &external_kafka) {
            (Some(_), Some(_)) => {}
            (Some(_), None) => run_stack(&["up", "kafka"]),
            (None, Some(_)) => run_stack(&["up", "mongo"]),
            (None, None) => run_stack(&["up"]),
        }
        Stack {
            local_mongo: external_mongo.is_none(),
            mongo_uri: external_mongo.unwrap_or_else(|| {
                format!(
                    "mongodb://127.0.0.1:{}/?directConnection=true",
                    env_or("STACK_MONGO_PORT", "27027")
                )
            }),
            kafka_bootstrap: external_kafka
                .unwrap_or_else(|| format!("127.0.0.1:{}", env_or("STACK_KAFKA_PORT", "29092"))),
        }
    })
}

/// A name no other test or earlier run uses: `<prefix>_<pid>_<counter>_<random>`. Valid as a
/// MongoDB database or collection name, a Kafka topic and a consumer group.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let salt: u32 = rand::random::<u32>() % 1_000_000;
    format!("{prefix}_{}_{n}_{salt}", std::process::id())
}

/// Polls `probe` until it returns `Some`, panicking with `what` when `deadline` passes. The pause
/// between polls grows from 10 ms to 250 ms, so fast conditions are seen quickly and slow ones do
/// not spin.
pub async fn eventually<T, F, Fut>(deadline: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    let mut pause = Duration::from_millis(10);
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            started.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(250));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_names_differ() {
        assert_ne!(unique("db"), unique("db"));
        assert!(unique("topic").starts_with("topic_"));
    }

    #[tokio::test]
    async fn eventually_returns_once_the_probe_succeeds() {
        let mut calls = 0;
        let value = eventually(Duration::from_secs(5), "third call", || {
            calls += 1;
            let ready = (calls >= 3).then_some(calls);
            async move { ready }
        })
        .await;
        assert_eq!(value, 3);
    }

    #[tokio::test]
    #[should_panic(expected = "timed out")]
    async fn eventually_panics_at_the_deadline() {
        eventually(Duration::from_millis(50), "never", || async { None::<()> }).await;
    }
}
