//! The gateway's one typed configuration: a TOML file plus `SMS_` environment
//! overrides, validated once at start-up with errors that name the bad key.
//!
//! Environment overrides name a key path with `__` between levels, e.g.
//! `SMS_JWT__SECRET=...` or `SMS_UPSTREAM__SERVICES__AUTH__ADDRESSES='["10.0.0.5:50051"]'`.
//! A value is read as TOML when it parses as a TOML value, else as a string.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::auth::jwt::JwtAlgorithm;
use crate::guard::GuardConfig;
use crate::telemetry::TelemetryConfig;
use crate::upstream::Service;
use crate::upstream::breaker::BreakerSettings;

/// Prefix of environment overrides.
pub const ENV_PREFIX: &str = "SMS_";

/// Everything the gateway reads at start-up.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address to listen on. Default `127.0.0.1:8080`.
    #[serde(default = "defaults::listen")]
    pub listen: SocketAddr,
    #[serde(default)]
    pub jwt: JwtConfig,
    #[serde(default)]
    pub http: HttpConfig,
    #[serde(default)]
    pub upstream: UpstreamConfig,
    #[serde(default)]
    pub log: LogConfig,
    /// Trace export to Jaeger over OTLP (off when no endpoint is set).
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    /// Client-IP flood guard and per-service rate limits (decision 17).
    #[serde(default)]
    pub guard: GuardConfig,
    #[serde(default)]
    pub breaker: BreakerConfig,
    #[serde(default)]
    pub discovery: DiscoveryConfig,
    #[serde(default)]
    pub consul: ConsulConfig,
    /// The Redis server shared by the replicas (response cache, cluster guard).
    #[serde(default)]
    pub redis: RedisConfig,
    /// The response cache (spec decisions 9, 12, 13, 19).
    #[serde(default)]
    pub cache: CacheConfig,
    /// Bounds on calls in flight and waiting per backend service (overload shedding).
    #[serde(default)]
    pub overload: crate::upstream::shed::OverloadConfig,
    /// The admin listener (`/metrics`, `/admin/audit`), off the public port.
    #[serde(default)]
    pub admin: crate::admin::AdminConfig,
    /// The audit stream of security events.
    #[serde(default)]
    pub audit: crate::audit::AuditConfig,
    /// The async runtime (worker threads).
    #[serde(default)]
    pub runtime: RuntimeConfig,
}

/// Per-instance circuit breaker numbers (decision 15).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerConfig {
    /// Consecutive failed calls that open the breaker. Default 5.
    #[serde(default = "defaults::five")]
    pub failures: NonZeroU32,
    /// How long it stays open before letting probes through. Default 60s.
    #[serde(default = "defaults::open_for", with = "humantime_serde")]
    pub open_for: Duration,
    /// Consecutive successful probes that close it. Default 5.
    #[serde(default = "defaults::five")]
    pub successes: NonZeroU32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failures: defaults::five(),
            open_for: defaults::open_for(),
            successes: defaults::five(),
        }
    }
}

impl BreakerConfig {
    /// The breaker's settings.
    pub fn settings(&self) -> BreakerSettings {
        BreakerSettings {
            failures_to_open: self.failures.get(),
            open_for: self.open_for,
            successes_to_close: self.successes.get(),
        }
    }
}

/// Where instances come from.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscoveryConfig {
    /// `static` (the `upstream.services.*.addresses`) or `consul`. Default `static`.
    #[serde(default)]
    pub mode: DiscoveryMode,
}

/// Discovery mode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiscoveryMode {
    #[default]
    Static,
    Consul,
}

/// The Consul agent the gateway watches and flips health on.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsulConfig {
    /// Agent HTTP address. Default `http://127.0.0.1:8500`.
    #[serde(default = "defaults::consul_address")]
    pub address: String,
    /// ACL token, sent as `X-Consul-Token`. Prefer `token_file`.
    pub token: Option<String>,
    /// A file holding the ACL token (e.g. a docker secret).
    pub token_file: Option<PathBuf>,
    /// Datacenter to query; the agent's own when unset.
    pub datacenter: Option<String>,
    /// Longest wait of one blocking query (Consul caps it at 10m). Default 5m.
    #[serde(default = "defaults::consul_wait", with = "humantime_serde")]
    pub wait: Duration,
    /// Least time between two queries of one service (rate limit of the watch
    /// loop). Default 100ms.
    #[serde(default = "defaults::consul_min_interval", with = "humantime_serde")]
    pub min_interval: Duration,
    /// Timeout of non-blocking calls (health flips, registrations). Default 5s.
    #[serde(default = "defaults::consul_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Upper bound of the error back-off. Default 30s.
    #[serde(default = "defaults::consul_max_backoff", with = "humantime_serde")]
    pub max_backoff: Duration,
    /// Shared token that `consul watch` must send in `X-Gateway-Token` to
    /// `POST /events/types/consul-change`; the webhook is disabled when unset.
    pub webhook_token: Option<String>,
    /// Mark an instance critical in Consul while its breaker is open. Default true.
    #[serde(default = "defaults::yes")]
    pub flip_health: bool,
    /// First back-off pause ceiling after a failed query; it doubles per failure up to
    /// `max_backoff`. Default 100ms.
    #[serde(default = "defaults::consul_backoff_base", with = "humantime_serde")]
    pub backoff_base: Duration,
    /// While Consul is unreachable, how often a cheap probe (`GET /v1/status/leader`)
    /// checks whether it is back; a success ends every watcher's back-off. Default 500ms.
    #[serde(default = "defaults::consul_probe_interval", with = "humantime_serde")]
    pub probe_interval: Duration,
    /// Tell every passing instance of every service `ChangeAllServiceNodes` when a node
    /// list changes and once after start-up (spec §4.6 step 5). Default true.
    #[serde(default = "defaults::yes")]
    pub broadcast: bool,
    /// Quiet time after the last change before the broadcast goes out (changes within
    /// it are coalesced into one broadcast). Default 200ms.
    #[serde(default = "defaults::consul_broadcast_delay", with = "humantime_serde")]
    pub broadcast_delay: Duration,
    /// Most broadcast calls in flight at once. Default 16.
    #[serde(default = "defaults::consul_broadcast_concurrency")]
    pub broadcast_concurrency: usize,
}

impl std::fmt::Debug for ConsulConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsulConfig")
            .field("address", &self.address)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("datacenter", &self.datacenter)
            .field("wait", &self.wait)
            .finish_non_exhaustive()
    }
}

impl Default for ConsulConfig {
    fn default() -> Self {
        Self {
            address: defaults::consul_address(),
            token: None,
            token_file: None,
            datacenter: None,
            wait: defaults::consul_wait(),
            min_interval: defaults::consul_min_interval(),
            request_timeout: defaults::consul_timeout(),
            max_backoff: defaults::consul_max_backoff(),
            webhook_token: None,
            flip_health: true,
            backoff_base: defaults::consul_backoff_base(),
            probe_interval: defaults::consul_probe_interval(),
            broadcast: true,
            broadcast_delay: defaults::consul_broadcast_delay(),
            broadcast_concurrency: defaults::consul_broadcast_concurrency(),
        }
    }
}

impl ConsulConfig {
    /// The ACL token, reading `token_file` when set.
    pub fn acl_token(&self) -> Result<Option<String>, ConfigError> {
        match (&self.token, &self.token_file) {
            (Some(token), _) => Ok(Some(token.clone())),
            (None, Some(path)) => std::fs::read_to_string(path)
                .map(|t| Some(t.trim().to_owned()))
                .map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                }),
            (None, None) => Ok(None),
        }
    }
}

/// Token verification and issuing.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// The HMAC secret (at least 32 bytes). Prefer `secret_file` in deployments.
    pub secret: Option<String>,
    /// A file holding the secret (e.g. a docker secret); surrounding whitespace is trimmed.
    pub secret_file: Option<PathBuf>,
    /// Pinned algorithm: HS256, HS384 or HS512. Default HS512.
    #[serde(default)]
    pub algorithm: JwtAlgorithm,
    /// Clock-skew allowance for `exp`/`nbf`. Default 5s.
    #[serde(default = "defaults::leeway", with = "humantime_serde")]
    pub leeway: Duration,
    /// Lifetime of student tokens. Default 7 days.
    #[serde(default = "defaults::student_lifetime", with = "humantime_serde")]
    pub student_lifetime: Duration,
    /// Lifetime of admin, teacher and parent tokens. Default 24h.
    #[serde(default = "defaults::other_lifetime", with = "humantime_serde")]
    pub other_lifetime: Duration,
}

impl std::fmt::Debug for JwtConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtConfig")
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("secret_file", &self.secret_file)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl Default for JwtConfig {
    fn default() -> Self {
        Self {
            secret: None,
            secret_file: None,
            algorithm: JwtAlgorithm::default(),
            leeway: defaults::leeway(),
            student_lifetime: defaults::student_lifetime(),
            other_lifetime: defaults::other_lifetime(),
        }
    }
}

/// HTTP server behaviour.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Largest accepted request body in bytes (413 above). Default 8 MiB.
    #[serde(default = "defaults::body_limit")]
    pub body_limit: usize,
    /// Origins allowed by CORS; `["*"]` allows any. Default `["*"]`.
    #[serde(default = "defaults::cors_origins")]
    pub cors_origins: Vec<String>,
    /// How long in-flight requests may take to finish at shutdown. Default 10s.
    #[serde(default = "defaults::shutdown_grace", with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// HTTP/1.1: time to receive a request's complete head (request line and
    /// headers), counted from the first read; a kept-alive connection waits for its next
    /// request under the same limit. Past it: 408 envelope when part of a request
    /// arrived, else the connection is closed. Default 30s (nginx
    /// `client_header_timeout` 60s).
    #[serde(default = "defaults::header_timeout", with = "humantime_serde")]
    pub header_timeout: Duration,
    /// Longest pause between two reads of a request body (408 past it). Default 15s
    /// (nginx `client_body_timeout` 60s).
    #[serde(default = "defaults::body_read_timeout", with = "humantime_serde")]
    pub body_read_timeout: Duration,
    /// Longest time to receive a whole request body, however it trickles (408 past
    /// it). Default 60s.
    #[serde(default = "defaults::body_timeout", with = "humantime_serde")]
    pub body_timeout: Duration,
    /// A connection (HTTP/1.1 or HTTP/2) with no request in flight for this long is
    /// closed (HTTP/2: GOAWAY). Default 60s (nginx `keepalive_timeout` 75s, Envoy
    /// `idle_timeout` 1h).
    #[serde(default = "defaults::idle_timeout", with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// HTTP/2: interval of keep-alive PINGs on a quiet connection. Default 30s.
    #[serde(default = "defaults::h2_keepalive_interval", with = "humantime_serde")]
    pub h2_keepalive_interval: Duration,
    /// HTTP/2: a PING not acknowledged within this closes the connection. Default 10s.
    #[serde(default = "defaults::h2_keepalive_timeout", with = "humantime_serde")]
    pub h2_keepalive_timeout: Duration,
    /// HTTP/2: concurrent streams per connection. Default 100 (Envoy's edge advice).
    #[serde(default = "defaults::h2_max_concurrent_streams")]
    pub h2_max_concurrent_streams: u32,
    /// Largest request head in bytes (request line + header names and values), 431
    /// envelope above. Default 65536 (Envoy `max_request_headers_kb` 60 KiB).
    #[serde(default = "defaults::max_header_bytes")]
    pub max_header_bytes: usize,
    /// Most header fields in one request, 431 envelope above. Default 100 (Envoy
    /// `max_headers_count` 100).
    #[serde(default = "defaults::max_headers")]
    pub max_headers: usize,
    /// Open client connections at most; more are accepted and closed at once. Default:
    /// the process's open-file limit minus `fd_reserve`, at most 10000 (a connection
    /// holding a 40 KB unfinished head takes ~150 KiB: size this to the memory budget).
    #[serde(default)]
    pub max_connections: Option<usize>,
    /// Descriptors kept free of client connections for upstream channels, Redis,
    /// Consul, logs and listeners when `max_connections` is derived. Default 128.
    #[serde(default = "defaults::fd_reserve")]
    pub fd_reserve: usize,
    /// Open connections per client IP (IPv6 per `guard.ip.ipv6_prefix`, /64 by
    /// default), and never more than half of `max_connections`. Peers inside
    /// `guard.trusted_proxies` carry many clients and are exempt (the global cap still
    /// holds). Default 256.
    #[serde(default = "defaults::max_connections_per_ip")]
    pub max_connections_per_ip: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            body_limit: defaults::body_limit(),
            cors_origins: defaults::cors_origins(),
            shutdown_grace: defaults::shutdown_grace(),
            header_timeout: defaults::header_timeout(),
            body_read_timeout: defaults::body_read_timeout(),
            body_timeout: defaults::body_timeout(),
            idle_timeout: defaults::idle_timeout(),
            h2_keepalive_interval: defaults::h2_keepalive_interval(),
            h2_keepalive_timeout: defaults::h2_keepalive_timeout(),
            h2_max_concurrent_streams: defaults::h2_max_concurrent_streams(),
            max_header_bytes: defaults::max_header_bytes(),
            max_headers: defaults::max_headers(),
            max_connections: None,
            fd_reserve: defaults::fd_reserve(),
            max_connections_per_ip: defaults::max_connections_per_ip(),
        }
    }
}

/// Where the backends are and how long a call may take.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Connect timeout of a new channel. Default 2s.
    #[serde(default = "defaults::connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Deadline of one call unless the service or endpoint says otherwise. Default 3s.
    #[serde(default = "defaults::deadline", with = "humantime_serde")]
    pub deadline: Duration,
    /// How long a read's first attempt may take before it is retried on another
    /// instance (only when one is available; the retry gets the rest of the deadline).
    /// Default 1s; at or above the deadline: off.
    #[serde(default = "defaults::read_try_timeout", with = "humantime_serde")]
    pub read_try_timeout: Duration,
    /// Per service (`auth`, `club`, `outing`, `schedule`, `announcement`).
    #[serde(default)]
    pub services: BTreeMap<Service, ServiceConfig>,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            connect_timeout: defaults::connect_timeout(),
            deadline: defaults::deadline(),
            read_try_timeout: defaults::read_try_timeout(),
            services: BTreeMap::new(),
        }
    }
}

/// One backend service.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// Static instance addresses (`host:port`), balanced round robin.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// Deadline of one call to this service; default `upstream.deadline`.
    #[serde(default, with = "humantime_serde")]
    pub deadline: Option<Duration>,
    /// First-try limit of this service's reads; default `upstream.read_try_timeout`.
    #[serde(default, with = "humantime_serde")]
    pub read_try_timeout: Option<Duration>,
    /// The service's name in Consul; default `DMS.SMS.v1.service.<service>`.
    pub consul_name: Option<String>,
}

/// Log output.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `json` (one object per line) or `text`. Default `json`.
    #[serde(default)]
    pub format: LogFormat,
    /// A tracing filter, e.g. `info` or `sms_gateway=debug`. Default `info`.
    #[serde(default = "defaults::log_level")]
    pub level: String,
    /// Lines waiting for stdout at most; when stdout is slower than the requests, newer
    /// lines are dropped (and counted) instead of stalling a worker. Default 8192.
    #[serde(default = "defaults::log_buffer_lines")]
    pub buffer_lines: NonZeroUsize,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::default(),
            level: defaults::log_level(),
            buffer_lines: defaults::log_buffer_lines(),
        }
    }
}

/// The async runtime that serves requests.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeConfig {
    /// `thread_per_core` (default: a current-thread runtime per worker, each serving
    /// its own connections start to end), `multi_thread` (tokio's work-stealing
    /// scheduler) or `current_thread` (every task on one thread).
    #[serde(default)]
    pub flavor: RuntimeFlavor,
    /// Worker threads of `multi_thread` and `thread_per_core`; default: one per CPU
    /// the process may use. See README "Benchmarks" for the choice per replica size.
    pub worker_threads: Option<NonZeroUsize>,
}

impl RuntimeConfig {
    /// Worker threads: the configured number, else one per CPU the process may use.
    pub fn workers(&self) -> NonZeroUsize {
        self.worker_threads
            .unwrap_or_else(|| std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN))
    }

    /// Lanes of per-worker upstream connections: one per worker with
    /// `thread_per_core`, else one shared by every thread.
    pub fn lanes(&self) -> usize {
        match self.flavor {
            RuntimeFlavor::ThreadPerCore => self.workers().get(),
            RuntimeFlavor::MultiThread | RuntimeFlavor::CurrentThread => 1,
        }
    }
}

/// Tokio's scheduler flavours.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuntimeFlavor {
    MultiThread,
    #[default]
    ThreadPerCore,
    CurrentThread,
}

/// Log line format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Json,
    Text,
}

mod defaults {
    use std::net::SocketAddr;
    use std::time::Duration;

    pub fn listen() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 8080))
    }
    pub fn leeway() -> Duration {
        Duration::from_secs(5)
    }
    pub fn student_lifetime() -> Duration {
        Duration::from_secs(7 * 24 * 3600)
    }
    pub fn other_lifetime() -> Duration {
        Duration::from_secs(24 * 3600)
    }
    pub fn body_limit() -> usize {
        8 * 1024 * 1024
    }
    pub fn cors_origins() -> Vec<String> {
        vec!["*".to_owned()]
    }
    pub fn log_buffer_lines() -> std::num::NonZeroUsize {
        std::num::NonZeroUsize::new(8192).unwrap_or(std::num::NonZeroUsize::MIN)
    }
    pub fn shutdown_grace() -> Duration {
        Duration::from_secs(10)
    }
    pub fn header_timeout() -> Duration {
        Duration::from_secs(30)
    }
    pub fn body_read_timeout() -> Duration {
        Duration::from_secs(15)
    }
    pub fn body_timeout() -> Duration {
        Duration::from_secs(60)
    }
    pub fn idle_timeout() -> Duration {
        Duration::from_secs(60)
    }
    pub fn h2_keepalive_interval() -> Duration {
        Duration::from_secs(30)
    }
    pub fn h2_keepalive_timeout() -> Duration {
        Duration::from_secs(10)
    }
    pub fn h2_max_concurrent_streams() -> u32 {
        100
    }
    pub fn max_header_bytes() -> usize {
        64 * 1024
    }
    pub fn max_headers() -> usize {
        100
    }
    pub fn fd_reserve() -> usize {
        128
    }
    pub fn max_connections_per_ip() -> usize {
        256
    }
    pub fn connect_timeout() -> Duration {
        Duration::from_secs(2)
    }
    pub fn read_try_timeout() -> Duration {
        Duration::from_secs(1)
    }
    pub fn deadline() -> Duration {
        Duration::from_secs(3)
    }
    pub fn log_level() -> String {
        "info".to_owned()
    }
    pub fn five() -> std::num::NonZeroU32 {
        std::num::NonZeroU32::MIN.saturating_add(4)
    }
    pub fn open_for() -> Duration {
        Duration::from_secs(60)
    }
    pub fn consul_address() -> String {
        "http://127.0.0.1:8500".to_owned()
    }
    pub fn consul_wait() -> Duration {
        Duration::from_secs(300)
    }
    pub fn consul_min_interval() -> Duration {
        Duration::from_millis(100)
    }
    pub fn consul_timeout() -> Duration {
        Duration::from_secs(5)
    }
    pub fn consul_max_backoff() -> Duration {
        Duration::from_secs(30)
    }
    pub fn consul_backoff_base() -> Duration {
        Duration::from_millis(100)
    }
    pub fn consul_probe_interval() -> Duration {
        Duration::from_millis(500)
    }
    pub fn consul_broadcast_delay() -> Duration {
        Duration::from_millis(200)
    }
    pub fn consul_broadcast_concurrency() -> usize {
        16
    }
    pub fn yes() -> bool {
        true
    }
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Parse(String),
    #[error("environment variable {var}: {reason}")]
    Env { var: String, reason: String },
    #[error("{key}: {reason}")]
    Invalid { key: String, reason: String },
}

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

/// A source of environment variables (the process, or a map in tests).
pub trait EnvSource {
    fn vars(&self) -> Vec<(String, String)>;
}

/// The process environment.
pub struct ProcessEnv;

impl EnvSource for ProcessEnv {
    fn vars(&self) -> Vec<(String, String)> {
        std::env::vars().collect()
    }
}

impl EnvSource for BTreeMap<String, String> {
    fn vars(&self) -> Vec<(String, String)> {
        self.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

// === impl Config ===

impl Config {
    /// Reads `path` (when given), applies overrides from `env`, and validates.
    pub fn load(path: Option<&Path>, env: &dyn EnvSource) -> Result<Self, ConfigError> {
        let text = match path {
            Some(path) => std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })?,
            None => String::new(),
        };
        Self::from_toml(&text, env)
    }

    /// Parses TOML text, applies overrides from `env`, and validates.
    pub fn from_toml(text: &str, env: &dyn EnvSource) -> Result<Self, ConfigError> {
        let mut table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError::Parse(e.to_string()))?;
        apply_env(&mut table, env)?;
        let config: Config = Config::deserialize(toml::Value::Table(table))
            .map_err(|e| ConfigError::Parse(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every value that serde cannot: secrets, addresses, limits.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Err((key, reason)) = self.overload.check() {
            return Err(invalid(key, reason));
        }
        match (&self.jwt.secret, &self.jwt.secret_file) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "jwt.secret",
                    "set either jwt.secret or jwt.secret_file, not both",
                ));
            }
            (None, None) => {
                return Err(invalid(
                    "jwt.secret",
                    "a secret is required (jwt.secret, jwt.secret_file or SMS_JWT__SECRET)",
                ));
            }
            (Some(secret), None) if secret.len() < 32 => {
                return Err(invalid("jwt.secret", "must be at least 32 bytes"));
            }
            _ => {}
        }
        if self.runtime.flavor == RuntimeFlavor::CurrentThread
            && self.runtime.worker_threads.is_some()
        {
            return Err(invalid(
                "runtime.worker_threads",
                "applies to runtime.flavor = \"multi_thread\" or \"thread_per_core\" only",
            ));
        }
        if self.http.body_limit == 0 {
            return Err(invalid("http.body_limit", "must be greater than 0"));
        }
        for (key, value) in [
            ("http.header_timeout", self.http.header_timeout),
            ("http.body_read_timeout", self.http.body_read_timeout),
            ("http.body_timeout", self.http.body_timeout),
            ("http.idle_timeout", self.http.idle_timeout),
            (
                "http.h2_keepalive_interval",
                self.http.h2_keepalive_interval,
            ),
            ("http.h2_keepalive_timeout", self.http.h2_keepalive_timeout),
        ] {
            if value.is_zero() {
                return Err(invalid(key, "must be greater than 0"));
            }
        }
        for (key, value) in [
            ("http.max_header_bytes", self.http.max_header_bytes),
            ("http.max_headers", self.http.max_headers),
            (
                "http.max_connections_per_ip",
                self.http.max_connections_per_ip,
            ),
            (
                "http.h2_max_concurrent_streams",
                self.http.h2_max_concurrent_streams as usize,
            ),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be greater than 0"));
            }
        }
        if self.http.max_connections == Some(0) {
            return Err(invalid("http.max_connections", "must be greater than 0"));
        }
        for origin in &self.http.cors_origins {
            if origin != "*" && http::HeaderValue::from_str(origin).is_err() {
                return Err(invalid(
                    "http.cors_origins",
                    format!("{origin:?} is not a valid origin"),
                ));
            }
        }
        for (key, value) in [
            ("upstream.deadline", self.upstream.deadline),
            ("upstream.connect_timeout", self.upstream.connect_timeout),
        ] {
            if value.is_zero() {
                return Err(invalid(key, "must be greater than 0"));
            }
        }
        self.guard
            .validate()
            .map_err(|e| invalid(e.key, e.reason))?;
        self.telemetry
            .validate()
            .map_err(|e| invalid("telemetry", e.to_string()))?;
        if self.breaker.open_for.is_zero() {
            return Err(invalid("breaker.open_for", "must be greater than 0"));
        }
        let consul = self.discovery.mode == DiscoveryMode::Consul;
        if consul {
            self.validate_consul()?;
        }
        for service in Service::ALL {
            let key = format!("upstream.services.{service}");
            let cfg = self
                .upstream
                .services
                .get(&service)
                .cloned()
                .unwrap_or_default();
            if !consul && cfg.addresses.is_empty() {
                return Err(invalid(
                    format!("{key}.addresses"),
                    "needs at least one address (or discovery.mode = \"consul\")",
                ));
            }
            for address in &cfg.addresses {
                check_address(address)
                    .map_err(|reason| invalid(format!("{key}.addresses"), reason))?;
            }
            if cfg.deadline.is_some_and(|d| d.is_zero()) {
                return Err(invalid(format!("{key}.deadline"), "must be greater than 0"));
            }
        }
        self.validate_cache()?;
        self.audit
            .validate()
            .map_err(|(key, reason)| invalid(key, reason))?;
        if self.admin.listen == self.listen && self.listen.port() != 0 {
            return Err(invalid(
                "admin.listen",
                "must differ from listen (the admin listener is off the public port)",
            ));
        }
        Ok(())
    }

    fn validate_consul(&self) -> Result<(), ConfigError> {
        let consul = &self.consul;
        if !(consul.address.starts_with("http://") || consul.address.starts_with("https://")) {
            return Err(invalid(
                "consul.address",
                "must start with http:// or https://",
            ));
        }
        if consul.wait.is_zero() || consul.wait > Duration::from_secs(600) {
            return Err(invalid("consul.wait", "must be between 1ms and 10m"));
        }
        if consul.request_timeout.is_zero() {
            return Err(invalid("consul.request_timeout", "must be greater than 0"));
        }
        if consul.token.is_some() && consul.token_file.is_some() {
            return Err(invalid(
                "consul.token",
                "set either consul.token or consul.token_file, not both",
            ));
        }
        if consul.backoff_base.is_zero() || consul.backoff_base > consul.max_backoff {
            return Err(invalid(
                "consul.backoff_base",
                "must be greater than 0 and at most consul.max_backoff",
            ));
        }
        if consul.probe_interval.is_zero() {
            return Err(invalid("consul.probe_interval", "must be greater than 0"));
        }
        if consul.broadcast_concurrency == 0 {
            return Err(invalid(
                "consul.broadcast_concurrency",
                "must be at least 1",
            ));
        }
        if consul.webhook_token.as_ref().is_some_and(|t| t.len() < 16) {
            return Err(invalid(
                "consul.webhook_token",
                "must be at least 16 characters",
            ));
        }
        Ok(())
    }

    /// The JWT secret bytes, reading `secret_file` when set.
    pub fn jwt_secret(&self) -> Result<Vec<u8>, ConfigError> {
        if let Some(secret) = &self.jwt.secret {
            return Ok(secret.as_bytes().to_vec());
        }
        let Some(path) = &self.jwt.secret_file else {
            return Err(invalid("jwt.secret", "missing"));
        };
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        let secret = text.trim();
        if secret.len() < 32 {
            return Err(invalid(
                "jwt.secret_file",
                "the secret must be at least 32 bytes",
            ));
        }
        Ok(secret.as_bytes().to_vec())
    }
}

/// `host:port` with a non-empty host and a valid port.
fn check_address(address: &str) -> Result<(), String> {
    let (host, port) = address
        .rsplit_once(':')
        .ok_or_else(|| format!("{address:?} is not host:port"))?;
    if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err(format!("{address:?} is not host:port"));
    }
    Ok(())
}

fn apply_env(table: &mut toml::Table, env: &dyn EnvSource) -> Result<(), ConfigError> {
    let mut vars = env.vars();
    vars.sort();
    for (var, raw) in vars {
        let Some(path) = var.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let keys: Vec<String> = path.split("__").map(str::to_ascii_lowercase).collect();
        if keys.iter().any(String::is_empty) {
            return Err(ConfigError::Env {
                var,
                reason: "empty key segment".into(),
            });
        }
        let value = parse_env_value(&raw);
        let (last, parents) = keys.split_last().ok_or_else(|| ConfigError::Env {
            var: var.clone(),
            reason: "no key".into(),
        })?;
        let mut node = &mut *table;
        for key in parents {
            let entry = node
                .entry(key.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            node = entry.as_table_mut().ok_or_else(|| ConfigError::Env {
                var: var.clone(),
                reason: format!("{key} is not a table"),
            })?;
        }
        node.insert(last.clone(), value);
    }
    Ok(())
}

fn parse_env_value(raw: &str) -> toml::Value {
    format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()))
}

// === Redis and the response cache ===

/// The Redis server the replicas share (response cache; the guard's cluster scope).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://[user:password@]host:port[/db]`. Unset (the default): no Redis; the
    /// response cache keeps its entries in process.
    pub url: Option<String>,
    /// Longest wait for one cache operation; past it the request is served from the
    /// backend without the cache (fail-open). Default 50ms.
    #[serde(default = "cache_defaults::redis_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Timeout of one connection attempt; the connection is re-established by itself.
    /// Default 1s.
    #[serde(
        default = "cache_defaults::redis_connect_timeout",
        with = "humantime_serde"
    )]
    pub connect_timeout: Duration,
    /// After a failed or slow operation, leave Redis alone for this long (requests
    /// bypass the cache at once), so an outage costs one timeout per pause, not one per
    /// request. Default 1s.
    #[serde(default = "cache_defaults::redis_pause", with = "humantime_serde")]
    pub pause_after_failure: Duration,
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password (decision 11).
        f.debug_struct("RedisConfig")
            .field("url", &self.url.as_ref().map(|_| "<set>"))
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("pause_after_failure", &self.pause_after_failure)
            .finish()
    }
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: None,
            timeout: cache_defaults::redis_timeout(),
            connect_timeout: cache_defaults::redis_connect_timeout(),
            pause_after_failure: cache_defaults::redis_pause(),
        }
    }
}

/// The response cache of the read endpoints.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// Cache reads at all. Default true.
    #[serde(default = "defaults::yes")]
    pub enabled: bool,
    /// How long an entry is served as fresh (decision 19). Default 60s.
    #[serde(default = "cache_defaults::ttl", with = "humantime_serde")]
    pub ttl: Duration,
    /// How long past its TTL an entry may still be served, marked `X-Cache: STALE`,
    /// when the backend fails (503, 408, breaker open). Default 10m.
    #[serde(default = "cache_defaults::max_stale", with = "humantime_serde")]
    pub max_stale: Duration,
    /// Serve stale entries of shared endpoints (same answer for every caller).
    /// Default true.
    #[serde(default = "defaults::yes")]
    pub stale_for_shared: bool,
    /// Serve stale entries of per-caller endpoints. Default false.
    #[serde(default)]
    pub stale_for_per_user: bool,
    /// Least time between two warnings about Redis failures. Default 10s.
    #[serde(default = "cache_defaults::warn_interval", with = "humantime_serde")]
    pub warn_interval: Duration,
    /// Bytes of entries (keys and bodies) kept in process: by the memory store, or by
    /// the near layer in front of Redis. Default 64 MiB.
    #[serde(default = "cache_defaults::memory_limit")]
    pub memory_limit: u64,
    /// With Redis: also keep entries in process, in front of Redis, so a hit needs no
    /// round trip; other replicas' writes reach it through pub/sub (a short delay).
    /// Default false: every lookup asks Redis, so a write through one replica is seen
    /// by the next read through any other.
    #[serde(default)]
    pub near: bool,
    /// Redis pub/sub channel of invalidations (read by near layers). Default
    /// `sms-gateway:cache:invalidations`.
    #[serde(default = "cache_defaults::channel")]
    pub channel: String,
    /// Prefix of every Redis key the cache writes. Default `sms-gateway:cache:`.
    #[serde(default = "cache_defaults::key_prefix")]
    pub key_prefix: String,
    /// Per cached endpoint, by endpoint id (e.g. `[cache.endpoints."schedule.time_tables"]`).
    #[serde(default)]
    pub endpoints: BTreeMap<String, EndpointCacheConfig>,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            ttl: cache_defaults::ttl(),
            max_stale: cache_defaults::max_stale(),
            stale_for_shared: true,
            stale_for_per_user: false,
            warn_interval: cache_defaults::warn_interval(),
            memory_limit: cache_defaults::memory_limit(),
            near: false,
            channel: cache_defaults::channel(),
            key_prefix: cache_defaults::key_prefix(),
            endpoints: BTreeMap::new(),
        }
    }
}

/// Overrides for one cached endpoint.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointCacheConfig {
    /// Its TTL; default `cache.ttl`.
    #[serde(default, with = "humantime_serde")]
    pub ttl: Option<Duration>,
    /// Whether its stale entries are served; default by its scope
    /// (`cache.stale_for_shared` / `cache.stale_for_per_user`).
    pub serve_stale: Option<bool>,
}

mod cache_defaults {
    use std::time::Duration;

    pub fn redis_timeout() -> Duration {
        Duration::from_millis(50)
    }
    pub fn redis_connect_timeout() -> Duration {
        Duration::from_secs(1)
    }
    pub fn redis_pause() -> Duration {
        Duration::from_secs(1)
    }
    pub fn ttl() -> Duration {
        Duration::from_secs(60)
    }
    pub fn max_stale() -> Duration {
        Duration::from_secs(600)
    }
    pub fn warn_interval() -> Duration {
        Duration::from_secs(10)
    }
    pub fn memory_limit() -> u64 {
        64 * 1024 * 1024
    }
    pub fn channel() -> String {
        "sms-gateway:cache:invalidations".to_owned()
    }
    pub fn key_prefix() -> String {
        "sms-gateway:cache:".to_owned()
    }
}

impl Config {
    /// Checks the `redis` and `cache` sections.
    fn validate_cache(&self) -> Result<(), ConfigError> {
        let (redis, cache) = (&self.redis, &self.cache);
        if let Some(url) = &redis.url {
            redis::Client::open(url.as_str())
                .map_err(|e| invalid("redis.url", format!("not a usable Redis URL: {e}")))?;
        }
        for (key, value) in [
            ("redis.timeout", redis.timeout),
            ("redis.connect_timeout", redis.connect_timeout),
            ("cache.ttl", cache.ttl),
        ] {
            if value.is_zero() {
                return Err(invalid(key, "must be greater than 0"));
            }
        }
        if cache.memory_limit == 0 {
            return Err(invalid("cache.memory_limit", "must be greater than 0"));
        }
        if cache.near && redis.url.is_none() {
            return Err(invalid("cache.near", "needs redis.url"));
        }
        for (key, value) in [
            ("cache.key_prefix", &cache.key_prefix),
            ("cache.channel", &cache.channel),
        ] {
            if value.is_empty() || value.chars().any(char::is_whitespace) {
                return Err(invalid(key, "must be non-empty, without whitespace"));
            }
        }
        if cache.endpoints.is_empty() {
            return Ok(());
        }
        let table = crate::endpoints::table();
        for (id, overrides) in &cache.endpoints {
            let key = format!("cache.endpoints.{id:?}");
            if !table.iter().any(|ep| ep.id == id && ep.cache.is_some()) {
                return Err(invalid(key, "names no cached endpoint"));
            }
            if overrides.ttl.is_some_and(|ttl| ttl.is_zero()) {
                return Err(invalid(format!("{key}.ttl"), "must be greater than 0"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn minimal() -> String {
        let mut text = format!("[jwt]\nsecret = \"{SECRET}\"\n");
        for service in Service::ALL {
            text.push_str(&format!(
                "[upstream.services.{service}]\naddresses = [\"127.0.0.1:5000\"]\n"
            ));
        }
        text
    }

    fn no_env() -> BTreeMap<String, String> {
        BTreeMap::new()
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let config = Config::from_toml(&minimal(), &no_env()).expect("valid");
        assert_eq!(config.upstream.deadline, Duration::from_secs(3));
        assert_eq!(config.jwt.algorithm, JwtAlgorithm::HS512);
        assert_eq!(config.http.cors_origins, vec!["*"]);
    }

    #[test]
    fn env_overrides_nested_keys_with_typed_values() {
        let env = BTreeMap::from([
            (
                "SMS_UPSTREAM__SERVICES__AUTH__ADDRESSES".to_owned(),
                r#"["10.0.0.1:1", "10.0.0.2:2"]"#.to_owned(),
            ),
            (
                "SMS_UPSTREAM__SERVICES__AUTH__DEADLINE".to_owned(),
                "6s".to_owned(),
            ),
            ("SMS_HTTP__BODY_LIMIT".to_owned(), "1024".to_owned()),
            ("OTHER".to_owned(), "ignored".to_owned()),
        ]);
        let config = Config::from_toml(&minimal(), &env).expect("valid");
        let auth = &config.upstream.services[&Service::Auth];
        assert_eq!(auth.addresses, vec!["10.0.0.1:1", "10.0.0.2:2"]);
        assert_eq!(auth.deadline, Some(Duration::from_secs(6)));
        assert_eq!(config.http.body_limit, 1024);
    }

    #[test]
    fn errors_name_the_bad_key() {
        let cases = [
            (minimal().replace(SECRET, "short"), "jwt.secret"),
            (minimal().replace("127.0.0.1:5000", "nope"), "addresses"),
            (
                format!("{}\n[http]\nbody_limt = 3\n", minimal()),
                "body_limt",
            ),
            (
                format!("{}\n[upstream]\ndeadline = \"soon\"\n", minimal()),
                "deadline",
            ),
            (
                minimal().replace(
                    "[upstream.services.club]\naddresses = [\"127.0.0.1:5000\"]\n",
                    "",
                ),
                "upstream.services.club",
            ),
            (
                minimal().replace("[jwt]", "[jwt]\nalgorithm = \"none\""),
                "algorithm",
            ),
        ];
        for (text, key) in cases {
            let err = Config::from_toml(&text, &no_env())
                .expect_err(key)
                .to_string();
            assert!(err.contains(key), "{key}: {err}");
        }
    }
}

#[cfg(test)]
mod example_tests {
    use super::*;

    #[test]
    fn the_example_config_is_valid() {
        let text = include_str!("../config/example.toml");
        Config::from_toml(text, &BTreeMap::<String, String>::new())
            .expect("config/example.toml is valid");
    }
}

#[cfg(test)]
mod cache_config_tests {
    use super::*;

    fn minimal() -> String {
        let mut text = "[jwt]\nsecret = \"0123456789abcdef0123456789abcdef\"\n".to_owned();
        for service in Service::ALL {
            text.push_str(&format!(
                "[upstream.services.{service}]\naddresses = [\"127.0.0.1:5000\"]\n"
            ));
        }
        text
    }

    fn load(extra: &str) -> Result<Config, ConfigError> {
        Config::from_toml(
            &format!("{}{extra}", minimal()),
            &BTreeMap::<String, String>::new(),
        )
    }

    #[test]
    fn defaults_cache_in_process_for_a_minute() {
        let config = load("").expect("valid");
        assert!(config.redis.url.is_none());
        assert_eq!(config.redis.timeout, Duration::from_millis(50));
        assert!(config.cache.enabled);
        assert!(!config.cache.near);
        assert_eq!(config.cache.ttl, Duration::from_secs(60));
        assert_eq!(config.cache.max_stale, Duration::from_secs(600));
        assert!(config.cache.stale_for_shared && !config.cache.stale_for_per_user);
    }

    #[test]
    fn sections_parse_with_per_endpoint_overrides() {
        let config = load(
            r#"
[redis]
url = "redis://:secret@127.0.0.1:6379/2"
timeout = "20ms"
[cache]
ttl = "30s"
near = true
[cache.endpoints."schedule.time_tables"]
ttl = "24h"
serve_stale = true
"#,
        )
        .expect("valid");
        assert_eq!(config.redis.timeout, Duration::from_millis(20));
        let table = &config.cache.endpoints["schedule.time_tables"];
        assert_eq!(table.ttl, Some(Duration::from_secs(24 * 3600)));
        assert_eq!(table.serve_stale, Some(true));
        assert!(!format!("{:?}", config.redis).contains("secret"));
    }

    #[test]
    fn errors_name_the_bad_key() {
        let cases = [
            ("[redis]\nurl = \"http://127.0.0.1\"\n", "redis.url"),
            ("[redis]\ntimeout = \"0s\"\n", "redis.timeout"),
            ("[cache]\nnear = true\n", "cache.near"),
            ("[cache]\nttl = \"0s\"\n", "cache.ttl"),
            ("[cache]\nkey_prefix = \"a b\"\n", "cache.key_prefix"),
            ("[cache]\ntll = \"1s\"\n", "tll"),
            (
                "[cache.endpoints.\"outing.nope\"]\nttl = \"1s\"\n",
                "cache.endpoints.\"outing.nope\"",
            ),
            (
                "[cache.endpoints.\"schedule.create\"]\nttl = \"1s\"\n",
                "cache.endpoints.\"schedule.create\"",
            ),
            (
                "[cache.endpoints.\"schedule.by_month\"]\nttl = \"0s\"\n",
                "cache.endpoints.\"schedule.by_month\".ttl",
            ),
        ];
        for (extra, key) in cases {
            let err = load(extra).expect_err(key).to_string();
            assert!(err.contains(key), "{key}: {err}");
        }
    }

    #[test]
    fn the_runtime_flavour_is_chosen_and_checked() {
        assert_eq!(
            load("").expect("valid").runtime.flavor,
            RuntimeFlavor::ThreadPerCore
        );
        let current = load("[runtime]\nflavor = \"current_thread\"\n").expect("valid");
        assert_eq!(current.runtime.flavor, RuntimeFlavor::CurrentThread);
        let workers =
            load("[runtime]\nflavor = \"multi_thread\"\nworker_threads = 1\n").expect("valid");
        assert_eq!(
            workers.runtime.worker_threads.map(NonZeroUsize::get),
            Some(1)
        );
        let per_core =
            load("[runtime]\nflavor = \"thread_per_core\"\nworker_threads = 3\n").expect("valid");
        assert_eq!(per_core.runtime.flavor, RuntimeFlavor::ThreadPerCore);
        assert_eq!(per_core.runtime.lanes(), 3);
        assert_eq!(workers.runtime.lanes(), 1, "multi_thread shares one lane");
        let err = load("[runtime]\nflavor = \"current_thread\"\nworker_threads = 2\n")
            .expect_err("both")
            .to_string();
        assert!(err.contains("runtime.worker_threads"), "{err}");
    }
}
