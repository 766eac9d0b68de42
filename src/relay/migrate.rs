//! The relay's schema (`relay`), created and migrated by `setup relay`.

use tokio_postgres::Client;

use crate::error::Result;
use crate::postgres::migrations;

mod embedded {
    refinery::embed_migrations!("migrations/relay");
}

/// The relay's schema.
const SCHEMA: &str = "relay";

/// Creates or migrates the relay schema, in one transaction.
pub async fn migrate(client: &mut Client) -> Result<()> {
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
