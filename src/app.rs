//! Builds the gateway from its configuration: state, the router with every endpoint of
//! the table, the tower layers (listed once, outermost first), and the server with
//! graceful shutdown.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, get, post};
use opentelemetry::trace::TraceContextExt;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, Any, CorsLayer};
use tower_http::request_id::RequestId;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::audit::{Audit, AuditKind, Facts, RequestFacts};
use crate::auth::{JwtKeys, TokenLifetimes};
use crate::cache::Cache;
use crate::config::{Config, DiscoveryMode};
use crate::endpoints;
use crate::guard::{Guard, GuardConfigError};
use crate::http::GatewayError;
use crate::http::error::Failure;
use crate::http::request_id::{self, X_REQUEST_ID};
use crate::http::server::ServerSettings;
use crate::telemetry::json_line::IpText;
use crate::telemetry::metrics::{CacheLabels, RejectionLabels, RouteSeries, method_label};
use crate::telemetry::record::{self, RecordCell, RequestRecord};
use crate::telemetry::{Metrics, propagation};
use crate::upstream::broadcast::{self, BroadcastSettings};
use crate::upstream::call::ServiceSettings;
use crate::upstream::consul::ConsulClient;
use crate::upstream::discovery::{ConsulDiscovery, Discovery, StaticDiscovery, WatchSettings};
use crate::upstream::webhook::{self, Webhook};
use crate::upstream::{ConnectSettings, Service, Upstreams, flip};

/// Shared, read-mostly state of a running gateway.
#[derive(Debug)]
pub struct AppState {
    pub jwt: JwtKeys,
    pub metrics: Arc<Metrics>,
    pub upstreams: Arc<Upstreams>,
    pub discovery: Arc<dyn Discovery>,
    pub body_limit: usize,
    /// The response cache (in process, or on Redis).
    pub cache: Cache,
    /// The shared Redis connection, when `redis.url` is set (for the guard's cluster
    /// scope as well).
    pub redis: Option<redis::aio::ConnectionManager>,
    /// Client-IP guard and per-service rate limits (spec decision 17).
    pub guard: Guard,
    /// Bounds on calls in flight per service (overload shedding, 503).
    pub shed: crate::upstream::shed::Shedder,
    /// The audit stream of security events.
    pub audit: Arc<Audit>,
}

/// Why the gateway could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("endpoint table: {0}")]
    Table(#[from] endpoints::TableError),
    #[error("upstream address: {0}")]
    Address(#[from] tonic::transport::Error),
    #[error("consul client: {0}")]
    Consul(#[from] crate::upstream::consul::ConsulError),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("{}: {}", .0.key, .0.reason)]
    Guard(#[from] GuardConfigError),
}

/// A built gateway: its state, its router, and the background tasks (Consul watchers,
/// health flip) that stop when it is dropped.
#[derive(Debug)]
pub struct Gateway {
    pub state: Arc<AppState>,
    pub router: Router,
    background: Vec<JoinHandle<()>>,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        for task in &self.background {
            task.abort();
        }
    }
}

/// Builds the gateway for `config`; with Consul discovery this starts the watchers and
/// the health flip, so it must run inside a tokio runtime.
pub fn build(config: &Config) -> Result<Gateway, BuildError> {
    let jwt = jwt_keys(config)?;
    let service_config = |service: Service| {
        config
            .upstream
            .services
            .get(&service)
            .cloned()
            .unwrap_or_default()
    };
    let settings = Service::ALL.map(|service| ServiceSettings {
        deadline: service_config(service)
            .deadline
            .unwrap_or(config.upstream.deadline),
        read_try_timeout: service_config(service)
            .read_try_timeout
            .unwrap_or(config.upstream.read_try_timeout),
    });
    let mut background = Vec::new();
    let consul = match config.discovery.mode {
        DiscoveryMode::Static => None,
        DiscoveryMode::Consul => Some(ConsulClient::new(
            &config.consul.address,
            config.consul.acl_token()?,
            config.consul.datacenter.clone(),
            config.consul.request_timeout,
        )?),
    };
    let (transitions, flips) = match &consul {
        Some(client) if config.consul.flip_health => {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            (Some(tx), Some((client.clone(), rx)))
        }
        _ => (None, None),
    };
    let metrics = Arc::new(Metrics::new());
    let audit = Arc::new(Audit::new(
        &config.audit,
        metrics.audit_events.clone(),
        metrics.audit_suppressed.clone(),
    ));
    let upstreams = Arc::new(Upstreams::new(
        settings,
        ConnectSettings {
            timeout: config.upstream.connect_timeout,
            lanes: config.runtime.lanes(),
        },
        config.breaker.settings(),
        transitions,
        metrics.clone(),
    ));
    if let Some((client, rx)) = flips {
        background.push(tokio::spawn(flip::run(
            client,
            replica_name(),
            rx,
            audit.clone(),
        )));
    }
    let discovery: Arc<dyn Discovery> = match consul {
        None => {
            for service in Service::ALL {
                let instances: Vec<(String, String)> = service_config(service)
                    .addresses
                    .into_iter()
                    .map(|address| (address.clone(), address))
                    .collect();
                upstreams.replace(service, &instances)?;
            }
            Arc::new(StaticDiscovery)
        }
        Some(client) => {
            let names = Service::ALL.map(|service| {
                service_config(service)
                    .consul_name
                    .unwrap_or_else(|| service.consul_name().to_owned())
            });
            let watch = WatchSettings {
                wait: config.consul.wait,
                min_interval: config.consul.min_interval,
                backoff_base: config.consul.backoff_base,
                max_backoff: config.consul.max_backoff,
                probe_interval: config.consul.probe_interval,
            };
            let (discovery, tasks) =
                ConsulDiscovery::start(client, upstreams.clone(), names, watch);
            background.extend(tasks);
            if config.consul.broadcast {
                background.push(broadcast::start(
                    upstreams.clone(),
                    discovery.changes.clone(),
                    BroadcastSettings {
                        delay: config.consul.broadcast_delay,
                        concurrency: config.consul.broadcast_concurrency,
                    },
                ));
            }
            discovery
        }
    };
    // The response cache: on Redis when configured (connected lazily, so a Redis that
    // is down at start-up only means bypassed caching), else in process.
    let redis = crate::cache::redis_connection(&config.redis)?;
    let redis_connection = redis.as_ref().map(|(_, connection)| connection.clone());
    let guard = Guard::from_config(&config.guard, redis_connection.clone())?;
    guard.login().count_in(&metrics);
    guard.login().audit_to(audit.clone());
    let (cache, cache_tasks) = Cache::build(&config.cache, &config.redis, redis);
    background.extend(cache_tasks);
    tracing::info!(store = cache.store_name(), "response cache");
    let shed = crate::upstream::shed::Shedder::new(&config.overload, &metrics);
    let state = Arc::new(AppState {
        shed,
        jwt,
        metrics,
        upstreams,
        discovery,
        body_limit: config.http.body_limit,
        cache,
        redis: redis_connection,
        guard,
        audit,
    });
    state.audit.record(
        AuditKind::ConfigLoaded,
        Facts {
            detail: Some(format!(
                "listen={} admin={} discovery={:?} redis={} tracing={}",
                config.listen,
                config.admin.listen,
                config.discovery.mode,
                config.redis.url.is_some(),
                config.telemetry.otlp_endpoint.is_some(),
            )),
            ..Facts::default()
        },
    );
    let router = router(state.clone(), config)?;
    Ok(Gateway {
        state,
        router,
        background,
    })
}

/// The token keys of `config`.
pub fn jwt_keys(config: &Config) -> Result<JwtKeys, BuildError> {
    let secret = config.jwt_secret()?;
    Ok(JwtKeys::new(
        &secret,
        config.jwt.algorithm,
        config.jwt.leeway,
        TokenLifetimes {
            student: config.jwt.student_lifetime,
            other: config.jwt.other_lifetime,
        },
    ))
}

/// This replica's name in flip reasons: the container host name, else a random id.
fn replica_name() -> String {
    std::env::var("HOSTNAME")
        .unwrap_or_else(|_| uuid::Uuid::new_v4().simple().to_string()[..12].to_owned())
}

/// The full router: `/ping`, every endpoint of the table, envelope 404/405, and the
/// tower layers.
pub fn router(state: Arc<AppState>, config: &Config) -> Result<Router, BuildError> {
    let table = endpoints::table();
    endpoints::check(&table)?;
    // The OpenAPI document is generated from the table once, here, and served as is.
    let openapi = crate::openapi::route(&table);
    let mut by_path: BTreeMap<&'static str, MethodRouter> = BTreeMap::new();
    for endpoint in table {
        let endpoint = Arc::new(endpoint);
        let filter = method_filter(&endpoint.method);
        let path = endpoint.path;
        let state = state.clone();
        let series = Arc::new(RouteSeries::default());
        let handler = move |request: Request| {
            record::update(|r| r.series = Some(series.clone()));
            crate::pipeline::serve(state.clone(), endpoint.clone(), request)
        };
        let route = by_path.remove(path).unwrap_or_default().on(filter, handler);
        by_path.insert(path, route.fallback(method_not_allowed));
    }
    // On the API router, so the document gets CORS (Swagger UI on another origin).
    let mut api = Router::new().route(crate::openapi::PATH, openapi.fallback(method_not_allowed));
    for (path, route) in by_path {
        api = api.route(path, route);
    }
    let api = api.fallback(not_found).layer(cors(config));
    // `/metrics` is on the admin listener (src/admin.rs), not here.
    let mut app = Router::new().route("/ping", get(ping).fallback(method_not_allowed));
    if let (DiscoveryMode::Consul, Some(token)) =
        (config.discovery.mode, &config.consul.webhook_token)
    {
        let webhook = Arc::new(Webhook::new(token.clone(), state.discovery.clone()));
        app = app.route(
            "/events/types/consul-change",
            post(webhook::handle)
                .with_state(webhook)
                .fallback(method_not_allowed),
        );
    }
    let app = app.merge(api);
    // Outermost first: a panic anywhere becomes an envelope; `observe` gives every
    // request and response a fresh request id and marks Authorization sensitive before
    // anything logs.
    let layers = ServiceBuilder::new()
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        // Flooding client IPs are refused before routing (429, then 403 while blocked).
        .layer(state.guard.layer());
    Ok(app.layer(layers))
}

fn method_filter(method: &Method) -> MethodFilter {
    match *method {
        Method::GET => MethodFilter::GET,
        Method::POST => MethodFilter::POST,
        Method::PUT => MethodFilter::PUT,
        Method::PATCH => MethodFilter::PATCH,
        Method::DELETE => MethodFilter::DELETE,
        _ => unreachable!("the endpoint table uses GET, POST, PUT, PATCH and DELETE only"),
    }
}

/// CORS as documented (spec §4.15), with configurable origins; `X-Request-Id` is
/// exposed so browser clients can report it.
fn cors(config: &Config) -> CorsLayer {
    let origins = &config.http.cors_origins;
    let allow_origin = if origins.iter().any(|o| o == "*") {
        AllowOrigin::from(Any)
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    CorsLayer::new()
        .allow_origin(allow_origin)
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
            Method::HEAD,
        ])
        .allow_headers([
            header::ORIGIN,
            header::CONTENT_LENGTH,
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
        ])
        .expose_headers([X_REQUEST_ID.clone()])
        .max_age(Duration::from_secs(12 * 3600))
}

async fn ping() -> Response {
    let mut response = "\"pong\"".into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        crate::http::error::json_content_type(),
    );
    response
}

async fn not_found(request: Request) -> GatewayError {
    GatewayError::NotFound {
        path: request.uri().path().to_owned(),
    }
}

async fn method_not_allowed(request: Request) -> GatewayError {
    GatewayError::MethodNotAllowed {
        method: request.method().to_string(),
    }
}

fn panic_response(_panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    GatewayError::Internal("a request handler panicked".to_owned()).into_response()
}

/// Observes every request: a fresh request id in place of any the client sent (the
/// backends require a UUID; on the request, its extensions and the response), Authorization marked sensitive, a server
/// span named by the route template (continuing an incoming W3C `traceparent`), one log
/// line with what the stages recorded, and the request metrics.
async fn observe(State(state): State<Arc<AppState>>, mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let id = request_id::fresh();
    let headers = request.headers_mut();
    headers.insert(X_REQUEST_ID.clone(), id.clone());
    if let header::Entry::Occupied(mut authorization) = headers.entry(header::AUTHORIZATION) {
        authorization
            .iter_mut()
            .for_each(|value| value.set_sensitive(true));
    }
    request.extensions_mut().insert(RequestId::new(id.clone()));
    let method = request.method().clone();
    let matched = request.extensions().get::<MatchedPath>().cloned();
    let route = matched.as_ref().map_or("unmatched", MatchedPath::as_str);
    let request_id = id.to_str().unwrap_or("").to_owned();
    // The guard's client-IP rule, for the audit stream.
    let client_ip = request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|peer| state.guard.ip().client_ip(peer.0.ip(), request.headers()));
    // OTel HTTP server conventions: named `{METHOD} {route}`, ERROR status on 5xx only.
    let span = tracing::debug_span!(
        "request",
        otel.name = tracing::field::Empty,
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = method_label(method.as_str()),
        http.route = route,
        http.response.status_code = tracing::field::Empty,
        request.id = %request_id,
        caller.kind = tracing::field::Empty,
    );
    if !span.is_disabled() {
        span.record("otel.name", format!("{method} {route}"));
        if let Some(parent) = propagation::w3c::extract(request.headers()) {
            let _ignored = span.set_parent(parent);
        }
    }
    let cell = RecordCell::default();
    let mut response = record::scope(cell.clone(), next.run(request))
        .instrument(span.clone())
        .await;
    response
        .headers_mut()
        .entry(X_REQUEST_ID.clone())
        .or_insert(id);
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    // As an integer attribute (tracing would record a u16 as text).
    span.record("http.response.status_code", i64::from(status));
    if status >= 500 {
        span.record("otel.status_code", "ERROR");
    }
    // The request is over: nothing writes the record any more, so take it whole.
    let record = cell
        .lock()
        .map(|mut record| std::mem::take(&mut *record))
        .unwrap_or_default();
    state.metrics.observe_request(
        record.series.as_deref(),
        method.as_str(),
        route,
        status,
        elapsed,
    );
    let span_trace = (!span.is_disabled())
        .then(|| span.context().span().span_context().trace_id())
        .filter(|id| *id != opentelemetry::trace::TraceId::INVALID)
        .map(|id| id.to_string());
    let trace_id = span_trace
        .or_else(|| record.trace_id.clone())
        .unwrap_or_default();
    let failure = response.extensions().get::<Failure>();
    count_outcomes(&state.metrics, route, &record, failure);
    if let Some(Failure(err)) = failure {
        let facts = RequestFacts {
            route,
            client_ip,
            caller: record.caller.as_deref(),
            login_id: record.login_id.as_deref(),
            request_id: &request_id,
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
        let result = match cache {
            "HIT" => "hit",
            "MISS" => "miss",
            "STALE" => "stale",
            _ => "bypass",
        };
        metrics
            .cache_results
            .get_or_create(&CacheLabels {
                route: route.to_owned(),
                result,
            })
            .inc();
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

/// Serves `router` on `listener` with the default edge limits (see
/// [`crate::http::server`]) until `shutdown` resolves, then lets in-flight requests
/// finish for at most `grace`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> std::io::Result<()> {
    let mut settings = ServerSettings::new(&Default::default(), &Default::default());
    settings.shutdown_grace = grace;
    serve_with(
        listener,
        router,
        shutdown,
        settings,
        Arc::new(Metrics::new()),
    )
    .await
}

/// Serves `router` on `listener` with `settings`, counting connections in `metrics`.
pub async fn serve_with(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    settings: ServerSettings,
    metrics: Arc<Metrics>,
) -> std::io::Result<()> {
    crate::http::server::serve(listener, router, shutdown, settings, metrics).await
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(%err, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::error!(%err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown signal received");
}
