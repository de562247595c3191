//! What the reference services do with `ChangeAllServiceNodes`: a real backend reloads
//! its peer list; these have none (one process serves all five), so they count the calls
//! per service, noting whether the metadata was valid, for tests to see who was told.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::watch;

use super::metadata::{self, MetadataLog};
use crate::upstream::Service;

/// Per-service counts of `ChangeAllServiceNodes` calls.
#[derive(Debug)]
pub struct EventLog {
    calls: [AtomicU64; 5],
    valid: [AtomicU64; 5],
    /// Bumped on every call, so tests can wait without polling.
    changed: watch::Sender<u64>,
}

impl Default for EventLog {
    fn default() -> Self {
        Self {
            calls: Default::default(),
            valid: Default::default(),
            changed: watch::Sender::new(0),
        }
    }
}

impl EventLog {
    /// Records one call to `service` (its metadata goes to `log` as for every RPC).
    pub fn record<T>(&self, service: Service, log: &MetadataLog, request: &tonic::Request<T>) {
        let valid = metadata::check(log, request).is_ok() && has_traceparent(request);
        self.calls[service.index()].fetch_add(1, Ordering::SeqCst);
        if valid {
            self.valid[service.index()].fetch_add(1, Ordering::SeqCst);
        }
        self.changed.send_modify(|n| *n += 1);
    }

    /// Calls `service` received.
    pub fn calls(&self, service: Service) -> u64 {
        self.calls[service.index()].load(Ordering::SeqCst)
    }

    /// Of those, calls with a UUID `x-request-id`, a Jaeger `span-context` and a
    /// `traceparent`.
    pub fn valid_calls(&self, service: Service) -> u64 {
        self.valid[service.index()].load(Ordering::SeqCst)
    }

    /// Waits until `condition` holds (checked after every call).
    pub async fn wait_until(&self, condition: impl Fn(&Self) -> bool) {
        let mut changes = self.changed.subscribe();
        while !condition(self) {
            // The sender lives in `self`: it cannot be dropped while we borrow it.
            let _ = changes.changed().await;
        }
    }
}

fn has_traceparent<T>(request: &tonic::Request<T>) -> bool {
    request
        .metadata()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.len() == 55 && v.starts_with("00-"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn calls_are_counted_per_service_and_checked() {
        let events = EventLog::default();
        let log = MetadataLog::default();
        events.record(Service::Outing, &log, &tonic::Request::new(()));
        assert_eq!(events.calls(Service::Outing), 1);
        assert_eq!(events.valid_calls(Service::Outing), 0);
        assert_eq!(events.calls(Service::Auth), 0);
        events.wait_until(|e| e.calls(Service::Outing) == 1).await;
    }
}
