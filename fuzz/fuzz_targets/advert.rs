//! A resource advert gossiped by a peer. The decoder is `zeromesh::fuzzing::advert`;
//! `scripts/fuzz.sh advert` runs this target.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    zeromesh::fuzzing::advert(data);
});
