//! The `ReadModels` gRPC service: queries over the projections' documents, with access decided
//! from the caller's token and the org directory, and every read on record.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use futures::StreamExt;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use ledger_domain::{Id, Role, check_period, from_timestamp, manages};
use ledger_projections::as_of::{AsOf, rebuild};
use ledger_projections::development::{self, DevelopmentReviews, Reader};
use ledger_projections::evaluation::{self, Brief, EvaluationBriefs, brief};
use ledger_projections::staffing::{self, Staffing};
use ledger_projections::{DocumentStore, Projection, ProjectionRunner};
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
const SUBSCRIBE: &str = "/dialogue.ledger.v1.ReadModels/Subscribe";
const GET_DEVELOPMENT_REVIEW: &str = "/dialogue.ledger.v1.ReadModels/GetDevelopmentReview";

/// The served models each subscribable read model is made of.
const EVALUATION_MODELS: [&str; 4] = [
    evaluation::GOALS,
    evaluation::SESSIONS,
    evaluation::ITEMS,
    evaluation::INSIGHTS,
];
const STAFFING_MODELS: [&str; 1] = [staffing::INSIGHTS];

type ChangeStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<api::ReadModelChange, Status>> + Send>>;

/// How long a query waits for the projection to reach what the log has acknowledged (so a
/// caller reads its own writes); after that it answers as of where the projection stands.
const FRESHNESS_PATIENCE: Duration = Duration::from_secs(2);

/// The runners of the projections the service reads.
#[derive(Debug, Clone)]
pub struct ReadModelRunners {
    pub briefs: ProjectionRunner,
    pub staffing: ProjectionRunner,
    pub development: ProjectionRunner,
}

#[derive(Debug, Clone)]
pub struct ReadModelsService {
    store: Arc<dyn EventStore>,
    documents: Arc<dyn DocumentStore>,
    briefs: ProjectionRunner,
    staffing: ProjectionRunner,
    development: ProjectionRunner,
    directory: Arc<CommandHandler>,
    access: AccessLog,
}

impl ReadModelsService {
    pub fn new(
        store: Arc<dyn EventStore>,
        documents: Arc<dyn DocumentStore>,
        runners: ReadModelRunners,
        directory: Arc<CommandHandler>,
        access: AccessLog,
    ) -> Self {
        let ReadModelRunners {
            briefs,
            staffing,
            development,
        } = runners;
        Self {
            store,
            documents,
            briefs,
            staffing,
            development,
            directory,
            access,
        }
    }

    /// The documents to answer from and where they stand: the live read models (fresh), or the
    /// projection folded afresh up to `as_of`.
    async fn documents_at(
        &self,
        as_of: Option<api::AsOf>,
        runner: &ProjectionRunner,
        projection: Arc<dyn Projection>,
        tenant: &str,
    ) -> Result<(Arc<dyn DocumentStore>, Option<Position>), Status> {
        let until = match as_of.and_then(|as_of| as_of.point) {
            None => return Ok((self.documents.clone(), self.fresh(runner).await?)),
            Some(api::as_of::Point::Position(p)) => {
                AsOf::Position(Position::new(p.commit, p.prepare))
            }
            Some(api::as_of::Point::Time(t)) => AsOf::Time(from_timestamp(&t)),
        };
        let (memory, reached) = rebuild(self.store.as_ref(), projection, tenant, until)
            .await
            .map_err(|error| {
                tracing::error!(%error, "rebuilding a read model as of a past point failed");
                Status::internal("internal error")
            })?;
        Ok((memory, reached))
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
        Ok(self.relation(caller, member).await?.is_some())
    }

    /// How `caller` stands to `member`: the member themself, in their manager chain now, or hr
    /// (in that order); `None` for anyone else.
    async fn relation(&self, caller: &Principal, member: &Id) -> Result<Option<Reader>, Status> {
        let actor = &caller.actor;
        if actor.has(Role::Member) && actor.subject == member.as_str() {
            return Ok(Some(Reader::Member));
        }
        if actor.has(Role::Member) {
            let references = ledger_domain::References {
                persons: vec![member.to_string()],
                ..Default::default()
            };
            let world = self
                .directory
                .load_world(&caller.tenant, references)
                .await?;
            let now = ledger_store::Timestamp::now().as_micros();
            if manages(&world, &actor.subject, member.as_str(), now) {
                return Ok(Some(Reader::ManagerChain));
            }
        }
        Ok(actor.has(Role::Hr).then_some(Reader::Hr))
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
        let caller = Principal::of(&request)?;
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
        let (documents, as_of) = self
            .documents_at(
                request.as_of,
                &self.briefs,
                Arc::new(EvaluationBriefs),
                caller.tenant.as_str(),
            )
            .await?;
        let view = brief_view(
            documents,
            caller.tenant.as_str(),
            member.as_str(),
            &request.period,
            as_of,
        )
        .await?;
        Ok(Response::new(view))
    }

    async fn get_staffing_profile(
        &self,
        request: Request<api::GetStaffingProfileRequest>,
    ) -> Result<Response<api::StaffingProfile>, Status> {
        let caller = Principal::of(&request)?;
        let request = request.into_inner();
        let member = Id::parse("member_id", &request.member_id).map_err(status::from_domain)?;
        let allowed = self.may_read_member(&caller, &member).await?;
        self.access
            .record(&caller, [member.to_string()], GET_STAFFING_PROFILE, allowed)
            .await;
        if !allowed {
            return Err(Status::permission_denied(
                "a staffing profile is read by the member, their manager chain and hr",
            ));
        }
        let tenant = caller.tenant.as_str();
        let (documents, as_of) = self
            .documents_at(request.as_of, &self.staffing, Arc::new(Staffing), tenant)
            .await?;
        let view = profile_view(documents, caller.tenant.as_str(), member.as_str(), as_of).await?;
        Ok(Response::new(view))
    }

    async fn get_development_review(
        &self,
        request: Request<api::GetDevelopmentReviewRequest>,
    ) -> Result<Response<api::DevelopmentReview>, Status> {
        let caller = Principal::of(&request)?;
        let request = request.into_inner();
        let member = Id::parse("member_id", &request.member_id).map_err(status::from_domain)?;
        let reader = self.relation(&caller, &member).await?;
        self.access
            .record(
                &caller,
                [member.to_string()],
                GET_DEVELOPMENT_REVIEW,
                reader.is_some(),
            )
            .await;
        let Some(reader) = reader else {
            return Err(Status::permission_denied(
                "a development review is read by the member, their manager chain and hr",
            ));
        };
        let tenant = caller.tenant.as_str();
        let development = Arc::new(DevelopmentReviews);
        let (documents, as_of) = self
            .documents_at(request.as_of, &self.development, development, tenant)
            .await?;
        let (evaluation_documents, _) = self
            .documents_at(
                request.as_of,
                &self.briefs,
                Arc::new(EvaluationBriefs),
                tenant,
            )
            .await?;
        let (tenant, member_id) = (tenant.to_owned(), member.to_string());
        let (found, follow) = blocking(move || {
            let found = development::review(
                documents.as_ref(),
                evaluation_documents.as_ref(),
                &tenant,
                &member_id,
                reader,
            )?;
            Ok((
                found,
                evaluation::follow_through(evaluation_documents.as_ref(), &tenant, &member_id)?,
            ))
        })
        .await?;
        let mut network: BTreeMap<String, api::NetworkCount> = BTreeMap::new();
        for partner in found.partners.values() {
            let count = network
                .entry(partner.relationship.clone())
                .or_insert_with(|| api::NetworkCount {
                    relationship: partner.relationship.clone(),
                    ..Default::default()
                });
            count.partners += 1;
            count.sessions += partner.sessions_held;
            count.event_ids.extend(ids(&partner.event_ids));
        }
        Ok(Response::new(api::DevelopmentReview {
            member_id: member.to_string(),
            goals: found
                .goals
                .into_iter()
                .map(|(goal_id, goal)| api::ReviewGoal {
                    goal_id,
                    title: goal.title,
                    kind: goal.kind,
                    period: goal.period,
                    status: goal.status,
                    progress_checks: goal.progress.len() as u32,
                    reflections: goal.reflections,
                    event_ids: ids(&goal.event_ids),
                })
                .collect(),
            insights: found
                .insights
                .into_iter()
                .map(|(insight_id, insight)| api::ReviewInsight {
                    insight_id,
                    kind: insight.kind,
                    tags: insight.tags,
                    text: insight.text,
                    recorded_at_micros: insight.recorded_at,
                    event_ids: ids(&insight.event_ids),
                })
                .collect(),
            network: network.into_values().collect(),
            action_items: Some(api::FollowThrough {
                agreed: follow.agreed,
                completed: follow.completed,
                dropped: follow.dropped,
                event_ids: ids(&follow.event_ids),
            }),
            as_of: position(as_of),
        }))
    }

    type SubscribeStream = ChangeStream;

    async fn subscribe(
        &self,
        request: Request<api::SubscribeRequest>,
    ) -> Result<Response<ChangeStream>, Status> {
        let caller = Principal::of(&request)?;
        let request = request.into_inner();
        let (models, runner, period): (&'static [&'static str], _, _) =
            match request.read_model.as_str() {
                "evaluation-brief" => {
                    check_period("period", &request.period).map_err(status::from_domain)?;
                    (
                        &EVALUATION_MODELS,
                        self.briefs.clone(),
                        Some(request.period.clone()),
                    )
                }
                "staffing-profile" => (&STAFFING_MODELS, self.staffing.clone(), None),
                _ => {
                    return Err(status::invalid_argument(
                        "read_model",
                        "must be evaluation-brief or staffing-profile",
                    ));
                }
            };
        for member in &request.member_ids {
            Id::parse("member_ids", member).map_err(status::from_domain)?;
        }
        let following = Following {
            caller,
            models,
            runner,
            period,
            members: request.member_ids,
        };
        let (sender, receiver) = mpsc::channel(64);
        tokio::spawn(
            self.clone()
                .follow_changes(following, request.after_checkpoint, sender),
        );
        Ok(Response::new(ReceiverStream::new(receiver).boxed()))
    }

    async fn find_staffing_candidates(
        &self,
        request: Request<api::FindStaffingCandidatesRequest>,
    ) -> Result<Response<api::FindStaffingCandidatesResponse>, Status> {
        let caller = Principal::of(&request)?;
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
        let (documents, as_of) = self
            .documents_at(
                request.as_of,
                &self.staffing,
                Arc::new(Staffing),
                caller.tenant.as_str(),
            )
            .await?;
        let tenant = caller.tenant.to_string();
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

/// A member's evaluation brief for `period`, as the API returns it.
async fn brief_view(
    documents: Arc<dyn DocumentStore>,
    tenant: &str,
    member: &str,
    period: &str,
    as_of: Option<Position>,
) -> Result<api::EvaluationBrief, Status> {
    let (tenant, member_id, period_owned) =
        (tenant.to_owned(), member.to_owned(), period.to_owned());
    let found =
        blocking(move || brief(documents.as_ref(), &tenant, &member_id, &period_owned)).await?;
    Ok(to_api(member, period, found, as_of))
}

/// A member's staffing profile, as the API returns it.
async fn profile_view(
    documents: Arc<dyn DocumentStore>,
    tenant: &str,
    member: &str,
    as_of: Option<Position>,
) -> Result<api::StaffingProfile, Status> {
    let (tenant, member_id) = (tenant.to_owned(), member.to_owned());
    let tags = blocking(move || staffing::profile(documents.as_ref(), &tenant, &member_id)).await?;
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
    Ok(api::StaffingProfile {
        member_id: member.to_owned(),
        tags,
        as_of: position(as_of),
    })
}

/// What a subscription follows.
#[derive(Debug, Clone)]
struct Following {
    caller: Principal,
    /// The served document models whose changes concern it.
    models: &'static [&'static str],
    runner: ProjectionRunner,
    /// Some(period) for evaluation briefs, None for staffing profiles.
    period: Option<String>,
    members: Vec<String>,
}

impl ReadModelsService {
    /// Sends each changed member's document, oldest change first, until the subscriber leaves.
    async fn follow_changes(
        self,
        following: Following,
        mut after: u64,
        sender: mpsc::Sender<Result<api::ReadModelChange, Status>>,
    ) {
        let prefix = format!("{}/", following.caller.tenant);
        let mut status = following.runner.status();
        let mut decided: HashMap<String, bool> = HashMap::new();
        loop {
            let documents = self.documents.clone();
            let changes = match blocking(move || documents.changes(after, 1024)).await {
                Ok(changes) => changes,
                Err(error) => {
                    let _ = sender.send(Err(error)).await;
                    return;
                }
            };
            let Some(last) = changes.last() else {
                tokio::select! {
                    changed = status.changed() => if changed.is_err() { return },
                    () = sender.closed() => return,
                }
                continue;
            };
            after = last.seq;
            // Each member once per batch, at their latest change.
            let mut latest: HashMap<String, u64> = HashMap::new();
            for change in changes
                .iter()
                .filter(|c| following.models.contains(&c.model.as_str()))
            {
                let Some(member) = change
                    .key
                    .strip_prefix(&prefix)
                    .and_then(|rest| rest.split('/').next())
                else {
                    continue;
                };
                if following.members.is_empty() || following.members.iter().any(|m| m == member) {
                    latest.insert(member.to_owned(), change.seq);
                }
            }
            let mut members: Vec<(u64, String)> = latest
                .into_iter()
                .map(|(member, seq)| (seq, member))
                .collect();
            members.sort();
            for (seq, member) in members {
                let Ok(id) = Id::parse("member_id", &member) else {
                    continue;
                };
                let allowed = match decided.get(&member) {
                    Some(allowed) => *allowed,
                    None => {
                        let Ok(allowed) = self.may_read_member(&following.caller, &id).await else {
                            return;
                        };
                        // Denials are recorded for members asked for by name, not for every member of an
                        // organisation-wide subscription.
                        if allowed || !following.members.is_empty() {
                            self.access
                                .record(&following.caller, [member.clone()], SUBSCRIBE, allowed)
                                .await;
                        }
                        decided.insert(member.clone(), allowed);
                        allowed
                    }
                };
                if !allowed {
                    continue;
                }
                let as_of = following.runner.status().borrow().position;
                let tenant = following.caller.tenant.as_str();
                let document = match &following.period {
                    Some(period) => {
                        brief_view(self.documents.clone(), tenant, &member, period, as_of)
                            .await
                            .map(api::read_model_change::Document::EvaluationBrief)
                    }
                    None => profile_view(self.documents.clone(), tenant, &member, as_of)
                        .await
                        .map(api::read_model_change::Document::StaffingProfile),
                };
                let change = document.map(|document| api::ReadModelChange {
                    checkpoint: seq,
                    member_id: member.clone(),
                    document: Some(document),
                });
                if sender.send(change).await.is_err() {
                    return;
                }
            }
        }
    }
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
