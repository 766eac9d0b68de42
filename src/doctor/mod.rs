//! `relaysync doctor`: everything a DBA would check, from the config's
//! point of view: HO as a capture source, the relay, this site. Each
//! finding names the fix; findings come worst first.

mod ho;
mod relay;
mod sequences;
mod signing;

use std::time::SystemTime;

use tokio_postgres::Client;

use crate::config::Config;
use crate::error::{DbContext, Result};

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Sync is broken or about to break.
    Error,
    /// Works, but a risk the DBA should remove.
    Warning,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        }
    }
}

/// One thing found wrong, and what to do about it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Finding {
    pub severity: Severity,
    /// Which check: `wal_level`, `slot`, `publication`, …
    pub check: &'static str,
    /// What is wrong and the fix.
    pub message: String,
}

/// What the doctor found.
#[derive(Debug, Default, Clone)]
pub struct Report {
    /// Worst first.
    pub findings: Vec<Finding>,
    /// The checks that ran.
    pub checked: Vec<&'static str>,
}

impl Report {
    fn error(&mut self, check: &'static str, message: impl Into<String>) {
        self.add(Severity::Error, check, message);
    }

    fn warn(&mut self, check: &'static str, message: impl Into<String>) {
        self.add(Severity::Warning, check, message);
    }

    fn add(&mut self, severity: Severity, check: &'static str, message: impl Into<String>) {
        self.findings.push(Finding {
            severity,
            check,
            message: message.into(),
        });
    }

    fn ran(&mut self, check: &'static str) {
        if !self.checked.contains(&check) {
            self.checked.push(check);
        }
    }

    /// Whether nothing is wrong.
    pub fn healthy(&self) -> bool {
        self.findings.is_empty()
    }
}

impl serde::Serialize for Report {
    /// `healthy`, `checked` and the `findings`.
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("Report", 3)?;
        st.serialize_field("healthy", &self.healthy())?;
        st.serialize_field("checked", &self.checked)?;
        st.serialize_field("findings", &self.findings)?;
        st.end()
    }
}

impl serde::Serialize for Severity {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Runs every check the config reaches.
pub async fn run(cfg: &Config) -> Report {
    let mut report = Report::default();
    let relay_clock = relay::check(cfg, &mut report).await;
    if cfg.ho.is_some() {
        ho::check(cfg, relay_clock, &mut report).await;
        signing::check_ho(cfg, &mut report).await;
        if let Ok(ho) = cfg.ho() {
            sequences::check(cfg, "ho", &ho.url, &mut report).await;
        }
    }
    if cfg.pos.is_some() {
        relay::check_site(cfg, &mut report).await;
        signing::check_site(cfg, &mut report);
        if let Ok(pos) = cfg.pos() {
            sequences::check(cfg, "pos", &pos.url, &mut report).await;
        }
    }
    report.findings.sort_by_key(|f| f.severity);
    report
}

/// The server's clock and whether this connection is encrypted.
async fn clock_and_tls(client: &Client) -> Result<(SystemTime, bool)> {
    let row = client
        .query_one(
            "SELECT now()::timestamptz AS now,
                    coalesce((SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()), false) AS ssl",
            &[],
        )
        .await
        .ctx(|| "reading the server's clock".into())?;
    Ok((row.get("now"), row.get("ssl")))
}

/// Warns when a connection to a server on another machine is not encrypted.
fn check_tls(report: &mut Report, role: &str, url: &str, ssl: bool) {
    report.ran("tls");
    if !ssl && !is_local(url) {
        report.warn(
            "tls",
            format!("the {role} connection is not encrypted although the server is on another host; add sslmode=verify-full (and sslrootcert) to [{role}] url"),
        );
    }
}

/// Whether a PostgreSQL URL points at this machine (a unix socket or a
/// loopback address).
fn is_local(url: &str) -> bool {
    use std::str::FromStr;
    let Ok(cfg) = tokio_postgres::Config::from_str(url) else {
        return false;
    };
    cfg.get_hosts().iter().all(|h| match h {
        tokio_postgres::config::Host::Unix(_) => true,
        tokio_postgres::config::Host::Tcp(h) => {
            h == "localhost" || h.starts_with("127.") || h == "::1" || h.starts_with('/')
        }
    })
}

/// How far apart two clocks are, in seconds.
fn skew(a: SystemTime, b: SystemTime) -> f64 {
    match a.duration_since(b) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => e.duration().as_secs_f64(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_urls() {
        assert!(is_local("postgres://u@localhost/db"));
        assert!(is_local("postgres://u@127.0.0.1:5433/db"));
        assert!(is_local("host=/tmp/sock dbname=x"));
        assert!(!is_local("postgres://u@relay.example.com/db"));
        assert!(!is_local("postgres://u@10.0.0.5/db"));
    }

    #[test]
    fn findings_sort_worst_first() {
        let mut r = Report::default();
        r.warn("a", "w");
        r.error("b", "e");
        r.findings.sort_by_key(|f| f.severity);
        assert_eq!(r.findings[0].check, "b");
        assert!(!r.healthy());
    }
}
