//! The manifest (`manifest.json`): which files are live, the next sequence number, and
//! measurement metadata. Replaced atomically (temp + fsync + rename + directory fsync).

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::catalog::MeasurementMeta;
use super::fsutil::{corrupt, io_err, remove_quietly, write_atomic};
use datanexus_store::Result;

/// File name of the manifest.
pub(crate) const MANIFEST: &str = "manifest.json";
/// Format version written; others are refused.
const FORMAT_VERSION: u32 = 1;

/// A live file as listed in the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FileEntry {
    /// Sequence number (newer files have higher ones).
    pub(crate) seq: u64,
    /// Rows (informative).
    pub(crate) rows: u64,
    /// Bytes (informative).
    pub(crate) bytes: u64,
}

/// The manifest.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Manifest {
    /// Format version.
    pub(crate) version: u32,
    /// The next sequence number to allocate.
    pub(crate) next_seq: u64,
    /// Live points files, oldest first.
    pub(crate) points: Vec<FileEntry>,
    /// Live events files, oldest first.
    pub(crate) events: Vec<FileEntry>,
    /// Live results files, oldest first (absent in manifests of older versions).
    #[serde(default)]
    pub(crate) results: Vec<FileEntry>,
    /// Whether stream results are kept in results files only: false in manifests of
    /// versions that kept them as events (`result/…` ids), which [`crate::open`]
    /// moves to a results file once.
    #[serde(default)]
    pub(crate) results_apart: bool,
    /// Measurement metadata.
    pub(crate) measurements: BTreeMap<String, MeasurementMeta>,
}

/// File name of the points file with `seq`.
pub(crate) fn points_name(seq: u64) -> String {
    format!("points-{seq:020}.parquet")
}

/// File name of the results file with `seq`.
pub(crate) fn results_name(seq: u64) -> String {
    format!("results-{seq:020}.parquet")
}

/// File name of the events file with `seq`.
pub(crate) fn events_name(seq: u64) -> String {
    format!("events-{seq:020}.parquet")
}

impl Manifest {
    /// Loads the manifest of `dir`; an empty one when there is none yet.
    ///
    /// # Errors
    /// [`datanexus_store::Error::Corrupt`] when it cannot be parsed or has another version.
    pub(crate) fn load(dir: &Path) -> Result<Manifest> {
        let path = dir.join(MANIFEST);
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Manifest {
                    version: FORMAT_VERSION,
                    next_seq: 1,
                    results_apart: true,
                    ..Manifest::default()
                });
            }
            Err(e) => return Err(io_err("read", &path)(e)),
        };
        let m: Manifest = serde_json::from_slice(&text)
            .map_err(|e| corrupt(&path)(format!("manifest does not parse: {e}")))?;
        if m.version != FORMAT_VERSION {
            return Err(corrupt(&path)(format!(
                "manifest version {} is not the supported {FORMAT_VERSION}",
                m.version
            )));
        }
        if m.points
            .iter()
            .chain(&m.events)
            .chain(&m.results)
            .any(|f| f.seq >= m.next_seq)
        {
            return Err(corrupt(&path)(format!(
                "a file's sequence number is not below next_seq {}",
                m.next_seq
            )));
        }
        Ok(m)
    }

    /// Writes the manifest into `dir` atomically.
    ///
    /// # Errors
    /// I/O failures (the previous manifest then stays in force).
    pub(crate) fn store(&self, dir: &Path) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(self)
            .map_err(|e| datanexus_store::Error::Internal(format!("manifest encoding: {e}")))?;
        write_atomic(&dir.join(MANIFEST), &bytes)
    }

    /// Deletes store files in `dir` that this manifest does not name: leftovers of a
    /// crash between writing a file and the manifest naming it, or before old files were
    /// deleted after a compaction. Other files are left alone.
    ///
    /// # Errors
    /// When `dir` cannot be listed.
    pub(crate) fn remove_unlisted(&self, dir: &Path) -> Result<Vec<String>> {
        let live: HashSet<String> = self
            .points
            .iter()
            .map(|f| points_name(f.seq))
            .chain(self.events.iter().map(|f| events_name(f.seq)))
            .chain(self.results.iter().map(|f| results_name(f.seq)))
            .collect();
        let mut removed = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io_err("list", dir))? {
            let entry = entry.map_err(io_err("list", dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let ours = ["points-", "events-", "results-"]
                .iter()
                .any(|kind| name.starts_with(kind))
                && name.ends_with(".parquet");
            if (ours && !live.contains(&name)) || name == format!("{MANIFEST}.tmp") {
                tracing::info!(file = %name, "deleting a store file the manifest does not list");
                remove_quietly(&entry.path());
                removed.push(name);
            }
        }
        Ok(removed)
    }
}
