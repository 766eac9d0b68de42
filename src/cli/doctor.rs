//! `doctor`: findings worst first, one line each.

use std::process::ExitCode;

use relaysync::config::Config;
use relaysync::doctor::{self, Report};
use relaysync::error::Result;
use serde_json::json;

/// Runs the checks and prints the findings; exit code 1 when any.
pub async fn run(cfg: &Config, as_json: bool) -> Result<ExitCode> {
    let report = doctor::run(cfg).await;
    if as_json {
        super::json::print(&to_json(&report));
    } else if report.healthy() {
        println!("healthy: {} check(s) passed", report.checked.len());
    } else {
        for f in &report.findings {
            println!("{:<7} {:<14} {}", f.severity.as_str(), f.check, f.message);
        }
    }
    Ok(if report.healthy() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn to_json(report: &Report) -> serde_json::Value {
    json!({
        "healthy": report.healthy(),
        "checked": report.checked,
        "findings": report.findings.iter().map(|f| json!({
            "severity": f.severity.as_str(),
            "check": f.check,
            "message": f.message,
        })).collect::<Vec<_>>(),
    })
}
