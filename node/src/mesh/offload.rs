//! The offload protocol: a plugin call one node asks a peer to run, or a
//! call of a federated MCP server's tool one node asks a host of that
//! server to make, and the peer's answer with a receipt signed by its peer
//! key; and the definitions of a federated server's tools, asked by hash.
//! It has its own stream protocol, message limit, timeout and concurrency
//! budget, so long calls never hold the slots Raft's messages need.

use libp2p::identity::{Keypair, PublicKey};
use libp2p::{PeerId, StreamProtocol};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeromesh_protocol::limits::{MAX_FEDERATED_TOOLS, MAX_OFFLOAD_MESSAGE_BYTES, MAX_PLUGIN_NAME_BYTES};

use super::codec;

/// The offload protocol's name, versioned.
pub const OFFLOAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/zeromesh/offload/2");

/// What a receipt's signature covers: this prefix, then the receipt's bytes.
const RECEIPT_CONTEXT: &[u8] = b"zeromesh offload receipt v2\0";

/// What a call runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CallKind {
    /// A tool of a WebAssembly plugin.
    Plugin,
    /// A tool of a federated MCP server.
    Federated,
}

/// What one node asks a peer on the offload protocol.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum OffloadMessage {
    /// Run a call.
    Call(OffloadRequest),
    /// The definitions of a federated server's tools with these SHA-256
    /// hashes (at most [`MAX_FEDERATED_TOOLS`]).
    Describe { server: String, definitions: Vec<[u8; 32]> },
}

/// A call for a peer to run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OffloadRequest {
    /// Random: ties the receipt to this request.
    pub call_id: [u8; 16],
    pub kind: CallKind,
    /// The plugin's name, or the federated server's.
    pub plugin: String,
    /// For a plugin, the module the caller's registry names: the peer runs
    /// exactly this one or nothing. For a federated tool, the SHA-256 of
    /// the tool's definition the caller listed: the host calls it only
    /// while its server's tool has that definition.
    pub module_sha256: [u8; 32],
    /// The plugin's (or server's) own name for the tool.
    pub tool: String,
    /// The call's arguments, JSON.
    pub arguments: Vec<u8>,
    /// The agent the call acts for.
    pub agent: String,
    /// Caps on the call (the kernel's grant); the peer also applies the
    /// plugin's own limits and its own.
    pub fuel: Option<u64>,
    pub wall_ms: u64,
    /// The reservation the call settles, when an agreement governs it.
    pub reservation: Option<ReceiptReservation>,
}

/// A peer's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum OffloadResponse {
    /// The call ran: its output (JSON: the result, or the failure's message
    /// when `receipt.is_error`) and the signed receipt.
    Ran { output: Vec<u8>, receipt: SignedReceipt },
    /// The call did not run at all (the peer lacks the module, is busy, or
    /// refused the request): another node may run it.
    NotRun(String),
    /// The tool definitions asked for that the peer has (JSON, each at most
    /// `MAX_FEDERATED_TOOL_DEFINITION_BYTES`), as many as fit one message.
    Described(Vec<Vec<u8>>),
}

/// An agreement's reservation, as a receipt names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptReservation {
    pub agreement: String,
    pub key: String,
    pub log_index: u64,
}

/// What a peer states about a call it ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    pub call_id: [u8; 16],
    pub kind: CallKind,
    pub peer_id: String,
    pub node_id: u64,
    pub plugin: String,
    pub tool: String,
    pub module_sha256: [u8; 32],
    /// SHA-256 of the arguments' bytes as received.
    pub input_sha256: [u8; 32],
    /// SHA-256 of the output's bytes as sent.
    pub output_sha256: [u8; 32],
    pub is_error: bool,
    pub fuel_used: u64,
    pub wall_ms: u64,
    pub reservation: Option<ReceiptReservation>,
}

/// A receipt's bytes with the signer's public key and signature.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SignedReceipt {
    pub receipt: Vec<u8>,
    pub public_key: Vec<u8>,
    pub signature: Vec<u8>,
}

/// Why a receipt was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    #[error("the receipt does not decode: {0}")]
    Malformed(String),
    #[error("the receipt's signature does not verify against its key")]
    BadSignature,
    #[error("the receipt is signed by {signer}, not by {expected}, the peer asked")]
    WrongSigner { signer: String, expected: String },
    #[error("the receipt's {0} does not match the call")]
    Mismatch(&'static str),
    #[error("the receipt claims {claimed} {metric}, over the {cap} the call allowed")]
    OverCap { metric: &'static str, claimed: u64, cap: u64 },
}

pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

impl SignedReceipt {
    pub fn sign(receipt: &Receipt, keypair: &Keypair) -> Result<SignedReceipt, ReceiptError> {
        let bytes = codec::encode_within(receipt, MAX_OFFLOAD_MESSAGE_BYTES)
            .map_err(|error| ReceiptError::Malformed(error.to_string()))?;
        let signature = keypair
            .sign(&[RECEIPT_CONTEXT, &bytes].concat())
            .map_err(|error| ReceiptError::Malformed(error.to_string()))?;
        Ok(SignedReceipt { receipt: bytes, public_key: keypair.public().encode_protobuf(), signature })
    }

    /// Checks the receipt answers `request` as sent to `peer` with `output`:
    /// signed by `peer`'s key, naming the request's call, plugin, tool,
    /// module, arguments, reservation and the output received, within the
    /// request's caps.
    pub fn verify(&self, peer: &PeerId, request: &OffloadRequest, output: &[u8]) -> Result<Receipt, ReceiptError> {
        let public_key = PublicKey::try_decode_protobuf(&self.public_key)
            .map_err(|error| ReceiptError::Malformed(error.to_string()))?;
        let signer = public_key.to_peer_id();
        if signer != *peer {
            return Err(ReceiptError::WrongSigner { signer: signer.to_string(), expected: peer.to_string() });
        }
        if !public_key.verify(&[RECEIPT_CONTEXT, &self.receipt].concat(), &self.signature) {
            return Err(ReceiptError::BadSignature);
        }
        let receipt: Receipt = codec::decode_within(&self.receipt, MAX_OFFLOAD_MESSAGE_BYTES)
            .map_err(|error| ReceiptError::Malformed(error.to_string()))?;
        let checks = [
            (receipt.peer_id == peer.to_string(), "peer id"),
            (receipt.call_id == request.call_id, "call id"),
            (receipt.kind == request.kind, "kind"),
            (receipt.plugin == request.plugin, "plugin"),
            (receipt.tool == request.tool, "tool"),
            (receipt.module_sha256 == request.module_sha256, "module hash"),
            (receipt.input_sha256 == sha256(&request.arguments), "input hash"),
            (receipt.output_sha256 == sha256(output), "output hash"),
            (receipt.reservation == request.reservation, "reservation"),
        ];
        if let Some((_, what)) = checks.iter().find(|(matches, _)| !matches) {
            return Err(ReceiptError::Mismatch(what));
        }
        if let Some(cap) = request.fuel.filter(|cap| receipt.fuel_used > *cap) {
            return Err(ReceiptError::OverCap { metric: "fuel", claimed: receipt.fuel_used, cap });
        }
        Ok(receipt)
    }
}

impl OffloadMessage {
    /// Why a received message cannot be served as it is, if it cannot.
    pub fn check(&self) -> Result<(), String> {
        match self {
            OffloadMessage::Call(request) => request.check(),
            OffloadMessage::Describe { server, definitions } => {
                if server.len() > MAX_PLUGIN_NAME_BYTES {
                    return Err(format!("server names are at most {MAX_PLUGIN_NAME_BYTES} bytes"));
                }
                if definitions.len() > MAX_FEDERATED_TOOLS {
                    return Err(format!("at most {MAX_FEDERATED_TOOLS} definitions are asked at once"));
                }
                Ok(())
            }
        }
    }
}

impl OffloadRequest {
    /// Why a received request cannot be run as it is, if it cannot.
    pub fn check(&self) -> Result<(), String> {
        if self.plugin.len() > MAX_PLUGIN_NAME_BYTES || self.tool.len() > MAX_PLUGIN_NAME_BYTES {
            return Err(format!("plugin and tool names are at most {MAX_PLUGIN_NAME_BYTES} bytes"));
        }
        zeromesh_protocol::auth::check_agent_id(&self.agent).map_err(|error| error.to_string())?;
        if self.arguments.len() > zeromesh_protocol::limits::MAX_PLUGIN_ARGS_BYTES {
            return Err(format!(
                "arguments of {} bytes are over the limit of {}",
                self.arguments.len(),
                zeromesh_protocol::limits::MAX_PLUGIN_ARGS_BYTES
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> OffloadRequest {
        OffloadRequest {
            call_id: [7; 16],
            kind: CallKind::Plugin,
            plugin: "echo".into(),
            module_sha256: [1; 32],
            tool: "say".into(),
            arguments: br#"{"text":"hi"}"#.to_vec(),
            agent: "alice".into(),
            fuel: Some(1_000),
            wall_ms: 500,
            reservation: Some(ReceiptReservation { agreement: "deal".into(), key: "k-1".into(), log_index: 9 }),
        }
    }

    fn receipt(keypair: &Keypair, request: &OffloadRequest, output: &[u8]) -> Receipt {
        Receipt {
            call_id: request.call_id,
            kind: request.kind,
            peer_id: keypair.public().to_peer_id().to_string(),
            node_id: 5,
            plugin: request.plugin.clone(),
            tool: request.tool.clone(),
            module_sha256: request.module_sha256,
            input_sha256: sha256(&request.arguments),
            output_sha256: sha256(output),
            is_error: false,
            fuel_used: 800,
            wall_ms: 3,
            reservation: request.reservation.clone(),
        }
    }

    #[test]
    fn a_receipt_verifies_only_for_its_signer_call_and_output() {
        let (peer, other) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
        let (request, output) = (request(), br#"{"said":"hi"}"#.to_vec());
        let signed = SignedReceipt::sign(&receipt(&peer, &request, &output), &peer).expect("signs");
        let peer_id = peer.public().to_peer_id();
        assert_eq!(signed.verify(&peer_id, &request, &output).expect("verifies").fuel_used, 800);

        // Another peer's signature, even over the same receipt, is not the asked peer's.
        let by_other = SignedReceipt::sign(&receipt(&peer, &request, &output), &other).expect("signs");
        assert!(matches!(by_other.verify(&peer_id, &request, &output), Err(ReceiptError::WrongSigner { .. })));

        // Output, arguments, module, reservation: each altered one is refused.
        assert_eq!(signed.verify(&peer_id, &request, b"{}"), Err(ReceiptError::Mismatch("output hash")));
        let mut changed = request.clone();
        changed.arguments = b"{}".to_vec();
        assert_eq!(signed.verify(&peer_id, &changed, &output), Err(ReceiptError::Mismatch("input hash")));
        let mut changed = request.clone();
        changed.module_sha256 = [2; 32];
        assert_eq!(signed.verify(&peer_id, &changed, &output), Err(ReceiptError::Mismatch("module hash")));
        let mut changed = request.clone();
        changed.kind = CallKind::Federated;
        assert_eq!(signed.verify(&peer_id, &changed, &output), Err(ReceiptError::Mismatch("kind")));
        let mut changed = request.clone();
        changed.reservation = None;
        assert_eq!(signed.verify(&peer_id, &changed, &output), Err(ReceiptError::Mismatch("reservation")));

        // Tampered bytes break the signature; fuel past the cap is refused.
        let mut tampered = signed.clone();
        let last = tampered.receipt.len() - 1;
        tampered.receipt[last] ^= 1;
        assert_eq!(tampered.verify(&peer_id, &request, &output), Err(ReceiptError::BadSignature));
        let mut greedy = receipt(&peer, &request, &output);
        greedy.fuel_used = 1_001;
        let greedy = SignedReceipt::sign(&greedy, &peer).expect("signs");
        assert!(matches!(greedy.verify(&peer_id, &request, &output), Err(ReceiptError::OverCap { .. })));
    }

    #[test]
    fn requests_over_their_limits_are_refused() {
        assert!(request().check().is_ok());
        let mut long = request();
        long.tool = "t".repeat(MAX_PLUGIN_NAME_BYTES + 1);
        assert!(long.check().is_err());
        let mut bad_agent = request();
        bad_agent.agent = "no spaces allowed".into();
        assert!(bad_agent.check().is_err());
        let greedy =
            OffloadMessage::Describe { server: "notes".into(), definitions: vec![[0; 32]; MAX_FEDERATED_TOOLS + 1] };
        assert!(greedy.check().is_err());
    }
}
