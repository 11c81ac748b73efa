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

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// The largest request or response message, in bytes.
    pub max_message_bytes: usize,
    /// Subscriptions (read-model changes) open at once, across all callers.
    pub max_subscriptions: usize,
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
}
