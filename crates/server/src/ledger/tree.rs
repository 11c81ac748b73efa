//! The per-tenant Merkle trees, maintained as the log grows: a follower reads the global log from
//! its checkpoint and stores, per tenant, every complete subtree hash and every leaf's global
//! position, committing them with its checkpoint in one transaction (`DATA_DIR/audit.db`).
//! Roots and proofs then need O(log² n) lookups, never a recomputation. The trees are derived
//! from the log: delete the file and they are rebuilt from it.

use std::collections::HashMap;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::stream::Peekable;
use futures::{FutureExt, Stream, StreamExt};
use ledger_audit::{Frontier, Hash, ProofError, Subtrees, event_leaf_hash};
use ledger_store::{EventStore, Position, RecordedEvent};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use tokio::sync::{Notify, watch};

/// At most this many events are folded per transaction.
const BATCH: usize = 4096;
/// At the log's head (not while catching up) a batch also takes what arrives until this long
/// after the last commit, or until a request waits for the trees: each commit rewrites the tail
/// page of every tree level, so committing each few events the log publishes wrote about 5 KiB
/// per command (10 ms cost 2–9% more server CPU per command than 100 ms).
const GATHER: Duration = Duration::from_millis(100);

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS nodes (
        tenant TEXT NOT NULL, level INTEGER NOT NULL, idx INTEGER NOT NULL, hash BLOB NOT NULL,
        PRIMARY KEY (tenant, level, idx)
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS leaves (
        tenant TEXT NOT NULL, idx INTEGER NOT NULL, commit_pos INTEGER NOT NULL, prepare_pos INTEGER NOT NULL,
        PRIMARY KEY (tenant, idx)
    ) WITHOUT ROWID;
    CREATE INDEX IF NOT EXISTS leaves_by_position ON leaves (commit_pos, prepare_pos);
    CREATE TABLE IF NOT EXISTS trees (tenant TEXT PRIMARY KEY, size INTEGER NOT NULL) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS follower (
        id INTEGER PRIMARY KEY CHECK (id = 1), commit_pos INTEGER NOT NULL, prepare_pos INTEGER NOT NULL
    );
";

/// Errors of the tree store.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    #[error(transparent)]
    Proof(#[from] ProofError),
    #[error("audit tree storage failed")]
    Storage(#[from] rusqlite::Error),
    #[error("a stored subtree hash is missing")]
    Missing,
}

/// The trees of every tenant. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AuditTrees {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    writer: Mutex<Connection>,
    reader: Mutex<Connection>,
    /// The last global position folded into the trees.
    covered: watch::Sender<Option<Position>>,
    /// Told when a request begins to wait for the trees: the batch gathering at the head commits
    /// at once (a permit left by a request served since only ends one gathering early).
    asked: Notify,
    gather: Duration,
}

/// A tenant's stored subtrees, read through one connection.
struct Stored<'a> {
    connection: &'a Connection,
    tenant: &'a str,
}

impl Subtrees for Stored<'_> {
    type Error = TreeError;

    fn subtree(&self, level: u32, index: u64) -> Result<Hash, TreeError> {
        let hash: Option<Vec<u8>> = self
            .connection
            .prepare_cached("SELECT hash FROM nodes WHERE tenant = ?1 AND level = ?2 AND idx = ?3")?
            .query_row(params![self.tenant, level, index as i64], |row| row.get(0))
            .optional()?;
        hash.and_then(|h| Hash::try_from(h).ok())
            .ok_or(TreeError::Missing)
    }
}

fn open_connection(path: &Path) -> rusqlite::Result<Connection> {
    let connection = Connection::open(path)?;
    connection.busy_timeout(Duration::from_secs(5))?;
    connection.pragma_update(None, "journal_mode", "WAL")?;
    // Derived data: a crash may lose the last batches, which the follower folds again from its
    // checkpoint (committed in the same transaction).
    connection.pragma_update(None, "synchronous", "NORMAL")?;
    Ok(connection)
}

/// Moves the events `events` has ready into `batch`, up to [`BATCH`]. An error (or the end)
/// stays in the stream for the follower's next `next`, which handles it.
fn take_ready<S>(events: &mut Peekable<S>, batch: &mut Vec<RecordedEvent>)
where
    S: Stream<Item = Result<RecordedEvent, ledger_store::Error>> + Unpin,
{
    while batch.len() < BATCH {
        let ready = Pin::new(&mut *events).peek().now_or_never();
        if !matches!(ready, Some(Some(Ok(_)))) {
            break;
        }
        if let Some(Some(Ok(event))) = events.next().now_or_never() {
            batch.push(event);
        }
    }
}

fn position_of(commit: i64, prepare: i64) -> Position {
    Position::new(commit as u64, prepare as u64)
}

impl AuditTrees {
    /// The file inside the data directory.
    pub const FILE_NAME: &str = "audit.db";

    pub fn open(data_dir: &Path) -> Result<Self, TreeError> {
        let path = data_dir.join(Self::FILE_NAME);
        let writer = open_connection(&path)?;
        writer.execute_batch(SCHEMA)?;
        let covered = writer
            .query_row(
                "SELECT commit_pos, prepare_pos FROM follower WHERE id = 1",
                [],
                |row| Ok(position_of(row.get(0)?, row.get(1)?)),
            )
            .optional()?;
        let reader = open_connection(&path)?;
        Ok(Self {
            inner: Arc::new(Inner {
                writer: Mutex::new(writer),
                reader: Mutex::new(reader),
                covered: watch::channel(covered).0,
                asked: Notify::new(),
                gather: GATHER,
            }),
        })
    }

    /// At the head, gathers for `gather` instead of [`GATHER`] (before the follower starts).
    #[cfg(test)]
    fn gathering_for(mut self, gather: Duration) -> Self {
        Arc::get_mut(&mut self.inner)
            .expect("no follower yet")
            .gather = gather;
        self
    }

    /// Follows the store's global log into the trees until the store closes.
    pub fn spawn_follower(&self, store: Arc<dyn EventStore>) -> tokio::task::JoinHandle<()> {
        let trees = self.clone();
        tokio::spawn(async move { trees.follow(store).await })
    }

    async fn follow(self, store: Arc<dyn EventStore>) {
        let mut frontiers: HashMap<String, Frontier> = HashMap::new();
        'subscribe: loop {
            let after = *self.inner.covered.borrow();
            let mut events = store.subscribe_all(after).peekable();
            let mut last_commit = tokio::time::Instant::now();
            loop {
                let mut batch = match events.next().await {
                    Some(Ok(event)) => vec![event],
                    Some(Err(ledger_store::Error::Closed)) | None => return,
                    Some(Err(error)) => {
                        tracing::warn!(%error, "audit tree follower lost the log; resubscribing");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue 'subscribe;
                    }
                };
                take_ready(&mut events, &mut batch);
                let last = batch.last().map(|event| event.position);
                // A full batch commits at once; only a smaller one asks where the head is.
                if batch.len() < BATCH && store.head().await.is_ok_and(|head| last >= head) {
                    tokio::select! {
                        () = tokio::time::sleep_until(last_commit + self.inner.gather) => {}
                        () = self.inner.asked.notified() => {}
                    }
                    take_ready(&mut events, &mut batch);
                }
                let trees = self.clone();
                let mut owned = std::mem::take(&mut frontiers);
                let folded = tokio::task::spawn_blocking(move || {
                    let result = trees.fold(&batch, &mut owned);
                    (result, owned)
                })
                .await;
                match folded {
                    Ok((Ok(position), kept)) => {
                        last_commit = tokio::time::Instant::now();
                        frontiers = kept;
                        self.inner.covered.send_replace(Some(position));
                    }
                    Ok((Err(error), _)) => {
                        // The in-memory frontiers may be ahead of what was stored: drop them.
                        tracing::error!(%error, "folding events into the audit trees failed; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue 'subscribe;
                    }
                    Err(panic) => {
                        tracing::error!(%panic, "the audit tree follower panicked");
                        return;
                    }
                }
            }
        }
    }

    /// Folds a batch into the trees in one transaction; returns the last position folded.
    fn fold(
        &self,
        batch: &[RecordedEvent],
        frontiers: &mut HashMap<String, Frontier>,
    ) -> Result<Position, TreeError> {
        let mut connection = self.inner.writer.lock().unwrap();
        // The write lock first: one asked for after a read fails at once, without the busy
        // timeout, if a reader holds it a moment (to re-read the WAL index's header).
        let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut touched = Vec::new();
        for event in batch {
            let Some((tenant, _)) = event.stream.as_str().split_once('/') else {
                tracing::warn!(stream = %event.stream, "event outside any tenant left out of the audit trees");
                continue;
            };
            if !frontiers.contains_key(tenant) {
                let size: Option<i64> = transaction
                    .query_row(
                        "SELECT size FROM trees WHERE tenant = ?1",
                        [tenant],
                        |row| row.get(0),
                    )
                    .optional()?;
                let stored = Stored {
                    connection: &transaction,
                    tenant,
                };
                frontiers.insert(
                    tenant.to_owned(),
                    Frontier::resume(&stored, size.unwrap_or(0) as u64)?,
                );
            }
            let frontier = frontiers.get_mut(tenant).expect("inserted above");
            let index = frontier.size();
            let mut insert_node = transaction.prepare_cached(
                "INSERT INTO nodes (tenant, level, idx, hash) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for (level, idx, hash) in frontier.push(event_leaf_hash(event)) {
                insert_node.execute(params![tenant, level, idx as i64, &hash[..]])?;
            }
            transaction
                .prepare_cached("INSERT INTO leaves (tenant, idx, commit_pos, prepare_pos) VALUES (?1, ?2, ?3, ?4)")?
                .execute(params![
                    tenant,
                    index as i64,
                    event.position.commit() as i64,
                    event.position.prepare() as i64
                ])?;
            if !touched.iter().any(|t| t == tenant) {
                touched.push(tenant.to_owned());
            }
        }
        for tenant in &touched {
            transaction.execute(
                "INSERT INTO trees (tenant, size) VALUES (?1, ?2) ON CONFLICT (tenant) DO UPDATE SET size = ?2",
                params![tenant, frontiers[tenant].size() as i64],
            )?;
        }
        let last = batch
            .last()
            .map(|event| event.position)
            .expect("batches are not empty");
        transaction.execute(
            "INSERT INTO follower (id, commit_pos, prepare_pos) VALUES (1, ?1, ?2)
             ON CONFLICT (id) DO UPDATE SET commit_pos = ?1, prepare_pos = ?2",
            params![last.commit() as i64, last.prepare() as i64],
        )?;
        transaction.commit()?;
        Ok(last)
    }

    /// Waits until the trees cover the log up to `position` (nothing to wait for when `None`).
    pub async fn wait_covered(&self, position: Option<Position>, patience: Duration) -> bool {
        let Some(position) = position else {
            return true;
        };
        let reached = |c: &Option<Position>| c.is_some_and(|c| c >= position);
        let mut covered = self.inner.covered.subscribe();
        if reached(&covered.borrow()) {
            return true;
        }
        self.inner.asked.notify_one();
        tokio::time::timeout(patience, covered.wait_for(reached))
            .await
            .is_ok_and(|waited| waited.is_ok())
    }

    /// Runs a read on the reader connection on a blocking thread.
    async fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&Connection) -> Result<T, TreeError> + Send + 'static,
    ) -> Result<T, TreeError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || read(&inner.reader.lock().unwrap()))
            .await
            .expect("audit tree reads do not panic")
    }

    /// The tenant's tree size.
    pub async fn size(&self, tenant: &str) -> Result<u64, TreeError> {
        let tenant = tenant.to_owned();
        self.read(move |c| tree_size(c, &tenant)).await
    }

    /// The tenant's current size and root.
    pub async fn head(&self, tenant: &str) -> Result<(u64, Hash), TreeError> {
        let tenant = tenant.to_owned();
        self.read(move |connection| {
            let size = tree_size(connection, &tenant)?;
            let root = ledger_audit::root(
                &Stored {
                    connection,
                    tenant: &tenant,
                },
                size,
            )?;
            Ok((size, root))
        })
        .await
    }

    pub async fn inclusion_proof(
        &self,
        tenant: &str,
        index: u64,
        size: u64,
    ) -> Result<(Hash, Vec<Hash>), TreeError> {
        let tenant = tenant.to_owned();
        self.read(move |connection| {
            check_size(connection, &tenant, size)?;
            let stored = Stored {
                connection,
                tenant: &tenant,
            };
            let proof = ledger_audit::inclusion_proof(&stored, index, size)?;
            Ok((stored.subtree(0, index)?, proof))
        })
        .await
    }

    pub async fn consistency_proof(
        &self,
        tenant: &str,
        old: u64,
        new: u64,
    ) -> Result<Vec<Hash>, TreeError> {
        let tenant = tenant.to_owned();
        self.read(move |connection| {
            check_size(connection, &tenant, new)?;
            ledger_audit::consistency_proof(
                &Stored {
                    connection,
                    tenant: &tenant,
                },
                old,
                new,
            )
        })
        .await
    }

    /// The global position of the tenant's leaf `index`.
    pub async fn leaf_position(
        &self,
        tenant: &str,
        index: u64,
    ) -> Result<Option<Position>, TreeError> {
        let tenant = tenant.to_owned();
        self.read(move |connection| {
            let found = connection
                .prepare_cached(
                    "SELECT commit_pos, prepare_pos FROM leaves WHERE tenant = ?1 AND idx = ?2",
                )?
                .query_row(params![tenant, index as i64], |row| {
                    Ok(position_of(row.get(0)?, row.get(1)?))
                })
                .optional()?;
            Ok(found)
        })
        .await
    }

    /// The leaf indices of events at the given positions (events not yet folded have none).
    pub async fn leaf_indices(
        &self,
        tenant: &str,
        positions: Vec<Position>,
    ) -> Result<Vec<Option<u64>>, TreeError> {
        let tenant = tenant.to_owned();
        self.read(move |connection| {
            let mut lookup = connection.prepare_cached(
                "SELECT idx FROM leaves WHERE commit_pos = ?1 AND prepare_pos = ?2 AND tenant = ?3",
            )?;
            positions
                .iter()
                .map(|p| {
                    let index: Option<i64> = lookup
                        .query_row(
                            params![p.commit() as i64, p.prepare() as i64, tenant],
                            |row| row.get(0),
                        )
                        .optional()?;
                    Ok(index.map(|i| i as u64))
                })
                .collect()
        })
        .await
    }
}

impl AuditTrees {
    /// Every stored leaf hash of the tenant, in order (for offline verification).
    pub async fn leaf_hashes(&self, tenant: &str) -> Result<Vec<Hash>, TreeError> {
        let tenant = tenant.to_owned();
        self.read(move |connection| {
            let mut select = connection
                .prepare("SELECT hash FROM nodes WHERE tenant = ?1 AND level = 0 ORDER BY idx")?;
            let hashes = select.query_map([&tenant], |row| row.get::<_, Vec<u8>>(0))?;
            hashes
                .map(|hash| Hash::try_from(hash?).map_err(|_| TreeError::Missing))
                .collect()
        })
        .await
    }
}

fn tree_size(connection: &Connection, tenant: &str) -> Result<u64, TreeError> {
    let size: Option<i64> = connection
        .prepare_cached("SELECT size FROM trees WHERE tenant = ?1")?
        .query_row([tenant], |row| row.get(0))
        .optional()?;
    Ok(size.unwrap_or(0) as u64)
}

fn check_size(connection: &Connection, tenant: &str, size: u64) -> Result<(), TreeError> {
    let current = tree_size(connection, tenant)?;
    if size > current {
        return Err(ProofError::IndexOutOfRange {
            index: size - 1,
            size: current,
        }
        .into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use ledger_store::{ExpectedVersion, Metadata, NewEvent, StreamName};
    use ledger_store_embedded::EmbeddedStore;

    use super::*;
    use crate::watched_store::WatchedStore;

    /// At the head, events wait for the gathering to end, unless a request waits for them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_request_waiting_for_the_trees_ends_the_gathering() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path().join("log")).unwrap();
        let trees = AuditTrees::open(dir.path())
            .unwrap()
            .gathering_for(Duration::from_secs(3600));
        let _follower = trees.spawn_follower(Arc::new(store.clone()));
        let stream = StreamName::new("acme/person-mia").unwrap();
        let event = NewEvent {
            id: uuid::Uuid::new_v4(),
            event_type: "test".into(),
            payload: vec![1].into(),
            metadata: Metadata::default(),
        };
        store
            .append(&stream, ExpectedVersion::NoStream, vec![event])
            .await
            .unwrap();
        let head = store.head().await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            *trees.inner.covered.borrow(),
            None,
            "folded before its hour"
        );
        let asked = std::time::Instant::now();
        assert!(trees.wait_covered(head, Duration::from_secs(10)).await);
        assert!(asked.elapsed() < Duration::from_secs(5));
        assert_eq!(trees.size("acme").await.unwrap(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_subscription_that_fails_mid_batch_is_resumed() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path().join("log")).unwrap();
        let stream = StreamName::new("acme/person-mia").unwrap();
        let events = (0..10)
            .map(|n| NewEvent {
                id: uuid::Uuid::new_v4(),
                event_type: "test".into(),
                payload: vec![n].into(),
                metadata: Metadata::default(),
            })
            .collect();
        store
            .append(&stream, ExpectedVersion::NoStream, events)
            .await
            .unwrap();
        let head = store.head().await.unwrap();
        let trees = AuditTrees::open(dir.path()).unwrap();
        let failing = WatchedStore::failing_first_subscription(store);
        let _follower = trees.spawn_follower(Arc::new(failing));
        // The follower folds the three, meets the error, and subscribes again after a second.
        assert!(
            trees.wait_covered(head, Duration::from_secs(10)).await,
            "the follower stopped at {:?}",
            *trees.inner.covered.borrow()
        );
    }
}
