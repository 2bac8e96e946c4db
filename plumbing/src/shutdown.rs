//! Graceful shutdown.
//!
//! Entry points take their shutdown signal as a future (so tests can stop a process run
//! in-process) and turn it into one [`CancellationToken`] that every task of the process selects
//! on. A task that fails cancels the same token, so one failure stops the whole process instead of
//! leaving it half alive.

use std::future::Future;

pub use tokio_util::sync::CancellationToken;

/// Resolves on the first SIGTERM or SIGINT (Ctrl-C).
pub async fn termination_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut sigterm) => {
                tokio::select! {
                    _ = sigterm.recv() => tracing::info!(signal = "SIGTERM", "shutdown requested"),
                    _ = tokio::signal::ctrl_c() => tracing::info!(signal = "SIGINT", "shutdown requested"),
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only SIGINT stops the process");
                let _ = tokio::signal::ctrl_c().await;
                tracing::info!(signal = "SIGINT", "shutdown requested");
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!(signal = "ctrl-c", "shutdown requested");
    }
}

/// A token cancelled when `signal` resolves (or when anyone cancels it first).
pub fn token_from(signal: impl Future<Output = ()> + Send + 'static) -> CancellationToken {
    let token = CancellationToken::new();
    let cancel_on_signal = token.clone();
    tokio::spawn(async move {
        tokio::select! {
            () = signal => cancel_on_signal.cancel(),
            () = cancel_on_signal.cancelled() => {}
        }
    });
    token
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_token_is_cancelled_when_the_signal_resolves() {
        let (fire, fired) = tokio::sync::oneshot::channel::<()>();
        let token = token_from(async move {
            let _ = fired.await;
        });
        assert!(!token.is_cancelled());
        fire.send(()).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(5), token.cancelled())
            .await
            .expect("token cancelled after the signal");
    }
}
