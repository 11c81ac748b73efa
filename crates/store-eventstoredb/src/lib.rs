//! The EventStoreDB (KurrentDB) event store, on the official gRPC client (`eventstore`).
//!
//! Streams and revisions map one to one: our stream `acme/session-s1` is EventStoreDB's
//! `{namespace}:acme/session-s1`, the namespace keeping the ledger's streams apart from anything
//! else on the cluster. The global position is `$all`'s (commit, prepare), kept opaque.
//!
//! EventStoreDB deduplicates by event id only for an append at the exact revision where the ids
//! were first written. The contract's idempotency (per stream, forever) is therefore kept here:
//! before an append the stream is read (a ledger stream is one aggregate's: short), a batch
//! found there answers with the original result, and a partly found one is a duplicate. Every
//! append goes to EventStoreDB with an exact expected revision, so a concurrent writer is noticed
//! and the append is decided again.

mod mapping;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use eventstore::{
    AppendToStreamOptions, Client, ClientSettings, EventData, ExpectedRevision, ReadAllOptions,
    ReadStreamOptions, StreamPosition, SubscribeToAllOptions, SubscribeToStreamOptions,
    SubscriptionFilter,
};
use futures::StreamExt;
use ledger_store::{
    AllRead, AppendResult, Error, EventStore, EventSubscription, ExpectedVersion, NewEvent,
    Position, RecordedEvent, StoredAt, StreamName, StreamRead, stored_batch, validate_append,
};
use tokio::sync::watch;
use uuid::Uuid;

use crate::mapping::{from_esdb, recorded, to_esdb_position};

/// How many times an append is decided again after losing a race to a concurrent writer.
const MAX_RACES: usize = 32;
/// Events read from `$all` at a time.
const PAGE: usize = 512;
/// Every operation's deadline: past it the store reports itself unavailable.
const DEADLINE: Duration = Duration::from_secs(10);

/// Whether this process has created an EventStoreDB client (and with it, rustls's process-wide
/// crypto provider).
static CLIENT_CREATED: AtomicBool = AtomicBool::new(false);

/// The EventStoreDB event store. Cheap to clone.
#[derive(Clone)]
pub struct EventStoreDb {
    client: Client,
    namespace: Arc<str>,
    open: watch::Sender<bool>,
}

impl std::fmt::Debug for EventStoreDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The connection string may hold credentials: never print it.
        f.debug_struct("EventStoreDb")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl EventStoreDb {
    /// Connects to the cluster at `url` (`esdb://host:2113?tls=false`, or `esdb+discover://…`)
    /// and keeps the ledger's streams under `namespace`.
    ///
    /// The client installs rustls's process-wide crypto provider and panics if another is
    /// installed already, so the event store must be opened before anything else in the process
    /// sets one up (the server opens it first); if one is there already this returns an error
    /// instead of letting the client panic.
    pub async fn connect(url: &str, namespace: &str) -> Result<Self, Error> {
        mapping::check_namespace(namespace)?;
        if !CLIENT_CREATED.load(Ordering::SeqCst)
            && rustls::crypto::CryptoProvider::get_default().is_some()
        {
            return Err(Error::Backend(
                "a TLS crypto provider was installed before the EventStoreDB client; open the \
                 event store first"
                    .into(),
            ));
        }
        let settings: ClientSettings = url.parse().map_err(|e| {
            Error::Backend(format!("the EventStoreDB connection string does not parse: {e}").into())
        })?;
        let client = Client::new(settings).map_err(from_esdb)?;
        // From here the client may install the provider (it does so on connecting).
        CLIENT_CREATED.store(true, Ordering::SeqCst);
        let store = Self {
            client,
            namespace: namespace.into(),
            open: watch::channel(true).0,
        };
        // Connect now, so that the provider is installed (and a wrong address found) at start.
        match tokio::time::timeout(DEADLINE, store.client.server_info()).await {
            Ok(found) => found.map_err(from_esdb)?,
            Err(_) => {
                return Err(Error::Unavailable(
                    "EventStoreDB did not answer within the deadline".into(),
                ));
            }
        };
        Ok(store)
    }

    /// Ends every subscription with [`Error::Closed`] and refuses further appends.
    pub fn close(&self) {
        self.open.send_replace(false);
    }

    fn stream_name(&self, stream: &StreamName) -> String {
        format!("{}:{}", self.namespace, stream.as_str())
    }

    fn data_prefix(&self) -> String {
        format!("{}:", self.namespace)
    }

    /// Our view of a stored event, if it is one of the ledger's.
    fn ours(&self, event: &eventstore::RecordedEvent) -> Option<Result<RecordedEvent, Error>> {
        let name = event.stream_id.strip_prefix(&self.data_prefix())?;
        Some(recorded(name, event))
    }

    /// The whole stream, in revision order (ledger streams are one aggregate's: short).
    async fn whole_stream(&self, stream: &StreamName) -> Result<Vec<RecordedEvent>, Error> {
        self.read_stream(stream, StreamRead::Forward { from: 0 }, usize::MAX)
            .await
    }

    /// One decision and attempt; `None` when a concurrent writer got there first.
    async fn try_append(
        &self,
        stream: &StreamName,
        expected: ExpectedVersion,
        events: &[NewEvent],
    ) -> Result<Option<AppendResult>, Error> {
        let ids: Vec<Uuid> = events.iter().map(|e| e.id).collect();
        let held = self.whole_stream(stream).await?;
        let found: HashMap<Uuid, StoredAt> = (held.iter())
            .map(|e| {
                let at = StoredAt {
                    revision: e.revision,
                    position: e.position,
                };
                (e.id, at)
            })
            .collect();
        let stored: Vec<Option<StoredAt>> = ids.iter().map(|id| found.get(id).copied()).collect();
        if let Some(original) = stored_batch(&ids, &stored)? {
            return Ok(Some(original));
        }
        let actual = held.last().map(|e| e.revision);
        if !expected.is_satisfied_by(actual) {
            return Err(Error::WrongExpectedVersion {
                stream: stream.clone(),
                expected,
                actual,
            });
        }
        let data: Vec<EventData> = events
            .iter()
            .map(|e| {
                EventData::binary(&e.event_type, e.payload.clone())
                    .id(e.id)
                    .metadata(e.metadata.encode().into())
            })
            .collect();
        let at = match actual {
            Some(revision) => ExpectedRevision::Exact(revision),
            None => ExpectedRevision::NoStream,
        };
        let options = AppendToStreamOptions::default()
            .expected_revision(at)
            .deadline(DEADLINE);
        match (self.client)
            .append_to_stream(self.stream_name(stream), &options, data)
            .await
        {
            Ok(written) => {
                let first = actual.map_or(0, |r| r + 1);
                Ok(Some(AppendResult {
                    revision: first + events.len() as u64 - 1,
                    position: Position::new(written.position.commit, written.position.prepare),
                    written: true,
                }))
            }
            Err(eventstore::Error::WrongExpectedVersion { .. }) => Ok(None),
            Err(error) => Err(from_esdb(error)),
        }
    }
}

#[async_trait]
impl EventStore for EventStoreDb {
    async fn append(
        &self,
        stream: &StreamName,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult, Error> {
        validate_append(&events)?;
        if !*self.open.borrow() {
            return Err(Error::Closed);
        }
        for _ in 0..MAX_RACES {
            if let Some(result) = self.try_append(stream, expected, &events).await? {
                return Ok(result);
            }
        }
        Err(Error::Unavailable(
            "the stream kept changing under the append; retry".into(),
        ))
    }

    async fn read_stream(
        &self,
        stream: &StreamName,
        read: StreamRead,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, Error> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let options = ReadStreamOptions::default()
            .deadline(DEADLINE)
            .max_count(limit);
        let options = match read {
            StreamRead::Forward { from } => {
                options.forwards().position(StreamPosition::Position(from))
            }
            StreamRead::Backward { from } => options
                .backwards()
                .position(from.map_or(StreamPosition::End, StreamPosition::Position)),
        };
        let mut reading = match self
            .client
            .read_stream(self.stream_name(stream), &options)
            .await
        {
            Ok(reading) => reading,
            Err(eventstore::Error::ResourceNotFound) => return Ok(Vec::new()),
            Err(error) => return Err(from_esdb(error)),
        };
        let mut events = Vec::new();
        loop {
            match reading.next().await {
                Ok(Some(resolved)) => {
                    if let Some(event) = resolved.event {
                        events.push(recorded(stream.as_str(), &event)?);
                    }
                }
                Ok(None) | Err(eventstore::Error::ResourceNotFound) => return Ok(events),
                Err(error) => return Err(from_esdb(error)),
            }
        }
    }

    async fn read_all(&self, read: AllRead, limit: usize) -> Result<Vec<RecordedEvent>, Error> {
        // $all holds other streams too: read pages and keep ours, until `limit` of them.
        let mut found = Vec::new();
        let (forward, mut cursor) = match read {
            AllRead::Forward { after } => (true, after),
            AllRead::Backward { before } => (false, before),
        };
        while found.len() < limit {
            let options = ReadAllOptions::default().deadline(DEADLINE).max_count(PAGE);
            let start = cursor.map_or(
                if forward {
                    StreamPosition::Start
                } else {
                    StreamPosition::End
                },
                |p| StreamPosition::Position(to_esdb_position(p)),
            );
            let options = if forward {
                options.forwards()
            } else {
                options.backwards()
            }
            .position(start);
            let mut reading = self.client.read_all(&options).await.map_err(from_esdb)?;
            let mut page = 0;
            let mut moved = false;
            loop {
                let event = match reading.next().await {
                    Ok(Some(resolved)) => resolved.event,
                    Ok(None) => break,
                    Err(error) => return Err(from_esdb(error)),
                };
                page += 1;
                let Some(event) = event else { continue };
                let position = Position::new(event.position.commit, event.position.prepare);
                // Reads start at the cursor itself: the contract's cursors are exclusive.
                let beyond =
                    cursor.is_none_or(|c| if forward { position > c } else { position < c });
                if !beyond {
                    continue;
                }
                cursor = Some(position);
                moved = true;
                if let Some(ours) = self.ours(&event) {
                    found.push(ours?);
                    if found.len() == limit {
                        break;
                    }
                }
            }
            if page < PAGE || !moved {
                break;
            }
        }
        Ok(found)
    }

    async fn stream_revision(&self, stream: &StreamName) -> Result<Option<u64>, Error> {
        let last = self
            .read_stream(stream, StreamRead::Backward { from: None }, 1)
            .await?;
        Ok(last.first().map(|e| e.revision))
    }

    async fn head(&self) -> Result<Option<Position>, Error> {
        let last = self.read_all(AllRead::Backward { before: None }, 1).await?;
        Ok(last.first().map(|e| e.position))
    }

    fn subscribe_all(&self, after: Option<Position>) -> EventSubscription {
        let filter = SubscriptionFilter::on_stream_name().add_prefix(self.data_prefix());
        let options = SubscribeToAllOptions::default().filter(filter).position(
            after.map_or(StreamPosition::Start, |p| {
                StreamPosition::Position(to_esdb_position(p))
            }),
        );
        let store = self.clone();
        let open = self.open.subscribe();
        futures::stream::once(async move {
            let subscription = store.client.subscribe_to_all(&options).await;
            futures::stream::unfold(
                (subscription, store, after, false),
                move |(mut subscription, store, mut last, ended)| {
                    let mut open = open.clone();
                    async move {
                        if ended {
                            return None;
                        }
                        loop {
                            let next = tokio::select! {
                                next = subscription.next() => next,
                                _ = open.wait_for(|open| !open) => {
                                    return Some((Err(Error::Closed), (subscription, store, last, true)));
                                }
                            };
                            match next {
                                Ok(resolved) => {
                                    let Some(event) = resolved.event else { continue };
                                    let position =
                                        Position::new(event.position.commit, event.position.prepare);
                                    if last.is_some_and(|l| position <= l) {
                                        continue;
                                    }
                                    let Some(ours) = store.ours(&event) else { continue };
                                    last = Some(position);
                                    let ended = ours.is_err();
                                    return Some((ours, (subscription, store, last, ended)));
                                }
                                Err(error) => {
                                    return Some((Err(from_esdb(error)), (subscription, store, last, true)));
                                }
                            }
                        }
                    }
                },
            )
        })
        .flatten()
        .boxed()
    }

    fn subscribe_stream(&self, stream: &StreamName, after: Option<u64>) -> EventSubscription {
        let options = SubscribeToStreamOptions::default()
            .start_from(after.map_or(StreamPosition::Start, StreamPosition::Position));
        let (store, stream, name) = (self.clone(), stream.clone(), self.stream_name(stream));
        let open = self.open.subscribe();
        futures::stream::once(async move {
            let subscription = store.client.subscribe_to_stream(name, &options).await;
            futures::stream::unfold(
                (subscription, after, false),
                move |(mut subscription, mut last, ended)| {
                    let (mut open, stream) = (open.clone(), stream.clone());
                    async move {
                        if ended {
                            return None;
                        }
                        loop {
                            let next = tokio::select! {
                                next = subscription.next() => next,
                                _ = open.wait_for(|open| !open) => {
                                    return Some((Err(Error::Closed), (subscription, last, true)));
                                }
                            };
                            match next {
                                Ok(resolved) => {
                                    let Some(event) = resolved.event else {
                                        continue;
                                    };
                                    if last.is_some_and(|l| event.revision <= l) {
                                        continue;
                                    }
                                    last = Some(event.revision);
                                    let event = recorded(stream.as_str(), &event);
                                    let ended = event.is_err();
                                    return Some((event, (subscription, last, ended)));
                                }
                                Err(error) => {
                                    return Some((
                                        Err(from_esdb(error)),
                                        (subscription, last, true),
                                    ));
                                }
                            }
                        }
                    }
                },
            )
        })
        .flatten()
        .boxed()
    }
}
