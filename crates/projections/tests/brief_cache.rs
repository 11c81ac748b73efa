//! A subscription's cached briefs, for random histories committed in random pieces: each
//! rendering equals the brief read afresh at the same moment, and a cached member is not
//! scanned again.

use ledger_domain::{Event, pb, to_timestamp};
use ledger_projections::evaluation::{BriefBudget, BriefCache, EvaluationBriefs, brief};
use ledger_projections::{
    Applied, Checkpoint, DocumentStore, Documents, EmbeddedDocuments, Projection,
};
use ledger_store::Position;
use proptest::prelude::*;
use uuid::Uuid;

mod common;
use common::Counted;

const TENANTS: [&str; 2] = ["acme", "globex"];
const MEMBERS: [&str; 3] = ["mia", "ren", "ada"];
const PERIOD: &str = "2026-H2";
/// Goals of these periods: the brief's own, one enclosing it, one inside it, and others.
const GOAL_PERIODS: [&str; 5] = ["2026-H2", "2026", "2026-Q4", "2026-H1", "2025"];
/// 2026-12-01T10:00:00Z, in the period; and 2026-03-01, before it.
const IN: i64 = 1_796_119_200_000_000;
const BEFORE: i64 = 1_772_323_200_000_000;

#[derive(Debug, Clone)]
enum Op {
    /// An event of `tenant`, recorded in the period or before it.
    Event {
        tenant: usize,
        event: Box<Event>,
        in_period: bool,
    },
    /// Commits the events folded since the last commit.
    Commit,
    /// Renders acme's briefs of these members through the cache.
    Render(Vec<usize>),
}

fn at(in_period: bool) -> i64 {
    if in_period { IN } else { BEFORE }
}

fn event() -> impl Strategy<Value = Event> {
    let member = (0..3usize).prop_map(|m| MEMBERS[m].to_owned());
    prop_oneof![
        (member.clone(), 0..3usize, 0..5usize).prop_map(|(owner, goal, period)| {
            pb::GoalSet {
                goal_id: format!("g{goal}"),
                owner_id: owner,
                period: GOAL_PERIODS[period].into(),
                title: "grow".into(),
                ..Default::default()
            }
            .into()
        }),
        (0..3usize, 0..100u32).prop_map(|(goal, value)| pb::GoalProgressRecorded {
            goal_id: format!("g{goal}"),
            value: f64::from(value),
            ..Default::default()
        }
        .into()),
        (member.clone(), member.clone(), 0..4usize).prop_map(|(member, partner, session)| {
            pb::SessionScheduled {
                session_id: format!("s{session}"),
                member_id: member,
                partner_id: partner,
                relationship: pb::Relationship::Horizontal.into(),
                purposes: vec![pb::Purpose::Growth.into()],
                scheduled_at: Some(to_timestamp(IN)),
                ..Default::default()
            }
            .into()
        }),
        (0..4usize, any::<bool>()).prop_map(|(session, in_period)| pb::SessionHeld {
            session_id: format!("s{session}"),
            held_at: Some(to_timestamp(at(in_period))),
            duration_minutes: 30,
        }
        .into()),
        (member.clone(), 0..4usize, 0..2usize).prop_map(|(owner, session, item)| {
            pb::ActionItemAgreed {
                session_id: format!("s{session}"),
                item_id: format!("a{item}"),
                owner_id: owner,
                ..Default::default()
            }
            .into()
        }),
        (0..4usize, 0..2usize).prop_map(|(session, item)| pb::ActionItemCompleted {
            session_id: format!("s{session}"),
            item_id: format!("a{item}"),
            ..Default::default()
        }
        .into()),
        (member, 0..4usize, any::<bool>()).prop_map(|(subject, insight, shared)| {
            let scope = if shared {
                pb::SharingScope::Evaluation
            } else {
                pb::SharingScope::Participants
            };
            pb::InsightRecorded {
                insight_id: format!("i{insight}"),
                subject_id: subject,
                session_id: "s0".into(),
                kind: pb::InsightKind::Strength.into(),
                text: "enjoys teaching".into(),
                scopes: vec![scope.into()],
                ..Default::default()
            }
            .into()
        }),
        (0..4usize).prop_map(|insight| pb::InsightShared {
            insight_id: format!("i{insight}"),
            added: vec![pb::SharingScope::Evaluation.into()],
            explicit_consent: true,
            ..Default::default()
        }
        .into()),
        (0..4usize).prop_map(|insight| pb::InsightRetracted {
            insight_id: format!("i{insight}"),
            ..Default::default()
        }
        .into()),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..2usize, event(), any::<bool>()).prop_map(|(tenant, event, in_period)| Op::Event {
            tenant,
            event: Box::new(event),
            in_period
        }),
        2 => Just(Op::Commit),
        2 => proptest::collection::vec(0..3usize, 1..4).prop_map(Op::Render),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// With room for every document, or a budget of a few, so that members are let go as they
    /// grow and others never kept; reading the change feed without a limit that matters here,
    /// or a few changes at most, so that renderings after many changes begin again.
    #[test]
    fn cached_briefs_equal_briefs_read_afresh(
        ops in proptest::collection::vec(op(), 1..60),
        room in prop_oneof![Just(None), (0..12usize).prop_map(Some)],
        changes_at_most in prop_oneof![Just(None), (1..6usize).prop_map(Some)],
    ) {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedDocuments::open(dir.path(), &[&EvaluationBriefs]).unwrap();
        let budget = BriefBudget::new(room.unwrap_or(usize::MAX / 2));
        let mut cache = BriefCache::new("acme", PERIOD, budget.clone())
            .reading_changes_at_most(changes_at_most.unwrap_or(usize::MAX / 2));
        let mut documents = Documents::new(&store);
        let (mut folded, mut committed) = (0u64, None::<Checkpoint>);
        let mut rendered_before = [false; 3];
        for op in &ops {
            match op {
                Op::Event { tenant, event, in_period } => {
                    folded += 1;
                    let applied = Applied {
                        event,
                        id: Uuid::new_v4(),
                        tenant: TENANTS[*tenant],
                        stream: "stream",
                        recorded_at: at(*in_period),
                        position: Position::from_sequence(folded),
                    };
                    EvaluationBriefs.apply(applied, &mut documents).unwrap();
                }
                Op::Commit if committed.map(|c| c.position.commit()) != Some(folded) && folded > 0 => {
                    documents.end_reads();
                    let to = Checkpoint {
                        version: EvaluationBriefs.version(),
                        position: Position::from_sequence(folded),
                    };
                    let writes = documents.take_writes().unwrap();
                    store
                        .commit(EvaluationBriefs.name(), committed, to, &writes, EvaluationBriefs.followed())
                        .unwrap();
                    committed = Some(to);
                }
                Op::Commit => {}
                Op::Render(members) => {
                    documents.end_reads();
                    // As a subscription: the feed was read before the rendering's reads began.
                    let seen = store.changes("acme", 0, usize::MAX).unwrap().last().map_or(0, |c| c.seq);
                    let names: Vec<String> = members.iter().map(|m| MEMBERS[*m].to_owned()).collect();
                    let mut reads = Counted::new(store.reads().unwrap());
                    let briefs = cache.briefs(&mut reads, &names, seen).unwrap();
                    // With room, members rendered before are cached: only the others are scanned
                    // (4 models each).
                    let mut fresh: Vec<usize> = members.iter().copied().filter(|m| !rendered_before[*m]).collect();
                    fresh.sort_unstable();
                    fresh.dedup();
                    if room.is_none() && changes_at_most.is_none() {
                        prop_assert_eq!(reads.scans, 4 * fresh.len());
                    }
                    drop(reads);
                    for (member, cached) in names.iter().zip(briefs) {
                        prop_assert_eq!(cached, brief(&store, "acme", member, PERIOD).unwrap(), "{}", member);
                    }
                    for m in members {
                        rendered_before[*m] = true;
                    }
                }
            }
        }
        // What the cache kept, it gives back.
        drop(cache);
        prop_assert_eq!(budget.left(), room.unwrap_or(usize::MAX / 2));
    }
}

/// Folds and commits `insights` shared for evaluation, `(insight, subject)`, after `from`.
fn share(store: &EmbeddedDocuments, from: u64, insights: &[(usize, &str)]) -> u64 {
    let mut documents = Documents::new(store);
    for (i, (insight, subject)) in insights.iter().enumerate() {
        let event: Event = pb::InsightRecorded {
            insight_id: format!("i{insight}"),
            subject_id: (*subject).into(),
            kind: pb::InsightKind::Strength.into(),
            scopes: vec![pb::SharingScope::Evaluation.into()],
            ..Default::default()
        }
        .into();
        let applied = Applied {
            event: &event,
            id: Uuid::new_v4(),
            tenant: "acme",
            stream: "stream",
            recorded_at: IN,
            position: Position::from_sequence(from + i as u64 + 1),
        };
        EvaluationBriefs.apply(applied, &mut documents).unwrap();
    }
    let at = |position| Checkpoint {
        version: EvaluationBriefs.version(),
        position: Position::from_sequence(position),
    };
    let to = from + insights.len() as u64;
    let writes = documents.take_writes().unwrap();
    let followed = EvaluationBriefs.followed();
    let from = (from > 0).then(|| at(from));
    (store.commit(EvaluationBriefs.name(), from, at(to), &writes, followed)).unwrap();
    to
}

#[test]
fn a_cache_keeps_no_more_than_the_budget_left_by_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedDocuments::open(dir.path(), &[&EvaluationBriefs]).unwrap();
    // Two insights each of mia and ren: two documents of the period each.
    let folded = share(&store, 0, &[(0, "mia"), (1, "ren"), (2, "mia"), (3, "ren")]);
    // Scans of `member`'s brief, which must show `insights`.
    let scans = |cache: &mut BriefCache, member: &str, insights: usize| {
        let seen = store.changes("acme", 0, 100).unwrap().last().unwrap().seq;
        let mut reads = Counted::new(store.reads().unwrap());
        let briefs = cache
            .briefs(&mut reads, &[member.to_owned()], seen)
            .unwrap();
        assert_eq!(briefs[0].insights.len(), insights);
        reads.scans
    };

    let budget = BriefBudget::new(3);
    let mut first = BriefCache::new("acme", PERIOD, budget.clone());
    assert_eq!(scans(&mut first, "mia", 2), 4);
    assert_eq!(scans(&mut first, "mia", 2), 0, "kept");
    assert_eq!(budget.left(), 1);
    // The second finds no room for ren's two documents: it reads them afresh each time.
    let mut second = BriefCache::new("acme", PERIOD, budget.clone());
    assert_eq!(scans(&mut second, "ren", 2), 4);
    assert_eq!(scans(&mut second, "ren", 2), 4, "not kept");
    // The first lets go when it ends; then there is room.
    drop(first);
    assert_eq!(budget.left(), 3);
    assert_eq!(scans(&mut second, "ren", 2), 4);
    assert_eq!(scans(&mut second, "ren", 2), 0, "kept");
    assert_eq!(budget.left(), 1);
    // Ren grows beyond the room: let go, read afresh, and what ren held given back.
    share(&store, folded, &[(4, "ren"), (5, "ren")]);
    assert_eq!(scans(&mut second, "ren", 4), 4);
    assert_eq!(budget.left(), 3);
    drop(second);
    assert_eq!(budget.left(), 3);
}

#[test]
fn a_rendering_after_more_changes_than_it_reads_at_once_begins_again() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedDocuments::open(dir.path(), &[&EvaluationBriefs]).unwrap();
    let folded = share(&store, 0, &[(0, "mia")]);
    let budget = BriefBudget::new(100);
    let mut cache = BriefCache::new("acme", PERIOD, budget.clone()).reading_changes_at_most(2);
    let mut scans = |insights: usize| {
        let seen = store.changes("acme", 0, 100).unwrap().last().unwrap().seq;
        let mut reads = Counted::new(store.reads().unwrap());
        let briefs = cache.briefs(&mut reads, &["mia".to_owned()], seen).unwrap();
        assert_eq!(briefs[0].insights.len(), insights);
        reads.scans
    };
    assert_eq!(scans(1), 4);
    assert_eq!(scans(1), 0, "kept");
    // Two changes since: as many as it reads at once, so read afresh and nothing kept.
    share(&store, folded, &[(1, "ren"), (2, "mia")]);
    assert_eq!(scans(2), 4);
    assert_eq!(budget.left(), 100);
    // Then kept again.
    assert_eq!(scans(2), 4);
    assert_eq!(scans(2), 0, "kept");
}
