//! What a brief subscription pays to render a member's brief after one change, by how many
//! documents the member has in the period and before it: read afresh (every document of the
//! period scanned and decoded) against a subscription's [`BriefCache`] (only the changed
//! document read).
//!
//! `cargo bench -p ledger-projections --bench briefs`

use std::hint::black_box;
use std::time::{Duration, Instant};

use ledger_domain::{Event, pb, to_timestamp};
use ledger_projections::evaluation::{BriefBudget, BriefCache, EvaluationBriefs, brief_in};
use ledger_projections::{
    Applied, Checkpoint, DocumentStore, Documents, EmbeddedDocuments, Projection,
};
use ledger_store::Position;
use uuid::Uuid;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// 2026-12-01T10:00:00Z
const DEC_1: i64 = 1_796_119_200_000_000;
const PERIOD: &str = "2026-H2";
const RENDERS: u32 = 300;
const DAY: i64 = 86_400_000_000;

/// Folds events into the store, one commit.
struct Folder<'a> {
    store: &'a EmbeddedDocuments,
    at: Option<Checkpoint>,
    folded: u64,
}

impl Folder<'_> {
    /// Folds events, each with the moment it was recorded.
    fn fold(&mut self, events: impl IntoIterator<Item = (Event, i64)>) {
        let mut documents = Documents::new(self.store);
        for (event, at) in events {
            self.folded += 1;
            let applied = Applied {
                event: &event,
                id: Uuid::new_v4(),
                tenant: "bench",
                stream: "bench/stream",
                recorded_at: at,
                position: Position::from_sequence(self.folded),
            };
            EvaluationBriefs.apply(applied, &mut documents).unwrap();
        }
        documents.end_reads();
        let to = Checkpoint {
            version: EvaluationBriefs.version(),
            position: Position::from_sequence(self.folded),
        };
        let writes = documents.take_writes().unwrap();
        let followed = EvaluationBriefs.followed();
        (self.store)
            .commit(EvaluationBriefs.name(), self.at, to, &writes, followed)
            .unwrap();
        self.at = Some(to);
    }
}

/// A member's story `i` at `at`: a session scheduled and held with an action item, and an
/// insight shared for evaluation (three documents of the month).
fn story(member: &str, i: usize, at: i64) -> Vec<(Event, i64)> {
    let session = format!("{member}-s{i}");
    let events: [Event; 4] = [
        pb::SessionScheduled {
            session_id: session.clone(),
            member_id: member.into(),
            partner_id: "partner".into(),
            relationship: pb::Relationship::Horizontal.into(),
            purposes: vec![pb::Purpose::Growth.into()],
            scheduled_at: Some(to_timestamp(at)),
            ..Default::default()
        }
        .into(),
        pb::SessionHeld {
            session_id: session.clone(),
            held_at: Some(to_timestamp(at)),
            duration_minutes: 30,
        }
        .into(),
        pb::ActionItemAgreed {
            session_id: session,
            item_id: "a".into(),
            owner_id: member.into(),
            ..Default::default()
        }
        .into(),
        pb::InsightRecorded {
            insight_id: format!("{member}-i{i}"),
            subject_id: member.into(),
            kind: pb::InsightKind::Strength.into(),
            tags: vec!["python".into()],
            text: "enjoys teaching".into(),
            scopes: vec![pb::SharingScope::Evaluation.into()],
            ..Default::default()
        }
        .into(),
    ];
    events.into_iter().map(|event| (event, at)).collect()
}

/// Renders member `m0`'s brief `RENDERS` times, each after progress on its goal of the period,
/// and returns the time per rendering.
fn render(
    store: &EmbeddedDocuments,
    folder: &mut Folder<'_>,
    cache: Option<&mut BriefCache>,
) -> Duration {
    let members = ["m0".to_owned()];
    let mut took = Duration::ZERO;
    let mut cache = cache;
    for i in 0..RENDERS {
        let progress = pb::GoalProgressRecorded {
            goal_id: "m0-g".into(),
            key_result_id: "kr".into(),
            value: f64::from(i),
            ..Default::default()
        };
        folder.fold([(progress.into(), DEC_1)]);
        let seen = store
            .changes("bench", 0, usize::MAX)
            .unwrap()
            .last()
            .unwrap()
            .seq;
        let started = Instant::now();
        let mut reads = store.reads().unwrap();
        let brief = match cache.as_deref_mut() {
            Some(cache) => cache.briefs(&mut *reads, &members, seen).unwrap().remove(0),
            None => brief_in(&mut *reads, "bench", "m0", PERIOD).unwrap(),
        };
        drop(reads);
        took += started.elapsed();
        black_box(brief);
    }
    took / RENDERS
}

fn main() {
    println!(
        "{:>14} {:>14} {:>14} {:>14}",
        "in the period", "before it", "afresh", "cached"
    );
    // Stories in the period, and before it (spread over the three and a half years before).
    for (stories, earlier) in [(25, 0), (100, 0), (400, 0), (100, 800)] {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedDocuments::open(dir.path(), &[&EvaluationBriefs]).unwrap();
        let mut folder = Folder {
            store: &store,
            at: None,
            folded: 0,
        };
        // The member and 50 others, so the files hold more than one member's documents.
        for member in (0..51).map(|m| format!("m{m}")) {
            let at = |i: usize| DEC_1 - DAY * 30 * (6 + i as i64 % 42);
            folder.fold((0..earlier).flat_map(|i| story(&member, stories + i, at(i))));
            folder.fold((0..stories).flat_map(|i| story(&member, i, DEC_1)));
        }
        let goal = pb::GoalSet {
            goal_id: "m0-g".into(),
            owner_id: "m0".into(),
            period: PERIOD.into(),
            title: "grow".into(),
            ..Default::default()
        };
        folder.fold([(goal.into(), DEC_1)]);
        let afresh = render(&store, &mut folder, None);
        let mut cache = BriefCache::new("bench", PERIOD, BriefBudget::new(usize::MAX / 2));
        let cached = render(&store, &mut folder, Some(&mut cache));
        println!(
            "{:>14} {:>14} {:>11.1} µs {:>11.1} µs",
            stories * 3 + 1,
            earlier * 3,
            afresh.as_secs_f64() * 1e6,
            cached.as_secs_f64() * 1e6
        );
    }
}
