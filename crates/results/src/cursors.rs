//! The cursor journal: `<state_dir>/cursors.log`, one JSON object per line.
//!
//! - `{"client": "c1", "delivered": 7, "acked": 5, "seen_ns": …}` sets a client's
//!   cursors; `{"client": "c1", "evicted": true}` forgets the client.
//! - A persist appends the lines of the clients that changed since the last one and
//!   fsyncs: the file is never rewritten for a change. Once it holds more than four
//!   lines per live client (and at least [`MIN_COMPACT_LINES`]), it is compacted: the
//!   live cursors are written to `cursors.log.tmp`, fsynced, and renamed over it (then
//!   the directory is fsynced); a crash leaves the old or the new journal, never a torn
//!   one.
//! - Reading: the last line of a client wins. A line that does not parse — the torn
//!   tail of an append a crash interrupted — is skipped with a warning: starting from
//!   older cursors replays stored results again, which is safe, never lossy.
//!
//! Persists run at most every second while cursors change and on shutdown, so after a
//! SIGKILL the journal may be up to a second stale: a `nimbus` client may then see a
//! few results again (at-least-once across crashes), a native client resumes from its
//! own `resume_after` anyway. A `cursors.json` of earlier versions (the whole map,
//! rewritten at every persist) is imported on first start and removed.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

const FILE_NAME: &str = "cursors.log";
const TEMP_NAME: &str = "cursors.log.tmp";
/// The map of earlier versions.
const OLD_FILE_NAME: &str = "cursors.json";
/// A journal shorter than this is never compacted.
pub(crate) const MIN_COMPACT_LINES: u64 = 1024;

/// A client's resume cursors (result seqs), and when it was last seen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Cursors {
    /// The highest seq handed to the transport (`nimbus` resume point).
    pub(crate) delivered: u64,
    /// The highest seq a native client acknowledged.
    pub(crate) acked: u64,
    /// When a stream of the client last attached or detached (ns since the Unix epoch);
    /// clients gone longer than the replay age are evicted.
    pub(crate) seen_ns: i64,
}

/// One journal line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    client: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    evicted: bool,
    #[serde(default)]
    delivered: u64,
    #[serde(default)]
    acked: u64,
    #[serde(default)]
    seen_ns: i64,
}

/// A change to persist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Change {
    /// The client's cursors are now these.
    Set(String, Cursors),
    /// The client is forgotten.
    Evict(String),
}

/// The journal of one state directory.
#[derive(Debug, Clone)]
pub(crate) struct Journal {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    /// Lines in the file.
    lines: u64,
}

impl Journal {
    /// Opens the journal in `dir` (creating nothing yet) and reads the cursors it
    /// holds; imports a `cursors.json` of earlier versions (its clients seen `now_ns`).
    ///
    /// # Errors
    /// The journal exists but cannot be read.
    pub(crate) async fn open(
        dir: PathBuf,
        now_ns: i64,
    ) -> Result<(Journal, HashMap<String, Cursors>)> {
        blocking(move || {
            let (mut cursors, lines) = read(&dir)?;
            let imported = import_old(&dir, now_ns)?;
            let journal = Journal {
                inner: Arc::new(Mutex::new(Inner { dir, lines })),
            };
            if let Some(old) = imported {
                for (client, c) in old {
                    cursors.entry(client).or_insert(c);
                }
                let mut inner = journal.inner.lock();
                rewrite(&mut inner, &cursors)?;
                remove_old(&inner.dir)?;
            }
            Ok((journal, cursors))
        })
        .await
    }

    /// Whether appending `changes` lines would grow the journal past four lines per
    /// client of `live_clients`: then [`Journal::rewrite`] it instead.
    pub(crate) fn compaction_due(&self, changes: usize, live_clients: usize) -> bool {
        let after = self.inner.lock().lines + changes as u64;
        after > MIN_COMPACT_LINES.max(4 * live_clients as u64)
    }

    /// Appends `changes` and fsyncs.
    ///
    /// # Errors
    /// The journal cannot be written (what was appended before stays valid).
    pub(crate) async fn append(&self, changes: Vec<Change>) -> Result<()> {
        let inner = Arc::clone(&self.inner);
        blocking(move || append(&mut inner.lock(), &changes)).await
    }

    /// Replaces the journal with the complete current cursors `live` (atomically).
    ///
    /// # Errors
    /// The journal cannot be written (the old one stays in force).
    pub(crate) async fn rewrite(&self, live: HashMap<String, Cursors>) -> Result<()> {
        let inner = Arc::clone(&self.inner);
        blocking(move || rewrite(&mut inner.lock(), &live)).await
    }

    /// Lines in the journal (tests).
    #[cfg(test)]
    pub(crate) fn lines(&self) -> u64 {
        self.inner.lock().lines
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(format!("cursor journal task failed: {e}")))?
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Cursors {
        path: path.to_path_buf(),
        source,
    }
}

/// The cursors in the journal of `dir`, and its line count. A torn tail (bytes after
/// the last newline: an append a crash interrupted) is cut off, so that the next append
/// starts on a line of its own.
fn read(dir: &Path) -> Result<(HashMap<String, Cursors>, u64)> {
    let path = dir.join(FILE_NAME);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok((HashMap::new(), 0)),
        Err(e) => return Err(io_error(&path)(e)),
    };
    let whole = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    if whole < bytes.len() {
        tracing::warn!(path = %path.display(), bytes = bytes.len() - whole, "cutting off the torn tail of the cursor journal (an append a crash interrupted)");
        let file = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(io_error(&path))?;
        file.set_len(whole as u64).map_err(io_error(&path))?;
        file.sync_all().map_err(io_error(&path))?;
    }
    let file = bytes.get(..whole).unwrap_or_default();
    let mut cursors = HashMap::new();
    let mut lines = 0u64;
    let count = whole_lines(file);
    for (n, line) in file.split(|&b| b == b'\n').enumerate() {
        if n as u64 >= count {
            break;
        }
        lines += 1;
        match serde_json::from_slice::<Line>(line) {
            Ok(l) if l.evicted => {
                cursors.remove(&l.client);
            }
            Ok(l) => {
                let c = Cursors {
                    delivered: l.delivered,
                    acked: l.acked,
                    seen_ns: l.seen_ns,
                };
                cursors.insert(l.client, c);
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), line = n + 1, error = %e, "skipping a cursor journal line that does not parse (the torn tail of an interrupted append?)");
            }
        }
    }
    Ok((cursors, lines))
}

/// Newline-terminated lines in `bytes`.
fn whole_lines(bytes: &[u8]) -> u64 {
    bytes.iter().filter(|&&b| b == b'\n').count() as u64
}

fn encode(changes: &[Change]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    for change in changes {
        let line = match change {
            Change::Set(client, c) => Line {
                client: client.clone(),
                evicted: false,
                delivered: c.delivered,
                acked: c.acked,
                seen_ns: c.seen_ns,
            },
            Change::Evict(client) => Line {
                client: client.clone(),
                evicted: true,
                delivered: 0,
                acked: 0,
                seen_ns: 0,
            },
        };
        serde_json::to_writer(&mut out, &line)
            .map_err(|e| Error::Internal(format!("cannot encode the cursors: {e}")))?;
        out.push(b'\n');
    }
    Ok(out)
}

fn append(inner: &mut Inner, changes: &[Change]) -> Result<()> {
    if changes.is_empty() {
        return Ok(());
    }
    fs::create_dir_all(&inner.dir).map_err(io_error(&inner.dir))?;
    let path = inner.dir.join(FILE_NAME);
    let bytes = encode(changes)?;
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(io_error(&path))?;
    file.write_all(&bytes).map_err(io_error(&path))?;
    file.sync_data().map_err(io_error(&path))?;
    inner.lines += changes.len() as u64;
    Ok(())
}

fn rewrite(inner: &mut Inner, live: &HashMap<String, Cursors>) -> Result<()> {
    let dir = inner.dir.clone();
    fs::create_dir_all(&dir).map_err(io_error(&dir))?;
    let sorted: BTreeMap<&String, &Cursors> = live.iter().collect();
    let changes: Vec<Change> = sorted
        .into_iter()
        .map(|(client, c)| Change::Set(client.clone(), *c))
        .collect();
    let bytes = encode(&changes)?;
    let temp = dir.join(TEMP_NAME);
    let mut out = File::create(&temp).map_err(io_error(&temp))?;
    out.write_all(&bytes).map_err(io_error(&temp))?;
    out.sync_all().map_err(io_error(&temp))?;
    drop(out);
    let path = dir.join(FILE_NAME);
    fs::rename(&temp, &path).map_err(io_error(&path))?;
    File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(&dir))?;
    inner.lines = changes.len() as u64;
    Ok(())
}

/// The version-1 map of earlier versions, if there is one.
#[derive(Debug, Deserialize)]
struct OldFile {
    version: u32,
    clients: BTreeMap<String, OldCursors>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct OldCursors {
    delivered: u64,
    acked: u64,
}

fn import_old(dir: &Path, now_ns: i64) -> Result<Option<HashMap<String, Cursors>>> {
    let path = dir.join(OLD_FILE_NAME);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error(&path)(e)),
    };
    let clients = match serde_json::from_slice::<OldFile>(&bytes) {
        Ok(old) if old.version == 1 => old.clients,
        Ok(_) | Err(_) => {
            tracing::warn!(path = %path.display(), "unreadable cursor file of an earlier version: ignoring it (stored results will be replayed again)");
            BTreeMap::new()
        }
    };
    Ok(Some(
        clients
            .into_iter()
            .map(|(client, c)| {
                let cursors = Cursors {
                    delivered: c.delivered,
                    acked: c.acked,
                    seen_ns: now_ns,
                };
                (client, cursors)
            })
            .collect(),
    ))
}

fn remove_old(dir: &Path) -> Result<()> {
    let path = dir.join(OLD_FILE_NAME);
    match fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_error(&path)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(delivered: u64, acked: u64) -> Cursors {
        Cursors {
            delivered,
            acked,
            seen_ns: 5,
        }
    }

    #[tokio::test]
    async fn changes_are_appended_and_read_back_last_one_winning() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("sessions");
        let (journal, loaded) = Journal::open(state.clone(), 1).await.unwrap();
        assert!(loaded.is_empty());
        journal
            .append(vec![
                Change::Set("c1".into(), c(7, 5)),
                Change::Set("c2".into(), c(1, 0)),
            ])
            .await
            .unwrap();
        let before = fs::read(state.join(FILE_NAME)).unwrap();
        journal
            .append(vec![
                Change::Set("c1".into(), c(9, 9)),
                Change::Evict("c2".into()),
            ])
            .await
            .unwrap();
        // Appended: the earlier bytes are untouched.
        let after = fs::read(state.join(FILE_NAME)).unwrap();
        assert_eq!(&after[..before.len()], &before[..]);
        assert_eq!(journal.lines(), 4);
        let (_, loaded) = Journal::open(state, 1).await.unwrap();
        assert_eq!(loaded, HashMap::from([("c1".to_owned(), c(9, 9))]));
    }

    #[tokio::test]
    async fn a_long_journal_is_compacted_to_the_live_cursors() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, _) = Journal::open(dir.path().to_owned(), 1).await.unwrap();
        for i in 0..MIN_COMPACT_LINES {
            assert!(!journal.compaction_due(1, 1));
            journal
                .append(vec![Change::Set("c1".into(), c(i, i))])
                .await
                .unwrap();
        }
        assert_eq!(journal.lines(), MIN_COMPACT_LINES);
        assert!(journal.compaction_due(1, 1));
        let live = HashMap::from([("c1".to_owned(), c(5000, 5000))]);
        let expected = live.clone();
        journal.rewrite(live).await.unwrap();
        assert_eq!(journal.lines(), 1);
        let (_, loaded) = Journal::open(dir.path().to_owned(), 1).await.unwrap();
        assert_eq!(loaded, expected);
        assert!(!dir.path().join(TEMP_NAME).exists());
    }

    #[tokio::test]
    async fn a_torn_last_line_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, _) = Journal::open(dir.path().to_owned(), 1).await.unwrap();
        journal
            .append(vec![Change::Set("c1".into(), c(3, 2))])
            .await
            .unwrap();
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.path().join(FILE_NAME))
            .unwrap();
        f.write_all(b"{\"client\": \"c1\", \"deliv").unwrap();
        let (journal, loaded) = Journal::open(dir.path().to_owned(), 1).await.unwrap();
        assert_eq!(loaded, HashMap::from([("c1".to_owned(), c(3, 2))]));
        // The next append is a line of its own, read back after another start.
        journal
            .append(vec![Change::Set("c1".into(), c(4, 4))])
            .await
            .unwrap();
        let (_, loaded) = Journal::open(dir.path().to_owned(), 1).await.unwrap();
        assert_eq!(loaded, HashMap::from([("c1".to_owned(), c(4, 4))]));
    }

    #[tokio::test]
    async fn the_cursor_file_of_earlier_versions_is_imported() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join(OLD_FILE_NAME),
            br#"{"version": 1, "clients": {"c1": {"delivered": 7, "acked": 5}}}"#,
        )
        .unwrap();
        let (_, loaded) = Journal::open(dir.path().to_owned(), 42).await.unwrap();
        let want = Cursors {
            delivered: 7,
            acked: 5,
            seen_ns: 42,
        };
        assert_eq!(loaded, HashMap::from([("c1".to_owned(), want)]));
        assert!(!dir.path().join(OLD_FILE_NAME).exists());
        let (_, again) = Journal::open(dir.path().to_owned(), 99).await.unwrap();
        assert_eq!(again, HashMap::from([("c1".to_owned(), want)]));
    }
}
