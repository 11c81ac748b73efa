//! The bytes a ledger leaf hashes: a canonical encoding of one stored event, which anyone can
//! recompute from what `Ledger.ReadAll` returns.
//!
//! ```text
//! leaf = field("dialogue-ledger/leaf/v1")
//!        || field(stream name, UTF-8, with its tenant prefix)
//!        || field(revision, 8 bytes big-endian)
//!        || field(event id, 16 bytes)
//!        || field(event type, UTF-8)
//!        || field(recorded_at, microseconds since the Unix epoch, 8 bytes big-endian two's complement)
//!        || field(metadata, the stored EventMetadata protobuf bytes)
//!        || field(payload, the stored bytes)
//! field(x) = length of x as 4 bytes big-endian || x
//! ```
//!
//! The leaf hash is then `SHA-256(0x00 || leaf)` (RFC 9162). Personal text that is encrypted is
//! hashed as ciphertext, so verification needs no data key.

use ledger_store::RecordedEvent;

use crate::merkle::{Hash, leaf_hash};

/// The first field of every leaf: names the encoding and its version.
pub const LEAF_TAG: &[u8] = b"dialogue-ledger/leaf/v1";

/// The canonical bytes of one event, from its parts as `Ledger.ReadAll` returns them.
pub fn leaf_bytes(
    stream: &str,
    revision: u64,
    event_id: &[u8; 16],
    event_type: &str,
    recorded_at_micros: i64,
    metadata: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    let fields: [&[u8]; 8] = [
        LEAF_TAG,
        stream.as_bytes(),
        &revision.to_be_bytes(),
        event_id,
        event_type.as_bytes(),
        &recorded_at_micros.to_be_bytes(),
        metadata,
        payload,
    ];
    let mut leaf = Vec::with_capacity(fields.iter().map(|f| 4 + f.len()).sum());
    for field in fields {
        // Fields are bounded by the store's size limits, far below 4 GiB.
        leaf.extend_from_slice(&(field.len() as u32).to_be_bytes());
        leaf.extend_from_slice(field);
    }
    leaf
}

/// The leaf hash of a stored event.
pub fn event_leaf_hash(event: &RecordedEvent) -> Hash {
    leaf_hash(&leaf_bytes(
        event.stream.as_str(),
        event.revision,
        event.id.as_bytes(),
        &event.event_type,
        event.recorded_at.as_micros(),
        &event.metadata.encode(),
        &event.payload,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_length_prefixed_so_boundaries_cannot_shift() {
        let id = [7u8; 16];
        let a = leaf_bytes("acme/s-1", 0, &id, "t", 0, b"", b"ab");
        let b = leaf_bytes("acme/s-1", 0, &id, "ta", 0, b"", b"b");
        assert_ne!(a, b);
        assert_eq!(&a[..4], &(LEAF_TAG.len() as u32).to_be_bytes());
        let (stream, revision, id, event_type, recorded_at, payload) = (8, 8, 16, 1, 8, 2);
        assert_eq!(
            a.len(),
            8 * 4 + LEAF_TAG.len() + stream + revision + id + event_type + recorded_at + payload
        );
    }
}
