//! Per-service rate limits (spec decision 17): a GCRA ceiling per backend service,
//! checked by the pipeline after validation (stage 3, 429). A refusal carries
//! `Retry-After` (written by [`GatewayError`]) and the IETF RateLimit fields.
//!
//! The fields follow draft-ietf-httpapi-ratelimit-headers-10, sections 3 and 4
//! (`RateLimit-Policy: "outing";q=100;w=1` and `RateLimit: "outing";r=0;t=1`: the
//! policy name is a structured-field String, `q` the quota, `w` its window in seconds,
//! `r` the remaining quota, `t` the seconds until more quota is available). A GCRA
//! with burst B and rate R is advertised as B requests per ceil(B / R) seconds: the
//! time a drained burst takes to refill.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use governor::clock::Clock;
use governor::middleware::StateInformationMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

use super::clock::GuardClock;
use super::cluster::Cluster;
use super::config::{RateConfig, ServiceLimitsConfig};
use crate::http::GatewayError;
use crate::upstream::Service;

/// `RateLimit-Policy` (draft-ietf-httpapi-ratelimit-headers-10 §3).
pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `RateLimit` (draft-ietf-httpapi-ratelimit-headers-10 §4).
pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// One GCRA decision, local or from Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GcraOutcome {
    /// Admitted; `remaining` more would be admitted right now.
    Allowed { remaining: u32 },
    /// Refused; one more fits after `retry_after`.
    Denied { retry_after: Duration },
}

/// A service's policy and where its quota stands after a check, for the RateLimit
/// fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitStatus {
    /// Policy name: the service (`auth`, `club`, ...).
    pub policy: &'static str,
    /// Quota `q`: the burst.
    pub quota: u32,
    /// Window `w` in seconds: time for a drained burst to refill (at least 1).
    pub window_secs: u64,
    /// Remaining quota `r`.
    pub remaining: u32,
    /// Seconds `t` until more quota is available.
    pub reset_secs: u64,
}

impl RateLimitStatus {
    /// The `RateLimit-Policy` and `RateLimit` fields.
    pub fn headers(&self) -> [(HeaderName, HeaderValue); 2] {
        // Service names are lowercase ASCII words, so the quoted string needs no
        // escaping and the values are always valid header values.
        let policy = format!(
            "\"{}\";q={};w={}",
            self.policy, self.quota, self.window_secs
        );
        let limit = format!(
            "\"{}\";r={};t={}",
            self.policy, self.remaining, self.reset_secs
        );
        [
            (
                RATELIMIT_POLICY,
                HeaderValue::try_from(policy).unwrap_or(HeaderValue::from_static("")),
            ),
            (
                RATELIMIT,
                HeaderValue::try_from(limit).unwrap_or(HeaderValue::from_static("")),
            ),
        ]
    }

    /// Adds the fields to a response's headers (replacing earlier ones).
    pub fn apply(&self, headers: &mut HeaderMap) {
        for (name, value) in self.headers() {
            headers.insert(name, value);
        }
    }
}

/// A refused request: 429 with `Retry-After` and the RateLimit fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceLimited {
    /// The fields to send (`r=0`).
    pub status: RateLimitStatus,
    /// When one more request of the service fits.
    pub retry_after: Duration,
}

impl ServiceLimited {
    /// The envelope error (429, `Retry-After`), without the RateLimit fields.
    pub fn error(&self) -> GatewayError {
        GatewayError::RateLimited {
            retry_after: self.retry_after,
        }
    }
}

impl From<ServiceLimited> for GatewayError {
    fn from(limited: ServiceLimited) -> Self {
        limited.error()
    }
}

impl IntoResponse for ServiceLimited {
    /// [`GatewayError`]'s envelope plus the RateLimit fields.
    fn into_response(self) -> Response {
        let mut response = self.error().into_response();
        self.status.apply(response.headers_mut());
        response
    }
}

type LocalLimiter = RateLimiter<NotKeyed, InMemoryState, GuardClock, StateInformationMiddleware>;

/// One service's ceiling.
struct ServiceLimit {
    service: Service,
    burst: u32,
    interval: Duration,
    window_secs: u64,
    local: LocalLimiter,
}

impl ServiceLimit {
    fn new(service: Service, rate: RateConfig, clock: GuardClock) -> Self {
        let quota = Quota::per_second(rate.per_second).allow_burst(rate.burst);
        let interval = quota.replenish_interval();
        let refill = quota.burst_size_replenished_in();
        Self {
            service,
            burst: rate.burst.get(),
            interval,
            window_secs: ceil_secs(refill).max(1),
            local: RateLimiter::direct_with_clock(quota, clock)
                .with_middleware::<StateInformationMiddleware>(),
        }
    }

    fn check_locally(&self) -> GcraOutcome {
        match self.local.check() {
            Ok(snapshot) => GcraOutcome::Allowed {
                remaining: snapshot.remaining_burst_capacity(),
            },
            Err(not_until) => GcraOutcome::Denied {
                retry_after: not_until.wait_time_from(self.local.clock().now()),
            },
        }
    }

    fn status(&self, remaining: u32, reset: Duration) -> RateLimitStatus {
        RateLimitStatus {
            policy: self.service.as_str(),
            quota: self.burst,
            window_secs: self.window_secs,
            remaining,
            reset_secs: ceil_secs(reset),
        }
    }
}

/// The ceilings of all services.
pub struct ServiceLimits {
    limits: [Option<ServiceLimit>; Service::ALL.len()],
    cluster: Option<Arc<Cluster>>,
}

impl std::fmt::Debug for ServiceLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut list = f.debug_map();
        for limit in self.limits.iter().flatten() {
            list.entry(
                &limit.service.as_str(),
                &format_args!("burst {} every {:?}", limit.burst, limit.interval),
            );
        }
        list.finish()
    }
}

impl ServiceLimits {
    /// Limits from `config`, counted in Redis when `cluster` is given.
    pub(crate) fn new(
        config: &ServiceLimitsConfig,
        cluster: Option<Arc<Cluster>>,
        clock: GuardClock,
    ) -> Self {
        let limits = Service::ALL.map(|service| {
            config
                .enabled
                .then(|| ServiceLimit::new(service, config.rate(service), clock))
        });
        Self { limits, cluster }
    }

    /// Counts one request to `service`.
    ///
    /// `Ok(None)`: the service is not limited. `Ok(Some(status))`: admitted; the
    /// caller may add `status.headers()` to the response. `Err(limited)`: answer
    /// `limited.into_response()` (429 with `Retry-After` and the RateLimit fields).
    /// In the cluster scope a slow or failed Redis falls back to this replica's own
    /// limiter; this never fails otherwise.
    pub async fn check(&self, service: Service) -> Result<Option<RateLimitStatus>, ServiceLimited> {
        let Some(limit) = &self.limits[service.index()] else {
            return Ok(None);
        };
        let remote = match &self.cluster {
            Some(cluster) => {
                let interval_us = u64::try_from(limit.interval.as_micros())
                    .unwrap_or(u64::MAX)
                    .max(1);
                cluster
                    .service_check(service.as_str(), interval_us, limit.burst)
                    .await
            }
            None => None,
        };
        match remote.unwrap_or_else(|| limit.check_locally()) {
            // More quota arrives one emission interval after a request at the latest.
            GcraOutcome::Allowed { remaining } => Ok(Some(limit.status(remaining, limit.interval))),
            GcraOutcome::Denied { retry_after } => Err(ServiceLimited {
                status: limit.status(0, retry_after),
                retry_after,
            }),
        }
    }
}

/// Whole seconds, rounded up.
fn ceil_secs(duration: Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use axum::http::{StatusCode, header};

    use super::*;

    fn rate(per_second: u32, burst: u32) -> RateConfig {
        RateConfig {
            per_second: NonZeroU32::new(per_second).expect("nonzero"),
            burst: NonZeroU32::new(burst).expect("nonzero"),
        }
    }

    fn limits(default: RateConfig, overrides: &[(Service, RateConfig)]) -> ServiceLimits {
        let config = ServiceLimitsConfig {
            enabled: true,
            per_second: default.per_second,
            burst: default.burst,
            overrides: overrides.iter().copied().collect(),
        };
        ServiceLimits::new(&config, None, GuardClock::new())
    }

    #[tokio::test(start_paused = true)]
    async fn a_service_at_its_ceiling_is_refused_while_others_go_on() {
        let limits = limits(rate(100, 100), &[(Service::Outing, rate(2, 3))]);
        for expected in [2, 1, 0] {
            let status = limits
                .check(Service::Outing)
                .await
                .expect("within burst")
                .expect("limited service");
            assert_eq!(status.remaining, expected);
        }
        let refused = limits
            .check(Service::Outing)
            .await
            .expect_err("over the ceiling");
        assert_eq!(refused.retry_after, Duration::from_millis(500));
        for _ in 0..50 {
            limits.check(Service::Club).await.expect("other service");
        }
        // Half a second later one more outing request fits, and only one.
        tokio::time::advance(Duration::from_millis(500)).await;
        limits.check(Service::Outing).await.expect("refilled");
        assert!(limits.check(Service::Outing).await.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn the_refusal_is_429_with_retry_after_and_ratelimit_fields() {
        let limits = limits(rate(1, 2), &[]);
        limits.check(Service::Auth).await.expect("first");
        let admitted = limits
            .check(Service::Auth)
            .await
            .expect("second")
            .expect("limited");
        assert_eq!(
            admitted,
            RateLimitStatus {
                policy: "auth",
                quota: 2,
                window_secs: 2,
                remaining: 0,
                reset_secs: 1,
            }
        );
        tokio::time::advance(Duration::from_millis(200)).await;
        let response = limits
            .check(Service::Auth)
            .await
            .expect_err("third")
            .into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        let headers = response.headers();
        assert_eq!(headers[header::RETRY_AFTER], "1");
        assert_eq!(headers[RATELIMIT_POLICY], "\"auth\";q=2;w=2");
        assert_eq!(headers[RATELIMIT], "\"auth\";r=0;t=1");
    }

    #[tokio::test(start_paused = true)]
    async fn disabled_limits_admit_everything() {
        let config = ServiceLimitsConfig {
            enabled: false,
            ..ServiceLimitsConfig::default()
        };
        let limits = ServiceLimits::new(&config, None, GuardClock::new());
        for _ in 0..5000 {
            assert_eq!(limits.check(Service::Schedule).await, Ok(None));
        }
    }

    #[test]
    fn limited_converts_to_the_envelope_error() {
        let limited = ServiceLimited {
            status: RateLimitStatus {
                policy: "club",
                quota: 1,
                window_secs: 1,
                remaining: 0,
                reset_secs: 3,
            },
            retry_after: Duration::from_millis(2500),
        };
        let error: GatewayError = limited.into();
        assert!(matches!(
            error,
            GatewayError::RateLimited { retry_after } if retry_after == Duration::from_millis(2500)
        ));
    }
}
