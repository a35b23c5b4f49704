//! `POST /api/v1/write` bodies (Prometheus remote write): any bytes, either as the
//! snappy body itself or as the protobuf inside a valid snappy block, must never panic
//! nor allocate past the limit; whatever is accepted is a valid point.
#![no_main]

use datanexus_model::{Limits, validate};
use datanexus_server::decode::remote_write;
use libfuzzer_sys::fuzz_target;

const LIMIT: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    let Some((mode, rest)) = data.split_first() else {
        return;
    };
    let body = if mode % 2 == 0 {
        rest.to_vec()
    } else {
        match snap::raw::Encoder::new().compress_vec(rest) {
            Ok(body) => body,
            Err(_) => return,
        }
    };
    if let Ok(points) = remote_write(&body, LIMIT, &limits) {
        for p in &points {
            assert_eq!(validate::point(p, &limits), Ok(()));
            assert!(p.timestamp_ns >= 0);
        }
    }
});
