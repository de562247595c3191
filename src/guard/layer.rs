//! The client-IP guard as a tower layer: reads the socket peer from axum's
//! `ConnectInfo<SocketAddr>`, asks [`IpGuard`] and answers a rejection with the
//! [`GatewayError`] envelope. It knows nothing about endpoints (style rule 2).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::ConnectInfo;
use axum::http::Request;
use axum::response::{IntoResponse, Response};
use futures_util::future::BoxFuture;
use tower::{Layer, Service};

use super::ip_guard::IpGuard;
use crate::http::GatewayError;

/// Wraps a service with the client-IP guard. The router must be served with
/// `into_make_service_with_connect_info::<SocketAddr>()`; without a peer address every
/// guarded request is a 500 (a wiring defect, never a client's fault).
#[derive(Debug, Clone)]
pub struct IpGuardLayer {
    guard: Arc<IpGuard>,
}

impl IpGuardLayer {
    /// A layer deciding with `guard`.
    pub fn new(guard: Arc<IpGuard>) -> Self {
        Self { guard }
    }
}

impl<S> Layer<S> for IpGuardLayer {
    type Service = IpGuardService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        IpGuardService {
            inner,
            guard: self.guard.clone(),
        }
    }
}

/// The service of [`IpGuardLayer`].
#[derive(Debug, Clone)]
pub struct IpGuardService<S> {
    inner: S,
    guard: Arc<IpGuard>,
}

impl<S, B> Service<Request<B>> for IpGuardService<S>
where
    S: Service<Request<B>, Response = Response> + Clone + Send + 'static,
    S::Future: Send + Unpin + 'static,
    B: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Guarded<S::Future, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        if self.guard.passes(request.uri().path()) {
            return Guarded::Inner(self.inner.call(request));
        }
        let Some(ConnectInfo(peer)) = request.extensions().get::<ConnectInfo<SocketAddr>>() else {
            let error = GatewayError::Internal(
                "client-IP guard: no peer address (serve with connect info)".to_owned(),
            );
            return Guarded::Answered(Some(error.into_response()));
        };
        let client = self.guard.client_ip(peer.ip(), request.headers());
        crate::telemetry::record::update(|r| r.client = Some(client));
        // Without shared counters the decision is local and immediate: the inner call's
        // future is this one's, not boxed behind it.
        match self.guard.admit_local(client) {
            Some(Ok(())) => return Guarded::Inner(self.inner.call(request)),
            Some(Err(rejection)) => return Guarded::Answered(Some(rejection.into_response())),
            None => {}
        }
        // The service that was polled ready is the one that must be called; a fresh
        // clone stays behind for the next poll_ready (tower's documented pattern).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let guard = self.guard.clone();
        Guarded::Shared(Box::pin(async move {
            match guard.admit(client).await {
                Ok(()) => inner.call(request).await,
                Err(rejection) => Ok(rejection.into_response()),
            }
        }))
    }
}

/// The future of [`IpGuardService`]: the inner call, a rejection, or (with shared
/// counters) the round trip and then the inner call.
pub enum Guarded<F, E> {
    Inner(F),
    Answered(Option<Response>),
    Shared(BoxFuture<'static, Result<Response, E>>),
}

impl<F, E> Future for Guarded<F, E>
where
    F: Future<Output = Result<Response, E>> + Unpin,
{
    type Output = Result<Response, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut *self {
            Self::Inner(inner) => Pin::new(inner).poll(cx),
            Self::Answered(response) => Poll::Ready(Ok(response.take().unwrap_or_default())),
            Self::Shared(shared) => shared.as_mut().poll(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use axum::Router;
    use axum::body::Body;
    use axum::http::{StatusCode, header};
    use axum::routing::get;
    use tower::ServiceExt;

    use super::*;
    use crate::guard::Guard;
    use crate::guard::config::GuardConfig;

    fn app(limit: u32) -> Router {
        let mut config = GuardConfig::default();
        config.ip.limit = NonZeroU32::new(limit).expect("nonzero");
        config.trusted_proxies = vec!["10.0.0.0/8".parse().expect("net")];
        let guard = Guard::from_config(&config, None).expect("guard");
        Router::new()
            .route("/v1/thing", get(|| async { "ok" }))
            .route("/ping", get(|| async { "pong" }))
            .layer(guard.layer())
    }

    fn request(path: &str, peer: &str, forwarded_for: Option<&str>) -> Request<Body> {
        let mut request = Request::get(path);
        if let Some(value) = forwarded_for {
            request = request.header("x-forwarded-for", value);
        }
        let mut request = request.body(Body::empty()).expect("request");
        let peer: SocketAddr = peer.parse().expect("peer");
        request.extensions_mut().insert(ConnectInfo(peer));
        request
    }

    async fn status(app: &Router, request: Request<Body>) -> StatusCode {
        app.clone()
            .oneshot(request)
            .await
            .expect("infallible")
            .status()
    }

    #[tokio::test(start_paused = true)]
    async fn rejections_are_envelopes_with_retry_after() {
        let app = app(2);
        let peer = "198.51.100.1:4000";
        for _ in 0..2 {
            assert_eq!(
                status(&app, request("/v1/thing", peer, None)).await,
                StatusCode::OK
            );
        }
        let limited = app
            .clone()
            .oneshot(request("/v1/thing", peer, None))
            .await
            .expect("infallible");
        assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(limited.headers()[header::RETRY_AFTER], "60");
        let blocked = app
            .clone()
            .oneshot(request("/v1/thing", "198.51.100.1:4001", None))
            .await
            .expect("infallible");
        assert_eq!(blocked.status(), StatusCode::FORBIDDEN);
        let body = axum::body::to_bytes(blocked.into_body(), 1024)
            .await
            .expect("body");
        let envelope: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(envelope["status"], 403);
        // Exempt paths still answer, and so do other clients.
        assert_eq!(
            status(&app, request("/ping", peer, None)).await,
            StatusCode::OK
        );
        assert_eq!(
            status(&app, request("/v1/thing", "198.51.100.2:4000", None)).await,
            StatusCode::OK
        );
    }

    #[tokio::test(start_paused = true)]
    async fn forwarded_for_counts_only_behind_a_trusted_proxy() {
        let app = app(1);
        // Behind the trusted proxy 10.0.0.1, two clients are counted apart.
        for client in ["198.51.100.1", "198.51.100.2"] {
            assert_eq!(
                status(&app, request("/v1/thing", "10.0.0.1:80", Some(client))).await,
                StatusCode::OK
            );
        }
        // An untrusted peer naming other clients is still one client.
        let untrusted = "203.0.113.5:80";
        assert_eq!(
            status(&app, request("/v1/thing", untrusted, Some("198.51.100.3"))).await,
            StatusCode::OK
        );
        assert_eq!(
            status(&app, request("/v1/thing", untrusted, Some("198.51.100.4"))).await,
            StatusCode::TOO_MANY_REQUESTS
        );
    }

    #[tokio::test]
    async fn a_missing_peer_is_a_wiring_error() {
        let app = app(10);
        let request = Request::get("/v1/thing")
            .body(Body::empty())
            .expect("request");
        assert_eq!(
            status(&app, request).await,
            StatusCode::INTERNAL_SERVER_ERROR
        );
        let ping = Request::get("/ping").body(Body::empty()).expect("request");
        assert_eq!(status(&app, ping).await, StatusCode::OK);
    }
}
