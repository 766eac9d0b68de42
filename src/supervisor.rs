//! One supervisor for every long-running worker (`ho run`, `pos run`, HO's
//! ack recorder): it runs the worker's cycles on its schedule until
//! shutdown, and decides what an error means by its kind:
//! - configuration or setup: stop, with the error that names the fix;
//! - transient (a lost connection, a restarting server) or data (a stream
//!   that cannot be decoded): log it once and try again after a pause that
//!   doubles from one second up to a minute, starting over once a cycle
//!   succeeds (or a failed one had run longer than the ceiling, or had
//!   delivered for a while: a stream that worked between cuts).
//!
//! Shutdown waits for the current cycle up to [`STOP_GRACE`]; a cycle
//! still blocked then (on a connection the network lost) is dropped, which
//! rolls back whatever it had begun.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use tracing::Instrument;

use crate::error::{ErrorKind, Result};
use crate::health::{Health, Progress};

/// A long-running worker, as the supervisor drives it.
pub(crate) trait Worker {
    /// The span every cycle runs in: the worker's role, and its site.
    fn span(&self) -> tracing::Span;

    /// One cycle of work. A streaming worker's cycle may last until
    /// `shutdown`.
    fn cycle(&mut self, shutdown: watch::Receiver<bool>) -> impl Future<Output = Result<()>>;

    /// Waits until the next cycle is due (a timer, or a wake-up).
    fn wait(&mut self) -> impl Future<Output = ()>;

    /// Shutdown was asked for between cycles: finish what is held back.
    fn stopping(&mut self) -> impl Future<Output = ()> {
        async {}
    }
}

/// Pauses between failed cycles: doubling from `floor` to `ceiling`.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    floor: Duration,
    ceiling: Duration,
    next: Duration,
}

impl Backoff {
    pub(crate) fn new(floor: Duration, ceiling: Duration) -> Backoff {
        Backoff {
            floor,
            ceiling,
            next: floor,
        }
    }

    /// The pause after a cycle that failed after running `ran`, having
    /// `delivered` data meanwhile or not. A cycle that had been working
    /// starts the pauses over: one that ran longer than the ceiling, or
    /// delivered for at least [`WORKED_FOR`] (a stream cut after working).
    pub(crate) fn after_failure(&mut self, ran: Duration, delivered: bool) -> Duration {
        if ran > self.ceiling || (delivered && ran >= WORKED_FOR) {
            self.next = self.floor;
        }
        let pause = self.next;
        self.next = (self.next * 2).min(self.ceiling);
        pause
    }

    /// A cycle succeeded.
    pub(crate) fn reset(&mut self) {
        self.next = self.floor;
    }
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff::new(Duration::from_secs(1), Duration::from_secs(60))
    }
}

/// Runs `worker` until `shutdown`; returns the error of a configuration or
/// setup problem, which no retry can fix.
pub(crate) async fn supervise<W: Worker>(worker: W, shutdown: watch::Receiver<bool>) -> Result<()> {
    supervise_with(worker, Running::until(shutdown)).await
}

/// How a long-running worker runs: until its shutdown signal is raised,
/// with its health (served at /health) following its cycles.
#[derive(Debug, Clone)]
pub struct Running {
    pub(crate) shutdown: watch::Receiver<bool>,
    pub(crate) health: Option<Health>,
    /// Asks for a cycle now, even during a pause after a failure (the
    /// console's Sync Now and Retry).
    pub(crate) now: Option<Arc<Notify>>,
}

impl Running {
    /// Until `shutdown` is raised (`shutdown::on_signals()` for SIGINT and
    /// SIGTERM, or a channel of the caller's).
    pub fn until(shutdown: watch::Receiver<bool>) -> Running {
        Running {
            shutdown,
            health: None,
            now: None,
        }
    }

    /// A cycle starts as soon as `now` is notified.
    pub fn with_sync_now(self, now: Arc<Notify>) -> Running {
        Running {
            now: Some(now),
            ..self
        }
    }

    /// Keeps `health` up to date with the worker's cycles.
    pub fn with_health(self, health: Option<Health>) -> Running {
        Running { health, ..self }
    }
}

/// How long shutdown waits for a cycle (and for `stopping`) to finish.
pub(crate) const STOP_GRACE: Duration = Duration::from_secs(5);

/// A failed cycle that delivered and ran at least this long had been
/// working: the pause starts over.
const WORKED_FOR: Duration = Duration::from_secs(5);

/// Resolves [`STOP_GRACE`] after shutdown is requested.
async fn grace_over(mut shutdown: watch::Receiver<bool>) {
    crate::shutdown::requested(&mut shutdown).await;
    tokio::time::sleep(STOP_GRACE).await;
}

/// [`supervise`] as `running` says.
pub(crate) async fn supervise_with<W: Worker>(mut worker: W, running: Running) -> Result<()> {
    let Running {
        mut shutdown,
        health,
        now,
    } = running;
    let span = worker.span();
    let progress = health
        .as_ref()
        .map_or_else(Progress::default, Health::progress);
    let mut backoff = Backoff::default();
    loop {
        let started = Instant::now();
        if let Some(h) = &health {
            h.cycle_started();
        }
        let cycle = progress.scope(worker.cycle(shutdown.clone()).instrument(span.clone()));
        let result = tokio::select! {
            result = cycle => result,
            _ = grace_over(shutdown.clone()) => {
                span.in_scope(|| tracing::warn!(grace = ?STOP_GRACE, "stopping: the current step did not finish in time and is abandoned (what it began is rolled back)"));
                return Ok(());
            }
        };
        if let Some(h) = &health {
            h.cycle_ended(result.is_ok());
        }
        let pause = match result {
            Ok(()) => {
                backoff.reset();
                None
            }
            Err(e) => match e.kind() {
                ErrorKind::Config | ErrorKind::Setup => {
                    span.in_scope(|| crate::telemetry::cycle_failed(&e, None));
                    return Err(e);
                }
                ErrorKind::Transient | ErrorKind::Data => {
                    let delivered = progress.delivered_since(started);
                    let pause = backoff.after_failure(started.elapsed(), delivered);
                    span.in_scope(|| crate::telemetry::cycle_failed(&e, Some(pause)));
                    Some(pause)
                }
            },
        };
        tokio::select! {
            _ = crate::shutdown::requested(&mut shutdown) => {
                let stopping = worker.stopping().instrument(span.clone());
                if tokio::time::timeout(STOP_GRACE, stopping).await.is_err() {
                    span.in_scope(|| tracing::warn!("stopping: what was held back is left for the next run"));
                }
                return Ok(());
            }
            _ = async {
                match pause {
                    Some(p) => tokio::time::sleep(p).await,
                    None => worker.wait().instrument(span.clone()).await,
                }
            } => {}
            _ = async {
                match &now {
                    Some(now) => now.notified().await,
                    None => std::future::pending().await,
                }
            } => {
                span.in_scope(|| tracing::info!("a sync was asked for now"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use std::sync::{Arc, Mutex};

    #[test]
    fn backoff_doubles_to_the_ceiling_and_starts_over() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        let short = Duration::from_millis(10);
        let pauses: Vec<u64> = (0..8)
            .map(|_| b.after_failure(short, false).as_secs())
            .collect();
        assert_eq!(pauses, [1, 2, 4, 8, 16, 32, 60, 60]);
        b.reset();
        assert_eq!(b.after_failure(short, false), Duration::from_secs(1));
        b.after_failure(short, false);
        // A cycle that ran for long had been healthy.
        assert_eq!(
            b.after_failure(Duration::from_secs(120), false),
            Duration::from_secs(1)
        );
    }

    /// A worker whose cycles fail with the errors given, then succeed; it
    /// records when each cycle started (on the paused clock).
    struct Scripted {
        errors: Vec<Error>,
        starts: Arc<Mutex<Vec<Duration>>>,
        t0: Instant,
    }

    impl Worker for Scripted {
        fn span(&self) -> tracing::Span {
            tracing::info_span!("test")
        }
        async fn cycle(&mut self, _: watch::Receiver<bool>) -> Result<()> {
            self.starts.lock().unwrap().push(self.t0.elapsed());
            match self.errors.pop() {
                Some(e) => Err(e),
                None => Ok(()),
            }
        }
        async fn wait(&mut self) {
            tokio::time::sleep(Duration::from_secs(30)).await
        }
    }

    fn transient() -> Error {
        Error::StreamEnded { role: "pos" }
    }

    #[tokio::test(start_paused = true)]
    async fn transient_errors_back_off_and_setup_errors_stop() {
        let starts = Arc::new(Mutex::new(Vec::new()));
        let worker = Scripted {
            // Popped from the end: three transient failures, then setup.
            errors: vec![
                Error::Setup("run `relaysync setup pos`".into()),
                transient(),
                transient(),
                transient(),
            ],
            starts: starts.clone(),
            t0: Instant::now(),
        };
        let (_tx, rx) = watch::channel(false);
        let err = supervise(worker, rx).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Setup);
        let secs: Vec<u64> = starts.lock().unwrap().iter().map(|d| d.as_secs()).collect();
        assert_eq!(secs, [0, 1, 3, 7]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_down_database_is_tried_a_handful_of_times_in_twenty_seconds() {
        let starts = Arc::new(Mutex::new(Vec::new()));
        let worker = Scripted {
            errors: (0..100).map(|_| transient()).collect(),
            starts: starts.clone(),
            t0: Instant::now(),
        };
        let (tx, rx) = watch::channel(false);
        let run = tokio::spawn(supervise(worker, rx));
        tokio::time::sleep(Duration::from_secs(20)).await;
        tx.send(true).unwrap();
        run.await.unwrap().unwrap();
        assert_eq!(starts.lock().unwrap().len(), 5, "tries at 0, 1, 3, 7, 15 s");
    }

    /// A stream that delivers for a while between cuts: every cut is
    /// retried after the shortest pause, however many there were.
    struct Delivering {
        starts: Arc<Mutex<Vec<Duration>>>,
        t0: Instant,
    }

    impl Worker for Delivering {
        fn span(&self) -> tracing::Span {
            tracing::info_span!("test")
        }
        async fn cycle(&mut self, _: watch::Receiver<bool>) -> Result<()> {
            self.starts.lock().unwrap().push(self.t0.elapsed());
            crate::health::delivered();
            tokio::time::sleep(Duration::from_secs(6)).await;
            Err(transient())
        }
        async fn wait(&mut self) {}
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_that_delivered_is_retried_at_once() {
        let starts = Arc::new(Mutex::new(Vec::new()));
        let worker = Delivering {
            starts: starts.clone(),
            t0: Instant::now(),
        };
        let (tx, rx) = watch::channel(false);
        let run = tokio::spawn(supervise(worker, rx));
        tokio::time::sleep(Duration::from_secs(40)).await;
        tx.send(true).unwrap();
        run.await.unwrap().unwrap();
        let secs: Vec<u64> = starts.lock().unwrap().iter().map(|d| d.as_secs()).collect();
        assert_eq!(secs, [0, 7, 14, 21, 28, 35]);
    }

    /// Shutdown does not wait for a cycle blocked for good.
    #[tokio::test(start_paused = true)]
    async fn shutdown_abandons_a_blocked_cycle_after_the_grace() {
        struct Blocked;
        impl Worker for Blocked {
            fn span(&self) -> tracing::Span {
                tracing::info_span!("test")
            }
            async fn cycle(&mut self, _: watch::Receiver<bool>) -> Result<()> {
                std::future::pending().await
            }
            async fn wait(&mut self) {}
        }
        let (tx, rx) = watch::channel(false);
        let run = tokio::spawn(supervise(Blocked, rx));
        tokio::time::sleep(Duration::from_secs(10)).await;
        let asked = Instant::now();
        tx.send(true).unwrap();
        run.await.unwrap().unwrap();
        assert_eq!(asked.elapsed(), STOP_GRACE);
    }

    #[tokio::test(start_paused = true)]
    async fn success_waits_for_the_schedule_and_shutdown_stops() {
        let starts = Arc::new(Mutex::new(Vec::new()));
        let worker = Scripted {
            errors: vec![transient()],
            starts: starts.clone(),
            t0: Instant::now(),
        };
        let (tx, rx) = watch::channel(false);
        let run = tokio::spawn(supervise(worker, rx));
        tokio::time::sleep(Duration::from_secs(100)).await;
        tx.send(true).unwrap();
        run.await.unwrap().unwrap();
        let secs: Vec<u64> = starts.lock().unwrap().iter().map(|d| d.as_secs()).collect();
        // Failed at 0, retried at 1, then every 30 s.
        assert_eq!(secs, [0, 1, 31, 61, 91]);
    }
}
