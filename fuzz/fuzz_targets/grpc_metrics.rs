//! `data_nexus.BatchMetrics` messages: decoding and converting any bytes must never
//! panic; whatever is accepted is a valid point.
#![no_main]

use datanexus_model::{Limits, validate};
use datanexus_server::decode::data_nexus_batch;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    if let Ok(points) = data_nexus_batch(data, &limits) {
        for p in &points {
            assert_eq!(validate::point(p, &limits), Ok(()));
        }
    }
});
