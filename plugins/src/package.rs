//! Plugin package files: the manifest, the publisher's ed25519 signature over
//! it (the manifest carries the module's SHA-256, so the signature covers the
//! module too) and the WASM module.
//!
//! Layout: magic `ZMPLUG01`; manifest length (u32, big-endian) and manifest
//! JSON; publisher public key (32 bytes); signature (64 bytes); module length
//! (u32) and module bytes; nothing after.

use std::fmt;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use thiserror::Error;
use zeromesh_protocol::limits::{MAX_PLUGIN_MANIFEST_BYTES, MAX_PLUGIN_PACKAGE_BYTES};

use crate::manifest::Manifest;

const MAGIC: &[u8; 8] = b"ZMPLUG01";
/// Domain separation: a zeromesh plugin signature can never be mistaken for
/// a signature over anything else.
const SIGNING_CONTEXT: &[u8] = b"zeromesh-plugin-manifest-v1\0";

/// Why a package was refused. Each variant names the check that failed.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PackageError {
    #[error("not a valid plugin package: {0}")]
    Malformed(String),
    #[error("invalid manifest: {0}")]
    InvalidManifest(String),
    #[error("signature check failed: the manifest is not signed by publisher key {0}, or was changed after signing")]
    BadSignature(PublisherKey),
    #[error("module check failed: its SHA-256 is {actual}, the signed manifest says {expected}; the module was changed after signing")]
    ModuleTampered { expected: String, actual: String },
    #[error("trust check failed: publisher key {0} is not in this node's trusted set")]
    Untrusted(PublisherKey),
    #[error("expiry check failed: the package expired at {expired_at_ms} ms (now {now_ms} ms)")]
    Expired { expired_at_ms: u64, now_ms: u64 },
}

/// A publisher's ed25519 public key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
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

/// A new random signing key for a publisher.
pub fn generate_signing_key() -> Result<SigningKey, getrandom::Error> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed)?;
    Ok(SigningKey::from_bytes(&seed))
}

/// A decoded, not yet verified, package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    manifest_bytes: Vec<u8>,
    publisher: PublisherKey,
    signature: [u8; 64],
    module: Vec<u8>,
}

/// A package whose signature, module hash, manifest, trust and expiry were
/// all checked. Only this type can be loaded into the host.
#[derive(Debug, Clone)]
pub struct VerifiedPackage {
    pub manifest: Manifest,
    pub publisher: PublisherKey,
    /// SHA-256 of the module: its content address.
    pub module_sha256: [u8; 32],
    pub(crate) module: Vec<u8>,
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn signed_message(manifest_bytes: &[u8]) -> Vec<u8> {
    [SIGNING_CONTEXT, manifest_bytes].concat()
}

impl Package {
    /// Signs `manifest` together with `module`'s SHA-256.
    pub fn sign(module: Vec<u8>, mut manifest: Manifest, key: &SigningKey) -> Result<Package, PackageError> {
        manifest.module_sha256 = hex::encode(sha256(&module));
        manifest.validate().map_err(|e| PackageError::InvalidManifest(e.to_string()))?;
        let manifest_bytes =
            serde_json::to_vec_pretty(&manifest).map_err(|e| PackageError::InvalidManifest(e.to_string()))?;
        if manifest_bytes.len() > MAX_PLUGIN_MANIFEST_BYTES {
            return Err(PackageError::InvalidManifest(format!("manifest exceeds {MAX_PLUGIN_MANIFEST_BYTES} bytes")));
        }
        let signature = key.sign(&signed_message(&manifest_bytes)).to_bytes();
        let package = Package { manifest_bytes, publisher: PublisherKey::of(key), signature, module };
        if package.encoded_len() > MAX_PLUGIN_PACKAGE_BYTES {
            return Err(PackageError::Malformed(format!("the package would exceed {MAX_PLUGIN_PACKAGE_BYTES} bytes")));
        }
        Ok(package)
    }

    fn encoded_len(&self) -> usize {
        MAGIC.len() + 4 + self.manifest_bytes.len() + 32 + 64 + 4 + self.module.len()
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(self.manifest_bytes.len() as u32).to_be_bytes());
        out.extend_from_slice(&self.manifest_bytes);
        out.extend_from_slice(&self.publisher.0);
        out.extend_from_slice(&self.signature);
        out.extend_from_slice(&(self.module.len() as u32).to_be_bytes());
        out.extend_from_slice(&self.module);
        out
    }

    /// Decodes a package file, checking its structure and sizes only.
    pub fn decode(bytes: &[u8]) -> Result<Package, PackageError> {
        let malformed = |reason: &str| PackageError::Malformed(reason.to_owned());
        if bytes.len() > MAX_PLUGIN_PACKAGE_BYTES {
            return Err(PackageError::Malformed(format!(
                "{} bytes exceeds the {MAX_PLUGIN_PACKAGE_BYTES}-byte limit",
                bytes.len()
            )));
        }
        let rest = bytes
            .strip_prefix(MAGIC.as_slice())
            .ok_or_else(|| malformed("it does not start with the plugin package magic"))?;
        let (manifest_bytes, rest) = take_prefixed(rest).ok_or_else(|| malformed("the manifest is truncated"))?;
        if manifest_bytes.len() > MAX_PLUGIN_MANIFEST_BYTES {
            return Err(PackageError::Malformed(format!("the manifest exceeds {MAX_PLUGIN_MANIFEST_BYTES} bytes")));
        }
        let (publisher, rest) =
            rest.split_first_chunk::<32>().ok_or_else(|| malformed("the publisher key is truncated"))?;
        let (signature, rest) =
            rest.split_first_chunk::<64>().ok_or_else(|| malformed("the signature is truncated"))?;
        let (module, rest) = take_prefixed(rest).ok_or_else(|| malformed("the module is truncated"))?;
        if !rest.is_empty() {
            return Err(malformed("bytes follow the module"));
        }
        Ok(Package {
            manifest_bytes: manifest_bytes.to_vec(),
            publisher: PublisherKey(*publisher),
            signature: *signature,
            module: module.to_vec(),
        })
    }

    pub fn publisher(&self) -> PublisherKey {
        self.publisher
    }

    /// Runs every check, in order: manifest syntax, signature, module hash,
    /// manifest limits, trusted publisher, expiry.
    pub fn verify(&self, trusted: &[PublisherKey], now_ms: u64) -> Result<VerifiedPackage, PackageError> {
        let manifest: Manifest = serde_json::from_slice(&self.manifest_bytes)
            .map_err(|e| PackageError::InvalidManifest(format!("not a manifest: {e}")))?;
        let key =
            VerifyingKey::from_bytes(&self.publisher.0).map_err(|_| PackageError::BadSignature(self.publisher))?;
        key.verify_strict(&signed_message(&self.manifest_bytes), &Signature::from_bytes(&self.signature))
            .map_err(|_| PackageError::BadSignature(self.publisher))?;
        let module_sha256 = sha256(&self.module);
        if manifest.module_sha256 != hex::encode(module_sha256) {
            return Err(PackageError::ModuleTampered {
                expected: manifest.module_sha256.clone(),
                actual: hex::encode(module_sha256),
            });
        }
        manifest.validate().map_err(|e| PackageError::InvalidManifest(e.to_string()))?;
        if !trusted.contains(&self.publisher) {
            return Err(PackageError::Untrusted(self.publisher));
        }
        if let Some(expired_at_ms) = manifest.expires_at_ms {
            if now_ms >= expired_at_ms {
                return Err(PackageError::Expired { expired_at_ms, now_ms });
            }
        }
        Ok(VerifiedPackage { manifest, publisher: self.publisher, module_sha256, module: self.module.clone() })
    }
}

fn take_prefixed(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, rest) = bytes.split_first_chunk::<4>()?;
    let len = u32::from_be_bytes(*len) as usize;
    (rest.len() >= len).then(|| rest.split_at(len))
}
