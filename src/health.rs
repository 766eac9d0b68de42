//! Whether a long-running worker is getting anywhere: its [`Progress`]
//! (told by its connections and streams as they hear from a server and
//! move data) and its [`Health`] (served at /health).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

// The runtime's clock, so that tests on a paused clock see it move.
use tokio::time::Instant;

tokio::task_local! {
    /// The progress of the worker whose cycle runs in this task.
    static CURRENT: Progress;
}

/// When a worker last heard from a server (`alive`) and last moved data
/// (`delivered`: a stream event, a part applied, a packet stored).
#[derive(Debug, Clone)]
pub(crate) struct Progress {
    inner: Arc<Marks>,
}

#[derive(Debug)]
struct Marks {
    born: Instant,
    /// Milliseconds after `born`, plus one (zero: never).
    alive: AtomicU64,
    delivered: AtomicU64,
}

impl Default for Progress {
    fn default() -> Progress {
        Progress {
            inner: Arc::new(Marks {
                born: Instant::now(),
                alive: AtomicU64::new(0),
                delivered: AtomicU64::new(0),
            }),
        }
    }
}

impl Progress {
    /// The progress of the worker whose cycle is running in this task.
    pub(crate) fn current() -> Option<Progress> {
        CURRENT.try_with(Progress::clone).ok()
    }

    /// Runs `cycle` with this progress as the current one.
    pub(crate) fn scope<F: std::future::Future>(
        &self,
        cycle: F,
    ) -> tokio::task::futures::TaskLocalFuture<Progress, F> {
        CURRENT.scope(self.clone(), cycle)
    }

    fn now(&self) -> u64 {
        self.inner.born.elapsed().as_millis() as u64 + 1
    }

    /// The worker heard from a server.
    pub(crate) fn tick(&self) {
        self.inner.alive.store(self.now(), Ordering::Relaxed);
    }

    /// The worker moved data.
    pub(crate) fn deliver(&self) {
        let now = self.now();
        self.inner.alive.store(now, Ordering::Relaxed);
        self.inner.delivered.store(now, Ordering::Relaxed);
    }

    fn at(&self, mark: &AtomicU64) -> Option<Instant> {
        match mark.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(self.inner.born + Duration::from_millis(ms - 1)),
        }
    }

    /// When the worker last heard from a server.
    fn alive_at(&self) -> Option<Instant> {
        self.at(&self.inner.alive)
    }

    /// Whether the worker moved data since `t`.
    pub(crate) fn delivered_since(&self, t: Instant) -> bool {
        // In whole milliseconds, as marked.
        let t = t.saturating_duration_since(self.inner.born).as_millis() as u64;
        self.inner.delivered.load(Ordering::Relaxed) > t
    }
}

/// The current worker moved data (no-op outside a worker's cycle).
pub(crate) fn delivered() {
    let _ = CURRENT.try_with(Progress::deliver);
}

/// Whether a worker is healthy: nothing failed since it last heard from a
/// server, and either its last cycle succeeded recently enough (between
/// cycles) or, inside a cycle, it heard from a server within the deadline
/// (a live stream, a long full sync moving parts, a statement its server
/// is still running).
#[derive(Debug, Clone)]
pub struct Health {
    inner: Arc<Mutex<HealthState>>,
    progress: Progress,
}

#[derive(Debug)]
struct HealthState {
    /// How old the last success may be.
    stale_after: Duration,
    /// How long a cycle may go without hearing from a server
    /// (`[network] deadline`).
    deadline: Duration,
    last_ok: Option<Instant>,
    last_err: Option<Instant>,
    cycle_since: Option<Instant>,
}

impl Health {
    /// A worker whose cycles come every `interval` (zero: streaming), with
    /// the round-trip `deadline` of its connections.
    pub fn new(interval: Duration, deadline: Duration) -> Health {
        Health {
            inner: Arc::new(Mutex::new(HealthState {
                stale_after: interval * 2 + Duration::from_secs(60),
                deadline,
                last_ok: None,
                last_err: None,
                cycle_since: None,
            })),
            progress: Progress::default(),
        }
    }

    /// The progress the worker's connections and streams report to.
    pub(crate) fn progress(&self) -> Progress {
        self.progress.clone()
    }

    fn with<T>(&self, f: impl FnOnce(&mut HealthState) -> T) -> T {
        f(&mut self.inner.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// A cycle starts.
    pub(crate) fn cycle_started(&self) {
        self.with(|h| h.cycle_since = Some(Instant::now()));
    }

    /// The cycle ended: well or not.
    pub(crate) fn cycle_ended(&self, ok: bool) {
        if ok {
            self.progress.tick();
        }
        self.with(|h| {
            h.cycle_since = None;
            let now = Some(Instant::now());
            if ok {
                h.last_ok = now;
            } else {
                h.last_err = now;
            }
        });
    }

    /// How long since the worker last heard from a server (or finished a
    /// cycle); since it started, if never.
    pub fn since_progress(&self) -> Duration {
        self.progress
            .alive_at()
            .unwrap_or(self.progress.inner.born)
            .elapsed()
    }

    /// Whether the worker is healthy now.
    pub fn healthy(&self) -> bool {
        let alive = self.progress.alive_at();
        self.with(|h| {
            let limit = h.deadline;
            let failed_since = h.last_err.is_some_and(|e| alive.is_none_or(|a| a < e));
            if failed_since {
                return false;
            }
            match h.cycle_since {
                Some(_) => alive.is_some_and(|a| a.elapsed() <= limit),
                None => h.last_ok.is_some_and(|t| t.elapsed() <= h.stale_after),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_follows_the_cycles_and_the_servers() {
        let h = Health::new(Duration::from_secs(30), Duration::from_secs(30));
        assert!(!h.healthy(), "nothing succeeded yet");
        h.cycle_started();
        assert!(!h.healthy(), "a cycle that heard nothing yet");
        h.cycle_ended(true);
        assert!(h.healthy());
        h.cycle_started();
        h.cycle_ended(false);
        assert!(!h.healthy(), "the last cycle failed");
        h.cycle_started();
        assert!(!h.healthy(), "nothing heard since the failure");
        std::thread::sleep(Duration::from_millis(2));
        h.progress().tick();
        assert!(h.healthy(), "a live cycle that hears from its server");
    }

    #[tokio::test]
    async fn progress_is_told_inside_its_scope_only() {
        let p = Progress::default();
        let t0 = Instant::now();
        delivered();
        assert!(!p.delivered_since(t0));
        p.scope(async { delivered() }).await;
        assert!(p.delivered_since(t0));
    }
}
