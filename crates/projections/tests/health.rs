//! Dialogue health and engagement context, given events: who is counted where, what the
//! outcomes are, and that a theme standing on too few people is withheld.

use std::collections::BTreeMap;

use ledger_domain::{Event, Micros, pb, to_timestamp};
use ledger_projections::evaluation::{Counted, EvaluationBriefs};
use ledger_projections::health::{
    self, DialogueHealth, Directory, Engagement, Health, Scope, dialogue_health, engagement_context,
};
use ledger_projections::{
    Applied, Checkpoint, DocumentStore, Documents, EmbeddedDocuments, Projection, Write,
};
use ledger_store::Position;
use uuid::Uuid;

use pb::{Purpose as P, Relationship as R, SharingScope as S};

const DAY: Micros = 86_400_000_000;
/// 2026-12-01T10:00:00Z
const DEC_1: Micros = 1_796_119_200_000_000;
const NOV_10: Micros = DEC_1 - 21 * DAY;
const END_OF_YEAR: Micros = DEC_1 + 31 * DAY;

/// Folds `events` (each recorded at its time) into both projections health reads, in one
/// commit.
fn folded(events: &[(Micros, Event)]) -> (tempfile::TempDir, EmbeddedDocuments, Vec<Uuid>) {
    let (dir, store, ids, _) = folded_in_commits_of(events, events.len().max(1));
    (dir, store, ids)
}

/// Folds `events` in commits of `size` events; returns also the health projection's writes
/// of each commit. The events' ids are their positions.
fn folded_in_commits_of(
    events: &[(Micros, Event)],
    size: usize,
) -> (
    tempfile::TempDir,
    EmbeddedDocuments,
    Vec<Uuid>,
    Vec<Vec<Write>>,
) {
    let dir = tempfile::tempdir().unwrap();
    let projections: [&dyn Projection; 2] = [&DialogueHealth, &EvaluationBriefs];
    let store = EmbeddedDocuments::open(dir.path(), &projections).unwrap();
    let ids: Vec<Uuid> = (1..=events.len() as u128).map(Uuid::from_u128).collect();
    let mut health_writes = Vec::new();
    for projection in projections {
        let mut from = None;
        for (first, chunk) in (0..).step_by(size).zip(events.chunks(size)) {
            let mut documents = Documents::new(&store);
            for (i, (at, event)) in (first..).zip(chunk) {
                let applied = Applied {
                    event,
                    id: ids[i],
                    tenant: "acme",
                    stream: "acme/stream",
                    recorded_at: *at,
                    position: Position::from_sequence(i as u64 + 1),
                };
                projection.apply(applied, &mut documents).unwrap();
            }
            let to = Checkpoint {
                version: projection.version(),
                position: Position::from_sequence((first + chunk.len()) as u64),
            };
            let writes = documents.take_writes().unwrap();
            drop(documents);
            store
                .commit(projection.name(), from, to, &writes, projection.followed())
                .unwrap();
            from = Some(to);
            if projection.name() == DialogueHealth.name() {
                health_writes.push(writes);
            }
        }
    }
    (dir, store, ids, health_writes)
}

fn unit(id: &str, parent: &str) -> (Micros, Event) {
    let event = pb::OrgUnitDefined {
        org_unit_id: id.into(),
        name: id.into(),
        parent_id: parent.into(),
    };
    (0, event.into())
}

fn person(id: &str, unit: &str, manager: &str) -> Vec<(Micros, Event)> {
    let registered = pb::PersonRegistered {
        person_id: id.into(),
        display_name: id.into(),
        org_unit_id: unit.into(),
        effective_at: Some(to_timestamp(0)),
        ..Default::default()
    };
    let mut events = vec![(0, registered.into())];
    if !manager.is_empty() {
        let assigned = pb::ManagerAssigned {
            person_id: id.into(),
            manager_id: manager.into(),
            effective_at: Some(to_timestamp(0)),
        };
        events.push((0, assigned.into()));
    }
    events
}

/// A session scheduled and held at `at`.
fn session(
    id: &str,
    member: &str,
    partner: &str,
    relationship: R,
    purposes: &[P],
    at: Micros,
) -> Vec<(Micros, Event)> {
    let scheduled = pb::SessionScheduled {
        session_id: id.into(),
        member_id: member.into(),
        partner_id: partner.into(),
        relationship: relationship.into(),
        purposes: purposes.iter().map(|p| (*p).into()).collect(),
        scheduled_at: Some(to_timestamp(at)),
        ..Default::default()
    };
    let held = pb::SessionHeld {
        session_id: id.into(),
        held_at: Some(to_timestamp(at)),
        duration_minutes: 30,
    };
    vec![(at, scheduled.into()), (at, held.into())]
}

fn item(session: &str, item: &str, owner: &str, at: Micros) -> (Micros, Event) {
    let agreed = pb::ActionItemAgreed {
        session_id: session.into(),
        item_id: item.into(),
        owner_id: owner.into(),
        ..Default::default()
    };
    (at, agreed.into())
}

fn progress(goal: &str, at: Micros) -> (Micros, Event) {
    let event = pb::GoalProgressRecorded {
        goal_id: goal.into(),
        key_result_id: "kr".into(),
        value: 1.0,
        ..Default::default()
    };
    (at, event.into())
}

fn insight(id: &str, subject: &str, tag: &str, scopes: &[S]) -> (Micros, Event) {
    let event = pb::InsightRecorded {
        insight_id: id.into(),
        subject_id: subject.into(),
        session_id: "s1".into(),
        kind: pb::InsightKind::OrganisationalIssue.into(),
        tags: vec![tag.into()],
        text: "not kept".into(),
        scopes: scopes.iter().map(|s| (*s).into()).collect(),
        ..Default::default()
    };
    (DEC_1 + 2 * DAY, event.into())
}

fn survey(unit: &str, period: &str, score: f64) -> (Micros, Event) {
    let event = pb::SurveyResultRecorded {
        survey_result_id: format!("{unit}-{period}"),
        org_unit_id: unit.into(),
        period: period.into(),
        metric: "engagement".into(),
        score,
        respondent_count: 10,
    };
    (DEC_1, event.into())
}

/// eng ⊃ eng-web; sales. boss manages ada, bob (eng-web) and cy (eng); sam is in sales; dan
/// moves from sales to eng-web on 10 December.
fn organisation() -> Vec<(Micros, Event)> {
    let mut events = vec![unit("eng", ""), unit("eng-web", "eng"), unit("sales", "")];
    for (id, unit, manager) in [
        ("boss", "eng", ""),
        ("ada", "eng-web", "boss"),
        ("bob", "eng-web", "boss"),
        ("cy", "eng", "boss"),
        ("sam", "sales", ""),
        ("dan", "sales", ""),
    ] {
        events.extend(person(id, unit, manager));
    }
    let moved = pb::PersonMoved {
        person_id: "dan".into(),
        org_unit_id: "eng-web".into(),
        effective_at: Some(to_timestamp(DEC_1 + 9 * DAY)),
    };
    events.push((DEC_1 + 9 * DAY, moved.into()));
    events
}

fn history() -> Vec<(Micros, Event)> {
    let mut events = organisation();
    let goal = pb::GoalSet {
        goal_id: "g1".into(),
        owner_id: "ada".into(),
        period: "2026-H2".into(),
        title: "grow".into(),
        ..Default::default()
    };
    events.push((NOV_10, goal.into()));
    events.extend(session(
        "s0",
        "ada",
        "boss",
        R::VerticalDirect,
        &[P::WorkSupport],
        NOV_10,
    ));
    events.extend(session(
        "s1",
        "ada",
        "boss",
        R::VerticalDirect,
        &[P::Growth],
        DEC_1,
    ));
    let dec_15 = DEC_1 + 14 * DAY;
    events.extend(session(
        "s2",
        "ada",
        "boss",
        R::VerticalDirect,
        &[P::Growth],
        dec_15,
    ));
    events.extend(session(
        "s3",
        "bob",
        "sam",
        R::Diagonal,
        &[P::CareerAutonomy],
        DEC_1 + DAY,
    ));
    // Held by dan before he joined eng-web: it counts for sales.
    events.extend(session(
        "s6",
        "dan",
        "sam",
        R::Horizontal,
        &[P::Engagement],
        DEC_1 + 4 * DAY,
    ));
    // Scheduled, never held.
    let never = pb::SessionScheduled {
        session_id: "s4".into(),
        member_id: "cy".into(),
        partner_id: "boss".into(),
        relationship: R::VerticalDirect.into(),
        ..Default::default()
    };
    events.push((DEC_1, never.into()));
    events.extend([item("s1", "a", "ada", DEC_1), item("s1", "b", "ada", DEC_1)]);
    events.push(item("s2", "c", "ada", dec_15));
    let completed = pb::ActionItemCompleted {
        session_id: "s1".into(),
        item_id: "a".into(),
        ..Default::default()
    };
    let dropped = pb::ActionItemDropped {
        session_id: "s1".into(),
        item_id: "b".into(),
        ..Default::default()
    };
    let reflected = pb::ReflectionRecorded {
        sealed: None,
        session_id: "s1".into(),
        what_was_decided: "not kept".into(),
        resolve: 4,
    };
    events.extend([
        (DEC_1 + DAY, completed.into()),
        (DEC_1 + DAY, dropped.into()),
        (DEC_1, reflected.into()),
    ]);
    events.extend([
        progress("g1", NOV_10 + 10 * DAY),
        progress("g1", DEC_1 + 4 * DAY),
        progress("g1", DEC_1 + 19 * DAY),
    ]);
    events
}

fn health(store: &EmbeddedDocuments, unit: &str, period: &str, overload: u32) -> Option<Health> {
    let scope = Scope {
        tenant: "acme",
        unit,
        period,
        now: END_OF_YEAR,
    };
    dialogue_health(store, store, scope, overload).unwrap()
}

fn engagement(store: &EmbeddedDocuments, unit: &str, anonymity: u32) -> Engagement {
    let scope = Scope {
        tenant: "acme",
        unit,
        period: "2026-12",
        now: END_OF_YEAR,
    };
    engagement_context(store, scope, anonymity)
        .unwrap()
        .unwrap()
}

fn counts(map: &BTreeMap<String, Counted>) -> Vec<(&str, u32)> {
    map.iter().map(|(k, v)| (k.as_str(), v.count)).collect()
}

#[test]
fn coverage_cadence_and_mix_count_the_unit_and_its_sub_units() {
    let (_dir, store, _) = folded(&history());
    let eng = health(&store, "eng", "2026-12", 10).unwrap();
    // boss, ada, bob, cy, and dan since 10 December; sam is in sales.
    assert_eq!(eng.coverage.population, 5);
    assert_eq!((eng.coverage.covered, eng.coverage.sessions), (2, 3));
    assert!((eng.sessions_per_person_month - 3.0 / 5.0).abs() < 1e-9);
    assert_eq!(eng.median_days_between, Some(14.0));
    assert_eq!(
        counts(&eng.relationships),
        [
            ("RELATIONSHIP_DIAGONAL", 1),
            ("RELATIONSHIP_VERTICAL_DIRECT", 2)
        ]
    );
    assert_eq!(
        counts(&eng.purposes),
        [("PURPOSE_CAREER_AUTONOMY", 1), ("PURPOSE_GROWTH", 2)]
    );
    // November was all work support: everything moved.
    assert!((eng.total_drift - 1.0).abs() < 1e-9);
    let growth = eng
        .purpose_drift
        .iter()
        .find(|s| s.purpose == "PURPOSE_GROWTH")
        .unwrap();
    assert!((growth.share - 2.0 / 3.0).abs() < 1e-9 && growth.previous_share == 0.0);

    let web = health(&store, "eng-web", "2026-12", 10).unwrap();
    assert_eq!(web.coverage.population, 3, "ada, bob and dan");
    assert_eq!(web.managers["boss"].direct_reports, 2);
    let sales = health(&store, "sales", "2026-12", 10).unwrap();
    assert_eq!(
        sales.coverage.sessions, 1,
        "dan's session counts where he was"
    );
    assert_eq!(sales.coverage.population, 1, "sam; dan has moved");
    assert!(health(&store, "nowhere", "2026-12", 10).is_none());
}

#[test]
fn manager_load_is_flagged_above_the_threshold() {
    let (_dir, store, ids) = folded(&history());
    let calm = health(&store, "eng", "2026-12", 2).unwrap();
    let boss = &calm.managers["boss"];
    assert_eq!(
        (boss.direct_reports, boss.sessions, boss.members_met),
        (3, 2, 1)
    );
    assert!(!boss.overloaded);
    assert_eq!(boss.event_ids.len(), 2);
    assert!(boss.event_ids.iter().all(|id| ids.contains(id)));
    assert!(health(&store, "eng", "2026-12", 1).unwrap().managers["boss"].overloaded);
    assert!(
        !calm.managers.contains_key("sam"),
        "diagonal partners carry no manager load"
    );
}

#[test]
fn a_department_manager_manages_everyone_else_in_the_unit() {
    let (dir, store, _) = folded(&history());
    let directory = Directory::load(&store, "acme").unwrap();
    let at = END_OF_YEAR;
    assert!(directory.manages_unit("boss", "eng-web", DEC_1));
    assert!(
        !directory.manages_unit("boss", "eng-web", at),
        "dan joined eng-web without a manager"
    );
    assert!(!directory.manages_unit("boss", "eng", at));
    assert!(!directory.manages_unit("ada", "eng-web", DEC_1));
    assert!(!directory.manages_unit("boss", "sales", DEC_1));
    assert!(!directory.manages_unit("boss", "nowhere", DEC_1));
    drop(dir);
}

#[test]
fn outcomes_follow_the_sessions_of_the_period() {
    let (_dir, store, _) = folded(&history());
    let eng = health(&store, "eng", "2026-12", 10).unwrap();
    let follow = &eng.follow_through;
    assert_eq!((follow.agreed, follow.completed, follow.dropped), (3, 1, 1));
    assert_eq!(
        follow.event_ids.len(),
        5,
        "three agreed, one completed, one dropped"
    );
    assert_eq!(eng.reflections.count, 1);
    assert_eq!(eng.reflections.by_resolve, [0, 0, 0, 1, 0]);
    // s1 (1 Dec): one check-in before (20 Nov), two after (5 and 20 Dec);
    // s2 (15 Dec): two before (20 Nov, 5 Dec), one after (20 Dec).
    let progress = &eng.goal_progress;
    assert_eq!(
        (progress.before, progress.after, progress.sessions_followed),
        (3, 3, 2)
    );
    let november = health(&store, "eng", "2026-11", 10).unwrap();
    assert_eq!(november.coverage.sessions, 1);
    assert_eq!(november.follow_through.agreed, 0);
}

#[test]
fn themes_standing_on_too_few_people_are_withheld() {
    let mut events = history();
    let hr = [S::Participants, S::Hr];
    events.extend([
        insight("i1", "ada", "Python", &hr),
        insight("i2", "bob", "ｐｙｔｈｏｎ", &[S::DepartmentManagers]),
        insight("i3", "cy", "python", &hr),
        insight("i4", "boss", "python", &hr),
        insight("i5", "ada", "python", &hr),
        insight("i6", "ada", "burnout", &hr),
        insight("i7", "bob", "burnout", &hr),
        insight("i8", "cy", "secret", &[S::Participants]),
        insight("i9", "sam", "python", &hr),
    ]);
    let retracted = pb::InsightRetracted {
        insight_id: "i4".into(),
        ..Default::default()
    };
    events.push((DEC_1 + 3 * DAY, retracted.into()));
    events.extend([survey("eng", "2026-12", 3.8), survey("eng", "2026-11", 3.5)]);
    let (_dir, store, _) = folded(&events);

    let eng = engagement(&store, "eng", 3);
    let themes: Vec<_> = eng
        .themes
        .iter()
        .map(|t| (t.tag.as_str(), t.people, t.insights))
        .collect();
    // boss's insight was retracted; sam is in sales; cy's "secret" was never shared.
    assert_eq!(themes, [("python", 3, 4)]);
    assert_eq!(eng.themes_withheld, 1, "burnout stands on two people");
    assert_eq!(engagement(&store, "eng", 2).themes.len(), 2);
    assert_eq!(eng.surveys.len(), 1);
    let score = &eng.surveys[0];
    assert_eq!(
        (score.metric.as_str(), score.score, score.previous_score),
        ("engagement", 3.8, Some(3.5))
    );
    assert_eq!((eng.coverage.population, eng.coverage.covered), (5, 2));
    assert!(engagement(&store, "eng-web", 3).surveys.is_empty());
}

#[test]
fn a_held_session_is_rewritten_once_per_later_event_and_reads_the_same() {
    let events = history();
    let (_whole_dir, whole, _) = folded(&events);
    let (_dir, one_by_one, _, writes) = folded_in_commits_of(&events, 1);
    for (unit, period) in [("eng", "2026-12"), ("eng", "2026-11"), ("sales", "2026-12")] {
        let (expected, found) = (
            health(&whole, unit, period, 10),
            health(&one_by_one, unit, period, 10),
        );
        assert!(expected.is_some(), "{unit} {period}");
        assert_eq!(found, expected, "{unit} {period}");
    }
    // Action items and reflections come after their sessions were held: each rewrites the
    // served session alone, not a copy of it too.
    let later = events.iter().zip(&writes).filter(|((_, event), _)| {
        matches!(
            event,
            Event::ActionItemAgreed(_)
                | Event::ActionItemCompleted(_)
                | Event::ActionItemDropped(_)
                | Event::ReflectionRecorded(_)
        )
    });
    let mut seen = 0;
    for ((_, event), writes) in later {
        let models: Vec<&str> = (writes.iter())
            .map(|write| match write {
                Write::Put { model, .. } | Write::Delete { model, .. } => model.as_str(),
            })
            .collect();
        assert_eq!(models, [health::SESSIONS], "{event:?}");
        seen += 1;
    }
    assert_eq!(seen, 6);
}
