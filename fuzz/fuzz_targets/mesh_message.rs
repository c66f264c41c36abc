//! A message from a peer on the mesh's request-response protocol or a link. The decoder is `zeromesh::fuzzing::mesh_message`;
//! `scripts/fuzz.sh mesh_message` runs this target.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    zeromesh::fuzzing::mesh_message(data);
});
