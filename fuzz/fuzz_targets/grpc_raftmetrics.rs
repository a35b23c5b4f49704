//! `raftmetrics.v1.MetricBatch` messages: decoding and converting any bytes must never
//! panic; whatever is accepted is a valid point.
#![no_main]

use datanexus_ingest::endpoint::BATCH_SEND_METRICS;
use datanexus_model::{Limits, validate};
use datanexus_proto::prost::Message;
use datanexus_proto::raftmetrics::v1::MetricBatch;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    // tonic decodes the message, then the handler converts it with this function.
    let Ok(batch) = MetricBatch::decode(data) else {
        return;
    };
    if let Ok(points) = BATCH_SEND_METRICS(batch.entries, &limits, usize::MAX, 1) {
        for p in &points {
            assert_eq!(validate::point(p, &limits), Ok(()));
        }
    }
});
