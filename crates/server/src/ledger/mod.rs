//! The verifiable ledger: per-tenant Merkle trees over the log, signed checkpoints, proofs, and
//! the `Ledger` gRPC service that serves them to auditors.

mod service;
mod tree;

pub use service::LedgerService;
pub use tree::{AuditTrees, TreeError};
