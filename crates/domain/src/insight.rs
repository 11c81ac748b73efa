//! Insights: what was learned about a person in a session. The subject owns it: only the
//! subject widens its scopes (consent); the subject or the recorder may narrow or retract it.

use std::collections::BTreeSet;

use crate::error::text;
use crate::sharing::parse_scopes;
use crate::{Aggregate, Context, DomainError, Event, Id, References, api, default_scopes, pb};

use pb::SharingScope as Scope;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Insight {
    pub subject_id: String,
    pub recorded_by: String,
    pub session_id: String,
    pub kind: pb::InsightKind,
    pub scopes: BTreeSet<Scope>,
    pub retracted: bool,
}

impl Insight {
    pub fn exists(&self) -> bool {
        !self.subject_id.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum InsightCommand {
    Record(api::RecordInsightRequest),
    Share(api::ShareInsightRequest),
    Narrow(api::NarrowInsightRequest),
    Retract(api::RetractInsightRequest),
}

const MAX_TAGS: usize = 32;

impl Aggregate for Insight {
    type Command = InsightCommand;
    const KIND: &'static str = "insight";

    fn starts(command: &Self::Command) -> bool {
        matches!(command, InsightCommand::Record(_))
    }

    fn id(command: &Self::Command) -> Result<Id, DomainError> {
        let id = match command {
            InsightCommand::Record(c) => &c.insight_id,
            InsightCommand::Share(c) => &c.insight_id,
            InsightCommand::Narrow(c) => &c.insight_id,
            InsightCommand::Retract(c) => &c.insight_id,
        };
        Id::parse("insight_id", id)
    }

    fn references(command: &Self::Command, _state: &Self) -> References {
        match command {
            InsightCommand::Record(c) => References {
                sessions: vec![c.session_id.clone()],
                ..References::default()
            },
            _ => References::default(),
        }
    }

    fn decide(
        command: &Self::Command,
        state: &Self,
        context: &Context<'_>,
    ) -> Result<Vec<Event>, DomainError> {
        let id = Self::id(command)?;
        let actor = context.actor.person()?;
        if let InsightCommand::Record(c) = command {
            return record(c, &id, state, actor, context);
        }
        if !state.exists() {
            return Err(DomainError::not_found(format!("insight {id}")));
        }
        if state.retracted {
            return Err(DomainError::precondition(format!(
                "insight {id} has been retracted"
            )));
        }
        let insight_id = id.to_string();
        let event: Event = match command {
            InsightCommand::Record(_) => unreachable!("handled above"),
            InsightCommand::Share(c) => {
                if state.subject_id != actor {
                    return Err(DomainError::denied(
                        "only the insight's subject may widen who can use it",
                    ));
                }
                let scopes = parse_scopes("scopes", &c.scopes)?;
                if state.kind == pb::InsightKind::Condition && !c.explicit_consent {
                    return Err(DomainError::precondition(
                        "a condition (health) insight is widened only with explicit_consent",
                    ));
                }
                let added: Vec<_> = scopes
                    .into_iter()
                    .filter(|s| !state.scopes.contains(s))
                    .collect();
                if added.is_empty() {
                    return Err(DomainError::precondition(
                        "the insight is already shared with these scopes",
                    ));
                }
                pb::InsightShared {
                    insight_id,
                    added: added.into_iter().map(Into::into).collect(),
                    explicit_consent: c.explicit_consent,
                    shared_by: actor.to_owned(),
                }
                .into()
            }
            InsightCommand::Narrow(c) => {
                require_subject_or_recorder(state, actor)?;
                let scopes = parse_scopes("scopes", &c.scopes)?;
                let removed: Vec<_> = scopes
                    .into_iter()
                    .filter(|s| state.scopes.contains(s))
                    .collect();
                if removed.is_empty() {
                    return Err(DomainError::precondition(
                        "the insight is not shared with these scopes",
                    ));
                }
                pb::InsightNarrowed {
                    insight_id,
                    removed: removed.into_iter().map(Into::into).collect(),
                    narrowed_by: actor.to_owned(),
                }
                .into()
            }
            InsightCommand::Retract(_) => {
                require_subject_or_recorder(state, actor)?;
                pb::InsightRetracted {
                    insight_id,
                    retracted_by: actor.to_owned(),
                }
                .into()
            }
        };
        Ok(vec![event])
    }

    fn data_subject(&self) -> Option<&str> {
        Some(self.subject_id.as_str()).filter(|id| !id.is_empty())
    }

    fn evolve(mut state: Self, event: &Event) -> Self {
        match event {
            Event::InsightRecorded(e) => {
                state.subject_id.clone_from(&e.subject_id);
                state.recorded_by.clone_from(&e.recorded_by);
                state.session_id.clone_from(&e.session_id);
                state.kind = e.kind();
                state.scopes = e.scopes().collect();
            }
            Event::InsightShared(e) => state.scopes.extend(e.added()),
            Event::InsightNarrowed(e) => {
                for scope in e.removed() {
                    state.scopes.remove(&scope);
                }
            }
            Event::InsightRetracted(_) => state.retracted = true,
            _ => {}
        }
        state
    }
}

fn record(
    c: &api::RecordInsightRequest,
    id: &Id,
    state: &Insight,
    actor: &str,
    context: &Context<'_>,
) -> Result<Vec<Event>, DomainError> {
    let subject = Id::parse("subject_id", &c.subject_id)?;
    let session_id = Id::parse("session_id", &c.session_id)?;
    let kind = c.kind();
    if kind == pb::InsightKind::Unspecified {
        return Err(DomainError::invalid("kind", "must be specified"));
    }
    text("text", &c.text, 10_000, false)?;
    if c.tags.len() > MAX_TAGS {
        return Err(DomainError::invalid("tags", "at most 32 tags"));
    }
    for tag in &c.tags {
        text("tags", tag, 64, false)?;
    }
    if state.exists() {
        return Err(DomainError::exists(format!("insight {id}")));
    }
    let session = context.world.session(session_id.as_str());
    let session = session.ok_or_else(|| DomainError::not_found(format!("session {session_id}")))?;
    if session.status == crate::SessionStatus::Cancelled {
        return Err(DomainError::precondition(format!(
            "session {session_id} was cancelled"
        )));
    }
    if !session.is_participant(actor) {
        return Err(DomainError::denied(
            "only a participant of the session records its insights",
        ));
    }
    if !session.is_participant(subject.as_str()) {
        return Err(DomainError::invalid(
            "subject_id",
            "must be a participant of the session",
        ));
    }
    let defaults = default_scopes(session.relationship, kind);
    let scopes = if c.scopes.is_empty() {
        defaults.clone()
    } else {
        parse_scopes("scopes", &c.scopes)?
    };
    let wider = scopes.iter().any(|scope| !defaults.contains(scope));
    if wider && kind == pb::InsightKind::Condition {
        return Err(DomainError::precondition(
            "a condition (health) insight starts with the participants only; its subject may widen it \
             later with explicit consent",
        ));
    }
    if wider && actor != subject.as_str() {
        return Err(DomainError::denied(
            "scopes wider than the session's default need the subject's consent: only the subject may record them",
        ));
    }
    Ok(vec![
        pb::InsightRecorded {
            sealed: None,
            insight_id: id.to_string(),
            subject_id: c.subject_id.clone(),
            session_id: c.session_id.clone(),
            recorded_by: actor.to_owned(),
            kind: c.kind,
            tags: c.tags.clone(),
            text: c.text.clone(),
            scopes: scopes.into_iter().map(Into::into).collect(),
            relationship: session.relationship.into(),
        }
        .into(),
    ])
}

fn require_subject_or_recorder(state: &Insight, actor: &str) -> Result<(), DomainError> {
    if state.subject_id == actor || state.recorded_by == actor {
        Ok(())
    } else {
        Err(DomainError::denied(
            "only the insight's subject or its recorder may narrow or retract it",
        ))
    }
}
