//! What `grpc.health.v1` reports, for readiness: SERVING while the event store answers and every
//! projection is within the configured lag of the log; NOT_SERVING while the store is
//! unreachable or a projection is rebuilding further behind (queries would wait or answer from
//! far in the past). Liveness is the process answering the health check at all.

use std::sync::Arc;
use std::time::Duration;

use ledger_projections::ProjectionRunner;
use ledger_store::EventStore;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::SERVICES;
use crate::read_models::lag;

/// How often readiness is checked.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// How long the store may take to say where its log ends.
const STORE_PATIENCE: Duration = Duration::from_secs(2);

/// The projection lag beyond which the service is not ready, unless configured.
pub const DEFAULT_READY_MAX_LAG_SECS: u64 = 30;

/// Keeps the health check's answer up to date.
#[derive(Debug)]
pub struct Readiness {
    reporter: HealthReporter,
    store: Arc<dyn EventStore>,
    runners: Vec<ProjectionRunner>,
    max_lag: Duration,
    reported: Option<ServingStatus>,
}

impl Readiness {
    pub fn new(
        reporter: HealthReporter,
        store: Arc<dyn EventStore>,
        runners: Vec<ProjectionRunner>,
        max_lag: Duration,
    ) -> Self {
        Self {
            reporter,
            store,
            runners,
            max_lag,
            reported: None,
        }
    }

    /// Checks readiness now and reports it if it changed. Called once before the server
    /// listens, so its first answer is never a guess.
    pub async fn update(&mut self) {
        let ready = match why_not_ready(self.store.as_ref(), &self.runners, self.max_lag).await {
            None => ServingStatus::Serving,
            Some(reason) => {
                if self.reported == Some(ServingStatus::Serving) {
                    tracing::warn!(reason, "not ready");
                }
                ServingStatus::NotServing
            }
        };
        if self.reported != Some(ready) {
            if self.reported.is_some() && ready == ServingStatus::Serving {
                tracing::info!("ready again");
            }
            self.reporter.set_service_status("", ready).await;
            for service in SERVICES {
                self.reporter.set_service_status(service, ready).await;
            }
            self.reported = Some(ready);
        }
    }

    /// Checks readiness every moment until aborted.
    pub async fn run(mut self) {
        loop {
            tokio::time::sleep(CHECK_EVERY).await;
            self.update().await;
        }
    }
}

async fn why_not_ready(
    store: &dyn EventStore,
    runners: &[ProjectionRunner],
    max_lag: Duration,
) -> Option<&'static str> {
    let head = match tokio::time::timeout(STORE_PATIENCE, store.head()).await {
        Ok(Ok(head)) => head,
        _ => return Some("the event store does not answer"),
    };
    for runner in runners {
        let position = runner.status().borrow().position;
        // Only the age of the oldest event not yet folded matters: count one.
        let Ok(lag) = lag(store, position, head, 1).await else {
            return Some("the event store does not answer");
        };
        if lag.seconds > max_lag.as_secs_f64() {
            return Some("a projection is further behind the log than the ready lag");
        }
    }
    None
}
