//! Configuration: a TOML file, then `RELAYSYNC__SECTION__KEY` environment
//! variables, validated right after loading.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::postgres::{resolve, DbUrl, Password};
use crate::route::Route;

/// The whole configuration. Holds database URLs (secrets): never serialised.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub ho: Option<HoConfig>,
    pub relay: Option<RelayConfig>,
    pub pos: Option<PosConfig>,
    #[serde(default)]
    pub sync: SyncConfig,
    #[serde(default)]
    pub packet: PacketConfig,
    #[serde(default)]
    pub tables: Vec<TableConfig>,
    #[serde(default)]
    pub upstream: Vec<UpstreamConfig>,
}

/// `[ho]`: the head-office database and its replication slot.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HoConfig {
    pub url: DbUrl,
    /// A password kept out of the URL (or RELAYSYNC__HO__PASSWORD).
    #[serde(default)]
    pub password: Option<Password>,
    /// A file whose first line is the password.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    #[serde(default = "default_name")]
    pub slot: String,
    #[serde(default = "default_name")]
    pub publication: String,
}

/// `[relay]`: the relay database between HO and the sites.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayConfig {
    pub url: DbUrl,
    /// A password kept out of the URL (or RELAYSYNC__RELAY__PASSWORD).
    #[serde(default)]
    pub password: Option<Password>,
    /// A file whose first line is the password.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
}

/// `[pos]`: this site's code and database.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PosConfig {
    pub site: String,
    pub url: DbUrl,
    /// A password kept out of the URL (or RELAYSYNC__POS__PASSWORD).
    #[serde(default)]
    pub password: Option<Password>,
    /// A file whose first line is the password.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// The slot that captures this site's upstream tables.
    #[serde(default = "default_up_name")]
    pub slot: String,
    /// The publication of this site's upstream tables.
    #[serde(default = "default_up_name")]
    pub publication: String,
}

/// How HO merges an upstream table's rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Merge {
    /// Insert; a row whose key HO has is ignored (device event logs).
    Append,
    /// A new key is inserted; for a key HO has, only HO's NULL or '' columns
    /// take the site's value: HO's values win.
    FillVacant,
    /// The site's row wins.
    Upsert,
}

/// What a delete at a site does at HO.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Deletes {
    /// Nothing: a site's delete never deletes at HO.
    #[default]
    Ignore,
    /// HO deletes the row too.
    Apply,
}

/// `[[upstream]]`: one site table whose rows go up to HO.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// `schema.table`, the same at the sites and at HO.
    pub name: String,
    pub merge: Merge,
    #[serde(default)]
    pub deletes: Deletes,
}

/// `[sync]`: scheduling of `run`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncConfig {
    /// Time between delta syncs; "0s" streams continuously.
    #[serde(default = "default_interval")]
    pub interval: String,
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            interval: default_interval(),
        }
    }
}

/// `[packet]`: bounds of one packet.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PacketConfig {
    #[serde(default = "default_max_rows")]
    pub max_rows: usize,
    #[serde(default = "default_max_bytes")]
    pub max_bytes: usize,
}

impl Default for PacketConfig {
    fn default() -> Self {
        PacketConfig {
            max_rows: default_max_rows(),
            max_bytes: default_max_bytes(),
        }
    }
}

/// `[[tables]]`: one HO table synced down to the sites.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableConfig {
    /// `schema.table`.
    pub name: String,
    /// `all`, or `column:<name>`.
    #[serde(default = "default_route")]
    pub route: String,
}

fn default_name() -> String {
    "relaysync".into()
}
fn default_up_name() -> String {
    "relaysync_up".into()
}
fn default_interval() -> String {
    "30m".into()
}
fn default_route() -> String {
    "all".into()
}
fn default_max_rows() -> usize {
    50_000
}
fn default_max_bytes() -> usize {
    32 << 20
}

/// Checks a site code: letters, digits, `-`, `_` and `.`, at most 63 characters.
pub fn check_site_code(code: &str) -> Result<()> {
    let ok = !code.is_empty()
        && code.len() <= 63
        && code != "*"
        && code != "ho"
        && code
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "site code '{code}' is not valid; use 1 to 63 letters, digits, '-', '_' or '.' (not 'ho')"
        )))
    }
}

/// Splits `schema.table` into its two parts.
pub fn split_table(name: &str) -> Option<(&str, &str)> {
    let (s, t) = name.split_once('.')?;
    (!s.is_empty() && !t.is_empty() && !t.contains('.')).then_some((s, t))
}

impl Config {
    /// Loads `path`, then the environment, and validates the result.
    pub fn load(path: &Path) -> Result<Config> {
        if !path.exists() {
            return Err(Error::Config(format!(
                "config file {} not found; create it (see README, Configuration) or pass --config FILE",
                path.display()
            )));
        }
        let raw = config::Config::builder()
            .add_source(config::File::from(path).format(config::FileFormat::Toml))
            .add_source(
                config::Environment::with_prefix("RELAYSYNC")
                    .prefix_separator("__")
                    .separator("__")
                    .try_parsing(true),
            )
            .build()
            .map_err(|e| file_error(path, &e))?;
        let mut cfg: Config = raw.try_deserialize().map_err(|e| file_error(path, &e))?;
        cfg.resolve_passwords()?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Puts each section's `password` or `password_file` into its URL.
    fn resolve_passwords(&mut self) -> Result<()> {
        let sections = [
            (self.ho.as_mut()).map(|s| ("ho", &mut s.url, &s.password, &s.password_file)),
            (self.relay.as_mut()).map(|s| ("relay", &mut s.url, &s.password, &s.password_file)),
            (self.pos.as_mut()).map(|s| ("pos", &mut s.url, &s.password, &s.password_file)),
        ];
        for (section, url, password, file) in sections.into_iter().flatten() {
            *url = resolve(section, url, password.as_ref(), file.as_deref())?;
        }
        Ok(())
    }

    /// Checks everything that can be checked without a database.
    pub fn validate(&self) -> Result<()> {
        let url = |section: &str, url: &DbUrl| {
            crate::postgres::tls::parse(section, url.expose()).map(|_| ())
        };
        if let Some(ho) = &self.ho {
            url("ho", &ho.url)?;
            for (key, v) in [("slot", &ho.slot), ("publication", &ho.publication)] {
                if v.is_empty()
                    || !v
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                {
                    return Err(Error::Config(format!(
                        "[ho] {key} '{v}' is not valid; use lowercase letters, digits and '_'"
                    )));
                }
            }
        }
        if let Some(relay) = &self.relay {
            url("relay", &relay.url)?;
        }
        if let Some(pos) = &self.pos {
            url("pos", &pos.url)?;
            check_site_code(&pos.site)?;
        }
        self.interval()?;
        if self.packet.max_rows == 0 || self.packet.max_bytes < 1024 {
            return Err(Error::Config(
                "[packet] max_rows must be at least 1 and max_bytes at least 1024".into(),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for t in &self.tables {
            if split_table(&t.name).is_none() {
                return Err(Error::Config(format!(
                    "[[tables]] name '{}' must be schema-qualified, e.g. public.{}",
                    t.name, t.name
                )));
            }
            if !seen.insert(t.name.as_str()) {
                return Err(Error::Config(format!(
                    "[[tables]] lists {} twice; keep one entry per table",
                    t.name
                )));
            }
            Route::from_str(&t.route)
                .map_err(|e| Error::Config(format!("[[tables]] {}: {e}", t.name)))?;
        }
        let mut seen = std::collections::HashSet::new();
        for u in &self.upstream {
            if split_table(&u.name).is_none() {
                return Err(Error::Config(format!(
                    "[[upstream]] name '{}' must be schema-qualified, e.g. public.{}",
                    u.name, u.name
                )));
            }
            if !seen.insert(u.name.as_str()) {
                return Err(Error::Config(format!(
                    "[[upstream]] lists {} twice; keep one entry per table",
                    u.name
                )));
            }
        }
        Ok(())
    }

    /// The upstream tables as captured tables (every change goes up to HO).
    pub fn upstream_routes(&self) -> Vec<(String, Route)> {
        self.upstream
            .iter()
            .map(|u| (u.name.clone(), Route::All))
            .collect()
    }

    /// The `[sync] interval` as a duration.
    pub fn interval(&self) -> Result<Duration> {
        humantime::parse_duration(&self.sync.interval).map_err(|e| {
            Error::Config(format!(
                "[sync] interval '{}' is not a duration ({e}); write e.g. \"30m\", \"10s\" or \"0s\"",
                self.sync.interval
            ))
        })
    }

    /// The `[ho]` section, or an error naming it.
    pub fn ho(&self) -> Result<&HoConfig> {
        self.ho
            .as_ref()
            .ok_or_else(|| missing("ho", "url = \"postgres://…/ho\""))
    }

    /// The `[relay]` section, or an error naming it.
    pub fn relay(&self) -> Result<&RelayConfig> {
        self.relay
            .as_ref()
            .ok_or_else(|| missing("relay", "url = \"postgres://…/relay\""))
    }

    /// The `[pos]` section, or an error naming it.
    pub fn pos(&self) -> Result<&PosConfig> {
        self.pos
            .as_ref()
            .ok_or_else(|| missing("pos", "site = \"store-001\" and url = \"postgres://…/pos\""))
    }

    /// The configured tables with their parsed routes.
    pub fn routes(&self) -> Vec<(String, Route)> {
        self.tables
            .iter()
            .map(|t| {
                (
                    t.name.clone(),
                    Route::from_str(&t.route).unwrap_or(Route::All),
                )
            })
            .collect()
    }
}

/// A config error on one line: the parser's source excerpt is left out.
fn file_error(path: &Path, e: &config::ConfigError) -> Error {
    let text = e.to_string();
    let parts: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('|') && !l.contains(" | "))
        .collect();
    Error::Config(format!(
        "config file {}: {}",
        path.display(),
        parts.join(": ")
    ))
}

fn missing(section: &str, keys: &str) -> Error {
    Error::Config(format!(
        "the config has no [{section}] section; add [{section}] with {keys}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Config> {
        let cfg: Config = toml_like(s)?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn toml_like(s: &str) -> Result<Config> {
        config::Config::builder()
            .add_source(config::File::from_str(s, config::FileFormat::Toml))
            .build()
            .and_then(|c| c.try_deserialize())
            .map_err(|e| Error::Config(e.to_string()))
    }

    #[test]
    fn full_example_parses_with_defaults() {
        let cfg = parse(
            r#"
            [ho]
            url = "postgres://postgres:s3cret@127.0.0.1:5432/ho?sslmode=verify-full&sslrootcert=/ca.crt"
            [relay]
            url = "postgres://postgres@127.0.0.1:5433/relay"
            [pos]
            site = "store-001"
            url = "postgres://postgres@127.0.0.1:5434/pos"
            [[tables]]
            name = "public.items"
            [[tables]]
            name = "public.prices"
            route = "column:site_code"
            "#,
        )
        .unwrap();
        assert_eq!(cfg.ho().unwrap().slot, "relaysync");
        assert!(
            !format!("{cfg:?}").contains("s3cret"),
            "Debug shows no password"
        );
        assert_eq!(cfg.interval().unwrap(), Duration::from_secs(1800));
        assert_eq!(cfg.routes()[1].1, Route::Column("site_code".into()));
    }

    #[test]
    fn bad_values_name_the_fix() {
        let e = parse("[[tables]]\nname = \"items\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("schema-qualified"), "{e}");
        let e = parse("[[tables]]\nname = \"public.items\"\nroute = \"some\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("column:"), "{e}");
        let e = parse("[sync]\ninterval = \"soon\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("30m"), "{e}");
        let e = parse("[pos]\nsite = \"a b\"\nurl = \"postgres://x@h/db\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("site code"), "{e}");
        let e = parse("[relay]\nurl = \"mysql:://x\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("postgres://"), "{e}");
        assert!(parse("").unwrap().ho().is_err());
    }
}
