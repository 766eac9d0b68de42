//! relaysync keeps a head-office PostgreSQL database and many site databases
//! in sync through a relay database: HO changes are read from logical
//! replication, routed per site, stored as Arrow packets in the relay, and
//! applied at each site atomically, with acknowledgements back to HO.
//!
//! The stages follow the data: [`capture`] → [`route`] → [`packet`] →
//! [`relay`] → [`apply`]; [`ho`] and [`pos`] are the two workers.

pub mod apply;
pub mod capture;
pub mod cli;
pub mod config;
pub mod demo;
pub mod error;
pub mod failpoint;
pub mod ho;
pub mod packet;
pub mod pos;
pub mod postgres;
pub mod progress;
pub mod relay;
pub mod route;
pub mod shutdown;
pub mod status;

pub use error::{Error, Result};

/// An error and its causes on one line: `what: why: deeper why`.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !s.ends_with(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cause = c.source();
    }
    s
}
