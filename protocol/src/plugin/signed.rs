//! Publisher keys and signed manifests. The publisher signs the manifest
//! bytes (which carry the module's SHA-256) with ed25519, under a domain
//! separation context, so a signature covers the module too.

use std::fmt;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::manifest::Manifest;
use crate::limits::MAX_PLUGIN_MANIFEST_BYTES;

/// Length of an ed25519 signature.
pub const SIGNATURE_BYTES: usize = 64;
/// Domain separation: a zeromesh plugin signature can never be mistaken for
/// a signature over anything else.
const SIGNING_CONTEXT: &[u8] = b"zeromesh-plugin-manifest-v1\0";

/// Why a package or a signed manifest was refused. Each variant names the
/// check that failed.
#[derive(Debug, Clone, Error, PartialEq, Eq, Serialize, Deserialize)]
pub enum PackageError {
    #[error("not a valid plugin package: {0}")]
    Malformed(String),
    #[error("invalid manifest: {0}")]
    InvalidManifest(String),
    #[error("signature check failed: the manifest is not signed by publisher key {0}, or was changed after signing")]
    BadSignature(PublisherKey),
    #[error("module check failed: its SHA-256 is {actual}, the signed manifest says {expected}; the module was changed after signing")]
    ModuleTampered { expected: String, actual: String },
    #[error("trust check failed: publisher key {0} is not in the trusted set; an admin adds it with `zeromesh plugin trust`")]
    Untrusted(PublisherKey),
    #[error("expiry check failed: the package expired at {expired_at_ms} ms (now {now_ms} ms)")]
    Expired { expired_at_ms: u64, now_ms: u64 },
}

/// A publisher's ed25519 public key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PublisherKey(pub [u8; 32]);

impl fmt::Display for PublisherKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl PublisherKey {
    pub fn of(key: &SigningKey) -> Self {
        PublisherKey(key.verifying_key().to_bytes())
    }

    /// Parses 64 hex digits.
    pub fn parse(text: &str) -> Result<Self, PackageError> {
        let bytes =
            hex::decode(text.trim()).map_err(|e| PackageError::Malformed(format!("publisher key is not hex: {e}")))?;
        let bytes: [u8; 32] = bytes
            .try_into()
            .map_err(|_| PackageError::Malformed("a publisher key is 32 bytes (64 hex digits)".into()))?;
        Ok(PublisherKey(bytes))
    }
}

/// A manifest as its publisher signed it: the exact manifest bytes, the
/// publisher's key and the signature. This is what the registry replicates;
/// the module travels separately, addressed by the SHA-256 the manifest holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedManifest {
    pub manifest_json: Vec<u8>,
    pub publisher: PublisherKey,
    pub signature: Vec<u8>,
}

fn signed_message(manifest_json: &[u8]) -> Vec<u8> {
    [SIGNING_CONTEXT, manifest_json].concat()
}

impl SignedManifest {
    /// Signs `manifest` (whose `module_sha256` the caller has set).
    pub fn sign(manifest: &Manifest, key: &SigningKey) -> Result<SignedManifest, PackageError> {
        manifest.validate().map_err(|e| PackageError::InvalidManifest(e.to_string()))?;
        let manifest_json =
            serde_json::to_vec_pretty(manifest).map_err(|e| PackageError::InvalidManifest(e.to_string()))?;
        if manifest_json.len() > MAX_PLUGIN_MANIFEST_BYTES {
            return Err(PackageError::InvalidManifest(format!("manifest exceeds {MAX_PLUGIN_MANIFEST_BYTES} bytes")));
        }
        let signature = key.sign(&signed_message(&manifest_json)).to_bytes().to_vec();
        Ok(SignedManifest { manifest_json, publisher: PublisherKey::of(key), signature })
    }

    /// Sizes only: what a replicated command checks before anything else.
    pub fn check_sizes(&self) -> Result<(), PackageError> {
        if self.manifest_json.len() > MAX_PLUGIN_MANIFEST_BYTES {
            return Err(PackageError::Malformed(format!("the manifest exceeds {MAX_PLUGIN_MANIFEST_BYTES} bytes")));
        }
        if self.signature.len() != SIGNATURE_BYTES {
            return Err(PackageError::Malformed(format!("a signature is {SIGNATURE_BYTES} bytes")));
        }
        Ok(())
    }

    /// Parses the manifest and checks the signature over its exact bytes.
    pub fn check_signature(&self) -> Result<Manifest, PackageError> {
        self.check_sizes()?;
        let manifest: Manifest = serde_json::from_slice(&self.manifest_json)
            .map_err(|e| PackageError::InvalidManifest(format!("not a manifest: {e}")))?;
        let key =
            VerifyingKey::from_bytes(&self.publisher.0).map_err(|_| PackageError::BadSignature(self.publisher))?;
        let signature: [u8; SIGNATURE_BYTES] =
            self.signature.as_slice().try_into().map_err(|_| PackageError::BadSignature(self.publisher))?;
        key.verify_strict(&signed_message(&self.manifest_json), &Signature::from_bytes(&signature))
            .map_err(|_| PackageError::BadSignature(self.publisher))?;
        Ok(manifest)
    }

    /// The checks after the signature and the module: manifest limits, a
    /// trusted publisher, expiry at `now_ms`.
    pub fn check_policy(
        &self,
        manifest: &Manifest,
        is_trusted: impl FnOnce(&PublisherKey) -> bool,
        now_ms: u64,
    ) -> Result<(), PackageError> {
        manifest.validate().map_err(|e| PackageError::InvalidManifest(e.to_string()))?;
        if !is_trusted(&self.publisher) {
            return Err(PackageError::Untrusted(self.publisher));
        }
        if let Some(expired_at_ms) = manifest.expires_at_ms {
            if now_ms >= expired_at_ms {
                return Err(PackageError::Expired { expired_at_ms, now_ms });
            }
        }
        Ok(())
    }

    /// The module's SHA-256 as the signed manifest states it.
    pub fn module_sha256(manifest: &Manifest) -> Result<[u8; 32], PackageError> {
        let bytes = hex::decode(&manifest.module_sha256)
            .map_err(|_| PackageError::InvalidManifest("module_sha256 is not hex".into()))?;
        bytes.try_into().map_err(|_| PackageError::InvalidManifest("module_sha256 is not 32 bytes".into()))
    }
}
