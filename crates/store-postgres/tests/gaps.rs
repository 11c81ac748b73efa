//! Writers in several processes (here: several stores on one schema, each with its own pool and
//! writer) append at once, pausing at random inside their transactions; a subscriber must see
//! every event exactly once, in the final global order, with no gap.

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use ledger_store::{AllRead, EventStore, ExpectedVersion, Metadata, NewEvent, StreamName};
use ledger_store_postgres::PostgresStore;
use ledger_store_postgres::testing::{TestSchema, database_url};
use uuid::Uuid;

const REPLICAS: usize = 3;
const WRITERS_PER_REPLICA: usize = 12;
const APPENDS_PER_WRITER: usize = 15;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_subscriber_sees_every_event_once_in_the_final_order() {
    let Some(url) = database_url() else {
        return;
    };
    let schema = TestSchema::new(&url);
    let mut replicas = Vec::new();
    for _ in 0..REPLICAS {
        let pause = Duration::from_millis(8);
        replicas.push(
            PostgresStore::connect_pausing(&url, &schema.name, pause)
                .await
                .unwrap(),
        );
    }
    let mut subscription = replicas[0].subscribe_all(None);

    let mut writers = Vec::new();
    for (r, replica) in replicas.iter().enumerate() {
        for w in 0..WRITERS_PER_REPLICA {
            let replica = replica.clone();
            writers.push(tokio::spawn(async move {
                let stream = StreamName::new(format!("test/writer-{r}-{w}")).unwrap();
                for i in 0..APPENDS_PER_WRITER {
                    // One or two events per append, so batches interleave too.
                    let batch = (0..1 + i % 2)
                        .map(|_| NewEvent {
                            id: Uuid::new_v4(),
                            event_type: "test.gap".into(),
                            payload: Bytes::from_static(b"gap"),
                            metadata: Metadata::default(),
                        })
                        .collect();
                    replica
                        .append(&stream, ExpectedVersion::Any, batch)
                        .await
                        .unwrap();
                }
            }));
        }
    }
    for writer in writers {
        writer.await.unwrap();
    }
    let stored = replicas[1]
        .read_all(AllRead::Forward { after: None }, usize::MAX)
        .await
        .unwrap();
    let expected = REPLICAS * WRITERS_PER_REPLICA * (APPENDS_PER_WRITER + APPENDS_PER_WRITER / 2);
    assert_eq!(stored.len(), expected);

    let mut seen = Vec::with_capacity(expected);
    while seen.len() < expected {
        let next = tokio::time::timeout(Duration::from_secs(30), subscription.next()).await;
        seen.push(next.expect("the subscriber stalled").unwrap().unwrap());
    }
    let unique: HashSet<Uuid> = seen.iter().map(|e| e.id).collect();
    assert_eq!(unique.len(), expected, "an event was delivered twice");
    let seen_order: Vec<_> = seen.iter().map(|e| (e.position, e.id)).collect();
    let final_order: Vec<_> = stored.iter().map(|e| (e.position, e.id)).collect();
    assert_eq!(seen_order, final_order, "the subscriber saw another order");
    for (n, event) in stored.iter().enumerate() {
        assert_eq!(
            event.position.commit(),
            n as u64 + 1,
            "a gap in the global order"
        );
    }
    let nothing = tokio::time::timeout(Duration::from_millis(300), subscription.next()).await;
    assert!(nothing.is_err(), "more than was written: {nothing:?}");
}
