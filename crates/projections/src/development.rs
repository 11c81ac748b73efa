//! The development review (育成): a member's growth and career goals, strengths and aspirations
//! over time, their dialogue network by relationship, and their action-item follow-through —
//! goals and follow-through read from the evaluation documents, which fold them already.
//!
//! Strengths and aspirations are served only while their subject shares them with the manager
//! chain or hr, with the scopes they are shared for, so that the query shows each reader only what
//! is shared with them.

use std::collections::BTreeMap;

use ledger_domain::{Event, Micros, pb};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::documents::{DocumentStore, Documents, Error, decode};
use crate::evaluation::{self, GoalDoc};
use crate::runner::{Applied, Projection};
use crate::sharing::{Sharing, serve};
use crate::text::Text;

/// Served: strengths and aspirations shared with the manager chain or hr, `{tenant}/{subject}/{insight}`.
pub const INSIGHTS: &str = "development-insight";
/// Served: the member's dialogue partners, `{tenant}/{member}/{partner}`.
pub const PARTNERS: &str = "development-partner";
/// Internal: a session's member, partner and relationship until held, and each insight's source.
const ROUTES: &str = "development-route";
const SOURCES: &str = "development-insight-source";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DevelopmentInsight {
    pub kind: i32,
    pub tags: Vec<String>,
    pub text: Text,
    pub recorded_at: Micros,
    pub shared_with_manager_chain: bool,
    pub shared_with_hr: bool,
    pub event_ids: Vec<Uuid>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Partner {
    pub relationship: String,
    pub sessions_held: u32,
    pub last_held: Micros,
    pub event_ids: Vec<Uuid>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Source {
    subject: String,
    sharing: Sharing,
    insight: DevelopmentInsight,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct SessionRoute {
    member: String,
    partner: String,
    relationship: String,
}

/// Who is reading a review, which decides the insights shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reader {
    /// The member themself: everything shared beyond the participants about them.
    Member,
    ManagerChain,
    Hr,
}

/// A member's development review.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Review {
    /// Growth and career goals, from the evaluation documents.
    pub goals: BTreeMap<String, GoalDoc>,
    /// Oldest first.
    pub insights: Vec<(String, DevelopmentInsight)>,
    pub partners: BTreeMap<String, Partner>,
}

/// `member`'s review: insights and partners from this projection's documents in `store`, goals
/// from the evaluation projection's in `evaluation` (which already folds every goal).
pub fn review(
    store: &dyn DocumentStore,
    evaluation: &dyn DocumentStore,
    tenant: &str,
    member: &str,
    reader: Reader,
) -> Result<Review, Error> {
    let prefix = format!("{tenant}/{member}/");
    let id = |key: &str| key[prefix.len()..].to_owned();
    let mut review = Review {
        goals: evaluation::goals(evaluation, tenant, member)?,
        ..Review::default()
    };
    let development = [pb::GoalKind::Growth, pb::GoalKind::Career].map(i32::from);
    review
        .goals
        .retain(|_, goal| development.contains(&goal.kind));
    for (key, body) in store.scan(INSIGHTS, &prefix)? {
        let insight: DevelopmentInsight = decode(&body)?;
        let visible = match reader {
            Reader::Member => true,
            Reader::ManagerChain => insight.shared_with_manager_chain,
            Reader::Hr => insight.shared_with_hr,
        };
        if visible {
            review.insights.push((id(&key), insight));
        }
    }
    review
        .insights
        .sort_by_key(|(_, insight)| insight.recorded_at);
    for (key, body) in store.scan(PARTNERS, &prefix)? {
        review.partners.insert(id(&key), decode(&body)?);
    }
    Ok(review)
}

fn is_development_kind(kind: i32) -> bool {
    [pb::InsightKind::Strength, pb::InsightKind::CareerAspiration]
        .iter()
        .any(|k| i32::from(*k) == kind)
}

/// The development review projection.
#[derive(Debug, Clone, Copy, Default)]
pub struct DevelopmentReviews;

impl DevelopmentReviews {
    fn sync(
        documents: &mut Documents<'_>,
        tenant: &str,
        insight: &str,
        change: impl FnOnce(&mut Source),
    ) -> Result<(), Error> {
        let source_key = [tenant, insight].join("/");
        let Some(mut source) = documents.get::<Source>(SOURCES, &source_key)? else {
            return Ok(());
        };
        let served = source.insight.shared_with_manager_chain || source.insight.shared_with_hr;
        change(&mut source);
        source.insight.shared_with_manager_chain =
            source.sharing.allows(pb::SharingScope::ManagerChain);
        source.insight.shared_with_hr = source.sharing.allows(pb::SharingScope::Hr);
        let served_key = [tenant, &source.subject, insight].join("/");
        let shared = source.insight.shared_with_manager_chain || source.insight.shared_with_hr;
        let shown = shared.then(|| source.insight.clone());
        serve(documents, INSIGHTS, &served_key, shown, served)?;
        documents.put(SOURCES, &source_key, source)
    }
}

impl Projection for DevelopmentReviews {
    fn name(&self) -> &'static str {
        "development-reviews"
    }

    fn version(&self) -> u32 {
        5
    }

    fn models(&self) -> &'static [&'static str] {
        &[INSIGHTS, PARTNERS, ROUTES, SOURCES]
    }

    fn followed(&self) -> &'static [&'static str] {
        &[INSIGHTS, PARTNERS]
    }

    fn apply(&self, applied: Applied<'_>, documents: &mut Documents<'_>) -> Result<(), Error> {
        let (tenant, id, at) = (applied.tenant, applied.id, applied.recorded_at);
        match applied.event {
            Event::SessionScheduled(e) => {
                let route = SessionRoute {
                    member: e.member_id.clone(),
                    partner: e.partner_id.clone(),
                    relationship: e.relationship().as_str_name().to_owned(),
                };
                documents.create(ROUTES, &[tenant, "session", &e.session_id].join("/"), route)
            }
            Event::SessionRescheduled(e) => {
                let key = [tenant, "session", &e.session_id].join("/");
                if documents.get::<SessionRoute>(ROUTES, &key)?.is_some() {
                    documents
                        .get_mut::<SessionRoute>(ROUTES, &key)?
                        .relationship = e.relationship().as_str_name().to_owned();
                }
                Ok(())
            }
            Event::SessionHeld(e) => {
                let key = [tenant, "session", &e.session_id].join("/");
                let Some(route) = documents.get::<SessionRoute>(ROUTES, &key)? else {
                    return Ok(());
                };
                // Nothing follows a session once held (the aggregate refuses a reschedule).
                documents.delete::<SessionRoute>(ROUTES, &key)?;
                let held_at = e.held_at.as_ref().map_or(at, ledger_domain::from_timestamp);
                let partner = documents.get_mut::<Partner>(
                    PARTNERS,
                    &[tenant, &route.member, &route.partner].join("/"),
                )?;
                partner.relationship = route.relationship;
                partner.sessions_held += 1;
                partner.last_held = partner.last_held.max(held_at);
                partner.event_ids.push(id);
                Ok(())
            }
            Event::InsightRecorded(e) if is_development_kind(e.kind) => {
                let source = Source {
                    subject: e.subject_id.clone(),
                    sharing: Sharing::recorded(&e.scopes),
                    insight: DevelopmentInsight {
                        kind: e.kind,
                        tags: e.tags.clone(),
                        text: Text::of(&applied, &e.sealed, 0, &e.text),
                        recorded_at: at,
                        event_ids: vec![id],
                        ..DevelopmentInsight::default()
                    },
                };
                documents.create(SOURCES, &[tenant, &e.insight_id].join("/"), source)?;
                Self::sync(documents, tenant, &e.insight_id, |_| {})
            }
            event => match Sharing::changed_insight(event) {
                Some(insight) => Self::sync(documents, tenant, insight, |source| {
                    source.sharing.apply(event);
                    source.insight.event_ids.push(id);
                }),
                None => Ok(()),
            },
        }
    }
}
