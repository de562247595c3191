//! The in-process cache store (the embedded default, architecture principle 4) and the
//! tables it is made of, which the near layer in front of Redis reuses.
//!
//! Entries live in a size-bounded moka cache, each for its own `keep` time. Group
//! versions live in a second moka cache; a version that is evicted or bumped takes a
//! fresh number from a process-wide counter that never repeats, so no entry filled
//! under an old number can ever become reachable again.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use moka::Expiry;

use super::store::{self, CacheError, CacheStore, Entry, Lookup};

/// How many group versions a process keeps (a few per user and endpoint family).
const VERSION_CAPACITY: u64 = 200_000;
/// Bytes counted per entry besides its key and body.
const ENTRY_OVERHEAD: usize = 64;

/// An entry with the time it may be kept, measured from its insertion here.
#[derive(Debug, Clone)]
struct Held {
    entry: Entry,
    keep: Duration,
}

/// Each entry expires after its own `keep`.
struct KeepFor;

impl Expiry<String, Held> for KeepFor {
    fn expire_after_create(&self, _key: &String, value: &Held, _now: Instant) -> Option<Duration> {
        Some(value.keep)
    }
}

/// Entries by slot and versions by group, both bounded.
#[derive(Clone)]
pub struct LocalTables {
    entries: moka::sync::Cache<String, Held>,
    versions: moka::sync::Cache<String, u64>,
}

impl std::fmt::Debug for LocalTables {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalTables")
            .field("entries", &self.entries.entry_count())
            .field("versions", &self.versions.entry_count())
            .finish()
    }
}

// === impl LocalTables ===

impl LocalTables {
    /// Tables holding at most `max_bytes` of entries (keys and bodies).
    pub fn new(max_bytes: u64) -> Self {
        let entries = moka::sync::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|key: &String, held: &Held| {
                u32::try_from(key.len() + held.entry.body.len() + ENTRY_OVERHEAD)
                    .unwrap_or(u32::MAX)
            })
            .expire_after(KeepFor)
            .build();
        let versions = moka::sync::Cache::builder()
            .max_capacity(VERSION_CAPACITY)
            .build();
        Self { entries, versions }
    }

    /// The entry in `slot`, if any.
    pub fn entry(&self, slot: &str) -> Option<Entry> {
        self.entries.get(slot).map(|held| held.entry)
    }

    /// Keeps `entry` in `slot` for `keep` (nothing when `keep` is zero).
    pub fn put(&self, slot: &str, entry: &Entry, keep: Duration) {
        if !keep.is_zero() {
            self.entries.insert(
                slot.to_owned(),
                Held {
                    entry: entry.clone(),
                    keep,
                },
            );
        }
    }

    /// The version of `group` known here.
    pub fn version(&self, group: &str) -> Option<u64> {
        self.versions.get(group)
    }

    /// The version of `group`, created by `fresh` when unknown.
    pub fn version_or(&self, group: &str, fresh: impl FnOnce() -> u64) -> u64 {
        match self.versions.get(group) {
            Some(version) => version,
            None => self.versions.get_with(group.to_owned(), fresh),
        }
    }

    /// Sets the version of `group`.
    pub fn set_version(&self, group: &str, version: u64) {
        self.versions.insert(group.to_owned(), version);
    }

    /// Raises the version of `group` to `version` (versions only grow, so a late
    /// message can never bring an old one back).
    pub fn raise_version(&self, group: &str, version: u64) {
        self.versions
            .entry_by_ref(group)
            .and_upsert_with(|old| old.map_or(version, |old| old.into_value().max(version)));
    }

    /// Forgets every version (entries stay, but are reached only through versions read
    /// anew).
    pub fn forget_versions(&self) {
        self.versions.invalidate_all();
    }
}

/// The in-process store: one process, no sharing.
#[derive(Debug)]
pub struct MemoryStore {
    tables: LocalTables,
    /// The next version number; never repeats within the process.
    next: AtomicU64,
}

impl MemoryStore {
    /// A store holding at most `max_bytes` of entries.
    pub fn new(max_bytes: u64) -> Self {
        Self {
            tables: LocalTables::new(max_bytes),
            next: AtomicU64::new(1),
        }
    }

    fn fresh(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }
}

impl CacheStore for MemoryStore {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn lookup<'a>(
        &'a self,
        key: &'a str,
        groups: &'a [String],
    ) -> BoxFuture<'a, Result<Lookup, CacheError>> {
        let versions: Vec<u64> = groups
            .iter()
            .map(|group| self.tables.version_or(group, || self.fresh()))
            .collect();
        let slot = store::slot(key, &versions);
        let entry = self.tables.entry(&slot);
        Box::pin(std::future::ready(Ok(Lookup {
            slot,
            entry,
            versions,
        })))
    }

    fn fill<'a>(
        &'a self,
        slot: &'a str,
        entry: &'a Entry,
        keep: Duration,
    ) -> BoxFuture<'a, Result<(), CacheError>> {
        self.tables.put(slot, entry, keep);
        Box::pin(std::future::ready(Ok(())))
    }

    fn invalidate<'a>(&'a self, groups: &'a [String]) -> BoxFuture<'a, Result<(), CacheError>> {
        for group in groups {
            self.tables.set_version(group, self.fresh());
        }
        Box::pin(std::future::ready(Ok(())))
    }
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;
    use bytes::Bytes;

    use super::*;

    fn groups(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    #[tokio::test]
    async fn fill_then_hit_until_a_group_is_bumped() {
        let store = MemoryStore::new(1 << 20);
        let g = groups(&["*", "a", "b"]);
        let first = store.lookup("k", &g).await.expect("lookup");
        assert!(first.entry.is_none());
        let entry = Entry::new(StatusCode::OK, Bytes::from_static(b"{}"));
        store
            .fill(&first.slot, &entry, Duration::from_secs(60))
            .await
            .expect("fill");
        let second = store.lookup("k", &g).await.expect("lookup");
        assert_eq!(second.entry, Some(entry.clone()));
        assert_eq!(second.slot, first.slot);
        // Another key in the same groups is untouched by the fill.
        assert!(
            store
                .lookup("other", &g)
                .await
                .expect("lookup")
                .entry
                .is_none()
        );
        store.invalidate(&groups(&["b"])).await.expect("bump");
        let third = store.lookup("k", &g).await.expect("lookup");
        assert!(third.entry.is_none());
        assert_ne!(third.slot, first.slot);
        // A late fill of the old answer lands in the old slot, which nobody reads.
        store
            .fill(&first.slot, &entry, Duration::from_secs(60))
            .await
            .expect("fill");
        assert!(store.lookup("k", &g).await.expect("lookup").entry.is_none());
    }

    #[test]
    fn versions_only_grow_and_forgetting_them_is_safe() {
        let tables = LocalTables::new(1 << 20);
        tables.raise_version("g", 5);
        tables.raise_version("g", 3);
        assert_eq!(tables.version("g"), Some(5));
        tables.raise_version("g", 9);
        assert_eq!(tables.version("g"), Some(9));
        tables.forget_versions();
        assert_eq!(tables.version("g"), None);
    }
}
