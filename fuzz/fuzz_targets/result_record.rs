//! `results` topic records and Redis mailbox entries (`datanexus.v1.ResultRecord`): any
//! bytes must decode or fail without a panic, and a decoded result survives the trip
//! through its stored form.
#![no_main]

use datanexus_proto::datanexus::v1::ResultRecord;
use datanexus_proto::prost::Message;
use datanexus_results::record::{from_stored, result_seq, to_stored};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(mut record) = ResultRecord::decode(data) else {
        return;
    };
    let stored = to_stored(&record);
    assert_eq!(stored.seq, result_seq(&record));
    // `reply_to` is routing, not stored; a missing outcome is stored as an error.
    record.reply_to.clear();
    let back = from_stored(stored);
    if record.outcome.is_some() {
        assert_eq!(back, record);
    }
});
