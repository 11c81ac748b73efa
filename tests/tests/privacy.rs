//! Personal data against the real binary: text is sealed at rest, ForgetPerson makes it
//! unreadable through every API and leaves no plaintext in the data directory while the ledger
//! still verifies, export gives the person everything, a wrong or lost master key stops
//! start-up without touching anything, and altered ciphertext is detected.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use ledger_domain::pb;
use ledger_e2e::server::{ServerProcess, authed, server_binary};
use ledger_projections::periods_of;
use ledger_proto::v1 as api;
use ledger_proto::v1::goals_client::GoalsClient;
use ledger_proto::v1::insights_client::InsightsClient;
use ledger_proto::v1::ledger_client::LedgerClient;
use ledger_proto::v1::org_directory_client::OrgDirectoryClient;
use ledger_proto::v1::privacy_client::PrivacyClient;
use ledger_proto::v1::read_models_client::ReadModelsClient;
use ledger_proto::v1::sessions_client::SessionsClient;
use prost::Message;
use tonic::Code;

/// Written as mia's text; must never be readable after she is erased, nor ever lie in a file.
const MIA_MARKERS: [&str; 7] = [
    "MIA-NAME-q7",
    "MIA-TOPIC-k2",
    "MIA-NOTE-x9",
    "MIA-ACTION-v4",
    "MIA-INSIGHT-t5",
    "MIA-GOAL-TITLE-b3",
    "MIA-GOAL-REFLECTION-n8",
];
/// Ren's insight: untouched by mia's erasure.
const REN_TEXT: &str = "REN-INSIGHT-stays";
/// Not personal, so stored in clear: shows the scan reads the files the data lands in.
const UNIT_NAME: &str = "UNIT-NAME-IN-CLEAR";

fn now() -> prost_types::Timestamp {
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    prost_types::Timestamp { seconds, nanos: 0 }
}

fn long_ago() -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp {
        seconds: 1_700_000_000,
        nanos: 0,
    })
}

fn half() -> String {
    periods_of(now().seconds * 1_000_000)[1].clone()
}

/// An org with lee managing mia and ren; mia's session with lee, with an agenda, a note, an
/// action item, an insight shared for evaluation, and a goal with a reflection; an insight
/// about ren shared for evaluation.
async fn record_history(server: &ServerProcess) {
    let channel = server.channel().await;
    let mut org = OrgDirectoryClient::new(channel.clone());
    let mut sessions = SessionsClient::new(channel.clone());
    let mut insights = InsightsClient::new(channel.clone());
    let mut goals = GoalsClient::new(channel);
    let service = server.token("acme", "hr-sync", &["service"]);
    let mia = server.token("acme", "mia", &["member"]);
    let ren = server.token("acme", "ren", &["member"]);
    let define = api::DefineOrgUnitRequest {
        command_id: "unit".into(),
        org_unit_id: "sales".into(),
        name: UNIT_NAME.into(),
        ..Default::default()
    };
    org.define_org_unit(authed(&service, define)).await.unwrap();
    for (person, name) in [("lee", "Lee"), ("mia", MIA_MARKERS[0]), ("ren", "Ren")] {
        let register = api::RegisterPersonRequest {
            command_id: format!("reg-{person}"),
            person_id: person.into(),
            display_name: name.into(),
            org_unit_id: "sales".into(),
            grade: "G3".into(),
            effective_at: long_ago(),
            ..Default::default()
        };
        org.register_person(authed(&service, register))
            .await
            .unwrap();
    }
    for person in ["mia", "ren"] {
        let assign = api::AssignManagerRequest {
            command_id: format!("mgr-{person}"),
            person_id: person.into(),
            manager_id: "lee".into(),
            effective_at: long_ago(),
            ..Default::default()
        };
        org.assign_manager(authed(&service, assign)).await.unwrap();
    }
    let schedule = api::ScheduleSessionRequest {
        command_id: "sched".into(),
        session_id: "s-1".into(),
        member_id: "mia".into(),
        partner_id: "lee".into(),
        purposes: vec![pb::Purpose::Growth.into()],
        hoped_response: pb::HopedResponse::Advice.into(),
        topic: MIA_MARKERS[1].into(),
        scheduled_at: Some(now()),
        ..Default::default()
    };
    sessions
        .schedule_session(authed(&mia, schedule))
        .await
        .unwrap();
    let held = api::RecordSessionHeldRequest {
        command_id: "held".into(),
        session_id: "s-1".into(),
        held_at: Some(now()),
        duration_minutes: 30,
        ..Default::default()
    };
    sessions
        .record_session_held(authed(&mia, held))
        .await
        .unwrap();
    let note = api::RecordNoteRequest {
        command_id: "note".into(),
        session_id: "s-1".into(),
        note_id: "n-1".into(),
        text: MIA_MARKERS[2].into(),
        visibility: pb::NoteVisibility::Shared.into(),
        ..Default::default()
    };
    sessions.record_note(authed(&mia, note)).await.unwrap();
    let action = api::AgreeActionItemRequest {
        command_id: "action".into(),
        session_id: "s-1".into(),
        item_id: "a-1".into(),
        owner_id: "mia".into(),
        text: MIA_MARKERS[3].into(),
        ..Default::default()
    };
    sessions
        .agree_action_item(authed(&mia, action))
        .await
        .unwrap();
    let evaluation = vec![
        pb::SharingScope::Participants.into(),
        pb::SharingScope::Evaluation.into(),
    ];
    let insight = api::RecordInsightRequest {
        command_id: "ins-mia".into(),
        insight_id: "i-mia".into(),
        subject_id: "mia".into(),
        session_id: "s-1".into(),
        kind: pb::InsightKind::Strength.into(),
        tags: vec!["negotiation".into()],
        text: MIA_MARKERS[4].into(),
        scopes: evaluation.clone(),
        ..Default::default()
    };
    insights
        .record_insight(authed(&mia, insight))
        .await
        .unwrap();
    let ren_session = api::ScheduleSessionRequest {
        command_id: "sched-ren".into(),
        session_id: "s-2".into(),
        member_id: "ren".into(),
        partner_id: "lee".into(),
        purposes: vec![pb::Purpose::Growth.into()],
        hoped_response: pb::HopedResponse::Advice.into(),
        scheduled_at: Some(now()),
        ..Default::default()
    };
    sessions
        .schedule_session(authed(&ren, ren_session))
        .await
        .unwrap();
    let insight = api::RecordInsightRequest {
        command_id: "ins-ren".into(),
        insight_id: "i-ren".into(),
        subject_id: "ren".into(),
        session_id: "s-2".into(),
        kind: pb::InsightKind::Strength.into(),
        text: REN_TEXT.into(),
        scopes: evaluation,
        ..Default::default()
    };
    insights
        .record_insight(authed(&ren, insight))
        .await
        .unwrap();
    let goal = api::SetGoalRequest {
        command_id: "goal".into(),
        goal_id: "g-1".into(),
        owner_id: "mia".into(),
        period: half(),
        kind: pb::GoalKind::Growth.into(),
        title: MIA_MARKERS[5].into(),
        ..Default::default()
    };
    goals.set_goal(authed(&mia, goal)).await.unwrap();
    let reflect = api::ReflectOnGoalRequest {
        command_id: "reflect".into(),
        goal_id: "g-1".into(),
        text: MIA_MARKERS[6].into(),
        ..Default::default()
    };
    goals.reflect_on_goal(authed(&mia, reflect)).await.unwrap();
}

async fn brief(
    server: &ServerProcess,
    member: &str,
    as_of: Option<api::AsOf>,
) -> api::EvaluationBrief {
    let mut read_models = ReadModelsClient::new(server.channel().await);
    let hr = server.token("acme", "hiro", &["hr"]);
    let request = api::GetEvaluationBriefRequest {
        member_id: member.into(),
        period: half(),
        as_of,
    };
    read_models
        .get_evaluation_brief(authed(&hr, request))
        .await
        .unwrap()
        .into_inner()
}

async fn review(server: &ServerProcess, as_of: Option<api::AsOf>) -> api::DevelopmentReview {
    let mut read_models = ReadModelsClient::new(server.channel().await);
    let mia = server.token("acme", "mia", &["member"]);
    let request = api::GetDevelopmentReviewRequest {
        member_id: "mia".into(),
        as_of,
    };
    read_models
        .get_development_review(authed(&mia, request))
        .await
        .unwrap()
        .into_inner()
}

/// The first subscription message for mia's brief, from the start.
async fn subscribed_brief(server: &ServerProcess) -> api::EvaluationBrief {
    let mut read_models = ReadModelsClient::new(server.channel().await);
    let hr = server.token("acme", "hiro", &["hr"]);
    let request = api::SubscribeRequest {
        read_model: "evaluation-brief".into(),
        member_ids: vec!["mia".into()],
        period: half(),
        after_checkpoint: 0,
    };
    let mut changes = read_models
        .subscribe(authed(&hr, request))
        .await
        .unwrap()
        .into_inner();
    let change = changes.message().await.unwrap().unwrap();
    match change.document {
        Some(api::read_model_change::Document::EvaluationBrief(brief)) => brief,
        other => panic!("not a brief: {other:?}"),
    }
}

async fn export(
    server: &ServerProcess,
    token: &str,
    person: &str,
) -> Result<Vec<api::ExportedEvent>, tonic::Status> {
    let mut privacy = PrivacyClient::new(server.channel().await);
    let request = api::ExportPersonDataRequest {
        person_id: person.into(),
    };
    let mut stream = privacy
        .export_person_data(authed(token, request))
        .await?
        .into_inner();
    let mut events = Vec::new();
    while let Some(event) = stream.message().await? {
        events.push(event);
    }
    Ok(events)
}

/// Every ledger event's payload and metadata, as an auditor reads them.
async fn ledger_bytes(server: &ServerProcess) -> Vec<u8> {
    let mut ledger = LedgerClient::new(server.channel().await);
    let auditor = server.token("acme", "audra", &["auditor"]);
    let request = api::ReadAllRequest {
        from_leaf_index: 0,
        limit: 1000,
    };
    let events = ledger
        .read_all(authed(&auditor, request))
        .await
        .unwrap()
        .into_inner()
        .events;
    assert!(events.len() > 10);
    let mut bytes = Vec::new();
    for event in events {
        bytes.extend(event.encode_to_vec());
    }
    bytes
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// Every file under `dir` (the raw bytes, not an API), by path.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut found = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(files(&path));
        } else {
            found.insert(path.display().to_string(), std::fs::read(&path).unwrap());
        }
    }
    found
}

fn verifier_key(data_dir: &Path) -> String {
    let output = Command::new(server_binary())
        .args(["checkpoint-key", "--data-dir"])
        .arg(data_dir)
        .output()
        .unwrap();
    assert!(output.status.success());
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

/// `verify` against the running server: passed, and what it printed.
fn verify(server: &ServerProcess, data_dir: &Path) -> (bool, String) {
    let auditor = server.token("acme", "audra", &["auditor"]);
    let output = Command::new(server_binary())
        .args([
            "verify",
            "--server",
            &server.endpoint(),
            "--token",
            &auditor,
            "--key",
        ])
        .arg(verifier_key(data_dir))
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), printed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forgotten_person_is_unreadable_everywhere_and_the_ledger_still_verifies() {
    let data_dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(data_dir.path());
    record_history(&server).await;
    let mia = server.token("acme", "mia", &["member"]);

    // Before: the read models open mia's text for those who may read it.
    let before = brief(&server, "mia", None).await;
    assert_eq!(before.goals[0].title, MIA_MARKERS[5]);
    assert_eq!(before.goals[0].reflections, [MIA_MARKERS[6]]);
    assert!(!before.goals[0].erased);
    assert_eq!(before.insights[0].text, MIA_MARKERS[4]);
    let exported = export(&server, &mia, "mia").await.unwrap();
    let json: String = exported.iter().map(|e| e.json.as_str()).collect();
    for marker in MIA_MARKERS {
        assert!(json.contains(marker), "the export lacks {marker}: {json}");
    }
    assert!(!json.contains(REN_TEXT), "ren's text in mia's export");
    assert!(exported.iter().all(|e| !e.erased));
    // Auditors read the ledger sealed, from the start.
    let sealed = ledger_bytes(&server).await;
    assert!(contains(&sealed, UNIT_NAME));
    for marker in MIA_MARKERS.iter().chain([&REN_TEXT]) {
        assert!(
            !contains(&sealed, marker),
            "{marker} in clear in the ledger"
        );
    }
    let mut privacy = PrivacyClient::new(server.channel().await);
    let forget = |person: &str| api::ForgetPersonRequest {
        person_id: person.into(),
    };

    // Only hr, admin or the person themself may erase.
    let lee = server.token("acme", "lee", &["member"]);
    let refused = privacy
        .forget_person(authed(&lee, forget("mia")))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    let refused = export(&server, &lee, "mia").await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    // (Access records move the log on: compare everything but the position.)
    let unchanged = api::EvaluationBrief {
        as_of: before.as_of,
        ..brief(&server, "mia", None).await
    };
    assert_eq!(unchanged, before, "a refusal changes nothing");
    let invalid = privacy
        .forget_person(authed(&mia, forget("no/such")))
        .await
        .unwrap_err();
    assert_eq!(invalid.code(), Code::InvalidArgument);

    let as_of_before = Some(api::AsOf {
        point: Some(api::as_of::Point::Position(before.as_of.unwrap())),
    });
    let forgotten = privacy
        .forget_person(authed(&mia, forget("mia")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(forgotten.keys_destroyed, 1);
    let again = privacy
        .forget_person(authed(&mia, forget("mia")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.keys_destroyed, 0, "erasing twice is harmless");

    // After: every API shows mia's text as erased, at once.
    let after = brief(&server, "mia", None).await;
    let as_of = brief(&server, "mia", as_of_before).await;
    for brief in [&after, &as_of] {
        assert_eq!(brief.goals[0].title, "");
        assert_eq!(brief.goals[0].reflections, [""]);
        assert!(brief.goals[0].erased);
        assert_eq!(brief.insights[0].text, "");
        assert!(brief.insights[0].erased);
        assert_eq!(
            brief.goals[0].event_ids, before.goals[0].event_ids,
            "provenance stays"
        );
    }
    let subscribed = subscribed_brief(&server).await;
    assert!(subscribed.goals[0].erased && subscribed.goals[0].title.is_empty());
    for review in [
        review(&server, None).await,
        review(&server, as_of_before).await,
    ] {
        assert!(review.goals.iter().all(|g| g.erased && g.title.is_empty()));
    }
    let hr = server.token("acme", "hiro", &["hr"]);
    let exported = export(&server, &hr, "mia").await.unwrap();
    let json: String = exported.iter().map(|e| e.json.as_str()).collect();
    for marker in MIA_MARKERS {
        assert!(!json.contains(marker), "{marker} exported after erasure");
    }
    assert!(exported.iter().any(|e| e.erased));
    assert!(
        json.contains("PersonForgotten")
            || exported
                .iter()
                .any(|e| e.event_type.ends_with("PersonForgotten"))
    );
    // Exports are access records: who exported mia's data, and who was refused.
    let mut ledger = LedgerClient::new(server.channel().await);
    let request = api::ListAccessRecordsRequest {
        person_id: "mia".into(),
    };
    let records = ledger
        .list_access_records(authed(&mia, request))
        .await
        .unwrap()
        .into_inner()
        .records;
    let exports: Vec<(&str, bool)> = (records.iter())
        .filter(|r| r.query == "/dialogue.ledger.v1.Privacy/ExportPersonData")
        .map(|r| (r.reader.as_str(), r.allowed))
        .collect();
    assert_eq!(exports, [("mia", true), ("lee", false), ("hiro", true)]);
    // Ren is untouched.
    assert_eq!(brief(&server, "ren", None).await.insights[0].text, REN_TEXT);
    assert!(!contains(&ledger_bytes(&server).await, MIA_MARKERS[4]));

    // The ledger still verifies: the events were never rewritten.
    let (verified, printed) = verify(&server, data_dir.path());
    assert!(verified, "verify failed after an erasure: {printed}");
    assert!(server.terminate().await.success());

    // And no file of the data directory holds mia's text (nor anyone's).
    let files = files(data_dir.path());
    assert!(files.keys().any(|path| path.ends_with("events.db")));
    assert!(
        files.values().any(|bytes| contains(bytes, UNIT_NAME)),
        "the scan does not see what is stored in clear"
    );
    for (path, bytes) in &files {
        for marker in MIA_MARKERS.iter().chain([&REN_TEXT]) {
            assert!(!contains(bytes, marker), "{marker} in clear in {path}");
        }
    }
}

/// Runs `serve` expecting it to refuse to start; what it printed.
fn refused_start(data_dir: &Path, env: &[(&str, &str)]) -> String {
    let output = Command::new(server_binary())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(!output.status.success(), "the server started");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_or_missing_master_key_stops_start_up_and_touches_nothing() {
    let data_dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(data_dir.path());
    record_history(&server).await;
    assert!(server.terminate().await.success());
    let untouched = files(data_dir.path());

    let other = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    let printed = refused_start(data_dir.path(), &[("LEDGER_MASTER_KEY", other)]);
    assert!(
        printed.contains("the master key does not open the key store"),
        "{printed}"
    );
    assert!(!printed.contains(other), "the key is printed: {printed}");
    assert_eq!(
        files(data_dir.path()),
        untouched,
        "a refused start changed files"
    );

    let kept = tempfile::tempdir().unwrap();
    let key_file = kept.path().join("master.key");
    std::fs::rename(data_dir.path().join("master.key"), &key_file).unwrap();
    let moved = files(data_dir.path());
    let printed = refused_start(data_dir.path(), &[]);
    assert!(printed.contains("the master key is missing"), "{printed}");
    assert_eq!(
        files(data_dir.path()),
        moved,
        "a refused start changed files"
    );

    // With the key configured from where it was kept, the data opens again.
    let server = ServerProcess::start_with_env(
        data_dir.path(),
        &[],
        &[("LEDGER_MASTER_KEY_FILE", key_file.to_str().unwrap())],
    );
    assert_eq!(
        brief(&server, "mia", None).await.goals[0].title,
        MIA_MARKERS[5]
    );
    assert!(server.terminate().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn altered_ciphertext_is_detected_on_decryption_and_by_verify() {
    let data_dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(data_dir.path());
    record_history(&server).await;
    let (verified, printed) = verify(&server, data_dir.path());
    assert!(verified, "the honest log does not verify: {printed}");
    assert!(server.terminate().await.success());

    // Flip one bit of the ciphertext of mia's insight, in the raw event store.
    let db = rusqlite::Connection::open(data_dir.path().join("events.db")).unwrap();
    let (position, payload): (i64, Vec<u8>) = db
        .query_row(
            "SELECT position, payload FROM events WHERE event_type = ?1 ORDER BY position LIMIT 1",
            ["dialogue.ledger.events.v1.InsightRecorded"],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .unwrap();
    let mut insight = pb::InsightRecorded::decode(payload.as_slice()).unwrap();
    assert_eq!(insight.subject_id, "mia");
    insight.sealed.as_mut().unwrap().ciphertext[3] ^= 0x10;
    db.execute(
        "UPDATE events SET payload = ?1 WHERE position = ?2",
        rusqlite::params![insight.encode_to_vec(), position],
    )
    .unwrap();
    drop(db);

    let server = ServerProcess::start(data_dir.path());
    let mia = server.token("acme", "mia", &["member"]);
    let error = export(&server, &mia, "mia").await.unwrap_err();
    assert_eq!(error.code(), Code::DataLoss, "{error:?}");
    let (verified, printed) = verify(&server, data_dir.path());
    assert!(!verified, "verify passed an altered log: {printed}");
    assert!(server.terminate().await.success());
}
