//! A site's pages: Synchronization (Server → Site, Site → Server, Sync
//! Now / Retry) and Received Data.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect, Response};

use super::auth::User;
use super::pages::{newest, packet_filter, tri, Packets, PacketsQuery};
use super::view::{self, badge, span, when, Form, Frame, Page};
use super::App;
use crate::service;

/// The console's own Sync Now: whether one runs, and how the last ended.
#[derive(Debug, Default)]
pub(crate) struct SyncRun {
    running: Option<Instant>,
    last: Option<(SystemTime, std::result::Result<String, String>)>,
}

struct Category {
    table: String,
    state: &'static str,
    badge: &'static str,
    last_full_sync: String,
    rows: String,
    last_delta: String,
    pending: i64,
    error: String,
}

#[derive(askama::Template)]
#[template(path = "console/sync.html")]
struct Synchronization {
    f: Frame,
    site: String,
    down_state: &'static str,
    down_badge: &'static str,
    categories: Vec<Category>,
    up_state: &'static str,
    up_badge: &'static str,
    up_pending: i64,
    up_merged: i64,
    up_last: String,
    up_error: String,
    last_success: String,
    next_sync: String,
    wipe: String,
    running: Option<String>,
    last_run: Option<(String, bool, String)>,
    /// Retry instead of Sync Now: a direction failed.
    retry: bool,
}

pub(crate) async fn synchronization(State(app): State<Arc<App>>, user: User) -> Response {
    let pos = tri!(app.cfg.pos());
    let relay = tri!(app.relay().await);
    let view = tri!(service::synchronization(&relay, &pos.site).await);
    let client = tri!(app.book().await);
    let ago = tri!(service::last_success_ago(&client, &pos.site).await);
    let interval = tri!(app.cfg.interval());
    let wipe_after = tri!(app.cfg.wipe_after());
    let next_sync = match (interval.is_zero(), ago) {
        (true, _) => "streaming: as soon as HO stores packets".to_string(),
        (false, Some(ago)) if ago < interval => format!("in {}", span(interval - ago)),
        (false, _) => "due now (when the site's worker runs)".to_string(),
    };
    let wipe = match (wipe_after, ago) {
        (None, _) => "never ([pos] wipe_after is not set)".to_string(),
        (Some(after), Some(ago)) if ago < after => {
            format!("in {} without a successful sync", span(after - ago))
        }
        (Some(_), Some(_)) => "due: no successful sync for [pos] wipe_after".to_string(),
        (Some(after), None) => format!("{} after the first successful sync", span(after)),
    };
    let (running, last_run) = {
        let run = app.site_sync.lock().expect("site sync");
        (
            run.running.map(|t| span(t.elapsed())),
            run.last.as_ref().map(|(at, r)| match r {
                Ok(s) => (when(Some(*at)), true, s.clone()),
                Err(e) => (when(Some(*at)), false, e.clone()),
            }),
        )
    };
    let retry = view.down_state == "Failed" || view.up.state == "Failed";
    Page(Synchronization {
        f: Frame::new(app.side, "/sync", &user),
        site: view.site.clone(),
        down_state: view.down_state,
        down_badge: badge(view.down_state),
        categories: view
            .down
            .iter()
            .map(|t| Category {
                table: t.table.clone(),
                state: t.state,
                badge: badge(t.state),
                last_full_sync: when(t.last_full_sync),
                rows: t.full_sync_rows.map_or("-".into(), |v| v.to_string()),
                last_delta: t.last_delta.map_or("-".into(), |v| v.to_string()),
                pending: t.pending,
                error: t.error.clone().unwrap_or_default(),
            })
            .collect(),
        up_state: view.up.state,
        up_badge: badge(view.up.state),
        up_pending: view.up.pending,
        up_merged: view.up.merged,
        up_last: when(view.up.last_success),
        up_error: view.up.error.clone().unwrap_or_default(),
        last_success: ago.map_or("never".into(), |a| format!("{} ago", span(a))),
        next_sync,
        wipe,
        running,
        last_run,
        retry,
    })
    .into_response()
}

/// Sync Now (or Retry): one sync of this site, in the background; the page
/// shows it running, then how it ended.
pub(crate) async fn sync_now(State(app): State<Arc<App>>, user: User, form: Form) -> Response {
    if let Some(r) = user.refusal(&form) {
        return r;
    }
    {
        let mut run = app.site_sync.lock().expect("site sync");
        if run.running.is_some() {
            return Redirect::to("/sync").into_response();
        }
        run.running = Some(Instant::now());
    }
    let action = match form.get("action") {
        Some("retry") => "Retry",
        _ => "Sync Now",
    };
    if let Err(e) = app.audit(&user, action, "").await {
        app.site_sync.lock().expect("site sync").running = None;
        return view::failed(&e);
    }
    if app.wake_worker() {
        // `pos run` beside the console syncs now; the states follow it.
        let mut run = app.site_sync.lock().expect("site sync");
        run.running = None;
        run.last = Some((
            SystemTime::now(),
            Ok("the site's worker was asked to sync now".into()),
        ));
        return Redirect::to("/sync").into_response();
    }
    let bg = app.clone();
    // A sync's future is not Send: it runs on a thread of its own.
    std::thread::spawn(move || {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| sync_once(&bg.cfg)))
            .unwrap_or_else(|_| Err("the sync stopped unexpectedly; see the console's log".into()));
        let mut run = bg.site_sync.lock().unwrap_or_else(|e| e.into_inner());
        run.running = None;
        run.last = Some((SystemTime::now(), outcome));
    });
    // Long enough for a quick sync to show as ended on the next page.
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while app.site_sync.lock().expect("site sync").running.is_some() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    Redirect::to("/sync").into_response()
}

/// One `pos sync --once`, on a runtime of its own: what it did, or why it
/// stopped.
fn sync_once(cfg: &crate::config::Config) -> std::result::Result<String, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting the sync: {e}"))?;
    let s = rt
        .block_on(crate::pos::sync_once(cfg))
        .map_err(|e| crate::error_chain(&e))?;
    if let Some(e) = crate::pos::failure(&s) {
        return Err(crate::error_chain(&e));
    }
    let uploaded = s.uploaded.as_ref().map_or(String::new(), |u| {
        format!("; uploaded {} change(s)", u.changes)
    });
    Ok(format!(
        "applied {} packet(s), {} row(s){uploaded}",
        s.applied.packets, s.applied.rows
    ))
}

pub(crate) async fn received(
    State(app): State<Arc<App>>,
    user: User,
    Query(q): Query<PacketsQuery>,
) -> Response {
    let q = PacketsQuery {
        site: String::new(),
        ..q
    };
    let filter = tri!(packet_filter(&q));
    let client = tri!(app.book().await);
    let view = tri!(service::received(&client, &filter).await);
    Page(Packets {
        f: Frame::new(app.side, "/received", &user),
        heading: "Received Data",
        sent: false,
        rows: newest(&view.packets),
        total: view.packets.len(),
        site: String::new(),
        status: q.status,
        period: q.period,
    })
    .into_response()
}
