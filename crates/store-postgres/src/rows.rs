//! Stored rows to recorded events.

use bytes::Bytes;
use ledger_store::{Error, Metadata, Position, RecordedEvent, StreamName, Timestamp};
use tokio_postgres::Row;
use uuid::Uuid;

/// The columns [`recorded`] reads, in its order.
pub(crate) const EVENT_COLUMNS: &str =
    "position, stream, revision, id, event_type, payload, metadata, recorded_at";

pub(crate) fn recorded(row: &Row) -> Result<RecordedEvent, Error> {
    let position = row.get::<_, i64>(0) as u64;
    let corrupt = |reason: String| Error::Corrupt {
        position: position.to_string(),
        reason,
    };
    let stream = StreamName::new(row.get::<_, String>(1))
        .map_err(|e| corrupt(format!("stream name: {e}")))?;
    let metadata = Metadata::decode(row.get::<_, &[u8]>(6)).map_err(corrupt)?;
    Ok(RecordedEvent {
        stream,
        revision: row.get::<_, i64>(2) as u64,
        position: Position::from_sequence(position),
        id: row.get::<_, Uuid>(3),
        event_type: row.get(4),
        payload: Bytes::copy_from_slice(row.get::<_, &[u8]>(5)),
        metadata,
        recorded_at: Timestamp::from_micros(row.get(7)),
    })
}
