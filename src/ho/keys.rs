//! Where HO's sequences behind the synced tables' columns stand, written
//! to the relay for the sites: a site holds only its own rows of a table
//! routed by column, so moving its sequence past the keys it holds is not
//! enough to keep a key it makes from being one HO used for another site.

use tokio_postgres::Client;

use crate::config::Config;
use crate::error::{DbContext, Result};
use crate::relay::Relay;

/// Writes where HO's sequences stand (those that moved) to the relay.
pub(super) async fn publish_highs(cfg: &Config, sql: &Client, relay: &Relay) -> Result<()> {
    let tables: Vec<String> = cfg.tables.iter().map(|t| t.name.clone()).collect();
    let highs = crate::apply::sequence::highs(sql, &tables)
        .await
        .ctx(|| "reading HO's sequences behind the synced tables".into())?;
    if !highs.is_empty() {
        relay.set_key_highs(&highs).await?;
    }
    Ok(())
}
