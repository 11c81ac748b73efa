//! The limits that protect the service, against the real binary: a caller over its rate gets
//! RESOURCE_EXHAUSTED with a retry hint while others go on, an oversized message is refused
//! with nothing appended, and subscriptions beyond the maximum are refused.

use std::time::Duration;

use futures::StreamExt;
use ledger_e2e::server::{ServerProcess, authed};
use ledger_proto::v1 as api;
use ledger_proto::v1::org_directory_client::OrgDirectoryClient;
use ledger_proto::v1::read_models_client::ReadModelsClient;
use tonic::Code;
use tonic_types::StatusExt;

async fn head(read_models: &mut ReadModelsClient<tonic::transport::Channel>, token: &str) -> u64 {
    let status = read_models
        .get_projection_status(authed(token, api::GetProjectionStatusRequest {}))
        .await
        .unwrap()
        .into_inner();
    status.head.map_or(0, |p| p.commit)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_over_its_rate_is_refused_with_a_retry_hint_while_others_go_on() {
    let data_dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start_with_env(
        data_dir.path(),
        &[],
        &[("LEDGER_RATE_LIMIT", "5"), ("LEDGER_RATE_LIMIT_BURST", "4")],
    );
    let mut read_models = ReadModelsClient::new(server.channel().await);
    let greedy = server.token("acme", "greedy-service", &["service"]);
    let calm = server.token("acme", "calm-service", &["service"]);
    // The same subject in another tenant is another caller.
    let elsewhere = server.token("globex", "greedy-service", &["service"]);

    let (mut admitted, mut refused) = (0, Vec::new());
    let started = std::time::Instant::now();
    for _ in 0..20 {
        let request = authed(&greedy, api::GetProjectionStatusRequest {});
        match read_models.get_projection_status(request).await {
            Ok(_) => admitted += 1,
            Err(status) => refused.push(status),
        }
    }
    // A burst of 5 (one plus four), then one more per 200 ms that passed; the rest refused.
    let earned = (started.elapsed().as_millis() / 200) as usize + 1;
    assert!(
        (5..=5 + earned).contains(&admitted),
        "admitted {admitted} in {:?}",
        started.elapsed()
    );
    let status = &refused[0];
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("rate limit"), "{status:?}");
    let retry = status.get_details_retry_info().expect("a RetryInfo");
    let delay = retry.retry_delay.expect("a retry delay");
    assert!(delay <= Duration::from_millis(200), "{delay:?}");

    for other in [&calm, &elsewhere] {
        let request = authed(other, api::GetProjectionStatusRequest {});
        assert!(read_models.get_projection_status(request).await.is_ok());
    }
    // Once the hinted delay has passed, the greedy caller is served again.
    tokio::time::sleep(delay).await;
    let request = authed(&greedy, api::GetProjectionStatusRequest {});
    assert!(read_models.get_projection_status(request).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_message_is_refused_and_appends_nothing() {
    let data_dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start_with_env(
        data_dir.path(),
        &[],
        &[("LEDGER_MAX_MESSAGE_BYTES", "16384")],
    );
    let channel = server.channel().await;
    let (mut org, mut read_models) = (
        OrgDirectoryClient::new(channel.clone()),
        ReadModelsClient::new(channel),
    );
    let admin = server.token("acme", "hr-sync", &["service"]);
    let define = |name: String| api::DefineOrgUnitRequest {
        command_id: format!("define-{}", name.len()),
        org_unit_id: "sales".into(),
        name,
        ..Default::default()
    };

    let refused = org
        .define_org_unit(authed(&admin, define("x".repeat(64 * 1024))))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::OutOfRange, "{refused:?}");
    assert!(
        refused.message().contains("too large") && refused.message().contains("16384"),
        "{refused:?}"
    );
    assert_eq!(
        head(&mut read_models, &admin).await,
        0,
        "something was appended"
    );

    // A message within the limit goes through on the same connection.
    org.define_org_unit(authed(&admin, define("Sales".into())))
        .await
        .unwrap();
    assert!(head(&mut read_models, &admin).await > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_beyond_the_maximum_are_refused_until_one_closes() {
    let data_dir = tempfile::tempdir().unwrap();
    let server =
        ServerProcess::start_with_env(data_dir.path(), &[], &[("LEDGER_MAX_SUBSCRIPTIONS", "1")]);
    let mut read_models = ReadModelsClient::new(server.channel().await);
    let hr = server.token("acme", "hr-1", &["hr"]);
    let subscribe = || {
        authed(
            &hr,
            api::SubscribeRequest {
                read_model: "staffing-profile".into(),
                ..Default::default()
            },
        )
    };

    let first = read_models.subscribe(subscribe()).await.unwrap();
    let refused = read_models.subscribe(subscribe()).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");

    drop(first);
    // The server notices the closed stream and frees its place.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match read_models.subscribe(subscribe()).await {
            Ok(second) => {
                let mut second = second.into_inner();
                // Open and quiet: nothing has changed.
                let next = tokio::time::timeout(Duration::from_millis(200), second.next()).await;
                assert!(next.is_err(), "{next:?}");
                break;
            }
            Err(status) if status.code() == Code::ResourceExhausted => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the place stayed taken"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(status) => panic!("{status:?}"),
        }
    }
}
