//! The embedded backend against the shared conformance suite.

use ledger_store_embedded::EmbeddedStore;
use tempfile::TempDir;

async fn fresh_store() -> Option<(EmbeddedStore, TempDir)> {
    let dir = tempfile::tempdir().unwrap();
    Some((EmbeddedStore::open(dir.path()).unwrap(), dir))
}

ledger_store::conformance_tests!(fresh_store());
