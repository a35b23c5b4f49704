//! The result record: its per-client sequence number, and its stored form.
//!
//! A result's **seq** is its event's offset in the `events` topic plus one: a client's
//! events all live in one partition (keyed by client id), so seqs are strictly
//! increasing per client, survive restarts, and identify duplicates (a redelivered
//! event yields the same seq). Backends whose record ids are not offsets map them to
//! one with [`event_position`], preserving their order.
//!
//! On the wire between workers a result is a `datanexus.v1.ResultRecord`; in the store
//! it is a [`StoredResult`] (idempotent on client and seq, read back by
//! `Store::results`).

use datanexus_broker::{Position, RecordId};
use datanexus_proto::datanexus::v1::ResultRecord;
use datanexus_proto::datanexus::v1::result_record::Outcome as WireOutcome;
use datanexus_store::{Outcome, StoredResult};

/// The per-client sequence number of a result (event offset + 1).
pub fn result_seq(r: &ResultRecord) -> u64 {
    r.event_offset.saturating_add(1)
}

/// The seq the result of the event stored as `id` will carry: [`event_position`] + 1.
pub fn event_seq(id: &RecordId) -> u64 {
    event_position(*id).1.saturating_add(1)
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
pub fn to_stored(r: &ResultRecord) -> StoredResult {
    StoredResult {
        client_id: r.client_id.clone(),
        seq: result_seq(r),
        event_partition: r.event_partition,
        event_offset: r.event_offset,
        event_name: r.event_name.clone(),
        number: r.number,
        outcome: match &r.outcome {
            Some(WireOutcome::Result(v)) => Outcome::Value(*v),
            Some(WireOutcome::Error(e)) => Outcome::Error(e.clone()),
            None => Outcome::Error("no outcome".to_owned()),
        },
        received_ns: r.received_ns,
        processed_ns: r.processed_ns,
        processor_id: r.processor_id.clone(),
    }
}

/// A stored result as a record (its `reply_to` is not stored: empty).
pub fn from_stored(r: StoredResult) -> ResultRecord {
    ResultRecord {
        client_id: r.client_id,
        event_partition: r.event_partition,
        event_offset: r.event_offset,
        event_name: r.event_name,
        number: r.number,
        outcome: Some(match r.outcome {
            Outcome::Value(v) => WireOutcome::Result(v),
            Outcome::Error(e) => WireOutcome::Error(e),
        }),
        received_ns: r.received_ns,
        processed_ns: r.processed_ns,
        processor_id: r.processor_id,
        reply_to: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_results_round_trip() {
        for outcome in [
            WireOutcome::Result(25),
            WireOutcome::Error("integer overflow".into()),
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
            let stored = to_stored(&r);
            assert_eq!((stored.seq, result_seq(&r)), (42, 42));
            assert_eq!(from_stored(stored), r);
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
        assert_eq!(event_seq(&RecordId::offset(1, 99)), 100);
        assert_eq!(at(0, 5), (2, 5));
        assert!(at(1_700_000_000_000, 7).1 < at(1_700_000_000_000, 8).1);
        assert!(at(1_700_000_000_000, u64::MAX).1 < at(1_700_000_000_001, 0).1);
    }
}
