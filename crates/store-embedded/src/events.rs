//! Event queries over the head and the events files: deduplicated by id (newest copy
//! wins), oldest first, paged.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use super::events_file::{EventFile, EventRow, from_row};
use super::{Inner, blocking};
use datanexus_store::{EventPage, EventQuery, Result, StoredEvent};

/// One candidate: from a file (payload still text) or from the head.
enum Found {
    File(EventRow, Arc<PathBuf>),
    Head(StoredEvent),
}

impl Found {
    fn key(&self) -> (i64, &str) {
        match self {
            Found::File(r, _) => (r.timestamp_ns, &r.id),
            Found::Head(e) => (e.timestamp_ns, &e.id),
        }
    }
}

/// Events matching `q`, oldest first (ties by id), with the total before paging.
pub(super) async fn events(inner: &Inner, q: &EventQuery) -> Result<EventPage> {
    let wanted = |e: &&StoredEvent| {
        q.range.contains(e.timestamp_ns) && q.source_id.as_ref().is_none_or(|s| *s == e.source_id)
    };
    let (files, memory) = {
        let st = inner.state.read();
        let frozen = st.frozen_events.iter().flat_map(|h| h.values());
        let memory: Vec<StoredEvent> = frozen
            .chain(st.events.values())
            .filter(wanted)
            .cloned()
            .collect();
        (st.event_files.clone(), memory)
    };
    let q = q.clone();
    blocking(move || {
        let mut found = read_files(&files, &q)?;
        for e in memory {
            found.insert(e.id.clone(), Found::Head(e));
        }
        let mut all: Vec<Found> = found.into_values().collect();
        all.sort_by(|a, b| a.key().cmp(&b.key()));
        let total = all.len() as u64;
        let events = all
            .into_iter()
            .skip(q.offset)
            .take(q.limit)
            .map(|f| match f {
                Found::File(row, path) => from_row(row, &path),
                Found::Head(e) => Ok(e),
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(EventPage { total, events })
    })
    .await
}

fn read_files(files: &[Arc<EventFile>], q: &EventQuery) -> Result<HashMap<String, Found>> {
    let mut found = HashMap::new();
    for f in files {
        let path = Arc::new(f.path.clone());
        f.read(q.source_id.as_deref(), &q.range, |row| {
            found.insert(row.id.clone(), Found::File(row, Arc::clone(&path)));
        })?;
    }
    Ok(found)
}
