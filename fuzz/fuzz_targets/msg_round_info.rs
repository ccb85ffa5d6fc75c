//! `RoundInfo` (inside announcements and join responses): bounded decode and a stable round trip.
#![no_main]

use hearth_proto::{decode_bounded, encode, RoundInfo};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(info) = decode_bounded::<RoundInfo>(data, 1024) {
        let bytes = encode(&info);
        assert!(bytes.len() <= data.len());
        assert_eq!(decode_bounded::<RoundInfo>(&bytes, 1024).ok(), Some(info));
    }
});
