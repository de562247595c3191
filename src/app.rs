//! Builds the gateway from its configuration: state, the router with every endpoint of
//! the table, the tower layers (listed once, outermost first), and the server with
//! graceful shutdown.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::http::{Method, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, get, post};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tower::ServiceBuilder;

use crate::audit::{Audit, AuditKind, Facts};
use crate::auth::{JwtKeys, TokenLifetimes};
use crate::cache::Cache;
use crate::config::{Config, DiscoveryMode};
use crate::endpoints;
use crate::guard::layer::IpGuardService;
use crate::guard::{Guard, GuardConfigError};
use crate::http::GatewayError;
use crate::http::cors::{Cors, CorsLayer};
use crate::http::observe::{Observe, ObserveLayer, Templates};
use crate::http::server::ServerSettings;
use crate::telemetry::Metrics;
use crate::telemetry::metrics::RouteSeries;
use crate::telemetry::record;
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
    pub router: App,
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

/// The public listener's service: [`ObserveLayer`], the client-IP guard and CORS once
/// around the router of `/ping`, every endpoint of the table and the envelope 404/405.
pub type App = Observe<IpGuardService<Cors<Router>>>;

/// The full service of the public listener (see [`App`]).
pub fn router(state: Arc<AppState>, config: &Config) -> Result<App, BuildError> {
    let table = endpoints::table();
    endpoints::check(&table)?;
    let mut templates = vec!["/ping", crate::openapi::PATH];
    templates.extend(table.iter().map(|endpoint| endpoint.path));
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
            record::update(|r| {
                r.route = Some(path);
                r.series = Some(series.clone());
            });
            crate::pipeline::serve(state.clone(), endpoint.clone(), request)
        };
        let route = by_path.remove(path).unwrap_or_default().on(filter, handler);
        by_path.insert(
            path,
            route.fallback(move |request: Request| async move {
                record::update(|r| r.route = Some(path));
                method_not_allowed(request).await
            }),
        );
    }
    // On the API router, so the document gets CORS (Swagger UI on another origin).
    let mut api = Router::new().route(
        crate::openapi::PATH,
        named(crate::openapi::PATH, openapi.fallback(method_not_allowed)),
    );
    for (path, route) in by_path {
        api = api.route(path, route);
    }
    let api = api.fallback(not_found);
    // `/metrics` is on the admin listener (src/admin.rs), not here.
    // CORS is one layer around the whole router (below); these two are exempt.
    let mut exempt = vec!["/ping"];
    let mut app = Router::new().route(
        "/ping",
        named("/ping", get(ping).fallback(method_not_allowed)),
    );
    if let (DiscoveryMode::Consul, Some(token)) =
        (config.discovery.mode, &config.consul.webhook_token)
    {
        let webhook = Arc::new(Webhook::new(token.clone(), state.discovery.clone()));
        templates.push(webhook::PATH);
        exempt.push(webhook::PATH);
        app = app.route(
            webhook::PATH,
            named(
                webhook::PATH,
                post(webhook::handle)
                    .with_state(webhook)
                    .fallback(method_not_allowed),
            ),
        );
    }
    // axum turns a handler into its route service (the handler and every layer over it,
    // boxed) on each request until the state is supplied; supplying it here does that
    // once for the life of the listener.
    let app = app.merge(api).with_state(());
    // Outermost first: `observe` gives every request and response a fresh request id,
    // marks Authorization sensitive before anything logs, and turns a panic anywhere
    // into an envelope; flooding client IPs are refused before routing (429, then 403
    // while blocked); then CORS, which answers a preflight before any other check.
    Ok(ServiceBuilder::new()
        .layer(ObserveLayer::new(state.clone(), Templates::new(templates)))
        .layer(state.guard.layer())
        .layer(cors(config).except(&exempt))
        .service(app))
}

/// `route` with its template written to the request's record, where the layers outside
/// the router read it (endpoints write theirs in their handler, on the hot path).
fn named(path: &'static str, route: MethodRouter) -> MethodRouter {
    route.layer(middleware::map_request(
        move |request: Request| async move {
            record::update(|r| r.route = Some(path));
            request
        },
    ))
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

static REQUEST_SECURITY: header::HeaderName = header::HeaderName::from_static("request-security");

/// CORS as documented (spec §4.15), with configurable origins; `X-Request-Id` is
/// exposed so browser clients can report it.
fn cors(config: &Config) -> CorsLayer {
    CorsLayer::new(
        &config.http.cors_origins,
        &[
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
            Method::HEAD,
        ],
        &[
            header::ORIGIN,
            header::CONTENT_LENGTH,
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
            // Browser clients of the original send it (spec §4.15); the gateway ignores it.
            REQUEST_SECURITY.clone(),
        ],
        Duration::from_secs(12 * 3600),
    )
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

/// Serves `router` on `listener` with the default edge limits (see
/// [`crate::http::server`]) until `shutdown` resolves, then lets in-flight requests
/// finish for at most `grace`.
pub async fn serve(
    listener: TcpListener,
    router: App,
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
    router: App,
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
