//! An in-process layer in front of the Redis store (`cache.near = true`): a hit is
//! served from this process's memory without a Redis round trip.
//!
//! Entries never change once filled (a slot names the group versions it was filled
//! under), so a local copy is as good as Redis' own. What must stay current is the
//! group versions: they are learned from Redis on a local miss, and every replica's
//! invalidation script publishes the new numbers on a Redis pub/sub channel, which a
//! background task here applies (spec decision 12: "other replicas' in-process caches
//! are invalidated through pub/sub"). Versions only grow, so a late message or a late
//! reply can never bring an old one back.
//!
//! Local versions are trusted only while the subscription is up. When it drops (Redis
//! restarted, network) or any Redis call fails, every local version is forgotten, so
//! the next lookups ask Redis again; versions read before the subscription came back
//! are not kept. Across replicas, a write becomes visible to the others' near layers
//! once its message arrives (typically well under a millisecond); the writing replica
//! sees it at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use tokio::task::JoinHandle;

use super::health::Health;
use super::memory::LocalTables;
use super::redis_store::RedisStore;
use super::store::{self, CacheError, CacheStore, Entry, Lookup, now_ms};

/// How the near layer is set up.
#[derive(Debug, Clone)]
pub struct NearSettings {
    /// Bytes of entries kept locally.
    pub max_bytes: u64,
    /// Longest time any endpoint keeps an entry (TTL plus stale window); bounds how
    /// long a copy learned from Redis is kept here.
    pub max_keep: Duration,
    /// The pub/sub channel of invalidations.
    pub channel: String,
    /// Longest wait to connect and subscribe.
    pub connect_timeout: Duration,
    /// Pause between two subscription attempts.
    pub retry: Duration,
    /// Least time between two warnings about the subscription.
    pub warn_every: Duration,
}

/// State shared with the subscriber task.
#[derive(Debug)]
struct Shared {
    redis: Arc<RedisStore>,
    local: LocalTables,
    max_keep: Duration,
    /// The subscription is up: local versions may be used.
    subscribed: AtomicBool,
    /// Changes whenever trust changes; versions read under an older generation are
    /// not kept.
    generation: AtomicU64,
}

impl Shared {
    /// Forgets every local version (after a failure or a change of subscription).
    fn forget(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.local.forget_versions();
    }

    fn set_subscribed(&self, up: bool) {
        self.forget();
        self.subscribed.store(up, Ordering::Release);
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Applies one invalidation message: `version-key version` lines.
    fn apply(&self, payload: &str) {
        for line in payload.lines() {
            let Some((key, version)) = line.split_once(' ') else {
                continue;
            };
            if let (Some(group), Ok(version)) = (self.redis.group_of(key), version.parse()) {
                self.local.raise_version(group, version);
            }
        }
    }
}

/// The near layer over a [`RedisStore`].
#[derive(Debug)]
pub struct NearStore {
    shared: Arc<Shared>,
}

impl NearStore {
    /// The layer and its subscriber task (abort it to stop).
    pub fn start(
        redis: Arc<RedisStore>,
        client: redis::Client,
        settings: NearSettings,
    ) -> (Self, JoinHandle<()>) {
        let shared = Arc::new(Shared {
            redis,
            local: LocalTables::new(settings.max_bytes),
            max_keep: settings.max_keep,
            subscribed: AtomicBool::new(false),
            generation: AtomicU64::new(0),
        });
        let task = tokio::spawn(subscribe(shared.clone(), client, settings));
        (Self { shared }, task)
    }

    /// Whether local versions are in use (the subscription is up).
    pub fn subscribed(&self) -> bool {
        self.shared.subscribed.load(Ordering::Acquire)
    }

    async fn lookup_entry(&self, key: &str, groups: &[String]) -> Result<Lookup, CacheError> {
        let shared = &self.shared;
        let generation = shared.generation.load(Ordering::Acquire);
        let trusted = shared.subscribed.load(Ordering::Acquire);
        if trusted {
            let known: Option<Vec<u64>> = groups.iter().map(|g| shared.local.version(g)).collect();
            if let Some(versions) = known {
                let slot = store::slot(&shared.redis.entry_key(key), &versions);
                if let Some(entry) = shared.local.entry(&slot) {
                    return Ok(Lookup {
                        slot,
                        entry: Some(entry),
                        versions,
                    });
                }
            }
        }
        let found = match shared.redis.lookup_entry(key, groups).await {
            Ok(found) => found,
            Err(error) => {
                shared.forget();
                return Err(error);
            }
        };
        if trusted && shared.generation.load(Ordering::Acquire) == generation {
            for (group, version) in groups.iter().zip(&found.versions) {
                shared.local.raise_version(group, *version);
            }
            if let Some(entry) = &found.entry {
                let left = shared.max_keep.saturating_sub(entry.age(now_ms()));
                shared.local.put(&found.slot, entry, left);
            }
        }
        Ok(found)
    }

    async fn put(&self, slot: &str, entry: &Entry, keep: Duration) -> Result<(), CacheError> {
        let shared = &self.shared;
        match shared.redis.put(slot, entry, keep).await {
            Ok(()) => {
                shared.local.put(slot, entry, keep);
                Ok(())
            }
            Err(error) => {
                shared.forget();
                Err(error)
            }
        }
    }

    async fn bump(&self, groups: &[String]) -> Result<(), CacheError> {
        let shared = &self.shared;
        match shared.redis.bump(groups).await {
            Ok(versions) => {
                for (group, version) in versions {
                    shared.local.raise_version(&group, version);
                }
                Ok(())
            }
            Err(error) => {
                shared.forget();
                Err(error)
            }
        }
    }
}

impl CacheStore for NearStore {
    fn name(&self) -> &'static str {
        "redis+near"
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
        Box::pin(self.bump(groups))
    }
}

/// Keeps a subscription to the invalidation channel, applying every message; while
/// it is down, local versions are not used.
async fn subscribe(shared: Arc<Shared>, client: redis::Client, settings: NearSettings) {
    let health = Health::new(Duration::ZERO, settings.warn_every);
    loop {
        let connected = tokio::time::timeout(settings.connect_timeout, async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&settings.channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        })
        .await;
        match connected {
            Ok(Ok(mut pubsub)) => {
                shared.set_subscribed(true);
                health.succeeded();
                tracing::debug!(channel = %settings.channel, "response cache: near layer subscribed");
                let mut messages = pubsub.on_message();
                while let Some(message) = messages.next().await {
                    match std::str::from_utf8(message.get_payload_bytes()) {
                        Ok(payload) => shared.apply(payload),
                        // Not ours: a message we cannot read might have been an
                        // invalidation, so stop trusting local versions until the next.
                        Err(_) => shared.forget(),
                    }
                }
                shared.set_subscribed(false);
                health.failed(
                    "invalidation subscription",
                    &CacheError::Redis("subscription ended".to_owned()),
                );
            }
            Ok(Err(error)) => {
                health.failed(
                    "invalidation subscription",
                    &CacheError::Redis(error.to_string()),
                );
            }
            Err(_) => {
                health.failed(
                    "invalidation subscription",
                    &CacheError::Timeout(settings.connect_timeout),
                );
            }
        }
        // Background reconnection pace (not request-path synchronisation).
        tokio::time::sleep(settings.retry).await;
    }
}
