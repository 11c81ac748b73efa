//! Which event store the server runs on: the embedded default in the data directory, or a
//! PostgreSQL schema that several replicas can share.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use ledger_projections::postgres::PostgresDocuments;
use ledger_projections::{DocumentStore, EmbeddedDocuments, Projection};
use ledger_store::EventStore;
use ledger_store_embedded::EmbeddedStore;
use ledger_store_eventstoredb::EventStoreDb;
use ledger_store_postgres::PostgresStore;

/// Where the read models live: in the same PostgreSQL schema as the event store (replicas then
/// share them), and otherwise in the data directory.
pub async fn open_documents(
    options: &StoreOptions,
    data_dir: &Path,
    projections: &[Arc<dyn Projection>],
) -> anyhow::Result<Arc<dyn DocumentStore>> {
    let (options, data_dir) = (options.clone(), data_dir.to_owned());
    let projections = projections.to_vec();
    tokio::task::spawn_blocking(move || -> anyhow::Result<Arc<dyn DocumentStore>> {
        Ok(match options {
            StoreOptions::Embedded | StoreOptions::EventStoreDb { .. } => {
                let opened: Vec<&dyn Projection> = projections.iter().map(|p| p.as_ref()).collect();
                Arc::new(
                    EmbeddedDocuments::open(&data_dir, &opened)
                        .context("cannot open the read models")?,
                )
            }
            StoreOptions::Postgres { url, schema } => {
                Arc::new(PostgresDocuments::connect(&url, &schema).with_context(|| {
                    format!("cannot open the read models in PostgreSQL (schema {schema})")
                })?)
            }
        })
    })
    .await?
}

/// The PostgreSQL schema or EventStoreDB stream prefix of the event store unless configured.
pub const DEFAULT_STORE_NAMESPACE: &str = "ledger";

/// The configured event store. A URL may carry a password: it is never logged or shown in an
/// error.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreOptions {
    /// `DATA_DIR/events.db`.
    Embedded,
    /// Tables in the PostgreSQL schema `schema`.
    Postgres { url: String, schema: String },
    /// Streams named `{namespace}:{stream}` on an EventStoreDB (KurrentDB) cluster.
    EventStoreDb { url: String, namespace: String },
}

impl std::fmt::Debug for StoreOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Embedded => f.write_str("Embedded"),
            Self::Postgres { schema, .. } => write!(f, "Postgres {{ schema: {schema:?} }}"),
            Self::EventStoreDb { namespace, .. } => {
                write!(f, "EventStoreDb {{ namespace: {namespace:?} }}")
            }
        }
    }
}

/// An open event store.
#[derive(Debug, Clone)]
pub enum Backend {
    Embedded(EmbeddedStore),
    Postgres(PostgresStore),
    EventStoreDb(Box<EventStoreDb>),
}

impl Backend {
    pub async fn open(options: &StoreOptions, data_dir: &Path) -> anyhow::Result<Self> {
        Ok(match options {
            StoreOptions::Embedded => {
                Self::Embedded(EmbeddedStore::open(data_dir).with_context(|| {
                    format!("cannot open the event store in {}", data_dir.display())
                })?)
            }
            StoreOptions::Postgres { url, schema } => {
                Self::Postgres(PostgresStore::connect(url, schema).await.with_context(|| {
                    format!("cannot open the PostgreSQL event store (schema {schema})")
                })?)
            }
            StoreOptions::EventStoreDb { url, namespace } => {
                let store = EventStoreDb::connect(url, namespace)
                    .await
                    .with_context(|| {
                        format!("cannot open the EventStoreDB event store (namespace {namespace})")
                    })?;
                Self::EventStoreDb(Box::new(store))
            }
        })
    }

    pub fn shared(&self) -> Arc<dyn EventStore> {
        match self {
            Self::Embedded(store) => Arc::new(store.clone()),
            Self::Postgres(store) => Arc::new(store.clone()),
            Self::EventStoreDb(store) => Arc::new((**store).clone()),
        }
    }

    /// Stops taking appends once the queued ones are durable; subscriptions then end.
    pub async fn close(&self) -> Result<(), ledger_store::Error> {
        match self {
            Self::Embedded(store) => store.close().await,
            Self::Postgres(store) => store.close().await,
            Self::EventStoreDb(store) => {
                store.close();
                Ok(())
            }
        }
    }
}
