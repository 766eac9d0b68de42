//! Progress of a long step (a full sync) on the console: a bar on a
//! terminal, else a line on stdout every few seconds, so cron logs show it
//! moving; a final line either way.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use relaysync::progress::{Report, Reporter};

const LINE_EVERY: Duration = Duration::from_secs(3);

/// Shows the library's progress on the console.
pub struct Console;

impl Reporter for Console {
    fn start(&self, label: &str, estimate: Option<u64>) -> Box<dyn Report> {
        Box::new(Step {
            label: label.to_string(),
            bar: bar(label, estimate),
            last_line: Instant::now(),
        })
    }
}

/// A bar on a terminal (stderr), else none.
fn bar(label: &str, estimate: Option<u64>) -> Option<ProgressBar> {
    std::io::stderr().is_terminal().then(|| {
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
        bar.set_message(label.to_string());
        bar
    })
}

/// One step on the console.
struct Step {
    label: String,
    bar: Option<ProgressBar>,
    last_line: Instant,
}

fn rate(rows: u64, elapsed: Duration) -> f64 {
    rows as f64 / elapsed.as_secs_f64().max(1e-9)
}

impl Report for Step {
    fn add(&mut self, n: u64, rows: u64, elapsed: Duration) {
        match &self.bar {
            Some(bar) => bar.inc(n),
            None if self.last_line.elapsed() >= LINE_EVERY => {
                self.last_line = Instant::now();
                println!(
                    "{}: {} rows, {:.0} rows/s",
                    self.label,
                    rows,
                    rate(rows, elapsed)
                );
            }
            None => {}
        }
    }

    fn finish(&mut self, rows: u64, elapsed: Duration) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        println!(
            "{}: {} rows in {:.1}s ({:.0} rows/s)",
            self.label,
            rows,
            elapsed.as_secs_f64(),
            rate(rows, elapsed)
        );
    }
}
