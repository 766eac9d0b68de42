//! Verify (HO: results, a new run, Repair) and Doctor (either side).

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};

use super::auth::User;
use super::pages::tri;
use super::view::{badge, Form, Frame, Page};
use super::App;
use crate::service;

struct ResultRow {
    site: String,
    table: String,
    status: &'static str,
    badge: &'static str,
    checked_at: String,
    ho_rows: i64,
    site_rows: i64,
    orphans: i64,
    detail: String,
}

#[derive(askama::Template)]
#[template(path = "console/verify.html")]
struct Verify {
    f: Frame,
    rows: Vec<ResultRow>,
    drifting: usize,
    sites: Vec<String>,
    tables: Vec<String>,
}

pub(crate) async fn verify(State(app): State<Arc<App>>, user: User) -> Response {
    let relay = tri!(app.relay().await);
    let results = tri!(service::verify_results(&relay, &[], &[]).await);
    let sites = tri!(service::sites(&relay).await);
    let rows: Vec<ResultRow> = results
        .results
        .iter()
        .map(|r| ResultRow {
            site: r.site.clone(),
            table: r.table_name.clone(),
            status: r.status.as_str(),
            badge: badge(r.status.as_str()),
            checked_at: r.checked_at.clone(),
            ho_rows: r.ho_rows,
            site_rows: r.site_rows,
            orphans: r.orphans,
            detail: r.detail.clone(),
        })
        .collect();
    Page(Verify {
        f: Frame::new(app.side, "/verify", &user),
        drifting: results.results.iter().filter(|r| r.drifted()).count(),
        rows,
        sites,
        tables: app.cfg.tables.iter().map(|t| t.name.clone()).collect(),
    })
    .into_response()
}

/// Run (ask the chosen sites, or all, to verify) or Repair (reload what
/// the latest results found drifting).
pub(crate) async fn verify_request(
    State(app): State<Arc<App>>,
    user: User,
    form: Form,
) -> Response {
    if let Some(r) = user.refusal(&form) {
        return r;
    }
    let relay = tri!(app.relay().await);
    let (sites, tables) = (form.all("site"), form.all("table"));
    let detail = |sites: &[String], tables: &[String]| {
        let list = |v: &[String], all: &str| match v.is_empty() {
            true => all.to_string(),
            false => v.join(", "),
        };
        format!(
            "{}; {}",
            list(sites, "every site"),
            list(tables, "every table")
        )
    };
    if form.get("action") == Some("repair") {
        let done = tri!(service::repair(&relay, &sites, &tables).await);
        let what: Vec<String> = done
            .repairs
            .iter()
            .map(|(site, tables)| format!("{site}: {}", tables.join(", ")))
            .collect();
        let text = match what.is_empty() {
            true => "nothing drifts".to_string(),
            false => what.join("; "),
        };
        tri!(app.audit(&user, "Repair", &text).await);
        app.wake_worker();
        return Redirect::to("/verify").into_response();
    }
    let chosen = match sites.is_empty() {
        true => service::Sites::All,
        false => service::Sites::These(sites.clone()),
    };
    tri!(service::verify(&relay, chosen, tables.clone()).await);
    tri!(app.audit(&user, "Verify", &detail(&sites, &tables)).await);
    app.wake_worker();
    Redirect::to("/verify").into_response()
}

#[derive(askama::Template)]
#[template(path = "console/doctor.html")]
struct Doctor {
    f: Frame,
    findings: Vec<(&'static str, &'static str, &'static str, String)>,
    checked: String,
}

pub(crate) async fn doctor(State(app): State<Arc<App>>, user: User) -> Response {
    let report = service::doctor(&app.cfg).await;
    Page(Doctor {
        f: Frame::new(app.side, "/doctor", &user),
        findings: report
            .findings
            .iter()
            .map(|f| {
                let b = match f.severity {
                    crate::doctor::Severity::Error => "bad",
                    crate::doctor::Severity::Warning => "held",
                };
                (f.severity.as_str(), b, f.check, f.message.clone())
            })
            .collect(),
        checked: report.checked.join(", "),
    })
    .into_response()
}
