//! Goals: set → progress check-ins → reflections → completed or abandoned, by the owner or the
//! owner's manager, linked to the sessions where they were discussed.

use std::collections::BTreeSet;

use crate::error::text;
use crate::survey::period;
use crate::{Aggregate, Context, DomainError, Event, Id, References, api, directory::manages, pb};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum GoalStatus {
    #[default]
    None,
    Active,
    Completed,
    Abandoned,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Goal {
    pub owner_id: String,
    pub status: GoalStatus,
    pub key_results: BTreeSet<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum GoalCommand {
    Set(api::SetGoalRequest),
    RecordProgress(api::RecordGoalProgressRequest),
    Reflect(api::ReflectOnGoalRequest),
    Revise(api::ReviseGoalRequest),
    Complete(api::CompleteGoalRequest),
    Abandon(api::AbandonGoalRequest),
}

impl Aggregate for Goal {
    type Command = GoalCommand;
    const KIND: &'static str = "goal";

    fn starts(command: &Self::Command) -> bool {
        matches!(command, GoalCommand::Set(_))
    }

    fn id(command: &Self::Command) -> Result<Id, DomainError> {
        use GoalCommand as C;
        let id = match command {
            C::Set(c) => &c.goal_id,
            C::RecordProgress(c) => &c.goal_id,
            C::Reflect(c) => &c.goal_id,
            C::Revise(c) => &c.goal_id,
            C::Complete(c) => &c.goal_id,
            C::Abandon(c) => &c.goal_id,
        };
        Id::parse("goal_id", id)
    }

    fn references(command: &Self::Command, state: &Self) -> References {
        use GoalCommand as C;
        let (owner, session) = match command {
            C::Set(c) => (c.owner_id.clone(), c.linked_session_id.clone()),
            C::RecordProgress(c) => (state.owner_id.clone(), c.linked_session_id.clone()),
            C::Reflect(c) => (state.owner_id.clone(), c.linked_session_id.clone()),
            _ => (state.owner_id.clone(), String::new()),
        };
        References {
            persons: vec![owner],
            sessions: vec![session],
            ..References::default()
        }
    }

    fn decide(
        command: &Self::Command,
        state: &Self,
        context: &Context<'_>,
    ) -> Result<Vec<Event>, DomainError> {
        use GoalCommand as C;
        let id = Self::id(command)?;
        let actor = context.actor.person()?.to_owned();
        let goal_id = id.to_string();
        if let C::Set(c) = command {
            let owner = Id::parse("owner_id", &c.owner_id)?;
            period("period", &c.period)?;
            if c.kind() == pb::GoalKind::Unspecified {
                return Err(DomainError::invalid(
                    "kind",
                    "must be performance, growth or career",
                ));
            }
            text("title", &c.title, 200, false)?;
            text("description", &c.description, 10_000, true)?;
            key_results(&c.key_results)?;
            linked_session("linked_session_id", &c.linked_session_id, context)?;
            if state.status != GoalStatus::None {
                return Err(DomainError::exists(format!("goal {id}")));
            }
            if context.world.person(owner.as_str()).is_none() {
                return Err(DomainError::not_found(format!("person {owner}")));
            }
            require_owner_or_manager(owner.as_str(), &actor, context)?;
            return Ok(vec![
                pb::GoalSet {
                    sealed: None,
                    goal_id,
                    owner_id: c.owner_id.clone(),
                    period: c.period.clone(),
                    kind: c.kind,
                    title: c.title.clone(),
                    description: c.description.clone(),
                    key_results: c.key_results.clone(),
                    linked_session_id: c.linked_session_id.clone(),
                    set_by: actor,
                }
                .into(),
            ]);
        }
        if state.status == GoalStatus::None {
            return Err(DomainError::not_found(format!("goal {id}")));
        }
        require_owner_or_manager(&state.owner_id, &actor, context)?;
        let event: Event = match command {
            C::Set(_) => unreachable!("handled above"),
            C::RecordProgress(c) => {
                require_active(state)?;
                let known = if state.key_results.is_empty() {
                    c.key_result_id.is_empty()
                } else {
                    state.key_results.contains(&c.key_result_id)
                };
                if !known {
                    return Err(DomainError::not_found(format!(
                        "key result {:?} of goal {id}",
                        c.key_result_id
                    )));
                }
                if !c.value.is_finite() {
                    return Err(DomainError::invalid("value", "must be a finite number"));
                }
                text("note", &c.note, 5000, true)?;
                linked_session("linked_session_id", &c.linked_session_id, context)?;
                pb::GoalProgressRecorded {
                    sealed: None,
                    goal_id,
                    key_result_id: c.key_result_id.clone(),
                    value: c.value,
                    note: c.note.clone(),
                    recorded_by: actor,
                    recorded_at: Some(crate::to_timestamp(context.now)),
                    linked_session_id: c.linked_session_id.clone(),
                }
                .into()
            }
            C::Reflect(c) => {
                if state.status == GoalStatus::Abandoned {
                    return Err(DomainError::precondition(format!(
                        "goal {id} was abandoned"
                    )));
                }
                text("text", &c.text, 10_000, false)?;
                linked_session("linked_session_id", &c.linked_session_id, context)?;
                pb::GoalReflected {
                    sealed: None,
                    goal_id,
                    text: c.text.clone(),
                    reflected_by: actor,
                    linked_session_id: c.linked_session_id.clone(),
                }
                .into()
            }
            C::Revise(c) => {
                require_active(state)?;
                text("title", &c.title, 200, false)?;
                text("description", &c.description, 10_000, true)?;
                text("reason", &c.reason, 2000, false)?;
                key_results(&c.key_results)?;
                pb::GoalRevised {
                    sealed: None,
                    goal_id,
                    title: c.title.clone(),
                    description: c.description.clone(),
                    key_results: c.key_results.clone(),
                    reason: c.reason.clone(),
                    revised_by: actor,
                }
                .into()
            }
            C::Complete(c) => {
                require_active(state)?;
                text("note", &c.note, 5000, true)?;
                pb::GoalCompleted {
                    sealed: None,
                    goal_id,
                    note: c.note.clone(),
                    completed_by: actor,
                }
                .into()
            }
            C::Abandon(c) => {
                require_active(state)?;
                text("reason", &c.reason, 2000, false)?;
                pb::GoalAbandoned {
                    sealed: None,
                    goal_id,
                    reason: c.reason.clone(),
                    abandoned_by: actor,
                }
                .into()
            }
        };
        Ok(vec![event])
    }

    fn data_subject(&self) -> Option<&str> {
        Some(self.owner_id.as_str()).filter(|id| !id.is_empty())
    }

    fn evolve(mut state: Self, event: &Event) -> Self {
        match event {
            Event::GoalSet(e) => {
                state.owner_id.clone_from(&e.owner_id);
                state.status = GoalStatus::Active;
                state.key_results = e
                    .key_results
                    .iter()
                    .map(|k| k.key_result_id.clone())
                    .collect();
            }
            Event::GoalRevised(e) => {
                state.key_results = e
                    .key_results
                    .iter()
                    .map(|k| k.key_result_id.clone())
                    .collect();
            }
            Event::GoalCompleted(_) => state.status = GoalStatus::Completed,
            Event::GoalAbandoned(_) => state.status = GoalStatus::Abandoned,
            _ => {}
        }
        state
    }
}

fn require_active(state: &Goal) -> Result<(), DomainError> {
    if state.status == GoalStatus::Active {
        Ok(())
    } else {
        Err(DomainError::precondition(
            format!("the goal is {:?}", state.status).to_lowercase(),
        ))
    }
}

fn require_owner_or_manager(
    owner: &str,
    actor: &str,
    context: &Context<'_>,
) -> Result<(), DomainError> {
    if owner == actor || manages(context.world, actor, owner, context.now) {
        Ok(())
    } else {
        Err(DomainError::denied(
            "only the goal's owner or the owner's managers may change it",
        ))
    }
}

fn key_results(key_results: &[pb::KeyResult]) -> Result<(), DomainError> {
    let mut ids = BTreeSet::new();
    for key_result in key_results {
        Id::parse("key_results.key_result_id", &key_result.key_result_id)?;
        text(
            "key_results.description",
            &key_result.description,
            1000,
            false,
        )?;
        if !key_result.target.is_finite() {
            return Err(DomainError::invalid(
                "key_results.target",
                "must be a finite number",
            ));
        }
        if !ids.insert(&key_result.key_result_id) {
            return Err(DomainError::invalid(
                "key_results.key_result_id",
                "must be unique",
            ));
        }
    }
    Ok(())
}

fn linked_session(field: &str, value: &str, context: &Context<'_>) -> Result<(), DomainError> {
    if let Some(session) = Id::parse_optional(field, value)?
        && context.world.session(session.as_str()).is_none()
    {
        return Err(DomainError::not_found(format!("session {session}")));
    }
    Ok(())
}
