//! Overload shedding: a bound on the calls in flight to each backend service (Envoy's
//! `max_requests`) and on the requests waiting for one of those slots (Envoy's
//! `max_pending_requests`). Past both bounds the request is answered 503 at once
//! instead of queueing without limit, so the gateway's latency and memory stay
//! bounded when a backend slows down or hangs.
//!
//! The pipeline takes a [`Slot`] right before the upstream call (after the cache
//! lookup: a cache hit or a coalesced follower never needs one) and holds it until the
//! call's outcome is mapped. The fast path is one `try_acquire` on a semaphore (an
//! atomic compare-and-swap, no lock) and one gauge increment; only a request that
//! finds every slot taken touches the waiters' count and the semaphore's wait list.
//! The slot is a drop guard, so it is released on every exit path, cancellation
//! included (a client that goes away drops the request's future).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use serde::Deserialize;
use tokio::sync::{Semaphore, SemaphorePermit};

use super::Service;
use crate::http::GatewayError;
use crate::telemetry::Metrics;
use crate::telemetry::metrics::ServiceLabels;

/// `[overload]`: the bounds, with per-service overrides.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverloadConfig {
    /// Whether calls are bounded at all. Default true.
    #[serde(default = "defaults::yes")]
    pub enabled: bool,
    /// Calls in flight to one service from this replica (Envoy's `max_requests`,
    /// default 1024 there too). Default 1024.
    #[serde(default = "defaults::max_in_flight")]
    pub max_in_flight: usize,
    /// Requests that may wait for a free slot of one service; past it, 503 at once
    /// (0: never wait). Default 256.
    #[serde(default = "defaults::max_waiting")]
    pub max_waiting: usize,
    /// Longest wait for a slot before the request is shed. Default 200ms.
    #[serde(default = "defaults::max_wait", with = "humantime_serde")]
    pub max_wait: Duration,
    /// Per service (`auth`, `club`, `outing`, `schedule`, `announcement`).
    #[serde(default)]
    pub services: BTreeMap<Service, ServiceOverload>,
}

impl Default for OverloadConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_in_flight: defaults::max_in_flight(),
            max_waiting: defaults::max_waiting(),
            max_wait: defaults::max_wait(),
            services: BTreeMap::new(),
        }
    }
}

/// One service's bounds; unset keys take the `[overload]` values.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceOverload {
    pub max_in_flight: Option<usize>,
    pub max_waiting: Option<usize>,
    #[serde(default, with = "humantime_serde")]
    pub max_wait: Option<Duration>,
}

/// Largest `max_in_flight` (tokio's semaphore holds at most `usize::MAX >> 3` permits;
/// far more calls than one process can hold open).
pub const MAX_IN_FLIGHT: usize = 1 << 20;

impl OverloadConfig {
    /// `(key, reason)` of the first unusable value.
    pub fn check(&self) -> Result<(), (String, &'static str)> {
        let overrides = self.services.iter().map(|(service, o)| {
            (
                format!("overload.services.{service}.max_in_flight"),
                o.max_in_flight,
            )
        });
        let all = std::iter::once((
            "overload.max_in_flight".to_owned(),
            Some(self.max_in_flight),
        ))
        .chain(overrides);
        for (key, value) in all {
            if value.is_some_and(|n| n == 0 || n > MAX_IN_FLIGHT) {
                return Err((key, "must be between 1 and 1048576"));
            }
        }
        Ok(())
    }

    fn bounds(&self, service: Service) -> (usize, usize, Duration) {
        let o = self.services.get(&service).copied().unwrap_or_default();
        (
            o.max_in_flight
                .unwrap_or(self.max_in_flight)
                .clamp(1, MAX_IN_FLIGHT),
            o.max_waiting.unwrap_or(self.max_waiting),
            o.max_wait.unwrap_or(self.max_wait),
        )
    }
}

/// One service's slots, waiters and metric handles (created once, so the request path
/// never looks a label set up).
#[derive(Debug)]
struct Bound {
    service: Service,
    slots: Semaphore,
    waiting: AtomicUsize,
    max_waiting: usize,
    max_wait: Duration,
    in_flight: Gauge,
    shed: Counter,
}

/// The bounds of every service.
#[derive(Debug)]
pub struct Shedder {
    bounds: Option<[Bound; Service::ALL.len()]>,
}

/// A call slot of one service, released (and the in-flight gauge lowered) when dropped.
#[derive(Debug)]
#[must_use = "the slot is released when dropped"]
pub struct Slot<'a> {
    _permit: Option<SemaphorePermit<'a>>,
    gauge: Option<&'a Gauge>,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if let Some(gauge) = self.gauge {
            gauge.dec();
        }
    }
}

/// Lowers the waiters' count when a waiting request leaves, however it leaves.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Shedder {
    /// The bounds of `config`, counted in `metrics`.
    pub fn new(config: &OverloadConfig, metrics: &Metrics) -> Self {
        let bounds = config.enabled.then(|| {
            Service::ALL.map(|service| {
                let (max_in_flight, max_waiting, max_wait) = config.bounds(service);
                let labels = ServiceLabels {
                    service: service.as_str(),
                };
                Bound {
                    service,
                    slots: Semaphore::new(max_in_flight),
                    waiting: AtomicUsize::new(0),
                    max_waiting,
                    max_wait,
                    in_flight: metrics.requests_in_flight.get_or_create(&labels).clone(),
                    shed: metrics.shed.get_or_create(&labels).clone(),
                }
            })
        });
        Self { bounds }
    }

    /// A slot for one call to `service`: at once when one is free, after a wait of at
    /// most `max_wait` when fewer than `max_waiting` requests already wait, else
    /// [`GatewayError::Overloaded`] (503).
    pub async fn admit(&self, service: Service) -> Result<Slot<'_>, GatewayError> {
        let Some(bounds) = &self.bounds else {
            return Ok(Slot {
                _permit: None,
                gauge: None,
            });
        };
        let bound = &bounds[service.index()];
        let permit = match bound.slots.try_acquire() {
            Ok(permit) => permit,
            Err(_) => bound.wait().await?,
        };
        bound.in_flight.inc();
        Ok(Slot {
            _permit: Some(permit),
            gauge: Some(&bound.in_flight),
        })
    }

    /// Calls in flight to `service` now (for tests and the status of the bound).
    pub fn in_flight(&self, service: Service) -> i64 {
        self.bounds
            .as_ref()
            .map_or(0, |bounds| bounds[service.index()].in_flight.get())
    }

    /// Requests waiting for a slot of `service` now.
    pub fn waiting(&self, service: Service) -> usize {
        self.bounds.as_ref().map_or(0, |bounds| {
            bounds[service.index()].waiting.load(Ordering::Relaxed)
        })
    }
}

impl Bound {
    /// The slow path: every slot is taken.
    async fn wait(&self) -> Result<SemaphorePermit<'_>, GatewayError> {
        if self.waiting.fetch_add(1, Ordering::Relaxed) >= self.max_waiting {
            self.waiting.fetch_sub(1, Ordering::Relaxed);
            return Err(self.refuse("every call slot and waiting place is taken"));
        }
        let _waiting = Waiting(&self.waiting);
        match tokio::time::timeout(self.max_wait, self.slots.acquire()).await {
            Ok(Ok(permit)) => Ok(permit),
            // The semaphore is never closed; a closed one would shed like a timeout.
            Ok(Err(_)) | Err(_) => Err(self.refuse("no call slot freed in time")),
        }
    }

    fn refuse(&self, why: &'static str) -> GatewayError {
        self.shed.inc();
        tracing::debug!(service = self.service.as_str(), why, "request shed");
        GatewayError::Overloaded {
            service: self.service.as_str(),
        }
    }
}

mod defaults {
    use std::time::Duration;

    pub fn yes() -> bool {
        true
    }
    pub fn max_in_flight() -> usize {
        1024
    }
    pub fn max_waiting() -> usize {
        256
    }
    pub fn max_wait() -> Duration {
        Duration::from_millis(200)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn shedder(in_flight: usize, waiting: usize, wait: Duration) -> (Shedder, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::new());
        let config = OverloadConfig {
            max_in_flight: 4,
            services: [(
                Service::Outing,
                ServiceOverload {
                    max_in_flight: Some(in_flight),
                    max_waiting: Some(waiting),
                    max_wait: Some(wait),
                },
            )]
            .into(),
            ..OverloadConfig::default()
        };
        (Shedder::new(&config, &metrics), metrics)
    }

    #[tokio::test(start_paused = true)]
    async fn past_the_bounds_requests_are_shed_at_once() {
        let (shed, metrics) = shedder(2, 0, Duration::from_secs(1));
        let a = shed.admit(Service::Outing).await.expect("first");
        let b = shed.admit(Service::Outing).await.expect("second");
        assert_eq!(shed.in_flight(Service::Outing), 2);
        let refused = shed.admit(Service::Outing).await.expect_err("third");
        assert_eq!(
            (refused.status().as_u16(), refused.code()),
            (503, -301),
            "{refused:?}"
        );
        // Other services have their own slots.
        let _club = shed.admit(Service::Club).await.expect("club");
        drop(a);
        assert_eq!(shed.in_flight(Service::Outing), 1);
        let _c = shed.admit(Service::Outing).await.expect("a slot was freed");
        drop(b);
        let text = metrics.render();
        assert!(
            text.contains(r#"sms_gateway_shed_total{service="outing"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"sms_gateway_requests_in_flight{service="outing"} 1"#),
            "{text}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_are_bounded_in_number_and_time() {
        let (shed, _) = shedder(1, 1, Duration::from_millis(200));
        let shed = Arc::new(shed);
        let held = shed.admit(Service::Outing).await.expect("slot");
        let waiter = {
            let shed = shed.clone();
            tokio::spawn(async move { shed.admit(Service::Outing).await.map(drop).is_ok() })
        };
        // Let the waiter queue up (paused clock: the runtime runs it until it waits).
        while shed.waiting(Service::Outing) == 0 {
            tokio::task::yield_now().await;
        }
        // The waiting place is taken: the next one is refused without waiting.
        let started = tokio::time::Instant::now();
        assert!(shed.admit(Service::Outing).await.is_err());
        assert_eq!(started.elapsed(), Duration::ZERO);
        // Freeing the slot lets the waiter in.
        drop(held);
        assert!(waiter.await.expect("task"));
        assert_eq!(shed.waiting(Service::Outing), 0);
        assert_eq!(shed.in_flight(Service::Outing), 0);
        // A waiter whose slot never frees is shed after max_wait.
        let _held = shed.admit(Service::Outing).await.expect("slot");
        let started = tokio::time::Instant::now();
        assert!(shed.admit(Service::Outing).await.is_err());
        assert_eq!(started.elapsed(), Duration::from_millis(200));
        assert_eq!(shed.waiting(Service::Outing), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_request_releases_its_slot_and_its_waiting_place() {
        let (shed, _) = shedder(1, 1, Duration::from_secs(60));
        let shed = Arc::new(shed);
        let holder = {
            let shed = shed.clone();
            tokio::spawn(async move {
                let _slot = shed.admit(Service::Outing).await;
                std::future::pending::<()>().await;
            })
        };
        while shed.in_flight(Service::Outing) == 0 {
            tokio::task::yield_now().await;
        }
        let waiter = {
            let shed = shed.clone();
            tokio::spawn(async move { shed.admit(Service::Outing).await.map(drop) })
        };
        while shed.waiting(Service::Outing) == 0 {
            tokio::task::yield_now().await;
        }
        waiter.abort();
        assert!(waiter.await.is_err(), "cancelled");
        assert_eq!(shed.waiting(Service::Outing), 0);
        holder.abort();
        assert!(holder.await.is_err(), "cancelled");
        assert_eq!(shed.in_flight(Service::Outing), 0);
        let _slot = shed.admit(Service::Outing).await.expect("free again");
    }

    #[tokio::test]
    async fn disabled_bounds_admit_everything() {
        let metrics = Metrics::new();
        let config = OverloadConfig {
            enabled: false,
            ..OverloadConfig::default()
        };
        let shed = Shedder::new(&config, &metrics);
        let slots: Vec<_> =
            futures_util::future::join_all((0..5000).map(|_| shed.admit(Service::Auth))).await;
        assert!(slots.iter().all(Result::is_ok));
    }

    #[test]
    fn config_defaults_overrides_and_checks() {
        let config: OverloadConfig = toml::from_str(
            "max_waiting = 3\n[services.outing]\nmax_in_flight = 7\nmax_wait = \"1s\"",
        )
        .expect("parses");
        assert_eq!(
            config.bounds(Service::Outing),
            (7, 3, Duration::from_secs(1))
        );
        assert_eq!(
            config.bounds(Service::Auth),
            (1024, 3, Duration::from_millis(200))
        );
        config.check().expect("valid");
        let zero: OverloadConfig =
            toml::from_str("[services.club]\nmax_in_flight = 0").expect("parses");
        assert_eq!(
            zero.check().expect_err("zero").0,
            "overload.services.club.max_in_flight"
        );
        assert!(toml::from_str::<OverloadConfig>("max_inflight = 1").is_err());
    }
}
