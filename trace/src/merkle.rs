//! The RFC 6962 Merkle tree: leaf and node hashing (kept apart by a prefix
//! byte), the compact range that appends leaves with O(log n) memory, and
//! the tree's node hashes addressed by `(level, index)` so a store can keep
//! them and answer for any past size.
//!
//! A node at `(level, index)` is the hash of the complete subtree over
//! leaves `index * 2^level .. (index + 1) * 2^level`; level 0 holds the leaf
//! hashes. Appending leaf `n` creates the leaf node and one node for each
//! subtree that leaf completes; nothing is ever rewritten.

use sha2::{Digest, Sha256};

/// The largest tree: sizes are `u64` and levels fit in a byte.
pub const MAX_LEVELS: usize = 64;

/// A SHA-256 digest: a leaf hash, a node hash or a tree root.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Hash(pub [u8; 32]);

impl Hash {
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(text: &str) -> Result<Hash, String> {
        let bytes = hex::decode(text).map_err(|e| format!("not a hex hash: {e}"))?;
        let array: [u8; 32] =
            bytes.try_into().map_err(|bytes: Vec<u8>| format!("a hash is 32 bytes, not {}", bytes.len()))?;
        Ok(Hash(array))
    }
}

impl std::fmt::Debug for Hash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.to_hex())
    }
}

impl std::fmt::Display for Hash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.to_hex())
    }
}

impl From<Hash> for String {
    fn from(hash: Hash) -> String {
        hash.to_hex()
    }
}

impl TryFrom<String> for Hash {
    type Error = String;

    fn try_from(text: String) -> Result<Hash, String> {
        Hash::from_hex(&text)
    }
}

/// The hash of a leaf holding `data`: SHA-256(0x00 || data).
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([0u8]);
    hasher.update(data);
    Hash(hasher.finalize().into())
}

/// The hash of an interior node: SHA-256(0x01 || left || right).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([1u8]);
    hasher.update(left.0);
    hasher.update(right.0);
    Hash(hasher.finalize().into())
}

/// The root of the empty tree: SHA-256 of nothing.
pub fn empty_root() -> Hash {
    Hash(Sha256::digest([]).into())
}

/// Where a stored node sits: the complete subtree of `2^level` leaves
/// starting at leaf `index << level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct NodeId {
    pub level: u8,
    pub index: u64,
}

/// Why a proof could not be built or did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("leaf {index} is not in a tree of {size} leaves")]
    LeafOutOfRange { index: u64, size: u64 },
    #[error("a tree of {old} leaves is not a prefix of one of {new} leaves")]
    SizesOutOfOrder { old: u64, new: u64 },
    #[error("the proof has {got} hashes where a tree of this shape needs {expected}")]
    WrongLength { got: usize, expected: usize },
    #[error("the proof leads to root {computed}, not the expected {expected}")]
    RootMismatch { computed: Hash, expected: Hash },
    #[error("the proof leads to old root {computed}, not the expected {expected}")]
    OldRootMismatch { computed: Hash, expected: Hash },
    #[error("node {level}/{index} is missing from the store")]
    MissingNode { level: u8, index: u64 },
    #[error("reading node {level}/{index}: {reason}")]
    Read { level: u8, index: u64, reason: String },
}

/// Reads stored complete-subtree hashes. Implemented by the store that
/// keeps them (RocksDB in a node, a map in tests).
pub trait NodeReader {
    /// The hash of node `id`; `Err(MissingNode)` when it is not stored.
    fn node(&self, id: NodeId) -> Result<Hash, ProofError>;
}

/// The right edge of a tree: the roots of its maximal complete subtrees,
/// largest (leftmost) first, one per set bit of the size. Enough to append
/// leaves and compute the root; at most [`MAX_LEVELS`] hashes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CompactRange {
    size: u64,
    /// `(level, hash)`, levels strictly decreasing.
    peaks: Vec<(u8, Hash)>,
}

impl CompactRange {
    /// The compact range of the tree of `size` leaves, read from `reader`.
    pub fn load(size: u64, reader: &impl NodeReader) -> Result<CompactRange, ProofError> {
        let mut peaks = Vec::with_capacity(size.count_ones() as usize);
        for (level, start) in peaks_of(size) {
            let hash = reader.node(NodeId { level, index: start >> level })?;
            peaks.push((level, hash));
        }
        Ok(CompactRange { size, peaks })
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends the leaf whose hash is `leaf`, calling `store` with every
    /// node the append creates: the leaf itself, then each subtree it
    /// completes, bottom up.
    pub fn append(&mut self, leaf: Hash, mut store: impl FnMut(NodeId, Hash)) {
        let index = self.size;
        self.size = self.size.checked_add(1).expect("a trace tree cannot hold 2^64 leaves");
        store(NodeId { level: 0, index }, leaf);
        let mut level = 0u8;
        let mut hash = leaf;
        while let Some(&(peak_level, peak)) = self.peaks.last() {
            if peak_level != level {
                break;
            }
            self.peaks.pop();
            hash = node_hash(&peak, &hash);
            level += 1;
            store(NodeId { level, index: index >> level }, hash);
        }
        self.peaks.push((level, hash));
        debug_assert_eq!(self.peaks.len(), self.size.count_ones() as usize);
    }

    /// The root of the tree this range describes.
    pub fn root(&self) -> Hash {
        fold_peaks(self.peaks.iter().map(|(_, hash)| *hash))
    }
}

/// The maximal complete subtrees of a tree of `size` leaves, left to right,
/// as `(level, first leaf)`.
fn peaks_of(size: u64) -> impl Iterator<Item = (u8, u64)> {
    let mut start = 0u64;
    (0..MAX_LEVELS as u8).rev().filter(move |level| size & (1u64 << level) != 0).map(move |level| {
        let peak = (level, start);
        start += 1u64 << level;
        peak
    })
}

/// The root over subtree hashes, left to right: each joins everything to its
/// right (RFC 6962's split puts the largest power of two on the left).
fn fold_peaks(peaks: impl DoubleEndedIterator<Item = Hash>) -> Hash {
    let mut peaks = peaks.rev();
    let Some(mut root) = peaks.next() else {
        return empty_root();
    };
    for left in peaks {
        root = node_hash(&left, &root);
    }
    root
}

/// The root of the tree of the first `size` leaves (any past size).
pub fn root(size: u64, reader: &impl NodeReader) -> Result<Hash, ProofError> {
    if size == 0 {
        return Ok(empty_root());
    }
    subtree(0, size, reader)
}

/// The largest power of two strictly below `n` (n > 1).
fn split_point(n: u64) -> u64 {
    debug_assert!(n > 1);
    1u64 << (63 - (n - 1).leading_zeros())
}

/// MTH(D[start..end]) as RFC 6962 defines it. `start` is aligned to the
/// subtree sizes the recursion produces, so every complete piece is stored.
fn subtree(start: u64, end: u64, reader: &impl NodeReader) -> Result<Hash, ProofError> {
    let count = end - start;
    debug_assert!(count > 0);
    if count.is_power_of_two() {
        let level = count.trailing_zeros() as u8;
        debug_assert_eq!(start % count, 0, "complete subtrees in RFC 6962's recursion are aligned");
        return reader.node(NodeId { level, index: start >> level });
    }
    let split = split_point(count);
    Ok(node_hash(&subtree(start, start + split, reader)?, &subtree(start + split, end, reader)?))
}

/// The audit path of leaf `index` in the tree of `size` leaves (RFC 6962
/// 2.1.1), bottom up.
pub fn inclusion_proof(index: u64, size: u64, reader: &impl NodeReader) -> Result<Vec<Hash>, ProofError> {
    if index >= size {
        return Err(ProofError::LeafOutOfRange { index, size });
    }
    let mut path = Vec::new();
    inclusion_path(index, 0, size, reader, &mut path)?;
    Ok(path)
}

fn inclusion_path(
    index: u64,
    start: u64,
    end: u64,
    reader: &impl NodeReader,
    path: &mut Vec<Hash>,
) -> Result<(), ProofError> {
    let count = end - start;
    if count == 1 {
        return Ok(());
    }
    let split = split_point(count);
    if index < split {
        inclusion_path(index, start, start + split, reader, path)?;
        path.push(subtree(start + split, end, reader)?);
    } else {
        inclusion_path(index - split, start + split, end, reader, path)?;
        path.push(subtree(start, start + split, reader)?);
    }
    Ok(())
}

/// The proof that the tree of `old` leaves is a prefix of the tree of `new`
/// leaves (RFC 6962 2.1.2). Empty when the sizes are equal or `old` is 0.
pub fn consistency_proof(old: u64, new: u64, reader: &impl NodeReader) -> Result<Vec<Hash>, ProofError> {
    if old > new {
        return Err(ProofError::SizesOutOfOrder { old, new });
    }
    let mut path = Vec::new();
    if old > 0 && old < new {
        consistency_path(old, 0, new, true, reader, &mut path)?;
    }
    Ok(path)
}

fn consistency_path(
    old: u64,
    start: u64,
    end: u64,
    whole_old_tree: bool,
    reader: &impl NodeReader,
    path: &mut Vec<Hash>,
) -> Result<(), ProofError> {
    let count = end - start;
    if old == count {
        if !whole_old_tree {
            path.push(subtree(start, end, reader)?);
        }
        return Ok(());
    }
    let split = split_point(count);
    if old <= split {
        consistency_path(old, start, start + split, whole_old_tree, reader, path)?;
        path.push(subtree(start + split, end, reader)?);
    } else {
        consistency_path(old - split, start + split, end, false, reader, path)?;
        path.push(subtree(start, start + split, reader)?);
    }
    Ok(())
}

/// Checks that `leaf` is leaf `index` of the tree of `size` leaves whose
/// root is `root` (RFC 9162 2.1.3.2).
pub fn verify_inclusion(index: u64, size: u64, leaf: &Hash, path: &[Hash], root: &Hash) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::LeafOutOfRange { index, size });
    }
    let expected = inclusion_length(index, size);
    if path.len() != expected {
        return Err(ProofError::WrongLength { got: path.len(), expected });
    }
    let (mut position, mut last) = (index, size - 1);
    let mut computed = *leaf;
    for sibling in path {
        if position & 1 == 1 || position == last {
            computed = node_hash(sibling, &computed);
            while position & 1 == 0 && position != 0 {
                position >>= 1;
                last >>= 1;
            }
        } else {
            computed = node_hash(&computed, sibling);
        }
        position >>= 1;
        last >>= 1;
    }
    debug_assert_eq!(last, 0, "a path of the expected length climbs to the root");
    if computed != *root {
        return Err(ProofError::RootMismatch { computed, expected: *root });
    }
    Ok(())
}

/// How many hashes the audit path of leaf `index` in a tree of `size` has:
/// one per split on the way down from the root to the leaf.
fn inclusion_length(index: u64, size: u64) -> usize {
    let (mut index, mut count, mut length) = (index, size, 0);
    while count > 1 {
        let split = split_point(count);
        if index < split {
            count = split;
        } else {
            index -= split;
            count -= split;
        }
        length += 1;
    }
    length
}

/// Checks that the tree of `old` leaves with root `old_root` is a prefix of
/// the tree of `new` leaves with root `new_root` (RFC 9162 2.1.4.2).
pub fn verify_consistency(
    old: u64,
    new: u64,
    path: &[Hash],
    old_root: &Hash,
    new_root: &Hash,
) -> Result<(), ProofError> {
    if old > new {
        return Err(ProofError::SizesOutOfOrder { old, new });
    }
    if old == new || old == 0 {
        if !path.is_empty() {
            return Err(ProofError::WrongLength { got: path.len(), expected: 0 });
        }
        if old == new && old_root != new_root {
            return Err(ProofError::RootMismatch { computed: *old_root, expected: *new_root });
        }
        return Ok(());
    }
    if path.is_empty() {
        return Err(ProofError::WrongLength { got: 0, expected: 1 });
    }
    let mut hashes: Vec<Hash> = Vec::with_capacity(path.len() + 1);
    if old.is_power_of_two() {
        hashes.push(*old_root);
    }
    hashes.extend_from_slice(path);
    let (mut position, mut last) = (old - 1, new - 1);
    while position & 1 == 1 {
        position >>= 1;
        last >>= 1;
    }
    let (mut old_computed, mut new_computed) = (hashes[0], hashes[0]);
    for hash in &hashes[1..] {
        if last == 0 {
            return Err(ProofError::WrongLength { got: path.len(), expected: path.len() - 1 });
        }
        if position & 1 == 1 || position == last {
            old_computed = node_hash(hash, &old_computed);
            new_computed = node_hash(hash, &new_computed);
            while position & 1 == 0 && position != 0 {
                position >>= 1;
                last >>= 1;
            }
        } else {
            new_computed = node_hash(&new_computed, hash);
        }
        position >>= 1;
        last >>= 1;
    }
    if last != 0 {
        return Err(ProofError::WrongLength { got: path.len(), expected: path.len() + 1 });
    }
    if old_computed != *old_root {
        return Err(ProofError::OldRootMismatch { computed: old_computed, expected: *old_root });
    }
    if new_computed != *new_root {
        return Err(ProofError::RootMismatch { computed: new_computed, expected: *new_root });
    }
    Ok(())
}

/// A [`NodeReader`] over a map, for tests and for trees built in memory.
#[derive(Debug, Clone, Default)]
pub struct MemoryNodes(pub std::collections::BTreeMap<NodeId, Hash>);

impl NodeReader for MemoryNodes {
    fn node(&self, id: NodeId) -> Result<Hash, ProofError> {
        self.0.get(&id).copied().ok_or(ProofError::MissingNode { level: id.level, index: id.index })
    }
}

impl MemoryNodes {
    /// A tree of the given leaf hashes, every node stored.
    pub fn from_leaves(leaves: &[Hash]) -> (MemoryNodes, CompactRange) {
        let mut nodes = MemoryNodes::default();
        let mut range = CompactRange::default();
        for leaf in leaves {
            range.append(*leaf, |id, hash| {
                nodes.0.insert(id, hash);
            });
        }
        (nodes, range)
    }
}
