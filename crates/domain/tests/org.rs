//! The org directory's rules, and relationships derived from it as of a time.

mod support;

use ledger_domain::{OrgUnit, PersonCommand, PersonRecord, Role, api, classify, pb, to_timestamp};
use support::*;

use pb::Relationship as R;

fn define(id: &str, parent: &str) -> ledger_domain::OrgUnitCommand {
    ledger_domain::OrgUnitCommand::Define(api::DefineOrgUnitRequest {
        org_unit_id: id.into(),
        name: "Support".into(),
        parent_id: parent.into(),
        ..Default::default()
    })
}

#[test]
fn an_org_unit_is_defined_once_under_an_existing_parent() {
    expect_events(
        given::<OrgUnit>([])
            .by(system(Role::Service))
            .when(define("support", "sales")),
        vec![
            pb::OrgUnitDefined {
                org_unit_id: "support".into(),
                name: "Support".into(),
                parent_id: "sales".into(),
            }
            .into(),
        ],
    );
    let defined = pb::OrgUnitDefined {
        org_unit_id: "support".into(),
        name: "Support".into(),
        parent_id: String::new(),
    };
    expect_error(
        given::<OrgUnit>([defined.into()])
            .by(system(Role::Hr))
            .when(define("support", "")),
        exists,
    );
    expect_error(
        given::<OrgUnit>([])
            .by(system(Role::Admin))
            .when(define("support", "nowhere")),
        not_found,
    );
    expect_error(
        given::<OrgUnit>([])
            .by(system(Role::Admin))
            .when(define("support", "support")),
        invalid("parent_id"),
    );
    expect_error(
        given::<OrgUnit>([])
            .by(person("mia"))
            .when(define("support", "")),
        denied,
    );
}

#[test]
fn registering_needs_a_defined_unit_and_a_plausible_cohort() {
    let register = |unit: &str, cohort: i32| {
        PersonCommand::Register(api::RegisterPersonRequest {
            person_id: "zoe".into(),
            display_name: "Zoe".into(),
            org_unit_id: unit.into(),
            grade: "G1".into(),
            cohort_year: cohort,
            effective_at: Some(to_timestamp(T0)),
            ..Default::default()
        })
    };
    let expected = pb::PersonRegistered {
        sealed: None,
        person_id: "zoe".into(),
        display_name: "Zoe".into(),
        org_unit_id: "eng".into(),
        grade: "G1".into(),
        cohort_year: 2026,
        effective_at: Some(to_timestamp(T0)),
    };
    expect_events(
        given::<PersonRecord>([])
            .by(system(Role::Service))
            .when(register("eng", 2026)),
        vec![expected.into()],
    );
    expect_error(
        given::<PersonRecord>([])
            .by(system(Role::Service))
            .when(register("nowhere", 2026)),
        not_found,
    );
    expect_error(
        given::<PersonRecord>([])
            .by(system(Role::Service))
            .when(register("eng", 26)),
        invalid("cohort_year"),
    );
    let existing = registered("zoe", "eng", "G1", 2026, T0);
    expect_error(
        given::<PersonRecord>([existing])
            .by(system(Role::Service))
            .when(register("eng", 2026)),
        exists,
    );
}

#[test]
fn a_manager_must_be_in_the_org_and_not_make_a_cycle() {
    let assign = |person: &str, manager: &str| {
        PersonCommand::AssignManager(api::AssignManagerRequest {
            person_id: person.into(),
            manager_id: manager.into(),
            effective_at: Some(to_timestamp(T0 + DAY)),
            ..Default::default()
        })
    };
    let kai = [registered("kai", "sales", "G6", 2005, T0)];
    // kai ← lee ← mia: making mia kai's manager would close a loop.
    expect_error(
        given::<PersonRecord>(kai.clone())
            .by(system(Role::Service))
            .when(assign("kai", "mia")),
        precondition,
    );
    expect_error(
        given::<PersonRecord>(kai.clone())
            .by(system(Role::Service))
            .when(assign("kai", "kai")),
        invalid("manager_id"),
    );
    expect_error(
        given::<PersonRecord>(kai.clone())
            .by(system(Role::Service))
            .when(assign("kai", "ghost")),
        not_found,
    );
    expect_events(
        given::<PersonRecord>(kai.clone())
            .by(system(Role::Service))
            .when(assign("kai", "ada")),
        vec![manager("kai", "ada", T0 + DAY)],
    );
    let departed = pb::PersonDeparted {
        person_id: "kai".into(),
        effective_at: Some(to_timestamp(T0 + DAY)),
    };
    let history = [kai[0].clone(), departed.into()];
    expect_error(
        given::<PersonRecord>(history)
            .by(system(Role::Service))
            .when(assign("kai", "ada")),
        precondition,
    );
    expect_error(
        given::<PersonRecord>([])
            .by(system(Role::Service))
            .when(assign("zoe", "ada")),
        not_found,
    );
}

#[test]
fn relationships_follow_the_directory_as_of_the_session_time() {
    let world = org();
    let at = T0 + 10 * DAY;
    let relationship =
        |member: &str, partner: &str, at| classify(&world, member, partner, at).unwrap();
    assert_eq!(
        relationship("mia", "lee", at).relationship,
        R::VerticalDirect
    );
    assert!(relationship("mia", "lee", at).partner_evaluates_member);
    assert_eq!(relationship("mia", "kai", at).relationship, R::VerticalSkip);
    assert!(relationship("mia", "kai", at).partner_evaluates_member);
    // The reverse direction is vertical too, but the partner does not evaluate the member.
    assert_eq!(
        relationship("lee", "mia", at).relationship,
        R::VerticalDirect
    );
    assert!(!relationship("lee", "mia", at).partner_evaluates_member);
    assert_eq!(
        relationship("mia", "ren", at).relationship,
        R::Horizontal,
        "same grade"
    );
    assert_eq!(
        relationship("mia", "noa", at).relationship,
        R::Horizontal,
        "same cohort"
    );
    assert_eq!(relationship("mia", "ada", at).relationship, R::Diagonal);
    assert!(!relationship("mia", "ada", at).partner_evaluates_member);
    // After mia's transfer, ada is her manager.
    assert_eq!(
        relationship("mia", "ada", T0 + 61 * DAY).relationship,
        R::VerticalDirect
    );
    assert_eq!(
        relationship("mia", "lee", T0 + 61 * DAY).relationship,
        R::Diagonal
    );
    // Before anyone was registered, there is no directory to classify by.
    assert!(matches!(classify(&world, "mia", "lee", T0 - DAY), Err(e) if precondition(&e)));
    assert!(matches!(classify(&world, "mia", "ghost", at), Err(e) if not_found(&e)));
}

#[test]
fn moves_and_departures_take_effect_at_their_time_and_end_further_changes() {
    let history = vec![registered("zoe", "eng", "G1", 2026, T0)];
    let move_to = |unit: &str, at| {
        PersonCommand::Move(api::MovePersonRequest {
            person_id: "zoe".into(),
            org_unit_id: unit.into(),
            effective_at: Some(to_timestamp(at)),
            ..Default::default()
        })
    };
    let hr = || system(Role::Hr);
    expect_events(
        given::<PersonRecord>(history.clone())
            .by(hr())
            .when(move_to("sales", T0 + DAY)),
        vec![
            pb::PersonMoved {
                person_id: "zoe".into(),
                org_unit_id: "sales".into(),
                effective_at: Some(to_timestamp(T0 + DAY)),
            }
            .into(),
        ],
    );
    expect_error(
        given::<PersonRecord>(history.clone())
            .by(hr())
            .when(move_to("nowhere", T0 + DAY)),
        not_found,
    );
    expect_error(
        given::<PersonRecord>(history.clone())
            .by(hr())
            .when(move_to("sales", T0 - DAY)),
        invalid("effective_at"),
    );

    let depart = PersonCommand::Depart(api::RecordDepartureRequest {
        person_id: "zoe".into(),
        effective_at: Some(to_timestamp(T0 + 2 * DAY)),
        ..Default::default()
    });
    let departed = given::<PersonRecord>(history.clone())
        .by(hr())
        .when(depart.clone())
        .unwrap();
    let mut after = history;
    after.extend(departed);
    expect_error(
        given::<PersonRecord>(after.clone()).by(hr()).when(depart),
        precondition,
    );
    expect_error(
        given::<PersonRecord>(after.clone())
            .by(hr())
            .when(move_to("sales", T0 + 3 * DAY)),
        precondition,
    );
    // The directory as of a time before the departure still has the person.
    let record = <PersonRecord as ledger_domain::Aggregate>::fold(&after);
    assert!(!record.as_of(T0 + DAY).unwrap().departed);
    assert!(record.as_of(T0 + 2 * DAY).unwrap().departed);
}
