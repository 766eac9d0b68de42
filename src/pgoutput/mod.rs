//! Decoder for the pgoutput logical replication protocol, version 1.
//!
//! Pure code: bytes in, messages out. It never panics, whatever the input,
//! and it borrows column values from the input buffer (`Bytes` slices) so a
//! decoded row costs no copy. The wire format is documented in PostgreSQL's
//! "Logical Replication Message Formats".

use bytes::Bytes;
use thiserror::Error;

mod reader;

use reader::Reader;

/// Why a pgoutput message could not be decoded.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("pgoutput message is empty")]
    Empty,
    #[error("pgoutput message '{tag}' is truncated at byte {at}")]
    Truncated { tag: char, at: usize },
    #[error("pgoutput message tag {0:#04x} is unknown")]
    UnknownTag(u8),
    #[error("pgoutput message '{tag}' has a string that is not NUL-terminated UTF-8")]
    BadString { tag: char },
    #[error("pgoutput tuple has column kind {0:#04x}; expected 'n', 'u', 't' or 'b'")]
    BadColumnKind(u8),
    #[error(
        "pgoutput message '{tag}' has tuple marker {marker:#04x} where {expected} was expected"
    )]
    BadMarker {
        tag: char,
        marker: u8,
        expected: &'static str,
    },
    #[error("pgoutput message '{tag}' has a negative count or length {value}")]
    Negative { tag: char, value: i64 },
}

/// One column value of a tuple.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// An unchanged out-of-line TOAST value: not sent, the receiver keeps its own.
    Unchanged,
    /// The value in PostgreSQL's text output format.
    Text(Bytes),
    /// The value in binary format (only when the binary option is requested).
    Binary(Bytes),
}

/// A row image: one value per column of the relation, in column order.
pub type Tuple = Vec<Value>;

/// One column of a Relation message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// Part of the replica identity (the key) when true.
    pub key: bool,
    pub name: String,
    pub type_oid: u32,
    pub type_modifier: i32,
}

/// A Relation message: the shape of a table, sent before its first change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    pub id: u32,
    pub namespace: String,
    pub name: String,
    /// `d` default, `n` nothing, `f` full, `i` index.
    pub replica_identity: u8,
    pub columns: Vec<Column>,
}

/// Which old row image an Update or Delete carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OldKind {
    /// 'K': only the replica identity key columns (others are NULL).
    Key,
    /// 'O': the whole old row (REPLICA IDENTITY FULL).
    Full,
}

/// A decoded pgoutput message.
#[derive(Debug, Clone, PartialEq, Eq)]
// `Message` is pgoutput's own name for a logical decoding message.
#[allow(clippy::enum_variant_names)]
pub enum Message {
    Begin {
        final_lsn: u64,
        commit_time: i64,
        xid: u32,
    },
    Commit {
        flags: u8,
        commit_lsn: u64,
        end_lsn: u64,
        commit_time: i64,
    },
    Origin {
        commit_lsn: u64,
        name: String,
    },
    Relation(Relation),
    Type {
        oid: u32,
        namespace: String,
        name: String,
    },
    Insert {
        relation: u32,
        new: Tuple,
    },
    Update {
        relation: u32,
        old: Option<(OldKind, Tuple)>,
        new: Tuple,
    },
    Delete {
        relation: u32,
        kind: OldKind,
        old: Tuple,
    },
    Truncate {
        /// Bit 1: CASCADE, bit 2: RESTART IDENTITY.
        options: u8,
        relations: Vec<u32>,
    },
    Message {
        transactional: bool,
        lsn: u64,
        prefix: String,
        content: Bytes,
    },
}

/// Decodes one pgoutput message (the payload of an XLogData).
pub fn decode(data: Bytes) -> Result<Message, DecodeError> {
    let Some(&tag) = data.first() else {
        return Err(DecodeError::Empty);
    };
    let start_len = data.len();
    let mut r = Reader {
        tag: char::from(tag),
        buf: data.slice(1..),
        start_len,
    };
    let message = match tag {
        b'B' => Message::Begin {
            final_lsn: r.u64()?,
            commit_time: r.i64()?,
            xid: r.u32()?,
        },
        b'C' => Message::Commit {
            flags: r.u8()?,
            commit_lsn: r.u64()?,
            end_lsn: r.u64()?,
            commit_time: r.i64()?,
        },
        b'O' => Message::Origin {
            commit_lsn: r.u64()?,
            name: r.string()?,
        },
        b'R' => r.relation()?,
        b'Y' => Message::Type {
            oid: r.u32()?,
            namespace: r.string()?,
            name: r.string()?,
        },
        b'I' => {
            let relation = r.u32()?;
            r.expect(b'N', "'N'")?;
            Message::Insert {
                relation,
                new: r.tuple()?,
            }
        }
        b'U' => r.update()?,
        b'D' => r.delete()?,
        b'T' => r.truncate()?,
        b'M' => r.logical_message()?,
        other => return Err(DecodeError::UnknownTag(other)),
    };
    Ok(message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BufMut;
    use proptest::prelude::*;

    fn tuple(buf: &mut Vec<u8>, values: &[Option<&str>]) {
        buf.put_i16(values.len() as i16);
        for v in values {
            match v {
                None => buf.put_u8(b'n'),
                Some("<u>") => buf.put_u8(b'u'),
                Some(s) => {
                    buf.put_u8(b't');
                    buf.put_i32(s.len() as i32);
                    buf.put_slice(s.as_bytes());
                }
            }
        }
    }

    #[test]
    fn relation_round_trip() {
        let mut b = vec![b'R'];
        b.put_u32(16384);
        b.put_slice(b"public\0items\0");
        b.put_u8(b'd');
        b.put_i16(2);
        b.put_u8(1);
        b.put_slice(b"id\0");
        b.put_u32(23);
        b.put_i32(-1);
        b.put_u8(0);
        b.put_slice(b"name\0");
        b.put_u32(25);
        b.put_i32(-1);
        let m = decode(Bytes::from(b)).unwrap();
        let Message::Relation(r) = m else {
            panic!("not a relation")
        };
        assert_eq!(r.id, 16384);
        assert_eq!(r.namespace, "public");
        assert_eq!(r.name, "items");
        assert_eq!(r.columns.len(), 2);
        assert!(r.columns[0].key && !r.columns[1].key);
        assert_eq!(r.columns[1].type_oid, 25);
    }

    #[test]
    fn update_with_old_full_row_and_unchanged_toast() {
        let mut b = vec![b'U'];
        b.put_u32(7);
        b.put_u8(b'O');
        tuple(&mut b, &[Some("1"), Some("old"), None]);
        b.put_u8(b'N');
        tuple(&mut b, &[Some("1"), Some("new"), Some("<u>")]);
        let m = decode(Bytes::from(b)).unwrap();
        let Message::Update { relation, old, new } = m else {
            panic!("not an update")
        };
        assert_eq!(relation, 7);
        let (kind, old) = old.unwrap();
        assert_eq!(kind, OldKind::Full);
        assert_eq!(old[2], Value::Null);
        assert_eq!(new[1], Value::Text(Bytes::from_static(b"new")));
        assert_eq!(new[2], Value::Unchanged);
    }

    #[test]
    fn insert_delete_truncate() {
        let mut b = vec![b'I'];
        b.put_u32(1);
        b.put_u8(b'N');
        tuple(&mut b, &[Some("a\tb")]);
        assert!(matches!(
            decode(Bytes::from(b)).unwrap(),
            Message::Insert { relation: 1, .. }
        ));

        let mut b = vec![b'D'];
        b.put_u32(1);
        b.put_u8(b'K');
        tuple(&mut b, &[Some("1")]);
        assert!(matches!(
            decode(Bytes::from(b)).unwrap(),
            Message::Delete {
                kind: OldKind::Key,
                ..
            }
        ));

        let mut b = vec![b'T'];
        b.put_i32(2);
        b.put_u8(0);
        b.put_u32(5);
        b.put_u32(6);
        assert_eq!(
            decode(Bytes::from(b)).unwrap(),
            Message::Truncate {
                options: 0,
                relations: vec![5, 6]
            }
        );
    }

    #[test]
    fn truncated_and_bad_input_are_errors() {
        assert_eq!(decode(Bytes::new()), Err(DecodeError::Empty));
        assert!(matches!(
            decode(Bytes::from_static(b"I\0\0")),
            Err(DecodeError::Truncated { tag: 'I', .. })
        ));
        assert_eq!(
            decode(Bytes::from_static(b"Z")),
            Err(DecodeError::UnknownTag(b'Z'))
        );
        let mut b = vec![b'I'];
        b.put_u32(1);
        b.put_u8(b'N');
        b.put_i16(1);
        b.put_u8(b't');
        b.put_i32(-5);
        assert!(matches!(
            decode(Bytes::from(b)),
            Err(DecodeError::Negative { .. })
        ));
    }

    proptest! {
        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode(Bytes::from(data));
        }

        #[test]
        fn never_panics_with_a_valid_tag(tag in prop::sample::select(b"BCORYIUDTM".to_vec()),
                                         rest in proptest::collection::vec(any::<u8>(), 0..128)) {
            let mut data = vec![tag];
            data.extend(rest);
            let _ = decode(Bytes::from(data));
        }
    }
}
