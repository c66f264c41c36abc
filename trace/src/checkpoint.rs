//! Checkpoints in the C2SP tlog-checkpoint format: the log's origin, its
//! size and its root, as the text of a signed note that the voters cosign.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;

use crate::merkle::Hash;
use crate::note::{Note, NoteError, NoteVerifier};

/// Longest origin line, in bytes.
pub const MAX_ORIGIN_BYTES: usize = 256;

/// A tree head: the log `origin` had `size` leaves with root `root`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
}

impl Checkpoint {
    /// The checkpoint body: three lines, each ending in a newline.
    pub fn body(&self) -> String {
        format!("{}\n{}\n{}\n", self.origin, self.size, BASE64.encode(self.root.0))
    }

    /// Parses a checkpoint body; extension lines after the root are refused
    /// (zeromesh writes none).
    pub fn parse_body(text: &str) -> Result<Checkpoint, NoteError> {
        let bad = |what: &str| NoteError::Malformed(format!("checkpoint: {what}"));
        let mut lines = text.split_terminator('\n');
        let origin = lines.next().filter(|o| !o.is_empty()).ok_or_else(|| bad("no origin line"))?;
        if origin.len() > MAX_ORIGIN_BYTES {
            return Err(bad("origin too long"));
        }
        let size_line = lines.next().ok_or_else(|| bad("no size line"))?;
        if size_line.is_empty() || (size_line.len() > 1 && size_line.starts_with('0')) {
            return Err(bad("the size is not a decimal number without leading zeros"));
        }
        let size: u64 = size_line.parse().map_err(|_| bad("the size is not a decimal number"))?;
        let root_line = lines.next().ok_or_else(|| bad("no root line"))?;
        let root = BASE64.decode(root_line).map_err(|_| bad("the root is not base64"))?;
        let root: [u8; 32] = root.try_into().map_err(|_| bad("the root is not 32 bytes"))?;
        if lines.next().is_some() {
            return Err(bad("unexpected extension lines"));
        }
        if !text.ends_with('\n') {
            return Err(bad("the body does not end with a newline"));
        }
        Ok(Checkpoint { origin: origin.to_owned(), size, root: Hash(root) })
    }
}

/// A checkpoint as a signed note, with whatever cosignatures it gathered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCheckpoint {
    pub checkpoint: Checkpoint,
    pub note: Note,
}

impl SignedCheckpoint {
    pub fn unsigned(checkpoint: Checkpoint) -> Result<SignedCheckpoint, NoteError> {
        let note = Note::new(&checkpoint.body())?;
        Ok(SignedCheckpoint { checkpoint, note })
    }

    pub fn parse(encoded: &str) -> Result<SignedCheckpoint, NoteError> {
        let note = Note::parse(encoded)?;
        let checkpoint = Checkpoint::parse_body(&note.text)?;
        Ok(SignedCheckpoint { checkpoint, note })
    }

    pub fn encode(&self) -> String {
        self.note.encode()
    }

    /// Checks that a majority of `voters` cosigned it: more than half of
    /// them, with no bad signature by any of them.
    pub fn verify(&self, voters: &[NoteVerifier]) -> Result<Vec<String>, NoteError> {
        self.note.verify_quorum(voters, majority(voters.len()))
    }
}

/// How many of `voters` make a majority.
pub fn majority(voters: usize) -> usize {
    voters / 2 + 1
}
