//! The single writer: group commit of concurrent appends.

use std::fs::File;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use ledger_store::{
    AppendResult, Error, ExpectedVersion, NewEvent, Position, RecordedEvent, StoredAt, StreamName,
    Timestamp, stored_batch,
};
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::{Shared, schema};

/// At most this many appends share one commit, so one commit's latency stays bounded.
const MAX_GROUP: usize = 1024;
/// At most about this many payload bytes share one commit.
const MAX_GROUP_BYTES: usize = 16 * 1024 * 1024;

/// One append waiting for the writer.
#[derive(Debug)]
pub(crate) struct AppendRequest {
    pub(crate) stream: StreamName,
    pub(crate) expected: ExpectedVersion,
    pub(crate) events: Vec<NewEvent>,
    pub(crate) reply: oneshot::Sender<Result<AppendResult, Error>>,
}

impl AppendRequest {
    fn bytes(&self) -> usize {
        self.events.iter().map(|e| e.payload.len()).sum()
    }
}

/// Runs until every sender of `requests` is gone and the queue is empty, then marks the store
/// closed and releases the directory lock.
///
/// Two threads form a pipeline. This one checks and commits groups to SQLite with
/// `synchronous=NORMAL` (the commit is in the WAL file but not yet on disk); the syncer fsyncs
/// the WAL once for every commit that arrived since its last fsync, then publishes the new head
/// and answers the appends. So the writer's CPU work never waits for the disk, and one fsync
/// covers several commits. Readers never look past the published head, so nobody sees an event
/// before it is durable.
pub(crate) fn run(
    mut connection: Connection,
    mut requests: mpsc::Receiver<AppendRequest>,
    shared: Arc<Shared>,
    wal: File,
    lock: File,
) {
    let (committed, to_sync) = std::sync::mpsc::channel();
    let syncer_shared = shared.clone();
    let syncer = std::thread::Builder::new()
        .name("ledger-fsync".into())
        .spawn(move || sync(&wal, &to_sync, &syncer_shared))
        .expect("cannot start the fsync thread");
    let mut next = shared.head.borrow().sequence + 1;
    while let Some(first) = requests.blocking_recv() {
        let mut bytes = first.bytes();
        let mut group = vec![first];
        while group.len() < MAX_GROUP && bytes < MAX_GROUP_BYTES {
            let Ok(request) = requests.try_recv() else {
                break;
            };
            bytes += request.bytes();
            group.push(request);
        }
        if shared.failed.load(Ordering::Acquire) {
            for request in group {
                let _ = request.reply.send(Err(Error::Backend(FAILED_FSYNC.into())));
            }
            continue;
        }
        match commit_group(&mut connection, &group, next) {
            Ok(GroupCommitted {
                outcomes,
                next: after,
                events,
            }) => {
                shared.stats.commits.fetch_add(1, Ordering::Relaxed);
                next = after;
                // Kept before the syncer can publish them, so a subscriber finds them there.
                shared.recent.extend(events);
                let replies = group.into_iter().map(|request| request.reply).zip(outcomes);
                let batch = Committed {
                    last_sequence: next - 1,
                    replies: replies.collect(),
                };
                if committed.send(batch).is_err() {
                    break;
                }
            }
            Err(error) => {
                // The debug form carries SQLite's extended code (which kind of busy, say).
                tracing::error!(
                    ?error,
                    appends = group.len(),
                    "group commit failed; nothing written"
                );
                // The transaction rolled back; the sequence continues from what is stored.
                next = schema::last_sequence(&connection).map_or(next, |last| last + 1);
                for request in group {
                    let failure = Error::Backend(format!("commit failed: {error}").into());
                    let _ = request.reply.send(Err(failure));
                }
            }
        }
    }
    drop(committed);
    if syncer.join().is_err() {
        tracing::error!("the fsync thread panicked");
    }
    // Closing the connection checkpoints the WAL into the database before the lock is released.
    drop(connection);
    drop(lock);
    shared.head.send_modify(|head| head.open = false);
    tracing::info!("event store writer stopped");
}

const FAILED_FSYNC: &str = "the event store stopped accepting appends after a failed fsync";

/// Appends committed to SQLite, waiting for the fsync that makes them durable.
struct Committed {
    last_sequence: u64,
    replies: Vec<(Reply, Result<AppendResult, Error>)>,
}

type Reply = oneshot::Sender<Result<AppendResult, Error>>;

/// The syncer: one fsync of the WAL for everything committed since the last one, then the
/// answers, in commit order.
fn sync(wal: &File, committed: &std::sync::mpsc::Receiver<Committed>, shared: &Shared) {
    while let Ok(first) = committed.recv() {
        let mut batches = vec![first];
        batches.extend(committed.try_iter());
        let last_sequence = batches.last().map_or(0, |batch| batch.last_sequence);
        let synced = wal.sync_data();
        if let Err(error) = &synced {
            // After a failed fsync the kernel may have dropped the dirty pages: what is on disk
            // is unknown, so no append may be acknowledged from here on.
            tracing::error!(%error, "fsync of the event log failed; refusing further appends");
            shared.failed.store(true, Ordering::Release);
        } else {
            shared.stats.syncs.fetch_add(1, Ordering::Relaxed);
            // Publish before answering: a caller that reads after its append sees it.
            shared.head.send_modify(|head| {
                shared
                    .stats
                    .events
                    .fetch_add(last_sequence - head.sequence, Ordering::Relaxed);
                head.sequence = last_sequence;
            });
        }
        for (reply, outcome) in batches.into_iter().flat_map(|batch| batch.replies) {
            let outcome = match (&synced, outcome) {
                (Ok(()), outcome) => outcome,
                (Err(_), _) => Err(Error::Backend(FAILED_FSYNC.into())),
            };
            if outcome.is_ok() {
                shared.stats.appends.fetch_add(1, Ordering::Relaxed);
            }
            let _ = reply.send(outcome);
        }
    }
}

/// What one group's transaction did.
struct GroupCommitted {
    /// Each append's outcome, in the group's order.
    outcomes: Vec<Result<AppendResult, Error>>,
    /// The next free sequence number.
    next: u64,
    /// The events written, as readers will find them.
    events: Vec<RecordedEvent>,
}

/// Checks and writes every append of the group in one transaction; an `Err` means the whole
/// transaction was rolled back.
fn commit_group(
    connection: &mut Connection,
    group: &[AppendRequest],
    mut next: u64,
) -> rusqlite::Result<GroupCommitted> {
    let recorded_at = Timestamp::now().as_micros();
    // The write lock first: a transaction that reads and then asks for it gets SQLITE_BUSY at
    // once (no busy timeout) if another connection holds it a moment, as a reader re-reading
    // the WAL index's header does.
    let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut outcomes = Vec::with_capacity(group.len());
    let mut events = Vec::new();
    for request in group {
        let outcome = append_one(&transaction, request, &mut next, recorded_at, &mut events)?;
        outcomes.push(outcome);
    }
    transaction.commit()?;
    Ok(GroupCommitted {
        outcomes,
        next,
        events,
    })
}

struct StoredStream {
    id: i64,
    last_revision: u64,
}

/// Checks one append against the state inside the transaction (which includes the appends
/// before it in the same group) and writes it if the checks pass. Checks read only, so a
/// rejected append leaves nothing behind.
fn append_one(
    transaction: &Transaction<'_>,
    request: &AppendRequest,
    next: &mut u64,
    recorded_at: i64,
    recorded: &mut Vec<RecordedEvent>,
) -> rusqlite::Result<Result<AppendResult, Error>> {
    let stream = find_stream(transaction, &request.stream)?;
    if let Some(stream) = &stream {
        let ids: Vec<Uuid> = request.events.iter().map(|e| e.id).collect();
        let stored = (ids.iter())
            .map(|id| find_event(transaction, stream, *id))
            .collect::<rusqlite::Result<Vec<_>>>()?;
        // A retry or a duplicate is answered without writing.
        if let Some(answer) = stored_batch(&ids, &stored).transpose() {
            return Ok(answer);
        }
    }
    let actual = stream.as_ref().map(|s| s.last_revision);
    if !request.expected.is_satisfied_by(actual) {
        return Ok(Err(Error::WrongExpectedVersion {
            stream: request.stream.clone(),
            expected: request.expected,
            actual,
        }));
    }

    let first_revision = actual.map_or(0, |last| last + 1);
    let last_revision = first_revision + request.events.len() as u64 - 1;
    let stream_id = match stream {
        Some(stream) => {
            transaction
                .prepare_cached("UPDATE streams SET last_revision = ?2 WHERE id = ?1")?
                .execute(params![stream.id, last_revision as i64])?;
            stream.id
        }
        None => {
            transaction
                .prepare_cached("INSERT INTO streams (name, last_revision) VALUES (?1, ?2)")?
                .execute(params![request.stream.as_str(), last_revision as i64])?;
            transaction.last_insert_rowid()
        }
    };
    let mut insert = transaction.prepare_cached(
        "INSERT INTO events
            (position, stream_id, revision, event_id, event_type, payload, metadata, recorded_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?;
    for (revision, event) in (first_revision..).zip(&request.events) {
        insert.execute(params![
            *next as i64,
            stream_id,
            revision as i64,
            event.id.as_bytes(),
            event.event_type,
            &event.payload[..],
            event.metadata.encode(),
            recorded_at,
        ])?;
        recorded.push(RecordedEvent {
            stream: request.stream.clone(),
            revision,
            position: Position::from_sequence(*next),
            id: event.id,
            event_type: event.event_type.clone(),
            payload: event.payload.clone(),
            metadata: event.metadata.clone(),
            recorded_at: Timestamp::from_micros(recorded_at),
        });
        *next += 1;
    }
    Ok(Ok(AppendResult {
        revision: last_revision,
        position: Position::from_sequence(*next - 1),
        written: true,
    }))
}

fn find_stream(
    transaction: &Transaction<'_>,
    name: &StreamName,
) -> rusqlite::Result<Option<StoredStream>> {
    transaction
        .prepare_cached("SELECT id, last_revision FROM streams WHERE name = ?1")?
        .query_row([name.as_str()], |row| {
            Ok(StoredStream {
                id: row.get(0)?,
                last_revision: row.get::<_, i64>(1)? as u64,
            })
        })
        .optional()
}

fn find_event(
    transaction: &Transaction<'_>,
    stream: &StoredStream,
    id: Uuid,
) -> rusqlite::Result<Option<StoredAt>> {
    transaction
        .prepare_cached(
            "SELECT revision, position FROM events WHERE stream_id = ?1 AND event_id = ?2",
        )?
        .query_row(params![stream.id, id.as_bytes()], |row| {
            Ok(StoredAt {
                revision: row.get::<_, i64>(0)? as u64,
                position: Position::from_sequence(row.get::<_, i64>(1)? as u64),
            })
        })
        .optional()
}
