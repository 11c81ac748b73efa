//! Given/when/then for deciders, and a small org to test against.

#![allow(dead_code, unreachable_pub)]

use ledger_domain::{
    Actor, Aggregate, Context, DomainError, Event, Micros, OrgUnit, PersonRecord, Policy, Role,
    Session, World, pb, to_timestamp,
};

/// 2026-10-01T00:00:00Z, the time the test org was set up.
pub const T0: Micros = 1_790_812_800_000_000;
pub const DAY: Micros = 86_400_000_000;

/// Given `history` of the aggregate, when `command` is decided by `actor` at `now` in `world`.
pub struct Scenario<A: Aggregate> {
    history: Vec<Event>,
    world: World,
    actor: Actor,
    now: Micros,
    policy: Policy,
    _aggregate: std::marker::PhantomData<A>,
}

pub fn given<A: Aggregate>(history: impl IntoIterator<Item = Event>) -> Scenario<A> {
    Scenario {
        history: history.into_iter().collect(),
        world: org(),
        actor: person("mia"),
        now: T0 + 30 * DAY,
        policy: Policy::default(),
        _aggregate: std::marker::PhantomData,
    }
}

impl<A: Aggregate> Scenario<A> {
    pub fn by(mut self, actor: Actor) -> Self {
        self.actor = actor;
        self
    }

    pub fn in_world(mut self, world: World) -> Self {
        self.world = world;
        self
    }

    pub fn with_policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    pub fn when(self, command: A::Command) -> Result<Vec<Event>, DomainError> {
        let state = A::fold(&self.history);
        let context = Context {
            actor: &self.actor,
            now: self.now,
            world: &self.world,
            policy: &self.policy,
        };
        A::decide(&command, &state, &context)
    }
}

pub fn person(id: &str) -> Actor {
    Actor {
        subject: id.into(),
        roles: vec![Role::Member],
    }
}

pub fn system(role: Role) -> Actor {
    Actor {
        subject: "hr-sync".into(),
        roles: vec![role],
    }
}

pub fn expect_events(result: Result<Vec<Event>, DomainError>, expected: Vec<Event>) {
    assert_eq!(result.expect("the command was refused"), expected);
}

pub fn expect_error(result: Result<Vec<Event>, DomainError>, check: impl Fn(&DomainError) -> bool) {
    match result {
        Err(error) if check(&error) => {}
        other => panic!("unexpected outcome: {other:?}"),
    }
}

pub fn invalid(field: &'static str) -> impl Fn(&DomainError) -> bool {
    move |e| matches!(e, DomainError::InvalidArgument { field: f, .. } if f == field)
}

pub fn denied(e: &DomainError) -> bool {
    matches!(e, DomainError::PermissionDenied(_))
}

pub fn precondition(e: &DomainError) -> bool {
    matches!(e, DomainError::FailedPrecondition(_))
}

pub fn not_found(e: &DomainError) -> bool {
    matches!(e, DomainError::NotFound(_))
}

pub fn exists(e: &DomainError) -> bool {
    matches!(e, DomainError::AlreadyExists(_))
}

pub fn registered(id: &str, unit: &str, grade: &str, cohort: i32, at: Micros) -> Event {
    pb::PersonRegistered {
        sealed: None,
        person_id: id.into(),
        display_name: format!("{id} name"),
        org_unit_id: unit.into(),
        grade: grade.into(),
        cohort_year: cohort,
        effective_at: Some(to_timestamp(at)),
    }
    .into()
}

pub fn manager(id: &str, manager: &str, at: Micros) -> Event {
    pb::ManagerAssigned {
        person_id: id.into(),
        manager_id: manager.into(),
        effective_at: Some(to_timestamp(at)),
    }
    .into()
}

pub fn add_person(world: &mut World, events: &[Event]) {
    let record = PersonRecord::fold(events);
    world.persons.insert(record.id.clone(), record);
}

/// Two departments. Sales: kai (head) ← mia's manager lee ← mia, and mia's peer ren (same
/// grade, other team). Engineering: ada (head, grade G5), mentor in another line.
/// `ada` became mia's manager on T0 + 60 days (a transfer in the future).
pub fn org() -> World {
    let mut world = World::default();
    for (unit, parent) in [("sales", ""), ("sales-east", "sales"), ("eng", "")] {
        let name = format!("{unit} unit");
        world.org_units.insert(
            unit.into(),
            OrgUnit {
                name,
                parent_id: Some(parent.into()).filter(|p: &String| !p.is_empty()),
            },
        );
    }
    add_person(&mut world, &[registered("kai", "sales", "G6", 2005, T0)]);
    add_person(
        &mut world,
        &[
            registered("lee", "sales-east", "G4", 2014, T0),
            manager("lee", "kai", T0),
        ],
    );
    add_person(
        &mut world,
        &[
            registered("mia", "sales-east", "G2", 2022, T0),
            manager("mia", "lee", T0),
            manager("mia", "ada", T0 + 60 * DAY),
        ],
    );
    add_person(
        &mut world,
        &[
            registered("ren", "sales", "G2", 2020, T0),
            manager("ren", "kai", T0),
        ],
    );
    add_person(&mut world, &[registered("ada", "eng", "G5", 2010, T0)]);
    add_person(
        &mut world,
        &[
            registered("noa", "eng", "G3", 2022, T0),
            manager("noa", "ada", T0),
        ],
    );
    world
}

/// A scheduled session between `member` and `partner` with `relationship`, in the world.
pub fn with_session(
    mut world: World,
    id: &str,
    member: &str,
    partner: &str,
    relationship: pb::Relationship,
) -> World {
    let session = Session::fold(&[scheduled(id, member, partner, relationship, false)]);
    world.sessions.insert(id.into(), session);
    world
}

pub fn scheduled(
    id: &str,
    member: &str,
    partner: &str,
    relationship: pb::Relationship,
    confidential: bool,
) -> Event {
    pb::SessionScheduled {
        sealed: None,
        session_id: id.into(),
        member_id: member.into(),
        partner_id: partner.into(),
        relationship: relationship.into(),
        purposes: vec![pb::Purpose::Growth.into()],
        topic: "next steps".into(),
        hoped_response: pb::HopedResponse::ThinkTogether.into(),
        scheduled_at: Some(to_timestamp(T0 + 40 * DAY)),
        confidential,
        scheduled_by: member.into(),
    }
    .into()
}
