//! A gate that lets one log line through per interval and counts the ones it held
//! back, so a failure that happens on every request (Redis down, a full client table)
//! is reported without flooding the log.

use std::sync::atomic::{AtomicU64, Ordering};

/// One gate per kind of message.
#[derive(Debug)]
pub(crate) struct LogEvery {
    interval_ms: u64,
    /// Earliest time of the next line, in [`super::clock::GuardClock`] milliseconds;
    /// 0 lets the first one through.
    next_ms: AtomicU64,
    held_back: AtomicU64,
}

impl LogEvery {
    /// A gate opening at most once per `interval_ms`.
    pub(crate) fn new(interval_ms: u64) -> Self {
        Self {
            interval_ms,
            next_ms: AtomicU64::new(0),
            held_back: AtomicU64::new(0),
        }
    }

    /// `Some(lines held back since the last one)` when a line may be logged at `now_ms`.
    pub(crate) fn ready(&self, now_ms: u64) -> Option<u64> {
        let next = self.next_ms.load(Ordering::Relaxed);
        let open = now_ms >= next
            && self
                .next_ms
                .compare_exchange(
                    next,
                    now_ms.saturating_add(self.interval_ms),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok();
        if open {
            Some(self.held_back.swap(0, Ordering::Relaxed))
        } else {
            self.held_back.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_with_the_count_held_back() {
        let gate = LogEvery::new(10_000);
        assert_eq!(gate.ready(0), Some(0));
        assert_eq!(gate.ready(1), None);
        assert_eq!(gate.ready(9_999), None);
        assert_eq!(gate.ready(10_000), Some(2));
        assert_eq!(gate.ready(10_001), None);
        assert_eq!(gate.ready(30_000), Some(1));
    }
}
