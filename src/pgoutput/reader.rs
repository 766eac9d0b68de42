//! Reading a pgoutput message's fields: a cursor that reports truncation
//! and bad values as errors, never a panic.

use bytes::{Buf, Bytes};

use super::{Column, DecodeError, Message, OldKind, Relation, Tuple, Value};

/// A cursor over one message that reports truncation instead of panicking.
pub(super) struct Reader {
    pub(super) tag: char,
    pub(super) buf: Bytes,
    pub(super) start_len: usize,
}

impl Reader {
    pub(super) fn at(&self) -> usize {
        self.start_len - self.buf.remaining()
    }

    pub(super) fn need(&self, n: usize) -> Result<(), DecodeError> {
        if self.buf.remaining() < n {
            return Err(DecodeError::Truncated {
                tag: self.tag,
                at: self.at(),
            });
        }
        Ok(())
    }

    pub(super) fn u8(&mut self) -> Result<u8, DecodeError> {
        self.need(1)?;
        Ok(self.buf.get_u8())
    }

    pub(super) fn i16(&mut self) -> Result<i16, DecodeError> {
        self.need(2)?;
        Ok(self.buf.get_i16())
    }

    pub(super) fn i32(&mut self) -> Result<i32, DecodeError> {
        self.need(4)?;
        Ok(self.buf.get_i32())
    }

    pub(super) fn u32(&mut self) -> Result<u32, DecodeError> {
        self.need(4)?;
        Ok(self.buf.get_u32())
    }

    pub(super) fn u64(&mut self) -> Result<u64, DecodeError> {
        self.need(8)?;
        Ok(self.buf.get_u64())
    }

    pub(super) fn i64(&mut self) -> Result<i64, DecodeError> {
        self.need(8)?;
        Ok(self.buf.get_i64())
    }

    pub(super) fn bytes(&mut self, n: usize) -> Result<Bytes, DecodeError> {
        self.need(n)?;
        Ok(self.buf.split_to(n))
    }

    pub(super) fn count(&mut self, value: i64) -> Result<usize, DecodeError> {
        usize::try_from(value).map_err(|_| DecodeError::Negative {
            tag: self.tag,
            value,
        })
    }

    pub(super) fn string(&mut self) -> Result<String, DecodeError> {
        let tag = self.tag;
        let Some(end) = self.buf.iter().position(|&b| b == 0) else {
            return Err(DecodeError::BadString { tag });
        };
        let raw = self.buf.split_to(end);
        self.buf.advance(1);
        String::from_utf8(raw.to_vec()).map_err(|_| DecodeError::BadString { tag })
    }

    pub(super) fn tuple(&mut self) -> Result<Tuple, DecodeError> {
        let n = self.i16()?;
        let n = self.count(n.into())?;
        // Each column takes at least one byte: cap the allocation by what is there.
        let mut values = Vec::with_capacity(n.min(self.buf.remaining()));
        for _ in 0..n {
            let value = match self.u8()? {
                b'n' => Value::Null,
                b'u' => Value::Unchanged,
                kind @ (b't' | b'b') => {
                    let len = self.i32()?;
                    let len = self.count(len.into())?;
                    let data = self.bytes(len)?;
                    if kind == b't' {
                        Value::Text(data)
                    } else {
                        Value::Binary(data)
                    }
                }
                other => return Err(DecodeError::BadColumnKind(other)),
            };
            values.push(value);
        }
        Ok(values)
    }

    pub(super) fn old_kind(&mut self, marker: u8) -> Result<OldKind, DecodeError> {
        match marker {
            b'K' => Ok(OldKind::Key),
            b'O' => Ok(OldKind::Full),
            marker => Err(DecodeError::BadMarker {
                tag: self.tag,
                marker,
                expected: "'K' or 'O'",
            }),
        }
    }

    pub(super) fn expect(&mut self, want: u8, expected: &'static str) -> Result<(), DecodeError> {
        let marker = self.u8()?;
        if marker != want {
            return Err(DecodeError::BadMarker {
                tag: self.tag,
                marker,
                expected,
            });
        }
        Ok(())
    }
}

/// The messages whose bodies take more than a line to read.
impl Reader {
    /// A Relation message's body: a table's id, name and columns.
    pub(super) fn relation(&mut self) -> Result<Message, DecodeError> {
        let id = self.u32()?;
        let namespace = self.string()?;
        let name = self.string()?;
        let replica_identity = self.u8()?;
        let n = self.i16()?;
        let n = self.count(n.into())?;
        let mut columns = Vec::with_capacity(n.min(self.buf.remaining() / 10));
        for _ in 0..n {
            let flags = self.u8()?;
            columns.push(Column {
                key: flags & 1 == 1,
                name: self.string()?,
                type_oid: self.u32()?,
                type_modifier: self.i32()?,
            });
        }
        Ok(Message::Relation(Relation {
            id,
            namespace,
            name,
            replica_identity,
            columns,
        }))
    }

    /// An Update's body: the old key or row, if sent, and the new row.
    pub(super) fn update(&mut self) -> Result<Message, DecodeError> {
        let relation = self.u32()?;
        let marker = self.u8()?;
        let old = if marker == b'N' {
            None
        } else {
            let kind = self.old_kind(marker)?;
            let old = self.tuple()?;
            self.expect(b'N', "'N'")?;
            Some((kind, old))
        };
        Ok(Message::Update {
            relation,
            old,
            new: self.tuple()?,
        })
    }

    /// A Delete's body: the old key or row.
    pub(super) fn delete(&mut self) -> Result<Message, DecodeError> {
        let relation = self.u32()?;
        let marker = self.u8()?;
        let kind = self.old_kind(marker)?;
        Ok(Message::Delete {
            relation,
            kind,
            old: self.tuple()?,
        })
    }

    /// A Truncate's body: its options and relations.
    pub(super) fn truncate(&mut self) -> Result<Message, DecodeError> {
        let n = self.i32()?;
        let n = self.count(n.into())?;
        let options = self.u8()?;
        let mut relations = Vec::with_capacity(n.min(self.buf.remaining() / 4));
        for _ in 0..n {
            relations.push(self.u32()?);
        }
        Ok(Message::Truncate { options, relations })
    }

    /// A logical decoding message's body.
    pub(super) fn logical_message(&mut self) -> Result<Message, DecodeError> {
        let flags = self.u8()?;
        let lsn = self.u64()?;
        let prefix = self.string()?;
        let len = self.i32()?;
        let len = self.count(len.into())?;
        Ok(Message::Message {
            transactional: flags & 1 == 1,
            lsn,
            prefix,
            content: self.bytes(len)?,
        })
    }
}
