//! The org directory's aggregates: org units and people. Synced by HR systems (roles service,
//! hr, admin); every change of a person takes effect at its own time.

use crate::error::text;
use crate::{
    Aggregate, Context, DomainError, Event, Id, PersonRecord, References, Role, api, pb, time,
};

const DIRECTORY_ROLES: &[Role] = &[Role::Service, Role::Hr, Role::Admin];

/// An org unit: defined once, in a tree.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OrgUnit {
    pub name: String,
    pub parent_id: Option<String>,
}

impl OrgUnit {
    pub fn is_defined(&self) -> bool {
        !self.name.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum OrgUnitCommand {
    Define(api::DefineOrgUnitRequest),
}

impl Aggregate for OrgUnit {
    type Command = OrgUnitCommand;
    const KIND: &'static str = "org-unit";

    fn starts(_command: &Self::Command) -> bool {
        true
    }

    fn id(command: &Self::Command) -> Result<Id, DomainError> {
        let OrgUnitCommand::Define(c) = command;
        Id::parse("org_unit_id", &c.org_unit_id)
    }

    fn references(command: &Self::Command, _state: &Self) -> References {
        let OrgUnitCommand::Define(c) = command;
        References {
            org_units: vec![c.parent_id.clone()],
            ..References::default()
        }
    }

    fn decide(
        command: &Self::Command,
        state: &Self,
        context: &Context<'_>,
    ) -> Result<Vec<Event>, DomainError> {
        let OrgUnitCommand::Define(c) = command;
        context
            .actor
            .require_any(DIRECTORY_ROLES, "defining an org unit")?;
        let id = Self::id(command)?;
        text("name", &c.name, 200, false)?;
        let parent = Id::parse_optional("parent_id", &c.parent_id)?;
        if state.is_defined() {
            return Err(DomainError::exists(format!("org unit {id}")));
        }
        if let Some(parent) = &parent {
            if *parent == id {
                return Err(DomainError::invalid(
                    "parent_id",
                    "must not be the unit itself",
                ));
            }
            if !context.world.org_unit_exists(parent.as_str()) {
                return Err(DomainError::not_found(format!("parent org unit {parent}")));
            }
        }
        Ok(vec![
            pb::OrgUnitDefined {
                org_unit_id: c.org_unit_id.clone(),
                name: c.name.clone(),
                parent_id: c.parent_id.clone(),
            }
            .into(),
        ])
    }

    fn evolve(state: Self, event: &Event) -> Self {
        match event {
            Event::OrgUnitDefined(e) => Self {
                name: e.name.clone(),
                parent_id: Some(e.parent_id.clone()).filter(|p| !p.is_empty()),
            },
            _ => state,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum PersonCommand {
    Register(api::RegisterPersonRequest),
    AssignManager(api::AssignManagerRequest),
    Move(api::MovePersonRequest),
    Depart(api::RecordDepartureRequest),
}

impl Aggregate for PersonRecord {
    type Command = PersonCommand;
    const KIND: &'static str = "person";

    fn starts(command: &Self::Command) -> bool {
        matches!(command, PersonCommand::Register(_))
    }

    fn id(command: &Self::Command) -> Result<Id, DomainError> {
        let id = match command {
            PersonCommand::Register(c) => &c.person_id,
            PersonCommand::AssignManager(c) => &c.person_id,
            PersonCommand::Move(c) => &c.person_id,
            PersonCommand::Depart(c) => &c.person_id,
        };
        Id::parse("person_id", id)
    }

    fn references(command: &Self::Command, _state: &Self) -> References {
        match command {
            PersonCommand::Register(c) => References {
                org_units: vec![c.org_unit_id.clone()],
                ..References::default()
            },
            PersonCommand::AssignManager(c) => References {
                persons: vec![c.manager_id.clone(), c.person_id.clone()],
                ..References::default()
            },
            PersonCommand::Move(c) => References {
                org_units: vec![c.org_unit_id.clone()],
                ..References::default()
            },
            PersonCommand::Depart(_) => References::default(),
        }
    }

    fn decide(
        command: &Self::Command,
        state: &Self,
        context: &Context<'_>,
    ) -> Result<Vec<Event>, DomainError> {
        context
            .actor
            .require_any(DIRECTORY_ROLES, "changing the org directory")?;
        let id = Self::id(command)?;
        let effective =
            |t: &Option<prost_types::Timestamp>| time::or_default(t.as_ref(), context.now);
        if let PersonCommand::Register(c) = command {
            text("display_name", &c.display_name, 200, false)?;
            text("grade", &c.grade, 32, true)?;
            if c.cohort_year != 0 && !(1900..=2200).contains(&c.cohort_year) {
                return Err(DomainError::invalid(
                    "cohort_year",
                    "must be a year between 1900 and 2200, or 0",
                ));
            }
            let unit = Id::parse("org_unit_id", &c.org_unit_id)?;
            if state.is_registered() {
                return Err(DomainError::exists(format!("person {id}")));
            }
            if !context.world.org_unit_exists(unit.as_str()) {
                return Err(DomainError::not_found(format!("org unit {unit}")));
            }
            let effective_at = Some(time::to_timestamp(effective(&c.effective_at)));
            return Ok(vec![
                pb::PersonRegistered {
                    sealed: None,
                    person_id: c.person_id.clone(),
                    display_name: c.display_name.clone(),
                    org_unit_id: c.org_unit_id.clone(),
                    grade: c.grade.clone(),
                    cohort_year: c.cohort_year,
                    effective_at,
                }
                .into(),
            ]);
        }

        let Some(registered_at) = state.registered_at() else {
            return Err(DomainError::not_found(format!("person {id}")));
        };
        let at = match command {
            PersonCommand::AssignManager(c) => effective(&c.effective_at),
            PersonCommand::Move(c) => effective(&c.effective_at),
            PersonCommand::Depart(c) => effective(&c.effective_at),
            PersonCommand::Register(_) => unreachable!("handled above"),
        };
        if at < registered_at {
            return Err(DomainError::invalid(
                "effective_at",
                "is before the person's registration",
            ));
        }
        if state.as_of(i64::MAX).is_some_and(|s| s.departed) {
            return Err(DomainError::precondition(format!(
                "person {id} has left the organisation"
            )));
        }
        let effective_at = Some(time::to_timestamp(at));
        let event: Event = match command {
            PersonCommand::AssignManager(c) => {
                if let Some(manager) = Id::parse_optional("manager_id", &c.manager_id)? {
                    if manager == id {
                        return Err(DomainError::invalid(
                            "manager_id",
                            "a person cannot manage themself",
                        ));
                    }
                    let record = context.world.person(manager.as_str());
                    let record = record
                        .ok_or_else(|| DomainError::not_found(format!("manager {manager}")))?;
                    if record.as_of(at).is_none_or(|s| s.departed) {
                        return Err(DomainError::precondition(format!(
                            "manager {manager} is not in the organisation at that time"
                        )));
                    }
                    if crate::directory::manages(context.world, id.as_str(), manager.as_str(), at) {
                        return Err(DomainError::precondition(format!(
                            "{manager} reports to {id}: assigning would make a cycle"
                        )));
                    }
                }
                pb::ManagerAssigned {
                    person_id: c.person_id.clone(),
                    manager_id: c.manager_id.clone(),
                    effective_at,
                }
                .into()
            }
            PersonCommand::Move(c) => {
                let unit = Id::parse("org_unit_id", &c.org_unit_id)?;
                if !context.world.org_unit_exists(unit.as_str()) {
                    return Err(DomainError::not_found(format!("org unit {unit}")));
                }
                pb::PersonMoved {
                    person_id: c.person_id.clone(),
                    org_unit_id: c.org_unit_id.clone(),
                    effective_at,
                }
                .into()
            }
            PersonCommand::Depart(c) => pb::PersonDeparted {
                person_id: c.person_id.clone(),
                effective_at,
            }
            .into(),
            PersonCommand::Register(_) => unreachable!("handled above"),
        };
        Ok(vec![event])
    }

    fn data_subject(&self) -> Option<&str> {
        Some(self.id.as_str()).filter(|id| !id.is_empty())
    }

    fn evolve(state: Self, event: &Event) -> Self {
        state.record(event)
    }
}
