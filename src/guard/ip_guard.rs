//! The client-IP flood guard's decision (spec decision 17): who the client is, whether
//! the request is exempt, and allowed / limited (429) / blocked (403), counted locally
//! or, in the cluster scope, in Redis with the local table as fallback.
//!
//! The tower wiring is in [`super::layer`]; this module knows no HTTP types but the
//! request head.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;

use axum::http::HeaderMap;

use super::client_ip::TrustedProxies;
use super::clock::{GuardClock, millis};
use super::cluster::Cluster;
use super::config::GuardConfig;
use super::ip_table::{IpDecision, IpKey, IpTable, IpTableStats, WindowRule};
use super::log_every::LogEvery;
use crate::http::GatewayError;

/// The guard's state: the rule, the local table, and Redis when shared.
#[derive(Debug)]
pub struct IpGuard {
    enabled: bool,
    proxies: TrustedProxies,
    exempt_paths: HashSet<String>,
    ipv6_prefix: u8,
    rule: WindowRule,
    table: IpTable,
    cluster: Option<Arc<Cluster>>,
    clock: GuardClock,
    block_log: LogEvery,
}

impl IpGuard {
    /// The guard of `config` (already validated), sharing counts through `cluster`.
    pub(crate) fn new(
        config: &GuardConfig,
        cluster: Option<Arc<Cluster>>,
        clock: GuardClock,
    ) -> Self {
        let ip = &config.ip;
        let rule = WindowRule {
            limit: u64::from(ip.limit.get()),
            window_ms: millis(ip.window).max(1),
            block_ms: millis(ip.block).max(1),
        };
        let warn_interval = millis(config.cluster.warn_interval);
        Self {
            enabled: ip.enabled,
            proxies: TrustedProxies::new(config.trusted_proxies.clone(), config.forwarded_header),
            exempt_paths: config.exempt_paths.iter().cloned().collect(),
            ipv6_prefix: ip.ipv6_prefix,
            rule,
            table: IpTable::new(rule, ip.max_tracked.get(), warn_interval),
            cluster,
            clock,
            block_log: LogEvery::new(warn_interval),
        }
    }

    /// Whether requests to `path` skip the guard (disabled, or an exempt path).
    pub fn passes(&self, path: &str) -> bool {
        !self.enabled || self.exempt_paths.contains(path)
    }

    /// The client of a request from `peer` (spec decision 10).
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        self.proxies.client_ip(peer, headers)
    }

    /// Counts one request of `client`.
    pub async fn check(&self, client: IpAddr) -> IpDecision {
        let key = IpKey::new(client, self.ipv6_prefix);
        let decision = match &self.cluster {
            None => self.table.check(key, self.clock.now_ms()),
            Some(cluster) => self.check_shared(cluster, key).await,
        };
        self.noted(key, decision)
    }

    /// [`IpGuard::check`] as the envelope error a rejection is answered with.
    pub async fn admit(&self, client: IpAddr) -> Result<(), GatewayError> {
        outcome(self.check(client).await)
    }

    /// [`IpGuard::admit`] decided at once, when it needs no round trip: always without
    /// shared counters (the local table decides); `None` with them.
    pub fn admit_local(&self, client: IpAddr) -> Option<Result<(), GatewayError>> {
        if self.cluster.is_some() {
            return None;
        }
        let key = IpKey::new(client, self.ipv6_prefix);
        let decision = self.table.check(key, self.clock.now_ms());
        Some(outcome(self.noted(key, decision)))
    }

    /// Logs a client that just crossed the limit (at most once per interval).
    fn noted(&self, key: IpKey, decision: IpDecision) -> IpDecision {
        if let IpDecision::Limited { retry_after } = decision
            && let Some(held_back) = self.block_log.ready(self.clock.now_ms())
        {
            tracing::warn!(
                client = %key.label(self.ipv6_prefix),
                block_secs = retry_after.as_secs(),
                held_back,
                "client crossed the request limit and is blocked"
            );
        }
        decision
    }

    async fn check_shared(&self, cluster: &Cluster, key: IpKey) -> IpDecision {
        // A block this replica already knows is answered without a round trip: a
        // blocked flood then costs Redis nothing, and the block outlives a Redis outage.
        if let Some(retry_after) = self.table.blocked(key, self.clock.now_ms()) {
            return IpDecision::Blocked { retry_after };
        }
        match cluster
            .ip_check(&key.label(self.ipv6_prefix), &self.rule)
            .await
        {
            Some(decision) => {
                if let IpDecision::Limited { retry_after } | IpDecision::Blocked { retry_after } =
                    decision
                {
                    self.table.block(key, self.clock.now_ms(), retry_after);
                }
                decision
            }
            None => self.table.check(key, self.clock.now_ms()),
        }
    }

    /// Removes every idle client from the local table now (it also happens on its own
    /// as requests arrive).
    pub fn sweep(&self) {
        self.table.sweep_all(self.clock.now_ms());
    }

    /// Size of the local table.
    pub fn table_stats(&self) -> IpTableStats {
        self.table.stats()
    }
}

/// A decision as the envelope error a rejection is answered with.
fn outcome(decision: IpDecision) -> Result<(), GatewayError> {
    match decision {
        IpDecision::Allowed => Ok(()),
        IpDecision::Limited { retry_after } => Err(GatewayError::RateLimited { retry_after }),
        IpDecision::Blocked { retry_after } => Err(GatewayError::Blocked { retry_after }),
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;
    use std::time::Duration;

    use super::*;

    fn guard(limit: u32, window: Duration, block: Duration) -> IpGuard {
        let mut config = GuardConfig::default();
        config.ip.limit = NonZeroU32::new(limit).expect("nonzero");
        config.ip.window = window;
        config.ip.block = block;
        IpGuard::new(&config, None, GuardClock::new())
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("test address")
    }

    #[tokio::test(start_paused = true)]
    async fn over_the_limit_429_then_403_for_the_block_then_allowed() {
        let guard = guard(50, Duration::from_secs(1), Duration::from_secs(60));
        let (a, b) = (ip("198.51.100.1"), ip("198.51.100.2"));
        for _ in 0..50 {
            assert_eq!(guard.check(a).await, IpDecision::Allowed);
        }
        assert!(matches!(
            guard.admit(a).await,
            Err(GatewayError::RateLimited { retry_after }) if retry_after == Duration::from_secs(60)
        ));
        assert_eq!(guard.check(b).await, IpDecision::Allowed);
        tokio::time::advance(Duration::from_secs(30)).await;
        assert!(matches!(
            guard.admit(a).await,
            Err(GatewayError::Blocked { retry_after }) if retry_after == Duration::from_secs(30)
        ));
        assert_eq!(guard.check(b).await, IpDecision::Allowed);
        tokio::time::advance(Duration::from_millis(29_999)).await;
        assert!(matches!(guard.check(a).await, IpDecision::Blocked { .. }));
        // Without shared counters the layer decides at once, with the same table.
        assert!(matches!(
            guard.admit_local(a),
            Some(Err(GatewayError::Blocked { .. }))
        ));
        assert!(matches!(guard.admit_local(b), Some(Ok(()))));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(guard.check(a).await, IpDecision::Allowed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_steady_client_under_the_limit_is_never_blocked() {
        let guard = guard(50, Duration::from_secs(1), Duration::from_secs(60));
        let client = ip("198.51.100.1");
        // 40 requests per second, evenly spread, for a minute.
        for _ in 0..2400 {
            assert_eq!(guard.check(client).await, IpDecision::Allowed);
            tokio::time::advance(Duration::from_millis(25)).await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_rolling_second_spans_fixed_windows() {
        let guard = guard(10, Duration::from_secs(1), Duration::from_secs(5));
        let client = ip("198.51.100.1");
        tokio::time::advance(Duration::from_millis(800)).await;
        for _ in 0..10 {
            assert_eq!(guard.check(client).await, IpDecision::Allowed);
        }
        // At 1.3 s (the next fixed window) 70 % of the rolling second still overlaps
        // the previous window, so its 10 requests weigh 7.
        tokio::time::advance(Duration::from_millis(500)).await;
        for _ in 0..3 {
            assert_eq!(guard.check(client).await, IpDecision::Allowed);
        }
        assert!(matches!(
            guard.check(client).await,
            IpDecision::Limited { .. }
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn exempt_paths_and_a_disabled_guard_pass() {
        let guard = guard(1, Duration::from_secs(1), Duration::from_secs(60));
        assert!(guard.passes("/ping"));
        assert!(guard.passes("/events/types/consul-change"));
        assert!(!guard.passes("/v1/clubs"));
        assert!(!guard.passes("/ping/"));
        let mut config = GuardConfig::default();
        config.ip.enabled = false;
        let off = IpGuard::new(&config, None, GuardClock::new());
        assert!(off.passes("/v1/clubs"));
    }
}
