//! Decoding of pgoutput's logical replication messages (protocol versions 1 and 2, without
//! in-progress streaming: only committed transactions reach us, which is what we publish).
//!
//! Column values stay as slices of the received frame (`Bytes`), so a row is never copied
//! between the socket and the record encoder.

use bytes::{Buf, Bytes};

use super::error::ReplicationError;
use crate::lsn::Lsn;

#[derive(Debug)]
pub enum PgOutput {
    Begin {
        final_lsn: Lsn,
        commit_time: i64,
        xid: u32,
    },
    Commit {
        commit_lsn: Lsn,
        end_lsn: Lsn,
        commit_time: i64,
    },
    Relation(Relation),
    Insert {
        relation: u32,
        new: Tuple,
    },
    Update {
        relation: u32,
        old: Option<Tuple>,
        new: Tuple,
    },
    Delete {
        relation: u32,
        old: Tuple,
    },
    Truncate {
        relations: Vec<u32>,
    },
    /// `pg_logical_emit_message`: a table-less outbox event or our heartbeat.
    Message {
        transactional: bool,
        lsn: Lsn,
        prefix: String,
        content: Bytes,
    },
    /// Origin and Type messages carry nothing we publish.
    Ignored,
}

#[derive(Debug, Clone)]
pub struct Relation {
    pub id: u32,
    pub namespace: String,
    pub name: String,
    pub columns: Vec<Column>,
}

#[derive(Debug, Clone)]
pub struct Column {
    pub name: String,
    pub type_oid: u32,
    pub is_key: bool,
}

/// One column value as pgoutput sends it.
#[derive(Debug, Clone, PartialEq)]
pub enum Datum {
    Null,
    /// A TOASTed value the update did not change; pgoutput does not resend it.
    UnchangedToast,
    Text(Bytes),
    Binary(Bytes),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Tuple(pub Vec<Datum>);

/// Decodes one pgoutput message (the payload of an XLogData frame).
pub fn decode(mut buf: Bytes) -> Result<PgOutput, ReplicationError> {
    let tag = take_u8(&mut buf)?;
    let msg = match tag {
        b'B' => PgOutput::Begin {
            final_lsn: Lsn(take_u64(&mut buf)?),
            commit_time: take_i64(&mut buf)?,
            xid: take_u32(&mut buf)?,
        },
        b'C' => {
            let _flags = take_u8(&mut buf)?;
            PgOutput::Commit {
                commit_lsn: Lsn(take_u64(&mut buf)?),
                end_lsn: Lsn(take_u64(&mut buf)?),
                commit_time: take_i64(&mut buf)?,
            }
        }
        b'R' => PgOutput::Relation(relation(&mut buf)?),
        b'I' => {
            let relation = take_u32(&mut buf)?;
            expect(&mut buf, b'N')?;
            PgOutput::Insert {
                relation,
                new: tuple(&mut buf)?,
            }
        }
        b'U' => {
            let relation = take_u32(&mut buf)?;
            let mut old = None;
            let mut kind = take_u8(&mut buf)?;
            if kind == b'K' || kind == b'O' {
                old = Some(tuple(&mut buf)?);
                kind = take_u8(&mut buf)?;
            }
            if kind != b'N' {
                return Err(ReplicationError::Decode(format!(
                    "update without new tuple (tag {kind})"
                )));
            }
            PgOutput::Update {
                relation,
                old,
                new: tuple(&mut buf)?,
            }
        }
        b'D' => {
            let relation = take_u32(&mut buf)?;
            let kind = take_u8(&mut buf)?;
            if kind != b'K' && kind != b'O' {
                return Err(ReplicationError::Decode(format!(
                    "delete without old tuple (tag {kind})"
                )));
            }
            PgOutput::Delete {
                relation,
                old: tuple(&mut buf)?,
            }
        }
        b'T' => {
            let n = take_u32(&mut buf)?;
            let _options = take_u8(&mut buf)?;
            let relations = (0..n).map(|_| take_u32(&mut buf)).collect::<Result<_, _>>()?;
            PgOutput::Truncate { relations }
        }
        b'M' => {
            let transactional = take_u8(&mut buf)? & 1 == 1;
            let lsn = Lsn(take_u64(&mut buf)?);
            let prefix = cstring(&mut buf)?;
            let len = take_u32(&mut buf)? as usize;
            PgOutput::Message {
                transactional,
                lsn,
                prefix,
                content: take_bytes(&mut buf, len)?,
            }
        }
        b'O' | b'Y' => PgOutput::Ignored,
        other => {
            return Err(ReplicationError::Decode(format!(
                "unsupported pgoutput message {:?} (in-progress streaming is not requested)",
                char::from(other)
            )))
        }
    };
    Ok(msg)
}

fn relation(buf: &mut Bytes) -> Result<Relation, ReplicationError> {
    let id = take_u32(buf)?;
    let namespace = cstring(buf)?;
    let name = cstring(buf)?;
    let _replica_identity = take_u8(buf)?;
    let n = take_u16(buf)?;
    let mut columns = Vec::with_capacity(usize::from(n));
    for _ in 0..n {
        let flags = take_u8(buf)?;
        let name = cstring(buf)?;
        let type_oid = take_u32(buf)?;
        let _type_mod = take_u32(buf)?;
        columns.push(Column {
            name,
            type_oid,
            is_key: flags & 1 == 1,
        });
    }
    Ok(Relation {
        id,
        namespace: if namespace.is_empty() {
            "pg_catalog".into()
        } else {
            namespace
        },
        name,
        columns,
    })
}

fn tuple(buf: &mut Bytes) -> Result<Tuple, ReplicationError> {
    let n = take_u16(buf)?;
    let mut values = Vec::with_capacity(usize::from(n));
    for _ in 0..n {
        values.push(match take_u8(buf)? {
            b'n' => Datum::Null,
            b'u' => Datum::UnchangedToast,
            b't' => {
                let len = take_u32(buf)? as usize;
                Datum::Text(take_bytes(buf, len)?)
            }
            b'b' => {
                let len = take_u32(buf)? as usize;
                Datum::Binary(take_bytes(buf, len)?)
            }
            other => {
                return Err(ReplicationError::Decode(format!(
                    "unknown tuple value kind {other}"
                )))
            }
        });
    }
    Ok(Tuple(values))
}

fn short() -> ReplicationError {
    ReplicationError::Decode("message ends early".into())
}

fn expect(buf: &mut Bytes, tag: u8) -> Result<(), ReplicationError> {
    let got = take_u8(buf)?;
    if got == tag {
        Ok(())
    } else {
        Err(ReplicationError::Decode(format!(
            "expected {:?}, got {:?}",
            char::from(tag),
            char::from(got)
        )))
    }
}

fn take_u8(buf: &mut Bytes) -> Result<u8, ReplicationError> {
    buf.try_get_u8().map_err(|_| short())
}
fn take_u16(buf: &mut Bytes) -> Result<u16, ReplicationError> {
    buf.try_get_u16().map_err(|_| short())
}
fn take_u32(buf: &mut Bytes) -> Result<u32, ReplicationError> {
    buf.try_get_u32().map_err(|_| short())
}
fn take_u64(buf: &mut Bytes) -> Result<u64, ReplicationError> {
    buf.try_get_u64().map_err(|_| short())
}
fn take_i64(buf: &mut Bytes) -> Result<i64, ReplicationError> {
    buf.try_get_i64().map_err(|_| short())
}
fn take_bytes(buf: &mut Bytes, len: usize) -> Result<Bytes, ReplicationError> {
    if buf.len() < len {
        return Err(short());
    }
    Ok(buf.split_to(len))
}
fn cstring(buf: &mut Bytes) -> Result<String, ReplicationError> {
    let end = buf.iter().position(|&b| b == 0).ok_or_else(short)?;
    let s = String::from_utf8_lossy(&buf[..end]).into_owned();
    buf.advance(end + 1);
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{BufMut, BytesMut};

    fn relation_msg() -> Bytes {
        let mut b = BytesMut::new();
        b.put_u8(b'R');
        b.put_u32(16384);
        b.put_slice(b"public\0outbox\0");
        b.put_u8(b'd');
        b.put_u16(2);
        b.put_u8(1);
        b.put_slice(b"id\0");
        b.put_u32(2950);
        b.put_i32(-1);
        b.put_u8(0);
        b.put_slice(b"payload\0");
        b.put_u32(3802);
        b.put_i32(-1);
        b.freeze()
    }

    #[test]
    fn decodes_relation_and_insert() {
        let PgOutput::Relation(rel) = decode(relation_msg()).unwrap() else {
            panic!("not a relation")
        };
        assert_eq!((rel.namespace.as_str(), rel.name.as_str()), ("public", "outbox"));
        assert!(rel.columns[0].is_key && !rel.columns[1].is_key);
        assert_eq!(rel.columns[1].type_oid, 3802);

        let mut b = BytesMut::new();
        b.put_u8(b'I');
        b.put_u32(16384);
        b.put_u8(b'N');
        b.put_u16(2);
        b.put_u8(b't');
        b.put_u32(3);
        b.put_slice(b"abc");
        b.put_u8(b'n');
        let PgOutput::Insert { relation, new } = decode(b.freeze()).unwrap() else {
            panic!("not an insert")
        };
        assert_eq!(relation, 16384);
        assert_eq!(new.0, vec![Datum::Text(Bytes::from_static(b"abc")), Datum::Null]);
    }

    #[test]
    fn decodes_begin_commit_and_update_with_old_tuple() {
        let mut b = BytesMut::new();
        b.put_u8(b'B');
        b.put_u64(0x10);
        b.put_i64(5);
        b.put_u32(77);
        assert!(matches!(
            decode(b.freeze()).unwrap(),
            PgOutput::Begin {
                xid: 77,
                final_lsn: Lsn(0x10),
                ..
            }
        ));

        let mut b = BytesMut::new();
        b.put_u8(b'C');
        b.put_u8(0);
        b.put_u64(0x10);
        b.put_u64(0x38);
        b.put_i64(5);
        assert!(matches!(
            decode(b.freeze()).unwrap(),
            PgOutput::Commit {
                end_lsn: Lsn(0x38),
                ..
            }
        ));

        let mut b = BytesMut::new();
        b.put_u8(b'U');
        b.put_u32(1);
        b.put_u8(b'O');
        b.put_u16(1);
        b.put_u8(b'u');
        b.put_u8(b'N');
        b.put_u16(1);
        b.put_u8(b'n');
        let PgOutput::Update { old, new, .. } = decode(b.freeze()).unwrap() else {
            panic!("not an update")
        };
        assert_eq!(old.unwrap().0, vec![Datum::UnchangedToast]);
        assert_eq!(new.0, vec![Datum::Null]);
    }

    #[test]
    fn truncated_messages_are_errors_not_panics() {
        let full = relation_msg();
        for cut in 0..full.len() {
            assert!(decode(full.slice(..cut)).is_err(), "cut at {cut}");
        }
    }
}
