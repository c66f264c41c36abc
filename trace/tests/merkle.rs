//! The tree against RFC 6962's definition and Certificate Transparency's
//! published vectors, and its proofs against tampering.

use proptest::prelude::*;
use zeromesh_trace::merkle::{self, CompactRange, Hash, MemoryNodes, NodeId, NodeReader, ProofError};

/// The leaves of Certificate Transparency's reference tests.
const CT_LEAVES: [&str; 8] =
    ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"];
/// Their roots for sizes 0 to 8.
const CT_ROOTS: [&str; 9] = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];

fn h(text: &str) -> Hash {
    Hash::from_hex(text).unwrap()
}

fn ct_tree() -> (MemoryNodes, CompactRange) {
    let leaves: Vec<Hash> = CT_LEAVES.iter().map(|l| merkle::leaf_hash(&hex::decode(l).unwrap())).collect();
    MemoryNodes::from_leaves(&leaves)
}

/// MTH straight from RFC 6962 2.1, over all leaf hashes, for comparison.
fn reference_root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => merkle::empty_root(),
        1 => leaves[0],
        n => {
            let split = 1usize << (usize::BITS - 1 - (n - 1).leading_zeros());
            merkle::node_hash(&reference_root(&leaves[..split]), &reference_root(&leaves[split..]))
        }
    }
}

#[test]
fn roots_match_certificate_transparencys_vectors_at_every_size() {
    let (nodes, range) = ct_tree();
    for (size, expected) in CT_ROOTS.iter().enumerate() {
        assert_eq!(merkle::root(size as u64, &nodes).unwrap(), h(expected), "size {size}");
    }
    assert_eq!(range.root(), h(CT_ROOTS[8]));
}

#[test]
fn inclusion_and_consistency_proofs_match_certificate_transparencys_vectors() {
    let (nodes, _) = ct_tree();
    let inclusion = [
        (
            0,
            8,
            vec![
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            5,
            8,
            vec![
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
    ];
    for (index, size, expected) in inclusion {
        let path = merkle::inclusion_proof(index, size, &nodes).unwrap();
        assert_eq!(path, expected.iter().map(|e| h(e)).collect::<Vec<_>>(), "leaf {index} of {size}");
    }
    let consistency = [
        (1, 1, vec![]),
        (
            1,
            8,
            vec![
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            6,
            8,
            vec![
                "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
        (
            2,
            5,
            vec![
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ],
        ),
    ];
    for (old, new, expected) in consistency {
        let path = merkle::consistency_proof(old, new, &nodes).unwrap();
        assert_eq!(path, expected.iter().map(|e| h(e)).collect::<Vec<_>>(), "{old} to {new}");
        merkle::verify_consistency(old, new, &path, &h(CT_ROOTS[old as usize]), &h(CT_ROOTS[new as usize])).unwrap();
    }
}

#[test]
fn a_compact_range_loaded_from_stored_nodes_continues_the_same_tree() {
    let leaves: Vec<Hash> = (0..37u32).map(|i| merkle::leaf_hash(&i.to_be_bytes())).collect();
    let (mut nodes, _) = MemoryNodes::from_leaves(&leaves[..21]);
    let mut range = CompactRange::load(21, &nodes).unwrap();
    for leaf in &leaves[21..] {
        range.append(*leaf, |id, hash| {
            nodes.0.insert(id, hash);
        });
    }
    assert_eq!(range.root(), reference_root(&leaves));
    assert_eq!(merkle::root(37, &nodes).unwrap(), reference_root(&leaves));
    // About two nodes per leaf are stored.
    assert_eq!(nodes.0.len(), 37 + 18 + 9 + 4 + 2 + 1);
}

#[test]
fn a_missing_node_is_named() {
    let (mut nodes, _) = ct_tree();
    nodes.0.remove(&NodeId { level: 1, index: 2 });
    assert_eq!(merkle::root(7, &nodes), Err(ProofError::MissingNode { level: 1, index: 2 }));
    assert_eq!(nodes.node(NodeId { level: 0, index: 0 }).unwrap(), merkle::leaf_hash(b""));
}

#[test]
fn proofs_outside_the_tree_are_refused() {
    let (nodes, _) = ct_tree();
    assert_eq!(merkle::inclusion_proof(8, 8, &nodes), Err(ProofError::LeafOutOfRange { index: 8, size: 8 }));
    assert_eq!(merkle::consistency_proof(5, 3, &nodes), Err(ProofError::SizesOutOfOrder { old: 5, new: 3 }));
}

fn flip(hash: &Hash, bit: usize) -> Hash {
    let mut bytes = hash.0;
    bytes[bit / 8 % 32] ^= 1 << (bit % 8);
    Hash(bytes)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn every_inclusion_proof_verifies_and_any_altered_byte_fails(size in 1u64..200, pick in any::<u64>(), bit in 0usize..256) {
        let leaves: Vec<Hash> = (0..size).map(|i| merkle::leaf_hash(&i.to_le_bytes())).collect();
        let (nodes, range) = MemoryNodes::from_leaves(&leaves);
        let root = reference_root(&leaves);
        prop_assert_eq!(range.root(), root);
        let index = pick % size;
        let path = merkle::inclusion_proof(index, size, &nodes).unwrap();
        prop_assert!(merkle::verify_inclusion(index, size, &leaves[index as usize], &path, &root).is_ok());
        prop_assert!(merkle::verify_inclusion(index, size, &flip(&leaves[index as usize], bit), &path, &root).is_err());
        prop_assert!(merkle::verify_inclusion(index, size, &leaves[index as usize], &path, &flip(&root, bit)).is_err());
        for at in 0..path.len() {
            let mut altered = path.clone();
            altered[at] = flip(&altered[at], bit);
            prop_assert!(merkle::verify_inclusion(index, size, &leaves[index as usize], &altered, &root).is_err());
        }
        if size > 1 {
            let other = (index + 1) % size;
            prop_assert!(merkle::verify_inclusion(other, size, &leaves[index as usize], &path, &root).is_err());
        }
        let mut longer = path.clone();
        longer.push(root);
        prop_assert!(merkle::verify_inclusion(index, size, &leaves[index as usize], &longer, &root).is_err());
    }

    #[test]
    fn every_consistency_proof_verifies_and_any_altered_byte_fails(new in 1u64..200, pick in any::<u64>(), bit in 0usize..256) {
        let leaves: Vec<Hash> = (0..new).map(|i| merkle::leaf_hash(&i.to_le_bytes())).collect();
        let (nodes, _) = MemoryNodes::from_leaves(&leaves);
        let old = pick % (new + 1);
        let (old_root, new_root) = (reference_root(&leaves[..old as usize]), reference_root(&leaves));
        prop_assert_eq!(merkle::root(old, &nodes).unwrap(), old_root);
        let path = merkle::consistency_proof(old, new, &nodes).unwrap();
        prop_assert!(merkle::verify_consistency(old, new, &path, &old_root, &new_root).is_ok());
        if old > 0 && old < new {
            prop_assert!(merkle::verify_consistency(old, new, &path, &flip(&old_root, bit), &new_root).is_err());
            prop_assert!(merkle::verify_consistency(old, new, &path, &old_root, &flip(&new_root, bit)).is_err());
            for at in 0..path.len() {
                let mut altered = path.clone();
                altered[at] = flip(&altered[at], bit);
                prop_assert!(merkle::verify_consistency(old, new, &altered, &old_root, &new_root).is_err());
            }
            let mut shorter = path.clone();
            shorter.pop();
            prop_assert!(merkle::verify_consistency(old, new, &shorter, &old_root, &new_root).is_err());
        }
    }
}
