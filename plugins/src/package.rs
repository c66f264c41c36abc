//! Plugin package files: the signed manifest (the manifest carries the
//! module's SHA-256, so the signature covers the module too) and the WASM
//! module.
//!
//! Layout: magic `ZMPLUG01`; manifest length (u32, big-endian) and manifest
//! JSON; publisher public key (32 bytes); signature (64 bytes); module length
//! (u32) and module bytes; nothing after.

use ed25519_dalek::SigningKey;
use sha2::{Digest, Sha256};
use zeromesh_protocol::limits::{MAX_PLUGIN_MANIFEST_BYTES, MAX_PLUGIN_PACKAGE_BYTES};
use zeromesh_protocol::plugin::{Manifest, PackageError, PublisherKey, SignedManifest, SIGNATURE_BYTES};

const MAGIC: &[u8; 8] = b"ZMPLUG01";

/// A new random signing key for a publisher.
pub fn generate_signing_key() -> Result<SigningKey, getrandom::Error> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed)?;
    Ok(SigningKey::from_bytes(&seed))
}

/// A decoded, not yet verified, package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    signed: SignedManifest,
    module: Vec<u8>,
}

/// A package whose signature, module hash, manifest, trust and expiry were
/// all checked. Only this type can be loaded into the host.
#[derive(Debug, Clone)]
pub struct VerifiedPackage {
    pub manifest: Manifest,
    pub signed: SignedManifest,
    pub publisher: PublisherKey,
    /// SHA-256 of the module: its content address.
    pub module_sha256: [u8; 32],
    pub(crate) module: Vec<u8>,
}

impl VerifiedPackage {
    pub fn module(&self) -> &[u8] {
        &self.module
    }
}

/// SHA-256 of `bytes`: a module's content address.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

impl Package {
    /// Signs `manifest` together with `module`'s SHA-256.
    pub fn sign(module: Vec<u8>, mut manifest: Manifest, key: &SigningKey) -> Result<Package, PackageError> {
        manifest.module_sha256 = hex::encode(sha256(&module));
        let signed = SignedManifest::sign(&manifest, key)?;
        let package = Package { signed, module };
        if package.encoded_len() > MAX_PLUGIN_PACKAGE_BYTES {
            return Err(PackageError::Malformed(format!("the package would exceed {MAX_PLUGIN_PACKAGE_BYTES} bytes")));
        }
        Ok(package)
    }

    /// A package from a replicated signed manifest and a module fetched by
    /// its hash; `verify` checks that they belong together.
    pub fn from_parts(signed: SignedManifest, module: Vec<u8>) -> Package {
        Package { signed, module }
    }

    fn encoded_len(&self) -> usize {
        MAGIC.len() + 4 + self.signed.manifest_json.len() + 32 + SIGNATURE_BYTES + 4 + self.module.len()
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(self.signed.manifest_json.len() as u32).to_be_bytes());
        out.extend_from_slice(&self.signed.manifest_json);
        out.extend_from_slice(&self.signed.publisher.0);
        out.extend_from_slice(&self.signed.signature);
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
            rest.split_first_chunk::<SIGNATURE_BYTES>().ok_or_else(|| malformed("the signature is truncated"))?;
        let (module, rest) = take_prefixed(rest).ok_or_else(|| malformed("the module is truncated"))?;
        if !rest.is_empty() {
            return Err(malformed("bytes follow the module"));
        }
        Ok(Package {
            signed: SignedManifest {
                manifest_json: manifest_bytes.to_vec(),
                publisher: PublisherKey(*publisher),
                signature: signature.to_vec(),
            },
            module: module.to_vec(),
        })
    }

    pub fn publisher(&self) -> PublisherKey {
        self.signed.publisher
    }

    pub fn signed_manifest(&self) -> &SignedManifest {
        &self.signed
    }

    /// Runs every check, in order: manifest syntax, signature, module hash,
    /// manifest limits, trusted publisher, expiry.
    pub fn verify(&self, trusted: &[PublisherKey], now_ms: u64) -> Result<VerifiedPackage, PackageError> {
        let manifest = self.signed.check_signature()?;
        let module_sha256 = sha256(&self.module);
        if manifest.module_sha256 != hex::encode(module_sha256) {
            return Err(PackageError::ModuleTampered {
                expected: manifest.module_sha256.clone(),
                actual: hex::encode(module_sha256),
            });
        }
        self.signed.check_policy(&manifest, |key| trusted.contains(key), now_ms)?;
        Ok(VerifiedPackage {
            manifest,
            signed: self.signed.clone(),
            publisher: self.signed.publisher,
            module_sha256,
            module: self.module.clone(),
        })
    }
}

fn take_prefixed(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, rest) = bytes.split_first_chunk::<4>()?;
    let len = u32::from_be_bytes(*len) as usize;
    (rest.len() >= len).then(|| rest.split_at(len))
}
