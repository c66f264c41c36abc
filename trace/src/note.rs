//! C2SP signed notes (c2sp.org/signed-note): a UTF-8 text, a blank line,
//! then one line per signature, `— <key name> <base64(key id || sig)>`.
//! Only Ed25519 keys (signature type 0x01) are made here; signatures by
//! keys a verifier does not know are carried along and ignored.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use sha2::{Digest, Sha256};

/// The largest note accepted, text and signatures together, in bytes.
pub const MAX_NOTE_BYTES: usize = 64 * 1024;
/// Most signature lines one note may carry.
pub const MAX_NOTE_SIGNATURES: usize = 64;
/// Longest key name, in bytes.
pub const MAX_KEY_NAME_BYTES: usize = 256;

const SIGNATURE_PREFIX: &str = "\u{2014} ";
const ED25519_TYPE: u8 = 0x01;

/// Why a note, a key or a signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    #[error("the note is {0} bytes, more than the {MAX_NOTE_BYTES} allowed")]
    TooLarge(usize),
    #[error("malformed note: {0}")]
    Malformed(String),
    #[error("malformed verifier key: {0}")]
    BadKey(String),
    #[error("the signature by {name} does not verify: the note or the signature was altered")]
    BadSignature { name: String },
    #[error("{got} of the listed keys signed, {needed} needed")]
    NotEnoughSignatures { got: usize, needed: usize },
}

/// The 4-byte id of an Ed25519 key named `name`.
pub fn key_id(name: &str, key: &VerifyingKey) -> u32 {
    let mut hasher = Sha256::new();
    hasher.update(name.as_bytes());
    hasher.update(b"\n");
    hasher.update([ED25519_TYPE]);
    hasher.update(key.as_bytes());
    let digest = hasher.finalize();
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}

fn check_name(name: &str) -> Result<(), NoteError> {
    if name.is_empty() || name.len() > MAX_KEY_NAME_BYTES {
        return Err(NoteError::BadKey(format!("a key name has 1 to {MAX_KEY_NAME_BYTES} bytes")));
    }
    if name.chars().any(|c| c.is_whitespace() || c == '+' || c.is_control()) {
        return Err(NoteError::BadKey(format!("key name {name:?} holds a space, a '+' or a control character")));
    }
    Ok(())
}

/// A public key that checks signatures, with its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteVerifier {
    pub name: String,
    pub key: VerifyingKey,
}

impl NoteVerifier {
    pub fn new(name: &str, key: VerifyingKey) -> Result<NoteVerifier, NoteError> {
        check_name(name)?;
        Ok(NoteVerifier { name: name.to_owned(), key })
    }

    pub fn id(&self) -> u32 {
        key_id(&self.name, &self.key)
    }

    /// The verifier key text: `<name>+<hex key id>+<base64(0x01 || key)>`.
    pub fn encode(&self) -> String {
        let mut typed = vec![ED25519_TYPE];
        typed.extend_from_slice(self.key.as_bytes());
        format!("{}+{:08x}+{}", self.name, self.id(), BASE64.encode(typed))
    }

    /// Parses a verifier key text, checking that its id matches its key.
    pub fn parse(text: &str) -> Result<NoteVerifier, NoteError> {
        let text = text.trim();
        let mut parts = text.splitn(3, '+');
        let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(NoteError::BadKey("expected <name>+<key id>+<key>".into()));
        };
        check_name(name)?;
        let id = u32::from_str_radix(id, 16)
            .ok()
            .filter(|_| id.len() == 8)
            .ok_or_else(|| NoteError::BadKey(format!("key id {id:?} is not 8 hex digits")))?;
        let typed = BASE64.decode(key).map_err(|e| NoteError::BadKey(format!("key is not base64: {e}")))?;
        let Some((&ED25519_TYPE, raw)) = typed.split_first() else {
            return Err(NoteError::BadKey("only Ed25519 keys (type 0x01) are supported".into()));
        };
        let raw: [u8; 32] =
            raw.try_into().map_err(|_| NoteError::BadKey(format!("an Ed25519 key is 32 bytes, not {}", raw.len())))?;
        let key =
            VerifyingKey::from_bytes(&raw).map_err(|e| NoteError::BadKey(format!("not an Ed25519 point: {e}")))?;
        let verifier = NoteVerifier { name: name.to_owned(), key };
        if verifier.id() != id {
            return Err(NoteError::BadKey(format!("key id {id:08x} does not match the key")));
        }
        Ok(verifier)
    }
}

/// One signature line of a note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteSignature {
    pub name: String,
    pub key_id: u32,
    /// The signature bytes after the key id (64 for Ed25519).
    pub signature: Vec<u8>,
}

impl NoteSignature {
    fn line(&self) -> String {
        let mut bytes = self.key_id.to_be_bytes().to_vec();
        bytes.extend_from_slice(&self.signature);
        format!("{SIGNATURE_PREFIX}{} {}\n", self.name, BASE64.encode(bytes))
    }

    fn parse_line(line: &str) -> Result<NoteSignature, NoteError> {
        let rest = line
            .strip_prefix(SIGNATURE_PREFIX)
            .ok_or_else(|| NoteError::Malformed(format!("signature line {line:?} does not start with '\u{2014} '")))?;
        let (name, encoded) =
            rest.split_once(' ').ok_or_else(|| NoteError::Malformed(format!("signature line {line:?} has no key")))?;
        check_name(name).map_err(|e| NoteError::Malformed(e.to_string()))?;
        let bytes =
            BASE64.decode(encoded).map_err(|e| NoteError::Malformed(format!("signature is not base64: {e}")))?;
        if bytes.len() < 5 {
            return Err(NoteError::Malformed(format!("signature by {name} is too short")));
        }
        let key_id = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        Ok(NoteSignature { name: name.to_owned(), key_id, signature: bytes[4..].to_vec() })
    }
}

/// Signs `text` (a note's text, ending in a newline) as key `name`.
pub fn sign(text: &str, name: &str, key: &SigningKey) -> Result<NoteSignature, NoteError> {
    check_text(text)?;
    check_name(name)?;
    let signature = key.sign(text.as_bytes());
    Ok(NoteSignature {
        name: name.to_owned(),
        key_id: key_id(name, &key.verifying_key()),
        signature: signature.to_bytes().to_vec(),
    })
}

fn check_text(text: &str) -> Result<(), NoteError> {
    if !text.ends_with('\n') {
        return Err(NoteError::Malformed("the text does not end with a newline".into()));
    }
    if text.chars().any(|c| c.is_control() && c != '\n') {
        return Err(NoteError::Malformed("the text holds a control character".into()));
    }
    if text.contains("\n\n") {
        return Err(NoteError::Malformed("the text holds a blank line".into()));
    }
    Ok(())
}

/// A note: its text and its signatures, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub text: String,
    pub signatures: Vec<NoteSignature>,
}

impl Note {
    pub fn new(text: &str) -> Result<Note, NoteError> {
        check_text(text)?;
        Ok(Note { text: text.to_owned(), signatures: Vec::new() })
    }

    /// Adds a signature unless one by the same key is already there.
    pub fn add(&mut self, signature: NoteSignature) -> Result<(), NoteError> {
        if self.signatures.iter().any(|s| s.name == signature.name && s.key_id == signature.key_id) {
            return Ok(());
        }
        if self.signatures.len() == MAX_NOTE_SIGNATURES {
            return Err(NoteError::Malformed(format!("more than {MAX_NOTE_SIGNATURES} signatures")));
        }
        self.signatures.push(signature);
        Ok(())
    }

    /// The note as text: the text, a blank line, the signature lines.
    pub fn encode(&self) -> String {
        let mut out = self.text.clone();
        out.push('\n');
        for signature in &self.signatures {
            out.push_str(&signature.line());
        }
        out
    }

    /// Parses a signed note, refusing anything oversized or malformed.
    pub fn parse(encoded: &str) -> Result<Note, NoteError> {
        if encoded.len() > MAX_NOTE_BYTES {
            return Err(NoteError::TooLarge(encoded.len()));
        }
        let split = encoded
            .rfind("\n\n")
            .ok_or_else(|| NoteError::Malformed("no blank line between the text and the signatures".into()))?;
        let (text, signatures) = (&encoded[..split + 1], &encoded[split + 2..]);
        check_text(text)?;
        if !signatures.ends_with('\n') {
            return Err(NoteError::Malformed("the last signature line does not end with a newline".into()));
        }
        let mut note = Note::new(text)?;
        for line in signatures.lines() {
            if note.signatures.len() == MAX_NOTE_SIGNATURES {
                return Err(NoteError::Malformed(format!("more than {MAX_NOTE_SIGNATURES} signatures")));
            }
            note.signatures.push(NoteSignature::parse_line(line)?);
        }
        if note.signatures.is_empty() {
            return Err(NoteError::Malformed("the note has no signature".into()));
        }
        Ok(note)
    }

    /// Checks every signature made by one of `verifiers` and returns the
    /// names of those that signed. A signature by a listed key that does not
    /// verify fails the whole note; signatures by other keys are ignored.
    pub fn verified_by(&self, verifiers: &[NoteVerifier]) -> Result<Vec<String>, NoteError> {
        let mut signed = Vec::new();
        for signature in &self.signatures {
            let Some(verifier) = verifiers.iter().find(|v| v.name == signature.name && v.id() == signature.key_id)
            else {
                continue;
            };
            let bytes: [u8; 64] = signature
                .signature
                .as_slice()
                .try_into()
                .map_err(|_| NoteError::BadSignature { name: signature.name.clone() })?;
            verifier
                .key
                .verify(self.text.as_bytes(), &Signature::from_bytes(&bytes))
                .map_err(|_| NoteError::BadSignature { name: signature.name.clone() })?;
            if !signed.contains(&signature.name) {
                signed.push(signature.name.clone());
            }
        }
        Ok(signed)
    }

    /// Checks that at least `needed` of `verifiers` signed, and that no
    /// signature by one of them is bad.
    pub fn verify_quorum(&self, verifiers: &[NoteVerifier], needed: usize) -> Result<Vec<String>, NoteError> {
        let signed = self.verified_by(verifiers)?;
        if signed.len() < needed {
            return Err(NoteError::NotEnoughSignatures { got: signed.len(), needed });
        }
        Ok(signed)
    }
}
