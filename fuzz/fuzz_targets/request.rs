//! A client's message to the peer API. The decoder is `zeromesh::fuzzing::request`;
//! `scripts/fuzz.sh request` runs this target.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    zeromesh::fuzzing::request(data);
});
