//! Org-unit read models over gRPC against the real binary: dialogue health and engagement
//! context for hr and department managers only, themes withheld below the anonymity threshold,
//! as-of answers, and where the projections stand.

use std::time::{SystemTime, UNIX_EPOCH};

use ledger_domain::pb;
use ledger_e2e::server::{ServerProcess, authed};
use ledger_projections::periods_of;
use ledger_proto::v1 as api;
use ledger_proto::v1::insights_client::InsightsClient;
use ledger_proto::v1::org_directory_client::OrgDirectoryClient;
use ledger_proto::v1::read_models_client::ReadModelsClient;
use ledger_proto::v1::sessions_client::SessionsClient;
use ledger_proto::v1::surveys_client::SurveysClient;
use tonic::Code;

fn now() -> prost_types::Timestamp {
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    prost_types::Timestamp { seconds, nanos: 0 }
}

fn health_request(
    unit: &str,
    period: &str,
    as_of: Option<api::AsOf>,
) -> api::GetDialogueHealthRequest {
    api::GetDialogueHealthRequest {
        org_unit_id: unit.into(),
        period: period.into(),
        as_of,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn org_units_show_their_dialogue_health_and_engagement_to_hr_and_their_managers() {
    let data_dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start_with(data_dir.path(), &["--anonymity-threshold", "3"]);
    let channel = server.channel().await;
    let mut org = OrgDirectoryClient::new(channel.clone());
    let mut sessions = SessionsClient::new(channel.clone());
    let mut insights = InsightsClient::new(channel.clone());
    let mut surveys = SurveysClient::new(channel.clone());
    let mut read_models = ReadModelsClient::new(channel.clone());
    let service = server.token("acme", "hr-sync", &["service"]);
    let token = |who: &str, roles: &[&str]| server.token("acme", who, roles);
    let month = periods_of(now().seconds * 1_000_000)[3].clone();
    let since = Some(prost_types::Timestamp {
        seconds: 1_700_000_000,
        nanos: 0,
    });

    for (unit, parent) in [("eng", ""), ("eng-web", "eng")] {
        let request = api::DefineOrgUnitRequest {
            command_id: format!("unit-{unit}"),
            org_unit_id: unit.into(),
            name: unit.into(),
            parent_id: parent.into(),
            ..Default::default()
        };
        org.define_org_unit(authed(&service, request))
            .await
            .unwrap();
    }
    for (person, unit, grade) in [
        ("boss", "eng", "G6"),
        ("ada", "eng-web", "G3"),
        ("bob", "eng-web", "G3"),
        ("cy", "eng", "G4"),
    ] {
        let request = api::RegisterPersonRequest {
            command_id: format!("reg-{person}"),
            person_id: person.into(),
            display_name: person.into(),
            org_unit_id: unit.into(),
            grade: grade.into(),
            effective_at: since,
            ..Default::default()
        };
        org.register_person(authed(&service, request))
            .await
            .unwrap();
        if person != "boss" {
            let assign = api::AssignManagerRequest {
                command_id: format!("mgr-{person}"),
                person_id: person.into(),
                manager_id: "boss".into(),
                effective_at: since,
                ..Default::default()
            };
            org.assign_manager(authed(&service, assign)).await.unwrap();
        }
    }

    let mut positions = Vec::new();
    for (session, member) in [("s-1", "ada"), ("s-2", "bob")] {
        let schedule = api::ScheduleSessionRequest {
            command_id: format!("sched-{session}"),
            session_id: session.into(),
            member_id: member.into(),
            partner_id: "boss".into(),
            purposes: vec![pb::Purpose::Growth.into()],
            hoped_response: pb::HopedResponse::Advice.into(),
            scheduled_at: Some(now()),
            ..Default::default()
        };
        let member_token = token(member, &["member"]);
        sessions
            .schedule_session(authed(&member_token, schedule))
            .await
            .unwrap();
        let held = api::RecordSessionHeldRequest {
            command_id: format!("held-{session}"),
            session_id: session.into(),
            held_at: Some(now()),
            duration_minutes: 30,
            ..Default::default()
        };
        let result = sessions
            .record_session_held(authed(&member_token, held))
            .await
            .unwrap()
            .into_inner();
        positions.push(result.position.unwrap());
        let reflection = api::RecordReflectionRequest {
            command_id: format!("refl-{session}"),
            session_id: session.into(),
            what_was_decided: "try pairing".into(),
            resolve: 4,
            ..Default::default()
        };
        sessions
            .record_reflection(authed(&member_token, reflection))
            .await
            .unwrap();
        for (insight, subject, tag) in [
            (format!("{session}-a"), member, "Onboarding"),
            (format!("{session}-b"), "boss", "ｏｎｂｏａｒｄｉｎｇ"),
        ] {
            let request = api::RecordInsightRequest {
                command_id: format!("ins-{insight}"),
                insight_id: insight.clone(),
                subject_id: subject.into(),
                session_id: session.into(),
                kind: pb::InsightKind::OrganisationalIssue.into(),
                tags: vec![tag.into(), format!("only-{member}")],
                text: "the first week is lonely".into(),
                scopes: vec![
                    pb::SharingScope::Participants.into(),
                    pb::SharingScope::Hr.into(),
                ],
                ..Default::default()
            };
            // Sharing beyond the participants is the subject's own choice.
            insights
                .record_insight(authed(&token(subject, &["member"]), request))
                .await
                .unwrap();
        }
    }
    // cy's session is only scheduled: it counts for nothing, but what cy shares there does.
    let cy = token("cy", &["member"]);
    let schedule = api::ScheduleSessionRequest {
        command_id: "sched-s-3".into(),
        session_id: "s-3".into(),
        member_id: "cy".into(),
        partner_id: "boss".into(),
        purposes: vec![pb::Purpose::ConditionCheck.into()],
        hoped_response: pb::HopedResponse::JustListen.into(),
        scheduled_at: Some(now()),
        ..Default::default()
    };
    sessions
        .schedule_session(authed(&cy, schedule))
        .await
        .unwrap();
    let cy_insight = api::RecordInsightRequest {
        command_id: "ins-cy".into(),
        insight_id: "cy-1".into(),
        subject_id: "cy".into(),
        session_id: "s-3".into(),
        kind: pb::InsightKind::OrganisationalIssue.into(),
        tags: vec!["onboarding".into()],
        text: "mentors would help".into(),
        scopes: vec![pb::SharingScope::DepartmentManagers.into()],
        ..Default::default()
    };
    insights
        .record_insight(authed(&cy, cy_insight))
        .await
        .unwrap();
    let survey = api::RecordSurveyResultRequest {
        command_id: "survey".into(),
        survey_result_id: "eng-engagement".into(),
        org_unit_id: "eng".into(),
        period: month.clone(),
        metric: "engagement".into(),
        score: 3.9,
        respondent_count: 4,
        ..Default::default()
    };
    surveys
        .record_survey_result(authed(&service, survey))
        .await
        .unwrap();

    let hr = token("hiro", &["hr"]);
    let health = read_models
        .get_dialogue_health(authed(&hr, health_request("eng", &month, None)))
        .await
        .unwrap()
        .into_inner();
    let coverage = health.coverage.unwrap();
    assert_eq!(
        (coverage.population, coverage.covered, coverage.sessions),
        (4, 2, 2)
    );
    assert!((coverage.ratio - 0.5).abs() < 1e-9);
    assert_eq!(health.sessions_by_purpose.len(), 1);
    assert_eq!(health.sessions_by_purpose[0].name, "PURPOSE_GROWTH");
    assert_eq!(
        health.sessions_by_purpose[0].event_ids.len(),
        2,
        "provenance"
    );
    let boss = health
        .managers
        .iter()
        .find(|m| m.manager_id == "boss")
        .unwrap();
    assert_eq!(
        (
            boss.direct_reports,
            boss.sessions,
            boss.members_met,
            boss.overloaded
        ),
        (3, 2, 2, false)
    );
    let reflections = health.reflections.unwrap();
    assert_eq!((reflections.count, reflections.mean_resolve), (2, 4.0));

    let engagement = read_models
        .get_engagement_context(authed(
            &hr,
            api::GetEngagementContextRequest {
                org_unit_id: "eng".into(),
                period: month.clone(),
                as_of: None,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let themes: Vec<_> = engagement
        .themes
        .iter()
        .map(|t| (t.tag.as_str(), t.people, t.insights))
        .collect();
    // ada, bob and boss (twice), and cy: one theme of four people; "only-ada" and "only-bob"
    // stand on one person each and are withheld.
    assert_eq!(themes, [("onboarding", 4, 5)]);
    assert_eq!(engagement.themes_withheld, 2);
    assert_eq!(engagement.surveys.len(), 1);
    assert_eq!(engagement.surveys[0].score, 3.9);

    // The department manager of eng-web reads it; members and auditors do not.
    let boss_token = token("boss", &["member"]);
    let web = read_models
        .get_dialogue_health(authed(&boss_token, health_request("eng-web", &month, None)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(web.coverage.unwrap().population, 2);
    for (who, roles) in [("ada", &["member"][..]), ("audra", &["auditor"][..])] {
        let denied = read_models
            .get_dialogue_health(authed(
                &token(who, roles),
                health_request("eng", &month, None),
            ))
            .await
            .unwrap_err();
        assert_eq!(denied.code(), Code::PermissionDenied, "{who}");
    }
    let elsewhere = server.token("globex", "hana", &["hr"]);
    let unknown = read_models
        .get_dialogue_health(authed(&elsewhere, health_request("eng", &month, None)))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound, "another tenant's unit");
    for (unit, period, field) in [("eng", "2026-13", "period"), ("", &month, "org_unit_id")] {
        let bad = read_models
            .get_dialogue_health(authed(&hr, health_request(unit, period, None)))
            .await
            .unwrap_err();
        assert_eq!(bad.code(), Code::InvalidArgument);
        assert!(bad.message().contains(field), "{}", bad.message());
    }

    // As the read model stood after the first session was held.
    let as_of = api::AsOf {
        point: Some(api::as_of::Point::Position(positions[0])),
    };
    let then = read_models
        .get_dialogue_health(authed(&hr, health_request("eng", &month, Some(as_of))))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(then.coverage.unwrap().sessions, 1);
    assert_eq!(then.as_of.unwrap(), positions[0]);

    let status = read_models
        .get_projection_status(authed(&hr, api::GetProjectionStatusRequest {}))
        .await
        .unwrap()
        .into_inner();
    let names: Vec<_> = status
        .projections
        .iter()
        .map(|p| p.projection.as_str())
        .collect();
    assert_eq!(
        names,
        [
            "evaluation-briefs",
            "staffing",
            "development-reviews",
            "dialogue-health"
        ]
    );
    let health_status = &status.projections[3];
    assert_eq!(health_status.position, status.head);
    assert_eq!(
        (health_status.lag_events, health_status.lag_seconds),
        (0, 0.0)
    );
    assert!(health_status.caught_up);
}
