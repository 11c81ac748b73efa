//! Reading the embedded store back, in process: pages of the global log (`read_all`, as `ReplayAll`
//! and the audit's replay read it) and a subscription from the start (as a projection catching up
//! reads it). Events of 256 bytes with the metadata a command leaves (correlation id, command id
//! and hash, trace context), over 1,000 streams.
//!
//! `cargo bench -p ledger-store-embedded --bench read`
//! Environment: `LEDGER_BENCH_EVENTS` (default 500,000), `LEDGER_BENCH_DIR` (where the store is
//! created; default the system temp dir).

use std::collections::BTreeMap;
use std::time::Instant;

use bytes::Bytes;
use futures::StreamExt;
use ledger_store::{AllRead, EventStore, ExpectedVersion, Metadata, NewEvent, StreamName};
use ledger_store_embedded::EmbeddedStore;
use uuid::Uuid;

/// As the server allocates.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const PAYLOAD_BYTES: usize = 256;
const STREAMS: usize = 1_000;
const PAGE: usize = 4_096;

fn main() {
    let events: usize = std::env::var("LEDGER_BENCH_EVENTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(500_000);
    let base = std::env::var_os("LEDGER_BENCH_DIR").map_or_else(std::env::temp_dir, Into::into);
    let dir = tempfile::tempdir_in(base).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let store = EmbeddedStore::open(dir.path()).unwrap();
        write(&store, events).await;
        for _ in 0..3 {
            let started = Instant::now();
            let mut after = None;
            let mut read = 0;
            loop {
                let page = store
                    .read_all(AllRead::Forward { after }, PAGE)
                    .await
                    .unwrap();
                let Some(last) = page.last() else { break };
                after = Some(last.position);
                read += page.len();
            }
            assert_eq!(read, events);
            report("read_all, pages of 4,096", read, started);
        }
        for _ in 0..3 {
            let started = Instant::now();
            let mut subscription = store.subscribe_all(None).take(events);
            let mut read = 0;
            while let Some(event) = subscription.next().await {
                event.unwrap();
                read += 1;
            }
            assert_eq!(read, events);
            report("subscribe_all from the start", read, started);
        }
        store.close().await.unwrap();
    });
}

/// Appends `events` events round the streams, in batches of 100 to one stream.
async fn write(store: &EmbeddedStore, events: usize) {
    let started = Instant::now();
    let payload = Bytes::from(vec![b'x'; PAYLOAD_BYTES]);
    let mut revisions = vec![ExpectedVersion::NoStream; STREAMS];
    let mut written = 0;
    while written < events {
        let s = (written / 100) % STREAMS;
        let stream = StreamName::new(format!("bench/goal-{s}")).unwrap();
        let batch: Vec<NewEvent> = (0..(events - written).min(100))
            .map(|_| NewEvent {
                id: Uuid::new_v4(),
                event_type: "dialogue.ledger.events.v1.GoalProgressRecorded".into(),
                payload: payload.clone(),
                metadata: command_metadata(),
            })
            .collect();
        written += batch.len();
        let appended = store.append(&stream, revisions[s], batch).await.unwrap();
        revisions[s] = ExpectedVersion::Exact(appended.revision);
    }
    println!(
        "wrote {events} events in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// Metadata as the command handler writes it.
fn command_metadata() -> Metadata {
    let extra = BTreeMap::from([
        ("command_id".to_owned(), Uuid::new_v4().to_string()),
        ("command_hash".to_owned(), "ab".repeat(32)),
        (
            "traceparent".to_owned(),
            format!("00-{}-{}-01", "1".repeat(32), "2".repeat(16)),
        ),
    ]);
    Metadata {
        correlation_id: Some(Uuid::new_v4()),
        causation_id: None,
        extra,
    }
}

fn report(name: &str, events: usize, started: Instant) {
    let took = started.elapsed();
    println!(
        "{name:<32} {:>8.0} ns/event {:>12.0} events/s",
        took.as_nanos() as f64 / events as f64,
        events as f64 / took.as_secs_f64()
    );
}
