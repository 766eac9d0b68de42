//! The errors of relaysync's library: each names what went wrong and the fix.

use thiserror::Error;

/// An error of a relaysync command.
#[derive(Debug, Error)]
pub enum Error {
    /// The configuration is missing or wrong.
    #[error("{0}")]
    Config(String),
    /// A database could not be reached.
    #[error("cannot connect to the {role} database at {target}; check [{role}] url in the config and that the server is running")]
    Connect {
        role: &'static str,
        target: String,
        #[source]
        source: tokio_postgres::Error,
    },
    /// A statement failed; `context` says what relaysync was doing.
    #[error("{context}")]
    Db {
        context: String,
        #[source]
        source: tokio_postgres::Error,
    },
    /// A server or table is not set up the way relaysync needs: the message names the fix.
    #[error("{0}")]
    Setup(String),
    /// The replication stream failed.
    #[error("replication stream from {role}")]
    Replication {
        role: &'static str,
        #[source]
        source: pgwire_replication::PgWireError,
    },
    /// A pgoutput message could not be decoded.
    #[error("cannot decode the replication stream")]
    Decode(#[from] crate::capture::pgoutput::DecodeError),
    /// A packet could not be encoded or read.
    #[error("packet {packet}")]
    Packet {
        packet: i64,
        #[source]
        source: crate::packet::PacketError,
    },
    /// Local I/O failed (config file, cluster directories).
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

/// The result of a relaysync operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Adds what relaysync was doing to a database error.
pub trait DbContext<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> DbContext<T> for std::result::Result<T, tokio_postgres::Error> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Db {
            context: context(),
            source,
        })
    }
}

/// The database's own words for an error, with detail and hint when given.
pub fn db_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut m = db.message().to_string();
            if let Some(d) = db.detail() {
                m.push_str(&format!(" ({d})"));
            }
            if let Some(h) = db.hint() {
                m.push_str(&format!("; hint: {h}"));
            }
            m
        }
        None => e.to_string(),
    }
}
