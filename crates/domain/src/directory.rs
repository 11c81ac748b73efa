//! The org directory as of any moment, and the relationship between two people it implies.

use crate::{DomainError, Micros, World, pb};

/// One person's directory history, folded from their stream. Every change has an effective
/// time, so [`PersonRecord::as_of`] answers for any moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PersonRecord {
    pub id: String,
    pub display_name: String,
    pub grade: String,
    /// 0 when unknown.
    pub cohort_year: i32,
    /// Changes in effective-time order (ties in the order recorded).
    changes: Vec<(Micros, Change)>,
}

#[derive(Debug, Clone, PartialEq)]
enum Change {
    Registered { org_unit_id: String },
    Manager(Option<String>),
    Moved(String),
    Departed,
}

/// Where a person stood at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersonState {
    pub org_unit_id: String,
    pub manager_id: Option<String>,
    pub departed: bool,
}

impl PersonRecord {
    pub fn is_registered(&self) -> bool {
        !self.changes.is_empty()
    }

    /// When the person was registered as effective.
    pub fn registered_at(&self) -> Option<Micros> {
        self.changes
            .iter()
            .find(|(_, c)| matches!(c, Change::Registered { .. }))
            .map(|(t, _)| *t)
    }

    /// The person's place as of `at`; `None` before their registration took effect.
    pub fn as_of(&self, at: Micros) -> Option<PersonState> {
        let mut state = None;
        for (_, change) in self.changes.iter().take_while(|(t, _)| *t <= at) {
            match change {
                Change::Registered { org_unit_id } => {
                    state = Some(PersonState {
                        org_unit_id: org_unit_id.clone(),
                        manager_id: None,
                        departed: false,
                    });
                }
                Change::Manager(manager) => {
                    if let Some(state) = &mut state {
                        state.manager_id.clone_from(manager);
                    }
                }
                Change::Moved(unit) => {
                    if let Some(state) = &mut state {
                        state.org_unit_id.clone_from(unit);
                    }
                }
                Change::Departed => {
                    if let Some(state) = &mut state {
                        state.departed = true;
                    }
                }
            }
        }
        state
    }

    /// Every org unit the person was ever placed in.
    pub fn org_units(&self) -> impl Iterator<Item = &str> {
        self.changes.iter().filter_map(|(_, change)| match change {
            Change::Registered { org_unit_id } | Change::Moved(org_unit_id) => {
                Some(org_unit_id.as_str())
            }
            _ => None,
        })
    }

    /// Everyone who was ever this person's manager, for loading their records too.
    pub fn managers(&self) -> impl Iterator<Item = &str> {
        self.changes.iter().filter_map(|(_, change)| match change {
            Change::Manager(Some(manager)) => Some(manager.as_str()),
            _ => None,
        })
    }

    /// Folds one of the person's events into the record.
    pub(crate) fn record(mut self, event: &crate::Event) -> Self {
        use crate::Event as E;
        let at = |t: &Option<prost_types::Timestamp>| t.as_ref().map_or(0, crate::from_timestamp);
        let change = match event {
            E::PersonRegistered(e) => {
                self.id.clone_from(&e.person_id);
                self.display_name.clone_from(&e.display_name);
                self.grade.clone_from(&e.grade);
                self.cohort_year = e.cohort_year;
                (
                    at(&e.effective_at),
                    Change::Registered {
                        org_unit_id: e.org_unit_id.clone(),
                    },
                )
            }
            E::ManagerAssigned(e) => {
                let manager = Some(e.manager_id.clone()).filter(|m| !m.is_empty());
                (at(&e.effective_at), Change::Manager(manager))
            }
            E::PersonMoved(e) => (at(&e.effective_at), Change::Moved(e.org_unit_id.clone())),
            E::PersonDeparted(e) => (at(&e.effective_at), Change::Departed),
            _ => return self,
        };
        // Keep effective-time order; a change recorded later at the same time applies later.
        let index = self.changes.partition_point(|(t, _)| *t <= change.0);
        self.changes.insert(index, change);
        self
    }
}

/// The relationship of a session's partner to its member, and whether the partner has
/// evaluation power over the member (is in their manager chain).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Classification {
    pub relationship: pb::Relationship,
    pub partner_evaluates_member: bool,
}

/// The longest manager chain walked; deeper (or cyclic) chains are cut here.
const MAX_CHAIN: usize = 32;

/// `person`'s managers as of `at`, nearest first.
fn chain(world: &World, person: &str, at: Micros) -> Vec<String> {
    let mut chain: Vec<String> = Vec::new();
    let mut current = person.to_owned();
    while chain.len() < MAX_CHAIN {
        let manager = world
            .person(&current)
            .and_then(|p| p.as_of(at))
            .and_then(|s| s.manager_id);
        match manager {
            Some(manager) if manager != person && !chain.contains(&manager) => {
                chain.push(manager.clone());
                current = manager;
            }
            _ => break,
        }
    }
    chain
}

/// Whether `candidate` is in `person`'s manager chain as of `at`.
pub fn manages(world: &World, candidate: &str, person: &str, at: Micros) -> bool {
    chain(world, person, at)
        .iter()
        .any(|manager| manager == candidate)
}

/// Classifies a session between `member` and `partner` from the directory as of `at`: vertical
/// (direct or skip) when one is in the other's manager chain, otherwise horizontal for the same
/// grade or cohort, and diagonal for another line and level.
pub fn classify(
    world: &World,
    member: &str,
    partner: &str,
    at: Micros,
) -> Result<Classification, DomainError> {
    for (field, id) in [("member_id", member), ("partner_id", partner)] {
        let record = world
            .person(id)
            .ok_or_else(|| DomainError::not_found(format!("person {id}")))?;
        match record.as_of(at) {
            None => {
                return Err(DomainError::precondition(format!(
                    "{field}: person {id} is not in the directory at the session's time"
                )));
            }
            Some(state) if state.departed => {
                return Err(DomainError::precondition(format!(
                    "{field}: person {id} has left the organisation by the session's time"
                )));
            }
            Some(_) => {}
        }
    }
    let (member_chain, partner_chain) = (chain(world, member, at), chain(world, partner, at));
    let (relationship, partner_evaluates_member) =
        if member_chain.first().is_some_and(|m| m == partner) {
            (pb::Relationship::VerticalDirect, true)
        } else if member_chain.iter().any(|m| m == partner) {
            (pb::Relationship::VerticalSkip, true)
        } else if partner_chain.first().is_some_and(|m| m == member) {
            (pb::Relationship::VerticalDirect, false)
        } else if partner_chain.iter().any(|m| m == member) {
            (pb::Relationship::VerticalSkip, false)
        } else {
            let (m, p) = (&world.persons[member], &world.persons[partner]);
            let same_grade = !m.grade.is_empty() && m.grade == p.grade;
            let same_cohort = m.cohort_year != 0 && m.cohort_year == p.cohort_year;
            let relationship = if same_grade || same_cohort {
                pb::Relationship::Horizontal
            } else {
                pb::Relationship::Diagonal
            };
            (relationship, false)
        };
    Ok(Classification {
        relationship,
        partner_evaluates_member,
    })
}
