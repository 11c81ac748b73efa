//! Catch-up speed of the projections: writes N events (default 1,000,000) of a synthetic
//! history (`ledger-synthetic`: sessions scheduled and held, insights shared for evaluation,
//! goals with progress) for 1,000 members, then folds them from zero and prints events/s.
//!
//! `cargo bench -p ledger-projections --bench catch_up`; `LEDGER_BENCH_EVENTS` sets N,
//! `LEDGER_BENCH_DIR` the disk, `LEDGER_BENCH_PROJECTIONS` a comma-separated choice of projections.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ledger_domain::TenantId;
use ledger_privacy::{KeyRing, MasterKey, SqliteKeys};
use ledger_projections::development::DevelopmentReviews;
use ledger_projections::evaluation::EvaluationBriefs;
use ledger_projections::health::DialogueHealth;
use ledger_projections::staffing::Staffing;
use ledger_projections::{
    DocumentStore, EmbeddedDocuments, Projection, ProjectionRunner, SharedLog,
};
use ledger_store::EventStore;
use ledger_store_embedded::EmbeddedStore;
use ledger_synthetic::History;

/// As the server allocates.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The process's user and system CPU time so far, from `/proc/self/stat` (Linux; its clock
/// ticks are 10 ms), to show whether folding is bound by the machine's cores.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The fields after the command name (which may hold spaces) in parentheses.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = |index: usize| fields.get(index)?.parse::<u64>().ok();
    Some((ticks(11)? + ticks(12)?) as f64 / 100.0)
}

fn main() {
    let events: usize = std::env::var("LEDGER_BENCH_EVENTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000);
    let base = std::env::var_os("LEDGER_BENCH_DIR").map_or_else(std::env::temp_dir, Into::into);
    let dir = tempfile::tempdir_in(base).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let store = EmbeddedStore::open(dir.path().join("log")).unwrap();
        let keys = Arc::new(
            KeyRing::unlock(
                Arc::new(SqliteKeys::open(&dir.path().join("keys.db")).unwrap()),
                MasterKey::parse(&MasterKey::generate()).unwrap(),
                None,
            )
            .unwrap(),
        );
        let started = Instant::now();
        let history = History {
            tenant: TenantId::parse("bench").unwrap(),
            members: 1000,
            events,
        };
        history.write(Arc::new(store.clone()), keys).await.unwrap();
        let head = store.head().await.unwrap();
        let written = head.map_or(0, |p| p.commit());
        println!(
            "wrote {written} events in {:.1} s",
            started.elapsed().as_secs_f64()
        );

        let log = SharedLog::new(Arc::new(store.clone()));
        let projections: [Arc<dyn Projection>; 4] = [
            Arc::new(EvaluationBriefs),
            Arc::new(Staffing),
            Arc::new(DevelopmentReviews),
            Arc::new(DialogueHealth),
        ];
        let opened: Vec<&dyn Projection> = projections.iter().map(|p| p.as_ref()).collect();
        let documents: Arc<dyn DocumentStore> =
            Arc::new(EmbeddedDocuments::open(dir.path(), &opened).unwrap());
        // As the server runs them: concurrently, each with its own runner and checkpoint.
        let folding = Instant::now();
        let cpu_before = cpu_seconds();
        let mut tasks = Vec::new();
        let mut waits = Vec::new();
        // `LEDGER_BENCH_PROJECTIONS=evaluation-briefs,staffing` folds only those (to profile one).
        let only = std::env::var("LEDGER_BENCH_PROJECTIONS").ok();
        let chosen = projections.into_iter().filter(|p| {
            only.as_ref()
                .is_none_or(|o| o.split(',').any(|n| n == p.name()))
        });
        for projection in chosen {
            let runner = ProjectionRunner::new(log.clone(), documents.clone());
            let name = projection.name();
            tasks.push(tokio::spawn(runner.clone().run(projection)));
            waits.push(tokio::spawn(async move {
                assert!(runner.wait_for(head, Duration::from_secs(3600)).await);
                (name, folding.elapsed().as_secs_f64())
            }));
        }
        for wait in waits {
            let (name, took) = wait.await.unwrap();
            println!("{name:>20}: caught up after {took:.1} s");
        }
        let took = folding.elapsed().as_secs_f64();
        println!(
            "all projections folded {written} events from zero in {took:.1} s: {:.0} events/s",
            written as f64 / took
        );
        if let (Some(before), Some(after)) = (cpu_before, cpu_seconds()) {
            let cpu = after - before;
            println!(
                "folding used {cpu:.1} s of CPU: {:.2} cores busy on average",
                cpu / took
            );
        }
        for task in tasks {
            task.abort();
        }
        store.close().await.unwrap();
    });
}
