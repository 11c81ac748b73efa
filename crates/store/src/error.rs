//! The errors of the event store contract.

use uuid::Uuid;

use crate::{ExpectedVersion, StreamName};

/// An opaque underlying error of a backend.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why an event store operation failed. Anything but [`Error::Unavailable`] and [`Error::Backend`]
/// is the caller's mistake and is the same on every backend; nothing was written in any case.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The stream's revision is not what the caller expected.
    #[error("wrong expected version on stream {stream}: expected {expected}, actual {}", describe(*.actual))]
    WrongExpectedVersion {
        stream: StreamName,
        expected: ExpectedVersion,
        /// The stream's last revision, or `None` if it does not exist.
        actual: Option<u64>,
    },

    /// The event id is already stored in the stream, in a batch that does not match this one.
    #[error("event id {id} is already stored in the stream, in another batch")]
    DuplicateEventId { id: Uuid },

    /// The batch itself is malformed: empty, an id twice, or over a size limit.
    #[error("invalid append: {reason}")]
    InvalidAppend { reason: String },

    #[error("invalid stream name: {reason}")]
    InvalidStreamName { reason: &'static str },

    /// A stored event could not be decoded: the storage was altered or damaged.
    #[error("stored event at position {position} is corrupt: {reason}")]
    Corrupt { position: String, reason: String },

    /// The backend cannot be reached right now; retrying later may succeed.
    #[error("event store unavailable")]
    Unavailable(#[source] BoxError),

    /// The store has been shut down.
    #[error("event store is closed")]
    Closed,

    /// Any other failure of the backend.
    #[error("event store backend failed")]
    Backend(#[source] BoxError),
}

fn describe(revision: Option<u64>) -> String {
    match revision {
        Some(revision) => format!("revision {revision}"),
        None => "no stream".to_owned(),
    }
}
