//! The Redis cache store: entries and group versions shared by every gateway replica
//! (redis-rs, one auto-reconnecting multiplexed `ConnectionManager`).
//!
//! Keys (under the configured prefix): `v:<group>` holds a group's version number,
//! `e:<key>@<v1>.<v2>…` an entry at the versions of its groups. A lookup is one Lua
//! script run (read or create the versions, then read the entry: one round trip); an
//! invalidation is one script run that bumps every version it names (O(1) per group,
//! no `KEYS`/`SCAN`, decision 12) and publishes the new numbers for near layers; a
//! fill is one `SET … PX`. New versions start at Redis' clock in microseconds, so a
//! version key that expired or was evicted comes back with a number never used before
//! and old entries can never become reachable again.
//!
//! The store fails open: each call is bounded by a short timeout, a failure makes the
//! store rest for a pause (see [`Health`]), and invalidations that could not be applied
//! are kept and applied before this replica reads from Redis again, so a replica never
//! serves an answer its own write has invalidated. The scripts compute the entry's key
//! inside Redis, so they need a standalone Redis (or Sentinel), not Redis Cluster.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use futures_util::future::BoxFuture;
use redis::aio::ConnectionManager;
use redis::{Script, Value};

use super::health::{Health, HealthStats, millis};
use super::store::{CacheError, CacheStore, EPOCH, Entry, Lookup};

/// Reads (creating when missing) the versions of the entry's groups, then the entry.
/// KEYS[1]: entry key without versions; KEYS[2..]: version keys.
/// ARGV[1]: lifetime of a version key, ms.
/// Reply: slot, entry (or nil), versions.
const LOOKUP: &str = r"
local versions = {}
local fresh = nil
for i = 2, #KEYS do
  local v = redis.call('GET', KEYS[i])
  if not v then
    if not fresh then
      local t = redis.call('TIME')
      fresh = t[1] .. string.format('%06d', tonumber(t[2]))
    end
    v = fresh
    redis.call('SET', KEYS[i], v, 'PX', ARGV[1])
  end
  versions[i - 1] = v
end
local slot = KEYS[1] .. '@' .. table.concat(versions, '.')
local reply = {slot, redis.call('GET', slot)}
for i = 1, #versions do
  reply[i + 2] = versions[i]
end
return reply
";

/// Bumps versions (a missing or unreadable one restarts at the clock, in µs) and
/// publishes `key version` lines on ARGV[2] unless it is empty.
/// KEYS: version keys. ARGV[1]: lifetime of a version key, ms.
/// Reply: the new versions.
const INVALIDATE: &str = r"
local t = redis.call('TIME')
local fresh = t[1] .. string.format('%06d', tonumber(t[2]))
local out = {}
for i = 1, #KEYS do
  local v = nil
  if redis.call('EXISTS', KEYS[i]) == 1 then
    local bumped = redis.pcall('INCR', KEYS[i])
    if type(bumped) == 'number' then
      -- Lua numbers are doubles: print all digits (versions stay far below 2^53).
      v = string.format('%.0f', bumped)
      redis.call('PEXPIRE', KEYS[i], ARGV[1])
    end
  end
  if not v then
    v = fresh
    redis.call('SET', KEYS[i], v, 'PX', ARGV[1])
  end
  out[i] = v
end
if ARGV[2] ~= '' then
  local lines = {}
  for i = 1, #KEYS do
    lines[i] = KEYS[i] .. ' ' .. out[i]
  end
  redis.call('PUBLISH', ARGV[2], table.concat(lines, '\n'))
end
return out
";

/// Lifetime of a version key: untouched groups disappear after a day (and restart at
/// a fresh number, which is safe).
const VERSION_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// Invalidations kept while Redis is unreachable before falling back to emptying the
/// whole cache (bumping the epoch) when it is back.
const PENDING_LIMIT: usize = 10_000;

/// How the store uses Redis.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// Prefix of every key the store writes.
    pub prefix: String,
    /// Longest wait for one operation.
    pub timeout: Duration,
    /// Rest after a failure.
    pub pause: Duration,
    /// Least time between two warnings.
    pub warn_every: Duration,
    /// Channel the invalidation script publishes bumped versions on; `None`: none.
    pub channel: Option<String>,
}

/// Invalidations not yet applied.
#[derive(Debug, Default)]
struct Pending {
    groups: HashSet<String>,
    /// Too many were held back: bump the epoch instead.
    overflow: bool,
}

/// The Redis store.
pub struct RedisStore {
    connection: ConnectionManager,
    settings: RedisSettings,
    lookup: Script,
    invalidate: Script,
    health: Health,
    pending: Mutex<Pending>,
    has_pending: AtomicBool,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("settings", &self.settings)
            .field("health", &self.health.stats())
            .finish_non_exhaustive()
    }
}

// === impl RedisStore ===

impl RedisStore {
    /// A store on `connection` (created lazily: Redis may be down at start-up).
    pub fn new(connection: ConnectionManager, settings: RedisSettings) -> Self {
        Self {
            connection,
            health: Health::new(settings.pause, settings.warn_every),
            settings,
            lookup: Script::new(LOOKUP),
            invalidate: Script::new(INVALIDATE),
            pending: Mutex::new(Pending::default()),
            has_pending: AtomicBool::new(false),
        }
    }

    /// The Redis key of `key`'s entries, without versions.
    pub fn entry_key(&self, key: &str) -> String {
        format!("{}e:{key}", self.settings.prefix)
    }

    /// The Redis key of `group`'s version.
    pub fn version_key(&self, group: &str) -> String {
        format!("{}v:{group}", self.settings.prefix)
    }

    /// The group a version key belongs to, if it is one of this store's.
    pub fn group_of<'k>(&self, version_key: &'k str) -> Option<&'k str> {
        version_key
            .strip_prefix(self.settings.prefix.as_str())
            .and_then(|rest| rest.strip_prefix("v:"))
    }

    /// Failure counters.
    pub fn health(&self) -> HealthStats {
        self.health.stats()
    }

    /// Runs one Redis operation within the timeout, unless the store is resting.
    async fn run<T>(
        &self,
        what: &'static str,
        operation: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, CacheError> {
        self.health.admit()?;
        let result = match tokio::time::timeout(self.settings.timeout, operation).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(CacheError::Redis(error.to_string())),
            Err(_) => Err(CacheError::Timeout(self.settings.timeout)),
        };
        match &result {
            Ok(_) => self.health.succeeded(),
            Err(error) => self.health.failed(what, error),
        }
        result
    }

    /// Reads a script reply that must make sense, recording garbage as a failure.
    fn parse<T>(&self, what: &'static str, parsed: Result<T, CacheError>) -> Result<T, CacheError> {
        if let Err(error) = &parsed {
            self.health.failed(what, error);
        }
        parsed
    }

    /// Looks up `key` in `groups` (the trait's lookup, with the versions it read).
    pub async fn lookup_entry(&self, key: &str, groups: &[String]) -> Result<Lookup, CacheError> {
        self.apply_pending().await?;
        let mut invocation = self.lookup.key(self.entry_key(key));
        for group in groups {
            invocation.key(self.version_key(group));
        }
        invocation.arg(millis(VERSION_LIFETIME));
        let mut connection = self.connection.clone();
        let reply: Value = self
            .run("lookup", invocation.invoke_async(&mut connection))
            .await?;
        let raw = self.parse("lookup", lookup_reply(reply, groups.len()))?;
        let entry = match raw.entry.as_deref().map(Entry::decode) {
            None => None,
            Some(Ok(entry)) => Some(entry),
            Some(Err(error)) => {
                self.health.failed("lookup", &error);
                self.discard(&raw.slot).await;
                return Err(error);
            }
        };
        Ok(Lookup {
            slot: raw.slot,
            entry,
            versions: raw.versions,
        })
    }

    /// Deletes an entry that does not decode, so the next request refills it.
    async fn discard(&self, slot: &str) {
        let mut connection = self.connection.clone();
        let mut delete = redis::cmd("DEL");
        delete.arg(slot);
        let deleted: Result<(), _> =
            tokio::time::timeout(self.settings.timeout, delete.query_async(&mut connection))
                .await
                .map_err(|_| ())
                .and_then(|r: redis::RedisResult<()>| r.map_err(|_| ()));
        if deleted.is_ok() {
            tracing::debug!(slot, "response cache: deleted an undecodable entry");
        }
    }

    /// Bumps `groups` and returns their new versions (group, version); on failure
    /// they are kept and applied before the next read.
    pub async fn bump(&self, groups: &[String]) -> Result<Vec<(String, u64)>, CacheError> {
        let (mut all, overflow) = self.take_pending();
        all.extend(groups.iter().cloned());
        if overflow {
            all.push(EPOCH.to_owned());
        }
        all.sort_unstable();
        all.dedup();
        let result = self.bump_now(&all).await;
        if result.is_err() {
            self.keep_pending(all);
        }
        result
    }

    async fn bump_now(&self, groups: &[String]) -> Result<Vec<(String, u64)>, CacheError> {
        if groups.is_empty() {
            return Ok(Vec::new());
        }
        let mut invocation = self.invalidate.prepare_invoke();
        for group in groups {
            invocation.key(self.version_key(group));
        }
        invocation
            .arg(millis(VERSION_LIFETIME))
            .arg(self.settings.channel.as_deref().unwrap_or(""));
        let mut connection = self.connection.clone();
        let reply: Value = self
            .run("invalidate", invocation.invoke_async(&mut connection))
            .await?;
        let versions = self.parse("invalidate", versions_reply(reply, groups.len()))?;
        Ok(groups.iter().cloned().zip(versions).collect())
    }

    /// Applies invalidations held back by an earlier failure.
    async fn apply_pending(&self) -> Result<(), CacheError> {
        if !self.has_pending.load(Ordering::Acquire) {
            return Ok(());
        }
        self.bump(&[]).await.map(|_| ())
    }

    fn take_pending(&self) -> (Vec<String>, bool) {
        if !self.has_pending.swap(false, Ordering::AcqRel) {
            return (Vec::new(), false);
        }
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        let overflow = std::mem::take(&mut pending.overflow);
        (pending.groups.drain().collect(), overflow)
    }

    fn keep_pending(&self, groups: Vec<String>) {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        if pending.overflow || pending.groups.len() + groups.len() > PENDING_LIMIT {
            pending.groups.clear();
            pending.overflow = true;
        } else {
            pending.groups.extend(groups);
        }
        self.has_pending.store(true, Ordering::Release);
    }

    /// Stores an entry in a slot.
    pub async fn put(&self, slot: &str, entry: &Entry, keep: Duration) -> Result<(), CacheError> {
        self.apply_pending().await?;
        let keep_ms = millis(keep).max(1);
        let mut connection = self.connection.clone();
        self.run(
            "fill",
            redis::cmd("SET")
                .arg(slot)
                .arg(entry.encode())
                .arg("PX")
                .arg(keep_ms)
                .query_async::<()>(&mut connection),
        )
        .await
    }
}

impl CacheStore for RedisStore {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn lookup<'a>(
        &'a self,
        key: &'a str,
        groups: &'a [String],
    ) -> BoxFuture<'a, Result<Lookup, CacheError>> {
        Box::pin(self.lookup_entry(key, groups))
    }

    fn fill<'a>(
        &'a self,
        slot: &'a str,
        entry: &'a Entry,
        keep: Duration,
    ) -> BoxFuture<'a, Result<(), CacheError>> {
        Box::pin(self.put(slot, entry, keep))
    }

    fn invalidate<'a>(&'a self, groups: &'a [String]) -> BoxFuture<'a, Result<(), CacheError>> {
        Box::pin(async move { self.bump(groups).await.map(|_| ()) })
    }
}

/// A lookup reply before its entry is decoded.
#[derive(Debug, PartialEq, Eq)]
struct RawLookup {
    slot: String,
    entry: Option<Vec<u8>>,
    versions: Vec<u64>,
}

/// Reads the lookup script's reply: slot, entry or nil, one version per group.
fn lookup_reply(reply: Value, groups: usize) -> Result<RawLookup, CacheError> {
    let garbage = |what: &str| CacheError::Garbage(format!("lookup reply: {what}"));
    let Value::Array(items) = reply else {
        return Err(garbage("not an array"));
    };
    if items.len() != groups + 2 {
        return Err(garbage("wrong length"));
    }
    let mut items = items.into_iter();
    let slot = items
        .next()
        .and_then(|v| text(&v))
        .ok_or_else(|| garbage("no slot"))?;
    let entry = match items.next() {
        Some(Value::Nil) | None => None,
        Some(Value::BulkString(bytes)) => Some(bytes),
        Some(_) => return Err(garbage("entry is not a string")),
    };
    let versions = items
        .map(|v| number(&v))
        .collect::<Option<Vec<u64>>>()
        .ok_or_else(|| garbage("a version is not a number"))?;
    Ok(RawLookup {
        slot,
        entry,
        versions,
    })
}

/// Reads the invalidation script's reply: one version per group.
fn versions_reply(reply: Value, groups: usize) -> Result<Vec<u64>, CacheError> {
    let garbage = || CacheError::Garbage("invalidate reply".to_owned());
    let Value::Array(items) = reply else {
        return Err(garbage());
    };
    if items.len() != groups {
        return Err(garbage());
    }
    items
        .iter()
        .map(number)
        .collect::<Option<Vec<u64>>>()
        .ok_or_else(garbage)
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        Value::SimpleString(text) => Some(text.clone()),
        _ => None,
    }
}

fn number(value: &Value) -> Option<u64> {
    match value {
        Value::Int(n) => u64::try_from(*n).ok(),
        other => text(other)?.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    #[test]
    fn lookup_replies_are_checked() {
        let ok = lookup_reply(
            Value::Array(vec![
                bulk("p:e:k@1.2"),
                bulk("entry"),
                bulk("1"),
                Value::Int(2),
            ]),
            2,
        )
        .expect("valid");
        assert_eq!(
            ok,
            RawLookup {
                slot: "p:e:k@1.2".to_owned(),
                entry: Some(b"entry".to_vec()),
                versions: vec![1, 2],
            }
        );
        let miss =
            lookup_reply(Value::Array(vec![bulk("s"), Value::Nil, bulk("7")]), 1).expect("valid");
        assert!(miss.entry.is_none());
        for garbage in [
            Value::Okay,
            Value::Array(vec![bulk("s"), Value::Nil]),
            Value::Array(vec![bulk("s"), Value::Nil, bulk("x")]),
            Value::Array(vec![Value::Nil, Value::Nil, bulk("1")]),
            Value::Array(vec![bulk("s"), Value::Int(3), bulk("1")]),
        ] {
            assert!(lookup_reply(garbage, 1).is_err());
        }
    }

    #[test]
    fn version_replies_are_checked() {
        assert_eq!(
            versions_reply(Value::Array(vec![bulk("3"), Value::Int(4)]), 2),
            Ok(vec![3, 4])
        );
        assert!(versions_reply(Value::Array(vec![bulk("3")]), 2).is_err());
        assert!(versions_reply(Value::Nil, 0).is_err());
    }
}
