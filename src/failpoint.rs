//! Crash points for the exactly-once tests: when `RELAYSYNC_FAILPOINT` names a
//! point, the process kills itself with SIGKILL there, as `kill -9` would.
//! Only with the `failpoints` feature; without it [`hit`] is empty and the
//! binary holds no crash points.

/// Dies with SIGKILL if `RELAYSYNC_FAILPOINT` (read once) equals `name`.
#[cfg(feature = "failpoints")]
pub fn hit(name: &str) {
    static POINT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let point = POINT.get_or_init(|| std::env::var("RELAYSYNC_FAILPOINT").ok());
    if point.as_deref() == Some(name) {
        eprintln!("failpoint {name}: killing this process");
        // SAFETY: sending SIGKILL to ourselves.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}

/// Does nothing: crash points are compiled in with the `failpoints` feature only.
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn hit(_name: &str) {}
