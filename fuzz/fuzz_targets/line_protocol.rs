//! `POST /write` bodies (InfluxDB line protocol): parsing any bytes at any precision must
//! never panic; whatever is accepted is a valid point.
#![no_main]

use datanexus_ingest::endpoint::POST_WRITE;
use datanexus_model::lineproto::Precision;
use datanexus_model::{Limits, validate};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    let precision = match data.first().map(|b| b % 4) {
        Some(1) => Precision::Microseconds,
        Some(2) => Precision::Milliseconds,
        Some(3) => Precision::Seconds,
        _ => Precision::Nanoseconds,
    };
    if let Ok(points) = POST_WRITE(data, precision, &limits, usize::MAX, 1) {
        for p in &points {
            assert_eq!(validate::point(p, &limits), Ok(()));
            assert!(p.timestamp_ns >= 0);
        }
    }
});
