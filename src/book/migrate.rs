//! The bookkeeping schema (`relaysync`) at HO and at a site, created and
//! migrated by `setup ho` and `setup pos`. Each side has its own
//! migrations (`migrations/ho`, `migrations/pos`).

use tokio_postgres::Client;

use crate::error::{Error, Result};
use crate::postgres::migrations;

mod ho {
    refinery::embed_migrations!("migrations/ho");
}
mod pos {
    refinery::embed_migrations!("migrations/pos");
}

/// The bookkeeping schema, at either side.
const SCHEMA: &str = "relaysync";

/// Which side's bookkeeping a database holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// HO's database.
    Ho,
    /// A site's database.
    Site,
}

impl Side {
    fn runner(self) -> refinery::Runner {
        match self {
            Side::Ho => ho::migrations::runner(),
            Side::Site => pos::migrations::runner(),
        }
    }
}

/// Creates or migrates `side`'s bookkeeping schema, in one transaction.
pub(crate) async fn migrate(client: &mut Client, side: Side) -> Result<()> {
    require_own_database(client, side).await?;
    migrations::run(client, side.runner(), SCHEMA).await
}

/// Versions of `side`'s schema this build knows and the database has not
/// applied (the schema must exist: see [`is_set_up`]).
pub(crate) async fn missing(client: &Client, side: Side) -> Result<Vec<i32>> {
    migrations::missing(client, side.runner(), SCHEMA).await
}

/// Whether `side`'s schema is in place; an error naming the fix when the
/// database is the other side's.
pub(crate) async fn is_set_up(client: &Client, side: Side) -> Result<bool> {
    require_usable(client, side).await?;
    require_own_database(client, side).await?;
    migrations::exists(client, "relaysync.schema_history").await
}

/// Fails with the fix when this session's role may not use the `relaysync`
/// schema (set up by another role, e.g. a superuser): the GRANTs its owner
/// runs, or `setup` run as this role.
async fn require_usable(client: &Client, side: Side) -> Result<()> {
    let row = client
        .query_one(
            "SELECT n.oid IS NULL OR has_schema_privilege(n.oid, 'USAGE')
                    AND coalesce((SELECT bool_and(has_table_privilege(c.oid, 'SELECT, INSERT, UPDATE, DELETE'))
                                    FROM pg_class c WHERE c.relnamespace = n.oid
                                     AND c.relkind IN ('r', 'p')), true) AS ok,
                    current_user::text AS me, n.nspowner::regrole::text AS owner
               FROM (SELECT 1) one LEFT JOIN pg_namespace n ON n.nspname = 'relaysync'",
            &[],
        )
        .await
        .map_err(|source| Error::Db {
            context: "checking this role's privileges on the relaysync schema".into(),
            source,
        })?;
    if row.get::<_, bool>("ok") {
        return Ok(());
    }
    let (me, owner): (String, String) = (row.get("me"), row.get("owner"));
    let to = crate::postgres::ident(&me);
    let setup = match side {
        Side::Ho => "relaysync setup ho",
        Side::Site => "relaysync setup pos",
    };
    Err(Error::Setup(format!(
        "role {me} may not use the relaysync schema, which {owner} set up; as {owner} run: `GRANT USAGE ON SCHEMA relaysync TO {to}; GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA relaysync TO {to}; GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA relaysync TO {to}`, or run `{setup}` as {me} from the start"
    )))
}

/// Fails with the fix when the database holds the other side's
/// `relaysync` schema: a site's URL pointing at HO's database, or the
/// reverse.
async fn require_own_database(client: &Client, side: Side) -> Result<()> {
    let (other, fix) = match side {
        Side::Ho => (
            "relaysync.site",
            "[ho] url points at a site's database; set it to HO's database",
        ),
        Side::Site => (
            "relaysync.sent_packets",
            "[pos] url points at HO's database; set it to this site's database (or RELAYSYNC__POS__URL)",
        ),
    };
    if migrations::exists(client, other).await? {
        return Err(Error::Setup(format!("{fix} (it holds {other})")));
    }
    Ok(())
}
