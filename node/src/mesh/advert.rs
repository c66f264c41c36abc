//! Resource adverts: what each node tells the mesh about itself on the
//! gossip topic, signed with its peer key, and the bounded table of adverts
//! a node keeps, each for a limited time.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::identity::{Keypair, PublicKey};
use libp2p::PeerId;
use serde::{Deserialize, Serialize};
use zeromesh_protocol::limits::{
    MAX_ADVERTS, MAX_ADVERT_ADDRESSES, MAX_ADVERT_BYTES, MAX_ADVERT_FEDERATED_TOOLS, MAX_ADVERT_PLUGINS,
    MAX_HOSTED_SERVERS,
};

use super::codec;

/// The gossipsub topic adverts are published on.
pub const ADVERT_TOPIC: &str = "zeromesh/adverts/1";

/// What a node offers: where to reach it, its spare capacity and the
/// plugins it holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Advert {
    pub peer_id: String,
    pub node_id: u64,
    pub listen_addrs: Vec<String>,
    pub api_addr: String,
    pub version: String,
    /// Cores not busy, in thousandths of a core, over the last minute.
    pub free_cpu_millicores: u64,
    pub free_memory_bytes: u64,
    /// The one-minute load average, in thousandths.
    pub load_milli: u64,
    /// Cores the node may use.
    pub cores: u64,
    /// Whether the node runs plugins (`run_plugins`): one that does not
    /// serves their tools through its peers.
    pub runs_plugins: bool,
    /// SHA-256 (hex) of every plugin module this node runs: it takes
    /// offloaded calls of those.
    pub plugin_hashes: Vec<String>,
    /// Bytes free on the node's data disk (`None`: could not be read).
    pub free_disk_bytes: Option<u64>,
    /// Bytes the node keeps free there: below it, writes stop everywhere.
    pub min_free_disk_bytes: u64,
    /// The federated MCP servers this node hosts.
    pub servers: Vec<AdvertServer>,
    /// Rises with every advert a node publishes, so a stale one never
    /// replaces a newer one.
    pub sequence: u64,
}

/// A federated server as a node that hosts it advertises it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdvertServer {
    pub name: String,
    /// The log index of the registration the node runs.
    pub log_index: u64,
    /// Healthy, and its circuit not open: it takes calls.
    pub serving: bool,
    /// Its tools, by name, with the SHA-256 of each one's definition.
    pub tools: Vec<(String, [u8; 32])>,
}

/// An advert with its publisher's public key and signature over its bytes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SignedAdvert {
    pub advert: Vec<u8>,
    pub public_key: Vec<u8>,
    pub signature: Vec<u8>,
}

/// Why a received advert was dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdvertError {
    #[error("advert is {0} bytes, over the limit of {MAX_ADVERT_BYTES}")]
    TooLarge(usize),
    #[error("advert does not decode: {0}")]
    Malformed(String),
    #[error("advert's signature does not verify against its key")]
    BadSignature,
    #[error("advert names peer {claimed} but is signed by {signer}")]
    WrongPeer { claimed: String, signer: String },
    #[error("advert lists {0} entries, over a limit")]
    TooMany(usize),
}

impl SignedAdvert {
    pub fn sign(advert: &Advert, keypair: &Keypair) -> Result<Vec<u8>, AdvertError> {
        let bytes = codec::encode(advert).map_err(|e| AdvertError::Malformed(e.to_string()))?;
        let signature = keypair.sign(&bytes).map_err(|e| AdvertError::Malformed(e.to_string()))?;
        let signed = SignedAdvert { advert: bytes, public_key: keypair.public().encode_protobuf(), signature };
        let encoded = codec::encode(&signed).map_err(|e| AdvertError::Malformed(e.to_string()))?;
        if encoded.len() > MAX_ADVERT_BYTES {
            return Err(AdvertError::TooLarge(encoded.len()));
        }
        Ok(encoded)
    }

    /// Decodes and checks a received advert: size, signature, and that the
    /// signing key is the key of the peer the advert names.
    pub fn verify(bytes: &[u8]) -> Result<Advert, AdvertError> {
        if bytes.len() > MAX_ADVERT_BYTES {
            return Err(AdvertError::TooLarge(bytes.len()));
        }
        let signed: SignedAdvert = codec::decode(bytes).map_err(|e| AdvertError::Malformed(e.to_string()))?;
        let public_key =
            PublicKey::try_decode_protobuf(&signed.public_key).map_err(|e| AdvertError::Malformed(e.to_string()))?;
        if !public_key.verify(&signed.advert, &signed.signature) {
            return Err(AdvertError::BadSignature);
        }
        let advert: Advert = codec::decode(&signed.advert).map_err(|e| AdvertError::Malformed(e.to_string()))?;
        let signer = public_key.to_peer_id().to_string();
        if advert.peer_id != signer {
            return Err(AdvertError::WrongPeer { claimed: advert.peer_id, signer });
        }
        if advert.listen_addrs.len() > MAX_ADVERT_ADDRESSES {
            return Err(AdvertError::TooMany(advert.listen_addrs.len()));
        }
        if advert.plugin_hashes.len() > MAX_ADVERT_PLUGINS {
            return Err(AdvertError::TooMany(advert.plugin_hashes.len()));
        }
        if advert.servers.len() > MAX_HOSTED_SERVERS {
            return Err(AdvertError::TooMany(advert.servers.len()));
        }
        let tools: usize = advert.servers.iter().map(|server| server.tools.len()).sum();
        if tools > MAX_ADVERT_FEDERATED_TOOLS {
            return Err(AdvertError::TooMany(tools));
        }
        Ok(advert)
    }
}

/// Cores this process may use.
pub fn cores() -> u64 {
    std::thread::available_parallelism().map_or(1, |cores| cores.get() as u64)
}

/// This machine's one-minute load average in thousandths, read from /proc
/// (zero elsewhere).
pub fn load_milli() -> u64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next().and_then(|first| first.parse::<f64>().ok()))
        .map_or(0, |load| (load * 1000.0) as u64)
}

/// An advert as kept in the table.
#[derive(Debug, Clone)]
pub struct KnownAdvert {
    pub advert: Advert,
    pub received_at: Instant,
}

impl Advert {
    /// The one-minute load average per core, in thousandths.
    pub fn load_per_core_milli(&self) -> u64 {
        self.load_milli / self.cores.max(1)
    }
}

/// The adverts this node has received, at most [`MAX_ADVERTS`], each kept
/// for `ttl` after it arrived.
#[derive(Debug)]
pub struct AdvertTable {
    ttl: Duration,
    adverts: HashMap<PeerId, KnownAdvert>,
    /// Adverts dropped because they failed verification.
    pub rejected: u64,
}

impl AdvertTable {
    pub fn new(ttl: Duration) -> Self {
        AdvertTable { ttl, adverts: HashMap::new(), rejected: 0 }
    }

    /// How long an advert is kept after it arrived.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Keeps `advert` unless a newer one from the same peer is already
    /// here. When the table is full, the stalest advert makes room.
    pub fn insert(&mut self, peer: PeerId, advert: Advert, now: Instant) {
        self.expire(now);
        if let Some(known) = self.adverts.get(&peer) {
            if known.advert.sequence >= advert.sequence {
                return;
            }
        }
        if !self.adverts.contains_key(&peer) && self.adverts.len() >= MAX_ADVERTS {
            if let Some(stalest) = self.adverts.iter().min_by_key(|(_, known)| known.received_at).map(|(peer, _)| *peer)
            {
                self.adverts.remove(&stalest);
            }
        }
        self.adverts.insert(peer, KnownAdvert { advert, received_at: now });
    }

    /// Drops every advert older than the TTL.
    pub fn expire(&mut self, now: Instant) {
        let ttl = self.ttl;
        self.adverts.retain(|_, known| now.saturating_duration_since(known.received_at) <= ttl);
    }

    /// The live adverts, by peer id.
    pub fn snapshot(&mut self, now: Instant) -> Vec<KnownAdvert> {
        self.expire(now);
        let mut adverts: Vec<KnownAdvert> = self.adverts.values().cloned().collect();
        adverts.sort_by(|a, b| a.advert.peer_id.cmp(&b.advert.peer_id));
        adverts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn advert(keypair: &Keypair, sequence: u64) -> Advert {
        Advert {
            peer_id: keypair.public().to_peer_id().to_string(),
            node_id: 1,
            listen_addrs: vec!["/ip4/127.0.0.1/tcp/7001".into()],
            api_addr: "ws://127.0.0.1:8765".into(),
            version: "test".into(),
            free_cpu_millicores: 1000,
            free_memory_bytes: 1 << 30,
            load_milli: 100,
            cores: 2,
            runs_plugins: true,
            plugin_hashes: vec![],
            free_disk_bytes: Some(1 << 40),
            min_free_disk_bytes: 128 << 20,
            servers: vec![AdvertServer {
                name: "notes".into(),
                log_index: 4,
                serving: true,
                tools: vec![("search".into(), [3; 32])],
            }],
            sequence,
        }
    }

    #[test]
    fn a_signed_advert_verifies_and_a_forged_one_does_not() {
        let publisher = Keypair::generate_ed25519();
        let forger = Keypair::generate_ed25519();
        let signed = SignedAdvert::sign(&advert(&publisher, 1), &publisher).expect("signs");
        assert_eq!(SignedAdvert::verify(&signed).expect("verifies"), advert(&publisher, 1));

        let forged = SignedAdvert::sign(&advert(&publisher, 2), &forger).expect("signs");
        assert!(matches!(SignedAdvert::verify(&forged), Err(AdvertError::WrongPeer { .. })));

        let mut tampered: SignedAdvert = codec::decode(&signed).expect("decodes");
        let last = tampered.advert.len() - 1;
        tampered.advert[last] ^= 1;
        let tampered = codec::encode(&tampered).expect("encodes");
        assert_eq!(SignedAdvert::verify(&tampered), Err(AdvertError::BadSignature));
        assert!(matches!(SignedAdvert::verify(&[1, 2, 3]), Err(AdvertError::Malformed(_))));
    }

    #[test]
    fn the_table_keeps_the_newest_advert_and_forgets_expired_ones() {
        let keypair = Keypair::generate_ed25519();
        let peer = keypair.public().to_peer_id();
        let mut table = AdvertTable::new(Duration::from_secs(10));
        let start = Instant::now();
        table.insert(peer, advert(&keypair, 2), start);
        table.insert(peer, advert(&keypair, 1), start);
        assert_eq!(table.snapshot(start)[0].advert.sequence, 2);
        assert!(table.snapshot(start + Duration::from_secs(11)).is_empty());
    }

    #[test]
    fn the_table_never_holds_more_than_its_limit() {
        let mut table = AdvertTable::new(Duration::from_secs(60));
        let start = Instant::now();
        for offset in 0..(MAX_ADVERTS as u64 + 10) {
            let keypair = Keypair::generate_ed25519();
            table.insert(keypair.public().to_peer_id(), advert(&keypair, 1), start + Duration::from_millis(offset));
        }
        assert_eq!(table.snapshot(start + Duration::from_secs(1)).len(), MAX_ADVERTS);
    }
}
