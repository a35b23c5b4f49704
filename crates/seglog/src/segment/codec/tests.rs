#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use bytes::Bytes;
use proptest::prelude::*;

use super::*;
use crate::Record;

fn arb_record() -> impl Strategy<Value = Record> {
    (
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
        proptest::collection::vec(any::<u8>(), 0..200),
        any::<i64>(),
    )
        .prop_map(|(key, value, timestamp_ms)| Record {
            key: key.map(Bytes::from),
            value: Bytes::from(value),
            timestamp_ms,
        })
}

fn arb_batches() -> impl Strategy<Value = Vec<Vec<Record>>> {
    proptest::collection::vec(proptest::collection::vec(arb_record(), 1..20), 1..6)
}

/// Encodes batches back to back with dense offsets starting at `base`.
fn encode_all(batches: &[Vec<Record>], base: u64) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = Vec::new();
    let mut next = base;
    for batch in batches {
        let enc = encode(batch, &mut buf);
        seal(&mut buf, &enc, next);
        next += u64::from(enc.count);
        out.extend_from_slice(&buf);
    }
    out
}

fn expected(batches: &[Vec<Record>], base: u64) -> Vec<StoredRecord> {
    batches
        .iter()
        .flatten()
        .zip(base..)
        .map(|(r, offset)| StoredRecord {
            offset,
            key: r.key.clone(),
            value: r.value.clone(),
            timestamp_ms: r.timestamp_ms,
        })
        .collect()
}

proptest! {
    #[test]
    fn encoded_batches_decode_to_the_same_records(batches in arb_batches(), base in 0u64..1 << 40) {
        let bytes = Bytes::from(encode_all(&batches, base));
        prop_assert_eq!(encoded_len(&batches[0]) as usize, check(&bytes).unwrap().len as usize);
        let (records, valid) = decode_prefix(&bytes);
        prop_assert_eq!(valid, bytes.len());
        prop_assert_eq!(records, expected(&batches, base));
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let bytes = Bytes::from(bytes);
        let (_, valid) = decode_prefix(&bytes);
        prop_assert!(valid <= bytes.len());
        let _ = parse_header(&bytes);
        let _ = check(&bytes);
    }

    #[test]
    fn damaged_batches_decode_to_a_valid_prefix(
        batches in arb_batches(),
        cut in any::<prop::sample::Index>(),
        flip in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let clean = encode_all(&batches, 0);
        let all = expected(&batches, 0);
        // Truncation: a prefix of whole batches survives.
        let cut = cut.index(clean.len());
        let (records, valid) = decode_prefix(&Bytes::copy_from_slice(&clean[..cut]));
        prop_assert!(valid <= cut);
        prop_assert_eq!(&records[..], &all[..records.len()]);
        // A flipped bit (outside the magic, which is not covered by the crc but checked)
        // invalidates its batch and everything after it, and nothing else.
        let mut damaged = clean.clone();
        let at = flip.index(damaged.len());
        damaged[at] ^= 1 << bit;
        let (records, valid) = decode_prefix(&Bytes::from(damaged));
        prop_assert!(valid <= at);
        prop_assert_eq!(&records[..], &all[..records.len()]);
    }
}

#[test]
fn garbage_after_valid_batches_is_not_decoded() {
    let batch = vec![Record {
        key: None,
        value: Bytes::from_static(b"v"),
        timestamp_ms: 1,
    }];
    let mut bytes = encode_all(&[batch.clone(), batch], 5);
    let valid_len = bytes.len();
    bytes.extend_from_slice(&[0u8; 100]);
    let (records, valid) = decode_prefix(&Bytes::from(bytes));
    assert_eq!(valid, valid_len);
    assert_eq!(records.iter().map(|r| r.offset).collect::<Vec<_>>(), [5, 6]);
}

#[test]
fn header_rejects_zero_count_and_oversized_length() {
    let batch = vec![Record {
        key: Some(Bytes::from_static(b"k")),
        value: Bytes::from_static(b"v"),
        timestamp_ms: 1,
    }];
    let good = encode_all(&[batch], 0);
    let mut zero_count = good.clone();
    zero_count[20..24].copy_from_slice(&0u32.to_le_bytes());
    assert!(matches!(
        parse_header(&zero_count),
        Err(DecodeError::BadLength(_))
    ));
    let mut huge = good;
    huge[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(
        parse_header(&huge),
        Err(DecodeError::BadLength(_))
    ));
}
