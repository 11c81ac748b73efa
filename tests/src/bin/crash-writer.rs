//! The child of the crash test: appends to the embedded store in `argv[1]` from several
//! concurrent writers until it is killed, printing one line per acknowledged append:
//! `ack <stream> <revision> <position> <id>,<id>,...` (revision and position of the batch's last
//! event). Every event's payload and metadata are derived from its id and batch (see
//! `ledger_e2e::crash`), so the parent can check them after the kill.

use std::io::Write;
use std::sync::{Arc, Mutex};

use ledger_e2e::crash::{WRITERS, batch};
use ledger_store::{EventStore, ExpectedVersion, StreamName};
use ledger_store_embedded::EmbeddedStore;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = std::env::args()
        .nth(1)
        .expect("usage: crash-writer DATA_DIR");
    let store = Arc::new(EmbeddedStore::open(dir).expect("cannot open the store"));
    let out = Arc::new(Mutex::new(std::io::stdout()));
    writeln!(out.lock().unwrap(), "ready").unwrap();
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (store, out) = (store.clone(), out.clone());
            tokio::spawn(async move {
                let stream = StreamName::new(format!("crash-{w}")).unwrap();
                let mut revision = store.stream_revision(&stream).await.unwrap();
                for n in 0.. {
                    let events = batch(w, n);
                    let ids: Vec<_> = events.iter().map(|e| e.id.to_string()).collect();
                    let expected =
                        revision.map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact);
                    let result = store.append(&stream, expected, events).await.unwrap();
                    revision = Some(result.revision);
                    let mut out = out.lock().unwrap();
                    let line = format!(
                        "ack {stream} {} {} {}",
                        result.revision,
                        result.position.commit(),
                        ids.join(",")
                    );
                    writeln!(out, "{line}").unwrap();
                    out.flush().unwrap();
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
}
