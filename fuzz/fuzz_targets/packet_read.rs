//! Reading a packet part (and turning it into COPY text) must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(part) = relaysync::packet::read_part(data) {
        let mut out = Vec::new();
        for i in 0..part.batch_count() {
            part.write_copy_text(i, &mut out);
        }
    }
});
