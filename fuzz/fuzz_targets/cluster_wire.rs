//! What crosses the network between a control node and its workers: write batches
//! (`POST /internal/store/write`, decoded by the worker) and aggregate states (a
//! worker's answer, decoded by the control node). Any bytes must decode or fail without
//! a panic; a decoded batch encodes and decodes again to the same records, a decoded
//! state encodes to the same bytes and finishes without a panic.
#![no_main]

use datanexus_store::AggregateParts;
use datanexus_store_cluster::wire::{Batch, BatchWriter};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    if which % 2 == 0 {
        let Ok(batch) = Batch::decode(bytes) else {
            return;
        };
        let mut again = BatchWriter::default();
        for p in &batch.points {
            again.point(p);
        }
        for e in &batch.events {
            again.event(e).expect("a decoded event encodes");
        }
        for r in &batch.results {
            again.result(r).expect("a decoded result encodes");
        }
        let back = Batch::decode(&again.finish()).expect("a re-encoded batch decodes");
        assert_eq!(back.points.len(), batch.points.len());
        assert_eq!(back.events, batch.events);
        assert_eq!(back.results, batch.results);
    } else {
        let (quantiles, bounds) = ([0.0, 0.5, 0.99], [1.0, 10.0]);
        let Ok(parts) = AggregateParts::decode(bytes, &quantiles, &bounds) else {
            return;
        };
        let encoded = parts.encode();
        assert_eq!(encoded, bytes, "a decoded state encodes to the same bytes");
        let _ = parts.finish();
    }
});
