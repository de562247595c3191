//! Login throttling: failed logins are counted per (account, client address) and per
//! account; past a limit the account (from that address, or from everywhere) gets 429
//! with `Retry-After` for a lockout that doubles with every further lock, and the
//! backend is not called. A successful login resets both counts.
//!
//! Two scopes with different strength, so that an attacker guessing from one address
//! cannot lock the real user out:
//! - `account_ip` (default 10 failures within 10 minutes): locks only that address out
//!   of that account, 1 minute, then 2, 4, ... up to 1 hour while failures go on;
//! - `account` (default 50 failures within 10 minutes, from any addresses): locks the
//!   account for everyone, 1 minute doubling up to 15 minutes. One address cannot get
//!   there: the `account_ip` lockouts let it fail at most 10 + 10 + 10 + 10 = 40 times in
//!   10 minutes. Only a spread attack can lock the account, for at most
//!   `account.max_lockout` at a time, and the real user then sees 429 with
//!   `Retry-After`.
//!
//! A count lives for its window from its first failure (a fixed window), a lock's
//! strike count until one window after the lock ends; then everything is forgotten.
//!
//! With the guard's scope `cluster` the counts live in Redis (one atomic script per
//! decision, so every replica sees the same counts); a slow or failed Redis falls
//! back to this replica's table within `guard.cluster.timeout`, so Redis trouble never
//! refuses a login. The local table is bounded (`max_tracked`); when full, new
//! accounts are not counted until idle entries expire (a warning is logged).
//!
//! [`LoginThrottle::settle`] is the one place that learns how a login attempt ended.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use serde::Deserialize;

use super::clock::{GuardClock, millis};
use super::cluster::Cluster;
use super::ip_table::IpKey;
use super::log_every::LogEvery;
use crate::audit::Audit;
use crate::http::GatewayError;
use crate::telemetry::Metrics;
use crate::telemetry::metrics::ScopeLabels;

/// Longest account id kept in a key: longer ids share the throttle of their first
/// 128 characters (harmless, and it bounds keys).
const MAX_ID_CHARS: usize = 128;
/// Independently locked parts of the local table.
const SHARDS: usize = 16;

/// `[guard.login]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginConfig {
    /// Whether logins are throttled at all. Default true.
    #[serde(default = "defaults::yes")]
    pub enabled: bool,
    /// Failures of one account from one client address (IPv6 per the guard's
    /// `ip.ipv6_prefix`). Default 10 in 10m, lockout 1m doubling up to 1h.
    #[serde(default = "defaults::account_ip")]
    pub account_ip: LoginLimit,
    /// Failures of one account from all addresses; keep it well above `account_ip`
    /// (see the module documentation). Default 50 in 10m, lockout 1m doubling up to 15m.
    #[serde(default = "defaults::account")]
    pub account: LoginLimit,
    /// Most entries of each scope kept in this process (about 100 bytes each).
    /// Default 100000.
    #[serde(default = "defaults::max_tracked")]
    pub max_tracked: usize,
}

impl Default for LoginConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            account_ip: defaults::account_ip(),
            account: defaults::account(),
            max_tracked: defaults::max_tracked(),
        }
    }
}

/// One scope's numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginLimit {
    /// Failures within `window` that start a lockout.
    pub failures: u32,
    /// The window, counted from its first failure.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// The first lockout; each further one doubles it.
    #[serde(with = "humantime_serde")]
    pub lockout: Duration,
    /// The longest lockout.
    #[serde(with = "humantime_serde")]
    pub max_lockout: Duration,
}

impl LoginConfig {
    /// `(key, reason)` of the first unusable value.
    pub fn check(&self) -> Result<(), (String, &'static str)> {
        for (name, limit) in [("account_ip", self.account_ip), ("account", self.account)] {
            let key = |field: &str| format!("guard.login.{name}.{field}");
            if limit.failures == 0 {
                return Err((key("failures"), "must be at least 1"));
            }
            if limit.window < Duration::from_millis(1) || limit.window > Duration::from_secs(86_400)
            {
                return Err((key("window"), "must be between 1ms and 24h"));
            }
            if limit.lockout < Duration::from_millis(1) {
                return Err((key("lockout"), "must be at least 1ms"));
            }
            if limit.max_lockout < limit.lockout || limit.max_lockout > Duration::from_secs(86_400)
            {
                return Err((key("max_lockout"), "must be between lockout and 24h"));
            }
        }
        if self.max_tracked == 0 {
            return Err(("guard.login.max_tracked".to_owned(), "must be at least 1"));
        }
        Ok(())
    }
}

/// Which count refused a login (the `scope` label of the metric).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginScope {
    AccountIp,
    Account,
}

impl LoginScope {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AccountIp => "account_ip",
            Self::Account => "account",
        }
    }
}

/// One login attempt: the account it names and where it comes from.
#[derive(Debug, Clone)]
pub struct LoginAttempt {
    /// The account kind of the route (`student`, `teacher`, `parent`, `admin`): ids of
    /// different kinds are different accounts; both teacher routes share one count.
    pub kind: &'static str,
    /// The login id as sent, trimmed, lower-cased and cut to 128 characters.
    pub account: String,
    /// The client address (the guard's client-IP rules); `None` when unknown.
    pub client: Option<IpAddr>,
}

impl LoginAttempt {
    /// The attempt of `client` on account `id` of `kind`.
    pub fn new(kind: &'static str, id: &str, client: Option<IpAddr>) -> Self {
        let account = id
            .trim()
            .chars()
            .take(MAX_ID_CHARS)
            .flat_map(char::to_lowercase)
            .collect();
        Self {
            kind,
            account,
            client,
        }
    }
}

/// How a login attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginOutcome {
    /// The backend accepted the credentials.
    Succeeded,
    /// The backend refused them: unknown id or wrong password.
    Failed,
    /// Refused by the throttle before the backend was asked.
    Throttled(LoginScope),
    /// Anything else (backend unavailable, slow, ...): counts for nothing.
    Undecided,
}

/// The backend's in-band codes for refused credentials (api-auth-club.md §6, auth.go):
/// unknown id or wrong password of each kind, and a PICK account mismatch. A teacher
/// account that is not certified yet (-413) is not a guess.
const CREDENTIAL_FAILURES: [i32; 9] = [-401, -402, -411, -412, -414, -421, -422, -431, -432];

impl LoginOutcome {
    /// The outcome of a login call.
    pub fn of<T>(result: &Result<T, GatewayError>) -> Self {
        match result {
            Ok(_) => Self::Succeeded,
            Err(GatewayError::Relayed { status, code, .. })
                if status.as_u16() == 409 && CREDENTIAL_FAILURES.contains(code) =>
            {
                Self::Failed
            }
            Err(_) => Self::Undecided,
        }
    }
}

/// One scope's rule in milliseconds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LoginRule {
    pub(crate) failures: u32,
    pub(crate) window_ms: u64,
    pub(crate) lockout_ms: u64,
    pub(crate) max_lockout_ms: u64,
}

impl From<LoginLimit> for LoginRule {
    fn from(limit: LoginLimit) -> Self {
        Self {
            failures: limit.failures.max(1),
            window_ms: millis(limit.window).max(1),
            lockout_ms: millis(limit.lockout).max(1),
            max_lockout_ms: millis(limit.max_lockout).max(1),
        }
    }
}

/// One key's state: failures in the window ending at `window_end`, the lock's end,
/// and the strikes (lockouts in a row) that double the next lockout. All times are
/// guard-clock milliseconds. The Redis script keeps the same four fields.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Entry {
    failures: u32,
    window_end: u64,
    strikes: u32,
    locked_until: u64,
}

impl LoginRule {
    /// Counts one failure at `now`; `Some(lockout)` when it starts a lock.
    fn fail(&self, entry: &mut Entry, now: u64) -> Option<u64> {
        if now >= entry.window_end {
            entry.failures = 0;
            entry.window_end = now.saturating_add(self.window_ms);
        }
        entry.failures = entry.failures.saturating_add(1);
        if entry.failures < self.failures {
            return None;
        }
        entry.strikes = entry.strikes.saturating_add(1);
        let doubling = 1u64 << (entry.strikes - 1).min(40);
        let lockout = self
            .lockout_ms
            .saturating_mul(doubling)
            .min(self.max_lockout_ms);
        entry.locked_until = now.saturating_add(lockout);
        // Failures after the lock start a fresh window.
        entry.failures = 0;
        entry.window_end = 0;
        Some(lockout)
    }

    /// Whether the entry still matters at `now`.
    fn live(&self, entry: &Entry, now: u64) -> bool {
        now < entry.window_end || now < entry.locked_until.saturating_add(self.window_ms)
    }
}

/// A bounded, sharded table of one scope's entries, keyed by a randomly keyed hash
/// (a 64-bit collision only merges two counts).
struct Table {
    shards: Box<[Mutex<HashMap<u64, Entry>>]>,
    hasher: RandomState,
    rule: LoginRule,
    per_shard_cap: usize,
}

impl Table {
    fn new(rule: LoginRule, max_tracked: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            rule,
            per_shard_cap: max_tracked.div_ceil(SHARDS).max(1),
        }
    }

    fn key(&self, key: &impl std::hash::Hash) -> u64 {
        self.hasher.hash_one(key)
    }

    fn shard(&self, key: u64) -> std::sync::MutexGuard<'_, HashMap<u64, Entry>> {
        // The shard count is a small power of two, so the cast is exact.
        self.shards[(key % SHARDS as u64) as usize]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The time left of the key's lock.
    fn locked(&self, key: u64, now: u64) -> Option<u64> {
        let until = self.shard(key).get(&key)?.locked_until;
        (until > now).then(|| until - now)
    }

    /// Counts a failure; `Err(())` when the table is full and the key untracked.
    fn fail(&self, key: u64, now: u64) -> Result<Option<u64>, ()> {
        let mut shard = self.shard(key);
        if shard.len() >= self.per_shard_cap && !shard.contains_key(&key) {
            shard.retain(|_, entry| self.rule.live(entry, now));
            if shard.len() >= self.per_shard_cap {
                return Err(());
            }
        }
        let entry = shard.entry(key).or_default();
        if !self.rule.live(entry, now) {
            *entry = Entry::default();
        }
        Ok(self.rule.fail(entry, now))
    }

    /// Records a lock decided by Redis, so this replica keeps answering it without a
    /// round trip (and through a Redis outage).
    fn mirror(&self, key: u64, now: u64, lockout: u64) {
        let mut shard = self.shard(key);
        if shard.len() < self.per_shard_cap || shard.contains_key(&key) {
            let entry = shard.entry(key).or_default();
            entry.locked_until = entry.locked_until.max(now.saturating_add(lockout));
        }
    }

    fn reset(&self, key: u64) {
        self.shard(key).remove(&key);
    }

    fn len(&self) -> usize {
        (0..SHARDS)
            .map(|i| {
                self.shards[i]
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .len()
            })
            .sum()
    }
}

/// The login throttle of one gateway process.
pub struct LoginThrottle {
    enabled: bool,
    ipv6_prefix: u8,
    account_ip: Table,
    account: Table,
    cluster: Option<Arc<Cluster>>,
    clock: GuardClock,
    full_warning: LogEvery,
    throttled: OnceLock<[Counter; 2]>,
    audit: OnceLock<Arc<Audit>>,
}

impl std::fmt::Debug for LoginThrottle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginThrottle")
            .field("enabled", &self.enabled)
            .field("account_ip", &self.account_ip.rule)
            .field("account", &self.account.rule)
            .field("shared", &self.cluster.is_some())
            .finish_non_exhaustive()
    }
}

impl LoginThrottle {
    pub(crate) fn new(
        config: &LoginConfig,
        ipv6_prefix: u8,
        cluster: Option<Arc<Cluster>>,
        clock: GuardClock,
        warn_interval: Duration,
    ) -> Self {
        Self {
            enabled: config.enabled,
            ipv6_prefix,
            account_ip: Table::new(config.account_ip.into(), config.max_tracked),
            account: Table::new(config.account.into(), config.max_tracked),
            cluster,
            clock,
            full_warning: LogEvery::new(millis(warn_interval)),
            throttled: OnceLock::new(),
            audit: OnceLock::new(),
        }
    }

    /// Counts refusals in `metrics` (`sms_gateway_login_throttled_total{scope}`).
    pub fn count_in(&self, metrics: &Metrics) {
        let _first = self
            .throttled
            .set([LoginScope::AccountIp, LoginScope::Account].map(|scope| {
                metrics
                    .login_throttled
                    .get_or_create(&ScopeLabels {
                        scope: scope.as_str(),
                    })
                    .clone()
            }));
    }

    /// Writes every refusal to `audit` (kind `login_throttled`).
    pub fn audit_to(&self, audit: Arc<Audit>) {
        let _already_set = self.audit.set(audit);
    }

    /// Whether `attempt` may reach the backend: `Err` is 429 with `Retry-After`.
    pub async fn admit(&self, attempt: &LoginAttempt) -> Result<(), GatewayError> {
        if !self.enabled {
            return Ok(());
        }
        let keys = self.keys(attempt);
        let now = self.clock.now_ms();
        let local = [
            self.account_ip.locked(keys.account_ip, now),
            self.account.locked(keys.account, now),
        ];
        let locked = match (&self.cluster, local) {
            (_, [Some(ms), _]) => Some((LoginScope::AccountIp, ms)),
            (_, [None, Some(ms)]) => Some((LoginScope::Account, ms)),
            // Redis failing (`None`) leaves the local answer, which is "not locked".
            (Some(cluster), [None, None]) => cluster.login_locked(&keys.redis).await.flatten(),
            (None, [None, None]) => None,
        };
        let Some((scope, ms)) = locked else {
            return Ok(());
        };
        self.settle(attempt, LoginOutcome::Throttled(scope)).await;
        Err(GatewayError::LoginThrottled {
            retry_after: Duration::from_millis(ms),
        })
    }

    /// How a login attempt ended: the one place that learns it (the throttle's counts
    /// and metric; an audit event belongs here too).
    pub async fn settle(&self, attempt: &LoginAttempt, outcome: LoginOutcome) {
        if !self.enabled {
            return;
        }
        match outcome {
            LoginOutcome::Succeeded => self.reset(attempt).await,
            LoginOutcome::Failed => self.fail(attempt).await,
            LoginOutcome::Throttled(scope) => {
                if let Some(counters) = self.throttled.get() {
                    counters[scope as usize].inc();
                }
                tracing::info!(
                    kind = attempt.kind,
                    scope = scope.as_str(),
                    "login refused by the login throttle"
                );
                if let Some(audit) = self.audit.get() {
                    audit.login_throttled(attempt.client, &attempt.account, scope.as_str());
                }
            }
            LoginOutcome::Undecided => {}
        }
    }

    async fn fail(&self, attempt: &LoginAttempt) {
        let keys = self.keys(attempt);
        let now = self.clock.now_ms();
        if let Some(cluster) = &self.cluster
            && let Some([ip_lock, account_lock]) = cluster
                .login_failed(&keys.redis, [&self.account_ip.rule, &self.account.rule])
                .await
        {
            // Locks decided by Redis are mirrored, so a locked-out flood costs Redis
            // nothing and outlives an outage.
            for (table, key, lock) in [
                (&self.account_ip, keys.account_ip, ip_lock),
                (&self.account, keys.account, account_lock),
            ] {
                if lock > 0 {
                    table.mirror(key, now, lock);
                }
            }
            return;
        }
        for (table, key) in [
            (&self.account_ip, keys.account_ip),
            (&self.account, keys.account),
        ] {
            if table.fail(key, now).is_err()
                && let Some(held_back) = self.full_warning.ready(now)
            {
                tracing::warn!(
                    held_back,
                    "login throttle table is full: new accounts are not counted until idle ones expire"
                );
            }
        }
    }

    async fn reset(&self, attempt: &LoginAttempt) {
        let keys = self.keys(attempt);
        self.account_ip.reset(keys.account_ip);
        self.account.reset(keys.account);
        if let Some(cluster) = &self.cluster {
            cluster.login_reset(&keys.redis).await;
        }
    }

    fn keys(&self, attempt: &LoginAttempt) -> Keys {
        let client = attempt.client.map(|ip| IpKey::new(ip, self.ipv6_prefix));
        let account = (attempt.kind, attempt.account.as_str());
        let redis = self.cluster.as_ref().map_or_else(Default::default, |_| {
            let id: String = form_urlencoded::byte_serialize(attempt.account.as_bytes()).collect();
            let account = format!("login:{}:{id}", attempt.kind);
            let at = client.map_or_else(|| "unknown".to_owned(), |k| k.label(self.ipv6_prefix));
            [format!("{account}@{at}"), account]
        });
        Keys {
            account_ip: self.account_ip.key(&(account, client)),
            account: self.account.key(&account),
            redis,
        }
    }

    /// Entries in the local tables (both scopes).
    pub fn tracked(&self) -> usize {
        self.account_ip.len() + self.account.len()
    }
}

/// The keys of one attempt: local hashes, and the Redis key suffixes
/// `[account_ip, account]` (empty without Redis).
struct Keys {
    account_ip: u64,
    account: u64,
    redis: [String; 2],
}

mod defaults {
    use std::time::Duration;

    use super::LoginLimit;

    pub fn yes() -> bool {
        true
    }
    pub fn account_ip() -> LoginLimit {
        LoginLimit {
            failures: 10,
            window: Duration::from_secs(600),
            lockout: Duration::from_secs(60),
            max_lockout: Duration::from_secs(3600),
        }
    }
    pub fn account() -> LoginLimit {
        LoginLimit {
            failures: 50,
            window: Duration::from_secs(600),
            lockout: Duration::from_secs(60),
            max_lockout: Duration::from_secs(900),
        }
    }
    pub fn max_tracked() -> usize {
        100_000
    }
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;

    use super::*;

    fn throttle(config: &LoginConfig) -> LoginThrottle {
        LoginThrottle::new(config, 64, None, GuardClock::new(), Duration::from_secs(10))
    }

    fn attempt(id: &str, ip: &str) -> LoginAttempt {
        LoginAttempt::new("student", id, Some(ip.parse().expect("ip")))
    }

    async fn fail_times(throttle: &LoginThrottle, attempt: &LoginAttempt, n: usize) {
        for _ in 0..n {
            throttle.admit(attempt).await.expect("admitted");
            throttle.settle(attempt, LoginOutcome::Failed).await;
        }
    }

    fn retry_secs(err: &GatewayError) -> u64 {
        match err {
            GatewayError::LoginThrottled { retry_after } => retry_after.as_secs(),
            other => panic!("not throttled: {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn ten_failures_lock_the_address_out_with_a_doubling_lockout() {
        let throttle = throttle(&LoginConfig::default());
        let attacker = attempt("demostudent", "198.51.100.7");
        fail_times(&throttle, &attacker, 10).await;
        let err = throttle.admit(&attacker).await.expect_err("locked");
        assert_eq!(err.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(retry_secs(&err), 60);
        // The real user from elsewhere is not locked out.
        let user = attempt("demostudent", "203.0.113.1");
        throttle.admit(&user).await.expect("other address");
        // Case and surrounding spaces name the same account.
        assert!(
            throttle
                .admit(&attempt(" DemoStudent ", "198.51.100.7"))
                .await
                .is_err()
        );
        // After the lockout, 10 more failures lock for twice as long.
        tokio::time::advance(Duration::from_secs(60)).await;
        fail_times(&throttle, &attacker, 10).await;
        assert_eq!(
            retry_secs(&throttle.admit(&attacker).await.expect_err("locked")),
            120
        );
        tokio::time::advance(Duration::from_secs(120)).await;
        fail_times(&throttle, &attacker, 10).await;
        assert_eq!(
            retry_secs(&throttle.admit(&attacker).await.expect_err("locked")),
            240
        );
    }

    #[tokio::test(start_paused = true)]
    async fn one_address_can_never_lock_the_account_for_others() {
        let throttle = throttle(&LoginConfig::default());
        let attacker = attempt("victim", "198.51.100.7");
        let user = attempt("victim", "203.0.113.1");
        // An hour of guessing as fast as the locks allow.
        for _ in 0..3600 {
            if throttle.admit(&attacker).await.is_ok() {
                throttle.settle(&attacker, LoginOutcome::Failed).await;
            }
            throttle
                .admit(&user)
                .await
                .expect("the user is never locked out");
            tokio::time::advance(Duration::from_secs(1)).await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_spread_attack_locks_the_account_for_at_most_its_window() {
        let throttle = throttle(&LoginConfig::default());
        for n in 0..50u32 {
            let from = attempt("victim", &format!("198.51.100.{}", n % 10 + 1));
            fail_times(&throttle, &from, 1).await;
        }
        let user = attempt("victim", "203.0.113.1");
        let err = throttle.admit(&user).await.expect_err("account locked");
        assert_eq!(retry_secs(&err), 60);
        tokio::time::advance(Duration::from_secs(60)).await;
        throttle.admit(&user).await.expect("the lock ended");
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_resets_and_old_failures_are_forgotten() {
        let throttle = throttle(&LoginConfig::default());
        let user = attempt("demostudent", "198.51.100.7");
        fail_times(&throttle, &user, 9).await;
        throttle.settle(&user, LoginOutcome::Succeeded).await;
        fail_times(&throttle, &user, 9).await;
        throttle.admit(&user).await.expect("reset by the success");
        // Past the window, the count starts again.
        tokio::time::advance(Duration::from_secs(600)).await;
        fail_times(&throttle, &user, 9).await;
        throttle.admit(&user).await.expect("a new window");
        // Undecided outcomes count for nothing.
        for _ in 0..20 {
            throttle.settle(&user, LoginOutcome::Undecided).await;
        }
        throttle.admit(&user).await.expect("not counted");
    }

    #[tokio::test(start_paused = true)]
    async fn memory_is_bounded() {
        let config = LoginConfig {
            max_tracked: 64,
            ..LoginConfig::default()
        };
        let throttle = throttle(&config);
        for n in 0..10_000 {
            throttle
                .settle(
                    &attempt(&format!("user{n}"), "198.51.100.7"),
                    LoginOutcome::Failed,
                )
                .await;
        }
        assert!(throttle.tracked() <= 2 * 64, "{}", throttle.tracked());
        // Once the entries are idle, new accounts are counted again.
        tokio::time::advance(Duration::from_secs(601)).await;
        let late = attempt("late", "198.51.100.7");
        fail_times(&throttle, &late, 10).await;
        assert!(throttle.admit(&late).await.is_err());
    }

    #[test]
    fn outcomes_are_classified_by_the_backend_codes() {
        let relayed = |status: u16, code: i32| -> Result<(), GatewayError> {
            Err(GatewayError::Relayed {
                status: StatusCode::from_u16(status).expect("status"),
                code,
                message: String::new(),
            })
        };
        assert_eq!(
            LoginOutcome::of(&Ok::<(), GatewayError>(())),
            LoginOutcome::Succeeded
        );
        for code in CREDENTIAL_FAILURES {
            assert_eq!(LoginOutcome::of(&relayed(409, code)), LoginOutcome::Failed);
        }
        assert_eq!(
            LoginOutcome::of(&relayed(409, -413)),
            LoginOutcome::Undecided
        );
        assert_eq!(
            LoginOutcome::of(&relayed(500, -402)),
            LoginOutcome::Undecided
        );
        let deadline: Result<(), GatewayError> = Err(GatewayError::Deadline {
            rpc: "LoginStudentAuth",
            sent: true,
        });
        assert_eq!(LoginOutcome::of(&deadline), LoginOutcome::Undecided);
    }

    #[test]
    fn config_defaults_and_checks() {
        let config: LoginConfig = toml::from_str("").expect("defaults");
        assert_eq!(config.account_ip, defaults::account_ip());
        config.check().expect("valid");
        let bad: LoginConfig = toml::from_str(
            "[account]\nfailures = 0\nwindow = \"1m\"\nlockout = \"1m\"\nmax_lockout = \"1m\"",
        )
        .expect("parses");
        assert_eq!(
            bad.check().expect_err("zero").0,
            "guard.login.account.failures"
        );
        let ids = LoginAttempt::new("student", &"x".repeat(10_000), None);
        assert_eq!(ids.account.len(), MAX_ID_CHARS);
    }
}
