//! What a fold reads and writes: a story of the benchmarks' synthetic history, folded in one
//! window, reads back from the store only what earlier stories may have written (each of its own
//! documents is new, and what was never served has nothing to withdraw) and writes each
//! document once, leaving nothing behind of a held session's schedule. A catch-up's cost is
//! mostly these reads and writes.

use std::sync::Mutex;

use ledger_domain::TenantId;
use ledger_projections::development::DevelopmentReviews;
use ledger_projections::evaluation::EvaluationBriefs;
use ledger_projections::health::DialogueHealth;
use ledger_projections::staffing::Staffing;
use ledger_projections::{
    Applied, Change, Checkpoint, DocumentStore, Documents, Error, Projection, Write,
};
use ledger_store::Position;
use ledger_synthetic::History;
use uuid::Uuid;

/// 2026-12-01T10:00:00Z
const DEC_1: i64 = 1_796_119_200_000_000;

/// An empty store that notes what is read from it.
#[derive(Debug, Default)]
struct Empty {
    read: Mutex<Vec<String>>,
}

impl DocumentStore for Empty {
    fn checkpoint(&self, _projection: &str) -> Result<Option<Checkpoint>, Error> {
        Ok(None)
    }
    fn get(&self, model: &str, key: &str) -> Result<Option<Vec<u8>>, Error> {
        self.read.lock().unwrap().push(format!("{model} {key}"));
        Ok(None)
    }
    fn scan_range(
        &self,
        model: &str,
        from: &str,
        _: &str,
    ) -> Result<Vec<(String, Vec<u8>)>, Error> {
        Err(Error::Database(format!(
            "the fold scanned {model} from {from}"
        )))
    }
    fn commit(
        &self,
        _: &str,
        _: Option<Checkpoint>,
        _: Checkpoint,
        _: &[Write],
        _: &[&str],
    ) -> Result<(), Error> {
        Ok(())
    }
    fn changes(&self, _: &str, _: u64, _: usize) -> Result<Vec<Change>, Error> {
        Ok(Vec::new())
    }
    fn reset(&self, _: &str, _: &[&str]) -> Result<(), Error> {
        Ok(())
    }
}

/// What `projection` reads and writes for story 3 of member m7 (partner m4), as `model key`.
fn folded_by(projection: &dyn Projection) -> (Vec<String>, Vec<String>) {
    let history = History {
        tenant: TenantId::parse("bench").unwrap(),
        members: 1000,
        events: 8,
    };
    let store = Empty::default();
    let mut documents = Documents::new(&store);
    let mut position = 0;
    for (stream, events) in history.story("m7", 3) {
        for event in &events {
            position += 1;
            let applied = Applied {
                event,
                id: Uuid::from_u128(position.into()),
                tenant: "bench",
                stream: &stream,
                recorded_at: DEC_1,
                position: Position::from_sequence(position),
            };
            projection.apply(applied, &mut documents).unwrap();
        }
    }
    let writes = documents.take_writes().unwrap();
    let written = (writes.iter())
        .map(|write| match write {
            Write::Put { model, key, .. } => format!("{model} {key}"),
            Write::Delete { model, key } => format!("delete {model} {key}"),
        })
        .collect();
    drop(documents);
    (store.read.into_inner().unwrap(), written)
}

#[test]
fn a_story_reads_only_what_earlier_ones_wrote_and_writes_each_document_once() {
    let nothing: [&str; 0] = [];
    let (read, written) = folded_by(&EvaluationBriefs);
    assert_eq!(read, nothing);
    assert_eq!(
        written,
        [
            "evaluation-goal bench/m7/2026-07/g3",
            "evaluation-insight bench/m7/2026-12/i3",
            "evaluation-insight-source bench/i3",
            "evaluation-item bench/m7/2026-12/s3/a",
            "evaluation-route bench/goal/g3",
            "evaluation-route bench/item/s3/a",
            "evaluation-session bench/m7/2026-12/s3",
        ]
    );
    // A member's partner gathers the sessions of many stories.
    let (read, written) = folded_by(&DevelopmentReviews);
    assert_eq!(read, ["development-partner bench/m7/m4"]);
    assert_eq!(
        written,
        [
            "development-insight-source bench/i3",
            "development-partner bench/m7/m4",
        ]
    );
    let (read, written) = folded_by(&DialogueHealth);
    assert_eq!(read, nothing);
    assert_eq!(
        written,
        [
            "health-session bench/m7/2026-12/s3",
            "health-session-state bench/s3",
            "health-theme-source bench/i3",
        ]
    );
    let (read, written) = folded_by(&Staffing);
    assert_eq!(read, nothing);
    assert_eq!(written, ["staffing-insight-source bench/i3"]);
}
