//! Configuration: a TOML file, then `RELAYSYNC__SECTION__KEY` environment
//! variables, validated right after loading.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::postgres::{resolve, DbUrl};
use crate::route::Route;

mod names;
mod sections;
pub use crate::postgres::split_table;
pub use names::{check_site_code, unquote_table, up_name};
pub use sections::{
    ConsoleConfig, Deletes, HoConfig, Merge, MetricsConfig, NetworkConfig, PacketConfig, PosConfig,
    RelayConfig, RetentionConfig, SchemaPolicy, SyncConfig, TableConfig, UpstreamConfig,
};

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
    #[serde(default)]
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub retention: RetentionConfig,
    #[serde(default)]
    pub network: NetworkConfig,
    #[serde(default)]
    pub console: ConsoleConfig,
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
        if let Some(pos) = &mut cfg.pos {
            for name in [&mut pos.slot, &mut pos.publication] {
                if name.is_empty() {
                    *name = up_name(&pos.site);
                }
            }
        }
        let names = cfg.tables.iter_mut().map(|t| &mut t.name);
        for name in names.chain(cfg.upstream.iter_mut().map(|u| &mut u.name)) {
            if let Some(plain) = unquote_table(name) {
                *name = plain;
            }
        }
        cfg.resolve_passwords()?;
        // Before the URLs are read: their TCP defaults follow it.
        crate::postgres::set_deadline(cfg.deadline()?);
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
        if let Some(relay) = self.relay.as_mut() {
            if let Some(read) = relay.read_url.as_mut() {
                *read = resolve(
                    "relay",
                    read,
                    relay.password.as_ref(),
                    relay.password_file.as_deref(),
                )?;
            }
        }
        Ok(())
    }

    /// Checks everything that can be checked without a database.
    pub fn validate(&self) -> Result<()> {
        self.deadline()?;
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
            if let Some(read) = &relay.read_url {
                url("relay", read)?;
            }
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
            let route = Route::from_str(&t.route)
                .map_err(|e| Error::Config(format!("[[tables]] {}: {e}", t.name)))?;
            if let Route::Parent(p) = route {
                if !self.tables.iter().any(|x| x.name == p) {
                    return Err(Error::Config(format!(
                        "[[tables]] {}: route parent:{p} names a table not in [[tables]]; add {p}, or route {} otherwise",
                        t.name, t.name
                    )));
                }
            }
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

    /// Every table relaysync writes into on some side: `[[tables]]` and
    /// `[[upstream]]`, each once.
    pub fn written_tables(&self) -> Vec<String> {
        let mut tables: Vec<String> = self.tables.iter().map(|t| t.name.clone()).collect();
        tables.extend(self.upstream.iter().map(|t| t.name.clone()));
        tables.sort();
        tables.dedup();
        tables
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

    /// `[network] deadline` (at least a second).
    pub fn deadline(&self) -> Result<Duration> {
        let Some(text) = self.network.deadline.as_deref() else {
            return Ok(crate::postgres::DEFAULT_DEADLINE);
        };
        let d = parse_duration("[network] deadline", text)?;
        if d < Duration::from_secs(1) {
            return Err(Error::Config(format!(
                "[network] deadline '{text}' is too short for a round trip; write at least \"1s\" (default \"30s\")"
            )));
        }
        Ok(d)
    }

    /// `[retention] keep_acked`.
    pub fn keep_acked(&self) -> Result<Duration> {
        parse_duration("[retention] keep_acked", &self.retention.keep_acked)
    }

    /// `[retention] max_offline`; None: never.
    pub fn max_offline(&self) -> Result<Option<Duration>> {
        let d = parse_duration("[retention] max_offline", &self.retention.max_offline)?;
        Ok((!d.is_zero()).then_some(d))
    }

    /// `[pos] wipe_after`; None: never.
    pub fn wipe_after(&self) -> Result<Option<Duration>> {
        let Some(text) = self.pos()?.wipe_after.as_deref() else {
            return Ok(None);
        };
        let d = humantime::parse_duration(text).map_err(|e| {
            Error::Config(format!(
                "[pos] wipe_after '{text}' is not a duration ({e}); write e.g. \"10d\", or \"0s\" for never"
            ))
        })?;
        Ok((!d.is_zero()).then_some(d))
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

    /// Each configured table's schema policy, where it is not `propagate`.
    pub fn schema_policies(&self) -> std::collections::HashMap<String, SchemaPolicy> {
        self.tables
            .iter()
            .map(|t| (t.name.clone(), t.schema.unwrap_or(self.sync.schema)))
            .filter(|(_, p)| *p != SchemaPolicy::Propagate)
            .collect()
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

/// Parses a duration setting, naming it and the fix when it is not one.
fn parse_duration(key: &str, text: &str) -> Result<Duration> {
    humantime::parse_duration(text).map_err(|e| {
        Error::Config(format!(
            "{key} '{text}' is not a duration ({e}); write e.g. \"1d\", \"12h\" or \"30m\""
        ))
    })
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
        let e = parse("[network]\ndeadline = \"200ms\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("at least"), "{e}");
        assert_eq!(
            parse("[network]\ndeadline = \"45s\"")
                .unwrap()
                .deadline()
                .unwrap(),
            Duration::from_secs(45)
        );
        assert!(parse("").unwrap().ho().is_err());
    }
}
