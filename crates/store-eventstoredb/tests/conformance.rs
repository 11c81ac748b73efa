//! The event store contract on EventStoreDB, each test in a namespace of its own. Runs when
//! `LEDGER_TEST_ESDB_URL` is set (e.g. `esdb://127.0.0.1:2113?tls=false`); otherwise says it was
//! skipped: no EventStoreDB server can be installed on the CI machines.

use ledger_store_eventstoredb::EventStoreDb;

async fn fresh_store() -> Option<(EventStoreDb, ())> {
    let Some(url) = std::env::var("LEDGER_TEST_ESDB_URL")
        .ok()
        .filter(|url| !url.is_empty())
    else {
        ledger_store::conformance::skip(
            "LEDGER_TEST_ESDB_URL is not set (EventStoreDB backend tests need a server)",
        );
        return None;
    };
    let namespace = format!("ledger-test-{}", uuid::Uuid::new_v4().simple());
    Some((EventStoreDb::connect(&url, &namespace).await.unwrap(), ()))
}

ledger_store::conformance_tests!(fresh_store());
