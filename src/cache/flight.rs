//! Single flight: concurrent identical misses make one backend call. The first request
//! for a slot leads and runs the call; the others wait for its outcome (success or
//! error) instead of calling too. Slots include the group versions, so a request that
//! starts after an invalidation never joins a call that started before it.
//!
//! If the leader goes away before finishing (its client disconnected), the waiting
//! requests run their own call rather than wait for nothing.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use tokio::sync::watch;

/// The in-flight calls of one process, by slot.
#[derive(Debug)]
pub struct Flights<T> {
    calls: Mutex<HashMap<String, watch::Receiver<Option<T>>>>,
}

impl<T> Default for Flights<T> {
    fn default() -> Self {
        Self {
            calls: Mutex::new(HashMap::new()),
        }
    }
}

/// Whether a request ran the call or waited for another one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Leader,
    Follower,
}

impl<T: Clone> Flights<T> {
    /// Runs `call` for `slot` unless the same slot is already in flight, in which case
    /// it waits for that call's outcome.
    pub async fn run<F>(&self, slot: &str, call: F) -> (T, Role)
    where
        F: Future<Output = T>,
    {
        let joined = {
            let mut calls = self.calls.lock().unwrap_or_else(PoisonError::into_inner);
            match calls.get(slot) {
                Some(receiver) => Err(receiver.clone()),
                None => {
                    let (sender, receiver) = watch::channel(None);
                    calls.insert(slot.to_owned(), receiver);
                    Ok(sender)
                }
            }
        };
        match joined {
            Ok(sender) => {
                let lead = Lead {
                    flights: self,
                    slot,
                    sender,
                };
                let outcome = call.await;
                lead.finish(outcome.clone());
                (outcome, Role::Leader)
            }
            Err(mut receiver) => {
                let shared = match receiver.wait_for(Option::is_some).await {
                    Ok(value) => value.clone(),
                    Err(_) => None,
                };
                match shared {
                    Some(outcome) => (outcome, Role::Follower),
                    // The leader was dropped: call ourselves, without coalescing.
                    None => (call.await, Role::Leader),
                }
            }
        }
    }

    /// How many slots are in flight.
    pub fn in_flight(&self) -> usize {
        self.calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// The leader's registration; removed when the call finishes or is dropped.
struct Lead<'a, T> {
    flights: &'a Flights<T>,
    slot: &'a str,
    sender: watch::Sender<Option<T>>,
}

impl<T> Lead<'_, T> {
    fn finish(self, outcome: T) {
        self.sender.send_replace(Some(outcome));
        // `Drop` unregisters the slot.
    }
}

impl<T> Drop for Lead<'_, T> {
    fn drop(&mut self) {
        let mut calls = self
            .flights
            .calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let ours = calls
            .get(self.slot)
            .is_some_and(|receiver| receiver.same_channel(&self.sender.subscribe()));
        if ours {
            calls.remove(self.slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::sync::Notify;

    use super::*;

    #[tokio::test]
    async fn concurrent_calls_for_one_slot_run_once() {
        let flights = Arc::new(Flights::<u32>::default());
        let calls = Arc::new(AtomicUsize::new(0));
        let release = Arc::new(Notify::new());
        let leader = {
            let (flights, calls, release) = (flights.clone(), calls.clone(), release.clone());
            tokio::spawn(async move {
                flights
                    .run("k", async {
                        calls.fetch_add(1, Ordering::SeqCst);
                        release.notified().await;
                        7
                    })
                    .await
            })
        };
        // Wait until the leader is registered (bounded).
        for _ in 0..1000 {
            if flights.in_flight() == 1 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(flights.in_flight(), 1);
        let followers: Vec<_> = (0..10)
            .map(|_| {
                let (flights, calls) = (flights.clone(), calls.clone());
                tokio::spawn(async move {
                    flights
                        .run("k", async {
                            calls.fetch_add(1, Ordering::SeqCst);
                            0
                        })
                        .await
                })
            })
            .collect();
        // Let the followers subscribe before the leader finishes.
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        release.notify_one();
        assert_eq!(leader.await.expect("leader"), (7, Role::Leader));
        for follower in followers {
            assert_eq!(follower.await.expect("follower"), (7, Role::Follower));
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(flights.in_flight(), 0);
    }

    #[tokio::test]
    async fn followers_call_themselves_when_the_leader_is_dropped() {
        let flights = Arc::new(Flights::<u32>::default());
        let leader = {
            let flights = flights.clone();
            tokio::spawn(async move { flights.run("k", std::future::pending::<u32>()).await })
        };
        for _ in 0..1000 {
            if flights.in_flight() == 1 {
                break;
            }
            tokio::task::yield_now().await;
        }
        let follower = {
            let flights = flights.clone();
            tokio::spawn(async move { flights.run("k", async { 3 }).await })
        };
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        leader.abort();
        assert_eq!(follower.await.expect("follower"), (3, Role::Leader));
        assert_eq!(flights.in_flight(), 0);
    }
}
