//! A plugin package file. The decoder is `zeromesh::fuzzing::plugin_package`;
//! `scripts/fuzz.sh plugin_package` runs this target.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    zeromesh::fuzzing::plugin_package(data);
});
