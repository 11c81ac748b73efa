//! The dialogue ledger's domain, pure: no I/O, no async, no transport, no storage.
//!
//! Each aggregate (org unit, person, session, insight, goal, survey result) is a decider:
//! [`Aggregate::decide`] turns a command and the current state into events or a
//! [`DomainError`]; [`Aggregate::evolve`] folds an event into the state and holds no logic.
//! What a command needs from other aggregates (the org directory as of a time, a session's
//! participants) comes in through [`World`], which the caller loads first, so every rule is
//! testable without I/O. Event payloads are the protobuf messages of `proto/…/events/v1`.

mod aggregate;
mod directory;
mod error;
mod event;
mod goal;
mod id;
mod insight;
mod org;
mod session;
mod sharing;
mod survey;
mod time;

pub use aggregate::{Actor, Aggregate, Context, Policy, References, Role, World};
pub use directory::{Classification, PersonRecord, PersonState, classify, manages};
pub use error::DomainError;
pub use event::{Event, PersonalText};
pub use goal::{Goal, GoalCommand};
pub use id::{Id, TenantId};
pub use insight::{Insight, InsightCommand};
pub use org::{OrgUnit, OrgUnitCommand, PersonCommand};
pub use session::{Session, SessionCommand, SessionStatus};
pub use sharing::default_scopes;
pub use survey::{SurveyCommand, SurveyResult, period as check_period};
pub use time::{Micros, from_timestamp, to_timestamp};

/// The protobuf messages the domain speaks: stored events and API commands.
pub use ledger_proto::{events as pb, v1 as api};
