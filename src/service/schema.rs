//! Schema changes at HO that sites hold (see `apply/schema.rs`): shown from
//! HO for every site (through the relay's acks) or at a site (its own, with
//! the statements), approved from HO for the sites to make, or applied at a
//! site.

use tokio_postgres::Client;

use crate::book::site::{self, HeldPacket};
use crate::error::Result;
use crate::relay::{HeldAck, Relay};

/// The packets sites hold for schema changes, as HO sees them.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HeldAtSites {
    pub held: Vec<HeldAck>,
}

/// Every site's held packets (or `site`'s).
pub async fn held_at_sites(relay: &Relay, site: Option<&str>) -> Result<HeldAtSites> {
    Ok(HeldAtSites {
        held: relay.held(site).await?,
    })
}

/// The packets this site holds, with the statements that end the hold.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HeldHere {
    pub held: Vec<HeldPacket>,
}

/// This site's held packets.
pub async fn held_here(site_db: &Client) -> Result<HeldHere> {
    Ok(HeldHere {
        held: site::held(site_db).await?,
    })
}

/// What `schema apply` ran at the site.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SchemaApplied {
    pub statements: Vec<String>,
}

/// Makes the held changes at this site, in one transaction; its next sync
/// applies the packets that waited for them.
pub async fn apply_held(site_db: &mut Client) -> Result<SchemaApplied> {
    Ok(SchemaApplied {
        statements: site::apply_held(site_db).await?,
    })
}

/// Approves the changes sites hold (`site`'s only, if given): each site
/// makes its own held change on its next sync (see `apply/schema.rs`).
pub async fn approve_held(relay: &Relay, site: Option<&str>) -> Result<HeldAtSites> {
    if let Some(site) = site {
        relay.require_site(site).await?;
    }
    Ok(HeldAtSites {
        held: relay.approve_held(site).await?,
    })
}
