//! Ledger integrity: every event of a tenant is a leaf of an append-only Merkle tree in global-log
//! order, hashed exactly as RFC 9162 section 2.1; signed checkpoints (C2SP `tlog-checkpoint`,
//! Ed25519 signed notes) commit to the tree; inclusion and consistency proofs let anyone check,
//! with standard algorithms, that nothing was altered or removed.

mod checkpoint;
mod leaf;
mod merkle;

pub use checkpoint::{Checkpoint, CheckpointError, NoteSigner, NoteVerifier};
pub use leaf::{LEAF_TAG, event_leaf_hash, leaf_bytes};
pub use merkle::{
    Frontier, Hash, MemoryTree, ProofError, Subtrees, consistency_proof, empty_root,
    inclusion_proof, leaf_hash, node_hash, range_hash, root, verify_consistency, verify_inclusion,
};
