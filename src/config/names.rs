//! Names in the configuration: site codes, table names (either spelling),
//! and the names derived from them.

use crate::error::{Error, Result};
use crate::protocol::{Target, ALL_SITES};

/// Checks a site code: letters, digits, `-`, `_` and `.`, at most 63 characters.
pub fn check_site_code(code: &str) -> Result<()> {
    let ok = !code.is_empty()
        && code.len() <= 63
        && code != ALL_SITES
        && code != Target::Ho.as_str()
        && code
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok {
        Ok(())
    } else {
        // A long code is shown cut: an error line stays one readable line.
        let shown: String = code.chars().take(70).collect();
        let shown = if shown.len() < code.len() {
            format!("{shown}… ({} characters)", code.chars().count())
        } else {
            shown
        };
        Err(Error::Config(format!(
            "site code '{shown}' is not valid; use 1 to 63 letters, digits, '-', '_' or '.' (not 'ho')"
        )))
    }
}

/// A table name as SQL spells it (`public."Store Items"`) as relaysync
/// keeps it (`public.Store Items`: schema and table as the catalog names
/// them); a name without double quotes is kept as it is. None when the
/// quoting is broken.
pub fn unquote_table(name: &str) -> Option<String> {
    if !name.contains('"') {
        return Some(name.to_string());
    }
    let mut parts = Vec::new();
    let mut chars = name.chars().peekable();
    loop {
        let mut part = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next()? {
                    '"' if chars.peek() == Some(&'"') => {
                        chars.next();
                        part.push('"');
                    }
                    '"' => break,
                    c => part.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| *c != '.') {
                part.push(c);
            }
        }
        parts.push(part);
        match chars.next() {
            None => break,
            Some('.') => {}
            Some(_) => return None,
        }
    }
    Some(parts.join("."))
}

/// The default name of a site's upstream slot and publication:
/// `relaysync_up_` and the site code in lowercase letters, digits and `_`
/// (with a hash of the code when that changed it), so that sites sharing a
/// PostgreSQL server need no setting of their own.
pub fn up_name(site: &str) -> String {
    let mut name: String = site
        .chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' | '_' => c,
            'A'..='Z' => c.to_ascii_lowercase(),
            _ => '_',
        })
        .take(40)
        .collect();
    if name != site {
        let hash = site.bytes().fold(0x811c_9dc5u32, |h, b| {
            (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
        });
        name.push_str(&format!("_{hash:08x}"));
    }
    format!("relaysync_up_{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_names_follow_the_site_code() {
        assert_eq!(up_name("s1"), "relaysync_up_s1");
        let a = up_name("Store-001");
        assert!(a.starts_with("relaysync_up_store_001_"), "{a}");
        assert_ne!(a, up_name("store_001"));
        assert_ne!(a, up_name("Store.001"));
        assert!(up_name(&"x-".repeat(40)).len() <= 63);
    }

    #[test]
    fn table_names_in_sql_quoting_are_unquoted() {
        assert_eq!(
            unquote_table("public.\"Store Items\"").as_deref(),
            Some("public.Store Items")
        );
        assert_eq!(
            unquote_table("\"My Schema\".\"a\"\"b\"").as_deref(),
            Some("My Schema.a\"b")
        );
        assert_eq!(
            unquote_table("public.items").as_deref(),
            Some("public.items")
        );
        assert_eq!(unquote_table("public.\"open"), None);
        assert_eq!(unquote_table("public.\"a\"b"), None);
    }
}
