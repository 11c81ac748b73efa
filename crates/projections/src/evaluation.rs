//! The evaluation brief (評価面談): per member and period, goals with their progress timeline
//! and reflections, held sessions counted by purpose and relationship (never their content),
//! action-item follow-through, and only the insights the member shared for evaluation.
//!
//! Besides the briefs it keeps small indexes (which member a goal, session or action item
//! belongs to; each insight's scopes) so that later events find their briefs.

use std::collections::BTreeMap;

use ledger_domain::{Event, pb};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::documents::{Documents, Error};
use crate::period::{enclosing, periods_of};
use crate::runner::{Applied, Projection};

/// Briefs, keyed `{tenant}/{member}/{period}`.
pub const BRIEFS: &str = "evaluation-brief";
const GOALS: &str = "evaluation-goal-index";
const SESSIONS: &str = "evaluation-session-index";
const ITEMS: &str = "evaluation-item-index";
const INSIGHTS: &str = "evaluation-insight-index";

/// The brief's document key.
pub fn brief_key(tenant: &str, member: &str, period: &str) -> String {
    format!("{tenant}/{member}/{period}")
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Brief {
    pub goals: BTreeMap<String, BriefGoal>,
    pub purposes: BTreeMap<String, Counted>,
    pub relationships: BTreeMap<String, Counted>,
    pub follow_through: FollowThrough,
    pub insights: BTreeMap<String, BriefInsight>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Counted {
    pub count: u32,
    pub event_ids: Vec<Uuid>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BriefGoal {
    pub title: String,
    pub kind: i32,
    pub status: String,
    pub progress: Vec<Progress>,
    pub reflections: Vec<String>,
    pub event_ids: Vec<Uuid>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    pub key_result_id: String,
    pub value: f64,
    pub recorded_at: i64,
    pub event_id: Uuid,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FollowThrough {
    pub agreed: u32,
    pub completed: u32,
    pub dropped: u32,
    pub event_ids: Vec<Uuid>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BriefInsight {
    pub kind: i32,
    pub tags: Vec<String>,
    pub text: String,
    pub event_ids: Vec<Uuid>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct GoalIndex {
    owner: String,
    period: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct SessionIndex {
    member: String,
    relationship: String,
    purposes: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct ItemIndex {
    owner: String,
    periods: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct InsightIndex {
    subject: String,
    periods: Vec<String>,
    kind: i32,
    tags: Vec<String>,
    text: String,
    scopes: Vec<i32>,
    retracted: bool,
    event_ids: Vec<Uuid>,
}

/// The evaluation brief projection.
#[derive(Debug, Clone, Copy, Default)]
pub struct EvaluationBriefs;

impl EvaluationBriefs {
    /// Changes the briefs of `member` for each of `periods`.
    fn update(
        documents: &mut Documents<'_>,
        tenant: &str,
        member: &str,
        periods: &[String],
        mut change: impl FnMut(&mut Brief),
    ) -> Result<(), Error> {
        for period in periods {
            let key = brief_key(tenant, member, period);
            let mut brief: Brief = documents.get(BRIEFS, &key)?.unwrap_or_default();
            change(&mut brief);
            documents.put(BRIEFS, &key, &brief)?;
        }
        Ok(())
    }

    fn goal(
        documents: &mut Documents<'_>,
        tenant: &str,
        goal_id: &str,
        change: impl FnMut(&mut BriefGoal),
    ) -> Result<(), Error> {
        let Some(index) = documents.get::<GoalIndex>(GOALS, &format!("{tenant}/{goal_id}"))? else {
            return Ok(());
        };
        let mut change = change;
        Self::update(
            documents,
            tenant,
            &index.owner,
            &enclosing(&index.period),
            |brief| {
                if let Some(goal) = brief.goals.get_mut(goal_id) {
                    change(goal);
                }
            },
        )
    }

    fn item(
        documents: &mut Documents<'_>,
        tenant: &str,
        session: &str,
        item: &str,
        change: impl FnMut(&mut FollowThrough),
    ) -> Result<(), Error> {
        let Some(index) =
            documents.get::<ItemIndex>(ITEMS, &format!("{tenant}/{session}/{item}"))?
        else {
            return Ok(());
        };
        let mut change = change;
        Self::update(documents, tenant, &index.owner, &index.periods, |brief| {
            change(&mut brief.follow_through)
        })
    }

    /// Puts the insight into its subject's briefs while it is shared for evaluation, and takes
    /// it out otherwise.
    fn insight(
        documents: &mut Documents<'_>,
        tenant: &str,
        insight_id: &str,
        change: impl FnOnce(&mut InsightIndex),
    ) -> Result<(), Error> {
        let key = format!("{tenant}/{insight_id}");
        let Some(mut index) = documents.get::<InsightIndex>(INSIGHTS, &key)? else {
            return Ok(());
        };
        change(&mut index);
        documents.put(INSIGHTS, &key, &index)?;
        let shared = !index.retracted
            && index
                .scopes
                .contains(&i32::from(pb::SharingScope::Evaluation));
        let entry = BriefInsight {
            kind: index.kind,
            tags: index.tags.clone(),
            text: index.text.clone(),
            event_ids: index.event_ids.clone(),
        };
        Self::update(documents, tenant, &index.subject, &index.periods, |brief| {
            if shared {
                brief.insights.insert(insight_id.to_owned(), entry.clone());
            } else {
                brief.insights.remove(insight_id);
            }
        })
    }
}

fn purpose_name(value: i32) -> String {
    pb::Purpose::try_from(value).map_or_else(
        |_| format!("PURPOSE_{value}"),
        |p| p.as_str_name().to_owned(),
    )
}

impl Projection for EvaluationBriefs {
    fn name(&self) -> &'static str {
        "evaluation-briefs"
    }

    fn version(&self) -> u32 {
        1
    }

    fn models(&self) -> &'static [&'static str] {
        &[BRIEFS, GOALS, SESSIONS, ITEMS, INSIGHTS]
    }

    fn apply(&self, applied: Applied<'_>, documents: &mut Documents<'_>) -> Result<(), Error> {
        let (tenant, id) = (applied.tenant, applied.id);
        match applied.event {
            Event::GoalSet(e) => {
                let index = GoalIndex {
                    owner: e.owner_id.clone(),
                    period: e.period.clone(),
                };
                documents.put(GOALS, &format!("{tenant}/{}", e.goal_id), &index)?;
                let goal = BriefGoal {
                    title: e.title.clone(),
                    kind: e.kind,
                    status: "set".into(),
                    event_ids: vec![id],
                    ..BriefGoal::default()
                };
                Self::update(
                    documents,
                    tenant,
                    &e.owner_id,
                    &enclosing(&e.period),
                    |brief| {
                        brief.goals.insert(e.goal_id.clone(), goal.clone());
                    },
                )
            }
            Event::GoalProgressRecorded(e) => Self::goal(documents, tenant, &e.goal_id, |goal| {
                goal.progress.push(Progress {
                    key_result_id: e.key_result_id.clone(),
                    value: e.value,
                    recorded_at: applied.recorded_at,
                    event_id: id,
                });
                goal.event_ids.push(id);
            }),
            Event::GoalReflected(e) => Self::goal(documents, tenant, &e.goal_id, |goal| {
                goal.reflections.push(e.text.clone());
                goal.event_ids.push(id);
            }),
            Event::GoalRevised(e) => Self::goal(documents, tenant, &e.goal_id, |goal| {
                goal.title.clone_from(&e.title);
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
                let index = SessionIndex {
                    member: e.member_id.clone(),
                    relationship: e.relationship().as_str_name().to_owned(),
                    purposes: e.purposes.iter().map(|p| purpose_name(*p)).collect(),
                };
                documents.put(SESSIONS, &format!("{tenant}/{}", e.session_id), &index)
            }
            Event::SessionRescheduled(e) => {
                let key = format!("{tenant}/{}", e.session_id);
                let Some(mut index) = documents.get::<SessionIndex>(SESSIONS, &key)? else {
                    return Ok(());
                };
                index.relationship = e.relationship().as_str_name().to_owned();
                documents.put(SESSIONS, &key, &index)
            }
            Event::SessionHeld(e) => {
                let Some(index) = documents
                    .get::<SessionIndex>(SESSIONS, &format!("{tenant}/{}", e.session_id))?
                else {
                    return Ok(());
                };
                let held_at = e
                    .held_at
                    .as_ref()
                    .map_or(applied.recorded_at, ledger_domain::from_timestamp);
                Self::update(
                    documents,
                    tenant,
                    &index.member,
                    &periods_of(held_at),
                    |brief| {
                        for purpose in &index.purposes {
                            let counted = brief.purposes.entry(purpose.clone()).or_default();
                            counted.count += 1;
                            counted.event_ids.push(id);
                        }
                        let counted = brief
                            .relationships
                            .entry(index.relationship.clone())
                            .or_default();
                        counted.count += 1;
                        counted.event_ids.push(id);
                    },
                )
            }
            Event::ActionItemAgreed(e) => {
                let periods = periods_of(applied.recorded_at).to_vec();
                let index = ItemIndex {
                    owner: e.owner_id.clone(),
                    periods: periods.clone(),
                };
                documents.put(
                    ITEMS,
                    &format!("{tenant}/{}/{}", e.session_id, e.item_id),
                    &index,
                )?;
                Self::update(documents, tenant, &e.owner_id, &periods, |brief| {
                    brief.follow_through.agreed += 1;
                    brief.follow_through.event_ids.push(id);
                })
            }
            Event::ActionItemCompleted(e) => {
                Self::item(documents, tenant, &e.session_id, &e.item_id, |follow| {
                    follow.completed += 1;
                    follow.event_ids.push(id);
                })
            }
            Event::ActionItemDropped(e) => {
                Self::item(documents, tenant, &e.session_id, &e.item_id, |follow| {
                    follow.dropped += 1;
                    follow.event_ids.push(id);
                })
            }
            Event::InsightRecorded(e) => {
                let index = InsightIndex {
                    subject: e.subject_id.clone(),
                    periods: periods_of(applied.recorded_at).to_vec(),
                    kind: e.kind,
                    tags: e.tags.clone(),
                    text: e.text.clone(),
                    scopes: e.scopes.clone(),
                    retracted: false,
                    event_ids: vec![id],
                };
                documents.put(INSIGHTS, &format!("{tenant}/{}", e.insight_id), &index)?;
                Self::insight(documents, tenant, &e.insight_id, |_| {})
            }
            Event::InsightShared(e) => Self::insight(documents, tenant, &e.insight_id, |index| {
                index.scopes.extend(
                    e.added
                        .iter()
                        .filter(|s| !index.scopes.contains(s))
                        .copied()
                        .collect::<Vec<_>>(),
                );
                index.event_ids.push(id);
            }),
            Event::InsightNarrowed(e) => Self::insight(documents, tenant, &e.insight_id, |index| {
                index.scopes.retain(|scope| !e.removed.contains(scope));
                index.event_ids.push(id);
            }),
            Event::InsightRetracted(e) => {
                Self::insight(documents, tenant, &e.insight_id, |index| {
                    index.retracted = true;
                    index.event_ids.push(id);
                })
            }
            _ => Ok(()),
        }
    }
}
