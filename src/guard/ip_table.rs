//! Local per-client state of the IP guard: a rolling-window count and a block per
//! client, in a sharded map that sweeps out idle clients so its memory follows the
//! number of clients active in the last two windows, not every client ever seen.
//!
//! The rolling window is the two-bucket approximation (the sliding-window counter):
//! counts of the current and the previous fixed window, the previous one weighted by
//! how much of it still overlaps the rolling window. It needs 24 bytes per client
//! where exact timestamps would need one slot per admitted request, and it is what
//! the Redis script computes too, so local fallback and cluster mode agree.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError, TryLockError};
use std::time::Duration;

use super::log_every::LogEvery;

/// Number of independently locked parts of the table.
const SHARDS: usize = 64;

/// What the guard answers for one request of one client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpDecision {
    /// Under the limit: serve it.
    Allowed,
    /// This request crossed the limit: 429, and the client is now blocked for
    /// `retry_after`.
    Limited { retry_after: Duration },
    /// The client is blocked: 403 for another `retry_after`.
    Blocked { retry_after: Duration },
}

/// A client as counted: an IPv4 address, or an IPv6 address cut to the configured
/// prefix; IPv4 is stored IPv4-mapped so both fit in 16 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct IpKey([u8; 16]);

impl IpKey {
    /// The key of `ip`, IPv6 cut to `ipv6_prefix` bits (1..=128).
    pub(crate) fn new(ip: IpAddr, ipv6_prefix: u8) -> Self {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Self(v4.to_ipv6_mapped().octets()),
            IpAddr::V6(v6) => {
                let keep = u32::from(ipv6_prefix.clamp(1, 128));
                let mask = u128::MAX << (128 - keep);
                Self((u128::from(v6) & mask).to_be_bytes())
            }
        }
    }

    /// How the key reads in a Redis key: `192.0.2.1`, `2001:db8::/64`, `2001:db8::1`.
    pub(crate) fn label(&self, ipv6_prefix: u8) -> String {
        let v6 = std::net::Ipv6Addr::from(self.0);
        match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None if ipv6_prefix < 128 => format!("{v6}/{ipv6_prefix}"),
            None => v6.to_string(),
        }
    }
}

/// The numbers of the rolling window and the block, in milliseconds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WindowRule {
    pub(crate) limit: u64,
    pub(crate) window_ms: u64,
    pub(crate) block_ms: u64,
}

/// One client: which fixed window `curr` counts, the counts of it and of the one
/// before, and when its block ends (0: never blocked).
#[derive(Debug, Default, Clone, Copy)]
struct Entry {
    bucket: u64,
    prev: u32,
    curr: u32,
    blocked_until: u64,
}

impl WindowRule {
    /// Counts one request of the client in `entry` at `now` (milliseconds).
    fn decide(&self, entry: &mut Entry, now: u64) -> IpDecision {
        if entry.blocked_until > now {
            return IpDecision::Blocked {
                retry_after: Duration::from_millis(entry.blocked_until - now),
            };
        }
        let window = self.window_ms;
        let bucket = now / window;
        if entry.bucket != bucket {
            entry.prev = if entry.bucket + 1 == bucket {
                entry.curr
            } else {
                0
            };
            entry.curr = 0;
            entry.bucket = bucket;
        }
        // Rolling count = prev × (part of the previous window still inside the rolling
        // window) + curr. Multiplied through by `window` to stay in integers, exactly
        // as the Redis script does.
        let into = now % window;
        let weighted = u128::from(entry.prev) * u128::from(window - into)
            + (u128::from(entry.curr) + 1) * u128::from(window);
        if weighted > u128::from(self.limit) * u128::from(window) {
            // Blocked requests are not counted, and the block starts from a clean
            // window: otherwise a short block could end inside a window still full of
            // the counts that caused it.
            *entry = Entry {
                bucket,
                prev: 0,
                curr: 0,
                blocked_until: now + self.block_ms,
            };
            return IpDecision::Limited {
                retry_after: Duration::from_millis(self.block_ms),
            };
        }
        entry.curr = entry.curr.saturating_add(1);
        IpDecision::Allowed
    }

    /// Whether `entry` still matters at `now`: blocked, or counted in this window or
    /// the one before.
    fn live(&self, entry: &Entry, now: u64) -> bool {
        entry.blocked_until > now || entry.bucket + 1 >= now / self.window_ms
    }
}

struct Shard {
    map: HashMap<IpKey, Entry>,
    next_sweep_ms: u64,
}

impl Shard {
    fn sweep(&mut self, rule: &WindowRule, now: u64) {
        self.map.retain(|_, entry| rule.live(entry, now));
        // A map keeps its capacity after `retain`; give memory back after an attack.
        let len = self.map.len();
        if self.map.capacity() > 64 && self.map.capacity() > len * 4 {
            self.map.shrink_to(len * 2);
        }
        self.next_sweep_ms = now + rule.window_ms;
    }
}

/// Size of the table, for tests, metrics and the memory figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpTableStats {
    /// Clients with state.
    pub tracked: usize,
    /// Slots allocated for clients.
    pub capacity: usize,
    /// Approximate heap bytes of the slots (key, entry and control byte each).
    pub approx_bytes: usize,
}

/// The sharded table.
pub(crate) struct IpTable {
    shards: Box<[Mutex<Shard>]>,
    /// Picks the shard; randomly keyed so a client cannot aim at one shard.
    shard_hasher: RandomState,
    rule: WindowRule,
    per_shard_cap: usize,
    /// Next shard swept on behalf of traffic that lands elsewhere.
    sweep_cursor: AtomicUsize,
    full_warning: LogEvery,
}

impl std::fmt::Debug for IpTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IpTable")
            .field("rule", &self.rule)
            .field("per_shard_cap", &self.per_shard_cap)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl IpTable {
    /// A table for `rule`, holding at most about `max_tracked` clients.
    pub(crate) fn new(rule: WindowRule, max_tracked: usize, warn_interval_ms: u64) -> Self {
        let shards = (0..SHARDS)
            .map(|_| {
                Mutex::new(Shard {
                    map: HashMap::new(),
                    next_sweep_ms: 0,
                })
            })
            .collect();
        Self {
            shards,
            shard_hasher: RandomState::new(),
            rule,
            per_shard_cap: max_tracked.div_ceil(SHARDS).max(1),
            sweep_cursor: AtomicUsize::new(0),
            full_warning: LogEvery::new(warn_interval_ms),
        }
    }

    fn shard_of(&self, key: &IpKey) -> usize {
        // The shard count is a power of two far below u64::MAX, so the cast is exact.
        (self.shard_hasher.hash_one(key) % SHARDS as u64) as usize
    }

    fn lock(&self, index: usize) -> MutexGuard<'_, Shard> {
        self.shards[index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts one request of `key` at `now` (milliseconds of the guard's clock).
    pub(crate) fn check(&self, key: IpKey, now: u64) -> IpDecision {
        let index = self.shard_of(&key);
        let decision = {
            let mut shard = self.lock(index);
            if now >= shard.next_sweep_ms {
                shard.sweep(&self.rule, now);
            }
            if !self.has_room(&mut shard, &key, now) {
                drop(shard);
                self.warn_full(now);
                return IpDecision::Allowed;
            }
            let entry = shard.map.entry(key).or_default();
            self.rule.decide(entry, now)
        };
        self.sweep_another(index, now);
        decision
    }

    /// The time left of `key`'s block, if it is blocked (nothing is counted).
    pub(crate) fn blocked(&self, key: IpKey, now: u64) -> Option<Duration> {
        let shard = self.lock(self.shard_of(&key));
        let until = shard.map.get(&key)?.blocked_until;
        (until > now).then(|| Duration::from_millis(until - now))
    }

    /// Records a block decided elsewhere (by Redis) so this replica answers it without
    /// a round trip and keeps answering it if Redis goes away.
    pub(crate) fn block(&self, key: IpKey, now: u64, duration: Duration) {
        let until = now.saturating_add(super::clock::millis(duration));
        let mut shard = self.lock(self.shard_of(&key));
        if !self.has_room(&mut shard, &key, now) {
            return;
        }
        let entry = shard.map.entry(key).or_default();
        entry.prev = 0;
        entry.curr = 0;
        entry.blocked_until = entry.blocked_until.max(until);
    }

    /// Whether `key` has or can get an entry, sweeping the shard once when it is full.
    fn has_room(&self, shard: &mut Shard, key: &IpKey, now: u64) -> bool {
        if shard.map.len() < self.per_shard_cap || shard.map.contains_key(key) {
            return true;
        }
        shard.sweep(&self.rule, now);
        shard.map.len() < self.per_shard_cap
    }

    /// Sweeps the next shard in turn if it is due and free, so shards that receive no
    /// traffic still give their memory back.
    fn sweep_another(&self, skip: usize, now: u64) {
        let index = self.sweep_cursor.fetch_add(1, Ordering::Relaxed) % SHARDS;
        if index == skip {
            return;
        }
        let mut shard = match self.shards[index].try_lock() {
            Ok(shard) => shard,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return,
        };
        if now >= shard.next_sweep_ms {
            shard.sweep(&self.rule, now);
        }
    }

    /// Sweeps every shard now.
    pub(crate) fn sweep_all(&self, now: u64) {
        for index in 0..SHARDS {
            self.lock(index).sweep(&self.rule, now);
        }
    }

    fn warn_full(&self, now: u64) {
        if let Some(held_back) = self.full_warning.ready(now) {
            tracing::warn!(
                max_tracked = self.per_shard_cap * SHARDS,
                held_back,
                "client-IP guard table is full: new clients pass uncounted until idle ones expire"
            );
        }
    }

    /// Current size.
    pub(crate) fn stats(&self) -> IpTableStats {
        let slot = std::mem::size_of::<(IpKey, Entry)>() + 1;
        let (tracked, capacity) = (0..SHARDS).fold((0, 0), |(tracked, capacity), index| {
            let shard = self.lock(index);
            (tracked + shard.map.len(), capacity + shard.map.capacity())
        });
        IpTableStats {
            tracked,
            capacity,
            approx_bytes: capacity * slot,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULE: WindowRule = WindowRule {
        limit: 50,
        window_ms: 1000,
        block_ms: 60_000,
    };

    fn key(n: u32) -> IpKey {
        IpKey::new(IpAddr::V4(std::net::Ipv4Addr::from(n)), 64)
    }

    fn table() -> IpTable {
        IpTable::new(RULE, 1_000_000, 10_000)
    }

    /// Sends `count` requests of `key` at `now`, returning how many were allowed.
    fn burst(table: &IpTable, key: IpKey, now: u64, count: usize) -> usize {
        (0..count)
            .filter(|_| table.check(key, now) == IpDecision::Allowed)
            .count()
    }

    #[test]
    fn the_request_crossing_the_limit_is_limited_then_the_client_is_blocked() {
        let table = table();
        let client = key(1);
        assert_eq!(burst(&table, client, 100, 50), 50);
        assert_eq!(
            table.check(client, 100),
            IpDecision::Limited {
                retry_after: Duration::from_secs(60)
            }
        );
        assert_eq!(
            table.check(client, 1100),
            IpDecision::Blocked {
                retry_after: Duration::from_millis(59_000)
            }
        );
        assert_eq!(
            table.blocked(client, 60_099),
            Some(Duration::from_millis(1))
        );
        // The block ends after exactly 60 s and the client starts from zero.
        assert_eq!(table.check(client, 60_100), IpDecision::Allowed);
        assert_eq!(burst(&table, client, 60_100, 49), 49);
        assert!(matches!(
            table.check(client, 60_100),
            IpDecision::Limited { .. }
        ));
    }

    #[test]
    fn other_clients_are_unaffected() {
        let table = table();
        burst(&table, key(1), 0, 100);
        assert!(table.blocked(key(1), 10).is_some());
        assert_eq!(burst(&table, key(2), 10, 50), 50);
        assert!(table.blocked(key(2), 10).is_none());
    }

    #[test]
    fn the_window_rolls() {
        let table = table();
        let client = key(1);
        // 40 requests late in window 0 ...
        assert_eq!(burst(&table, client, 900, 40), 40);
        // ... half of window 0 still overlaps at 1500: 40 × 0.5 + 30 = 50 → the 31st crosses.
        assert_eq!(burst(&table, client, 1500, 30), 30);
        assert!(matches!(
            table.check(client, 1500),
            IpDecision::Limited { .. }
        ));
        // A client spreading 50 per window stays allowed for good.
        let steady = key(2);
        for second in 0..10u64 {
            for i in 0..45u64 {
                assert_eq!(
                    table.check(steady, second * 1000 + i * 22),
                    IpDecision::Allowed,
                    "second {second}, request {i}"
                );
            }
        }
    }

    #[test]
    fn a_gap_of_two_windows_forgets_everything() {
        let table = table();
        let client = key(1);
        assert_eq!(burst(&table, client, 999, 50), 50);
        assert_eq!(burst(&table, client, 2000, 50), 50);
    }

    #[test]
    fn idle_clients_are_swept_and_memory_is_given_back() {
        let table = table();
        for n in 0..100_000 {
            table.check(key(n), 0);
        }
        let full = table.stats();
        assert_eq!(full.tracked, 100_000);
        // One window later every client still counts in the rolling window.
        table.sweep_all(1500);
        assert_eq!(table.stats().tracked, 100_000);
        // Two windows later nothing is left, and the slots are released.
        table.sweep_all(2000);
        let swept = table.stats();
        assert_eq!(swept.tracked, 0);
        assert!(
            swept.approx_bytes * 20 < full.approx_bytes,
            "{swept:?} vs {full:?}"
        );
    }

    #[test]
    fn traffic_sweeps_other_shards_too() {
        let table = table();
        for n in 0..10_000 {
            table.check(key(n), 0);
        }
        // Ordinary traffic of one client at a later time reaches every shard in turn.
        for _ in 0..SHARDS * 2 {
            table.check(key(1_000_000), 5000);
        }
        assert_eq!(table.stats().tracked, 1);
    }

    #[test]
    fn blocked_clients_stay_until_their_block_ends() {
        let table = table();
        burst(&table, key(1), 0, 51);
        table.sweep_all(30_000);
        assert!(table.blocked(key(1), 30_000).is_some());
        table.sweep_all(60_000);
        assert_eq!(table.stats().tracked, 0);
    }

    #[test]
    fn a_full_table_lets_new_clients_through_uncounted() {
        let table = IpTable::new(RULE, SHARDS, 10_000);
        let mut tracked = Vec::new();
        for n in 0..10_000 {
            table.check(key(n), 0);
            if table.stats().tracked > tracked.len() {
                tracked.push(n);
            }
        }
        assert_eq!(table.stats().tracked, SHARDS);
        // An untracked client is never limited while the table is full ...
        let untracked = (0..10_000).find(|n| !tracked.contains(n)).unwrap_or(0);
        assert_eq!(burst(&table, key(untracked), 0, 200), 200);
        // ... and tracked ones still are.
        assert_eq!(burst(&table, key(tracked[0]), 0, 100), 49);
    }

    #[test]
    fn mirrored_blocks_are_answered_locally() {
        let table = table();
        table.block(key(7), 1000, Duration::from_secs(5));
        assert_eq!(
            table.check(key(7), 2000),
            IpDecision::Blocked {
                retry_after: Duration::from_secs(4)
            }
        );
        assert_eq!(table.check(key(7), 6000), IpDecision::Allowed);
    }

    #[test]
    fn ipv6_clients_are_counted_per_prefix() {
        let a: IpAddr = "2001:db8:1:2::1".parse().expect("v6");
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().expect("v6");
        let c: IpAddr = "2001:db8:1:3::1".parse().expect("v6");
        assert_eq!(IpKey::new(a, 64), IpKey::new(b, 64));
        assert_ne!(IpKey::new(a, 64), IpKey::new(c, 64));
        assert_ne!(IpKey::new(a, 128), IpKey::new(b, 128));
        assert_eq!(IpKey::new(a, 64).label(64), "2001:db8:1:2::/64");
        assert_eq!(IpKey::new(a, 128).label(128), "2001:db8:1:2::1");
        let v4: IpAddr = "192.0.2.1".parse().expect("v4");
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().expect("mapped");
        assert_eq!(IpKey::new(v4, 64), IpKey::new(mapped, 64));
        assert_eq!(IpKey::new(mapped, 64).label(64), "192.0.2.1");
    }
}
