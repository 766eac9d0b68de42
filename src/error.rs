//! The errors of relaysync's library: each names what went wrong and the
//! fix, and has a [`ErrorKind`] that decides what a worker does about it.

use thiserror::Error;
use tokio_postgres::error::SqlState;

/// What a worker does about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The configuration is wrong: stop and name the fix.
    Config,
    /// A server, table or role is not set up as relaysync needs: stop and
    /// name the fix.
    Setup,
    /// The network, a restarting server, a conflict with another
    /// transaction: try again after a pause.
    Transient,
    /// The data cannot be applied: fail that packet, and that site's stream
    /// only.
    Data,
}

impl ErrorKind {
    /// Whether trying again, unchanged, may succeed.
    pub fn is_retryable(self) -> bool {
        self == ErrorKind::Transient
    }
}

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
    /// No server of the URL could be reached (refused, timed out, no
    /// address, or only read-only servers when a writable one is asked for).
    #[error("cannot connect to the {role} database at {target}; check [{role}] url in the config and that the server is running")]
    Unreachable {
        role: &'static str,
        target: String,
        #[source]
        source: std::io::Error,
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
    /// The server ended the replication stream (a restart, a terminated
    /// WAL sender).
    #[error("the replication stream of {role} ended unexpectedly; check the server log")]
    StreamEnded { role: &'static str },
    /// The replication stream sent nothing, not even the server's
    /// keepalive, within `[network] deadline`: the network lost it.
    #[error("the replication stream of {role} sent nothing for {}s ([network] deadline); it is opened again", .silent.as_secs())]
    StreamSilent {
        role: &'static str,
        silent: std::time::Duration,
    },
    /// A pgoutput message could not be decoded.
    #[error("cannot decode the replication stream")]
    Decode(#[from] crate::pgoutput::DecodeError),
    /// A packet could not be encoded or read.
    #[error("packet {packet}")]
    Packet {
        packet: i64,
        #[source]
        source: crate::packet::PacketError,
    },
    /// A packet waits for a schema change the site does not make by itself
    /// (the error names it, with `relaysync schema apply`): the stream of
    /// `at` waits there.
    #[error("{at}: packet {packet} is held. {error}")]
    PacketHeld {
        /// `site CODE`.
        at: String,
        packet: i64,
        error: String,
    },
    /// A packet could not be applied: the stream of `at` stops there.
    #[error("{at}: packet {packet} failed: {error}; fix the cause and run `{retry}` again")]
    PacketFailed {
        /// `HO`, or `site CODE`.
        at: String,
        packet: i64,
        error: String,
        /// The command that retries it.
        retry: &'static str,
    },
    /// The relay holds a protocol word this version does not know.
    #[error(transparent)]
    Protocol(#[from] crate::protocol::UnknownWord),
    /// Local I/O failed (config file, cluster directories).
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// What a worker does about this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Config(_) => ErrorKind::Config,
            Error::Setup(_) | Error::Protocol(_) => ErrorKind::Setup,
            Error::Connect { source, .. } => match source.code().map(|c| c.code()) {
                // Reached the server, which refused the role, its password
                // or the database: a setting to fix. Anything else (a server
                // starting or stopping, a database closed to connections for
                // a while) may pass.
                Some(c) if c.starts_with("28") || c.starts_with("3D") || c == "42501" => {
                    ErrorKind::Setup
                }
                _ => ErrorKind::Transient,
            },
            Error::Db { source, .. } => db_kind(source),
            Error::Replication { source, .. } => replication_kind(source),
            Error::StreamEnded { .. }
            | Error::StreamSilent { .. }
            | Error::Unreachable { .. }
            | Error::Io { .. } => ErrorKind::Transient,
            Error::Decode(_)
            | Error::Packet { .. }
            | Error::PacketFailed { .. }
            | Error::PacketHeld { .. } => ErrorKind::Data,
        }
    }
}

/// The kind of a database error: by SQLSTATE when the server sent one; a
/// connection that closed or failed without one is transient.
pub fn db_kind(e: &tokio_postgres::Error) -> ErrorKind {
    match e.code() {
        Some(code) => sqlstate_kind(code),
        None => ErrorKind::Transient,
    }
}

/// SQLSTATE classes and codes mapped to what a worker does about them: the
/// one place that decides it.
pub fn sqlstate_kind(code: &SqlState) -> ErrorKind {
    let c = code.code();
    match &c[..2] {
        // connection exception, insufficient resources (disk full, too many
        // connections), system error (I/O)
        "08" | "53" | "58" => ErrorKind::Transient,
        // serialization failure, deadlock
        "40" => ErrorKind::Transient,
        // admin or crash shutdown, cannot connect now, query canceled
        "57" => ErrorKind::Transient,
        // a lock not available (lock_timeout), an object in use (a slot
        // another worker still holds), a database closed for a while
        "55" => ErrorKind::Transient,
        // invalid authorization, a database that does not exist
        "28" | "3D" => ErrorKind::Setup,
        // insufficient privilege, an undefined table, column or function:
        // the schema or the role is not what relaysync was set up with
        "42" if matches!(c, "42501" | "42P01" | "42703" | "42883" | "42704") => ErrorKind::Setup,
        // the server's configuration (a parameter that cannot be set)
        "F0" | "XX" => ErrorKind::Transient,
        // integrity constraints, data exceptions, everything else a
        // statement refuses about the rows
        _ => ErrorKind::Data,
    }
}

fn replication_kind(e: &pgwire_replication::PgWireError) -> ErrorKind {
    use pgwire_replication::PgWireError as W;
    match e {
        W::Auth(_) | W::Tls(_) => ErrorKind::Setup,
        // The server's message names its SQLSTATE: a missing slot or a
        // slot in use is a setup matter; anything else may pass.
        W::Server(m) if m.contains("does not exist") || m.contains("is active") => ErrorKind::Setup,
        _ => ErrorKind::Transient,
    }
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

/// An error and its causes on one line: `what: why: deeper why`.
pub fn chain(e: &dyn std::error::Error) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_map_to_kinds() {
        let cases = [
            (SqlState::CONNECTION_FAILURE, ErrorKind::Transient),
            (SqlState::ADMIN_SHUTDOWN, ErrorKind::Transient),
            (SqlState::CANNOT_CONNECT_NOW, ErrorKind::Transient),
            (SqlState::T_R_SERIALIZATION_FAILURE, ErrorKind::Transient),
            (SqlState::T_R_DEADLOCK_DETECTED, ErrorKind::Transient),
            (SqlState::TOO_MANY_CONNECTIONS, ErrorKind::Transient),
            (SqlState::DISK_FULL, ErrorKind::Transient),
            (SqlState::LOCK_NOT_AVAILABLE, ErrorKind::Transient),
            (SqlState::INVALID_PASSWORD, ErrorKind::Setup),
            (SqlState::INVALID_CATALOG_NAME, ErrorKind::Setup),
            (SqlState::INSUFFICIENT_PRIVILEGE, ErrorKind::Setup),
            (SqlState::UNDEFINED_TABLE, ErrorKind::Setup),
            (SqlState::UNDEFINED_COLUMN, ErrorKind::Setup),
            (
                SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE,
                ErrorKind::Transient,
            ),
            (SqlState::UNDEFINED_OBJECT, ErrorKind::Setup),
            (SqlState::UNIQUE_VIOLATION, ErrorKind::Data),
            (SqlState::NOT_NULL_VIOLATION, ErrorKind::Data),
            (SqlState::FOREIGN_KEY_VIOLATION, ErrorKind::Data),
            (SqlState::INVALID_TEXT_REPRESENTATION, ErrorKind::Data),
            (SqlState::NUMERIC_VALUE_OUT_OF_RANGE, ErrorKind::Data),
            (SqlState::SYNTAX_ERROR, ErrorKind::Data),
        ];
        for (code, kind) in cases {
            assert_eq!(sqlstate_kind(&code), kind, "{}", code.code());
        }
    }

    #[test]
    fn errors_have_kinds() {
        assert_eq!(Error::Config("x".into()).kind(), ErrorKind::Config);
        assert_eq!(Error::Setup("x".into()).kind(), ErrorKind::Setup);
        assert_eq!(
            Error::StreamEnded { role: "ho" }.kind(),
            ErrorKind::Transient
        );
        let failed = Error::PacketFailed {
            at: "site s1".into(),
            packet: 7,
            error: "boom".into(),
            retry: "relaysync pos sync --once",
        };
        assert_eq!(failed.kind(), ErrorKind::Data);
        assert!(!failed.kind().is_retryable());
        assert!(failed.to_string().contains("packet 7"));
        let auth = pgwire_replication::PgWireError::Auth("no".into());
        assert_eq!(
            Error::Replication {
                role: "ho",
                source: auth
            }
            .kind(),
            ErrorKind::Setup
        );
    }
}
