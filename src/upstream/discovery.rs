//! Where instances come from: static addresses from the configuration, or Consul
//! watched with blocking queries ([`ConsulDiscovery`]). The request path never asks
//! either: it reads the pools the discovery keeps up to date.
//!
//! The Consul watcher keeps the last good list while Consul is unreachable, follows the
//! index rules of `consul.md` (an index that goes backwards resets to 0; index 0 is
//! treated as 1), rate-limits its loop and backs off with jitter on errors.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::Service;
use super::call::Upstreams;
use super::consul::{ConsulClient, Health};
use crate::telemetry::metrics::ServiceLabels;

/// A source of instances the webhook can poke.
pub trait Discovery: Send + Sync + std::fmt::Debug {
    /// Asks for an immediate refresh of `service` (no-op for static upstreams).
    fn refresh(&self, service: Service);
    /// The service a Consul name belongs to.
    fn service_named(&self, name: &str) -> Option<Service>;
}

/// Static upstreams: the configured addresses, loaded once.
#[derive(Debug, Default)]
pub struct StaticDiscovery;

impl Discovery for StaticDiscovery {
    fn refresh(&self, _service: Service) {}
    fn service_named(&self, _name: &str) -> Option<Service> {
        None
    }
}

/// Settings of the watch loops.
#[derive(Debug, Clone, Copy)]
pub struct WatchSettings {
    pub wait: Duration,
    pub min_interval: Duration,
    pub max_backoff: Duration,
}

/// Consul discovery: one watch task per service.
#[derive(Debug)]
pub struct ConsulDiscovery {
    names: [String; 5],
    triggers: [Arc<Notify>; 5],
    /// Watch-loop activity, for tests and metrics.
    pub stats: Arc<WatchStats>,
}

/// Counters of the watch loops.
#[derive(Debug, Default)]
pub struct WatchStats {
    inner: Mutex<HashMap<Service, ServiceStats>>,
}

/// Counters of one service's watch loop.
#[derive(Debug, Default, Clone, Copy)]
pub struct ServiceStats {
    pub queries: u64,
    pub errors: u64,
    pub updates: u64,
    pub index: u64,
    pub instances: usize,
}

impl WatchStats {
    /// A copy of one service's counters.
    pub fn of(&self, service: Service) -> ServiceStats {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&service)
            .copied()
            .unwrap_or_default()
    }

    fn update(&self, service: Service, change: impl FnOnce(&mut ServiceStats)) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        change(inner.entry(service).or_default());
    }
}

impl ConsulDiscovery {
    /// Starts one watch task per service; `names` are the Consul names in
    /// [`Service::ALL`] order.
    pub fn start(
        client: ConsulClient,
        upstreams: Arc<Upstreams>,
        names: [String; 5],
        settings: WatchSettings,
    ) -> (Arc<Self>, Vec<JoinHandle<()>>) {
        let triggers: [Arc<Notify>; 5] = Default::default();
        let stats = Arc::new(WatchStats::default());
        let tasks = Service::ALL
            .into_iter()
            .map(|service| {
                let watch = Watch {
                    client: client.clone(),
                    upstreams: upstreams.clone(),
                    service,
                    name: names[service.index()].clone(),
                    trigger: triggers[service.index()].clone(),
                    settings,
                    stats: stats.clone(),
                };
                tokio::spawn(watch.run())
            })
            .collect();
        (
            Arc::new(Self {
                names,
                triggers,
                stats,
            }),
            tasks,
        )
    }
}

impl Discovery for ConsulDiscovery {
    fn refresh(&self, service: Service) {
        self.triggers[service.index()].notify_one();
    }

    fn service_named(&self, name: &str) -> Option<Service> {
        Service::ALL
            .into_iter()
            .find(|s| self.names[s.index()] == name)
    }
}

struct Watch {
    client: ConsulClient,
    upstreams: Arc<Upstreams>,
    service: Service,
    name: String,
    trigger: Arc<Notify>,
    settings: WatchSettings,
    stats: Arc<WatchStats>,
}

impl Watch {
    async fn run(self) {
        let mut index: u64 = 0;
        let mut backoff = Backoff::new(Duration::from_millis(100), self.settings.max_backoff);
        let mut last_query: Option<Instant> = None;
        loop {
            if let Some(last) = last_query {
                tokio::time::sleep_until(last + self.settings.min_interval).await;
            }
            last_query = Some(Instant::now());
            // Index 0 means "no state yet": a non-blocking read.
            let blocking = (index > 0).then_some(index);
            let result = tokio::select! {
                result = self.client.health(&self.name, blocking, self.settings.wait) => result,
                () = self.trigger.notified() => self.client.health(&self.name, None, self.settings.wait).await,
            };
            self.stats.update(self.service, |s| s.queries += 1);
            match result {
                Ok(health) => {
                    backoff.reset();
                    index = next_index(index, health.index);
                    self.apply(&health);
                }
                Err(err) => {
                    self.stats.update(self.service, |s| s.errors += 1);
                    self.upstreams
                        .metrics()
                        .consul_errors
                        .get_or_create(&self.labels())
                        .inc();
                    let pause = backoff.next_pause();
                    tracing::warn!(service = %self.service, consul_name = %self.name, error = %err, retry_in_ms = pause.as_millis() as u64, "consul watch failed; keeping the last good instance list");
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }

    /// This service's metric labels.
    fn labels(&self) -> ServiceLabels {
        ServiceLabels {
            service: self.service.as_str(),
        }
    }

    fn apply(&self, health: &Health) {
        let instances: Vec<(String, String)> = health
            .instances
            .iter()
            .map(|i| (i.id.clone(), i.address.clone()))
            .collect();
        match self.upstreams.replace(self.service, &instances) {
            Ok(changed) => {
                self.stats.update(self.service, |s| {
                    s.index = health.index;
                    s.instances = instances.len();
                    if changed {
                        s.updates += 1;
                    }
                });
                let metrics = self.upstreams.metrics();
                let labels = self.labels();
                metrics
                    .instances
                    .get_or_create(&labels)
                    .set(instances.len() as i64);
                if changed {
                    metrics.consul_updates.get_or_create(&labels).inc();
                    tracing::info!(service = %self.service, instances = instances.len(), index = health.index, "instance list updated");
                }
            }
            Err(err) => {
                tracing::warn!(service = %self.service, error = %err, "consul listed an unusable address; keeping the last good list")
            }
        }
    }
}

/// The index to send next (consul.md): backwards → 0 (re-read everything), 0 → 1.
pub fn next_index(previous: u64, returned: u64) -> u64 {
    if returned < previous {
        0
    } else {
        returned.max(1)
    }
}

/// Exponential back-off with full jitter.
#[derive(Debug)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max,
            attempt: 0,
        }
    }

    /// The next pause: uniformly random in [ceiling/2, ceiling], ceiling doubling up to `max`.
    pub fn next_pause(&mut self) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(1u32 << self.attempt.min(16))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let half = ceiling / 2;
        half + half.mul_f64(rand::random::<f64>())
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_rules() {
        assert_eq!(next_index(0, 0), 1, "index 0 is treated as 1");
        assert_eq!(next_index(10, 12), 12);
        assert_eq!(next_index(10, 10), 10);
        assert_eq!(next_index(10, 3), 0, "backwards resets");
    }

    #[test]
    fn backoff_grows_with_jitter_and_is_capped() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let first = backoff.next_pause();
        assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
        for _ in 0..20 {
            assert!(backoff.next_pause() <= Duration::from_secs(1));
        }
        backoff.reset();
        assert!(backoff.next_pause() <= Duration::from_millis(100));
    }
}
