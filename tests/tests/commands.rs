//! The dialogue commands over gRPC against the real binary: a realistic story of an organisation
//! with two departments, and every kind of refusal. Afterwards the store is opened directly to
//! check what was (and was not) appended.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dialogue_ledger::auth::{Claims, DEFAULT_AUDIENCE, DEFAULT_ISSUER, LocalKeys};
use ledger_domain::{Event, pb};
use ledger_e2e::server::{ServerProcess, authed};
use ledger_proto::v1 as api;
use ledger_proto::v1::goals_client::GoalsClient;
use ledger_proto::v1::insights_client::InsightsClient;
use ledger_proto::v1::org_directory_client::OrgDirectoryClient;
use ledger_proto::v1::sessions_client::SessionsClient;
use ledger_proto::v1::surveys_client::SurveysClient;
use ledger_store::{AllRead, EventStore};
use ledger_store_embedded::EmbeddedStore;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};
use tonic_types::StatusExt;
use uuid::Uuid;

use pb::{InsightKind as Kind, Relationship as R, SharingScope as Scope};

/// 2026-12-01T10:00:00Z: when the story's sessions take place.
const SESSION_TIME: i64 = 1_796_119_200;

fn at(seconds: i64) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp { seconds, nanos: 0 })
}

fn command_id() -> String {
    Uuid::new_v4().to_string()
}

/// The clients and tokens of the story, and a count of the events its accepted commands wrote.
struct Story {
    org: OrgDirectoryClient<Channel>,
    sessions: SessionsClient<Channel>,
    insights: InsightsClient<Channel>,
    goals: GoalsClient<Channel>,
    surveys: SurveysClient<Channel>,
    tokens: HashMap<&'static str, String>,
    accepted: usize,
}

impl Story {
    fn token(&self, who: &str) -> &str {
        &self.tokens[who]
    }

    /// Counts an accepted command (each writes one event) and returns its result.
    fn accepted(
        &mut self,
        result: Result<tonic::Response<api::CommandResult>, Status>,
    ) -> api::CommandResult {
        self.accepted += 1;
        result.expect("the command was refused").into_inner()
    }
}

fn refused<T: std::fmt::Debug>(result: Result<T, Status>, code: Code, says: &str) -> Status {
    match result {
        Err(status) if status.code() == code => {
            assert!(
                status.message().contains(says),
                "{code:?} without {says:?}: {}",
                status.message()
            );
            status
        }
        other => panic!("expected {code:?} ({says}), got {other:?}"),
    }
}

fn schedule(
    id: &str,
    member: &str,
    partner: &str,
    confidential: bool,
) -> api::ScheduleSessionRequest {
    api::ScheduleSessionRequest {
        command_id: command_id(),
        session_id: id.into(),
        member_id: member.into(),
        partner_id: partner.into(),
        purposes: vec![
            pb::Purpose::Growth.into(),
            pb::Purpose::CareerAutonomy.into(),
        ],
        topic: "where do I want to be in two years".into(),
        hoped_response: pb::HopedResponse::ThinkTogether.into(),
        scheduled_at: at(SESSION_TIME),
        confidential,
        ..Default::default()
    }
}

async fn set_up_org(story: &mut Story) {
    let service = story.token("hr-sync").to_owned();
    for (unit, parent) in [("sales", ""), ("sales-east", "sales"), ("eng", "")] {
        let request = api::DefineOrgUnitRequest {
            command_id: command_id(),
            org_unit_id: unit.into(),
            name: format!("{unit} department"),
            parent_id: parent.into(),
            ..Default::default()
        };
        let result = story.org.define_org_unit(authed(&service, request)).await;
        story.accepted(result);
    }
    let people = [
        ("kai", "sales", "G6", 2005),
        ("lee", "sales-east", "G4", 2014),
        ("mia", "sales-east", "G2", 2022),
        ("ren", "sales", "G2", 2020),
        ("ada", "eng", "G5", 2010),
    ];
    for (person, unit, grade, cohort) in people {
        let request = api::RegisterPersonRequest {
            command_id: command_id(),
            person_id: person.into(),
            display_name: format!("{person} (display name)"),
            org_unit_id: unit.into(),
            grade: grade.into(),
            cohort_year: cohort,
            effective_at: at(SESSION_TIME - 90 * 86_400),
            ..Default::default()
        };
        let result = story.org.register_person(authed(&service, request)).await;
        story.accepted(result);
    }
    for (person, manager) in [("lee", "kai"), ("mia", "lee"), ("ren", "kai")] {
        let request = api::AssignManagerRequest {
            command_id: command_id(),
            person_id: person.into(),
            manager_id: manager.into(),
            effective_at: at(SESSION_TIME - 90 * 86_400),
            ..Default::default()
        };
        let result = story.org.assign_manager(authed(&service, request)).await;
        story.accepted(result);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_year_of_dialogue_and_every_refusal() {
    let data_dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(data_dir.path());
    let channel = server.channel().await;
    let mut tokens = HashMap::new();
    for (who, tenant, roles) in [
        ("hr-sync", "acme", &["service"][..]),
        ("hiro", "acme", &["hr", "member"][..]),
        ("mia", "acme", &["member"][..]),
        ("lee", "acme", &["member"][..]),
        ("kai", "acme", &["member"][..]),
        ("ren", "acme", &["member"][..]),
        ("ada", "acme", &["member"][..]),
    ] {
        tokens.insert(who, server.token(tenant, who, roles));
    }
    tokens.insert("mia@globex", server.token("globex", "mia", &["member"]));
    tokens.insert(
        "svc@globex",
        server.token("globex", "hr-sync", &["service"]),
    );
    let mut story = Story {
        org: OrgDirectoryClient::new(channel.clone()),
        sessions: SessionsClient::new(channel.clone()),
        insights: InsightsClient::new(channel.clone()),
        goals: GoalsClient::new(channel.clone()),
        surveys: SurveysClient::new(channel.clone()),
        tokens,
        accepted: 0,
    };
    set_up_org(&mut story).await;
    let mia = story.token("mia").to_owned();
    let lee = story.token("lee").to_owned();
    let ren = story.token("ren").to_owned();
    let ada = story.token("ada").to_owned();

    // Sessions of every relationship; the relationship is checked in the store below.
    for (session, partner, confidential) in [
        ("s-1on1", "lee", false),
        ("s-skip", "kai", false),
        ("s-peer", "ren", true),
        ("s-mentor", "ada", true),
    ] {
        let result = story
            .sessions
            .schedule_session(authed(
                &mia,
                schedule(session, "mia", partner, confidential),
            ))
            .await;
        story.accepted(result);
    }
    // Something that cannot be said to one's evaluator is not booked with them as "confidential".
    let with_evaluator = story
        .sessions
        .schedule_session(authed(&mia, schedule("s-x", "mia", "lee", true)))
        .await;
    refused(with_evaluator, Code::FailedPrecondition, "evaluation power");

    for session in ["s-1on1", "s-peer", "s-mentor"] {
        let held = api::RecordSessionHeldRequest {
            command_id: command_id(),
            session_id: session.into(),
            held_at: at(SESSION_TIME),
            duration_minutes: 30,
            ..Default::default()
        };
        let result = story.sessions.record_session_held(authed(&mia, held)).await;
        story.accepted(result);
    }
    let note = |visibility: pb::NoteVisibility, id: &str| api::RecordNoteRequest {
        command_id: command_id(),
        session_id: "s-1on1".into(),
        note_id: id.into(),
        text: "talked about the transfer".into(),
        visibility: visibility.into(),
        ..Default::default()
    };
    let shared = story
        .sessions
        .record_note(authed(&lee, note(pb::NoteVisibility::Shared, "n-1")))
        .await;
    story.accepted(shared);
    let private = story
        .sessions
        .record_note(authed(&mia, note(pb::NoteVisibility::Private, "n-2")))
        .await;
    story.accepted(private);
    let agree = api::AgreeActionItemRequest {
        command_id: command_id(),
        session_id: "s-1on1".into(),
        item_id: "a-1".into(),
        owner_id: "mia".into(),
        text: "talk to the eng lead".into(),
        due: at(SESSION_TIME + 14 * 86_400),
        ..Default::default()
    };
    let agreed = story.sessions.agree_action_item(authed(&lee, agree)).await;
    story.accepted(agreed);
    let complete = api::CompleteActionItemRequest {
        command_id: command_id(),
        session_id: "s-1on1".into(),
        item_id: "a-1".into(),
        ..Default::default()
    };
    let completed = story
        .sessions
        .complete_action_item(authed(&mia, complete))
        .await;
    story.accepted(completed);
    let reflection = |resolve| api::RecordReflectionRequest {
        command_id: command_id(),
        session_id: "s-1on1".into(),
        what_was_decided: "apply for the eng rotation".into(),
        resolve,
        ..Default::default()
    };
    refused(
        story
            .sessions
            .record_reflection(authed(&lee, reflection(4)))
            .await,
        Code::PermissionDenied,
        "member",
    );
    let reflected = story
        .sessions
        .record_reflection(authed(&mia, reflection(4)))
        .await;
    story.accepted(reflected);

    // Insights: defaults by relationship, consent to widen, health only with explicit consent.
    let insight =
        |id: &str, session: &str, kind: Kind, scopes: &[Scope]| api::RecordInsightRequest {
            command_id: command_id(),
            insight_id: id.into(),
            subject_id: "mia".into(),
            session_id: session.into(),
            kind: kind.into(),
            tags: vec!["Ｐｙｔｈｏｎ".into(), "mentoring".into()],
            text: "lights up when teaching juniors".into(),
            scopes: scopes.iter().map(|s| (*s).into()).collect(),
            ..Default::default()
        };
    let peer_insight = story
        .insights
        .record_insight(authed(
            &ren,
            insight("i-peer", "s-peer", Kind::Strength, &[]),
        ))
        .await;
    story.accepted(peer_insight);
    let wide = insight(
        "i-eval",
        "s-1on1",
        Kind::Skill,
        &[Scope::Participants, Scope::Evaluation],
    );
    refused(
        story
            .insights
            .record_insight(authed(&lee, wide.clone()))
            .await,
        Code::PermissionDenied,
        "consent",
    );
    let own = story.insights.record_insight(authed(&mia, wide)).await;
    story.accepted(own);
    let share = |id: &str, scopes: &[Scope], consent: bool| api::ShareInsightRequest {
        command_id: command_id(),
        insight_id: id.into(),
        scopes: scopes.iter().map(|s| (*s).into()).collect(),
        explicit_consent: consent,
        ..Default::default()
    };
    refused(
        story
            .insights
            .share_insight(authed(&ren, share("i-peer", &[Scope::Staffing], false)))
            .await,
        Code::PermissionDenied,
        "subject",
    );
    let shared = story
        .insights
        .share_insight(authed(&mia, share("i-peer", &[Scope::Staffing], false)))
        .await;
    story.accepted(shared);
    let health = story
        .insights
        .record_insight(authed(
            &ada,
            insight("i-health", "s-mentor", Kind::Condition, &[]),
        ))
        .await;
    story.accepted(health);
    refused(
        story
            .insights
            .share_insight(authed(&mia, share("i-health", &[Scope::Hr], false)))
            .await,
        Code::FailedPrecondition,
        "explicit_consent",
    );
    let consented = story
        .insights
        .share_insight(authed(&mia, share("i-health", &[Scope::Hr], true)))
        .await;
    story.accepted(consented);
    let narrow = api::NarrowInsightRequest {
        command_id: command_id(),
        insight_id: "i-health".into(),
        scopes: vec![Scope::Hr.into()],
        ..Default::default()
    };
    let narrowed = story.insights.narrow_insight(authed(&mia, narrow)).await;
    story.accepted(narrowed);
    let retract = api::RetractInsightRequest {
        command_id: command_id(),
        insight_id: "i-eval".into(),
        ..Default::default()
    };
    let retracted = story.insights.retract_insight(authed(&mia, retract)).await;
    story.accepted(retracted);

    // Goals: owner and manager write, a peer may not.
    let goal = api::SetGoalRequest {
        command_id: command_id(),
        goal_id: "g-1".into(),
        owner_id: "mia".into(),
        period: "2026-H2".into(),
        kind: pb::GoalKind::Growth.into(),
        title: "Lead the onboarding guild".into(),
        key_results: vec![pb::KeyResult {
            key_result_id: "kr-1".into(),
            description: "mentor 3 juniors".into(),
            target: 3.0,
            unit: "people".into(),
        }],
        linked_session_id: "s-1on1".into(),
        ..Default::default()
    };
    let set = story.goals.set_goal(authed(&mia, goal)).await;
    story.accepted(set);
    let progress = |value| api::RecordGoalProgressRequest {
        command_id: command_id(),
        goal_id: "g-1".into(),
        key_result_id: "kr-1".into(),
        value,
        linked_session_id: "s-1on1".into(),
        ..Default::default()
    };
    let by_manager = story
        .goals
        .record_goal_progress(authed(&lee, progress(1.0)))
        .await;
    story.accepted(by_manager);
    refused(
        story
            .goals
            .record_goal_progress(authed(&ren, progress(2.0)))
            .await,
        Code::PermissionDenied,
        "owner",
    );
    let reflect = api::ReflectOnGoalRequest {
        command_id: command_id(),
        goal_id: "g-1".into(),
        text: "teaching helps me learn".into(),
        ..Default::default()
    };
    let reflected = story.goals.reflect_on_goal(authed(&mia, reflect)).await;
    story.accepted(reflected);

    // A survey result, and one below the anonymity threshold.
    let survey = |id: &str, respondents| api::RecordSurveyResultRequest {
        command_id: command_id(),
        survey_result_id: id.into(),
        org_unit_id: "sales".into(),
        period: "2026-Q4".into(),
        metric: "engagement".into(),
        score: 3.9,
        respondent_count: respondents,
        ..Default::default()
    };
    let hr = story.token("hiro").to_owned();
    let recorded = story
        .surveys
        .record_survey_result(authed(&hr, survey("sv-1", 12)))
        .await;
    story.accepted(recorded);
    refused(
        story
            .surveys
            .record_survey_result(authed(&hr, survey("sv-2", 3)))
            .await,
        Code::FailedPrecondition,
        "anonymity",
    );

    // A bad field names itself in a google.rpc.BadRequest.
    let status = refused(
        story
            .sessions
            .schedule_session(authed(&mia, schedule("s-bad", "mia", "not an id", false)))
            .await,
        Code::InvalidArgument,
        "partner_id",
    );
    let bad_request = status
        .get_details_bad_request()
        .expect("no BadRequest details");
    assert_eq!(bad_request.field_violations[0].field, "partner_id");
    // Unknown ids.
    let cancel = |id: &str| api::CancelSessionRequest {
        command_id: command_id(),
        session_id: id.into(),
        ..Default::default()
    };
    refused(
        story
            .sessions
            .cancel_session(authed(&mia, cancel("s-nope")))
            .await,
        Code::NotFound,
        "session s-nope",
    );
    // A wrong expected version.
    let mut stale = note(pb::NoteVisibility::Shared, "n-3");
    stale.expected_version = Some(0);
    refused(
        story.sessions.record_note(authed(&lee, stale)).await,
        Code::Aborted,
        "current version",
    );
    // A retry with the same command id returns the first result and writes nothing; the same id
    // with another body is refused.
    let first = note(pb::NoteVisibility::Shared, "n-4");
    let original = story
        .sessions
        .record_note(authed(&lee, first.clone()))
        .await;
    let original = story.accepted(original);
    let retried = story
        .sessions
        .record_note(authed(&lee, first.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(retried, original);
    let mut changed = first.clone();
    changed.text = "something else".into();
    refused(
        story.sessions.record_note(authed(&lee, changed)).await,
        Code::AlreadyExists,
        "different request",
    );
    // On another aggregate the same id is another command, judged on its own.
    let mut elsewhere = cancel("s-nope");
    elsewhere.command_id = first.command_id.clone();
    refused(
        story.sessions.cancel_session(authed(&mia, elsewhere)).await,
        Code::NotFound,
        "session s-nope",
    );
    // Nothing crosses tenants: mia of globex does not see acme's sessions or org units.
    let globex = story.token("mia@globex").to_owned();
    refused(
        story
            .sessions
            .cancel_session(authed(&globex, cancel("s-peer")))
            .await,
        Code::NotFound,
        "session s-peer",
    );
    let register = api::RegisterPersonRequest {
        command_id: command_id(),
        person_id: "zed".into(),
        display_name: "Zed".into(),
        org_unit_id: "sales".into(),
        ..Default::default()
    };
    let globex_service = story.token("svc@globex").to_owned();
    refused(
        story
            .org
            .register_person(authed(&globex_service, register.clone()))
            .await,
        Code::NotFound,
        "org unit sales",
    );
    // Wrong roles: a member does not sync the directory, a service does not hold 1on1s.
    refused(
        story.org.register_person(authed(&mia, register)).await,
        Code::PermissionDenied,
        "roles",
    );
    let service = story.token("hr-sync").to_owned();
    refused(
        story
            .sessions
            .schedule_session(authed(&service, schedule("s-svc", "mia", "ren", false)))
            .await,
        Code::PermissionDenied,
        "member",
    );
    // Missing, expired and foreign tokens.
    let missing = story
        .sessions
        .cancel_session(Request::new(cancel("s-skip")))
        .await;
    refused(missing, Code::Unauthenticated, "missing bearer token");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let expired = LocalKeys::new(data_dir.path())
        .issue(&Claims {
            iss: DEFAULT_ISSUER.into(),
            aud: DEFAULT_AUDIENCE.into(),
            sub: "mia".into(),
            tenant: "acme".into(),
            roles: vec!["member".into()],
            iat: now - 7200,
            exp: now - 3600,
        })
        .unwrap();
    refused(
        story
            .sessions
            .cancel_session(authed(&expired, cancel("s-skip")))
            .await,
        Code::Unauthenticated,
        "expired",
    );
    refused(
        story
            .sessions
            .cancel_session(authed("not.a.jwt", cancel("s-skip")))
            .await,
        Code::Unauthenticated,
        "invalid token",
    );

    // Concurrent commands on one aggregate: none is lost.
    let agenda: Vec<_> = (0..12)
        .map(|i| {
            let mut sessions = story.sessions.clone();
            let token = mia.clone();
            tokio::spawn(async move {
                let request = api::AddAgendaItemRequest {
                    command_id: command_id(),
                    session_id: "s-skip".into(),
                    item_id: format!("agenda-{i}"),
                    text: format!("point {i}"),
                    ..Default::default()
                };
                sessions.add_agenda_item(authed(&token, request)).await
            })
        })
        .collect();
    let mut versions = Vec::new();
    for task in agenda {
        versions.push(story.accepted(task.await.unwrap()).version);
    }
    versions.sort_unstable();
    assert_eq!(
        versions,
        (1..=12).collect::<Vec<u64>>(),
        "concurrent updates were lost or doubled"
    );

    drop(story.sessions);
    assert!(server.terminate().await.success());
    tokio::time::sleep(Duration::from_millis(10)).await;

    // What the store holds: exactly the accepted commands' events, in their tenant's streams.
    let store = EmbeddedStore::open(data_dir.path()).unwrap();
    let stored = store
        .read_all(AllRead::Forward { after: None }, usize::MAX)
        .await
        .unwrap();
    store.close().await.unwrap();
    assert_eq!(
        stored.len(),
        story.accepted,
        "refused commands or retries wrote events"
    );
    assert!(
        stored
            .iter()
            .all(|e| e.stream.as_str().starts_with("acme/")),
        "an event left its tenant"
    );
    let relationships: HashMap<_, _> = stored
        .iter()
        .filter_map(
            |e| match Event::decode(&e.event_type, &e.payload).unwrap() {
                Some(Event::SessionScheduled(s)) => Some((s.session_id.clone(), s.relationship())),
                _ => None,
            },
        )
        .collect();
    let expected: HashMap<_, _> = [
        ("s-1on1".to_owned(), R::VerticalDirect),
        ("s-skip".to_owned(), R::VerticalSkip),
        ("s-peer".to_owned(), R::Horizontal),
        ("s-mentor".to_owned(), R::Diagonal),
    ]
    .into();
    assert_eq!(relationships, expected);
    let scheduled_by = stored
        .iter()
        .find(|e| e.stream.as_str() == "acme/session-s-peer")
        .unwrap();
    assert_eq!(scheduled_by.metadata.extra["actor"], "mia");
}
