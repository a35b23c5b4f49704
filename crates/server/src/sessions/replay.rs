//! Reading a client's stored results (the durable mailbox, see
//! `datanexus_pipeline::results`): every stored event of the client is read page by
//! page, results are recognised with `stored_to_result`, and those above the cursor
//! are kept in seq order, at most `max` of them (the newest).
//!
//! Concurrent writes only insert (the store is append-only per id), so paging by
//! offset may see an event twice but never skips one; duplicates collapse by seq.

use std::collections::{BTreeMap, VecDeque};

use datanexus_pipeline::results::{result_seq, stored_to_result};
use datanexus_proto::datanexus::v1::ResultRecord;
use datanexus_store::{EventQuery, Store, TimeRange};

use crate::Result;

/// Stored events read per query.
const PAGE: usize = 10_000;

/// The results to replay, oldest first, and how many older ones were left out.
#[derive(Debug, Default)]
pub(super) struct Replay {
    pub(super) results: VecDeque<ResultRecord>,
    pub(super) dropped: u64,
}

/// The stored results of `client_id` with a seq above `after_seq`, processed at or after
/// `min_processed_ns`: the newest `max` of them, in seq order. Older ones are counted as
/// dropped.
///
/// # Errors
/// The store cannot be read.
pub(super) async fn stored_results(
    store: &dyn Store,
    client_id: &str,
    after_seq: u64,
    max: usize,
    min_processed_ns: i64,
) -> Result<Replay> {
    if max == 0 {
        return Ok(Replay::default());
    }
    let mut kept: BTreeMap<u64, ResultRecord> = BTreeMap::new();
    let mut dropped = 0;
    let mut offset = 0;
    loop {
        let query = EventQuery {
            source_id: Some(client_id.to_owned()),
            range: TimeRange::default(),
            limit: PAGE,
            offset,
        };
        let page = store.events(&query).await?;
        let read = page.events.len();
        for result in page.events.iter().filter_map(stored_to_result) {
            let seq = result_seq(&result);
            if seq <= after_seq || kept.contains_key(&seq) {
                continue;
            }
            if result.processed_ns < min_processed_ns {
                dropped += 1;
                continue;
            }
            kept.insert(seq, result);
            if kept.len() > max {
                kept.pop_first();
                dropped += 1;
            }
        }
        offset += read;
        if read < PAGE || u64::try_from(offset).unwrap_or(u64::MAX) >= page.total {
            break;
        }
    }
    Ok(Replay {
        results: kept.into_values().collect(),
        dropped,
    })
}
