//! The node's identity: an ed25519 key kept in its data directory, the peer
//! id it gives, and the Raft node id derived from that peer id.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use libp2p::identity::Keypair;
use libp2p::PeerId;
use sha2::{Digest, Sha256};
use zeromesh_protocol::NodeId;

/// The key file's name inside a data directory.
pub const KEY_FILE: &str = "node.key";
/// Largest key file accepted, in bytes (a protobuf-encoded ed25519 key is 68).
const MAX_KEY_FILE_BYTES: u64 = 4096;

pub fn key_path(data_dir: &Path) -> PathBuf {
    data_dir.join(KEY_FILE)
}

/// The Raft node id of a peer: the first eight bytes of the SHA-256 of its
/// peer id. Every key gives its own id, so an id is never reused by another
/// node; a node restarted on its data directory keeps its key and its id.
pub fn node_id_of(peer: &PeerId) -> NodeId {
    let digest = Sha256::digest(peer.to_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    // Zero is never a valid id, by convention of the logs people read.
    u64::from_be_bytes(bytes).max(1)
}

/// Writes a new key to `path`, refusing to overwrite one.
pub fn generate(path: &Path) -> anyhow::Result<Keypair> {
    if path.exists() {
        bail!("{} already exists; a node's key is its identity and is never overwritten", path.display());
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    let keypair = Keypair::generate_ed25519();
    let encoded = keypair.to_protobuf_encoding().context("encoding the new key")?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).with_context(|| format!("creating {}", path.display()))?;
    file.write_all(&encoded)?;
    file.sync_all()?;
    Ok(keypair)
}

/// Reads the key at `path`.
pub fn load(path: &Path) -> anyhow::Result<Keypair> {
    let size = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?.len();
    if size > MAX_KEY_FILE_BYTES {
        bail!("{} is {size} bytes; a node key file is at most {MAX_KEY_FILE_BYTES} bytes", path.display());
    }
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Keypair::from_protobuf_encoding(&bytes)
        .with_context(|| format!("{} is not a node key (make one with `zeromesh keygen`)", path.display()))
}

/// Loads the data directory's key, making one the first time.
pub fn load_or_generate(data_dir: &Path) -> anyhow::Result<Keypair> {
    let path = key_path(data_dir);
    if path.exists() {
        load(&path)
    } else {
        generate(&path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_kept_and_gives_the_same_ids_after_a_reload() {
        let dir = tempfile::tempdir().expect("temp dir");
        let first = load_or_generate(dir.path()).expect("generates");
        let again = load_or_generate(dir.path()).expect("loads");
        assert_eq!(first.public().to_peer_id(), again.public().to_peer_id());
        assert_eq!(node_id_of(&first.public().to_peer_id()), node_id_of(&again.public().to_peer_id()));
        assert!(generate(&key_path(dir.path())).is_err(), "an existing key is never overwritten");
    }

    #[test]
    fn different_keys_give_different_node_ids() {
        let a = Keypair::generate_ed25519().public().to_peer_id();
        let b = Keypair::generate_ed25519().public().to_peer_id();
        assert_ne!(node_id_of(&a), node_id_of(&b));
    }
}
