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
/// `base`; `setup` names the command that creates it.
pub(crate) async fn use_origin(sql: &Client, base: &str, setup: &str) -> Result<()> {
    let name = origin_name(sql, base).await?;
    sql.execute("SELECT pg_replication_origin_session_setup($1)", &[&name])
        .await
        .ctx(|| {
            format!(
                "marking this session with replication origin {name}; run `{setup}`, and stop any other worker on this database"
            )
        })?;
    Ok(())
}
