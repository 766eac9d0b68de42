//! A CPU hog for the busy latency runs: one spinning thread per core, the
//! same for both systems, so that every process of the run competes for
//! the cores as on a server doing other work.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Spins every core until dropped.
pub(super) struct Hog {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<u64>>,
}

impl Hog {
    /// Starts a spinning thread per core.
    pub(super) fn start() -> Hog {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..cores)
            .map(|_| {
                let stop = Arc::clone(&stop);
                std::thread::spawn(move || {
                    let mut spins = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        spins = std::hint::black_box(spins.wrapping_add(1));
                    }
                    spins
                })
            })
            .collect();
        Hog { stop, threads }
    }

    /// The hog's threads.
    pub(super) fn threads(&self) -> usize {
        self.threads.len()
    }
}

impl Drop for Hog {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hog_spins_every_core_until_dropped() {
        let hog = Hog::start();
        assert_eq!(
            hog.threads(),
            std::thread::available_parallelism().map_or(1, |n| n.get())
        );
        let started = std::time::Instant::now();
        let cpu = |pid: u32| super::super::measure::cpu_seconds(pid);
        let before = cpu(std::process::id());
        std::thread::sleep(std::time::Duration::from_millis(300));
        let used = cpu(std::process::id()) - before;
        drop(hog);
        // Spinning threads took CPU time at about their number times the
        // wall time (at least one core's worth, on a loaded machine).
        assert!(used >= started.elapsed().as_secs_f64() * 0.5, "used {used}");
    }
}
