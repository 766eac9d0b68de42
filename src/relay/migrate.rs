//! The relay's schema (`relay`), created and migrated by `setup relay`.

use tokio_postgres::Client;

use crate::error::{DbContext, Error, Result};
use crate::postgres::migrations;

mod embedded {
    refinery::embed_migrations!("migrations/relay");
}

/// The relay's schema.
const SCHEMA: &str = "relay";

/// Creates or migrates the relay schema, in one transaction.
pub async fn migrate(client: &mut Client) -> Result<()> {
    let group = super::site_roles::SITE_GROUP;
    let row = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1) AS group_exists,
                    r.rolcreaterole OR r.rolsuper AS may, r.rolname::text AS me
               FROM pg_roles r WHERE r.rolname = current_user",
            &[&group],
        )
        .await
        .ctx(|| "reading the relay owner's role".into())?;
    let (group_exists, may, me): (bool, bool, String) =
        (row.get("group_exists"), row.get("may"), row.get("me"));
    if !group_exists && !may {
        return Err(Error::Setup(format!(
            "the relay's owner {me} may not create roles, and setup relay creates the group role {group} (site add creates each site's role too); as a superuser run: `ALTER ROLE {} CREATEROLE`, then setup relay again",
            crate::postgres::ident(&me)
        )));
    }
    migrations::run(client, embedded::migrations::runner(), SCHEMA).await
}

/// Versions of the relay schema this build knows and the relay has not
/// applied (the schema must exist: see [`is_set_up`]).
pub(crate) async fn missing(client: &Client) -> Result<Vec<i32>> {
    migrations::missing(client, embedded::migrations::runner(), SCHEMA).await
}

/// Whether the relay schema is in place.
pub(crate) async fn is_set_up(client: &Client) -> Result<bool> {
    migrations::exists(client, "relay.schema_history").await
}
