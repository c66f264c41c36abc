//! An agent export file. The decoder is `zeromesh::fuzzing::agent_export`;
//! `scripts/fuzz.sh agent_export` runs this target.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    zeromesh::fuzzing::agent_export(data);
});
