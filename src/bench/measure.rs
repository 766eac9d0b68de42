//! What the bench reads from the machine: CPU seconds of processes and of a
//! whole cluster, and a worker's resident memory high-water mark.

use relaysync::error::{DbContext, Result};
use relaysync_cluster::Cluster;
use tokio_postgres::Client;

use super::rig::Rig;
use super::workloads::System;

/// Resident memory high-water mark of a process, in KiB.
pub(super) fn peak_rss_kb(pid: u32) -> u64 {
    status_kb(pid, "VmHWM:")
}

/// Resident memory of a process now, in KiB.
pub(super) fn rss_kb(pid: u32) -> u64 {
    status_kb(pid, "VmRSS:")
}

/// A KiB figure of `/proc/<pid>/status` (0 when unreadable).
fn status_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// CPU seconds of a cluster so far: its postmaster and every process it
/// started (the ones gone included, through the postmaster's child times).
pub(super) fn cluster_cpu(cluster: &Cluster) -> f64 {
    let Some(pm) = std::fs::read_to_string(cluster.dir().join("postmaster.pid"))
        .ok()
        .and_then(|s| s.lines().next().and_then(|l| l.trim().parse::<u32>().ok()))
    else {
        return 0.0;
    };
    let mut total = cpu_seconds(pm) + children_cpu_seconds(pm);
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            if stat_fields(pid).get(1).and_then(|p| p.parse::<u32>().ok()) == Some(pm) {
                total += cpu_seconds(pid);
            }
        }
    }
    total
}

/// The fields of `/proc/<pid>/stat` after the command name (state first).
fn stat_fields(pid: u32) -> Vec<String> {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return Vec::new();
    };
    // The command name is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    rest.split_whitespace().map(str::to_string).collect()
}

fn clock_ticks(fields: &[String], at: std::ops::Range<usize>) -> f64 {
    let ticks: f64 = at
        .filter_map(|i| fields.get(i).and_then(|v| v.parse::<f64>().ok()))
        .sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    ticks / hz
}

/// CPU seconds a process has used (user + system).
pub(super) fn cpu_seconds(pid: u32) -> f64 {
    clock_ticks(&stat_fields(pid), 11..13)
}

/// CPU seconds of a process's children that have exited.
fn children_cpu_seconds(pid: u32) -> f64 {
    clock_ticks(&stat_fields(pid), 13..15)
}

/// CPU seconds so far of each part of the rig: HO, relay and site clusters,
/// and relaysync's workers.
pub(super) fn rig_cpu(rig: &Rig) -> [f64; 4] {
    [
        cluster_cpu(&rig.ho),
        cluster_cpu(&rig.relay),
        cluster_cpu(&rig.site),
        rig.workers.iter().map(|w| cpu_seconds(w.id())).sum(),
    ]
}

/// The CPU each part of the rig spent since `before`, for a progress line.
pub(super) fn cpu_since(rig: &Rig, before: [f64; 4]) -> String {
    let now = rig_cpu(rig);
    format!(
        "CPU s: HO {:.2}, relay {:.2}, sites {:.2}, relaysync workers {:.2}",
        now[0] - before[0],
        now[1] - before[1],
        now[2] - before[2],
        now[3] - before[3],
    )
}

/// CPU seconds so far of HO's cluster and of relaysync's HO worker `worker`.
pub(super) fn ho_side_cpu(rig: &Rig, worker: Option<u32>) -> f64 {
    cluster_cpu(&rig.ho) + worker.map_or(0.0, cpu_seconds)
}

/// HO-side CPU seconds of a system so far: its walsenders, and relaysync's
/// HO worker (also returned on its own).
pub(super) async fn ho_cpu(ho: &Client, system: System, rig: &Rig) -> Result<(f64, f64)> {
    let pattern = match system {
        System::Relaysync => "relaysync-ho",
        System::Native => "native_%",
        System::Cascade => "cascade_%",
    };
    let rows = ho
        .query(
            "SELECT pid FROM pg_stat_replication WHERE application_name LIKE $1",
            &[&pattern],
        )
        .await
        .ctx(|| "reading pg_stat_replication".into())?;
    let walsenders: f64 = rows
        .iter()
        .map(|r| cpu_seconds(r.get::<_, i32>(0) as u32))
        .sum();
    let worker = match system {
        System::Relaysync => rig.ho_worker.map_or(0.0, cpu_seconds),
        System::Native | System::Cascade => 0.0,
    };
    Ok((walsenders + worker, worker))
}

/// Median, min and max.
pub(super) fn spread(v: &[f64]) -> (f64, f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    (s[s.len() / 2], s[0], s[s.len() - 1])
}
