//! CORS of the API (spec §4.15, with configurable origins): one layer around the router,
//! which passes the exempt paths (`/ping` and the webhook) untouched. Only a request whose
//! `Origin` is not its own host's (`http(s)://<Host>`) is a CORS request. A preflight
//! (`OPTIONS` with such an origin) is answered 204 before any other check; other
//! requests go on, and an allowed origin gets its grant (`*`, or the origin echoed) and
//! may read `X-Request-Id`. An origin outside the list gets no grant (its browser then
//! refuses the answer). Every answer carries `Vary: Origin`.
//!
//! Hand-written instead of tower-http's `CorsLayer`: that one clones its configuration
//! with every route service axum clones per request and builds a header map (and the
//! joined `Vary` value) for every request, CORS or not; here the header values are made
//! once and a request without `Origin` costs one header append. Around the router, not
//! on its routes: axum boxes a route layer's service and future again on every request.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::http::{HeaderValue, Method, Request, StatusCode, header};
use axum::response::Response;
use tower::{Layer, Service};

use super::request_id::X_REQUEST_ID;

/// The CORS policy of a route set, shared by every clone of its services.
#[derive(Debug, Clone)]
pub struct CorsLayer {
    policy: Arc<Policy>,
}

#[derive(Debug, Clone)]
struct Policy {
    /// Paths CORS does not apply to.
    exempt: Vec<&'static str>,
    /// `None`: any origin (`*`).
    origins: Option<Vec<HeaderValue>>,
    methods: HeaderValue,
    headers: HeaderValue,
    max_age: HeaderValue,
    expose: HeaderValue,
}

static ANY_ORIGIN: HeaderValue = HeaderValue::from_static("*");
static VARY_ORIGIN: HeaderValue = HeaderValue::from_static("origin");

impl CorsLayer {
    /// A policy allowing `origins` (`"*"` among them: any), `methods` and request
    /// `headers`, preflights cached for `max_age`.
    pub fn new(
        origins: &[String],
        methods: &[Method],
        headers: &[header::HeaderName],
        max_age: Duration,
    ) -> Self {
        let origins = (!origins.iter().any(|origin| origin == "*")).then(|| {
            origins
                .iter()
                .filter_map(|origin| HeaderValue::from_str(origin).ok())
                .collect()
        });
        let join = |items: &mut dyn Iterator<Item = &str>| {
            let text = items.collect::<Vec<_>>().join(",");
            // Method and header names are valid header value text.
            HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
        };
        Self {
            policy: Arc::new(Policy {
                exempt: Vec::new(),
                origins,
                methods: join(&mut methods.iter().map(Method::as_str)),
                headers: join(&mut headers.iter().map(header::HeaderName::as_str)),
                max_age: HeaderValue::from(max_age.as_secs()),
                expose: HeaderValue::from_name(X_REQUEST_ID.clone()),
            }),
        }
    }

    /// The same policy, not applied to requests for `paths`.
    pub fn except(self, paths: &[&'static str]) -> Self {
        let mut policy = Arc::unwrap_or_clone(self.policy);
        policy.exempt = paths.to_vec();
        Self {
            policy: Arc::new(policy),
        }
    }
}

impl<S> Layer<S> for CorsLayer {
    type Service = Cors<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Cors {
            inner,
            policy: self.policy.clone(),
        }
    }
}

/// The service of [`CorsLayer`].
#[derive(Debug, Clone)]
pub struct Cors<S> {
    inner: S,
    policy: Arc<Policy>,
}

/// What a request is to CORS.
enum Cross {
    /// No `Origin`, or the request's own host: nothing to do.
    SameOrigin,
    /// A cross-origin request, with the `Access-Control-Allow-Origin` value it is
    /// granted (`None`: an origin outside the list).
    From(Option<HeaderValue>),
}

impl Policy {
    fn classify<B>(&self, request: &Request<B>) -> Cross {
        let headers = request.headers();
        let Some(origin) = headers.get(header::ORIGIN) else {
            return Cross::SameOrigin;
        };
        // HTTP/1.1 names the host in `Host`, HTTP/2 in `:authority` (the URI's).
        let host = headers
            .get(header::HOST)
            .map(HeaderValue::as_bytes)
            .or_else(|| request.uri().authority().map(|a| a.as_str().as_bytes()));
        if host.is_some_and(|host| is_own_host(origin.as_bytes(), host)) {
            return Cross::SameOrigin;
        }
        Cross::From(match &self.origins {
            None => Some(ANY_ORIGIN.clone()),
            Some(list) => list.contains(origin).then(|| origin.clone()),
        })
    }

    fn preflight(&self, grant: Option<HeaderValue>) -> Response {
        let mut response = Response::default();
        *response.status_mut() = StatusCode::NO_CONTENT;
        let headers = response.headers_mut();
        headers.insert(header::VARY, VARY_ORIGIN.clone());
        if let Some(origin) = grant {
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
            headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, self.methods.clone());
            headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, self.headers.clone());
            headers.insert(header::ACCESS_CONTROL_MAX_AGE, self.max_age.clone());
        }
        response
    }
}

/// Whether `origin` is `http://<host>` or `https://<host>`.
fn is_own_host(origin: &[u8], host: &[u8]) -> bool {
    let rest = origin
        .strip_prefix(b"https://")
        .or_else(|| origin.strip_prefix(b"http://"));
    rest.is_some_and(|rest| rest.eq_ignore_ascii_case(host))
}

impl<S, B> Service<Request<B>> for Cors<S>
where
    S: Service<Request<B>, Response = Response, Error = Infallible>,
    S::Future: Unpin,
{
    type Response = Response;
    type Error = Infallible;
    type Future = CorsFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let path = request.uri().path();
        if self.policy.exempt.contains(&path) {
            return CorsFuture {
                state: State::Exempt(self.inner.call(request)),
            };
        }
        let state = match self.policy.classify(&request) {
            Cross::From(grant) if request.method() == Method::OPTIONS => {
                State::Answered(Some(self.policy.preflight(grant)))
            }
            cross => State::Called {
                inner: self.inner.call(request),
                grant: match cross {
                    Cross::From(grant) => grant.map(|origin| (origin, self.policy.expose.clone())),
                    Cross::SameOrigin => None,
                },
            },
        };
        CorsFuture { state }
    }
}

/// The future of [`Cors`]: a preflight's answer, the inner call's with the CORS
/// headers added, or an exempt path's as it is.
pub struct CorsFuture<F> {
    state: State<F>,
}

enum State<F> {
    Exempt(F),
    Answered(Option<Response>),
    Called {
        inner: F,
        /// `Access-Control-Allow-Origin` and `Access-Control-Expose-Headers`.
        grant: Option<(HeaderValue, HeaderValue)>,
    },
}

impl<F> Future for CorsFuture<F>
where
    F: Future<Output = Result<Response, Infallible>> + Unpin,
{
    type Output = Result<Response, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.state {
            State::Exempt(inner) => Pin::new(inner).poll(cx),
            State::Answered(response) => Poll::Ready(Ok(response.take().unwrap_or_default())),
            State::Called { inner, grant } => {
                let Ok(mut response) = ready!(Pin::new(inner).poll(cx));
                let headers = response.headers_mut();
                headers.append(header::VARY, VARY_ORIGIN.clone());
                if let Some((origin, expose)) = grant.take() {
                    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
                    headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, expose);
                }
                Poll::Ready(Ok(response))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::body::Body;
    use axum::routing::get;
    use tower::ServiceExt;

    use super::*;

    fn app(origins: &[&str]) -> Router {
        let origins: Vec<String> = origins.iter().map(|o| (*o).to_owned()).collect();
        Router::new()
            .route("/thing", get(|| async { "thing" }))
            .layer(CorsLayer::new(
                &origins,
                &[Method::GET, Method::POST],
                &[header::AUTHORIZATION, header::CONTENT_TYPE],
                Duration::from_secs(43_200),
            ))
    }

    async fn send(app: &Router, method: Method, headers: &[(&str, &str)]) -> Response {
        let mut request = Request::builder().method(method).uri("/thing");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        app.clone()
            .oneshot(request.body(Body::empty()).expect("request"))
            .await
            .expect("infallible")
    }

    #[tokio::test]
    async fn a_preflight_is_answered_204_with_the_grant() {
        let app = app(&["https://app.example"]);
        let preflight = send(
            &app,
            Method::OPTIONS,
            &[
                ("origin", "https://app.example"),
                ("access-control-request-method", "POST"),
            ],
        )
        .await;
        assert_eq!(preflight.status(), StatusCode::NO_CONTENT);
        let headers = preflight.headers();
        assert_eq!(
            headers["access-control-allow-origin"],
            "https://app.example"
        );
        assert_eq!(headers["access-control-allow-methods"], "GET,POST");
        assert_eq!(
            headers["access-control-allow-headers"],
            "authorization,content-type"
        );
        assert_eq!(headers["access-control-max-age"], "43200");
        assert_eq!(headers["vary"], "origin");
        // A foreign origin's preflight grants nothing.
        let foreign = send(&app, Method::OPTIONS, &[("origin", "https://evil.example")]).await;
        assert_eq!(foreign.status(), StatusCode::NO_CONTENT);
        assert!(
            !foreign
                .headers()
                .contains_key("access-control-allow-origin")
        );
        assert!(
            !foreign
                .headers()
                .contains_key("access-control-allow-methods")
        );
    }

    #[tokio::test]
    async fn requests_get_the_grant_of_their_origin_only() {
        let app = app(&["https://app.example"]);
        let granted = send(&app, Method::GET, &[("origin", "https://app.example")]).await;
        assert_eq!(granted.status(), StatusCode::OK);
        assert_eq!(
            granted.headers()["access-control-allow-origin"],
            "https://app.example"
        );
        assert_eq!(
            granted.headers()["access-control-expose-headers"],
            "x-request-id"
        );
        for headers in [
            &[("origin", "https://evil.example")][..],
            // Not CORS at all: no origin, or the request's own host.
            &[],
            &[
                ("origin", "https://gw.example:8080"),
                ("host", "gw.example:8080"),
            ],
            &[("origin", "http://GW.example"), ("host", "gw.example")],
        ] {
            let response = send(&app, Method::GET, headers).await;
            assert_eq!(response.status(), StatusCode::OK);
            assert!(
                !response
                    .headers()
                    .contains_key("access-control-allow-origin"),
                "{headers:?}"
            );
            assert_eq!(response.headers()["vary"], "origin");
        }
        // OPTIONS from the own host is no preflight: routing answers it.
        let own = send(
            &app,
            Method::OPTIONS,
            &[("origin", "https://gw.example"), ("host", "gw.example")],
        )
        .await;
        assert_eq!(own.status(), StatusCode::METHOD_NOT_ALLOWED);
    }

    #[tokio::test]
    async fn any_origin_is_granted_star() {
        let app = app(&["*"]);
        let response = send(&app, Method::GET, &[("origin", "https://a.example")]).await;
        assert_eq!(response.headers()["access-control-allow-origin"], "*");
        let preflight = send(&app, Method::OPTIONS, &[("origin", "https://b.example")]).await;
        assert_eq!(preflight.headers()["access-control-allow-origin"], "*");
    }

    #[tokio::test]
    async fn exempt_paths_pass_untouched_around_the_router() {
        let router = Router::new()
            .route("/ping", get(|| async { "pong" }))
            .route("/thing", get(|| async { "thing" }));
        let cors = CorsLayer::new(
            &["*".to_owned()],
            &[Method::GET],
            &[header::AUTHORIZATION],
            Duration::from_secs(60),
        )
        .except(&["/ping"])
        .layer(router);
        let send = |method: Method, path: &str| {
            let request = Request::builder()
                .method(method)
                .uri(path)
                .header("origin", "https://app.example")
                .header("access-control-request-method", "GET")
                .body(Body::empty())
                .expect("request");
            cors.clone().oneshot(request)
        };
        // No preflight answer and no CORS headers for the exempt path: the router's 405.
        let preflight = send(Method::OPTIONS, "/ping").await.expect("infallible");
        assert_eq!(preflight.status(), StatusCode::METHOD_NOT_ALLOWED);
        let ping = send(Method::GET, "/ping").await.expect("infallible");
        assert_eq!(ping.status(), StatusCode::OK);
        assert!(!ping.headers().contains_key("access-control-allow-origin"));
        assert!(!ping.headers().contains_key("vary"));
        // Every other path, the unknown ones included, gets CORS.
        let preflight = send(Method::OPTIONS, "/thing").await.expect("infallible");
        assert_eq!(preflight.status(), StatusCode::NO_CONTENT);
        for path in ["/thing", "/nowhere"] {
            let answer = send(Method::GET, path).await.expect("infallible");
            assert_eq!(
                answer.headers()["access-control-allow-origin"],
                "*",
                "{path}"
            );
            assert_eq!(answer.headers()["vary"], "origin", "{path}");
        }
    }
}
