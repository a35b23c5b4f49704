//! `POST /metrics` and `POST /ingest` bodies: decoding and validating any bytes must
//! never panic; whatever is accepted is a valid point or event.
#![no_main]

use datanexus_ingest::endpoint::{POST_INGEST, POST_METRICS};
use datanexus_model::{Limits, validate};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    if let Ok(points) = POST_METRICS(data, &limits, usize::MAX, 1) {
        for p in &points.items {
            assert_eq!(validate::point(p, &limits), Ok(()));
        }
    }
    if let Ok(events) = POST_INGEST(data, usize::MAX, 1) {
        assert!(events.items.iter().all(|e| !e.source_id.is_empty()));
    }
});
