//! The storage behind the response cache: the [`CacheStore`] trait with its two
//! implementations ([`super::redis::RedisStore`] when `redis.url` is set,
//! [`super::memory::MemoryStore`] otherwise; [`super::near::NearStore`] puts an
//! in-process layer in front of Redis), and the stored [`Entry`].
//!
//! Stores know nothing about endpoints: they map a rendered key plus the current
//! versions of its groups to a slot, keep entries in slots, and bump group versions.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::StatusCode;
use bytes::Bytes;
use futures_util::future::BoxFuture;

/// The group every entry belongs to: bumping it empties the whole cache (used when
/// too many invalidations were held back during an outage).
pub const EPOCH: &str = "*";

/// One stored answer: exactly the status and bytes the client got (no JSON is parsed
/// or re-serialised on a hit, and numbers keep full precision, decision 22).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The response status.
    pub status: StatusCode,
    /// The response body, as sent.
    pub body: Bytes,
    /// When the backend answered, in Unix milliseconds (a wall clock, since replicas
    /// share entries).
    pub filled_ms: u64,
}

/// Marks the encoding of an entry, so foreign or damaged values are recognised.
const MAGIC: u8 = 0xC1;
const HEADER: usize = 1 + 8 + 2;

impl Entry {
    /// A new entry filled now.
    pub fn new(status: StatusCode, body: Bytes) -> Self {
        Self {
            status,
            body,
            filled_ms: now_ms(),
        }
    }

    /// How long ago it was filled (zero if the clock went back).
    pub fn age(&self, now_ms: u64) -> Duration {
        Duration::from_millis(now_ms.saturating_sub(self.filled_ms))
    }

    /// `MAGIC`, fill time (u64 BE), status (u16 BE), body.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + self.body.len());
        out.push(MAGIC);
        out.extend_from_slice(&self.filled_ms.to_be_bytes());
        out.extend_from_slice(&self.status.as_u16().to_be_bytes());
        out.extend_from_slice(&self.body);
        out
    }

    /// The inverse of [`Entry::encode`]; anything else is garbage.
    pub fn decode(bytes: &[u8]) -> Result<Self, CacheError> {
        let garbage = || CacheError::Garbage("stored value is not a cache entry".to_owned());
        if bytes.len() < HEADER || bytes[0] != MAGIC {
            return Err(garbage());
        }
        let mut filled = [0u8; 8];
        filled.copy_from_slice(&bytes[1..9]);
        let status = u16::from_be_bytes([bytes[9], bytes[10]]);
        let status = StatusCode::from_u16(status).map_err(|_| garbage())?;
        Ok(Self {
            status,
            body: Bytes::copy_from_slice(&bytes[HEADER..]),
            filled_ms: u64::from_be_bytes(filled),
        })
    }
}

/// The wall clock in Unix milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// What a lookup found.
#[derive(Debug, Clone)]
pub struct Lookup {
    /// Where the entry for this key lives at the current group versions; a fill goes
    /// there, so an answer computed before an invalidation can never be read after it.
    pub slot: String,
    /// The entry in the slot, if any (fresh or not: the caller decides).
    pub entry: Option<Entry>,
    /// The versions the slot was built from, in the order of the groups asked for.
    pub versions: Vec<u64>,
}

/// Why a store operation failed. The cache fails open: every error means "serve from
/// the backend", never a failed request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CacheError {
    #[error("redis: {0}")]
    Redis(String),
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    #[error("unexpected reply: {0}")]
    Garbage(String),
    /// Not tried: the store is resting after a failure.
    #[error("resting after a failure")]
    Paused,
}

/// A place to keep entries and group versions.
pub trait CacheStore: Send + Sync + fmt::Debug {
    /// `memory`, `redis` or `redis+near`, for logs.
    fn name(&self) -> &'static str;

    /// Reads the current versions of `groups` (creating unknown ones) and the entry in
    /// the slot they select for `key`.
    fn lookup<'a>(
        &'a self,
        key: &'a str,
        groups: &'a [String],
    ) -> BoxFuture<'a, Result<Lookup, CacheError>>;

    /// Stores `entry` in `slot` (from a lookup) for `keep`.
    fn fill<'a>(
        &'a self,
        slot: &'a str,
        entry: &'a Entry,
        keep: Duration,
    ) -> BoxFuture<'a, Result<(), CacheError>>;

    /// Bumps the versions of `groups`: every entry filled under an older version becomes
    /// unreachable, for every replica sharing the store, before this returns.
    fn invalidate<'a>(&'a self, groups: &'a [String]) -> BoxFuture<'a, Result<(), CacheError>>;
}

/// `base@v1.v2…`: the slot of `base` at the given versions (the Redis script builds
/// the same string).
pub fn slot(base: &str, versions: &[u64]) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(base.len() + 1 + versions.len() * 17);
    out.push_str(base);
    out.push('@');
    for (i, version) in versions.iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        // Writing to a String cannot fail.
        let _ = write!(out, "{version}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_garbage_is_refused() {
        let entry = Entry {
            status: StatusCode::OK,
            body: Bytes::from_static(br#"{"status":200,"n":9007199254740993}"#),
            filled_ms: 1_700_000_000_123,
        };
        assert_eq!(Entry::decode(&entry.encode()), Ok(entry));
        assert!(Entry::decode(b"").is_err());
        assert!(Entry::decode(b"{\"status\":200}").is_err());
        let mut bad_status = Entry::new(StatusCode::OK, Bytes::new()).encode();
        bad_status[9] = 0xFF;
        assert!(Entry::decode(&bad_status).is_err());
    }

    #[test]
    fn slots_join_versions() {
        assert_eq!(slot("k", &[1, 22]), "k@1.22");
        assert_eq!(slot("k", &[]), "k@");
    }
}
