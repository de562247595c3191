//! Traffic protection (spec decisions 10 and 17): the client-IP flood guard, a tower
//! layer in front of routing, and the per-service rate limits, a check the pipeline
//! calls after validation. Both reject and never queue.
//!
//! With scope `local` each replica counts on its own. With scope `cluster` counts,
//! blocks and service limits live in Redis, one atomic script run per decision; a
//! slow or unreachable Redis falls back to the local limiters for that decision.
//!
//! - [`config`]: the `[guard]` settings.
//! - [`client_ip`]: who the client is (peer, or forwarded header from trusted proxies).
//! - [`ip_table`]: local rolling-window counts and blocks, with eviction of idle clients.
//! - [`ip_guard`] and [`layer`]: the flood guard's decision and its tower layer.
//! - [`service_limit`]: per-service GCRA limits and the IETF RateLimit fields.
//! - `cluster` and `redis_scripts`: the Redis side of the cluster scope (private).

pub mod client_ip;
mod clock;
mod cluster;
pub mod config;
pub mod ip_guard;
pub mod ip_table;
pub mod layer;
mod log_every;
pub mod login;
mod redis_scripts;
pub mod service_limit;

use std::sync::Arc;

use redis::aio::ConnectionManager;

pub use client_ip::TrustedProxies;
pub use cluster::GuardStats;
pub use config::{GuardConfig, GuardConfigError, Scope};
pub use ip_guard::IpGuard;
pub use ip_table::{IpDecision, IpTableStats};
pub use layer::{IpGuardLayer, IpGuardService};
pub use login::{LoginAttempt, LoginOutcome, LoginThrottle};
pub use service_limit::{RateLimitStatus, ServiceLimited, ServiceLimits};

use clock::GuardClock;
use cluster::Cluster;

/// The built guard: one per gateway process, kept in the application state.
#[derive(Debug, Clone)]
pub struct Guard {
    ip: Arc<IpGuard>,
    services: Arc<ServiceLimits>,
    login: Arc<LoginThrottle>,
    cluster: Option<Arc<Cluster>>,
}

impl Guard {
    /// Builds the guard of `config`. `redis` is the gateway's Redis connection, used
    /// only with scope `cluster`, which refuses to start without one.
    pub fn from_config(
        config: &GuardConfig,
        redis: Option<ConnectionManager>,
    ) -> Result<Self, GuardConfigError> {
        config.validate()?;
        let clock = GuardClock::new();
        let cluster = match (config.scope, redis) {
            (Scope::Local, _) => None,
            (Scope::Cluster, Some(connection)) => {
                Some(Arc::new(Cluster::new(connection, &config.cluster, clock)))
            }
            (Scope::Cluster, None) => {
                return Err(GuardConfigError {
                    key: "guard.scope".to_owned(),
                    reason: "\"cluster\" needs Redis (set redis.url)".to_owned(),
                });
            }
        };
        Ok(Self {
            ip: Arc::new(IpGuard::new(config, cluster.clone(), clock)),
            services: Arc::new(ServiceLimits::new(&config.services, cluster.clone(), clock)),
            login: Arc::new(LoginThrottle::new(
                &config.login,
                config.ip.ipv6_prefix,
                cluster.clone(),
                clock,
                config.cluster.warn_interval,
            )),
            cluster,
        })
    }

    /// The client-IP guard as a tower layer, for the router's layer stack.
    pub fn layer(&self) -> IpGuardLayer {
        IpGuardLayer::new(self.ip.clone())
    }

    /// The client-IP guard itself (client address, direct checks, table size).
    pub fn ip(&self) -> &Arc<IpGuard> {
        &self.ip
    }

    /// The per-service limits, for the pipeline's rate-limit stage.
    pub fn services(&self) -> &Arc<ServiceLimits> {
        &self.services
    }

    /// The login throttle, for the pipeline's login stage.
    pub fn login(&self) -> &Arc<LoginThrottle> {
        &self.login
    }

    /// The client address of a request (the client-IP rules of decision 10); `None`
    /// without a peer address.
    pub fn client_of<B>(&self, request: &axum::http::Request<B>) -> Option<std::net::IpAddr> {
        let axum::extract::ConnectInfo(peer) = request
            .extensions()
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()?;
        Some(self.ip.client_ip(peer.ip(), request.headers()))
    }

    /// Where the cluster scope's decisions were made (all zero with scope `local`).
    pub fn stats(&self) -> GuardStats {
        self.cluster
            .as_ref()
            .map(|cluster| cluster.stats())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_scope_without_redis_is_refused() {
        let config = GuardConfig {
            scope: Scope::Cluster,
            ..GuardConfig::default()
        };
        let err = Guard::from_config(&config, None).expect_err("needs redis");
        assert_eq!(err.key, "guard.scope");
    }

    #[test]
    fn invalid_config_is_refused() {
        let config = GuardConfig {
            exempt_paths: vec!["ping".to_owned()],
            ..GuardConfig::default()
        };
        assert!(Guard::from_config(&config, None).is_err());
    }

    #[tokio::test]
    async fn local_scope_needs_no_redis() {
        let guard = Guard::from_config(&GuardConfig::default(), None).expect("local guard");
        assert_eq!(guard.stats(), GuardStats::default());
        assert!(
            guard
                .services()
                .check(crate::upstream::Service::Auth)
                .await
                .is_ok()
        );
    }
}
