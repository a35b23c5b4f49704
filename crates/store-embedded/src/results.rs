//! Replays: a client's newest results above a seq, from the head and the results
//! files' (client, seq) index. The seqs are merged from the top in the index (a newer
//! copy of a seq — head, then newer file — hides older ones) until `limit` are picked;
//! the rest is counted from the index positions, not walked; only the rows returned are
//! read from the files (with a row selection: the pages holding them, at most
//! `PAGE_ROWS` rows each, are decoded).

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::ops::Bound;
use std::sync::Arc;

use super::results_file::ResultFile;
use super::{Inner, blocking};
use datanexus_store::{Result, ResultPage, ResultQuery, StoredResult};

/// One source of seqs, newest first: the head (in memory) or a file's index.
enum Source<'a> {
    Memory(Vec<u64>),
    File {
        file: usize,
        first_row: usize,
        seqs: &'a [u64],
    },
}

impl Source<'_> {
    /// The seq at `pos`.
    fn seq(&self, pos: usize) -> u64 {
        match self {
            Source::Memory(seqs) => seqs.get(pos).copied().unwrap_or(0),
            Source::File { seqs, .. } => seqs.get(pos).copied().unwrap_or(0),
        }
    }
}

/// A heap entry: the next (highest remaining) seq of a source. Ordered by seq, then by
/// the source's priority (a newer source first), so equal seqs pop newest first.
#[derive(PartialEq, Eq)]
struct Head {
    seq: u64,
    priority: usize,
    source: usize,
    /// Position of `seq` in the source (positions above `low` remain below it).
    pos: usize,
    low: usize,
}

impl Ord for Head {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.seq, self.priority).cmp(&(other.seq, other.priority))
    }
}

impl PartialOrd for Head {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Answers a [`ResultQuery`].
pub(super) async fn results(inner: &Inner, q: &ResultQuery) -> Result<ResultPage> {
    let (memory, files) = {
        let st = inner.state.read();
        let mut memory: BTreeMap<u64, StoredResult> = BTreeMap::new();
        // The frozen head is older than the head: the head's copy wins.
        let heads = st
            .frozen_results
            .iter()
            .map(AsRef::as_ref)
            .chain(std::iter::once(&st.results));
        for head in heads {
            if let Some(by_seq) = head.get(&q.client_id) {
                let above = (Bound::Excluded(q.after_seq), Bound::Unbounded);
                for (seq, r) in by_seq.range(above) {
                    memory.insert(*seq, r.clone());
                }
            }
        }
        (memory, st.result_files.clone())
    };
    let q = q.clone();
    blocking(move || pick(&q, memory, &files)).await
}

fn pick(
    q: &ResultQuery,
    mut memory: BTreeMap<u64, StoredResult>,
    files: &[Arc<ResultFile>],
) -> Result<ResultPage> {
    // Sources, newest first: the head, then files from the newest.
    let mut sources = vec![Source::Memory(memory.keys().copied().collect())];
    for (file, f) in files.iter().enumerate().rev() {
        if let Some(rows) = f.clients.get(&q.client_id) {
            let start = rows.seqs.partition_point(|&s| s <= q.after_seq);
            if start < rows.seqs.len() {
                sources.push(Source::File {
                    file,
                    first_row: rows.first_row + start,
                    seqs: &rows.seqs[start..],
                });
            }
        }
    }
    let mut heap = BinaryHeap::new();
    for (i, s) in sources.iter().enumerate() {
        let len = match s {
            Source::Memory(seqs) => seqs.len(),
            Source::File { seqs, .. } => seqs.len(),
        };
        if len > 0 {
            heap.push(Head {
                seq: s.seq(len - 1),
                priority: sources.len() - i,
                source: i,
                pos: len - 1,
                low: 0,
            });
        }
    }
    // Newest first: each distinct seq counts once, its newest copy is the one kept.
    let mut total = 0u64;
    let mut picked: Vec<(u64, usize, usize)> = Vec::new(); // (seq, source, pos)
    let mut last = None;
    while let Some(top) = heap.pop() {
        if last != Some(top.seq) {
            last = Some(top.seq);
            total += 1;
            if picked.len() < q.limit {
                picked.push((top.seq, top.source, top.pos));
            }
        }
        if top.pos > top.low {
            let pos = top.pos - 1;
            heap.push(Head {
                seq: sources[top.source].seq(pos),
                pos,
                ..top
            });
        }
        if picked.len() >= q.limit {
            // Nothing more is returned: count what is left without walking it. Within
            // a source seqs are distinct; a seq in two sources (a redelivery written to
            // two files not yet compacted together) is counted twice here, an
            // overcount of `total` that compaction removes.
            for rest in heap.drain() {
                total += u64::try_from(rest.pos - rest.low + 1).unwrap_or(0);
                if last == Some(rest.seq) {
                    total -= 1;
                }
            }
        }
    }
    // Read the picked rows, file by file.
    let mut rows_by_file: HashMap<usize, Vec<usize>> = HashMap::new();
    for &(_, source, pos) in &picked {
        if let Source::File {
            file, first_row, ..
        } = &sources[source]
        {
            rows_by_file.entry(*file).or_default().push(first_row + pos);
        }
    }
    let mut read: HashMap<(usize, u64), StoredResult> = HashMap::new();
    let mut rows_read = 0u64;
    for (file, mut rows) in rows_by_file {
        rows.sort_unstable();
        let Some(f) = files.get(file) else { continue };
        let found = f.read_rows(&rows)?;
        rows_read += u64::try_from(found.len()).unwrap_or(u64::MAX);
        for r in found {
            read.insert((file, r.seq), r);
        }
    }
    let mut results = Vec::with_capacity(picked.len());
    for (seq, source, _) in picked.into_iter().rev() {
        let r = match &sources[source] {
            Source::Memory(_) => memory.remove(&seq),
            Source::File { file, .. } => read.remove(&(*file, seq)),
        };
        if let Some(r) = r {
            results.push(r);
        }
    }
    Ok(ResultPage {
        results,
        total,
        rows_read,
    })
}
