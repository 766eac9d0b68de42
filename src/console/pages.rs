//! HO's pages (Sites, a site, Data Sync, Sent Data and a packet) and the
//! pages both sides have (Event Log, Audit).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use tokio_postgres::Client;

use super::auth::User;
use super::view::{self, badge, when, Form, Frame, Page};
use super::App;
use crate::book::events::Event;
use crate::book::records::{Filter, PacketRecord};
use crate::book::Side;
use crate::error::Result;
use crate::relay::{PacketDetail, Relay, SiteStatus, TableStatus};
use crate::service;

impl App {
    pub(crate) async fn relay(&self) -> Result<Relay> {
        Relay::connect(&self.cfg.relay()?.url).await
    }

    /// This side's own database (HO's, or the site's).
    pub(crate) async fn book(&self) -> Result<Client> {
        match self.side {
            Side::Ho => crate::postgres::connect("ho", &self.cfg.ho()?.url).await,
            Side::Site => crate::postgres::connect("pos", &self.cfg.pos()?.url).await,
        }
    }

    /// Records `user`'s action in the audit log.
    pub(crate) async fn audit(&self, user: &User, action: &str, detail: &str) -> Result<()> {
        let client = self.book().await?;
        service::record_action(&client, &user.name, action, detail).await?;
        tracing::info!(user = %user.name, action, detail, "console action");
        Ok(())
    }
}

/// Turns a relaysync error into its page.
macro_rules! tri {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => return $crate::console::view::failed(&e),
        }
    };
}
pub(crate) use tri;

// ---- Sites ----

#[derive(Debug, Default, Deserialize)]
pub(crate) struct SitesQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    status: String,
}

/// A row of the Sites grid.
struct SiteRow {
    site: String,
    state: &'static str,
    badge: &'static str,
    through: String,
    pending: i64,
    lag: String,
    last_success: String,
    error: String,
    fix: String,
}

impl SiteRow {
    fn of(s: &SiteStatus) -> SiteRow {
        SiteRow {
            site: s.site.clone(),
            state: s.state,
            badge: badge(s.state),
            through: s.applied_through.map_or("-".into(), |v| v.to_string()),
            pending: s.pending,
            lag: s.lag_seconds.map_or("-".into(), |l| format!("{l:.1} s")),
            last_success: when(s.last_success),
            error: s.error.clone().unwrap_or_default(),
            fix: s.fix().unwrap_or_default(),
        }
    }
}

#[derive(askama::Template)]
#[template(path = "console/sites.html")]
struct Sites {
    f: Frame,
    q: String,
    status: String,
    rows: Vec<SiteRow>,
    total: usize,
    /// (state, count), for the filter's choices.
    counts: Vec<(&'static str, usize)>,
    drift: Vec<(String, String, String)>,
}

pub(crate) async fn sites(
    State(app): State<Arc<App>>,
    user: User,
    Query(q): Query<SitesQuery>,
) -> Response {
    let relay = tri!(app.relay().await);
    let stall = tri!(service::stall_after(&app.cfg));
    let view = tri!(service::status(&relay, stall).await);
    let mut counts: Vec<(&'static str, usize)> = Vec::new();
    for s in &view.sites {
        match counts.iter_mut().find(|(st, _)| *st == s.state) {
            Some((_, n)) => *n += 1,
            None => counts.push((s.state, 1)),
        }
    }
    counts.sort();
    let needle = q.q.to_lowercase();
    let rows = view
        .sites
        .iter()
        .filter(|s| needle.is_empty() || s.site.to_lowercase().contains(&needle))
        .filter(|s| q.status.is_empty() || s.state == q.status)
        .map(SiteRow::of)
        .collect();
    Page(Sites {
        f: Frame::new(app.side, "/sites", &user),
        total: view.sites.len(),
        q: q.q,
        status: q.status,
        rows,
        counts,
        drift: view
            .drift
            .iter()
            .map(|d| (d.site.clone(), d.table_name.clone(), d.detail.clone()))
            .collect(),
    })
    .into_response()
}

// ---- A site ----

struct TableRow {
    table: String,
    state: &'static str,
    badge: &'static str,
    last_full_sync: String,
    rows: String,
    last_delta: String,
    pending: i64,
    error: String,
}

impl TableRow {
    fn of(t: &TableStatus) -> TableRow {
        TableRow {
            table: t.table.clone(),
            state: t.state,
            badge: badge(t.state),
            last_full_sync: when(t.last_full_sync),
            rows: t.full_sync_rows.map_or("-".into(), |v| v.to_string()),
            last_delta: t.last_delta.map_or("-".into(), |v| v.to_string()),
            pending: t.pending,
            error: t.error.clone().unwrap_or_default(),
        }
    }
}

#[derive(askama::Template)]
#[template(path = "console/site.html")]
struct SitePage {
    f: Frame,
    site: SiteRow,
    tables: Vec<TableRow>,
}

pub(crate) async fn site(
    State(app): State<Arc<App>>,
    user: User,
    Path(code): Path<String>,
) -> Response {
    let relay = tri!(app.relay().await);
    let detail = tri!(service::site_detail(&relay, &code).await);
    let stall = tri!(service::stall_after(&app.cfg));
    let status = tri!(service::status(&relay, stall).await);
    let Some(s) = status.sites.iter().find(|s| s.site == code) else {
        return view::not_found(&format!("site {code} is not registered"));
    };
    Page(SitePage {
        f: Frame::new(app.side, "/sites", &user),
        site: SiteRow::of(s),
        tables: detail.tables.iter().map(TableRow::of).collect(),
    })
    .into_response()
}

/// Sync Selective of the chosen tables at this site.
pub(crate) async fn site_sync(
    State(app): State<Arc<App>>,
    user: User,
    Path(code): Path<String>,
    form: Form,
) -> Response {
    if let Some(r) = user.refusal(&form) {
        return r;
    }
    let tables = form.all("table");
    if tables.is_empty() {
        return view::failed(&crate::Error::Config(
            "choose at least one table to sync (Sync Selective)".into(),
        ));
    }
    request(&app, &user, service::Sites::These(vec![code]), tables).await
}

/// A clean reload of every table at this site.
pub(crate) async fn site_resync(
    State(app): State<Arc<App>>,
    user: User,
    Path(code): Path<String>,
    form: Form,
) -> Response {
    if let Some(r) = user.refusal(&form) {
        return r;
    }
    let relay = tri!(app.relay().await);
    let done = tri!(service::resync(&relay, &code).await);
    tri!(app.audit(&user, "Resync", &format!("site {code}")).await);
    app.wake_worker();
    Redirect::to(&progress_url(&done.sites)).into_response()
}

/// Asks for a full sync of `tables` (empty: all) at `sites`, records it,
/// and shows its progress.
async fn request(app: &App, user: &User, sites: service::Sites, tables: Vec<String>) -> Response {
    let all = matches!(sites, service::Sites::All);
    let relay = tri!(app.relay().await);
    let done = tri!(service::push(&relay, sites, tables).await);
    let what = if all { "Sync All" } else { "Sync Selective" };
    let tables = match done.tables.is_empty() {
        true => "every table".to_string(),
        false => done.tables.join(", "),
    };
    let detail = match all {
        true => format!("every site ({}); {tables}", done.sites.len()),
        false => format!("{}; {tables}", done.sites.join(", ")),
    };
    tri!(app.audit(user, what, &detail).await);
    app.wake_worker();
    match all {
        true => Redirect::to("/datasync?progress=*").into_response(),
        false => Redirect::to(&progress_url(&done.sites)).into_response(),
    }
}

fn progress_url(sites: &[String]) -> String {
    let list = sites.join(",");
    let enc: String = form_urlencoded::byte_serialize(list.as_bytes()).collect();
    format!("/datasync?progress={enc}")
}

// ---- Data Sync ----

#[derive(Debug, Default, Deserialize)]
pub(crate) struct DataSyncQuery {
    #[serde(default)]
    q: String,
    /// The sites of the request whose progress is shown (`*`: all).
    #[serde(default)]
    progress: String,
}

#[derive(askama::Template)]
#[template(path = "console/datasync.html")]
struct DataSync {
    f: Frame,
    q: String,
    sites: Vec<String>,
    tables: Vec<String>,
    /// The progress of the request just made, if any.
    progress: Option<Progress>,
}

struct Progress {
    rows: Vec<SiteRow>,
    done: usize,
    complete: bool,
    failed: bool,
}

pub(crate) async fn datasync(
    State(app): State<Arc<App>>,
    user: User,
    Query(q): Query<DataSyncQuery>,
) -> Response {
    let relay = tri!(app.relay().await);
    let stall = tri!(service::stall_after(&app.cfg));
    let status = tri!(service::status(&relay, stall).await);
    let progress = (!q.progress.is_empty()).then(|| {
        let chosen: Vec<&str> = q.progress.split(',').collect();
        let rows: Vec<SiteRow> = status
            .sites
            .iter()
            .filter(|s| q.progress == "*" || chosen.contains(&s.site.as_str()))
            .map(SiteRow::of)
            .collect();
        let done = rows.iter().filter(|r| r.state == "Success").count();
        Progress {
            complete: done == rows.len(),
            failed: rows.iter().any(|r| r.badge == "bad" || r.badge == "held"),
            done,
            rows,
        }
    });
    let needle = q.q.to_lowercase();
    Page(DataSync {
        f: Frame::new(app.side, "/datasync", &user),
        sites: status
            .sites
            .iter()
            .map(|s| s.site.clone())
            .filter(|s| needle.is_empty() || s.to_lowercase().contains(&needle))
            .collect(),
        q: q.q,
        tables: app.cfg.tables.iter().map(|t| t.name.clone()).collect(),
        progress,
    })
    .into_response()
}

#[derive(askama::Template)]
#[template(path = "console/confirm.html")]
struct Confirm {
    f: Frame,
    sites: usize,
    tables: Vec<String>,
}

/// Sync Selective (the chosen sites) or Sync All (after a confirmation).
pub(crate) async fn datasync_request(
    State(app): State<Arc<App>>,
    user: User,
    form: Form,
) -> Response {
    if let Some(r) = user.refusal(&form) {
        return r;
    }
    let tables = form.all("table");
    match form.get("action") {
        Some("all") if form.get("confirm") == Some("yes") => {
            request(&app, &user, service::Sites::All, tables).await
        }
        Some("all") => {
            let relay = tri!(app.relay().await);
            let sites = tri!(service::sites(&relay).await);
            Page(Confirm {
                f: Frame::new(app.side, "/datasync", &user),
                sites: sites.len(),
                tables,
            })
            .into_response()
        }
        _ => {
            let sites = form.all("site");
            if sites.is_empty() {
                return view::failed(&crate::Error::Config(
                    "choose at least one site for Sync Selective, or use Sync All".into(),
                ));
            }
            request(&app, &user, service::Sites::These(sites), tables).await
        }
    }
}

// ---- Sent Data ----

#[derive(Debug, Default, Deserialize)]
pub(crate) struct PacketsQuery {
    #[serde(default)]
    pub(crate) site: String,
    #[serde(default)]
    pub(crate) status: String,
    #[serde(default)]
    pub(crate) period: String,
}

/// The latest packets a page lists.
pub(crate) const PACKETS_SHOWN: usize = 500;

/// A row of Sent Data or Received Data.
pub(crate) struct PacketRow {
    pub(crate) packet: i64,
    pub(crate) group: i64,
    pub(crate) kind: String,
    pub(crate) targets: String,
    pub(crate) rows: i64,
    pub(crate) at: String,
    pub(crate) status: String,
    pub(crate) badge: &'static str,
    pub(crate) error: String,
}

impl PacketRow {
    pub(crate) fn of(p: &PacketRecord) -> PacketRow {
        let status = p.status.as_str().to_string();
        PacketRow {
            packet: p.packet,
            group: p.group,
            kind: p.kind.as_str().to_string(),
            targets: p.targets.join(", "),
            rows: p.rows,
            at: crate::serialize::format_time(p.at),
            badge: badge(&status),
            status,
            error: p.error.clone().unwrap_or_default(),
        }
    }
}

/// The filter a Sent Data or Received Data query asks for.
pub(crate) fn packet_filter(q: &PacketsQuery) -> Result<Filter> {
    Ok(Filter {
        site: (!q.site.is_empty()).then(|| q.site.clone()),
        status: (!q.status.is_empty())
            .then(|| service::parse_status(&q.status))
            .transpose()?,
        since: match q.period.as_str() {
            "" | "all" => None,
            p => Some(service::parse_since(p)?),
        },
    })
}

/// The newest [`PACKETS_SHOWN`] of `packets`, newest first.
pub(crate) fn newest(packets: &[PacketRecord]) -> Vec<PacketRow> {
    packets
        .iter()
        .rev()
        .take(PACKETS_SHOWN)
        .map(PacketRow::of)
        .collect()
}

#[derive(askama::Template)]
#[template(path = "console/packets.html")]
pub(crate) struct Packets {
    pub(crate) f: Frame,
    pub(crate) heading: &'static str,
    pub(crate) sent: bool,
    pub(crate) site: String,
    pub(crate) status: String,
    pub(crate) period: String,
    pub(crate) rows: Vec<PacketRow>,
    pub(crate) total: usize,
}

pub(crate) async fn sent(
    State(app): State<Arc<App>>,
    user: User,
    Query(q): Query<PacketsQuery>,
) -> Response {
    let filter = tri!(packet_filter(&q));
    let ho = tri!(app.book().await);
    let relay = tri!(app.relay().await);
    let view = tri!(service::sent(&ho, &relay, &filter).await);
    Page(Packets {
        f: Frame::new(app.side, "/sent", &user),
        heading: "Sent Data",
        sent: true,
        rows: newest(&view.packets),
        total: view.packets.len(),
        site: q.site,
        status: q.status,
        period: q.period,
    })
    .into_response()
}

#[derive(askama::Template)]
#[template(path = "console/packet.html")]
struct PacketPage {
    f: Frame,
    p: PacketDetail,
    status_badge: &'static str,
    created: String,
    acks: Vec<(String, String, &'static str, i64, String, String)>,
}

pub(crate) async fn packet(
    State(app): State<Arc<App>>,
    user: User,
    Path(id): Path<i64>,
) -> Response {
    let relay = tri!(app.relay().await);
    let Some(p) = tri!(service::packet_detail(&relay, id).await) else {
        return view::not_found(&format!(
            "packet {id} is no longer in the relay: every target processed it and it was purged ([retention] keep_acked)"
        ));
    };
    Page(PacketPage {
        f: Frame::new(app.side, "/sent", &user),
        status_badge: badge(&p.status),
        created: crate::serialize::format_time(p.created_at),
        acks: p
            .acks
            .iter()
            .map(|a| {
                (
                    a.site.clone(),
                    a.status.clone(),
                    badge(&a.status),
                    a.rows,
                    crate::serialize::format_time(a.at),
                    a.error.clone().unwrap_or_default(),
                )
            })
            .collect(),
        p,
    })
    .into_response()
}

// ---- Event Log and Audit (both sides) ----

#[derive(Debug, Default, Deserialize)]
pub(crate) struct EventsQuery {
    /// `1d`, `7d`, or `custom` with `custom` set (e.g. `3h`, `30d`).
    #[serde(default)]
    period: String,
    #[serde(default)]
    custom: String,
}

impl EventsQuery {
    fn since(&self) -> Result<Duration> {
        match self.period.as_str() {
            "" => Ok(Duration::from_secs(86_400)),
            "custom" => service::parse_since(&self.custom),
            p => service::parse_since(p),
        }
    }
}

#[derive(askama::Template)]
#[template(path = "console/events.html")]
struct Events {
    f: Frame,
    period: String,
    custom: String,
    events: Vec<Event>,
    csv: String,
}

async fn read_events(app: &App, q: &EventsQuery) -> Result<Vec<Event>> {
    let since = q.since()?;
    let client = app.book().await?;
    let role = match app.side {
        Side::Ho => "ho",
        Side::Site => "pos",
    };
    let mut events = service::events(&client, role, since).await?.events;
    events.reverse();
    Ok(events)
}

pub(crate) async fn events(
    State(app): State<Arc<App>>,
    user: User,
    Query(q): Query<EventsQuery>,
) -> Response {
    let events = tri!(read_events(&app, &q).await);
    let query = format!(
        "period={}&custom={}",
        form_urlencoded::byte_serialize(q.period.as_bytes()).collect::<String>(),
        form_urlencoded::byte_serialize(q.custom.as_bytes()).collect::<String>()
    );
    Page(Events {
        f: Frame::new(app.side, "/events", &user),
        period: if q.period.is_empty() {
            "1d".into()
        } else {
            q.period
        },
        custom: q.custom,
        events,
        csv: format!("/events.csv?{query}"),
    })
    .into_response()
}

/// A CSV field, quoted when it needs to be; a leading `=`, `+`, `-` or `@`
/// is prefixed with `'` so that a spreadsheet does not run it.
fn csv_field(s: &str) -> String {
    let s = match s.starts_with(['=', '+', '-', '@']) {
        true => format!("'{s}"),
        false => s.to_string(),
    };
    match s.contains([',', '"', '\n', '\r']) {
        true => format!("\"{}\"", s.replace('"', "\"\"")),
        false => s,
    }
}

pub(crate) async fn events_csv(
    State(app): State<Arc<App>>,
    _user: User,
    Query(q): Query<EventsQuery>,
) -> Response {
    let events = tri!(read_events(&app, &q).await);
    let mut out = String::from("Date,User,Device ID,Table,Event,Detail\r\n");
    for e in &events {
        let fields = [&e.at, &e.key, &e.site, &e.table, &e.event, &e.detail];
        let line: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
        out.push_str(&line.join(","));
        out.push_str("\r\n");
    }
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"relaysync-events.csv\"",
            ),
        ],
        out,
    )
        .into_response()
}

#[derive(askama::Template)]
#[template(path = "console/audit.html")]
struct Audit {
    f: Frame,
    entries: Vec<crate::book::audit::AuditEntry>,
}

pub(crate) async fn audit(State(app): State<Arc<App>>, user: User) -> Response {
    let client = tri!(app.book().await);
    let view = tri!(service::audit(&client, 500).await);
    Page(Audit {
        f: Frame::new(app.side, "/audit", &user),
        entries: view.entries,
    })
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::csv_field;

    #[test]
    fn csv_fields_are_quoted_and_formulas_defused() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("=cmd()"), "'=cmd()");
    }
}
