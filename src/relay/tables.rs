//! The tables HO publishes: their route, key and columns, which each site
//! checks its own tables against.

use super::{get, Relay};
use crate::error::{DbContext, Result};

/// A table as HO published it.
#[derive(Debug, Clone)]
pub struct PublishedTable {
    pub name: String,
    pub route: String,
    pub key_columns: Vec<String>,
    /// (column, PostgreSQL type) in the table's order.
    pub columns: Vec<(String, String)>,
}

impl Relay {
    /// Records (or updates) a table's published shape.
    pub async fn publish_table(&self, t: &PublishedTable) -> Result<()> {
        let columns = serde_json::Value::Array(
            t.columns
                .iter()
                .map(|(n, ty)| serde_json::json!({"name": n, "type": ty}))
                .collect(),
        )
        .to_string();
        self.client
            .execute(
                "INSERT INTO relay.tables (name, route, key_columns, columns) VALUES ($1, $2, $3, $4::text::jsonb)
                 ON CONFLICT (name) DO UPDATE SET route = EXCLUDED.route, key_columns = EXCLUDED.key_columns,
                   columns = EXCLUDED.columns, updated_at = now()",
                &[&t.name, &t.route, &t.key_columns, &columns],
            )
            .await
            .ctx(|| "writing relay.tables".into())?;
        Ok(())
    }

    /// Every table HO has published.
    pub async fn published_tables(&self) -> Result<Vec<PublishedTable>> {
        let rows = self
            .client
            .query(
                "SELECT name, route, key_columns, columns::text AS columns FROM relay.tables ORDER BY name",
                &[],
            )
            .await
            .ctx(|| "reading relay.tables".into())?;
        let t = "relay.tables";
        rows.iter()
            .map(|r| {
                let columns: String = get(r, "columns", t)?;
                let columns: Vec<serde_json::Value> =
                    serde_json::from_str(&columns).unwrap_or_default();
                Ok(PublishedTable {
                    name: get(r, "name", t)?,
                    route: get(r, "route", t)?,
                    key_columns: get(r, "key_columns", t)?,
                    columns: columns
                        .iter()
                        .filter_map(|c| {
                            Some((c["name"].as_str()?.to_string(), c["type"].as_str()?.to_string()))
                        })
                        .collect(),
                })
            })
            .collect()
    }
}
