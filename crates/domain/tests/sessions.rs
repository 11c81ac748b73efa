//! Sessions: who schedules them, how they are classified, and their lifecycle.

mod support;

use ledger_domain::{Event, Session, SessionCommand as C, api, pb, to_timestamp};
use support::*;

use pb::Relationship as R;

fn schedule(member: &str, partner: &str, confidential: bool) -> C {
    C::Schedule(api::ScheduleSessionRequest {
        session_id: "s-1".into(),
        member_id: member.into(),
        partner_id: partner.into(),
        purposes: vec![pb::Purpose::Growth.into()],
        topic: "next steps".into(),
        hoped_response: pb::HopedResponse::ThinkTogether.into(),
        scheduled_at: Some(to_timestamp(T0 + 40 * DAY)),
        confidential,
        ..Default::default()
    })
}

fn held() -> Event {
    pb::SessionHeld {
        session_id: "s-1".into(),
        held_at: Some(to_timestamp(T0 + 40 * DAY)),
        duration_minutes: 30,
    }
    .into()
}

#[test]
fn scheduling_stores_the_derived_relationship() {
    for (partner, relationship) in [
        ("lee", R::VerticalDirect),
        ("kai", R::VerticalSkip),
        ("ren", R::Horizontal),
        ("ada", R::Diagonal),
    ] {
        let events = given::<Session>([])
            .when(schedule("mia", partner, false))
            .unwrap();
        assert_eq!(
            events,
            vec![scheduled("s-1", "mia", partner, relationship, false)],
            "with {partner}"
        );
    }
}

#[test]
fn a_confidential_session_with_an_evaluator_is_refused() {
    expect_error(
        given::<Session>([]).when(schedule("mia", "lee", true)),
        precondition,
    );
    expect_error(
        given::<Session>([]).when(schedule("mia", "kai", true)),
        precondition,
    );
    // A mentor in another line is exactly whom a confidential session is for.
    expect_events(
        given::<Session>([]).when(schedule("mia", "ada", true)),
        vec![scheduled("s-1", "mia", "ada", R::Diagonal, true)],
    );
}

#[test]
fn rescheduling_classifies_again_as_of_the_new_time() {
    // mia's manager becomes ada on day 60: a confidential session with ada moved past it is refused.
    let history = [scheduled("s-1", "mia", "ada", R::Diagonal, true)];
    let to = |day| {
        C::Reschedule(api::RescheduleSessionRequest {
            session_id: "s-1".into(),
            scheduled_at: Some(to_timestamp(T0 + day * DAY)),
            ..Default::default()
        })
    };
    expect_error(given::<Session>(history.clone()).when(to(61)), precondition);
    let history = [scheduled("s-1", "mia", "lee", R::VerticalDirect, false)];
    expect_events(
        given::<Session>(history).when(to(61)),
        vec![
            pb::SessionRescheduled {
                session_id: "s-1".into(),
                scheduled_at: Some(to_timestamp(T0 + 61 * DAY)),
                relationship: R::Diagonal.into(),
            }
            .into(),
        ],
    );
}

#[test]
fn scheduling_checks_its_input_and_its_caller() {
    let mut no_purpose = schedule("mia", "ren", false);
    if let C::Schedule(c) = &mut no_purpose {
        c.purposes = vec![pb::Purpose::Unspecified.into()];
    }
    expect_error(given::<Session>([]).when(no_purpose), invalid("purposes"));
    expect_error(
        given::<Session>([]).when(schedule("mia", "mia", false)),
        invalid("partner_id"),
    );
    expect_error(
        given::<Session>([]).when(schedule("mia", "gh ost", false)),
        invalid("partner_id"),
    );
    expect_error(
        given::<Session>([]).when(schedule("mia", "ghost", false)),
        not_found,
    );
    expect_error(
        given::<Session>([])
            .by(person("ren"))
            .when(schedule("mia", "lee", false)),
        denied,
    );
    expect_error(
        given::<Session>([scheduled("s-1", "mia", "ren", R::Horizontal, false)])
            .when(schedule("mia", "ren", false)),
        exists,
    );
}

#[test]
fn only_participants_change_a_session_and_only_while_it_allows() {
    let base = [scheduled("s-1", "mia", "ren", R::Horizontal, false)];
    let cancel = || {
        C::Cancel(api::CancelSessionRequest {
            session_id: "s-1".into(),
            reason: "ill".into(),
            ..Default::default()
        })
    };
    expect_error(
        given::<Session>(base.clone())
            .by(person("lee"))
            .when(cancel()),
        denied,
    );
    expect_events(
        given::<Session>(base.clone())
            .by(person("ren"))
            .when(cancel()),
        vec![
            pb::SessionCancelled {
                sealed: None,
                session_id: "s-1".into(),
                reason: "ill".into(),
                cancelled_by: "ren".into(),
            }
            .into(),
        ],
    );
    let cancelled = pb::SessionCancelled {
        sealed: None,
        session_id: "s-1".into(),
        reason: String::new(),
        cancelled_by: "mia".into(),
    };
    let hold = C::RecordHeld(api::RecordSessionHeldRequest {
        session_id: "s-1".into(),
        duration_minutes: 30,
        ..Default::default()
    });
    expect_error(
        given::<Session>([base[0].clone(), cancelled.into()]).when(hold.clone()),
        precondition,
    );
    expect_error(given::<Session>([]).when(hold), not_found);
}

#[test]
fn notes_and_action_items_follow_their_lifecycle() {
    let base = vec![scheduled("s-1", "mia", "ren", R::Horizontal, false), held()];
    let note = C::RecordNote(api::RecordNoteRequest {
        session_id: "s-1".into(),
        note_id: "n-1".into(),
        text: "keep for myself".into(),
        visibility: pb::NoteVisibility::Private.into(),
        ..Default::default()
    });
    expect_events(
        given::<Session>(base.clone()).by(person("ren")).when(note),
        vec![
            pb::NoteRecorded {
                sealed: None,
                session_id: "s-1".into(),
                note_id: "n-1".into(),
                author_id: "ren".into(),
                text: "keep for myself".into(),
                visibility: pb::NoteVisibility::Private.into(),
            }
            .into(),
        ],
    );
    let agree = |owner: &str| {
        C::AgreeActionItem(api::AgreeActionItemRequest {
            session_id: "s-1".into(),
            item_id: "a-1".into(),
            owner_id: owner.into(),
            text: "draft the proposal".into(),
            ..Default::default()
        })
    };
    expect_error(
        given::<Session>(base.clone()).when(agree("lee")),
        invalid("owner_id"),
    );
    let agreed = given::<Session>(base.clone()).when(agree("mia")).unwrap();
    let complete = C::CompleteActionItem(api::CompleteActionItemRequest {
        session_id: "s-1".into(),
        item_id: "a-1".into(),
        ..Default::default()
    });
    let mut history = base.clone();
    history.extend(agreed.clone());
    let completed = given::<Session>(history.clone())
        .when(complete.clone())
        .unwrap();
    assert!(
        matches!(&completed[..], [Event::ActionItemCompleted(e)] if e.item_id == "a-1" && e.completed_by == "mia")
    );
    history.extend(completed);
    expect_error(
        given::<Session>(history.clone()).when(complete),
        precondition,
    );
    expect_error(given::<Session>(history).when(agree("mia")), exists);
    let drop_unknown = C::DropActionItem(api::DropActionItemRequest {
        session_id: "s-1".into(),
        item_id: "a-9".into(),
        ..Default::default()
    });
    expect_error(given::<Session>(base).when(drop_unknown), not_found);
}

#[test]
fn only_the_member_reflects_after_the_session_is_held() {
    let reflect = |resolve| {
        C::RecordReflection(api::RecordReflectionRequest {
            session_id: "s-1".into(),
            what_was_decided: "apply for the transfer".into(),
            resolve,
            ..Default::default()
        })
    };
    let scheduled_only = [scheduled("s-1", "mia", "lee", R::VerticalDirect, false)];
    expect_error(
        given::<Session>(scheduled_only.clone()).when(reflect(4)),
        precondition,
    );
    let held_session = [scheduled_only[0].clone(), held()];
    expect_error(
        given::<Session>(held_session.clone())
            .by(person("lee"))
            .when(reflect(4)),
        denied,
    );
    expect_error(
        given::<Session>(held_session.clone()).when(reflect(6)),
        invalid("resolve"),
    );
    expect_error(
        given::<Session>(held_session.clone()).when(reflect(0)),
        invalid("resolve"),
    );
    expect_events(
        given::<Session>(held_session).when(reflect(4)),
        vec![
            pb::ReflectionRecorded {
                sealed: None,
                session_id: "s-1".into(),
                what_was_decided: "apply for the transfer".into(),
                resolve: 4,
            }
            .into(),
        ],
    );
}

#[test]
fn agenda_items_are_unique_and_a_held_session_is_not_rescheduled() {
    let base = vec![scheduled("s-1", "mia", "ren", R::Horizontal, false)];
    let agenda = || {
        C::AddAgendaItem(api::AddAgendaItemRequest {
            session_id: "s-1".into(),
            item_id: "g-1".into(),
            text: "career".into(),
            ..Default::default()
        })
    };
    let added = given::<Session>(base.clone())
        .by(person("ren"))
        .when(agenda())
        .unwrap();
    let mut history = base.clone();
    history.extend(added);
    expect_error(given::<Session>(history).when(agenda()), exists);
    let empty = C::AddAgendaItem(api::AddAgendaItemRequest {
        session_id: "s-1".into(),
        item_id: "g-2".into(),
        text: " ".into(),
        ..Default::default()
    });
    expect_error(given::<Session>(base.clone()).when(empty), invalid("text"));

    let reschedule = C::Reschedule(api::RescheduleSessionRequest {
        session_id: "s-1".into(),
        scheduled_at: Some(to_timestamp(T0 + 41 * DAY)),
        ..Default::default()
    });
    let held_session = [base[0].clone(), held()];
    expect_error(
        given::<Session>(held_session).when(reschedule.clone()),
        precondition,
    );
    let missing_time = C::Reschedule(api::RescheduleSessionRequest {
        session_id: "s-1".into(),
        ..Default::default()
    });
    expect_error(
        given::<Session>(base).when(missing_time),
        invalid("scheduled_at"),
    );
}
