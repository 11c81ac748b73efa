//! The embedded store as unit tests watch and disturb it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::{StreamExt, stream};
use ledger_store::{
    AllRead, AppendResult, EventStore, EventSubscription, ExpectedVersion, NewEvent, Position,
    RecordedEvent, StreamName, StreamRead,
};
use ledger_store_embedded::EmbeddedStore;

/// The embedded store, counting the reads of each stream; if asked, its first subscription to
/// the log delivers three events and an error at once, then ends.
#[derive(Debug)]
pub(crate) struct WatchedStore {
    pub(crate) store: EmbeddedStore,
    reads: Mutex<HashMap<String, usize>>,
    /// Whether the next subscription to the log fails as described.
    fail_subscription: AtomicBool,
}

impl WatchedStore {
    pub(crate) fn new(store: EmbeddedStore) -> Self {
        Self {
            store,
            reads: Mutex::default(),
            fail_subscription: AtomicBool::new(false),
        }
    }

    pub(crate) fn failing_first_subscription(store: EmbeddedStore) -> Self {
        Self {
            fail_subscription: AtomicBool::new(true),
            ..Self::new(store)
        }
    }

    /// How often `stream` was read.
    pub(crate) fn reads(&self, stream: &str) -> usize {
        let reads = self.reads.lock().unwrap();
        reads.get(stream).copied().unwrap_or(0)
    }
}

#[async_trait::async_trait]
impl EventStore for WatchedStore {
    async fn append(
        &self,
        stream: &StreamName,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult, ledger_store::Error> {
        self.store.append(stream, expected, events).await
    }
    async fn read_stream(
        &self,
        stream: &StreamName,
        read: StreamRead,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, ledger_store::Error> {
        *(self.reads.lock().unwrap())
            .entry(stream.as_str().to_owned())
            .or_default() += 1;
        self.store.read_stream(stream, read, limit).await
    }
    async fn read_all(
        &self,
        read: AllRead,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, ledger_store::Error> {
        self.store.read_all(read, limit).await
    }
    async fn stream_revision(
        &self,
        stream: &StreamName,
    ) -> Result<Option<u64>, ledger_store::Error> {
        self.store.stream_revision(stream).await
    }
    async fn head(&self) -> Result<Option<Position>, ledger_store::Error> {
        self.store.head().await
    }
    fn subscribe_all(&self, after: Option<Position>) -> EventSubscription {
        if !self.fail_subscription.swap(false, Ordering::SeqCst) {
            return self.store.subscribe_all(after);
        }
        let lost = ledger_store::Error::Backend("connection lost".into());
        let first = self.store.subscribe_all(after).take(3);
        first.chain(stream::iter([Err(lost)])).boxed()
    }
    fn subscribe_stream(&self, stream: &StreamName, after: Option<u64>) -> EventSubscription {
        self.store.subscribe_stream(stream, after)
    }
}
