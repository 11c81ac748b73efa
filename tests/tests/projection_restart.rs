//! A server killed while its projections catch up resumes them from their checkpoints, and the
//! read models then equal a rebuild from scratch.

use std::path::Path;
use std::time::{Duration, Instant};

use ledger_domain::{Event, pb, to_timestamp};
use ledger_e2e::server::ServerProcess;
use ledger_store::{EventStore, ExpectedVersion, Metadata, NewEvent, StreamName};
use ledger_store_embedded::EmbeddedStore;
use tonic_health::pb::health_check_response::ServingStatus;
use uuid::Uuid;

const STORIES: usize = 4000;
const EVENTS: u64 = STORIES as u64 * 5;
/// The projections the server runs (evaluation briefs, staffing, development reviews, dialogue
/// health).
const PROJECTIONS: usize = 4;

fn story(i: usize) -> Vec<(String, Event)> {
    let member = format!("m{}", i % 50);
    let at = Some(to_timestamp(1_796_119_200_000_000 + i as i64));
    vec![
        (
            format!("acme/session-s{i}"),
            pb::SessionScheduled {
                session_id: format!("s{i}"),
                member_id: member.clone(),
                partner_id: "lee".into(),
                relationship: pb::Relationship::Diagonal.into(),
                purposes: vec![pb::Purpose::Growth.into()],
                scheduled_at: at,
                ..Default::default()
            }
            .into(),
        ),
        (
            format!("acme/session-s{i}"),
            pb::SessionHeld {
                session_id: format!("s{i}"),
                held_at: at,
                duration_minutes: 30,
            }
            .into(),
        ),
        (
            format!("acme/insight-i{i}"),
            pb::InsightRecorded {
                insight_id: format!("i{i}"),
                subject_id: member.clone(),
                session_id: format!("s{i}"),
                kind: pb::InsightKind::Skill.into(),
                tags: vec![format!("skill-{}", i % 7)],
                text: "shared".into(),
                scopes: vec![
                    pb::SharingScope::Evaluation.into(),
                    pb::SharingScope::Staffing.into(),
                ],
                ..Default::default()
            }
            .into(),
        ),
        (
            format!("acme/goal-g{i}"),
            pb::GoalSet {
                goal_id: format!("g{i}"),
                owner_id: member,
                period: "2026-H2".into(),
                title: "t".into(),
                ..Default::default()
            }
            .into(),
        ),
        (
            format!("acme/goal-g{i}"),
            pb::GoalProgressRecorded {
                goal_id: format!("g{i}"),
                value: 1.0,
                ..Default::default()
            }
            .into(),
        ),
    ]
}

async fn write_log(dir: &Path) {
    let store = EmbeddedStore::open(dir).unwrap();
    let writers: Vec<_> = (0..32)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in (w..STORIES).step_by(32) {
                    for (stream, event) in story(i) {
                        let new = NewEvent {
                            id: Uuid::new_v4(),
                            event_type: event.type_name().into(),
                            payload: event.encode().into(),
                            metadata: Metadata::default(),
                        };
                        store
                            .append(
                                &StreamName::new(stream).unwrap(),
                                ExpectedVersion::Any,
                                vec![new],
                            )
                            .await
                            .unwrap();
                    }
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    store.close().await.unwrap();
}

/// The read models' files (one per projection), in name order.
fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir.join("readmodels")) else {
        return vec![];
    };
    let mut files: Vec<_> = (entries.filter_map(Result::ok))
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "db"))
        .collect();
    files.sort();
    files
}

/// The projections' checkpoints, read beside the running server.
fn checkpoints(dir: &Path) -> Vec<u64> {
    let checkpoint = |file: &Path| {
        let db = rusqlite::Connection::open(file).ok()?;
        db.query_row("SELECT commit_pos FROM checkpoints", [], |row| {
            row.get::<_, i64>(0)
        })
        .ok()
    };
    (files(dir).iter())
        .filter_map(|file| checkpoint(file))
        .map(|p| p as u64)
        .collect()
}

async fn wait_until(dir: &Path, done: impl Fn(&[u64]) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !done(&checkpoints(dir)) {
        assert!(
            Instant::now() < deadline,
            "projections stuck at {:?}",
            checkpoints(dir)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn documents(dir: &Path) -> Vec<(String, String, Vec<u8>)> {
    let mut documents = Vec::new();
    for file in files(dir) {
        let db = rusqlite::Connection::open(file).unwrap();
        let mut select = db
            .prepare("SELECT model, key, body FROM documents ORDER BY model, key")
            .unwrap();
        documents.extend(
            select
                .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
                .unwrap()
                .map(Result::unwrap),
        );
    }
    documents
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_catch_up_the_read_models_equal_a_rebuild() {
    let data_dir = tempfile::tempdir().unwrap();
    write_log(data_dir.path()).await;

    // Small commits while catching up, so that the kill finds some committed and others not.
    let mut server =
        ServerProcess::start_with(data_dir.path(), &["--projection-commit-events", "1000"]);
    // Kill it once some batches are committed and others are not.
    wait_until(data_dir.path(), |c| {
        c.len() == PROJECTIONS && c.iter().any(|p| *p > 0 && *p < EVENTS)
    })
    .await;
    server.kill();
    let at_kill = checkpoints(data_dir.path());
    assert!(
        at_kill.iter().any(|p| *p < EVENTS),
        "the projections finished before the kill: {at_kill:?}"
    );

    let server = ServerProcess::start(data_dir.path());
    wait_until(data_dir.path(), |c| {
        c.len() == PROJECTIONS && c.iter().all(|p| *p == EVENTS)
    })
    .await;
    assert!(server.terminate().await.success());
    let resumed = documents(data_dir.path());

    std::fs::remove_dir_all(data_dir.path().join("readmodels")).unwrap();
    let server = ServerProcess::start(data_dir.path());
    wait_until(data_dir.path(), |c| {
        c.len() == PROJECTIONS && c.iter().all(|p| *p == EVENTS)
    })
    .await;
    assert!(server.terminate().await.success());
    let rebuilt = documents(data_dir.path());
    assert!(
        rebuilt.len() > STORIES,
        "too few documents: {}",
        rebuilt.len()
    );
    assert!(
        resumed == rebuilt,
        "documents after the kill differ from a rebuild ({} vs {})",
        resumed.len(),
        rebuilt.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_while_the_projections_are_further_behind_than_the_ready_lag() {
    let data_dir = tempfile::tempdir().unwrap();
    write_log(data_dir.path()).await;
    let server =
        ServerProcess::start_with_env(data_dir.path(), &[], &[("LEDGER_READY_MAX_LAG_SECS", "0")]);
    // 20,000 events to fold from zero: any lag is too much.
    assert_eq!(server.serving().await, ServingStatus::NotServing);
    wait_until(data_dir.path(), |c| {
        c.len() == PROJECTIONS && c.iter().all(|p| *p == EVENTS)
    })
    .await;
    let caught_up = Instant::now();
    while server.serving().await != ServingStatus::Serving {
        assert!(
            caught_up.elapsed() < Duration::from_secs(5),
            "still not serving after the projections caught up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(server.terminate().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuild_restores_a_projections_documents_from_the_log() {
    let data_dir = tempfile::tempdir().unwrap();
    write_log(data_dir.path()).await;
    let server = ServerProcess::start(data_dir.path());
    wait_until(data_dir.path(), |c| {
        c.len() == PROJECTIONS && c.iter().all(|p| *p == EVENTS)
    })
    .await;
    let dir = data_dir.path().to_str().unwrap();
    // The embedded store is the server's while it runs.
    let refused = rebuild(&["staffing", "--data-dir", dir]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("in use"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(server.terminate().await.success());
    let before = documents(data_dir.path());

    // Lose the staffing documents behind the checkpoint's back: only a rebuild brings them back.
    let staffing = (files(data_dir.path()).into_iter())
        .find(|file| {
            file.file_name()
                .unwrap()
                .to_string_lossy()
                .contains("staffing")
        })
        .expect("the staffing read models' file");
    let lost = rusqlite::Connection::open(&staffing)
        .unwrap()
        .execute("DELETE FROM documents", [])
        .unwrap();
    assert!(lost > 0);
    assert_ne!(documents(data_dir.path()), before);

    let output = rebuild(&["staffing", "--data-dir", dir, "--json"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let rebuilt: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(rebuilt["projection"], "staffing");
    assert_eq!(rebuilt["position"], EVENTS);
    assert_eq!(rebuilt["left_to_replica"], false);
    assert!(
        documents(data_dir.path()) == before,
        "the rebuilt documents differ"
    );

    let unknown = rebuild(&["staffng", "--data-dir", dir]);
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("evaluation-briefs, staffing"));
}

fn rebuild(args: &[&str]) -> std::process::Output {
    std::process::Command::new(ledger_e2e::server::server_binary())
        .arg("rebuild")
        .args(args)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_current_query_answers_from_where_the_projection_stands() {
    use ledger_e2e::server::authed;
    use ledger_proto::v1 as api;
    use ledger_proto::v1::read_models_client::ReadModelsClient;

    let data_dir = tempfile::tempdir().unwrap();
    write_log(data_dir.path()).await;
    let server = ServerProcess::start(data_dir.path());
    let hr = server.token("acme", "hr-1", &["hr"]);
    let mut read_models = ReadModelsClient::new(server.channel().await);
    let brief = |freshness: &str| {
        let mut request = authed(
            &hr,
            api::GetEvaluationBriefRequest {
                member_id: "m1".into(),
                period: "2026-H2".into(),
                ..Default::default()
            },
        );
        (request.metadata_mut()).insert("x-ledger-freshness", freshness.parse().unwrap());
        request
    };
    let refused = read_models
        .get_evaluation_brief(brief("soon"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    assert!(
        refused.message().contains("x-ledger-freshness"),
        "{refused:?}"
    );

    // While the projection catches up, `current` answers as of where it stands, never past the
    // log; once it has caught up, at the log's head, as `head` does. (Each query appends its
    // access record, so the log grows a little as we ask.)
    let stood = |answer: api::EvaluationBrief| answer.as_of.map_or(0, |p| p.commit);
    let mut positions = Vec::new();
    loop {
        let current = read_models
            .get_evaluation_brief(brief("current"))
            .await
            .unwrap();
        let position = stood(current.into_inner());
        let status = read_models
            .get_projection_status(authed(&hr, api::GetProjectionStatusRequest {}))
            .await
            .unwrap()
            .into_inner();
        let head = status.head.map_or(0, |p| p.commit);
        assert!(position <= head, "{position} past the head {head}");
        positions.push(position);
        if position >= EVENTS {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(positions.is_sorted(), "{positions:?}");
    let head = read_models
        .get_evaluation_brief(brief("head"))
        .await
        .unwrap();
    assert!(stood(head.into_inner()) >= *positions.last().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_past_its_deadline_is_dropped_by_the_server() {
    use ledger_e2e::server::authed;
    use ledger_proto::v1 as api;
    use ledger_proto::v1::read_models_client::ReadModelsClient;

    let data_dir = tempfile::tempdir().unwrap();
    write_log(data_dir.path()).await;
    let server = ServerProcess::start(data_dir.path());
    let hr = server.token("acme", "hr-1", &["hr"]);
    let mut read_models = ReadModelsClient::new(server.channel().await);
    // As of the log's end: the brief is folded afresh from the whole log, which takes a while.
    let brief = |deadline: Option<Duration>| {
        let mut request = authed(
            &hr,
            api::GetEvaluationBriefRequest {
                member_id: "m1".into(),
                period: "2026-H2".into(),
                as_of: Some(api::AsOf {
                    point: Some(api::as_of::Point::Position(api::Position {
                        commit: EVENTS,
                        prepare: EVENTS,
                    })),
                }),
            },
        );
        if let Some(deadline) = deadline {
            request.set_timeout(deadline);
        }
        request
    };
    let started = Instant::now();
    read_models.get_evaluation_brief(brief(None)).await.unwrap();
    let whole = started.elapsed();
    let deadline = Duration::from_millis(20);
    assert!(whole > deadline * 3, "the slow query took only {whole:?}");

    let started = Instant::now();
    let dropped = read_models
        .get_evaluation_brief(brief(Some(deadline)))
        .await
        .unwrap_err();
    let took = started.elapsed();
    // The server's answer (tonic's grpc-timeout handling drops the handler): CANCELLED.
    assert_eq!(dropped.code(), tonic::Code::Cancelled, "{dropped:?}");
    assert!(
        took < whole / 2,
        "answered after {took:?}; the whole query takes {whole:?}"
    );
}
