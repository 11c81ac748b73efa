//! Access records: who read which person's data, when, through which query, allowed or denied.
//! They are events in the ledger (`{tenant}/access-{person}`), so they are verifiable too and a
//! person can ask who viewed their data. Records are queued and appended in batches by one task,
//! so a read costs a channel send, not an fsync.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use ledger_domain::{Event, TenantId, pb, to_timestamp};
use ledger_store::{
    EventStore, ExpectedVersion, Metadata, NewEvent, RecordedEvent, StreamName, StreamRead,
};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::auth::Principal;

/// Records waiting beyond this many make readers wait (backpressure, never loss).
const QUEUE: usize = 8192;
/// A batch closes after this many records, or when the queue is momentarily empty.
const BATCH: usize = 1024;

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
    /// Starts the appending task; it ends when every clone of the log is dropped and the queue is
    /// empty.
    pub fn start(store: Arc<dyn EventStore>) -> (Self, tokio::task::JoinHandle<()>) {
        let (queue, messages) = mpsc::channel(QUEUE);
        (
            Self { queue },
            tokio::spawn(append_batches(store, messages)),
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

async fn append_batches(store: Arc<dyn EventStore>, mut messages: mpsc::Receiver<Message>) {
    while let Some(first) = messages.recv().await {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match messages.recv().now_or_never() {
                Some(Some(message)) => batch.push(message),
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

/// Whose data a sequence of events is, by the aggregate each belongs to: a person's own stream,
/// a session's participants, an insight's subject, a goal's owner. Remembers what it has seen,
/// so a replay of the whole log looks nothing up and reports each person once.
#[derive(Debug, Default)]
pub struct Whose {
    /// Persons of each aggregate stream seen.
    streams: HashMap<String, Vec<String>>,
    reported: HashSet<String>,
}

impl Whose {
    /// The persons `event`'s data is about that were not reported before.
    pub async fn new_persons(
        &mut self,
        store: &dyn EventStore,
        event: &RecordedEvent,
    ) -> Vec<String> {
        let stream = event.stream.as_str();
        if !self.streams.contains_key(stream) {
            let persons = persons_of_stream(store, event).await;
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

    #[tokio::test]
    async fn a_batch_over_many_persons_shares_group_commits() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let (log, _appending) = AccessLog::start(Arc::new(store.clone()));
        let reader = Principal {
            tenant: TenantId::parse("acme").unwrap(),
            actor: Actor {
                subject: "hr-1".into(),
                roles: vec![Role::Hr],
            },
        };
        let persons: Vec<String> = (0..64).map(|n| format!("m-{n}")).collect();
        log.record(&reader, persons.clone(), "GetEvaluationBrief", true)
            .await;
        log.flush().await;

        for person in &persons {
            let stream = StreamName::new(format!("acme/access-{person}")).unwrap();
            let records = (store.read_stream(&stream, StreamRead::Forward { from: 0 }, 10))
                .await
                .unwrap();
            assert_eq!(records.len(), 1, "{person}");
        }
        // One append per person, all in flight at once: a handful of commits, not one (and one
        // fsync) per person after another.
        let stats = store.stats();
        assert_eq!(stats.appends, 64);
        assert!(stats.commits <= 8, "{} commits", stats.commits);
    }
}
