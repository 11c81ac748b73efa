//! Staffing (人材配置): what members shared for staffing — strengths, skills, experience,
//! interests, aspirations — by normalised tag, and a tag index to find candidates for a need.
//!
//! Only insights whose subject shares them for staffing, and only while they do, are served;
//! their source lives in an internal index that queries never read. Tags are normalised with
//! Unicode NFKC and lower case, so that full-width and half-width forms meet.

use std::collections::{BTreeMap, BTreeSet};

use ledger_domain::{Event, Micros, pb};
use serde::{Deserialize, Serialize};
use unicode_normalization::UnicodeNormalization;
use uuid::Uuid;

use crate::documents::{DocumentStore, Documents, Error, decode};
use crate::runner::{Applied, Projection};
use crate::sharing::{Sharing, serve};

/// Served: the subject's staffing-shared insights, `{tenant}/{subject}/{insight}`.
pub const INSIGHTS: &str = "staffing-insight";
/// Served: the tag index, `{tenant}/{tag}/{subject}/{insight}`.
pub const TAGS: &str = "staffing-tag";
const SOURCES: &str = "staffing-insight-source";

/// A tag as matched and grouped: NFKC, lower case, trimmed.
pub fn normalise(tag: &str) -> String {
    tag.nfkc().collect::<String>().trim().to_lowercase()
}

/// A normalised tag inside a document key, where `/` separates parts.
fn key_part(tag: &str) -> String {
    tag.replace('%', "%25").replace('/', "%2F")
}

fn is_skill(kind: i32) -> bool {
    [
        pb::InsightKind::Strength,
        pb::InsightKind::Skill,
        pb::InsightKind::Experience,
    ]
    .iter()
    .any(|k| i32::from(*k) == kind)
}

fn is_interest(kind: i32) -> bool {
    [pb::InsightKind::Interest, pb::InsightKind::CareerAspiration]
        .iter()
        .any(|k| i32::from(*k) == kind)
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StaffingInsight {
    pub kind: i32,
    /// Normalised.
    pub tags: Vec<String>,
    pub recorded_at: Micros,
    pub event_ids: Vec<Uuid>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Source {
    subject: String,
    sharing: Sharing,
    insight: StaffingInsight,
}

/// One tag of a profile.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProfileTag {
    pub kinds: BTreeSet<i32>,
    pub evidence: u32,
    pub latest: Micros,
    pub event_ids: Vec<Uuid>,
}

/// A member's staffing profile, by normalised tag.
pub fn profile(
    store: &dyn DocumentStore,
    tenant: &str,
    member: &str,
) -> Result<BTreeMap<String, ProfileTag>, Error> {
    let mut tags: BTreeMap<String, ProfileTag> = BTreeMap::new();
    for (_, body) in store.scan(INSIGHTS, &format!("{tenant}/{member}/"))? {
        let insight: StaffingInsight = decode(&body)?;
        for tag in &insight.tags {
            let entry = tags.entry(tag.clone()).or_default();
            entry.kinds.insert(insight.kind);
            entry.evidence += 1;
            entry.latest = entry.latest.max(insight.recorded_at);
            entry.event_ids.extend(&insight.event_ids);
        }
    }
    Ok(tags)
}

/// A ranked candidate and why.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Candidate {
    pub member: String,
    pub matched_skills: BTreeSet<String>,
    pub matched_interests: BTreeSet<String>,
    pub evidence: u32,
    pub latest: Micros,
    pub event_ids: Vec<Uuid>,
}

/// Members whose shared insights carry the requested skills (as strength, skill or experience)
/// or interests (as interest or aspiration), ranked by tags matched, then evidence, then recency.
pub fn candidates(
    store: &dyn DocumentStore,
    tenant: &str,
    skills: &[String],
    interests: &[String],
    limit: usize,
) -> Result<Vec<Candidate>, Error> {
    let mut found: BTreeMap<String, Candidate> = BTreeMap::new();
    let wanted = skills
        .iter()
        .map(|s| (normalise(s), true))
        .chain(interests.iter().map(|i| (normalise(i), false)));
    for (tag, as_skill) in wanted.collect::<BTreeSet<_>>() {
        for (key, body) in store.scan(TAGS, &format!("{tenant}/{}/", key_part(&tag)))? {
            let insight: StaffingInsight = decode(&body)?;
            let fits = if as_skill {
                is_skill(insight.kind)
            } else {
                is_interest(insight.kind)
            };
            if !fits {
                continue;
            }
            let member = key.split('/').nth(2).unwrap_or_default().to_owned();
            let candidate = found.entry(member.clone()).or_insert_with(|| Candidate {
                member,
                ..Candidate::default()
            });
            if as_skill {
                candidate.matched_skills.insert(tag.clone());
            } else {
                candidate.matched_interests.insert(tag.clone());
            }
            candidate.evidence += 1;
            candidate.latest = candidate.latest.max(insight.recorded_at);
            candidate.event_ids.extend(&insight.event_ids);
        }
    }
    let mut ranked: Vec<_> = found.into_values().collect();
    ranked.sort_by(|a, b| {
        let matched = |c: &Candidate| c.matched_skills.len() + c.matched_interests.len();
        (matched(b), b.evidence, b.latest)
            .cmp(&(matched(a), a.evidence, a.latest))
            .then_with(|| a.member.cmp(&b.member))
    });
    ranked.truncate(limit);
    Ok(ranked)
}

/// The staffing projection.
#[derive(Debug, Clone, Copy, Default)]
pub struct Staffing;

impl Staffing {
    /// Serves the insight (and indexes its tags) while it is shared for staffing; withdraws it
    /// once it no longer is (what was never served has nothing to withdraw).
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
        let served = source.sharing.allows(pb::SharingScope::Staffing);
        change(&mut source);
        let shared = source.sharing.allows(pb::SharingScope::Staffing);
        let subject = source.subject.clone();
        let served_key = [tenant, &subject, insight].join("/");
        for tag in &source.insight.tags {
            let tag_key = [tenant, &key_part(tag), &subject, insight].join("/");
            let shown = shared.then(|| source.insight.clone());
            serve(documents, TAGS, &tag_key, shown, served)?;
        }
        let shown = shared.then(|| source.insight.clone());
        serve(documents, INSIGHTS, &served_key, shown, served)?;
        documents.put(SOURCES, &source_key, source)
    }
}

impl Projection for Staffing {
    fn name(&self) -> &'static str {
        "staffing"
    }

    fn version(&self) -> u32 {
        3
    }

    fn models(&self) -> &'static [&'static str] {
        &[INSIGHTS, TAGS, SOURCES]
    }

    fn followed(&self) -> &'static [&'static str] {
        &[INSIGHTS]
    }

    fn apply(&self, applied: Applied<'_>, documents: &mut Documents<'_>) -> Result<(), Error> {
        let (tenant, id) = (applied.tenant, applied.id);
        match applied.event {
            Event::InsightRecorded(e) if is_skill(e.kind) || is_interest(e.kind) => {
                let tags: BTreeSet<String> = e
                    .tags
                    .iter()
                    .map(|t| normalise(t))
                    .filter(|t| !t.is_empty())
                    .collect();
                let source = Source {
                    subject: e.subject_id.clone(),
                    sharing: Sharing::recorded(&e.scopes),
                    insight: StaffingInsight {
                        kind: e.kind,
                        tags: tags.into_iter().collect(),
                        recorded_at: applied.recorded_at,
                        event_ids: vec![id],
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
