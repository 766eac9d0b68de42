//! Whether packets are signed and checked (see `seal`): unsigned packets
//! are a warning, keys that cannot be read or sites whose uploads HO would
//! refuse are errors.

use super::Report;
use crate::config::Config;
use crate::error::chain;
use crate::seal::{PublicKey, SigningKey};

const CHECK: &str = "signing";

/// HO's side: its signing key, and a key recorded for every site that
/// uploads.
pub(super) async fn check_ho(cfg: &Config, report: &mut Report) {
    let Ok(ho) = cfg.ho() else { return };
    report.ran(CHECK);
    let Some(path) = &ho.signing_key else {
        return report.warn(
            CHECK,
            "HO's down packets are unsigned: whoever owns the relay can write packets every site applies; make a key (`relaysync keys generate --out ho.pem`), set [ho] signing_key to it, and name ho.pem.pub in every site's [pos] trust",
        );
    };
    if let Err(e) = SigningKey::load("[ho] signing_key", path) {
        return report.error(CHECK, e.to_string());
    }
    if cfg.upstream.is_empty() {
        return;
    }
    let (Ok(relay), Ok(sql)) = (
        crate::relay::Relay::connect(&cfg.relay().map(|r| r.url.clone()).unwrap_or_default()).await,
        crate::postgres::connect("ho", &ho.url).await,
    ) else {
        return;
    };
    let keys = match crate::book::ho::site_keys(&sql).await {
        Ok(k) => k,
        Err(e) => return report.error(CHECK, chain(&e)),
    };
    match relay.sites().await {
        Ok(sites) => {
            for site in sites.iter().filter(|s| !keys.contains_key(s.as_str())) {
                report.error(
                    CHECK,
                    format!("HO signs and so merges signed uploads only, but holds no key of site {site}: its uploads fail; record it: relaysync site key {site} --public-key {site}.pem.pub"),
                );
            }
        }
        Err(e) => report.error(CHECK, chain(&e)),
    }
}

/// A site's side: the HO keys it trusts, and its own signing key when it
/// uploads.
pub(super) fn check_site(cfg: &Config, report: &mut Report) {
    let Ok(pos) = cfg.pos() else { return };
    report.ran(CHECK);
    match &pos.trust {
        None => report.warn(
            CHECK,
            format!("site {} applies unsigned packets: whoever owns the relay can write what it applies; set [pos] trust to HO's public key file (the .pub of HO's signing_key)", pos.site),
        ),
        Some(path) => {
            if let Err(e) = PublicKey::load_all("[pos] trust", path) {
                report.error(CHECK, e.to_string());
            }
        }
    }
    match &pos.signing_key {
        None if !cfg.upstream.is_empty() => report.warn(
            CHECK,
            format!("site {} uploads unsigned packets, which HO refuses once it signs; make a key (`relaysync keys generate --out {}.pem`), set [pos] signing_key, and record its .pub at HO (`relaysync site key {} --public-key {}.pem.pub`)", pos.site, pos.site, pos.site, pos.site),
        ),
        None => {}
        Some(path) => {
            if let Err(e) = SigningKey::load("[pos] signing_key", path) {
                report.error(CHECK, e.to_string());
            }
        }
    }
}
