//! What the access log needs to know about a request besides its status: the client
//! address, the caller, the upstream service and instance, the cache result and the trace
//! id. Stages fill it in
//! as they learn it; the request-scoped cell lives only while the request is handled.

use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use opentelemetry::trace::TraceId;

use crate::telemetry::metrics::RouteSeries;

/// The facts of one request.
#[derive(Debug, Default, Clone)]
pub struct RequestRecord {
    /// The client address the guard decided on (the peer, or the forwarded address
    /// from a trusted proxy); unset on paths the guard exempts.
    pub client: Option<IpAddr>,
    pub caller: Option<Arc<str>>,
    pub service: Option<&'static str>,
    pub instance: Option<Arc<str>>,
    /// `HIT`, `MISS`, `STALE` or `BYPASS`.
    pub cache: Option<&'static str>,
    /// The trace id sent to the backend.
    pub trace_id: Option<TraceId>,
    /// The login id of a login request (for the audit stream).
    pub login_id: Option<String>,
    /// The template of the route that took the request (`None`: no route did).
    pub route: Option<&'static str>,
    /// The matched endpoint's request metrics.
    pub series: Option<Arc<RouteSeries>>,
}

/// A shared cell for one request's record.
pub type RecordCell = Arc<Mutex<RequestRecord>>;

tokio::task_local! {
    /// The record of the request the current task is handling.
    static CURRENT: RecordCell;
}

/// Runs `future` with `cell` as the current request's record.
pub async fn scope<F: Future>(cell: RecordCell, future: F) -> F::Output {
    CURRENT.scope(cell, future).await
}

/// Updates the current request's record (no-op outside a request).
pub fn update(change: impl FnOnce(&mut RequestRecord)) {
    let _outside_request =
        CURRENT.try_with(|cell| change(&mut cell.lock().unwrap_or_else(PoisonError::into_inner)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn updates_reach_the_scoped_cell_only() {
        update(|r| r.caller = Some("ignored".into()));
        let cell = RecordCell::default();
        scope(cell.clone(), async {
            update(|r| r.caller = Some("student-000000000001".into()));
            update(|r| r.cache = Some("HIT"));
        })
        .await;
        let record = cell.lock().expect("cell").clone();
        assert_eq!(record.caller.as_deref(), Some("student-000000000001"));
        assert_eq!(record.cache, Some("HIT"));
    }
}
