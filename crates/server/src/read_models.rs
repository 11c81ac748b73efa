//! The `ReadModels` gRPC service: queries over the projections' documents, with access decided
//! from the caller's token and the org directory, and every read on record.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use futures::StreamExt;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use ledger_domain::{Id, Micros, Role, check_period, from_timestamp, manages};
use ledger_privacy::KeyRing;
use ledger_projections::as_of::{AsOf, rebuild};
use ledger_projections::development::{self, DevelopmentReviews, Reader};
use ledger_projections::evaluation::{
    self, Brief, BriefBudget, BriefCache, EvaluationBriefs, GoalDoc, brief_in,
};
use ledger_projections::health::{self, DialogueHealth, Directory, Scope};
use ledger_projections::staffing::{self, Staffing};
use ledger_projections::{DocumentStore, Projection, ProjectionRunner, Text};
use ledger_proto::v1 as api;
use ledger_store::{AllRead, EventStore, Position};
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::access::AccessLog;
use crate::auth::Principal;
use crate::commands::CommandHandler;
use crate::status;

const GET_EVALUATION_BRIEF: &str = "/dialogue.ledger.v1.ReadModels/GetEvaluationBrief";
const GET_STAFFING_PROFILE: &str = "/dialogue.ledger.v1.ReadModels/GetStaffingProfile";
const FIND_STAFFING_CANDIDATES: &str = "/dialogue.ledger.v1.ReadModels/FindStaffingCandidates";
const SUBSCRIBE: &str = "/dialogue.ledger.v1.ReadModels/Subscribe";
const GET_DEVELOPMENT_REVIEW: &str = "/dialogue.ledger.v1.ReadModels/GetDevelopmentReview";

/// Projection status counts the events behind a projection up to this many.
pub(crate) const LAG_COUNT_LIMIT: usize = 4096;

/// The documents all brief subscriptions keep between their renderings, together (some tens of
/// MiB at most); members beyond are read afresh each time.
const BRIEF_CACHE_DOCUMENTS: usize = 131_072;
/// A subscription reads the change feed this many changes at a time.
const CHANGES_PAGE: usize = 1024;
/// At the head, a subscription gathers changes this long after sending what it had: a member
/// whose documents change every few milliseconds is rendered once for all of them instead of
/// once per projection commit.
const GATHER_CHANGES: Duration = Duration::from_millis(100);

/// The served models each subscribable read model is made of.
const EVALUATION_MODELS: [&str; 4] = [
    evaluation::GOALS,
    evaluation::SESSIONS,
    evaluation::ITEMS,
    evaluation::INSIGHTS,
];
const STAFFING_MODELS: [&str; 1] = [staffing::INSIGHTS];
/// A review also shows the goals and follow-through the evaluation documents hold.
const DEVELOPMENT_MODELS: [&str; 4] = [
    development::INSIGHTS,
    development::PARTNERS,
    evaluation::GOALS,
    evaluation::ITEMS,
];

type ChangeStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<api::ReadModelChange, Status>> + Send>>;

/// How fresh a query's answer must be, from the request's `x-ledger-freshness` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Freshness {
    /// The default: what the log had acknowledged when the query came (waits for it briefly), so
    /// a caller reads its own writes.
    Head,
    /// `current`: where the read model stands, at once (for tools that follow rather than write).
    Current,
}

impl Freshness {
    const HEADER: &str = "x-ledger-freshness";

    fn of<T>(request: &Request<T>) -> Result<Self, Status> {
        match request
            .metadata()
            .get(Self::HEADER)
            .map(|value| value.to_str())
        {
            None | Some(Ok("head")) => Ok(Self::Head),
            Some(Ok("current")) => Ok(Self::Current),
            Some(_) => Err(status::invalid_argument(
                Self::HEADER,
                "must be head (the default) or current",
            )),
        }
    }
}

/// How long a query waits for the projection to reach what the log has acknowledged (so a
/// caller reads its own writes); after that it answers as of where the projection stands.
const FRESHNESS_PATIENCE: Duration = Duration::from_secs(2);

/// The runners of the projections the service reads.
#[derive(Debug, Clone)]
pub struct ReadModelRunners {
    pub briefs: ProjectionRunner,
    pub staffing: ProjectionRunner,
    pub development: ProjectionRunner,
    pub health: ProjectionRunner,
}

impl ReadModelRunners {
    pub fn all(&self) -> [&ProjectionRunner; 4] {
        self.named().map(|(_, runner)| runner)
    }

    /// Each runner with its projection's name.
    pub fn named(&self) -> [(&'static str, &ProjectionRunner); 4] {
        [
            (EvaluationBriefs.name(), &self.briefs),
            (Staffing.name(), &self.staffing),
            (DevelopmentReviews.name(), &self.development),
            (DialogueHealth.name(), &self.health),
        ]
    }
}

/// How far a projection is behind the log.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Lag {
    /// Events after its position, counted up to a limit.
    pub(crate) events: u64,
    /// How long ago the oldest of them was recorded (0 when caught up).
    pub(crate) seconds: f64,
}

/// How far `position` is behind `head`, counting at most `count_up_to` events.
pub(crate) async fn lag(
    store: &dyn EventStore,
    position: Option<Position>,
    head: Option<Position>,
    count_up_to: usize,
) -> Result<Lag, ledger_store::Error> {
    if position >= head {
        return Ok(Lag {
            events: 0,
            seconds: 0.0,
        });
    }
    let behind = (store.read_all(AllRead::Forward { after: position }, count_up_to)).await?;
    let now = ledger_store::Timestamp::now().as_micros();
    let seconds = behind.first().map_or(0.0, |oldest| {
        (now - oldest.recorded_at.as_micros()).max(0) as f64 / 1e6
    });
    Ok(Lag {
        events: behind.len() as u64,
        seconds,
    })
}

/// Settings the queries depend on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadModelSettings {
    /// Aggregates standing on fewer distinct people are withheld.
    pub anonymity_threshold: u32,
    /// Managers holding more vertical sessions a month are flagged as overloaded.
    pub manager_overload_sessions: u32,
    /// Subscriptions open at once, across all callers.
    pub max_subscriptions: usize,
}

#[derive(Debug, Clone)]
pub struct ReadModelsService {
    store: Arc<dyn EventStore>,
    documents: Arc<dyn DocumentStore>,
    runners: ReadModelRunners,
    settings: ReadModelSettings,
    directory: Arc<CommandHandler>,
    access: AccessLog,
    /// A permit per open subscription.
    subscriptions: Arc<tokio::sync::Semaphore>,
    /// Opens the personal text that read models keep sealed.
    keys: Arc<KeyRing>,
    /// What brief subscriptions may keep between their renderings, together.
    brief_budget: Arc<BriefBudget>,
}

impl ReadModelsService {
    pub fn new(
        store: Arc<dyn EventStore>,
        documents: Arc<dyn DocumentStore>,
        runners: ReadModelRunners,
        settings: ReadModelSettings,
        directory: Arc<CommandHandler>,
        access: AccessLog,
        keys: Arc<KeyRing>,
    ) -> Self {
        Self {
            store,
            documents,
            runners,
            keys,
            subscriptions: crate::telemetry::observe_subscriptions(settings.max_subscriptions),
            settings,
            directory,
            access,
            brief_budget: BriefBudget::new(BRIEF_CACHE_DOCUMENTS),
        }
    }

    /// The documents to answer from and where they stand: the live read models (fresh), or the
    /// projection folded afresh up to `as_of`.
    async fn documents_at(
        &self,
        freshness: Freshness,
        as_of: Option<api::AsOf>,
        runner: &ProjectionRunner,
        projection: Arc<dyn Projection>,
        tenant: &str,
    ) -> Result<(Arc<dyn DocumentStore>, Option<Position>), Status> {
        let until = match as_of.and_then(|as_of| as_of.point) {
            None if freshness == Freshness::Current => {
                return Ok((self.documents.clone(), runner.status().borrow().position));
            }
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

    /// Whether `caller` may read `unit`'s aggregates: hr, and the unit's department managers (in
    /// the manager chain of everyone in it now). Auditors see no read models.
    async fn may_read_unit(&self, caller: &Principal, unit: &Id) -> Result<bool, Status> {
        let actor = &caller.actor;
        if actor.has(Role::Hr) {
            return Ok(true);
        }
        if !actor.has(Role::Member) {
            return Ok(false);
        }
        let (documents, tenant) = (self.documents.clone(), caller.tenant.to_string());
        let (subject, unit) = (actor.subject.clone(), unit.to_string());
        let now = ledger_store::Timestamp::now().as_micros();
        blocking(move || {
            Ok(Directory::load(documents.as_ref(), &tenant)?.manages_unit(&subject, &unit, now))
        })
        .await
    }

    /// The org unit and period a unit query names, checked, once the caller may read the unit.
    async fn unit_scope(
        &self,
        caller: &Principal,
        org_unit_id: &str,
        period: &str,
    ) -> Result<Id, Status> {
        let unit = Id::parse("org_unit_id", org_unit_id).map_err(status::from_domain)?;
        check_period("period", period).map_err(status::from_domain)?;
        // Unit aggregates are about no one person, so they leave no access record.
        if !self.may_read_unit(caller, &unit).await? {
            return Err(Status::permission_denied(
                "an org unit's aggregates are read by hr and the unit's department managers",
            ));
        }
        Ok(unit)
    }
}

/// The moment an as-of query stands at: its time, or now.
fn moment(as_of: Option<&api::AsOf>) -> Micros {
    match as_of.and_then(|a| a.point.as_ref()) {
        Some(api::as_of::Point::Time(t)) => from_timestamp(t),
        _ => ledger_store::Timestamp::now().as_micros(),
    }
}

fn coverage(found: &health::Coverage) -> api::Coverage {
    api::Coverage {
        population: found.population,
        covered: found.covered,
        sessions: found.sessions,
        ratio: if found.population == 0 {
            0.0
        } else {
            f64::from(found.covered) / f64::from(found.population)
        },
    }
}

fn follow_through(follow: &evaluation::FollowThrough) -> api::FollowThrough {
    api::FollowThrough {
        agreed: follow.agreed,
        completed: follow.completed,
        dropped: follow.dropped,
        event_ids: ids(&follow.event_ids),
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
                erased: goal.title.is_erased() || goal.reflections.iter().any(Text::is_erased),
                title: goal.title.into_shown(),
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
                reflections: goal.reflections.into_iter().map(Text::into_shown).collect(),
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
                erased: insight.text.is_erased(),
                text: insight.text.into_shown(),
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
        let freshness = Freshness::of(&request)?;
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
                freshness,
                request.as_of,
                &self.runners.briefs,
                Arc::new(EvaluationBriefs),
                caller.tenant.as_str(),
            )
            .await?;
        let view = brief_view(
            &self.keys,
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
        let freshness = Freshness::of(&request)?;
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
            .documents_at(
                freshness,
                request.as_of,
                &self.runners.staffing,
                Arc::new(Staffing),
                tenant,
            )
            .await?;
        let view = profile_view(documents, caller.tenant.as_str(), member.as_str(), as_of).await?;
        Ok(Response::new(view))
    }

    async fn get_development_review(
        &self,
        request: Request<api::GetDevelopmentReviewRequest>,
    ) -> Result<Response<api::DevelopmentReview>, Status> {
        let caller = Principal::of(&request)?;
        let freshness = Freshness::of(&request)?;
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
            .documents_at(
                freshness,
                request.as_of,
                &self.runners.development,
                development,
                tenant,
            )
            .await?;
        let (evaluation_documents, _) = self
            .documents_at(
                freshness,
                request.as_of,
                &self.runners.briefs,
                Arc::new(EvaluationBriefs),
                tenant,
            )
            .await?;
        let view = review_view(
            &self.keys,
            documents,
            evaluation_documents,
            tenant,
            member.as_str(),
            reader,
            as_of,
        )
        .await?;
        Ok(Response::new(view))
    }

    async fn get_dialogue_health(
        &self,
        request: Request<api::GetDialogueHealthRequest>,
    ) -> Result<Response<api::DialogueHealth>, Status> {
        let caller = Principal::of(&request)?;
        let freshness = Freshness::of(&request)?;
        let request = request.into_inner();
        let unit = self
            .unit_scope(&caller, &request.org_unit_id, &request.period)
            .await?;
        let tenant = caller.tenant.as_str();
        let now = moment(request.as_of.as_ref());
        let (documents, as_of) = self
            .documents_at(
                freshness,
                request.as_of,
                &self.runners.health,
                Arc::new(DialogueHealth),
                tenant,
            )
            .await?;
        let (evaluation_documents, _) = self
            .documents_at(
                freshness,
                request.as_of,
                &self.runners.briefs,
                Arc::new(EvaluationBriefs),
                tenant,
            )
            .await?;
        let overload = self.settings.manager_overload_sessions;
        let (tenant, unit_id, period) =
            (tenant.to_owned(), unit.to_string(), request.period.clone());
        let found = blocking(move || {
            let scope = Scope {
                tenant: &tenant,
                unit: &unit_id,
                period: &period,
                now,
            };
            health::dialogue_health(
                documents.as_ref(),
                evaluation_documents.as_ref(),
                scope,
                overload,
            )
        })
        .await?
        .ok_or_else(|| Status::not_found(format!("org unit {unit}")))?;
        let reflections = &found.reflections;
        let resolved: u32 = (1..=5u32)
            .zip(reflections.by_resolve)
            .map(|(resolve, count)| resolve * count)
            .sum();
        Ok(Response::new(api::DialogueHealth {
            org_unit_id: unit.to_string(),
            previous_period: ledger_projections::previous(&request.period).unwrap_or_default(),
            period: request.period,
            coverage: Some(coverage(&found.coverage)),
            sessions_per_person_month: found.sessions_per_person_month,
            median_days_between: found.median_days_between,
            sessions_by_relationship: counts(&found.relationships),
            sessions_by_purpose: counts(&found.purposes),
            purpose_drift: found
                .purpose_drift
                .into_iter()
                .map(|share| api::PurposeShare {
                    purpose: share.purpose,
                    share: share.share,
                    previous_share: share.previous_share,
                })
                .collect(),
            total_drift: found.total_drift,
            managers: found
                .managers
                .into_iter()
                .map(|(manager_id, load)| api::ManagerLoad {
                    manager_id,
                    direct_reports: load.direct_reports,
                    sessions: load.sessions,
                    members_met: load.members_met,
                    overloaded: load.overloaded,
                    event_ids: ids(&load.event_ids),
                })
                .collect(),
            overload_threshold: overload,
            action_items: Some(follow_through(&found.follow_through)),
            reflections: Some(api::Reflections {
                count: reflections.count,
                by_resolve: reflections.by_resolve.to_vec(),
                mean_resolve: if reflections.count == 0 {
                    0.0
                } else {
                    f64::from(resolved) / f64::from(reflections.count)
                },
                event_ids: ids(&reflections.event_ids),
            }),
            goal_progress: Some(api::GoalProgressAroundSessions {
                before: found.goal_progress.before,
                after: found.goal_progress.after,
                sessions_followed: found.goal_progress.sessions_followed,
            }),
            as_of: position(as_of),
        }))
    }

    async fn get_engagement_context(
        &self,
        request: Request<api::GetEngagementContextRequest>,
    ) -> Result<Response<api::EngagementContext>, Status> {
        let caller = Principal::of(&request)?;
        let freshness = Freshness::of(&request)?;
        let request = request.into_inner();
        let unit = self
            .unit_scope(&caller, &request.org_unit_id, &request.period)
            .await?;
        let tenant = caller.tenant.as_str();
        let now = moment(request.as_of.as_ref());
        let (documents, as_of) = self
            .documents_at(
                freshness,
                request.as_of,
                &self.runners.health,
                Arc::new(DialogueHealth),
                tenant,
            )
            .await?;
        let anonymity = self.settings.anonymity_threshold;
        let (tenant, unit_id, period) =
            (tenant.to_owned(), unit.to_string(), request.period.clone());
        let found = blocking(move || {
            let scope = Scope {
                tenant: &tenant,
                unit: &unit_id,
                period: &period,
                now,
            };
            health::engagement_context(documents.as_ref(), scope, anonymity)
        })
        .await?
        .ok_or_else(|| Status::not_found(format!("org unit {unit}")))?;
        Ok(Response::new(api::EngagementContext {
            org_unit_id: unit.to_string(),
            period: request.period,
            surveys: found
                .surveys
                .into_iter()
                .map(|survey| api::SurveyScore {
                    change: survey.previous_score.map(|before| survey.score - before),
                    metric: survey.metric,
                    score: survey.score,
                    respondents: survey.respondents,
                    previous_score: survey.previous_score,
                    event_ids: ids(&survey.event_ids),
                })
                .collect(),
            coverage: Some(coverage(&found.coverage)),
            sessions_by_purpose: counts(&found.purposes),
            themes: found
                .themes
                .into_iter()
                .map(|theme| api::Theme {
                    tag: theme.tag,
                    people: theme.people,
                    insights: theme.insights,
                })
                .collect(),
            themes_withheld: found.themes_withheld,
            anonymity_threshold: anonymity,
            as_of: position(as_of),
        }))
    }

    async fn get_projection_status(
        &self,
        request: Request<api::GetProjectionStatusRequest>,
    ) -> Result<Response<api::GetProjectionStatusResponse>, Status> {
        Principal::of(&request)?;
        let head = self
            .store
            .head()
            .await
            .map_err(|e| status::from_store(e, "reading the log head"))?;
        let mut projections = Vec::new();
        for (name, runner) in self.runners.named() {
            let status = *runner.status().borrow();
            let lag = lag(self.store.as_ref(), status.position, head, LAG_COUNT_LIMIT)
                .await
                .map_err(|e| status::from_store(e, "reading the log"))?;
            projections.push(api::ProjectionState {
                projection: name.to_owned(),
                position: position(status.position),
                lag_events: lag.events,
                lag_seconds: lag.seconds,
                caught_up: status.caught_up,
                running_here: status.running_here,
            });
        }
        Ok(Response::new(api::GetProjectionStatusResponse {
            head: position(head),
            projections,
        }))
    }

    type SubscribeStream = ChangeStream;

    async fn subscribe(
        &self,
        request: Request<api::SubscribeRequest>,
    ) -> Result<Response<ChangeStream>, Status> {
        let caller = Principal::of(&request)?;
        let request = request.into_inner();
        let read_model = match request.read_model.as_str() {
            "evaluation-brief" => {
                check_period("period", &request.period).map_err(status::from_domain)?;
                Subscribed::Brief {
                    period: request.period.clone(),
                }
            }
            "staffing-profile" => Subscribed::Profile,
            "development-review" => Subscribed::Review,
            _ => {
                return Err(status::invalid_argument(
                    "read_model",
                    "must be evaluation-brief, staffing-profile or development-review",
                ));
            }
        };
        for member in &request.member_ids {
            Id::parse("member_ids", member).map_err(status::from_domain)?;
        }
        let following = Following {
            caller,
            read_model,
            members: request.member_ids,
        };
        let Ok(open) = self.subscriptions.clone().try_acquire_owned() else {
            return Err(Status::resource_exhausted(
                "too many subscriptions are open; try again later",
            ));
        };
        let (sender, receiver) = mpsc::channel(64);
        let follow = self
            .clone()
            .follow_changes(following, request.after_checkpoint, sender);
        let span = tracing::info_span!("subscription", read_model = %request.read_model);
        tokio::spawn(
            async move {
                follow.await;
                drop(open);
            }
            .instrument(span),
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
        let freshness = Freshness::of(&request)?;
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
                freshness,
                request.as_of,
                &self.runners.staffing,
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
    keys: &Arc<KeyRing>,
    documents: Arc<dyn DocumentStore>,
    tenant: &str,
    member: &str,
    period: &str,
    as_of: Option<Position>,
) -> Result<api::EvaluationBrief, Status> {
    let mut views = briefs_view(
        keys,
        documents,
        tenant,
        vec![member.to_owned()],
        period,
        as_of,
        None,
    )
    .await?;
    Ok(views.remove(0))
}

/// Members' evaluation briefs for `period`, as the API returns them, read together: one
/// moment and one read transaction for them all. A subscription's `kept` briefs spare reading
/// again what has not changed since its last.
async fn briefs_view(
    keys: &Arc<KeyRing>,
    documents: Arc<dyn DocumentStore>,
    tenant: &str,
    members: Vec<String>,
    period: &str,
    as_of: Option<Position>,
    kept: Option<Kept>,
) -> Result<Vec<api::EvaluationBrief>, Status> {
    let (tenant_owned, period_owned) = (tenant.to_owned(), period.to_owned());
    let found = blocking(move || {
        let mut reads = documents.reads()?;
        let briefs = match kept {
            Some(Kept { cache, seen }) => {
                let mut cache = cache.lock().expect("no rendering panics");
                cache.briefs(&mut *reads, &members, seen)?
            }
            None => (members.iter())
                .map(|member| brief_in(&mut *reads, &tenant_owned, member, &period_owned))
                .collect::<Result<_, _>>()?,
        };
        Ok(members.into_iter().zip(briefs).collect::<Vec<_>>())
    })
    .await?;
    let mut views = Vec::with_capacity(found.len());
    for (member, mut brief) in found {
        let goals = brief.goals.values_mut().flat_map(goal_texts);
        let insights = brief.insights.values_mut().map(|insight| &mut insight.text);
        open_texts(keys, tenant, goals.chain(insights).collect()).await?;
        views.push(to_api(&member, period, brief, as_of));
    }
    Ok(views)
}

/// A brief subscription's briefs, kept between its renderings, and how far it read the change
/// feed before this one.
struct Kept {
    cache: Arc<std::sync::Mutex<BriefCache>>,
    seen: u64,
}

/// A member's development review as `reader` may see it, as the API returns it.
async fn review_view(
    keys: &Arc<KeyRing>,
    documents: Arc<dyn DocumentStore>,
    evaluation_documents: Arc<dyn DocumentStore>,
    tenant: &str,
    member: &str,
    reader: Reader,
    as_of: Option<Position>,
) -> Result<api::DevelopmentReview, Status> {
    let (tenant_owned, member_id) = (tenant.to_owned(), member.to_owned());
    let (found, follow) = blocking(move || {
        let found = development::review(
            documents.as_ref(),
            evaluation_documents.as_ref(),
            &tenant_owned,
            &member_id,
            reader,
        )?;
        Ok((
            found,
            evaluation::follow_through(evaluation_documents.as_ref(), &tenant_owned, &member_id)?,
        ))
    })
    .await?;
    let mut found = found;
    let goals = found.goals.values_mut().flat_map(goal_texts);
    let insights = found
        .insights
        .iter_mut()
        .map(|(_, insight)| &mut insight.text);
    open_texts(keys, tenant, goals.chain(insights).collect()).await?;
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
    Ok(api::DevelopmentReview {
        member_id: member.to_owned(),
        goals: found
            .goals
            .into_iter()
            .map(|(goal_id, goal)| api::ReviewGoal {
                goal_id,
                erased: goal.title.is_erased() || goal.reflections.iter().any(Text::is_erased),
                title: goal.title.into_shown(),
                kind: goal.kind,
                period: goal.period,
                status: goal.status,
                progress_checks: goal.progress.len() as u32,
                reflections: goal.reflections.into_iter().map(Text::into_shown).collect(),
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
                erased: insight.text.is_erased(),
                text: insight.text.into_shown(),
                recorded_at_micros: insight.recorded_at,
                event_ids: ids(&insight.event_ids),
            })
            .collect(),
        network: network.into_values().collect(),
        action_items: Some(follow_through(&follow)),
        as_of: position(as_of),
    })
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

/// The read model a subscription follows.
#[derive(Debug, Clone)]
enum Subscribed {
    Brief { period: String },
    Profile,
    Review,
}

impl Subscribed {
    /// The served document models whose changes concern it.
    fn models(&self) -> &'static [&'static str] {
        match self {
            Self::Brief { .. } => &EVALUATION_MODELS,
            Self::Profile => &STAFFING_MODELS,
            Self::Review => &DEVELOPMENT_MODELS,
        }
    }
}

/// What a subscription follows.
#[derive(Debug, Clone)]
struct Following {
    caller: Principal,
    read_model: Subscribed,
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
        // The runner whose position a change is reported at, and every runner whose documents
        // the read model shows (a review shows the evaluation projection's goals too).
        let (runner, mut statuses) = match following.read_model {
            Subscribed::Brief { .. } => (&self.runners.briefs, vec![self.runners.briefs.status()]),
            Subscribed::Profile => (&self.runners.staffing, vec![self.runners.staffing.status()]),
            Subscribed::Review => (
                &self.runners.development,
                vec![
                    self.runners.development.status(),
                    self.runners.briefs.status(),
                ],
            ),
        };
        let models = following.read_model.models();
        let mut decided: HashMap<String, Option<Reader>> = HashMap::new();
        let cache = match &following.read_model {
            Subscribed::Brief { period } => {
                let tenant = following.caller.tenant.as_str();
                let cache = BriefCache::new(tenant, period, self.brief_budget.clone());
                Some(Arc::new(std::sync::Mutex::new(cache)))
            }
            Subscribed::Profile | Subscribed::Review => None,
        };
        // Where the store can show a commit's changes after the commit (another projection's
        // earlier commit still in flight), it says when; otherwise a runner's commit does.
        let mut visible = self.documents.visible_changes();
        loop {
            if let Some(visible) = &mut visible {
                visible.borrow_and_update();
            }
            let (documents, tenant) = (self.documents.clone(), following.caller.tenant.clone());
            let changes =
                match blocking(move || documents.changes(tenant.as_str(), after, CHANGES_PAGE))
                    .await
                {
                    Ok(changes) => changes,
                    Err(error) => {
                        let _ = sender.send(Err(error)).await;
                        return;
                    }
                };
            let Some(last) = changes.last() else {
                let more = async {
                    match &mut visible {
                        Some(visible) => visible.changed().await.is_ok(),
                        None => {
                            let statuses = statuses.iter_mut().map(|s| Box::pin(s.changed()));
                            let (changed, _, _) = futures::future::select_all(statuses).await;
                            changed.is_ok()
                        }
                    }
                };
                tokio::select! {
                    more = more => if !more { return },
                    () = sender.closed() => return,
                }
                continue;
            };
            after = last.seq;
            // Each member once per batch, at their latest change.
            let mut latest: HashMap<String, u64> = HashMap::new();
            for change in changes
                .iter()
                .filter(|c| models.contains(&c.model.as_str()))
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
            // Who may see whom first, then the documents: a brief subscription reads all of the
            // batch's briefs together.
            let mut shown = Vec::with_capacity(members.len());
            for (seq, member) in members {
                let Ok(id) = Id::parse("member_id", &member) else {
                    continue;
                };
                let reader = match decided.get(&member) {
                    Some(reader) => *reader,
                    None => {
                        let Ok(reader) = self.relation(&following.caller, &id).await else {
                            return;
                        };
                        let allowed = reader.is_some();
                        // Denials are recorded for members asked for by name, not for every member of an
                        // organisation-wide subscription.
                        if allowed || !following.members.is_empty() {
                            self.access
                                .record(&following.caller, [member.clone()], SUBSCRIBE, allowed)
                                .await;
                        }
                        decided.insert(member.clone(), reader);
                        reader
                    }
                };
                if let Some(reader) = reader {
                    shown.push((seq, member, reader));
                }
            }
            let as_of = runner.status().borrow().position;
            let kept = cache.clone().map(|cache| Kept { cache, seen: after });
            let changed = self
                .render(&following.read_model, &following.caller, shown, as_of, kept)
                .await;
            for change in changed {
                if sender.send(change).await.is_err() {
                    return;
                }
            }
            if changes.len() < CHANGES_PAGE {
                tokio::select! {
                    () = tokio::time::sleep(GATHER_CHANGES) => {}
                    () = sender.closed() => return,
                }
            }
        }
    }

    /// Each shown member's document, as a change at its `seq`: a brief subscription's briefs
    /// read together, one moment for them all, from what it `kept` of its last.
    async fn render(
        &self,
        read_model: &Subscribed,
        caller: &Principal,
        shown: Vec<(u64, String, Reader)>,
        as_of: Option<Position>,
        kept: Option<Kept>,
    ) -> Vec<Result<api::ReadModelChange, Status>> {
        use api::read_model_change::Document;
        let tenant = caller.tenant.as_str();
        let change = |seq, member_id, document| api::ReadModelChange {
            checkpoint: seq,
            member_id,
            document: Some(document),
        };
        let mut changed = Vec::with_capacity(shown.len());
        match read_model {
            Subscribed::Brief { period } => {
                let members = shown.iter().map(|(_, member, _)| member.clone()).collect();
                let documents = self.documents.clone();
                match briefs_view(&self.keys, documents, tenant, members, period, as_of, kept).await
                {
                    Ok(briefs) => changed.extend(shown.into_iter().zip(briefs).map(
                        |((seq, member, _), brief)| {
                            Ok(change(seq, member, Document::EvaluationBrief(brief)))
                        },
                    )),
                    Err(error) => changed.push(Err(error)),
                }
            }
            Subscribed::Profile => {
                for (seq, member, _) in shown {
                    let documents = self.documents.clone();
                    let profile = profile_view(documents, tenant, &member, as_of).await;
                    changed
                        .push(profile.map(|p| change(seq, member, Document::StaffingProfile(p))));
                }
            }
            Subscribed::Review => {
                for (seq, member, reader) in shown {
                    let documents = self.documents.clone();
                    let review = review_view(
                        &self.keys,
                        documents.clone(),
                        documents,
                        tenant,
                        &member,
                        reader,
                        as_of,
                    )
                    .await;
                    changed
                        .push(review.map(|r| change(seq, member, Document::DevelopmentReview(r))));
                }
            }
        }
        changed
    }
}

fn goal_texts(goal: &mut GoalDoc) -> impl Iterator<Item = &mut Text> {
    std::iter::once(&mut goal.title).chain(goal.reflections.iter_mut())
}

/// Opens the personal text a read model keeps sealed; text whose key was destroyed (its
/// person erased) becomes [`Text::Erased`].
async fn open_texts(
    keys: &Arc<KeyRing>,
    tenant: &str,
    texts: Vec<&mut Text>,
) -> Result<(), Status> {
    for text in texts {
        let Some((stream, event_id, field, sealed)) = text.sealed() else {
            continue;
        };
        let stream = stream.to_owned();
        let sealed = sealed.ok_or_else(|| {
            status::from_keys(
                ledger_privacy::Error::Tampered,
                "decoding a read model's text",
            )
        })?;
        let opened = keys
            .open_fields(tenant, &stream, event_id, &sealed)
            .await
            .map_err(|e| status::from_keys(e, "opening a read model's text"))?;
        *text = match opened {
            Some(fields) => Text::Clear(fields.into_iter().nth(field).unwrap_or_default()),
            None => Text::Erased,
        };
    }
    Ok(())
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
