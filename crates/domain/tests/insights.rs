//! Insights belong to their subject: default scopes by relationship, consent to widen, and
//! narrowing or retraction at any time.

mod support;

use ledger_domain::{Event, Insight, InsightCommand as C, api, pb};
use support::*;

use pb::{InsightKind as Kind, Relationship as R, SharingScope as S};

fn record(subject: &str, kind: Kind, scopes: &[S]) -> C {
    C::Record(api::RecordInsightRequest {
        insight_id: "i-1".into(),
        subject_id: subject.into(),
        session_id: "s-1".into(),
        kind: kind.into(),
        tags: vec!["Python".into(), "mentoring".into()],
        text: "enjoys growing juniors".into(),
        scopes: scopes.iter().map(|s| (*s).into()).collect(),
        ..Default::default()
    })
}

fn recorded_scopes(result: Vec<Event>) -> Vec<S> {
    match &result[..] {
        [Event::InsightRecorded(e)] => e.scopes().collect(),
        other => panic!("unexpected events {other:?}"),
    }
}

fn recorded(subject: &str, kind: Kind, scopes: &[S]) -> Event {
    pb::InsightRecorded {
        sealed: None,
        insight_id: "i-1".into(),
        subject_id: subject.into(),
        session_id: "s-1".into(),
        recorded_by: "ren".into(),
        kind: kind.into(),
        tags: vec![],
        text: "t".into(),
        scopes: scopes.iter().map(|s| (*s).into()).collect(),
        relationship: R::Horizontal.into(),
    }
    .into()
}

#[test]
fn default_scopes_keep_horizontal_and_diagonal_sessions_confidential() {
    let peers = with_session(org(), "s-1", "mia", "ren", R::Horizontal);
    let result = given::<Insight>([])
        .in_world(peers)
        .by(person("ren"))
        .when(record("mia", Kind::Strength, &[]));
    assert_eq!(recorded_scopes(result.unwrap()), [S::Participants]);

    let mentor = with_session(org(), "s-1", "mia", "ada", R::Diagonal);
    let result = given::<Insight>([])
        .in_world(mentor)
        .by(person("ada"))
        .when(record("mia", Kind::Interest, &[]));
    assert_eq!(recorded_scopes(result.unwrap()), [S::Participants]);

    let vertical = with_session(org(), "s-1", "mia", "lee", R::VerticalDirect);
    let result = given::<Insight>([])
        .in_world(vertical.clone())
        .by(person("lee"))
        .when(record("mia", Kind::Skill, &[]));
    assert_eq!(
        recorded_scopes(result.unwrap()),
        [S::Participants, S::ManagerChain]
    );
    // Health stays with the participants, even in a vertical session.
    let result = given::<Insight>([])
        .in_world(vertical)
        .by(person("lee"))
        .when(record("mia", Kind::Condition, &[]));
    assert_eq!(recorded_scopes(result.unwrap()), [S::Participants]);
}

#[test]
fn only_the_subject_records_wider_than_the_default() {
    let world = with_session(org(), "s-1", "mia", "ren", R::Horizontal);
    let wide = [S::Participants, S::Staffing];
    expect_error(
        given::<Insight>([])
            .in_world(world.clone())
            .by(person("ren"))
            .when(record("mia", Kind::Strength, &wide)),
        denied,
    );
    let result = given::<Insight>([])
        .in_world(world.clone())
        .by(person("mia"))
        .when(record("mia", Kind::Strength, &wide));
    assert_eq!(recorded_scopes(result.unwrap()), wide);
    expect_error(
        given::<Insight>([])
            .in_world(world)
            .by(person("mia"))
            .when(record("mia", Kind::Condition, &wide)),
        precondition,
    );
}

#[test]
fn recording_needs_a_participant_about_a_participant() {
    let world = with_session(org(), "s-1", "mia", "ren", R::Horizontal);
    expect_error(
        given::<Insight>([])
            .in_world(world.clone())
            .by(person("lee"))
            .when(record("mia", Kind::Strength, &[])),
        denied,
    );
    expect_error(
        given::<Insight>([])
            .in_world(world.clone())
            .by(person("ren"))
            .when(record("lee", Kind::Strength, &[])),
        invalid("subject_id"),
    );
    expect_error(
        given::<Insight>([])
            .in_world(org())
            .by(person("ren"))
            .when(record("mia", Kind::Strength, &[])),
        not_found,
    );
    expect_error(
        given::<Insight>([])
            .in_world(world.clone())
            .by(person("ren"))
            .when(record("mia", Kind::Unspecified, &[])),
        invalid("kind"),
    );
    let history = [recorded("mia", Kind::Strength, &[S::Participants])];
    expect_error(
        given::<Insight>(history)
            .in_world(world)
            .by(person("ren"))
            .when(record("mia", Kind::Strength, &[])),
        exists,
    );
}

fn share(scopes: &[S], consent: bool) -> C {
    C::Share(api::ShareInsightRequest {
        insight_id: "i-1".into(),
        scopes: scopes.iter().map(|s| (*s).into()).collect(),
        explicit_consent: consent,
        ..Default::default()
    })
}

#[test]
fn only_the_subject_widens_and_health_needs_explicit_consent() {
    let history = [recorded("mia", Kind::Strength, &[S::Participants])];
    expect_error(
        given::<Insight>(history.clone())
            .by(person("ren"))
            .when(share(&[S::Evaluation], false)),
        denied,
    );
    expect_events(
        given::<Insight>(history.clone()).when(share(&[S::Evaluation, S::Participants], false)),
        vec![
            pb::InsightShared {
                insight_id: "i-1".into(),
                added: vec![S::Evaluation.into()],
                explicit_consent: false,
                shared_by: "mia".into(),
            }
            .into(),
        ],
    );
    expect_error(
        given::<Insight>(history).when(share(&[S::Participants], false)),
        precondition,
    );

    let health = [recorded("mia", Kind::Condition, &[S::Participants])];
    expect_error(
        given::<Insight>(health.clone()).when(share(&[S::Hr], false)),
        precondition,
    );
    let shared = given::<Insight>(health)
        .when(share(&[S::Hr], true))
        .unwrap();
    assert!(matches!(&shared[..], [Event::InsightShared(e)] if e.explicit_consent));
    expect_error(given::<Insight>([]).when(share(&[S::Hr], true)), not_found);
    expect_error(
        given::<Insight>([recorded("mia", Kind::Strength, &[])])
            .when(share(&[S::Unspecified], true)),
        invalid("scopes"),
    );
}

#[test]
fn subject_or_recorder_may_narrow_or_retract_and_a_retracted_insight_stays_retracted() {
    let history = vec![recorded(
        "mia",
        Kind::Strength,
        &[S::Participants, S::Staffing],
    )];
    let narrow = |scopes: &[S]| {
        C::Narrow(api::NarrowInsightRequest {
            insight_id: "i-1".into(),
            scopes: scopes.iter().map(|s| (*s).into()).collect(),
            ..Default::default()
        })
    };
    expect_events(
        given::<Insight>(history.clone())
            .by(person("ren"))
            .when(narrow(&[S::Staffing])),
        vec![
            pb::InsightNarrowed {
                insight_id: "i-1".into(),
                removed: vec![S::Staffing.into()],
                narrowed_by: "ren".into(),
            }
            .into(),
        ],
    );
    expect_error(
        given::<Insight>(history.clone())
            .by(person("lee"))
            .when(narrow(&[S::Staffing])),
        denied,
    );
    expect_error(
        given::<Insight>(history.clone()).when(narrow(&[S::Hr])),
        precondition,
    );

    let retract = C::Retract(api::RetractInsightRequest {
        insight_id: "i-1".into(),
        ..Default::default()
    });
    let retracted = given::<Insight>(history.clone())
        .when(retract.clone())
        .unwrap();
    let mut after = history;
    after.extend(retracted);
    expect_error(given::<Insight>(after.clone()).when(retract), precondition);
    expect_error(
        given::<Insight>(after).when(share(&[S::Evaluation], false)),
        precondition,
    );
}
