//! Events going in ([`NewEvent`]) and coming out ([`RecordedEvent`]) of the store.

use std::collections::{BTreeMap, HashSet};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use ledger_proto::events as pb;
use prost::Message;
use uuid::Uuid;

use crate::{Error, Position, StreamName};

/// The largest payload of one event, in bytes.
pub const MAX_PAYLOAD_BYTES: usize = 1024 * 1024;

/// The largest total of payloads and metadata in one append, in bytes.
pub const MAX_APPEND_BYTES: usize = 4 * 1024 * 1024;

/// Context stored with every event. The store never interprets it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metadata {
    /// The request or workflow the event belongs to.
    pub correlation_id: Option<Uuid>,
    /// The command or event that caused this event.
    pub causation_id: Option<Uuid>,
    /// Anything else, such as W3C trace context.
    pub extra: BTreeMap<String, String>,
}

impl Metadata {
    /// The stored form: protobuf `dialogue.ledger.v1.EventMetadata`, deterministic for equal values.
    pub fn encode(&self) -> Vec<u8> {
        let uuid_bytes = |id: Option<Uuid>| id.map(|id| id.as_bytes().to_vec()).unwrap_or_default();
        pb::EventMetadata {
            correlation_id: uuid_bytes(self.correlation_id),
            causation_id: uuid_bytes(self.causation_id),
            extra: (self.extra.iter())
                .map(|(key, value)| pb::MetadataEntry {
                    key: key.clone(),
                    value: value.clone(),
                })
                .collect(),
        }
        .encode_to_vec()
    }

    /// Reads the stored form back.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let stored = pb::EventMetadata::decode(bytes).map_err(|e| e.to_string())?;
        let uuid = |bytes: Vec<u8>| match bytes.len() {
            0 => Ok(None),
            _ => Uuid::from_slice(&bytes)
                .map(Some)
                .map_err(|e| e.to_string()),
        };
        Ok(Self {
            correlation_id: uuid(stored.correlation_id)?,
            causation_id: uuid(stored.causation_id)?,
            extra: stored
                .extra
                .into_iter()
                .map(|entry| (entry.key, entry.value))
                .collect(),
        })
    }
}

/// An event to append. Its `id` makes retries idempotent: choose it once, before the first try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    pub id: Uuid,
    /// A stable name of the payload's schema, such as `dialogue.ledger.v1.SessionScheduled`.
    pub event_type: String,
    pub payload: Bytes,
    pub metadata: Metadata,
}

/// An event as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedEvent {
    pub stream: StreamName,
    /// Its place in the stream, from 0, consecutive.
    pub revision: u64,
    /// Its place in the global log.
    pub position: Position,
    pub id: Uuid,
    pub event_type: String,
    pub payload: Bytes,
    pub metadata: Metadata,
    /// When the store accepted it.
    pub recorded_at: Timestamp,
}

/// Where a successful append left its last event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendResult {
    /// The stream revision of the batch's last event: the stream's revision after the append.
    pub revision: u64,
    /// The global position of the batch's last event.
    pub position: Position,
    /// Whether this append stored the batch: `false` when the store found it stored already (a
    /// retry) and answered with where it was stored then. Exact where the check and the write
    /// are one transaction (embedded, PostgreSQL); on EventStoreDB a duplicate racing its
    /// original may also answer `true`, the server's own idempotency.
    pub written: bool,
}

/// Microseconds since the Unix epoch, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    pub fn now() -> Self {
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Self(i64::try_from(since_epoch.as_micros()).unwrap_or(i64::MAX))
    }

    pub const fn from_micros(micros: i64) -> Self {
        Self(micros)
    }

    pub const fn as_micros(self) -> i64 {
        self.0
    }
}

/// The checks every backend makes on a batch before touching storage: not empty, no id twice,
/// within the size limits.
pub fn validate_append(events: &[NewEvent]) -> Result<(), Error> {
    let invalid = |reason: String| Err(Error::InvalidAppend { reason });
    if events.is_empty() {
        return invalid("no events to append".into());
    }
    let mut ids = HashSet::with_capacity(events.len());
    let mut total = 0;
    for event in events {
        if !ids.insert(event.id) {
            return invalid(format!("event id {} appears twice in the batch", event.id));
        }
        if event.event_type.is_empty() {
            return invalid(format!("event {} has an empty type", event.id));
        }
        if event.payload.len() > MAX_PAYLOAD_BYTES {
            return invalid(format!(
                "event {} has a payload of {} bytes, over the limit of {MAX_PAYLOAD_BYTES}",
                event.id,
                event.payload.len()
            ));
        }
        total += event.payload.len() + event.event_type.len() + metadata_len(&event.metadata);
    }
    if total > MAX_APPEND_BYTES {
        return invalid(format!(
            "the batch holds {total} bytes, over the limit of {MAX_APPEND_BYTES}"
        ));
    }
    Ok(())
}

/// Where an event is stored in its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredAt {
    pub revision: u64,
    pub position: Position,
}

/// What an append's batch meets in its stream, given where each of its `ids` is stored there
/// (`stored`, in the batch's order): none of them, a new append (`None`); all of them, from the
/// first at consecutive revisions, a retry, answered with the original result; anything else,
/// [`Error::DuplicateEventId`] naming the first id out of place (ids are unique per stream,
/// forever). Every backend decides a batch's fate by this, whatever it looks the ids up in.
pub fn stored_batch(
    ids: &[Uuid],
    stored: &[Option<StoredAt>],
) -> Result<Option<AppendResult>, Error> {
    debug_assert_eq!(ids.len(), stored.len());
    let Some(first) = stored[0] else {
        return match ids.iter().zip(stored).find(|(_, at)| at.is_some()) {
            Some((id, _)) => Err(Error::DuplicateEventId { id: *id }),
            None => Ok(None),
        };
    };
    let mut last = first;
    for (id, at) in ids.iter().zip(stored).skip(1) {
        match at {
            Some(at) if at.revision == last.revision + 1 => last = *at,
            _ => return Err(Error::DuplicateEventId { id: *id }),
        }
    }
    Ok(Some(AppendResult {
        revision: last.revision,
        position: last.position,
        written: false,
    }))
}

fn metadata_len(metadata: &Metadata) -> usize {
    metadata
        .extra
        .iter()
        .map(|(key, value)| key.len() + value.len())
        .sum::<usize>()
        + 32
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Where a stream of `n` events stores each, at positions 10, 20, ...
    fn stream_of(n: u64) -> Vec<(Uuid, StoredAt)> {
        (0..n)
            .map(|revision| {
                let at = 10 * (revision + 1);
                let position = Position::new(at, at);
                (Uuid::new_v4(), StoredAt { revision, position })
            })
            .collect()
    }

    /// Looks the batch's ids up in `stream`, as a backend would.
    fn stored_in(stream: &[(Uuid, StoredAt)], ids: &[Uuid]) -> Vec<Option<StoredAt>> {
        (ids.iter())
            .map(|id| stream.iter().find(|(i, _)| i == id).map(|(_, at)| *at))
            .collect()
    }

    #[test]
    fn a_batch_found_in_its_stream_answers_with_the_original_result() {
        let stream = stream_of(4);
        let ids = [stream[1].0, stream[2].0];
        let original = stored_batch(&ids, &stored_in(&stream, &ids)).unwrap();
        assert_eq!(
            original,
            Some(AppendResult {
                revision: 2,
                position: stream[2].1.position,
                written: false,
            })
        );
        let fresh = [Uuid::new_v4(), Uuid::new_v4()];
        assert_eq!(
            stored_batch(&fresh, &stored_in(&stream, &fresh)).unwrap(),
            None
        );
    }

    #[test]
    fn a_batch_partly_or_otherwise_found_in_its_stream_is_a_duplicate() {
        let stream = stream_of(4);
        let new = Uuid::new_v4();
        for (ids, named) in [
            // The first found, the next not.
            ([stream[1].0, new], new),
            // The first not found, a later one found.
            ([new, stream[0].0], stream[0].0),
            // Found, but not in the batch's order.
            ([stream[2].0, stream[1].0], stream[1].0),
            // Found, but not at consecutive revisions.
            ([stream[0].0, stream[2].0], stream[2].0),
        ] {
            let found = stored_batch(&ids, &stored_in(&stream, &ids));
            assert!(
                matches!(found, Err(Error::DuplicateEventId { id }) if id == named),
                "{ids:?}: {found:?}"
            );
        }
    }

    fn event(payload_len: usize) -> NewEvent {
        NewEvent {
            id: Uuid::new_v4(),
            event_type: "test".into(),
            payload: Bytes::from(vec![7; payload_len]),
            metadata: Metadata::default(),
        }
    }

    #[test]
    fn metadata_round_trips_through_its_stored_form() {
        let metadata = Metadata {
            correlation_id: Some(Uuid::new_v4()),
            causation_id: None,
            extra: BTreeMap::from([("traceparent".into(), "00-abc-def-01".into())]),
        };
        assert_eq!(Metadata::decode(&metadata.encode()).unwrap(), metadata);
        assert_eq!(
            Metadata::decode(&Metadata::default().encode()).unwrap(),
            Metadata::default()
        );
    }

    #[test]
    fn metadata_encoding_is_deterministic() {
        let mut a = Metadata::default();
        a.extra.insert("b".into(), "2".into());
        a.extra.insert("a".into(), "1".into());
        let mut b = Metadata::default();
        b.extra.insert("a".into(), "1".into());
        b.extra.insert("b".into(), "2".into());
        assert_eq!(a.encode(), b.encode());
    }

    #[test]
    fn corrupt_metadata_is_an_error() {
        assert!(
            Metadata::decode(&[0x0a, 0x03, 1, 2, 3]).is_err(),
            "a 3-byte uuid was accepted"
        );
    }

    #[test]
    fn batches_are_validated() {
        assert!(validate_append(&[event(10), event(MAX_PAYLOAD_BYTES)]).is_ok());
        let twice = event(1);
        let rejected = [
            vec![],
            vec![twice.clone(), twice],
            vec![event(MAX_PAYLOAD_BYTES + 1)],
            vec![
                event(MAX_PAYLOAD_BYTES),
                event(MAX_PAYLOAD_BYTES),
                event(MAX_PAYLOAD_BYTES),
                event(MAX_PAYLOAD_BYTES),
                event(1),
            ],
            vec![NewEvent {
                event_type: String::new(),
                ..event(1)
            }],
        ];
        for batch in rejected {
            assert!(
                matches!(validate_append(&batch), Err(Error::InvalidAppend { .. })),
                "a batch of {} events was accepted",
                batch.len()
            );
        }
    }
}
