//! Encoding and decoding of record batches (see the format in the parent module).

use bytes::Bytes;

use crate::{Record, StoredRecord};

/// Magic bytes opening every batch; the trailing `1` is the format version.
pub(crate) const MAGIC: [u8; 4] = *b"DNB1";
/// Size of the fixed batch header.
pub(crate) const HEADER_LEN: usize = 32;
/// Size of the fixed per-record header.
pub(crate) const RECORD_HEADER_LEN: usize = 16;
/// Largest encoded batch, header included.
pub(crate) const MAX_BATCH_BYTES: usize = 64 << 20;
/// `key_len` value meaning "no key".
const NO_KEY: u32 = u32::MAX;

/// The decoded fixed header of a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BatchHeader {
    pub(crate) crc: u32,
    pub(crate) len: u32,
    pub(crate) base_offset: u64,
    pub(crate) count: u32,
    pub(crate) max_timestamp_ms: i64,
}

impl BatchHeader {
    /// Offset following the last record of the batch.
    pub(crate) fn next_offset(&self) -> u64 {
        self.base_offset.saturating_add(u64::from(self.count))
    }
}

/// Why bytes are not a valid batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum DecodeError {
    /// Fewer bytes than the header or the declared length.
    Incomplete {
        have: usize,
        need: usize,
    },
    BadMagic([u8; 4]),
    BadLength(u32),
    BadCrc {
        stored: u32,
        computed: u32,
    },
    BadRecords(&'static str),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Incomplete { have, need } => {
                write!(f, "incomplete batch: {have} bytes of {need}")
            }
            Self::BadMagic(m) => write!(f, "bad magic {m:02x?}"),
            Self::BadLength(l) => write!(f, "bad batch length {l}"),
            Self::BadCrc { stored, computed } => {
                write!(
                    f,
                    "crc mismatch: stored {stored:#010x}, computed {computed:#010x}"
                )
            }
            Self::BadRecords(why) => write!(f, "malformed records: {why}"),
        }
    }
}

/// A batch encoded by [`encode`], waiting for its base offset ([`seal`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Encoded {
    pub(crate) count: u32,
    pub(crate) max_timestamp_ms: i64,
    records_crc: u32,
}

/// Encoded size of a batch of `records`.
pub(crate) fn encoded_len(records: &[Record]) -> u64 {
    records.iter().fold(HEADER_LEN as u64, |acc, r| {
        let key = r.key.as_ref().map_or(0, Bytes::len);
        acc + (RECORD_HEADER_LEN + key + r.value.len()) as u64
    })
}

/// Encodes `records` into `buf` (cleared first), leaving the base offset and crc to [`seal`].
///
/// The caller checks the size with [`encoded_len`] first; `records` must be non-empty and
/// hold fewer than `u32::MAX` records with keys shorter than `u32::MAX` bytes (guaranteed by
/// [`MAX_BATCH_BYTES`]).
pub(crate) fn encode(records: &[Record], buf: &mut Vec<u8>) -> Encoded {
    buf.clear();
    buf.reserve(usize::try_from(encoded_len(records)).unwrap_or(0));
    buf.extend_from_slice(&[0u8; HEADER_LEN]);
    let mut max_ts = i64::MIN;
    for r in records {
        max_ts = max_ts.max(r.timestamp_ms);
        let key_len = r.key.as_ref().map_or(NO_KEY, |k| len_u32(k.len()));
        buf.extend_from_slice(&r.timestamp_ms.to_le_bytes());
        buf.extend_from_slice(&key_len.to_le_bytes());
        buf.extend_from_slice(&len_u32(r.value.len()).to_le_bytes());
        if let Some(k) = &r.key {
            buf.extend_from_slice(k);
        }
        buf.extend_from_slice(&r.value);
    }
    let records_crc = crc32c::crc32c(buf.get(HEADER_LEN..).unwrap_or_default());
    let count = len_u32(records.len());
    let len = len_u32(buf.len());
    put(buf, 0, &MAGIC);
    put(buf, 8, &len.to_le_bytes());
    put(buf, 20, &count.to_le_bytes());
    put(buf, 24, &max_ts.to_le_bytes());
    Encoded {
        count,
        max_timestamp_ms: max_ts,
        records_crc,
    }
}

/// Writes the base offset and the crc into a batch produced by [`encode`].
pub(crate) fn seal(buf: &mut [u8], encoded: &Encoded, base_offset: u64) {
    put(buf, 12, &base_offset.to_le_bytes());
    let header_crc = crc32c::crc32c(buf.get(8..HEADER_LEN).unwrap_or_default());
    let records_len = buf.len().saturating_sub(HEADER_LEN);
    let crc = super::crc::combine(header_crc, encoded.records_crc, records_len);
    put(buf, 4, &crc.to_le_bytes());
}

fn len_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn put(buf: &mut [u8], at: usize, bytes: &[u8]) {
    if let Some(dst) = buf.get_mut(at..at + bytes.len()) {
        dst.copy_from_slice(bytes);
    }
}

fn le_u32(buf: &[u8], at: usize) -> u32 {
    buf.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u32::from_le_bytes)
}

fn le_u64(buf: &[u8], at: usize) -> u64 {
    buf.get(at..at + 8)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

/// Parses and checks the fixed header at the start of `buf` (magic and length bounds only;
/// the crc needs the whole batch, see [`check`]).
pub(crate) fn parse_header(buf: &[u8]) -> Result<BatchHeader, DecodeError> {
    let Some(head) = buf.get(..HEADER_LEN) else {
        return Err(DecodeError::Incomplete {
            have: buf.len(),
            need: HEADER_LEN,
        });
    };
    let magic: [u8; 4] = head
        .get(..4)
        .and_then(|m| m.try_into().ok())
        .unwrap_or_default();
    if magic != MAGIC {
        return Err(DecodeError::BadMagic(magic));
    }
    let len = le_u32(head, 8);
    let count = le_u32(head, 20);
    let min = HEADER_LEN + RECORD_HEADER_LEN;
    if (len as usize) < min || len as usize > MAX_BATCH_BYTES || count == 0 {
        return Err(DecodeError::BadLength(len));
    }
    Ok(BatchHeader {
        crc: le_u32(head, 4),
        len,
        base_offset: le_u64(head, 12),
        count,
        max_timestamp_ms: le_u64(head, 24) as i64,
    })
}

/// Fully validates the batch at the start of `buf`: header, crc, and record framing.
pub(crate) fn check(buf: &[u8]) -> Result<BatchHeader, DecodeError> {
    let header = parse_header(buf)?;
    let len = header.len as usize;
    let Some(batch) = buf.get(..len) else {
        return Err(DecodeError::Incomplete {
            have: buf.len(),
            need: len,
        });
    };
    let computed = crc32c::crc32c(batch.get(8..).unwrap_or_default());
    if computed != header.crc {
        return Err(DecodeError::BadCrc {
            stored: header.crc,
            computed,
        });
    }
    let mut n = 0u32;
    for rec in RecordIter::new(batch) {
        rec?;
        n += 1;
    }
    if n != header.count {
        return Err(DecodeError::BadRecords("record count differs from header"));
    }
    Ok(header)
}

/// Decodes records of a checked `batch` (exactly one batch) with offsets in `from..until`,
/// appending at most `max - out.len()` of them to `out`. Record bytes are slices of `batch`.
pub(crate) fn decode_into(
    batch: &Bytes,
    header: &BatchHeader,
    from: u64,
    until: u64,
    max: usize,
    out: &mut Vec<StoredRecord>,
) -> Result<(), DecodeError> {
    for (i, rec) in RecordIter::new(batch).enumerate() {
        let rec = rec?;
        let offset = header.base_offset + i as u64;
        if offset < from {
            continue;
        }
        if offset >= until || out.len() >= max {
            break;
        }
        out.push(StoredRecord {
            offset,
            key: rec.key.map(|r| batch.slice(r)),
            value: batch.slice(rec.value),
            timestamp_ms: rec.timestamp_ms,
        });
    }
    Ok(())
}

/// Splits `buf` into its longest prefix of valid, contiguous batches; returns their records
/// and the prefix length. Used by tests, fuzzing and as the reference for recovery scanning.
pub(crate) fn decode_prefix(buf: &Bytes) -> (Vec<StoredRecord>, usize) {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while let Some(rest) = buf.get(pos..) {
        let Ok(header) = check(rest) else { break };
        let end = pos + header.len as usize;
        let batch = buf.slice(pos..end);
        if decode_into(&batch, &header, 0, u64::MAX, usize::MAX, &mut out).is_err() {
            break;
        }
        pos = end;
    }
    (out, pos)
}

struct RawRecord {
    timestamp_ms: i64,
    key: Option<std::ops::Range<usize>>,
    value: std::ops::Range<usize>,
}

/// Iterates over the records of one batch (`batch` starts at the header, ends at its end).
struct RecordIter<'a> {
    batch: &'a [u8],
    pos: usize,
}

impl<'a> RecordIter<'a> {
    fn new(batch: &'a [u8]) -> Self {
        Self {
            batch,
            pos: HEADER_LEN,
        }
    }
}

impl Iterator for RecordIter<'_> {
    type Item = Result<RawRecord, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.batch.len() {
            return None;
        }
        let Some(head) = self.batch.get(self.pos..self.pos + RECORD_HEADER_LEN) else {
            self.pos = self.batch.len();
            return Some(Err(DecodeError::BadRecords("truncated record header")));
        };
        let timestamp_ms = le_u64(head, 0) as i64;
        let key_len = le_u32(head, 8);
        let value_len = le_u32(head, 12) as usize;
        let mut at = self.pos + RECORD_HEADER_LEN;
        let key = (key_len != NO_KEY).then(|| {
            let r = at..at.saturating_add(key_len as usize);
            at = r.end;
            r
        });
        let value = at..at.saturating_add(value_len);
        if value.end > self.batch.len() {
            self.pos = self.batch.len();
            return Some(Err(DecodeError::BadRecords("record overruns the batch")));
        }
        self.pos = value.end;
        Some(Ok(RawRecord {
            timestamp_ms,
            key,
            value,
        }))
    }
}

#[cfg(test)]
mod tests;
