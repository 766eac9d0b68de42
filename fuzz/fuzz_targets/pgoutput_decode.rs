//! The pgoutput decoder must never panic, whatever the bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = relaysync::pgoutput::decode(bytes::Bytes::copy_from_slice(data));
});
