//! The PostgreSQL event store: the [`EventStore`] contract on a PostgreSQL schema, shared by any
//! number of server replicas.
//!
//! The global order is gap-free for subscribers even with writers in several processes: an append
//! takes the schema's one `head` row `FOR UPDATE`, numbers its events after it, and moves it in the
//! same transaction, so positions are handed out in commit order and a reader never passes a
//! position that a still-open transaction could fill. Within a process one writer task commits all
//! queued appends in one transaction (group commit), so the lock is taken once per group, not once
//! per append. Subscribers page through storage up to the head they know and wake on
//! `LISTEN`/`NOTIFY`, with a once-a-second look at the head in case a notification was missed.

mod rows;
mod schema;
mod subscription;
mod writer;

#[cfg(feature = "testing")]
pub mod testing;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use ledger_store::{
    AllRead, AppendResult, Error, EventStore, EventSubscription, ExpectedVersion, NewEvent,
    Position, RecordedEvent, StreamName, StreamRead, validate_append,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_postgres::NoTls;

use crate::rows::{EVENT_COLUMNS, recorded};
use crate::subscription::Filter;
use crate::writer::AppendRequest;

/// How long an operation waits for a connection, or to connect, before the store reports itself
/// unavailable.
const CONNECT_PATIENCE: Duration = Duration::from_secs(5);
/// How long an append may take in all before it is reported unavailable (its outcome is then
/// unknown; a retry with the same event ids settles it).
const APPEND_PATIENCE: Duration = Duration::from_secs(10);

/// What subscribers know of the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Head {
    /// The last committed position (0: empty).
    sequence: u64,
    open: bool,
}

#[derive(Debug)]
struct Shared {
    pool: Pool,
    head: watch::Sender<Head>,
    /// The NOTIFY channel of this schema.
    channel: String,
    /// Tests only: the longest pause inside an append transaction, to widen races.
    pause_in_transaction: Duration,
}

impl Shared {
    /// Moves the known head forward (never back).
    fn advance(&self, sequence: u64) {
        self.head.send_if_modified(|head| {
            let moved = sequence > head.sequence;
            head.sequence = head.sequence.max(sequence);
            moved
        });
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, Error> {
        self.pool
            .get()
            .await
            .map_err(|e| Error::Unavailable(Box::new(e)))
    }
}

/// The PostgreSQL event store. Cheap to clone: clones share the pool and the writer.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    shared: Arc<Shared>,
    /// The writer's queue and task; taken on close.
    writer: Arc<std::sync::Mutex<Option<Writer>>>,
}

#[derive(Debug)]
struct Writer {
    queue: mpsc::Sender<AppendRequest>,
    task: tokio::task::JoinHandle<()>,
}

/// Maps a driver error: a connection that failed or closed, a server shutting down or out of
/// resources is unavailability, which a retry may cure; any other refusal is a backend failure.
pub(crate) fn from_pg(error: tokio_postgres::Error) -> Error {
    // SQLSTATE classes 08 (connection exception), 53 (insufficient resources) and 57 (operator
    // intervention, such as a shutdown).
    let transient = error
        .as_db_error()
        .is_none_or(|db| matches!(&db.code().code()[..2], "08" | "53" | "57"));
    if transient {
        Error::Unavailable(Box::new(error))
    } else {
        Error::Backend(Box::new(error))
    }
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl PostgresStore {
    /// Connects to the database at `url` (a libpq-style URL or key=value string), creating and
    /// migrating `schema` as needed.
    pub async fn connect(url: &str, schema: &str) -> Result<Self, Error> {
        Self::connect_pausing(url, schema, Duration::ZERO).await
    }

    /// Like [`PostgresStore::connect`], pausing up to `pause` (at random) inside each append
    /// transaction, with the head locked: for tests that race writers in several processes.
    #[doc(hidden)]
    pub async fn connect_pausing(url: &str, schema: &str, pause: Duration) -> Result<Self, Error> {
        schema::check_name(schema)?;
        let mut config: tokio_postgres::Config = url.parse().map_err(|e| {
            Error::Backend(format!("the PostgreSQL URL does not parse: {e}").into())
        })?;
        config.options(format!("-c search_path={schema}"));
        config.connect_timeout(CONNECT_PATIENCE);
        config.keepalives_idle(Duration::from_secs(10));
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(16)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(CONNECT_PATIENCE))
            .create_timeout(Some(CONNECT_PATIENCE))
            .recycle_timeout(Some(CONNECT_PATIENCE))
            .build()
            .map_err(|e| Error::Backend(Box::new(e)))?;
        {
            let mut client = pool
                .get()
                .await
                .map_err(|e| Error::Unavailable(Box::new(e)))?;
            schema::migrate(&mut client, schema).await?;
        }
        let channel = format!("{schema}_appended");
        let (head, _) = watch::channel(Head {
            sequence: 0,
            open: true,
        });
        let shared = Arc::new(Shared {
            pool,
            head,
            channel,
            pause_in_transaction: pause,
        });
        shared.advance(read_head(&shared).await?);
        tokio::spawn(subscription::listen(Arc::downgrade(&shared), config));
        let (queue, receiver) = mpsc::channel(4096);
        let task = tokio::spawn(writer::run(shared.clone(), receiver));
        Ok(Self {
            shared,
            writer: Arc::new(std::sync::Mutex::new(Some(Writer { queue, task }))),
        })
    }

    /// Stops taking appends, lets the queued ones finish, and ends every subscription with
    /// [`Error::Closed`].
    pub async fn close(&self) -> Result<(), Error> {
        let writer = self.writer.lock().unwrap().take();
        if let Some(Writer { queue, task }) = writer {
            // The writer ends once the queue is closed and empty.
            drop(queue);
            task.await.map_err(|e| Error::Backend(Box::new(e)))?;
        }
        self.shared.head.send_modify(|head| head.open = false);
        Ok(())
    }
}

async fn read_head(shared: &Shared) -> Result<u64, Error> {
    let client = shared.client().await?;
    let row = client
        .query_one("SELECT last FROM head WHERE id = 1", &[])
        .await
        .map_err(from_pg)?;
    Ok(row.get::<_, i64>(0) as u64)
}

#[async_trait]
impl EventStore for PostgresStore {
    async fn append(
        &self,
        stream: &StreamName,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult, Error> {
        validate_append(&events)?;
        let queue = (self.writer.lock().unwrap().as_ref())
            .map(|writer| writer.queue.clone())
            .ok_or(Error::Closed)?;
        let (reply, answer) = oneshot::channel();
        let request = AppendRequest {
            stream: stream.clone(),
            expected,
            events,
            reply,
        };
        queue.send(request).await.map_err(|_| Error::Closed)?;
        match tokio::time::timeout(APPEND_PATIENCE, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(Error::Closed),
            Err(_) => Err(Error::Unavailable(
                "the append did not complete in time; its outcome is unknown".into(),
            )),
        }
    }

    async fn read_stream(
        &self,
        stream: &StreamName,
        read: StreamRead,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, Error> {
        let client = self.shared.client().await?;
        let limit = to_i64(limit as u64);
        let rows = match read {
            StreamRead::Forward { from } => {
                let sql = format!(
                    "SELECT {EVENT_COLUMNS} FROM events WHERE stream = $1 AND revision >= $2
                     ORDER BY revision LIMIT $3"
                );
                client
                    .query(&sql, &[&stream.as_str(), &to_i64(from), &limit])
                    .await
            }
            StreamRead::Backward { from } => {
                let sql = format!(
                    "SELECT {EVENT_COLUMNS} FROM events WHERE stream = $1 AND revision <= $2
                     ORDER BY revision DESC LIMIT $3"
                );
                let from = from.map_or(i64::MAX, to_i64);
                client.query(&sql, &[&stream.as_str(), &from, &limit]).await
            }
        }
        .map_err(from_pg)?;
        rows.iter().map(recorded).collect()
    }

    async fn read_all(&self, read: AllRead, limit: usize) -> Result<Vec<RecordedEvent>, Error> {
        let client = self.shared.client().await?;
        let limit = to_i64(limit as u64);
        let rows = match read {
            AllRead::Forward { after } => {
                let sql = format!(
                    "SELECT {EVENT_COLUMNS} FROM events WHERE position > $1 ORDER BY position LIMIT $2"
                );
                let after = after.map_or(0, |p| to_i64(p.commit()));
                client.query(&sql, &[&after, &limit]).await
            }
            AllRead::Backward { before } => {
                let sql = format!(
                    "SELECT {EVENT_COLUMNS} FROM events WHERE position < $1
                     ORDER BY position DESC LIMIT $2"
                );
                let before = before.map_or(i64::MAX, |p| to_i64(p.commit()));
                client.query(&sql, &[&before, &limit]).await
            }
        }
        .map_err(from_pg)?;
        rows.iter().map(recorded).collect()
    }

    async fn stream_revision(&self, stream: &StreamName) -> Result<Option<u64>, Error> {
        let client = self.shared.client().await?;
        let row = client
            .query_opt(
                "SELECT last_revision FROM streams WHERE name = $1",
                &[&stream.as_str()],
            )
            .await
            .map_err(from_pg)?;
        Ok(row.map(|row| row.get::<_, i64>(0) as u64))
    }

    async fn head(&self) -> Result<Option<Position>, Error> {
        let last = read_head(&self.shared).await?;
        self.shared.advance(last);
        Ok((last > 0).then(|| Position::from_sequence(last)))
    }

    fn subscribe_all(&self, after: Option<Position>) -> EventSubscription {
        let after = after.map_or(0, |p| p.commit());
        subscription::subscribe(self.shared.clone(), Filter::All { after })
    }

    fn subscribe_stream(&self, stream: &StreamName, after: Option<u64>) -> EventSubscription {
        let filter = Filter::Stream {
            stream: stream.clone(),
            after,
        };
        subscription::subscribe(self.shared.clone(), filter)
    }
}
