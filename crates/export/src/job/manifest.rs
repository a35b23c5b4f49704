//! A job on disk: `<dir>/<job id>.job.json`, rewritten (atomically) when the job starts,
//! after each chunk and when it ends, so that a restarted process lists every job and
//! resumes the running ones from their last complete chunk.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{JobState, PartitionOffsets};
use crate::files::FileFormat;
use crate::sink::{KafkaTarget, MessageFormat, Target};
use crate::source::Schema;
use crate::{Error, Result};

/// The manifest format's version.
const VERSION: u32 = 1;

/// The suffix of manifest file names.
pub(super) const SUFFIX: &str = ".job.json";

/// What is kept of a job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Manifest {
    pub(super) version: u32,
    pub(super) job_id: String,
    pub(super) connection_id: String,
    pub(super) table: String,
    #[serde(default)]
    pub(super) database: Option<String>,
    #[serde(default)]
    pub(super) time_column: Option<String>,
    pub(super) target: TargetSpec,
    #[serde(default)]
    pub(super) start_ns: Option<i64>,
    #[serde(default)]
    pub(super) end_ns: Option<i64>,
    /// The half-open range split into `chunks`.
    #[serde(default)]
    pub(super) range: Option<(i64, i64)>,
    pub(super) chunks: Vec<(i64, i64)>,
    /// The rows' columns when the job started: a resumed job must read the same.
    pub(super) schema: Schema,
    /// The chunks complete (their part file renamed, or their records delivered).
    pub(super) done: Vec<usize>,
    /// `None` while running.
    #[serde(default)]
    pub(super) state: Option<JobState>,
    #[serde(default)]
    pub(super) error: Option<String>,
    /// Rows of the complete chunks.
    pub(super) rows: u64,
    pub(super) bytes: u64,
    pub(super) started_at: String,
    pub(super) elapsed_seconds: f64,
    #[serde(default)]
    pub(super) partitions: Vec<PartitionOffsets>,
}

/// Where the job's rows go.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum TargetSpec {
    File {
        format: String,
    },
    Kafka {
        brokers: String,
        topic: String,
        format: String,
    },
}

impl TargetSpec {
    pub(super) fn of(target: &Target) -> Self {
        match target {
            Target::File(format) => TargetSpec::File {
                format: format.extension().to_owned(),
            },
            Target::Kafka(k) => TargetSpec::Kafka {
                brokers: k.brokers.clone(),
                topic: k.topic.clone(),
                format: k.format.name().to_owned(),
            },
        }
    }

    pub(super) fn target(&self) -> Result<Target> {
        Ok(match self {
            TargetSpec::File { format } => Target::File(FileFormat::parse(format)?),
            TargetSpec::Kafka {
                brokers,
                topic,
                format,
            } => Target::Kafka(KafkaTarget::new(
                brokers,
                topic,
                MessageFormat::parse(format)?,
            )?),
        })
    }
}

impl Manifest {
    pub(super) fn version() -> u32 {
        VERSION
    }

    /// Reads `path`.
    pub(super) fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(crate::error::io_error(path))?;
        let m: Manifest = serde_json::from_slice(&bytes)
            .map_err(|e| Error::Invalid(format!("{}: not a job manifest: {e}", path.display())))?;
        if m.done.iter().any(|&i| i >= m.chunks.len()) {
            return Err(Error::Invalid(format!(
                "{}: a chunk marked done is not one of the job's",
                path.display()
            )));
        }
        if m.version != VERSION {
            return Err(Error::Invalid(format!(
                "{}: manifest version {} (this datanexus reads {VERSION})",
                path.display(),
                m.version
            )));
        }
        Ok(m)
    }

    /// Writes it to `path` (a fsynced temporary file renamed over it).
    pub(super) fn write(&self, path: &Path) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(self)
            .map_err(|e| Error::Invalid(format!("encoding a job manifest: {e}")))?;
        crate::connections::write_private(path, &bytes)
    }
}

/// The manifests in `dir`.
pub(super) fn list(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(SUFFIX))
        })
        .collect();
    paths.sort();
    paths
}
