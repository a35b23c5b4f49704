//! File-system helpers: error mapping, fsync of files and directories, atomic replace.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use datanexus_store::{Error, Result};

/// Maps an I/O error of `op` on `path`.
pub(crate) fn io_err(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.to_path_buf();
    move |source| Error::Io { op, path, source }
}

/// Maps a failure to decode `path`.
pub(crate) fn corrupt(path: &Path) -> impl FnOnce(String) -> Error {
    let path = path.to_path_buf();
    move |reason| Error::Corrupt { path, reason }
}

/// Fsyncs a directory so renames and deletions in it are durable.
///
/// # Errors
/// I/O failures.
pub(crate) fn fsync_dir(dir: &Path) -> Result<()> {
    let d = File::open(dir).map_err(io_err("open directory", dir))?;
    d.sync_all().map_err(io_err("fsync directory", dir))
}

/// Writes `bytes` to `path` atomically: temp file, fsync, rename, directory fsync.
///
/// # Errors
/// I/O failures; `path` then still holds its previous content.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = tmp_path(path);
    let mut f = File::create(&tmp).map_err(io_err("create", &tmp))?;
    f.write_all(bytes).map_err(io_err("write", &tmp))?;
    f.sync_all().map_err(io_err("fsync", &tmp))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io_err("rename", &tmp))?;
    fsync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// `path` with `.tmp` appended.
pub(crate) fn tmp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".tmp");
    PathBuf::from(s)
}

/// Deletes `path`, logging (not failing) when that is impossible: used for files no
/// manifest names any more, whose only cost is disk space.
pub(crate) fn remove_quietly(path: &Path) {
    if let Err(e) = std::fs::remove_file(path)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), error = %e, "could not delete an unused store file");
    }
}
