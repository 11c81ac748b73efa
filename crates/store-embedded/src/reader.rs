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
        // At most one event per position: room for the page at once, not doubling up to it.
        let span = if forward {
            upto.saturating_sub(from)
        } else {
            from
        };
        let rows = span.min(limit as u64).min(MOST_ROWS_RESERVED as u64) as usize;
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
        self.query(&sql, params![clamp(from), clamp(upto)], rows)
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
        self.query(&sql, params![stream.as_str(), clamp(from), clamp(upto)], 0)
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

    /// The events of `sql`'s rows, with room for `rows` of them reserved.
    fn query(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
        rows: usize,
    ) -> Result<Vec<RecordedEvent>, Error> {
        let mut statement = self.0.prepare_cached(sql).map_err(backend)?;
        let mut found = statement.query(params).map_err(backend)?;
        let mut events = Vec::with_capacity(rows);
        while let Some(row) = found.next().map_err(backend)? {
            events.push(recorded(row)?);
        }
        Ok(events)
    }
}

/// The most rows a read of the whole log reserves room for before reading them: more than the
/// pages subscriptions and the projections' shared reading ask for, less than a careless limit.
const MOST_ROWS_RESERVED: usize = 8_192;

/// SQLite integers are signed; cursors past `i64::MAX` mean "no bound".
fn clamp(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The event of a row of [`SELECT_EVENTS`], checked. The id and metadata are read where
/// SQLite holds them: a page of the log is thousands of rows, and each copy is an allocation
/// (catching up, the rows are freed on the folding threads, which costs more again).
fn recorded(row: &Row<'_>) -> Result<RecordedEvent, Error> {
    let position: i64 = row.get(0).map_err(backend)?;
    let corrupt = |reason: String| Error::Corrupt {
        position: position.to_string(),
        reason,
    };
    let blob = |index: usize| {
        let value = row.get_ref(index).map_err(backend)?;
        value.as_blob().map_err(|e| corrupt(e.to_string()))
    };
    let stream: String = row.get(1).map_err(backend)?;
    Ok(RecordedEvent {
        stream: StreamName::new(stream).map_err(|e| corrupt(e.to_string()))?,
        revision: row.get::<_, i64>(2).map_err(backend)? as u64,
        position: Position::from_sequence(position as u64),
        id: Uuid::from_slice(blob(3)?).map_err(|e| corrupt(e.to_string()))?,
        event_type: row.get(4).map_err(backend)?,
        payload: Bytes::copy_from_slice(blob(5)?),
        metadata: Metadata::decode(blob(6)?).map_err(corrupt)?,
        recorded_at: Timestamp::from_micros(row.get(7).map_err(backend)?),
    })
}
