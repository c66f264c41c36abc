//! Every decoder of outside input, run on arbitrary bytes: what the fuzz
//! targets in `fuzz/` call, and what the seed and regression test replays.
//! Each returns whether the input was accepted. None may panic, hang or
//! allocate past the limits of its input, whatever the bytes.

use std::path::Path;

use crate::mesh::advert::{Advert, SignedAdvert};
use crate::mesh::codec;
use crate::mesh::link::{AnswerFrame, RequestFrame};
use crate::mesh::messages::{MeshRequest, MeshResponse};
use crate::mesh::offload::{OffloadMessage, OffloadResponse, Receipt};
use zeromesh_protocol::limits::{MAX_MESH_LINK_FRAME_BYTES, MAX_MESH_MESSAGE_BYTES, MAX_OFFLOAD_MESSAGE_BYTES};

/// A fixed "now" for checks that depend on the time (plugin expiry), so a
/// crash found today replays the same way later.
const FIXED_NOW_MS: u64 = 1_800_000_000_000;

/// A decoder run on arbitrary bytes: whether it accepted them.
pub type Decoder = fn(&[u8]) -> bool;

/// The decoders, by fuzz target name.
pub const TARGETS: &[(&str, Decoder)] = &[
    ("mesh_message", mesh_message),
    ("offload_message", offload_message),
    ("advert", advert),
    ("snapshot", snapshot),
    ("backup", backup),
    ("plugin_package", plugin_package),
    ("config", config),
    ("agent_export", agent_export),
    ("request", request),
];

/// A message from a peer on the request-response protocol, as a request and
/// as a response, and a frame on a mesh link, as a request and as an
/// answer. What decodes encodes again, and that decodes too.
pub fn mesh_message(data: &[u8]) -> bool {
    fn round_trip<T: serde::Serialize + serde::de::DeserializeOwned>(data: &[u8], limit: usize) -> bool {
        let Ok(message) = codec::decode_within::<T>(data, limit) else { return false };
        let again = codec::encode_within(&message, limit).expect("a decoded mesh message encodes");
        codec::decode_within::<T>(&again, limit).expect("an encoded mesh message decodes");
        true
    }
    let accepted = [
        round_trip::<MeshRequest>(data, MAX_MESH_MESSAGE_BYTES),
        round_trip::<MeshResponse>(data, MAX_MESH_MESSAGE_BYTES),
        round_trip::<RequestFrame>(data, MAX_MESH_LINK_FRAME_BYTES),
        round_trip::<AnswerFrame>(data, MAX_MESH_LINK_FRAME_BYTES),
    ];
    accepted.contains(&true)
}

/// A message from a peer on the offload protocol, as a request (with the
/// checks a node makes before running it) and as a response (with the
/// receipt inside it). What decodes encodes again, and that decodes too.
pub fn offload_message(data: &[u8]) -> bool {
    fn round_trip<T: serde::Serialize + serde::de::DeserializeOwned>(data: &[u8]) -> Option<T> {
        let message = codec::decode_within::<T>(data, MAX_OFFLOAD_MESSAGE_BYTES).ok()?;
        let again = codec::encode_within(&message, MAX_OFFLOAD_MESSAGE_BYTES).expect("a decoded message encodes");
        codec::decode_within::<T>(&again, MAX_OFFLOAD_MESSAGE_BYTES).expect("an encoded message decodes");
        Some(message)
    }
    let request = round_trip::<OffloadMessage>(data).is_some_and(|message| message.check().is_ok());
    let response = match round_trip::<OffloadResponse>(data) {
        Some(OffloadResponse::Ran { receipt, .. }) => {
            codec::decode_within::<Receipt>(&receipt.receipt, MAX_OFFLOAD_MESSAGE_BYTES).is_ok()
        }
        Some(OffloadResponse::NotRun(_) | OffloadResponse::Described(_)) => true,
        None => false,
    };
    request || response
}

/// A gossiped advert: the signed envelope with all its checks, and the
/// advert inside (which a forged signature would otherwise keep the fuzzer
/// from reaching).
pub fn advert(data: &[u8]) -> bool {
    let inner = codec::decode::<Advert>(data).is_ok();
    SignedAdvert::verify(data).is_ok() || inner
}

/// A snapshot file as a leader sends it: every check an install makes
/// before it replaces anything.
pub fn snapshot(data: &[u8]) -> bool {
    zeromesh_consensus::check_snapshot(data, Path::new("fuzz.snap")).is_ok()
}

/// A backup file an operator restores from: the snapshot in it, checked as
/// above, and every plugin module against its hash.
pub fn backup(data: &[u8]) -> bool {
    zeromesh_consensus::verify_backup(data, Path::new("fuzz.zmbackup")).is_ok()
}

/// A plugin package file: its structure, then every check of its signed
/// manifest, trusting its own publisher. The manifest is also checked
/// unsigned, as a publisher's `plugin package` reads it.
pub fn plugin_package(data: &[u8]) -> bool {
    let Ok(package) = zeromesh_plugins::Package::decode(data) else { return false };
    if let Ok(manifest) = serde_json::from_slice::<zeromesh_plugins::Manifest>(&package.signed_manifest().manifest_json)
    {
        let _ = manifest.validate();
    }
    package.verify(&[package.publisher()], FIXED_NOW_MS).is_ok()
}

/// A node's TOML configuration file, resolved against no flags.
pub fn config(data: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(data) else { return false };
    crate::config::NodeConfig::resolve_text(&Default::default(), Path::new("fuzz.toml"), text).is_ok()
}

/// An agent export file, as `agent import` and the `agent_import` tool read
/// it: JSON, then format, limits, hash and signature.
pub fn agent_export(data: &[u8]) -> bool {
    let Ok(document) = serde_json::from_slice::<serde_json::Value>(data) else { return false };
    crate::tools::agents::verify_export(&document).is_ok()
}

/// A client's message to the peer API (a WebSocket text frame; HTTP bodies
/// are the same JSON-RPC). What rmcp reads is read alike; what decodes
/// encodes again, and that decodes.
pub fn request(data: &[u8]) -> bool {
    // Text frames and HTTP bodies that are not UTF-8 are refused before.
    let Ok(text) = std::str::from_utf8(data) else { return false };
    let decoded = crate::api::decode_websocket_message(text);
    if let Ok(rmcps) = serde_json::from_str::<rmcp::model::ClientJsonRpcMessage>(text) {
        let ours = decoded.as_ref().expect("what rmcp reads decodes");
        assert_eq!(format!("{ours:?}"), format!("{rmcps:?}"), "read otherwise than rmcp reads it");
    }
    let Ok(message) = decoded else { return false };
    let encoded = serde_json::to_string(&message).expect("a decoded message encodes");
    crate::api::decode_websocket_message(&encoded).expect("an encoded message decodes");
    true
}
