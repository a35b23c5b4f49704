//! Timestamps from HTTP clients (RFC 3339 or Unix seconds): parse must never panic, and
//! an accepted timestamp formats back to one that parses to the same instant.
#![no_main]

use datanexus_model::time::{format_rfc3339, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(ns) = parse(text) {
            assert_eq!(parse(&format_rfc3339(ns)), Ok(ns));
        }
    }
});
