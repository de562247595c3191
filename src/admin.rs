//! The admin listener (`admin.listen`, default `127.0.0.1:9464`): operator endpoints
//! kept off the public port, outside the client-IP guard and the access log.
//!
//! - `GET /metrics`: the Prometheus (OpenMetrics) text exposition;
//! - `GET /admin/audit?since=<seq>`: the audit ring as JSON ([`crate::audit::Page`]),
//!   events with a sequence number above `since` (default 0: all kept).
//!
//! It is small on purpose: HTTP/1.1 only, a few connections at a time, each with a
//! header-read timeout and a lifetime cap, so a stuck scraper cannot hold it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::app::AppState;
use crate::http::GatewayError;
use crate::http::error::json_content_type;

/// `[admin]` settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Address of the admin listener. Default `127.0.0.1:9464` (loopback: in a
    /// container set `0.0.0.0:9464` and keep the port unpublished).
    #[serde(default = "listen")]
    pub listen: SocketAddr,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self { listen: listen() }
    }
}

fn listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9464))
}

/// Connections served at once; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 16;
/// Time to receive a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest life of one connection (Prometheus reconnects by itself).
const CONNECTION_LIFETIME: Duration = Duration::from_secs(300);

/// The admin routes.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/admin/audit", get(audit))
        .fallback(not_found)
        .with_state(state)
}

/// Serves the admin routes on `listener` until the task is dropped or aborted.
pub async fn serve(listener: TcpListener, state: Arc<AppState>) {
    let router = router(state);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let (stream, _peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                // Out of descriptors and the like: pause instead of spinning.
                tracing::warn!(error = %err, "admin listener: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let service = TowerToHyperService::new(router.clone());
        tokio::spawn(async move {
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(16 * 1024)
                .serve_connection(TokioIo::new(stream), service);
            let _ended = tokio::time::timeout(CONNECTION_LIFETIME, connection).await;
            drop(permit);
        });
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let mut response = state.metrics.render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    response
}

/// `since`: the last sequence number the reader has seen (0 or absent: everything
/// kept). Events are numbered from 1 per process; `epoch_ms` in the answer changes
/// when the process restarted.
async fn audit(State(state): State<Arc<AppState>>, RawQuery(query): RawQuery) -> Response {
    let mut since = 0;
    for (key, value) in form_urlencoded::parse(query.as_deref().unwrap_or("").as_bytes()) {
        if key == "since" {
            match value.parse::<u64>() {
                Ok(n) => since = n,
                Err(_) => {
                    return GatewayError::bind("query", "since must be a sequence number")
                        .into_response();
                }
            }
        }
    }
    let page = state.audit.since(since);
    match serde_json::to_vec(&page) {
        Ok(body) => {
            let mut response = body.into_response();
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, json_content_type());
            response
        }
        Err(err) => GatewayError::Internal(format!("audit page: {err}")).into_response(),
    }
}

async fn not_found(request: axum::extract::Request) -> GatewayError {
    GatewayError::NotFound {
        path: request.uri().path().to_owned(),
    }
}
