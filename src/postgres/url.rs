//! A database URL: it may hold a password, so its `Debug` and `Display`
//! show it with the password replaced, and the password can come from a
//! file or the environment instead of the URL itself.

use std::path::Path;

use serde::Deserialize;

use crate::error::{Error, Result};

/// A `postgres://` URL or libpq `key=value` string, password included.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct DbUrl(String);

impl DbUrl {
    /// The URL as given, password included: only for connecting.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with `password` in place of any password it holds.
    pub fn with_password(&self, password: &str) -> Result<DbUrl> {
        let url = &self.0;
        if let Some((scheme, rest)) = url.split_once("://") {
            let (authority, tail) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
            let Some((userinfo, hosts)) = authority.rsplit_once('@') else {
                return Err(Error::Config(
                    "a password from password_file or the environment needs a user in the url: postgres://USER@host/database".into(),
                ));
            };
            let user = userinfo.split(':').next().unwrap_or("");
            return Ok(DbUrl(format!(
                "{scheme}://{user}:{}@{hosts}{tail}",
                encode(password)
            )));
        }
        let quoted = password.replace('\\', "\\\\").replace('\'', "\\'");
        let kept: Vec<&str> = url
            .split_whitespace()
            .filter(|t| !t.starts_with("password="))
            .collect();
        Ok(DbUrl(format!("{} password='{quoted}'", kept.join(" "))))
    }

    /// The URL with its password, if any, shown as `***`.
    pub fn redacted(&self) -> String {
        let url = &self.0;
        if let Some((scheme, rest)) = url.split_once("://") {
            let end = rest.find(['/', '?']).unwrap_or(rest.len());
            let (authority, tail) = rest.split_at(end);
            let tail = redact_pairs(tail, '&');
            return match authority.rsplit_once('@') {
                Some((userinfo, hosts)) if userinfo.contains(':') => {
                    let user = userinfo.split(':').next().unwrap_or("");
                    format!("{scheme}://{user}:***@{hosts}{tail}")
                }
                _ => format!("{scheme}://{authority}{tail}"),
            };
        }
        redact_pairs(url, ' ')
    }
}

/// `password=…` pairs (separated by `sep`) with the value hidden; a
/// quoted value may hold spaces, so everything after it is hidden too.
fn redact_pairs(s: &str, sep: char) -> String {
    match s.find("password=") {
        Some(i) => {
            let rest = &s[i..];
            let end = if rest.contains('\'') {
                rest.len()
            } else {
                rest.find(sep).unwrap_or(rest.len())
            };
            format!("{}password=***{}", &s[..i], &rest[end..])
        }
        None => s.to_string(),
    }
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The URL as a string, password included, for connecting; `Debug` and
/// `Display` of a `DbUrl` hide the password.
impl std::ops::Deref for DbUrl {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl From<String> for DbUrl {
    fn from(url: String) -> DbUrl {
        DbUrl(url)
    }
}

impl std::fmt::Debug for DbUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

impl std::fmt::Display for DbUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// A password given apart from the URL (`password` key, or its
/// environment variable `RELAYSYNC__SECTION__PASSWORD`); shown as `***`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Password(String);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// `url` with the password of a section's `password` (first) or
/// `password_file`, if either is set.
pub(crate) fn resolve(
    section: &str,
    url: &DbUrl,
    password: Option<&Password>,
    file: Option<&Path>,
) -> Result<DbUrl> {
    match (password, file) {
        (Some(p), _) => url.with_password(&p.0),
        (None, Some(file)) => url.with_password(&read_password_file(
            &format!("[{section}] password_file"),
            file,
        )?),
        (None, None) => Ok(url.clone()),
    }
}

/// A password from the first line of `file`; `what` names the setting.
pub fn read_password_file(what: &str, file: &Path) -> Result<String> {
    let text = std::fs::read_to_string(file).map_err(|source| Error::Io {
        context: format!(
            "reading {what} {}; fix the path or its permissions",
            file.display()
        ),
        source,
    })?;
    let password = text.lines().next().unwrap_or("").to_string();
    if password.is_empty() {
        return Err(Error::Config(format!(
            "{what} {} is empty; write the password on its first line",
            file.display()
        )));
    }
    Ok(password)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_hidden_and_spliced() {
        let url = DbUrl::from("postgres://u:s3cret@h:5432/db?sslmode=require".to_string());
        assert_eq!(url.redacted(), "postgres://u:***@h:5432/db?sslmode=require");
        assert!(!format!("{url:?} {url}").contains("s3cret"));
        let kv = DbUrl::from("host=h user=u password='a b' dbname=d".to_string());
        assert!(!kv.redacted().contains("a b"));
        let plain = DbUrl::from("postgres://u@h/db".to_string());
        let with = plain.with_password("p@ss/w:rd").unwrap();
        assert_eq!(with.expose(), "postgres://u:p%40ss%2Fw%3Ard@h/db");
        let cfg: tokio_postgres::Config = with.expose().parse().unwrap();
        assert_eq!(cfg.get_password(), Some(&b"p@ss/w:rd"[..]));
        assert!(DbUrl::from("postgres://h/db".to_string())
            .with_password("x")
            .is_err());
        let kv = DbUrl::from("host=h user=u".to_string())
            .with_password("it's")
            .unwrap();
        let cfg: tokio_postgres::Config = kv.expose().parse().unwrap();
        assert_eq!(cfg.get_password(), Some(&b"it's"[..]));
    }
}
