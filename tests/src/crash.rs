//! What the crash test's child appends, derived from (writer, batch number) and event ids, so
//! that the parent can recognise every stored event as intact and every batch as whole.

use bytes::Bytes;
use ledger_store::{Metadata, NewEvent, RecordedEvent};
use uuid::Uuid;

/// Concurrent writers in the child, one stream each (`crash-<writer>`).
pub const WRITERS: usize = 8;

/// The `n`th batch of writer `w`: 1 to 4 events with payloads of 64 bytes to 12 KiB.
pub fn batch(w: usize, n: u64) -> Vec<NewEvent> {
    let batch_id = Uuid::new_v4();
    let len = 1 + (n as usize + w) % 4;
    (0..len)
        .map(|index| {
            let id = Uuid::new_v4();
            NewEvent {
                id,
                event_type: "crash.Appended".into(),
                payload: payload_for(id),
                metadata: Metadata {
                    correlation_id: Some(batch_id),
                    causation_id: None,
                    extra: [
                        ("batch_len".into(), len.to_string()),
                        ("index".into(), index.to_string()),
                    ]
                    .into(),
                },
            }
        })
        .collect()
}

/// The payload an event with this id carries: its id repeated, 64 bytes to 12 KiB long.
pub fn payload_for(id: Uuid) -> Bytes {
    let repeats = 4 + usize::from(id.as_bytes()[0]) * 3;
    id.as_bytes().repeat(repeats).into()
}

/// The batch an event belongs to, its length and its index in it, as the child wrote them.
pub fn batch_of(event: &RecordedEvent) -> (Uuid, usize, usize) {
    let field = |name: &str| event.metadata.extra[name].parse::<usize>().unwrap();
    (
        event.metadata.correlation_id.unwrap(),
        field("batch_len"),
        field("index"),
    )
}
