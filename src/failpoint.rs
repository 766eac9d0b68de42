//! Crash points for the exactly-once tests: when `RELAYSYNC_FAILPOINT` names a
//! point, the process kills itself with SIGKILL there, as `kill -9` would.

/// Dies with SIGKILL if `RELAYSYNC_FAILPOINT` equals `name`.
pub fn hit(name: &str) {
    if std::env::var("RELAYSYNC_FAILPOINT").is_ok_and(|v| v == name) {
        eprintln!("failpoint {name}: killing this process");
        // SAFETY: sending SIGKILL to ourselves.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}
