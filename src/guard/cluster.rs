//! The cluster-wide scope's Redis calls, bounded so Redis can never fail or stall a
//! request: each call has a timeout, and after a failure Redis is left alone for a
//! pause while the caller decides locally. Falling back is logged, once per interval.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::{FromRedisValue, ScriptInvocation};

use super::clock::{GuardClock, millis};
use super::config::ClusterConfig;
use super::ip_table::{IpDecision, WindowRule};
use super::log_every::LogEvery;
use super::login::{LoginRule, LoginScope};
use super::redis_scripts::{self, Scripts};
use super::service_limit::GcraOutcome;

/// How often decisions were made where, since the guard was built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GuardStats {
    /// Decisions made by Redis.
    pub redis_decisions: u64,
    /// Decisions of the cluster scope made locally because Redis failed, was slow, or
    /// was paused after a failure.
    pub local_fallbacks: u64,
}

/// The shared Redis of the cluster scope.
pub(crate) struct Cluster {
    connection: ConnectionManager,
    scripts: Scripts,
    key_prefix: String,
    timeout: Duration,
    pause_ms: u64,
    /// Redis is not tried before this time (guard clock, ms).
    paused_until_ms: AtomicU64,
    clock: GuardClock,
    warning: LogEvery,
    redis_decisions: AtomicU64,
    local_fallbacks: AtomicU64,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("key_prefix", &self.key_prefix)
            .field("timeout", &self.timeout)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Cluster {
    pub(crate) fn new(
        connection: ConnectionManager,
        config: &ClusterConfig,
        clock: GuardClock,
    ) -> Self {
        Self {
            connection,
            scripts: Scripts::new(),
            key_prefix: config.key_prefix.clone(),
            timeout: config.timeout,
            pause_ms: millis(config.pause_after_failure),
            paused_until_ms: AtomicU64::new(0),
            clock,
            warning: LogEvery::new(millis(config.warn_interval)),
            redis_decisions: AtomicU64::new(0),
            local_fallbacks: AtomicU64::new(0),
        }
    }

    /// One request of the client `label` (see `IpKey::label`); `None`: decide locally.
    pub(crate) async fn ip_check(&self, label: &str, rule: &WindowRule) -> Option<IpDecision> {
        let key = format!("{}ip:{label}", self.key_prefix);
        let reply = self
            .eval("client-IP guard", self.scripts.ip_window(&key, rule))
            .await?;
        self.read("client-IP guard", redis_scripts::ip_decision(reply))
    }

    /// One request of `service`; `None`: decide locally.
    pub(crate) async fn service_check(
        &self,
        service: &str,
        interval_us: u64,
        burst: u32,
    ) -> Option<GcraOutcome> {
        let key = format!("{}svc:{service}", self.key_prefix);
        let reply = self
            .eval("service limit", self.scripts.gcra(&key, interval_us, burst))
            .await?;
        self.read("service limit", redis_scripts::gcra_outcome(reply))
    }

    /// Whether the login keys `keys` (`[account_ip, account]`, without the prefix)
    /// are locked; `None`: decide locally.
    pub(crate) async fn login_locked(
        &self,
        keys: &[String; 2],
    ) -> Option<Option<(LoginScope, u64)>> {
        let keys = self.prefixed(keys);
        let reply = self
            .eval("login throttle", self.scripts.login_locked(&keys))
            .await?;
        self.read("login throttle", redis_scripts::login_lock(reply))
    }

    /// One failed login; `Some([lock_ms, lock_ms])` (0: no lock started), `None`:
    /// count locally.
    pub(crate) async fn login_failed(
        &self,
        keys: &[String; 2],
        rules: [&LoginRule; 2],
    ) -> Option<[u64; 2]> {
        let keys = self.prefixed(keys);
        let (a, b): (i64, i64) = self
            .eval("login throttle", self.scripts.login_failed(&keys, rules))
            .await?;
        let read = |ms: i64| u64::try_from(ms).ok();
        self.read("login throttle", read(a).zip(read(b)).map(|(a, b)| [a, b]))
    }

    /// A successful login forgets both keys (best effort: they expire anyway).
    pub(crate) async fn login_reset(&self, keys: &[String; 2]) {
        let keys = self.prefixed(keys);
        let _deleted: Option<i64> = self
            .eval("login throttle", self.scripts.login_reset(&keys))
            .await;
    }

    fn prefixed(&self, keys: &[String; 2]) -> [String; 2] {
        [
            format!("{}{}", self.key_prefix, keys[0]),
            format!("{}{}", self.key_prefix, keys[1]),
        ]
    }

    /// Runs a script within the timeout, unless Redis is paused after a failure.
    async fn eval<T: FromRedisValue>(
        &self,
        what: &'static str,
        call: ScriptInvocation<'_>,
    ) -> Option<T> {
        if self.clock.now_ms() < self.paused_until_ms.load(Ordering::Relaxed) {
            self.local_fallbacks.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        // A clone shares the one multiplexed connection; it only lets the call hold a
        // `&mut` without a lock.
        let mut connection = self.connection.clone();
        match tokio::time::timeout(self.timeout, call.invoke_async::<T>(&mut connection)).await {
            Ok(Ok(reply)) => {
                self.redis_decisions.fetch_add(1, Ordering::Relaxed);
                Some(reply)
            }
            Ok(Err(error)) => {
                self.fall_back(what, &error.to_string());
                None
            }
            Err(_) => {
                self.fall_back(what, &format!("no reply within {:?}", self.timeout));
                None
            }
        }
    }

    fn read<T>(&self, what: &'static str, decision: Option<T>) -> Option<T> {
        if decision.is_none() {
            self.fall_back(what, "unexpected script reply");
        }
        decision
    }

    fn fall_back(&self, what: &'static str, reason: &str) {
        let now = self.clock.now_ms();
        self.paused_until_ms
            .store(now.saturating_add(self.pause_ms), Ordering::Relaxed);
        self.local_fallbacks.fetch_add(1, Ordering::Relaxed);
        if let Some(held_back) = self.warning.ready(now) {
            tracing::warn!(
                %reason,
                held_back,
                pause_ms = self.pause_ms,
                "{what}: Redis failed, deciding locally"
            );
        }
    }

    pub(crate) fn stats(&self) -> GuardStats {
        GuardStats {
            redis_decisions: self.redis_decisions.load(Ordering::Relaxed),
            local_fallbacks: self.local_fallbacks.load(Ordering::Relaxed),
        }
    }
}
