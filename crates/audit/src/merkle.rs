//! Merkle trees exactly as RFC 9162 section 2.1 (RFC 6962): hashes, proofs from stored
//! subtrees, and the verifiers an outsider would run.

use sha2::{Digest, Sha256};

/// A SHA-256 hash.
pub type Hash = [u8; 32];

/// Why a proof does not verify, or cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("leaf index {index} is not in a tree of size {size}")]
    IndexOutOfRange { index: u64, size: u64 },
    #[error("tree sizes {old} and {new} are not in order")]
    SizesOutOfOrder { old: u64, new: u64 },
    #[error("consistency with the empty tree proves nothing")]
    EmptyTree,
    #[error("a hash is not 32 bytes")]
    MalformedHash,
    #[error("the proof has the wrong number of hashes")]
    WrongLength,
    #[error("the proof does not lead to the expected root")]
    RootMismatch,
}

/// `SHA-256(0x00 || data)`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    Sha256::new()
        .chain_update([0x00])
        .chain_update(data)
        .finalize()
        .into()
}

/// `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    Sha256::new()
        .chain_update([0x01])
        .chain_update(left)
        .chain_update(right)
        .finalize()
        .into()
}

/// The root of the empty tree: `SHA-256()`.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// The largest power of two smaller than `n` (n > 1): where RFC 9162 splits a tree of `n` leaves.
fn split(n: u64) -> u64 {
    debug_assert!(n > 1);
    1 << (63 - (n - 1).leading_zeros())
}

/// Where the hashes of complete subtrees come from: the subtree at `level` and `index` covers
/// leaves `[index << level, (index + 1) << level)`; level 0 is the leaf hashes. Every subtree a
/// proof needs is complete and aligned like this, except along the right edge of the tree,
/// which [`range_hash`] computes from the complete ones.
pub trait Subtrees {
    type Error: From<ProofError>;
    fn subtree(&self, level: u32, index: u64) -> Result<Hash, Self::Error>;
}

/// The Merkle tree hash of leaves `[begin, end)`, where `begin` is a multiple of the largest
/// power of two not above `end - begin` (true of every range RFC 9162's recursion visits).
pub fn range_hash<S: Subtrees>(tree: &S, begin: u64, end: u64) -> Result<Hash, S::Error> {
    let n = end - begin;
    if n == 0 {
        return Ok(empty_root());
    }
    if n.is_power_of_two() && begin.is_multiple_of(n) {
        return tree.subtree(n.trailing_zeros(), begin >> n.trailing_zeros());
    }
    let k = split(n);
    Ok(node_hash(
        &range_hash(tree, begin, begin + k)?,
        &range_hash(tree, begin + k, end)?,
    ))
}

/// The root of the first `size` leaves.
pub fn root<S: Subtrees>(tree: &S, size: u64) -> Result<Hash, S::Error> {
    range_hash(tree, 0, size)
}

/// The audit path of leaf `index` in the tree of the first `size` leaves (RFC 9162 2.1.3.1),
/// nearest sibling first.
pub fn inclusion_proof<S: Subtrees>(
    tree: &S,
    index: u64,
    size: u64,
) -> Result<Vec<Hash>, S::Error> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size }.into());
    }
    let mut path = Vec::new();
    let (mut begin, mut end, mut m) = (0, size, index);
    // Walk down from the root, collecting siblings; they are reversed at the end.
    while end - begin > 1 {
        let k = split(end - begin);
        if m < k {
            path.push(range_hash(tree, begin + k, end)?);
            end = begin + k;
        } else {
            path.push(range_hash(tree, begin, begin + k)?);
            begin += k;
            m -= k;
        }
    }
    path.reverse();
    Ok(path)
}

/// The consistency proof between the trees of the first `old` and `new` leaves (RFC 9162
/// 2.1.4.1), for `0 < old <= new`; empty when they are equal.
pub fn consistency_proof<S: Subtrees>(tree: &S, old: u64, new: u64) -> Result<Vec<Hash>, S::Error> {
    if old > new {
        return Err(ProofError::SizesOutOfOrder { old, new }.into());
    }
    if old == 0 {
        return Err(ProofError::EmptyTree.into());
    }
    if old == new {
        return Ok(Vec::new());
    }
    let mut proof = Vec::new();
    let (mut begin, mut end, mut m, mut whole) = (0, new, old, true);
    loop {
        let n = end - begin;
        if m == n {
            if !whole {
                proof.push(range_hash(tree, begin, end)?);
            }
            break;
        }
        let k = split(n);
        if m <= k {
            proof.push(range_hash(tree, begin + k, end)?);
            end = begin + k;
        } else {
            proof.push(range_hash(tree, begin, begin + k)?);
            begin += k;
            m -= k;
            whole = false;
        }
    }
    proof.reverse();
    Ok(proof)
}

fn hash32(bytes: &[u8]) -> Result<Hash, ProofError> {
    bytes.try_into().map_err(|_| ProofError::MalformedHash)
}

/// Verifies that `leaf_hash` is leaf `index` of the tree of `size` leaves with root `root`
/// (RFC 9162 2.1.3.2).
pub fn verify_inclusion<P: AsRef<[u8]>>(
    index: u64,
    size: u64,
    leaf_hash: &[u8],
    proof: &[P],
    root: &[u8],
) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let (leaf, root) = (hash32(leaf_hash)?, hash32(root)?);
    let (mut f, mut s) = (index, size - 1);
    let mut r = leaf;
    for p in proof {
        let p = hash32(p.as_ref())?;
        if s == 0 {
            return Err(ProofError::WrongLength);
        }
        if f & 1 == 1 || f == s {
            r = node_hash(&p, &r);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            r = node_hash(&r, &p);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 {
        return Err(ProofError::WrongLength);
    }
    if r == root {
        Ok(())
    } else {
        Err(ProofError::RootMismatch)
    }
}

/// Verifies that the tree of `old` leaves with root `old_root` is a prefix of the tree of
/// `new` leaves with root `new_root` (RFC 9162 2.1.4.2, for `0 < old <= new`; equal sizes need
/// equal roots and an empty proof).
pub fn verify_consistency<P: AsRef<[u8]>>(
    old: u64,
    new: u64,
    proof: &[P],
    old_root: &[u8],
    new_root: &[u8],
) -> Result<(), ProofError> {
    if old > new {
        return Err(ProofError::SizesOutOfOrder { old, new });
    }
    if old == 0 {
        return Err(ProofError::EmptyTree);
    }
    if old == new {
        if !proof.is_empty() {
            return Err(ProofError::WrongLength);
        }
        return if old_root == new_root {
            Ok(())
        } else {
            Err(ProofError::RootMismatch)
        };
    }
    if proof.is_empty() {
        return Err(ProofError::WrongLength);
    }
    let (old_root, new_root) = (hash32(old_root)?, hash32(new_root)?);
    let mut path = proof
        .iter()
        .map(|p| hash32(p.as_ref()))
        .collect::<Result<Vec<_>, _>>()?;
    if old.is_power_of_two() {
        path.insert(0, old_root);
    }
    let (mut f, mut s) = (old - 1, new - 1);
    while f & 1 == 1 {
        f >>= 1;
        s >>= 1;
    }
    let (mut fr, mut sr) = (path[0], path[0]);
    for c in &path[1..] {
        if s == 0 {
            return Err(ProofError::WrongLength);
        }
        if f & 1 == 1 || f == s {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 {
        return Err(ProofError::WrongLength);
    }
    if fr == old_root && sr == new_root {
        Ok(())
    } else {
        Err(ProofError::RootMismatch)
    }
}

/// A tree built in memory from all its leaf hashes: for tests and small tools.
#[derive(Debug, Clone, Default)]
pub struct MemoryTree {
    leaves: Vec<Hash>,
}

impl MemoryTree {
    pub fn new(leaves: Vec<Hash>) -> Self {
        Self { leaves }
    }

    pub fn size(&self) -> u64 {
        self.leaves.len() as u64
    }
}

impl Subtrees for MemoryTree {
    type Error = ProofError;

    fn subtree(&self, level: u32, index: u64) -> Result<Hash, ProofError> {
        let (begin, end) = (index << level, (index + 1) << level);
        if end > self.size() {
            return Err(ProofError::IndexOutOfRange {
                index: end - 1,
                size: self.size(),
            });
        }
        if level == 0 {
            return Ok(self.leaves[begin as usize]);
        }
        Ok(node_hash(
            &self.subtree(level - 1, index * 2)?,
            &self.subtree(level - 1, index * 2 + 1)?,
        ))
    }
}

/// The right edge of a growing tree: the complete subtrees of its binary decomposition, largest
/// first. Appending is amortised O(1) and the root O(log n), in O(log n) memory, so a verifier can
/// fold millions of leaves without holding them.
#[derive(Debug, Clone, Default)]
pub struct Frontier {
    size: u64,
    /// (level, hash) of each complete subtree, largest first.
    peaks: Vec<(u32, Hash)>,
}

impl Frontier {
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Adds the next leaf; returns the complete subtrees it finished, as (level, index, hash),
    /// the leaf itself first.
    pub fn push(&mut self, leaf: Hash) -> Vec<(u32, u64, Hash)> {
        let mut finished = vec![(0, self.size, leaf)];
        let mut hash = leaf;
        let mut level = 0;
        while let Some(&(top_level, top)) = self.peaks.last() {
            if top_level != level {
                break;
            }
            self.peaks.pop();
            hash = node_hash(&top, &hash);
            level += 1;
            finished.push((level, self.size >> level, hash));
        }
        self.peaks.push((level, hash));
        self.size += 1;
        finished
    }

    /// The root of the leaves pushed so far.
    pub fn root(&self) -> Hash {
        let mut peaks = self.peaks.iter().rev();
        let Some(&(_, mut root)) = peaks.next() else {
            return empty_root();
        };
        for (_, left) in peaks {
            root = node_hash(left, &root);
        }
        root
    }

    /// Rebuilds the frontier of a tree of `size` leaves from its stored complete subtrees.
    pub fn resume<S: Subtrees>(tree: &S, size: u64) -> Result<Self, S::Error> {
        let mut peaks = Vec::new();
        let mut begin = 0;
        for level in (0..64).rev() {
            if size & (1 << level) != 0 {
                peaks.push((level, tree.subtree(level, begin >> level)?));
                begin += 1 << level;
            }
        }
        Ok(Self { size, peaks })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(n: u64) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect()
    }

    /// MTH straight from RFC 9162's definition.
    fn reference_root(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => empty_root(),
            1 => leaves[0],
            n => {
                let k = split(n as u64) as usize;
                node_hash(&reference_root(&leaves[..k]), &reference_root(&leaves[k..]))
            }
        }
    }

    #[test]
    fn roots_match_the_definition_and_the_frontier() {
        for n in 0..70 {
            let leaves = leaves(n);
            let tree = MemoryTree::new(leaves.clone());
            let mut frontier = Frontier::default();
            for leaf in &leaves {
                frontier.push(*leaf);
            }
            assert_eq!(root(&tree, n).unwrap(), reference_root(&leaves), "size {n}");
            assert_eq!(
                frontier.root(),
                reference_root(&leaves),
                "frontier at size {n}"
            );
            assert_eq!(Frontier::resume(&tree, n).unwrap().root(), frontier.root());
        }
    }

    #[test]
    fn the_frontier_reports_each_finished_subtree() {
        let mut frontier = Frontier::default();
        let leaves = leaves(8);
        let finished: Vec<_> = leaves
            .iter()
            .flat_map(|leaf| frontier.push(*leaf))
            .collect();
        let tree = MemoryTree::new(leaves);
        assert_eq!(finished.len(), 8 + 4 + 2 + 1);
        for (level, index, hash) in finished {
            assert_eq!(tree.subtree(level, index).unwrap(), hash);
        }
    }

    #[test]
    fn the_empty_root_is_the_hash_of_nothing() {
        let hex: String = empty_root().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
