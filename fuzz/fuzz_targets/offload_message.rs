//! A message from a peer on the offload protocol (a plugin call, or its
//! answer and receipt). The decoder is `zeromesh::fuzzing::offload_message`;
//! `scripts/fuzz.sh offload_message` runs this target.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    zeromesh::fuzzing::offload_message(data);
});
