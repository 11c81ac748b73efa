//! The evaluation brief (評価面談): per member and period, goals with their progress timeline
//! and reflections, held sessions counted by purpose and relationship (never their content),
//! action-item follow-through, and only the insights the member shared for evaluation.
//!
//! Documents are small and per item, keyed `{tenant}/{member}/...`, so an event rewrites one
//! small document however long the member's history; [`brief`] assembles a period's brief by
//! scanning the member's items. An insight is served (model [`INSIGHTS`]) only while its
//! subject shares it for evaluation; its source fields live in an internal index that queries
//! never read.

use std::collections::BTreeMap;

use ledger_domain::{Event, Micros, pb};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::documents::{DocumentReads, DocumentStore, Documents, Error, decode};
use crate::period::{bounds, enclosing};
use crate::runner::{Applied, Projection};
use crate::sharing::Sharing;
use crate::text::Text;

/// Served: goals, `{tenant}/{owner}/{goal}`.
pub const GOALS: &str = "evaluation-goal";
/// Served: the member's sessions, `{tenant}/{member}/{session}` (counted when held).
pub const SESSIONS: &str = "evaluation-session";
/// Served: action items, `{tenant}/{owner}/{session}/{item}`.
pub const ITEMS: &str = "evaluation-item";
/// Served: insights shared for evaluation, `{tenant}/{subject}/{insight}`.
pub const INSIGHTS: &str = "evaluation-insight";
/// Internal: which owner a goal, session or item belongs to, and each insight's source.
const ROUTES: &str = "evaluation-route";
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

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SessionDoc {
    pub relationship: String,
    pub purposes: Vec<String>,
    pub held_at: Option<Micros>,
    pub held_event: Option<Uuid>,
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
    let prefix = format!("{tenant}/{member}/");
    // A malformed period holds no moment.
    let (start, end) = bounds(period).unwrap_or_default();
    let in_period = |at: Micros| (start..end).contains(&at);
    let item_id = |key: &str| key[prefix.len()..].to_owned();
    let mut brief = Brief {
        goals: decode_goals(reads.scan(GOALS, &prefix)?, &prefix)?,
        ..Brief::default()
    };
    brief
        .goals
        .retain(|_, goal| enclosing(&goal.period).iter().any(|p| p == period));
    for (_, body) in reads.scan(SESSIONS, &prefix)? {
        let session: SessionDoc = decode(&body)?;
        let (Some(held_at), Some(event)) = (session.held_at, session.held_event) else {
            continue;
        };
        if !in_period(held_at) {
            continue;
        }
        for purpose in session.purposes {
            let counted = brief.purposes.entry(purpose).or_default();
            counted.count += 1;
            counted.event_ids.push(event);
        }
        let counted = brief.relationships.entry(session.relationship).or_default();
        counted.count += 1;
        counted.event_ids.push(event);
    }
    for (_, body) in reads.scan(ITEMS, &prefix)? {
        let item: ItemDoc = decode(&body)?;
        if !in_period(item.agreed_at) {
            continue;
        }
        let follow = &mut brief.follow_through;
        follow.agreed += 1;
        follow.completed += u32::from(item.status == "completed");
        follow.dropped += u32::from(item.status == "dropped");
        follow.event_ids.extend(item.event_ids);
    }
    for (key, body) in reads.scan(INSIGHTS, &prefix)? {
        let insight: InsightDoc = decode(&body)?;
        if in_period(insight.recorded_at) {
            brief.insights.insert(item_id(&key), insight);
        }
    }
    Ok(brief)
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
        goals.insert(key[prefix.len()..].to_owned(), decode(&body)?);
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
        let item: ItemDoc = decode(&body)?;
        follow.agreed += 1;
        follow.completed += u32::from(item.status == "completed");
        follow.dropped += u32::from(item.status == "dropped");
        follow.event_ids.extend(item.event_ids);
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
        if let Some(key) = routed(documents, &format!("{tenant}/goal/{goal}"))? {
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
        if let Some(key) = routed(documents, &format!("{tenant}/item/{session}/{item}"))? {
            let item = documents.get_mut::<ItemDoc>(ITEMS, &key)?;
            item.status = status.to_owned();
            item.event_ids.push(id);
        }
        Ok(())
    }

    /// Serves the insight while its subject shares it for evaluation; withdraws it otherwise.
    fn insight(
        documents: &mut Documents<'_>,
        tenant: &str,
        insight: &str,
        change: impl FnOnce(&mut InsightSource),
    ) -> Result<(), Error> {
        let source_key = format!("{tenant}/{insight}");
        let Some(mut source) = documents.get::<InsightSource>(INSIGHT_SOURCES, &source_key)? else {
            return Ok(());
        };
        change(&mut source);
        let served_key = format!("{tenant}/{}/{insight}", source.subject);
        let shared = source.sharing.allows(pb::SharingScope::Evaluation);
        if shared {
            documents.put(INSIGHTS, &served_key, source.document.clone())?;
        } else {
            documents.delete::<InsightDoc>(INSIGHTS, &served_key)?;
        }
        documents.put(INSIGHT_SOURCES, &source_key, source)
    }
}

impl Projection for EvaluationBriefs {
    fn name(&self) -> &'static str {
        "evaluation-briefs"
    }

    fn version(&self) -> u32 {
        5
    }

    fn models(&self) -> &'static [&'static str] {
        &[GOALS, SESSIONS, ITEMS, INSIGHTS, ROUTES, INSIGHT_SOURCES]
    }

    fn followed(&self) -> &'static [&'static str] {
        &[GOALS, SESSIONS, ITEMS, INSIGHTS]
    }

    fn apply(&self, applied: Applied<'_>, documents: &mut Documents<'_>) -> Result<(), Error> {
        let (tenant, id, at) = (applied.tenant, applied.id, applied.recorded_at);
        match applied.event {
            Event::GoalSet(e) => {
                let key = format!("{tenant}/{}/{}", e.owner_id, e.goal_id);
                documents.put(ROUTES, &format!("{tenant}/goal/{}", e.goal_id), key.clone())?;
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
                let key = format!("{tenant}/{}/{}", e.member_id, e.session_id);
                documents.put(
                    ROUTES,
                    &format!("{tenant}/session/{}", e.session_id),
                    key.clone(),
                )?;
                let session = SessionDoc {
                    relationship: e.relationship().as_str_name().to_owned(),
                    purposes: e.purposes.iter().map(|p| purpose_name(*p)).collect(),
                    ..SessionDoc::default()
                };
                documents.put(SESSIONS, &key, session)
            }
            Event::SessionRescheduled(e) => {
                if let Some(key) = routed(documents, &format!("{tenant}/session/{}", e.session_id))?
                {
                    documents
                        .get_mut::<SessionDoc>(SESSIONS, &key)?
                        .relationship = e.relationship().as_str_name().to_owned();
                }
                Ok(())
            }
            Event::SessionHeld(e) => {
                if let Some(key) = routed(documents, &format!("{tenant}/session/{}", e.session_id))?
                {
                    let session = documents.get_mut::<SessionDoc>(SESSIONS, &key)?;
                    session.held_at =
                        Some(e.held_at.as_ref().map_or(at, ledger_domain::from_timestamp));
                    session.held_event = Some(id);
                }
                Ok(())
            }
            Event::ActionItemAgreed(e) => {
                let key = format!("{tenant}/{}/{}/{}", e.owner_id, e.session_id, e.item_id);
                documents.put(
                    ROUTES,
                    &format!("{tenant}/item/{}/{}", e.session_id, e.item_id),
                    key.clone(),
                )?;
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
                // A new insight has no served document to withdraw: served only if shared.
                if source.sharing.allows(pb::SharingScope::Evaluation) {
                    let served_key = format!("{tenant}/{}/{}", e.subject_id, e.insight_id);
                    documents.put(INSIGHTS, &served_key, source.document.clone())?;
                }
                documents.put(
                    INSIGHT_SOURCES,
                    &format!("{tenant}/{}", e.insight_id),
                    source,
                )
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
