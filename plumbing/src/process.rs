//! What every storefront-cdc process does around its real work: logging, metrics, the HTTP
//! endpoint, connecting to its dependencies and the shutdown token.
//!
//! [`spawn`] runs a process's work as a task. The work gets a [`ProcessContext`]; when it returns
//! (or fails) the shutdown token is cancelled so every other task stops too, and only then does the
//! HTTP endpoint close, so `/health` stays up while the process drains.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::kafka::{self, KafkaSetupError};
use crate::mongo::{self, MongoConnectError};
use crate::retry::{Backoff, retry};
use crate::settings::{HttpSettings, KafkaSettings, LogSettings, MongoSettings};
use crate::telemetry::{self, ComponentState, Health, TelemetryError};

/// What a process's work can use: health reporting and the shutdown token.
#[derive(Debug, Clone)]
pub struct ProcessContext {
    /// Where `/health` and `/metrics` are served.
    pub http_addr: SocketAddr,
    /// Component states shown at `/health`.
    pub health: Health,
    /// Cancelled on SIGTERM/SIGINT (or the caller's signal), or when the work ends.
    pub shutdown: CancellationToken,
}

impl ProcessContext {
    /// Connects to MongoDB, retrying while it is unreachable; `Ok(None)` if shut down first.
    /// Health component `mongo` is `starting` until the server answers.
    pub async fn connect_mongo(
        &self,
        settings: &MongoSettings,
        app_name: &str,
    ) -> Result<Option<mongodb::Client>, MongoConnectError> {
        self.health.set("mongo", ComponentState::Starting);
        let client = retry(
            "connecting to mongodb",
            &self.shutdown,
            Backoff::default(),
            MongoConnectError::is_retryable,
            || mongo::connect(settings, app_name),
        )
        .await?;
        if client.is_some() {
            self.health.set("mongo", ComponentState::Ready);
        }
        Ok(client)
    }

    /// Waits until the Kafka brokers answer, retrying; `Ok(None)` if shut down first.
    /// Health component `kafka` is `starting` until they do.
    ///
    /// Refused credentials are not retried: the first refused SASL login returns
    /// [`KafkaSetupError::Authentication`] (within a fraction of a second of the broker's answer),
    /// so a process with a wrong password exits at once with an error naming the user and broker
    /// (never the password) instead of waiting forever.
    pub async fn await_kafka(
        &self,
        settings: &KafkaSettings,
        client_id: &str,
    ) -> Result<Option<()>, KafkaSetupError> {
        self.health.set("kafka", ComponentState::Starting);
        let answered = retry(
            "connecting to kafka",
            &self.shutdown,
            Backoff::default(),
            KafkaSetupError::is_retryable,
            || kafka::broker_count(settings, client_id, Duration::from_secs(10)),
        )
        .await
        .inspect_err(|error| {
            self.health.set(
                "kafka",
                ComponentState::Failing(crate::errors::chain(error)),
            );
        })?;
        Ok(answered.map(|brokers| {
            tracing::info!(brokers, "kafka reachable");
            self.health.set("kafka", ComponentState::Ready);
        }))
    }
}

/// A process running in the background.
#[derive(Debug)]
pub struct RunningProcess<E> {
    /// Where `/health` and `/metrics` are served.
    pub http_addr: SocketAddr,
    task: JoinHandle<Result<(), E>>,
}

impl<E> RunningProcess<E> {
    /// Waits until the process has stopped, with the work's outcome.
    pub async fn wait(self) -> Result<(), E> {
        self.task
            .await
            .unwrap_or_else(|join_error| std::panic::resume_unwind(join_error.into_panic()))
    }
}

/// Installs logging and metrics, serves the HTTP endpoint, and runs `work` until it returns;
/// `shutdown_signal` resolving cancels the context's token, which the work must honour.
pub async fn spawn<E, F, Fut>(
    log: &LogSettings,
    http: &HttpSettings,
    shutdown_signal: impl Future<Output = ()> + Send + 'static,
    work: F,
) -> Result<RunningProcess<E>, TelemetryError>
where
    F: FnOnce(ProcessContext) -> Fut,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: std::error::Error + Send + 'static,
{
    telemetry::init_logging(log)?;
    let metrics = telemetry::metrics_handle()?;
    metrics::gauge!("storefront_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    let shutdown = crate::shutdown::token_from(shutdown_signal);
    let health = Health::new();
    // The endpoint gets its own token so it outlives the work's drain.
    let http_stop = CancellationToken::new();
    let (http_addr, http_task) =
        telemetry::serve_http(http.listen, health.clone(), metrics, http_stop.clone()).await?;
    let context = ProcessContext {
        http_addr,
        health,
        shutdown: shutdown.clone(),
    };
    let work = work(context);
    let task = tokio::spawn(async move {
        let outcome = work.await;
        if let Err(error) = &outcome {
            // The one log line of a fatal error (`main` does not print it again).
            tracing::error!(error = %crate::errors::chain(error), "process stopped by an error");
        }
        shutdown.cancel();
        http_stop.cancel();
        let _ = http_task.await;
        outcome
    });
    Ok(RunningProcess { http_addr, task })
}
