//! Flush: the head becomes an immutable file, then the manifest names it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use super::catalog::{FileStats, MeasurementMeta};
use super::columns::Columns;
use super::events_file::{self, EventFile};
use super::fsutil::remove_quietly;
use super::manifest::{FileEntry, Manifest, events_name, points_name, results_name};
use super::merge::file_stats;
use super::parquet_util::WriteOptions;
use super::points_file::{self, PointFile, SeriesRows};
use super::results_file::{self, ResultFile};
use super::{EventHead, Head, Inner, ResultHead, State, blocking};
use datanexus_store::{FlushReport, Result, SeriesKey};

pub(super) use super::compaction::{
    compact_events, compact_points, compact_results, delete_points, enforce_retention,
};

/// What a flush writes, taken from the state under the lock.
struct FlushJob {
    dir: PathBuf,
    write: WriteOptions,
    points_seq: u64,
    events_seq: u64,
    results_seq: u64,
    frozen: Arc<Head>,
    /// Series of `frozen` with samples, sorted by id.
    keys: Vec<(u64, Arc<SeriesKey>)>,
    frozen_events: Arc<EventHead>,
    frozen_results: Arc<ResultHead>,
    points: Vec<Arc<PointFile>>,
    events: Vec<Arc<EventFile>>,
    results: Vec<Arc<ResultFile>>,
    next_seq: u64,
    measurements: std::collections::BTreeMap<String, MeasurementMeta>,
}

/// What a successful flush installs.
struct FlushDone {
    point: Option<Arc<PointFile>>,
    event: Option<Arc<EventFile>>,
    result: Option<Arc<ResultFile>>,
    stats: HashMap<u64, Option<FileStats>>,
    report: FlushReport,
}

/// The write options of `inner`.
pub(super) fn write_options(inner: &Inner) -> WriteOptions {
    WriteOptions {
        row_group_rows: inner.options.row_group_rows,
        zstd_level: inner.options.zstd_level,
    }
}

/// The manifest listing `points`, `events` and `results`.
pub(super) fn manifest_of(
    points: &[Arc<PointFile>],
    events: &[Arc<EventFile>],
    results: &[Arc<ResultFile>],
    next_seq: u64,
    measurements: std::collections::BTreeMap<String, MeasurementMeta>,
) -> Manifest {
    Manifest {
        version: 1,
        next_seq,
        points: points
            .iter()
            .map(|f| FileEntry {
                seq: f.seq,
                rows: f.rows,
                bytes: f.bytes,
            })
            .collect(),
        events: events
            .iter()
            .map(|f| FileEntry {
                seq: f.seq,
                rows: f.rows,
                bytes: f.bytes,
            })
            .collect(),
        results: results
            .iter()
            .map(|f| FileEntry {
                seq: f.seq,
                rows: f.rows,
                bytes: f.bytes,
            })
            .collect(),
        measurements,
        results_apart: true,
    }
}

/// Flushes the head; the caller holds the maintenance lock. Small files are compacted
/// afterwards (a compaction failure is logged: the flushed data is durable regardless).
pub(super) async fn flush(inner: &Inner) -> Result<FlushReport> {
    let Some(job) = begin(inner) else {
        return Ok(FlushReport::default());
    };
    match blocking(move || write_files(job)).await {
        Ok(done) => {
            let report = done.report;
            finish(inner, done);
            if let Err(e) = compact_points(inner, false).await {
                tracing::warn!(error = %e, "compacting points files after a flush failed");
            }
            if let Err(e) = compact_events(inner, false).await {
                tracing::warn!(error = %e, "compacting events files after a flush failed");
            }
            if let Err(e) = compact_results(inner, false).await {
                tracing::warn!(error = %e, "compacting results files after a flush failed");
            }
            Ok(report)
        }
        Err(e) => {
            abort(inner);
            Err(e)
        }
    }
}

fn begin(inner: &Inner) -> Option<FlushJob> {
    let mut guard = inner.state.write();
    let st: &mut State = &mut guard;
    if st.head.values().all(Columns::is_empty) && st.events.is_empty() && st.results.is_empty() {
        return None;
    }
    let frozen = Arc::new(std::mem::take(&mut st.head));
    let frozen_events = Arc::new(std::mem::take(&mut st.events));
    let frozen_results = Arc::new(std::mem::take(&mut st.results));
    let mut keys: Vec<(u64, Arc<SeriesKey>)> = frozen
        .iter()
        .filter(|(_, c)| !c.is_empty())
        .filter_map(|(id, _)| Some((*id, Arc::clone(&st.catalog.series.get(id)?.key))))
        .collect();
    keys.sort_unstable_by_key(|(id, _)| *id);
    let (points_seq, events_seq, results_seq) = (st.next_seq, st.next_seq + 1, st.next_seq + 2);
    st.next_seq += 3;
    st.frozen = Some(Arc::clone(&frozen));
    st.frozen_events = Some(Arc::clone(&frozen_events));
    st.frozen_results = Some(Arc::clone(&frozen_results));
    Some(FlushJob {
        dir: inner.dir.clone(),
        write: write_options(inner),
        points_seq,
        events_seq,
        results_seq,
        frozen,
        keys,
        frozen_events,
        frozen_results,
        points: st.points.clone(),
        events: st.event_files.clone(),
        results: st.result_files.clone(),
        next_seq: st.next_seq,
        measurements: st.catalog.measurements.clone(),
    })
}

/// Writes the data files (deleting them again if that fails), then the manifest.
fn write_files(job: FlushJob) -> Result<FlushDone> {
    let mut written = Vec::new();
    let files = write_data(&job, &mut written);
    let (point, event, result) = match files {
        Ok(f) => f,
        Err(e) => {
            written.iter().for_each(|p| remove_quietly(p));
            return Err(e);
        }
    };
    let mut points = job.points.clone();
    points.extend(point.iter().cloned());
    let mut events = job.events.clone();
    events.extend(event.iter().cloned());
    let mut results = job.results.clone();
    results.extend(result.iter().cloned());
    let ids: Vec<u64> = job.keys.iter().map(|(id, _)| *id).collect();
    let stats = file_stats(&ids, &points)?;
    manifest_of(
        &points,
        &events,
        &results,
        job.next_seq,
        job.measurements.clone(),
    )
    .store(&job.dir)?;
    let rows = point.iter().map(|f| f.rows).sum::<u64>()
        + event.iter().map(|f| f.rows).sum::<u64>()
        + result.iter().map(|f| f.rows).sum::<u64>();
    let bytes = point.iter().map(|f| f.bytes).sum::<u64>()
        + event.iter().map(|f| f.bytes).sum::<u64>()
        + result.iter().map(|f| f.bytes).sum::<u64>();
    Ok(FlushDone {
        point,
        event,
        result,
        stats,
        report: FlushReport { rows, bytes },
    })
}

type NewFiles = (
    Option<Arc<PointFile>>,
    Option<Arc<EventFile>>,
    Option<Arc<ResultFile>>,
);

fn write_data(job: &FlushJob, written: &mut Vec<PathBuf>) -> Result<NewFiles> {
    let mut point = None;
    if !job.keys.is_empty() {
        let rows: Vec<SeriesRows<'_>> = job
            .keys
            .iter()
            .filter_map(|(id, key)| {
                Some(SeriesRows {
                    id: *id,
                    key,
                    cols: job.frozen.get(id)?,
                })
            })
            .collect();
        let path = job.dir.join(points_name(job.points_seq));
        written.push(path.clone());
        point = Some(Arc::new(points_file::write(
            &path,
            job.points_seq,
            &rows,
            &job.write,
        )?));
    }
    let mut event = None;
    if !job.frozen_events.is_empty() {
        let rows = job
            .frozen_events
            .values()
            .map(events_file::to_row)
            .collect();
        let path = job.dir.join(events_name(job.events_seq));
        written.push(path.clone());
        event = Some(Arc::new(events_file::write(
            &path,
            job.events_seq,
            rows,
            &job.write,
        )?));
    }
    let mut result = None;
    if !job.frozen_results.is_empty() {
        let rows = job
            .frozen_results
            .values()
            .flat_map(|by_seq| by_seq.values().cloned())
            .collect();
        let path = job.dir.join(results_name(job.results_seq));
        written.push(path.clone());
        result = Some(Arc::new(results_file::write(
            &path,
            job.results_seq,
            rows,
            &job.write,
        )?));
    }
    Ok((point, event, result))
}

fn finish(inner: &Inner, done: FlushDone) {
    let mut st = inner.state.write();
    st.points.extend(done.point);
    st.event_files.extend(done.event);
    st.result_files.extend(done.result);
    st.frozen = None;
    st.frozen_events = None;
    st.frozen_results = None;
    for (id, stats) in done.stats {
        if let Some(entry) = st.catalog.series.get_mut(&id) {
            entry.files = stats;
        }
    }
}

/// Puts the frozen head back under the newer one after a failed flush.
fn abort(inner: &Inner) {
    let mut guard = inner.state.write();
    let st: &mut State = &mut guard;
    if let Some(frozen) = st.frozen.take() {
        let frozen = Arc::try_unwrap(frozen).unwrap_or_else(|shared| (*shared).clone());
        for (id, older) in frozen {
            let newer = st.head.remove(&id).unwrap_or_default();
            st.head.insert(id, Columns::merge(older, newer));
        }
    }
    if let Some(frozen) = st.frozen_events.take() {
        let frozen = Arc::try_unwrap(frozen).unwrap_or_else(|shared| (*shared).clone());
        for (id, e) in frozen {
            st.events.entry(id).or_insert(e);
        }
    }
    if let Some(frozen) = st.frozen_results.take() {
        let frozen = Arc::try_unwrap(frozen).unwrap_or_else(|shared| (*shared).clone());
        for (client, older) in frozen {
            let newer = st.results.entry(client).or_default();
            for (seq, r) in older {
                newer.entry(seq).or_insert(r);
            }
        }
    }
}
