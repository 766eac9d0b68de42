//! Progress of a long step (a full sync), told to the [`Reporter`] the
//! program installed with [`set_reporter`]. With none installed it goes to
//! `tracing` (start and end at debug level); the library prints nothing.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Where progress goes: the program installs one at its start.
pub trait Reporter: Send + Sync {
    /// A step named `label` starts, `estimate` rows expected if known; the
    /// returned report hears of the step until it finishes.
    fn start(&self, label: &str, estimate: Option<u64>) -> Box<dyn Report>;
}

/// The report of one step, from [`Reporter::start`].
pub trait Report: Send {
    /// `n` more rows are done: `rows` in all, `elapsed` since the start.
    fn add(&mut self, n: u64, rows: u64, elapsed: Duration);
    /// The step is done: `rows` in all, in `elapsed`.
    fn finish(&mut self, rows: u64, elapsed: Duration);
}

static REPORTER: OnceLock<Box<dyn Reporter>> = OnceLock::new();

/// Installs where progress goes, once, at the program's start; a second
/// call changes nothing.
pub fn set_reporter(reporter: Box<dyn Reporter>) {
    let _ = REPORTER.set(reporter);
}

/// Progress of one table (or one step): rows done, rows per second.
pub(crate) struct Progress {
    label: String,
    report: Option<Box<dyn Report>>,
    rows: u64,
    started: Instant,
}

impl Progress {
    /// Starts reporting `label`; `estimate` is the expected row count, if known.
    pub(crate) fn new(label: impl Into<String>, estimate: Option<u64>) -> Progress {
        let label = label.into();
        let report = REPORTER.get().map(|r| r.start(&label, estimate));
        if report.is_none() {
            tracing::debug!(step = %label, estimate, "step started");
        }
        Progress {
            label,
            report,
            rows: 0,
            started: Instant::now(),
        }
    }

    /// Adds `n` rows done.
    pub(crate) fn add(&mut self, n: u64) {
        self.rows += n;
        match &mut self.report {
            Some(report) => report.add(n, self.rows, self.started.elapsed()),
            None => tracing::trace!(step = %self.label, rows = self.rows, "step progress"),
        }
    }

    /// Rows done so far.
    pub(crate) fn rows(&self) -> u64 {
        self.rows
    }

    /// Ends the report.
    pub(crate) fn finish(mut self) {
        let elapsed = self.started.elapsed();
        match &mut self.report {
            Some(report) => report.finish(self.rows, elapsed),
            None => tracing::debug!(
                step = %self.label,
                rows = self.rows,
                seconds = elapsed.as_secs_f64(),
                "step finished"
            ),
        }
    }
}
