//! The schemas relaysync owns, created and migrated by the tool itself.

use tokio_postgres::Client;

use crate::error::{Error, Result};

mod relay {
    refinery::embed_migrations!("migrations/relay");
}
mod ho {
    refinery::embed_migrations!("migrations/ho");
}
mod pos {
    refinery::embed_migrations!("migrations/pos");
}

/// Which database a schema is for.
#[derive(Debug, Clone, Copy)]
pub enum Target {
    /// The relay database: schema `relay`.
    Relay,
    /// HO's database: schema `relaysync`.
    Ho,
    /// A site's database: schema `relaysync`.
    Pos,
}

impl Target {
    /// The schema this target's tables live in.
    pub fn schema(self) -> &'static str {
        match self {
            Target::Relay => "relay",
            Target::Ho | Target::Pos => "relaysync",
        }
    }
}

/// Creates or migrates the schema of `target`, in one transaction.
pub async fn migrate(client: &mut Client, target: Target) -> Result<()> {
    require_own_database(client, target).await?;
    let schema = target.schema();
    client
        .batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
        .await
        .map_err(|source| Error::Db {
            context: format!("creating schema {schema}"),
            source,
        })?;
    let runner = match target {
        Target::Relay => relay::migrations::runner(),
        Target::Ho => ho::migrations::runner(),
        Target::Pos => pos::migrations::runner(),
    };
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

/// Versions of `target`'s schema this build knows and the database has not
/// applied (the schema must exist: see [`is_set_up`]).
pub async fn missing(client: &Client, target: Target) -> Result<Vec<i32>> {
    let runner = match target {
        Target::Relay => relay::migrations::runner(),
        Target::Ho => ho::migrations::runner(),
        Target::Pos => pos::migrations::runner(),
    };
    let applied: Vec<i32> = client
        .query(
            &format!("SELECT version FROM {}.schema_history", target.schema()),
            &[],
        )
        .await
        .map_err(|source| Error::Db {
            context: format!("reading {}.schema_history", target.schema()),
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

/// Fails with the fix when the database holds the other side's
/// `relaysync` schema: a site's URL pointing at HO's database, or the
/// reverse.
async fn require_own_database(client: &Client, target: Target) -> Result<()> {
    let (other, fix) = match target {
        Target::Relay => return Ok(()),
        Target::Ho => (
            "relaysync.site",
            "[ho] url points at a site's database; set it to HO's database",
        ),
        Target::Pos => (
            "relaysync.sent_packets",
            "[pos] url points at HO's database; set it to this site's database (or RELAYSYNC__POS__URL)",
        ),
    };
    if exists(client, other).await? {
        return Err(Error::Setup(format!("{fix} (it holds {other})")));
    }
    Ok(())
}

/// Whether `target`'s schema is in place (its history table exists); an
/// error naming the fix when the database is the other side's.
pub async fn is_set_up(client: &Client, target: Target) -> Result<bool> {
    require_own_database(client, target).await?;
    exists(client, &format!("{}.schema_history", target.schema())).await
}

/// Whether table `name` (`schema.table`) exists.
async fn exists(client: &Client, name: &str) -> Result<bool> {
    let row = client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&name])
        .await
        .map_err(|source| Error::Db {
            context: "looking up relaysync's schema".into(),
            source,
        })?;
    Ok(row.get(0))
}
