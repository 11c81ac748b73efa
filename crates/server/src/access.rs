//! Access records: who read which person's data, when, through which query, allowed or denied.
//! They are events in the ledger (`{tenant}/access-{person}`), so they are verifiable too and a
//! person can ask who viewed their data. Records are queued and appended in batches by one task,
//! so a read costs a channel send, not an fsync: a batch gathers what comes in a short window,
//! so a steady trickle of reads costs one append (and one fsync) a window, not one each.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use ledger_domain::{Event, TenantId, pb, to_timestamp};
use ledger_store::{
    EventStore, ExpectedVersion, Metadata, NewEvent, RecordedEvent, StreamName, StreamRead,
};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::auth::Principal;

/// Records waiting beyond this many make readers wait (backpressure, never loss).
const QUEUE: usize = 8192;
/// A batch closes after this many records, at a flush, or when its window closes.
const BATCH: usize = 1024;
/// How long a batch gathers records after its first: a query's record reaches the ledger this
/// much later at most, and 1,000 queries a second cost about 100 appends, not 1,000.
pub const GATHER: Duration = Duration::from_millis(10);

/// The kind prefix of access record streams.
pub const ACCESS_STREAM_KIND: &str = "access";

enum Message {
    Record(TenantId, pb::AccessRecorded),
    /// Answered once every record queued before it is appended.
    Flush(oneshot::Sender<()>),
}

/// The queue of access records. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AccessLog {
    queue: mpsc::Sender<Message>,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Record(tenant, record) => write!(f, "Record({tenant}, {record:?})"),
            Self::Flush(_) => f.write_str("Flush"),
        }
    }
}

impl AccessLog {
    /// Starts the appending task, whose batches gather records for `gather` ([`GATHER`]); it
    /// ends when every clone of the log is dropped and the queue is empty.
    pub fn start(
        store: Arc<dyn EventStore>,
        gather: Duration,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (queue, messages) = mpsc::channel(QUEUE);
        (
            Self { queue },
            tokio::spawn(append_batches(store, messages, gather)),
        )
    }

    /// Records that `reader` read (or was refused) the data of each of `persons` through `query`.
    pub async fn record(
        &self,
        reader: &Principal,
        persons: impl IntoIterator<Item = String>,
        query: &str,
        allowed: bool,
    ) {
        let at = Some(to_timestamp(ledger_store::Timestamp::now().as_micros()));
        for person_id in persons {
            let record = pb::AccessRecorded {
                reader: reader.actor.subject.clone(),
                reader_roles: reader
                    .actor
                    .roles
                    .iter()
                    .map(|role| role.as_str().to_owned())
                    .collect(),
                person_id,
                query: query.to_owned(),
                allowed,
                at,
            };
            if self
                .queue
                .send(Message::Record(reader.tenant.clone(), record))
                .await
                .is_err()
            {
                tracing::error!(
                    query,
                    "access log stopped; an access record was not written"
                );
            }
        }
    }

    /// Waits until every record queued so far is in the ledger.
    pub async fn flush(&self) {
        let (done, flushed) = oneshot::channel();
        if self.queue.send(Message::Flush(done)).await.is_ok() {
            let _ = flushed.await;
        }
    }
}

async fn append_batches(
    store: Arc<dyn EventStore>,
    mut messages: mpsc::Receiver<Message>,
    gather: Duration,
) {
    while let Some(first) = messages.recv().await {
        let closes = tokio::time::Instant::now() + gather;
        let mut flushed = matches!(first, Message::Flush(_));
        let mut batch = vec![first];
        // A flush is waited on: it closes the batch at once.
        while batch.len() < BATCH && !flushed {
            match tokio::time::timeout_at(closes, messages.recv()).await {
                Ok(Some(message)) => {
                    flushed = matches!(message, Message::Flush(_));
                    batch.push(message);
                }
                // The window closed, or every sender is gone.
                _ => break,
            }
        }
        let mut streams: BTreeMap<String, Vec<NewEvent>> = BTreeMap::new();
        let mut flushes = Vec::new();
        for message in batch {
            match message {
                Message::Record(tenant, record) => {
                    let stream = tenant.stream(ACCESS_STREAM_KIND, &record.person_id);
                    let event = Event::from(record);
                    streams.entry(stream).or_default().push(NewEvent {
                        id: Uuid::new_v4(),
                        event_type: event.type_name().to_owned(),
                        payload: event.encode().into(),
                        metadata: Metadata::default(),
                    });
                }
                Message::Flush(done) => flushes.push(done),
            }
        }
        // All at once, so the store's group commit takes them together: one after another, a
        // batch over many persons waited an fsync per person while the queue filled up and
        // made readers wait.
        let appends = streams.into_iter().map(|(stream, events)| {
            let store = store.clone();
            async move {
                let Ok(name) = StreamName::new(stream.clone()) else {
                    tracing::error!(%stream, "an access record stream name is invalid");
                    return;
                };
                let count = events.len();
                if let Err(error) = store.append(&name, ExpectedVersion::Any, events).await {
                    tracing::error!(%error, %stream, records = count, "access records were not written");
                }
            }
        });
        futures::future::join_all(appends).await;
        for done in flushes {
            let _ = done.send(());
        }
    }
}

/// Streams whose persons a [`Whose`] keeps at most (a few MiB): a replay of a long history, or a
/// subscription that runs for months, meets millions of streams, and the server's memory must
/// not grow with them.
const STREAMS_KEPT: usize = 65_536;

/// Whose data a sequence of events is, by the aggregate each belongs to: a person's own stream,
/// a session's participants, an insight's subject, a goal's owner. Remembers the streams it has
/// seen, up to a bound, so a replay looks up little, and reports each person once.
#[derive(Debug)]
pub struct Whose {
    /// Persons of each aggregate stream seen since the map was last full.
    streams: HashMap<String, Vec<String>>,
    kept: usize,
    reported: HashSet<String>,
}

impl Default for Whose {
    fn default() -> Self {
        Self::keeping(STREAMS_KEPT)
    }
}

impl Whose {
    fn keeping(kept: usize) -> Self {
        Self {
            streams: HashMap::new(),
            kept,
            reported: HashSet::new(),
        }
    }

    /// The persons `event`'s data is about that were not reported before.
    pub async fn new_persons(
        &mut self,
        store: &dyn EventStore,
        event: &RecordedEvent,
    ) -> Vec<String> {
        let stream = event.stream.as_str();
        if !self.streams.contains_key(stream) {
            let persons = persons_of_stream(store, event).await;
            // Full, it starts afresh: a stream seen again is looked up again (by its first
            // event), and its persons, reported once, stay reported.
            if self.streams.len() == self.kept {
                self.streams.clear();
            }
            self.streams.insert(stream.to_owned(), persons);
        }
        self.streams[stream]
            .iter()
            .filter(|person| self.reported.insert((*person).clone()))
            .cloned()
            .collect()
    }
}

async fn persons_of_stream(store: &dyn EventStore, event: &RecordedEvent) -> Vec<String> {
    let Some((_, aggregate)) = event.stream.as_str().split_once('/') else {
        return Vec::new();
    };
    if let Some(person) = aggregate.strip_prefix("person-") {
        return vec![person.to_owned()];
    }
    if !["session-", "insight-", "goal-"]
        .iter()
        .any(|kind| aggregate.starts_with(kind))
    {
        return Vec::new();
    }
    // The aggregate's first event names its people.
    let first = if event.revision == 0 {
        Some(event.clone())
    } else {
        match store
            .read_stream(&event.stream, StreamRead::Forward { from: 0 }, 1)
            .await
        {
            Ok(events) => events.into_iter().next(),
            Err(error) => {
                tracing::error!(%error, stream = %event.stream, "cannot tell whose data a stream holds");
                None
            }
        }
    };
    let decoded = first.and_then(|first| {
        Event::decode(&first.event_type, &first.payload)
            .ok()
            .flatten()
    });
    match decoded {
        Some(Event::SessionScheduled(e)) => vec![e.member_id, e.partner_id],
        Some(Event::InsightRecorded(e)) => vec![e.subject_id],
        Some(Event::GoalSet(e)) => vec![e.owner_id],
        _ => Vec::new(),
    }
}

/// How long `ListAccessRecords` waits for queued records before it reads.
pub const FLUSH_PATIENCE: Duration = Duration::from_secs(5);

#[cfg(test)]
mod tests {
    use ledger_domain::{Actor, Role};
    use ledger_store_embedded::EmbeddedStore;

    use super::*;

    fn hr() -> Principal {
        Principal {
            tenant: TenantId::parse("acme").unwrap(),
            actor: Actor {
                subject: "hr-1".into(),
                roles: vec![Role::Hr],
            },
        }
    }

    async fn records_of(store: &EmbeddedStore, person: &str) -> usize {
        let stream = StreamName::new(format!("acme/access-{person}")).unwrap();
        let read = StreamRead::Forward { from: 0 };
        store.read_stream(&stream, read, 100).await.unwrap().len()
    }

    #[tokio::test]
    async fn whose_keeps_few_streams_and_looks_a_forgotten_one_up() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        for n in 0..4 {
            let scheduled = Event::SessionScheduled(pb::SessionScheduled {
                session_id: format!("s-{n}"),
                member_id: format!("m-{n}"),
                partner_id: format!("p-{n}"),
                ..Default::default()
            });
            let events = (0..2)
                .map(|_| NewEvent {
                    id: Uuid::new_v4(),
                    event_type: scheduled.type_name().into(),
                    payload: scheduled.encode().into(),
                    metadata: Metadata::default(),
                })
                .collect();
            let stream = StreamName::new(format!("acme/session-s-{n}")).unwrap();
            store
                .append(&stream, ExpectedVersion::NoStream, events)
                .await
                .unwrap();
        }
        let log = (store.read_all(ledger_store::AllRead::Forward { after: None }, 100))
            .await
            .unwrap();
        let event = |n: usize, revision: usize| &log[2 * n + revision];
        let mut whose = Whose::keeping(2);
        let mut reported = Vec::new();
        // Each session's first event, then the first session's second: by then forgotten.
        for seen in [event(0, 0), event(1, 0), event(2, 0), event(0, 1)] {
            reported.push(whose.new_persons(&store, seen).await);
            assert!(
                whose.streams.len() <= 2,
                "{} streams kept",
                whose.streams.len()
            );
        }
        let pair = |n: usize| vec![format!("m-{n}"), format!("p-{n}")];
        assert_eq!(reported, [pair(0), pair(1), pair(2), vec![]]);
        // A stream met first at its second event is looked up in the log.
        assert_eq!(whose.new_persons(&store, event(3, 1)).await, pair(3));
    }

    #[tokio::test]
    async fn a_batch_over_many_persons_shares_group_commits() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let (log, _appending) = AccessLog::start(Arc::new(store.clone()), GATHER);
        let reader = hr();
        let persons: Vec<String> = (0..64).map(|n| format!("m-{n}")).collect();
        log.record(&reader, persons.clone(), "GetEvaluationBrief", true)
            .await;
        log.flush().await;

        for person in &persons {
            assert_eq!(records_of(&store, person).await, 1, "{person}");
        }
        // One append per person, all in flight at once: a handful of commits, not one (and one
        // fsync) per person after another.
        let stats = store.stats();
        assert_eq!(stats.appends, 64);
        assert!(stats.commits <= 8, "{} commits", stats.commits);
    }

    #[tokio::test]
    async fn reads_one_after_another_are_gathered_into_few_appends() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        // A window far longer than the reads take, so that timing cannot split them much.
        let (log, _appending) = AccessLog::start(Arc::new(store.clone()), Duration::from_secs(1));
        let persons: Vec<String> = (0..16).map(|n| format!("m-{n}")).collect();
        for person in &persons {
            log.record(&hr(), [person.clone()], "GetEvaluationBrief", true)
                .await;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        log.flush().await;
        for person in &persons {
            assert_eq!(records_of(&store, person).await, 1, "{person}");
        }
        // Appended one by one as they came, they took 16 commits.
        let commits = store.stats().commits;
        assert!(commits <= 4, "{commits} commits");
    }

    #[tokio::test]
    async fn a_flush_does_not_wait_for_the_window() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let (log, _appending) =
            AccessLog::start(Arc::new(store.clone()), Duration::from_secs(3600));
        log.record(&hr(), ["mia".to_owned()], "GetEvaluationBrief", true)
            .await;
        tokio::time::timeout(Duration::from_secs(30), log.flush())
            .await
            .expect("flushed before the hour-long window closed");
        assert_eq!(records_of(&store, "mia").await, 1);
    }
}
