//! A node's TOML configuration file. The decoder is `zeromesh::fuzzing::config`;
//! `scripts/fuzz.sh config` runs this target.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    zeromesh::fuzzing::config(data);
});
