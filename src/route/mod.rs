//! Routing: which site(s) a change is for.

pub mod tree;

use std::fmt;
use std::str::FromStr;

/// The target of a part that goes to every registered site.
pub use crate::protocol::ALL_SITES;
pub use tree::{check, Tree};

/// How a table's rows are routed to sites.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Every registered site; stored once with target `*`.
    All,
    /// The site named in this column of the row.
    Column(String),
    /// The sites of the row's parent row in this table (`schema.table`),
    /// reached through the table's foreign key to it.
    Parent(String),
}

impl FromStr for Route {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once(':') {
            None if s == "all" => Ok(Route::All),
            Some(("column", c)) if !c.is_empty() => Ok(Route::Column(c.to_string())),
            Some(("parent", t)) if crate::postgres::split_table(t).is_some() => {
                Ok(Route::Parent(t.to_string()))
            }
            _ => Err(format!(
                "route '{s}' is not valid; use \"all\", \"column:<column name>\" or \"parent:<schema.table>\""
            )),
        }
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Route::All => f.write_str("all"),
            Route::Column(c) => write!(f, "column:{c}"),
            Route::Parent(t) => write!(f, "parent:{t}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        assert_eq!("all".parse::<Route>(), Ok(Route::All));
        assert_eq!(
            "column:site".parse::<Route>(),
            Ok(Route::Column("site".into()))
        );
        assert!("column:".parse::<Route>().is_err());
        assert_eq!(
            "parent:public.inventory".parse::<Route>(),
            Ok(Route::Parent("public.inventory".into()))
        );
        assert!("parent:inventory".parse::<Route>().is_err());
        assert_eq!(Route::Parent("a.b".into()).to_string(), "parent:a.b");
        assert!("everyone".parse::<Route>().is_err());
        assert_eq!(Route::Column("s".into()).to_string(), "column:s");
    }
}
