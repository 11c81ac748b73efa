//! The projection runner: follows the global log from a projection's checkpoint, in batches,
//! and commits each batch's document changes with the new checkpoint in one transaction.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ledger_domain::{Event, Micros};
use ledger_store::{Position, RecordedEvent};
use tokio::sync::{Notify, mpsc, watch};
use uuid::Uuid;

use crate::documents::{Checkpoint, DocumentStore, Documents, Error, Lease, Write};
use crate::feed::{Fed, LogPage, Page, SharedLog};

/// While catching up, a commit covers this many events (unless set otherwise) or this long
/// folding, whichever comes first: each commit rewrites every B-tree page its documents touch,
/// so fewer, larger commits write far less. Live (a page that reached the log's head), see
/// [`LIVE_COMMIT_INTERVAL`].
pub const DEFAULT_COMMIT_EVENTS: usize = 65_536;
const COMMIT_INTERVAL: Duration = Duration::from_millis(1000);
/// Live, a fold commits at most this often unless a query waits for what it folded: a
/// commit per 10 ms page rewrote the same pages again and again (a tenth of the server's CPU
/// under a steady write load), and subscribers and `current` queries can wait this long.
const LIVE_COMMIT_INTERVAL: Duration = Duration::from_millis(100);
/// Documents a fold keeps decoded between commits: live, a member's next command finds the
/// documents its last one changed (a few hundred bytes each); catching up, far more pass
/// through, and the cache is emptied at each commit.
const KEPT_DOCUMENTS: usize = 16_384;
/// How often a replica that does not run a projection looks at its checkpoint and asks for it.
const STANDBY_POLL: Duration = Duration::from_millis(500);
/// After a failure a projection resumes this long after, the pause doubling while it keeps
/// failing, up to [`RESUME_AT_MOST`].
const RESUME_AFTER: Duration = Duration::from_secs(1);
const RESUME_AT_MOST: Duration = Duration::from_secs(30);

/// One event as a projection sees it.
#[derive(Debug, Clone, Copy)]
pub struct Applied<'a> {
    pub event: &'a Event,
    pub id: Uuid,
    /// The tenant of the event's stream.
    pub tenant: &'a str,
    pub stream: &'a str,
    pub recorded_at: Micros,
    pub position: Position,
}

/// A read model's fold. `apply` is called once per event, in global order; its document
/// changes commit with the checkpoint after the event.
pub trait Projection: Send + Sync + 'static {
    /// Names the projection's checkpoint.
    fn name(&self) -> &'static str;
    /// Bump when the fold changes: the projection is then rebuilt from position zero.
    fn version(&self) -> u32;
    /// The document models it owns (deleted on a rebuild).
    fn models(&self) -> &'static [&'static str];
    /// The models whose changes subscribers follow (the change feed); all unless narrowed.
    /// Internal indexes left out cost the store less on every write.
    fn followed(&self) -> &'static [&'static str] {
        self.models()
    }
    fn apply(&self, event: Applied<'_>, documents: &mut Documents<'_>) -> Result<(), Error>;
}

/// Where a projection stands: the last position folded and how far the log is ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProjectionStatus {
    pub position: Option<Position>,
    /// True once the projection has caught up with the log at least once since start.
    pub caught_up: bool,
    /// Whether this process runs it (holds its lease); otherwise another replica does.
    pub running_here: bool,
}

/// Runs one projection.
#[derive(Debug, Clone)]
pub struct ProjectionRunner {
    log: SharedLog,
    documents: Arc<dyn DocumentStore>,
    status: watch::Sender<ProjectionStatus>,
    waiting: Arc<Waiting>,
    commit_events: usize,
    live_commit_interval: Duration,
}

/// The queries waiting for positions the projection has yet to publish: a live fold holding
/// its changes commits them at once when one comes.
#[derive(Debug, Default)]
struct Waiting {
    queries: AtomicUsize,
    /// Told when a query begins to wait (a permit kept if the fold is not listening).
    arrived: Notify,
}

/// A query's wait, counted until dropped.
struct Wait<'a>(&'a Waiting);

impl<'a> Wait<'a> {
    fn begin(waiting: &'a Waiting) -> Self {
        waiting.queries.fetch_add(1, Ordering::SeqCst);
        waiting.arrived.notify_one();
        Self(waiting)
    }
}

impl Drop for Wait<'_> {
    fn drop(&mut self) {
        self.0.queries.fetch_sub(1, Ordering::SeqCst);
    }
}

impl ProjectionRunner {
    pub fn new(log: SharedLog, documents: Arc<dyn DocumentStore>) -> Self {
        Self {
            log,
            documents,
            status: watch::channel(ProjectionStatus::default()).0,
            waiting: Arc::default(),
            commit_events: DEFAULT_COMMIT_EVENTS,
            live_commit_interval: LIVE_COMMIT_INTERVAL,
        }
    }

    /// While catching up, commits every `events` events (or each second) instead of every
    /// [`DEFAULT_COMMIT_EVENTS`]: fewer to fold again after a crash, more to write.
    pub fn committing_every(mut self, events: usize) -> Self {
        self.commit_events = events.max(1);
        self
    }

    /// Live, commits at most every `interval` (unless a query waits) instead of every
    /// [`LIVE_COMMIT_INTERVAL`].
    pub fn committing_live_every(mut self, interval: Duration) -> Self {
        self.live_commit_interval = interval;
        self
    }

    /// Watches the projection's progress.
    pub fn status(&self) -> watch::Receiver<ProjectionStatus> {
        self.status.subscribe()
    }

    /// Waits until the projection has folded the log up to `position` (nothing when `None`).
    pub async fn wait_for(&self, position: Option<Position>, patience: Duration) -> bool {
        let Some(position) = position else {
            return true;
        };
        let reached = |s: &ProjectionStatus| s.position.is_some_and(|p| p >= position);
        let mut status = self.status.subscribe();
        if reached(&status.borrow()) {
            return true;
        }
        let _wait = Wait::begin(&self.waiting);
        tokio::time::timeout(patience, status.wait_for(reached))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Whether `position` is at the log's head (or the log is empty); `false` if the store does
    /// not say where its head is.
    async fn at_head(&self, position: Option<Position>) -> bool {
        (self.log.store().head().await).is_ok_and(|head| position >= head)
    }

    /// Until this process holds the projection's lease, follows the checkpoint that the holder
    /// moves (so queries here wait for the right thing), trying for the lease every moment.
    async fn stand_by(&self, name: &'static str) -> Lease {
        let mut announced = false;
        loop {
            let documents = self.documents.clone();
            match blocking(move || documents.lease(name)).await {
                Ok(Some(lease)) => return lease,
                Ok(None) if !announced => {
                    tracing::info!(
                        projection = name,
                        "another replica runs the projection; standing by"
                    );
                    announced = true;
                }
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(projection = name, %error, "cannot ask for the projection's lease")
                }
            }
            let documents = self.documents.clone();
            if let Ok(Some(checkpoint)) = blocking(move || documents.checkpoint(name)).await {
                let at_head = self.at_head(Some(checkpoint.position)).await;
                self.status.send_if_modified(|status| {
                    let before = *status;
                    status.position = Some(checkpoint.position);
                    status.caught_up |= at_head;
                    *status != before
                });
            }
            tokio::time::sleep(STANDBY_POLL).await;
        }
    }

    /// Runs the projection until the store closes, resuming from its stored checkpoint after a
    /// failure (a storage error, say), so that a passing fault does not leave its read model
    /// behind until the process restarts. Each failure is logged; the pause before resuming
    /// doubles while it keeps failing.
    pub async fn keep_running(self, projection: Arc<dyn Projection>) {
        let mut pause = RESUME_AFTER;
        loop {
            let started = Instant::now();
            let Err(error) = self.clone().run(projection.clone()).await else {
                return;
            };
            if started.elapsed() > RESUME_AT_MOST {
                pause = RESUME_AFTER;
            }
            tracing::error!(
                %error,
                projection = projection.name(),
                resume_in = ?pause,
                "projection failed; resuming from its checkpoint"
            );
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(RESUME_AT_MOST);
        }
    }

    /// Follows the log until the store closes, once this process holds the projection's lease.
    /// Rebuilds from zero if the stored checkpoint is of another version.
    pub async fn run(self, projection: Arc<dyn Projection>) -> Result<(), Error> {
        let name = projection.name();
        let _lease = self.stand_by(name).await;
        self.status.send_modify(|status| status.running_here = true);
        let documents = self.documents.clone();
        let mut checkpoint = blocking(move || documents.checkpoint(name)).await?;
        if checkpoint.is_some_and(|c| c.version != projection.version()) || checkpoint.is_none() {
            if checkpoint.is_some() {
                tracing::info!(
                    projection = name,
                    "projection changed; rebuilding from the start"
                );
            }
            let (documents, models) = (self.documents.clone(), projection.models());
            blocking(move || documents.reset(name, models)).await?;
            checkpoint = None;
        }
        // No page may come to say so: a projection at the head (or on an empty log) has caught up.
        let position = checkpoint.map(|c| c.position);
        self.status.send_replace(ProjectionStatus {
            position,
            caught_up: self.at_head(position).await,
            running_here: true,
        });
        loop {
            // Reading the log and folding run side by side: the next page is read while the
            // last one folds.
            let (pages, received) = mpsc::channel(2);
            let folder = {
                let folding = Folding {
                    documents: self.documents.clone(),
                    status: self.status.clone(),
                    waiting: self.waiting.clone(),
                    commit_events: self.commit_events,
                    live_commit_interval: self.live_commit_interval,
                    runtime: tokio::runtime::Handle::current(),
                };
                let projection = projection.clone();
                tokio::task::spawn_blocking(move || {
                    folding.fold_pages(projection.as_ref(), checkpoint, received)
                })
            };
            let fed = (self.log)
                .feed(name, checkpoint.map(|c| c.position), pages)
                .await;
            match folder.await.expect("folding does not panic") {
                Ok(folded) => checkpoint = folded,
                Err(Error::Conflict) => {
                    // Another runner got there first: continue from where it left the documents.
                    tracing::warn!(
                        projection = name,
                        "projection checkpoint moved elsewhere; resuming from it"
                    );
                    let documents = self.documents.clone();
                    checkpoint = blocking(move || documents.checkpoint(name)).await?;
                    let position = checkpoint.map(|c| c.position);
                    self.status.send_modify(|status| status.position = position);
                    continue;
                }
                Err(error) => return Err(error),
            }
            match fed {
                Fed::Closed => return Ok(()),
                Fed::Lost => tokio::time::sleep(Duration::from_secs(1)).await,
                Fed::Stopped => {}
            }
        }
    }
}

/// What comes next to a live fold holding its changes.
enum Next {
    Page(Page),
    /// The held changes are due: the live commit interval passed, or a query waits.
    Due,
    Closed,
}

/// What a fold's thread takes of its runner: not the log, whose shared reading ends with the
/// runner's last clone and so ends the fold.
struct Folding {
    documents: Arc<dyn DocumentStore>,
    status: watch::Sender<ProjectionStatus>,
    waiting: Arc<Waiting>,
    commit_events: usize,
    live_commit_interval: Duration,
    runtime: tokio::runtime::Handle,
}

impl Folding {
    /// Folds pages as they come and commits them: catching up, after `commit_events` events or
    /// [`COMMIT_INTERVAL`]; live (the log drained), once the live commit interval has passed
    /// since the last commit, or at once when a query waits for what was folded. A live page
    /// that changed no document (a page of access records, say) is published without a commit:
    /// the documents already stand at its end, and the checkpoint follows with the next commit;
    /// a restart folds such events again, changing nothing. Catching up, a commit runs on a
    /// thread of its own while the next events fold (the documents it writes stay cached until
    /// it is done, so the fold never reads around it). Returns the checkpoint reached.
    fn fold_pages(
        &self,
        projection: &dyn Projection,
        checkpoint: Option<Checkpoint>,
        mut pages: mpsc::Receiver<Page>,
    ) -> Result<Option<Checkpoint>, Error> {
        let store = self.documents.as_ref();
        let reached = |position: Position, drained: bool| {
            self.status.send_modify(|status| {
                status.position = Some(position);
                status.caught_up |= drained;
            });
        };
        std::thread::scope(|scope| {
            let mut documents = Documents::new(store);
            let mut window = Window::after(checkpoint);
            let mut in_flight: Option<std::thread::ScopedJoinHandle<'_, _>> = None;
            let finish = |in_flight: Option<std::thread::ScopedJoinHandle<'_, _>>| {
                if let Some(commit) = in_flight {
                    let to: Checkpoint = commit.join().expect("committing does not panic")?;
                    reached(to.position, false);
                }
                Ok::<_, Error>(())
            };
            // Live changes folded and not yet committed.
            let mut held = false;
            loop {
                let next = if held {
                    self.next_before_due(&mut pages, window.opened)
                } else {
                    pages.blocking_recv().map_or(Next::Closed, Next::Page)
                };
                let drained = match next {
                    Next::Page(page) => {
                        held = false;
                        window.apply(projection, &mut documents, &page.log, page.skip)?;
                        let full = window.events >= self.commit_events
                            || window.opened.elapsed() >= COMMIT_INTERVAL;
                        if !page.drained && !full {
                            continue;
                        }
                        finish(in_flight.take())?;
                        if page.drained && !full {
                            if !documents.changed() {
                                if let Some(last) = window.last {
                                    reached(last, true);
                                }
                                continue;
                            }
                            held = self.waiting.queries.load(Ordering::SeqCst) == 0
                                && window.opened.elapsed() < self.live_commit_interval;
                            if held {
                                continue;
                            }
                        }
                        page.drained
                    }
                    Next::Due => {
                        held = false;
                        true
                    }
                    Next::Closed => break,
                };
                documents.forget_written_beyond(KEPT_DOCUMENTS);
                let commit = window.close(projection, &mut documents)?;
                if drained {
                    reached(commit.run(store, projection)?.position, true);
                } else {
                    in_flight = Some(scope.spawn(move || commit.run(store, projection)));
                }
            }
            finish(in_flight.take())?;
            if window.events > 0 {
                let to = window
                    .close(projection, &mut documents)?
                    .run(store, projection)?;
                reached(to.position, held);
            }
            Ok(window.from)
        })
    }

    /// The next page, unless the changes held since `opened` fall due before it comes.
    fn next_before_due(&self, pages: &mut mpsc::Receiver<Page>, opened: Instant) -> Next {
        let due = tokio::time::Instant::from_std(opened + self.live_commit_interval);
        self.runtime.block_on(async {
            loop {
                tokio::select! {
                    biased;
                    page = pages.recv() => return page.map_or(Next::Closed, Next::Page),
                    // The permit of a query served since may be left: only a waiting one counts.
                    () = self.waiting.arrived.notified() => {
                        if self.waiting.queries.load(Ordering::SeqCst) > 0 {
                            return Next::Due;
                        }
                    }
                    () = tokio::time::sleep_until(due) => return Next::Due,
                }
            }
        })
    }
}

/// The events folded since the last commit.
struct Window {
    /// The checkpoint the next commit moves from.
    from: Option<Checkpoint>,
    last: Option<Position>,
    events: usize,
    opened: Instant,
}

/// One window's writes, to commit with the checkpoint after its last event.
struct Commit {
    from: Option<Checkpoint>,
    to: Checkpoint,
    /// The events folded into the writes.
    events: usize,
    writes: Vec<Write>,
}

impl Commit {
    fn run(
        self,
        store: &dyn DocumentStore,
        projection: &dyn Projection,
    ) -> Result<Checkpoint, Error> {
        let _span = tracing::info_span!(
            "projection.commit",
            projection = projection.name(),
            events = self.events,
            documents = self.writes.len()
        )
        .entered();
        store.commit(
            projection.name(),
            self.from,
            self.to,
            &self.writes,
            projection.followed(),
        )?;
        Ok(self.to)
    }
}

impl Window {
    fn after(from: Option<Checkpoint>) -> Self {
        Self {
            from,
            last: None,
            events: 0,
            opened: Instant::now(),
        }
    }

    /// Folds the page's events after the first `skip`.
    fn apply(
        &mut self,
        projection: &dyn Projection,
        documents: &mut Documents<'_>,
        page: &LogPage,
        skip: usize,
    ) -> Result<(), Error> {
        let decoded = page.decoded();
        for (recorded, event) in page.events.iter().zip(decoded).skip(skip) {
            self.last = Some(recorded.position);
            self.events += 1;
            let Some((tenant, _)) = recorded.stream.as_str().split_once('/') else {
                continue;
            };
            let Some(event) = event.as_ref().map_err(|e| Error::Event(e.clone()))? else {
                continue;
            };
            let applied = Applied {
                event,
                id: recorded.id,
                tenant,
                stream: recorded.stream.as_str(),
                recorded_at: recorded.recorded_at.as_micros(),
                position: recorded.position,
            };
            projection.apply(applied, documents)?;
        }
        // A commit may follow, and a read begun before it would not see it.
        documents.end_reads();
        Ok(())
    }

    /// The window's commit; the next window opens after it.
    fn close(
        &mut self,
        projection: &dyn Projection,
        documents: &mut Documents<'_>,
    ) -> Result<Commit, Error> {
        let to = Checkpoint {
            version: projection.version(),
            position: self.last.expect("a commit follows at least one event"),
        };
        let commit = Commit {
            from: self.from,
            to,
            events: self.events,
            writes: documents.take_writes()?,
        };
        *self = Self::after(Some(to));
        Ok(commit)
    }
}

/// Folds a batch and commits it with the checkpoint; returns the new checkpoint.
pub(crate) fn fold(
    store: &dyn DocumentStore,
    projection: &dyn Projection,
    from: Option<Checkpoint>,
    batch: Vec<RecordedEvent>,
) -> Result<Checkpoint, Error> {
    let mut documents = Documents::new(store);
    let mut window = Window::after(from);
    window.apply(projection, &mut documents, &LogPage::new(batch), 0)?;
    window
        .close(projection, &mut documents)?
        .run(store, projection)
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(work)
        .await
        .expect("projection work does not panic")
}
