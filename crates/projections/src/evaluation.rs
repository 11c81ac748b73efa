//! The evaluation brief (評価面談): per member and period, goals with their progress timeline
//! and reflections, held sessions counted by purpose and relationship (never their content),
//! action-item follow-through, and only the insights the member shared for evaluation.
//!
//! Documents are small and per item, keyed `{tenant}/{member}/{month}/...` by the month the
//! item falls in (a goal's first month, the month a session was held, an action item agreed,
//! an insight recorded), so an event rewrites one small document however long the member's
//! history, and [`brief`] assembles a period's brief from a scan of the period's months alone.
//! An insight is served (model [`INSIGHTS`]) only while its subject shares it for evaluation;
//! its source fields live in an internal index that queries never read.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use ledger_domain::{Event, Micros, pb};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::documents::{DocumentReads, DocumentStore, Documents, Error, decode};
use crate::period::{bounds, enclosing, month_keys, month_of};
use crate::runner::{Applied, Projection};
use crate::sharing::{Sharing, serve};
use crate::text::Text;

/// Served: goals, `{tenant}/{owner}/{first month of the goal's period}/{goal}`.
pub const GOALS: &str = "evaluation-goal";
/// Served: the member's held sessions, `{tenant}/{member}/{month held}/{session}`.
pub const SESSIONS: &str = "evaluation-session";
/// Served: action items, `{tenant}/{owner}/{month agreed}/{session}/{item}`.
pub const ITEMS: &str = "evaluation-item";
/// Served: insights shared for evaluation, `{tenant}/{subject}/{month recorded}/{insight}`.
pub const INSIGHTS: &str = "evaluation-insight";
/// Internal: the served key of a goal or action item, sessions as scheduled until held, and
/// each insight's source.
const ROUTES: &str = "evaluation-route";
const SCHEDULED_SESSIONS: &str = "evaluation-session-scheduled";
const INSIGHT_SOURCES: &str = "evaluation-insight-source";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GoalDoc {
    pub period: String,
    pub title: Text,
    pub kind: i32,
    pub status: String,
    pub progress: Vec<Progress>,
    pub reflections: Vec<Text>,
    pub event_ids: Vec<Uuid>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    pub key_result_id: String,
    pub value: f64,
    pub recorded_at: Micros,
    pub event_id: Uuid,
}

/// A held session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionDoc {
    pub relationship: String,
    pub purposes: Vec<String>,
    pub held_at: Micros,
    pub held_event: Uuid,
}

/// A session as scheduled (and rescheduled), served once held.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct ScheduledSession {
    member: String,
    relationship: String,
    purposes: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ItemDoc {
    pub agreed_at: Micros,
    /// open, completed or dropped.
    pub status: String,
    pub event_ids: Vec<Uuid>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InsightDoc {
    pub recorded_at: Micros,
    pub kind: i32,
    pub tags: Vec<String>,
    pub text: Text,
    pub event_ids: Vec<Uuid>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct InsightSource {
    subject: String,
    sharing: Sharing,
    document: InsightDoc,
}

/// A period's brief, assembled from the member's documents.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Brief {
    pub goals: BTreeMap<String, GoalDoc>,
    pub purposes: BTreeMap<String, Counted>,
    pub relationships: BTreeMap<String, Counted>,
    pub follow_through: FollowThrough,
    pub insights: BTreeMap<String, InsightDoc>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counted {
    pub count: u32,
    pub event_ids: Vec<Uuid>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct FollowThrough {
    pub agreed: u32,
    pub completed: u32,
    pub dropped: u32,
    pub event_ids: Vec<Uuid>,
}

impl FollowThrough {
    /// Counts an agreed action item as it now stands.
    fn count(&mut self, item: &ItemDoc) {
        self.agreed += 1;
        self.completed += u32::from(item.status == "completed");
        self.dropped += u32::from(item.status == "dropped");
        self.event_ids.extend(&item.event_ids);
    }
}

/// `member`'s brief for `period`.
pub fn brief(
    store: &dyn DocumentStore,
    tenant: &str,
    member: &str,
    period: &str,
) -> Result<Brief, Error> {
    // One read of every model: the brief shows the read model as of one moment, never parts
    // of two commits.
    brief_in(&mut *store.reads()?, tenant, member, period)
}

/// `member`'s brief for `period`, from `reads` (several members' briefs read together show
/// one moment and cost one read transaction).
pub fn brief_in(
    reads: &mut dyn DocumentReads,
    tenant: &str,
    member: &str,
    period: &str,
) -> Result<Brief, Error> {
    let period = Period::new(period);
    Ok(PeriodDocuments::read(reads, tenant, member, &period)?.brief())
}

/// The served models, whose changes a brief follows.
const SERVED: [&str; 4] = [GOALS, SESSIONS, ITEMS, INSIGHTS];

/// A period a brief covers: its name and the moments it holds.
#[derive(Debug, Clone)]
struct Period {
    name: String,
    /// `[start, end)`; a malformed period holds no moment.
    bounds: (Micros, Micros),
}

impl Period {
    fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            bounds: bounds(name).unwrap_or_default(),
        }
    }

    fn holds(&self, at: Micros) -> bool {
        (self.bounds.0..self.bounds.1).contains(&at)
    }
}

/// The key a served document is filed under: `{tenant}/{member}/{month}/{id}`.
fn filed(tenant: &str, member: &str, month: &str, id: &str) -> String {
    [tenant, member, month, id].join("/")
}

/// A goal's month: the first of its period.
fn goal_month(period: &str) -> String {
    // Goal periods are checked when set; a malformed one is filed under itself, in no brief.
    bounds(period).map_or_else(|| period.to_owned(), |(start, _)| month_of(start))
}

/// The id of a served document from its key after `{tenant}/{member}/`: what follows the month.
fn id_of(filed: &str) -> &str {
    filed.split_once('/').map_or(filed, |(_, id)| id)
}

/// A member's documents that a period's brief shows, decoded, by the rest of their key after
/// `{tenant}/{member}/` (`{month}/{id}`): goals of the period or of one within it, sessions
/// held in it, action items agreed in it, insights recorded in it.
#[derive(Debug, Clone, Default)]
struct PeriodDocuments {
    goals: BTreeMap<String, GoalDoc>,
    sessions: BTreeMap<String, SessionDoc>,
    items: BTreeMap<String, ItemDoc>,
    insights: BTreeMap<String, InsightDoc>,
}

impl PeriodDocuments {
    fn read(
        reads: &mut dyn DocumentReads,
        tenant: &str,
        member: &str,
        period: &Period,
    ) -> Result<Self, Error> {
        let prefix = format!("{tenant}/{member}/");
        // The period's months (none for a malformed period).
        let (from, until) = month_keys(&prefix, period.bounds);
        let mut documents = Self::default();
        for model in SERVED {
            for (key, body) in reads.scan_range(model, &from, &until)? {
                documents.change(model, &key[prefix.len()..], Some(&body), period)?;
            }
        }
        Ok(documents)
    }

    /// Takes in the document of `model` filed under `filed` (its key after `{tenant}/{member}/`)
    /// as it now is (`None`: deleted).
    fn change(
        &mut self,
        model: &str,
        filed: &str,
        body: Option<&[u8]>,
        period: &Period,
    ) -> Result<(), Error> {
        fn keep<T>(map: &mut BTreeMap<String, T>, filed: &str, shown: Option<T>) {
            match shown {
                Some(document) => {
                    map.insert(filed.to_owned(), document);
                }
                None => {
                    map.remove(filed);
                }
            }
        }
        match model {
            GOALS => {
                let goal = body.map(decode::<GoalDoc>).transpose()?;
                let shown = goal.filter(|g| enclosing(&g.period).contains(&period.name));
                keep(&mut self.goals, filed, shown);
            }
            SESSIONS => {
                let session = body.map(decode::<SessionDoc>).transpose()?;
                let shown = session.filter(|s| period.holds(s.held_at));
                keep(&mut self.sessions, filed, shown);
            }
            ITEMS => {
                let item = body.map(decode::<ItemDoc>).transpose()?;
                let shown = item.filter(|i| period.holds(i.agreed_at));
                keep(&mut self.items, filed, shown);
            }
            INSIGHTS => {
                let insight = body.map(decode::<InsightDoc>).transpose()?;
                let shown = insight.filter(|i| period.holds(i.recorded_at));
                keep(&mut self.insights, filed, shown);
            }
            _ => return Err(Error::Unknown(model.to_owned())),
        }
        Ok(())
    }

    fn len(&self) -> usize {
        self.goals.len() + self.sessions.len() + self.items.len() + self.insights.len()
    }

    fn brief(&self) -> Brief {
        fn by_id<T: Clone>(filed: &BTreeMap<String, T>) -> BTreeMap<String, T> {
            let documents = filed.iter();
            (documents.map(|(filed, document)| (id_of(filed).to_owned(), document.clone())))
                .collect()
        }
        let mut brief = Brief {
            goals: by_id(&self.goals),
            insights: by_id(&self.insights),
            ..Brief::default()
        };
        for session in self.sessions.values() {
            let event = session.held_event;
            for purpose in &session.purposes {
                let counted = brief.purposes.entry(purpose.clone()).or_default();
                counted.count += 1;
                counted.event_ids.push(event);
            }
            let counted = (brief.relationships)
                .entry(session.relationship.clone())
                .or_default();
            counted.count += 1;
            counted.event_ids.push(event);
        }
        for item in self.items.values() {
            brief.follow_through.count(item);
        }
        brief
    }
}

/// The documents that all of a process's [`BriefCache`]s may keep together: each takes from it
/// what it keeps and gives it back when it lets go, so that many subscriptions never hold more
/// than this between them; members beyond are read afresh each time.
#[derive(Debug)]
pub struct BriefBudget {
    left: AtomicUsize,
}

impl BriefBudget {
    pub fn new(documents: usize) -> Arc<Self> {
        Arc::new(Self {
            left: AtomicUsize::new(documents),
        })
    }

    /// The documents not taken.
    pub fn left(&self) -> usize {
        self.left.load(Ordering::Acquire)
    }

    fn take(&self, documents: usize) -> bool {
        (self.left)
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| {
                left.checked_sub(documents)
            })
            .is_ok()
    }

    fn give_back(&self, documents: usize) {
        self.left.fetch_add(documents, Ordering::AcqRel);
    }
}

/// One period's briefs of the members a subscription follows, kept between its renderings so
/// that each reads only what changed since the last (a brief's cost would otherwise grow with
/// the member's history in the period). Exact: the cached documents are brought to the moment
/// of the reads by every change since the last rendering, read in that same moment, before any
/// brief is assembled; where the store cannot list those changes, every brief is read afresh.
#[derive(Debug)]
pub struct BriefCache {
    tenant: String,
    period: Period,
    /// The cached documents hold every change numbered up to this one.
    through: Option<u64>,
    /// What they hold is taken from `budget`.
    members: HashMap<String, PeriodDocuments>,
    budget: Arc<BriefBudget>,
    /// A rendering that finds this many changes since the last or more reads every brief
    /// afresh.
    changes_at_most: usize,
}

impl BriefCache {
    pub fn new(tenant: &str, period: &str, budget: Arc<BriefBudget>) -> Self {
        Self {
            tenant: tenant.to_owned(),
            period: Period::new(period),
            through: None,
            members: HashMap::new(),
            budget,
            changes_at_most: 4096,
        }
    }

    /// Reads every brief afresh when a rendering finds `changes` or more since the last, instead
    /// of 4,096: what a rendering reads of the change feed at most.
    pub fn reading_changes_at_most(mut self, changes: usize) -> Self {
        self.changes_at_most = changes.max(1);
        self
    }

    /// The members' briefs as of `reads`' moment, which holds every change numbered up to
    /// `seen` (a change feed read before the reads began saw that far).
    pub fn briefs(
        &mut self,
        reads: &mut dyn DocumentReads,
        members: &[String],
        seen: u64,
    ) -> Result<Vec<Brief>, Error> {
        let briefs = self.read(reads, members, seen);
        if briefs.is_err() {
            // Whatever it was part way through, the next briefs begin afresh.
            self.forget();
        }
        briefs
    }

    fn read(
        &mut self,
        reads: &mut dyn DocumentReads,
        members: &[String],
        seen: u64,
    ) -> Result<Vec<Brief>, Error> {
        let after = self.through.unwrap_or(seen);
        let limit = self.changes_at_most;
        let listed = reads.changes_with(GOALS, &self.tenant, after, limit)?;
        // Unlisted, or more than it reads at once (a subscription catching up from far back):
        // every brief afresh this time, and keeping begins again from the next.
        let Some(changes) = listed.filter(|changes| changes.len() < limit) else {
            self.forget();
            return (members.iter())
                .map(|member| brief_in(reads, &self.tenant, member, &self.period.name))
                .collect();
        };
        let prefix = format!("{}/", self.tenant);
        for change in &changes {
            let Some((member, filed)) =
                (change.key.strip_prefix(&prefix)).and_then(|rest| rest.split_once('/'))
            else {
                continue;
            };
            if !SERVED.contains(&change.model.as_str()) {
                continue;
            }
            if let Some(cached) = self.members.get_mut(member) {
                let body = reads.get(&change.model, &change.key)?;
                let before = cached.len();
                cached.change(&change.model, filed, body.as_deref(), &self.period)?;
                let after = cached.len();
                if after <= before {
                    self.budget.give_back(before - after);
                } else if !self.budget.take(after - before) {
                    // No room for the member to grow: read afresh from now on.
                    self.members.remove(member);
                    self.budget.give_back(before);
                }
            }
        }
        self.through = Some(changes.last().map_or(after, |c| c.seq.max(after)));
        let mut briefs = Vec::with_capacity(members.len());
        for member in members {
            if let Some(cached) = self.members.get(member) {
                briefs.push(cached.brief());
                continue;
            }
            let read = PeriodDocuments::read(reads, &self.tenant, member, &self.period)?;
            briefs.push(read.brief());
            if self.budget.take(read.len()) {
                self.members.insert(member.clone(), read);
            }
        }
        Ok(briefs)
    }

    fn forget(&mut self) {
        self.through = None;
        let held = self.members.drain().map(|(_, kept)| kept.len()).sum();
        self.budget.give_back(held);
    }
}

impl Drop for BriefCache {
    fn drop(&mut self) {
        self.forget();
    }
}

/// All of `member`'s goals, by goal id.
pub fn goals(
    store: &dyn DocumentStore,
    tenant: &str,
    member: &str,
) -> Result<BTreeMap<String, GoalDoc>, Error> {
    let prefix = format!("{tenant}/{member}/");
    decode_goals(store.scan(GOALS, &prefix)?, &prefix)
}

/// Scanned goal documents under `prefix`, by goal id.
fn decode_goals(
    scanned: Vec<(String, Vec<u8>)>,
    prefix: &str,
) -> Result<BTreeMap<String, GoalDoc>, Error> {
    let mut goals = BTreeMap::new();
    for (key, body) in scanned {
        goals.insert(id_of(&key[prefix.len()..]).to_owned(), decode(&body)?);
    }
    Ok(goals)
}

/// `member`'s action-item follow-through over all time.
pub fn follow_through(
    store: &dyn DocumentStore,
    tenant: &str,
    member: &str,
) -> Result<FollowThrough, Error> {
    let mut follow = FollowThrough::default();
    for (_, body) in store.scan(ITEMS, &format!("{tenant}/{member}/"))? {
        follow.count(&decode(&body)?);
    }
    Ok(follow)
}

/// The evaluation brief projection.
#[derive(Debug, Clone, Copy, Default)]
pub struct EvaluationBriefs;

/// A purpose's name as read models show it (`PURPOSE_GROWTH`), or its number if unknown.
pub(crate) fn purpose_name(value: i32) -> String {
    pb::Purpose::try_from(value).map_or_else(
        |_| format!("PURPOSE_{value}"),
        |p| p.as_str_name().to_owned(),
    )
}

/// The served document a routed event belongs to, e.g. `{tenant}/{owner}/{goal}`.
fn routed(documents: &mut Documents<'_>, route: &str) -> Result<Option<String>, Error> {
    documents.get::<String>(ROUTES, route)
}

impl EvaluationBriefs {
    fn goal(
        documents: &mut Documents<'_>,
        tenant: &str,
        goal: &str,
        change: impl FnOnce(&mut GoalDoc),
    ) -> Result<(), Error> {
        if let Some(key) = routed(documents, &[tenant, "goal", goal].join("/"))? {
            change(documents.get_mut::<GoalDoc>(GOALS, &key)?);
        }
        Ok(())
    }

    fn item(
        documents: &mut Documents<'_>,
        tenant: &str,
        session: &str,
        item: &str,
        status: &str,
        id: Uuid,
    ) -> Result<(), Error> {
        if let Some(key) = routed(documents, &[tenant, "item", session, item].join("/"))? {
            let item = documents.get_mut::<ItemDoc>(ITEMS, &key)?;
            item.status = status.to_owned();
            item.event_ids.push(id);
        }
        Ok(())
    }

    /// Serves the insight while its subject shares it for evaluation; withdraws it once it no
    /// longer is.
    fn insight(
        documents: &mut Documents<'_>,
        tenant: &str,
        insight: &str,
        change: impl FnOnce(&mut InsightSource),
    ) -> Result<(), Error> {
        let source_key = [tenant, insight].join("/");
        let Some(mut source) = documents.get::<InsightSource>(INSIGHT_SOURCES, &source_key)? else {
            return Ok(());
        };
        let served = source.sharing.allows(pb::SharingScope::Evaluation);
        change(&mut source);
        let month = month_of(source.document.recorded_at);
        let served_key = filed(tenant, &source.subject, &month, insight);
        let shared = source.sharing.allows(pb::SharingScope::Evaluation);
        let shown = shared.then(|| source.document.clone());
        serve(documents, INSIGHTS, &served_key, shown, served)?;
        documents.put(INSIGHT_SOURCES, &source_key, source)
    }
}

impl Projection for EvaluationBriefs {
    fn name(&self) -> &'static str {
        "evaluation-briefs"
    }

    fn version(&self) -> u32 {
        7
    }

    fn models(&self) -> &'static [&'static str] {
        &[
            GOALS,
            SESSIONS,
            ITEMS,
            INSIGHTS,
            ROUTES,
            SCHEDULED_SESSIONS,
            INSIGHT_SOURCES,
        ]
    }

    fn followed(&self) -> &'static [&'static str] {
        &[GOALS, SESSIONS, ITEMS, INSIGHTS]
    }

    fn apply(&self, applied: Applied<'_>, documents: &mut Documents<'_>) -> Result<(), Error> {
        let (tenant, id, at) = (applied.tenant, applied.id, applied.recorded_at);
        match applied.event {
            Event::GoalSet(e) => {
                let key = filed(tenant, &e.owner_id, &goal_month(&e.period), &e.goal_id);
                documents.put(ROUTES, &[tenant, "goal", &e.goal_id].join("/"), key.clone())?;
                let goal = GoalDoc {
                    period: e.period.clone(),
                    title: Text::of(&applied, &e.sealed, 0, &e.title),
                    kind: e.kind,
                    status: "set".into(),
                    event_ids: vec![id],
                    ..GoalDoc::default()
                };
                documents.put(GOALS, &key, goal)
            }
            Event::GoalProgressRecorded(e) => Self::goal(documents, tenant, &e.goal_id, |goal| {
                let point = Progress {
                    key_result_id: e.key_result_id.clone(),
                    value: e.value,
                    recorded_at: at,
                    event_id: id,
                };
                goal.progress.push(point);
                goal.event_ids.push(id);
            }),
            Event::GoalReflected(e) => Self::goal(documents, tenant, &e.goal_id, |goal| {
                goal.reflections
                    .push(Text::of(&applied, &e.sealed, 0, &e.text));
                goal.event_ids.push(id);
            }),
            Event::GoalRevised(e) => Self::goal(documents, tenant, &e.goal_id, |goal| {
                goal.title = Text::of(&applied, &e.sealed, 0, &e.title);
                goal.event_ids.push(id);
            }),
            Event::GoalCompleted(e) => Self::goal(documents, tenant, &e.goal_id, |goal| {
                goal.status = "completed".into();
                goal.event_ids.push(id);
            }),
            Event::GoalAbandoned(e) => Self::goal(documents, tenant, &e.goal_id, |goal| {
                goal.status = "abandoned".into();
                goal.event_ids.push(id);
            }),
            Event::SessionScheduled(e) => {
                let session = ScheduledSession {
                    member: e.member_id.clone(),
                    relationship: e.relationship().as_str_name().to_owned(),
                    purposes: e.purposes.iter().map(|p| purpose_name(*p)).collect(),
                };
                let key = [tenant, &e.session_id].join("/");
                documents.create(SCHEDULED_SESSIONS, &key, session)
            }
            Event::SessionRescheduled(e) => {
                let key = [tenant, &e.session_id].join("/");
                if let Some(mut session) =
                    documents.get::<ScheduledSession>(SCHEDULED_SESSIONS, &key)?
                {
                    session.relationship = e.relationship().as_str_name().to_owned();
                    documents.put(SCHEDULED_SESSIONS, &key, session)?;
                }
                Ok(())
            }
            Event::SessionHeld(e) => {
                let key = [tenant, &e.session_id].join("/");
                // Only a scheduled session is held (the session aggregate refuses the rest).
                let Some(session) = documents.get::<ScheduledSession>(SCHEDULED_SESSIONS, &key)?
                else {
                    return Ok(());
                };
                let held_at = e.held_at.as_ref().map_or(at, ledger_domain::from_timestamp);
                let served = filed(tenant, &session.member, &month_of(held_at), &e.session_id);
                let held = SessionDoc {
                    relationship: session.relationship,
                    purposes: session.purposes,
                    held_at,
                    held_event: id,
                };
                // Nothing follows a session once held (the aggregate refuses a reschedule).
                documents.delete::<ScheduledSession>(SCHEDULED_SESSIONS, &key)?;
                documents.put(SESSIONS, &served, held)
            }
            Event::ActionItemAgreed(e) => {
                let item = [e.session_id.as_str(), &e.item_id].join("/");
                let key = filed(tenant, &e.owner_id, &month_of(at), &item);
                documents.put(ROUTES, &[tenant, "item", &item].join("/"), key.clone())?;
                documents.put(
                    ITEMS,
                    &key,
                    ItemDoc {
                        agreed_at: at,
                        status: "open".into(),
                        event_ids: vec![id],
                    },
                )
            }
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
            Event::InsightRecorded(e) => {
                let source = InsightSource {
                    subject: e.subject_id.clone(),
                    sharing: Sharing::recorded(&e.scopes),
                    document: InsightDoc {
                        recorded_at: at,
                        kind: e.kind,
                        tags: e.tags.clone(),
                        text: Text::of(&applied, &e.sealed, 0, &e.text),
                        event_ids: vec![id],
                    },
                };
                let key = [tenant, &e.insight_id].join("/");
                documents.create(INSIGHT_SOURCES, &key, source)?;
                Self::insight(documents, tenant, &e.insight_id, |_| {})
            }
            event => match Sharing::changed_insight(event) {
                Some(insight) => Self::insight(documents, tenant, insight, |source| {
                    source.sharing.apply(event);
                    source.document.event_ids.push(id);
                }),
                None => Ok(()),
            },
        }
    }
}
