//! Moving stream results out of the events files, once, for stores written by versions
//! that kept them as events (id `result/{event_partition}/{event_offset}`, source = the
//! client, payload `{"kind": "result", "seq", "event_name", "number", "result" |
//! "error", "received_ns", "processor_id"}`, timestamp = when it was processed).
//!
//! The events files holding results are rewritten without them, the results go to one
//! new results file, and a manifest naming the new files (and marked
//! `results_apart`) replaces the old one before the old files are deleted: a crash in
//! between leaves the old store, and the migration runs again at the next start.

use std::sync::Arc;

use serde_json::Value;

use super::EmbeddedStoreOptions;
use super::events_file::{self, EventFile, EventRow};
use super::fsutil::remove_quietly;
use super::maintenance::manifest_of;
use super::manifest::{Manifest, events_name, results_name};
use super::parquet_util::WriteOptions;
use super::points_file::PointFile;
use super::results_file::{self, ResultFile};
use datanexus_store::{Outcome, Result, StoredResult, TimeRange};

/// The result an event row of an earlier version holds, if it is one.
fn legacy_result(row: &EventRow) -> Option<StoredResult> {
    let (partition, offset) = row.id.strip_prefix("result/")?.split_once('/')?;
    let payload: Value = serde_json::from_str(&row.payload).ok()?;
    let p = payload.as_object()?;
    if p.get("kind").and_then(Value::as_str) != Some("result") {
        return None;
    }
    let outcome = match (
        p.get("result").and_then(Value::as_i64),
        p.get("error").and_then(Value::as_str),
    ) {
        (Some(v), _) => Outcome::Value(i32::try_from(v).ok()?),
        (None, Some(e)) => Outcome::Error(e.to_owned()),
        (None, None) => return None,
    };
    let text = |k: &str| {
        p.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let event_offset: u64 = offset.parse().ok()?;
    Some(StoredResult {
        client_id: row.source_id.clone(),
        seq: p
            .get("seq")
            .and_then(Value::as_u64)
            .unwrap_or(event_offset.saturating_add(1)),
        event_partition: partition.parse().ok()?,
        event_offset,
        event_name: text("event_name"),
        number: i32::try_from(p.get("number").and_then(Value::as_i64)?).ok()?,
        outcome,
        received_ns: p
            .get("received_ns")
            .and_then(Value::as_i64)
            .unwrap_or(row.timestamp_ns),
        processed_ns: row.timestamp_ns,
        processor_id: text("processor_id"),
    })
}

/// Moves the results held in `events` to a new results file (see the module docs);
/// updates the file lists and `next_seq`.
///
/// # Errors
/// I/O failures; the store then stays as it was (the new files are deleted).
pub(super) fn results_out_of_events(
    dir: &std::path::Path,
    options: &EmbeddedStoreOptions,
    points: &[Arc<PointFile>],
    events: &mut Vec<Arc<EventFile>>,
    results: &mut Vec<Arc<ResultFile>>,
    next_seq: &mut u64,
    manifest: &Manifest,
) -> Result<()> {
    let write = WriteOptions {
        row_group_rows: options.row_group_rows,
        zstd_level: options.zstd_level,
    };
    // By (client, seq): a result in several files (a redelivery) is kept once, the
    // newest file's copy winning, as compaction does.
    let mut found: std::collections::HashMap<(String, u64), StoredResult> =
        std::collections::HashMap::new();
    let mut new_events = Vec::with_capacity(events.len());
    let mut replaced = Vec::new();
    let mut written = Vec::new();
    let outcome = (|| {
        for f in events.iter() {
            let (mut moved, mut kept) = (Vec::new(), Vec::new());
            f.read(None, &TimeRange::default(), |row| {
                match legacy_result(&row) {
                    Some(r) => moved.push(r),
                    None => kept.push(row),
                }
            })?;
            if moved.is_empty() {
                new_events.push(Arc::clone(f));
                continue;
            }
            for r in moved.drain(..) {
                found.insert((r.client_id.clone(), r.seq), r);
            }
            replaced.push(Arc::clone(f));
            if !kept.is_empty() {
                let seq = *next_seq;
                *next_seq += 1;
                let path = dir.join(events_name(seq));
                written.push(path.clone());
                new_events.push(Arc::new(events_file::write(&path, seq, kept, &write)?));
            }
        }
        let mut new_results = results.clone();
        if !found.is_empty() {
            let seq = *next_seq;
            *next_seq += 1;
            let path = dir.join(results_name(seq));
            written.push(path.clone());
            let rows = std::mem::take(&mut found).into_values().collect();
            new_results.push(Arc::new(results_file::write(&path, seq, rows, &write)?));
        }
        manifest_of(
            points,
            &new_events,
            &new_results,
            *next_seq,
            manifest.measurements.clone(),
        )
        .store(dir)?;
        Ok(new_results)
    })();
    match outcome {
        Ok(new_results) => {
            let moved = new_results.len() - results.len();
            *events = new_events;
            *results = new_results;
            for f in &replaced {
                f.retire();
            }
            if moved > 0 {
                tracing::info!(
                    files = replaced.len(),
                    "moved stream results out of the events files (stores of earlier versions)"
                );
            }
            Ok(())
        }
        Err(e) => {
            written.iter().for_each(|p| remove_quietly(p));
            Err(e)
        }
    }
}
