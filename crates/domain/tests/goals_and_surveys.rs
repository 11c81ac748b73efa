//! Goals are changed by their owner or the owner's managers; survey results respect anonymity.

mod support;

use ledger_domain::{
    Event, Goal, GoalCommand as C, Policy, Role, SurveyCommand, SurveyResult, api, pb,
};
use support::*;

fn set_goal(owner: &str) -> C {
    C::Set(api::SetGoalRequest {
        goal_id: "g-1".into(),
        owner_id: owner.into(),
        period: "2026-H2".into(),
        kind: pb::GoalKind::Growth.into(),
        title: "Lead a project".into(),
        key_results: vec![pb::KeyResult {
            key_result_id: "kr-1".into(),
            description: "ship v1".into(),
            target: 1.0,
            unit: "release".into(),
        }],
        ..Default::default()
    })
}

fn goal_set() -> Event {
    let C::Set(c) = set_goal("mia") else {
        unreachable!()
    };
    pb::GoalSet {
        sealed: None,
        goal_id: c.goal_id,
        owner_id: c.owner_id,
        period: c.period,
        kind: c.kind,
        title: c.title,
        description: c.description,
        key_results: c.key_results,
        linked_session_id: c.linked_session_id,
        set_by: "mia".into(),
    }
    .into()
}

fn progress(key_result: &str) -> C {
    C::RecordProgress(api::RecordGoalProgressRequest {
        goal_id: "g-1".into(),
        key_result_id: key_result.into(),
        value: 0.5,
        ..Default::default()
    })
}

#[test]
fn the_owner_and_their_managers_set_goals_others_do_not() {
    expect_events(given::<Goal>([]).when(set_goal("mia")), vec![goal_set()]);
    assert!(
        given::<Goal>([])
            .by(person("lee"))
            .when(set_goal("mia"))
            .is_ok(),
        "direct manager"
    );
    assert!(
        given::<Goal>([])
            .by(person("kai"))
            .when(set_goal("mia"))
            .is_ok(),
        "skip-level manager"
    );
    expect_error(
        given::<Goal>([]).by(person("ren")).when(set_goal("mia")),
        denied,
    );
    expect_error(
        given::<Goal>([])
            .by(system(Role::Service))
            .when(set_goal("mia")),
        denied,
    );
    expect_error(given::<Goal>([goal_set()]).when(set_goal("mia")), exists);
    expect_error(given::<Goal>([]).when(set_goal("ghost")), not_found);
    let C::Set(mut bad_period) = set_goal("mia") else {
        unreachable!()
    };
    bad_period.period = "H2 2026".into();
    expect_error(
        given::<Goal>([]).when(C::Set(bad_period)),
        invalid("period"),
    );
}

#[test]
fn progress_names_a_key_result_of_an_active_goal() {
    let recorded = given::<Goal>([goal_set()]).when(progress("kr-1")).unwrap();
    assert!(
        matches!(&recorded[..], [Event::GoalProgressRecorded(e)] if e.value == 0.5 && e.recorded_by == "mia")
    );
    expect_error(
        given::<Goal>([goal_set()]).when(progress("kr-9")),
        not_found,
    );
    expect_error(given::<Goal>([]).when(progress("kr-1")), not_found);
    let completed = pb::GoalCompleted {
        sealed: None,
        goal_id: "g-1".into(),
        note: String::new(),
        completed_by: "mia".into(),
    };
    expect_error(
        given::<Goal>([goal_set(), completed.into()]).when(progress("kr-1")),
        precondition,
    );
    let abandon = C::Abandon(api::AbandonGoalRequest {
        goal_id: "g-1".into(),
        reason: String::new(),
        ..Default::default()
    });
    expect_error(given::<Goal>([goal_set()]).when(abandon), invalid("reason"));
}

fn survey(respondents: u32) -> SurveyCommand {
    SurveyCommand::Record(api::RecordSurveyResultRequest {
        survey_result_id: "sv-1".into(),
        org_unit_id: "sales".into(),
        period: "2026-Q4".into(),
        metric: "engagement".into(),
        score: 3.8,
        respondent_count: respondents,
        ..Default::default()
    })
}

#[test]
fn survey_results_below_the_anonymity_threshold_are_refused() {
    let hr = system(Role::Hr);
    assert!(
        given::<SurveyResult>([])
            .by(hr.clone())
            .when(survey(5))
            .is_ok()
    );
    expect_error(
        given::<SurveyResult>([]).by(hr.clone()).when(survey(4)),
        precondition,
    );
    // A configured threshold applies, but never one below 3.
    let lenient = Policy {
        anonymity_threshold: 1,
    };
    expect_error(
        given::<SurveyResult>([])
            .by(hr.clone())
            .with_policy(lenient.clone())
            .when(survey(2)),
        precondition,
    );
    assert!(
        given::<SurveyResult>([])
            .by(hr.clone())
            .with_policy(lenient)
            .when(survey(3))
            .is_ok()
    );
    expect_error(
        given::<SurveyResult>([]).by(person("mia")).when(survey(10)),
        denied,
    );
    let SurveyCommand::Record(mut unknown_unit) = survey(10);
    unknown_unit.org_unit_id = "nowhere".into();
    expect_error(
        given::<SurveyResult>([])
            .by(hr)
            .when(SurveyCommand::Record(unknown_unit)),
        not_found,
    );
}

#[test]
fn goals_are_revised_completed_and_reflected_on_in_order() {
    let revise = |reason: &str| {
        C::Revise(api::ReviseGoalRequest {
            goal_id: "g-1".into(),
            title: "Lead two projects".into(),
            key_results: vec![pb::KeyResult {
                key_result_id: "kr-2".into(),
                description: "ship v2".into(),
                target: 1.0,
                unit: String::new(),
            }],
            reason: reason.into(),
            ..Default::default()
        })
    };
    expect_error(
        given::<Goal>([goal_set()]).when(revise("")),
        invalid("reason"),
    );
    let revised = given::<Goal>([goal_set()])
        .when(revise("scope grew"))
        .unwrap();
    // After the revision only the new key result takes progress.
    let history: Vec<Event> = std::iter::once(goal_set()).chain(revised).collect();
    expect_error(
        given::<Goal>(history.clone()).when(progress("kr-1")),
        not_found,
    );
    assert!(
        given::<Goal>(history.clone())
            .when(progress("kr-2"))
            .is_ok()
    );

    let complete = C::Complete(api::CompleteGoalRequest {
        goal_id: "g-1".into(),
        note: "done".into(),
        ..Default::default()
    });
    let completed = given::<Goal>(history.clone())
        .by(person("lee"))
        .when(complete.clone())
        .unwrap();
    assert!(matches!(&completed[..], [Event::GoalCompleted(e)] if e.completed_by == "lee"));
    let mut done = history;
    done.extend(completed);
    expect_error(given::<Goal>(done.clone()).when(complete), precondition);
    let reflect = |text: &str| {
        C::Reflect(api::ReflectOnGoalRequest {
            goal_id: "g-1".into(),
            text: text.into(),
            ..Default::default()
        })
    };
    assert!(
        given::<Goal>(done.clone())
            .when(reflect("it taught me to delegate"))
            .is_ok(),
        "reflection after completion"
    );
    expect_error(
        given::<Goal>(done.clone()).when(reflect(" ")),
        invalid("text"),
    );
    let abandoned = pb::GoalAbandoned {
        sealed: None,
        goal_id: "g-1".into(),
        reason: "reorg".into(),
        abandoned_by: "mia".into(),
    };
    expect_error(
        given::<Goal>([goal_set(), abandoned.into()]).when(reflect("x")),
        precondition,
    );
    let unknown_session = C::Reflect(api::ReflectOnGoalRequest {
        goal_id: "g-1".into(),
        text: "x".into(),
        linked_session_id: "s-9".into(),
        ..Default::default()
    });
    expect_error(given::<Goal>([goal_set()]).when(unknown_session), not_found);
}
