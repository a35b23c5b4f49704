//! What the control node and a worker node say to each other over HTTP: the paths of
//! a node's internal store API, and the write batch (points, events and results of one
//! forward, framed in one body).
//!
//! A write batch is `DNB1` followed by items, each a kind byte (1 point, 2 event,
//! 3 result), a little-endian u32 length and that many bytes: a point as the topic
//! record (`datanexus_model::codec::encode_point`), an event or a result as JSON.
//! The other calls carry the store's query and answer types as JSON (a sample's value
//! as its IEEE 754 bits), and an aggregate as [`datanexus_store::AggregateParts`]'
//! exact binary state.

use datanexus_model::{Point, codec};
use datanexus_store::{StoredEvent, StoredResult};

use crate::{Error, Result};

/// `POST`: a write batch, answered `204` once it is durable on the node.
pub const WRITE_PATH: &str = "/internal/store/write";
/// `POST` a `SeriesQuery` → `QueryResult`.
pub const QUERY_PATH: &str = "/internal/store/query";
/// `POST` an `AggregateQuery` → the encoded `AggregateParts`.
pub const AGGREGATE_PATH: &str = "/internal/store/aggregate";
/// `POST` an `EventQuery` → `EventPage`.
pub const EVENTS_PATH: &str = "/internal/store/events";
/// `POST` a `ResultQuery` → `ResultPage`.
pub const RESULTS_PATH: &str = "/internal/store/results";
/// `POST` a `rebalance::DeleteRequest` → `rebalance::DeleteAnswer` (samples deleted,
/// durably). Needs the `admin` scope on the node.
pub const DELETE_PATH: &str = "/internal/store/delete";
/// `GET` → every `DatasetInfo`.
pub const DATASETS_PATH: &str = "/internal/store/datasets";
/// `GET` → every `Latest`.
pub const LATEST_PATH: &str = "/internal/store/latest";

/// The content type of a write batch.
pub const BATCH_CONTENT_TYPE: &str = "application/x-datanexus-batch";
/// The content type of encoded aggregate parts.
pub const PARTS_CONTENT_TYPE: &str = "application/x-datanexus-aggregate";

const MAGIC: &[u8; 4] = b"DNB1";
const POINT: u8 = 1;
const EVENT: u8 = 2;
const RESULT: u8 = 3;

/// One encoded record of a write batch.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    kind: u8,
    body: Vec<u8>,
}

impl Item {
    /// A point.
    pub fn point(point: &Point) -> Item {
        let mut body = Vec::with_capacity(64);
        codec::encode_point(point, &mut body);
        Item { kind: POINT, body }
    }

    /// An event.
    ///
    /// # Errors
    /// [`Error::Encode`] when the event cannot be written as JSON.
    pub fn event(event: &StoredEvent) -> Result<Item> {
        let body = serde_json::to_vec(event).map_err(|e| Error::Encode(e.to_string()))?;
        Ok(Item { kind: EVENT, body })
    }

    /// A stream result.
    ///
    /// # Errors
    /// [`Error::Encode`] when the result cannot be written as JSON.
    pub fn result(result: &StoredResult) -> Result<Item> {
        let body = serde_json::to_vec(result).map_err(|e| Error::Encode(e.to_string()))?;
        Ok(Item { kind: RESULT, body })
    }

    /// Bytes it takes in a batch.
    pub fn framed_len(&self) -> usize {
        5 + self.body.len()
    }
}

/// A write batch being built.
#[derive(Debug, Clone)]
pub struct BatchWriter {
    bytes: Vec<u8>,
    records: u64,
}

impl Default for BatchWriter {
    fn default() -> Self {
        BatchWriter {
            bytes: MAGIC.to_vec(),
            records: 0,
        }
    }
}

impl BatchWriter {
    /// Adds a point.
    pub fn point(&mut self, point: &Point) {
        self.push(&Item::point(point));
    }

    /// Adds an event.
    ///
    /// # Errors
    /// [`Error::Encode`] when the event cannot be written as JSON.
    pub fn event(&mut self, event: &StoredEvent) -> Result<()> {
        self.push(&Item::event(event)?);
        Ok(())
    }

    /// Adds a stream result.
    ///
    /// # Errors
    /// [`Error::Encode`] when the result cannot be written as JSON.
    pub fn result(&mut self, result: &StoredResult) -> Result<()> {
        self.push(&Item::result(result)?);
        Ok(())
    }

    /// Adds an encoded record.
    pub fn push(&mut self, item: &Item) {
        self.bytes.push(item.kind);
        self.bytes.extend_from_slice(
            &u32::try_from(item.body.len())
                .unwrap_or(u32::MAX)
                .to_le_bytes(),
        );
        self.bytes.extend_from_slice(&item.body);
        self.records += 1;
    }

    /// Records added.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Bytes so far.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether nothing was added.
    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// The body.
    pub fn finish(self) -> Vec<u8> {
        self.bytes
    }

    /// The body so far.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// A decoded write batch.
#[derive(Debug, Default, PartialEq)]
pub struct Batch {
    /// Its points.
    pub points: Vec<Point>,
    /// Its events.
    pub events: Vec<StoredEvent>,
    /// Its stream results.
    pub results: Vec<StoredResult>,
}

impl Batch {
    /// Decodes a write batch body.
    ///
    /// # Errors
    /// [`Error::Decode`] naming the first bad item.
    pub fn decode(mut bytes: &[u8]) -> Result<Batch> {
        if bytes.get(..4) != Some(MAGIC.as_slice()) {
            return Err(Error::Decode(
                "not a write batch (no DNB1 header)".to_owned(),
            ));
        }
        bytes = &bytes[4..];
        let mut batch = Batch::default();
        let mut index = 0usize;
        while let Some((&kind, rest)) = bytes.split_first() {
            let bad = |why: String| Error::Decode(format!("item {index}: {why}"));
            let Some((len, rest)) = rest.split_first_chunk::<4>() else {
                return Err(bad("ends inside its length".to_owned()));
            };
            let len = u32::from_le_bytes(*len) as usize;
            let Some(body) = rest.get(..len) else {
                return Err(bad(format!("{len} bytes announced, {} left", rest.len())));
            };
            match kind {
                POINT => batch
                    .points
                    .push(codec::decode_point(body).map_err(|e| bad(e.to_string()))?),
                EVENT => batch
                    .events
                    .push(serde_json::from_slice(body).map_err(|e| bad(e.to_string()))?),
                RESULT => batch
                    .results
                    .push(serde_json::from_slice(body).map_err(|e| bad(e.to_string()))?),
                other => return Err(bad(format!("unknown kind {other}"))),
            }
            bytes = &rest[len..];
            index += 1;
        }
        Ok(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datanexus_model::Labels;
    use datanexus_store::Outcome;

    #[test]
    fn batches_round_trip_and_bad_ones_are_named() {
        let point = Point::sample(
            "cpu",
            Labels::new([("host".into(), "a".into())]).unwrap(),
            f64::NEG_INFINITY,
            7,
        );
        let mut payload = serde_json::Map::new();
        payload.insert("temp".into(), serde_json::json!(21.5));
        let event = StoredEvent {
            id: "0-1".into(),
            source_id: "s".into(),
            timestamp_ns: 9,
            payload,
        };
        let result = StoredResult {
            client_id: "c".into(),
            seq: 3,
            event_partition: 1,
            event_offset: 2,
            event_name: "double".into(),
            number: 4,
            outcome: Outcome::Value(8),
            received_ns: 1,
            processed_ns: 2,
            processor_id: "p".into(),
        };
        let mut w = BatchWriter::default();
        assert!(w.is_empty());
        w.point(&point);
        w.event(&event).unwrap();
        w.result(&result).unwrap();
        assert_eq!(w.records(), 3);
        let bytes = w.finish();
        let batch = Batch::decode(&bytes).unwrap();
        assert_eq!(batch.points, [point]);
        assert_eq!(batch.events, [event]);
        assert_eq!(batch.results, [result]);
        assert!(Batch::decode(b"nope").is_err());
        let cut = Batch::decode(&bytes[..bytes.len() - 1]).unwrap_err();
        assert!(cut.to_string().contains("item 2"), "{cut}");
        let mut unknown = MAGIC.to_vec();
        unknown.extend_from_slice(&[9, 0, 0, 0, 0]);
        assert!(
            Batch::decode(&unknown)
                .unwrap_err()
                .to_string()
                .contains("unknown kind 9")
        );
        assert_eq!(Batch::decode(MAGIC).unwrap(), Batch::default());
    }
}
