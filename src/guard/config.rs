//! The guard's settings (`[guard]` in the gateway's config): client-IP flood guard,
//! per-service rate limits, and the Redis tuning of the cluster-wide scope.
//!
//! Plain data with documented defaults; [`GuardConfig::validate`] checks what serde
//! cannot and names the bad key. `redis.url` itself is not here: the gateway owns the
//! Redis connection and hands it to [`crate::guard::Guard::from_config`].

use std::collections::BTreeMap;
use std::num::{NonZeroU32, NonZeroUsize};
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

use crate::upstream::Service;

/// Everything under `[guard]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardConfig {
    /// `local` (each replica counts on its own) or `cluster` (counts, blocks and
    /// service limits are shared by all replicas through Redis; needs `redis.url`).
    /// Default `local`.
    #[serde(default)]
    pub scope: Scope,
    /// Networks of the reverse proxies in front of the gateway. Only a peer inside one
    /// of them may name the client in a forwarded header (spec decision 10).
    /// Default none: the socket peer is always the client.
    #[serde(default)]
    pub trusted_proxies: Vec<IpNet>,
    /// The header the trusted proxies write: `x-forwarded-for` or `forwarded`
    /// (RFC 7239). Only that one is read, so a client cannot smuggle the other one
    /// through a proxy that does not overwrite it. Default `x-forwarded-for`.
    #[serde(default)]
    pub forwarded_header: ForwardedHeader,
    /// Exact request paths the client-IP guard never counts nor blocks.
    /// Default `["/ping", "/events/types/consul-change"]`.
    #[serde(default = "defaults::exempt_paths")]
    pub exempt_paths: Vec<String>,
    /// The client-IP flood guard (spec decision 17).
    #[serde(default)]
    pub ip: IpLimitConfig,
    /// Per-service rate limits (spec decision 17, last sentence).
    #[serde(default)]
    pub services: ServiceLimitsConfig,
    /// How the `cluster` scope uses Redis.
    #[serde(default)]
    pub cluster: ClusterConfig,
    /// Failed-login throttling per (account, client) and per account.
    #[serde(default)]
    pub login: super::login::LoginConfig,
}

impl Default for GuardConfig {
    fn default() -> Self {
        Self {
            scope: Scope::default(),
            trusted_proxies: Vec::new(),
            forwarded_header: ForwardedHeader::default(),
            exempt_paths: defaults::exempt_paths(),
            ip: IpLimitConfig::default(),
            services: ServiceLimitsConfig::default(),
            cluster: ClusterConfig::default(),
            login: super::login::LoginConfig::default(),
        }
    }
}

/// Where counts live.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// In this process only.
    #[default]
    Local,
    /// In Redis, shared by every replica; local counting is the fallback.
    Cluster,
}

/// Which forwarded header names the client behind a trusted proxy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2`.
    #[default]
    XForwardedFor,
    /// `Forwarded: for=client, for=proxy1` (RFC 7239).
    Forwarded,
}

/// The client-IP flood guard.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpLimitConfig {
    /// Whether the guard counts at all. Default true.
    #[serde(default = "defaults::yes")]
    pub enabled: bool,
    /// Requests one client may make per rolling `window`; the request that would
    /// exceed it gets 429 and starts the block. Default 50.
    #[serde(default = "defaults::ip_limit")]
    pub limit: NonZeroU32,
    /// Length of the rolling window. Default 1s.
    #[serde(default = "defaults::ip_window", with = "humantime_serde")]
    pub window: Duration,
    /// How long a client stays blocked (403) after crossing the limit. Default 60s.
    #[serde(default = "defaults::ip_block", with = "humantime_serde")]
    pub block: Duration,
    /// IPv6 clients are counted per prefix of this length, since one host usually
    /// owns a whole /64 and could otherwise rotate addresses to evade the guard.
    /// 128 counts every address apart. Default 64.
    #[serde(default = "defaults::ipv6_prefix")]
    pub ipv6_prefix: u8,
    /// Most clients tracked at once in this process: the memory bound under an attack
    /// from many addresses (50 to 80 bytes a client, about 75 MB when full at the
    /// default). Past it, new clients are let through uncounted until idle entries
    /// expire, and a warning is logged. Default 1000000.
    #[serde(default = "defaults::max_tracked")]
    pub max_tracked: NonZeroUsize,
}

impl Default for IpLimitConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            limit: defaults::ip_limit(),
            window: defaults::ip_window(),
            block: defaults::ip_block(),
            ipv6_prefix: defaults::ipv6_prefix(),
            max_tracked: defaults::max_tracked(),
        }
    }
}

/// Ceilings of requests per backend service.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceLimitsConfig {
    /// Whether services are limited at all. Default true.
    #[serde(default = "defaults::yes")]
    pub enabled: bool,
    /// Sustained requests per second of a service without an override (at most
    /// 1000000). With scope `local` this is per replica, with `cluster` for all
    /// replicas together. Default 5000.
    #[serde(default = "defaults::service_rate")]
    pub per_second: NonZeroU32,
    /// Requests a service without an override may take at once on top of an idle
    /// period. Default 1000.
    #[serde(default = "defaults::service_burst")]
    pub burst: NonZeroU32,
    /// Per-service numbers (`auth`, `club`, `outing`, `schedule`, `announcement`).
    #[serde(default)]
    pub overrides: BTreeMap<Service, RateConfig>,
}

impl Default for ServiceLimitsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            per_second: defaults::service_rate(),
            burst: defaults::service_burst(),
            overrides: BTreeMap::new(),
        }
    }
}

impl ServiceLimitsConfig {
    /// The numbers that apply to `service`.
    pub fn rate(&self, service: Service) -> RateConfig {
        self.overrides.get(&service).copied().unwrap_or(RateConfig {
            per_second: self.per_second,
            burst: self.burst,
        })
    }
}

/// One service's ceiling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateConfig {
    /// Sustained requests per second.
    pub per_second: NonZeroU32,
    /// Requests taken at once after an idle period.
    pub burst: NonZeroU32,
}

/// How the `cluster` scope talks to Redis.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Longest wait for one Redis decision before deciding locally. Default 50ms.
    #[serde(default = "defaults::redis_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// After a failed or slow Redis call, decide locally for this long before trying
    /// Redis again, so an outage costs one timeout per pause, not one per request.
    /// Default 1s.
    #[serde(default = "defaults::redis_pause", with = "humantime_serde")]
    pub pause_after_failure: Duration,
    /// Prefix of every Redis key the guard writes. Default `sms-gateway:guard:`.
    #[serde(default = "defaults::key_prefix")]
    pub key_prefix: String,
    /// Least time between two warnings about falling back to local decisions.
    /// Default 10s.
    #[serde(default = "defaults::warn_interval", with = "humantime_serde")]
    pub warn_interval: Duration,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            timeout: defaults::redis_timeout(),
            pause_after_failure: defaults::redis_pause(),
            key_prefix: defaults::key_prefix(),
            warn_interval: defaults::warn_interval(),
        }
    }
}

/// Highest `per_second` of a service limit.
pub const MAX_PER_SECOND: u32 = 1_000_000;

/// A `[guard]` setting that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct GuardConfigError {
    /// The full key, e.g. `guard.ip.window`.
    pub key: String,
    /// Why it is refused.
    pub reason: String,
}

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> GuardConfigError {
    GuardConfigError {
        key: key.into(),
        reason: reason.into(),
    }
}

// === impl GuardConfig ===

impl GuardConfig {
    /// Checks every value that serde cannot. The Redis requirement of the `cluster`
    /// scope is checked by [`crate::guard::Guard::from_config`], which sees the
    /// connection.
    pub fn validate(&self) -> Result<(), GuardConfigError> {
        for path in &self.exempt_paths {
            if !path.starts_with('/') {
                return Err(invalid(
                    "guard.exempt_paths",
                    format!("{path:?} must start with '/'"),
                ));
            }
        }
        let ip = &self.ip;
        if ip.window < Duration::from_millis(1) || ip.window > Duration::from_secs(3600) {
            return Err(invalid("guard.ip.window", "must be between 1ms and 1h"));
        }
        if ip.block < Duration::from_millis(1) {
            return Err(invalid("guard.ip.block", "must be at least 1ms"));
        }
        if !(1..=128).contains(&ip.ipv6_prefix) {
            return Err(invalid("guard.ip.ipv6_prefix", "must be between 1 and 128"));
        }
        // The Redis script counts in microseconds, so a request may not weigh less.
        let rates = std::iter::once((
            "guard.services.per_second".to_owned(),
            self.services.per_second,
        ))
        .chain(self.services.overrides.iter().map(|(service, rate)| {
            (
                format!("guard.services.overrides.{service}.per_second"),
                rate.per_second,
            )
        }));
        for (key, per_second) in rates {
            if per_second.get() > MAX_PER_SECOND {
                return Err(invalid(key, format!("must be at most {MAX_PER_SECOND}")));
            }
        }
        if let Err((key, reason)) = self.login.check() {
            return Err(invalid(key, reason));
        }
        let cluster = &self.cluster;
        if cluster.timeout.is_zero() {
            return Err(invalid("guard.cluster.timeout", "must be greater than 0"));
        }
        if cluster.key_prefix.is_empty() {
            return Err(invalid("guard.cluster.key_prefix", "must not be empty"));
        }
        Ok(())
    }
}

mod defaults {
    use std::num::{NonZeroU32, NonZeroUsize};
    use std::time::Duration;

    pub fn yes() -> bool {
        true
    }
    pub fn exempt_paths() -> Vec<String> {
        vec!["/ping".to_owned(), "/events/types/consul-change".to_owned()]
    }
    pub fn ip_limit() -> NonZeroU32 {
        NonZeroU32::MIN.saturating_add(49)
    }
    pub fn ip_window() -> Duration {
        Duration::from_secs(1)
    }
    pub fn ip_block() -> Duration {
        Duration::from_secs(60)
    }
    pub fn ipv6_prefix() -> u8 {
        64
    }
    pub fn max_tracked() -> NonZeroUsize {
        NonZeroUsize::MIN.saturating_add(999_999)
    }
    pub fn service_rate() -> NonZeroU32 {
        NonZeroU32::new(5000).unwrap_or(NonZeroU32::MIN)
    }
    pub fn service_burst() -> NonZeroU32 {
        NonZeroU32::MIN.saturating_add(999)
    }
    pub fn redis_timeout() -> Duration {
        Duration::from_millis(50)
    }
    pub fn redis_pause() -> Duration {
        Duration::from_secs(1)
    }
    pub fn key_prefix() -> String {
        "sms-gateway:guard:".to_owned()
    }
    pub fn warn_interval() -> Duration {
        Duration::from_secs(10)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<GuardConfig, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    #[test]
    fn empty_section_gives_the_documented_defaults() {
        let config = parse("").expect("defaults");
        assert_eq!(config.scope, Scope::Local);
        assert!(config.trusted_proxies.is_empty());
        assert_eq!(config.forwarded_header, ForwardedHeader::XForwardedFor);
        assert_eq!(
            config.exempt_paths,
            ["/ping", "/events/types/consul-change"]
        );
        assert!(config.ip.enabled);
        assert_eq!(config.ip.limit.get(), 50);
        assert_eq!(config.ip.window, Duration::from_secs(1));
        assert_eq!(config.ip.block, Duration::from_secs(60));
        assert_eq!(config.ip.ipv6_prefix, 64);
        assert_eq!(config.ip.max_tracked.get(), 1_000_000);
        assert_eq!(config.services.per_second.get(), 5000);
        assert_eq!(config.services.burst.get(), 1000);
        assert_eq!(config.cluster.timeout, Duration::from_millis(50));
        assert_eq!(config.cluster.pause_after_failure, Duration::from_secs(1));
        assert_eq!(config.cluster.warn_interval, Duration::from_secs(10));
        config.validate().expect("defaults are valid");
    }

    #[test]
    fn every_number_can_be_set() {
        let config = parse(
            r#"
            scope = "cluster"
            trusted_proxies = ["10.0.0.0/8", "fd00::/8"]
            forwarded_header = "forwarded"
            exempt_paths = ["/ping"]
            [ip]
            limit = 10
            window = "500ms"
            block = "2s"
            ipv6_prefix = 56
            max_tracked = 1000
            [services]
            per_second = 20
            burst = 5
            [services.overrides.outing]
            per_second = 3
            burst = 1
            [cluster]
            timeout = "20ms"
            pause_after_failure = "250ms"
            key_prefix = "test:"
            warn_interval = "1m"
            "#,
        )
        .expect("full config");
        config.validate().expect("valid");
        assert_eq!(config.scope, Scope::Cluster);
        assert_eq!(config.trusted_proxies.len(), 2);
        assert_eq!(config.forwarded_header, ForwardedHeader::Forwarded);
        assert_eq!(config.ip.window, Duration::from_millis(500));
        assert_eq!(config.services.rate(Service::Outing).per_second.get(), 3);
        assert_eq!(config.services.rate(Service::Auth).per_second.get(), 20);
        assert_eq!(config.services.rate(Service::Auth).burst.get(), 5);
        assert_eq!(config.cluster.key_prefix, "test:");
    }

    #[test]
    fn unknown_keys_and_zero_limits_are_refused() {
        assert!(parse("colour = \"red\"").is_err());
        assert!(parse("[ip]\nlimt = 5").is_err());
        assert!(parse("[ip]\nlimit = 0").is_err());
        assert!(parse("[services.overrides.billing]\nper_second = 1\nburst = 1").is_err());
        assert!(parse("scope = \"global\"").is_err());
    }

    #[test]
    fn validate_names_the_bad_key() {
        let cases: [(&str, &str); 7] = [
            ("exempt_paths = [\"ping\"]", "guard.exempt_paths"),
            (
                "[services]\nper_second = 1000001",
                "guard.services.per_second",
            ),
            (
                "[services.overrides.club]\nper_second = 2000000\nburst = 1",
                "guard.services.overrides.club.per_second",
            ),
            ("[ip]\nwindow = \"0s\"", "guard.ip.window"),
            ("[ip]\nblock = \"0s\"", "guard.ip.block"),
            ("[ip]\nipv6_prefix = 0", "guard.ip.ipv6_prefix"),
            ("[cluster]\ntimeout = \"0s\"", "guard.cluster.timeout"),
        ];
        for (text, key) in cases {
            let err = parse(text)
                .expect("parses")
                .validate()
                .expect_err("refused");
            assert_eq!(err.key, key, "{text}");
        }
    }
}
