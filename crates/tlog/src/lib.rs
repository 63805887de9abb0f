//! Transparency-log primitives shared by audit-svc (which stores the tree) and the SDK (which
//! verifies what audit-svc serves):
//! - RFC 9162 §2.1 Merkle tree hashing: leaf `SHA-256(0x00 || leaf)`, node `SHA-256(0x01 || l || r)`;
//! - tree roots, inclusion proofs (§2.1.3) and consistency proofs (§2.1.4), generated over a
//!   [`NodeSource`] of stored complete subtrees and verified from hashes alone;
//! - appending leaves to a stored tree ([`append`]), touching only the right edge;
//! - [`checkpoint`]: C2SP tlog-checkpoint bodies in C2SP signed notes with Ed25519 signatures.
//!
//! Every stored node is the root of a *complete* subtree: [`NodeId`] `(level, index)` covers leaves
//! `[index << level, (index + 1) << level)`. Once written it never changes, so a tree of any size
//! is described by at most `log2(n) + 1` of them, and a proof reads `O(log n)` of them.

pub mod checkpoint;

use std::collections::HashMap;

use sha2::{Digest, Sha256};

/// A SHA-256 hash.
pub type Hash = [u8; 32];

/// The position of a complete subtree: `level` 0 is a leaf; `index` counts subtrees of that size
/// from the left.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId {
    pub level: u8,
    pub index: u64,
}

impl NodeId {
    pub const fn new(level: u8, index: u64) -> Self {
        Self { level, index }
    }

    /// The first leaf the subtree covers.
    pub fn start(self) -> u64 {
        self.index.checked_shl(u32::from(self.level)).unwrap_or(u64::MAX)
    }
}

/// Why a proof or tree operation failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TlogError {
    #[error("leaf index {index} is not below the tree size {size}")]
    IndexOutOfRange { index: u64, size: u64 },
    #[error("tree size {first} is larger than tree size {second}")]
    SizesOutOfOrder { first: u64, second: u64 },
    #[error("the node at level {} index {} is not available", .0.level, .0.index)]
    MissingNode(NodeId),
    #[error("the proof has the wrong number of hashes")]
    WrongProofLength,
    #[error("the proof does not lead to the expected root hash")]
    RootMismatch,
    #[error("a tree size of 0 has no leaves to prove")]
    EmptyTree,
}

/// The RFC 9162 hash of a leaf: `SHA-256(0x00 || leaf)`.
pub fn leaf_hash(leaf: &[u8]) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([0x00]);
    hasher.update(leaf);
    hasher.finalize().into()
}

/// The RFC 9162 hash of an interior node: `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([0x01]);
    hasher.update(left);
    hasher.update(right);
    hasher.finalize().into()
}

/// The root of the empty tree: `SHA-256()`.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// Where hashes of complete subtrees come from (a database, a memory tree, a cache).
pub trait NodeSource {
    /// The hash of the complete subtree `id`, if known.
    fn node(&self, id: NodeId) -> Option<Hash>;
}

impl NodeSource for HashMap<NodeId, Hash> {
    fn node(&self, id: NodeId) -> Option<Hash> {
        self.get(&id).copied()
    }
}

fn fetch(source: &impl NodeSource, id: NodeId) -> Result<Hash, TlogError> {
    source.node(id).ok_or(TlogError::MissingNode(id))
}

/// The largest power of two that is at most `n` (`n` > 0).
fn largest_power_of_two_at_most(n: u64) -> u64 {
    if n == 0 { 0 } else { 1u64 << (63 - n.leading_zeros()) }
}

/// The largest power of two strictly below `n` (`n` > 1).
fn largest_power_of_two_below(n: u64) -> u64 {
    largest_power_of_two_at_most(n.saturating_sub(1))
}

/// The complete subtrees, left to right, whose concatenation is the leaf range `[start, end)` as
/// RFC 9162 splits it (`start` must be aligned as in the RFC's recursion, which every range this
/// crate produces is).
pub fn range_nodes(start: u64, end: u64) -> Vec<NodeId> {
    let mut nodes = Vec::new();
    let mut at = start;
    while at < end {
        let mut size = largest_power_of_two_at_most(end - at);
        // Keep the subtree aligned (always true for RFC ranges; defensive for other inputs).
        while size > 1 && !at.is_multiple_of(size) {
            size >>= 1;
        }
        let level = u8::try_from(size.trailing_zeros()).unwrap_or(0);
        nodes.push(NodeId::new(level, at >> level));
        at += size;
    }
    nodes
}

/// The RFC 9162 hash `MTH(D[start:end])`, from the range's complete subtrees.
pub fn range_hash(source: &impl NodeSource, start: u64, end: u64) -> Result<Hash, TlogError> {
    if start >= end {
        return Ok(empty_root());
    }
    let nodes = range_nodes(start, end);
    let mut iter = nodes.iter().rev();
    let Some(last) = iter.next() else {
        return Ok(empty_root());
    };
    let mut hash = fetch(source, *last)?;
    for node in iter {
        hash = node_hash(&fetch(source, *node)?, &hash);
    }
    Ok(hash)
}

/// The root hash of the tree of the first `size` leaves.
pub fn root(source: &impl NodeSource, size: u64) -> Result<Hash, TlogError> {
    range_hash(source, 0, size)
}

/// The leaf ranges whose hashes form the inclusion proof of leaf `index` in the tree of `size`
/// leaves, in proof order (RFC 9162 §2.1.3.1: from the leaf up).
pub fn inclusion_ranges(index: u64, size: u64) -> Result<Vec<(u64, u64)>, TlogError> {
    if index >= size {
        return Err(TlogError::IndexOutOfRange { index, size });
    }
    let mut ranges = Vec::new();
    let (mut start, mut end, mut m) = (0u64, size, index);
    while end - start > 1 {
        let k = largest_power_of_two_below(end - start);
        if m < k {
            ranges.push((start + k, end));
            end = start + k;
        } else {
            ranges.push((start, start + k));
            start += k;
            m -= k;
        }
    }
    ranges.reverse();
    Ok(ranges)
}

/// The leaf ranges whose hashes form the consistency proof between the trees of `first` and
/// `second` leaves, in proof order (RFC 9162 §2.1.4.1).
pub fn consistency_ranges(first: u64, second: u64) -> Result<Vec<(u64, u64)>, TlogError> {
    if first > second {
        return Err(TlogError::SizesOutOfOrder { first, second });
    }
    if first == 0 || first == second {
        return Ok(Vec::new());
    }
    let mut ranges = Vec::new();
    let (mut start, mut end, mut m, mut whole) = (0u64, second, first, true);
    loop {
        if m == end - start {
            if !whole {
                ranges.push((start, end));
            }
            break;
        }
        let k = largest_power_of_two_below(end - start);
        if m <= k {
            ranges.push((start + k, end));
            end = start + k;
        } else {
            ranges.push((start, start + k));
            start += k;
            m -= k;
            whole = false;
        }
    }
    ranges.reverse();
    Ok(ranges)
}

/// Every stored node a set of ranges needs (to fetch them in one query).
pub fn nodes_for_ranges(ranges: &[(u64, u64)]) -> Vec<NodeId> {
    let mut nodes: Vec<NodeId> = ranges
        .iter()
        .flat_map(|&(start, end)| range_nodes(start, end))
        .collect();
    nodes.sort_unstable();
    nodes.dedup();
    nodes
}

/// The inclusion proof of leaf `index` in the tree of `size` leaves.
pub fn inclusion_proof(source: &impl NodeSource, index: u64, size: u64) -> Result<Vec<Hash>, TlogError> {
    inclusion_ranges(index, size)?
        .into_iter()
        .map(|(start, end)| range_hash(source, start, end))
        .collect()
}

/// The consistency proof between the trees of `first` and `second` leaves.
pub fn consistency_proof(source: &impl NodeSource, first: u64, second: u64) -> Result<Vec<Hash>, TlogError> {
    consistency_ranges(first, second)?
        .into_iter()
        .map(|(start, end)| range_hash(source, start, end))
        .collect()
}

/// Shifts `first` and `second` right together until `stop(first)` holds.
fn shift_until(first: &mut u64, second: &mut u64, stop: impl Fn(u64) -> bool) {
    while !stop(*first) {
        *first >>= 1;
        *second >>= 1;
    }
}

/// Checks an inclusion proof (RFC 9162 §2.1.3.2): the leaf with hash `leaf` sits at `index` in
/// the tree of `size` leaves whose root is `root`.
pub fn verify_inclusion(leaf: &Hash, index: u64, size: u64, proof: &[Hash], root: &Hash) -> Result<(), TlogError> {
    if index >= size {
        return Err(TlogError::IndexOutOfRange { index, size });
    }
    let (mut f, mut s) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if s == 0 {
            return Err(TlogError::WrongProofLength);
        }
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            if f & 1 == 0 {
                shift_until(&mut f, &mut s, |f| f & 1 == 1 || f == 0);
            }
        } else {
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 {
        return Err(TlogError::WrongProofLength);
    }
    if &r == root {
        Ok(())
    } else {
        Err(TlogError::RootMismatch)
    }
}

/// Checks a consistency proof (RFC 9162 §2.1.4.2): the tree of `second` leaves with root
/// `second_root` extends the tree of `first` leaves with root `first_root`.
pub fn verify_consistency(
    first: u64,
    second: u64,
    proof: &[Hash],
    first_root: &Hash,
    second_root: &Hash,
) -> Result<(), TlogError> {
    if first > second {
        return Err(TlogError::SizesOutOfOrder { first, second });
    }
    if first == second {
        if !proof.is_empty() {
            return Err(TlogError::WrongProofLength);
        }
        return if first_root == second_root {
            Ok(())
        } else {
            Err(TlogError::RootMismatch)
        };
    }
    if first == 0 {
        // The empty tree is a prefix of every tree (if the first root really is the empty root).
        if !proof.is_empty() {
            return Err(TlogError::WrongProofLength);
        }
        return if first_root == &empty_root() {
            Ok(())
        } else {
            Err(TlogError::RootMismatch)
        };
    }
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if first.is_power_of_two() {
        path.push(*first_root);
    }
    path.extend_from_slice(proof);
    let (mut f, mut s) = (first - 1, second - 1);
    if f & 1 == 1 {
        shift_until(&mut f, &mut s, |f| f & 1 == 0);
    }
    let mut hashes = path.iter();
    let Some(seed) = hashes.next() else {
        return Err(TlogError::WrongProofLength);
    };
    let (mut fr, mut sr) = (*seed, *seed);
    for c in hashes {
        if s == 0 {
            return Err(TlogError::WrongProofLength);
        }
        if f & 1 == 1 || f == s {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if f & 1 == 0 {
                shift_until(&mut f, &mut s, |f| f & 1 == 1 || f == 0);
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 {
        return Err(TlogError::WrongProofLength);
    }
    if &fr == first_root && &sr == second_root {
        Ok(())
    } else {
        Err(TlogError::RootMismatch)
    }
}

/// The stored nodes the right edge of a tree of `size` leaves needs to be extended (the
/// complete subtrees of `[0, size)`).
pub fn frontier(size: u64) -> Vec<NodeId> {
    range_nodes(0, size)
}

/// Appends `leaves` (leaf hashes) to the tree of `size` leaves: returns every node that becomes
/// complete, leaves included (level 0), in creation order. `source` must hold [`frontier`]`(size)`.
pub fn append(source: &impl NodeSource, size: u64, leaves: &[Hash]) -> Result<Vec<(NodeId, Hash)>, TlogError> {
    // The right edge: (level, hash) of the pending complete subtrees, largest first.
    let mut edge: Vec<(u8, Hash)> = Vec::new();
    for id in frontier(size) {
        edge.push((id.level, fetch(source, id)?));
    }
    let mut created = Vec::with_capacity(leaves.len() * 2);
    for (next, leaf) in (size..).zip(leaves.iter()) {
        let mut level = 0u8;
        let mut hash = *leaf;
        let mut index = next;
        created.push((NodeId::new(0, index), hash));
        while let Some(&(top_level, top_hash)) = edge.last() {
            if top_level != level {
                break;
            }
            edge.pop();
            hash = node_hash(&top_hash, &hash);
            level += 1;
            index >>= 1;
            created.push((NodeId::new(level, index), hash));
        }
        edge.push((level, hash));
    }
    Ok(created)
}

/// A whole tree in memory, level by level (for tests, verification and clients).
#[derive(Clone, Debug, Default)]
pub struct MemoryTree {
    levels: Vec<Vec<Hash>>,
}

impl MemoryTree {
    pub fn new() -> Self {
        Self::default()
    }

    /// The tree over these leaf hashes.
    pub fn from_leaf_hashes(leaves: Vec<Hash>) -> Self {
        let mut levels = vec![leaves];
        while let Some(below) = levels.last().filter(|below| below.len() >= 2) {
            let above: Vec<Hash> = below
                .chunks_exact(2)
                .filter_map(|pair| match pair {
                    [left, right] => Some(node_hash(left, right)),
                    _ => None,
                })
                .collect();
            levels.push(above);
        }
        Self { levels }
    }

    pub fn push(&mut self, leaf: Hash) {
        if self.levels.is_empty() {
            self.levels.push(Vec::new());
        }
        let mut level = 0usize;
        let mut hash = leaf;
        loop {
            if self.levels.len() <= level {
                self.levels.push(Vec::new());
            }
            let Some(row) = self.levels.get_mut(level) else { return };
            row.push(hash);
            let len = row.len();
            if len % 2 == 1 {
                return;
            }
            let (Some(left), Some(right)) = (row.get(len - 2), row.get(len - 1)) else {
                return;
            };
            hash = node_hash(left, right);
            level += 1;
        }
    }

    pub fn size(&self) -> u64 {
        self.levels.first().map_or(0, |leaves| leaves.len() as u64)
    }

    /// The complete subtree hashes of one level, left to right.
    pub fn level(&self, level: u8) -> &[Hash] {
        self.levels.get(usize::from(level)).map_or(&[], Vec::as_slice)
    }

    pub fn levels(&self) -> usize {
        self.levels.len()
    }

    pub fn root(&self) -> Hash {
        root(self, self.size()).unwrap_or_else(|_| empty_root())
    }
}

impl NodeSource for MemoryTree {
    fn node(&self, id: NodeId) -> Option<Hash> {
        let index = usize::try_from(id.index).ok()?;
        self.levels.get(usize::from(id.level))?.get(index).copied()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

    use super::*;

    /// The RFC's recursive definition, as a reference.
    fn mth(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => empty_root(),
            1 => leaves[0],
            n => {
                let k = largest_power_of_two_below(n as u64) as usize;
                node_hash(&mth(&leaves[..k]), &mth(&leaves[k..]))
            }
        }
    }

    fn leaves(n: u64) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(format!("leaf {i}").as_bytes())).collect()
    }

    fn random_u64() -> u64 {
        let mut bytes = [0u8; 8];
        getrandom::fill(&mut bytes).unwrap();
        u64::from_le_bytes(bytes)
    }

    fn flip(hash: &mut Hash) {
        hash[7] ^= 0x20;
    }

    #[test]
    fn empty_tree_root_is_the_hash_of_nothing() {
        assert_eq!(
            hex::encode(empty_root()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(MemoryTree::new().root(), empty_root());
    }

    #[test]
    fn roots_match_the_recursive_definition() {
        let all = leaves(70);
        let mut tree = MemoryTree::new();
        for (i, leaf) in all.iter().enumerate() {
            tree.push(*leaf);
            assert_eq!(tree.root(), mth(&all[..=i]), "size {}", i + 1);
        }
        let built = MemoryTree::from_leaf_hashes(all.clone());
        for size in 0..=70u64 {
            assert_eq!(root(&built, size).unwrap(), mth(&all[..size as usize]));
        }
    }

    #[test]
    fn append_creates_exactly_the_complete_nodes() {
        let all = leaves(100);
        let reference = MemoryTree::from_leaf_hashes(all.clone());
        let mut stored: HashMap<NodeId, Hash> = HashMap::new();
        let mut size = 0u64;
        for chunk in [1usize, 2, 3, 5, 8, 13, 21, 47] {
            let end = (size as usize + chunk).min(all.len());
            let created = append(&stored, size, &all[size as usize..end]).unwrap();
            for (id, hash) in created {
                assert_eq!(reference.node(id), Some(hash), "{id:?}");
                assert!(stored.insert(id, hash).is_none(), "{id:?} created twice");
            }
            size = end as u64;
            assert_eq!(root(&stored, size).unwrap(), mth(&all[..size as usize]));
        }
        assert_eq!(
            append(&HashMap::new(), 5, &all[..1]),
            Err(TlogError::MissingNode(NodeId::new(2, 0)))
        );
    }

    fn check_inclusion(tree: &MemoryTree, all: &[Hash], size: u64) {
        let root_hash = root(tree, size).unwrap();
        assert_eq!(root_hash, mth(&all[..size as usize]));
        for index in 0..size {
            let leaf = all[index as usize];
            let proof = inclusion_proof(tree, index, size).unwrap();
            verify_inclusion(&leaf, index, size, &proof, &root_hash)
                .unwrap_or_else(|e| panic!("index {index} size {size}: {e}"));
            // Any altered hash fails.
            for i in 0..proof.len() {
                let mut bad = proof.clone();
                flip(&mut bad[i]);
                assert!(verify_inclusion(&leaf, index, size, &bad, &root_hash).is_err());
            }
            let mut bad_leaf = leaf;
            flip(&mut bad_leaf);
            assert!(verify_inclusion(&bad_leaf, index, size, &proof, &root_hash).is_err());
            let mut bad_root = root_hash;
            flip(&mut bad_root);
            assert!(verify_inclusion(&leaf, index, size, &proof, &bad_root).is_err());
            // Wrong index, truncated or extended proofs fail.
            if size > 1 {
                assert!(verify_inclusion(&leaf, (index + 1) % size, size, &proof, &root_hash).is_err());
            }
            if !proof.is_empty() {
                assert!(verify_inclusion(&leaf, index, size, &proof[1..], &root_hash).is_err());
            }
            let mut longer = proof.clone();
            longer.push(leaf);
            assert!(verify_inclusion(&leaf, index, size, &longer, &root_hash).is_err());
        }
        assert!(inclusion_proof(tree, size, size).is_err());
    }

    fn check_consistency(tree: &MemoryTree, first: u64, second: u64) {
        let first_root = root(tree, first).unwrap();
        let second_root = root(tree, second).unwrap();
        let proof = consistency_proof(tree, first, second).unwrap();
        verify_consistency(first, second, &proof, &first_root, &second_root)
            .unwrap_or_else(|e| panic!("{first} -> {second}: {e}"));
        for i in 0..proof.len() {
            let mut bad = proof.clone();
            flip(&mut bad[i]);
            assert!(
                verify_consistency(first, second, &bad, &first_root, &second_root).is_err(),
                "{first} -> {second}: altered hash {i} accepted"
            );
        }
        if first > 0 && first < second {
            let mut bad_first = first_root;
            flip(&mut bad_first);
            assert!(verify_consistency(first, second, &proof, &bad_first, &second_root).is_err());
            let mut bad_second = second_root;
            flip(&mut bad_second);
            assert!(verify_consistency(first, second, &proof, &first_root, &bad_second).is_err());
            if !proof.is_empty() {
                assert!(verify_consistency(first, second, &proof[1..], &first_root, &second_root).is_err());
            }
        }
    }

    #[test]
    fn inclusion_and_consistency_proofs_verify_for_all_sizes_up_to_64() {
        let all = leaves(64);
        let tree = MemoryTree::from_leaf_hashes(all.clone());
        for size in 1..=64u64 {
            check_inclusion(&tree, &all, size);
            for first in 0..=size {
                check_consistency(&tree, first, size);
            }
        }
        assert!(consistency_proof(&tree, 5, 4).is_err());
    }

    #[test]
    fn proofs_verify_for_random_larger_sizes() {
        let all = leaves(3000);
        let tree = MemoryTree::from_leaf_hashes(all.clone());
        for _ in 0..12 {
            let size = 65 + random_u64() % 2900;
            let root_hash = root(&tree, size).unwrap();
            for _ in 0..40 {
                let index = random_u64() % size;
                let proof = inclusion_proof(&tree, index, size).unwrap();
                verify_inclusion(&all[index as usize], index, size, &proof, &root_hash).unwrap();
                let first = 1 + random_u64() % size;
                check_consistency(&tree, first, size);
            }
        }
        // Known sizes around powers of two.
        for size in [1023u64, 1024, 1025, 2047, 2049] {
            check_consistency(&tree, 1000, size);
            let proof = inclusion_proof(&tree, size - 1, size).unwrap();
            verify_inclusion(
                &all[size as usize - 1],
                size - 1,
                size,
                &proof,
                &root(&tree, size).unwrap(),
            )
            .unwrap();
        }
    }

    #[test]
    fn proofs_only_need_log_n_stored_nodes() {
        let ranges = inclusion_ranges(123_456, 1_000_000).unwrap();
        assert!(nodes_for_ranges(&ranges).len() <= 40);
        let ranges = consistency_ranges(333_333, 1_000_000).unwrap();
        assert!(nodes_for_ranges(&ranges).len() <= 80);
    }

    #[test]
    fn verification_rejects_nonsense_without_panicking() {
        let h = [0u8; 32];
        assert!(verify_inclusion(&h, 0, 0, &[], &h).is_err());
        assert!(verify_inclusion(&h, u64::MAX, u64::MAX, &[h; 70], &h).is_err());
        assert!(verify_inclusion(&h, 0, u64::MAX, &[h; 64], &h).is_err());
        assert!(verify_consistency(u64::MAX, u64::MAX - 1, &[], &h, &h).is_err());
        assert!(verify_consistency(u64::MAX - 1, u64::MAX, &[h; 70], &h, &h).is_err());
        assert!(verify_consistency(3, 7, &[], &h, &h).is_err());
        assert!(inclusion_ranges(u64::MAX - 1, u64::MAX).unwrap().len() <= 64);
        assert!(consistency_ranges(u64::MAX / 3, u64::MAX).is_ok());
    }
}
