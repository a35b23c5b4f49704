//! The embedded columnar backend: an in-memory head of per-series column buffers, made
//! durable by [`Store::flush`] as immutable Apache Parquet files plus a small manifest.
//!
//! # On-disk layout
//! ```text
//! <dir>/
//!   manifest.json                  live files, next sequence number, measurement kind/help
//!   manifest.json.tmp              a manifest being written (renamed over manifest.json)
//!   points-<seq:020>.parquet       samples: series_id, measurement, field, labels,
//!                                  timestamp_ns, value — sorted by (series_id, timestamp_ns)
//!   events-<seq:020>.parquet       raw events: id, source_id, timestamp_ns, payload (JSON)
//!   results-<seq:020>.parquet      stream results: client_id, seq, event, outcome, times —
//!                                  sorted by (client_id, seq), indexed in memory on both
//! ```
//! Column encodings are described in `points_file.rs`, `events_file.rs` and
//! `results_file.rs`; any Parquet reader (pyarrow, DuckDB, …) reads the files.
//!
//! # Invariants
//! - A file is live iff the manifest names it. A data file is written and fsynced before
//!   a manifest naming it is written; a file is deleted only after a manifest that no
//!   longer names it is durable. Files the manifest does not name are crash leftovers and
//!   are deleted by [`EmbeddedStore::open`].
//! - Sequence numbers are allocated from `next_seq` and never reused; a file with a higher
//!   one holds newer writes. Within a points file (series, timestamp) is unique; across
//!   files and the head, the newest copy wins: queries merge head and files per series
//!   and drop older duplicates, compaction drops them for good. Events likewise by id,
//!   results by (client, seq).
//! - The head is newer than every file. During a flush the head being written is kept
//!   (frozen) and queried until the manifest naming its file is durable; if the flush
//!   fails it is merged back under the newer head.
//! - Flush, compaction and retention are serialized; file I/O runs in `spawn_blocking`.
//! - Unflushed writes are lost on a crash by design: the pipeline commits its broker
//!   offset only after a flush, and replays the rest.
//!
//! # Memory
//! A series in the head costs its key (measurement, field and labels strings, shared
//! with the catalog), about 100 bytes of hash-map entries and buffer headers, and 16
//! bytes per buffered sample (two `Vec`s, amortized growth up to 2×). Measured by the
//! `store_bench` example: about 3.3 KB of RSS per series holding 100 samples, of which
//! about 2 KB are the sample buffers (capacity 128), so roughly 1 KB fixed per series.
//! The catalog keeps the key and file statistics (~200 bytes plus the key) for every
//! known series, flushed or not. The results index keeps 8 bytes per stored result
//! (its seq) plus one entry per client and file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use datanexus_model::{Point, series_id};
use parking_lot::RwLock;

use datanexus_store::{
    AggregateParts, AggregateQuery, AggregateResult, DatasetInfo, Error, EventPage, EventQuery,
    FlushReport, Latest, QueryResult, Result, ResultPage, ResultQuery, SeriesKey, SeriesQuery,
    Store, StoredEvent, StoredResult,
};

mod catalog;
mod columns;
mod compaction;
mod events;
mod events_file;
mod fsutil;
mod maintenance;
mod manifest;
mod merge;
mod migrate;
mod open;
mod parquet_util;
mod points_file;
mod query;
mod results;
mod results_file;
#[cfg(test)]
mod tests;

use catalog::Catalog;
use columns::Columns;
use events_file::EventFile;
use points_file::PointFile;
use results_file::ResultFile;

/// Tuning of the embedded store. `Default` is the single source of truth.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddedStoreOptions {
    /// Data older than this (by sample / event timestamp, against the wall clock) is
    /// removed by [`Store::enforce_retention`]; `None` keeps everything.
    pub retention_max_age: Option<Duration>,
    /// Most rows per Parquet row group, the unit of statistics-based pruning.
    pub row_group_rows: usize,
    /// A flush compacts when more than this many small files sit at the newest end.
    pub compact_min_files: usize,
    /// Files with fewer rows than this are "small" (candidates for compaction).
    pub small_file_rows: u64,
    /// zstd compression level of new files (1..=22).
    pub zstd_level: i32,
}

impl Default for EmbeddedStoreOptions {
    fn default() -> Self {
        EmbeddedStoreOptions {
            retention_max_age: None,
            row_group_rows: 64 * 1024,
            compact_min_files: 8,
            small_file_rows: 2_000_000,
            zstd_level: 3,
        }
    }
}

/// The head: buffered samples per series id.
type Head = HashMap<u64, Columns>;
/// Buffered events by id.
type EventHead = HashMap<String, StoredEvent>;
/// Buffered results by client, then seq.
type ResultHead = std::collections::BTreeMap<String, std::collections::BTreeMap<u64, StoredResult>>;

/// Everything behind the state lock.
#[derive(Debug, Default)]
struct State {
    catalog: Catalog,
    head: Head,
    /// The head being flushed (older than `head`, newer than every file).
    frozen: Option<Arc<Head>>,
    events: EventHead,
    frozen_events: Option<Arc<EventHead>>,
    results: ResultHead,
    frozen_results: Option<Arc<ResultHead>>,
    /// Live points files, oldest first.
    points: Vec<Arc<PointFile>>,
    /// Live events files, oldest first.
    event_files: Vec<Arc<EventFile>>,
    /// Live results files, oldest first.
    result_files: Vec<Arc<ResultFile>>,
    next_seq: u64,
    stopped: bool,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    options: EmbeddedStoreOptions,
    state: RwLock<State>,
    /// Serializes flush, compaction and retention.
    maintenance: tokio::sync::Mutex<()>,
}

/// The embedded columnar store.
#[derive(Debug, Clone)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

impl EmbeddedStore {
    /// Opens (or creates) the store in `dir`: loads the manifest, deletes files it does
    /// not list, and rebuilds the series catalog and statistics from the live files.
    /// Blocks on file I/O: call it before serving, or inside `spawn_blocking`.
    ///
    /// # Errors
    /// [`Error::Io`] when `dir` is unusable; [`Error::Corrupt`] when the manifest or a
    /// live file cannot be read.
    pub fn open(dir: &Path, options: EmbeddedStoreOptions) -> Result<EmbeddedStore> {
        let state = open::load(dir, &options)?;
        let inner = Inner {
            dir: dir.to_path_buf(),
            options,
            state: RwLock::new(state),
            maintenance: tokio::sync::Mutex::new(()),
        };
        Ok(EmbeddedStore {
            inner: Arc::new(inner),
        })
    }

    /// The live Parquet files (points, events, then results), oldest first.
    pub fn files(&self) -> Vec<PathBuf> {
        let st = self.inner.state.read();
        st.points
            .iter()
            .map(|f| f.path.clone())
            .chain(st.event_files.iter().map(|f| f.path.clone()))
            .chain(st.result_files.iter().map(|f| f.path.clone()))
            .collect()
    }

    /// Merges every live file into one (per kind), dropping duplicates and data older
    /// than the retention age. Flush compacts small files on its own; this is the full
    /// ("major") compaction, for tools and tests. Reads all data into memory.
    ///
    /// # Errors
    /// I/O failures; the previous files then stay live.
    pub async fn compact(&self) -> Result<()> {
        let _guard = self.inner.maintenance.lock().await;
        maintenance::compact_points(&self.inner, true).await?;
        maintenance::compact_events(&self.inner, true).await?;
        maintenance::compact_results(&self.inner, true).await
    }

    /// Samples and events buffered in the head (not yet flushed).
    pub fn head_len(&self) -> (usize, usize) {
        let st = self.inner.state.read();
        (st.head.values().map(Columns::len).sum(), st.events.len())
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    fn name(&self) -> &'static str {
        "embedded"
    }

    async fn write_points(&self, points: &[Point]) -> Result<()> {
        let mut st = self.inner.state.write();
        if st.stopped {
            return Err(Error::Closed);
        }
        let st = &mut *st;
        for p in points {
            st.catalog
                .note_meta(&p.measurement, p.kind, p.help.as_deref());
            for (field, v) in &p.fields {
                let Some(v) = v.as_f64() else { continue };
                let id = series_id(&p.measurement, field, &p.labels);
                st.catalog.ensure_series(id, || SeriesKey {
                    measurement: p.measurement.clone(),
                    field: field.clone(),
                    labels: p.labels.clone(),
                });
                st.head.entry(id).or_default().upsert(p.timestamp_ns, v);
            }
        }
        Ok(())
    }

    async fn write_events(&self, events: &[StoredEvent]) -> Result<()> {
        let mut st = self.inner.state.write();
        if st.stopped {
            return Err(Error::Closed);
        }
        for e in events {
            st.events.insert(e.id.clone(), e.clone());
        }
        Ok(())
    }

    async fn write_results(&self, results: &[StoredResult]) -> Result<()> {
        let mut st = self.inner.state.write();
        if st.stopped {
            return Err(Error::Closed);
        }
        for r in results {
            st.results
                .entry(r.client_id.clone())
                .or_default()
                .insert(r.seq, r.clone());
        }
        Ok(())
    }

    async fn results(&self, query: &ResultQuery) -> Result<ResultPage> {
        results::results(&self.inner, query).await
    }

    async fn flush(&self) -> Result<FlushReport> {
        let _guard = self.inner.maintenance.lock().await;
        maintenance::flush(&self.inner).await
    }

    async fn delete_series(&self, series: &[(SeriesKey, i64)]) -> Result<u64> {
        let _guard = self.inner.maintenance.lock().await;
        let mut up_to: std::collections::HashMap<u64, i64> = std::collections::HashMap::new();
        for (key, t) in series {
            let e = up_to.entry(key.id()).or_insert(*t);
            *e = (*e).max(*t);
        }
        maintenance::delete_points(&self.inner, up_to).await
    }

    async fn query(&self, query: &SeriesQuery) -> Result<QueryResult> {
        query::query(&self.inner, query).await
    }

    async fn aggregate(&self, query: &AggregateQuery) -> Result<AggregateResult> {
        Ok(query::aggregate(&self.inner, query).await?.finish())
    }

    async fn aggregate_parts(&self, query: &AggregateQuery) -> Result<AggregateParts> {
        query::aggregate(&self.inner, query).await
    }

    async fn events(&self, query: &EventQuery) -> Result<EventPage> {
        events::events(&self.inner, query).await
    }

    async fn datasets(&self) -> Result<Vec<DatasetInfo>> {
        query::datasets(&self.inner).await
    }

    async fn latest(&self) -> Result<Vec<Latest>> {
        Ok(query::latest(&self.inner))
    }

    async fn enforce_retention(&self) -> Result<()> {
        let Some(age) = self.inner.options.retention_max_age else {
            return Ok(());
        };
        let _guard = self.inner.maintenance.lock().await;
        maintenance::enforce_retention(&self.inner, cutoff_ns(age)).await
    }

    async fn ready(&self) -> Result<()> {
        // In-process: ready while not stopped.
        if self.inner.state.read().stopped {
            return Err(Error::Closed);
        }
        Ok(())
    }

    async fn stop(&self) -> Result<()> {
        let _guard = self.inner.maintenance.lock().await;
        maintenance::flush(&self.inner).await?;
        self.inner.state.write().stopped = true;
        Ok(())
    }
}

/// The timestamp before which data is older than `age`.
fn cutoff_ns(age: Duration) -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let now_ns = i64::try_from(now.as_nanos()).unwrap_or(i64::MAX);
    now_ns.saturating_sub(i64::try_from(age.as_nanos()).unwrap_or(i64::MAX))
}

/// Runs blocking file work off the async runtime.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(format!("store task failed: {e}")))?
}
