//! Aggregate states kept in memory between commands (the embedded store) decide as the log does:
//! a command sees the effect of the one acknowledged just before it on another aggregate, a retry
//! is recognised from memory and again after a restart reads the log, and what the state forbids
//! stays forbidden across the restart; one command id sent with two bodies at once is carried out
//! once.

use ledger_domain::pb;
use ledger_e2e::server::{ServerProcess, authed, set_up_sales};
use ledger_proto::v1 as api;
use ledger_proto::v1::ledger_client::LedgerClient;
use ledger_proto::v1::org_directory_client::OrgDirectoryClient;
use ledger_proto::v1::sessions_client::SessionsClient;
use prost::Message;
use tonic::Code;

fn schedule(command_id: &str, session_id: &str) -> api::ScheduleSessionRequest {
    api::ScheduleSessionRequest {
        command_id: command_id.into(),
        session_id: session_id.into(),
        member_id: "mia".into(),
        partner_id: "lee".into(),
        purposes: vec![pb::Purpose::Growth.into()],
        hoped_response: pb::HopedResponse::JustListen.into(),
        scheduled_at: Some(prost_types::Timestamp {
            seconds: 1_800_000_000,
            nanos: 0,
        }),
        ..Default::default()
    }
}

fn agree(command_id: &str, text: &str) -> api::AgreeActionItemRequest {
    api::AgreeActionItemRequest {
        command_id: command_id.into(),
        session_id: "s-2".into(),
        item_id: "a-1".into(),
        owner_id: "mia".into(),
        text: text.into(),
        ..Default::default()
    }
}

/// The session's events, as an auditor reads them.
async fn session_events(server: &ServerProcess, session: &str) -> Vec<api::LedgerEvent> {
    let auditor = server.token("acme", "audra", &["auditor"]);
    let read = api::ReadStreamRequest {
        stream: format!("session-{session}"),
        limit: 100,
        ..Default::default()
    };
    LedgerClient::new(server.channel().await)
        .read_stream(authed(&auditor, read))
        .await
        .unwrap()
        .into_inner()
        .events
}

/// How the session's scheduling event classified the relationship.
async fn relationship(server: &ServerProcess, session: &str) -> i32 {
    let events = session_events(server, session).await;
    pb::SessionScheduled::decode(&events[0].payload[..])
        .unwrap()
        .relationship
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_states_decide_as_the_log_does_before_and_after_a_restart() {
    let data_dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(data_dir.path());
    set_up_sales(&server, &[("mia", "mia"), ("lee", "lee")]).await;
    let service = server.token("acme", "hr-sync", &["service"]);
    let mut org = OrgDirectoryClient::new(server.channel().await);
    let mia = server.token("acme", "mia", &["member"]);
    let mut sessions = SessionsClient::new(server.channel().await);
    // Peers first; then lee becomes mia's manager and the very next session is vertical.
    sessions
        .schedule_session(authed(&mia, schedule("s1", "s-1")))
        .await
        .unwrap();
    assert_ne!(
        relationship(&server, "s-1").await,
        pb::Relationship::VerticalDirect as i32
    );
    let assign = api::AssignManagerRequest {
        command_id: "m".into(),
        person_id: "mia".into(),
        manager_id: "lee".into(),
        ..Default::default()
    };
    org.assign_manager(authed(&service, assign)).await.unwrap();
    sessions
        .schedule_session(authed(&mia, schedule("s2", "s-2")))
        .await
        .unwrap();
    assert_eq!(
        relationship(&server, "s-2").await,
        pb::Relationship::VerticalDirect as i32
    );

    let agreed = sessions
        .agree_action_item(authed(&mia, agree("a", "draft the plan")))
        .await
        .unwrap()
        .into_inner();
    let retried = sessions
        .agree_action_item(authed(&mia, agree("a", "draft the plan")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(retried, agreed);
    let reused = sessions
        .agree_action_item(authed(&mia, agree("a", "something else")))
        .await
        .unwrap_err();
    assert_eq!(reused.code(), Code::AlreadyExists, "{reused:?}");
    let again = sessions
        .agree_action_item(authed(&mia, agree("a2", "draft the plan")))
        .await
        .unwrap_err();
    assert_eq!(
        (again.code(), again.message()),
        (Code::AlreadyExists, "action item a-1 already exists")
    );
    // A command id is an idempotency key per aggregate: on another one it is another command.
    let elsewhere = sessions
        .schedule_session(authed(&mia, schedule("a", "s-3")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(elsewhere.version, 0);
    assert_ne!(elsewhere.position, agreed.position);
    assert_eq!(
        relationship(&server, "s-3").await,
        pb::Relationship::VerticalDirect as i32
    );

    assert!(server.terminate().await.success());
    let server = ServerProcess::start(data_dir.path());
    let mia = server.token("acme", "mia", &["member"]);
    let mut sessions = SessionsClient::new(server.channel().await);
    let retried = sessions
        .agree_action_item(authed(&mia, agree("a", "draft the plan")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(retried, agreed, "the retry after the restart");
    let retried = sessions
        .schedule_session(authed(&mia, schedule("a", "s-3")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        retried, elsewhere,
        "the retry on the other aggregate after the restart"
    );
    let again = sessions
        .agree_action_item(authed(&mia, agree("a3", "draft the plan")))
        .await
        .unwrap_err();
    assert_eq!(
        (again.code(), again.message()),
        (Code::AlreadyExists, "action item a-1 already exists")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_command_id_sent_with_two_bodies_at_once_is_carried_out_once() {
    const ROUNDS: usize = 20;
    let data_dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(data_dir.path());
    set_up_sales(&server, &[("mia", "mia"), ("lee", "lee")]).await;
    let mia = server.token("acme", "mia", &["member"]);
    let mut first = SessionsClient::new(server.channel().await);
    let mut second = SessionsClient::new(server.channel().await);
    first
        .schedule_session(authed(&mia, schedule("s2", "s-2")))
        .await
        .unwrap();
    for round in 0..ROUNDS {
        let agree = |text: &str| api::AgreeActionItemRequest {
            item_id: format!("a-{round}"),
            ..agree(&format!("race-{round}"), text)
        };
        let (a, b) = tokio::join!(
            first.agree_action_item(authed(&mia, agree("draft the plan"))),
            second.agree_action_item(authed(&mia, agree("something else"))),
        );
        let outcomes = (a.map_err(|e| e.code()), b.map_err(|e| e.code()));
        assert!(
            matches!(
                outcomes,
                (Ok(_), Err(Code::AlreadyExists)) | (Err(Code::AlreadyExists), Ok(_))
            ),
            "round {round}: {outcomes:?}"
        );
    }
    assert_eq!(
        session_events(&server, "s-2").await.len(),
        1 + ROUNDS,
        "one scheduling and one item per round"
    );
}
