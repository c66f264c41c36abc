//! A backup file, as `zeromesh restore` reads it. The decoder is
//! `zeromesh::fuzzing::backup`; `scripts/fuzz.sh backup` runs this target.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    zeromesh::fuzzing::backup(data);
});
