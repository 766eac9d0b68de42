//! Progress of a long step (a full sync): a bar on a terminal, else a line
//! on stdout every few seconds, so cron logs show it moving.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

const LINE_EVERY: Duration = Duration::from_secs(3);

/// Progress of one table (or one step): rows done, rows per second.
pub struct Progress {
    label: String,
    bar: Option<ProgressBar>,
    rows: u64,
    started: Instant,
    last_line: Instant,
}

impl Progress {
    /// Starts reporting `label`; `estimate` is the expected row count, if known.
    pub fn new(label: impl Into<String>, estimate: Option<u64>) -> Progress {
        let label = label.into();
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = match estimate {
                Some(n) if n > 0 => ProgressBar::new(n),
                _ => ProgressBar::new_spinner(),
            };
            let template = if estimate.is_some_and(|n| n > 0) {
                "{msg} [{bar:30}] {human_pos}/{human_len} rows, {per_sec}, eta {eta}"
            } else {
                "{msg} {spinner} {human_pos} rows, {per_sec}"
            };
            if let Ok(style) = ProgressStyle::with_template(template) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_message(label.clone());
            bar
        });
        Progress {
            label,
            bar,
            rows: 0,
            started: Instant::now(),
            last_line: Instant::now(),
        }
    }

    /// Adds `n` rows done.
    pub fn add(&mut self, n: u64) {
        self.rows += n;
        match &self.bar {
            Some(bar) => bar.inc(n),
            None if self.last_line.elapsed() >= LINE_EVERY => {
                self.last_line = Instant::now();
                println!(
                    "{}: {} rows, {:.0} rows/s",
                    self.label,
                    self.rows,
                    self.rate()
                );
            }
            None => {}
        }
    }

    fn rate(&self) -> f64 {
        self.rows as f64 / self.started.elapsed().as_secs_f64().max(1e-9)
    }

    /// Rows done so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Ends the report with a final line.
    pub fn finish(self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        println!(
            "{}: {} rows in {:.1}s ({:.0} rows/s)",
            self.label,
            self.rows,
            self.started.elapsed().as_secs_f64(),
            self.rate()
        );
    }
}
