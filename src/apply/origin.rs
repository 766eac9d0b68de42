//! Replication origins: an applier marks its session with one, so that the
//! same database's capture can tell (and skip, or label) what it wrote.

use tokio_postgres::Client;

use crate::error::{DbContext, Result};

/// The name of this database's replication origin `base`: origins are per
/// server, so the database's name is appended.
pub(crate) async fn origin_name(sql: &Client, base: &str) -> Result<String> {
    let row = sql
        .query_one("SELECT $1 || '_' || current_database()", &[&base])
        .await
        .ctx(|| "reading the database name".into())?;
    Ok(row.get(0))
}

/// Creates this database's replication origin `base` if it does not exist;
/// returns its name.
pub(crate) async fn ensure_origin(sql: &Client, base: &str) -> Result<String> {
    let name = origin_name(sql, base).await?;
    sql.execute(
        "SELECT pg_replication_origin_create($1)
          WHERE NOT EXISTS (SELECT 1 FROM pg_replication_origin WHERE roname = $1)",
        &[&name],
    )
    .await
    .ctx(|| {
        format!(
            "creating replication origin {name}; it needs a superuser, or GRANT EXECUTE ON FUNCTION pg_replication_origin_create(text) to relaysync's role"
        )
    })?;
    Ok(name)
}

/// Marks this session's writes with this database's replication origin
/// `base`; `setup` names the command that creates it. An origin still held
/// by a connection of this very process that the network lost (dropped on
/// our side, its server process left waiting) is taken back.
pub(crate) async fn use_origin(sql: &Client, base: &str, setup: &str) -> Result<()> {
    let name = origin_name(sql, base).await?;
    const SETUP: &str = "SELECT pg_replication_origin_session_setup($1)";
    let mut result = sql.execute(SETUP, &[&name]).await;
    if let Some(pid) = result.as_ref().err().and_then(holder) {
        if end_own_lost_holder(sql, pid).await? {
            result = sql.execute(SETUP, &[&name]).await;
        }
    }
    result.ctx(|| {
        format!(
            "marking this session with replication origin {name}; run `{setup}`, and stop any other worker on this database"
        )
    })?;
    Ok(())
}

/// The server process holding an origin, from the server's refusal.
fn holder(e: &tokio_postgres::Error) -> Option<i32> {
    let db = e.as_db_error()?;
    if db.code() != &tokio_postgres::error::SqlState::OBJECT_IN_USE {
        return None;
    }
    let (_, after) = db.message().split_once("PID ")?;
    after
        .trim_end_matches(|c: char| !c.is_ascii_digit())
        .parse()
        .ok()
}

/// Ends server process `pid` if it serves a connection this process opened
/// (and has dropped: the one in use here is another); whether it did.
async fn end_own_lost_holder(sql: &Client, pid: i32) -> Result<bool> {
    let own = format!("{}%", crate::postgres::own_prefix());
    let ended: Option<bool> = sql
        .query_opt(
            "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity
              WHERE pid = $1 AND pid <> pg_backend_pid() AND application_name LIKE $2",
            &[&pid, &own],
        )
        .await
        .ctx(|| "ending a lost connection of this worker".into())?
        .map(|r| r.get(0));
    if ended == Some(true) {
        tracing::warn!(
            pid,
            "a lost connection of this worker held the replication origin; it was ended"
        );
    }
    Ok(ended == Some(true))
}
