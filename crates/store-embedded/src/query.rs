//! Queries over the head and the files: raw samples, aggregates, datasets, latest.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::sync::Arc;

use super::columns::Columns;
use super::merge::{Layers, memory_layers, merge_all, read_layers};
use super::points_file::{PointFile, SeriesFilter};
use super::{Inner, blocking};
use datanexus_store::aggregate::AggregateParts;
use datanexus_store::{
    AggregateQuery, DatasetInfo, Error, Latest, QueryResult, Result, Sample, Selector, SeriesKey,
    SeriesQuery, TimeRange,
};

/// What a query reads: the selected series (sorted by key), the files, the head copy.
struct Snapshot {
    series: Vec<(u64, Arc<SeriesKey>)>,
    files: Vec<Arc<PointFile>>,
    memory: Layers,
}

fn snapshot(inner: &Inner, selector: &Selector, range: &TimeRange) -> Result<Snapshot> {
    let st = inner.state.read();
    if !st.catalog.has_measurement(&selector.measurement) {
        return Err(Error::NotFound(selector.measurement.clone()));
    }
    let series = st.catalog.select(selector);
    let ids: Vec<u64> = series.iter().map(|(id, _)| *id).collect();
    let memory = memory_layers(&st, &ids, range);
    Ok(Snapshot {
        series,
        files: st.points.clone(),
        memory,
    })
}

/// Reads and merges the snapshot's series: columns in the order of `snap.series`.
fn load(snap: Snapshot, range: &TimeRange) -> Result<(Vec<Arc<SeriesKey>>, Vec<Columns>)> {
    let filter = SeriesFilter::ids(snap.series.iter().map(|(id, _)| *id));
    let files = read_layers(&snap.files, &filter, range)?;
    let mut merged = merge_all(files, snap.memory);
    let cols = snap
        .series
        .iter()
        .map(|(id, _)| merged.remove(id).unwrap_or_default())
        .collect();
    Ok((snap.series.into_iter().map(|(_, k)| k).collect(), cols))
}

/// Raw samples ordered by (timestamp, series key), paged. `series` lists the series of
/// the returned samples, in key order.
pub(super) async fn query(inner: &Inner, q: &SeriesQuery) -> Result<QueryResult> {
    let snap = snapshot(inner, &q.selector, &q.range)?;
    if snap.series.is_empty() {
        return Ok(QueryResult::default());
    }
    let (range, limit, offset) = (q.range, q.limit, q.offset);
    blocking(move || {
        let (keys, cols) = load(snap, &range)?;
        Ok(page(&keys, &cols, offset, limit))
    })
    .await
}

fn page(keys: &[Arc<SeriesKey>], cols: &[Columns], offset: usize, limit: usize) -> QueryResult {
    let total: usize = cols.iter().map(Columns::len).sum();
    let mut heap: BinaryHeap<Reverse<(i64, usize, usize)>> = cols
        .iter()
        .enumerate()
        .filter_map(|(i, c)| Some(Reverse((*c.ts.first()?, i, 0))))
        .collect();
    let want = offset.saturating_add(limit).min(total);
    let mut picked: Vec<(usize, Sample)> = Vec::with_capacity(limit.min(total));
    let mut n = 0;
    while n < want {
        let Some(Reverse((_, i, pos))) = heap.pop() else {
            break;
        };
        let Some(c) = cols.get(i) else { break };
        if n >= offset {
            picked.extend(c.get(pos).map(|s| (i, s)));
        }
        n += 1;
        if let Some(&t) = c.ts.get(pos + 1) {
            heap.push(Reverse((t, i, pos + 1)));
        }
    }
    QueryResult::from_picked(picked, |i| keys.get(i).map(|k| (**k).clone()), total as u64)
}

/// Aggregates with [`Aggregate`]; steps are aligned to multiples of `step_ns`, and steps
/// without a non-NaN sample are omitted (when finished). `series_count` counts series
/// with samples in the range.
pub(super) async fn aggregate(inner: &Inner, q: &AggregateQuery) -> Result<AggregateParts> {
    if let Some(step) = q.step_ns.filter(|s| *s <= 0) {
        return Err(Error::Invalid(format!("step {step} ns must be positive")));
    }
    let parts = AggregateParts::new(&q.quantiles, &q.buckets)?;
    let snap = snapshot(inner, &q.selector, &q.range)?;
    let (range, step) = (q.range, q.step_ns);
    blocking(move || {
        let (_, cols) = load(snap, &range)?;
        Ok(summarise(&cols, parts, step))
    })
    .await
}

fn summarise(cols: &[Columns], mut parts: AggregateParts, step: Option<i64>) -> AggregateParts {
    let template = parts.total.clone();
    for c in cols {
        c.values.iter().for_each(|v| parts.total.push(*v));
        let Some(step) = step else { continue };
        let mut start = 0;
        while let Some(&t) = c.ts.get(start) {
            let bucket = t.div_euclid(step).saturating_mul(step);
            let end = start
                + c.ts
                    .get(start..)
                    .unwrap_or_default()
                    .partition_point(|&x| x.div_euclid(step) == t.div_euclid(step));
            let agg = parts
                .steps
                .entry(bucket)
                .or_insert_with(|| template.clone());
            c.values
                .get(start..end)
                .unwrap_or_default()
                .iter()
                .for_each(|v| agg.push(*v));
            start = end;
        }
    }
    parts.series_count = cols.iter().filter(|c| !c.is_empty()).count() as u64;
    parts
}

/// The latest sample of every series (the head's copy wins a tie), sorted by key.
pub(super) fn latest(inner: &Inner) -> Vec<Latest> {
    let st = inner.state.read();
    let mut out: Vec<Latest> = st
        .catalog
        .series
        .iter()
        .filter_map(|(id, entry)| {
            let from_files = entry.files.map(|f| Sample {
                timestamp_ns: f.last_ns,
                value: f.last_value,
            });
            let frozen = st
                .frozen
                .as_ref()
                .and_then(|h| h.get(id))
                .and_then(Columns::last);
            let head = st.head.get(id).and_then(Columns::last);
            let sample = [from_files, frozen, head]
                .into_iter()
                .flatten()
                .reduce(|a, b| {
                    if b.timestamp_ns >= a.timestamp_ns {
                        b
                    } else {
                        a
                    }
                })?;
            let meta = st.catalog.meta(&entry.key.measurement);
            Some(Latest {
                key: (*entry.key).clone(),
                kind: meta.kind,
                help: meta.help,
                sample,
            })
        })
        .collect();
    out.sort_by(|a, b| a.key.cmp(&b.key));
    out
}

/// Per-series facts gathered for [`datasets`].
struct SeriesFacts {
    key: Arc<SeriesKey>,
    count: u64,
    first_ns: i64,
    last_ns: i64,
}

/// Every measurement with data, sorted by name.
pub(super) async fn datasets(inner: &Inner) -> Result<Vec<DatasetInfo>> {
    let (mut facts, exact, files) = gather_facts(inner);
    if !exact.is_empty() {
        let ids: Vec<u64> = exact.keys().copied().collect();
        let dups = blocking(move || {
            let layers = read_layers(&files, &SeriesFilter::ids(ids), &TimeRange::default())?;
            Ok(count_duplicates(layers, &exact))
        })
        .await?;
        for (id, d) in dups {
            if let Some(f) = facts.get_mut(&id) {
                f.count = f.count.saturating_sub(d);
            }
        }
    }
    Ok(summarise_datasets(inner, facts))
}

/// Facts per series, head timestamps needing an exact count, and the files to read.
type Gathered = (
    HashMap<u64, SeriesFacts>,
    HashMap<u64, Vec<i64>>,
    Vec<Arc<PointFile>>,
);

/// Facts from statistics alone, plus the head timestamps of series whose head data may
/// duplicate file data (and so need a file read to count exactly).
fn gather_facts(inner: &Inner) -> Gathered {
    let st = inner.state.read();
    let mut facts = HashMap::with_capacity(st.catalog.series.len());
    let mut exact = HashMap::new();
    for (id, entry) in &st.catalog.series {
        let mem = Columns::merge_layers(
            memory_layers(&st, &[*id], &TimeRange::default())
                .remove(id)
                .unwrap_or_default(),
        );
        let (mut count, mut first_ns, mut last_ns) =
            entry.files.map_or((0, i64::MAX, i64::MIN), |f| {
                (f.count, f.first_ns, f.last_ns)
            });
        count += mem.len() as u64;
        first_ns = first_ns.min(mem.ts.first().copied().unwrap_or(i64::MAX));
        last_ns = last_ns.max(mem.ts.last().copied().unwrap_or(i64::MIN));
        if count == 0 {
            continue;
        }
        let in_file_range = |t: &i64| {
            st.points.iter().any(|f| {
                f.runs
                    .get(id)
                    .is_some_and(|r| (r.min_ts..=r.max_ts).contains(t))
            })
        };
        if mem.ts.iter().any(in_file_range) {
            exact.insert(*id, mem.ts);
        }
        facts.insert(
            *id,
            SeriesFacts {
                key: Arc::clone(&entry.key),
                count,
                first_ns,
                last_ns,
            },
        );
    }
    (facts, exact, st.points.clone())
}

/// How many of each series' head timestamps are also in the files.
fn count_duplicates(layers: Layers, head_ts: &HashMap<u64, Vec<i64>>) -> HashMap<u64, u64> {
    merge_all(layers, HashMap::new())
        .into_iter()
        .map(|(id, files)| {
            let head = head_ts.get(&id).map(Vec::as_slice).unwrap_or_default();
            (
                id,
                head.iter()
                    .filter(|t| files.ts.binary_search(t).is_ok())
                    .count() as u64,
            )
        })
        .collect()
}

fn summarise_datasets(inner: &Inner, facts: HashMap<u64, SeriesFacts>) -> Vec<DatasetInfo> {
    let mut by_name: BTreeMap<String, Vec<SeriesFacts>> = BTreeMap::new();
    for f in facts.into_values() {
        by_name
            .entry(f.key.measurement.clone())
            .or_default()
            .push(f);
    }
    let st = inner.state.read();
    by_name
        .into_iter()
        .map(|(measurement, series)| {
            let meta = st.catalog.meta(&measurement);
            let fields: BTreeSet<&str> = series.iter().map(|s| s.key.field.as_str()).collect();
            let labels: BTreeSet<&str> = series
                .iter()
                .flat_map(|s| s.key.labels.iter().map(|(k, _)| k))
                .collect();
            DatasetInfo {
                kind: meta.kind,
                help: meta.help,
                fields: fields.into_iter().map(str::to_owned).collect(),
                label_names: labels.into_iter().map(str::to_owned).collect(),
                series_count: series.len() as u64,
                sample_count: series.iter().map(|s| s.count).sum(),
                first_ns: series.iter().map(|s| s.first_ns).min().unwrap_or(0),
                last_ns: series.iter().map(|s| s.last_ns).max().unwrap_or(0),
                measurement,
            }
        })
        .collect()
}
