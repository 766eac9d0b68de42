//! The words of the relay protocol as types: which way a packet travels,
//! what kind it is, where it comes from, how a site answered, why a full sync
//! was asked for. Each is stored as text in the relay (and in HO's and the
//! sites' bookkeeping); these types are the only place that spells them.

use std::fmt;
use std::str::FromStr;

use bytes::BytesMut;
use tokio_postgres::types::{accepts, to_sql_checked, FromSql, IsNull, ToSql, Type};

/// A WAL position (`pg_lsn`): PostgreSQL's own type, read and written as such.
pub use tokio_postgres::types::PgLsn as Lsn;

/// A protocol word a relay column holds that this version does not know.
#[derive(Debug, thiserror::Error)]
#[error("unknown {what} '{value}' in the relay; is a newer relaysync writing to it?")]
pub struct UnknownWord {
    what: &'static str,
    value: String,
}

/// Binds a type as SQL text, spelled by its `as_str`.
macro_rules! as_text_sql {
    ($name:ident) => {
        impl ToSql for $name {
            fn to_sql(
                &self,
                ty: &Type,
                out: &mut BytesMut,
            ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
                self.as_str().to_sql(ty, out)
            }
            accepts!(TEXT, VARCHAR);
            to_sql_checked!();
        }
    };
}

/// Declares a text-stored enum: its spelling, parsing, display and its
/// conversion to and from SQL text.
macro_rules! words {
    ($(#[$doc:meta])* $name:ident as $what:literal { $($(#[$vdoc:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant),+
        }

        impl $name {
            /// How the relay spells it.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            /// The SQL literal of it, for a statement's text.
            #[allow(dead_code)] // Not every word is in a statement's text.
            pub(crate) const fn sql(self) -> &'static str {
                match self {
                    $($name::$variant => concat!("'", $text, "'")),+
                }
            }
        }

        impl FromStr for $name {
            type Err = UnknownWord;
            fn from_str(s: &str) -> Result<Self, UnknownWord> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(UnknownWord { what: $what, value: s.chars().take(64).collect() }),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        as_text_sql!($name);

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'a> FromSql<'a> for $name {
            fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
                Ok(<&str as FromSql>::from_sql(ty, raw)?.parse()?)
            }
            accepts!(TEXT, VARCHAR);
        }
    };
}

words! {
    /// Which way a packet travels.
    Direction as "direction" {
        /// HO to the sites.
        Down = "down",
        /// A site to HO.
        Up = "up",
    }
}

words! {
    /// What a packet holds.
    PacketKind as "packet kind" {
        /// Changes captured from a replication slot.
        Delta = "delta",
        /// A full sync: the tables' rows from one snapshot.
        Snapshot = "snapshot",
        /// HO's hashes of tables, for the sites to compare theirs with.
        Verify = "verify",
    }
}

words! {
    /// A packet's state, as HO and the sites list it.
    PacketStatus as "packet status" {
        /// Stored in the relay, not yet applied by every target.
        Uploaded = "UPLOADED",
        /// Applied by every target.
        Processed = "PROCESSED",
        /// A target could not apply it.
        Failed = "FAILED",
        /// A site holds it: it carries a schema change the site does not
        /// make by itself (the site's own record; the relay's stays UPLOADED).
        Held = "HELD",
    }
}

words! {
    /// How a target answered a packet.
    AckStatus as "ack status" {
        /// Applied, in the same transaction as the target's position.
        Processed = "PROCESSED",
        /// Not applied: the target's stream stops at it.
        Failed = "FAILED",
        /// Not applied: it carries a schema change the site does not make
        /// by itself, shown as SQL in the ack's error; the stream waits there.
        Held = "HELD",
    }
}

words! {
    /// Why a site gets a full sync.
    SyncReason as "sync request reason" {
        /// The site's first contact (`site add`).
        First = "first",
        /// Sync Selective or Sync All (`push`).
        Push = "push",
        /// The site asked for a clean reload (`pos resync`, or after
        /// `[pos] wipe_after`).
        Resync = "resync",
        /// The site was expired (`[retention] max_offline`) and came back.
        Expired = "expired",
        /// A partition of the table was truncated, detached or dropped at
        /// HO, which PostgreSQL does not publish (see ho/partitions.rs).
        Truncated = "truncated",
        /// A column was added at HO with a default whose values PostgreSQL
        /// wrote into the rows (a volatile one, an identity), which the
        /// stream does not carry (see ho/shapes.rs).
        Schema = "schema",
    }
}

words! {
    /// What a site's verify found for a table.
    VerifyStatus as "verify status" {
        /// The site's rows hash as HO's.
        Equal = "equal",
        /// They differ (the detail says in which key buckets).
        Drift = "drift",
    }
}

impl From<AckStatus> for PacketStatus {
    fn from(s: AckStatus) -> PacketStatus {
        match s {
            AckStatus::Processed => PacketStatus::Processed,
            AckStatus::Failed => PacketStatus::Failed,
            AckStatus::Held => PacketStatus::Held,
        }
    }
}

/// Where packets come from, and who acks up packets: HO, or a site by code.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Origin {
    /// The head office.
    Ho,
    /// A site, by its code.
    Site(String),
}

impl Origin {
    /// How the relay spells it: `ho`, or the site's code.
    pub fn as_str(&self) -> &str {
        match self {
            Origin::Ho => HO,
            Origin::Site(code) => code,
        }
    }

    /// The way packets from here travel.
    pub fn direction(&self) -> Direction {
        match self {
            Origin::Ho => Direction::Down,
            Origin::Site(_) => Direction::Up,
        }
    }

    /// The `relaysync setup …` command that prepares this side.
    pub fn setup_command(&self) -> &'static str {
        match self {
            Origin::Ho => "relaysync setup ho",
            Origin::Site(_) => "relaysync setup pos",
        }
    }

    /// `ho` or `pos`: the role's name in logs and config sections.
    pub fn role(&self) -> &'static str {
        match self {
            Origin::Ho => "ho",
            Origin::Site(_) => "pos",
        }
    }
}

impl From<&str> for Origin {
    fn from(s: &str) -> Origin {
        if s == HO {
            Origin::Ho
        } else {
            Origin::Site(s.to_string())
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

as_text_sql!(Origin);

impl<'a> FromSql<'a> for Origin {
    fn from_sql(
        ty: &Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Origin::from(<&str as FromSql>::from_sql(ty, raw)?))
    }
    accepts!(TEXT, VARCHAR);
}

/// How the relay spells "every registered site".
macro_rules! all_sites {
    () => {
        "*"
    };
}

/// How the relay spells "every registered site" in a packet's targets and
/// a part's target.
pub const ALL_SITES: &str = all_sites!();

/// The protocol's words as SQL literals, formatted into the text of the
/// relay's statements (never spelled there): the relay's partial indexes
/// are on these values, and a plan sees a literal where it cannot see a
/// parameter.
pub(crate) mod sql {
    use super::{AckStatus, Direction, PacketKind, PacketStatus, SyncReason};

    /// A packet every target processed.
    pub(crate) const PROCESSED: &str = PacketStatus::Processed.sql();
    /// A packet not yet processed by every target.
    pub(crate) const UPLOADED: &str = PacketStatus::Uploaded.sql();
    /// An ack: applied.
    pub(crate) const ACKED: &str = AckStatus::Processed.sql();
    /// An ack: not applied.
    pub(crate) const ACK_FAILED: &str = AckStatus::Failed.sql();
    pub(crate) const ACK_HELD: &str = AckStatus::Held.sql();
    /// HO to the sites.
    pub(crate) const DOWN: &str = Direction::Down.sql();
    /// The sites to HO.
    pub(crate) const UP: &str = Direction::Up.sql();
    /// A full sync's packets.
    pub(crate) const SNAPSHOT: &str = PacketKind::Snapshot.sql();
    /// Captured changes.
    pub(crate) const DELTA: &str = PacketKind::Delta.sql();
    /// A site's first full sync.
    pub(crate) const FIRST: &str = SyncReason::First.sql();
    /// Every registered site, as a target.
    pub(crate) const ALL: &str = concat!("'", all_sites!(), "'");
    /// The targets of a packet for every registered site.
    pub(crate) const ALL_ARRAY: &str = concat!("'{", all_sites!(), "}'");
}
/// How the relay spells HO as a target (of up packets) and an origin.
const HO: &str = "ho";

/// Who a packet or a part is for: HO (up packets), one site, or every
/// registered site (`*`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    /// The head office.
    Ho,
    /// Every registered site.
    All,
    /// A site, by its code.
    Site(String),
}

impl Target {
    /// How the relay spells it: `ho`, `*`, or the site's code.
    pub fn as_str(&self) -> &str {
        match self {
            Target::Ho => HO,
            Target::All => ALL_SITES,
            Target::Site(code) => code,
        }
    }
}

impl From<&str> for Target {
    fn from(s: &str) -> Target {
        match s {
            HO => Target::Ho,
            ALL_SITES => Target::All,
            code => Target::Site(code.to_string()),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

as_text_sql!(Target);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip() {
        for d in [Direction::Down, Direction::Up] {
            assert_eq!(d.as_str().parse::<Direction>().unwrap(), d);
        }
        for s in [
            PacketStatus::Uploaded,
            PacketStatus::Processed,
            PacketStatus::Failed,
            PacketStatus::Held,
        ] {
            assert_eq!(s.to_string().parse::<PacketStatus>().unwrap(), s);
        }
        assert_eq!(PacketStatus::from(AckStatus::Failed), PacketStatus::Failed);
        assert!("sideways".parse::<Direction>().is_err());
        assert!("processed".parse::<AckStatus>().is_err());
    }

    #[test]
    fn sql_literals_spell_the_words() {
        use crate::postgres::literal;
        assert_eq!(sql::PROCESSED, literal(PacketStatus::Processed.as_str()));
        assert_eq!(sql::ACK_FAILED, literal(AckStatus::Failed.as_str()));
        assert_eq!(sql::DOWN, literal(Direction::Down.as_str()));
        assert_eq!(sql::FIRST, literal(SyncReason::First.as_str()));
        assert_eq!(sql::ALL, literal(ALL_SITES));
        assert_eq!(sql::ALL_ARRAY, literal(&format!("{{{ALL_SITES}}}")));
    }

    #[test]
    fn targets() {
        for t in [Target::Ho, Target::All, Target::Site("s1".into())] {
            assert_eq!(Target::from(t.as_str()), t);
        }
        assert_eq!(Target::All.to_string(), "*");
    }

    #[test]
    fn origins() {
        assert_eq!(Origin::from("ho"), Origin::Ho);
        assert_eq!(Origin::from("s1"), Origin::Site("s1".into()));
        assert_eq!(Origin::Ho.direction(), Direction::Down);
        assert_eq!(Origin::from("s1").direction(), Direction::Up);
        assert_eq!(Origin::from("s1").to_string(), "s1");
    }
}
