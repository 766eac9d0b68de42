//! Routing: which site(s) a change is for.

use std::fmt;
use std::str::FromStr;

/// The target of a part that goes to every registered site.
pub use crate::protocol::ALL_SITES;

/// How a table's rows are routed to sites.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Every registered site; stored once with target `*`.
    All,
    /// The site named in this column of the row.
    Column(String),
}

impl FromStr for Route {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once(':') {
            None if s == "all" => Ok(Route::All),
            Some(("column", c)) if !c.is_empty() => Ok(Route::Column(c.to_string())),
            _ => Err(format!(
                "route '{s}' is not valid; use \"all\" or \"column:<column name>\""
            )),
        }
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Route::All => f.write_str("all"),
            Route::Column(c) => write!(f, "column:{c}"),
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
        assert!("everyone".parse::<Route>().is_err());
        assert_eq!(Route::Column("s".into()).to_string(), "column:s");
    }
}
