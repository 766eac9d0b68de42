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
    let group_exists: bool = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)",
            &[&group],
        )
        .await
        .ctx(|| "reading the relay's roles".into())?
        .get(0);
    let (may, me) = super::site_roles::may_create_roles(client).await?;
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
