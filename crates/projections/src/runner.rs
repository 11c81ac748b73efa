//! The projection runner: follows the global log from a projection's checkpoint, in batches,
//! and commits each batch's document changes with the new checkpoint in one transaction.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use ledger_domain::{Event, Micros};
use ledger_store::{EventStore, Position, RecordedEvent};
use tokio::sync::watch;
use uuid::Uuid;

use crate::documents::{Checkpoint, DocumentStore, Documents, Error, Lease};

/// At most this many events per transaction.
const BATCH: usize = 16_384;
/// How often a replica that does not run a projection looks at its checkpoint and asks for it.
const STANDBY_POLL: Duration = Duration::from_millis(500);
/// How long a batch waits for the log's next page.
const PAGE_WAIT: Duration = Duration::from_millis(2);

/// One event as a projection sees it.
#[derive(Debug, Clone, Copy)]
pub struct Applied<'a> {
    pub event: &'a Event,
    pub id: Uuid,
    /// The tenant of the event's stream.
    pub tenant: &'a str,
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
    store: Arc<dyn EventStore>,
    documents: Arc<dyn DocumentStore>,
    status: watch::Sender<ProjectionStatus>,
}

impl ProjectionRunner {
    pub fn new(store: Arc<dyn EventStore>, documents: Arc<dyn DocumentStore>) -> Self {
        Self {
            store,
            documents,
            status: watch::channel(ProjectionStatus::default()).0,
        }
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
        let mut status = self.status.subscribe();
        let reached = status.wait_for(|s| s.position.is_some_and(|p| p >= position));
        tokio::time::timeout(patience, reached)
            .await
            .is_ok_and(|r| r.is_ok())
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
                let head = self.store.head().await.ok().flatten();
                self.status.send_if_modified(|status| {
                    let before = *status;
                    status.position = Some(checkpoint.position);
                    status.caught_up |= head.is_some_and(|head| checkpoint.position >= head);
                    *status != before
                });
            }
            tokio::time::sleep(STANDBY_POLL).await;
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
        self.status.send_replace(ProjectionStatus {
            position: checkpoint.map(|c| c.position),
            caught_up: false,
            running_here: true,
        });
        loop {
            let mut events = self.store.subscribe_all(checkpoint.map(|c| c.position));
            loop {
                let first = match events.next().await {
                    Some(Ok(event)) => event,
                    Some(Err(ledger_store::Error::Closed)) | None => return Ok(()),
                    Some(Err(error)) => {
                        tracing::warn!(projection = name, %error, "projection lost the log; resubscribing");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        break;
                    }
                };
                let mut batch = vec![first];
                let mut drained = false;
                // Catching up, the next page is a moment away: wait that moment for a fuller
                // batch. Live, the log has nothing more and the batch goes at once.
                while batch.len() < BATCH {
                    match tokio::time::timeout(PAGE_WAIT, events.next()).await {
                        Ok(Some(Ok(event))) => batch.push(event),
                        _ => {
                            drained = true;
                            break;
                        }
                    }
                }
                let (documents, folding) = (self.documents.clone(), projection.clone());
                let from = checkpoint;
                match blocking(move || fold(documents.as_ref(), folding.as_ref(), from, &batch))
                    .await
                {
                    Ok(to) => checkpoint = Some(to),
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
                        break;
                    }
                    Err(error) => return Err(error),
                }
                self.status.send_modify(|status| {
                    status.position = checkpoint.map(|c| c.position);
                    status.caught_up |= drained;
                });
            }
        }
    }
}

/// Folds a batch and commits it with the checkpoint; returns the new checkpoint.
pub(crate) fn fold(
    store: &dyn DocumentStore,
    projection: &dyn Projection,
    from: Option<Checkpoint>,
    batch: &[RecordedEvent],
) -> Result<Checkpoint, Error> {
    let mut documents = Documents::new(store);
    for recorded in batch {
        let Some((tenant, _)) = recorded.stream.as_str().split_once('/') else {
            continue;
        };
        let event = Event::decode(&recorded.event_type, &recorded.payload).map_err(|e| {
            Error::Event(format!(
                "{} at {}: {e}",
                recorded.event_type, recorded.position
            ))
        })?;
        let Some(event) = event else { continue };
        let applied = Applied {
            event: &event,
            id: recorded.id,
            tenant,
            recorded_at: recorded.recorded_at.as_micros(),
            position: recorded.position,
        };
        projection.apply(applied, &mut documents)?;
    }
    let position = batch.last().expect("batches are not empty").position;
    let to = Checkpoint {
        version: projection.version(),
        position,
    };
    let writes = documents.into_writes()?;
    store.commit(projection.name(), from, to, &writes, projection.followed())?;
    Ok(to)
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(work)
        .await
        .expect("projection work does not panic")
}
