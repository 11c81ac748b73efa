//! What the embedded backend promises beyond the shared contract: the directory survives
//! restarts, belongs to one process, closes without losing accepted appends, and commits
//! concurrent appends together.

use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use ledger_store::{
    AllRead, Error, EventStore, ExpectedVersion, Metadata, NewEvent, Position, StreamName,
};
use ledger_store_embedded::{EmbeddedStore, database_path};
use uuid::Uuid;

fn event(payload: &str) -> NewEvent {
    NewEvent {
        id: Uuid::new_v4(),
        event_type: "test.Event".into(),
        payload: Bytes::from(payload.to_owned()),
        metadata: Metadata::default(),
    }
}

fn stream(name: &str) -> StreamName {
    StreamName::new(name).unwrap()
}

async fn everything(store: &EmbeddedStore) -> Vec<ledger_store::RecordedEvent> {
    store
        .read_all(AllRead::Forward { after: None }, usize::MAX)
        .await
        .unwrap()
}

#[tokio::test]
async fn reopening_keeps_the_log_and_continues_its_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let first = vec![event("one"), event("two")];
    store
        .append(&stream("s"), ExpectedVersion::NoStream, first.clone())
        .await
        .unwrap();
    let before = everything(&store).await;
    store.close().await.unwrap();

    let store = EmbeddedStore::open(dir.path()).unwrap();
    assert_eq!(everything(&store).await, before);
    assert_eq!(
        store.head().await.unwrap(),
        Some(Position::from_sequence(2))
    );
    let r = store
        .append(
            &stream("s"),
            ExpectedVersion::Exact(1),
            vec![event("three")],
        )
        .await;
    assert_eq!(r.unwrap().position, Position::from_sequence(3));
    // Idempotency survives the restart too.
    let retried = store
        .append(&stream("s"), ExpectedVersion::Any, first)
        .await
        .unwrap();
    assert_eq!(
        (retried.revision, retried.position),
        (1, Position::from_sequence(2))
    );
    store.close().await.unwrap();
}

#[tokio::test]
async fn a_directory_belongs_to_one_store_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let second = EmbeddedStore::open(dir.path());
    assert!(
        matches!(&second, Err(Error::Backend(e)) if e.to_string().contains("in use")),
        "a second store opened the same directory: {second:?}"
    );
    store.close().await.unwrap();
    EmbeddedStore::open(dir.path())
        .unwrap()
        .close()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_finishes_accepted_appends_and_refuses_new_ones() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let mut subscription = store.subscribe_all(None);
    let appends: Vec<_> = (0..64)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let batch = vec![event(&format!("e{i}"))];
                let id = batch[0].id;
                (
                    id,
                    store
                        .append(&stream(&format!("s{i}")), ExpectedVersion::Any, batch)
                        .await,
                )
            })
        })
        .collect();
    store.close().await.unwrap();
    let mut acknowledged = Vec::new();
    for append in appends {
        match append.await.unwrap() {
            (id, Ok(_)) => acknowledged.push(id),
            (_, Err(Error::Closed)) => {}
            (_, Err(e)) => panic!("append failed with {e}"),
        }
    }
    let late = store
        .append(&stream("late"), ExpectedVersion::Any, vec![event("late")])
        .await;
    assert!(
        matches!(late, Err(Error::Closed)),
        "an append after close answered {late:?}"
    );

    // The subscription delivers every acknowledged event, then ends with Closed.
    let mut delivered = Vec::new();
    loop {
        match subscription.next().await {
            Some(Ok(event)) => delivered.push(event.id),
            Some(Err(Error::Closed)) => break,
            other => panic!("the subscription ended with {other:?}"),
        }
    }
    assert!(subscription.next().await.is_none());
    acknowledged.sort();
    delivered.sort();
    assert_eq!(delivered, acknowledged);

    let reopened = EmbeddedStore::open(dir.path()).unwrap();
    let mut stored: Vec<_> = everything(&reopened).await.iter().map(|e| e.id).collect();
    stored.sort();
    assert_eq!(
        stored, acknowledged,
        "the store holds other events than were acknowledged"
    );
    reopened.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_share_commits() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
    let writers: Vec<_> = (0..64)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..20 {
                    let s = stream(&format!("w{w}"));
                    store
                        .append(&s, ExpectedVersion::Any, vec![event(&format!("{i}"))])
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    let stats = store.stats();
    assert_eq!((stats.appends, stats.events), (64 * 20, 64 * 20));
    assert!(
        stats.syncs * 4 <= stats.appends && stats.syncs <= stats.commits,
        "{} fsyncs, {} commits for {} appends: concurrent appends were not grouped",
        stats.syncs,
        stats.commits,
        stats.appends
    );
}

#[tokio::test]
async fn a_damaged_event_is_reported_not_returned() {
    // Metadata that does not decode, an id that is not a UUID (the table is STRICT: a column
    // holds nothing but its type).
    for damage in ["metadata = x'0a03010203'", "event_id = x'010203'"] {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        store
            .append(
                &stream("s"),
                ExpectedVersion::Any,
                vec![event("fine"), event("hit")],
            )
            .await
            .unwrap();
        store.close().await.unwrap();

        let db = rusqlite::Connection::open(database_path(dir.path())).unwrap();
        db.execute(
            &format!("UPDATE events SET {damage} WHERE position = 2"),
            [],
        )
        .unwrap();
        drop(db);

        let store = EmbeddedStore::open(dir.path()).unwrap();
        let read = store.read_all(AllRead::Forward { after: None }, 10).await;
        assert!(
            matches!(read, Err(Error::Corrupt { ref position, .. }) if position == "2"),
            "{damage}: {read:?}"
        );
        store.close().await.unwrap();
    }
}

/// Subscribers at the head take events from what the writer keeps in memory: they must be
/// exactly what storage returns, metadata and all, with nothing from rejected appends or retries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_subscribers_get_what_storage_holds() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let mut live = store.subscribe_all(None);
    let mut appended = 0;
    for i in 0..50 {
        let mut events = vec![event(&format!("first {i}")), event(&format!("second {i}"))];
        events[0].metadata = Metadata {
            correlation_id: Some(Uuid::new_v4()),
            causation_id: Some(Uuid::new_v4()),
            extra: [("command".to_owned(), format!("c-{i}"))].into(),
        };
        let name = stream(&format!("t/s-{}", i % 7));
        store
            .append(&name, ExpectedVersion::Any, events.clone())
            .await
            .unwrap();
        // A retry of the same events appends nothing; a failed version check neither.
        store
            .append(&name, ExpectedVersion::Any, events)
            .await
            .unwrap();
        let rejected = store
            .append(&name, ExpectedVersion::NoStream, vec![event("never")])
            .await;
        assert!(matches!(rejected, Err(Error::WrongExpectedVersion { .. })));
        appended += 2;
    }
    let mut received = Vec::new();
    while received.len() < appended {
        received.push(live.next().await.unwrap().unwrap());
    }
    assert_eq!(received, everything(&store).await);
}

/// The first schema, as releases before event ids were unique per stream left their file: an
/// id was unique across the store.
const FIRST_SCHEMA: &str = "
    CREATE TABLE streams (
        id            INTEGER PRIMARY KEY,
        name          TEXT    NOT NULL UNIQUE,
        last_revision INTEGER NOT NULL
    ) STRICT;
    CREATE TABLE events (
        position    INTEGER PRIMARY KEY,
        stream_id   INTEGER NOT NULL REFERENCES streams (id),
        revision    INTEGER NOT NULL,
        event_id    BLOB    NOT NULL UNIQUE,
        event_type  TEXT    NOT NULL,
        payload     BLOB    NOT NULL,
        metadata    BLOB    NOT NULL,
        recorded_at INTEGER NOT NULL,
        UNIQUE (stream_id, revision)
    ) STRICT;
    PRAGMA user_version = 1;
";

#[tokio::test]
async fn a_log_of_the_first_schema_keeps_its_events_and_idempotency_with_ids_per_stream() {
    let dir = tempfile::tempdir().unwrap();
    let written = [event("one"), event("two")];
    {
        let db = rusqlite::Connection::open(database_path(dir.path())).unwrap();
        db.execute_batch(FIRST_SCHEMA).unwrap();
        db.execute("INSERT INTO streams VALUES (1, 'a', 1)", [])
            .unwrap();
        for (revision, e) in written.iter().enumerate() {
            db.execute(
                "INSERT INTO events VALUES (?1, 1, ?2, ?3, ?4, ?5, ?6, 1700000000000000)",
                rusqlite::params![
                    revision as i64 + 1,
                    revision as i64,
                    e.id.as_bytes(),
                    e.event_type,
                    &e.payload[..],
                    e.metadata.encode(),
                ],
            )
            .unwrap();
        }
    }

    let store = EmbeddedStore::open(dir.path()).unwrap();
    let stored = everything(&store).await;
    assert_eq!(
        stored
            .iter()
            .map(|e| (
                e.stream.as_str(),
                e.revision,
                e.position,
                e.id,
                e.payload.clone()
            ))
            .collect::<Vec<_>>(),
        [
            (
                "a",
                0,
                Position::from_sequence(1),
                written[0].id,
                written[0].payload.clone()
            ),
            (
                "a",
                1,
                Position::from_sequence(2),
                written[1].id,
                written[1].payload.clone()
            ),
        ]
    );
    let retried = store
        .append(&stream("a"), ExpectedVersion::Any, written.to_vec())
        .await
        .unwrap();
    assert_eq!(
        (retried.revision, retried.position),
        (1, Position::from_sequence(2))
    );
    let partly = vec![written[1].clone(), event("three")];
    assert!(matches!(
        store
            .append(&stream("a"), ExpectedVersion::Any, partly)
            .await,
        Err(Error::DuplicateEventId { .. })
    ));
    // The same id in another stream, refused by the first schema, is now that stream's event.
    let elsewhere = store
        .append(
            &stream("b"),
            ExpectedVersion::NoStream,
            vec![written[0].clone()],
        )
        .await
        .unwrap();
    assert_eq!(
        (elsewhere.revision, elsewhere.position),
        (0, Position::from_sequence(3))
    );
    store.close().await.unwrap();
}

/// The write lock can be held a moment by another connection (a reader that found the WAL
/// index's header changing under it takes it to read the header again). An append that began
/// by reading and only then asked for the lock would fail at once, whatever the busy timeout;
/// a group asks for it first, and waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_waits_while_another_connection_holds_the_write_lock() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    store
        .append(&stream("t/a"), ExpectedVersion::Any, vec![event("first")])
        .await
        .unwrap();
    let path = database_path(dir.path());
    let (locked, held) = std::sync::mpsc::channel();
    let holder = std::thread::spawn(move || {
        let connection = rusqlite::Connection::open(path).unwrap();
        connection.execute_batch("BEGIN IMMEDIATE").unwrap();
        locked.send(()).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(300));
        connection.execute_batch("COMMIT").unwrap();
    });
    held.recv().unwrap();
    let appended = store
        .append(&stream("t/a"), ExpectedVersion::Any, vec![event("second")])
        .await;
    assert!(appended.is_ok(), "{appended:?}");
    holder.join().unwrap();
    assert_eq!(everything(&store).await.len(), 2);
    store.close().await.unwrap();
}
