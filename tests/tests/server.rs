//! The real binary: starts on a free port, answers the gRPC health check, lists its services by
//! reflection, and stops cleanly on SIGTERM.

use futures::StreamExt;
use ledger_e2e::server::{ServerProcess, authed, server_binary};
use ledger_store_embedded::EmbeddedStore;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

async fn reflect(server: &ServerProcess, request: MessageRequest) -> MessageResponse {
    let mut client = ServerReflectionClient::new(server.channel().await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    };
    let mut responses = client
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    responses
        .next()
        .await
        .unwrap()
        .unwrap()
        .message_response
        .unwrap()
}

#[tokio::test]
async fn serves_health_and_reflection_and_stops_on_sigterm() {
    let data_dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(data_dir.path());

    let mut health = HealthClient::new(server.channel().await);
    let status = health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap();
    assert_eq!(status.into_inner().status(), ServingStatus::Serving);

    let listed = reflect(&server, MessageRequest::ListServices(String::new())).await;
    let MessageResponse::ListServicesResponse(listed) = listed else {
        panic!("unexpected reflection answer {listed:?}");
    };
    let names: Vec<_> = listed
        .service
        .into_iter()
        .map(|service| service.name)
        .collect();
    for expected in [
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
    ] {
        assert!(
            names.iter().any(|name| name == expected),
            "{expected} is not listed: {names:?}"
        );
    }
    let symbol =
        MessageRequest::FileContainingSymbol("dialogue.ledger.events.v1.EventMetadata".into());
    let file = reflect(&server, symbol).await;
    assert!(
        matches!(file, MessageResponse::FileDescriptorResponse(ref files) if !files.file_descriptor_proto.is_empty()),
        "the ledger's own protos are not reflected: {file:?}"
    );

    assert!(
        data_dir.path().join(EmbeddedStore::FILE_NAME).exists(),
        "no store in the data directory"
    );
    let log = server.log();
    let status = server.terminate().await;
    assert!(
        status.success(),
        "the server exited with {status}; its log:\n{}",
        log.join("\n")
    );
    // The store was closed and its directory released.
    EmbeddedStore::open(data_dir.path())
        .unwrap()
        .close()
        .await
        .unwrap();
}

#[tokio::test]
async fn refuses_a_data_directory_in_use() {
    let data_dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(data_dir.path());
    let second = std::process::Command::new(ledger_e2e::server::server_binary())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir.path())
        .output()
        .unwrap();
    assert!(
        !second.status.success(),
        "a second server started on the same data directory"
    );
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains("in use by another process"),
        "unclear error: {stderr}"
    );
    assert!(server.terminate().await.success());
}

#[test]
fn an_unreachable_event_store_fails_start_up_clearly_and_quickly() {
    let data_dir = tempfile::tempdir().unwrap();
    let binary = ledger_e2e::server::server_binary();
    for (store, url) in [
        ("eventstoredb", "esdb://127.0.0.1:1?tls=false"),
        (
            "postgres",
            "postgres://ledger:secret-password@127.0.0.1:1/ledger",
        ),
    ] {
        let started = std::time::Instant::now();
        let output = std::process::Command::new(binary)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--store",
                store,
                "--data-dir",
            ])
            .arg(data_dir.path())
            .env("LEDGER_STORE_URL", url)
            .env("RUST_BACKTRACE", "0")
            .output()
            .unwrap();
        assert!(
            !output.status.success(),
            "{store}: started without its store"
        );
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "{store}: slow to fail"
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("cannot open the"),
            "{store}: unclear error: {stderr}"
        );
        assert!(
            !stderr.contains("secret-password"),
            "{store}: the URL's password leaked"
        );
    }
}

#[tokio::test]
async fn a_stream_left_open_delays_shutdown_only_for_the_grace_period() {
    let data_dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start_with(data_dir.path(), &["--shutdown-grace-secs", "1"]);
    let mut health = HealthClient::new(server.channel().await);
    let request = HealthCheckRequest {
        service: String::new(),
    };
    let mut watch = health.watch(request).await.unwrap().into_inner();
    let first = watch.next().await.unwrap().unwrap();
    assert_eq!(first.status(), ServingStatus::Serving);

    let started = std::time::Instant::now();
    let stopping = tokio::spawn(server.terminate());
    // The watcher hears that the server stopped serving before it goes.
    let next = watch.next().await.unwrap().unwrap();
    assert_eq!(next.status(), ServingStatus::NotServing);
    let status = stopping.await.unwrap();
    assert!(status.success(), "the server exited with {status}");
    let took = started.elapsed();
    assert!(
        took < std::time::Duration::from_secs(10),
        "shutdown took {took:?}"
    );
}

#[test]
fn config_prints_the_effective_settings_with_their_sources_and_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ledger.toml");
    std::fs::write(
        &file,
        "rate-limit = 50\nstore-url = \"postgres://ledger:hunter2@db/ledger\"\nlisten = \"0.0.0.0:1\"\n",
    )
    .unwrap();
    let output = std::process::Command::new(server_binary())
        .arg("config")
        .arg("--config")
        .arg(&file)
        .args(["--listen", "127.0.0.1:2"])
        .env("LEDGER_MAX_SUBSCRIPTIONS", "9")
        .env_remove("LEDGER_RATE_LIMIT")
        .env_remove("LEDGER_LISTEN")
        .output()
        .unwrap();
    assert!(output.status.success());
    let printed = String::from_utf8(output.stdout).unwrap();
    for line in [
        "rate-limit = 50  # config file",
        "store-url = \"<redacted>\"  # config file",
        "listen = \"127.0.0.1:2\"  # flag",
        "max-subscriptions = 9  # environment (LEDGER_MAX_SUBSCRIPTIONS)",
        "anonymity-threshold = 5  # default",
    ] {
        assert!(
            printed.lines().any(|l| l == line),
            "no {line:?} in\n{printed}"
        );
    }
    assert!(!printed.contains("hunter2"), "{printed}");

    // An unknown key stops the server before it starts.
    std::fs::write(&file, "rate-limits = 50\n").unwrap();
    let output = std::process::Command::new(server_binary())
        .args(["serve", "--data-dir"])
        .arg(dir.path().join("data"))
        .arg("--config")
        .arg(&file)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("unknown key \"rate-limits\""), "{stderr}");
    assert!(
        !dir.path().join("data").exists(),
        "it touched the data directory"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reports_the_head_and_each_projection_as_json() {
    let data_dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(data_dir.path());
    let token = server.token("acme", "hr-sync", &["service"]);
    let mut org =
        ledger_proto::v1::org_directory_client::OrgDirectoryClient::new(server.channel().await);
    let define = ledger_proto::v1::DefineOrgUnitRequest {
        command_id: "u".into(),
        org_unit_id: "sales".into(),
        name: "Sales".into(),
        ..Default::default()
    };
    org.define_org_unit(authed(&token, define)).await.unwrap();

    let status = |token: &str| {
        std::process::Command::new(server_binary())
            .args([
                "status",
                "--json",
                "--server",
                &server.endpoint(),
                "--token",
                token,
            ])
            .output()
            .unwrap()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let output = status(&token);
        assert!(output.status.success(), "{output:?}");
        let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        let head = report["head"].as_u64().unwrap();
        assert!(head >= 1, "{report}");
        let projections = report["projections"].as_array().unwrap();
        assert_eq!(projections.len(), 4, "{report}");
        if projections
            .iter()
            .all(|p| p["position"].as_u64() == Some(head))
        {
            assert!(
                projections
                    .iter()
                    .all(|p| p["lag_events"] == 0 && p["running_here"] == true)
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never caught up: {report}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let refused = status("not-a-token");
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("Unauthenticated"));
}
