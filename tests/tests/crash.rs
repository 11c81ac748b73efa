//! Durability under SIGKILL: a child process appends under load and prints each acknowledgement;
//! the test kills it at a random moment, reopens the store and checks that every acknowledged
//! event is there exactly once, in order, intact, and that no batch is half-written. 24 cycles
//! on one growing store.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ledger_e2e::crash::{batch_of, payload_for};
use ledger_store::{AllRead, EventStore, Position, RecordedEvent};
use ledger_store_embedded::EmbeddedStore;
use rand::Rng;
use uuid::Uuid;

const CYCLES: usize = 24;

/// One acknowledged append as the child printed it.
#[derive(Debug)]
struct Ack {
    stream: String,
    revision: u64,
    position: u64,
    ids: Vec<Uuid>,
}

fn parse(line: &str) -> Option<Ack> {
    let mut parts = line.strip_prefix("ack ")?.split(' ');
    Some(Ack {
        stream: parts.next()?.to_owned(),
        revision: parts.next()?.parse().ok()?,
        position: parts.next()?.parse().ok()?,
        ids: parts
            .next()?
            .split(',')
            .map(|id| id.parse().unwrap())
            .collect(),
    })
}

/// When a cycle's kill comes: a random moment after the child is ready (it may still be
/// opening the store, or checkpointing the log's WAL in its first commit), or after its first
/// acknowledgement (so that it dies with appends in flight, however long the first one took).
#[derive(Debug, Clone, Copy)]
enum Kill {
    AfterReady,
    AfterFirstAck,
}

/// Runs the child until a random moment after `kill`'s event, kills it with SIGKILL and returns
/// every acknowledgement it printed before it died.
fn run_and_kill(dir: &std::path::Path, rng: &mut impl Rng, kill: Kill) -> Vec<Ack> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_crash-writer"))
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let (lines, received) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in stdout.lines() {
            let Ok(line) = line else { break };
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let ready = received
        .recv_timeout(Duration::from_secs(30))
        .expect("the child did not start");
    assert_eq!(ready, "ready");
    let mut acks = Vec::new();
    if let Kill::AfterFirstAck = kill {
        let first = received
            .recv_timeout(Duration::from_secs(30))
            .expect("the child acknowledged no append");
        acks.push(parse(&first).expect("a malformed line"));
    }
    let deadline = Instant::now() + Duration::from_millis(rng.random_range(0..250));
    while let Ok(line) = received.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        acks.push(parse(&line).expect("a malformed line"));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    reader.join().unwrap();
    // Lines printed before the kill are acknowledgements too.
    acks.extend(
        received
            .try_iter()
            .map(|line| parse(&line).expect("a malformed line")),
    );
    acks
}

/// Checks the whole store against every acknowledgement so far.
fn verify(events: &[RecordedEvent], acked: &[Ack]) {
    let mut by_id = HashMap::new();
    for (i, event) in events.iter().enumerate() {
        assert_eq!(
            event.position,
            Position::from_sequence(i as u64 + 1),
            "a gap in the global log"
        );
        assert_eq!(
            event.payload,
            payload_for(event.id),
            "event {} is damaged",
            event.id
        );
        assert!(
            by_id.insert(event.id, event).is_none(),
            "event {} is stored twice",
            event.id
        );
    }

    let mut next_revision: HashMap<&str, u64> = HashMap::new();
    let mut i = 0;
    while i < events.len() {
        let (batch, len, _) = batch_of(&events[i]);
        let whole = events
            .get(i..i + len)
            .expect("a batch is cut off at the end of the log");
        for (index, event) in whole.iter().enumerate() {
            assert_eq!(
                batch_of(event),
                (batch, len, index),
                "batch {batch} is not whole"
            );
            assert_eq!(event.stream, whole[0].stream);
            let revision = next_revision.entry(event.stream.as_str()).or_default();
            assert_eq!(
                event.revision, *revision,
                "revisions of {} have a gap",
                event.stream
            );
            *revision += 1;
        }
        i += len;
    }

    let mut seen = HashSet::new();
    for ack in acked {
        for id in &ack.ids {
            assert!(seen.insert(*id), "an event was acknowledged twice");
            let event = by_id
                .get(id)
                .unwrap_or_else(|| panic!("acknowledged event {id} is lost"));
            assert_eq!(event.stream.as_str(), ack.stream);
        }
        let last = by_id[ack.ids.last().unwrap()];
        assert_eq!(
            (last.revision, last.position.commit()),
            (ack.revision, ack.position)
        );
    }
}

#[test]
fn acknowledged_appends_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand::rng();
    let mut acked = Vec::new();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    for cycle in 0..CYCLES {
        // Half the kills come after the first acknowledgement: timed from the child's start
        // alone, every kill of a stretch of cycles fell before it (its first commit checkpoints
        // the log's WAL once the kills have let the WAL grow, and a kill stops that checkpoint).
        let kill = if cycle % 2 == 0 {
            Kill::AfterReady
        } else {
            Kill::AfterFirstAck
        };
        let acks = run_and_kill(dir.path(), &mut rng, kill);
        acked.extend(acks);
        let events = runtime.block_on(async {
            let store = EmbeddedStore::open(dir.path()).unwrap();
            let events = store
                .read_all(AllRead::Forward { after: None }, usize::MAX)
                .await
                .unwrap();
            store.close().await.unwrap();
            events
        });
        verify(&events, &acked);
        let acknowledged: usize = acked.iter().map(|ack| ack.ids.len()).sum();
        println!(
            "cycle {cycle}: {acknowledged} events acknowledged, {} stored",
            events.len()
        );
    }
}
