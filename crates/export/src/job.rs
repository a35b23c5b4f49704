//! Export jobs: a dataset's time range split into `divided_jobs` chunks (the last one
//! ends exactly at the range's end: the seed dropped the rows after the last whole
//! chunk), read by `worker_num` workers at once and retried from scratch up to
//! `retries` times.
//!
//! To a file: each chunk is written to a part file of its own; the parts are then
//! joined in chunk order into `<dir>/<job id>.<format>`. To Kafka: chunk `i` goes to
//! partition `i mod n` of the topic's `n` (the seed's layout), and a partition's chunks
//! are sent one after the other in time order, so each partition holds its records in
//! time order (and a key's records in order within it). A chunk retried after some of
//! its records were delivered sends them again (at least once); a clean run sends each
//! row exactly once. Progress (rows, bytes, chunks, rate, ETA, per-partition offsets)
//! is kept per job; `cancel` stops the workers between pages.
//!
//! Each job is kept in `<dir>/<job id>.job.json` (see `manifest.rs`): a restarted
//! process lists every job again and, with [`Exports::recover`], resumes the running
//! ones — only their chunks not complete (a file job's complete parts are on disk; a
//! Kafka job's complete chunks were delivered).

mod manifest;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use datanexus_store::Store;
use futures::StreamExt;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

use crate::error::io_error;
use crate::files::{self, FileFormat, PartWriter};
use crate::sink::{KafkaSink, Target};
use crate::source::{self, DatasetRef, Row, Schema, Source};
use crate::{ConnectionSpec, Connections, Error, Result};
use manifest::{Manifest, TargetSpec};

/// How export jobs run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportOptions {
    /// Where export files are written (`<data_dir>/exports`); `None` refuses exports.
    pub dir: Option<PathBuf>,
    /// Chunks a job's range is split into (the seed's `jobs.dividedJobs`, 48).
    pub divided_jobs: usize,
    /// Chunks read at once (the seed's `jobs.workerNum`, 6).
    pub worker_num: usize,
    /// Attempts after the first for a chunk that fails.
    pub retries: u32,
    /// How long opening a source waits for its database.
    pub connect_timeout: Duration,
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions {
            dir: None,
            divided_jobs: 48,
            worker_num: 6,
            retries: 3,
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// What to export.
#[derive(Debug, Clone)]
pub struct ExportRequest {
    /// The registered connection read.
    pub connection_id: String,
    /// Its dataset.
    pub dataset: DatasetRef,
    /// First nanosecond exported; `None` = the dataset's first row.
    pub start_ns: Option<i64>,
    /// Last nanosecond exported (included); `None` = the dataset's last row.
    pub end_ns: Option<i64>,
    /// Where the rows go.
    pub target: Target,
}

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Reading and writing.
    Running,
    /// Done: the file is complete.
    Succeeded,
    /// Stopped by a chunk that failed after its retries (see the error).
    Failed,
    /// Stopped by `DELETE /exports/{id}`.
    Cancelled,
}

/// A job as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct JobStatus {
    /// The job's id.
    pub job_id: String,
    /// Where it is.
    pub state: JobState,
    /// The connection read.
    pub connection_id: String,
    /// The dataset read (table or measurement).
    pub table: String,
    /// The database, when one was named.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// `file` or `kafka`.
    pub target: &'static str,
    /// The format: `parquet`, `csv`, `ndjson` (files), `protobuf`, `json` (Kafka).
    pub format: &'static str,
    /// The Kafka topic.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// Kafka: the offsets delivered per partition, by partition.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub partitions: Vec<PartitionOffsets>,
    /// The range exported (RFC 3339, both ends included); `null` for an empty dataset.
    pub start: Option<String>,
    /// See `start`.
    pub end: Option<String>,
    /// Chunks of the range.
    pub chunks: usize,
    /// Chunks written.
    pub chunks_done: usize,
    /// Rows written so far.
    pub rows: u64,
    /// Bytes of the final file (once succeeded) or of the parts so far.
    pub bytes: u64,
    /// Rows per second since the start.
    pub rows_per_second: f64,
    /// Seconds since the start (until the end).
    pub elapsed_seconds: f64,
    /// Estimated seconds left (running jobs with a chunk done).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eta_seconds: Option<f64>,
    /// When it started (RFC 3339).
    pub started_at: String,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Where to download the file (once succeeded).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
}

/// What a Kafka export delivered to one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionOffsets {
    /// The partition.
    pub partition: u32,
    /// The offset of its first record.
    pub first_offset: u64,
    /// The offset of its last record.
    pub last_offset: u64,
    /// Records delivered (more than the rows when a chunk was retried).
    pub records: u64,
}

/// One job.
struct Job {
    id: String,
    request: ExportRequest,
    range: Option<(i64, i64)>,
    chunks: Vec<(i64, i64)>,
    /// The rows' columns when it started.
    schema: Schema,
    /// Set once chunk `i` is complete (Kafka: chunk `i + n` of the same partition
    /// waits for it).
    done: Vec<watch::Sender<bool>>,
    started: Instant,
    /// Run time before a restart.
    elapsed_before: Duration,
    started_at: String,
    /// Rows written so far, and those of the complete chunks.
    rows: AtomicU64,
    rows_done: AtomicU64,
    bytes: AtomicU64,
    chunks_done: AtomicUsize,
    offsets: Mutex<BTreeMap<u32, PartitionOffsets>>,
    end: Mutex<End>,
    cancel: watch::Sender<bool>,
    /// Where the job is kept (`None`: nowhere, without a directory).
    manifest: Option<PathBuf>,
    /// One manifest write at a time.
    writing: Mutex<()>,
    /// The task running it (aborted in tests, as a crash would).
    task: Mutex<Option<tokio::task::AbortHandle>>,
}

/// How a job ended (or not yet).
#[derive(Default)]
struct End {
    state: Option<JobState>,
    error: Option<String>,
    elapsed: Option<Duration>,
}

impl Job {
    fn status(&self) -> JobStatus {
        let end = self.end.lock();
        let state = end.state.unwrap_or(JobState::Running);
        let elapsed = end.elapsed.unwrap_or_else(|| self.elapsed());
        let rows = self.rows.load(Ordering::Relaxed);
        let done = self.chunks_done.load(Ordering::Relaxed);
        let secs = elapsed.as_secs_f64();
        let eta = (state == JobState::Running && done > 0)
            .then(|| secs * (self.chunks.len() - done) as f64 / done as f64);
        let format = |ns: i64| files_time(ns);
        JobStatus {
            job_id: self.id.clone(),
            state,
            connection_id: self.request.connection_id.clone(),
            table: self.request.dataset.table.clone(),
            database: self.request.dataset.database.clone(),
            target: match self.request.target {
                Target::File(_) => "file",
                Target::Kafka(_) => "kafka",
            },
            format: self.request.target.format_name(),
            topic: match &self.request.target {
                Target::File(_) => None,
                Target::Kafka(kafka) => Some(kafka.topic.clone()),
            },
            partitions: self.offsets.lock().values().copied().collect(),
            start: self.range.map(|(lo, _)| format(lo)),
            end: self.range.map(|(_, hi)| format(hi - 1)),
            chunks: self.chunks.len(),
            chunks_done: done,
            rows,
            bytes: self.bytes.load(Ordering::Relaxed),
            rows_per_second: if secs > 0.0 { rows as f64 / secs } else { 0.0 },
            elapsed_seconds: secs,
            eta_seconds: eta,
            started_at: self.started_at.clone(),
            error: end.error.clone(),
            file: (state == JobState::Succeeded && matches!(self.request.target, Target::File(_)))
                .then(|| format!("/exports/{}/file", self.id)),
        }
    }

    /// Notes the records `first..=last` (`records` of them) delivered to `partition`.
    fn delivered(&self, partition: u32, first: u64, last: u64, records: u64) {
        let mut offsets = self.offsets.lock();
        let entry = offsets.entry(partition).or_insert(PartitionOffsets {
            partition,
            first_offset: first,
            last_offset: last,
            records: 0,
        });
        entry.first_offset = entry.first_offset.min(first);
        entry.last_offset = entry.last_offset.max(last);
        entry.records += records;
    }

    fn cancelled(&self) -> bool {
        *self.cancel.borrow()
    }

    fn elapsed(&self) -> Duration {
        self.elapsed_before + self.started.elapsed()
    }

    /// Notes chunk `i` complete with `rows` rows and `bytes` bytes, and keeps it.
    fn chunk_done(&self, i: usize, rows: u64, bytes: u64) {
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.rows_done.fetch_add(rows, Ordering::Relaxed);
        self.chunks_done.fetch_add(1, Ordering::Relaxed);
        if let Some(done) = self.done.get(i) {
            done.send_replace(true);
        }
        self.persist();
    }

    fn finish(&self, state: JobState, error: Option<String>) {
        {
            let mut end = self.end.lock();
            if end.state.is_some() {
                return;
            }
            end.state = Some(state);
            end.error = error;
            end.elapsed = Some(self.elapsed());
        }
        self.persist();
    }

    /// The job as kept on disk.
    fn manifest(&self) -> Manifest {
        let end = self.end.lock();
        let finished = end.state.is_some();
        Manifest {
            version: Manifest::version(),
            job_id: self.id.clone(),
            connection_id: self.request.connection_id.clone(),
            table: self.request.dataset.table.clone(),
            database: self.request.dataset.database.clone(),
            time_column: self.request.dataset.time_column.clone(),
            target: TargetSpec::of(&self.request.target),
            start_ns: self.request.start_ns,
            end_ns: self.request.end_ns,
            range: self.range,
            chunks: self.chunks.clone(),
            schema: self.schema.clone(),
            done: (0..self.done.len())
                .filter(|&i| self.done.get(i).is_some_and(|d| *d.borrow()))
                .collect(),
            state: end.state,
            error: end.error.clone(),
            rows: if finished {
                self.rows.load(Ordering::Relaxed)
            } else {
                self.rows_done.load(Ordering::Relaxed)
            },
            bytes: self.bytes.load(Ordering::Relaxed),
            started_at: self.started_at.clone(),
            elapsed_seconds: end.elapsed.unwrap_or_else(|| self.elapsed()).as_secs_f64(),
            partitions: self.offsets.lock().values().copied().collect(),
        }
    }

    /// Writes the manifest (a failure is logged: the job goes on, but would not be
    /// resumed from this point after a restart).
    fn persist(&self) {
        let Some(path) = &self.manifest else {
            return;
        };
        let _one = self.writing.lock();
        if let Err(e) = self.manifest().write(path) {
            tracing::warn!(job_id = %self.id, error = %e, "cannot keep the export job on disk");
        }
    }

    /// A job as kept in `m` (at `path`), not running.
    fn from_manifest(m: Manifest, path: PathBuf) -> Result<Job> {
        let target = m.target.target()?;
        let done: Vec<watch::Sender<bool>> = (0..m.chunks.len())
            .map(|i| watch::channel(m.done.contains(&i)).0)
            .collect();
        let chunks_done = done.iter().filter(|d| *d.borrow()).count();
        let finished = m.state.is_some();
        let elapsed = Duration::try_from_secs_f64(m.elapsed_seconds).unwrap_or_default();
        Ok(Job {
            id: m.job_id,
            request: ExportRequest {
                connection_id: m.connection_id,
                dataset: DatasetRef {
                    table: m.table,
                    database: m.database,
                    time_column: m.time_column,
                },
                start_ns: m.start_ns,
                end_ns: m.end_ns,
                target,
            },
            range: m.range,
            chunks: m.chunks,
            schema: m.schema,
            done,
            started: Instant::now(),
            elapsed_before: if finished { Duration::ZERO } else { elapsed },
            started_at: m.started_at,
            rows: AtomicU64::new(m.rows),
            rows_done: AtomicU64::new(m.rows),
            bytes: AtomicU64::new(m.bytes),
            chunks_done: AtomicUsize::new(chunks_done),
            offsets: Mutex::new(m.partitions.into_iter().map(|p| (p.partition, p)).collect()),
            end: Mutex::new(End {
                state: m.state,
                error: m.error,
                elapsed: finished.then_some(elapsed),
            }),
            cancel: watch::channel(false).0,
            manifest: Some(path),
            writing: Mutex::new(()),
            task: Mutex::new(None),
        })
    }
}

fn files_time(ns: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_nanos(ns)
        .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// The export jobs of this process.
pub struct Exports {
    options: ExportOptions,
    store: Option<Arc<dyn Store>>,
    jobs: Mutex<BTreeMap<String, Arc<Job>>>,
    /// Jobs kept running before a restart, until [`Exports::recover`] resumes them.
    to_resume: Mutex<Vec<Arc<Job>>>,
    next: AtomicU64,
}

impl std::fmt::Debug for Exports {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exports")
            .field("options", &self.options)
            .field("jobs", &self.jobs.lock().len())
            .finish_non_exhaustive()
    }
}

impl Exports {
    /// Jobs run with `options`; `datanexus` connections read `store`. The jobs kept in
    /// the export directory are listed at once; [`Exports::recover`] resumes the
    /// running ones.
    pub fn new(options: ExportOptions, store: Option<Arc<dyn Store>>) -> Self {
        let exports = Exports {
            options,
            store,
            jobs: Mutex::new(BTreeMap::new()),
            to_resume: Mutex::new(Vec::new()),
            next: AtomicU64::new(1),
        };
        let running = exports.load();
        *exports.to_resume.lock() = running;
        exports
    }

    /// Opens the dataset (and the Kafka topic), splits the range and starts the job;
    /// returns at once.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a bad request or when file exports have no directory,
    /// [`Error::NotFound`] for an unknown dataset or topic, [`Error::Unreachable`] when
    /// the database or Kafka cannot be reached.
    pub async fn start(&self, spec: &ConnectionSpec, request: ExportRequest) -> Result<JobStatus> {
        if let (Target::File(_), None) = (&request.target, &self.options.dir) {
            return Err(Error::Invalid(
                "exports need a data directory to write their files to".to_owned(),
            ));
        }
        if let (Some(s), Some(e)) = (request.start_ns, request.end_ns)
            && s > e
        {
            return Err(Error::Invalid(format!(
                "start ({}) is after end ({})",
                files_time(s),
                files_time(e)
            )));
        }
        if request.dataset.table.is_empty() {
            return Err(Error::Invalid("table is required".to_owned()));
        }
        let source = source::open(
            spec,
            &request.dataset,
            self.store.clone(),
            self.options.connect_timeout,
        )
        .await?;
        let output = self.output(&request.target).await?;
        self.launch(request, source, output).await
    }

    /// Where a job of `target` writes: the export directory, or the opened topic.
    async fn output(&self, target: &Target) -> Result<Output> {
        Ok(match target {
            Target::File(format) => Output::File {
                dir: self.options.dir.clone().ok_or_else(|| {
                    Error::Invalid(
                        "exports need a data directory to write their files to".to_owned(),
                    )
                })?,
                format: *format,
            },
            Target::Kafka(kafka) => Output::Kafka(Arc::new(
                KafkaSink::open(kafka, self.options.connect_timeout).await?,
            )),
        })
    }

    /// Resumes the jobs that were running before a restart (listed by
    /// [`Exports::new`]) through their connections: each runs only its chunks not
    /// complete. A job that cannot be resumed (its connection was removed, its
    /// database or topic cannot be reached) ends `failed` with the cause. Returns the
    /// ids resumed.
    pub async fn recover(&self, connections: &Connections) -> Vec<String> {
        let mut resumed = Vec::new();
        let kept = std::mem::take(&mut *self.to_resume.lock());
        for job in kept {
            let outcome = async {
                let spec = connections.get(&job.request.connection_id).await?;
                let source = source::open(
                    &spec,
                    &job.request.dataset,
                    self.store.clone(),
                    self.options.connect_timeout,
                )
                .await?;
                let output = self.output(&job.request.target).await?;
                self.resume(&job, source, output).await
            }
            .await;
            match outcome {
                Ok(()) => resumed.push(job.id.clone()),
                Err(e) => {
                    tracing::warn!(job_id = %job.id, error = %e, "cannot resume the export job");
                    job.finish(
                        JobState::Failed,
                        Some(format!("cannot resume after a restart: {e}")),
                    );
                }
            }
        }
        resumed
    }

    /// Reads the kept jobs into the list; returns the running ones (not yet resumed).
    fn load(&self) -> Vec<Arc<Job>> {
        let Some(dir) = &self.options.dir else {
            return Vec::new();
        };
        let mut running = Vec::new();
        for path in manifest::list(dir) {
            let job = match Manifest::read(&path).and_then(|m| Job::from_manifest(m, path.clone()))
            {
                Ok(job) => Arc::new(job),
                Err(e) => {
                    tracing::warn!(error = %e, "ignoring an export job manifest");
                    continue;
                }
            };
            if job.end.lock().state.is_none() {
                running.push(Arc::clone(&job));
            }
            self.jobs.lock().insert(job.id.clone(), job);
        }
        running
    }

    /// Runs the chunks of `job` not complete yet.
    async fn resume(&self, job: &Arc<Job>, source: Arc<dyn Source>, output: Output) -> Result<()> {
        let schema = source.schema().await?;
        // The parts written before must fit the ones still to write.
        if schema != job.schema {
            return Err(Error::Invalid(format!(
                "the columns of {} changed since the job started",
                source.name()
            )));
        }
        tracing::info!(job_id = %job.id, source = %source.name(),
            done = job.chunks_done.load(Ordering::Relaxed), chunks = job.chunks.len(),
            "export resumed");
        self.run(job, source, schema, output);
        Ok(())
    }

    /// Spawns the task running `job`'s chunks not complete.
    fn run(&self, job: &Arc<Job>, source: Arc<dyn Source>, schema: Schema, output: Output) {
        let run = Run {
            job: Arc::clone(job),
            source,
            schema,
            output,
            options: self.options.clone(),
        };
        let pending: Vec<(usize, i64, i64)> = job
            .chunks
            .iter()
            .enumerate()
            .filter(|(i, _)| !job.done.get(*i).is_some_and(|d| *d.borrow()))
            .map(|(i, &(lo, hi))| (i, lo, hi))
            .collect();
        let task = tokio::spawn(run.run(pending));
        *job.task.lock() = Some(task.abort_handle());
    }

    /// Starts the job of `request` on `source`, writing to `output`.
    async fn launch(
        &self,
        request: ExportRequest,
        source: Arc<dyn Source>,
        output: Output,
    ) -> Result<JobStatus> {
        let schema = source.schema().await?;
        let known = if request.start_ns.is_none() || request.end_ns.is_none() {
            source.time_range().await?
        } else {
            None
        };
        let start = request.start_ns.or(known.map(|(lo, _)| lo));
        let end = request.end_ns.or(known.map(|(_, hi)| hi));
        // Half-open internally: [start, end + 1).
        let range = match (start, end) {
            (Some(s), Some(e)) if s <= e => Some((s, e.saturating_add(1))),
            _ => None,
        };
        let chunks = range.map_or(Vec::new(), |(lo, hi)| {
            split(lo, hi, self.options.divided_jobs)
        });
        // Unique among the jobs listed, those kept from before a restart included.
        let id = loop {
            let n = self.next.fetch_add(1, Ordering::Relaxed);
            let id = format!("exp-{:x}-{n}", chrono::Utc::now().timestamp_millis());
            if !self.jobs.lock().contains_key(&id) {
                break id;
            }
        };
        let (cancel, _) = watch::channel(false);
        let job = Arc::new(Job {
            id: id.clone(),
            request,
            range,
            done: chunks.iter().map(|_| watch::channel(false).0).collect(),
            chunks,
            schema: schema.clone(),
            started: Instant::now(),
            elapsed_before: Duration::ZERO,
            started_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            rows: AtomicU64::new(0),
            rows_done: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            chunks_done: AtomicUsize::new(0),
            offsets: Mutex::new(BTreeMap::new()),
            end: Mutex::new(End::default()),
            cancel,
            manifest: self
                .options
                .dir
                .as_ref()
                .map(|d| d.join(format!("{id}{}", manifest::SUFFIX))),
            writing: Mutex::new(()),
            task: Mutex::new(None),
        });
        job.persist();
        self.jobs.lock().insert(id.clone(), Arc::clone(&job));
        tracing::info!(job_id = %id, source = %source.name(), chunks = job.chunks.len(), "export started");
        self.run(&job, source, schema, output);
        Ok(job.status())
    }

    /// What browsing a connection ([`crate::browse`]) needs: the own store and how long
    /// to wait for a database.
    pub fn browse_context(&self) -> (Option<Arc<dyn Store>>, Duration) {
        (self.store.clone(), self.options.connect_timeout)
    }

    /// The job `id`.
    ///
    /// # Errors
    /// [`Error::NotFound`].
    pub fn get(&self, id: &str) -> Result<JobStatus> {
        self.job(id).map(|j| j.status())
    }

    /// Every job, oldest first.
    pub fn list(&self) -> Vec<JobStatus> {
        let mut all: Vec<JobStatus> = self.jobs.lock().values().map(|j| j.status()).collect();
        all.sort_by(|a, b| {
            a.started_at
                .cmp(&b.started_at)
                .then(a.job_id.cmp(&b.job_id))
        });
        all
    }

    /// Cancels the job `id` (a finished job keeps its state); returns its status.
    ///
    /// # Errors
    /// [`Error::NotFound`].
    pub fn cancel(&self, id: &str) -> Result<JobStatus> {
        let job = self.job(id)?;
        job.cancel.send_replace(true);
        job.finish(JobState::Cancelled, None);
        Ok(job.status())
    }

    /// The file of the succeeded job `id` and its format.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown job, [`Error::Conflict`] while it has no
    /// complete file.
    pub fn file(&self, id: &str) -> Result<(PathBuf, FileFormat)> {
        let job = self.job(id)?;
        let Target::File(format) = job.request.target else {
            return Err(Error::NotFound(format!(
                "export {id} went to a kafka topic: it has no file"
            )));
        };
        let state = job.status().state;
        if state != JobState::Succeeded {
            return Err(Error::Conflict(format!(
                "export {id} is {}: its file exists once it succeeded",
                serde_json::to_value(state)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default()
            )));
        }
        let dir = self.options.dir.clone().unwrap_or_default();
        Ok((final_path(&dir, &job), format))
    }

    /// Stops every job's task as a crash would: their manifests stay as they are.
    #[cfg(test)]
    fn crash(&self) {
        for job in self.jobs.lock().values() {
            if let Some(task) = job.task.lock().take() {
                task.abort();
            }
        }
    }

    fn job(&self, id: &str) -> Result<Arc<Job>> {
        self.jobs
            .lock()
            .get(id)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("no export {id:?}")))
    }
}

fn final_path(dir: &Path, job: &Job) -> PathBuf {
    dir.join(format!("{}.{}", job.id, job.request.target.format_name()))
}

/// `[start, end)` split into at most `n` chunks covering it exactly (the last ends at
/// `end`); fewer when the range has fewer nanoseconds.
pub(crate) fn split(start: i64, end: i64, n: usize) -> Vec<(i64, i64)> {
    if end <= start {
        return Vec::new();
    }
    let len = i128::from(end) - i128::from(start);
    let n = (n.max(1) as i128).min(len);
    let at =
        |i: i128| -> i64 { i64::try_from(i128::from(start) + len * i / n).unwrap_or(i64::MAX) };
    (0..n).map(|i| (at(i), at(i + 1))).collect()
}

/// Why a chunk stopped.
enum Stop {
    Cancelled,
    Failed(Error),
}

/// Where a running job writes.
enum Output {
    /// Part files in `dir`, joined into one file.
    File { dir: PathBuf, format: FileFormat },
    /// A Kafka topic.
    Kafka(Arc<KafkaSink>),
}

/// A running job.
struct Run {
    job: Arc<Job>,
    source: Arc<dyn Source>,
    schema: Schema,
    output: Output,
    options: ExportOptions,
}

impl Run {
    fn parts_dir(&self, dir: &Path) -> PathBuf {
        dir.join(format!("{}.parts", self.job.id))
    }

    fn part(&self, dir: &Path, format: FileFormat, i: usize) -> PathBuf {
        self.parts_dir(dir)
            .join(format!("part-{i:05}.{}", format.extension()))
    }

    async fn run(self, chunks: Vec<(usize, i64, i64)>) {
        let this = Arc::new(self);
        let outcome = this.clone().run_chunks(chunks).await;
        let job = &this.job;
        match outcome {
            Ok(bytes) => {
                job.bytes.store(bytes, Ordering::Relaxed);
                job.finish(JobState::Succeeded, None);
                tracing::info!(job_id = %job.id, rows = job.rows.load(Ordering::Relaxed), bytes, "export succeeded");
            }
            Err(Stop::Cancelled) => {
                job.finish(JobState::Cancelled, None);
                tracing::info!(job_id = %job.id, "export cancelled");
            }
            Err(Stop::Failed(e)) => {
                tracing::warn!(job_id = %job.id, error = %e, "export failed");
                job.finish(JobState::Failed, Some(e.to_string()));
            }
        }
        if let Output::File { dir, .. } = &this.output {
            let _ = tokio::fs::remove_dir_all(this.parts_dir(dir)).await;
        }
    }

    /// Writes every chunk, then (files) joins the parts; returns the bytes written.
    async fn run_chunks(
        self: Arc<Self>,
        chunks: Vec<(usize, i64, i64)>,
    ) -> std::result::Result<u64, Stop> {
        if let Output::File { dir, .. } = &self.output {
            let parts_dir = self.parts_dir(dir);
            tokio::fs::create_dir_all(&parts_dir)
                .await
                .map_err(|e| Stop::Failed(io_error(&parts_dir)(e)))?;
        }
        let n = self.job.chunks.len();
        let mut results = futures::stream::iter(chunks)
            .map(|(i, lo, hi)| {
                let this = Arc::clone(&self);
                async move { this.chunk(i, lo, hi).await }
            })
            .buffer_unordered(self.options.worker_num.max(1));
        while let Some(result) = results.next().await {
            if let Err(stop) = result {
                // The other workers stop at their next page.
                self.job.cancel.send_replace(true);
                return Err(stop);
            }
        }
        drop(results);
        if self.job.cancelled() {
            return Err(Stop::Cancelled);
        }
        let Output::File { dir, format } = &self.output else {
            return Ok(self.job.bytes.load(Ordering::Relaxed));
        };
        let parts: Vec<PathBuf> = (0..n).map(|i| self.part(dir, *format, i)).collect();
        let target = final_path(dir, &self.job);
        let format = *format;
        let schema = self.schema.clone();
        tokio::task::spawn_blocking(move || files::join(&parts, &target, format, &schema))
            .await
            .map_err(|e| Stop::Failed(Error::Invalid(format!("joining the parts: {e}"))))?
            .map_err(Stop::Failed)
    }

    /// Writes chunk `i` (`[lo, hi)`), retrying it from scratch.
    async fn chunk(&self, i: usize, lo: i64, hi: i64) -> std::result::Result<(), Stop> {
        if let Output::Kafka(sink) = &self.output {
            // The partition's previous chunk first: records stay in time order.
            let lane = sink.partitions() as usize;
            if let Some(previous) = i.checked_sub(lane).and_then(|p| self.job.done.get(p)) {
                let mut done = previous.subscribe();
                if done.wait_for(|d| *d).await.is_err() {
                    return Err(Stop::Cancelled);
                }
            }
        }
        let mut attempt = 0;
        loop {
            if self.job.cancelled() {
                return Err(Stop::Cancelled);
            }
            let counted = AtomicU64::new(0);
            let written = match &self.output {
                Output::File { dir, format } => {
                    self.write_part(dir, *format, i, lo, hi, &counted).await
                }
                Output::Kafka(sink) => self.send_chunk(sink, i, lo, hi, &counted).await,
            };
            match written {
                Ok(bytes) => {
                    self.job
                        .chunk_done(i, counted.load(Ordering::Relaxed), bytes);
                    return Ok(());
                }
                Err(Stop::Cancelled) => return Err(Stop::Cancelled),
                Err(Stop::Failed(e)) => {
                    // This attempt's rows are written again by the next one.
                    self.job
                        .rows
                        .fetch_sub(counted.load(Ordering::Relaxed), Ordering::Relaxed);
                    if attempt >= self.options.retries {
                        return Err(Stop::Failed(Error::Unreachable(format!(
                            "chunk {i} ({} to {}) failed {} times, last: {e}",
                            files_time(lo),
                            files_time(hi - 1),
                            attempt + 1
                        ))));
                    }
                    attempt += 1;
                    tracing::warn!(job_id = %self.job.id, chunk = i, attempt, error = %e, "export chunk failed, retrying");
                    tokio::time::sleep(Duration::from_millis(200 << attempt.min(5))).await;
                }
            }
        }
    }

    /// Reads `[lo, hi)` and hands each page to `take`, which returns the page's
    /// bytes; counts the rows. Returns the bytes once every row read was taken.
    async fn pump(
        &self,
        i: usize,
        lo: i64,
        hi: i64,
        counted: &AtomicU64,
        take: &mut (dyn Take + '_),
    ) -> std::result::Result<u64, Stop> {
        let (tx, rx) = mpsc::channel::<Vec<Row>>(2);
        let source = Arc::clone(&self.source);
        let schema = &self.schema;
        let read = async move {
            let read = source.read(schema, lo, hi, &tx).await;
            drop(tx);
            read
        };
        // The receiver is moved in: when the writer stops early (a sink error, a
        // cancel), it is dropped with the block, so a reader blocked on a full channel
        // sees it closed and stops instead of waiting forever.
        let write = async {
            let mut rx = rx;
            let (mut rows, mut bytes) = (0u64, 0u64);
            while let Some(page) = rx.recv().await {
                if self.job.cancelled() {
                    return Err(Stop::Cancelled);
                }
                let n = page.len() as u64;
                bytes += take.take(page).await?;
                rows += n;
                counted.fetch_add(n, Ordering::Relaxed);
                self.job.rows.fetch_add(n, Ordering::Relaxed);
            }
            Ok((rows, bytes))
        };
        let (read, written) = tokio::join!(read, write);
        let (written, bytes) = written?;
        let read = read.map_err(Stop::Failed)?;
        if self.job.cancelled() {
            return Err(Stop::Cancelled);
        }
        if read != written {
            return Err(Stop::Failed(Error::Invalid(format!(
                "chunk {i}: {read} rows read but {written} written"
            ))));
        }
        Ok(bytes)
    }

    /// Reads `[lo, hi)` into part `i` (a temporary file renamed once complete);
    /// returns its size.
    async fn write_part(
        &self,
        dir: &Path,
        format: FileFormat,
        i: usize,
        lo: i64,
        hi: i64,
        counted: &AtomicU64,
    ) -> std::result::Result<u64, Stop> {
        let path = self.part(dir, format, i);
        let mut temp_name = path.as_os_str().to_owned();
        temp_name.push(".tmp");
        let temp = PathBuf::from(temp_name);
        let (schema, t) = (self.schema.clone(), temp.clone());
        let writer = blocking(move || PartWriter::create(&t, format, &schema)).await?;
        let mut part = Part {
            writer: Some(writer),
            temp: temp.clone(),
            schema: self.schema.clone(),
        };
        self.pump(i, lo, hi, counted, &mut part).await?;
        let w = part.writer.take().ok_or(Stop::Cancelled)?;
        let (t, p) = (temp.clone(), path.clone());
        blocking(move || {
            w.finish(&t)?;
            std::fs::rename(&t, &p).map_err(io_error(&p))?;
            std::fs::metadata(&p).map(|m| m.len()).map_err(io_error(&p))
        })
        .await
    }

    /// Sends `[lo, hi)` to partition `i mod n` of the topic; returns the bytes of the
    /// records' values.
    async fn send_chunk(
        &self,
        sink: &KafkaSink,
        i: usize,
        lo: i64,
        hi: i64,
        counted: &AtomicU64,
    ) -> std::result::Result<u64, Stop> {
        let partitions = sink.partitions().max(1) as usize;
        let mut send = Sending {
            sink,
            partition: u32::try_from(i % partitions).unwrap_or(0),
            schema: &self.schema,
            job: &self.job,
        };
        self.pump(i, lo, hi, counted, &mut send).await
    }
}

/// Where [`Run::pump`] hands a chunk's pages; returns each page's bytes.
#[async_trait::async_trait]
trait Take: Send {
    async fn take(&mut self, page: Vec<Row>) -> std::result::Result<u64, Stop>;
}

/// A part file being written (by blocking tasks).
struct Part {
    writer: Option<PartWriter>,
    temp: PathBuf,
    schema: Schema,
}

#[async_trait::async_trait]
impl Take for Part {
    async fn take(&mut self, page: Vec<Row>) -> std::result::Result<u64, Stop> {
        let mut w = self.writer.take().ok_or(Stop::Cancelled)?;
        let (schema, t) = (self.schema.clone(), self.temp.clone());
        self.writer = Some(
            blocking(move || {
                w.write(&t, &schema, &page)?;
                Ok(w)
            })
            .await?,
        );
        Ok(0)
    }
}

/// A chunk's partition of the topic.
struct Sending<'a> {
    sink: &'a KafkaSink,
    partition: u32,
    schema: &'a Schema,
    job: &'a Job,
}

#[async_trait::async_trait]
impl Take for Sending<'_> {
    async fn take(&mut self, page: Vec<Row>) -> std::result::Result<u64, Stop> {
        let sent = self
            .sink
            .send(self.partition, self.schema, &page)
            .await
            .map_err(Stop::Failed)?;
        Ok(match sent {
            Some((first, last, bytes)) => {
                self.job
                    .delivered(self.partition, first, last, page.len() as u64);
                bytes
            }
            None => 0,
        })
    }
}

/// Runs file work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> std::result::Result<T, Stop> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Stop::Failed(Error::Invalid(format!("file task: {e}"))))?
        .map_err(Stop::Failed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::{Column, ColumnKind, Role, Value};
    use async_trait::async_trait;

    /// A source of one row per nanosecond of `[0, 1000)` whose reads of the range
    /// holding `bad` fail (after sending a few rows) `failures` times, and whose read
    /// of the range holding `gate.0` waits until `gate.1` is true — the job's retry
    /// and resume logic under test, not an engine.
    struct Flaky {
        bad: i64,
        failures: AtomicU64,
        gate: Option<(i64, watch::Receiver<bool>)>,
        page: usize,
    }

    #[async_trait]
    impl Source for Flaky {
        fn name(&self) -> String {
            "flaky".to_owned()
        }
        async fn schema(&self) -> Result<Schema> {
            Ok(Schema {
                dataset: "flaky".to_owned(),
                time_column: "time".to_owned(),
                columns: vec![Column {
                    name: "n".to_owned(),
                    kind: ColumnKind::Int,
                    role: Role::Field,
                }],
            })
        }
        async fn time_range(&self) -> Result<Option<(i64, i64)>> {
            Ok(Some((0, 999)))
        }
        async fn read(
            &self,
            _: &Schema,
            lo: i64,
            hi: i64,
            out: &mpsc::Sender<Vec<Row>>,
        ) -> Result<u64> {
            if let Some((at, open)) = &self.gate
                && (lo..hi).contains(at)
            {
                let mut open = open.clone();
                let _ = open.wait_for(|o| *o).await;
            }
            let rows: Vec<Row> = (lo..hi)
                .map(|t| Row {
                    time_ns: t,
                    values: vec![Value::Int(t)],
                })
                .collect();
            if (lo..hi).contains(&self.bad)
                && self
                    .failures
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |f| f.checked_sub(1))
                    .is_ok()
            {
                let _ = out.send(rows[..3.min(rows.len())].to_vec()).await;
                return Err(Error::Unreachable("connection reset".to_owned()));
            }
            // In pages of `page` rows (all at once when 0); stops when `out` closes.
            let mut n = 0;
            for page in rows.chunks(if self.page == 0 {
                rows.len().max(1)
            } else {
                self.page
            }) {
                if out.send(page.to_vec()).await.is_err() {
                    return Ok(n);
                }
                n += page.len() as u64;
            }
            Ok(n)
        }
    }

    /// The `n` of each line of an NDJSON export of `flaky`.
    fn ns_of(text: &str) -> Vec<i64> {
        text.lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["n"]
                    .as_i64()
                    .unwrap()
            })
            .collect()
    }

    /// An NDJSON export of the `flaky` dataset.
    fn flaky_request() -> ExportRequest {
        ExportRequest {
            connection_id: "flaky".to_owned(),
            dataset: DatasetRef {
                table: "flaky".to_owned(),
                database: None,
                time_column: None,
            },
            start_ns: None,
            end_ns: None,
            target: Target::File(FileFormat::Ndjson),
        }
    }

    async fn run(failures: u64) -> (JobStatus, Option<String>) {
        let dir = tempfile::tempdir().unwrap();
        let exports = Exports::new(
            ExportOptions {
                dir: Some(dir.path().to_path_buf()),
                divided_jobs: 9,
                worker_num: 2,
                retries: 2,
                ..ExportOptions::default()
            },
            None,
        );
        let request = flaky_request();
        let source = Arc::new(Flaky {
            bad: 500,
            failures: AtomicU64::new(failures),
            gate: None,
            page: 0,
        });
        let started = exports
            .launch(
                request,
                source,
                Output::File {
                    dir: dir.path().to_path_buf(),
                    format: FileFormat::Ndjson,
                },
            )
            .await
            .unwrap();
        let status = loop {
            let s = exports.get(&started.job_id).unwrap();
            if s.state != JobState::Running {
                break s;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let text = exports
            .file(&started.job_id)
            .ok()
            .map(|(path, _)| crate::files::read_text(&path));
        (status, text)
    }

    #[tokio::test]
    async fn a_failed_chunk_is_rewritten_from_scratch_and_nothing_is_doubled() {
        let (status, text) = run(2).await;
        assert_eq!(status.state, JobState::Succeeded, "{status:?}");
        assert_eq!(status.rows, 1000);
        assert_eq!(ns_of(&text.unwrap()), (0..1000).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_chunk_failing_after_its_retries_fails_the_job_with_the_cause() {
        let (status, text) = run(3).await;
        assert_eq!(status.state, JobState::Failed, "{status:?}");
        let error = status.error.unwrap();
        assert!(error.contains("failed 3 times"), "{error}");
        assert!(error.contains("connection reset"), "{error}");
        assert!(text.is_none());
    }

    async fn ended(exports: &Exports, id: &str) -> JobStatus {
        loop {
            let s = exports.get(id).unwrap();
            if s.state != JobState::Running {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn a_job_cut_by_a_crash_resumes_from_its_complete_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let options = ExportOptions {
            dir: Some(dir.path().to_path_buf()),
            divided_jobs: 10,
            worker_num: 2,
            retries: 0,
            ..ExportOptions::default()
        };
        let output = || Output::File {
            dir: dir.path().to_path_buf(),
            format: FileFormat::Ndjson,
        };
        let request = flaky_request;
        let gated = |open: watch::Receiver<bool>| {
            Arc::new(Flaky {
                bad: -1,
                failures: AtomicU64::new(0),
                gate: Some((450, open)),
                page: 0,
            })
        };
        // The first process: chunk 4 ([400, 500)) never completes; the others do.
        let (_closed, closed) = watch::channel(false);
        let first = Exports::new(options.clone(), None);
        let id = first
            .launch(request(), gated(closed), output())
            .await
            .unwrap()
            .job_id;
        while first.get(&id).unwrap().chunks_done < 9 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        first.crash();
        drop(first);

        // The second lists it as it was kept and runs chunk 4 only.
        let second = Exports::new(options.clone(), None);
        let running = std::mem::take(&mut *second.to_resume.lock());
        assert_eq!(running.len(), 1);
        let kept = second.get(&id).unwrap();
        assert_eq!(
            (kept.state, kept.chunks_done, kept.rows),
            (JobState::Running, 9, 900)
        );
        let (_open, open) = watch::channel(true);
        second
            .resume(&running[0], gated(open), output())
            .await
            .unwrap();
        let done = ended(&second, &id).await;
        assert_eq!(
            (done.state, done.rows, done.chunks_done),
            (JobState::Succeeded, 1000, 10)
        );
        let text = crate::files::read_text(&second.file(&id).unwrap().0);
        assert_eq!(ns_of(&text), (0..1000).collect::<Vec<_>>());

        // A third lists it as it ended, with its file; nothing to resume.
        let third = Exports::new(options.clone(), None);
        assert!(third.to_resume.lock().is_empty());
        let listed = third.get(&id).unwrap();
        assert_eq!((listed.state, listed.rows), (JobState::Succeeded, 1000));
        assert!(third.file(&id).is_ok());

        // A job kept with other columns than its source has now is not resumed.
        let mut kept =
            Manifest::read(&dir.path().join(format!("{id}{}", manifest::SUFFIX))).unwrap();
        kept.state = None;
        kept.done.clear();
        kept.job_id = "exp-changed".to_owned();
        kept.schema.columns[0].name = "renamed".to_owned();
        kept.write(&dir.path().join(format!("exp-changed{}", manifest::SUFFIX)))
            .unwrap();
        let fourth = Exports::new(options.clone(), None);
        let changed = std::mem::take(&mut *fourth.to_resume.lock());
        assert_eq!(changed.len(), 1);
        let (_open, open) = watch::channel(true);
        let e = fourth
            .resume(&changed[0], gated(open), output())
            .await
            .unwrap_err();
        assert!(e.to_string().contains("columns"), "{e}");
    }

    /// A job cancelled while its reader still has pages to send ends (its reader is
    /// not left blocked on a full channel nobody reads).
    #[tokio::test]
    async fn a_cancelled_job_stops_its_reader_and_ends() {
        let dir = tempfile::tempdir().unwrap();
        let exports = Exports::new(
            ExportOptions {
                dir: Some(dir.path().to_path_buf()),
                divided_jobs: 1,
                ..ExportOptions::default()
            },
            None,
        );
        let (gate, open) = watch::channel(false);
        let source = Arc::new(Flaky {
            bad: -1,
            failures: AtomicU64::new(0),
            gate: Some((0, open)),
            page: 1,
        });
        let output = Output::File {
            dir: dir.path().to_path_buf(),
            format: FileFormat::Ndjson,
        };
        let id = exports
            .launch(flaky_request(), source, output)
            .await
            .unwrap()
            .job_id;
        // Running (its parts directory made, its reader at the gate), then cancelled
        // before the first of its 1,000 one-row pages reaches the writer.
        let parts = dir.path().join(format!("{id}.parts"));
        let deadline = Instant::now() + Duration::from_secs(30);
        while !parts.exists() {
            assert!(Instant::now() < deadline, "the job never started");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(exports.cancel(&id).unwrap().state, JobState::Cancelled);
        gate.send_replace(true);
        while parts.exists() {
            assert!(Instant::now() < deadline, "the job's task never ended");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(exports.file(&id).is_err());
    }

    #[test]
    fn ranges_split_exactly_with_the_remainder_in_the_chunks() {
        let chunks = split(0, 100, 48);
        assert_eq!(chunks.len(), 48);
        assert_eq!(chunks[0].0, 0);
        assert_eq!(chunks[47].1, 100);
        for w in chunks.windows(2) {
            assert_eq!(w[0].1, w[1].0);
            assert!(w[0].0 < w[0].1);
        }
        // Fewer nanoseconds than chunks: one chunk per nanosecond.
        assert_eq!(split(5, 8, 48), vec![(5, 6), (6, 7), (7, 8)]);
        assert!(split(5, 5, 3).is_empty());
        // The whole i64 range does not overflow.
        let all = split(i64::MIN, i64::MAX, 7);
        assert_eq!(all.first().unwrap().0, i64::MIN);
        assert_eq!(all.last().unwrap().1, i64::MAX);
    }
}
