//! `POST /metrics` and `POST /ingest` bodies: decoding and validating any bytes must
//! never panic; whatever is accepted is a valid point or event.
#![no_main]

use datanexus_model::{Limits, validate};
use datanexus_server::decode::{events_json, metrics_json};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    if let Ok(points) = metrics_json(data, &limits) {
        for p in &points {
            assert_eq!(validate::point(p, &limits), Ok(()));
        }
    }
    if let Ok(events) = events_json(data) {
        assert!(events.iter().all(|e| !e.source_id.is_empty()));
    }
});
