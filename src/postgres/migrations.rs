//! Running a schema's embedded migrations (refinery), for the relay's
//! schema and for the bookkeeping schema at HO and the sites.

use tokio_postgres::Client;

use crate::error::{Error, Result};

/// Creates `schema` if needed and applies `runner`'s migrations to it, in
/// one transaction, recording them in `schema.schema_history`.
pub(crate) async fn run(client: &mut Client, runner: refinery::Runner, schema: &str) -> Result<()> {
    client
        .batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
        .await
        .map_err(|source| Error::Db {
            context: format!("creating schema {schema}"),
            source,
        })?;
    runner
        .set_grouped(true)
        .set_migration_table_name(format!("{schema}.schema_history"))
        .run_async(client)
        .await
        .map_err(|e| {
            // Name the database's own complaint (refinery says only "db error").
            let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&e);
            let mut why = crate::error_chain(&e);
            while let Some(c) = cause {
                if let Some(db) = c.downcast_ref::<tokio_postgres::Error>() {
                    why = crate::error::db_message(db);
                    break;
                }
                cause = c.source();
            }
            Error::Setup(format!("migrating schema {schema}: {why}"))
        })?;
    Ok(())
}

/// Versions of `runner` that `schema` has not applied (the schema must
/// exist).
pub(crate) async fn missing(
    client: &Client,
    runner: refinery::Runner,
    schema: &str,
) -> Result<Vec<i32>> {
    let applied: Vec<i32> = client
        .query(&format!("SELECT version FROM {schema}.schema_history"), &[])
        .await
        .map_err(|source| Error::Db {
            context: format!("reading {schema}.schema_history"),
            source,
        })?
        .iter()
        .map(|r| r.get("version"))
        .collect();
    Ok(runner
        .get_migrations()
        .iter()
        .map(|m| m.version())
        .filter(|v| !applied.contains(v))
        .collect())
}

/// Whether table `name` (`schema.table`) exists.
pub(crate) async fn exists(client: &Client, name: &str) -> Result<bool> {
    let row = client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&name])
        .await
        .map_err(|source| Error::Db {
            context: "looking up relaysync's schema".into(),
            source,
        })?;
    Ok(row.get(0))
}
