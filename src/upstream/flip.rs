//! The Consul health flip (decision 15): while an instance's breaker is open, the
//! instance is in Consul **maintenance mode**, so every gateway replica's watcher drops
//! it; when the open period ends, maintenance is lifted and the half-open probes can
//! reach it.
//!
//! Maintenance mode is a critical check of its own (`_service_maintenance:<id>`) that
//! the instance's TTL heartbeat cannot overwrite, unlike a `check/update` of the
//! instance's own TTL check. A failed flip is logged and retried with back-off; it never
//! touches a client request.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::breaker::Transition;
use super::call::NodeTransition;
use super::consul::ConsulClient;
use super::discovery::Backoff;
use crate::audit::Audit;

/// Consumes breaker transitions until the sender side is dropped.
pub async fn run(
    client: ConsulClient,
    replica: String,
    mut transitions: mpsc::UnboundedReceiver<NodeTransition>,
    audit: Arc<Audit>,
) {
    while let Some(event) = transitions.recv().await {
        if let Transition::Opened { until } = event.transition {
            tokio::spawn(flip_cycle(
                client.clone(),
                replica.clone(),
                event,
                until,
                audit.clone(),
            ));
        }
    }
}

/// Marks the instance critical now and passing again when its open period ends, unless
/// the breaker re-opened meanwhile (the newer cycle then owns the flip back).
async fn flip_cycle(
    client: ConsulClient,
    replica: String,
    event: NodeTransition,
    until: Instant,
    audit: Arc<Audit>,
) {
    let node = &event.node;
    let open_for = until.saturating_duration_since(Instant::now());
    let reason = format!(
        "sms-gateway {replica}: circuit breaker open until unix {}",
        unix_now() + open_for.as_secs()
    );
    let enabled = retry_until(
        until,
        || client.maintenance(&node.id, true, &reason),
        &node.id,
        "mark critical",
    )
    .await;
    if enabled {
        tracing::info!(service = %event.service, instance = %node.id, "instance marked critical in consul (maintenance)");
        audit.breaker_flip(event.service.as_str(), &node.id, true);
    }
    tokio::time::sleep_until(until).await;
    if node.breaker.open_until().is_some_and(|later| later > until) {
        return;
    }
    // Lift it whether or not the enable call was seen to succeed: it may have landed.
    let give_up = Instant::now() + Duration::from_secs(600);
    if retry_until(
        give_up,
        || client.maintenance(&node.id, false, ""),
        &node.id,
        "mark passing",
    )
    .await
    {
        tracing::info!(service = %event.service, instance = %node.id, "instance marked passing in consul");
        audit.breaker_flip(event.service.as_str(), &node.id, false);
    }
}

/// Retries `call` with back-off until it succeeds or `deadline` passes.
async fn retry_until<F, Fut>(deadline: Instant, mut call: F, instance: &str, what: &str) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), super::consul::ConsulError>>,
{
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    loop {
        match call().await {
            Ok(()) => return true,
            Err(err) => {
                let pause = backoff.next_pause();
                if Instant::now() + pause >= deadline {
                    tracing::error!(instance, what, error = %err, "consul health flip failed; giving up");
                    return false;
                }
                tracing::warn!(instance, what, error = %err, retry_in_ms = pause.as_millis() as u64, "consul health flip failed; retrying");
                tokio::time::sleep(pause).await;
            }
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}
