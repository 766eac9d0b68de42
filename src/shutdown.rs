//! One shutdown signal that every loop selects on.

use tokio::sync::watch;

/// Resolves once shutdown is requested; never, if the sender is gone without asking.
pub(crate) async fn requested(rx: &mut watch::Receiver<bool>) {
    loop {
        if *rx.borrow_and_update() {
            return;
        }
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// A signal that is never raised, for one-shot commands.
pub(crate) fn never() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    // Keep the sender alive for the life of the process.
    std::mem::forget(tx);
    rx
}

/// A signal raised by SIGINT or SIGTERM.
pub fn on_signals() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for SIGTERM");
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("stopping: finishing the current step");
        let _ = tx.send(true);
        // Keep the sender so receivers see the raised value, not a closed channel.
        std::future::pending::<()>().await;
    });
    rx
}
