//! A schema written by an earlier release migrates on connect and keeps its events and their
//! idempotency. Runs when `LEDGER_TEST_PG_URL` is set; otherwise says it was skipped.

use bytes::Bytes;
use ledger_store::{AllRead, Error, EventStore, ExpectedVersion, Metadata, NewEvent, StreamName};
use ledger_store_postgres::PostgresStore;
use ledger_store_postgres::testing::{TestSchema, database_url};
use uuid::Uuid;

/// The first schema, as releases before event ids were unique per stream left it: an id was
/// unique across the store.
const FIRST_SCHEMA: &str = "
    CREATE TABLE schema_version (id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL);
    INSERT INTO schema_version VALUES (1, 1);
    CREATE TABLE streams (name TEXT PRIMARY KEY, last_revision BIGINT NOT NULL);
    CREATE TABLE events (
        position    BIGINT PRIMARY KEY,
        stream      TEXT   NOT NULL,
        revision    BIGINT NOT NULL,
        id          UUID   NOT NULL UNIQUE,
        event_type  TEXT   NOT NULL,
        payload     BYTEA  NOT NULL,
        metadata    BYTEA  NOT NULL,
        recorded_at BIGINT NOT NULL,
        UNIQUE (stream, revision)
    );
    CREATE TABLE head (id INTEGER PRIMARY KEY CHECK (id = 1), last BIGINT NOT NULL);
    INSERT INTO head VALUES (1, 2);
    INSERT INTO streams VALUES ('test/a', 1);
";

fn event(payload: &'static str) -> NewEvent {
    NewEvent {
        id: Uuid::new_v4(),
        event_type: "test.Event".into(),
        payload: Bytes::from_static(payload.as_bytes()),
        metadata: Metadata::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_of_the_first_release_keeps_its_events_and_idempotency_with_ids_per_stream() {
    let Some(url) = database_url() else {
        return;
    };
    let schema = TestSchema::new(&url);
    let written = [event("one"), event("two")];
    {
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        let driver = tokio::spawn(connection);
        let name = &schema.name;
        client
            .batch_execute(&format!(
                "CREATE SCHEMA {name}; SET search_path = {name}; {FIRST_SCHEMA}"
            ))
            .await
            .unwrap();
        for (revision, e) in written.iter().enumerate() {
            client
                .execute(
                    &format!(
                        "INSERT INTO {name}.events VALUES ($1, 'test/a', $2, $3, $4, $5, $6, 0)"
                    ),
                    &[
                        &(revision as i64 + 1),
                        &(revision as i64),
                        &e.id,
                        &e.event_type,
                        &&e.payload[..],
                        &e.metadata.encode(),
                    ],
                )
                .await
                .unwrap();
        }
        drop(client);
        driver.await.unwrap().unwrap();
    }

    let store = PostgresStore::connect(&url, &schema.name).await.unwrap();
    let a = StreamName::new("test/a").unwrap();
    let stored = store
        .read_all(AllRead::Forward { after: None }, 10)
        .await
        .unwrap();
    assert_eq!(
        stored
            .iter()
            .map(|e| (e.revision, e.id))
            .collect::<Vec<_>>(),
        [(0, written[0].id), (1, written[1].id)]
    );
    let retried = store
        .append(&a, ExpectedVersion::Any, written.to_vec())
        .await
        .unwrap();
    assert_eq!(
        (retried.revision, retried.position),
        (1, stored[1].position)
    );
    let partly = vec![written[1].clone(), event("three")];
    assert!(matches!(
        store.append(&a, ExpectedVersion::Any, partly).await,
        Err(Error::DuplicateEventId { .. })
    ));
    // The same id in another stream, refused by the first schema, is now that stream's event.
    let b = StreamName::new("test/b").unwrap();
    let elsewhere = store
        .append(&b, ExpectedVersion::NoStream, vec![written[0].clone()])
        .await
        .unwrap();
    assert_eq!(elsewhere.revision, 0);
    assert!(elsewhere.position > stored[1].position);
}
