//! Stream entry ids and the parsing of Redis stream replies.
//!
//! Replies are read from [`redis::Value`] by hand (RESP2 flat arrays; RESP3 maps are
//! accepted too), so that a reply shape we did not expect becomes an
//! [`Error::Internal`] naming the command, never a panic.

use std::fmt;

use redis::Value;

use crate::{Bytes, Error, Position, Result};

/// A stream entry id `ms-seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) struct EntryId {
    pub(super) ms: u64,
    pub(super) seq: u64,
}

impl EntryId {
    /// `0-0`: before every entry.
    pub(super) const ZERO: EntryId = EntryId { ms: 0, seq: 0 };

    /// Parses `ms-seq` (or a bare `ms`, meaning `ms-0`).
    pub(super) fn parse(raw: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(raw).ok()?;
        let (ms, seq) = text.split_once('-').unwrap_or((text, "0"));
        Some(EntryId {
            ms: ms.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    }

    /// The smallest id greater than this one.
    pub(super) fn successor(self) -> Self {
        match self.seq.checked_add(1) {
            Some(seq) => EntryId { ms: self.ms, seq },
            None => EntryId {
                ms: self.ms.saturating_add(1),
                seq: 0,
            },
        }
    }

    pub(super) fn position(self) -> Position {
        Position::StreamId {
            ms: self.ms,
            seq: self.seq,
        }
    }

    pub(super) fn from_position(position: Position) -> Option<Self> {
        match position {
            Position::StreamId { ms, seq } => Some(EntryId { ms, seq }),
            Position::Offset(_) => None,
        }
    }
}

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// The fields of a record: `v` (value), `k` (key, optional), `ts` (timestamp in ms).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Fields {
    pub(super) key: Option<Bytes>,
    pub(super) value: Bytes,
    pub(super) timestamp_ms: i64,
}

/// A stream entry; `fields` is `None` when the entry was deleted (trimmed) while still
/// pending.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Entry {
    pub(super) id: EntryId,
    pub(super) fields: Option<Fields>,
}

/// A group as `XINFO GROUPS` describes it.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct GroupInfo {
    pub(super) name: Vec<u8>,
    pub(super) pending: u64,
    pub(super) last_delivered: EntryId,
    /// `None` when Redis cannot tell (entries deleted in the middle of the stream).
    pub(super) lag: Option<u64>,
}

/// A group member as `XINFO CONSUMERS` describes it.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct ConsumerInfo {
    pub(super) name: String,
    pub(super) pending: u64,
}

fn unexpected(what: &str, value: &Value) -> Error {
    let shape = match value {
        Value::Nil => "nil",
        Value::Int(_) => "an integer",
        Value::BulkString(_) | Value::SimpleString(_) | Value::Okay => "a string",
        Value::Array(_) | Value::Set(_) => "an array",
        Value::Map(_) => "a map",
        Value::ServerError(_) => "an error",
        _ => "another type",
    };
    Error::Internal(format!("unexpected redis reply to {what}: {shape}"))
}

pub(super) fn bytes(value: &Value) -> Option<&[u8]> {
    match value {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        Value::VerbatimString { text, .. } => Some(text.as_bytes()),
        _ => None,
    }
}

pub(super) fn int(value: &Value) -> Option<i64> {
    match value {
        Value::Int(i) => Some(*i),
        other => std::str::from_utf8(bytes(other)?).ok()?.parse().ok(),
    }
}

fn items(value: &Value) -> Option<&[Value]> {
    match value {
        Value::Array(items) | Value::Set(items) => Some(items),
        _ => None,
    }
}

/// The key/value pairs of a flat array (RESP2) or a map (RESP3).
fn pairs(value: &Value) -> Option<Vec<(&Value, &Value)>> {
    match value {
        Value::Map(map) => Some(map.iter().map(|(k, v)| (k, v)).collect()),
        other => Some(
            items(other)?
                .chunks_exact(2)
                .filter_map(|pair| match pair {
                    [k, v] => Some((k, v)),
                    _ => None,
                })
                .collect(),
        ),
    }
}

fn field<'a>(pairs: &[(&'a Value, &'a Value)], name: &str) -> Option<&'a Value> {
    pairs
        .iter()
        .find(|(k, _)| bytes(k) == Some(name.as_bytes()))
        .map(|(_, v)| *v)
}

/// An entry id reply (`XADD`).
pub(super) fn entry_id(what: &str, value: &Value) -> Result<EntryId> {
    bytes(value)
        .and_then(EntryId::parse)
        .ok_or_else(|| unexpected(what, value))
}

fn fields(value: &Value) -> Option<Fields> {
    let pairs = pairs(value)?;
    let to_bytes = |v: &Value| bytes(v).map(Bytes::copy_from_slice);
    Some(Fields {
        key: field(&pairs, "k").and_then(to_bytes),
        // An entry written by another tool without `v` is delivered empty rather than
        // blocking the group forever.
        value: field(&pairs, "v").and_then(to_bytes).unwrap_or_default(),
        timestamp_ms: field(&pairs, "ts").and_then(int).unwrap_or(0),
    })
}

/// One `[id, [field, value, ...]]` entry (fields nil for a deleted entry).
fn entry(what: &str, value: &Value) -> Result<Entry> {
    let parts = items(value).ok_or_else(|| unexpected(what, value))?;
    let (id, body) = match parts {
        [id, body] => (id, body),
        _ => return Err(unexpected(what, value)),
    };
    Ok(Entry {
        id: entry_id(what, id)?,
        fields: match body {
            Value::Nil => None,
            body => Some(fields(body).ok_or_else(|| unexpected(what, body))?),
        },
    })
}

/// An array of entries (`XCLAIM`, the middle of `XAUTOCLAIM`); nil elements (entries
/// deleted before Redis 7) are skipped.
pub(super) fn entries(what: &str, value: &Value) -> Result<Vec<Entry>> {
    match value {
        Value::Nil => Ok(Vec::new()),
        other => items(other)
            .ok_or_else(|| unexpected(what, other))?
            .iter()
            .filter(|v| !matches!(v, Value::Nil))
            .map(|v| entry(what, v))
            .collect(),
    }
}

/// `XAUTOCLAIM`: the next cursor and the claimed entries.
pub(super) fn autoclaim(value: &Value) -> Result<(EntryId, Vec<Entry>)> {
    const WHAT: &str = "XAUTOCLAIM";
    match items(value) {
        Some([cursor, claimed, ..]) => Ok((entry_id(WHAT, cursor)?, entries(WHAT, claimed)?)),
        _ => Err(unexpected(WHAT, value)),
    }
}

/// The extended form of `XPENDING`: `(id, delivery count)` per pending entry.
pub(super) fn pending(value: &Value) -> Result<Vec<(EntryId, u32)>> {
    const WHAT: &str = "XPENDING";
    items(value)
        .ok_or_else(|| unexpected(WHAT, value))?
        .iter()
        .map(|row| match items(row) {
            Some([id, _consumer, _idle, count, ..]) => Ok((
                entry_id(WHAT, id)?,
                int(count)
                    .and_then(|c| u32::try_from(c).ok())
                    .ok_or_else(|| unexpected(WHAT, count))?,
            )),
            _ => Err(unexpected(WHAT, row)),
        })
        .collect()
}

/// The summary form of `XPENDING`: the smallest pending id, if any.
pub(super) fn oldest_pending(value: &Value) -> Result<Option<EntryId>> {
    const WHAT: &str = "XPENDING";
    match items(value) {
        Some([count, min, ..]) => match int(count) {
            Some(0) => Ok(None),
            Some(_) => Ok(Some(entry_id(WHAT, min)?)),
            None => Err(unexpected(WHAT, count)),
        },
        _ => Err(unexpected(WHAT, value)),
    }
}

/// `XINFO GROUPS`.
pub(super) fn groups(value: &Value) -> Result<Vec<GroupInfo>> {
    const WHAT: &str = "XINFO GROUPS";
    items(value)
        .ok_or_else(|| unexpected(WHAT, value))?
        .iter()
        .map(|group| {
            let pairs = pairs(group).ok_or_else(|| unexpected(WHAT, group))?;
            let get = |name: &str| field(&pairs, name).ok_or_else(|| unexpected(WHAT, group));
            Ok(GroupInfo {
                name: bytes(get("name")?)
                    .ok_or_else(|| unexpected(WHAT, group))?
                    .to_vec(),
                pending: int(get("pending")?)
                    .and_then(|p| u64::try_from(p).ok())
                    .ok_or_else(|| unexpected(WHAT, group))?,
                last_delivered: entry_id(WHAT, get("last-delivered-id")?)?,
                lag: field(&pairs, "lag")
                    .and_then(int)
                    .and_then(|l| u64::try_from(l).ok()),
            })
        })
        .collect()
}

/// `XINFO CONSUMERS`.
pub(super) fn consumers(value: &Value) -> Result<Vec<ConsumerInfo>> {
    const WHAT: &str = "XINFO CONSUMERS";
    items(value)
        .ok_or_else(|| unexpected(WHAT, value))?
        .iter()
        .map(|consumer| {
            let pairs = pairs(consumer).ok_or_else(|| unexpected(WHAT, consumer))?;
            let name = field(&pairs, "name")
                .and_then(bytes)
                .ok_or_else(|| unexpected(WHAT, consumer))?;
            Ok(ConsumerInfo {
                name: String::from_utf8_lossy(name).into_owned(),
                pending: field(&pairs, "pending")
                    .and_then(int)
                    .and_then(|p| u64::try_from(p).ok())
                    .ok_or_else(|| unexpected(WHAT, consumer))?,
            })
        })
        .collect()
}

/// The membership script: the group's generation and its members.
pub(super) fn membership(value: &Value) -> Result<(i64, Vec<String>)> {
    const WHAT: &str = "the membership script";
    match items(value) {
        Some([generation, members]) => Ok((
            int(generation).ok_or_else(|| unexpected(WHAT, generation))?,
            items(members)
                .ok_or_else(|| unexpected(WHAT, members))?
                .iter()
                .map(|m| {
                    bytes(m)
                        .map(|b| String::from_utf8_lossy(b).into_owned())
                        .ok_or_else(|| unexpected(WHAT, m))
                })
                .collect::<Result<_>>()?,
        )),
        _ => Err(unexpected(WHAT, value)),
    }
}

/// What the fenced read found in one partition: `None` when this member does not own
/// it, else the new entries and, when there were none, the id of the stream's last
/// entry (`0-0` for an empty stream).
pub(super) type FencedRead = Option<(Vec<Entry>, EntryId)>;

/// The fenced read script: the group's generation, then one result per partition asked.
pub(super) fn fenced_read(value: &Value) -> Result<(i64, Vec<FencedRead>)> {
    const WHAT: &str = "the read script";
    let all = items(value).ok_or_else(|| unexpected(WHAT, value))?;
    let (generation, parts) = all.split_first().ok_or_else(|| unexpected(WHAT, value))?;
    let generation = int(generation).ok_or_else(|| unexpected(WHAT, generation))?;
    let parts = parts
        .iter()
        .map(|part| match part {
            Value::Nil => Ok(None),
            other => match items(other) {
                Some([found, tail]) => Ok(Some((entries(WHAT, found)?, entry_id(WHAT, tail)?))),
                _ => Err(unexpected(WHAT, other)),
            },
        })
        .collect::<Result<_>>()?;
    Ok((generation, parts))
}

/// The recovery script: `None` when this member does not own the partition, else how
/// many pending entries the page listed, the last of them, and those claimed.
pub(super) fn recovered(value: &Value) -> Result<Option<(usize, EntryId, Vec<Entry>)>> {
    const WHAT: &str = "the recovery script";
    match value {
        Value::Nil => Ok(None),
        other => match items(other) {
            Some([listed, last, claimed]) => Ok(Some((
                int(listed)
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or_else(|| unexpected(WHAT, listed))?,
                entry_id(WHAT, last)?,
                entries(WHAT, claimed)?,
            ))),
            _ => Err(unexpected(WHAT, other)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn entry_ids_parse_print_and_order() {
        let id = EntryId::parse(b"1700000000000-7").expect("id");
        assert_eq!(
            id,
            EntryId {
                ms: 1_700_000_000_000,
                seq: 7
            }
        );
        assert_eq!(id.to_string(), "1700000000000-7");
        assert_eq!(EntryId::parse(b"5"), Some(EntryId { ms: 5, seq: 0 }));
        assert!(EntryId::parse(b"x-1").is_none());
        assert!(EntryId::parse(b"1-").is_none());
        assert!(
            EntryId {
                ms: 1,
                seq: u64::MAX
            } < EntryId {
                ms: 1,
                seq: u64::MAX
            }
            .successor()
        );
        assert_eq!(EntryId::from_position(id.position()), Some(id));
    }

    #[test]
    fn script_replies_parse_and_deleted_entries_have_no_fields() {
        let reply = Value::Array(vec![
            Value::Int(7),
            Value::Array(vec![
                Value::Array(vec![
                    Value::Array(vec![
                        bulk("1-0"),
                        Value::Array(vec![bulk("v"), bulk("x"), bulk("ts"), bulk("12")]),
                    ]),
                    Value::Array(vec![bulk("2-0"), Value::Nil]),
                ]),
                bulk("0-0"),
            ]),
            Value::Nil,
            Value::Array(vec![Value::Array(vec![]), bulk("5-1")]),
        ]);
        let (generation, parts) = fenced_read(&reply).expect("parse");
        assert_eq!(generation, 7);
        assert_eq!(parts.len(), 3);
        let (entries, _) = parts[0].as_ref().expect("owned");
        assert_eq!(
            entries[0].fields,
            Some(Fields {
                key: None,
                value: Bytes::from_static(b"x"),
                timestamp_ms: 12
            })
        );
        assert_eq!(entries[1].fields, None);
        assert!(parts[1].is_none(), "not owned");
        assert_eq!(parts[2], Some((Vec::new(), EntryId { ms: 5, seq: 1 })));
        let recovered_page = Value::Array(vec![Value::Int(2), bulk("3-0"), Value::Array(vec![])]);
        assert_eq!(
            recovered(&recovered_page).expect("parse"),
            Some((2, EntryId { ms: 3, seq: 0 }, Vec::new()))
        );
        assert_eq!(recovered(&Value::Nil).expect("nil"), None);
        let members = Value::Array(vec![
            Value::Int(3),
            Value::Array(vec![bulk("a"), bulk("b")]),
        ]);
        assert_eq!(
            membership(&members).expect("parse"),
            (3, vec!["a".to_owned(), "b".to_owned()])
        );
    }

    #[test]
    fn malformed_replies_are_errors_not_panics() {
        for bad in [Value::Int(3), Value::Array(vec![Value::Int(1)]), bulk("x")] {
            assert!(recovered(&bad).is_err());
            assert!(membership(&bad).is_err());
            assert!(autoclaim(&bad).is_err());
            assert!(pending(&bad).is_err());
            assert!(groups(&bad).is_err());
            assert!(consumers(&bad).is_err());
        }
        for bad in [
            Value::Int(3),
            Value::Array(vec![]),
            Value::Array(vec![Value::Int(1), Value::Int(2)]),
            Value::Array(vec![Value::Int(1), Value::Array(vec![Value::Nil])]),
        ] {
            assert!(fenced_read(&bad).is_err());
        }
        assert!(entry_id("XADD", &Value::Nil).is_err());
    }
}
