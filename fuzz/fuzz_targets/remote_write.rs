//! `POST /api/v1/write` bodies (Prometheus remote write): any bytes, either as the
//! snappy body itself or as the protobuf inside a valid snappy block, must never panic
//! nor allocate past the limit; whatever is accepted is a valid point.
#![no_main]

use datanexus_ingest::endpoint::POST_REMOTE_WRITE;
use datanexus_ingest::remote_write::AnnouncedMetadata;
use datanexus_model::{Limits, validate};
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
    // What the handler calls, with a fresh metadata memory and no batch cap.
    let announced = AnnouncedMetadata::default();
    if let Ok(decoded) = POST_REMOTE_WRITE(&body, LIMIT, &limits, &announced, usize::MAX) {
        for p in &decoded.points {
            assert_eq!(validate::point(p, &limits), Ok(()));
            assert!(p.timestamp_ns >= 0);
        }
    }
});
