//! The `ReadModels` gRPC service: queries over the projections' documents, with access decided
//! from the caller's token and the org directory, and every read on record.

use std::sync::Arc;
use std::time::Duration;

use ledger_domain::{Id, Role, check_period, from_timestamp, manages};
use ledger_projections::as_of::{AsOf, rebuild};
use ledger_projections::evaluation::{Brief, EvaluationBriefs, brief};
use ledger_projections::staffing;
use ledger_projections::{DocumentStore, ProjectionRunner};
use ledger_proto::v1 as api;
use ledger_store::{EventStore, Position};
use tonic::{Request, Response, Status};

use crate::access::AccessLog;
use crate::auth::Principal;
use crate::commands::CommandHandler;
use crate::status;

const GET_EVALUATION_BRIEF: &str = "/dialogue.ledger.v1.ReadModels/GetEvaluationBrief";
const GET_STAFFING_PROFILE: &str = "/dialogue.ledger.v1.ReadModels/GetStaffingProfile";
const FIND_STAFFING_CANDIDATES: &str = "/dialogue.ledger.v1.ReadModels/FindStaffingCandidates";

/// How long a query waits for the projection to reach what the log has acknowledged (so a
/// caller reads its own writes); after that it answers as of where the projection stands.
const FRESHNESS_PATIENCE: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
pub struct ReadModelsService {
    store: Arc<dyn EventStore>,
    documents: Arc<dyn DocumentStore>,
    briefs: ProjectionRunner,
    staffing: ProjectionRunner,
    directory: Arc<CommandHandler>,
    access: AccessLog,
}

impl ReadModelsService {
    pub fn new(
        store: Arc<dyn EventStore>,
        documents: Arc<dyn DocumentStore>,
        briefs: ProjectionRunner,
        staffing: ProjectionRunner,
        directory: Arc<CommandHandler>,
        access: AccessLog,
    ) -> Self {
        Self {
            store,
            documents,
            briefs,
            staffing,
            directory,
            access,
        }
    }

    /// Waits (briefly) until `runner` has folded what the log has acknowledged, so callers read
    /// their own writes; returns where it stands.
    async fn fresh(&self, runner: &ProjectionRunner) -> Result<Option<Position>, Status> {
        let head = self
            .store
            .head()
            .await
            .map_err(|e| status::from_store(e, "reading the log head"))?;
        runner.wait_for(head, FRESHNESS_PATIENCE).await;
        Ok(runner.status().borrow().position)
    }

    /// Whether `caller` may read `member`'s evaluation or staffing material: the member
    /// themself, anyone in their manager chain now, and hr. Auditors see no content through
    /// read models.
    async fn may_read_member(&self, caller: &Principal, member: &Id) -> Result<bool, Status> {
        let actor = &caller.actor;
        if actor.has(Role::Hr) || (actor.has(Role::Member) && actor.subject == member.as_str()) {
            return Ok(true);
        }
        if !actor.has(Role::Member) {
            return Ok(false);
        }
        let references = ledger_domain::References {
            persons: vec![member.to_string()],
            ..Default::default()
        };
        let world = self
            .directory
            .load_world(&caller.tenant, references)
            .await?;
        let now = ledger_store::Timestamp::now().as_micros();
        Ok(manages(&world, &actor.subject, member.as_str(), now))
    }
}

fn counts(
    counted: &std::collections::BTreeMap<String, ledger_projections::evaluation::Counted>,
) -> Vec<api::Count> {
    counted
        .iter()
        .map(|(name, c)| api::Count {
            name: name.clone(),
            count: c.count,
            event_ids: c
                .event_ids
                .iter()
                .map(|id| id.as_bytes().to_vec())
                .collect(),
        })
        .collect()
}

fn ids(ids: &[uuid::Uuid]) -> Vec<Vec<u8>> {
    ids.iter().map(|id| id.as_bytes().to_vec()).collect()
}

fn to_api(
    member: &str,
    period: &str,
    brief: Brief,
    as_of: Option<ledger_store::Position>,
) -> api::EvaluationBrief {
    api::EvaluationBrief {
        member_id: member.to_owned(),
        period: period.to_owned(),
        goals: brief
            .goals
            .into_iter()
            .map(|(goal_id, goal)| api::BriefGoal {
                goal_id,
                title: goal.title,
                kind: goal.kind,
                status: goal.status,
                progress: goal
                    .progress
                    .into_iter()
                    .map(|p| api::ProgressPoint {
                        key_result_id: p.key_result_id,
                        value: p.value,
                        recorded_at_micros: p.recorded_at,
                        event_id: p.event_id.as_bytes().to_vec(),
                    })
                    .collect(),
                reflections: goal.reflections,
                event_ids: ids(&goal.event_ids),
            })
            .collect(),
        sessions_by_purpose: counts(&brief.purposes),
        sessions_by_relationship: counts(&brief.relationships),
        action_items: Some(api::FollowThrough {
            agreed: brief.follow_through.agreed,
            completed: brief.follow_through.completed,
            dropped: brief.follow_through.dropped,
            event_ids: ids(&brief.follow_through.event_ids),
        }),
        insights: brief
            .insights
            .into_iter()
            .map(|(insight_id, insight)| api::BriefInsight {
                insight_id,
                kind: insight.kind,
                tags: insight.tags,
                text: insight.text,
                event_ids: ids(&insight.event_ids),
            })
            .collect(),
        as_of: as_of.map(|p| api::Position {
            commit: p.commit(),
            prepare: p.prepare(),
        }),
    }
}

#[tonic::async_trait]
impl api::read_models_server::ReadModels for ReadModelsService {
    async fn get_evaluation_brief(
        &self,
        request: Request<api::GetEvaluationBriefRequest>,
    ) -> Result<Response<api::EvaluationBrief>, Status> {
        let caller = request
            .extensions()
            .get::<Principal>()
            .cloned()
            .ok_or_else(|| Status::unauthenticated("missing bearer token"))?;
        let request = request.into_inner();
        let member = Id::parse("member_id", &request.member_id).map_err(status::from_domain)?;
        check_period("period", &request.period).map_err(status::from_domain)?;
        let allowed = self.may_read_member(&caller, &member).await?;
        self.access
            .record(&caller, [member.to_string()], GET_EVALUATION_BRIEF, allowed)
            .await;
        if !allowed {
            return Err(Status::permission_denied(
                "an evaluation brief is read by the member, their manager chain and hr",
            ));
        }
        let (documents, as_of): (Arc<dyn DocumentStore>, _) = match request.as_of {
            None => {
                let head = self
                    .store
                    .head()
                    .await
                    .map_err(|e| status::from_store(e, "reading the log head"))?;
                self.briefs.wait_for(head, FRESHNESS_PATIENCE).await;
                let as_of = self.briefs.status().borrow().position;
                (self.documents.clone(), as_of)
            }
            Some(as_of) => {
                let until = match as_of {
                    api::get_evaluation_brief_request::AsOf::AsOfPosition(p) => {
                        AsOf::Position(Position::new(p.commit, p.prepare))
                    }
                    api::get_evaluation_brief_request::AsOf::AsOfTime(t) => {
                        AsOf::Time(from_timestamp(&t))
                    }
                };
                let rebuilt = rebuild(
                    self.store.as_ref(),
                    Arc::new(EvaluationBriefs),
                    caller.tenant.as_str(),
                    until,
                )
                .await;
                let (memory, reached) = rebuilt.map_err(|error| {
                    tracing::error!(%error, "rebuilding an evaluation brief as of a past point failed");
                    Status::internal("internal error")
                })?;
                (memory, reached)
            }
        };
        let (tenant, member_id, period) = (
            caller.tenant.to_string(),
            member.to_string(),
            request.period.clone(),
        );
        let brief = tokio::task::spawn_blocking(move || {
            brief(documents.as_ref(), &tenant, &member_id, &period)
        })
        .await
        .expect("reads do not panic")
        .map_err(|error| {
            tracing::error!(%error, "reading an evaluation brief failed");
            Status::internal("internal error")
        })?;
        Ok(Response::new(to_api(
            member.as_str(),
            &request.period,
            brief,
            as_of,
        )))
    }

    async fn get_staffing_profile(
        &self,
        request: Request<api::GetStaffingProfileRequest>,
    ) -> Result<Response<api::StaffingProfile>, Status> {
        let caller = principal(&request)?;
        let member =
            Id::parse("member_id", &request.into_inner().member_id).map_err(status::from_domain)?;
        let allowed = self.may_read_member(&caller, &member).await?;
        self.access
            .record(&caller, [member.to_string()], GET_STAFFING_PROFILE, allowed)
            .await;
        if !allowed {
            return Err(Status::permission_denied(
                "a staffing profile is read by the member, their manager chain and hr",
            ));
        }
        let as_of = self.fresh(&self.staffing).await?;
        let (documents, tenant, member_id) = (
            self.documents.clone(),
            caller.tenant.to_string(),
            member.to_string(),
        );
        let tags =
            blocking(move || staffing::profile(documents.as_ref(), &tenant, &member_id)).await?;
        let tags = tags
            .into_iter()
            .map(|(tag, found)| api::StaffingTag {
                tag,
                kinds: found.kinds.into_iter().collect(),
                evidence: found.evidence,
                latest_micros: found.latest,
                event_ids: ids(&found.event_ids),
            })
            .collect();
        Ok(Response::new(api::StaffingProfile {
            member_id: member.to_string(),
            tags,
            as_of: position(as_of),
        }))
    }

    async fn find_staffing_candidates(
        &self,
        request: Request<api::FindStaffingCandidatesRequest>,
    ) -> Result<Response<api::FindStaffingCandidatesResponse>, Status> {
        let caller = principal(&request)?;
        if !caller.actor.has(Role::Hr) {
            return Err(Status::permission_denied(
                "staffing candidates are searched by hr",
            ));
        }
        let request = request.into_inner();
        if request.skills.is_empty() && request.interests.is_empty() {
            return Err(status::invalid_argument(
                "skills",
                "name at least one skill or interest",
            ));
        }
        let limit = match request.limit {
            0 => 20,
            n if n <= 100 => n as usize,
            _ => return Err(status::invalid_argument("limit", "must be at most 100")),
        };
        let as_of = self.fresh(&self.staffing).await?;
        let (documents, tenant) = (self.documents.clone(), caller.tenant.to_string());
        let (skills, interests) = (request.skills, request.interests);
        let found = blocking(move || {
            staffing::candidates(documents.as_ref(), &tenant, &skills, &interests, limit)
        })
        .await?;
        let members: Vec<String> = found.iter().map(|c| c.member.clone()).collect();
        self.access
            .record(&caller, members, FIND_STAFFING_CANDIDATES, true)
            .await;
        let candidates = found
            .into_iter()
            .map(|c| api::StaffingCandidate {
                member_id: c.member,
                matched_skills: c.matched_skills.into_iter().collect(),
                matched_interests: c.matched_interests.into_iter().collect(),
                evidence: c.evidence,
                latest_micros: c.latest,
                event_ids: ids(&c.event_ids),
            })
            .collect();
        Ok(Response::new(api::FindStaffingCandidatesResponse {
            candidates,
            as_of: position(as_of),
        }))
    }
}

fn principal<T>(request: &Request<T>) -> Result<Principal, Status> {
    request
        .extensions()
        .get::<Principal>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("missing bearer token"))
}

fn position(position: Option<Position>) -> Option<api::Position> {
    position.map(|p| api::Position {
        commit: p.commit(),
        prepare: p.prepare(),
    })
}

async fn blocking<T: Send + 'static>(
    read: impl FnOnce() -> Result<T, ledger_projections::Error> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(read)
        .await
        .expect("reads do not panic")
        .map_err(|error| {
            tracing::error!(%error, "reading a read model failed");
            Status::internal("internal error")
        })
}
