//! `metrics` topic records (PointRecord) from untrusted bytes: decode must never panic,
//! and whatever decodes must re-encode to something that decodes to the same point.
#![no_main]

use datanexus_model::codec::{decode_point, encode_point};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = decode_point(data) {
        let mut buf = Vec::new();
        encode_point(&p, &mut buf);
        let again = decode_point(&buf).expect("re-encoded point must decode");
        assert_eq!(again.measurement, p.measurement);
        assert_eq!(again.labels, p.labels);
        assert_eq!(again.timestamp_ns, p.timestamp_ns);
    }
});
