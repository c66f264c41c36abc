//! A snapshot file, as a leader sends it to a follower. The decoder is `zeromesh::fuzzing::snapshot`;
//! `scripts/fuzz.sh snapshot` runs this target.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    zeromesh::fuzzing::snapshot(data);
});
