//! Results of stream events: how they are routed to clients and how they rest in the
//! store (the durable mailbox that offline clients are replayed from).
//!
//! A result's **seq** is its event's offset in the `events` topic plus one: a client's
//! events all live in one partition (keyed by client id), so seqs are strictly
//! increasing per client, survive restarts, and identify duplicates (a redelivered event
//! yields the same seq). Backends whose record ids are not offsets map them to one with
//! [`event_position`], preserving their order.
//!
//! In the store a result is a [`StoredEvent`] with `source_id` = the client id, `id` =
//! `result/{event_partition}/{event_offset}` (writes are idempotent on it) and a payload
//! `{"kind": "result", "seq", "event_name", "number", "result" | "error", "received_ns",
//! "processor_id"}`.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use async_trait::async_trait;
use datanexus_broker::{Position, RecordId};
use datanexus_proto::datanexus::v1::ResultRecord;
use datanexus_proto::datanexus::v1::result_record::Outcome;
use datanexus_store::{EventQuery, Store, StoredEvent, TimeRange};
use serde_json::{Map, Value, json};

/// The payload `kind` of stored results.
pub const RESULT_KIND: &str = "result";

/// Delivers results to the clients' live streams (the server's session registry
/// implements it; with Redis, a publisher to the owning gateway's channel does).
#[async_trait]
pub trait ResultRouter: Send + Sync + 'static {
    /// Offers results, in `results`-topic order, to their clients' sessions. Results for
    /// clients that are not connected are skipped: they are in the store already and are
    /// replayed when the client reconnects. Must not block on a slow client for long.
    async fn route(&self, results: &[ResultRecord]);
}

/// A client's results read back for replay.
#[derive(Debug, Default)]
pub struct Replay {
    /// The results to replay, in seq order.
    pub results: VecDeque<ResultRecord>,
    /// Older results left out (beyond the count or age bound).
    pub dropped: u64,
}

/// Where a gateway reads back the results of a client whose stream (re)attaches: the
/// store when the gateway runs in the same process as the forwarder, a shared mailbox
/// (Redis) when gateways are separate processes.
///
/// Contract with the router: a result is written to the mailbox *before* it is routed
/// live, so a stream that attaches (after [`Mailbox::claim`]) either finds a result in
/// [`Mailbox::replay`] or receives it live, never neither.
#[async_trait]
pub trait Mailbox: Send + Sync + 'static {
    /// A stream of `client_id` is attaching to this process: make sure results routed
    /// from now on reach it here. Called before [`Mailbox::replay`].
    ///
    /// # Errors
    /// The mailbox is unreachable.
    async fn claim(&self, client_id: &str) -> datanexus_store::Result<()>;

    /// The results of `client_id` with a seq above `after_seq`, processed at or after
    /// `min_processed_ns`: the newest `max` of them, in seq order; older ones are
    /// counted as dropped.
    ///
    /// # Errors
    /// The mailbox cannot be read.
    async fn replay(
        &self,
        client_id: &str,
        after_seq: u64,
        max: usize,
        min_processed_ns: i64,
    ) -> datanexus_store::Result<Replay>;

    /// The highest result seq a gateway handed to `client_id`'s stream, as shared
    /// between gateways (`None`: not shared, or not known). The default shares nothing
    /// (one process keeps its cursors itself).
    ///
    /// # Errors
    /// The mailbox cannot be read.
    async fn delivered(&self, client_id: &str) -> datanexus_store::Result<Option<u64>> {
        let _ = client_id;
        Ok(None)
    }

    /// Shares the delivered cursors of clients (client id, seq) with other gateways.
    ///
    /// # Errors
    /// The mailbox cannot be written.
    async fn save_delivered(&self, cursors: &[(String, u64)]) -> datanexus_store::Result<()> {
        let _ = cursors;
        Ok(())
    }
}

/// The [`Mailbox`] of a single process: the store the forwarder writes results to.
///
/// Every stored event of the client is read page by page; results are recognised with
/// [`stored_to_result`]. Concurrent writes only insert (the store is append-only per
/// id), so paging by offset may see an event twice but never skips one; duplicates
/// collapse by seq.
#[derive(Clone)]
pub struct StoreMailbox {
    store: Arc<dyn Store>,
}

impl std::fmt::Debug for StoreMailbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreMailbox")
            .field("store", &self.store.name())
            .finish()
    }
}

impl StoreMailbox {
    /// Stored events read per query.
    const PAGE: usize = 10_000;

    /// A mailbox over `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        StoreMailbox { store }
    }
}

#[async_trait]
impl Mailbox for StoreMailbox {
    async fn claim(&self, _client_id: &str) -> datanexus_store::Result<()> {
        Ok(())
    }

    async fn replay(
        &self,
        client_id: &str,
        after_seq: u64,
        max: usize,
        min_processed_ns: i64,
    ) -> datanexus_store::Result<Replay> {
        if max == 0 {
            return Ok(Replay::default());
        }
        let mut kept = Kept::new(after_seq, max, min_processed_ns);
        let mut offset = 0;
        loop {
            let query = EventQuery {
                source_id: Some(client_id.to_owned()),
                range: TimeRange::default(),
                limit: Self::PAGE,
                offset,
            };
            let page = self.store.events(&query).await?;
            let read = page.events.len();
            for result in page.events.iter().filter_map(stored_to_result) {
                kept.offer(result);
            }
            offset += read;
            if read < Self::PAGE || u64::try_from(offset).unwrap_or(u64::MAX) >= page.total {
                break;
            }
        }
        Ok(kept.finish())
    }
}

/// Keeps the newest `max` results above a seq and not older than a time, by seq;
/// shared by the [`Mailbox`] implementations.
#[derive(Debug)]
pub struct Kept {
    after_seq: u64,
    max: usize,
    min_processed_ns: i64,
    kept: BTreeMap<u64, ResultRecord>,
    dropped: u64,
}

impl Kept {
    /// Results with a seq above `after_seq`, processed at or after `min_processed_ns`,
    /// at most `max` of them.
    pub fn new(after_seq: u64, max: usize, min_processed_ns: i64) -> Self {
        Kept {
            after_seq,
            max,
            min_processed_ns,
            kept: BTreeMap::new(),
            dropped: 0,
        }
    }

    /// Considers one result (in any order; duplicates by seq collapse).
    pub fn offer(&mut self, result: ResultRecord) {
        let seq = result_seq(&result);
        if seq <= self.after_seq || self.kept.contains_key(&seq) {
            return;
        }
        if result.processed_ns < self.min_processed_ns {
            self.dropped += 1;
            return;
        }
        self.kept.insert(seq, result);
        if self.kept.len() > self.max {
            self.kept.pop_first();
            self.dropped += 1;
        }
    }

    /// The kept results in seq order, and the count of those left out.
    pub fn finish(self) -> Replay {
        Replay {
            results: self.kept.into_values().collect(),
            dropped: self.dropped,
        }
    }
}

/// The per-client sequence number of a result (event offset + 1).
pub fn result_seq(r: &ResultRecord) -> u64 {
    r.event_offset.saturating_add(1)
}

/// Bits of the `seq` part of a Redis stream entry id in [`event_position`].
const STREAM_SEQ_BITS: u32 = 20;

/// The `(event_partition, event_offset)` of the event delivered as `id`.
///
/// An offset (embedded log, Kafka) is used as is. A Redis stream entry id `ms-seq` maps
/// to `ms << 20 | seq`, which keeps the entries' order (and so each client's order) for
/// any `ms` before the year 2527 and up to 2^20 entries in one millisecond of one
/// partition; a larger `seq` is clamped to `2^20 - 1` (order kept, but such entries
/// would share a seq, and a client would take them for duplicates).
pub fn event_position(id: RecordId) -> (u32, u64) {
    let offset = match id.position {
        Position::Offset(o) => o,
        Position::StreamId { ms, seq } => {
            let max_seq = (1u64 << STREAM_SEQ_BITS) - 1;
            (ms << STREAM_SEQ_BITS) | seq.min(max_seq)
        }
    };
    (id.partition, offset)
}

/// A result as it is stored.
pub fn result_to_stored(r: &ResultRecord) -> StoredEvent {
    let mut payload = Map::new();
    payload.insert("kind".into(), json!(RESULT_KIND));
    payload.insert("seq".into(), json!(result_seq(r)));
    payload.insert("event_name".into(), json!(r.event_name));
    payload.insert("number".into(), json!(r.number));
    match &r.outcome {
        Some(Outcome::Result(v)) => payload.insert("result".into(), json!(v)),
        Some(Outcome::Error(e)) => payload.insert("error".into(), json!(e)),
        None => payload.insert("error".into(), json!("no outcome")),
    };
    payload.insert("received_ns".into(), json!(r.received_ns));
    payload.insert("processor_id".into(), json!(r.processor_id));
    StoredEvent {
        id: format!("result/{}/{}", r.event_partition, r.event_offset),
        source_id: r.client_id.clone(),
        timestamp_ns: r.processed_ns,
        payload,
    }
}

/// The result a stored event holds, if it is one.
pub fn stored_to_result(e: &StoredEvent) -> Option<ResultRecord> {
    let p = &e.payload;
    if p.get("kind").and_then(Value::as_str) != Some(RESULT_KIND) {
        return None;
    }
    let (partition, offset) = e.id.strip_prefix("result/")?.split_once('/')?;
    let outcome = match (
        p.get("result").and_then(Value::as_i64),
        p.get("error").and_then(Value::as_str),
    ) {
        (Some(v), _) => Outcome::Result(i32::try_from(v).ok()?),
        (None, Some(err)) => Outcome::Error(err.to_owned()),
        (None, None) => return None,
    };
    Some(ResultRecord {
        client_id: e.source_id.clone(),
        event_partition: partition.parse().ok()?,
        event_offset: offset.parse().ok()?,
        event_name: p
            .get("event_name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        number: i32::try_from(p.get("number").and_then(Value::as_i64)?).ok()?,
        outcome: Some(outcome),
        received_ns: p
            .get("received_ns")
            .and_then(Value::as_i64)
            .unwrap_or_default(),
        processed_ns: e.timestamp_ns,
        processor_id: p
            .get("processor_id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        reply_to: String::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_results_round_trip() {
        for outcome in [
            Outcome::Result(25),
            Outcome::Error("integer overflow".into()),
        ] {
            let r = ResultRecord {
                client_id: "c1".into(),
                event_partition: 3,
                event_offset: 41,
                event_name: "sq".into(),
                number: 5,
                outcome: Some(outcome),
                received_ns: 7,
                processed_ns: 9,
                processor_id: "p".into(),
                reply_to: String::new(),
            };
            let stored = result_to_stored(&r);
            assert_eq!(stored.id, "result/3/41");
            assert_eq!(result_seq(&r), 42);
            assert_eq!(stored_to_result(&stored), Some(r));
        }
    }

    #[test]
    fn stream_entry_ids_map_to_offsets_in_their_order() {
        let at = |ms, seq| {
            event_position(RecordId {
                partition: 2,
                position: Position::StreamId { ms, seq },
            })
        };
        assert_eq!(event_position(RecordId::offset(1, 99)), (1, 99));
        assert_eq!(at(0, 5), (2, 5));
        assert!(at(1_700_000_000_000, 7).1 < at(1_700_000_000_000, 8).1);
        assert!(at(1_700_000_000_000, u64::MAX).1 < at(1_700_000_000_001, 0).1);
    }

    #[test]
    fn other_events_are_not_results() {
        let e = StoredEvent {
            id: "p1-1".into(),
            source_id: "s".into(),
            timestamp_ns: 0,
            payload: Map::new(),
        };
        assert_eq!(stored_to_result(&e), None);
    }
}
