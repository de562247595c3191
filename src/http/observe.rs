//! The outermost layer of the public listener, wrapped once around the whole router (not
//! around each route, where axum would clone the layered stack of the route on every
//! request): a fresh request id in place of any the client sent (the backends require a
//! UUID; in the request's header, where the pipeline reads it, and on the response),
//! Authorization marked sensitive, a server span (continuing an incoming W3C
//! `traceparent`), one log line with what the stages recorded, the request metrics, and
//! a panic anywhere inside turned into the 500 envelope.
//!
//! It runs before routing, so the route template (for metrics, the log line and the span)
//! is what the matched route's handler recorded (`RequestRecord::route`); an answer no
//! handler gave (the client-IP guard's 429/403, a CORS preflight) is named by matching
//! its path against the templates ([`Templates`]), off the hot path; a path that matches
//! none (404) is `unmatched`.

use std::convert::Infallible;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, PoisonError};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::{ConnectInfo, Request};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use opentelemetry::trace::TraceContextExt;
use tower::{Layer, Service, ServiceExt};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::app::AppState;
use crate::audit::RequestFacts;
use crate::http::GatewayError;
use crate::http::error::Failure;
use crate::http::request_id::{self, X_REQUEST_ID};
use crate::telemetry::json_line::IpText;
use crate::telemetry::metrics::{RejectionLabels, method_label};
use crate::telemetry::propagation::TraceIdText;
use crate::telemetry::record::{self, RecordCell, RequestRecord};
use crate::telemetry::{Metrics, propagation};

/// The route of requests that no route took (404) in metrics and logs.
const UNMATCHED: &str = "unmatched";

/// The router's route templates, to name the requests whose answer no route handler
/// gave.
#[derive(Debug, Default)]
pub struct Templates(matchit::Router<&'static str>);

impl Templates {
    /// The templates of `paths` (axum's `{param}` syntax, as the router has them).
    pub fn new(paths: impl IntoIterator<Item = &'static str>) -> Self {
        let mut router = matchit::Router::new();
        for path in paths {
            if let Err(err) = router.insert(path, path) {
                // The router itself refuses such a table at start-up.
                tracing::debug!(path, %err, "route template not added");
            }
        }
        Self(router)
    }

    /// The template `path` matches, if any.
    pub fn of(&self, path: &str) -> Option<&'static str> {
        self.0.at(path).ok().map(|found| *found.value)
    }
}

/// Wraps a service with [`Observe`].
#[derive(Debug, Clone)]
pub struct ObserveLayer {
    state: Arc<AppState>,
    templates: Arc<Templates>,
}

impl ObserveLayer {
    pub fn new(state: Arc<AppState>, templates: Templates) -> Self {
        Self {
            state,
            templates: Arc::new(templates),
        }
    }
}

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Observe {
            inner,
            state: self.state.clone(),
            templates: self.templates.clone(),
        }
    }
}

/// The service of [`ObserveLayer`].
#[derive(Debug, Clone)]
pub struct Observe<S> {
    inner: S,
    state: Arc<AppState>,
    templates: Arc<Templates>,
}

impl<S> Service<Request> for Observe<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // The inner service is made ready inside the request's scope (`oneshot`).
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let inner = self.inner.clone();
        let state = self.state.clone();
        let templates = self.templates.clone();
        Box::pin(async move { Ok(observe(&state, &templates, inner, request).await) })
    }
}

/// Serves `request` with `inner` and observes it (see the module doc).
async fn observe<S>(
    state: &AppState,
    templates: &Templates,
    inner: S,
    mut request: Request,
) -> Response
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    let started = Instant::now();
    let id = request_id::fresh();
    let headers = request.headers_mut();
    headers.insert(X_REQUEST_ID.clone(), id.clone());
    if let header::Entry::Occupied(mut authorization) = headers.entry(header::AUTHORIZATION) {
        authorization
            .iter_mut()
            .for_each(|value| value.set_sensitive(true));
    }
    let method = request.method().clone();
    // A shared handle on the path (reference counts), for an answer no handler named.
    let uri = request.uri().clone();
    // Its own handle on the id's bytes (a reference count): `id` goes to the response.
    let id_text = id.clone();
    let request_id = id_text.to_str().unwrap_or("");
    // The guard's client-IP rule, for the audit stream.
    let client_ip = request
        .extensions()
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .map(|peer| state.guard.ip().client_ip(peer.0.ip(), request.headers()));
    // OTel HTTP server conventions: named `{METHOD} {route}`, ERROR status on 5xx only;
    // the route is known once a route took the request.
    let span = tracing::debug_span!(
        "request",
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = method_label(method.as_str()),
        http.route = tracing::field::Empty,
        http.response.status_code = tracing::field::Empty,
        request.id = %request_id,
        caller.kind = tracing::field::Empty,
    );
    if !span.is_disabled()
        && let Some(parent) = propagation::w3c::extract(request.headers())
    {
        let _ignored = span.set_parent(parent);
    }
    let cell = RecordCell::default();
    // The inner service is called inside the record's scope (its stages write to it),
    // and a panic anywhere in it becomes the 500 envelope.
    let served = AssertUnwindSafe(inner.oneshot(request)).catch_unwind();
    let mut response = match record::scope(cell.clone(), served)
        .instrument(span.clone())
        .await
    {
        Ok(Ok(response)) => response,
        Ok(Err(never)) => match never {},
        Err(_panic) => {
            GatewayError::Internal("a request handler panicked".to_owned()).into_response()
        }
    };
    response
        .headers_mut()
        .entry(X_REQUEST_ID.clone())
        .or_insert(id);
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    // The request is over: nothing writes the record any more, so take it whole.
    let record = std::mem::take(&mut *cell.lock().unwrap_or_else(PoisonError::into_inner));
    let route = record
        .route
        .or_else(|| templates.of(uri.path()))
        .unwrap_or(UNMATCHED);
    if !span.is_disabled() {
        span.record("http.route", route);
        // The OTel span may have started (a child asked for its context) before the
        // route was known: rename it through OpenTelemetry, which any state allows.
        span.context()
            .span()
            .update_name(format!("{method} {route}"));
        // As an integer attribute (tracing would record a u16 as text).
        span.record("http.response.status_code", i64::from(status));
        if status >= 500 {
            span.record("otel.status_code", "ERROR");
        }
    }
    state.metrics.observe_request(
        record.series.as_deref(),
        method.as_str(),
        route,
        status,
        elapsed,
    );
    let trace = (!span.is_disabled())
        .then(|| span.context().span().span_context().trace_id())
        .filter(|id| *id != opentelemetry::trace::TraceId::INVALID)
        .or(record.trace_id);
    let trace_text = trace.map(TraceIdText::new);
    let trace_id = trace_text.as_ref().map_or("", TraceIdText::as_str);
    let failure = response.extensions().get::<Failure>();
    count_outcomes(&state.metrics, route, &record, failure);
    if let Some(Failure(err)) = failure {
        let facts = RequestFacts {
            route,
            client_ip,
            caller: record.caller.as_deref(),
            login_id: record.login_id.as_deref(),
            request_id,
            service_known: record.service.is_some(),
        };
        state.audit.observe(facts, err);
    }
    let code = failure.map_or(0, |Failure(err)| err.code());
    let latency_us = elapsed.as_micros() as u64;
    let caller = record.caller.as_deref().unwrap_or("");
    let service = record.service.unwrap_or("");
    let instance = record.instance.as_deref().unwrap_or("");
    let cache = record.cache.unwrap_or("");
    let client_text = record.client.map(IpText::new);
    let client = client_text.as_ref().map(IpText::as_str);
    match failure {
        Some(Failure(err)) if status >= 500 => tracing::error!(
            method = method.as_str(), route, status, code, latency_us, request_id, trace_id, client, caller, service, instance, cache, error = %err, "request"
        ),
        _ => tracing::info!(
            method = method.as_str(),
            route,
            status,
            code,
            latency_us,
            request_id,
            trace_id,
            client,
            caller,
            service,
            instance,
            cache,
            "request"
        ),
    }
    response
}

/// Counts cache results and rejections of one request.
fn count_outcomes(
    metrics: &Metrics,
    route: &str,
    record: &RequestRecord,
    failure: Option<&Failure>,
) {
    if let Some(cache) = record.cache {
        metrics.observe_cache(record.series.as_deref(), route, cache);
    }
    let kind = match failure {
        Some(Failure(GatewayError::Blocked { .. })) => "ip_blocked",
        // The pipeline names the service before its rate limit; the IP guard runs
        // before routing, so no service is known then.
        Some(Failure(GatewayError::RateLimited { .. })) if record.service.is_some() => {
            "service_limited"
        }
        Some(Failure(GatewayError::RateLimited { .. })) => "ip_limited",
        _ => return,
    };
    metrics
        .rejections
        .get_or_create(&RejectionLabels {
            kind,
            service: record.service.unwrap_or(""),
        })
        .inc();
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use axum::Router;
    use axum::body::Body;
    use axum::routing::get;

    use super::*;
    use crate::config::Config;

    /// A gateway whose backends are never reached, with `extra` configuration.
    fn gateway(extra: &str) -> crate::app::Gateway {
        let mut text = "[jwt]\nsecret = \"observe-test-secret-observe-test-secret\"\n".to_owned();
        text.push_str(extra);
        for service in crate::upstream::Service::ALL {
            text.push_str(&format!(
                "[upstream.services.{service}]\naddresses = [\"127.0.0.1:9\"]\n"
            ));
        }
        let config = Config::from_toml(&text, &BTreeMap::<String, String>::new()).expect("config");
        crate::app::build(&config).expect("gateway")
    }

    #[test]
    fn templates_name_paths_as_the_router_matches_them() {
        let templates = Templates::new(["/ping", "/v1/outings/uuid/{outing_uuid}"]);
        assert_eq!(
            templates.of("/v1/outings/uuid/outing-000000000002"),
            Some("/v1/outings/uuid/{outing_uuid}")
        );
        assert_eq!(templates.of("/ping"), Some("/ping"));
        assert_eq!(templates.of("/v1/outings/uuid"), None);
        assert_eq!(templates.of("/nowhere"), None);
    }

    #[tokio::test]
    async fn answers_no_handler_gave_are_named_by_their_route() {
        let gateway = gateway("[guard.ip]\nlimit = 1\n");
        let send = |method: &str, path: &str| {
            let mut request = Request::builder()
                .method(method)
                .uri(path)
                .header("origin", "https://app.example")
                .body(Body::empty())
                .expect("request");
            let peer: std::net::SocketAddr = "198.51.100.7:4000".parse().expect("peer");
            request.extensions_mut().insert(ConnectInfo(peer));
            gateway.router.clone().oneshot(request)
        };
        let outing = "/v1/outings/uuid/outing-000000000002";
        // A CORS preflight (answered before the handler), then the guard's 429 and 403.
        assert_eq!(
            send("OPTIONS", outing).await.expect("infallible").status(),
            204
        );
        assert_eq!(send("GET", outing).await.expect("infallible").status(), 429);
        assert_eq!(
            send("GET", "/nowhere").await.expect("infallible").status(),
            403
        );
        let text = gateway.state.metrics.render();
        for line in [
            r#"route="/v1/outings/uuid/{outing_uuid}",status="204"} 1"#,
            r#"route="/v1/outings/uuid/{outing_uuid}",status="429"} 1"#,
            r#"route="unmatched",status="403"} 1"#,
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }

    #[tokio::test]
    async fn a_panic_inside_becomes_the_500_envelope_with_its_request_id() {
        let gateway = gateway("");
        let inner = Router::new().route(
            "/boom",
            get(|| async {
                if true {
                    panic!("a handler's defect");
                }
                "never"
            }),
        );
        let app = ObserveLayer::new(gateway.state.clone(), Templates::default()).layer(inner);
        let request = Request::get("/boom")
            .header("x-request-id", "client-chosen")
            .body(Body::empty())
            .expect("request");
        let response = app.oneshot(request).await.expect("infallible");
        assert_eq!(response.status(), 500);
        let id = response.headers()["x-request-id"]
            .to_str()
            .expect("ascii")
            .to_owned();
        assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
        let body = axum::body::to_bytes(response.into_body(), 4096)
            .await
            .expect("body");
        let envelope: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(envelope["status"], 500);
    }
}
