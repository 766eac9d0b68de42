//! What the commands print: sync summaries and the status table.

use relaysync::{ho, pos, relay::SiteStatus};

/// Prints what a sync did, ending with the line operators look for.
pub fn ho(s: &ho::Summary) {
    let m = &s.merged;
    if m.packets > 0 || m.failed.is_some() {
        println!(
            "ho: merged {} up packet(s) from the sites: {} row(s), {} changed HO, {} rejected (see relaysync events)",
            m.packets, m.rows, m.merged, m.rejected
        );
    }
    if let Some((packet, error)) = &m.failed {
        println!("ho: up packet {packet} FAILED: {error}; fix the cause and run `relaysync ho sync --once` again");
    }
    let c = &s.capture;
    println!(
        "ho: captured {} transaction(s), {} change(s) into {} packet(s): {} row(s), {} compressed, in {:.2}s",
        c.transactions,
        c.changes,
        c.packets,
        c.rows,
        human_bytes(c.bytes),
        s.elapsed.as_secs_f64()
    );
    for f in &s.served {
        println!(
            "ho: full sync for {}: {} table(s), {} row(s) in {} packet(s)",
            f.sites.join(", "),
            f.tables.len(),
            f.rows,
            f.packets
        );
    }
    if c.skipped_transactions > 0 {
        println!(
            "ho: skipped {} transaction(s) already in the relay",
            c.skipped_transactions
        );
    }
    let sent = s
        .sent
        .iter()
        .map(|(st, n)| format!("{n} {st}"))
        .collect::<Vec<_>>()
        .join(", ");
    println!(
        "ho: sent packets: {}",
        if sent.is_empty() { "none".into() } else { sent }
    );
    let r = &s.retained;
    if r.purged > 0 || !r.expired.is_empty() {
        println!(
            "ho: retention purged {} packet(s); expired site(s): {}",
            r.purged,
            if r.expired.is_empty() {
                "none".into()
            } else {
                r.expired.join(", ")
            }
        );
    }
    println!("Sync process completed, flushing buffer.");
}

/// Formats a byte count for people.
pub fn human_bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.1} GiB", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

/// Prints what a sync did.
pub fn pos(s: &pos::Summary) {
    if let Some(up) = &s.uploaded {
        println!(
            "pos {}: uploaded {} transaction(s), {} change(s) in {} packet(s) for HO",
            s.site, up.transactions, up.changes, up.packets
        );
    }
    println!(
        "pos {}: applied {} packet(s), {} row(s) in {:.2}s; applied through packet {}",
        s.site,
        s.applied.packets,
        s.applied.rows,
        s.elapsed.as_secs_f64(),
        s.applied.applied_through
    );
    if s.applied.acks_resent > 0 {
        println!(
            "pos {}: re-sent {} ack(s) an earlier run left unsent",
            s.site, s.applied.acks_resent
        );
    }
    match &s.applied.failed {
        Some((packet, error)) if s.applied.held => {
            println!("pos {}: packet {packet} HELD: {error}", s.site);
        }
        Some((packet, error)) => {
            println!("pos {}: packet {packet} FAILED: {error}", s.site);
            println!("pos {}: status Failed; fix the cause and run `relaysync pos sync --once` again to retry", s.site);
        }
        None => {}
    }
}

/// Prints the status table.
pub fn status(statuses: &[SiteStatus]) {
    println!(
        "{:<16} {:<12} {:>8} {:>8} {:>9}  last success / error",
        "site", "status", "through", "pending", "lag (s)"
    );
    for s in statuses {
        let last = s
            .last_success
            .map(|t| humantime::format_rfc3339_seconds(t).to_string())
            .unwrap_or_else(|| "never".into());
        let fix = s.fix().unwrap_or_default();
        let detail = match (&s.error, s.expired_at) {
            (_, Some(at)) => format!("expired {}: {fix}", humantime::format_rfc3339_seconds(at)),
            (Some(e), None) => format!("{e}; {fix}"),
            (None, None) if s.state == "Stalled" => format!("last ack {last}; {fix}"),
            (None, None) => last,
        };
        println!(
            "{:<16} {:<12} {:>8} {:>8} {:>9}  {}",
            s.site,
            s.state,
            s.applied_through.map_or("-".into(), |v| v.to_string()),
            s.pending,
            s.lag_seconds.map_or("-".into(), |v| format!("{v:.1}")),
            detail
        );
    }
}

/// Says what `[pos] wipe_after` cleared.
pub fn wiped(cfg: &relaysync::config::Config, w: &pos::Wiped) {
    let site = cfg.pos.as_ref().map_or("", |p| p.site.as_str());
    println!(
        "pos {site}: no successful sync for [pos] wipe_after: wiped {} row(s) of {}; the next sync asks for a full sync",
        w.rows,
        w.tables.join(", ")
    );
}
