//! Replay and verification of a large log: appends N events (default 1,000,000) of one tenant to
//! an embedded store, starts the server on it, waits until the audit trees cover it, and runs
//! `verify` (replay over gRPC, recompute every leaf and the root, check the signed checkpoint);
//! then streams the whole log once more with `ReplayAll` alone, for the streaming rate.
//!
//! `cargo bench -p dialogue-ledger --bench verify`; `LEDGER_BENCH_EVENTS` sets N,
//! `LEDGER_BENCH_DIR` the disk.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use dialogue_ledger::auth::{Claims, DEFAULT_AUDIENCE, DEFAULT_ISSUER, LocalKeys};
use dialogue_ledger::verify::{Verdict, VerifyOptions, verify};
use dialogue_ledger::{AuthOptions, DEFAULT_LOG_ORIGIN, ServeOptions, checkpoint_signer};
use ledger_proto::v1 as api;
use ledger_proto::v1::ledger_client::LedgerClient;
use ledger_store::{EventStore, ExpectedVersion, Metadata, NewEvent, StreamName};
use ledger_store_embedded::EmbeddedStore;
use uuid::Uuid;

/// As the server allocates.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const BATCH: usize = 1000;

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
    runtime.block_on(run(dir.path(), events));
}

async fn run(dir: &std::path::Path, events: usize) {
    let started = Instant::now();
    let store = EmbeddedStore::open(dir).unwrap();
    let payload = Bytes::from(vec![b'x'; 256]);
    for batch in 0..events.div_ceil(BATCH) {
        let stream = StreamName::new(format!("bench/stream-{}", batch % 1000)).unwrap();
        let size = BATCH.min(events - batch * BATCH);
        let new_events = (0..size)
            .map(|_| NewEvent {
                id: Uuid::new_v4(),
                event_type: "bench.Appended".into(),
                payload: payload.clone(),
                metadata: Metadata::default(),
            })
            .collect();
        store
            .append(&stream, ExpectedVersion::Any, new_events)
            .await
            .unwrap();
    }
    store.close().await.unwrap();
    println!(
        "appended {events} events in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let options = ServeOptions {
        auth: AuthOptions {
            public_key: None,
            issuer: DEFAULT_ISSUER.into(),
            audience: DEFAULT_AUDIENCE.into(),
        },
        anonymity_threshold: 5,
        manager_overload_sessions: dialogue_ledger::DEFAULT_MANAGER_OVERLOAD_SESSIONS,
        checkpoint_key: None,
        log_origin: DEFAULT_LOG_ORIGIN.into(),
        store: dialogue_ledger::store::StoreOptions::Embedded,
        data_dir: dir.to_owned(),
        shutdown_grace: Duration::from_secs(5),
        limits: dialogue_ledger::limits::Limits::default(),
        ready_max_lag: Duration::from_secs(30),
        projection_commit_events: ledger_projections::DEFAULT_COMMIT_EVENTS,
        privacy: Default::default(),
        tls: None,
    };
    let server = tokio::spawn(dialogue_ledger::serve(listener, options, async {
        let _ = stopped.await;
    }));

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = Claims {
        iss: DEFAULT_ISSUER.into(),
        aud: DEFAULT_AUDIENCE.into(),
        sub: "audra".into(),
        tenant: "bench".into(),
        roles: vec!["auditor".into()],
        iat: now,
        exp: now + 3600,
    };
    // The server creates the key pair on start.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let token = LocalKeys::new(dir).issue(&claims).unwrap();
    let key = checkpoint_signer(dir, None, DEFAULT_LOG_ORIGIN)
        .unwrap()
        .verifier_key();

    // The audit trees fold the log first.
    let folding = Instant::now();
    let endpoint = format!("http://{addr}");
    let mut client = LedgerClient::connect(endpoint.clone()).await.unwrap();
    loop {
        let request = authed(&token, api::GetCheckpointRequest {});
        match client.get_checkpoint(request).await {
            Ok(checkpoint) if checkpoint.get_ref().tree_size == events as u64 => break,
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    let fold = folding.elapsed().as_secs_f64();
    println!(
        "audit trees folded {events} events in {fold:.1} s: {:.0} events/s",
        events as f64 / fold
    );

    let options = VerifyOptions {
        server: endpoint,
        tls: Default::default(),
        token,
        key,
        saved: None,
        save: None,
        progress: false,
    };
    let verifying = Instant::now();
    let verdict = verify(&options).await.unwrap();
    let took = verifying.elapsed().as_secs_f64();
    println!("{verdict}");
    assert!(
        matches!(verdict, Verdict::Verified { .. }),
        "the log did not verify"
    );
    println!(
        "verify replayed and checked {events} events in {took:.1} s: {:.0} events/s",
        events as f64 / took
    );

    // The stream alone: every event received and decoded by the client, nothing recomputed.
    let streaming = Instant::now();
    let request = authed(&options.token, api::ReplayAllRequest { from_leaf_index: 0 });
    let mut stream = client.replay_all(request).await.unwrap().into_inner();
    let mut streamed = 0usize;
    while let Some(event) = stream.message().await.unwrap() {
        assert_eq!(event.leaf_index, streamed as u64, "in order, without gaps");
        streamed += 1;
    }
    assert_eq!(streamed, events);
    let took = streaming.elapsed().as_secs_f64();
    println!(
        "ReplayAll streamed {streamed} events in {took:.1} s: {:.0} events/s",
        streamed as f64 / took
    );

    let _ = stop.send(());
    server.await.unwrap().unwrap();
}

/// `message` with the bearer `token`.
fn authed<T>(token: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}
