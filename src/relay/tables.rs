//! The tables HO publishes: their route, key and columns, which each site
//! checks its own tables against.

use super::{get, Relay};
use crate::error::{DbContext, Result};
use crate::protocol::SyncReason;

/// What publishing the configured tables changed.
#[derive(Debug, Clone, Default)]
pub(crate) struct Published {
    /// Tables new to the relay: each registered site gets a full sync of them.
    pub(crate) added: Vec<String>,
    /// Tables no longer synced.
    pub(crate) removed: Vec<String>,
}

/// A table as HO published it.
#[derive(Debug, Clone)]
pub(crate) struct PublishedTable {
    pub(crate) name: String,
    pub(crate) route: String,
    pub(crate) key_columns: Vec<String>,
    /// (column, PostgreSQL type) in the table's order.
    pub(crate) columns: Vec<(String, String)>,
}

impl PublishedTable {
    /// As relay.tables holds it.
    fn to_json(&self) -> serde_json::Value {
        let columns: Vec<serde_json::Value> = self
            .columns
            .iter()
            .map(|(n, ty)| serde_json::json!({"name": n, "type": ty}))
            .collect();
        serde_json::json!({"name": self.name, "route": self.route,
            "key_columns": self.key_columns, "columns": columns})
    }
}

impl Relay {
    /// Publishes a published table's new shape (its key and columns), as
    /// HO's worker announced it to the sites.
    pub(crate) async fn republish(&self, table: &PublishedTable) -> Result<()> {
        let t = table.to_json();
        self.client
            .execute(
                "UPDATE relay.tables SET key_columns = $2, columns = $3::text::jsonb, updated_at = now()
                  WHERE name = $1",
                &[&table.name, &table.key_columns, &t["columns"].to_string()],
            )
            .await
            .ctx(|| "writing relay.tables".into())?;
        Ok(())
    }

    /// Publishes exactly `tables` (their shapes, routes and keys), in one
    /// statement: a table no longer among them is unpublished, and a table
    /// new among them gets a full sync at every registered site (but those
    /// whose full sync of every table is pending already).
    pub(crate) async fn publish_tables(&self, tables: &[PublishedTable]) -> Result<Published> {
        let input = serde_json::Value::Array(tables.iter().map(PublishedTable::to_json).collect())
            .to_string();
        let row = self
            .client
            .query_one(
                "WITH input AS (SELECT * FROM jsonb_to_recordset($1::text::jsonb)
                                  AS x(name text, route text, key_columns text[], columns jsonb)),
                      up AS (INSERT INTO relay.tables (name, route, key_columns, columns)
                             SELECT name, route, key_columns, columns FROM input
                             ON CONFLICT (name) DO UPDATE SET route = EXCLUDED.route,
                               key_columns = EXCLUDED.key_columns, columns = EXCLUDED.columns,
                               updated_at = now()
                             RETURNING 1),
                      gone AS (DELETE FROM relay.tables WHERE name NOT IN (SELECT name FROM input)
                               RETURNING name),
                      added AS (SELECT array_agg(name ORDER BY name) AS names FROM input
                                 WHERE name NOT IN (SELECT name FROM relay.tables)),
                      req AS (INSERT INTO relay.sync_requests (site, tables, reason)
                              SELECT s.code, a.names, $2 FROM relay.sites s, added a
                               WHERE a.names IS NOT NULL AND NOT EXISTS (
                                     SELECT 1 FROM relay.sync_requests r
                                      WHERE r.site = s.code AND r.served_at IS NULL AND r.tables IS NULL)
                              RETURNING 1)
                 SELECT coalesce((SELECT names FROM added), '{}') AS added,
                        coalesce((SELECT array_agg(name ORDER BY name) FROM gone), '{}') AS removed,
                        (SELECT count(*) FROM up) + (SELECT count(*) FROM req) AS written",
                &[&input, &SyncReason::Push],
            )
            .await
            .ctx(|| "writing relay.tables".into())?;
        let t = "relay.tables";
        Ok(Published {
            added: get(&row, "added", t)?,
            removed: get(&row, "removed", t)?,
        })
    }

    /// Every table HO has published, by name.
    pub(crate) async fn published_by_name(
        &self,
    ) -> Result<std::collections::HashMap<String, PublishedTable>> {
        Ok(self
            .published_tables()
            .await?
            .into_iter()
            .map(|t| (t.name.clone(), t))
            .collect())
    }

    /// Every table HO has published.
    pub(crate) async fn published_tables(&self) -> Result<Vec<PublishedTable>> {
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
                            Some((
                                c["name"].as_str()?.to_string(),
                                c["type"].as_str()?.to_string(),
                            ))
                        })
                        .collect(),
                })
            })
            .collect()
    }
}

/// Where HO's sequence behind a synced table's column stands: (table,
/// column, last value).
pub(crate) type KeyHigh = (String, String, i64);

impl Relay {
    /// Records where HO's sequences behind the synced tables' columns
    /// stand (only those that moved are written).
    pub(crate) async fn set_key_highs(&self, highs: &[KeyHigh]) -> Result<()> {
        let tables: Vec<&str> = highs.iter().map(|h| h.0.as_str()).collect();
        let columns: Vec<&str> = highs.iter().map(|h| h.1.as_str()).collect();
        let values: Vec<i64> = highs.iter().map(|h| h.2).collect();
        self.client
            .execute(
                "INSERT INTO relay.key_highs AS k (table_name, column_name, high)
                 SELECT * FROM unnest($1::text[], $2::text[], $3::int8[])
                 ON CONFLICT (table_name, column_name) DO UPDATE SET high = EXCLUDED.high
                  WHERE k.high < EXCLUDED.high",
                &[&tables, &columns, &values],
            )
            .await
            .ctx(|| "writing relay.key_highs".into())?;
        Ok(())
    }

    /// Where HO's sequences stand, per synced table and column.
    pub(crate) async fn key_highs(&self) -> Result<Vec<KeyHigh>> {
        let rows = self
            .client
            .query(
                "SELECT table_name, column_name, high FROM relay.key_highs ORDER BY 1, 2",
                &[],
            )
            .await
            .ctx(|| "reading relay.key_highs".into())?;
        let t = "relay.key_highs";
        rows.iter()
            .map(|r| {
                Ok((
                    get(r, "table_name", t)?,
                    get(r, "column_name", t)?,
                    get(r, "high", t)?,
                ))
            })
            .collect()
    }
}
