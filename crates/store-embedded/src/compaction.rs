//! Compaction (merging files, dropping duplicates and expired rows) and retention.
//!
//! Minor compaction merges the run of small files at the newest end of the file list,
//! so the merged file — which gets the newest sequence number — never jumps ahead of a
//! file that was newer than some of its rows. Full compaction merges everything.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use super::catalog::{FileStats, MeasurementMeta};
use super::columns::Columns;
use super::events_file::{self, EventFile, EventRow};
use super::maintenance::{manifest_of, write_options};
use super::manifest::{events_name, points_name, results_name};
use super::merge::{file_stats, merge_all, read_layers};
use super::parquet_util::WriteOptions;
use super::points_file::{self, PointFile, SeriesFilter, SeriesRows};
use super::results_file::{self, ResultFile};
use super::{Inner, State, blocking, cutoff_ns};
use datanexus_store::{Result, SeriesKey, TimeRange};

/// The files a compaction or retention run produces, installed under the lock.
struct Swap<F> {
    files: Vec<Arc<F>>,
    retired: Vec<Arc<F>>,
    stats: HashMap<u64, Option<FileStats>>,
}

struct Plan<F> {
    dir: PathBuf,
    write: WriteOptions,
    seq: u64,
    keep: Vec<Arc<F>>,
    merge: Vec<Arc<F>>,
    cutoff: Option<i64>,
    keys: HashMap<u64, Arc<SeriesKey>>,
    points: Vec<Arc<PointFile>>,
    events: Vec<Arc<EventFile>>,
    results: Vec<Arc<ResultFile>>,
    next_seq: u64,
    measurements: BTreeMap<String, MeasurementMeta>,
    /// Series whose samples up to a time are left out of the merged file (a delete).
    delete: Option<HashMap<u64, i64>>,
}

/// Index where the files to merge start, or `None` when there is nothing to do.
fn merge_start(
    sizes: &[u64],
    full: bool,
    inner: &Inner,
    min_ts: Option<i64>,
    cutoff: Option<i64>,
) -> Option<usize> {
    if full {
        let expired = cutoff.is_some_and(|c| min_ts.is_some_and(|m| m < c));
        return (sizes.len() >= 2 || (sizes.len() == 1 && expired)).then_some(0);
    }
    let start = sizes
        .iter()
        .rposition(|&rows| rows >= inner.options.small_file_rows)
        .map_or(0, |i| i + 1);
    (sizes.len() - start > inner.options.compact_min_files).then_some(start)
}

fn plan<F>(inner: &Inner, st: &mut State, files: Vec<Arc<F>>, start: usize) -> Plan<F> {
    let cutoff = inner.options.retention_max_age.map(cutoff_ns);
    let seq = st.next_seq;
    st.next_seq += 1;
    let (keep, merge) = (
        files.get(..start).unwrap_or_default().to_vec(),
        files.get(start..).unwrap_or_default().to_vec(),
    );
    Plan {
        dir: inner.dir.clone(),
        write: write_options(inner),
        seq,
        keep,
        merge,
        cutoff,
        keys: HashMap::new(),
        points: st.points.clone(),
        events: st.event_files.clone(),
        results: st.result_files.clone(),
        next_seq: st.next_seq,
        measurements: st.catalog.measurements.clone(),
        delete: None,
    }
}

/// Compacts points files (small ones at the newest end, or all when `full`); the caller
/// holds the maintenance lock.
pub(crate) async fn compact_points(inner: &Inner, full: bool) -> Result<()> {
    rewrite_points(inner, full, None).await.map(|_| ())
}

/// Deletes the samples of each series id up to its time: the head is flushed, then the
/// points files from the oldest one holding any of them to the newest are merged
/// without those samples (merging a suffix keeps newer files newer, as compaction
/// does), in one pass for all the series. Returns the samples deleted; the caller holds
/// the maintenance lock.
pub(crate) async fn delete_points(inner: &Inner, up_to: HashMap<u64, i64>) -> Result<u64> {
    super::maintenance::flush(inner).await?;
    rewrite_points(inner, false, Some(up_to)).await
}

/// Compaction ([`compact_points`]) or a delete ([`delete_points`]).
async fn rewrite_points(
    inner: &Inner,
    full: bool,
    delete: Option<HashMap<u64, i64>>,
) -> Result<u64> {
    let plan = {
        let mut st = inner.state.write();
        let sizes: Vec<u64> = st.points.iter().map(|f| f.rows).collect();
        let min_ts = st.points.iter().map(|f| f.min_ts).min();
        let cutoff = inner.options.retention_max_age.map(cutoff_ns);
        let start = match &delete {
            Some(ids) => st
                .points
                .iter()
                .position(|f| ids.keys().any(|id| f.runs.contains_key(id))),
            None => merge_start(&sizes, full, inner, min_ts, cutoff),
        };
        let Some(start) = start else {
            return Ok(0);
        };
        let files = st.points.clone();
        let mut plan = plan(inner, &mut st, files, start);
        plan.delete = delete;
        let ids: HashSet<u64> = plan
            .merge
            .iter()
            .flat_map(|f| f.runs.keys().copied())
            .collect();
        plan.keys = ids
            .into_iter()
            .filter_map(|id| Some((id, Arc::clone(&st.catalog.series.get(&id)?.key))))
            .collect();
        plan
    };
    let (swap, deleted) = blocking(move || merge_points(plan)).await?;
    install_points(inner, swap).await?;
    Ok(deleted)
}

/// The merged file (and the samples a delete left out).
fn merge_points(plan: Plan<PointFile>) -> Result<(Swap<PointFile>, u64)> {
    let range = TimeRange {
        start_ns: plan.cutoff,
        end_ns: None,
    };
    let mut merged = merge_all(
        read_layers(&plan.merge, &SeriesFilter::All, &range)?,
        HashMap::new(),
    );
    let mut deleted = 0u64;
    for (id, up_to) in plan.delete.iter().flatten() {
        if let Some(c) = merged.get_mut(id) {
            deleted += c.drop_through(*up_to) as u64;
        }
    }
    let mut ids: Vec<u64> = merged
        .iter()
        .filter(|(_, c)| !c.is_empty())
        .map(|(id, _)| *id)
        .collect();
    ids.sort_unstable();
    let rows: Vec<SeriesRows<'_>> = ids
        .iter()
        .filter_map(|id| {
            Some(SeriesRows {
                id: *id,
                key: plan.keys.get(id)?,
                cols: merged.get(id)?,
            })
        })
        .collect();
    let mut files = plan.keep.clone();
    if !rows.is_empty() {
        let path = plan.dir.join(points_name(plan.seq));
        match points_file::write(&path, plan.seq, &rows, &plan.write) {
            Ok(f) => files.push(Arc::new(f)),
            Err(e) => {
                super::fsutil::remove_quietly(&path);
                return Err(e);
            }
        }
    }
    let touched: Vec<u64> = plan.keys.keys().copied().collect();
    let stats = file_stats(&touched, &files)?;
    manifest_of(
        &files,
        &plan.events,
        &plan.results,
        plan.next_seq,
        plan.measurements,
    )
    .store(&plan.dir)?;
    Ok((
        Swap {
            files,
            retired: plan.merge,
            stats,
        },
        deleted,
    ))
}

async fn install_points(inner: &Inner, swap: Swap<PointFile>) -> Result<()> {
    let retired = {
        let mut guard = inner.state.write();
        let st: &mut State = &mut guard;
        st.points = swap.files;
        apply_stats(st, swap.stats);
        swap.retired
    };
    retire(retired).await
}

/// Updates file statistics and forgets series that have no data left anywhere.
fn apply_stats(st: &mut State, stats: HashMap<u64, Option<FileStats>>) {
    for (id, s) in stats {
        let in_memory = st.head.get(&id).is_some_and(|c| !c.is_empty())
            || st
                .frozen
                .as_ref()
                .is_some_and(|h| h.get(&id).is_some_and(|c| !c.is_empty()));
        match st.catalog.series.get_mut(&id) {
            Some(entry) if s.is_some() || in_memory => entry.files = s,
            Some(_) => st.catalog.remove_series(id),
            None => {}
        }
    }
}

/// Marks replaced files obsolete and drops our references off the runtime (the last
/// reference deletes the file).
async fn retire<F: Send + Sync + 'static + Retire>(files: Vec<Arc<F>>) -> Result<()> {
    files.iter().for_each(|f| f.retire_file());
    blocking(move || {
        drop(files);
        Ok(())
    })
    .await
}

/// Files that can be retired.
trait Retire {
    fn retire_file(&self);
}

impl Retire for PointFile {
    fn retire_file(&self) {
        self.retire();
    }
}

impl Retire for EventFile {
    fn retire_file(&self) {
        self.retire();
    }
}

impl Retire for ResultFile {
    fn retire_file(&self) {
        self.retire();
    }
}

/// Compacts events files like [`compact_points`].
pub(crate) async fn compact_events(inner: &Inner, full: bool) -> Result<()> {
    let plan = {
        let mut st = inner.state.write();
        let sizes: Vec<u64> = st.event_files.iter().map(|f| f.rows).collect();
        let min_ts = st.event_files.iter().map(|f| f.min_ts).min();
        let cutoff = inner.options.retention_max_age.map(cutoff_ns);
        let Some(start) = merge_start(&sizes, full, inner, min_ts, cutoff) else {
            return Ok(());
        };
        let files = st.event_files.clone();
        plan(inner, &mut st, files, start)
    };
    let swap = blocking(move || merge_events(plan)).await?;
    let retired = {
        let mut st = inner.state.write();
        st.event_files = swap.files;
        swap.retired
    };
    retire(retired).await
}

fn merge_events(plan: Plan<EventFile>) -> Result<Swap<EventFile>> {
    let range = TimeRange {
        start_ns: plan.cutoff,
        end_ns: None,
    };
    let mut rows: HashMap<String, EventRow> = HashMap::new();
    for f in &plan.merge {
        f.read(None, &range, |r| {
            rows.insert(r.id.clone(), r);
        })?;
    }
    let mut files = plan.keep.clone();
    if !rows.is_empty() {
        let path = plan.dir.join(events_name(plan.seq));
        match events_file::write(&path, plan.seq, rows.into_values().collect(), &plan.write) {
            Ok(f) => files.push(Arc::new(f)),
            Err(e) => {
                super::fsutil::remove_quietly(&path);
                return Err(e);
            }
        }
    }
    manifest_of(
        &plan.points,
        &files,
        &plan.results,
        plan.next_seq,
        plan.measurements,
    )
    .store(&plan.dir)?;
    Ok(Swap {
        files,
        retired: plan.merge,
        stats: HashMap::new(),
    })
}

/// Compacts results files like [`compact_points`]; results processed before the
/// retention cutoff are dropped.
pub(crate) async fn compact_results(inner: &Inner, full: bool) -> Result<()> {
    let plan = {
        let mut st = inner.state.write();
        let sizes: Vec<u64> = st.result_files.iter().map(|f| f.rows).collect();
        let min_ts = st.result_files.iter().map(|f| f.min_processed_ns).min();
        let cutoff = inner.options.retention_max_age.map(cutoff_ns);
        let Some(start) = merge_start(&sizes, full, inner, min_ts, cutoff) else {
            return Ok(());
        };
        let files = st.result_files.clone();
        plan(inner, &mut st, files, start)
    };
    let swap = blocking(move || merge_results(plan)).await?;
    let retired = {
        let mut st = inner.state.write();
        st.result_files = swap.files;
        swap.retired
    };
    retire(retired).await
}

fn merge_results(plan: Plan<ResultFile>) -> Result<Swap<ResultFile>> {
    let mut rows: HashMap<(String, u64), datanexus_store::StoredResult> = HashMap::new();
    // Oldest file first: a newer copy of a (client, seq) replaces an older one.
    for f in &plan.merge {
        for r in f.read_all()? {
            if plan.cutoff.is_none_or(|c| r.processed_ns >= c) {
                rows.insert((r.client_id.clone(), r.seq), r);
            }
        }
    }
    let mut files = plan.keep.clone();
    if !rows.is_empty() {
        let path = plan.dir.join(results_name(plan.seq));
        match results_file::write(&path, plan.seq, rows.into_values().collect(), &plan.write) {
            Ok(f) => files.push(Arc::new(f)),
            Err(e) => {
                super::fsutil::remove_quietly(&path);
                return Err(e);
            }
        }
    }
    manifest_of(
        &plan.points,
        &plan.events,
        &files,
        plan.next_seq,
        plan.measurements,
    )
    .store(&plan.dir)?;
    Ok(Swap {
        files,
        retired: plan.merge,
        stats: HashMap::new(),
    })
}

/// Drops head data older than `cutoff` and files entirely older; rows of partially
/// expired files go at their next compaction. The caller holds the maintenance lock.
pub(crate) async fn enforce_retention(inner: &Inner, cutoff: i64) -> Result<()> {
    let (dir, keep_p, drop_p, keep_e, drop_e, keep_r, drop_r, next_seq, measurements) = {
        let mut guard = inner.state.write();
        let st: &mut State = &mut guard;
        st.head.values_mut().for_each(|c| {
            c.drop_before(cutoff);
        });
        st.head.retain(|_, c: &mut Columns| !c.is_empty());
        st.events.retain(|_, e| e.timestamp_ns >= cutoff);
        for by_seq in st.results.values_mut() {
            by_seq.retain(|_, r| r.processed_ns >= cutoff);
        }
        st.results.retain(|_, by_seq| !by_seq.is_empty());
        let (drop_r, keep_r): (Vec<_>, Vec<_>) = st
            .result_files
            .iter()
            .cloned()
            .partition(|f| f.max_processed_ns < cutoff);
        let (drop_p, keep_p): (Vec<_>, Vec<_>) =
            st.points.iter().cloned().partition(|f| f.max_ts < cutoff);
        let (drop_e, keep_e): (Vec<_>, Vec<_>) = st
            .event_files
            .iter()
            .cloned()
            .partition(|f| f.max_ts < cutoff);
        (
            inner.dir.clone(),
            keep_p,
            drop_p,
            keep_e,
            drop_e,
            keep_r,
            drop_r,
            st.next_seq,
            st.catalog.measurements.clone(),
        )
    };
    let touched: Vec<u64> = drop_p
        .iter()
        .flat_map(|f| f.runs.keys().copied())
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let (keep_p2, keep_e2, keep_r2) = (keep_p.clone(), keep_e.clone(), keep_r.clone());
    let stats = blocking(move || {
        let stats = file_stats(&touched, &keep_p2)?;
        if !drop_p.is_empty() || !drop_e.is_empty() || !drop_r.is_empty() {
            manifest_of(&keep_p2, &keep_e2, &keep_r2, next_seq, measurements).store(&dir)?;
        }
        Ok((stats, drop_p, drop_e, drop_r))
    })
    .await?;
    let (stats, drop_p, drop_e, drop_r) = stats;
    {
        let mut guard = inner.state.write();
        let st: &mut State = &mut guard;
        st.points = keep_p;
        st.event_files = keep_e;
        st.result_files = keep_r;
        apply_stats(st, stats);
        let dead: Vec<u64> = st
            .catalog
            .series
            .iter()
            .filter(|(id, e)| e.files.is_none() && !st.head.contains_key(id))
            .map(|(id, _)| *id)
            .collect();
        dead.into_iter().for_each(|id| st.catalog.remove_series(id));
    }
    retire(drop_p).await?;
    retire(drop_e).await?;
    retire(drop_r).await
}
