//! The evaluation brief, given events: what it shows, and what it must never show.

use ledger_domain::{Event, pb, to_timestamp};
use ledger_projections::evaluation::{Brief, EvaluationBriefs, brief, brief_in};
use ledger_projections::{
    Applied, Checkpoint, DocumentStore, Documents, EmbeddedDocuments, Projection, Text,
};
use ledger_store::Position;
use uuid::Uuid;

mod common;

use pb::{InsightKind as Kind, Relationship as R, SharingScope as S};

/// 2026-12-01T10:00:00Z
const DEC_1: i64 = 1_796_119_200_000_000;

/// Folds `events` (each recorded at DEC_1) and returns mia's brief for `period` with the ids given
/// to the events, in order.
fn brief_after(events: Vec<Event>, member: &str, period: &str) -> (Brief, Vec<Uuid>) {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedDocuments::open(dir.path(), &[&EvaluationBriefs]).unwrap();
    let mut documents = Documents::new(&store);
    let ids: Vec<Uuid> = events.iter().map(|_| Uuid::new_v4()).collect();
    for (i, (event, id)) in events.iter().zip(&ids).enumerate() {
        let applied = Applied {
            event,
            id: *id,
            tenant: "acme",
            stream: "acme/stream",
            recorded_at: DEC_1,
            position: Position::from_sequence(i as u64 + 1),
        };
        EvaluationBriefs.apply(applied, &mut documents).unwrap();
    }
    let to = Checkpoint {
        version: EvaluationBriefs.version(),
        position: Position::from_sequence(events.len() as u64),
    };
    store
        .commit(
            EvaluationBriefs.name(),
            None,
            to,
            &documents.take_writes().unwrap(),
            EvaluationBriefs.followed(),
        )
        .unwrap();
    (brief(&store, "acme", member, period).unwrap(), ids)
}

fn scheduled(session: &str, partner: &str, relationship: R, purposes: &[pb::Purpose]) -> Event {
    pb::SessionScheduled {
        session_id: session.into(),
        member_id: "mia".into(),
        partner_id: partner.into(),
        relationship: relationship.into(),
        purposes: purposes.iter().map(|p| (*p).into()).collect(),
        scheduled_at: Some(to_timestamp(DEC_1)),
        ..Default::default()
    }
    .into()
}

fn held(session: &str) -> Event {
    pb::SessionHeld {
        session_id: session.into(),
        held_at: Some(to_timestamp(DEC_1)),
        duration_minutes: 30,
    }
    .into()
}

fn insight(id: &str, kind: Kind, scopes: &[S], relationship: R) -> Event {
    pb::InsightRecorded {
        sealed: None,
        insight_id: id.into(),
        subject_id: "mia".into(),
        session_id: "s-1".into(),
        recorded_by: "ada".into(),
        kind: kind.into(),
        tags: vec!["python".into()],
        text: format!("text of {id}"),
        scopes: scopes.iter().map(|s| (*s).into()).collect(),
        relationship: relationship.into(),
    }
    .into()
}

#[test]
fn goals_show_with_their_timeline_in_their_period_and_the_enclosing_ones() {
    let set = pb::GoalSet {
        goal_id: "g-1".into(),
        owner_id: "mia".into(),
        period: "2026-H2".into(),
        kind: pb::GoalKind::Growth.into(),
        title: "Lead the guild".into(),
        ..Default::default()
    };
    let progress = pb::GoalProgressRecorded {
        goal_id: "g-1".into(),
        key_result_id: "kr-1".into(),
        value: 2.0,
        ..Default::default()
    };
    let reflected = pb::GoalReflected {
        goal_id: "g-1".into(),
        text: "teaching helps".into(),
        ..Default::default()
    };
    let completed = pb::GoalCompleted {
        goal_id: "g-1".into(),
        ..Default::default()
    };
    let events = vec![
        set.into(),
        progress.into(),
        reflected.into(),
        completed.into(),
    ];
    for period in ["2026-H2", "2026"] {
        let (brief, ids) = brief_after(events.clone(), "mia", period);
        let goal = &brief.goals["g-1"];
        assert_eq!(
            (goal.title.shown(), goal.status.as_str()),
            ("Lead the guild", "completed")
        );
        assert_eq!(goal.progress.len(), 1);
        assert_eq!(
            (goal.progress[0].value, goal.progress[0].event_id),
            (2.0, ids[1])
        );
        assert_eq!(
            goal.reflections.iter().map(Text::shown).collect::<Vec<_>>(),
            ["teaching helps"]
        );
        assert_eq!(goal.event_ids, ids, "provenance");
    }
    assert!(
        brief_after(events.clone(), "mia", "2026-H1")
            .0
            .goals
            .is_empty()
    );
    assert!(brief_after(events, "lee", "2026-H2").0.goals.is_empty());
}

#[test]
fn held_sessions_are_counted_by_purpose_and_relationship_without_content() {
    let events = vec![
        scheduled(
            "s-1",
            "lee",
            R::VerticalDirect,
            &[pb::Purpose::Growth, pb::Purpose::CareerAutonomy],
        ),
        scheduled("s-2", "ada", R::Diagonal, &[pb::Purpose::CareerAutonomy]),
        scheduled("s-3", "ren", R::Horizontal, &[pb::Purpose::Growth]),
        held("s-1"),
        held("s-2"),
    ];
    let (brief, ids) = brief_after(events, "mia", "2026-Q4");
    assert_eq!(
        brief.purposes["PURPOSE_GROWTH"].count, 1,
        "s-3 was never held"
    );
    assert_eq!(brief.purposes["PURPOSE_CAREER_AUTONOMY"].count, 2);
    assert_eq!(
        brief.purposes["PURPOSE_CAREER_AUTONOMY"].event_ids,
        [ids[3], ids[4]]
    );
    assert_eq!(brief.relationships["RELATIONSHIP_VERTICAL_DIRECT"].count, 1);
    assert_eq!(brief.relationships["RELATIONSHIP_DIAGONAL"].count, 1);
    assert!(!brief.relationships.contains_key("RELATIONSHIP_HORIZONTAL"));
    assert!(brief.insights.is_empty());
}

#[test]
fn a_diagonal_insight_never_reaches_the_brief_unless_shared_for_evaluation() {
    let diagonal = insight(
        "i-1",
        Kind::CareerAspiration,
        &[S::Participants],
        R::Diagonal,
    );
    let (brief, _) = brief_after(vec![diagonal.clone()], "mia", "2026");
    assert!(
        brief.insights.is_empty(),
        "a participants-only insight reached the brief"
    );
    let staffing = pb::InsightShared {
        insight_id: "i-1".into(),
        added: vec![S::Staffing.into()],
        ..Default::default()
    };
    let (brief, _) = brief_after(vec![diagonal.clone(), staffing.into()], "mia", "2026");
    assert!(
        brief.insights.is_empty(),
        "an insight shared for staffing reached the brief"
    );

    let evaluation = pb::InsightShared {
        insight_id: "i-1".into(),
        added: vec![S::Evaluation.into()],
        ..Default::default()
    };
    let (brief, ids) = brief_after(vec![diagonal, evaluation.into()], "mia", "2026-12");
    let shown = &brief.insights["i-1"];
    assert_eq!(
        (shown.text.shown(), &shown.event_ids),
        ("text of i-1", &ids)
    );
}

#[test]
fn narrowing_or_retracting_takes_an_insight_out_of_every_brief() {
    let shared = insight(
        "i-1",
        Kind::Strength,
        &[S::Participants, S::Evaluation],
        R::VerticalDirect,
    );
    assert!(
        brief_after(vec![shared.clone()], "mia", "2026")
            .0
            .insights
            .contains_key("i-1")
    );
    let narrowed = pb::InsightNarrowed {
        insight_id: "i-1".into(),
        removed: vec![S::Evaluation.into()],
        ..Default::default()
    };
    let retracted = pb::InsightRetracted {
        insight_id: "i-1".into(),
        ..Default::default()
    };
    for withdrawal in [Event::from(narrowed), Event::from(retracted)] {
        for period in ["2026", "2026-H2", "2026-Q4", "2026-12"] {
            let (brief, _) = brief_after(vec![shared.clone(), withdrawal.clone()], "mia", period);
            assert!(
                brief.insights.is_empty(),
                "{withdrawal:?} left the insight in {period}"
            );
        }
    }
}

#[test]
fn action_items_count_for_their_owner() {
    let agreed = |item: &str| -> Event {
        pb::ActionItemAgreed {
            session_id: "s-1".into(),
            item_id: item.into(),
            owner_id: "mia".into(),
            ..Default::default()
        }
        .into()
    };
    let completed = pb::ActionItemCompleted {
        session_id: "s-1".into(),
        item_id: "a-1".into(),
        ..Default::default()
    };
    let dropped = pb::ActionItemDropped {
        session_id: "s-1".into(),
        item_id: "a-2".into(),
        ..Default::default()
    };
    let events = vec![
        agreed("a-1"),
        agreed("a-2"),
        agreed("a-3"),
        completed.into(),
        dropped.into(),
    ];
    let (brief, ids) = brief_after(events, "mia", "2026-12");
    let follow = &brief.follow_through;
    assert_eq!((follow.agreed, follow.completed, follow.dropped), (3, 1, 1));
    let (mut provenance, mut expected) = (follow.event_ids.clone(), ids);
    provenance.sort();
    expected.sort();
    assert_eq!(provenance, expected);
}

/// Two years of mia's history, every month: sessions held at its first and its last
/// microsecond, an action item agreed and an insight shared for evaluation, and a goal set
/// for the month; and goals for 2026-Q4, 2026-H2 and 2026.
fn two_years_of_history() -> (tempfile::TempDir, EmbeddedDocuments) {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedDocuments::open(dir.path(), &[&EvaluationBriefs]).unwrap();
    let mut documents = Documents::new(&store);
    let mut folded = 0;
    let mut fold = |event: Event, at: i64| {
        folded += 1;
        let applied = Applied {
            event: &event,
            id: Uuid::new_v4(),
            tenant: "acme",
            stream: "acme/stream",
            recorded_at: at,
            position: Position::from_sequence(folded),
        };
        EvaluationBriefs.apply(applied, &mut documents).unwrap();
    };
    let months = (2025..=2026).flat_map(|year| (1..=12).map(move |m| format!("{year}-{m:02}")));
    for month in months {
        let (start, end) = ledger_projections::bounds(&month).unwrap();
        for (i, held_at) in [start, end - 1].into_iter().enumerate() {
            let session = format!("s-{month}-{i}");
            fold(scheduled(&session, "ren", R::Horizontal, &[]), start);
            let held = pb::SessionHeld {
                session_id: session.clone(),
                held_at: Some(to_timestamp(held_at)),
                duration_minutes: 30,
            };
            fold(held.into(), start);
        }
        let agreed = pb::ActionItemAgreed {
            session_id: format!("s-{month}-0"),
            item_id: "a".into(),
            owner_id: "mia".into(),
            ..Default::default()
        };
        fold(agreed.into(), start);
        let id = format!("i-{month}");
        fold(
            insight(&id, Kind::Strength, &[S::Evaluation], R::Horizontal),
            end - 1,
        );
        let goal = pb::GoalSet {
            goal_id: format!("g-{month}"),
            owner_id: "mia".into(),
            period: month.clone(),
            title: "grow".into(),
            ..Default::default()
        };
        fold(goal.into(), start);
    }
    for period in ["2026-Q4", "2026-H2", "2026"] {
        let goal = pb::GoalSet {
            goal_id: format!("g-{period}"),
            owner_id: "mia".into(),
            period: period.into(),
            title: "grow".into(),
            ..Default::default()
        };
        fold(goal.into(), DEC_1);
    }
    let to = Checkpoint {
        version: EvaluationBriefs.version(),
        position: Position::from_sequence(folded),
    };
    let writes = documents.take_writes().unwrap();
    drop(documents);
    (store.commit(EvaluationBriefs.name(), None, to, &writes, &[])).unwrap();
    (dir, store)
}

#[test]
fn a_brief_reads_only_its_periods_documents_however_long_the_history() {
    let (_dir, store) = two_years_of_history();
    // (period, goals shown, sessions held, documents filed under the period's months)
    let expected = [
        // The months' goals and its own; sessions at both ends of each month; 2026-H2's goal
        // is filed under July, 2026's under January.
        ("2026-Q4", 4, 6, 4 + 6 + 3 + 3),
        ("2025-02", 1, 2, 1 + 2 + 1 + 1),
        ("2026", 15, 24, 15 + 24 + 12 + 12),
    ];
    for (period, goals, sessions, filed) in expected {
        let mut reads = common::Counted::new(store.reads().unwrap());
        let brief = brief_in(&mut reads, "acme", "mia", period).unwrap();
        assert_eq!(brief.goals.len(), goals, "{period}");
        let held: u32 = brief.relationships.values().map(|c| c.count).sum();
        assert_eq!(held, sessions, "{period}");
        assert_eq!(brief.follow_through.agreed, sessions / 2, "{period}");
        assert_eq!(brief.insights.len(), sessions as usize / 2, "{period}");
        assert!(
            brief.insights.keys().all(|id| id.starts_with("i-")),
            "ids, not keys"
        );
        assert_eq!(reads.scanned, filed, "{period}: documents read");
    }
    let mut reads = store.reads().unwrap();
    let quarter = brief_in(&mut *reads, "acme", "mia", "2026-Q4").unwrap();
    let goals: Vec<&str> = quarter.goals.keys().map(String::as_str).collect();
    assert_eq!(goals, ["g-2026-10", "g-2026-11", "g-2026-12", "g-2026-Q4"]);
}
