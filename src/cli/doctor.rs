//! `doctor`: findings worst first, one line each.

use std::process::ExitCode;

use relaysync::config::Config;
use relaysync::doctor;
use relaysync::error::Result;

/// Runs the checks and prints the findings; exit code 1 when any.
pub async fn run(cfg: &Config, as_json: bool) -> Result<ExitCode> {
    let report = doctor::run(cfg).await;
    if as_json {
        super::json::print(&report);
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
