//! The decider shape every aggregate has, and what a decision may consult.

use std::collections::HashMap;

use crate::{DomainError, Event, Id, Micros, PersonRecord, Session};

/// What an actor may be, from its token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// A person acting for themself (participant, subject, goal owner, manager).
    Member,
    Hr,
    Auditor,
    Admin,
    /// An internal system, such as the HR system syncing the org chart.
    Service,
}

impl Role {
    /// The role's name in tokens.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Member => "member",
            Self::Hr => "hr",
            Self::Auditor => "auditor",
            Self::Admin => "admin",
            Self::Service => "service",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "member" => Self::Member,
            "hr" => Self::Hr,
            "auditor" => Self::Auditor,
            "admin" => Self::Admin,
            "service" => Self::Service,
            _ => return None,
        })
    }
}

/// Who issues a command: the token's subject (a person id for members) and roles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub subject: String,
    pub roles: Vec<Role>,
}

impl Actor {
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// Requires one of `roles`.
    pub(crate) fn require_any(&self, roles: &[Role], what: &str) -> Result<(), DomainError> {
        if roles.iter().any(|role| self.has(*role)) {
            Ok(())
        } else {
            Err(DomainError::denied(format!(
                "{what} needs one of the roles {roles:?}"
            )))
        }
    }

    /// The person this actor acts as, for commands a person issues for themself.
    pub(crate) fn person(&self) -> Result<&str, DomainError> {
        if self.has(Role::Member) {
            Ok(&self.subject)
        } else {
            Err(DomainError::denied(
                "this command is issued by a person (role member)",
            ))
        }
    }
}

/// Settings that rules depend on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Survey results with fewer respondents are refused; never below [`Policy::MIN_ANONYMITY`].
    pub anonymity_threshold: u32,
}

impl Policy {
    pub const MIN_ANONYMITY: u32 = 3;
    pub const DEFAULT_ANONYMITY: u32 = 5;
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            anonymity_threshold: Self::DEFAULT_ANONYMITY,
        }
    }
}

/// The other aggregates a command's decision may consult, loaded by the caller beforehand:
/// whatever [`Aggregate::references`] named, plus the managers of every person loaded (so
/// that manager chains can be walked as of any time).
#[derive(Debug, Clone, Default)]
pub struct World {
    pub persons: HashMap<String, PersonRecord>,
    pub sessions: HashMap<String, Session>,
    /// Defined org units.
    pub org_units: HashMap<String, crate::OrgUnit>,
}

impl World {
    pub fn person(&self, id: &str) -> Option<&PersonRecord> {
        self.persons.get(id).filter(|person| person.is_registered())
    }

    pub fn session(&self, id: &str) -> Option<&Session> {
        self.sessions.get(id).filter(|session| session.exists())
    }

    pub fn org_unit_exists(&self, id: &str) -> bool {
        self.org_units.get(id).is_some_and(|unit| unit.is_defined())
    }
}

/// Which other aggregates a command refers to, so the caller can load them into the [`World`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct References {
    pub persons: Vec<String>,
    pub sessions: Vec<String>,
    pub org_units: Vec<String>,
}

/// What a decision sees besides the command and the aggregate's own state.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    pub actor: &'a Actor,
    /// The time the command is handled.
    pub now: Micros,
    pub world: &'a World,
    pub policy: &'a Policy,
}

/// An aggregate as a decider: its state is folded from its own stream's events.
pub trait Aggregate: Default + Clone + std::fmt::Debug + Send + Sync + 'static {
    type Command: std::fmt::Debug + Send + Sync;

    /// The stream kind, as in `tenant/<kind>-<id>`.
    const KIND: &'static str;

    /// The id of the aggregate the command addresses, checked.
    fn id(command: &Self::Command) -> Result<Id, DomainError>;

    /// Whether the command starts its aggregate: carried out only on a stream that does not
    /// exist yet, and every other command only on one that does. The command handler decides a
    /// start on no stream without reading one; the append, expecting no stream, confirms it.
    fn starts(command: &Self::Command) -> bool;

    /// Other aggregates the decision consults.
    fn references(_command: &Self::Command, _state: &Self) -> References {
        References::default()
    }

    /// The events the command causes, or why it is refused.
    fn decide(
        command: &Self::Command,
        state: &Self,
        context: &Context<'_>,
    ) -> Result<Vec<Event>, DomainError>;

    /// The state after `event`. No logic: the event has been decided already.
    fn evolve(state: Self, event: &Event) -> Self;

    /// The person whose data this aggregate's personal text is, once known: their data key seals
    /// it, and erasing them makes it unreadable. `None` for aggregates without personal text.
    fn data_subject(&self) -> Option<&str> {
        None
    }

    /// Folds a whole history.
    fn fold<'e>(events: impl IntoIterator<Item = &'e Event>) -> Self {
        events.into_iter().fold(Self::default(), Self::evolve)
    }
}
