//! The embedded event store, the ledger's default backend: one directory on local disk, no server.
//!
//! SQLite (bundled) in WAL mode holds the log in `events.db`. One writer thread owns the only
//! write connection and assigns the global sequence inside each transaction, so the log has no
//! gaps. Concurrent appends are committed together (group commit): one transaction for everything
//! that queued while the previous commit ran, while each append's checks pass or fail on their
//! own; a second thread fsyncs the log once for every commit since its last fsync and only then
//! acknowledges (see `writer`). Readers use their own connections and never block the writer. An exclusive
//! lock on `LOCK` keeps a second process out of the directory.

mod reader;
mod recent;
mod schema;
mod subscription;
mod writer;

use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use async_trait::async_trait;
use ledger_store::{
    AllRead, AppendResult, BoxError, Error, EventStore, EventSubscription, ExpectedVersion,
    NewEvent, Position, RecordedEvent, StreamName, StreamRead, validate_append,
};
use tokio::sync::{mpsc, oneshot, watch};

use crate::reader::ReaderPool;
use crate::recent::Recent;
use crate::subscription::Filter;
use crate::writer::AppendRequest;

/// How many appends may wait for the writer before `append` waits for room.
const QUEUE_DEPTH: usize = 4096;

/// The embedded event store. Cheap to clone; all clones share one store.
#[derive(Debug, Clone)]
pub struct EmbeddedStore {
    shared: Arc<Shared>,
    writer: Arc<WriterHandle>,
}

/// What readers, subscriptions and the writer share.
#[derive(Debug)]
struct Shared {
    readers: Arc<ReaderPool>,
    /// The subscriptions' readers, without a memory map: a subscription from far back (a
    /// projection catching up, the audit trees at a first start) reads the whole log once, and
    /// every page it had mapped would stay in the process's resident memory.
    scanners: Arc<ReaderPool>,
    stats: Counters,
    /// Set when an fsync failed: from then on no append is acknowledged.
    failed: AtomicBool,
    /// The last acknowledged sequence number; readers never look past it.
    head: watch::Sender<Head>,
    recent: Recent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Head {
    /// The global sequence of the last durable, acknowledged event; 0 when the log is empty.
    sequence: u64,
    /// False once the writer has stopped.
    open: bool,
}

/// Counts of the writer's work: with many concurrent writers, `syncs` grows much slower than
/// `appends`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterStats {
    /// Transactions committed, each holding every append that queued while the last one ran.
    pub commits: u64,
    /// fsyncs of the log, each making every commit since the last one durable.
    pub syncs: u64,
    /// Appends answered with success, retries included.
    pub appends: u64,
    /// Events written.
    pub events: u64,
}

#[derive(Debug, Default)]
struct Counters {
    commits: AtomicU64,
    syncs: AtomicU64,
    appends: AtomicU64,
    events: AtomicU64,
}

#[derive(Debug)]
struct WriterHandle {
    queue: Mutex<Option<mpsc::Sender<AppendRequest>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl EmbeddedStore {
    /// The database file inside the data directory.
    pub const FILE_NAME: &str = "events.db";

    /// Opens the store in `dir`, creating the directory and the database if needed.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, Error> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(backend)?;
        let lock = lock_directory(dir)?;
        let path = dir.join(Self::FILE_NAME);
        let connection = schema::open_writer(&path).map_err(backend)?;
        let sequence = schema::last_sequence(&connection).map_err(backend)?;
        let wal = schema::open_wal(&path).map_err(backend)?;
        let (head, _) = watch::channel(Head {
            sequence,
            open: true,
        });
        let shared = Arc::new(Shared {
            readers: Arc::new(ReaderPool::new(path.clone(), true)),
            scanners: Arc::new(ReaderPool::new(path, false)),
            stats: Counters::default(),
            failed: AtomicBool::new(false),
            head,
            recent: Recent::default(),
        });
        let (queue, requests) = mpsc::channel(QUEUE_DEPTH);
        let writer_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("ledger-writer".into())
            .spawn(move || writer::run(connection, requests, writer_shared, wal, lock))
            .map_err(backend)?;
        tracing::info!(dir = %dir.display(), events = sequence, "embedded event store opened");
        Ok(Self {
            shared,
            writer: Arc::new(WriterHandle {
                queue: Mutex::new(Some(queue)),
                thread: Mutex::new(Some(thread)),
            }),
        })
    }

    /// Stops taking appends, waits until every append already accepted is committed and answered,
    /// and releases the directory. Later appends fail with [`Error::Closed`]; subscriptions end
    /// with it once they have delivered every acknowledged event.
    pub async fn close(&self) -> Result<(), Error> {
        drop(self.writer.queue.lock().unwrap().take());
        let thread = self.writer.thread.lock().unwrap().take();
        if let Some(thread) = thread {
            let joined = tokio::task::spawn_blocking(move || thread.join())
                .await
                .map_err(backend)?;
            joined.map_err(|_| backend("the writer thread panicked"))?;
        }
        Ok(())
    }

    /// What the writer has done since the store was opened.
    pub fn stats(&self) -> WriterStats {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let stats = &self.shared.stats;
        WriterStats {
            commits: load(&stats.commits),
            syncs: load(&stats.syncs),
            appends: load(&stats.appends),
            events: load(&stats.events),
        }
    }

    fn acknowledged(&self) -> u64 {
        self.shared.head.borrow().sequence
    }
}

fn lock_directory(dir: &Path) -> Result<File, Error> {
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("LOCK"));
    let file = file.map_err(backend)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(backend(format!(
            "data directory {} is in use by another process",
            dir.display()
        ))),
        Err(TryLockError::Error(e)) => Err(backend(e)),
    }
}

fn backend(error: impl Into<BoxError>) -> Error {
    Error::Backend(error.into())
}

fn sequence_of(position: Position) -> u64 {
    position.commit()
}

#[async_trait]
impl EventStore for EmbeddedStore {
    async fn append(
        &self,
        stream: &StreamName,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult, Error> {
        validate_append(&events)?;
        let queue = self
            .writer
            .queue
            .lock()
            .unwrap()
            .clone()
            .ok_or(Error::Closed)?;
        let (reply, answer) = oneshot::channel();
        let request = AppendRequest {
            stream: stream.clone(),
            expected,
            events,
            reply,
        };
        queue.send(request).await.map_err(|_| Error::Closed)?;
        answer.await.map_err(|_| Error::Closed)?
    }

    async fn read_stream(
        &self,
        stream: &StreamName,
        read: StreamRead,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, Error> {
        let (stream, upto) = (stream.clone(), self.acknowledged());
        self.shared
            .readers
            .run(move |reader| reader.read_stream(&stream, read, upto, limit))
            .await
    }

    async fn read_all(&self, read: AllRead, limit: usize) -> Result<Vec<RecordedEvent>, Error> {
        let upto = self.acknowledged();
        let (from, forward) = match read {
            AllRead::Forward { after } => (after.map_or(0, sequence_of), true),
            AllRead::Backward { before } => (before.map_or(u64::MAX, sequence_of), false),
        };
        self.shared
            .readers
            .run(move |reader| reader.read_all(from, forward, upto, limit))
            .await
    }

    async fn stream_revision(&self, stream: &StreamName) -> Result<Option<u64>, Error> {
        let (stream, upto) = (stream.clone(), self.acknowledged());
        self.shared
            .readers
            .run(move |reader| reader.stream_revision(&stream, upto))
            .await
    }

    async fn head(&self) -> Result<Option<Position>, Error> {
        Ok(Some(self.acknowledged())
            .filter(|&n| n > 0)
            .map(Position::from_sequence))
    }

    fn subscribe_all(&self, after: Option<Position>) -> EventSubscription {
        subscription::subscribe(
            self.shared.clone(),
            Filter::All {
                after: after.map_or(0, sequence_of),
            },
        )
    }

    fn subscribe_stream(&self, stream: &StreamName, after: Option<u64>) -> EventSubscription {
        subscription::subscribe(
            self.shared.clone(),
            Filter::Stream {
                stream: stream.clone(),
                after,
            },
        )
    }
}

/// Where the store keeps its files, for tools that inspect them (tests, backups).
pub fn database_path(dir: impl AsRef<Path>) -> PathBuf {
    dir.as_ref().join(EmbeddedStore::FILE_NAME)
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;
    use ledger_store::{ExpectedVersion, Metadata, NewEvent};

    use super::*;

    #[tokio::test]
    async fn subscriptions_read_the_log_without_a_memory_map_and_other_reads_through_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let event = NewEvent {
            id: uuid::Uuid::new_v4(),
            event_type: "test.Event".into(),
            payload: bytes::Bytes::from_static(b"x"),
            metadata: Metadata::default(),
        };
        let stream = StreamName::new("s").unwrap();
        let appended = store.append(&stream, ExpectedVersion::NoStream, vec![event]);
        appended.await.unwrap();
        store.close().await.unwrap();
        // Reopened, nothing is kept in memory: the subscription reads from storage.
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let mut events = store.subscribe_all(None);
        assert!(events.next().await.unwrap().is_ok());
        let shared = &store.shared;
        assert_eq!((shared.scanners.idle(), shared.readers.idle()), (1, 0));
        let subscriptions = shared.scanners.run(|reader| Ok(reader.mmap_size()));
        assert_eq!(subscriptions.await.unwrap(), 0);
        let reads = shared.readers.run(|reader| Ok(reader.mmap_size()));
        assert!(reads.await.unwrap() > 0);
    }
}
