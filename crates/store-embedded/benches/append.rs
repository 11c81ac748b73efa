//! Raw durable appends to the embedded store, in process: 1-event batches of 256 bytes, each with
//! an exact expected-version check, from 1, 16 and 64 concurrent writers (one stream each).
//!
//! `cargo bench -p ledger-store-embedded --bench append`
//! Environment: `LEDGER_BENCH_SECONDS` (per concurrency level, default 5),
//! `LEDGER_BENCH_DIR` (where the store is created; default the system temp dir — it must be a
//! real disk, not tmpfs, for the figures to mean anything).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use ledger_store::{EventStore, ExpectedVersion, Metadata, NewEvent, StreamName};
use ledger_store_embedded::EmbeddedStore;
use uuid::Uuid;

const PAYLOAD_BYTES: usize = 256;
const WARM_UP: Duration = Duration::from_millis(500);

struct Run {
    writers: usize,
    events: u64,
    elapsed: Duration,
    latency: Histogram<u64>,
    syncs: u64,
}

impl Run {
    fn events_per_second(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64()
    }
}

fn main() {
    let seconds = std::env::var("LEDGER_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok());
    let duration = Duration::from_secs_f64(seconds.unwrap_or(5.0));
    let base = std::env::var_os("LEDGER_BENCH_DIR").map_or_else(std::env::temp_dir, Into::into);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();

    println!(
        "durable appends: 1 event of {PAYLOAD_BYTES} bytes per append, exact expected version"
    );
    println!(
        "{:>8} {:>12} {:>10} {:>10} {:>10} {:>14}",
        "writers", "events/s", "p50 ms", "p99 ms", "fsyncs", "events/fsync"
    );
    let mut runs = Vec::new();
    for writers in [1, 16, 64] {
        let dir = tempfile::tempdir_in(&base).unwrap();
        let run = runtime.block_on(run(dir.path(), writers, duration));
        println!(
            "{:>8} {:>12.0} {:>10.3} {:>10.3} {:>10} {:>14.1}",
            run.writers,
            run.events_per_second(),
            run.latency.value_at_quantile(0.50) as f64 / 1000.0,
            run.latency.value_at_quantile(0.99) as f64 / 1000.0,
            run.syncs,
            run.events as f64 / run.syncs.max(1) as f64,
        );
        runs.push(run);
    }
    let speedup = runs[2].events_per_second() / runs[0].events_per_second();
    println!("64 writers vs 1 writer: {speedup:.1}x");
}

async fn run(dir: &std::path::Path, writers: usize, duration: Duration) -> Run {
    let store = Arc::new(EmbeddedStore::open(dir).unwrap());
    let payload = Bytes::from(vec![b'x'; PAYLOAD_BYTES]);
    let start = Instant::now();
    let measure_from = start + WARM_UP;
    let end = measure_from + duration;
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let (store, payload) = (store.clone(), payload.clone());
            tokio::spawn(async move {
                let stream = StreamName::new(format!("bench-{w}")).unwrap();
                let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
                let mut expected = ExpectedVersion::NoStream;
                let mut events = 0;
                loop {
                    let event = NewEvent {
                        id: Uuid::new_v4(),
                        event_type: "bench.Appended".into(),
                        payload: payload.clone(),
                        metadata: Metadata::default(),
                    };
                    let sent = Instant::now();
                    if sent >= end {
                        break;
                    }
                    let result = store.append(&stream, expected, vec![event]).await.unwrap();
                    expected = ExpectedVersion::Exact(result.revision);
                    if sent >= measure_from {
                        latency.record(sent.elapsed().as_micros() as u64).unwrap();
                        events += 1;
                    }
                }
                (events, latency)
            })
        })
        .collect();
    tokio::time::sleep_until(measure_from.into()).await;
    let syncs_before = store.stats().syncs;
    tokio::time::sleep_until(end.into()).await;
    let syncs = store.stats().syncs - syncs_before;
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    let mut events = 0;
    for task in tasks {
        let (n, histogram) = task.await.unwrap();
        events += n;
        latency.add(histogram).unwrap();
    }
    let elapsed = Instant::now().min(end) - measure_from;
    store.close().await.unwrap();
    Run {
        writers,
        events,
        elapsed,
        latency,
        syncs,
    }
}
