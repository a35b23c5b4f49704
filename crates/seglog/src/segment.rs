//! Segment files: the on-disk format, the sparse index, recovery scanning and reads.
//!
//! # On-disk format
//!
//! A partition directory holds segment files named `<base>.log`, where `<base>` is the
//! offset of the segment's first record written as 20 zero-padded decimal digits
//! (`00000000000000000000.log`). A segment is a plain concatenation of batches, with no
//! file header. All integers are little-endian. A batch is:
//!
//! ```text
//! offset size field
//!   0     4   magic              b"DNB1" ("DNB" + format version 1)
//!   4     4   crc                crc32c (Castagnoli) of bytes 8..len of the batch
//!   8     4   len                total batch length in bytes, header included
//!  12     8   base_offset        offset of the first record
//!  20     4   count              number of records (>= 1)
//!  24     8   max_timestamp_ms   largest record timestamp (i64), for age retention
//!  32     .   records            `count` records, back to back
//! ```
//!
//! and a record is:
//!
//! ```text
//!   0     8   timestamp_ms       i64
//!   8     4   key_len            u32, 0xFFFF_FFFF = no key
//!  12     4   value_len          u32
//!  16     .   key bytes, then value bytes
//! ```
//!
//! The crc covers everything but the magic and itself, so the length, offsets, timestamps
//! and payloads are all protected. `len` is at most 64 MiB.
//!
//! # Invariants
//!
//! - Offsets are dense within a segment: the first batch has `base_offset == <base>`,
//!   every following batch starts at the previous batch's `base_offset + count`; a
//!   segment's `<base>` equals the previous segment's end offset, except after a hole
//!   recovery left (see below), where it is greater.
//! - Only the last segment of a partition (the *active* one) is written to; a segment is
//!   *sealed* when the next one is created (roll at `max_segment_bytes`).
//! - A batch is written with a single positional write; a batch that is not entirely
//!   valid (short, bad magic, bad length, bad crc, bad record framing, non-contiguous
//!   offset) ends the valid part of the partition.
//!
//! # Recovery
//!
//! On open every segment is scanned in full and every batch checked (crc included). At the
//! first invalid batch the segment is truncated to the end of the last valid batch (logged
//! at warn with the number of bytes dropped). Offsets are never reused, because a consumer
//! group may have committed past them:
//!
//! - valid batches further in the truncated segment (found by resynchronising on the batch
//!   magic and checking each crc) are kept, moved to segments of their own;
//! - later segments are kept;
//! - the offsets between the valid data (the corrupt range) are a hole, logged at warn and
//!   counted ([`crate::Log::recovery_losses`]); reads skip it;
//! - the next append uses an offset after everything found, and after every group's
//!   committed offset (the corruption may have taken the tail).
//!
//! A torn tail (the normal result of a crash during a write) leaves nothing to salvage
//! and no hole: the next append continues at the end of the valid data. Every change is
//! fsynced before the log opens.
//!
//! # Index
//!
//! The sparse index (offset -> byte position, one entry per `index_interval_bytes` of
//! data) lives in memory only: it is rebuilt by the recovery scan on open and extended by
//! appends. Reads seek to the closest entry at or before the wanted offset and scan forward,
//! checking each batch's crc again (a batch that went bad after open is reported as
//! [`Error::Corrupt`], never served).

pub(crate) mod codec;
mod crc;

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use crate::{Error, Result, StoredRecord};
use codec::{BatchHeader, HEADER_LEN};

/// Bytes read per `pread` when serving reads.
const READ_CHUNK: usize = 256 << 10;

/// File name of the segment starting at `base`.
pub(crate) fn file_name(base: u64) -> String {
    format!("{base:020}.log")
}

/// Parses a segment file name back into its base offset.
pub(crate) fn parse_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".log")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[derive(Clone, Copy, Debug)]
struct IndexEntry {
    offset: u64,
    position: u64,
}

/// One segment file and its in-memory metadata.
#[derive(Debug)]
pub(crate) struct Segment {
    pub(crate) base: u64,
    /// Offset following the last record written.
    pub(crate) next: u64,
    /// Bytes of valid batches (the write position).
    pub(crate) size: u64,
    pub(crate) max_timestamp_ms: i64,
    pub(crate) path: PathBuf,
    pub(crate) file: Arc<File>,
    index: Vec<IndexEntry>,
}

/// What recovery found in a segment.
#[derive(Debug)]
pub(crate) struct Recovered {
    pub(crate) segment: Segment,
    /// Bytes dropped from the end of the file (0 when the file was clean).
    pub(crate) truncated: u64,
    /// Why the scan stopped early, if it did.
    pub(crate) reason: Option<String>,
    /// Valid batches found *after* the invalid range (the framing resynchronised on the
    /// next batch magic with a sane length and a good crc), each run of contiguous
    /// offsets moved to a segment of its own (written and fsynced before this file was
    /// truncated), in offset order.
    pub(crate) salvaged: Vec<Segment>,
}

fn open_rw(path: &Path, create_new: bool) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(create_new)
        .open(path)
        .map_err(|e| Error::io("open", path, e))
}

impl Segment {
    /// Creates a new empty segment file starting at `base` in `dir`.
    pub(crate) fn create(dir: &Path, base: u64) -> Result<Self> {
        let path = dir.join(file_name(base));
        let file = open_rw(&path, true)?;
        Ok(Self {
            base,
            next: base,
            size: 0,
            max_timestamp_ms: i64::MIN,
            path,
            file: Arc::new(file),
            index: Vec::new(),
        })
    }

    /// Opens the segment at `path`, checks every batch, and truncates the file after the
    /// last valid one.
    pub(crate) fn recover(path: PathBuf, base: u64, index_interval: u32) -> Result<Recovered> {
        let file = open_rw(&path, false)?;
        let file_len = file
            .metadata()
            .map_err(|e| Error::io("stat", &path, e))?
            .len();
        let mut segment = Self {
            base,
            next: base,
            size: 0,
            max_timestamp_ms: i64::MIN,
            path,
            file: Arc::new(file),
            index: Vec::new(),
        };
        let reason = segment.scan(file_len, index_interval)?;
        let runs = match reason {
            Some(_) => segment.salvage(file_len)?,
            None => Vec::new(),
        };
        // The valid batches are safe in their own files before this one loses them.
        let dir = segment
            .path
            .parent()
            .unwrap_or(Path::new("."))
            .to_path_buf();
        let mut salvaged = Vec::with_capacity(runs.len());
        for (run_base, bytes) in runs {
            salvaged.push(Self::create_with(&dir, run_base, &bytes, index_interval)?);
        }
        if !salvaged.is_empty() {
            File::open(&dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| Error::io("fsync directory", &dir, e))?;
        }
        let truncated = file_len - segment.size;
        if truncated > 0 {
            segment
                .file
                .set_len(segment.size)
                .and_then(|()| segment.file.sync_all())
                .map_err(|e| Error::io("truncate", &segment.path, e))?;
        }
        Ok(Recovered {
            segment,
            truncated,
            reason,
            salvaged,
        })
    }

    /// After an invalid batch at `self.size`: looks for valid batches further on (a batch
    /// magic at any position, a sane length, a good crc, offsets past the valid part and
    /// past the previous one found) and returns them in runs of contiguous offsets.
    fn salvage(&self, file_len: u64) -> Result<Vec<(u64, Vec<u8>)>> {
        let start = self.size.saturating_add(1);
        if start >= file_len {
            return Ok(Vec::new());
        }
        let len = usize::try_from(file_len - start)
            .map_err(|_| Error::io("read", &self.path, std::io::ErrorKind::FileTooLarge.into()))?;
        let mut tail = vec![0u8; len];
        self.file
            .read_exact_at(&mut tail, start)
            .map_err(|e| Error::io("read", &self.path, e))?;
        let mut runs: Vec<(u64, u64, Vec<u8>)> = Vec::new();
        let mut at = 0usize;
        while let Some(found) = tail
            .get(at..)
            .and_then(|rest| rest.windows(4).position(|w| w == codec::MAGIC))
        {
            let pos = at + found;
            let rest = tail.get(pos..).unwrap_or_default();
            let floor = runs.last().map_or(self.next, |(_, next, _)| *next);
            let batch = codec::parse_header(rest)
                .ok()
                .filter(|h| h.base_offset >= floor)
                .and_then(|h| rest.get(..h.len as usize))
                .and_then(|bytes| codec::check(bytes).ok().map(|h| (h, bytes)));
            match batch {
                Some((header, bytes)) => {
                    match runs.last_mut() {
                        Some((_, next, run)) if *next == header.base_offset => {
                            run.extend_from_slice(bytes);
                            *next = header.next_offset();
                        }
                        _ => runs.push((header.base_offset, header.next_offset(), bytes.to_vec())),
                    }
                    at = pos + bytes.len();
                }
                None => at = pos + 1,
            }
        }
        Ok(runs
            .into_iter()
            .map(|(base, _, bytes)| (base, bytes))
            .collect())
    }

    /// Creates the segment starting at `base` in `dir` holding `batches` (whole valid
    /// batches with contiguous offsets from `base`), fsynced.
    pub(crate) fn create_with(
        dir: &Path,
        base: u64,
        batches: &[u8],
        index_interval: u32,
    ) -> Result<Self> {
        let path = dir.join(file_name(base));
        // Not `create_new`: a recovery interrupted by a crash may have written it already.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(|e| Error::io("open", &path, e))?;
        file.write_all_at(batches, 0)
            .and_then(|()| file.sync_all())
            .map_err(|e| Error::io("write", &path, e))?;
        drop(file);
        let rec = Self::recover(path, base, index_interval)?;
        Ok(rec.segment)
    }

    /// Scans batches from the start; stops at the first invalid one and returns why.
    fn scan(&mut self, file_len: u64, index_interval: u32) -> Result<Option<String>> {
        let file = Arc::clone(&self.file);
        let mut reader = BufReader::with_capacity(1 << 20, &*file);
        let mut buf = Vec::new();
        loop {
            let remaining = file_len - self.size;
            if remaining == 0 {
                return Ok(None);
            }
            buf.resize(HEADER_LEN.min(remaining as usize), 0);
            read_exact(&mut reader, &mut buf, &self.path)?;
            let header = match codec::parse_header(&buf) {
                Ok(h) => h,
                Err(e) => return Ok(Some(e.to_string())),
            };
            if u64::from(header.len) > remaining {
                return Ok(Some(format!(
                    "torn batch: {} bytes declared, {remaining} left in the file",
                    header.len
                )));
            }
            if header.base_offset != self.next {
                return Ok(Some(format!(
                    "batch base offset {} where {} was expected",
                    header.base_offset, self.next
                )));
            }
            buf.resize(header.len as usize, 0);
            read_exact(
                &mut reader,
                buf.get_mut(HEADER_LEN..).unwrap_or_default(),
                &self.path,
            )?;
            if let Err(e) = codec::check(&buf) {
                return Ok(Some(e.to_string()));
            }
            self.push_batch(&header, self.size, index_interval);
        }
    }

    /// Records a batch just written (or scanned) at `position`.
    pub(crate) fn push_batch(&mut self, header: &BatchHeader, position: u64, interval: u32) {
        let due = self
            .index
            .last()
            .is_none_or(|last| position.saturating_sub(last.position) >= u64::from(interval));
        if due {
            self.index.push(IndexEntry {
                offset: header.base_offset,
                position,
            });
        }
        self.next = header.next_offset();
        self.size = position + u64::from(header.len);
        self.max_timestamp_ms = self.max_timestamp_ms.max(header.max_timestamp_ms);
    }

    /// Byte position of the batch holding `offset`, or of a batch before it.
    pub(crate) fn position_for(&self, offset: u64) -> u64 {
        let i = self.index.partition_point(|e| e.offset <= offset);
        i.checked_sub(1)
            .and_then(|i| self.index.get(i))
            .map_or(0, |e| e.position)
    }
}

fn read_exact(reader: &mut impl Read, buf: &mut [u8], path: &Path) -> Result<()> {
    reader
        .read_exact(buf)
        .map_err(|e| Error::io("read", path, e))
}

/// Where and how much of one segment a read covers; taken under the partition lock, used
/// without it.
#[derive(Clone, Debug)]
pub(crate) struct ReadSpan {
    pub(crate) file: Arc<File>,
    pub(crate) path: PathBuf,
    pub(crate) position: u64,
    pub(crate) end: u64,
}

impl ReadSpan {
    /// Appends records with offsets in `from..until` to `out` until it holds `max`.
    pub(crate) fn read(
        &self,
        from: u64,
        until: u64,
        max: usize,
        out: &mut Vec<StoredRecord>,
    ) -> Result<()> {
        let mut pos = self.position;
        while pos < self.end && out.len() < max {
            let want = usize::try_from(self.end - pos).map_or(READ_CHUNK, |n| n.min(READ_CHUNK));
            let mut chunk = self.pread(pos, want)?;
            let first = codec::parse_header(&chunk).map_err(|e| self.corrupt(pos, &e))?;
            if first.len as usize > chunk.len() {
                chunk = self.pread(pos, first.len as usize)?;
            }
            let mut at = 0usize;
            while let Some(rest) = chunk.get(at..) {
                let Ok(header) = codec::parse_header(rest) else {
                    break;
                };
                let end = at + header.len as usize;
                if end > chunk.len() {
                    break;
                }
                let batch_pos = pos + at as u64;
                let header = codec::check(rest).map_err(|e| self.corrupt(batch_pos, &e))?;
                if header.base_offset >= until {
                    return Ok(());
                }
                let batch = chunk.slice(at..end);
                codec::decode_into(&batch, &header, from, until, max, out)
                    .map_err(|e| self.corrupt(batch_pos, &e))?;
                at = end;
                if out.len() >= max {
                    return Ok(());
                }
            }
            if at == 0 {
                let e = codec::DecodeError::BadLength(first.len);
                return Err(self.corrupt(pos, &e));
            }
            pos += at as u64;
        }
        Ok(())
    }

    fn pread(&self, pos: u64, len: usize) -> Result<Bytes> {
        let mut buf = vec![0u8; len];
        self.file
            .read_exact_at(&mut buf, pos)
            .map_err(|e| Error::io("read", &self.path, e))?;
        Ok(Bytes::from(buf))
    }

    fn corrupt(&self, position: u64, e: &codec::DecodeError) -> Error {
        Error::Corrupt {
            path: self.path.clone(),
            position,
            reason: e.to_string(),
        }
    }
}
