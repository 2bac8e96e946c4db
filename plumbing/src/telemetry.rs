//! Logs, metrics and the HTTP endpoint that exposes them.
//!
//! - Logs go through `tracing` (text or JSON on stderr).
//! - Metrics are recorded with the `metrics` facade into one process-wide Prometheus recorder and
//!   served at `GET /metrics`. Histograms render as summaries (a rolling window), except those
//!   whose names end in [`LATENCY_SUFFIX`]: they render as cumulative Prometheus histograms with
//!   [`LATENCY_BUCKETS`], so percentiles over any period can be computed from two scrapes.
//! - `GET /health` answers 200 when every registered component is ready and 503 otherwise, with a
//!   JSON body naming each component's state, so an orchestrator can tell *what* is unhealthy.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde::Serialize;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

use crate::settings::{LogFormat, LogSettings};

/// Why telemetry could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The log filter does not parse.
    #[error("log.filter is invalid: {0}")]
    Filter(String),
    /// The Prometheus recorder could not be installed.
    #[error("metrics recorder cannot be installed: {0}")]
    Recorder(String),
    /// The HTTP listen address is taken or not ours.
    #[error("http.listen {addr} cannot be bound")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Installs the global log subscriber. A second call (a test running several processes in one
/// binary) keeps the first subscriber.
pub fn init_logging(settings: &LogSettings) -> Result<(), TelemetryError> {
    let filter =
        EnvFilter::try_new(&settings.filter).map_err(|e| TelemetryError::Filter(e.to_string()))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _already_installed = match settings.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    Ok(())
}

/// Histograms whose names end in this render with [`LATENCY_BUCKETS`].
pub const LATENCY_SUFFIX: &str = "_latency_seconds";

/// Bucket bounds of latency histograms, in seconds: fine below 100 ms, where the pipeline's
/// targets are, and coarse up to a minute.
pub const LATENCY_BUCKETS: [f64; 22] = [
    0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.2,
    0.3, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0,
];

/// The process-wide Prometheus recorder, installed on first use.
pub fn metrics_handle() -> Result<PrometheusHandle, TelemetryError> {
    // `get_or_init` runs the installation once even when several callers race to it (tests
    // start several instances at once): a second `install_recorder` would fail.
    static HANDLE: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix(LATENCY_SUFFIX.into()), &LATENCY_BUCKETS)
                .map_err(|e| e.to_string())?
                .install_recorder()
                .map_err(|e| e.to_string())
        })
        .clone()
        .map_err(TelemetryError::Recorder)
}

/// The state of one component of a process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", content = "reason", rename_all = "lowercase")]
pub enum ComponentState {
    /// Not ready yet (connecting, snapshotting, catching up).
    Starting,
    /// Working.
    Ready,
    /// Not working, with why.
    Failing(String),
    /// Deliberately idle, with why: a standby waiting to take over. Counts as ready, since the
    /// process is doing what it should.
    Standby(String),
}

/// Health of the process's components, shared between the tasks and the HTTP endpoint.
#[derive(Debug, Clone, Default)]
pub struct Health {
    components: Arc<Mutex<BTreeMap<String, ComponentState>>>,
}

impl Health {
    /// An empty registry. A process with no components is not ready: its work has not registered
    /// what it depends on yet, and an orchestrator must not route to it.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the state of `component`, registering it on first use. The state is also the metric
    /// `storefront_component_ready{component}` (1 ready or standing by, 0 starting or failing),
    /// so alerts need not scrape `/health`.
    pub fn set(&self, component: &str, state: ComponentState) {
        let ready = matches!(state, ComponentState::Ready | ComponentState::Standby(_));
        metrics::gauge!("storefront_component_ready", "component" => component.to_owned())
            .set(if ready { 1.0 } else { 0.0 });
        let mut components = self
            .components
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        components.insert(component.to_owned(), state);
    }

    /// Whether there is at least one component and every one is ready.
    pub fn is_ready(&self) -> bool {
        let components = self.snapshot();
        !components.is_empty()
            && components
                .values()
                .all(|state| matches!(state, ComponentState::Ready | ComponentState::Standby(_)))
    }

    /// A copy of every component's state.
    pub fn snapshot(&self) -> BTreeMap<String, ComponentState> {
        self.components
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

#[derive(Clone)]
struct EndpointState {
    health: Health,
    metrics: PrometheusHandle,
}

async fn health_route(State(state): State<EndpointState>) -> Response {
    let status = if state.health.is_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::json!({
        "status": if status == StatusCode::OK { "ready" } else { "not ready" },
        "components": state.health.snapshot(),
    });
    (status, axum::Json(body)).into_response()
}

async fn metrics_route(State(state): State<EndpointState>) -> Response {
    state.metrics.run_upkeep();
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

/// Serves `/health` and `/metrics` on `listen` until `shutdown` is cancelled. Returns the bound
/// address (useful with port 0) and the server task.
pub async fn serve_http(
    listen: SocketAddr,
    health: Health,
    metrics: PrometheusHandle,
    shutdown: CancellationToken,
) -> Result<(SocketAddr, JoinHandle<()>), TelemetryError> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| TelemetryError::Bind {
            addr: listen,
            source,
        })?;
    let bound = listener
        .local_addr()
        .map_err(|source| TelemetryError::Bind {
            addr: listen,
            source,
        })?;
    let router = Router::new()
        .route("/health", get(health_route))
        .route("/metrics", get(metrics_route))
        .with_state(EndpointState { health, metrics });
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, router)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(error) = served {
            tracing::warn!(%error, "http endpoint stopped");
        }
    });
    tracing::info!(addr = %bound, "serving /health and /metrics");
    Ok((bound, task))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Processes started at once in one binary (as the tests do) share one recorder: none fails
    /// because another installed it first.
    #[test]
    fn the_recorder_installs_once_under_concurrent_starts() {
        let barrier = Arc::new(std::sync::Barrier::new(8));
        let starts: Vec<_> = (0..8)
            .map(|_| {
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    barrier.wait();
                    metrics_handle().map(|_| ())
                })
            })
            .collect();
        for start in starts {
            start.join().unwrap().unwrap();
        }
        metrics::counter!("storefront_test_recorder_total").increment(1);
        let text = metrics_handle().unwrap().render();
        assert!(text.contains("storefront_test_recorder_total 1"), "{text}");
    }

    #[test]
    fn health_is_ready_only_when_every_component_is() {
        let health = Health::new();
        assert!(!health.is_ready(), "nothing registered yet is not ready");
        health.set("mongo", ComponentState::Starting);
        health.set("kafka", ComponentState::Ready);
        assert!(!health.is_ready());
        health.set("mongo", ComponentState::Ready);
        assert!(health.is_ready());
        health.set("lease", ComponentState::Standby("held by another".into()));
        assert!(health.is_ready(), "a standby is ready");
        health.set(
            "kafka",
            ComponentState::Failing("brokers unreachable".into()),
        );
        assert!(!health.is_ready());
        let json = serde_json::to_value(health.snapshot()).unwrap();
        assert_eq!(json["kafka"]["state"], "failing");
        assert_eq!(json["kafka"]["reason"], "brokers unreachable");
    }
}
