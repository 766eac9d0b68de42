//! A synced table changing shape at HO, as a site sees it: every part
//! names its columns (type, `NOT NULL`, the value older rows got when the
//! column was added) and key as HO has them where the part's rows were
//! captured. Before a part of a shape it has not seen is applied, the site
//! compares it with its own table and with the shape HO sent last
//! (`relaysync.shapes`), in the apply transaction:
//!
//! - an added column, a widened type (`varchar(n)` to a longer one or
//!   `text`, `smallint` → `integer` → `bigint`, a larger `numeric`), a
//!   dropped `NOT NULL`: made at the site, so the change and the rows after
//!   it commit together, at the same stream position at every site;
//! - anything else (a dropped or retyped column, a new key), or a change the
//!   site's role may not make: the packet is held, with the statements that
//!   make the site's table like HO's (`relaysync schema apply` at the site,
//!   or by hand; or approved at HO with `relaysync schema apply --site`,
//!   after which the site makes them itself; the next sync goes on once the
//!   table matches).
//!
//! A column the site has and HO never sent is the site's own: kept. A
//! column HO sent before and the site dropped is not brought back empty:
//! the part fails, naming it. A table the site lacks is made for its full
//! sync; partitions HO announces are made where the site holds the table
//! partitioned. The site's config may hold every change (`schema =
//! "hold"`) or keep its own columns (`"ignore"`). HO's side of a site's
//! table gaining a column is [`up_columns`].

use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use super::applier::{Held, PartError};
use super::stage::Stages;
use crate::config::SchemaPolicy;
use crate::packet::{Part, PartColumn};
use crate::postgres::{ident, literal, qualified};

/// A column as the site's table or HO's last shape has it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Column {
    name: String,
    pg_type: String,
    not_null: bool,
}

/// A table's shape: its columns and key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Shape {
    columns: Vec<Column>,
    key: Vec<String>,
    /// The site's primary key constraint, if it has one.
    primary_key: Option<String>,
}

impl Shape {
    fn of_part(part: &Part) -> Shape {
        Shape {
            columns: part
                .columns
                .iter()
                .map(|c| Column {
                    name: c.name.clone(),
                    pg_type: c.pg_type.clone(),
                    not_null: c.not_null,
                })
                .collect(),
            key: part.key.clone(),
            primary_key: None,
        }
    }

    fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }
}

/// One difference between HO's table and the site's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Change {
    /// The schema of a table the site makes.
    CreateSchema { schema: String },
    /// A table the site lacks, made for its full sync: HO's columns (types,
    /// `NOT NULL`) and key.
    Create {
        columns: Vec<PartColumn>,
        key: Vec<String>,
    },
    /// A column HO has and the site does not.
    Add(PartColumn),
    /// A column's type widened at HO.
    Widen { column: String, to: String },
    /// A column HO made nullable.
    DropNotNull { column: String },
    /// A column HO dropped (held).
    Drop { column: String },
    /// A column HO gave another type that is not a widening (held).
    Retype {
        column: String,
        from: String,
        to: String,
    },
    /// HO's key is other columns (held); the site's primary key constraint.
    Key {
        to: Vec<String>,
        primary_key: Option<String>,
    },
}

impl Change {
    /// Whether the site makes it by itself.
    fn automatic(&self) -> bool {
        matches!(
            self,
            Change::CreateSchema { .. }
                | Change::Create { .. }
                | Change::Add(_)
                | Change::Widen { .. }
                | Change::DropNotNull { .. }
        )
    }

    /// The types it gives columns.
    fn new_types(&self) -> Vec<&str> {
        match self {
            Change::Create { columns, .. } => columns.iter().map(|c| c.pg_type.as_str()).collect(),
            Change::Add(c) => vec![&c.pg_type],
            Change::Widen { to, .. } | Change::Retype { to, .. } => vec![to],
            _ => Vec::new(),
        }
    }

    /// The statement that makes it at the site, for table `t` (quoted).
    fn sql(&self, t: &str) -> String {
        match self {
            Change::CreateSchema { schema } => {
                format!("CREATE SCHEMA IF NOT EXISTS {}", ident(schema))
            }
            Change::Create { columns, key } => {
                let mut defs: Vec<String> = columns
                    .iter()
                    .map(|c| {
                        let null = if c.not_null { " NOT NULL" } else { "" };
                        // BY DEFAULT: HO's values are applied as they are.
                        let made = match &c.default {
                            _ if c.identity => " GENERATED BY DEFAULT AS IDENTITY".to_string(),
                            // A sequence HO's default names is not at the site.
                            Some(d) if !d.contains("nextval(") => format!(" DEFAULT {d}"),
                            _ => String::new(),
                        };
                        format!("{} {}{made}{null}", ident(&c.name), c.pg_type)
                    })
                    .collect();
                if !key.is_empty() {
                    let key: Vec<String> = key.iter().map(|k| ident(k)).collect();
                    defs.push(format!("PRIMARY KEY ({})", key.join(", ")));
                }
                format!("CREATE TABLE {t} ({})", defs.join(", "))
            }
            Change::Add(c) => {
                let mut sql = format!(
                    "ALTER TABLE {t} ADD COLUMN IF NOT EXISTS {} {}",
                    ident(&c.name),
                    c.pg_type
                );
                // Rows already there get the value HO's rows got; a column
                // without one (or with a volatile default) starts NULL and
                // its values come with HO's rows.
                if let Some(missing) = &c.missing {
                    sql += &format!(" DEFAULT {}::{}", literal(missing), c.pg_type);
                    if c.not_null {
                        sql += " NOT NULL";
                    }
                }
                sql
            }
            Change::Widen { column, to } => {
                format!("ALTER TABLE {t} ALTER COLUMN {} TYPE {to}", ident(column))
            }
            Change::DropNotNull { column } => {
                format!(
                    "ALTER TABLE {t} ALTER COLUMN {} DROP NOT NULL",
                    ident(column)
                )
            }
            Change::Drop { column } => format!("ALTER TABLE {t} DROP COLUMN {}", ident(column)),
            Change::Retype { column, to, .. } => format!(
                "ALTER TABLE {t} ALTER COLUMN {c} TYPE {to} USING {c}::{to}",
                c = ident(column)
            ),
            Change::Key { to, primary_key } => {
                let cols: Vec<String> = to.iter().map(|c| ident(c)).collect();
                let drop = primary_key
                    .as_ref()
                    .map(|pk| format!("DROP CONSTRAINT {}, ", ident(pk)))
                    .unwrap_or_default();
                format!(
                    "ALTER TABLE {t} {drop}ADD PRIMARY KEY ({})",
                    cols.join(", ")
                )
            }
        }
    }

    /// In a held change's message.
    fn describe(&self) -> String {
        match self {
            Change::CreateSchema { schema } => format!("schema {schema} made"),
            Change::Create { .. } => "table made".into(),
            Change::Add(c) => format!("column {} added", c.name),
            Change::Widen { column, to } => format!("column {column} widened to {to}"),
            Change::DropNotNull { column } => format!("column {column} made nullable"),
            Change::Drop { column } => format!("column {column} dropped"),
            Change::Retype { column, from, to } => {
                format!("column {column} changed from {from} to {to}")
            }
            Change::Key { to, .. } => format!("key changed to ({})", to.join(", ")),
        }
    }
}

/// Whether a column of type `from` takes every value of type `to` with an
/// `ALTER COLUMN … TYPE to` that loses nothing (types as `format_type`
/// names them).
pub(crate) fn widens(from: &str, to: &str) -> bool {
    const INTS: [&str; 3] = ["smallint", "integer", "bigint"];
    let rank = |t: &str| INTS.iter().position(|i| *i == t);
    if let (Some(a), Some(b)) = (rank(from), rank(to)) {
        return a < b;
    }
    if from == "real" && to == "double precision" {
        return true;
    }
    // (base, first modifier, second modifier); no modifier: unbounded.
    let parse = |t: &str| -> (String, Option<u32>, Option<u32>) {
        match t.split_once('(') {
            Some((base, rest)) => {
                let mut n = rest.trim_end_matches(')').split(',');
                let a = n.next().and_then(|x| x.trim().parse().ok());
                let b = n.next().and_then(|x| x.trim().parse().ok());
                (base.to_string(), a, b)
            }
            None => (t.to_string(), None, None),
        }
    };
    let (fb, fa, fs) = parse(from);
    let (tb, ta, ts) = parse(to);
    match (fb.as_str(), tb.as_str()) {
        ("character varying", "text") => true,
        ("character varying", "character varying") => match (fa, ta) {
            (Some(a), Some(b)) => a < b,
            (Some(_), None) => true,
            _ => false,
        },
        ("numeric", "numeric") => match (fa, ta) {
            // Same scale, more digits before the point.
            (Some(p), Some(q)) => fs.unwrap_or(0) == ts.unwrap_or(0) && p < q,
            (Some(_), None) => true,
            _ => false,
        },
        _ => false,
    }
}

/// HO's table `part` against the site's (`site`) and HO's last shape
/// (`last`, none before the first part): what the site must change.
fn diff(part: &Part, site: &Shape, last: Option<&Shape>) -> Vec<Change> {
    let mut changes = Vec::new();
    for c in &part.columns {
        let Some(at_site) = site.column(&c.name) else {
            // New at HO. (A column HO sent before that the site lacks was
            // dropped at the site: its rows' values are gone, and the part
            // fails, naming it, rather than bring it back empty.)
            if last.is_none_or(|l| l.column(&c.name).is_none()) {
                changes.push(Change::Add(c.clone()));
            }
            continue;
        };
        let Some(before) = last.and_then(|l| l.column(&c.name)) else {
            continue;
        };
        if before.pg_type != c.pg_type && at_site.pg_type != c.pg_type {
            changes.push(match widens(&at_site.pg_type, &c.pg_type) {
                true => Change::Widen {
                    column: c.name.clone(),
                    to: c.pg_type.clone(),
                },
                false => Change::Retype {
                    column: c.name.clone(),
                    from: at_site.pg_type.clone(),
                    to: c.pg_type.clone(),
                },
            });
        }
        if before.not_null && !c.not_null && at_site.not_null {
            changes.push(Change::DropNotNull {
                column: c.name.clone(),
            });
        }
    }
    if let Some(last) = last {
        for before in &last.columns {
            let dropped = !part.columns.iter().any(|c| c.name == before.name);
            if dropped && site.column(&before.name).is_some() {
                changes.push(Change::Drop {
                    column: before.name.clone(),
                });
            }
        }
        if last.key != part.key && site.key != part.key && !part.key.is_empty() {
            changes.push(Change::Key {
                to: part.key.clone(),
                primary_key: site.primary_key.clone(),
            });
        }
    }
    changes
}

/// HO's side of a site's table gaining columns: an up part whose columns
/// HO's table lacks is held (HO keeps the master copy, and relaysync does
/// not change its tables), with the statements that would add them at HO;
/// HO merges it on its next sync once they are there, or once the site's
/// table no longer has them. Checked once per shape and session.
pub(crate) async fn up_columns(
    client: &Client,
    part: &Part,
    site: &str,
    stages: &mut Stages,
) -> Result<(), PartError> {
    let seen = format!("{}:{:?}", part.table, Shape::of_part(part));
    if stages.follows(&seen).is_some() {
        return Ok(());
    }
    let Some(ho) = site_shape(client, &part.table).await? else {
        return Ok(());
    };
    let added: Vec<Change> = part
        .columns
        .iter()
        .filter(|c| ho.column(&c.name).is_none())
        .map(|c| {
            Change::Add(PartColumn {
                missing: None,
                not_null: false,
                ..c.clone()
            })
        })
        .collect();
    if added.is_empty() {
        stages.seen_shape(seen, Vec::new());
        return Ok(());
    }
    let t = qualified(&part.table);
    let names: Vec<&str> = added
        .iter()
        .filter_map(|c| match c {
            Change::Add(c) => Some(c.name.as_str()),
            _ => None,
        })
        .collect();
    let sql: Vec<String> = added.iter().map(|c| c.sql(&t) + ";").collect();
    let sql = sql.join("\n");
    Err(PartError::Held(Held {
        message: format!(
            "Held: {} at site {site} has column(s) {} that HO's lacks; HO merges it once they are added at HO (or dropped at the site):\n{sql}",
            part.table,
            names.join(", ")
        ),
        sql,
    }))
}

/// What makes `part`'s table at a site that lacks it: its schema if that is
/// missing too, then the table.
async fn created(client: &Client, part: &Part) -> Result<Vec<Change>, PartError> {
    let mut changes = Vec::new();
    if let Some((schema, _)) = crate::postgres::split_table(&part.table) {
        let exists: bool = client
            .query_one("SELECT to_regnamespace($1) IS NOT NULL", &[&ident(schema)])
            .await?
            .get(0);
        if !exists {
            changes.push(Change::CreateSchema {
                schema: schema.to_string(),
            });
        }
    }
    changes.push(Change::Create {
        columns: part.columns.clone(),
        key: part.key.clone(),
    });
    Ok(changes)
}

/// The site's table `table` as it is, or None when it does not exist.
async fn site_shape(client: &Client, table: &str) -> Result<Option<Shape>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), a.attnotnull
               FROM pg_attribute a
              WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped
              ORDER BY a.attnum",
            &[&qualified(table)],
        )
        .await?;
    if rows.is_empty() {
        return Ok(None);
    }
    let key = client
        .query_opt(
            "SELECT array(SELECT a.attname::text
                            FROM unnest(i.indkey::int2[]) WITH ORDINALITY AS k(n, o)
                            JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.n
                           ORDER BY k.o),
                    (SELECT c.conname::text FROM pg_constraint c
                      WHERE c.conindid = i.indexrelid AND c.contype = 'p')
               FROM pg_index i
              WHERE i.indrelid = to_regclass($1) AND (i.indisprimary OR i.indisreplident)
              ORDER BY i.indisprimary DESC LIMIT 1",
            &[&qualified(table)],
        )
        .await?;
    let (key, primary_key) = key.map_or((Vec::new(), None), |r| (r.get(0), r.get(1)));
    Ok(Some(Shape {
        columns: rows
            .iter()
            .map(|r| Column {
                name: r.get(0),
                pg_type: r.get(1),
                not_null: r.get(2),
            })
            .collect(),
        key,
        primary_key,
    }))
}

/// HO's shape of `table` as the site last applied it.
async fn last_shape(client: &Client, table: &str) -> Result<Option<Shape>, tokio_postgres::Error> {
    let row = client
        .query_opt(
            "SELECT columns::text, key FROM relaysync.shapes WHERE table_name = $1",
            &[&table],
        )
        .await?;
    Ok(row.map(|r| {
        let columns: String = r.get(0);
        Shape {
            columns: serde_json::from_str(&columns).unwrap_or_default(),
            key: r.get(1),
            primary_key: None,
        }
    }))
}

async fn record_shape(
    client: &Client,
    table: &str,
    shape: &Shape,
) -> Result<(), tokio_postgres::Error> {
    let columns = serde_json::to_string(&shape.columns).unwrap_or_default();
    client
        .execute(
            "INSERT INTO relaysync.shapes (table_name, columns, key) VALUES ($1, $2::text::jsonb, $3)
             ON CONFLICT (table_name) DO UPDATE SET columns = EXCLUDED.columns, key = EXCLUDED.key",
            &[&table, &columns, &shape.key],
        )
        .await?;
    Ok(())
}

/// How a site follows a table's schema change: as its config says, or
/// every change, as HO approved (`relaysync schema apply --site`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Policy {
    Config(SchemaPolicy),
    Approved,
}

/// Brings the site's table of `part` to HO's shape in the open transaction
/// (see the module doc), once per shape and session, as the table's
/// `policy` says: Err(Held) when the part must wait for a change the site
/// does not make by itself; else the part's columns the site leaves out
/// (policy `ignore`: HO's columns the site's table does not have).
pub(crate) async fn follow(
    client: &Client,
    part: &Part,
    stages: &mut Stages,
    full_sync: bool,
    policy: Policy,
) -> Result<Vec<String>, PartError> {
    let (policy, approved) = match policy {
        Policy::Config(p) => (p, false),
        Policy::Approved => (SchemaPolicy::Propagate, true),
    };
    if !part.partitions.is_empty() {
        make_partitions(client, part, policy).await?;
    }
    // A part without columns announces partitions only.
    if part.columns.is_empty() {
        return Ok(Vec::new());
    }
    let shape = Shape::of_part(part);
    let seen = format!("{}:{:?}", part.table, shape);
    if let Some(left_out) = stages.follows(&seen) {
        return Ok(left_out);
    }
    let last = last_shape(client, &part.table).await?;
    let (changes, mut left_out) = match site_shape(client, &part.table).await? {
        Some(site) if policy == SchemaPolicy::Ignore => {
            let missing = part
                .columns
                .iter()
                .filter(|c| site.column(&c.name).is_none());
            (Vec::new(), missing.map(|c| c.name.clone()).collect())
        }
        Some(site) => (diff(part, &site, last.as_ref()), Vec::new()),
        // A table the site lacks is made for a full sync of it (a table
        // added to [[tables]], a new site); a delta fails, naming it: the
        // table's other rows are not there.
        None if full_sync => (created(client, part).await?, Vec::new()),
        None => return Ok(Vec::new()),
    };
    let t = qualified(&part.table);
    if policy == SchemaPolicy::Hold && !changes.is_empty() {
        let why = " (schema = \"hold\" for this table at the site)";
        return Err(PartError::Held(held(&part.table, &t, &changes, why)));
    }
    if !approved && changes.iter().any(|c| !c.automatic()) {
        return Err(PartError::Held(held(&part.table, &t, &changes, "")));
    }
    // Type names go into the statements: each must name a type here (a
    // name PostgreSQL parses as one, never other SQL).
    let types: Vec<&str> = changes.iter().flat_map(Change::new_types).collect();
    if !types.is_empty() {
        let unknown: Vec<String> = client
            .query(
                "SELECT t FROM unnest($1::text[]) AS t WHERE to_regtype(t) IS NULL",
                &[&types],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if !unknown.is_empty() {
            let why = format!(
                " (type {} is not defined at the site: create it first)",
                unknown.join(", ")
            );
            return Err(PartError::Held(held(&part.table, &t, &changes, &why)));
        }
    }
    for change in &changes {
        let sql = change.sql(&t);
        tracing::info!(table = %part.table, %sql, "following HO's schema change");
        // One statement through the extended protocol: text from a packet
        // can never run as a second one.
        if let Err(e) = client.execute(&sql, &[]).await {
            if e.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) {
                let why = " (the site's role may not make the change: make it the table's owner, or run the statements as one that may)";
                return Err(PartError::Held(held(&part.table, &t, &changes, why)));
            }
            return Err(e.into());
        }
    }
    if !changes.is_empty() {
        stages.forget(&t);
    }
    if last.as_ref() != Some(&shape) {
        record_shape(client, &part.table, &shape).await?;
    }
    left_out.sort();
    stages.seen_shape(seen, left_out.clone());
    Ok(left_out)
}

/// Makes the partitions HO announced for `part`'s table that the site's
/// table lacks, parents first; a site that holds the table plain (or not at
/// all) makes none. A partition the site cannot make (its own partitions
/// overlap, its role may not) holds the packet with the statement.
async fn make_partitions(
    client: &Client,
    part: &Part,
    policy: SchemaPolicy,
) -> Result<(), PartError> {
    let partitioned: bool = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_class WHERE oid = to_regclass($1) AND relkind = 'p')",
            &[&qualified(&part.table)],
        )
        .await?
        .get(0);
    if !partitioned {
        return Ok(());
    }
    for p in &part.partitions {
        let exists: bool = client
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&qualified(&p.name)])
            .await?
            .get(0);
        if exists {
            continue;
        }
        let mut sql = format!(
            "CREATE TABLE {} PARTITION OF {} {}",
            qualified(&p.name),
            qualified(&p.parent),
            p.bound
        );
        if let Some(key) = &p.partition_by {
            sql += &format!(" PARTITION BY {key}");
        }
        if policy == SchemaPolicy::Hold {
            let sql = sql + ";";
            return Err(PartError::Held(Held {
                message: format!(
                    "Held: partition {} of {} made at HO (schema = \"hold\" for this table at the site); run `relaysync schema apply` at the site (or make it by hand) and the site goes on:\n{sql}",
                    p.name, part.table
                ),
                sql,
            }));
        }
        tracing::info!(table = %part.table, %sql, "making HO's new partition");
        // One statement through the extended protocol, as in follow.
        if let Err(e) = client.execute(&sql, &[]).await {
            let sql = sql + ";";
            return Err(PartError::Held(Held {
                message: format!(
                    "Held: partition {} of {} at HO cannot be made at the site ({}); make it (or one that takes its rows) and the site goes on:\n{sql}",
                    p.name,
                    part.table,
                    crate::error::db_message(&e)
                ),
                sql,
            }));
        }
    }
    Ok(())
}

/// The held change of `table` (quoted `t`), `why` added to its message.
fn held(table: &str, t: &str, changes: &[Change], why: &str) -> Held {
    let sql: Vec<String> = changes.iter().map(|c| c.sql(t) + ";").collect();
    let sql = sql.join("\n");
    let what: Vec<String> = changes.iter().map(Change::describe).collect();
    let mut what = what.join(", ");
    let added = changes.iter().any(|c| matches!(c, Change::Add(_)));
    let dropped = changes.iter().any(|c| matches!(c, Change::Drop { .. }));
    if added && dropped {
        what += " (an added and a dropped column together may be a rename: then rename instead, to keep the values)";
    }
    Held {
        message: format!(
            "Held: schema change of {table} at HO: {what}{why}; run `relaysync schema apply` at the site (or make the change by hand) and the site goes on:\n{sql}"
        ),
        sql,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widening_is_told_from_narrowing() {
        assert!(widens("smallint", "bigint"));
        assert!(widens("integer", "bigint"));
        assert!(!widens("bigint", "integer"));
        assert!(widens("character varying(10)", "character varying(20)"));
        assert!(widens("character varying(10)", "text"));
        assert!(widens("character varying(10)", "character varying"));
        assert!(!widens("character varying(20)", "character varying(10)"));
        assert!(!widens("text", "character varying(10)"));
        assert!(widens("numeric(10,2)", "numeric(12,2)"));
        assert!(!widens("numeric(10,2)", "numeric(12,3)"));
        assert!(!widens("numeric(12,2)", "numeric(10,2)"));
        assert!(widens("numeric(10,2)", "numeric"));
        assert!(widens("real", "double precision"));
        assert!(!widens("integer", "text"));
    }
}
