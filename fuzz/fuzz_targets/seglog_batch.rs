//! Segment file contents (the embedded log's recovery input): decoding any bytes must
//! never panic, the valid prefix must be within the input, and its records must have
//! dense offsets.
#![no_main]

use datanexus_seglog::{Bytes, decode_segment_bytes};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let bytes = Bytes::copy_from_slice(data);
    let (records, valid) = decode_segment_bytes(&bytes);
    assert!(valid <= data.len());
    for pair in records.windows(2) {
        assert!(pair[1].offset > pair[0].offset);
    }
});
