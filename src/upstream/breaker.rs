//! A circuit breaker per instance (decision 15): closed → open after N consecutive
//! failed calls → half-open after the open period, letting one probe at a time through →
//! closed after M consecutive successful probes; a failed probe re-opens it.
//!
//! The breaker is a pure state machine over `tokio::time::Instant` (paused clocks in
//! tests). It reports transitions to its caller; the Consul health flip subscribes to
//! them elsewhere ([`super::flip`]).

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::http::GatewayError;

/// Breaker numbers (decision 15 defaults: 5 failures, 60 s open, 5 successes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerSettings {
    pub failures_to_open: u32,
    pub open_for: Duration,
    pub successes_to_close: u32,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        Self {
            failures_to_open: 5,
            open_for: Duration::from_secs(60),
            successes_to_close: 5,
        }
    }
}

/// What a call's result means for the breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure,
}

impl Outcome {
    /// Classifies a call result: transport errors, deadlines and the gRPC codes
    /// UNAVAILABLE, INTERNAL and UNKNOWN are failures; any reply (whatever its in-band
    /// status) and other gRPC codes show a live instance.
    pub fn of<T>(result: &Result<T, GatewayError>) -> Outcome {
        match result {
            Ok(_) => Outcome::Success,
            Err(GatewayError::Deadline { .. } | GatewayError::NoHealthyInstance { .. }) => {
                Outcome::Failure
            }
            Err(GatewayError::Upstream {
                grpc_code: 2 | 13 | 14,
                ..
            }) => Outcome::Failure,
            Err(_) => Outcome::Success,
        }
    }
}

/// The observable state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open { until: Instant },
    HalfOpen,
}

impl BreakerState {
    /// Name for metrics and logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open { .. } => "open",
            Self::HalfOpen => "half_open",
        }
    }
}

/// A change of state that others may act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Opened { until: Instant },
    HalfOpened,
    Closed,
}

#[derive(Debug)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { successes: u32, probing: bool },
}

/// The breaker of one instance.
#[derive(Debug)]
pub struct Breaker {
    settings: BreakerSettings,
    state: Mutex<State>,
}

/// Permission to call, returned by [`Breaker::admit`]; give it back with
/// [`Breaker::record`]. A probe permit that is dropped unrecorded (the request was
/// cancelled) frees the probe slot.
#[derive(Debug)]
#[must_use = "record the call's outcome"]
pub struct Permit<'a> {
    breaker: &'a Breaker,
    probe: bool,
    recorded: bool,
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if self.probe && !self.recorded {
            let mut state = self.breaker.lock();
            if let State::HalfOpen { probing, .. } = &mut *state {
                *probing = false;
            }
        }
    }
}

impl Breaker {
    /// A closed breaker.
    pub fn new(settings: BreakerSettings) -> Self {
        Self {
            settings,
            state: Mutex::new(State::Closed { failures: 0 }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The current state (an open breaker whose period passed reads as half-open).
    pub fn state(&self, now: Instant) -> BreakerState {
        match *self.lock() {
            State::Closed { .. } => BreakerState::Closed,
            State::Open { until } if now < until => BreakerState::Open { until },
            State::Open { .. } | State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Whether a call would be admitted now (no state change): used to skip instances
    /// while picking.
    pub fn admits(&self, now: Instant) -> bool {
        match *self.lock() {
            State::Closed { .. } => true,
            State::Open { until } => now >= until,
            State::HalfOpen { probing, .. } => !probing,
        }
    }

    /// Admits a call, or answers how long the breaker stays open. Moving from open to
    /// half-open happens here, on the first call after the open period.
    pub fn admit(&self, now: Instant) -> Result<(Permit<'_>, Option<Transition>), Duration> {
        let mut state = self.lock();
        let (probe, transition) = match &mut *state {
            State::Closed { .. } => (false, None),
            State::Open { until } if now < *until => return Err(*until - now),
            State::Open { .. } => {
                *state = State::HalfOpen {
                    successes: 0,
                    probing: true,
                };
                (true, Some(Transition::HalfOpened))
            }
            State::HalfOpen { probing: true, .. } => return Err(Duration::ZERO),
            State::HalfOpen { probing, .. } => {
                *probing = true;
                (true, None)
            }
        };
        Ok((
            Permit {
                breaker: self,
                probe,
                recorded: false,
            },
            transition,
        ))
    }

    /// Records a call's outcome; returns the transition it caused, if any.
    pub fn record(
        &self,
        mut permit: Permit<'_>,
        outcome: Outcome,
        now: Instant,
    ) -> Option<Transition> {
        permit.recorded = true;
        let settings = self.settings;
        let mut state = self.lock();
        let open = |state: &mut State| {
            let until = now + settings.open_for;
            *state = State::Open { until };
            Some(Transition::Opened { until })
        };
        match (&mut *state, outcome) {
            (State::Closed { failures }, Outcome::Success) => {
                *failures = 0;
                None
            }
            (State::Closed { failures }, Outcome::Failure) => {
                *failures += 1;
                if *failures >= settings.failures_to_open {
                    open(&mut state)
                } else {
                    None
                }
            }
            (State::HalfOpen { .. }, Outcome::Failure) if permit.probe => open(&mut state),
            (State::HalfOpen { successes, probing }, Outcome::Success) if permit.probe => {
                *successes += 1;
                *probing = false;
                if *successes >= settings.successes_to_close {
                    *state = State::Closed { failures: 0 };
                    Some(Transition::Closed)
                } else {
                    None
                }
            }
            // Results of calls admitted before the state changed carry no news.
            _ => None,
        }
    }

    /// When the breaker's open period ends, if it is open.
    pub fn open_until(&self) -> Option<Instant> {
        match *self.lock() {
            State::Open { until } => Some(until),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> Breaker {
        Breaker::new(BreakerSettings::default())
    }

    fn call(b: &Breaker, outcome: Outcome) -> Result<Option<Transition>, Duration> {
        let now = Instant::now();
        let (permit, _) = b.admit(now)?;
        Ok(b.record(permit, outcome, now))
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_five_consecutive_failures() {
        let b = breaker();
        for _ in 0..4 {
            assert_eq!(call(&b, Outcome::Failure), Ok(None));
        }
        // A success in between resets the count.
        assert_eq!(call(&b, Outcome::Success), Ok(None));
        for _ in 0..4 {
            assert_eq!(call(&b, Outcome::Failure), Ok(None));
        }
        let opened = call(&b, Outcome::Failure).expect("admitted");
        assert!(matches!(opened, Some(Transition::Opened { .. })));
        let remaining = call(&b, Outcome::Success).expect_err("open");
        assert_eq!(remaining, Duration::from_secs(60));
        assert!(!b.admits(Instant::now()));
    }

    #[tokio::test(start_paused = true)]
    async fn half_open_lets_one_probe_at_a_time_and_closes_after_five_successes() {
        let b = breaker();
        for _ in 0..5 {
            let _ = call(&b, Outcome::Failure);
        }
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(b.state(Instant::now()), BreakerState::HalfOpen);
        let now = Instant::now();
        let (probe, transition) = b.admit(now).expect("probe");
        assert_eq!(transition, Some(Transition::HalfOpened));
        assert!(b.admit(now).is_err(), "second concurrent probe refused");
        assert_eq!(b.record(probe, Outcome::Success, now), None);
        for _ in 0..3 {
            assert_eq!(call(&b, Outcome::Success), Ok(None));
        }
        assert_eq!(call(&b, Outcome::Success), Ok(Some(Transition::Closed)));
        assert_eq!(b.state(Instant::now()), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn failed_probe_reopens() {
        let b = breaker();
        for _ in 0..5 {
            let _ = call(&b, Outcome::Failure);
        }
        tokio::time::advance(Duration::from_secs(61)).await;
        let reopened = call(&b, Outcome::Failure).expect("probe admitted");
        assert!(matches!(reopened, Some(Transition::Opened { .. })));
        assert!(matches!(b.state(Instant::now()), BreakerState::Open { .. }));
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_probe_frees_the_slot() {
        let b = breaker();
        for _ in 0..5 {
            let _ = call(&b, Outcome::Failure);
        }
        tokio::time::advance(Duration::from_secs(60)).await;
        let now = Instant::now();
        drop(b.admit(now).expect("probe"));
        assert!(b.admit(now).is_ok(), "slot freed");
    }

    #[test]
    fn classification() {
        let ok: Result<(), GatewayError> = Ok(());
        assert_eq!(Outcome::of(&ok), Outcome::Success);
        let deadline: Result<(), _> = Err(GatewayError::Deadline {
            rpc: "X",
            sent: true,
        });
        assert_eq!(Outcome::of(&deadline), Outcome::Failure);
        let upstream = |grpc_code| -> Result<(), GatewayError> {
            Err(GatewayError::Upstream {
                rpc: "X",
                grpc_code,
                detail: String::new(),
                sent: true,
            })
        };
        assert_eq!(Outcome::of(&upstream(14)), Outcome::Failure);
        assert_eq!(Outcome::of(&upstream(13)), Outcome::Failure);
        assert_eq!(Outcome::of(&upstream(2)), Outcome::Failure);
        assert_eq!(Outcome::of(&upstream(12)), Outcome::Success);
    }
}
