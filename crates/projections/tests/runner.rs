//! The runner: each event's effect exactly once across restarts, a changed projection rebuilt
//! from zero, and documents equal to a from-scratch rebuild.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use ledger_domain::{Event, pb};
use ledger_projections::{
    Applied, Change, Checkpoint, DocumentStore, Documents, EmbeddedDocuments, Error, Projection,
    ProjectionRunner, SharedLog, Write,
};
use ledger_store::{EventStore, ExpectedVersion, Metadata, NewEvent, StreamName};
use ledger_store_embedded::EmbeddedStore;
use uuid::Uuid;

/// Counts the events of each tenant in its one model: any lost or doubled event shows in the
/// count.
#[derive(Debug)]
struct Counter {
    name: &'static str,
    models: &'static [&'static str],
    version: AtomicU32,
}

impl Counter {
    fn new(name: &'static str, models: &'static [&'static str]) -> Arc<Self> {
        Arc::new(Self {
            name,
            models,
            version: AtomicU32::new(1),
        })
    }
}

impl Projection for Counter {
    fn name(&self) -> &'static str {
        self.name
    }
    fn version(&self) -> u32 {
        self.version.load(Ordering::Relaxed)
    }
    fn models(&self) -> &'static [&'static str] {
        self.models
    }
    fn apply(&self, applied: Applied<'_>, documents: &mut Documents<'_>) -> Result<(), Error> {
        let (model, key) = (self.models[0], format!("{}/count", applied.tenant));
        let count: u64 = documents.get(model, &key)?.unwrap_or(0);
        documents.put(model, &key, count + 1)
    }
}

/// Counts acme's events and ignores every other tenant's, as a read model ignores the events it
/// has no rule for.
#[derive(Debug)]
struct AcmeOnly;

impl Projection for AcmeOnly {
    fn name(&self) -> &'static str {
        "acme-only"
    }
    fn version(&self) -> u32 {
        1
    }
    fn models(&self) -> &'static [&'static str] {
        &["count"]
    }
    fn apply(&self, applied: Applied<'_>, documents: &mut Documents<'_>) -> Result<(), Error> {
        if applied.tenant != "acme" {
            return Ok(());
        }
        let count: u64 = documents.get("count", "acme/count")?.unwrap_or(0);
        documents.put("count", "acme/count", count + 1)
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

/// The log of `store`, read by the runners given it.
fn shared_log(store: &EmbeddedStore) -> SharedLog {
    SharedLog::new(Arc::new(store.clone()) as Arc<dyn EventStore>)
}

/// Starts running `projection` on `log`: its runner and its task.
fn start(
    log: &SharedLog,
    documents: &Arc<EmbeddedDocuments>,
    projection: Arc<dyn Projection>,
) -> (ProjectionRunner, tokio::task::JoinHandle<Result<(), Error>>) {
    let runner = ProjectionRunner::new(log.clone(), documents.clone());
    let task = tokio::spawn(runner.clone().run(projection));
    (runner, task)
}

/// Runs the projection until it has folded the store's head, then stops it.
async fn run_to_head(
    store: &EmbeddedStore,
    documents: Arc<EmbeddedDocuments>,
    projection: Arc<dyn Projection>,
) {
    let (runner, task) = start(&shared_log(store), &documents, projection);
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

/// Waits until every runner has folded up to `head`.
async fn all_at<T>(running: &[(ProjectionRunner, T)], head: Option<ledger_store::Position>) {
    let waits = (running.iter()).map(|(runner, _)| runner.wait_for(head, Duration::from_secs(30)));
    let reached = futures::future::join_all(waits).await;
    assert!(reached.iter().all(|r| *r), "{reached:?}");
}

fn count(documents: &EmbeddedDocuments, tenant: &str) -> u64 {
    counted(documents, "count", tenant)
}

fn counted(documents: &EmbeddedDocuments, model: &str, tenant: &str) -> u64 {
    let body = documents.get(model, &format!("{tenant}/count")).unwrap();
    body.map_or(0, |body| ledger_projections::decode(&body).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_neither_lose_nor_double_an_event() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path().join("log")).unwrap();
    let counter = Counter::new("counter", &["count"]);
    let documents = Arc::new(EmbeddedDocuments::open(dir.path(), &[counter.as_ref()]).unwrap());
    append_units(&store, "acme", 0, 1500).await;
    append_units(&store, "globex", 0, 20).await;
    // Stopped in the middle of catching up, then started again.
    let (runner, task) = start(&shared_log(&store), &documents, counter.clone());
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

    // A tenant's change feed holds each of its documents once, at its latest change.
    let changes = |tenant: &str, after: u64| -> Vec<(String, u64)> {
        (documents.changes(tenant, after, 100).unwrap().into_iter())
            .map(|c| (format!("{}:{}", c.model, c.key), c.seq))
            .collect()
    };
    let acme = changes("acme", 0);
    let keys: Vec<_> = acme.iter().map(|(key, _)| key.as_str()).collect();
    assert_eq!(keys, ["count:acme/count"]);
    assert_eq!(changes("globex", 0)[0].0, "count:globex/count");
    assert!(
        changes("acme", acme[0].1).is_empty(),
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projections_reading_the_log_together_each_fold_every_event_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path().join("log")).unwrap();
    let counters = [
        Counter::new("first", &["first-count"]),
        Counter::new("second", &["second-count"]),
        Counter::new("late", &["late-count"]),
    ];
    let opened: Vec<&dyn Projection> = counters.iter().map(|c| c.as_ref() as _).collect();
    let documents = Arc::new(EmbeddedDocuments::open(dir.path(), &opened).unwrap());
    // `first` has folded part of the log already; `second` starts from zero.
    append_units(&store, "acme", 0, 1500).await;
    run_to_head(&store, documents.clone(), counters[0].clone()).await;
    append_units(&store, "acme", 1500, 1500).await;
    assert_eq!(counted(&documents, "first-count", "acme"), 1500);
    assert_eq!(counted(&documents, "second-count", "acme"), 0);

    let log = shared_log(&store);
    let running = [
        start(&log, &documents, counters[0].clone()),
        start(&log, &documents, counters[1].clone()),
    ];
    let head = store.head().await.unwrap();
    all_at(&running, head).await;
    // And live, as new events come.
    append_units(&store, "acme", 3000, 500).await;
    let head = store.head().await.unwrap();
    all_at(&running, head).await;
    // One that starts after the shared reading has moved on reads on its own up to the head,
    // then follows with the others.
    let late = start(&log, &documents, counters[2].clone());
    assert!(late.0.wait_for(head, Duration::from_secs(30)).await);
    append_units(&store, "acme", 3500, 100).await;
    let head = store.head().await.unwrap();
    let [first, second] = running;
    let running = [first, second, late];
    all_at(&running, head).await;
    for model in ["first-count", "second-count", "late-count"] {
        assert_eq!(counted(&documents, model, "acme"), 3600, "{model}");
    }
    for (_, task) in running {
        task.abort();
        let _ = task.await;
    }
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_folds_commit_as_events_come_under_a_steady_write_load() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path().join("log")).unwrap();
    let counter = Counter::new("counter", &["count"]);
    let documents = Arc::new(EmbeddedDocuments::open(dir.path(), &[counter.as_ref()]).unwrap());
    append_units(&store, "acme", 0, 10).await;
    let (runner, task) = start(&shared_log(&store), &documents, counter.clone());
    assert!(
        runner
            .wait_for(store.head().await.unwrap(), Duration::from_secs(30))
            .await
    );
    // New events every moment for two seconds: the log's head never stands still, yet what has
    // come is committed every live commit interval (100 ms), not after a second of folding or a
    // full page.
    let mut status = runner.status();
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                let started = std::time::Instant::now();
                let mut i = 0;
                while started.elapsed() < Duration::from_secs(2) {
                    append_units(&store, "acme", 10 + w * 1_000_000 + i, 1).await;
                    i += 1;
                }
                i
            })
        })
        .collect();
    let writing = tokio::spawn(async move {
        let mut written = 0;
        for writer in writers {
            written += writer.await.unwrap();
        }
        written
    });
    let mut commits = 0;
    while !writing.is_finished() {
        if tokio::time::timeout(Duration::from_millis(100), status.changed())
            .await
            .is_ok()
        {
            commits += 1;
        }
    }
    let written = writing.await.unwrap() as u64;
    assert!(
        commits >= 10,
        "{commits} commits while {written} events came"
    );
    assert!(
        runner
            .wait_for(store.head().await.unwrap(), Duration::from_secs(30))
            .await
    );
    assert_eq!(count(&documents, "acme"), 10 + written);
    task.abort();
    let _ = task.await;
    store.close().await.unwrap();
}

/// Live, a fold holds its changes for the live commit interval, but a query waiting for them
/// has them committed at once; nothing folded is lost when it stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_changes_wait_for_their_interval_unless_a_query_waits() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path().join("log")).unwrap();
    let counter = Counter::new("counter", &["count"]);
    let documents = Arc::new(EmbeddedDocuments::open(dir.path(), &[counter.as_ref()]).unwrap());
    let stored = |documents: &EmbeddedDocuments| {
        let checkpoint = documents.checkpoint(counter.name()).unwrap();
        checkpoint.map(|c| c.position)
    };
    let runner = ProjectionRunner::new(shared_log(&store), documents.clone())
        .committing_live_every(Duration::from_secs(3600));
    let task = tokio::spawn(runner.clone().run(counter.clone()));
    append_units(&store, "acme", 0, 1).await;
    let first = store.head().await.unwrap();
    let patience = Duration::from_secs(30);
    assert!(runner.wait_for(first, patience).await);
    assert_eq!(stored(&documents), first);
    append_units(&store, "acme", 1, 1).await;
    let second = store.head().await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(runner.status().borrow().position, first, "published early");
    assert_eq!(stored(&documents), first, "committed early");

    let asked = std::time::Instant::now();
    assert!(runner.wait_for(second, patience).await);
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "{:?}",
        asked.elapsed()
    );
    assert_eq!(stored(&documents), second);
    assert_eq!(count(&documents, "acme"), 2);

    // Held changes are committed when the fold stops (the store closing ends its pages).
    append_units(&store, "acme", 2, 1).await;
    let third = store.head().await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(stored(&documents), second, "committed early");
    store.close().await.unwrap();
    tokio::time::timeout(patience, task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(stored(&documents), third);
    assert_eq!(count(&documents, "acme"), 3);
}

/// On a quiet log, held live changes are committed and published when their interval has
/// passed, though no page and no query comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_live_changes_are_published_when_their_interval_passes() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path().join("log")).unwrap();
    let counter = Counter::new("counter", &["count"]);
    let documents = Arc::new(EmbeddedDocuments::open(dir.path(), &[counter.as_ref()]).unwrap());
    let runner = ProjectionRunner::new(shared_log(&store), documents.clone())
        .committing_live_every(Duration::from_millis(300));
    let task = tokio::spawn(runner.clone().run(counter.clone()));
    let mut status = runner.status();
    for i in 0..3 {
        append_units(&store, "acme", i, 1).await;
        let head = store.head().await.unwrap();
        let published = status.wait_for(|s| s.position >= head);
        let waited = tokio::time::timeout(Duration::from_secs(30), published).await;
        assert!(waited.is_ok(), "event {i} not published");
        let checkpoint = documents.checkpoint(counter.name()).unwrap();
        assert_eq!(checkpoint.map(|c| c.position), head);
        assert_eq!(count(&documents, "acme"), i as u64 + 1);
    }
    task.abort();
    let _ = task.await;
    store.close().await.unwrap();
}

/// A projection whose checkpoint is already at the head when it starts has caught up, though no
/// event comes to say so (readiness and the load generator wait for it), and so has one on an
/// empty log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projection_starting_at_the_head_reports_caught_up_without_new_events() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path().join("log")).unwrap();
    let counter = Counter::new("counter", &["count"]);
    let documents = Arc::new(EmbeddedDocuments::open(dir.path(), &[counter.as_ref()]).unwrap());
    let caught_up = |runner: ProjectionRunner| async move {
        let mut status = runner.status();
        let reported = status.wait_for(|s| s.caught_up && s.running_here);
        tokio::time::timeout(Duration::from_secs(10), reported)
            .await
            .is_ok()
    };

    let (runner, task) = start(&shared_log(&store), &documents, counter.clone());
    assert!(caught_up(runner).await, "on an empty log");
    task.abort();
    let _ = task.await;

    append_units(&store, "acme", 0, 50).await;
    run_to_head(&store, documents.clone(), counter.clone()).await;
    let (runner, task) = start(&shared_log(&store), &documents, counter.clone());
    assert!(caught_up(runner).await, "at the head");
    task.abort();
    let _ = task.await;
    store.close().await.unwrap();
}

/// Read models whose first `failures` commits fail, as a storage fault would.
#[derive(Debug)]
struct Flaky {
    inner: EmbeddedDocuments,
    failures: std::sync::atomic::AtomicUsize,
}

impl DocumentStore for Flaky {
    fn checkpoint(&self, projection: &str) -> Result<Option<Checkpoint>, Error> {
        self.inner.checkpoint(projection)
    }
    fn get(&self, model: &str, key: &str) -> Result<Option<Vec<u8>>, Error> {
        self.inner.get(model, key)
    }
    fn scan_range(
        &self,
        model: &str,
        from: &str,
        until: &str,
    ) -> Result<Vec<(String, Vec<u8>)>, Error> {
        self.inner.scan_range(model, from, until)
    }
    fn commit(
        &self,
        projection: &str,
        from: Option<Checkpoint>,
        to: Checkpoint,
        writes: &[Write],
        followed: &[&str],
    ) -> Result<(), Error> {
        let failing = (self.failures)
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| {
                left.checked_sub(1)
            })
            .is_ok();
        if failing {
            return Err(Error::Database("the disk is having a moment".into()));
        }
        self.inner.commit(projection, from, to, writes, followed)
    }
    fn changes(&self, tenant: &str, after: u64, limit: usize) -> Result<Vec<Change>, Error> {
        self.inner.changes(tenant, after, limit)
    }
    fn reset(&self, projection: &str, models: &[&str]) -> Result<(), Error> {
        self.inner.reset(projection, models)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projection_resumes_after_failed_commits_and_folds_each_event_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path().join("log")).unwrap();
    let counter = Counter::new("counter", &["count"]);
    let documents = Arc::new(Flaky {
        inner: EmbeddedDocuments::open(dir.path(), &[counter.as_ref()]).unwrap(),
        failures: std::sync::atomic::AtomicUsize::new(2),
    });
    append_units(&store, "acme", 0, 300).await;
    let runner = ProjectionRunner::new(shared_log(&store), documents.clone());
    let task = tokio::spawn(runner.clone().keep_running(counter.clone()));
    // Two failures: resumed after a pause of 1 s, then of 2 s.
    let head = store.head().await.unwrap();
    assert!(runner.wait_for(head, Duration::from_secs(20)).await);
    assert_eq!(documents.failures.load(Ordering::Acquire), 0);
    // And it follows the log on from there.
    append_units(&store, "acme", 300, 50).await;
    let head = store.head().await.unwrap();
    assert!(runner.wait_for(head, Duration::from_secs(20)).await);
    assert_eq!(counted(&documents.inner, "count", "acme"), 350);
    store.close().await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("it stops when the store closes")
        .unwrap();
}

/// Live pages that change no document (another tenant's events here; access records in the
/// service) move the projection's position without a commit; the next change commits it all,
/// and a restart in between folds them again without effect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_page_that_changes_nothing_is_published_without_a_commit() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path().join("log")).unwrap();
    let documents = Arc::new(EmbeddedDocuments::open(dir.path(), &[&AcmeOnly]).unwrap());
    let stored = |documents: &EmbeddedDocuments| {
        let checkpoint = documents.checkpoint(AcmeOnly.name()).unwrap();
        checkpoint.map(|c| c.position)
    };
    let patience = Duration::from_secs(30);
    let (runner, task) = start(&shared_log(&store), &documents, Arc::new(AcmeOnly));
    append_units(&store, "acme", 0, 1).await;
    let changed = store.head().await.unwrap();
    assert!(runner.wait_for(changed, patience).await);
    assert_eq!(stored(&documents), changed);

    append_units(&store, "quiet", 0, 5).await;
    let quiet = store.head().await.unwrap();
    assert!(runner.wait_for(quiet, patience).await);
    assert_eq!(
        stored(&documents),
        changed,
        "committed pages that changed nothing"
    );
    task.abort();
    let _ = task.await;

    let (runner, task) = start(&shared_log(&store), &documents, Arc::new(AcmeOnly));
    assert!(runner.wait_for(quiet, patience).await, "after a restart");
    assert_eq!(count(&documents, "acme"), 1);
    append_units(&store, "acme", 1, 1).await;
    let head = store.head().await.unwrap();
    assert!(runner.wait_for(head, patience).await);
    assert_eq!(
        stored(&documents),
        head,
        "the change commits what was folded before it"
    );
    assert_eq!(count(&documents, "acme"), 2);
    task.abort();
    let _ = task.await;
    store.close().await.unwrap();
}
