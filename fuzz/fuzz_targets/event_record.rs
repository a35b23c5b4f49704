//! `events` topic records (EventRecord) from untrusted bytes: decode must never panic.
#![no_main]

use datanexus_model::codec::{decode_event, encode_event};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(e) = decode_event(data) {
        let mut buf = Vec::new();
        encode_event(&e, &mut buf);
        assert_eq!(decode_event(&buf).expect("re-encoded event must decode"), e);
    }
});
