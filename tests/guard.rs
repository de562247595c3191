//! The guard through real sockets: the client-IP layer in front of a tiny router,
//! per-service limits, and the cluster scope on a real redis-server (two "replicas"
//! sharing it, and Redis going away and coming back).

#[path = "support/redis.rs"]
mod redis_support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis_support::RedisServer;
use sms_gateway::guard::{Guard, GuardConfig, IpDecision, Scope};
use sms_gateway::upstream::Service;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio::time::Instant;

// === helpers ===

fn nonzero(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).expect("nonzero")
}

/// A guard config with `limit` per 1 s window and a `block` long block, trusting
/// 127.0.0.1 as a proxy.
fn ip_config(limit: u32, block: Duration) -> GuardConfig {
    let mut config = GuardConfig::default();
    config.ip.limit = nonzero(limit);
    config.ip.window = Duration::from_secs(1);
    config.ip.block = block;
    config.trusted_proxies = vec!["127.0.0.1/32".parse().expect("net")];
    config
}

/// A running router: a dummy endpoint, `/ping`, and a per-service endpoint that runs
/// the service-limit check the way the pipeline will, behind the guard's layer.
struct Server {
    base: String,
    task: JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(guard: &Guard) -> Server {
    async fn service(State(guard): State<Guard>, Path(name): Path<String>) -> Response {
        let service = match name.as_str() {
            "auth" => Service::Auth,
            "club" => Service::Club,
            _ => Service::Outing,
        };
        match guard.services().check(service).await {
            Ok(status) => {
                let mut response = "ok".into_response();
                if let Some(status) = status {
                    status.apply(response.headers_mut());
                }
                response
            }
            Err(limited) => limited.into_response(),
        }
    }
    let router = Router::new()
        .route("/v1/thing", get(|| async { "ok" }))
        .route("/ping", get(|| async { "pong" }))
        .route("/v1/service/{name}", get(service))
        .with_state(guard.clone())
        .layer(guard.layer());
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let task = tokio::spawn(async move {
        let _ = axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await;
    });
    Server {
        base: format!("http://{address}"),
        task,
    }
}

/// A client whose connections come from `source` (any 127.0.0.0/8 address works on
/// Linux loopback).
fn client_from(source: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::V4(Ipv4Addr::from(source)))
        .no_proxy()
        .build()
        .expect("client")
}

async fn get_status(
    client: &reqwest::Client,
    url: &str,
    forwarded_for: Option<&str>,
) -> StatusCode {
    let mut request = client.get(url);
    if let Some(value) = forwarded_for {
        request = request.header("x-forwarded-for", value);
    }
    request.send().await.expect("response").status()
}

async fn redis_connection(url: &str) -> ConnectionManager {
    let client = redis::Client::open(url).expect("redis url");
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_millis(200)))
        .set_response_timeout(Some(Duration::from_millis(200)))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_millis(100));
    ConnectionManager::new_with_config(client, config)
        .await
        .expect("redis connection")
}

/// A generous Redis timeout for tests about sharing, so a busy test machine cannot
/// turn them into tests of the fallback.
const SHARING_TIMEOUT: Duration = Duration::from_secs(1);

fn cluster_config(limit: u32, block: Duration, prefix: &str) -> GuardConfig {
    let mut config = ip_config(limit, block);
    config.scope = Scope::Cluster;
    config.cluster.key_prefix = format!("test:{prefix}:");
    config.cluster.pause_after_failure = Duration::from_millis(200);
    config
}

// === client-IP guard over HTTP ===

#[tokio::test]
async fn one_client_over_the_limit_gets_429_then_403_until_the_block_ends() {
    let guard = Guard::from_config(&ip_config(20, Duration::from_secs(1)), None).expect("guard");
    let server = serve(&guard).await;
    let url = format!("{}/v1/thing", server.base);
    // 127.0.0.1 is the trusted proxy, so X-Forwarded-For names the clients.
    let proxy = client_from([127, 0, 0, 1]);
    let (a, b) = (Some("198.51.100.1"), Some("198.51.100.2"));

    let mut admitted = 0;
    let mut crossing = None;
    for i in 0..40 {
        let response = proxy
            .get(&url)
            .header("x-forwarded-for", "198.51.100.1")
            .send()
            .await
            .expect("response");
        if response.status() != StatusCode::OK {
            crossing = Some(response);
            break;
        }
        admitted += 1;
        if i % 4 == 0 {
            assert_eq!(get_status(&proxy, &url, b).await, StatusCode::OK);
        }
    }
    let sent_at = Instant::now();
    let crossing = crossing.expect("the limit is crossed within 40 requests");
    assert_eq!(crossing.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(crossing.headers()["retry-after"], "1");
    // The two-bucket rolling window admits the limit, or one more when a fixed-window
    // edge falls inside the burst.
    assert!((20..=21).contains(&admitted), "admitted {admitted}");

    // Blocked: 403 for a second, while the other client is served.
    assert_eq!(get_status(&proxy, &url, a).await, StatusCode::FORBIDDEN);
    assert_eq!(get_status(&proxy, &url, b).await, StatusCode::OK);
    let mut released = false;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        match get_status(&proxy, &url, a).await {
            StatusCode::FORBIDDEN => {
                assert_eq!(get_status(&proxy, &url, b).await, StatusCode::OK);
            }
            StatusCode::OK => {
                released = true;
                break;
            }
            other => panic!("unexpected {other} while blocked"),
        }
    }
    assert!(released, "the block never ended");
    let blocked_for = sent_at.elapsed();
    assert!(
        blocked_for >= Duration::from_millis(900),
        "released after {blocked_for:?}"
    );
    // Released clients start from a clean window.
    for _ in 0..10 {
        assert_eq!(get_status(&proxy, &url, a).await, StatusCode::OK);
    }
}

#[tokio::test]
async fn real_loopback_sources_are_told_apart_and_forwarded_headers_from_them_ignored() {
    let guard = Guard::from_config(&ip_config(5, Duration::from_secs(1)), None).expect("guard");
    let server = serve(&guard).await;
    let url = format!("{}/v1/thing", server.base);
    let ping = format!("{}/ping", server.base);
    let second = client_from([127, 0, 0, 2]);
    let third = client_from([127, 0, 0, 3]);

    // 127.0.0.2 is not a trusted proxy: naming a different client each time changes
    // nothing, it is one client.
    let mut statuses = Vec::new();
    for n in 0..7 {
        let forged = format!("203.0.113.{n}");
        statuses.push(get_status(&second, &url, Some(&forged)).await);
    }
    assert_eq!(
        statuses,
        [
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::TOO_MANY_REQUESTS,
            StatusCode::FORBIDDEN,
        ]
    );
    // Another source address is another client; exempt paths pass even when blocked.
    for _ in 0..5 {
        assert_eq!(get_status(&third, &url, None).await, StatusCode::OK);
    }
    for _ in 0..20 {
        assert_eq!(get_status(&second, &ping, None).await, StatusCode::OK);
    }
    assert_eq!(get_status(&second, &url, None).await, StatusCode::FORBIDDEN);
}

// === per-service limits ===

#[tokio::test]
async fn a_service_at_its_ceiling_answers_429_with_ratelimit_fields_while_others_answer() {
    let mut config = ip_config(1000, Duration::from_secs(1));
    config.services.overrides.insert(
        Service::Outing,
        sms_gateway::guard::config::RateConfig {
            per_second: nonzero(1),
            burst: nonzero(3),
        },
    );
    let guard = Guard::from_config(&config, None).expect("guard");
    let server = serve(&guard).await;
    let client = client_from([127, 0, 0, 1]);
    let outing = format!("{}/v1/service/outing", server.base);
    let club = format!("{}/v1/service/club", server.base);

    for remaining in [2, 1, 0] {
        let response = client.get(&outing).send().await.expect("response");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()["ratelimit"],
            format!("\"outing\";r={remaining};t=1").as_str()
        );
        assert_eq!(response.headers()["ratelimit-policy"], "\"outing\";q=3;w=3");
    }
    let refused = client.get(&outing).send().await.expect("response");
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.headers()["retry-after"], "1");
    assert_eq!(refused.headers()["ratelimit"], "\"outing\";r=0;t=1");
    assert_eq!(refused.headers()["ratelimit-policy"], "\"outing\";q=3;w=3");
    let body: serde_json::Value = refused.json().await.expect("envelope");
    assert_eq!(body["status"], 429);

    for _ in 0..20 {
        let response = client.get(&club).send().await.expect("response");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()["ratelimit-policy"],
            "\"club\";q=1000;w=1"
        );
    }
}

// === cluster scope ===

#[tokio::test]
async fn two_replicas_sharing_redis_share_one_ip_limit() {
    let redis = RedisServer::start();
    let mut config = cluster_config(50, Duration::from_secs(5), "shared-ip");
    config.cluster.timeout = SHARING_TIMEOUT;
    let replicas = [
        Guard::from_config(&config, Some(redis_connection(&redis.url()).await)).expect("replica 1"),
        Guard::from_config(&config, Some(redis_connection(&redis.url()).await)).expect("replica 2"),
    ];
    let client: IpAddr = "198.51.100.77".parse().expect("ip");

    // 100 requests of one client, 50 on each replica, all at once.
    let mut tasks = Vec::new();
    for n in 0..100 {
        let guard = replicas[n % 2].clone();
        tasks.push(tokio::spawn(async move { guard.ip().check(client).await }));
    }
    let mut decisions = Vec::new();
    for task in tasks {
        decisions.push(task.await.expect("task"));
    }
    let admitted = decisions
        .iter()
        .filter(|d| **d == IpDecision::Allowed)
        .count();
    let limited = decisions
        .iter()
        .filter(|d| matches!(d, IpDecision::Limited { .. }))
        .count();
    assert!(
        (45..=55).contains(&admitted),
        "admitted {admitted} across both replicas, limit 50"
    );
    assert_eq!(limited, 1, "exactly one request crosses the shared limit");
    // Both replicas now answer 403 for that client, and not for another one.
    for guard in &replicas {
        assert!(matches!(
            guard.ip().check(client).await,
            IpDecision::Blocked { .. }
        ));
        let other: IpAddr = "198.51.100.78".parse().expect("ip");
        assert_eq!(guard.ip().check(other).await, IpDecision::Allowed);
        assert_eq!(guard.stats().local_fallbacks, 0);
    }
}

#[tokio::test]
async fn two_replicas_sharing_redis_share_one_service_ceiling() {
    let redis = RedisServer::start();
    let mut config = cluster_config(1000, Duration::from_secs(1), "shared-svc");
    config.cluster.timeout = SHARING_TIMEOUT;
    config.services.per_second = nonzero(1);
    config.services.burst = nonzero(100);
    let replicas = [
        Guard::from_config(&config, Some(redis_connection(&redis.url()).await)).expect("replica 1"),
        Guard::from_config(&config, Some(redis_connection(&redis.url()).await)).expect("replica 2"),
    ];
    let mut tasks = Vec::new();
    for n in 0..300 {
        let guard = replicas[n % 2].clone();
        tasks.push(tokio::spawn(async move {
            guard.services().check(Service::Club).await.is_ok()
        }));
    }
    let mut admitted = 0;
    for task in tasks {
        admitted += usize::from(task.await.expect("task"));
    }
    assert!(
        (100..=110).contains(&admitted),
        "admitted {admitted} across both replicas, burst 100"
    );
    // Another service has its own quota.
    assert!(replicas[0].services().check(Service::Auth).await.is_ok());
    for guard in &replicas {
        assert_eq!(guard.stats().local_fallbacks, 0);
    }
}

#[tokio::test]
async fn redis_down_decisions_are_local_and_fast_then_shared_again() {
    let mut redis = RedisServer::start();
    let config = cluster_config(50, Duration::from_secs(5), "outage");
    let timeout = config.cluster.timeout;
    let guard =
        Guard::from_config(&config, Some(redis_connection(&redis.url()).await)).expect("guard");
    let client: IpAddr = "198.51.100.90".parse().expect("ip");
    assert_eq!(guard.ip().check(client).await, IpDecision::Allowed);
    assert!(guard.services().check(Service::Auth).await.is_ok());
    assert_eq!(guard.stats().redis_decisions, 2);

    redis.stop();
    let mut slowest = Duration::ZERO;
    let mut total = Duration::ZERO;
    let mut slow = 0;
    let mut ip_decisions = Vec::new();
    let rounds = 200u32;
    for _ in 0..rounds {
        let started = Instant::now();
        ip_decisions.push(guard.ip().check(client).await);
        let service = guard.services().check(Service::Auth).await;
        let took = started.elapsed();
        assert!(service.is_ok(), "service limit never fails: {service:?}");
        total += took;
        slowest = slowest.max(took);
        if took > Duration::from_millis(5) {
            slow += 1;
        }
    }
    let mean = total / rounds;
    println!("redis down: mean {mean:?}, slowest {slowest:?}, {slow} over 5ms");
    // Only the first call after a failure waits (at most the timeout); the pause makes
    // every other one local at once.
    assert!(
        slowest < timeout + Duration::from_millis(100),
        "slowest {slowest:?}"
    );
    assert!(mean < Duration::from_millis(5), "mean {mean:?}");
    assert!(slow <= 5, "{slow} slow decisions");
    // The local fallback still enforces the limit (counting from zero: the request
    // Redis counted is not known locally): 50 pass, the 51st crosses, then the block.
    let admitted = ip_decisions
        .iter()
        .filter(|d| **d == IpDecision::Allowed)
        .count();
    assert_eq!(admitted, 50, "{ip_decisions:?}");
    assert!(matches!(ip_decisions[50], IpDecision::Limited { .. }));
    assert!(matches!(ip_decisions[51], IpDecision::Blocked { .. }));
    assert!(guard.stats().local_fallbacks >= u64::from(rounds));

    // Back up (empty): decisions go to Redis again once the connection is re-made.
    redis.restart();
    let before = guard.stats().redis_decisions;
    let fresh: IpAddr = "198.51.100.91".parse().expect("ip");
    let mut shared_again = false;
    for _ in 0..100 {
        let _ = guard.ip().check(fresh).await;
        if guard.stats().redis_decisions > before {
            shared_again = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        shared_again,
        "never went back to Redis: {:?}",
        guard.stats()
    );
}

#[tokio::test]
async fn stalled_redis_costs_one_timeout_per_pause_never_an_error() {
    let redis = RedisServer::start();
    let config = cluster_config(1000, Duration::from_secs(5), "stall");
    let timeout = config.cluster.timeout;
    let pause = config.cluster.pause_after_failure;
    let guard =
        Guard::from_config(&config, Some(redis_connection(&redis.url()).await)).expect("guard");
    let client: IpAddr = "198.51.100.95".parse().expect("ip");
    assert_eq!(guard.ip().check(client).await, IpDecision::Allowed);

    redis.freeze();
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    let mut waited = 0u32;
    let mut rounds = 0u32;
    // Decisions for 1 s: one waits for the timeout, the rest of each pause is local.
    while started.elapsed() < Duration::from_secs(1) {
        let one = Instant::now();
        assert_eq!(guard.ip().check(client).await, IpDecision::Allowed);
        let took = one.elapsed();
        slowest = slowest.max(took);
        if took >= timeout {
            waited += 1;
        }
        rounds += 1;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    redis.thaw();
    println!(
        "redis stalled: {rounds} decisions, {waited} waited for the timeout, slowest {slowest:?}"
    );
    assert!(
        slowest < timeout + Duration::from_millis(100),
        "slowest {slowest:?}"
    );
    // About one timeout per pause (1 s / (50 ms + 200 ms) = 4), never one per request.
    let most =
        u32::try_from((Duration::from_secs(1).as_millis() / pause.as_millis()) + 1).expect("small");
    assert!(
        (1..=most).contains(&waited),
        "{waited} timeouts in {rounds} decisions"
    );
    assert!(rounds > 10 * waited, "{rounds} decisions");
    assert!(guard.stats().local_fallbacks >= u64::from(rounds - waited));
}

// === memory under many addresses ===

#[tokio::test(start_paused = true)]
async fn one_hundred_thousand_clients_leave_bounded_memory() {
    let guard = Guard::from_config(&GuardConfig::default(), None).expect("guard");
    for n in 0..100_000u32 {
        let client = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n));
        assert_eq!(guard.ip().check(client).await, IpDecision::Allowed);
    }
    let during = guard.ip().table_stats();
    assert_eq!(during.tracked, 100_000);
    // Sized to the clients, about 50 bytes each.
    assert!(during.approx_bytes < 100_000 * 64, "{during:?}");

    // Two windows later the attack is over: ordinary traffic sweeps the table.
    tokio::time::advance(Duration::from_secs(2)).await;
    let regular = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    for _ in 0..40 {
        guard.ip().check(regular).await;
    }
    for _ in 0..128 {
        guard
            .ip()
            .check(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2)))
            .await;
    }
    let after = guard.ip().table_stats();
    println!(
        "100000 clients: {} tracked, {} slots, ~{} KiB; after eviction: {} tracked, {} slots, ~{} KiB",
        during.tracked,
        during.capacity,
        during.approx_bytes / 1024,
        after.tracked,
        after.capacity,
        after.approx_bytes / 1024
    );
    assert!(after.tracked <= 2, "{after:?}");
    assert!(after.approx_bytes < 64 * 1024, "{after:?}");
}

// === measurements (cargo test --release --test guard -- --ignored --nocapture) ===

async fn measure<F, Fut>(label: &str, rounds: u32, mut decide: F)
where
    F: FnMut(u32) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let started = Instant::now();
    for n in 0..rounds {
        decide(n).await;
    }
    let per = started.elapsed() / rounds;
    println!("{label}: {per:?} per decision ({rounds} decisions)");
}

#[tokio::test]
#[ignore = "measurement, run in release mode"]
async fn cost_per_decision() {
    let mut config = GuardConfig::default();
    config.ip.limit = nonzero(u32::MAX);
    config.services.per_second = nonzero(1_000_000);
    config.services.burst = nonzero(u32::MAX);
    let local = Arc::new(Guard::from_config(&config, None).expect("local"));
    let same: IpAddr = "198.51.100.1".parse().expect("ip");
    measure("local ip, one client", 1_000_000, |_| {
        let guard = local.clone();
        async move {
            guard.ip().check(same).await;
        }
    })
    .await;
    measure("local ip, distinct clients", 1_000_000, |n| {
        let guard = local.clone();
        async move {
            guard.ip().check(IpAddr::V4(Ipv4Addr::from(n))).await;
        }
    })
    .await;
    measure("local service", 1_000_000, |_| {
        let guard = local.clone();
        async move {
            let _ = guard.services().check(Service::Club).await;
        }
    })
    .await;
    let rss = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS"))
                .map(str::to_owned)
        });
    println!(
        "after 1M distinct clients: {:?}, {rss:?}",
        local.ip().table_stats()
    );

    let redis = RedisServer::start();
    let mut config = cluster_config(u32::MAX, Duration::from_secs(1), "bench");
    config.cluster.timeout = SHARING_TIMEOUT;
    config.services.per_second = nonzero(1_000_000);
    config.services.burst = nonzero(1_000_000);
    let cluster = Arc::new(
        Guard::from_config(&config, Some(redis_connection(&redis.url()).await)).expect("cluster"),
    );
    measure("cluster ip, sequential", 20_000, |n| {
        let guard = cluster.clone();
        async move {
            guard.ip().check(IpAddr::V4(Ipv4Addr::from(n % 1000))).await;
        }
    })
    .await;
    measure("cluster service, sequential", 20_000, |_| {
        let guard = cluster.clone();
        async move {
            let _ = guard.services().check(Service::Club).await;
        }
    })
    .await;
    // Concurrent callers share the multiplexed connection (pipelined round trips).
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..32u32 {
        let guard = cluster.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0..1000u32 {
                guard
                    .ip()
                    .check(IpAddr::V4(Ipv4Addr::from(worker * 1000 + n)))
                    .await;
            }
        }));
    }
    for task in tasks {
        task.await.expect("task");
    }
    println!(
        "cluster ip, 32 concurrent callers: {:?} per decision (throughput)",
        started.elapsed() / 32_000
    );
    assert_eq!(cluster.stats().local_fallbacks, 0, "{:?}", cluster.stats());
}
