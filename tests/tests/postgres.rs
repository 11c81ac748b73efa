//! The server on the PostgreSQL event store: commands land in PostgreSQL, and a server started
//! afresh (a new data directory, as another replica would be) rebuilds the same read models from
//! it. Runs when `LEDGER_TEST_PG_URL` is set; otherwise says it was skipped.

use ledger_e2e::server::{ServerProcess, authed, next_change};
use ledger_projections::periods_of;
use ledger_proto::v1 as api;
use ledger_proto::v1::goals_client::GoalsClient;
use ledger_proto::v1::org_directory_client::OrgDirectoryClient;
use ledger_proto::v1::privacy_client::PrivacyClient;
use ledger_proto::v1::read_models_client::ReadModelsClient;
use ledger_store_postgres::testing::{TestSchema, database_url};

/// The master key every replica is configured with: they share the key store in PostgreSQL.
const MASTER_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

fn start(data_dir: &std::path::Path, url: &str, schema: &str) -> ServerProcess {
    let args = ["--store", "postgres", "--store-namespace", schema];
    // The URL and the key go by environment, as an operator would pass secrets.
    let env = [("LEDGER_STORE_URL", url), ("LEDGER_MASTER_KEY", MASTER_KEY)];
    ServerProcess::start_with_env(data_dir, &args, &env)
}

async fn goal_titles(server: &ServerProcess, period: &str) -> Vec<String> {
    let mut read_models = ReadModelsClient::new(server.channel().await);
    let mia = server.token("acme", "mia", &["member"]);
    let request = api::GetEvaluationBriefRequest {
        member_id: "mia".into(),
        period: period.into(),
        as_of: None,
    };
    let brief = read_models
        .get_evaluation_brief(authed(&mia, request))
        .await
        .unwrap()
        .into_inner();
    brief.goals.into_iter().map(|g| g.title).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_land_in_postgres_and_a_fresh_server_rebuilds_from_it() {
    let Some(url) = database_url() else {
        return;
    };
    let schema = TestSchema::new(&url);
    let first_dir = tempfile::tempdir().unwrap();
    let mut server = start(first_dir.path(), &url, &schema.name);
    let channel = server.channel().await;
    let mut org = OrgDirectoryClient::new(channel.clone());
    let mut goals = GoalsClient::new(channel);
    let service = server.token("acme", "hr-sync", &["service"]);
    let unit = api::DefineOrgUnitRequest {
        command_id: "u".into(),
        org_unit_id: "sales".into(),
        name: "Sales".into(),
        ..Default::default()
    };
    org.define_org_unit(authed(&service, unit)).await.unwrap();
    let register = api::RegisterPersonRequest {
        command_id: "reg-mia".into(),
        person_id: "mia".into(),
        display_name: "Mia".into(),
        org_unit_id: "sales".into(),
        ..Default::default()
    };
    org.register_person(authed(&service, register.clone()))
        .await
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64;
    let half = periods_of(now)[1].clone();
    let mia = server.token("acme", "mia", &["member"]);
    let goal = api::SetGoalRequest {
        command_id: "goal".into(),
        goal_id: "g-1".into(),
        owner_id: "mia".into(),
        period: half.clone(),
        title: "Mentor two juniors".into(),
        kind: ledger_domain::pb::GoalKind::Growth.into(),
        ..Default::default()
    };
    let set = goals
        .set_goal(authed(&mia, goal.clone()))
        .await
        .unwrap()
        .into_inner();
    // A retried command appends nothing and answers as before.
    let retried = goals
        .set_goal(authed(&mia, goal))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(retried, set);
    assert_eq!(goal_titles(&server, &half).await, ["Mentor two juniors"]);

    // A subscriber on PostgreSQL read models hears of each commit through the runners.
    let mut changes = ReadModelsClient::new(server.channel().await)
        .subscribe(authed(
            &mia,
            api::SubscribeRequest {
                read_model: "evaluation-brief".into(),
                member_ids: vec!["mia".into()],
                period: half.clone(),
                after_checkpoint: 0,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let mut next_progress = async || match next_change(&mut changes).await.document {
        Some(api::read_model_change::Document::EvaluationBrief(brief)) => {
            brief.goals[0].progress.len()
        }
        other => panic!("not a brief: {other:?}"),
    };
    assert_eq!(next_progress().await, 0);
    record_progress(&server, 1).await;
    assert_eq!(next_progress().await, 1, "the live change did not arrive");
    drop(changes);

    // Killed without a goodbye; another server with nothing of its own takes over.
    server.kill();
    let second_dir = tempfile::tempdir().unwrap();
    let server = start(second_dir.path(), &url, &schema.name);
    assert_eq!(goal_titles(&server, &half).await, ["Mentor two juniors"]);
    let mut org = OrgDirectoryClient::new(server.channel().await);
    let service = server.token("acme", "hr-sync", &["service"]);
    let again = org
        .register_person(authed(&service, register))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.version, 0, "the retry found the first server's event");
    assert!(server.terminate().await.success());
}

async fn progress_checks(server: &ServerProcess, period: &str) -> usize {
    let mut read_models = ReadModelsClient::new(server.channel().await);
    let mia = server.token("acme", "mia", &["member"]);
    let request = api::GetEvaluationBriefRequest {
        member_id: "mia".into(),
        period: period.into(),
        as_of: None,
    };
    let brief = read_models
        .get_evaluation_brief(authed(&mia, request))
        .await
        .unwrap()
        .into_inner();
    brief.goals.first().map_or(0, |goal| goal.progress.len())
}

async fn record_progress(server: &ServerProcess, n: usize) {
    let mut goals = GoalsClient::new(server.channel().await);
    let mia = server.token("acme", "mia", &["member"]);
    let request = api::RecordGoalProgressRequest {
        command_id: format!("progress-{n}"),
        goal_id: "g-1".into(),
        key_result_id: String::new(),
        value: n as f64,
        ..Default::default()
    };
    goals
        .record_goal_progress(authed(&mia, request))
        .await
        .unwrap();
}

/// Whether `server` runs the evaluation briefs projection.
async fn runs_briefs(server: &ServerProcess) -> bool {
    let mut read_models = ReadModelsClient::new(server.channel().await);
    let token = server.token("acme", "ops", &["admin"]);
    let status = read_models
        .get_projection_status(authed(&token, api::GetProjectionStatusRequest {}))
        .await
        .unwrap()
        .into_inner();
    status
        .projections
        .iter()
        .any(|p| p.projection == "evaluation-briefs" && p.running_here)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_the_log_and_the_read_models_and_take_over_projections() {
    let Some(url) = database_url() else {
        return;
    };
    let schema = TestSchema::new(&url);
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut a = start(dir_a.path(), &url, &schema.name);
    let mut b = start(dir_b.path(), &url, &schema.name);

    let mut org = OrgDirectoryClient::new(a.channel().await);
    let service = a.token("acme", "hr-sync", &["service"]);
    let unit = api::DefineOrgUnitRequest {
        command_id: "u".into(),
        org_unit_id: "sales".into(),
        name: "Sales".into(),
        ..Default::default()
    };
    org.define_org_unit(authed(&service, unit)).await.unwrap();
    let mut org = OrgDirectoryClient::new(b.channel().await);
    let service = b.token("acme", "hr-sync", &["service"]);
    let register = api::RegisterPersonRequest {
        command_id: "reg-mia".into(),
        person_id: "mia".into(),
        display_name: "Mia".into(),
        org_unit_id: "sales".into(),
        ..Default::default()
    };
    org.register_person(authed(&service, register))
        .await
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64;
    let half = periods_of(now)[1].clone();
    let mut goals = GoalsClient::new(a.channel().await);
    let goal = api::SetGoalRequest {
        command_id: "goal".into(),
        goal_id: "g-1".into(),
        owner_id: "mia".into(),
        period: half.clone(),
        title: "Mentor".into(),
        kind: ledger_domain::pb::GoalKind::Growth.into(),
        ..Default::default()
    };
    let mia = a.token("acme", "mia", &["member"]);
    goals.set_goal(authed(&mia, goal)).await.unwrap();

    // Commands through both replicas; each answers queries with all of them.
    for n in 1..=4 {
        record_progress(if n % 2 == 0 { &a } else { &b }, n).await;
    }
    assert_eq!(progress_checks(&a, &half).await, 4);
    assert_eq!(progress_checks(&b, &half).await, 4);
    let (a_runs, b_runs) = (runs_briefs(&a).await, runs_briefs(&b).await);
    assert!(
        a_runs != b_runs,
        "exactly one replica runs the projection: {a_runs} {b_runs}"
    );

    // An erasure through one replica reaches the other's key cache at once (both have opened
    // mia's goal title, so both hold her key).
    let titles = goal_titles(&a, &half).await;
    assert!(titles.iter().all(|t| !t.is_empty()), "{titles:?}");
    assert_eq!(goal_titles(&b, &half).await, titles);
    let mut privacy = PrivacyClient::new(a.channel().await);
    let hr = a.token("acme", "hiro", &["hr"]);
    let forget = api::ForgetPersonRequest {
        person_id: "mia".into(),
    };
    privacy.forget_person(authed(&hr, forget)).await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while goal_titles(&b, &half).await != vec![String::new(); titles.len()] {
        assert!(
            std::time::Instant::now() < deadline,
            "the other replica still shows an erased person's text"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(goal_titles(&a, &half).await.iter().all(String::is_empty));

    // The owner dies; the other takes the projection over and folds on without a gap or a double.
    let survivor = if a_runs {
        a.kill();
        b
    } else {
        b.kill();
        a
    };
    for n in 5..=6 {
        record_progress(&survivor, n).await;
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let checks = progress_checks(&survivor, &half).await;
        if checks == 6 {
            break;
        }
        assert!(checks <= 6, "an event was folded twice: {checks}");
        assert!(
            std::time::Instant::now() < deadline,
            "the survivor did not take the projection over: {checks} check-ins"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(runs_briefs(&survivor).await);
    assert!(survivor.terminate().await.success());
}
