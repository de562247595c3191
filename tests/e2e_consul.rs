//! Consul discovery end to end: real HTTP → gateway → real gRPC, instances found in a
//! Consul HTTP API double that blocks queries the way Consul does.

mod support;

use std::time::{Duration, Instant};

use reqwest::Method;
use sms_gateway::config::Config;
use sms_gateway::reference::{self, Options, Running, Shared};
use sms_gateway::upstream::Service;
use support::consul::{ConsulDouble, RecordedRequest};
use support::proxy::Proxy;
use support::{Gateway, WEBHOOK_TOKEN, seed};
use tokio::net::TcpListener;

const STUDENT: &str = seed::STUDENT_UUID;
const AUTH: &str = "DMS.SMS.v1.service.auth";
const GENEROUS: Duration = Duration::from_secs(15);

/// Reference services registered in the double, one instance each (`<service>-1`).
struct World {
    consul: ConsulDouble,
    shared: Shared,
    services: Vec<Running>,
}

impl World {
    async fn start() -> Self {
        let consul = ConsulDouble::start().await;
        let shared = Shared::seeded();
        let services = reference::spawn_all(None, &shared, &Options::default())
            .await
            .expect("services");
        for running in &services {
            let id = format!("{}-1", running.service);
            consul.register_ttl(
                running.service.consul_name(),
                &id,
                "127.0.0.1",
                running.address.port(),
            );
        }
        Self {
            consul,
            shared,
            services,
        }
    }

    fn address(&self, service: Service) -> std::net::SocketAddr {
        self.services
            .iter()
            .find(|r| r.service == service)
            .map(|r| r.address)
            .expect("running")
    }
}

impl Drop for World {
    fn drop(&mut self) {
        for running in &self.services {
            running.task.abort();
        }
    }
}

fn fast(config: &mut Config) {
    config.consul.min_interval = Duration::from_millis(10);
    config.consul.max_backoff = Duration::from_millis(300);
    config.breaker.open_for = Duration::from_secs(3);
}

/// The instance ids of `service` in `gw`'s current list.
fn ids(gw: &Gateway, service: Service) -> Vec<String> {
    gw.gateway
        .state
        .upstreams
        .pool(service)
        .snapshot()
        .nodes
        .iter()
        .map(|n| n.id.clone())
        .collect()
}

/// Waits (without polling) until `service`'s list in `gw` satisfies `wanted`.
async fn until_list(gw: &Gateway, service: Service, wanted: impl Fn(&[String]) -> bool) {
    let pool = gw.gateway.state.upstreams.pool(service);
    let mut changes = pool.subscribe();
    let waited = tokio::time::timeout(GENEROUS, async {
        while !wanted(&ids(gw, service)) {
            changes.changed().await.expect("pool alive");
        }
    })
    .await;
    assert!(
        waited.is_ok(),
        "list of {service} never became as wanted: {:?}",
        ids(gw, service)
    );
}

async fn all_loaded(gw: &Gateway) {
    for service in Service::ALL {
        until_list(gw, service, |ids| !ids.is_empty()).await;
    }
}

fn is_health_query(r: &RecordedRequest, service: &str) -> bool {
    r.path == format!("/v1/health/service/{service}")
}

/// A second auth instance with its own metadata log (to count its calls).
async fn second_auth() -> (Shared, Running) {
    let shared = Shared::seeded();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let running = reference::spawn(Service::Auth, listener, &shared, &Options::default())
        .expect("second auth");
    (shared, running)
}

async fn own_info(gw: &Gateway) -> u16 {
    gw.call(
        Method::GET,
        &format!("/v1/students/uuid/{STUDENT}"),
        STUDENT,
        None,
    )
    .await
    .0
}

#[tokio::test]
async fn new_instances_get_traffic_and_deregistered_ones_stop_within_one_blocking_round_trip() {
    let world = World::start().await;
    let gw = Gateway::start_consul(&world.consul.url(), fast).await;
    all_loaded(&gw).await;
    assert_eq!(own_info(&gw).await, 200);

    let (second, running) = second_auth().await;
    let registered_at = Instant::now();
    world
        .consul
        .register_ttl(AUTH, "auth-2", "127.0.0.1", running.address.port());
    // The watcher's blocking query waits up to 5 minutes: only Consul's wake-up can
    // explain a quick update.
    until_list(&gw, Service::Auth, |ids| ids.contains(&"auth-2".to_owned())).await;
    assert!(registered_at.elapsed() < Duration::from_secs(5));
    for _ in 0..4 {
        assert_eq!(own_info(&gw).await, 200);
    }
    let served = second.metadata.all().len();
    assert_eq!(
        served, 2,
        "round robin sends every other call to the new instance"
    );

    world.consul.deregister("auth-2");
    until_list(&gw, Service::Auth, |ids| ids == ["auth-1"]).await;
    for _ in 0..4 {
        assert_eq!(own_info(&gw).await, 200);
    }
    assert_eq!(
        second.metadata.all().len(),
        served,
        "a deregistered instance gets nothing"
    );
    running.task.abort();
}

#[tokio::test]
async fn requests_never_call_consul() {
    let world = World::start().await;
    let gw = Gateway::start_consul(&world.consul.url(), fast).await;
    all_loaded(&gw).await;
    // Every watcher is parked in a blocking query.
    world
        .consul
        .wait_for(|c| {
            Service::ALL.iter().all(|s| {
                c.requests()
                    .iter()
                    .any(|r| is_health_query(r, s.consul_name()) && r.param("index").is_some())
            })
        })
        .await;
    world.consul.clear_requests();
    for _ in 0..200 {
        assert_eq!(own_info(&gw).await, 200);
    }
    assert_eq!(
        world.consul.count(|_| true),
        0,
        "{:?}",
        world.consul.requests()
    );
}

#[tokio::test]
async fn a_killed_instance_is_flipped_critical_and_dropped_by_every_replica_then_returns() {
    let world = World::start().await;
    // auth-1 sits behind a proxy the test can kill; auth-2 is a healthy second instance.
    let proxy = Proxy::start(world.address(Service::Auth)).await;
    world.consul.deregister("auth-1");
    world
        .consul
        .register_ttl(AUTH, "auth-1", "127.0.0.1", proxy.address().port());
    let (second, running) = second_auth().await;
    world
        .consul
        .register_ttl(AUTH, "auth-2", "127.0.0.1", running.address.port());
    let both = |ids: &[String]| ids.len() == 2;
    let gw1 = Gateway::start_consul(&world.consul.url(), fast).await;
    let gw2 = Gateway::start_consul(&world.consul.url(), fast).await;
    until_list(&gw1, Service::Auth, both).await;
    until_list(&gw2, Service::Auth, both).await;

    proxy.kill();
    // Reads that fail to connect are retried on the other instance: no client error.
    let mut sent = 0;
    while !world.consul.maintenance_enabled("auth-1") {
        assert_eq!(
            own_info(&gw1).await,
            200,
            "reads fail over to the healthy instance"
        );
        sent += 1;
        assert!(sent < 200, "breaker never flipped the instance");
        if sent >= 20 {
            // The breaker has opened; the flip is on its way.
            world
                .consul
                .wait_for(|c| c.maintenance_enabled("auth-1"))
                .await;
        }
    }
    let only_second = |ids: &[String]| ids == ["auth-2"];
    until_list(&gw2, Service::Auth, only_second).await;
    until_list(&gw1, Service::Auth, only_second).await;
    let before = second.metadata.all().len();
    for _ in 0..4 {
        assert_eq!(own_info(&gw2).await, 200);
    }
    assert_eq!(
        second.metadata.all().len(),
        before + 4,
        "the second replica only uses auth-2"
    );

    proxy.revive().await;
    // After the open period the flip is undone and both replicas take auth-1 back.
    until_list(&gw1, Service::Auth, both).await;
    until_list(&gw2, Service::Auth, both).await;
    assert!(!world.consul.maintenance_enabled("auth-1"));
    let first_calls = world.shared.metadata.all().len();
    for _ in 0..4 {
        assert_eq!(own_info(&gw2).await, 200);
    }
    assert!(
        world.shared.metadata.all().len() > first_calls,
        "auth-1 is in rotation again"
    );
    running.task.abort();
}

#[tokio::test]
async fn consul_down_keeps_the_last_list_and_changes_flow_again_when_it_returns() {
    let world = World::start().await;
    let gw = Gateway::start_consul(&world.consul.url(), fast).await;
    all_loaded(&gw).await;
    world.consul.pause().await;
    for _ in 0..20 {
        assert_eq!(own_info(&gw).await, 200);
    }
    world.consul.resume().await;
    let (_second, running) = second_auth().await;
    world
        .consul
        .register_ttl(AUTH, "auth-2", "127.0.0.1", running.address.port());
    until_list(&gw, Service::Auth, |ids| ids.len() == 2).await;
    running.task.abort();
}

#[tokio::test]
async fn an_index_going_backwards_resets_and_index_zero_does_not_spin() {
    let world = World::start().await;
    let gw = Gateway::start_consul(&world.consul.url(), fast).await;
    all_loaded(&gw).await;
    let auth_queries = |c: &ConsulDouble| {
        c.requests()
            .into_iter()
            .filter(|r| is_health_query(r, AUTH))
            .collect::<Vec<_>>()
    };
    world
        .consul
        .wait_for(|c| auth_queries(c).iter().any(|r| r.param("index").is_some()))
        .await;

    world.consul.clear_requests();
    world.consul.reset_index(AUTH, 1);
    // The blocked query returns with a lower index: the next query starts over, non-blocking.
    world
        .consul
        .wait_for(|c| auth_queries(c).iter().any(|r| r.param("index").is_none()))
        .await;
    assert_eq!(own_info(&gw).await, 200);

    world.consul.clear_requests();
    world.consul.reset_index(AUTH, 0);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let queries = auth_queries(&world.consul).len();
    // A loop that believed index 0 would ask without blocking about 100 times here.
    assert!(
        queries <= 5,
        "{queries} queries in one second: the loop spins"
    );
    assert_eq!(own_info(&gw).await, 200);
}

#[tokio::test]
async fn webhook_triggers_a_refresh_and_rejects_bad_posts() {
    let world = World::start().await;
    let gw = Gateway::start_consul(&world.consul.url(), fast).await;
    all_loaded(&gw).await;
    let body = reqwest::get(format!(
        "{}/v1/health/service/{AUTH}?passing=true",
        world.consul.url()
    ))
    .await
    .expect("health")
    .text()
    .await
    .expect("body");
    let post = |token: Option<&str>, index: Option<&str>, body: &str| {
        let mut request = gw
            .client
            .post(gw.url("/events/types/consul-change"))
            .body(body.to_owned());
        if let Some(token) = token {
            request = request.header("X-Gateway-Token", token);
        }
        if let Some(index) = index {
            request = request.header("X-Consul-Index", index);
        }
        request
    };
    world.consul.clear_requests();
    let (status, reply) = gw.send(post(Some(WEBHOOK_TOKEN), Some("777"), &body)).await;
    assert_eq!(status, 200, "{reply}");
    // The refresh is a non-blocking read of that service.
    world
        .consul
        .wait_for(|c| {
            c.requests()
                .iter()
                .any(|r| is_health_query(r, AUTH) && r.param("index").is_none())
        })
        .await;
    let (status, reply) = gw.send(post(Some(WEBHOOK_TOKEN), Some("777"), &body)).await;
    assert_eq!(status, 200);
    assert!(
        reply["message"]
            .as_str()
            .is_some_and(|m| m.contains("duplicate")),
        "{reply}"
    );

    let cases = [
        (None, Some("1"), body.as_str(), 401),
        (
            Some("wrong-token-wrong-token"),
            Some("1"),
            body.as_str(),
            403,
        ),
        (Some(WEBHOOK_TOKEN), Some("1"), "{not json", 400),
        (Some(WEBHOOK_TOKEN), Some("1"), "{\"an\":\"object\"}", 400),
        (Some(WEBHOOK_TOKEN), None, body.as_str(), 400),
        (Some(WEBHOOK_TOKEN), Some("x"), body.as_str(), 400),
        (Some(WEBHOOK_TOKEN), Some("2"), "[]", 400),
    ];
    for (token, index, body, expected) in cases {
        let (status, reply) = gw.send(post(token, index, body)).await;
        assert_eq!(status, expected, "{token:?} {index:?} {body}: {reply}");
        support::assert_envelope(status, &reply);
    }
    // The gateway still works after all that.
    assert_eq!(own_info(&gw).await, 200);
}

/// Measures the time from a Consul change to the new list being used (median of 20).
/// Run with `cargo test --release --test e2e_consul -- --ignored --nocapture`.
#[tokio::test]
#[ignore = "measurement; prints figures"]
async fn measure_change_to_list_latency() {
    let world = World::start().await;
    let gw = Gateway::start_consul(&world.consul.url(), fast).await;
    all_loaded(&gw).await;
    let (_second, running) = second_auth().await;
    let mut samples = Vec::new();
    for round in 0..20 {
        let started = Instant::now();
        if round % 2 == 0 {
            world
                .consul
                .register_ttl(AUTH, "auth-2", "127.0.0.1", running.address.port());
            until_list(&gw, Service::Auth, |ids| ids.len() == 2).await;
        } else {
            world.consul.deregister("auth-2");
            until_list(&gw, Service::Auth, |ids| ids.len() == 1).await;
        }
        samples.push(started.elapsed());
        // Let the watcher park in its next blocking query before the next change.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    samples.sort();
    println!(
        "consul change → new list: median {:?}, min {:?}, max {:?} over {} changes",
        samples[samples.len() / 2],
        samples[0],
        samples[samples.len() - 1],
        samples.len()
    );
    running.task.abort();
}
