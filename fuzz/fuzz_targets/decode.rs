#![no_main]
//! Arbitrary bytes as an incoming ring: indices, headers, chunks. See sharm_core::fuzzing.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    sharm_core::fuzzing::decode(data);
});
