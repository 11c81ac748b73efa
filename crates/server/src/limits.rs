//! Limits that protect the service from overload and from one greedy caller: message sizes,
//! subscriptions open at once, and a rate limit per principal (tenant and token subject, never a
//! header the caller could spoof) by the generic cell rate algorithm (GCRA).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tonic::{Code, Request, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::auth::{Authenticator, Principal};

/// The largest request or response message unless configured (16 MiB: a full page of `ReadAll`
/// fits with room to spare).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 16 << 20;
/// Subscriptions open at once, across all callers, unless configured.
pub const DEFAULT_MAX_SUBSCRIPTIONS: usize = 1024;
/// Requests in flight at once, across all callers, unless configured.
pub const DEFAULT_MAX_CONCURRENT_REQUESTS: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// The largest request or response message, in bytes.
    pub max_message_bytes: usize,
    /// Subscriptions (read-model changes) open at once, across all callers.
    pub max_subscriptions: usize,
    /// Requests in flight at once, across all callers (until their response starts).
    pub max_concurrent_requests: usize,
    /// Requests per second a principal may make, sustained; 0: no limit.
    pub rate_per_second: u32,
    /// Requests a principal may make at once beyond the sustained rate.
    pub rate_burst: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            max_subscriptions: DEFAULT_MAX_SUBSCRIPTIONS,
            max_concurrent_requests: DEFAULT_MAX_CONCURRENT_REQUESTS,
            rate_per_second: 0,
            rate_burst: 0,
        }
    }
}

/// Every this many checks, principals whose budget is whole again are forgotten.
const PRUNE_EVERY: usize = 4096;

/// GCRA: each principal has a theoretical arrival time (TAT) that every allowed request moves
/// one emission interval later; a request is refused while the TAT is further ahead of now than
/// the burst allows.
#[derive(Debug)]
pub struct RateLimiter {
    /// Time between requests at the sustained rate.
    interval: Duration,
    /// How far ahead of now the TAT may run: the burst.
    tolerance: Duration,
    arrivals: Mutex<Arrivals>,
}

#[derive(Debug)]
struct Arrivals {
    started: Instant,
    /// Theoretical arrival time by principal, as time since `started`.
    due: HashMap<(String, String), Duration>,
    checks: usize,
}

impl RateLimiter {
    /// `None` when `per_second` is 0 (no limit).
    pub fn new(per_second: u32, burst: u32) -> Option<Self> {
        if per_second == 0 {
            return None;
        }
        let interval = Duration::from_secs(1) / per_second;
        Some(Self {
            interval,
            tolerance: interval * burst,
            arrivals: Mutex::new(Arrivals {
                started: Instant::now(),
                due: HashMap::new(),
                checks: 0,
            }),
        })
    }

    /// Admits a request of `principal` now, or says how long until it would be admitted.
    pub fn check(&self, principal: &Principal) -> Result<(), Duration> {
        let mut arrivals = self.arrivals.lock().unwrap();
        let now = arrivals.started.elapsed();
        arrivals.checks += 1;
        if arrivals.checks.is_multiple_of(PRUNE_EVERY) {
            // A principal whose TAT has passed starts afresh: forgetting it changes nothing.
            arrivals.due.retain(|_, due| *due > now);
        }
        let key = (
            principal.tenant.as_str().to_owned(),
            principal.actor.subject.clone(),
        );
        let due = arrivals.due.get(&key).copied().unwrap_or(now).max(now);
        if due > now + self.tolerance {
            return Err(due - now - self.tolerance);
        }
        arrivals.due.insert(key, due + self.interval);
        Ok(())
    }
}

/// What every RPC passes: the bearer token's verification, then its principal's rate limit.
#[derive(Debug, Clone)]
pub struct Gate {
    authenticator: Authenticator,
    limiter: Option<Arc<RateLimiter>>,
}

impl Gate {
    pub fn new(authenticator: Authenticator, limits: &Limits) -> Self {
        Self {
            authenticator,
            limiter: RateLimiter::new(limits.rate_per_second, limits.rate_burst).map(Arc::new),
        }
    }
}

impl tonic::service::Interceptor for Gate {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let principal = self.authenticator.authenticate(&request)?;
        if let Some(limiter) = &self.limiter {
            limiter.check(&principal).map_err(rate_limited)?;
        }
        request.extensions_mut().insert(principal);
        Ok(request)
    }
}

/// RESOURCE_EXHAUSTED with a `RetryInfo` saying when to try again.
pub fn rate_limited(retry_after: Duration) -> Status {
    let millis = retry_after.as_millis().max(1);
    Status::with_error_details(
        Code::ResourceExhausted,
        format!("rate limit exceeded for this caller; retry after {millis} ms"),
        ErrorDetails::with_retry_info(Some(retry_after)),
    )
}

/// Caps the requests in flight across all callers: one over the cap is refused at once with
/// RESOURCE_EXHAUSTED and a retry hint rather than queued behind the others. Health checks and
/// reflection (`/grpc.*`) are never refused, so an orchestrator still sees a busy server alive.
#[derive(Debug, Clone)]
pub struct RequestCap {
    permits: Arc<tokio::sync::Semaphore>,
}

impl RequestCap {
    pub fn new(max_concurrent_requests: usize) -> Self {
        Self {
            permits: Arc::new(tokio::sync::Semaphore::new(max_concurrent_requests)),
        }
    }
}

impl<S> tower::Layer<S> for RequestCap {
    type Service = Capped<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Capped {
            inner,
            permits: self.permits.clone(),
        }
    }
}

/// A service behind a [`RequestCap`].
#[derive(Debug, Clone)]
pub struct Capped<S> {
    inner: S,
    permits: Arc<tokio::sync::Semaphore>,
}

/// How long a refused caller is told to wait: about one request's time.
const OVERLOAD_RETRY: Duration = Duration::from_millis(50);

impl<S, B> tower::Service<http::Request<B>> for Capped<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let permit = if request.uri().path().starts_with("/grpc.") {
            None
        } else {
            match self.permits.clone().try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => {
                    let refused = Status::with_error_details(
                        Code::ResourceExhausted,
                        "the server is at its limit of concurrent requests; retry shortly",
                        ErrorDetails::with_retry_info(Some(OVERLOAD_RETRY)),
                    );
                    return Box::pin(std::future::ready(Ok(refused.into_http())));
                }
            }
        };
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await;
            drop(permit);
            response
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ledger_domain::{Actor, Role, TenantId};

    fn principal(subject: &str) -> Principal {
        Principal {
            tenant: TenantId::parse("acme").unwrap(),
            actor: Actor {
                subject: subject.into(),
                roles: vec![Role::Service],
            },
        }
    }

    #[test]
    fn a_burst_is_admitted_then_the_sustained_rate() {
        // 10 a second (one each 100 ms), 3 at once beyond that.
        let limiter = RateLimiter::new(10, 3).unwrap();
        let mia = principal("mia");
        for _ in 0..4 {
            assert_eq!(limiter.check(&mia), Ok(()));
        }
        let wait = limiter.check(&mia).unwrap_err();
        assert!(
            wait > Duration::from_millis(90) && wait <= Duration::from_millis(100),
            "{wait:?}"
        );
        // Another principal has a budget of its own.
        assert_eq!(limiter.check(&principal("lee")), Ok(()));
        std::thread::sleep(wait);
        assert_eq!(limiter.check(&mia), Ok(()));
        assert!(limiter.check(&mia).is_err());
    }

    #[test]
    fn no_rate_means_no_limiter() {
        assert!(RateLimiter::new(0, 100).is_none());
    }

    #[test]
    fn a_refusal_carries_when_to_retry() {
        let status = rate_limited(Duration::from_millis(250));
        assert_eq!(status.code(), Code::ResourceExhausted);
        let retry = status.get_details_retry_info().unwrap();
        assert_eq!(retry.retry_delay, Some(Duration::from_millis(250)));
    }

    #[tokio::test]
    async fn requests_over_the_cap_are_refused_at_once_but_health_checks_pass() {
        use tower::{Layer, Service, ServiceExt};
        // Requests wait until the test opens the gate (a permit, given back after each).
        let release = Arc::new(tokio::sync::Semaphore::new(0));
        let gate = release.clone();
        let slow = tower::service_fn(move |_: http::Request<()>| {
            let gate = gate.clone();
            async move {
                drop(gate.acquire().await.unwrap());
                Ok::<_, std::convert::Infallible>(http::Response::new(tonic::body::Body::empty()))
            }
        });
        let mut capped = RequestCap::new(1).layer(slow);
        let call = |path: &str| http::Request::builder().uri(path).body(()).unwrap();
        let first = capped
            .ready()
            .await
            .unwrap()
            .call(call("/dialogue.ledger.v1.Goals/SetGoal"));
        let refused = capped
            .ready()
            .await
            .unwrap()
            .call(call("/dialogue.ledger.v1.Goals/SetGoal"))
            .await
            .unwrap();
        let status = Status::from_header_map(refused.headers()).unwrap();
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(
            status.get_error_details().retry_info().unwrap().retry_delay,
            Some(OVERLOAD_RETRY)
        );
        // The health check is not capped: it waits on the inner service, not on a permit.
        let health = capped
            .ready()
            .await
            .unwrap()
            .call(call("/grpc.health.v1.Health/Check"));
        release.add_permits(1);
        let (first, health) = tokio::join!(first, health);
        assert_eq!(first.unwrap().headers().get("grpc-status"), None);
        assert_eq!(health.unwrap().headers().get("grpc-status"), None);
        // The permit came back with the first response.
        let again = capped
            .ready()
            .await
            .unwrap()
            .call(call("/dialogue.ledger.v1.Goals/SetGoal"));
        assert_eq!(again.await.unwrap().headers().get("grpc-status"), None);
    }
}
