//! Persistence of a group's committed offsets.
//!
//! File `<topic>/groups/<group>.offsets`, little-endian:
//!
//! ```text
//! magic b"DNG1" | partitions u32 | committed u64 x partitions | crc32c u32 of all before
//! ```
//!
//! Written atomically: temp file, fsync, rename over the old file, fsync the directory
//! (the fsyncs are skipped under `FsyncPolicy::Never`). A file that fails validation makes
//! the log refuse to open ([`Error::Corrupt`]) rather than silently rewind or skip offsets.

use std::io::Write;
use std::path::Path;

use crate::partition::sync_dir;
use crate::{Error, Result};

const MAGIC: &[u8; 4] = b"DNG1";
/// File name suffix of committed-offset files.
pub(crate) const SUFFIX: &str = ".offsets";

/// Encodes committed offsets.
fn encode(committed: &[u64]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(12 + committed.len() * 8);
    buf.extend_from_slice(MAGIC);
    let n = u32::try_from(committed.len()).unwrap_or(u32::MAX);
    buf.extend_from_slice(&n.to_le_bytes());
    for c in committed {
        buf.extend_from_slice(&c.to_le_bytes());
    }
    let crc = crc32c::crc32c(&buf);
    buf.extend_from_slice(&crc.to_le_bytes());
    buf
}

/// Decodes committed offsets, `None` if the bytes are not a valid file.
fn decode(buf: &[u8]) -> Option<Vec<u64>> {
    let (body, crc) = buf.split_at_checked(buf.len().checked_sub(4)?)?;
    if crc32c::crc32c(body) != u32::from_le_bytes(crc.try_into().ok()?) {
        return None;
    }
    let (magic, rest) = body.split_at_checked(4)?;
    let (n, rest) = rest.split_at_checked(4)?;
    if magic != MAGIC {
        return None;
    }
    let n = u32::from_le_bytes(n.try_into().ok()?) as usize;
    if rest.len() != n.checked_mul(8)? {
        return None;
    }
    rest.chunks_exact(8)
        .map(|c| c.try_into().ok().map(u64::from_le_bytes))
        .collect()
}

/// Reads the committed offsets at `path`.
pub(crate) fn read(path: &Path) -> Result<Vec<u64>> {
    let buf = std::fs::read(path).map_err(|e| Error::io("read", path, e))?;
    decode(&buf).ok_or_else(|| Error::Corrupt {
        path: path.to_owned(),
        position: 0,
        reason: "invalid committed-offsets file".into(),
    })
}

/// Atomically replaces the committed offsets at `path`.
pub(crate) fn write(path: &Path, committed: &[u64], fsync: bool) -> Result<()> {
    let tmp = path.with_extension("offsets.tmp");
    let bytes = encode(committed);
    let mut file = std::fs::File::create(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
    file.write_all(&bytes)
        .map_err(|e| Error::io("write", &tmp, e))?;
    if fsync {
        file.sync_all().map_err(|e| Error::io("fsync", &tmp, e))?;
    }
    drop(file);
    std::fs::rename(&tmp, path).map_err(|e| Error::io("rename", &tmp, e))?;
    if fsync && let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn committed_offsets_round_trip_and_reject_flipped_bytes() {
        let committed = vec![0, 7, u64::MAX];
        let buf = encode(&committed);
        assert_eq!(decode(&buf), Some(committed));
        for i in 0..buf.len() {
            let mut bad = buf.clone();
            bad[i] ^= 0x40;
            assert_eq!(decode(&bad), None, "flip at byte {i} went unnoticed");
        }
        assert_eq!(decode(&buf[..buf.len() - 1]), None);
    }
}
