//! Reading series across files and the head, newest copy winning, and the exact
//! per-series statistics derived from that.

use std::collections::HashMap;
use std::sync::Arc;

use super::catalog::FileStats;
use super::columns::Columns;
use super::points_file::{PointFile, SeriesFilter};
use super::{Head, State};
use datanexus_store::{Result, TimeRange};

/// Per series: its sample layers, oldest first.
pub(crate) type Layers = HashMap<u64, Vec<Columns>>;

/// Reads the wanted series in `range` from `files` (oldest first): one layer per file.
///
/// # Errors
/// When a file cannot be read.
pub(crate) fn read_layers(
    files: &[Arc<PointFile>],
    filter: &SeriesFilter,
    range: &TimeRange,
) -> Result<Layers> {
    let mut layers: Layers = HashMap::new();
    for file in files {
        let mut cur: HashMap<u64, Columns> = HashMap::new();
        file.read(filter, range, |id, ts, values| {
            cur.entry(id).or_default().extend_sorted(ts, values)
        })?;
        for (id, cols) in cur {
            layers.entry(id).or_default().push(cols);
        }
    }
    Ok(layers)
}

/// Copies the head layers (frozen, then current) of `ids` in `range`.
pub(crate) fn memory_layers(st: &State, ids: &[u64], range: &TimeRange) -> Layers {
    let mut out: Layers = HashMap::new();
    let heads: [Option<&Head>; 2] = [st.frozen.as_deref(), Some(&st.head)];
    for head in heads.into_iter().flatten() {
        for id in ids {
            if let Some(c) = head.get(id) {
                let s = c.slice(range);
                if !s.is_empty() {
                    out.entry(*id).or_default().push(s);
                }
            }
        }
    }
    out
}

/// Merges file layers with newer memory layers: one deduplicated column set per series.
pub(crate) fn merge_all(mut files: Layers, memory: Layers) -> HashMap<u64, Columns> {
    for (id, mut mem) in memory {
        files.entry(id).or_default().append(&mut mem);
    }
    files
        .into_iter()
        .map(|(id, layers)| (id, Columns::merge_layers(layers)))
        .collect()
}

/// Exact statistics of `ids` over `files`: summed from per-file runs when they do not
/// overlap in time, otherwise by reading and deduplicating the series.
///
/// # Errors
/// When a file cannot be read.
pub(crate) fn file_stats(
    ids: &[u64],
    files: &[Arc<PointFile>],
) -> Result<HashMap<u64, Option<FileStats>>> {
    let mut out = HashMap::with_capacity(ids.len());
    let mut overlapping = Vec::new();
    for &id in ids {
        let mut runs: Vec<_> = files.iter().filter_map(|f| f.runs.get(&id)).collect();
        runs.sort_by_key(|r| r.min_ts);
        if runs
            .windows(2)
            .any(|w| w.first().map(|r| r.max_ts) >= w.get(1).map(|r| r.min_ts))
        {
            overlapping.push(id);
            continue;
        }
        let stats = runs.last().map(|last| FileStats {
            count: runs.iter().map(|r| r.rows).sum(),
            first_ns: runs.first().map_or(last.min_ts, |r| r.min_ts),
            last_ns: last.max_ts,
            last_value: last.last_value,
        });
        out.insert(id, stats);
    }
    if !overlapping.is_empty() {
        let layers = read_layers(
            files,
            &SeriesFilter::ids(overlapping.iter().copied()),
            &TimeRange::default(),
        )?;
        let merged = merge_all(layers, HashMap::new());
        for id in overlapping {
            out.insert(id, merged.get(&id).and_then(stats_of));
        }
    }
    Ok(out)
}

/// Statistics of merged columns.
pub(crate) fn stats_of(c: &Columns) -> Option<FileStats> {
    let last = c.last()?;
    Some(FileStats {
        count: c.len() as u64,
        first_ns: *c.ts.first()?,
        last_ns: last.timestamp_ns,
        last_value: last.value,
    })
}
