//! Sessions (1on1s): scheduled → held or cancelled, with agenda, notes, action items and the
//! member's reflection. Commands come from the participants themselves.

use std::collections::{BTreeMap, BTreeSet};

use crate::error::text;
use crate::{
    Aggregate, Context, DomainError, Event, Id, Micros, References, api, classify, pb, time,
};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SessionStatus {
    /// Not scheduled yet: the session does not exist.
    #[default]
    None,
    Scheduled,
    Held,
    Cancelled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionItemStatus {
    Open,
    Completed,
    Dropped,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionItem {
    pub owner_id: String,
    pub status: ActionItemStatus,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Session {
    pub member_id: String,
    pub partner_id: String,
    pub relationship: pb::Relationship,
    pub confidential: bool,
    pub scheduled_at: Micros,
    pub status: SessionStatus,
    pub agenda_items: BTreeSet<String>,
    pub notes: BTreeSet<String>,
    pub action_items: BTreeMap<String, ActionItem>,
    pub reflections: u32,
}

impl Session {
    pub fn exists(&self) -> bool {
        self.status != SessionStatus::None
    }

    pub fn is_participant(&self, person: &str) -> bool {
        self.member_id == person || self.partner_id == person
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum SessionCommand {
    Schedule(api::ScheduleSessionRequest),
    Reschedule(api::RescheduleSessionRequest),
    Cancel(api::CancelSessionRequest),
    RecordHeld(api::RecordSessionHeldRequest),
    AddAgendaItem(api::AddAgendaItemRequest),
    RecordNote(api::RecordNoteRequest),
    AgreeActionItem(api::AgreeActionItemRequest),
    CompleteActionItem(api::CompleteActionItemRequest),
    DropActionItem(api::DropActionItemRequest),
    RecordReflection(api::RecordReflectionRequest),
}

impl Aggregate for Session {
    type Command = SessionCommand;
    const KIND: &'static str = "session";

    fn starts(command: &Self::Command) -> bool {
        matches!(command, SessionCommand::Schedule(_))
    }

    fn id(command: &Self::Command) -> Result<Id, DomainError> {
        use SessionCommand as C;
        let id = match command {
            C::Schedule(c) => &c.session_id,
            C::Reschedule(c) => &c.session_id,
            C::Cancel(c) => &c.session_id,
            C::RecordHeld(c) => &c.session_id,
            C::AddAgendaItem(c) => &c.session_id,
            C::RecordNote(c) => &c.session_id,
            C::AgreeActionItem(c) => &c.session_id,
            C::CompleteActionItem(c) => &c.session_id,
            C::DropActionItem(c) => &c.session_id,
            C::RecordReflection(c) => &c.session_id,
        };
        Id::parse("session_id", id)
    }

    fn references(command: &Self::Command, state: &Self) -> References {
        let persons = match command {
            SessionCommand::Schedule(c) => vec![c.member_id.clone(), c.partner_id.clone()],
            SessionCommand::Reschedule(_) => {
                vec![state.member_id.clone(), state.partner_id.clone()]
            }
            _ => vec![],
        };
        References {
            persons,
            ..References::default()
        }
    }

    fn decide(
        command: &Self::Command,
        state: &Self,
        context: &Context<'_>,
    ) -> Result<Vec<Event>, DomainError> {
        use SessionCommand as C;
        let id = Self::id(command)?;
        let actor = context.actor.person()?;
        if let C::Schedule(c) = command {
            return schedule(c, &id, state, actor, context);
        }
        if !state.exists() {
            return Err(DomainError::not_found(format!("session {id}")));
        }
        if !state.is_participant(actor) {
            return Err(DomainError::denied(format!(
                "only the participants of session {id} may change it"
            )));
        }
        let session_id = id.to_string();
        let event: Event = match command {
            C::Schedule(_) => unreachable!("handled above"),
            C::Reschedule(c) => {
                require_status(state, &[SessionStatus::Scheduled], "rescheduled")?;
                let at = required_time("scheduled_at", c.scheduled_at.as_ref())?;
                let classification =
                    classify(context.world, &state.member_id, &state.partner_id, at)?;
                refuse_confidential_with_evaluator(state.confidential, classification)?;
                pb::SessionRescheduled {
                    session_id,
                    scheduled_at: Some(time::to_timestamp(at)),
                    relationship: classification.relationship.into(),
                }
                .into()
            }
            C::Cancel(c) => {
                require_status(state, &[SessionStatus::Scheduled], "cancelled")?;
                text("reason", &c.reason, 1000, true)?;
                pb::SessionCancelled {
                    sealed: None,
                    session_id,
                    reason: c.reason.clone(),
                    cancelled_by: actor.to_owned(),
                }
                .into()
            }
            C::RecordHeld(c) => {
                require_status(state, &[SessionStatus::Scheduled], "recorded as held")?;
                if c.duration_minutes > 24 * 60 {
                    return Err(DomainError::invalid(
                        "duration_minutes",
                        "must be at most 1440",
                    ));
                }
                let held_at = time::or_default(c.held_at.as_ref(), context.now);
                pb::SessionHeld {
                    session_id,
                    held_at: Some(time::to_timestamp(held_at)),
                    duration_minutes: c.duration_minutes,
                }
                .into()
            }
            C::AddAgendaItem(c) => {
                require_status(
                    state,
                    &[SessionStatus::Scheduled, SessionStatus::Held],
                    "given agenda items",
                )?;
                let item = Id::parse("item_id", &c.item_id)?;
                text("text", &c.text, 2000, false)?;
                if state.agenda_items.contains(item.as_str()) {
                    return Err(DomainError::exists(format!("agenda item {item}")));
                }
                pb::AgendaItemAdded {
                    sealed: None,
                    session_id,
                    item_id: c.item_id.clone(),
                    text: c.text.clone(),
                    added_by: actor.to_owned(),
                }
                .into()
            }
            C::RecordNote(c) => {
                require_status(
                    state,
                    &[SessionStatus::Scheduled, SessionStatus::Held],
                    "given notes",
                )?;
                let note = Id::parse("note_id", &c.note_id)?;
                text("text", &c.text, 20_000, false)?;
                if c.visibility() == pb::NoteVisibility::Unspecified {
                    return Err(DomainError::invalid(
                        "visibility",
                        "must be shared or private",
                    ));
                }
                if state.notes.contains(note.as_str()) {
                    return Err(DomainError::exists(format!("note {note}")));
                }
                pb::NoteRecorded {
                    sealed: None,
                    session_id,
                    note_id: c.note_id.clone(),
                    author_id: actor.to_owned(),
                    text: c.text.clone(),
                    visibility: c.visibility,
                }
                .into()
            }
            C::AgreeActionItem(c) => {
                require_status(
                    state,
                    &[SessionStatus::Scheduled, SessionStatus::Held],
                    "given action items",
                )?;
                let item = Id::parse("item_id", &c.item_id)?;
                let owner = Id::parse("owner_id", &c.owner_id)?;
                text("text", &c.text, 2000, false)?;
                if !state.is_participant(owner.as_str()) {
                    return Err(DomainError::invalid(
                        "owner_id",
                        "must be a participant of the session",
                    ));
                }
                if state.action_items.contains_key(item.as_str()) {
                    return Err(DomainError::exists(format!("action item {item}")));
                }
                pb::ActionItemAgreed {
                    sealed: None,
                    session_id,
                    item_id: c.item_id.clone(),
                    owner_id: c.owner_id.clone(),
                    text: c.text.clone(),
                    due: c.due,
                }
                .into()
            }
            C::CompleteActionItem(c) => {
                open_item(state, &c.item_id)?;
                pb::ActionItemCompleted {
                    session_id,
                    item_id: c.item_id.clone(),
                    completed_at: Some(time::to_timestamp(context.now)),
                    completed_by: actor.to_owned(),
                }
                .into()
            }
            C::DropActionItem(c) => {
                open_item(state, &c.item_id)?;
                text("reason", &c.reason, 1000, true)?;
                pb::ActionItemDropped {
                    sealed: None,
                    session_id,
                    item_id: c.item_id.clone(),
                    reason: c.reason.clone(),
                    dropped_by: actor.to_owned(),
                }
                .into()
            }
            C::RecordReflection(c) => {
                if state.member_id != actor {
                    return Err(DomainError::denied("only the member reflects on a session"));
                }
                require_status(
                    state,
                    &[SessionStatus::Held],
                    "reflected on before it is held",
                )?;
                text("what_was_decided", &c.what_was_decided, 5000, false)?;
                if !(1..=5).contains(&c.resolve) {
                    return Err(DomainError::invalid("resolve", "must be from 1 to 5"));
                }
                pb::ReflectionRecorded {
                    sealed: None,
                    session_id,
                    what_was_decided: c.what_was_decided.clone(),
                    resolve: c.resolve,
                }
                .into()
            }
        };
        Ok(vec![event])
    }

    fn data_subject(&self) -> Option<&str> {
        Some(self.member_id.as_str()).filter(|id| !id.is_empty())
    }

    fn evolve(mut state: Self, event: &Event) -> Self {
        match event {
            Event::SessionScheduled(e) => {
                state.member_id.clone_from(&e.member_id);
                state.partner_id.clone_from(&e.partner_id);
                state.relationship = e.relationship();
                state.confidential = e.confidential;
                state.scheduled_at = e.scheduled_at.as_ref().map_or(0, time::from_timestamp);
                state.status = SessionStatus::Scheduled;
            }
            Event::SessionRescheduled(e) => {
                state.scheduled_at = e.scheduled_at.as_ref().map_or(0, time::from_timestamp);
                state.relationship = e.relationship();
            }
            Event::SessionCancelled(_) => state.status = SessionStatus::Cancelled,
            Event::SessionHeld(_) => state.status = SessionStatus::Held,
            Event::AgendaItemAdded(e) => {
                state.agenda_items.insert(e.item_id.clone());
            }
            Event::NoteRecorded(e) => {
                state.notes.insert(e.note_id.clone());
            }
            Event::ActionItemAgreed(e) => {
                let item = ActionItem {
                    owner_id: e.owner_id.clone(),
                    status: ActionItemStatus::Open,
                };
                state.action_items.insert(e.item_id.clone(), item);
            }
            Event::ActionItemCompleted(e) => {
                set_item(&mut state, &e.item_id, ActionItemStatus::Completed)
            }
            Event::ActionItemDropped(e) => {
                set_item(&mut state, &e.item_id, ActionItemStatus::Dropped)
            }
            Event::ReflectionRecorded(_) => state.reflections += 1,
            _ => {}
        }
        state
    }
}

fn schedule(
    c: &api::ScheduleSessionRequest,
    id: &Id,
    state: &Session,
    actor: &str,
    context: &Context<'_>,
) -> Result<Vec<Event>, DomainError> {
    let member = Id::parse("member_id", &c.member_id)?;
    let partner = Id::parse("partner_id", &c.partner_id)?;
    if member == partner {
        return Err(DomainError::invalid(
            "partner_id",
            "must differ from member_id",
        ));
    }
    if c.purposes.is_empty() || c.purposes().any(|p| p == pb::Purpose::Unspecified) {
        return Err(DomainError::invalid(
            "purposes",
            "name at least one purpose, each specified",
        ));
    }
    if c.hoped_response() == pb::HopedResponse::Unspecified {
        return Err(DomainError::invalid(
            "hoped_response",
            "must be advice, think together or just listen",
        ));
    }
    text("topic", &c.topic, 500, true)?;
    let at = required_time("scheduled_at", c.scheduled_at.as_ref())?;
    if state.exists() {
        return Err(DomainError::exists(format!("session {id}")));
    }
    if actor != member.as_str() && actor != partner.as_str() {
        return Err(DomainError::denied(
            "a session is scheduled by its member or partner",
        ));
    }
    let classification = classify(context.world, member.as_str(), partner.as_str(), at)?;
    refuse_confidential_with_evaluator(c.confidential, classification)?;
    let mut purposes = c.purposes.clone();
    purposes.sort_unstable();
    purposes.dedup();
    Ok(vec![
        pb::SessionScheduled {
            sealed: None,
            session_id: id.to_string(),
            member_id: c.member_id.clone(),
            partner_id: c.partner_id.clone(),
            relationship: classification.relationship.into(),
            purposes,
            topic: c.topic.clone(),
            hoped_response: c.hoped_response,
            scheduled_at: Some(time::to_timestamp(at)),
            confidential: c.confidential,
            scheduled_by: actor.to_owned(),
        }
        .into(),
    ])
}

/// The safe channel the article asks for: a confidential session never with an evaluator.
fn refuse_confidential_with_evaluator(
    confidential: bool,
    classification: crate::Classification,
) -> Result<(), DomainError> {
    if confidential && classification.partner_evaluates_member {
        return Err(DomainError::precondition(
            "a confidential session cannot be held with someone who has evaluation power over the member \
             (the partner is in the member's manager chain)",
        ));
    }
    Ok(())
}

fn required_time(
    field: &str,
    value: Option<&prost_types::Timestamp>,
) -> Result<Micros, DomainError> {
    value
        .map(time::from_timestamp)
        .ok_or_else(|| DomainError::invalid(field, "is required"))
}

fn require_status(
    state: &Session,
    allowed: &[SessionStatus],
    doing: &str,
) -> Result<(), DomainError> {
    if allowed.contains(&state.status) {
        Ok(())
    } else {
        Err(DomainError::precondition(
            format!("a {:?} session cannot be {doing}", state.status).to_lowercase(),
        ))
    }
}

fn open_item(state: &Session, item_id: &str) -> Result<(), DomainError> {
    let item = Id::parse("item_id", item_id)?;
    match state.action_items.get(item.as_str()) {
        None => Err(DomainError::not_found(format!("action item {item}"))),
        Some(found) if found.status != ActionItemStatus::Open => Err(DomainError::precondition(
            format!("action item {item} is already {:?}", found.status).to_lowercase(),
        )),
        Some(_) => Ok(()),
    }
}

fn set_item(state: &mut Session, item_id: &str, status: ActionItemStatus) {
    if let Some(item) = state.action_items.get_mut(item_id) {
        item.status = status;
    }
}
