//! The consul-change broadcast (spec §4.6 step 5): the backends learn about each other
//! only through the gateway, which calls `ChangeAllServiceNodes(Empty)` on them so each
//! reloads its own peer list. Unlike the original (one node per service), every passing
//! instance of every service is told, since each keeps its own list.
//!
//! A broadcast follows any node-list change (watcher or webhook) and the first load at
//! start-up. Bursts are coalesced: it goes out once no change came for
//! `consul.broadcast_delay`, at most ten delays after the first change of the burst. It
//! runs in its own task (never on the request path), with bounded concurrency, the
//! upstream connect timeout and a 3 s deadline, the usual metadata, and without touching
//! breakers: a backend that does not answer is only counted and logged.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use http::uri::PathAndQuery;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::Instrument;

use super::Service;
use super::call::{CallMeta, Upstreams, unary};
use super::connection::encode;
use super::pool::Node;
use crate::telemetry::metrics::BroadcastLabels;
use crate::telemetry::propagation::CallContext;

/// Deadline of one broadcast call (spec §4.6: 3 s request timeout).
pub const DEADLINE: Duration = Duration::from_secs(3);

/// How long a burst may postpone its broadcast, in broadcast delays.
const MAX_HOLD: u32 = 10;

/// Settings of the broadcast.
#[derive(Debug, Clone, Copy)]
pub struct BroadcastSettings {
    /// Quiet time after the last change.
    pub delay: Duration,
    /// Calls in flight at once.
    pub concurrency: usize,
}

/// The method path of `service`'s `ChangeAllServiceNodes` (proto/*/event.proto; outing
/// has no package).
pub fn method_path(service: Service) -> &'static str {
    match service {
        Service::Auth => "/auth.event.AuthEvent/ChangeAllServiceNodes",
        Service::Club => "/club.event.ClubEvent/ChangeAllServiceNodes",
        Service::Outing => "/OutingEvent/ChangeAllServiceNodes",
        Service::Schedule => "/schedule.ScheduleEvent/ChangeAllServiceNodes",
        Service::Announcement => "/announcement.AnnouncementEvent/ChangeAllServiceNodes",
    }
}

/// Starts the broadcaster: it waits for `changes` (notified by the watchers on every
/// node-list change) and tells every instance after each coalesced burst.
pub fn start(
    upstreams: Arc<Upstreams>,
    changes: Arc<Notify>,
    settings: BroadcastSettings,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut started_up = false;
        loop {
            changes.notified().await;
            // The start-up broadcast waits for every service's first load (bounded).
            settle(&changes, settings.delay, || {
                !started_up
                    && !Service::ALL
                        .iter()
                        .all(|s| upstreams.pool(*s).snapshot().loaded)
            })
            .await;
            started_up = true;
            broadcast(&upstreams, settings.concurrency).await;
        }
    })
}

/// Returns once `delay` passed without a notification of `changes` and `hold()` is false,
/// or `MAX_HOLD` delays after it was called, whichever comes first.
pub async fn settle(changes: &Notify, delay: Duration, hold: impl Fn() -> bool) {
    let cap = Instant::now() + delay * MAX_HOLD;
    loop {
        let quiet = (Instant::now() + delay).min(cap);
        tokio::select! {
            () = changes.notified() => {}
            () = tokio::time::sleep_until(quiet) => {
                if !hold() {
                    return;
                }
            }
        }
        if Instant::now() >= cap {
            return;
        }
    }
}

/// Tells every instance of every service now; returns (told, failed).
pub async fn broadcast(upstreams: &Upstreams, concurrency: usize) -> (usize, usize) {
    let started = Instant::now();
    let root = tracing::debug_span!(
        parent: None,
        "consul.broadcast",
        otel.name = "ChangeAllServiceNodes broadcast",
        otel.kind = "internal",
    );
    let targets: Vec<(Service, Arc<Node>)> = Service::ALL
        .into_iter()
        .flat_map(|service| {
            upstreams
                .pool(service)
                .snapshot()
                .nodes
                .iter()
                .map(|node| (service, node.clone()))
                .collect::<Vec<_>>()
        })
        .collect();
    let total = targets.len();
    let failed = futures_util::stream::iter(targets)
        .map(|(service, node)| tell(upstreams, service, node, &root))
        .buffer_unordered(concurrency.max(1))
        .filter(|ok| std::future::ready(!ok))
        .count()
        .await;
    tracing::debug!(
        instances = total,
        failed,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "consul-change broadcast: ChangeAllServiceNodes sent"
    );
    (total - failed, failed)
}

/// One call; `true` when the instance answered. No breaker is consulted or fed.
async fn tell(
    upstreams: &Upstreams,
    service: Service,
    node: Arc<Node>,
    root: &tracing::Span,
) -> bool {
    let span = tracing::debug_span!(
        parent: root,
        "grpc.call",
        otel.name = "ChangeAllServiceNodes",
        otel.kind = "client",
        rpc.system = "grpc",
        rpc.service = service.as_str(),
        rpc.method = "ChangeAllServiceNodes",
        server.address = %node.address,
        instance = %node.id,
    );
    let context = CallContext::of(&span, root);
    let meta = CallMeta {
        request_id: crate::http::request_id::fresh(),
    };
    let result: Result<(), _> = unary(
        &node,
        "ChangeAllServiceNodes",
        PathAndQuery::from_static(method_path(service)),
        encode(&()),
        &meta,
        &context,
        DEADLINE,
    )
    .instrument(span)
    .await;
    let outcome = if result.is_ok() { "ok" } else { "error" };
    upstreams
        .metrics()
        .broadcasts
        .get_or_create(&BroadcastLabels {
            service: service.as_str(),
            outcome,
        })
        .inc();
    if let Err(err) = &result {
        tracing::debug!(%service, instance = %node.id, address = %node.address, error = %err, "ChangeAllServiceNodes failed");
    }
    result.is_ok()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    const DELAY: Duration = Duration::from_millis(200);

    #[tokio::test(start_paused = true)]
    async fn a_single_change_settles_after_the_delay() {
        let changes = Notify::new();
        let started = Instant::now();
        settle(&changes, DELAY, || false).await;
        assert_eq!(started.elapsed(), DELAY);
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_settles_one_delay_after_its_last_change() {
        let changes = Arc::new(Notify::new());
        let poke = changes.clone();
        let started = Instant::now();
        tokio::spawn(async move {
            for _ in 0..3 {
                tokio::time::sleep(Duration::from_millis(150)).await;
                poke.notify_one();
            }
        });
        settle(&changes, DELAY, || false).await;
        assert_eq!(started.elapsed(), Duration::from_millis(450) + DELAY);
    }

    #[tokio::test(start_paused = true)]
    async fn endless_changes_or_holds_are_capped() {
        let changes = Arc::new(Notify::new());
        let poke = changes.clone();
        let started = Instant::now();
        let pokes = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(50)).await;
                poke.notify_one();
            }
        });
        settle(&changes, DELAY, || false).await;
        assert_eq!(started.elapsed(), DELAY * MAX_HOLD);
        pokes.abort();

        let started = Instant::now();
        settle(&Notify::new(), DELAY, || true).await;
        assert_eq!(started.elapsed(), DELAY * MAX_HOLD);
    }

    #[tokio::test(start_paused = true)]
    async fn a_hold_is_released_at_the_next_quiet_point() {
        let held = Arc::new(AtomicBool::new(true));
        let release = held.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            release.store(false, Ordering::SeqCst);
        });
        let started = Instant::now();
        settle(&Notify::new(), DELAY, || held.load(Ordering::SeqCst)).await;
        assert_eq!(started.elapsed(), DELAY * 2);
    }
}
