//! For tests of this crate and of the server: a PostgreSQL schema of their own, dropped when
//! the test ends, on the database named by `LEDGER_TEST_PG_URL`.

use crate::PostgresStore;

/// The test database's URL, or `None` (with the reason printed) to skip.
pub fn database_url() -> Option<String> {
    match std::env::var("LEDGER_TEST_PG_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            ledger_store::conformance::skip(
                "LEDGER_TEST_PG_URL is not set (PostgreSQL backend tests need a database)",
            );
            None
        }
    }
}

/// A schema named for one test; dropped (with everything in it) when this is dropped.
#[derive(Debug)]
pub struct TestSchema {
    pub url: String,
    pub name: String,
}

impl TestSchema {
    pub fn new(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            name: format!("ledger_test_{}", uuid::Uuid::new_v4().simple()),
        }
    }

    /// A store on a fresh schema, or `None` when no test database is configured.
    pub async fn fresh_store() -> Option<(PostgresStore, Self)> {
        let url = database_url()?;
        let schema = Self::new(&url);
        let store = PostgresStore::connect(&url, &schema.name).await.unwrap();
        Some((store, schema))
    }
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        let (url, name) = (self.url.clone(), self.name.clone());
        // Dropped inside a runtime: a thread of its own with a runtime of its own.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                    .await
                    .unwrap();
                let driver = tokio::spawn(connection);
                client
                    .batch_execute(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
                    .await
                    .unwrap();
                driver.abort();
            });
        });
        let _ = dropped.join();
    }
}
