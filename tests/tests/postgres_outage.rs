//! PostgreSQL stops under load: commands fail fast with UNAVAILABLE, and once it is back the same
//! server serves again without a restart, with every acknowledged command's event stored.
//!
//! Stops and starts the machine's PostgreSQL with the command in `LEDGER_TEST_PG_CTL` (e.g.
//! `pg_ctlcluster --skip-systemctl-redirect 15 main`), so it runs only when that and
//! `LEDGER_TEST_PG_URL` are set (`.ci/run` sets both), in a test binary of its own.

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ledger_e2e::server::{ServerProcess, authed};
use ledger_proto::v1 as api;
use ledger_proto::v1::org_directory_client::OrgDirectoryClient;
use ledger_store::{EventStore, StreamName};
use ledger_store_postgres::PostgresStore;
use ledger_store_postgres::testing::{TestSchema, database_url};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

/// A command's deadline; no command may take much longer, PostgreSQL or not.
const DEADLINE: Duration = Duration::from_secs(12);

/// Runs the PostgreSQL control command; starts PostgreSQL again when dropped, whatever happened.
struct Control(String);

impl Control {
    fn run(&self, action: &str) {
        let mut words = self.0.split_whitespace();
        let status = Command::new(words.next().unwrap())
            .args(words)
            .arg(action)
            .args(if action == "stop" {
                &["-m", "fast"][..]
            } else {
                &[][..]
            })
            .status()
            .unwrap();
        assert!(status.success(), "{} {action} failed", self.0);
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        let mut words = self.0.split_whitespace();
        let _ = Command::new(words.next().unwrap())
            .args(words)
            .arg("start")
            .status();
    }
}

#[derive(Debug, Default)]
struct Outcomes {
    acknowledged: Vec<String>,
    unavailable: usize,
    other: Vec<String>,
    slowest: Duration,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_fail_fast_while_postgres_is_down_and_recover_after() {
    let (Some(url), Ok(control)) = (database_url(), std::env::var("LEDGER_TEST_PG_CTL")) else {
        ledger_store::conformance::skip(
            "needs LEDGER_TEST_PG_URL and LEDGER_TEST_PG_CTL (a command that stops and starts PostgreSQL)",
        );
        return;
    };
    let control = Control(control);
    let schema = TestSchema::new(&url);
    let data_dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start_with_env(
        data_dir.path(),
        &["--store", "postgres", "--store-namespace", &schema.name],
        &[("LEDGER_STORE_URL", url.as_str())],
    );
    let channel = server.channel().await;
    let service = server.token("acme", "hr-sync", &["service"]);
    let unit = api::DefineOrgUnitRequest {
        command_id: "u".into(),
        org_unit_id: "sales".into(),
        name: "Sales".into(),
        ..Default::default()
    };
    OrgDirectoryClient::new(channel.clone())
        .define_org_unit(authed(&service, unit))
        .await
        .unwrap();

    let outcomes = Arc::new(Mutex::new(Outcomes::default()));
    let running = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let mut loaders = Vec::new();
    for worker in 0..4 {
        let (channel, service) = (channel.clone(), service.clone());
        let (outcomes, running) = (outcomes.clone(), running.clone());
        loaders.push(tokio::spawn(async move {
            let mut org = OrgDirectoryClient::new(channel);
            let mut n = 0;
            while running.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                let person = format!("p-{worker}-{n}");
                let mut request = authed(
                    &service,
                    api::RegisterPersonRequest {
                        command_id: format!("reg-{person}"),
                        person_id: person.clone(),
                        display_name: person.clone(),
                        org_unit_id: "sales".into(),
                        ..Default::default()
                    },
                );
                request.set_timeout(DEADLINE);
                let started = Instant::now();
                let result = org.register_person(request).await;
                let took = started.elapsed();
                {
                    let mut outcomes = outcomes.lock().unwrap();
                    outcomes.slowest = outcomes.slowest.max(took);
                    match result {
                        Ok(_) => outcomes.acknowledged.push(person),
                        Err(status) if status.code() == Code::Unavailable => {
                            outcomes.unavailable += 1
                        }
                        Err(status) => outcomes.other.push(format!("{status:?}")),
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }));
    }
    assert_eq!(server.serving().await, ServingStatus::Serving);
    tokio::time::sleep(Duration::from_secs(1)).await;
    control.run("stop");
    let before_outage = outcomes.lock().unwrap().acknowledged.len();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let during = outcomes.lock().unwrap().unavailable;
    assert!(during > 0, "no command failed while PostgreSQL was down");
    // Readiness follows the store: an orchestrator sends no traffic while it is gone.
    let gone = Instant::now();
    while server.serving().await != ServingStatus::NotServing {
        assert!(
            gone.elapsed() < Duration::from_secs(10),
            "the health check still said SERVING with PostgreSQL down"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    control.run("start");
    // Recovery without a restart: new commands are acknowledged again.
    let back = Instant::now();
    loop {
        let acknowledged = outcomes.lock().unwrap().acknowledged.len();
        if acknowledged > before_outage + 20 {
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(60),
            "the server did not recover after PostgreSQL came back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ready_again = Instant::now();
    while server.serving().await != ServingStatus::Serving {
        assert!(
            ready_again.elapsed() < Duration::from_secs(10),
            "the health check did not say SERVING again"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    running.store(false, std::sync::atomic::Ordering::Relaxed);
    for loader in loaders {
        loader.await.unwrap();
    }
    let outcomes = std::mem::take(&mut *outcomes.lock().unwrap());
    eprintln!(
        "{} acknowledged, {} unavailable while PostgreSQL was down, slowest command {:?}",
        outcomes.acknowledged.len(),
        outcomes.unavailable,
        outcomes.slowest
    );
    assert!(
        outcomes.other.is_empty(),
        "other failures: {:?}",
        outcomes.other
    );
    assert!(
        outcomes.slowest < DEADLINE + Duration::from_secs(2),
        "a command hung for {:?}",
        outcomes.slowest
    );

    // Every acknowledged registration is stored, once.
    let store = PostgresStore::connect(&url, &schema.name).await.unwrap();
    for person in &outcomes.acknowledged {
        let stream = StreamName::new(format!("acme/person-{person}")).unwrap();
        assert_eq!(
            store.stream_revision(&stream).await.unwrap(),
            Some(0),
            "{person} was acknowledged but is not stored once"
        );
    }
    store.close().await.unwrap();
    assert!(server.terminate().await.success());
}
