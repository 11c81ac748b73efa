//! Dialogue health and engagement context (組織の対話の健全性), per org unit and period: how many
//! of the unit's people have 1on1s and how often, who carries them, what they are for and how
//! that drifts, what came of them; and beside the unit's survey scores, the themes its people
//! shared with hr or department managers, each shown only when enough people stand behind it.
//!
//! A unit includes its sub-units. A session counts for the unit its member belonged to when it
//! was held; the population is who belonged at the period's end (or now, in a running period).
//! Documents are per item and keyed by month (`{tenant}/{person}/{YYYY-MM}/{id}`), so a query
//! reads only the months of its period for the people ever placed in the unit. No text is kept.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use ledger_domain::{Aggregate, Event, Micros, PersonRecord, World, manages, pb};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::documents::{DocumentStore, Documents, Error, decode};
use crate::evaluation::{self, Counted, FollowThrough, purpose_name};
use crate::period::{bounds, month_keys, month_of, months, previous};
use crate::runner::{Applied, Projection};
use crate::sharing::{Sharing, serve};
use crate::staffing::normalise;

/// Served: org units, `{tenant}/{unit}`.
pub const UNITS: &str = "health-unit";
/// Served: each person's directory events, `{tenant}/{person}`.
pub const PEOPLE: &str = "health-person";
/// Served: held sessions, `{tenant}/{member}/{month held}/{session}`.
pub const SESSIONS: &str = "health-session";
/// Served: insight tags shared with hr or department managers, `{tenant}/{subject}/{month}/{insight}`.
pub const THEMES: &str = "health-theme";
/// Served: survey results, `{tenant}/{unit}/{period}/{metric}`.
pub const SURVEYS: &str = "health-survey";
/// Internal: every session as it stands until held (then where it is served),
/// `{tenant}/{session}`, and each insight's source.
const SESSION_STATES: &str = "health-session-state";
const THEME_SOURCES: &str = "health-theme-source";

/// How long before and after a session goal progress is counted.
const PROGRESS_WINDOW: Micros = 30 * 86_400_000_000;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UnitDoc {
    pub name: String,
    pub parent: Option<String>,
}

/// A person's directory events as stored in the log, folded into a [`PersonRecord`] on reading,
/// so the directory as of a moment follows the domain's one rule.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PersonDoc {
    pub events: Vec<(String, Vec<u8>)>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SessionDoc {
    pub member: String,
    pub partner: String,
    pub relationship: String,
    pub purposes: Vec<String>,
    pub held_at: Option<Micros>,
    pub held_event: Option<Uuid>,
    /// Action items by id: open, completed or dropped.
    pub items: BTreeMap<String, String>,
    pub item_events: Vec<Uuid>,
    /// The member's reflection: how resolved they feel, 1 to 5.
    pub resolve: Option<u32>,
    pub reflection_event: Option<Uuid>,
}

/// A session in [`SESSION_STATES`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum SessionState {
    Scheduled(SessionDoc),
    /// Held: the session lives on in [`SESSIONS`] under this key, so that each later event
    /// rewrites one document, not two.
    Held(String),
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ThemeDoc {
    pub recorded_at: Micros,
    /// Normalised (NFKC, lower case).
    pub tags: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct ThemeSource {
    subject: String,
    sharing: Sharing,
    theme: ThemeDoc,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SurveyDoc {
    pub score: f64,
    pub respondents: u32,
    pub event_id: Uuid,
}

/// The org directory as the projection has folded it.
#[derive(Debug, Clone, Default)]
pub struct Directory {
    units: HashMap<String, UnitDoc>,
    world: World,
}

impl Directory {
    pub fn load(store: &dyn DocumentStore, tenant: &str) -> Result<Self, Error> {
        let prefix = format!("{tenant}/");
        let mut directory = Self::default();
        for (key, body) in store.scan(UNITS, &prefix)? {
            let unit = decode(&body)?;
            directory.units.insert(key[prefix.len()..].to_owned(), unit);
        }
        for (key, body) in store.scan(PEOPLE, &prefix)? {
            let person: PersonDoc = decode(&body)?;
            let events: Vec<Event> = person
                .events
                .iter()
                .filter_map(|(kind, payload)| Event::decode(kind, payload).ok().flatten())
                .collect();
            directory
                .world
                .persons
                .insert(key[prefix.len()..].to_owned(), PersonRecord::fold(&events));
        }
        Ok(directory)
    }

    pub fn has_unit(&self, unit: &str) -> bool {
        self.units.contains_key(unit)
    }

    /// `unit` and every unit below it.
    pub fn subtree(&self, unit: &str) -> HashSet<String> {
        let mut children: HashMap<&str, Vec<&str>> = HashMap::new();
        for (id, doc) in &self.units {
            if let Some(parent) = &doc.parent {
                children.entry(parent).or_default().push(id);
            }
        }
        let mut found = HashSet::from([unit.to_owned()]);
        let mut open = vec![unit];
        while let Some(next) = open.pop() {
            for child in children.get(next).into_iter().flatten() {
                if found.insert((*child).to_owned()) {
                    open.push(child);
                }
            }
        }
        found
    }

    /// Whether `person` belonged to one of `units` (and had not left) at `at`.
    fn placed(&self, person: &str, units: &HashSet<String>, at: Micros) -> bool {
        self.world
            .person(person)
            .and_then(|p| p.as_of(at))
            .is_some_and(|s| !s.departed && units.contains(&s.org_unit_id))
    }

    /// Everyone ever placed in one of `units`.
    fn ever_placed(&self, units: &HashSet<String>) -> BTreeSet<&str> {
        self.world
            .persons
            .iter()
            .filter(|(_, p)| p.org_units().any(|u| units.contains(u)))
            .map(|(id, _)| id.as_str())
            .collect()
    }

    /// Who belonged to `units` at `at`.
    fn population(&self, units: &HashSet<String>, at: Micros) -> BTreeSet<&str> {
        self.ever_placed(units)
            .into_iter()
            .filter(|person| self.placed(person, units, at))
            .collect()
    }

    fn manager_of(&self, person: &str, at: Micros) -> Option<String> {
        self.world.person(person)?.as_of(at)?.manager_id
    }

    /// Whether `candidate` is in the manager chain of everyone else in `unit` (and its sub-units)
    /// at `at`: a department manager of the unit. False for a unit without anyone else.
    pub fn manages_unit(&self, candidate: &str, unit: &str, at: Micros) -> bool {
        let population = self.population(&self.subtree(unit), at);
        let mut others = population.iter().filter(|p| **p != candidate).peekable();
        others.peek().is_some() && others.all(|person| manages(&self.world, candidate, person, at))
    }
}

/// What a health or engagement query is about.
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    pub tenant: &'a str,
    pub unit: &'a str,
    pub period: &'a str,
    /// Now, or where the read model stands: a running period's population is taken then.
    pub now: Micros,
}

/// Who has 1on1s in a unit and period.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Coverage {
    /// People in the unit at the period's end (or now).
    pub population: u32,
    /// Of them, how many held at least one session in the period.
    pub covered: u32,
    pub sessions: u32,
}

/// How a purpose's share of all purposes named moved since the previous period.
#[derive(Debug, Clone, PartialEq)]
pub struct PurposeShare {
    pub purpose: String,
    pub share: f64,
    pub previous_share: f64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ManagerLoad {
    /// People in the unit who report to them directly at the period's end (or now).
    pub direct_reports: u32,
    /// Vertical sessions held with members of the unit in the period.
    pub sessions: u32,
    pub members_met: u32,
    pub overloaded: bool,
    pub event_ids: Vec<Uuid>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reflections {
    pub count: u32,
    /// How many reflections gave each resolve, 1 to 5.
    pub by_resolve: [u32; 5],
    pub event_ids: Vec<Uuid>,
}

/// Goal progress check-ins of a session's member in the 30 days before and after it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GoalProgress {
    pub before: u32,
    pub after: u32,
    /// Sessions followed by at least one check-in within 30 days.
    pub sessions_followed: u32,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Health {
    pub coverage: Coverage,
    /// Held sessions per person in the unit and month.
    pub sessions_per_person_month: f64,
    /// The median number of days between a member's consecutive sessions in the period.
    pub median_days_between: Option<f64>,
    pub relationships: BTreeMap<String, Counted>,
    pub purposes: BTreeMap<String, Counted>,
    pub purpose_drift: Vec<PurposeShare>,
    /// Half the summed absolute change of the purpose shares: 0 unchanged, 1 all different.
    pub total_drift: f64,
    pub managers: BTreeMap<String, ManagerLoad>,
    pub follow_through: FollowThrough,
    pub reflections: Reflections,
    pub goal_progress: GoalProgress,
}

/// An insight theme: a normalised tag and how many people and insights stand behind it.
#[derive(Debug, Clone, PartialEq)]
pub struct Theme {
    pub tag: String,
    pub people: u32,
    pub insights: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SurveyScore {
    pub metric: String,
    pub score: f64,
    pub respondents: u32,
    pub previous_score: Option<f64>,
    pub event_ids: Vec<Uuid>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Engagement {
    pub surveys: Vec<SurveyScore>,
    pub coverage: Coverage,
    pub purposes: BTreeMap<String, Counted>,
    /// Themes with at least the anonymity threshold of distinct people, most people first.
    pub themes: Vec<Theme>,
    /// How many themes were withheld for standing on too few people.
    pub themes_withheld: u32,
}

/// Held sessions counted for a unit in a period.
fn sessions_in(
    store: &dyn DocumentStore,
    directory: &Directory,
    tenant: &str,
    units: &HashSet<String>,
    (start, end): (Micros, Micros),
) -> Result<Vec<(SessionDoc, Micros, Uuid)>, Error> {
    let mut found = Vec::new();
    for person in directory.ever_placed(units) {
        let (from, until) = month_keys(&format!("{tenant}/{person}/"), (start, end));
        for (_, body) in store.scan_range(SESSIONS, &from, &until)? {
            let session: SessionDoc = decode(&body)?;
            let (Some(at), Some(event)) = (session.held_at, session.held_event) else {
                continue;
            };
            if (start..end).contains(&at) && directory.placed(person, units, at) {
                found.push((session, at, event));
            }
        }
    }
    Ok(found)
}

fn purpose_counts(sessions: &[(SessionDoc, Micros, Uuid)]) -> BTreeMap<String, Counted> {
    let mut purposes: BTreeMap<String, Counted> = BTreeMap::new();
    for (session, _, event) in sessions {
        for purpose in &session.purposes {
            let counted = purposes.entry(purpose.clone()).or_default();
            counted.count += 1;
            counted.event_ids.push(*event);
        }
    }
    purposes
}

fn coverage(population: &BTreeSet<&str>, sessions: &[(SessionDoc, Micros, Uuid)]) -> Coverage {
    let met: HashSet<&str> = sessions.iter().map(|(s, _, _)| s.member.as_str()).collect();
    Coverage {
        population: population.len() as u32,
        covered: population.iter().filter(|p| met.contains(*p)).count() as u32,
        sessions: sessions.len() as u32,
    }
}

/// The moment a period's population is taken: its last moment, or now while it runs.
fn population_at(end: Micros, now: Micros) -> Micros {
    (end - 1).min(now)
}

/// The unit's dialogue health in the period; `None` if the unit is unknown. Goal progress comes
/// from the evaluation documents in `evaluation`; managers are flagged above `overload` vertical
/// sessions a month.
pub fn dialogue_health(
    store: &dyn DocumentStore,
    evaluation: &dyn DocumentStore,
    scope: Scope<'_>,
    overload: u32,
) -> Result<Option<Health>, Error> {
    let directory = Directory::load(store, scope.tenant)?;
    let (Some(span), Some(before)) = (
        bounds(scope.period),
        previous(scope.period).and_then(|p| bounds(&p)),
    ) else {
        return Ok(None);
    };
    if !directory.has_unit(scope.unit) {
        return Ok(None);
    }
    let units = directory.subtree(scope.unit);
    let at = population_at(span.1, scope.now);
    let population = directory.population(&units, at);
    let sessions = sessions_in(store, &directory, scope.tenant, &units, span)?;
    let earlier = sessions_in(store, &directory, scope.tenant, &units, before)?;
    let month_count = f64::from(months(scope.period));

    let mut health = Health {
        coverage: coverage(&population, &sessions),
        purposes: purpose_counts(&sessions),
        ..Health::default()
    };
    if !population.is_empty() {
        health.sessions_per_person_month =
            f64::from(health.coverage.sessions) / population.len() as f64 / month_count;
    }
    health.median_days_between = median_days_between(&sessions);
    (health.purpose_drift, health.total_drift) = drift(&health.purposes, &purpose_counts(&earlier));

    let mut met: HashMap<String, HashSet<&str>> = HashMap::new();
    let mut goals = HashMap::new();
    for (session, held_at, event) in &sessions {
        let counted = health
            .relationships
            .entry(session.relationship.clone())
            .or_default();
        counted.count += 1;
        counted.event_ids.push(*event);
        if matches!(
            session.relationship.as_str(),
            "RELATIONSHIP_VERTICAL_DIRECT" | "RELATIONSHIP_VERTICAL_SKIP"
        ) {
            // Usually the partner manages the member; the reverse is a vertical session too.
            let (manager, report) = if manages(
                &directory.world,
                &session.member,
                &session.partner,
                *held_at,
            ) {
                (&session.member, &session.partner)
            } else {
                (&session.partner, &session.member)
            };
            let load = health.managers.entry(manager.clone()).or_default();
            load.sessions += 1;
            load.event_ids.push(*event);
            met.entry(manager.clone()).or_default().insert(report);
        }
        let follow = &mut health.follow_through;
        follow.agreed += session.items.len() as u32;
        follow.completed += session.items.values().filter(|s| *s == "completed").count() as u32;
        follow.dropped += session.items.values().filter(|s| *s == "dropped").count() as u32;
        follow.event_ids.extend(&session.item_events);
        if let (Some(resolve @ 1..=5), Some(reflected)) =
            (session.resolve, session.reflection_event)
        {
            let reflections = &mut health.reflections;
            reflections.count += 1;
            reflections.by_resolve[resolve as usize - 1] += 1;
            reflections.event_ids.push(reflected);
        }
        if !goals.contains_key(&session.member) {
            let member_goals = evaluation::goals(evaluation, scope.tenant, &session.member)?;
            goals.insert(session.member.clone(), member_goals);
        }
        let checks = goals[&session.member]
            .values()
            .flat_map(|goal| &goal.progress)
            .map(|point| point.recorded_at);
        let (mut before, mut after) = (0, 0);
        for at in checks {
            before += u32::from((held_at - PROGRESS_WINDOW..*held_at).contains(&at));
            after += u32::from((*held_at + 1..=held_at + PROGRESS_WINDOW).contains(&at));
        }
        let progress = &mut health.goal_progress;
        progress.before += before;
        progress.after += after;
        progress.sessions_followed += u32::from(after > 0);
    }
    for person in &population {
        if let Some(manager) = directory.manager_of(person, at) {
            health.managers.entry(manager).or_default().direct_reports += 1;
        }
    }
    for (manager, load) in &mut health.managers {
        load.members_met = met.get(manager).map_or(0, |m| m.len() as u32);
        load.overloaded = f64::from(load.sessions) / month_count > f64::from(overload);
    }
    Ok(Some(health))
}

fn median_days_between(sessions: &[(SessionDoc, Micros, Uuid)]) -> Option<f64> {
    let mut by_member: HashMap<&str, Vec<Micros>> = HashMap::new();
    for (session, at, _) in sessions {
        by_member.entry(&session.member).or_default().push(*at);
    }
    let mut gaps: Vec<f64> = Vec::new();
    for times in by_member.values_mut() {
        times.sort_unstable();
        gaps.extend(
            times
                .windows(2)
                .map(|w| (w[1] - w[0]) as f64 / 86_400_000_000.0),
        );
    }
    if gaps.is_empty() {
        return None;
    }
    gaps.sort_by(f64::total_cmp);
    let middle = gaps.len() / 2;
    Some(if gaps.len() % 2 == 1 {
        gaps[middle]
    } else {
        (gaps[middle - 1] + gaps[middle]) / 2.0
    })
}

fn drift(
    now: &BTreeMap<String, Counted>,
    before: &BTreeMap<String, Counted>,
) -> (Vec<PurposeShare>, f64) {
    let total = |counts: &BTreeMap<String, Counted>| counts.values().map(|c| c.count).sum::<u32>();
    let (total_now, total_before) = (total(now), total(before));
    let share = |counts: &BTreeMap<String, Counted>, total: u32, purpose: &str| {
        counts
            .get(purpose)
            .filter(|_| total > 0)
            .map_or(0.0, |c| f64::from(c.count) / f64::from(total))
    };
    let purposes: BTreeSet<&String> = now.keys().chain(before.keys()).collect();
    let shares: Vec<PurposeShare> = purposes
        .into_iter()
        .map(|purpose| PurposeShare {
            purpose: purpose.clone(),
            share: share(now, total_now, purpose),
            previous_share: share(before, total_before, purpose),
        })
        .collect();
    let total_drift = if total_now == 0 || total_before == 0 {
        0.0
    } else {
        shares
            .iter()
            .map(|s| (s.share - s.previous_share).abs())
            .sum::<f64>()
            / 2.0
    };
    (shares, total_drift)
}

/// The unit's engagement context in the period; `None` if the unit is unknown. A theme shows
/// only when at least `anonymity` distinct people stand behind it.
pub fn engagement_context(
    store: &dyn DocumentStore,
    scope: Scope<'_>,
    anonymity: u32,
) -> Result<Option<Engagement>, Error> {
    let directory = Directory::load(store, scope.tenant)?;
    let (Some(span), Some(previous_period)) = (bounds(scope.period), previous(scope.period)) else {
        return Ok(None);
    };
    if !directory.has_unit(scope.unit) {
        return Ok(None);
    }
    let units = directory.subtree(scope.unit);
    let population = directory.population(&units, population_at(span.1, scope.now));
    let sessions = sessions_in(store, &directory, scope.tenant, &units, span)?;
    let mut engagement = Engagement {
        coverage: coverage(&population, &sessions),
        purposes: purpose_counts(&sessions),
        ..Engagement::default()
    };

    let surveys = |period: &str| -> Result<BTreeMap<String, SurveyDoc>, Error> {
        let prefix = format!("{}/{}/{period}/", scope.tenant, scope.unit);
        let mut found = BTreeMap::new();
        for (key, body) in store.scan(SURVEYS, &prefix)? {
            found.insert(key[prefix.len()..].to_owned(), decode(&body)?);
        }
        Ok(found)
    };
    let earlier = surveys(&previous_period)?;
    for (metric, survey) in surveys(scope.period)? {
        engagement.surveys.push(SurveyScore {
            previous_score: earlier.get(&metric).map(|s| s.score),
            metric,
            score: survey.score,
            respondents: survey.respondents,
            event_ids: vec![survey.event_id],
        });
    }

    let mut themes: BTreeMap<String, (HashSet<&str>, u32)> = BTreeMap::new();
    for person in directory.ever_placed(&units) {
        let (from, until) = month_keys(&format!("{}/{person}/", scope.tenant), span);
        for (_, body) in store.scan_range(THEMES, &from, &until)? {
            let theme: ThemeDoc = decode(&body)?;
            let at = theme.recorded_at;
            if !(span.0..span.1).contains(&at) || !directory.placed(person, &units, at) {
                continue;
            }
            for tag in theme.tags {
                let (people, insights) = themes.entry(tag).or_default();
                people.insert(person);
                *insights += 1;
            }
        }
    }
    for (tag, (people, insights)) in themes {
        if (people.len() as u32) < anonymity {
            engagement.themes_withheld += 1;
        } else {
            engagement.themes.push(Theme {
                tag,
                people: people.len() as u32,
                insights,
            });
        }
    }
    engagement
        .themes
        .sort_by(|a, b| b.people.cmp(&a.people).then_with(|| a.tag.cmp(&b.tag)));
    Ok(Some(engagement))
}

/// The dialogue health and engagement context projection.
#[derive(Debug, Clone, Copy, Default)]
pub struct DialogueHealth;

impl DialogueHealth {
    /// Changes a session and, once held, its served copy.
    fn session(
        documents: &mut Documents<'_>,
        tenant: &str,
        session: &str,
        change: impl FnOnce(&mut SessionDoc),
    ) -> Result<(), Error> {
        let key = [tenant, session].join("/");
        match documents.get::<SessionState>(SESSION_STATES, &key)? {
            None => Ok(()),
            Some(SessionState::Held(served)) => {
                change(documents.get_mut::<SessionDoc>(SESSIONS, &served)?);
                Ok(())
            }
            Some(SessionState::Scheduled(mut state)) => {
                change(&mut state);
                let Some(held_at) = state.held_at else {
                    return documents.put(SESSION_STATES, &key, SessionState::Scheduled(state));
                };
                let served = [tenant, &state.member, &month_of(held_at), session].join("/");
                documents.put(SESSIONS, &served, state)?;
                documents.put(SESSION_STATES, &key, SessionState::Held(served))
            }
        }
    }

    /// Serves the insight's tags while its subject shares it with hr or department managers.
    fn theme(
        documents: &mut Documents<'_>,
        tenant: &str,
        insight: &str,
        change: impl FnOnce(&mut ThemeSource),
    ) -> Result<(), Error> {
        let source_key = [tenant, insight].join("/");
        let Some(mut source) = documents.get::<ThemeSource>(THEME_SOURCES, &source_key)? else {
            return Ok(());
        };
        let shared = |source: &ThemeSource| {
            [pb::SharingScope::Hr, pb::SharingScope::DepartmentManagers]
                .into_iter()
                .any(|scope| source.sharing.allows(scope))
        };
        let served = shared(&source);
        change(&mut source);
        let month = month_of(source.theme.recorded_at);
        let served_key = [tenant, &source.subject, &month, insight].join("/");
        let shown = shared(&source).then(|| source.theme.clone());
        serve(documents, THEMES, &served_key, shown, served)?;
        documents.put(THEME_SOURCES, &source_key, source)
    }

    fn item(
        documents: &mut Documents<'_>,
        tenant: &str,
        session: &str,
        item: &str,
        status: &str,
        id: Uuid,
    ) -> Result<(), Error> {
        Self::session(documents, tenant, session, |state| {
            if let Some(current) = state.items.get_mut(item) {
                *current = status.to_owned();
                state.item_events.push(id);
            }
        })
    }
}

impl Projection for DialogueHealth {
    fn name(&self) -> &'static str {
        "dialogue-health"
    }

    fn version(&self) -> u32 {
        3
    }

    fn models(&self) -> &'static [&'static str] {
        &[
            UNITS,
            PEOPLE,
            SESSIONS,
            THEMES,
            SURVEYS,
            SESSION_STATES,
            THEME_SOURCES,
        ]
    }

    /// Unit aggregates are queried, not subscribed to.
    fn followed(&self) -> &'static [&'static str] {
        &[]
    }

    fn apply(&self, applied: Applied<'_>, documents: &mut Documents<'_>) -> Result<(), Error> {
        let (tenant, id, at) = (applied.tenant, applied.id, applied.recorded_at);
        let event = applied.event;
        match event {
            Event::OrgUnitDefined(e) => {
                let unit = UnitDoc {
                    name: e.name.clone(),
                    parent: Some(e.parent_id.clone()).filter(|p| !p.is_empty()),
                };
                documents.put(UNITS, &[tenant, &e.org_unit_id].join("/"), unit)
            }
            Event::PersonRegistered(pb::PersonRegistered { person_id, .. })
            | Event::ManagerAssigned(pb::ManagerAssigned { person_id, .. })
            | Event::PersonMoved(pb::PersonMoved { person_id, .. })
            | Event::PersonDeparted(pb::PersonDeparted { person_id, .. }) => {
                let person =
                    documents.get_mut::<PersonDoc>(PEOPLE, &[tenant, person_id].join("/"))?;
                person
                    .events
                    .push((event.type_name().to_owned(), event.encode()));
                Ok(())
            }
            Event::SessionScheduled(e) => {
                let state = SessionDoc {
                    member: e.member_id.clone(),
                    partner: e.partner_id.clone(),
                    relationship: e.relationship().as_str_name().to_owned(),
                    purposes: e.purposes.iter().map(|p| purpose_name(*p)).collect(),
                    ..SessionDoc::default()
                };
                let key = [tenant, &e.session_id].join("/");
                documents.put(SESSION_STATES, &key, SessionState::Scheduled(state))
            }
            Event::SessionRescheduled(e) => Self::session(documents, tenant, &e.session_id, |s| {
                s.relationship = e.relationship().as_str_name().to_owned();
            }),
            Event::SessionHeld(e) => Self::session(documents, tenant, &e.session_id, |s| {
                s.held_at = Some(e.held_at.as_ref().map_or(at, ledger_domain::from_timestamp));
                s.held_event = Some(id);
            }),
            Event::ActionItemAgreed(e) => Self::session(documents, tenant, &e.session_id, |s| {
                s.items.insert(e.item_id.clone(), "open".into());
                s.item_events.push(id);
            }),
            Event::ActionItemCompleted(e) => Self::item(
                documents,
                tenant,
                &e.session_id,
                &e.item_id,
                "completed",
                id,
            ),
            Event::ActionItemDropped(e) => {
                Self::item(documents, tenant, &e.session_id, &e.item_id, "dropped", id)
            }
            Event::ReflectionRecorded(e) => Self::session(documents, tenant, &e.session_id, |s| {
                s.resolve = Some(e.resolve);
                s.reflection_event = Some(id);
            }),
            Event::InsightRecorded(e) => {
                let source = ThemeSource {
                    subject: e.subject_id.clone(),
                    sharing: Sharing::recorded(&e.scopes),
                    theme: ThemeDoc {
                        recorded_at: at,
                        tags: e.tags.iter().map(|t| normalise(t)).collect(),
                    },
                };
                let key = [tenant, &e.insight_id].join("/");
                documents.create(THEME_SOURCES, &key, source)?;
                Self::theme(documents, tenant, &e.insight_id, |_| {})
            }
            Event::SurveyResultRecorded(e) => {
                let key = [tenant, &e.org_unit_id, &e.period, &e.metric].join("/");
                let survey = SurveyDoc {
                    score: e.score,
                    respondents: e.respondent_count,
                    event_id: id,
                };
                documents.put(SURVEYS, &key, survey)
            }
            event => match Sharing::changed_insight(event) {
                Some(insight) => Self::theme(documents, tenant, insight, |source| {
                    source.sharing.apply(event);
                }),
                None => Ok(()),
            },
        }
    }
}
