//! The guard's time source: tokio's clock, read as an offset from the moment the
//! guard was built.
//!
//! Every limiter of the guard reads time through [`GuardClock`] (governor too, through
//! its [`governor::clock::Clock`] impl), so tests can pause and advance tokio's clock
//! instead of sleeping (style rule 10).

use std::time::Duration;

use governor::nanos::Nanos;
use tokio::time::Instant;

/// Milliseconds (or governor nanoseconds) since the guard was built.
#[derive(Debug, Clone, Copy)]
pub(crate) struct GuardClock {
    start: Instant,
}

impl GuardClock {
    /// A clock starting now.
    pub(crate) fn new() -> Self {
        Self {
            start: Instant::now(),
        }
    }

    /// Time since the start.
    pub(crate) fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// Whole milliseconds since the start.
    pub(crate) fn now_ms(&self) -> u64 {
        millis(self.elapsed())
    }
}

impl governor::clock::Clock for GuardClock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        Nanos::from(self.elapsed())
    }
}

/// `duration` in whole milliseconds, saturating (no real duration gets near it).
pub(crate) fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
