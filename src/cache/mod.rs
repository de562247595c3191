//! The response cache of the read endpoints (spec decisions 9, 12, 13, 19 and §2.5):
//! what the pipeline's cache stage ([`crate::pipeline`]) uses, and nothing about any
//! particular endpoint — endpoints only declare a [`CachePolicy`] and the groups their
//! writes invalidate.
//!
//! - Keys: `<endpoint id>:<caller uuid or *>:<rendered template>`. Per-caller entries
//!   always carry the caller (decision 9); values are escaped ([`template`]).
//! - Groups and versions: every entry belongs to groups (e.g. `outing.<uuid>`,
//!   `outings.filter`, plus the epoch `*`), each with a version number; an entry lives
//!   in the slot named by its key and the current versions of its groups. A write bumps
//!   the versions of the groups it can change (one O(1) step per group, visible to every
//!   replica sharing the store) before its response is sent; older entries are then
//!   unreachable and expire on their own. A fill goes to the slot its lookup saw, so an
//!   answer read before a write can never be served after it.
//! - Stores ([`store`]): Redis when `redis.url` is set ([`redis_store`], optionally
//!   with an in-process [`near`] layer kept current by pub/sub), else in process
//!   ([`memory`]).
//! - Single flight ([`flight`]), fail-open ([`health`]: every store failure is a
//!   bypass, never an error), and stale answers when the backend fails.

pub mod fields;
pub mod flight;
pub mod health;
pub mod memory;
pub mod near;
pub mod policy;
pub mod redis_store;
pub mod store;
pub mod template;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::http::{HeaderName, HeaderValue};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::task::JoinHandle;

use crate::config::{CacheConfig, RedisConfig};
use crate::http::GatewayError;

pub use flight::{Flights, Role};
pub use policy::{CachePolicy, ReadCache, Scope};
pub use store::{CacheError, CacheStore, EPOCH, Entry, Lookup};
pub use template::{AmbiguousQuery, Template, Values};

use memory::MemoryStore;
use near::{NearSettings, NearStore};
use redis_store::{RedisSettings, RedisStore};

/// The response header that says how the cache took part.
pub static X_CACHE: HeaderName = HeaderName::from_static("x-cache");

/// How the cache took part in a response of a cached endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum XCache {
    /// Served from the cache, fresh.
    Hit,
    /// Looked up, not found (or not fresh): the backend answered (possibly through
    /// another request's call).
    Miss,
    /// The cache was not used: disabled, unavailable, or the request cannot be keyed.
    Bypass,
    /// The backend failed and an entry past its TTL (within `max_stale`) was served.
    Stale,
}

impl XCache {
    /// `HIT`, `MISS`, `BYPASS` or `STALE`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "HIT",
            Self::Miss => "MISS",
            Self::Bypass => "BYPASS",
            Self::Stale => "STALE",
        }
    }

    /// The header value.
    pub fn header_value(self) -> HeaderValue {
        HeaderValue::from_static(self.as_str())
    }
}

/// What a miss's call produces, shared with coalesced requests.
pub type Outcome = Result<Entry, GatewayError>;

/// Freshness of one cached endpoint, resolved from the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadSettings {
    /// Served as fresh this long after the fill.
    pub ttl: Duration,
    /// Served as stale (backend failing) up to `ttl + max_stale` after the fill.
    pub serve_stale: bool,
    /// How long past the TTL a stale entry may be served.
    pub max_stale: Duration,
}

impl ReadSettings {
    /// How long the store keeps an entry: long enough to serve it stale if allowed.
    pub fn keep(&self) -> Duration {
        if self.serve_stale {
            self.ttl.saturating_add(self.max_stale)
        } else {
            self.ttl
        }
    }

    /// Whether an entry this old may be served stale.
    pub fn stale_usable(&self, age: Duration) -> bool {
        self.serve_stale && age < self.ttl.saturating_add(self.max_stale)
    }
}

/// A read's key and groups, rendered for one request.
#[derive(Debug, Clone)]
pub struct Plan {
    /// `<endpoint id>:<caller or *>:<rendered template>`.
    pub key: String,
    /// The epoch first, then the policy's groups.
    pub groups: Vec<String>,
    /// The endpoint's freshness.
    pub settings: ReadSettings,
}

/// How often each outcome happened, since the gateway was built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Fresh answers from the cache.
    pub hits: u64,
    /// Answers from the backend (cacheable).
    pub misses: u64,
    /// Answers without the cache.
    pub bypasses: u64,
    /// Stale answers while the backend failed.
    pub stale: u64,
    /// Misses answered by another request's backend call.
    pub coalesced: u64,
    /// Invalidations that could not be applied at once (kept for later).
    pub failed_invalidations: u64,
}

#[derive(Debug, Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    bypasses: AtomicU64,
    stale: AtomicU64,
    coalesced: AtomicU64,
    failed_invalidations: AtomicU64,
}

/// The cache of a running gateway; lives in the application state.
pub struct Cache {
    /// `None` when caching is disabled.
    store: Option<Arc<dyn CacheStore>>,
    flights: Flights<Outcome>,
    config: CacheConfig,
    counters: Counters,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("store", &self.store_name())
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// The gateway's Redis connection: created lazily (Redis may be down at start-up) and
/// re-established by itself. `None` without `redis.url`.
pub fn redis_connection(
    config: &RedisConfig,
) -> Result<Option<(redis::Client, ConnectionManager)>, redis::RedisError> {
    let Some(url) = &config.url else {
        return Ok(None);
    };
    // Commands are small single writes: without TCP_NODELAY (redis-rs leaves it off)
    // Nagle holds a pipelined write back until the previous reply's ACK.
    let info = redis::IntoConnectionInfo::into_connection_info(url.as_str())?
        .set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
    let client = redis::Client::open(info)?;
    let manager = ConnectionManager::new_lazy_with_config(
        client.clone(),
        ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.connect_timeout))
            .set_max_delay(Duration::from_secs(1)),
    )?;
    Ok(Some((client, manager)))
}

// === impl Cache ===

impl Cache {
    /// A cache over `store` (`None`: disabled).
    pub fn new(store: Option<Arc<dyn CacheStore>>, config: &CacheConfig) -> Self {
        Self {
            store,
            flights: Flights::default(),
            config: config.clone(),
            counters: Counters::default(),
        }
    }

    /// The cache `config` asks for: in process, or on `redis` (with the near layer and
    /// its subscriber task when `cache.near` is set).
    pub fn build(
        config: &CacheConfig,
        redis_config: &RedisConfig,
        redis: Option<(redis::Client, ConnectionManager)>,
    ) -> (Self, Vec<JoinHandle<()>>) {
        if !config.enabled {
            return (Self::new(None, config), Vec::new());
        }
        let Some((client, connection)) = redis else {
            let store = Arc::new(MemoryStore::new(config.memory_limit));
            return (Self::new(Some(store), config), Vec::new());
        };
        let redis = Arc::new(RedisStore::new(
            connection,
            RedisSettings {
                prefix: config.key_prefix.clone(),
                timeout: redis_config.timeout,
                pause: redis_config.pause_after_failure,
                warn_every: config.warn_interval,
                channel: Some(config.channel.clone()),
            },
        ));
        if !config.near {
            return (Self::new(Some(redis), config), Vec::new());
        }
        let (near, task) = NearStore::start(
            redis,
            client,
            NearSettings {
                max_bytes: config.memory_limit,
                max_keep: longest_keep(config),
                channel: config.channel.clone(),
                connect_timeout: redis_config.connect_timeout,
                retry: redis_config
                    .pause_after_failure
                    .max(Duration::from_millis(100)),
                warn_every: config.warn_interval,
            },
        );
        (Self::new(Some(Arc::new(near)), config), vec![task])
    }

    /// `memory`, `redis`, `redis+near` or `disabled`.
    pub fn store_name(&self) -> &'static str {
        self.store.as_ref().map_or("disabled", |s| s.name())
    }

    /// The freshness settings of endpoint `id` with `scope`.
    pub fn settings(&self, id: &str, scope: Scope) -> ReadSettings {
        let overrides = self.config.endpoints.get(id);
        let by_scope = match scope {
            Scope::Shared => self.config.stale_for_shared,
            Scope::PerCaller => self.config.stale_for_per_user,
        };
        ReadSettings {
            ttl: overrides.and_then(|o| o.ttl).unwrap_or(self.config.ttl),
            serve_stale: overrides.and_then(|o| o.serve_stale).unwrap_or(by_scope),
            max_stale: self.config.max_stale,
        }
    }

    /// Renders a read's key and groups for one request; `None` bypasses the cache
    /// (disabled, or a query field given twice).
    pub fn plan(&self, id: &str, read: &ReadCache, values: &Values<'_>) -> Option<Plan> {
        self.store.as_ref()?;
        let mut key = String::with_capacity(96);
        key.push_str(id);
        key.push(':');
        match read.scope {
            // Decision 9: the caller is part of every per-caller key, whatever the
            // template says.
            Scope::PerCaller => template::escape(values.caller.as_bytes(), &mut key),
            Scope::Shared => key.push('*'),
        }
        key.push(':');
        read.key.render(values, &mut key).ok()?;
        let mut groups = Vec::with_capacity(read.groups.len() + 1);
        groups.push(EPOCH.to_owned());
        for group in &read.groups {
            groups.push(group.to_key(values).ok()?);
        }
        Some(Plan {
            key,
            groups,
            settings: self.settings(id, read.scope),
        })
    }

    /// Looks the plan up; an error means "bypass".
    pub async fn lookup(&self, plan: &Plan) -> Result<Lookup, CacheError> {
        match &self.store {
            Some(store) => store.lookup(&plan.key, &plan.groups).await,
            None => Err(CacheError::Paused),
        }
    }

    /// Stores a miss's answer (failures are logged by the store and otherwise ignored:
    /// the answer is served anyway).
    pub async fn fill(&self, slot: &str, entry: &Entry, keep: Duration) {
        if let Some(store) = &self.store {
            let _failure_already_logged = store.fill(slot, entry, keep).await;
        }
    }

    /// Invalidates the groups `templates` render to for this request. A failure is
    /// logged by the store and the groups are applied as soon as it works again.
    pub async fn invalidate(&self, templates: &[Template], values: &Values<'_>) {
        let Some(store) = &self.store else {
            return;
        };
        if templates.is_empty() {
            return;
        }
        let groups: Vec<String> = templates
            .iter()
            .filter_map(|t| t.to_key(values).ok())
            .collect();
        if store.invalidate(&groups).await.is_err() {
            self.counters
                .failed_invalidations
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The in-flight misses.
    pub fn flights(&self) -> &Flights<Outcome> {
        &self.flights
    }

    /// Counts one response.
    pub fn count(&self, outcome: XCache, role: Role) {
        let counter = match outcome {
            XCache::Hit => &self.counters.hits,
            XCache::Miss => &self.counters.misses,
            XCache::Bypass => &self.counters.bypasses,
            XCache::Stale => &self.counters.stale,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if role == Role::Follower {
            self.counters.coalesced.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The counters so far.
    pub fn stats(&self) -> CacheStats {
        let c = &self.counters;
        CacheStats {
            hits: c.hits.load(Ordering::Relaxed),
            misses: c.misses.load(Ordering::Relaxed),
            bypasses: c.bypasses.load(Ordering::Relaxed),
            stale: c.stale.load(Ordering::Relaxed),
            coalesced: c.coalesced.load(Ordering::Relaxed),
            failed_invalidations: c.failed_invalidations.load(Ordering::Relaxed),
        }
    }
}

/// The longest time any endpoint keeps an entry under `config`.
fn longest_keep(config: &CacheConfig) -> Duration {
    let longest_ttl = config
        .endpoints
        .values()
        .filter_map(|o| o.ttl)
        .fold(config.ttl, Duration::max);
    longest_ttl.saturating_add(config.max_stale)
}

/// Whether a write's outcome may have changed data: a success, or a failure after the
/// request reached the backend (a deadline or transport error after sending: the write
/// may have been applied, so its caches are invalidated too).
pub fn may_have_changed(outcome: &Result<impl Sized, GatewayError>) -> bool {
    match outcome {
        Ok(_) => true,
        Err(GatewayError::Deadline { sent, .. } | GatewayError::Upstream { sent, .. }) => *sent,
        Err(GatewayError::InvalidUpstreamStatus { .. }) => true,
        Err(_) => false,
    }
}

/// Whether a failed call may be answered with a stale entry: the backend is
/// unavailable (503: no instance, breaker open, or relayed) or too slow (408).
pub fn allows_stale(error: &GatewayError) -> bool {
    matches!(error.status().as_u16(), 503 | 408)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::EndpointCacheConfig;

    #[test]
    fn settings_follow_scope_and_overrides() {
        let mut config = CacheConfig::default();
        config.endpoints.insert(
            "x.slow".to_owned(),
            EndpointCacheConfig {
                ttl: Some(Duration::from_secs(3600)),
                serve_stale: Some(true),
            },
        );
        let cache = Cache::new(None, &config);
        let shared = cache.settings("x.any", Scope::Shared);
        assert_eq!(shared.ttl, Duration::from_secs(60));
        assert!(shared.serve_stale);
        assert_eq!(shared.keep(), Duration::from_secs(660));
        let per_caller = cache.settings("x.any", Scope::PerCaller);
        assert!(!per_caller.serve_stale);
        assert_eq!(per_caller.keep(), Duration::from_secs(60));
        assert!(!per_caller.stale_usable(Duration::from_secs(61)));
        let slow = cache.settings("x.slow", Scope::PerCaller);
        assert_eq!(slow.ttl, Duration::from_secs(3600));
        assert!(slow.stale_usable(Duration::from_secs(3601)));
        assert!(!slow.stale_usable(Duration::from_secs(4200)));
        assert_eq!(longest_keep(&config), Duration::from_secs(4200));
    }

    #[test]
    fn the_default_store_is_in_process() {
        let config = CacheConfig::default();
        let redis = RedisConfig::default();
        assert!(redis_connection(&redis).expect("no url").is_none());
        let (cache, tasks) = Cache::build(&config, &redis, None);
        assert_eq!((cache.store_name(), tasks.len()), ("memory", 0));
        let off = CacheConfig {
            enabled: false,
            ..CacheConfig::default()
        };
        assert_eq!(Cache::build(&off, &redis, None).0.store_name(), "disabled");
    }

    #[test]
    fn plans_key_per_caller_unless_shared() {
        use crate::endpoints::PathParams;
        let cache = Cache::new(
            Some(Arc::new(MemoryStore::new(1 << 20))),
            &CacheConfig::default(),
        );
        let policy = CachePolicy::per_caller("students.$student_uuid.start.$start")
            .groups(&["g.$student_uuid"]);
        let read = ReadCache::compile(&policy, &["student_uuid"], &["start"]).expect("policy");
        let params = PathParams(vec![("student_uuid".into(), "student-000000000001".into())]);
        let values = |caller, query| Values {
            params: &params,
            query,
            caller,
        };
        let plan = cache
            .plan(
                "x.list",
                &read,
                &values("parent-000000000001", Some("start=2")),
            )
            .expect("plan");
        assert_eq!(
            plan.key,
            "x.list:parent-000000000001:students.student-000000000001.start.2"
        );
        assert_eq!(plan.groups, [EPOCH, "g.student-000000000001"]);
        let other = cache
            .plan(
                "x.list",
                &read,
                &values("teacher-000000000001", Some("start=2")),
            )
            .expect("plan");
        assert_ne!(other.key, plan.key);
        let shared = ReadCache::compile(&CachePolicy::shared("m"), &[], &[]).expect("policy");
        assert_eq!(
            cache
                .plan("x.month", &shared, &values("a", None))
                .expect("plan")
                .key,
            "x.month:*:m"
        );
        assert!(
            cache
                .plan("x.list", &read, &values("a", Some("start=1&start=2")))
                .is_none()
        );
        let disabled = Cache::new(None, &CacheConfig::default());
        assert!(
            disabled
                .plan("x.month", &shared, &values("a", None))
                .is_none()
        );
    }

    #[test]
    fn writes_that_may_have_applied_invalidate() {
        let ok: Result<(), GatewayError> = Ok(());
        assert!(may_have_changed(&ok));
        let timed_out: Result<(), _> = Err(GatewayError::Deadline {
            rpc: "X",
            sent: true,
        });
        assert!(may_have_changed(&timed_out));
        let refused: Result<(), _> = Err(GatewayError::NoHealthyInstance {
            service: "x",
            detail: String::new(),
        });
        assert!(!may_have_changed(&refused));
        let relayed: Result<(), _> = Err(GatewayError::Relayed {
            status: axum::http::StatusCode::CONFLICT,
            code: -1,
            message: String::new(),
        });
        assert!(!may_have_changed(&relayed));
    }

    #[test]
    fn stale_only_for_unavailable_or_slow_backends() {
        assert!(allows_stale(&GatewayError::Deadline {
            rpc: "X",
            sent: true
        }));
        assert!(allows_stale(&GatewayError::BreakerOpen {
            instance: "i".into(),
            open_for: Duration::ZERO
        }));
        assert!(!allows_stale(&GatewayError::Relayed {
            status: axum::http::StatusCode::NOT_FOUND,
            code: 0,
            message: String::new(),
        }));
    }
}
