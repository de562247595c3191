//! Where instances come from: static addresses from the configuration, or Consul
//! watched with blocking queries ([`ConsulDiscovery`]). The request path never asks
//! either: it reads the pools the discovery keeps up to date.
//!
//! The Consul watcher keeps the last good list while Consul is unreachable, follows the
//! index rules of `consul.md` (an index that goes backwards resets to 0; index 0 is
//! treated as 1), rate-limits its loop and backs off with full jitter on errors.
//!
//! Recovery is quick: a webhook trigger ends a back-off pause at once, and while Consul
//! is unreachable one shared [`Probe`] loop asks the cheap `GET /v1/status/leader` every
//! `consul.probe_interval`; its first success ends every watcher's pause, so the first
//! good query follows Consul's return within about one probe interval instead of a
//! back-off that may have grown to `consul.max_backoff`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::Service;
use super::call::Upstreams;
use super::consul::{ConsulClient, ConsulError, Health};
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
    pub backoff_base: Duration,
    pub max_backoff: Duration,
    /// Period of the reachability probe while Consul is unreachable.
    pub probe_interval: Duration,
}

/// Consul discovery: one watch task per service.
#[derive(Debug)]
pub struct ConsulDiscovery {
    names: [String; 5],
    triggers: [Arc<Notify>; 5],
    /// Watch-loop activity, for tests and metrics.
    pub stats: Arc<WatchStats>,
    /// Notified on every node-list change (the consul-change broadcast listens).
    pub changes: Arc<Notify>,
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
        let changes = Arc::new(Notify::new());
        let probe = Arc::new(Probe::new());
        let prober = {
            let client = client.clone();
            let interval = settings.probe_interval;
            tokio::spawn(probe.clone().run(interval, move || {
                let client = client.clone();
                async move { matches!(client.leader(interval).await, Ok(true)) }
            }))
        };
        let mut tasks: Vec<JoinHandle<()>> = Service::ALL
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
                    changes: changes.clone(),
                    probe: probe.clone(),
                };
                tokio::spawn(watch.run())
            })
            .collect();
        tasks.push(prober);
        (
            Arc::new(Self {
                names,
                triggers,
                stats,
                changes,
            }),
            tasks,
        )
    }
}

impl Discovery for ConsulDiscovery {
    fn refresh(&self, service: Service) {
        self.triggers[service.index()].notify_one();
    }

    /// The configured Consul name or the short name (`auth`), case-insensitively like
    /// Consul's service names.
    fn service_named(&self, name: &str) -> Option<Service> {
        Service::ALL.into_iter().find(|s| {
            self.names[s.index()].eq_ignore_ascii_case(name)
                || s.as_str().eq_ignore_ascii_case(name)
        })
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
    changes: Arc<Notify>,
    probe: Arc<Probe>,
}

impl Watch {
    async fn run(self) {
        let mut index: u64 = 0;
        let mut backoff = Backoff::new(self.settings.backoff_base, self.settings.max_backoff);
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
                    // Only an unreachable agent is probed; an agent that answers with an
                    // error (403, 429, 500) gets the plain back-off.
                    let back =
                        matches!(err, ConsulError::Transport(_)).then(|| self.probe.wanted());
                    let woken = rest(pause, &self.trigger, back).await;
                    tracing::debug!(service = %self.service, ?woken, "watch back-off ended");
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
                    self.changes.notify_one();
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

/// Why a back-off pause ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Woken {
    /// The pause elapsed.
    Elapsed,
    /// A webhook asked for a refresh.
    Triggered,
    /// The probe saw Consul answer again.
    ConsulBack,
}

/// Sleeps `pause`, or less: a `trigger` notification or a change of `back` (the probe's
/// success count) ends it.
pub async fn rest(pause: Duration, trigger: &Notify, back: Option<watch::Receiver<u64>>) -> Woken {
    let consul_back = async {
        match back {
            Some(mut back) => match back.changed().await {
                Ok(()) => {}
                // The probe is gone (shutdown): only the pause or a trigger ends the rest.
                Err(_) => std::future::pending().await,
            },
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        () = tokio::time::sleep(pause) => Woken::Elapsed,
        () = trigger.notified() => Woken::Triggered,
        () = consul_back => Woken::ConsulBack,
    }
}

/// The reachability probe shared by the watchers of one gateway: idle until a watcher
/// wants it, then one cheap probe per interval until one succeeds.
#[derive(Debug)]
pub struct Probe {
    wanted: Notify,
    successes: watch::Sender<u64>,
}

impl Default for Probe {
    fn default() -> Self {
        Self::new()
    }
}

impl Probe {
    pub fn new() -> Self {
        Self {
            wanted: Notify::new(),
            successes: watch::Sender::new(0),
        }
    }

    /// Asks for probing; the receiver changes when a probe succeeds.
    pub fn wanted(&self) -> watch::Receiver<u64> {
        let mut receiver = self.successes.subscribe();
        receiver.mark_unchanged();
        self.wanted.notify_one();
        receiver
    }

    /// Runs forever: waits to be wanted, then calls `probe` every `interval` until it
    /// returns true (each attempt bounded by `interval`).
    pub async fn run<F, Fut>(self: Arc<Self>, interval: Duration, probe: F)
    where
        F: Fn() -> Fut,
        Fut: Future<Output = bool>,
    {
        loop {
            self.wanted.notified().await;
            let mut ticks = tokio::time::interval_at(Instant::now() + interval, interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                if tokio::time::timeout(interval, probe()).await == Ok(true) {
                    self.successes.send_modify(|n| *n += 1);
                    break;
                }
            }
        }
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

    /// The next pause: uniformly random in [0, ceiling] (full jitter), the ceiling
    /// doubling from `base` up to `max`.
    pub fn next_pause(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        ceiling.mul_f64(rand::random::<f64>())
    }

    /// The ceiling of the next pause.
    pub fn ceiling(&self) -> Duration {
        self.base
            .saturating_mul(1u32 << self.attempt.min(16))
            .min(self.max)
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
    fn backoff_doubles_is_capped_and_jitters_over_the_whole_range() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let ceilings: Vec<u128> = (0..6)
            .map(|_| {
                let ceiling = backoff.ceiling();
                assert!(backoff.next_pause() <= ceiling);
                ceiling.as_millis()
            })
            .collect();
        assert_eq!(ceilings, [100, 200, 400, 800, 1000, 1000]);
        // Full jitter: pauses spread over [0, ceiling], not only its upper half.
        let pauses: Vec<Duration> = (0..400).map(|_| backoff.next_pause()).collect();
        assert!(pauses.iter().all(|p| *p <= Duration::from_secs(1)));
        assert!(pauses.iter().any(|p| *p < Duration::from_millis(250)));
        assert!(pauses.iter().any(|p| *p > Duration::from_millis(750)));
        backoff.reset();
        assert_eq!(backoff.ceiling(), Duration::from_millis(100));
    }

    #[tokio::test(start_paused = true)]
    async fn a_trigger_ends_a_long_back_off_at_once() {
        let trigger = Arc::new(Notify::new());
        let poke = trigger.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(700)).await;
            poke.notify_one();
        });
        let started = Instant::now();
        let woken = rest(Duration::from_secs(30), &trigger, None).await;
        assert_eq!(woken, Woken::Triggered);
        assert_eq!(started.elapsed(), Duration::from_millis(700));
        // Without a trigger the pause runs out.
        let started = Instant::now();
        let woken = rest(Duration::from_secs(3), &Notify::new(), None).await;
        assert_eq!(
            (woken, started.elapsed()),
            (Woken::Elapsed, Duration::from_secs(3))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_probe_ends_every_pause_within_one_interval_of_consul_returning() {
        use std::sync::atomic::{AtomicU32, Ordering};
        let interval = Duration::from_millis(500);
        let probe = Arc::new(Probe::new());
        let started = Instant::now();
        // Consul is back 3.2 s from now; the probe counts its attempts.
        let back_at = started + Duration::from_millis(3200);
        let attempts = Arc::new(AtomicU32::new(0));
        let counted = attempts.clone();
        tokio::spawn(probe.clone().run(interval, move || {
            counted.fetch_add(1, Ordering::SeqCst);
            std::future::ready(Instant::now() >= back_at)
        }));
        let trigger = Notify::new();
        let (a, b) = tokio::join!(
            rest(Duration::from_secs(30), &trigger, Some(probe.wanted())),
            rest(Duration::from_secs(60), &trigger, Some(probe.wanted())),
        );
        assert_eq!((a, b), (Woken::ConsulBack, Woken::ConsulBack));
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(3200), "{waited:?}");
        assert!(
            waited <= Duration::from_millis(3200) + interval,
            "{waited:?}"
        );
        // One probe per interval for both watchers, none after the success.
        assert_eq!(attempts.load(Ordering::SeqCst), 7);
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(attempts.load(Ordering::SeqCst), 7);
    }
}
