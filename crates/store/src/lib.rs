//! The event store contract of the dialogue ledger: the [`EventStore`] trait that every backend
//! (embedded, PostgreSQL, EventStoreDB) implements, the types it speaks, and — behind the
//! `conformance` feature — one suite of tests that every backend must pass unchanged.
//!
//! The store knows nothing of the domain: a stream is a name, an event is an id, a type, payload
//! bytes and metadata. Its promises are the ledger's first promise: an acknowledged event is never
//! lost, never reordered and never doubled.

mod error;
mod event;
mod position;

#[cfg(feature = "conformance")]
pub mod conformance;

use async_trait::async_trait;
use futures::stream::BoxStream;

pub use error::{BoxError, Error};
pub use event::{
    AppendResult, MAX_APPEND_BYTES, MAX_PAYLOAD_BYTES, Metadata, NewEvent, RecordedEvent, StoredAt,
    Timestamp, stored_batch, validate_append,
};
pub use position::{AllRead, ExpectedVersion, Position, StreamName, StreamRead};

/// A live feed of recorded events: catch-up from storage, then live, in global order.
pub type EventSubscription = BoxStream<'static, Result<RecordedEvent, Error>>;

/// An append-only log of events, organised in streams, with one total order over all of them.
///
/// Every method is safe to call concurrently from many tasks. Reads and subscriptions only ever
/// see acknowledged events: an event appears once the `append` that wrote it has returned (or
/// would return) success, and never before it is durable.
#[async_trait]
pub trait EventStore: Send + Sync + std::fmt::Debug + 'static {
    /// Appends `events` to the end of `stream`, atomically: all of them land, with consecutive
    /// revisions and consecutive global order, or none does.
    ///
    /// `expected` is checked against the stream's current revision in the same transaction as the
    /// write; a mismatch is [`Error::WrongExpectedVersion`] carrying the actual revision.
    ///
    /// Idempotency, per stream and forever: if the first event's id is already stored in
    /// `stream`, and the batch's ids follow it at consecutive revisions there, nothing is written
    /// and the original result (revision and position of the batch's last event) is returned,
    /// whatever `expected` says; a batch that only partly matches what `stream` holds is
    /// [`Error::DuplicateEventId`]. Ids are unique within a stream, not across the store (as in
    /// EventStoreDB): an id stored in another stream is no concern of this append, so that no
    /// append has to consult an index of every id ever stored. An empty batch, a batch that
    /// repeats an id, or one over the size limits ([`MAX_PAYLOAD_BYTES`], [`MAX_APPEND_BYTES`]) is
    /// rejected before anything is written.
    ///
    /// Returns once the events are durable (they survive a crash of the process or the machine).
    async fn append(
        &self,
        stream: &StreamName,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult, Error>;

    /// Reads up to `limit` events of `stream`, in revision order (ascending for
    /// [`StreamRead::Forward`], descending for [`StreamRead::Backward`]), starting at and including
    /// the given revision. A stream that does not exist reads as empty.
    async fn read_stream(
        &self,
        stream: &StreamName,
        read: StreamRead,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, Error>;

    /// Reads up to `limit` events of all streams in global order: ascending and strictly after the
    /// given position for [`AllRead::Forward`], descending and strictly before it for
    /// [`AllRead::Backward`]. Positions are exclusive so that the last position seen is the cursor
    /// for the next page.
    async fn read_all(&self, read: AllRead, limit: usize) -> Result<Vec<RecordedEvent>, Error>;

    /// The revision of the last event of `stream`, or `None` if the stream does not exist.
    async fn stream_revision(&self, stream: &StreamName) -> Result<Option<u64>, Error>;

    /// The position of the last acknowledged event in the store, or `None` if it is empty.
    async fn head(&self) -> Result<Option<Position>, Error>;

    /// Follows the global log: first every stored event strictly after `after` (from the start when
    /// `None`), then every new event as it is acknowledged. Each event is delivered exactly once, in
    /// global order, with no gaps. A subscriber that falls behind is served from storage in pages,
    /// so its memory stays bounded however far behind it is; resume after a disconnect by passing
    /// the position of the last event seen. The stream ends with [`Error::Closed`] when the store
    /// shuts down.
    fn subscribe_all(&self, after: Option<Position>) -> EventSubscription;

    /// Like [`EventStore::subscribe_all`], restricted to one stream, resuming strictly after
    /// revision `after` (from the stream's start when `None`). The stream need not exist yet.
    fn subscribe_stream(&self, stream: &StreamName, after: Option<u64>) -> EventSubscription;
}
