//! Read connections and the queries they run. Every query is bounded by the acknowledged head
//! (`upto`), so readers never see an event before its append has been answered.

use std::path::PathBuf;
use std::sync::Mutex;

use bytes::Bytes;
use ledger_store::{Error, Metadata, Position, RecordedEvent, StreamName, StreamRead, Timestamp};
use rusqlite::{Connection, Row, params};
use uuid::Uuid;

use crate::{backend, schema};

/// Reads at once, each on a connection of the pool: more wait for one. Opening a connection per
/// read beyond a fixed idle set cost a quarter of the server's time under 64 clients (the
/// schema parsed and every statement prepared again).
const READERS: usize = 16;

/// Queries put their LIMIT in the SQL text, not in a parameter: with a join, SQLite prepares a
/// statement again each time a LIMIT parameter is bound (measured: every read of a stream, a
/// sixth of the server's time under load).
const SELECT_EVENTS: &str = "
    SELECT e.position, s.name, e.revision, e.event_id, e.event_type, e.payload, e.metadata,
           e.recorded_at
    FROM events e JOIN streams s ON s.id = e.stream_id";

/// A pool of read-only connections, used from blocking threads.
#[derive(Debug)]
pub(crate) struct ReaderPool {
    path: PathBuf,
    /// Whether its connections read through a memory map (see [`schema::open_reader`]).
    mapped: bool,
    idle: Mutex<Vec<Reader>>,
    permits: tokio::sync::Semaphore,
}

impl ReaderPool {
    pub(crate) fn new(path: PathBuf, mapped: bool) -> Self {
        Self {
            path,
            mapped,
            idle: Mutex::new(Vec::new()),
            permits: tokio::sync::Semaphore::new(READERS),
        }
    }

    /// Connections opened and now idle.
    #[cfg(test)]
    pub(crate) fn idle(&self) -> usize {
        self.idle.lock().unwrap().len()
    }

    /// Runs `query` on a pooled connection on a blocking thread.
    pub(crate) async fn run<T: Send + 'static>(
        self: &std::sync::Arc<Self>,
        query: impl FnOnce(&Reader) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let _permit = self.permits.acquire().await.map_err(backend)?;
        let pool = self.clone();
        tokio::task::spawn_blocking(move || {
            let reader = match pool.idle.lock().unwrap().pop() {
                Some(reader) => reader,
                None => Reader(schema::open_reader(&pool.path, pool.mapped).map_err(backend)?),
            };
            let result = query(&reader);
            pool.idle.lock().unwrap().push(reader);
            result
        })
        .await
        .map_err(backend)?
    }
}

/// One read-only connection.
#[derive(Debug)]
pub(crate) struct Reader(Connection);

impl Reader {
    #[cfg(test)]
    pub(crate) fn mmap_size(&self) -> i64 {
        (self.0)
            .pragma_query_value(None, "mmap_size", |row| row.get(0))
            .unwrap()
    }

    pub(crate) fn read_all(
        &self,
        from: u64,
        forward: bool,
        upto: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, Error> {
        let limit = clamp(limit as u64);
        let sql = if forward {
            format!(
                "{SELECT_EVENTS} WHERE e.position > ?1 AND e.position <= ?2 ORDER BY e.position LIMIT {limit}"
            )
        } else {
            format!(
                "{SELECT_EVENTS} WHERE e.position < ?1 AND e.position <= ?2 ORDER BY e.position DESC LIMIT {limit}"
            )
        };
        self.query(&sql, params![clamp(from), clamp(upto)])
    }

    pub(crate) fn read_stream(
        &self,
        stream: &StreamName,
        read: StreamRead,
        upto: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, Error> {
        let limit = clamp(limit as u64);
        let (sql, from) = match read {
            StreamRead::Forward { from } => (
                format!(
                    "{SELECT_EVENTS} WHERE s.name = ?1 AND e.revision >= ?2 AND e.position <= ?3 ORDER BY e.revision LIMIT {limit}"
                ),
                from,
            ),
            StreamRead::Backward { from } => (
                format!(
                    "{SELECT_EVENTS} WHERE s.name = ?1 AND e.revision <= ?2 AND e.position <= ?3 ORDER BY e.revision DESC LIMIT {limit}"
                ),
                from.unwrap_or(u64::MAX),
            ),
        };
        self.query(&sql, params![stream.as_str(), clamp(from), clamp(upto)])
    }

    /// Events of `stream` after revision `after` (all when `None`), in revision order.
    pub(crate) fn read_stream_after(
        &self,
        stream: &StreamName,
        after: Option<u64>,
        upto: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, Error> {
        let read = StreamRead::Forward {
            from: after.map_or(0, |revision| revision + 1),
        };
        self.read_stream(stream, read, upto, limit)
    }

    pub(crate) fn stream_revision(
        &self,
        stream: &StreamName,
        upto: u64,
    ) -> Result<Option<u64>, Error> {
        let read = StreamRead::Backward { from: None };
        Ok(self
            .read_stream(stream, read, upto, 1)?
            .first()
            .map(|event| event.revision))
    }

    fn query(&self, sql: &str, params: impl rusqlite::Params) -> Result<Vec<RecordedEvent>, Error> {
        let mut statement = self.0.prepare_cached(sql).map_err(backend)?;
        let rows = statement
            .query_map(params, StoredRow::read)
            .map_err(backend)?;
        rows.map(|row| row.map_err(backend)?.into_recorded())
            .collect()
    }
}

/// SQLite integers are signed; cursors past `i64::MAX` mean "no bound".
fn clamp(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A row as SQLite holds it, before the checks that turn it into a [`RecordedEvent`].
struct StoredRow {
    position: i64,
    stream: String,
    revision: i64,
    event_id: Vec<u8>,
    event_type: String,
    payload: Vec<u8>,
    metadata: Vec<u8>,
    recorded_at: i64,
}

impl StoredRow {
    fn read(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            position: row.get(0)?,
            stream: row.get(1)?,
            revision: row.get(2)?,
            event_id: row.get(3)?,
            event_type: row.get(4)?,
            payload: row.get(5)?,
            metadata: row.get(6)?,
            recorded_at: row.get(7)?,
        })
    }

    fn into_recorded(self) -> Result<RecordedEvent, Error> {
        let corrupt = |reason: String| Error::Corrupt {
            position: self.position.to_string(),
            reason,
        };
        Ok(RecordedEvent {
            stream: StreamName::new(self.stream.clone()).map_err(|e| corrupt(e.to_string()))?,
            revision: self.revision as u64,
            position: Position::from_sequence(self.position as u64),
            id: Uuid::from_slice(&self.event_id).map_err(|e| corrupt(e.to_string()))?,
            metadata: Metadata::decode(&self.metadata).map_err(corrupt)?,
            event_type: self.event_type,
            payload: Bytes::from(self.payload),
            recorded_at: Timestamp::from_micros(self.recorded_at),
        })
    }
}
