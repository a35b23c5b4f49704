//! The cursor file: `<state_dir>/cursors.json`,
//! `{"version": 1, "clients": {"<client id>": {"delivered": 7, "acked": 5}}}`.
//!
//! Written atomically: a temporary file in the same directory is written and fsynced,
//! renamed over the old file, and the directory is fsynced; a crash leaves the old or
//! the new file, never a torn one. It is written at most every second while cursors
//! change and on shutdown, so after a SIGKILL it may be up to a second stale: a
//! `nimbus` client may then see a few results again (at-least-once across crashes),
//! a native client resumes from its own `resume_after` anyway.
//!
//! An unreadable (corrupt) file is logged and ignored: starting from zero replays
//! stored results again, which is safe, never lossy.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

const FILE_NAME: &str = "cursors.json";
const TEMP_NAME: &str = "cursors.json.tmp";
const VERSION: u32 = 1;

/// A client's resume cursors (result seqs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Cursors {
    /// The highest seq handed to the transport (`nimbus` resume point).
    pub(crate) delivered: u64,
    /// The highest seq a native client acknowledged.
    pub(crate) acked: u64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CursorFile {
    version: u32,
    clients: BTreeMap<String, Cursors>,
}

/// Reads the cursors persisted in `dir` (none when there is no file yet).
///
/// # Errors
/// The file exists but cannot be read.
pub(super) async fn load(dir: PathBuf) -> Result<HashMap<String, Cursors>> {
    blocking(move || load_blocking(&dir)).await
}

/// Writes `cursors` to `dir` atomically.
///
/// # Errors
/// The directory or the file cannot be written.
pub(super) async fn save(dir: PathBuf, cursors: HashMap<String, Cursors>) -> Result<()> {
    blocking(move || save_blocking(&dir, cursors)).await
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(format!("cursor file task failed: {e}")))?
}

fn load_blocking(dir: &Path) -> Result<HashMap<String, Cursors>> {
    let path = dir.join(FILE_NAME);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(HashMap::new()),
        Err(e) => return Err(io_error(&path, &e)),
    };
    match serde_json::from_slice::<CursorFile>(&bytes) {
        Ok(file) if file.version == VERSION => Ok(file.clients.into_iter().collect()),
        Ok(file) => {
            tracing::warn!(path = %path.display(), version = file.version, "unknown cursor file version: ignoring it");
            Ok(HashMap::new())
        }
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "corrupt cursor file: ignoring it (stored results will be replayed again)");
            Ok(HashMap::new())
        }
    }
}

fn save_blocking(dir: &Path, cursors: HashMap<String, Cursors>) -> Result<()> {
    fs::create_dir_all(dir).map_err(|e| io_error(dir, &e))?;
    let file = CursorFile {
        version: VERSION,
        clients: cursors.into_iter().collect(),
    };
    let bytes = serde_json::to_vec(&file)
        .map_err(|e| Error::Internal(format!("cannot encode the cursors: {e}")))?;
    let temp = dir.join(TEMP_NAME);
    let mut out = File::create(&temp).map_err(|e| io_error(&temp, &e))?;
    out.write_all(&bytes).map_err(|e| io_error(&temp, &e))?;
    out.sync_all().map_err(|e| io_error(&temp, &e))?;
    drop(out);
    let path = dir.join(FILE_NAME);
    fs::rename(&temp, &path).map_err(|e| io_error(&path, &e))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error(dir, &e))
}

fn io_error(path: &Path, e: &std::io::Error) -> Error {
    Error::Io(std::io::Error::new(
        e.kind(),
        format!("{}: {e}", path.display()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn cursors_survive_a_save_and_load() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("sessions");
        assert!(load(state.clone()).await.unwrap().is_empty());
        let cursors = HashMap::from([(
            "c1".to_owned(),
            Cursors {
                delivered: 7,
                acked: 5,
            },
        )]);
        save(state.clone(), cursors.clone()).await.unwrap();
        save(state.clone(), cursors.clone()).await.unwrap();
        assert_eq!(load(state.clone()).await.unwrap(), cursors);
        assert!(!state.join(TEMP_NAME).exists());
    }

    #[tokio::test]
    async fn a_corrupt_cursor_file_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(FILE_NAME), b"{\"version\": 1, \"clie").unwrap();
        assert!(load(dir.path().to_owned()).await.unwrap().is_empty());
    }
}
