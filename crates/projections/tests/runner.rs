//! The runner: each event's effect exactly once across restarts, a changed projection rebuilt
//! from zero, and documents equal to a from-scratch rebuild.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use ledger_domain::{Event, pb};
use ledger_projections::{
    Applied, DocumentStore, Documents, EmbeddedDocuments, Error, Projection, ProjectionRunner,
};
use ledger_store::{EventStore, ExpectedVersion, Metadata, NewEvent, StreamName};
use ledger_store_embedded::EmbeddedStore;
use uuid::Uuid;

/// Counts the events of each tenant: any lost or doubled event shows in the count.
#[derive(Debug)]
struct Counter {
    version: AtomicU32,
}

impl Projection for Counter {
    fn name(&self) -> &'static str {
        "counter"
    }
    fn version(&self) -> u32 {
        self.version.load(Ordering::Relaxed)
    }
    fn models(&self) -> &'static [&'static str] {
        &["count"]
    }
    fn apply(&self, applied: Applied<'_>, documents: &mut Documents<'_>) -> Result<(), Error> {
        let count: u64 = documents.get("count", applied.tenant)?.unwrap_or(0);
        documents.put("count", applied.tenant, count + 1)
    }
}

async fn append_units(store: &EmbeddedStore, tenant: &str, from: usize, n: usize) {
    for i in from..from + n {
        let event = Event::from(pb::OrgUnitDefined {
            org_unit_id: format!("u{i}"),
            name: "unit".into(),
            parent_id: String::new(),
        });
        let stream = StreamName::new(format!("{tenant}/org-unit-u{i}")).unwrap();
        let new = NewEvent {
            id: Uuid::new_v4(),
            event_type: event.type_name().into(),
            payload: event.encode().into(),
            metadata: Metadata::default(),
        };
        store
            .append(&stream, ExpectedVersion::NoStream, vec![new])
            .await
            .unwrap();
    }
}

/// Runs the projection until it has folded the store's head, then stops it.
async fn run_to_head(
    store: &EmbeddedStore,
    documents: Arc<EmbeddedDocuments>,
    projection: Arc<dyn Projection>,
) {
    let shared: Arc<dyn EventStore> = Arc::new(store.clone());
    let runner = ProjectionRunner::new(shared, documents);
    let task = tokio::spawn(runner.clone().run(projection));
    let head = store.head().await.unwrap();
    if !runner.wait_for(head, Duration::from_secs(30)).await {
        task.abort();
        panic!(
            "the projection did not catch up: {:?}, {:?}",
            task.await,
            runner.status().borrow()
        );
    }
    task.abort();
    let _ = task.await;
}

fn count(documents: &EmbeddedDocuments, tenant: &str) -> u64 {
    serde_json::from_slice(&documents.get("count", tenant).unwrap().unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_neither_lose_nor_double_an_event() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path().join("log")).unwrap();
    let counter = Arc::new(Counter {
        version: AtomicU32::new(1),
    });
    let documents = Arc::new(EmbeddedDocuments::open(dir.path(), &[counter.as_ref()]).unwrap());
    append_units(&store, "acme", 0, 1500).await;
    append_units(&store, "globex", 0, 20).await;
    // Stopped in the middle of catching up, then started again.
    let shared: Arc<dyn EventStore> = Arc::new(store.clone());
    let runner = ProjectionRunner::new(shared, documents.clone());
    let task = tokio::spawn(runner.clone().run(counter.clone()));
    assert!(
        runner
            .wait_for(
                Some(ledger_store::Position::from_sequence(1000)),
                Duration::from_secs(30)
            )
            .await
    );
    task.abort();
    let _ = task.await;
    run_to_head(&store, documents.clone(), counter.clone()).await;
    assert_eq!(
        (count(&documents, "acme"), count(&documents, "globex")),
        (1500, 20)
    );

    // A restart resumes from the checkpoint: the events before it are not counted again.
    append_units(&store, "acme", 1500, 700).await;
    run_to_head(&store, documents.clone(), counter.clone()).await;
    run_to_head(&store, documents.clone(), counter.clone()).await;
    assert_eq!(count(&documents, "acme"), 2200);

    // The change feed holds each document once, at its latest change.
    let changes = documents.changes(0, 100).unwrap();
    let keys: Vec<_> = changes
        .iter()
        .map(|c| (c.model.as_str(), c.key.as_str()))
        .collect();
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert!(keys.contains(&("count", "acme")) && keys.contains(&("count", "globex")));
    let acme = changes.iter().find(|c| c.key == "acme").unwrap().seq;
    assert!(
        documents
            .changes(acme, 100)
            .unwrap()
            .iter()
            .all(|c| c.key != "acme"),
        "resuming repeats a change"
    );

    // A new version rebuilds from zero.
    counter.version.store(2, Ordering::Relaxed);
    run_to_head(&store, documents.clone(), counter.clone()).await;
    assert_eq!(
        (count(&documents, "acme"), count(&documents, "globex")),
        (2200, 20)
    );
    assert_eq!(documents.checkpoint("counter").unwrap().unwrap().version, 2);
    store.close().await.unwrap();
}
