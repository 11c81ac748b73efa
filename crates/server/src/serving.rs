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

/// Reports readiness until aborted.
pub async fn report(
    reporter: HealthReporter,
    store: Arc<dyn EventStore>,
    runners: Vec<ProjectionRunner>,
    max_lag: Duration,
) {
    let mut reported = None;
    loop {
        let ready = match why_not_ready(store.as_ref(), &runners, max_lag).await {
            None => ServingStatus::Serving,
            Some(reason) => {
                if reported == Some(ServingStatus::Serving) {
                    tracing::warn!(reason, "not ready");
                }
                ServingStatus::NotServing
            }
        };
        if reported != Some(ready) {
            if reported.is_some() && ready == ServingStatus::Serving {
                tracing::info!("ready again");
            }
            reporter.set_service_status("", ready).await;
            for service in SERVICES {
                reporter.set_service_status(service, ready).await;
            }
            reported = Some(ready);
        }
        tokio::time::sleep(CHECK_EVERY).await;
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
