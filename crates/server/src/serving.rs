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
use crate::read_models::{LAG_COUNT_LIMIT, lag};
use opentelemetry::KeyValue;
use opentelemetry::metrics::Gauge;

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
    runners: Vec<(&'static str, ProjectionRunner)>,
    max_lag: Duration,
    reported: Option<ServingStatus>,
    lag_events: Gauge<u64>,
    lag_seconds: Gauge<f64>,
}

impl Readiness {
    pub fn new(
        reporter: HealthReporter,
        store: Arc<dyn EventStore>,
        runners: Vec<(&'static str, ProjectionRunner)>,
        max_lag: Duration,
    ) -> Self {
        let meter = crate::telemetry::meter();
        Self {
            reporter,
            store,
            runners,
            max_lag,
            reported: None,
            lag_events: (meter.u64_gauge("ledger.projection.lag.events"))
                .with_description("Events in the log not yet folded (counted up to 4096)")
                .build(),
            lag_seconds: (meter.f64_gauge("ledger.projection.lag.seconds"))
                .with_unit("s")
                .with_description("Age of the oldest event not yet folded")
                .build(),
        }
    }

    /// Checks readiness now and reports it if it changed. Called once before the server
    /// listens, so its first answer is never a guess.
    pub async fn update(&mut self) {
        let ready = match self.why_not_ready().await {
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

    /// Why the service is not ready, if it is not; measures each projection's lag on the way.
    async fn why_not_ready(&self) -> Option<&'static str> {
        let store = self.store.as_ref();
        let head = match tokio::time::timeout(STORE_PATIENCE, store.head()).await {
            Ok(Ok(head)) => head,
            _ => return Some("the event store does not answer"),
        };
        let mut why = None;
        for (name, runner) in &self.runners {
            let position = runner.status().borrow().position;
            let Ok(lag) = lag(store, position, head, LAG_COUNT_LIMIT).await else {
                return Some("the event store does not answer");
            };
            let projection = [KeyValue::new("projection", *name)];
            self.lag_events.record(lag.events, &projection);
            self.lag_seconds.record(lag.seconds, &projection);
            if lag.seconds > self.max_lag.as_secs_f64() {
                why = Some("a projection is further behind the log than the ready lag");
            }
        }
        why
    }

    /// Checks readiness every moment until aborted.
    pub async fn run(mut self) {
        loop {
            tokio::time::sleep(CHECK_EVERY).await;
            self.update().await;
        }
    }
}
