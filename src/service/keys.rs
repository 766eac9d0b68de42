//! The sites' public keys HO holds: recorded, revoked, listed.

use tokio_postgres::Client;

use crate::error::{Error, Result};
use crate::seal::PublicKey;

/// What recording a site's key did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KeyRecorded {
    pub site: String,
    pub key_id: String,
    /// False when HO held the key already.
    pub new: bool,
}

/// Records `key` as one of site `site`'s keys in HO's database `ho`.
pub async fn record_site_key(ho: &Client, site: &str, key: &PublicKey) -> Result<KeyRecorded> {
    let side = crate::book::migrate::Side::Ho;
    if !crate::book::migrate::is_set_up(ho, side).await?
        || !crate::book::migrate::missing(ho, side).await?.is_empty()
    {
        return Err(Error::Setup(format!(
            "HO keeps the sites' keys in its relaysync schema, which is not set up or not current: run `relaysync setup ho`, then `relaysync site key {site} --public-key FILE`"
        )));
    }
    let new = crate::book::ho::add_site_key(ho, site, key).await?;
    Ok(KeyRecorded {
        site: site.to_string(),
        key_id: key.id().to_string(),
        new,
    })
}

/// Forgets site `site`'s key `key_id`: HO refuses what it signs from now
/// on. An error names the keys HO holds for the site when it holds not
/// that one.
pub async fn revoke_site_key(ho: &Client, site: &str, key_id: &str) -> Result<()> {
    if crate::book::ho::revoke_site_key(ho, site, key_id).await? {
        return Ok(());
    }
    let held: Vec<String> = crate::book::ho::site_keys(ho)
        .await?
        .remove(site)
        .unwrap_or_default()
        .iter()
        .map(|k| k.id().to_string())
        .collect();
    Err(Error::Config(format!(
        "HO holds no key {key_id} for site {site} (it holds: {})",
        if held.is_empty() {
            "none".to_string()
        } else {
            held.join(", ")
        }
    )))
}
