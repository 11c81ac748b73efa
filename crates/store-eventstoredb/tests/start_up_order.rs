//! The EventStoreDB client installs rustls's process-wide crypto provider and panics if one is
//! there already. Opening the store after something else installed one must be a clear error,
//! not a panic. (A test binary of its own: the provider is process-wide.)

use ledger_store::Error;
use ledger_store_eventstoredb::EventStoreDb;

#[tokio::test]
async fn a_provider_installed_first_is_an_error_not_a_panic() {
    rustls::crypto::aws_lc_rs::default_provider()
        .install_default()
        .unwrap();
    let opened = EventStoreDb::connect("esdb://127.0.0.1:1?tls=false", "ledger").await;
    match opened {
        Err(Error::Backend(reason)) => {
            assert!(
                reason.to_string().contains("open the event store first"),
                "{reason}"
            )
        }
        other => panic!("expected a start-up order error, got {other:?}"),
    }
}
