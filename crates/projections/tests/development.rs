//! The development review: growth, strengths and aspirations as shared with each reader, and the
//! dialogue network counted by relationship.

use ledger_domain::{Event, pb, to_timestamp};
use ledger_projections::development::{DevelopmentReviews, Reader, review};
use ledger_projections::evaluation::EvaluationBriefs;
use ledger_projections::{
    Applied, Checkpoint, DocumentStore, Documents, EmbeddedDocuments, Projection,
};
use ledger_store::Position;
use uuid::Uuid;

use pb::{InsightKind as Kind, SharingScope as S};

/// Folds `events` through the development projection and, since the review reads its goals from
/// there, the evaluation projection, into one store.
fn folded(events: &[Event]) -> (tempfile::TempDir, EmbeddedDocuments) {
    let dir = tempfile::tempdir().unwrap();
    let projections: [&dyn Projection; 2] = [&DevelopmentReviews, &EvaluationBriefs];
    let store = EmbeddedDocuments::open(dir.path(), &projections).unwrap();
    for projection in projections {
        let mut documents = Documents::new(&store);
        for (i, event) in events.iter().enumerate() {
            let applied = Applied {
                event,
                id: Uuid::from_u128(i as u128 + 1),
                tenant: "acme",
                stream: "acme/stream",
                recorded_at: 1_796_119_200_000_000 + i as i64,
                position: Position::from_sequence(i as u64 + 1),
            };
            projection.apply(applied, &mut documents).unwrap();
        }
        let to = Checkpoint {
            version: projection.version(),
            position: Position::from_sequence(events.len() as u64),
        };
        store
            .commit(
                projection.name(),
                None,
                to,
                &documents.take_writes().unwrap(),
                projection.followed(),
            )
            .unwrap();
    }
    (dir, store)
}

fn insight(id: &str, kind: Kind, scopes: &[S]) -> Event {
    pb::InsightRecorded {
        insight_id: id.into(),
        subject_id: "mia".into(),
        kind: kind.into(),
        text: format!("text of {id}"),
        scopes: scopes.iter().map(|s| (*s).into()).collect(),
        ..Default::default()
    }
    .into()
}

fn session(id: &str, partner: &str, relationship: pb::Relationship) -> [Event; 2] {
    [
        pb::SessionScheduled {
            session_id: id.into(),
            member_id: "mia".into(),
            partner_id: partner.into(),
            relationship: relationship.into(),
            ..Default::default()
        }
        .into(),
        pb::SessionHeld {
            session_id: id.into(),
            held_at: Some(to_timestamp(1_796_119_200_000_000)),
            duration_minutes: 30,
        }
        .into(),
    ]
}

#[test]
fn each_reader_sees_what_is_shared_with_them() {
    let (_dir, store) = folded(&[
        insight(
            "i-chain",
            Kind::Strength,
            &[S::Participants, S::ManagerChain],
        ),
        insight("i-hr", Kind::CareerAspiration, &[S::Hr]),
        insight("i-private", Kind::Strength, &[S::Participants]),
        insight("i-skill", Kind::Skill, &[S::ManagerChain]),
    ]);
    let ids = |reader| -> Vec<String> {
        review(&store, &store, "acme", "mia", reader)
            .unwrap()
            .insights
            .into_iter()
            .map(|(id, _)| id)
            .collect()
    };
    assert_eq!(
        ids(Reader::Member),
        ["i-chain", "i-hr"],
        "oldest first; participants-only and non-development kinds stay out"
    );
    assert_eq!(ids(Reader::ManagerChain), ["i-chain"]);
    assert_eq!(ids(Reader::Hr), ["i-hr"]);
}

#[test]
fn a_narrowed_or_retracted_insight_leaves_the_review() {
    let shared = insight("i-1", Kind::Strength, &[S::ManagerChain, S::Hr]);
    let narrowed = pb::InsightNarrowed {
        insight_id: "i-1".into(),
        removed: vec![S::Hr.into()],
        ..Default::default()
    };
    let (_dir, store) = folded(&[shared.clone(), narrowed.into()]);
    assert!(
        review(&store, &store, "acme", "mia", Reader::Hr)
            .unwrap()
            .insights
            .is_empty()
    );
    assert_eq!(
        review(&store, &store, "acme", "mia", Reader::ManagerChain)
            .unwrap()
            .insights
            .len(),
        1
    );
    let retracted = pb::InsightRetracted {
        insight_id: "i-1".into(),
        ..Default::default()
    };
    let (_dir, store) = folded(&[shared, retracted.into()]);
    assert!(
        review(&store, &store, "acme", "mia", Reader::Member)
            .unwrap()
            .insights
            .is_empty()
    );
}

#[test]
fn growth_goals_and_the_dialogue_network_are_kept() {
    let mut events = vec![
        pb::GoalSet {
            goal_id: "g-growth".into(),
            owner_id: "mia".into(),
            period: "2026".into(),
            kind: pb::GoalKind::Growth.into(),
            title: "Lead".into(),
            ..Default::default()
        }
        .into(),
        pb::GoalSet {
            goal_id: "g-perf".into(),
            owner_id: "mia".into(),
            period: "2026".into(),
            kind: pb::GoalKind::Performance.into(),
            title: "Sell".into(),
            ..Default::default()
        }
        .into(),
        pb::GoalProgressRecorded {
            goal_id: "g-growth".into(),
            value: 1.0,
            ..Default::default()
        }
        .into(),
        pb::GoalReflected {
            goal_id: "g-growth".into(),
            text: "delegating".into(),
            ..Default::default()
        }
        .into(),
    ];
    events.extend(session("s-1", "lee", pb::Relationship::VerticalDirect));
    events.extend(session("s-2", "lee", pb::Relationship::VerticalDirect));
    events.extend(session("s-3", "ada", pb::Relationship::Diagonal));
    let (_dir, store) = folded(&events);
    let found = review(&store, &store, "acme", "mia", Reader::Member).unwrap();
    assert_eq!(found.goals.keys().collect::<Vec<_>>(), ["g-growth"]);
    let goal = &found.goals["g-growth"];
    assert_eq!(
        (
            goal.progress.len(),
            goal.reflections.len(),
            goal.event_ids.len()
        ),
        (1, 1, 3)
    );
    assert_eq!(found.partners["lee"].sessions_held, 2);
    assert_eq!(
        found.partners["lee"].relationship,
        "RELATIONSHIP_VERTICAL_DIRECT"
    );
    assert_eq!(found.partners["ada"].relationship, "RELATIONSHIP_DIAGONAL");
}
