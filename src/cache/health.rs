//! When to leave Redis alone, and when to say so: after a failed, slow or garbled
//! operation the store rests for a pause (requests bypass the cache at once instead of
//! each waiting for a timeout), and failures are logged at most once per interval with
//! the number held back. Recovery is logged once.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use super::store::CacheError;

/// Counters of a store's health, for tests and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HealthStats {
    /// Operations that failed (error, timeout or garbage).
    pub failures: u64,
    /// Operations not tried because the store was resting.
    pub skipped: u64,
}

/// One store's health gate.
#[derive(Debug)]
pub struct Health {
    start: Instant,
    pause_ms: u64,
    warn_every_ms: u64,
    /// Not tried before this time (ms since `start`).
    resting_until_ms: AtomicU64,
    /// Next time a warning may be logged (ms since `start`; 0 lets the first through).
    next_warning_ms: AtomicU64,
    held_back: AtomicU64,
    failing: AtomicBool,
    failures: AtomicU64,
    skipped: AtomicU64,
}

impl Health {
    /// Rests `pause` after a failure; warns at most once per `warn_every`.
    pub fn new(pause: Duration, warn_every: Duration) -> Self {
        Self {
            start: Instant::now(),
            pause_ms: millis(pause),
            warn_every_ms: millis(warn_every),
            resting_until_ms: AtomicU64::new(0),
            next_warning_ms: AtomicU64::new(0),
            held_back: AtomicU64::new(0),
            failing: AtomicBool::new(false),
            failures: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        millis(self.start.elapsed())
    }

    /// `Err(Paused)` while resting after a failure.
    pub fn admit(&self) -> Result<(), CacheError> {
        if self.now_ms() < self.resting_until_ms.load(Ordering::Relaxed) {
            self.skipped.fetch_add(1, Ordering::Relaxed);
            Err(CacheError::Paused)
        } else {
            Ok(())
        }
    }

    /// Records a failure of `what`: rest, and warn unless a warning went out recently.
    pub fn failed(&self, what: &'static str, error: &CacheError) {
        let now = self.now_ms();
        self.failures.fetch_add(1, Ordering::Relaxed);
        self.failing.store(true, Ordering::Relaxed);
        self.resting_until_ms
            .store(now.saturating_add(self.pause_ms), Ordering::Relaxed);
        let next = self.next_warning_ms.load(Ordering::Relaxed);
        let open = now >= next
            && self
                .next_warning_ms
                .compare_exchange(
                    next,
                    now.saturating_add(self.warn_every_ms),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok();
        if open {
            let held_back = self.held_back.swap(0, Ordering::Relaxed);
            tracing::warn!(
                %error,
                held_back,
                pause_ms = self.pause_ms,
                "response cache: {what} failed; serving from the backends (X-Cache: BYPASS)"
            );
        } else {
            self.held_back.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records a success; logs once when it ends a failing period.
    pub fn succeeded(&self) {
        if self.failing.load(Ordering::Relaxed) && self.failing.swap(false, Ordering::Relaxed) {
            tracing::info!("response cache: Redis answers again; caching resumed");
        }
    }

    /// The counters so far.
    pub fn stats(&self) -> HealthStats {
        HealthStats {
            failures: self.failures.load(Ordering::Relaxed),
            skipped: self.skipped.load(Ordering::Relaxed),
        }
    }
}

/// `duration` in whole milliseconds, saturating.
pub fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn rests_after_a_failure_then_admits_again() {
        let health = Health::new(Duration::from_secs(1), Duration::from_secs(10));
        assert!(health.admit().is_ok());
        health.failed("lookup", &CacheError::Timeout(Duration::from_millis(50)));
        assert_eq!(health.admit(), Err(CacheError::Paused));
        tokio::time::advance(Duration::from_millis(999)).await;
        assert_eq!(health.admit(), Err(CacheError::Paused));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(health.admit().is_ok());
        health.succeeded();
        assert_eq!(
            health.stats(),
            HealthStats {
                failures: 1,
                skipped: 2
            }
        );
    }
}
