//! The command mix: an organisation set up through the directory, then each client acting as
//! members in turn, each time one 1on1 story of ten commands (schedule, agenda, held, note,
//! action item agreed and completed, insight shared for evaluation, goal set and progressed,
//! reflection), while evaluation briefs are queried at a set rate, a subscription follows the
//! briefs, and projection lag is sampled.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use hdrhistogram::Histogram;
use ledger_projections::periods_of;
use ledger_proto::events as pb;
use ledger_proto::v1 as api;
use ledger_proto::v1::goals_client::GoalsClient;
use ledger_proto::v1::insights_client::InsightsClient;
use ledger_proto::v1::org_directory_client::OrgDirectoryClient;
use ledger_proto::v1::read_models_client::ReadModelsClient;
use ledger_proto::v1::sessions_client::SessionsClient;
use tonic::transport::Channel;
use tonic::{Request, Status};

use crate::RunOptions;
use crate::report::{Figures, Server};
use crate::server::Target;

/// Members per manager.
const TEAM: usize = 8;
/// Queries in flight at most; beyond it the query rate is not met (and the report says so).
const QUERIES_IN_FLIGHT: usize = 256;
const LAG_SAMPLE_EVERY: Duration = Duration::from_millis(250);

/// Latencies (µs) by what was measured, and failures by gRPC code.
#[derive(Debug, Default)]
struct Recorder {
    latencies: BTreeMap<&'static str, Histogram<u64>>,
    errors: BTreeMap<String, u64>,
}

impl Recorder {
    fn record(&mut self, what: &'static str, took: Duration, outcome: Result<(), &Status>) {
        match outcome {
            Ok(()) => {
                let histogram = self
                    .latencies
                    .entry(what)
                    .or_insert_with(crate::report::histogram);
                histogram.saturating_record(took.as_micros() as u64);
            }
            Err(status) => {
                let key = format!("{what}: {:?}", status.code());
                if !self.errors.contains_key(&key) {
                    eprintln!("{key}: {}", status.message());
                }
                *self.errors.entry(key).or_default() += 1;
            }
        }
    }

    fn merge(&mut self, other: Recorder) {
        for (what, histogram) in other.latencies {
            match self.latencies.get_mut(what) {
                Some(mine) => mine.add(&histogram).expect("same bounds"),
                None => {
                    self.latencies.insert(what, histogram);
                }
            }
        }
        for (code, count) in other.errors {
            *self.errors.entry(code).or_default() += count;
        }
    }
}

fn authed<T>(token: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("a token is ASCII"),
    );
    request
}

fn now() -> prost_types::Timestamp {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    prost_types::Timestamp {
        seconds: since.as_secs() as i64,
        nanos: 0,
    }
}

/// The current calendar year (a brief period that every session of this run falls in).
fn this_year() -> String {
    let [year, ..] = periods_of(ledger_store::Timestamp::now().as_micros());
    year
}

/// The organisation: `members` people, a manager for every [`TEAM`] of them.
struct Org {
    tenant: String,
    members: Vec<String>,
    managers: Vec<String>,
    tokens: Vec<String>,
}

impl Org {
    fn manager_of(&self, member: usize) -> &str {
        &self.managers[member / TEAM]
    }
}

async fn set_up(target: &Target, channel: &Channel, options: &RunOptions) -> anyhow::Result<Org> {
    let tenant = options
        .tenant
        .clone()
        .unwrap_or_else(|| format!("load-{:06x}", rand::random::<u32>() & 0xff_ffff));
    let members: Vec<String> = (0..options.members).map(|i| format!("m{i}")).collect();
    let managers: Vec<String> = (0..options.members.div_ceil(TEAM))
        .map(|i| format!("g{i}"))
        .collect();
    let service = target.token(&tenant, "load-setup", &["service"])?;
    let mut directory = OrgDirectoryClient::new(channel.clone());
    let effective_at = Some(prost_types::Timestamp {
        seconds: 1_700_000_000,
        nanos: 0,
    });
    directory
        .define_org_unit(authed(
            &service,
            api::DefineOrgUnitRequest {
                command_id: "unit".into(),
                org_unit_id: "load".into(),
                name: "Load".into(),
                ..Default::default()
            },
        ))
        .await?;
    let people: Vec<&String> = managers.iter().chain(&members).collect();
    let registrations = people.iter().map(|person| {
        let mut directory = directory.clone();
        let request = authed(
            &service,
            api::RegisterPersonRequest {
                command_id: format!("register-{person}"),
                person_id: (*person).clone(),
                display_name: (*person).clone(),
                org_unit_id: "load".into(),
                effective_at,
                ..Default::default()
            },
        );
        async move { directory.register_person(request).await }
    });
    for registered in futures::stream::iter(registrations)
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await
    {
        registered?;
    }
    let assignments = members.iter().enumerate().map(|(i, member)| {
        let mut directory = directory.clone();
        let request = authed(
            &service,
            api::AssignManagerRequest {
                command_id: format!("manager-{member}"),
                person_id: member.clone(),
                manager_id: managers[i / TEAM].clone(),
                effective_at,
                ..Default::default()
            },
        );
        async move { directory.assign_manager(request).await }
    });
    for assigned in futures::stream::iter(assignments)
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await
    {
        assigned?;
    }
    let tokens = (members.iter())
        .map(|member| target.token(&tenant, member, &["member"]))
        .collect::<anyhow::Result<_>>()?;
    Ok(Org {
        tenant,
        members,
        managers,
        tokens,
    })
}

/// One client's clients of the command services.
#[derive(Clone)]
struct Clients {
    sessions: SessionsClient<Channel>,
    insights: InsightsClient<Channel>,
    goals: GoalsClient<Channel>,
}

/// Times `call` and records it as `what`; whether it succeeded.
async fn timed<T>(
    recorder: &mut Recorder,
    what: &'static str,
    call: impl Future<Output = Result<T, Status>>,
) -> bool {
    let started = Instant::now();
    let outcome = call.await;
    recorder.record(what, started.elapsed(), outcome.as_ref().map(|_| ()));
    outcome.is_ok()
}

/// One 1on1 story of ten commands, by `member` (index `m`) with their manager.
async fn story(clients: &mut Clients, org: &Org, m: usize, id: &str, recorder: &mut Recorder) {
    let (member, token) = (&org.members[m], &org.tokens[m]);
    let session = format!("s-{id}");
    let schedule = api::ScheduleSessionRequest {
        command_id: format!("schedule-{id}"),
        session_id: session.clone(),
        member_id: member.clone(),
        partner_id: org.manager_of(m).to_owned(),
        purposes: vec![
            pb::Purpose::Growth.into(),
            pb::Purpose::CareerAutonomy.into(),
        ],
        topic: "how the quarter went".into(),
        hoped_response: pb::HopedResponse::ThinkTogether.into(),
        scheduled_at: Some(now()),
        ..Default::default()
    };
    let sessions = &mut clients.sessions;
    if !timed(
        recorder,
        "ScheduleSession",
        sessions.schedule_session(authed(token, schedule)),
    )
    .await
    {
        return;
    }
    let agenda = api::AddAgendaItemRequest {
        command_id: format!("agenda-{id}"),
        session_id: session.clone(),
        item_id: "a1".into(),
        text: "the release plan".into(),
        ..Default::default()
    };
    timed(
        recorder,
        "AddAgendaItem",
        sessions.add_agenda_item(authed(token, agenda)),
    )
    .await;
    let held = api::RecordSessionHeldRequest {
        command_id: format!("held-{id}"),
        session_id: session.clone(),
        held_at: Some(now()),
        duration_minutes: 30,
        ..Default::default()
    };
    timed(
        recorder,
        "RecordSessionHeld",
        sessions.record_session_held(authed(token, held)),
    )
    .await;
    let note = api::RecordNoteRequest {
        command_id: format!("note-{id}"),
        session_id: session.clone(),
        note_id: "n1".into(),
        text: "agreed to pair on the migration".into(),
        visibility: pb::NoteVisibility::Shared.into(),
        ..Default::default()
    };
    timed(
        recorder,
        "RecordNote",
        sessions.record_note(authed(token, note)),
    )
    .await;
    let agreed = api::AgreeActionItemRequest {
        command_id: format!("agree-{id}"),
        session_id: session.clone(),
        item_id: "x1".into(),
        owner_id: member.clone(),
        text: "write the migration plan".into(),
        ..Default::default()
    };
    timed(
        recorder,
        "AgreeActionItem",
        sessions.agree_action_item(authed(token, agreed)),
    )
    .await;
    let insight = api::RecordInsightRequest {
        command_id: format!("insight-{id}"),
        insight_id: format!("i-{id}"),
        subject_id: member.clone(),
        session_id: session.clone(),
        kind: pb::InsightKind::Strength.into(),
        tags: vec!["mentoring".into(), "python".into()],
        text: "enjoys teaching newcomers".into(),
        scopes: vec![
            pb::SharingScope::Participants.into(),
            pb::SharingScope::Evaluation.into(),
        ],
        ..Default::default()
    };
    timed(
        recorder,
        "RecordInsight",
        clients.insights.record_insight(authed(token, insight)),
    )
    .await;
    let completed = api::CompleteActionItemRequest {
        command_id: format!("complete-{id}"),
        session_id: session.clone(),
        item_id: "x1".into(),
        ..Default::default()
    };
    let sessions = &mut clients.sessions;
    timed(
        recorder,
        "CompleteActionItem",
        sessions.complete_action_item(authed(token, completed)),
    )
    .await;
    let goal = format!("goal-{id}");
    let set = api::SetGoalRequest {
        command_id: format!("set-{id}"),
        goal_id: goal.clone(),
        owner_id: member.clone(),
        period: this_year(),
        kind: pb::GoalKind::Growth.into(),
        title: "lead a migration".into(),
        linked_session_id: session.clone(),
        ..Default::default()
    };
    if timed(
        recorder,
        "SetGoal",
        clients.goals.set_goal(authed(token, set)),
    )
    .await
    {
        let progress = api::RecordGoalProgressRequest {
            command_id: format!("progress-{id}"),
            goal_id: goal,
            value: 0.5,
            linked_session_id: session.clone(),
            ..Default::default()
        };
        let goals = &mut clients.goals;
        timed(
            recorder,
            "RecordGoalProgress",
            goals.record_goal_progress(authed(token, progress)),
        )
        .await;
    }
    let reflection = api::RecordReflectionRequest {
        command_id: format!("reflect-{id}"),
        session_id: session,
        what_was_decided: "pair on the migration".into(),
        resolve: 4,
        ..Default::default()
    };
    let sessions = &mut clients.sessions;
    timed(
        recorder,
        "RecordReflection",
        sessions.record_reflection(authed(token, reflection)),
    )
    .await;
}

pub(crate) async fn run(options: &RunOptions) -> anyhow::Result<Figures> {
    let target = Target::open(&options.server).await?;
    let channel = target.channel().await?;
    // Before the organisation is set up, so that its commands do not slow the catch-up.
    let caught_up_in = match &options.server.server_data_dir {
        Some(_) => Some(
            catch_up(
                ReadModelsClient::new(channel.clone()),
                target.token("load", "load-observer", &["service"])?,
            )
            .await?,
        ),
        None => None,
    };
    eprintln!(
        "setting up {} members on {}",
        options.members, target.endpoint
    );
    let org = Arc::new(set_up(&target, &channel, options).await?);
    let duration = Duration::from_secs(options.seconds);
    eprintln!("driving {} clients for {duration:?}", options.clients);
    let started = Instant::now();
    let deadline = started + duration;
    let cpu_before = target.cpu_seconds();
    let own_cpu_before = crate::server::own_cpu_seconds();
    let written_before = target.disk_written_bytes();

    // Each client on a connection of its own, as separate services would be.
    let mut workers = Vec::new();
    for client in 0..options.clients {
        let channel = target.channel().await?;
        let mut clients = Clients {
            sessions: SessionsClient::new(channel.clone()),
            insights: InsightsClient::new(channel.clone()),
            goals: GoalsClient::new(channel),
        };
        let org = org.clone();
        workers.push(tokio::spawn(async move {
            let mut recorder = Recorder::default();
            let mut round = 0;
            while Instant::now() < deadline {
                let m = (client + round * 97) % org.members.len();
                story(
                    &mut clients,
                    &org,
                    m,
                    &format!("{client}-{round}"),
                    &mut recorder,
                )
                .await;
                round += 1;
            }
            recorder
        }));
    }
    let queries = tokio::spawn(query(
        ReadModelsClient::new(target.channel().await?),
        org.clone(),
        options.queries_per_second,
        options.queries_current,
        deadline,
    ));
    let lag = tokio::spawn(sample_lag(
        ReadModelsClient::new(channel.clone()),
        target.token(&org.tenant, "load-observer", &["service"])?,
        deadline,
    ));
    let changes = Arc::new(Mutex::new(0u64));
    let subscription = tokio::spawn(follow(
        ReadModelsClient::new(channel.clone()),
        target.token(&org.tenant, "load-hr", &["hr"])?,
        changes.clone(),
    ));

    let mut commands = Recorder::default();
    for worker in workers {
        commands.merge(worker.await?);
    }
    let elapsed = started.elapsed();
    let cpu_seconds = target
        .cpu_seconds()
        .zip(cpu_before)
        .map(|(end, start)| end - start);
    let own_cpu_seconds = crate::server::own_cpu_seconds()
        .zip(own_cpu_before)
        .map(|(end, start)| end - start);
    let disk_written_bytes = target
        .disk_written_bytes()
        .zip(written_before)
        .map(|(end, start)| end - start);
    let (query_recorder, queries_dropped) = queries.await?;
    let lag = lag.await?;
    subscription.abort();
    let changes = *changes.lock().unwrap();

    Ok(Figures::new(
        options,
        elapsed,
        &commands.latencies,
        commands.errors,
        query_recorder.latencies.get("GetEvaluationBrief"),
        query_recorder.errors,
        queries_dropped,
        changes,
        &lag,
        own_cpu_seconds,
        Server {
            started_in: target.started_in,
            ready_in: target.ready_in,
            caught_up_in,
            peak_memory_kib: target.peak_memory_kib(),
            memory_kib: target.memory_kib(),
            cpu_seconds,
            disk_written_bytes,
        },
    ))
}

/// Waits until every projection has caught up with the log (a server started on a long
/// history folds it first), printing where they stand; returns how long that took from serving.
async fn catch_up(
    mut client: ReadModelsClient<Channel>,
    token: String,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut reported = started;
    loop {
        let status = client
            .get_projection_status(authed(&token, api::GetProjectionStatusRequest {}))
            .await?
            .into_inner();
        if (status.projections.iter()).all(|p| p.caught_up && p.lag_events == 0) {
            let took = started.elapsed();
            eprintln!("projections caught up in {took:.1?}");
            return Ok(took);
        }
        if reported.elapsed() >= Duration::from_secs(10) {
            let behind = (status.projections.iter())
                .map(|p| p.position.as_ref().map_or(0, |p| p.commit))
                .min()
                .unwrap_or(0);
            eprintln!("projections catching up: the furthest behind at position {behind}");
            reported = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Asks members' evaluation briefs (as the member) at `per_second`, until `deadline`. Returns
/// what was measured and how many ticks found every query slot taken.
async fn query(
    client: ReadModelsClient<Channel>,
    org: Arc<Org>,
    per_second: u32,
    current: bool,
    deadline: Instant,
) -> (Recorder, u64) {
    let recorder = Arc::new(Mutex::new(Recorder::default()));
    if per_second == 0 {
        return (Recorder::default(), 0);
    }
    let slots = Arc::new(tokio::sync::Semaphore::new(QUERIES_IN_FLIGHT));
    let mut ticks = tokio::time::interval(Duration::from_secs(1) / per_second);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let (mut dropped, mut n) = (0, 0usize);
    let period = this_year();
    while Instant::now() < deadline {
        ticks.tick().await;
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            dropped += 1;
            continue;
        };
        n += 1;
        let m = (n * 31) % org.members.len();
        let mut request = authed(
            &org.tokens[m],
            api::GetEvaluationBriefRequest {
                member_id: org.members[m].clone(),
                period: period.clone(),
                ..Default::default()
            },
        );
        if current {
            (request.metadata_mut()).insert("x-ledger-freshness", "current".parse().unwrap());
        }
        let (mut client, recorder) = (client.clone(), recorder.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            let outcome = client.get_evaluation_brief(request).await;
            let took = started.elapsed();
            (recorder.lock().unwrap()).record(
                "GetEvaluationBrief",
                took,
                outcome.as_ref().map(|_| ()),
            );
            drop(slot);
        });
    }
    // Let the last queries finish.
    let _ = slots.acquire_many(QUERIES_IN_FLIGHT as u32).await;
    let recorder = std::mem::take(&mut *recorder.lock().unwrap());
    (recorder, dropped)
}

/// The furthest-behind projection's lag in microseconds, sampled until `deadline`.
async fn sample_lag(
    mut client: ReadModelsClient<Channel>,
    token: String,
    deadline: Instant,
) -> Histogram<u64> {
    let mut lags = crate::report::histogram();
    while Instant::now() < deadline {
        let request = authed(&token, api::GetProjectionStatusRequest {});
        if let Ok(status) = client.get_projection_status(request).await {
            let worst = (status.into_inner().projections.iter())
                .map(|p| p.lag_seconds)
                .fold(0.0, f64::max);
            lags.saturating_record((worst * 1e6) as u64);
        }
        tokio::time::sleep(LAG_SAMPLE_EVERY).await;
    }
    lags
}

/// Follows every member's evaluation brief of the year as hr, counting the changes sent.
async fn follow(mut client: ReadModelsClient<Channel>, token: String, changes: Arc<Mutex<u64>>) {
    let request = authed(
        &token,
        api::SubscribeRequest {
            read_model: "evaluation-brief".into(),
            period: this_year(),
            ..Default::default()
        },
    );
    let Ok(stream) = client.subscribe(request).await else {
        return;
    };
    let mut stream = stream.into_inner();
    while let Some(Ok(_)) = stream.next().await {
        *changes.lock().unwrap() += 1;
    }
}
