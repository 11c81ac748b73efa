//! Read models over gRPC against the real binary: the evaluation brief shows what it should, to
//! whom it should, and never what a member did not share for evaluation.

use std::time::{SystemTime, UNIX_EPOCH};

use ledger_domain::pb;
use ledger_e2e::server::{ServerProcess, authed, next_change, set_up_sales};
use ledger_projections::periods_of;
use ledger_proto::v1 as api;
use ledger_proto::v1::goals_client::GoalsClient;
use ledger_proto::v1::insights_client::InsightsClient;
use ledger_proto::v1::ledger_client::LedgerClient;
use ledger_proto::v1::org_directory_client::OrgDirectoryClient;
use ledger_proto::v1::read_models_client::ReadModelsClient;
use ledger_proto::v1::sessions_client::SessionsClient;
use tonic::Code;

fn now() -> prost_types::Timestamp {
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    prost_types::Timestamp { seconds, nanos: 0 }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_evaluation_brief_shows_shared_material_to_the_member_their_managers_and_hr() {
    let data_dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(data_dir.path());
    let channel = server.channel().await;
    let (mut org, mut sessions) = (
        OrgDirectoryClient::new(channel.clone()),
        SessionsClient::new(channel.clone()),
    );
    let (mut insights, mut goals) = (
        InsightsClient::new(channel.clone()),
        GoalsClient::new(channel.clone()),
    );
    let mut read_models = ReadModelsClient::new(channel.clone());
    let service = server.token("acme", "hr-sync", &["service"]);
    let token = |who: &str, roles: &[&str]| server.token("acme", who, roles);
    let (mia, lee, ren, ada) = (
        token("mia", &["member"]),
        token("lee", &["member"]),
        token("ren", &["member"]),
        token("ada", &["member"]),
    );
    let half = periods_of(now().seconds * 1_000_000)[1].clone();

    for (unit, command) in [("sales", "u1"), ("eng", "u2")] {
        let request = api::DefineOrgUnitRequest {
            command_id: command.into(),
            org_unit_id: unit.into(),
            name: unit.into(),
            ..Default::default()
        };
        org.define_org_unit(authed(&service, request))
            .await
            .unwrap();
    }
    for (person, unit, grade) in [
        ("lee", "sales", "G4"),
        ("mia", "sales", "G2"),
        ("ren", "sales", "G2"),
        ("ada", "eng", "G5"),
    ] {
        let request = api::RegisterPersonRequest {
            command_id: format!("reg-{person}"),
            person_id: person.into(),
            display_name: person.into(),
            org_unit_id: unit.into(),
            grade: grade.into(),
            effective_at: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            ..Default::default()
        };
        org.register_person(authed(&service, request))
            .await
            .unwrap();
    }
    let assign = api::AssignManagerRequest {
        command_id: "mgr".into(),
        person_id: "mia".into(),
        manager_id: "lee".into(),
        effective_at: Some(prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 0,
        }),
        ..Default::default()
    };
    org.assign_manager(authed(&service, assign)).await.unwrap();

    for (session, partner, confidential) in [("s-1", "lee", false), ("s-2", "ada", true)] {
        let schedule = api::ScheduleSessionRequest {
            command_id: format!("sched-{session}"),
            session_id: session.into(),
            member_id: "mia".into(),
            partner_id: partner.into(),
            purposes: vec![pb::Purpose::CareerAutonomy.into()],
            hoped_response: pb::HopedResponse::ThinkTogether.into(),
            scheduled_at: Some(now()),
            confidential,
            ..Default::default()
        };
        sessions
            .schedule_session(authed(&mia, schedule))
            .await
            .unwrap();
        let held = api::RecordSessionHeldRequest {
            command_id: format!("held-{session}"),
            session_id: session.into(),
            held_at: Some(now()),
            duration_minutes: 30,
            ..Default::default()
        };
        sessions
            .record_session_held(authed(&mia, held))
            .await
            .unwrap();
    }
    let insight =
        |id: &str, session: &str, scopes: &[pb::SharingScope]| api::RecordInsightRequest {
            command_id: format!("ins-{id}"),
            insight_id: id.into(),
            subject_id: "mia".into(),
            session_id: session.into(),
            kind: pb::InsightKind::CareerAspiration.into(),
            tags: vec!["data".into()],
            text: format!("said in {session}"),
            scopes: scopes.iter().map(|s| (*s).into()).collect(),
            ..Default::default()
        };
    // Said to a mentor in confidence: participants only.
    insights
        .record_insight(authed(&ada, insight("i-mentor", "s-2", &[])))
        .await
        .unwrap();
    let shared = [pb::SharingScope::Participants, pb::SharingScope::Evaluation];
    let recorded = insights
        .record_insight(authed(&mia, insight("i-eval", "s-1", &shared)))
        .await
        .unwrap()
        .into_inner();
    let goal = api::SetGoalRequest {
        command_id: "goal".into(),
        goal_id: "g-1".into(),
        owner_id: "mia".into(),
        period: half.clone(),
        kind: pb::GoalKind::Career.into(),
        title: "Move towards data work".into(),
        ..Default::default()
    };
    goals.set_goal(authed(&mia, goal)).await.unwrap();
    let progress = api::RecordGoalProgressRequest {
        command_id: "prog".into(),
        goal_id: "g-1".into(),
        value: 1.0,
        ..Default::default()
    };
    goals
        .record_goal_progress(authed(&lee, progress))
        .await
        .unwrap();

    let ask = |who: &str| {
        authed(
            who,
            api::GetEvaluationBriefRequest {
                member_id: "mia".into(),
                period: half.clone(),
                as_of: None,
            },
        )
    };
    for reader in [&mia, &lee, &server.token("acme", "hiro", &["hr"])] {
        let brief = read_models
            .get_evaluation_brief(ask(reader))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(brief.goals.len(), 1);
        assert_eq!(brief.goals[0].progress.len(), 1);
        assert_eq!(brief.goals[0].event_ids.len(), 2, "provenance of the goal");
        let ids: Vec<_> = brief
            .insights
            .iter()
            .map(|i| i.insight_id.as_str())
            .collect();
        assert_eq!(ids, ["i-eval"], "only what mia shared for evaluation");
        let relationships: Vec<_> = brief
            .sessions_by_relationship
            .iter()
            .map(|c| (c.name.as_str(), c.count))
            .collect();
        assert_eq!(
            relationships,
            [
                ("RELATIONSHIP_DIAGONAL", 1),
                ("RELATIONSHIP_VERTICAL_DIRECT", 1)
            ]
        );
        assert_eq!(brief.sessions_by_purpose[0].count, 2);
        assert!(brief.as_of.is_some());
    }
    for outsider in [&ren, &server.token("acme", "audra", &["auditor"])] {
        let refused = read_models
            .get_evaluation_brief(ask(outsider))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::PermissionDenied);
    }
    // Another tenant's mia is another person: nothing of acme's mia.
    let theirs = read_models
        .get_evaluation_brief(ask(&server.token("globex", "mia", &["member"])))
        .await
        .unwrap()
        .into_inner();
    assert!(
        theirs.goals.is_empty()
            && theirs.insights.is_empty()
            && theirs.sessions_by_purpose.is_empty()
    );
    let bad = authed(
        &mia,
        api::GetEvaluationBriefRequest {
            member_id: "mia".into(),
            period: "last year".into(),
            as_of: None,
        },
    );
    assert_eq!(
        read_models
            .get_evaluation_brief(bad)
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );

    // A retraction takes effect in the brief.
    let retract = api::RetractInsightRequest {
        command_id: "retract".into(),
        insight_id: "i-eval".into(),
        ..Default::default()
    };
    insights
        .retract_insight(authed(&mia, retract))
        .await
        .unwrap();
    let brief = read_models
        .get_evaluation_brief(ask(&lee))
        .await
        .unwrap()
        .into_inner();
    assert!(
        brief.insights.is_empty(),
        "a retracted insight is still in the brief"
    );

    // As of a past point, the brief is what an evaluator saw then: the insight still there.
    let as_of = |point: api::as_of::Point| {
        let request = api::GetEvaluationBriefRequest {
            member_id: "mia".into(),
            period: half.clone(),
            as_of: Some(api::AsOf { point: Some(point) }),
        };
        authed(&lee, request)
    };
    let at_record = api::as_of::Point::Position(recorded.position.unwrap());
    let then = read_models
        .get_evaluation_brief(as_of(at_record))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        then.insights
            .iter()
            .map(|i| i.insight_id.as_str())
            .collect::<Vec<_>>(),
        ["i-eval"]
    );
    assert!(then.goals.is_empty(), "the goal was set after that point");
    assert_eq!(then.as_of, recorded.position);
    let before_everything = api::as_of::Point::Time(prost_types::Timestamp {
        seconds: 1,
        nanos: 0,
    });
    let empty = read_models
        .get_evaluation_brief(as_of(before_everything))
        .await
        .unwrap()
        .into_inner();
    assert!(
        empty.insights.is_empty() && empty.goals.is_empty() && empty.sessions_by_purpose.is_empty()
    );
    // Whole seconds: a second ahead covers everything recorded so far.
    let later = prost_types::Timestamp {
        seconds: now().seconds + 1,
        nanos: 0,
    };
    let now_again = api::as_of::Point::Time(later);
    let rebuilt_now = read_models
        .get_evaluation_brief(as_of(now_again))
        .await
        .unwrap()
        .into_inner();
    assert!(
        rebuilt_now.insights.is_empty(),
        "a rebuild up to now still shows the retracted insight"
    );
    assert_eq!(rebuilt_now.goals.len(), 1);

    // Each read is on mia's record, the refused ones too.
    let records = LedgerClient::new(channel)
        .list_access_records(authed(
            &mia,
            api::ListAccessRecordsRequest {
                person_id: "mia".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .records;
    let briefs: Vec<_> = records
        .iter()
        .filter(|r| r.query.ends_with("GetEvaluationBrief"))
        .map(|r| (r.reader.as_str(), r.allowed))
        .collect();
    for expected in [
        ("mia", true),
        ("lee", true),
        ("hiro", true),
        ("ren", false),
        ("audra", false),
    ] {
        assert!(
            briefs.contains(&expected),
            "{expected:?} missing from {briefs:?}"
        );
    }

    // Staffing: only what mia shared for staffing, found by hr under any width or case.
    let skill = api::RecordInsightRequest {
        command_id: "ins-skill".into(),
        insight_id: "i-skill".into(),
        subject_id: "mia".into(),
        session_id: "s-1".into(),
        kind: pb::InsightKind::Skill.into(),
        tags: vec!["Ｐｙｔｈｏｎ".into()],
        text: "built the churn model".into(),
        scopes: vec![
            pb::SharingScope::Participants.into(),
            pb::SharingScope::Staffing.into(),
        ],
        ..Default::default()
    };
    insights.record_insight(authed(&mia, skill)).await.unwrap();
    let hr = server.token("acme", "hiro", &["hr"]);
    let need = || api::FindStaffingCandidatesRequest {
        skills: vec!["python".into()],
        ..Default::default()
    };
    let found = read_models
        .find_staffing_candidates(authed(&hr, need()))
        .await
        .unwrap()
        .into_inner();
    let candidates: Vec<_> = found
        .candidates
        .iter()
        .map(|c| (c.member_id.as_str(), c.matched_skills.clone()))
        .collect();
    assert_eq!(candidates, [("mia", vec!["python".to_owned()])]);
    assert_eq!(
        read_models
            .find_staffing_candidates(authed(&lee, need()))
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );
    let profile = |who: &str| {
        authed(
            who,
            api::GetStaffingProfileRequest {
                member_id: "mia".into(),
                ..Default::default()
            },
        )
    };
    let shown = read_models
        .get_staffing_profile(profile(&lee))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        shown
            .tags
            .iter()
            .map(|t| t.tag.as_str())
            .collect::<Vec<_>>(),
        ["python"],
        "the evaluation-only insight stays out"
    );
    assert_eq!(
        read_models
            .get_staffing_profile(profile(&ren))
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );

    // Development: strengths as shared with each reader, the network counted, never named.
    let strength = api::RecordInsightRequest {
        command_id: "ins-strength".into(),
        insight_id: "i-strength".into(),
        subject_id: "mia".into(),
        session_id: "s-1".into(),
        kind: pb::InsightKind::Strength.into(),
        text: "explains clearly".into(),
        scopes: vec![
            pb::SharingScope::Participants.into(),
            pb::SharingScope::ManagerChain.into(),
        ],
        ..Default::default()
    };
    insights
        .record_insight(authed(&mia, strength))
        .await
        .unwrap();
    let ask_review = |who: &str| {
        authed(
            who,
            api::GetDevelopmentReviewRequest {
                member_id: "mia".into(),
                ..Default::default()
            },
        )
    };
    let by_manager = read_models
        .get_development_review(ask_review(&lee))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        by_manager
            .insights
            .iter()
            .map(|i| i.insight_id.as_str())
            .collect::<Vec<_>>(),
        ["i-strength"]
    );
    assert_eq!(by_manager.goals.len(), 1, "the career goal");
    let network: Vec<_> = by_manager
        .network
        .iter()
        .map(|n| (n.relationship.as_str(), n.partners, n.sessions))
        .collect();
    assert_eq!(
        network,
        [
            ("RELATIONSHIP_DIAGONAL", 1, 1),
            ("RELATIONSHIP_VERTICAL_DIRECT", 1, 1)
        ]
    );
    // As of the beginning of time, the review (and the staffing profile) were empty.
    let beginning = || {
        Some(api::AsOf {
            point: Some(api::as_of::Point::Time(prost_types::Timestamp {
                seconds: 1,
                nanos: 0,
            })),
        })
    };
    let early = api::GetDevelopmentReviewRequest {
        member_id: "mia".into(),
        as_of: beginning(),
    };
    let early = read_models
        .get_development_review(authed(&lee, early))
        .await
        .unwrap()
        .into_inner();
    assert!(early.insights.is_empty() && early.goals.is_empty() && early.network.is_empty());
    let early = api::GetStaffingProfileRequest {
        member_id: "mia".into(),
        as_of: beginning(),
    };
    assert!(
        read_models
            .get_staffing_profile(authed(&lee, early))
            .await
            .unwrap()
            .into_inner()
            .tags
            .is_empty()
    );
    let by_hr = read_models
        .get_development_review(ask_review(&hr))
        .await
        .unwrap()
        .into_inner();
    assert!(
        by_hr.insights.is_empty(),
        "hr saw an insight shared only with the manager chain"
    );
    assert_eq!(
        read_models
            .get_development_review(ask_review(&ren))
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_get_each_change_live_and_resume_after_reconnecting() {
    let data_dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(data_dir.path());
    let channel = server.channel().await;
    let (mut org, mut goals) = (
        OrgDirectoryClient::new(channel.clone()),
        GoalsClient::new(channel.clone()),
    );
    let mut read_models = ReadModelsClient::new(channel.clone());
    set_up_sales(&server, &[("lee", "lee"), ("mia", "mia"), ("ren", "ren")]).await;
    let service = server.token("acme", "hr-sync", &["service"]);
    let assign = api::AssignManagerRequest {
        command_id: "mgr".into(),
        person_id: "mia".into(),
        manager_id: "lee".into(),
        ..Default::default()
    };
    org.assign_manager(authed(&service, assign)).await.unwrap();
    let (mia, hr) = (
        server.token("acme", "mia", &["member"]),
        server.token("acme", "hiro", &["hr"]),
    );
    let half = periods_of(now().seconds * 1_000_000)[1].clone();
    goals
        .set_goal(authed(&mia, goal_of_mia(&half)))
        .await
        .unwrap();
    let ren = server.token("acme", "ren", &["member"]);
    let rens = api::SetGoalRequest {
        command_id: "goal-ren".into(),
        goal_id: "g-2".into(),
        owner_id: "ren".into(),
        title: "Ship".into(),
        ..goal_of_mia(&half)
    };
    goals.set_goal(authed(&ren, rens)).await.unwrap();
    let progress = |n: usize| {
        let request = api::RecordGoalProgressRequest {
            command_id: format!("p{n}"),
            goal_id: "g-1".into(),
            value: n as f64,
            ..Default::default()
        };
        let mut goals = goals.clone();
        let mia = mia.clone();
        async move {
            goals
                .record_goal_progress(authed(&mia, request))
                .await
                .unwrap()
        }
    };
    let subscribe = |token: &str, after: u64| {
        authed(
            token,
            api::SubscribeRequest {
                read_model: "evaluation-brief".into(),
                member_ids: vec![],
                period: half.clone(),
                after_checkpoint: after,
            },
        )
    };
    let progress_of = |change: &api::ReadModelChange| match &change.document {
        Some(api::read_model_change::Document::EvaluationBrief(brief)) => {
            brief.goals[0].progress.len()
        }
        other => panic!("not a brief: {other:?}"),
    };

    let mut changes = read_models
        .subscribe(subscribe(&hr, 0))
        .await
        .unwrap()
        .into_inner();
    // Both members' briefs come in one batch, read together: each change carries its own.
    let first = next_change(&mut changes).await;
    assert_eq!((first.member_id.as_str(), progress_of(&first)), ("mia", 0));
    let second = next_change(&mut changes).await;
    assert_eq!(second.member_id, "ren");
    for (change, title) in [(&first, "Mentor"), (&second, "Ship")] {
        let Some(api::read_model_change::Document::EvaluationBrief(brief)) = &change.document
        else {
            panic!("not a brief: {change:?}");
        };
        assert_eq!(
            (
                brief.member_id.as_str(),
                brief.goals.len(),
                brief.goals[0].title.as_str()
            ),
            (change.member_id.as_str(), 1, title)
        );
    }
    progress(1).await;
    let live = next_change(&mut changes).await;
    assert_eq!(progress_of(&live), 1);
    assert!(live.checkpoint > first.checkpoint);
    drop(changes);

    progress(2).await;
    let mut resumed = read_models
        .subscribe(subscribe(&hr, live.checkpoint))
        .await
        .unwrap()
        .into_inner();
    let after_reconnect = next_change(&mut resumed).await;
    assert_eq!(
        progress_of(&after_reconnect),
        2,
        "the resumed subscription repeated or missed a change"
    );

    // ren may not read mia's brief: only ren's own arrives, nothing of hers.
    let mut theirs = read_models
        .subscribe(subscribe(&ren, 0))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next_change(&mut theirs).await.member_id, "ren");
    let nothing =
        tokio::time::timeout(std::time::Duration::from_millis(500), theirs.message()).await;
    assert!(nothing.is_err(), "ren received {nothing:?}");

    // Development reviews follow the same goal: its check-ins show as they are recorded.
    let reviews = authed(
        &hr,
        api::SubscribeRequest {
            read_model: "development-review".into(),
            member_ids: vec!["mia".into()],
            period: String::new(),
            after_checkpoint: 0,
        },
    );
    let mut reviews = read_models.subscribe(reviews).await.unwrap().into_inner();
    let checks_of = |change: &api::ReadModelChange| match &change.document {
        Some(api::read_model_change::Document::DevelopmentReview(review)) => {
            assert_eq!(review.member_id, "mia");
            review.goals[0].progress_checks
        }
        other => panic!("not a review: {other:?}"),
    };
    assert_eq!(checks_of(&next_change(&mut reviews).await), 2);
    progress(3).await;
    assert_eq!(checks_of(&next_change(&mut reviews).await), 3);
}

fn goal_of_mia(period: &str) -> api::SetGoalRequest {
    api::SetGoalRequest {
        command_id: "goal".into(),
        goal_id: "g-1".into(),
        owner_id: "mia".into(),
        period: period.to_owned(),
        kind: pb::GoalKind::Growth.into(),
        title: "Mentor".into(),
        ..Default::default()
    }
}
