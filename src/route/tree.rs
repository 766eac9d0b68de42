//! Routing by parent: a table routed `parent:<schema.table>` sends each row
//! where its parent row goes, through the table's foreign key to that
//! parent, recursively up to a table routed by column (or to every site).
//!
//! The tree is built from the configured routes and HO's foreign keys; it
//! says which tables are parents (HO keeps where their rows went), what a
//! site deletes with a parent row that leaves it (the cascade), and the SQL
//! that finds a row's site or a parent's descendants at HO.

use std::collections::{BTreeMap, BTreeSet};

use tokio_postgres::Client;

use super::Route;
use crate::error::{DbContext, Error, Result};
use crate::packet::Cascade;
use crate::postgres::{ident, literal, qualified};

/// A foreign key at HO between two tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignKey {
    /// The constraint's name.
    pub name: String,
    /// The referencing table, `schema.table`.
    pub table: String,
    pub columns: Vec<String>,
    /// The referenced table, `schema.table`.
    pub parent: String,
    pub references: Vec<String>,
}

/// How a table routed by parent reaches its parent: its columns that
/// reference the parent's columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub parent: String,
    pub columns: Vec<String>,
    pub references: Vec<String>,
    /// The foreign key's name, for messages.
    pub constraint: String,
}

/// The routes of the synced tables with the links of those routed by parent.
#[derive(Debug, Clone, Default)]
pub struct Tree {
    routes: BTreeMap<String, Route>,
    links: BTreeMap<String, Link>,
}

/// The foreign keys between tables of `schema.table` names in `tables`.
pub async fn foreign_keys(sql: &Client, tables: &[&str]) -> Result<Vec<ForeignKey>> {
    let names: Vec<String> = tables.iter().map(|t| qualified(t)).collect();
    let rows = sql
        .query(
            "SELECT c.conname::text AS name,
                    format('%s.%s', cn.nspname, cl.relname) AS child,
                    format('%s.%s', pn.nspname, pl.relname) AS parent,
                    ARRAY(SELECT a.attname::text FROM unnest(c.conkey) WITH ORDINALITY k(n, i)
                            JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n
                           ORDER BY k.i) AS columns,
                    ARRAY(SELECT a.attname::text FROM unnest(c.confkey) WITH ORDINALITY k(n, i)
                            JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.n
                           ORDER BY k.i) AS refs
               FROM pg_constraint c
               JOIN pg_class cl ON cl.oid = c.conrelid JOIN pg_namespace cn ON cn.oid = cl.relnamespace
               JOIN pg_class pl ON pl.oid = c.confrelid JOIN pg_namespace pn ON pn.oid = pl.relnamespace
              WHERE c.contype = 'f' AND c.conparentid = 0
                AND c.conrelid = ANY(SELECT to_regclass(t) FROM unnest($1::text[]) t)
              ORDER BY child, c.conname",
            &[&names],
        )
        .await
        .ctx(|| "reading the foreign keys of the synced tables at HO".into())?;
    Ok(rows
        .iter()
        .map(|r| ForeignKey {
            name: r.get("name"),
            table: r.get("child"),
            columns: r.get("columns"),
            parent: r.get("parent"),
            references: r.get("refs"),
        })
        .collect())
}

/// The routes of `routes` checked against HO's foreign keys: the tree
/// (an error when a route by parent has no foreign key to follow) and
/// the foreign keys whose rows could be orphaned at a site.
pub async fn check(sql: &Client, routes: &[(String, Route)]) -> Result<(Tree, Vec<String>)> {
    let names: Vec<&str> = routes.iter().map(|(n, _)| n.as_str()).collect();
    let fks = foreign_keys(sql, &names).await?;
    let tree = Tree::new(routes, &fks).map_err(Error::Setup)?;
    let orphans = tree.orphaning(&fks);
    Ok((tree, orphans))
}

impl Tree {
    /// The tree of `routes`, read with HO's foreign keys.
    pub async fn load(sql: &Client, routes: &[(String, Route)]) -> Result<Tree> {
        if !routes.iter().any(|(_, r)| matches!(r, Route::Parent(_))) {
            return Tree::new(routes, &[]).map_err(Error::Setup);
        }
        let names: Vec<&str> = routes.iter().map(|(n, _)| n.as_str()).collect();
        let fks = foreign_keys(sql, &names).await?;
        Tree::new(routes, &fks).map_err(Error::Setup)
    }

    /// The tree of `routes` given HO's foreign keys `fks`; an error names
    /// what to fix in the configuration or at HO.
    pub fn new(
        routes: &[(String, Route)],
        fks: &[ForeignKey],
    ) -> std::result::Result<Tree, String> {
        let mut tree = Tree {
            routes: routes.iter().cloned().collect(),
            links: BTreeMap::new(),
        };
        for (table, route) in routes {
            let Route::Parent(parent) = route else {
                continue;
            };
            if !tree.routes.contains_key(parent) {
                return Err(format!(
                    "route parent:{parent} of {table}: {parent} is not in [[tables]]; add it, or route {table} otherwise"
                ));
            }
            let to_parent: Vec<&ForeignKey> = fks
                .iter()
                .filter(|f| &f.table == table && &f.parent == parent)
                .collect();
            let fk = match to_parent[..] {
                [fk] => fk,
                [] => {
                    return Err(format!(
                        "route parent:{parent} of {table}: {table} has no foreign key to {parent} at HO; add one (ALTER TABLE {} ADD FOREIGN KEY (…) REFERENCES {}), or route {table} otherwise",
                        qualified(table),
                        qualified(parent)
                    ))
                }
                _ => {
                    return Err(format!(
                        "route parent:{parent} of {table}: {table} has {} foreign keys to {parent} at HO ({}); keep one, or route {table} otherwise",
                        to_parent.len(),
                        to_parent.iter().map(|f| f.name.as_str()).collect::<Vec<_>>().join(", ")
                    ))
                }
            };
            tree.links.insert(
                table.clone(),
                Link {
                    parent: parent.clone(),
                    columns: fk.columns.clone(),
                    references: fk.references.clone(),
                    constraint: fk.name.clone(),
                },
            );
        }
        tree.check()?;
        Ok(tree)
    }

    /// No cycle of parents; the children of a parent reference the same columns.
    fn check(&self) -> std::result::Result<(), String> {
        for table in self.links.keys() {
            let mut seen = BTreeSet::from([table.as_str()]);
            let mut at = table.as_str();
            while let Some(link) = self.links.get(at) {
                if !seen.insert(link.parent.as_str()) {
                    return Err(format!(
                        "routes by parent go round in a circle through {table}; route one of its tables by column or all"
                    ));
                }
                at = &link.parent;
            }
        }
        for (parent, _) in self.routes.iter() {
            let refs: BTreeSet<&Vec<String>> = self
                .children(parent)
                .iter()
                .map(|(_, l)| &l.references)
                .collect();
            if refs.len() > 1 {
                return Err(format!(
                    "the tables routed by parent {parent} reference different columns of it; make their foreign keys reference the same columns (its primary key)"
                ));
            }
        }
        Ok(())
    }

    /// The foreign keys `fks` (of synced tables) whose rows a site could
    /// hold without the row they reference, each with how to route them
    /// so that it cannot.
    pub fn orphaning(&self, fks: &[ForeignKey]) -> Vec<String> {
        let mut out = Vec::new();
        for fk in fks {
            let Some(route) = self.routes.get(&fk.table) else {
                continue;
            };
            let (child, parent) = (&fk.table, &fk.parent);
            let Some(parent_route) = self.routes.get(parent) else {
                out.push(format!(
                    "foreign key {} of {child} references {parent}, which is not synced: sites hold rows of {child} without the {parent} rows they reference; add {parent} to [[tables]]",
                    fk.name
                ));
                continue;
            };
            let safe = match (route, parent_route) {
                _ if self.root(parent) == &Route::All => true,
                (Route::Parent(p), _) => {
                    p == parent
                        && self
                            .links
                            .get(child)
                            .is_some_and(|l| l.constraint == fk.name)
                }
                (Route::Column(c), Route::Column(pc)) => fk
                    .columns
                    .iter()
                    .zip(&fk.references)
                    .any(|(a, b)| a == c && b == pc),
                _ => false,
            };
            if !safe {
                out.push(format!(
                    "foreign key {} of {child} references {parent}: a site may hold rows of {child} whose {parent} row another site holds (an orphan); route {child} with route = \"parent:{parent}\", or route {parent} \"all\"",
                    fk.name
                ));
            }
        }
        out
    }

    /// The route of `table`, if it is synced.
    pub fn route(&self, table: &str) -> Option<&Route> {
        self.routes.get(table)
    }

    /// How `table` reaches its parent, if it is routed by parent.
    pub fn link(&self, table: &str) -> Option<&Link> {
        self.links.get(table)
    }

    /// The tables routed by parent `table`, with their links.
    pub fn children(&self, table: &str) -> Vec<(&str, &Link)> {
        self.links
            .iter()
            .filter(|(_, l)| l.parent == table)
            .map(|(t, l)| (t.as_str(), l))
            .collect()
    }

    /// The tables others are routed by.
    pub fn parents(&self) -> Vec<&str> {
        let set: BTreeSet<&str> = self.links.values().map(|l| l.parent.as_str()).collect();
        set.into_iter().collect()
    }

    /// The columns of `table` its children reference, when it is a parent.
    pub fn referenced(&self, table: &str) -> Option<&[String]> {
        self.children(table)
            .first()
            .map(|(_, l)| l.references.as_slice())
    }

    /// Every table below `table`, each after its parent.
    pub fn descendants(&self, table: &str) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        let mut queue = vec![table];
        while let Some(t) = queue.pop() {
            for (child, _) in self.children(t) {
                out.push(child);
                queue.insert(0, child);
            }
        }
        out
    }

    /// What a site deletes with a row of `table` that leaves it: the rows
    /// of its children that reference it, and theirs, recursively.
    pub fn cascade(&self, table: &str) -> Vec<Cascade> {
        self.children(table)
            .into_iter()
            .map(|(child, link)| Cascade {
                table: child.to_string(),
                columns: link.columns.clone(),
                references: link.references.clone(),
                children: self.cascade(child),
            })
            .collect()
    }

    /// The table routed by column or all at the top of `table`'s parents.
    pub fn root(&self, table: &str) -> &Route {
        let mut at = table;
        while let Some(link) = self.links.get(at) {
            at = &link.parent;
        }
        self.routes.get(at).unwrap_or(&Route::All)
    }

    /// SQL for the site of a row of `table` (a text: a site code, `*` for
    /// every site, NULL for none), the row's columns read as `outer.column`.
    pub fn site_expr(&self, table: &str, outer: &str) -> String {
        self.site_expr_at(table, outer, 0)
    }

    fn site_expr_at(&self, table: &str, outer: &str, depth: usize) -> String {
        match (self.routes.get(table), self.links.get(table)) {
            (Some(Route::Column(c)), _) => format!("{outer}.{}::text", ident(c)),
            (_, Some(link)) => {
                let alias = format!("relaysync_p{depth}");
                format!(
                    "(SELECT {} FROM {} {alias} WHERE {})",
                    self.site_expr_at(&link.parent, &alias, depth + 1),
                    qualified(&link.parent),
                    joined(link, &alias, outer)
                )
            }
            _ => literal(super::ALL_SITES),
        }
    }

    /// SQL true for a row of `table` (columns as `outer.column`) below a
    /// row of `ancestor` whose referenced columns hold one of `keys` (each
    /// a row of text values, as COPY writes them).
    pub fn below(&self, table: &str, ancestor: &str, outer: &str, keys: &[Vec<String>]) -> String {
        self.below_at(table, ancestor, outer, keys, 0)
    }

    fn below_at(
        &self,
        table: &str,
        ancestor: &str,
        outer: &str,
        keys: &[Vec<String>],
        depth: usize,
    ) -> String {
        let Some(link) = self.links.get(table) else {
            return "false".into();
        };
        if link.parent == ancestor {
            return in_list(&link.columns, outer, keys);
        }
        let alias = format!("relaysync_a{depth}");
        format!(
            "EXISTS (SELECT 1 FROM {} {alias} WHERE {} AND {})",
            qualified(&link.parent),
            joined(link, &alias, outer),
            self.below_at(&link.parent, ancestor, &alias, keys, depth + 1)
        )
    }
}

/// `parent.ref = child.column AND …` for `link`.
fn joined(link: &Link, parent: &str, child: &str) -> String {
    link.references
        .iter()
        .zip(&link.columns)
        .map(|(r, c)| format!("{parent}.{} = {child}.{}", ident(r), ident(c)))
        .collect::<Vec<_>>()
        .join(" AND ")
}

/// `(outer.c1, …) IN (('v1', …), …)`; literals take the columns' types.
fn in_list(columns: &[String], outer: &str, keys: &[Vec<String>]) -> String {
    if keys.is_empty() {
        return "false".into();
    }
    let cols: Vec<String> = columns
        .iter()
        .map(|c| format!("{outer}.{}", ident(c)))
        .collect();
    let rows: Vec<String> = keys
        .iter()
        .map(|k| {
            let vals: Vec<String> = k.iter().map(|v| literal(v)).collect();
            format!("({})", vals.join(", "))
        })
        .collect();
    format!("({}) IN ({})", cols.join(", "), rows.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fk(table: &str, col: &str, parent: &str, r: &str) -> ForeignKey {
        ForeignKey {
            name: format!("{table}_{col}_fkey"),
            table: table.into(),
            columns: vec![col.into()],
            parent: parent.into(),
            references: vec![r.into()],
        }
    }

    fn chain() -> (Vec<(String, Route)>, Vec<ForeignKey>) {
        let routes = vec![
            ("s.inventory".into(), Route::Column("store_id".into())),
            ("s.rental".into(), Route::Parent("s.inventory".into())),
            ("s.payment".into(), Route::Parent("s.rental".into())),
        ];
        let fks = vec![
            fk("s.rental", "inventory_id", "s.inventory", "inventory_id"),
            fk("s.payment", "rental_id", "s.rental", "rental_id"),
        ];
        (routes, fks)
    }

    #[test]
    fn a_chain_cascades_and_finds_its_root() {
        let (routes, fks) = chain();
        let tree = Tree::new(&routes, &fks).unwrap();
        assert_eq!(
            tree.descendants("s.inventory"),
            vec!["s.rental", "s.payment"]
        );
        assert_eq!(tree.root("s.payment"), &Route::Column("store_id".into()));
        let c = tree.cascade("s.inventory");
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].table, "s.rental");
        assert_eq!(c[0].children[0].table, "s.payment");
        assert_eq!(
            tree.referenced("s.rental"),
            Some(&["rental_id".to_string()][..])
        );
        assert_eq!(tree.referenced("s.payment"), None);
        let expr = tree.site_expr("s.payment", "t");
        assert!(expr.contains("\"store_id\"::text"), "{expr}");
        let below = tree.below("s.payment", "s.inventory", "d", &[vec!["7".into()]]);
        assert!(below.starts_with("EXISTS"), "{below}");
        assert!(below.ends_with("IN (('7')))"), "{below}");
    }

    #[test]
    fn a_foreign_key_that_could_orphan_rows_is_named() {
        let (mut routes, mut fks) = chain();
        let tree = Tree::new(&routes, &fks).unwrap();
        assert!(tree.orphaning(&fks).is_empty());
        routes[2].1 = Route::All;
        fks.push(fk("s.inventory", "film_id", "s.film", "film_id"));
        let tree = Tree::new(&routes, &fks).unwrap();
        let found = tree.orphaning(&fks);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].contains("s.payment_rental_id_fkey"), "{found:?}");
        assert!(found[1].contains("s.inventory_film_id_fkey"), "{found:?}");
        routes.push(("s.film".into(), Route::All));
        let tree = Tree::new(&routes, &fks).unwrap();
        assert_eq!(tree.orphaning(&fks).len(), 1);
    }

    #[test]
    fn a_route_without_its_foreign_key_or_in_a_circle_is_refused() {
        let (routes, fks) = chain();
        let e = Tree::new(&routes, &fks[..1]).unwrap_err();
        assert!(e.contains("no foreign key to s.rental"), "{e}");
        let mut circle = routes.clone();
        circle[0].1 = Route::Parent("s.payment".into());
        let mut fks = fks.clone();
        fks.push(fk("s.inventory", "x", "s.payment", "payment_id"));
        let e = Tree::new(&circle, &fks).unwrap_err();
        assert!(e.contains("circle"), "{e}");
        let e = Tree::new(&routes[1..], &[]).unwrap_err();
        assert!(e.contains("not in [[tables]]"), "{e}");
    }
}
