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
        .map(|n| n.id.to_string())
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

/// One post to the webhook, built from its parts.
struct Post<'a> {
    token: Option<&'a str>,
    index: Option<&'a str>,
    kind: Option<&'a str>,
    service: Option<&'a str>,
    query: &'a str,
    body: &'a str,
}

impl Default for Post<'_> {
    fn default() -> Self {
        Self {
            token: Some(WEBHOOK_TOKEN),
            index: Some("1"),
            kind: None,
            service: None,
            query: "",
            body: "[]",
        }
    }
}

/// Sends `post` and returns the status and the raw body.
async fn webhook(gw: &Gateway, post: Post<'_>) -> (u16, String) {
    let mut request = gw
        .client
        .post(gw.url(&format!("/events/types/consul-change{}", post.query)))
        .body(post.body.to_owned());
    for (name, value) in [
        ("X-Gateway-Token", post.token),
        ("X-Consul-Index", post.index),
        ("Type", post.kind),
        ("Service", post.service),
    ] {
        if let Some(value) = value {
            request = request.header(name, value);
        }
    }
    let response = request.send().await.expect("webhook answer");
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

/// Whether the double saw a non-blocking health read of `service` (a triggered refresh).
fn refreshed(consul: &ConsulDouble, service: &str) -> bool {
    consul
        .requests()
        .iter()
        .any(|r| is_health_query(r, service) && r.param("index").is_none())
}

/// Waits until every watcher is parked in a blocking query.
async fn parked(world: &World) {
    let all_blocking = |c: &ConsulDouble| {
        Service::ALL.iter().all(|s| {
            c.requests()
                .iter()
                .any(|r| is_health_query(r, s.consul_name()) && r.param("index").is_some())
        })
    };
    within("every watcher to park", world.consul.wait_for(all_blocking)).await;
}

#[tokio::test]
async fn webhook_answers_as_the_original_case_by_case() {
    const CLUB: &str = "DMS.SMS.v1.service.club";
    let world = World::start().await;
    let gw = Gateway::start_consul(&world.consul.url(), fast).await;
    all_loaded(&gw).await;
    parked(&world).await;
    let health = reqwest::get(format!(
        "{}/v1/health/service/{AUTH}?passing=true",
        world.consul.url()
    ))
    .await
    .expect("health")
    .text()
    .await
    .expect("body");
    world.consul.clear_requests();

    // Our token check comes first (a deliberate addition): 401 without, 403 when wrong.
    let (status, body) = webhook(
        &gw,
        Post {
            token: None,
            ..Post::default()
        },
    )
    .await;
    assert_eq!(status, 401, "{body}");
    let wrong = Post {
        token: Some("wrong-token-wrong-token"),
        ..Post::default()
    };
    assert_eq!(webhook(&gw, wrong).await.0, 403);

    // 1. No (or an empty) X-Consul-Index: the original's 407, without a code.
    for index in [None, Some("")] {
        let (status, body) = webhook(
            &gw,
            Post {
                index,
                ..Post::default()
            },
        )
        .await;
        assert_eq!(status, 407, "{index:?}");
        let body: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert_eq!(
            body,
            serde_json::json!({"status": 407, "message": "please send the request through the proxy"})
        );
    }

    // 2. Type: checks → 200, empty body, nothing else.
    let checks = Post {
        kind: Some("checks"),
        service: Some(CLUB),
        index: Some("5"),
        body: "not even json",
        ..Post::default()
    };
    assert_eq!(webhook(&gw, checks).await, (200, String::new()));

    // 5./6. A service post: 200, empty body, that service re-read at once.
    let auth = |index| Post {
        service: Some(AUTH),
        index: Some(index),
        body: &health,
        ..Post::default()
    };
    assert_eq!(webhook(&gw, auth("777")).await, (200, String::new()));
    world.consul.wait_for(|c| refreshed(c, AUTH)).await;
    assert!(
        !refreshed(&world.consul, CLUB),
        "the checks post refreshed nothing"
    );

    // 3. The same (service, index) within 60 s → 409, empty body — even with a bad body.
    assert_eq!(webhook(&gw, auth("777")).await, (409, String::new()));
    let bad_duplicate = Post {
        body: "{not json",
        ..auth("777")
    };
    assert_eq!(webhook(&gw, bad_duplicate).await.0, 409);
    // Another index, or another service (named by ?service=), is a new pair.
    assert_eq!(webhook(&gw, auth("778")).await.0, 200);
    let club = Post {
        query: "?service=DMS.SMS.v1.service.club",
        index: Some("777"),
        ..Post::default()
    };
    assert_eq!(webhook(&gw, club).await.0, 200);
    world.consul.wait_for(|c| refreshed(c, CLUB)).await;

    // 4. A body that is not Consul's health array → 400.
    for body in ["{not json", "{\"an\":\"object\"}", "[{\"Node\":1}]"] {
        let post = Post {
            service: Some(AUTH),
            index: Some("900"),
            body,
            ..Post::default()
        };
        let (status, reply) = webhook(&gw, post).await;
        assert_eq!(status, 400, "{body}: {reply}");
        let reply: serde_json::Value = serde_json::from_str(&reply).expect("json");
        support::assert_envelope(status, &reply);
    }

    // No service named: every service is re-read, as the original reloads all five.
    world.consul.clear_requests();
    let anonymous = Post {
        index: Some("901"),
        ..Post::default()
    };
    assert_eq!(webhook(&gw, anonymous).await.0, 200);
    world
        .consul
        .wait_for(|c| Service::ALL.iter().all(|s| refreshed(c, s.consul_name())))
        .await;
    // The gateway still works after all that.
    assert_eq!(own_info(&gw).await, 200);
}

/// The gateway's `sms_gateway_broadcasts_total` line for `service` and `outcome`.
fn broadcasts_metric(gw: &Gateway, service: Service, outcome: &str) -> u64 {
    let text = gw.gateway.state.metrics.render();
    let wanted =
        format!("sms_gateway_broadcasts_total{{service=\"{service}\",outcome=\"{outcome}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&wanted))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn every_instance_is_told_once_at_start_up_and_once_per_coalesced_change() {
    let world = World::start().await;
    let calls = |shared: &Shared| Service::ALL.map(|s| shared.events.calls(s));
    let gw = Gateway::start_consul(&world.consul.url(), |config| {
        fast(config);
        // Generous on a loaded machine: changes made together fall in one window.
        config.consul.broadcast_delay = Duration::from_millis(500);
    })
    .await;
    all_loaded(&gw).await;
    // Start-up: one broadcast after the first loads.
    let told = |n: u64| {
        move |e: &sms_gateway::reference::EventLog| Service::ALL.iter().all(|s| e.calls(*s) >= n)
    };
    tokio::time::timeout(GENEROUS, world.shared.events.wait_until(told(1)))
        .await
        .expect("start-up broadcast");
    assert_eq!(calls(&world.shared), [1; 5]);

    // Two registrations at once (auth and outing): one more broadcast, to every instance,
    // the new ones included.
    let (second_auth, auth_2) = second_auth().await;
    let outing_shared = Shared::seeded();
    let outing_2 = reference::spawn(
        Service::Outing,
        TcpListener::bind("127.0.0.1:0").await.expect("bind"),
        &outing_shared,
        &Options::default(),
    )
    .expect("second outing");
    world
        .consul
        .register_ttl(AUTH, "auth-2", "127.0.0.1", auth_2.address.port());
    world.consul.register_ttl(
        "DMS.SMS.v1.service.outing",
        "outing-2",
        "127.0.0.1",
        outing_2.address.port(),
    );
    tokio::time::timeout(GENEROUS, world.shared.events.wait_until(told(2)))
        .await
        .expect("change broadcast");
    tokio::time::timeout(GENEROUS, async {
        second_auth
            .events
            .wait_until(|e| e.calls(Service::Auth) >= 1)
            .await;
        outing_shared
            .events
            .wait_until(|e| e.calls(Service::Outing) >= 1)
            .await;
    })
    .await
    .expect("new instances told");
    assert_eq!(calls(&world.shared), [2; 5], "one coalesced broadcast");
    assert_eq!(second_auth.events.calls(Service::Auth), 1);
    assert_eq!(outing_shared.events.calls(Service::Outing), 1);
    assert_eq!(ids(&gw, Service::Auth).len(), 2);

    // A deregistration: everyone left is told once more; the gone instance is not.
    world.consul.deregister("outing-2");
    tokio::time::timeout(GENEROUS, world.shared.events.wait_until(told(3)))
        .await
        .expect("deregistration broadcast");
    tokio::time::timeout(
        GENEROUS,
        second_auth
            .events
            .wait_until(|e| e.calls(Service::Auth) >= 2),
    )
    .await
    .expect("auth-2 told");
    assert_eq!(calls(&world.shared), [3; 5]);
    assert_eq!(outing_shared.events.calls(Service::Outing), 1);

    // Every call carried the usual metadata; the outcomes are in the metrics.
    for shared in [&world.shared, &second_auth, &outing_shared] {
        for service in Service::ALL {
            assert_eq!(
                shared.events.valid_calls(service),
                shared.events.calls(service),
                "{service}"
            );
        }
    }
    // A broadcast ends before the next starts, so the first two are counted by now (the
    // last one's replies may still be on their way).
    let auth_ok = broadcasts_metric(&gw, Service::Auth, "ok");
    assert!((1 + 2..=3 + 2).contains(&auth_ok), "{auth_ok}");
    let outing_ok = broadcasts_metric(&gw, Service::Outing, "ok");
    assert!((1 + 2..=3 + 1).contains(&outing_ok), "{outing_ok}");
    assert_eq!(broadcasts_metric(&gw, Service::Club, "error"), 0);
    auth_2.task.abort();
    outing_2.task.abort();
}

#[tokio::test]
async fn broadcast_off_tells_nobody() {
    let world = World::start().await;
    let gw = Gateway::start_consul(&world.consul.url(), |config| {
        fast(config);
        config.consul.broadcast = false;
    })
    .await;
    all_loaded(&gw).await;
    // A request through every service proves the lists are loaded and in use; by then a
    // broadcast (200 ms after the loads) would have had time to start.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(own_info(&gw).await, 200);
    for service in Service::ALL {
        assert_eq!(world.shared.events.calls(service), 0, "{service}");
    }
}

#[tokio::test]
async fn a_change_made_during_an_outage_is_in_use_soon_after_consul_returns() {
    let world = World::start().await;
    let gw = Gateway::start_consul(&world.consul.url(), |config| {
        fast(config);
        // Without the probe, the back-off alone would leave a watcher asleep for minutes.
        config.consul.backoff_base = Duration::from_secs(60);
        config.consul.max_backoff = Duration::from_secs(600);
    })
    .await;
    all_loaded(&gw).await;
    parked(&world).await;
    let (_second, running) = second_auth().await;
    let recovery = outage_then_change(&world, &gw, &running, Duration::from_millis(1500)).await;
    // The figure itself is measured by `measure_recovery_and_webhook_wake_up`.
    assert!(recovery < GENEROUS, "{recovery:?}");
    // Requests kept being served from the last good list throughout (checked inside).
    running.task.abort();
}

/// Pauses Consul for `outage`, registers auth-2 meanwhile (or deregisters it when
/// registered), resumes, and returns the time from Consul's return to the changed list.
async fn outage_then_change(
    world: &World,
    gw: &Gateway,
    running: &Running,
    outage: Duration,
) -> Duration {
    let had = ids(gw, Service::Auth).len();
    world.consul.pause().await;
    assert_eq!(own_info(gw).await, 200, "the last good list serves");
    let wanted = toggle_second_auth(world, running, had);
    // The outage itself (not a synchronisation): the watchers fail and back off.
    tokio::time::sleep(outage).await;
    assert_eq!(own_info(gw).await, 200, "the last good list serves");
    let blocking = blocking_auth_queries(&world.consul);
    world.consul.resume().await;
    let back = Instant::now();
    until_list(gw, Service::Auth, |ids| ids.len() == wanted).await;
    let recovery = back.elapsed();
    // The query that brought the change, then the next one, parked.
    within(
        "the auth watcher parks again",
        world
            .consul
            .wait_for(|c| blocking_auth_queries(c) >= blocking + 2),
    )
    .await;
    recovery
}

/// Registers auth-2 when auth has `had` = 1 instance, else deregisters it; returns the
/// instance count to expect.
fn toggle_second_auth(world: &World, running: &Running, had: usize) -> usize {
    if had == 1 {
        world
            .consul
            .register_ttl(AUTH, "auth-2", "127.0.0.1", running.address.port());
        2
    } else {
        world.consul.deregister("auth-2");
        1
    }
}

/// Awaits `future` for at most [`GENEROUS`]; a hang fails the test, naming `what`.
async fn within<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(GENEROUS, future)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

fn blocking_auth_queries(consul: &ConsulDouble) -> usize {
    consul.count(|r| is_health_query(r, AUTH) && r.param("index").is_some())
}

fn refreshes_of_auth(consul: &ConsulDouble) -> usize {
    consul.count(|r| is_health_query(r, AUTH) && r.param("index").is_none())
}

/// Puts the auth watcher to sleep in back-off (a refresh that Consul answers 500), then
/// registers or deregisters auth-2 and posts the webhook; returns the time from the
/// post to the changed list.
async fn wake_by_webhook(world: &World, gw: &Gateway, running: &Running, round: u32) -> Duration {
    let had = ids(gw, Service::Auth).len();
    let (sleep_index, wake_index) = (format!("{round}0"), format!("{round}1"));
    let post = |index| Post {
        service: Some(AUTH),
        index: Some(index),
        ..Post::default()
    };
    let refreshes = refreshes_of_auth(&world.consul);
    world.consul.set_fail_next(1, 500);
    assert_eq!(webhook(gw, post(&sleep_index)).await.0, 200);
    // The watcher's refresh got the 500: it is in back-off now.
    within(
        "the refresh that fails",
        world.consul.wait_for(|c| refreshes_of_auth(c) > refreshes),
    )
    .await;
    let wanted = toggle_second_auth(world, running, had);
    let blocking = blocking_auth_queries(&world.consul);
    let posted = Instant::now();
    assert_eq!(webhook(gw, post(&wake_index)).await.0, 200);
    until_list(gw, Service::Auth, |ids| ids.len() == wanted).await;
    let woken = posted.elapsed();
    // Parked again in a blocking query before the next round.
    within(
        "the auth watcher parks again",
        world
            .consul
            .wait_for(|c| blocking_auth_queries(c) > blocking),
    )
    .await;
    woken
}

/// A gateway whose watchers back off for minutes after an error.
fn slow_backoff(config: &mut Config) {
    fast(config);
    config.consul.backoff_base = Duration::from_secs(600);
    config.consul.max_backoff = Duration::from_secs(600);
}

#[tokio::test]
async fn a_webhook_wakes_a_watcher_sleeping_in_back_off() {
    let world = World::start().await;
    let gw = Gateway::start_consul(&world.consul.url(), slow_backoff).await;
    all_loaded(&gw).await;
    parked(&world).await;
    let (_second, running) = second_auth().await;
    // The back-off pause is random in [0, 10 min]; the webhook ends it at once.
    let woken = wake_by_webhook(&world, &gw, &running, 1).await;
    assert!(woken < GENEROUS, "{woken:?}");
    let errors = gw.gateway.state.metrics.render();
    assert!(
        errors.contains("sms_gateway_consul_watch_errors_total{service=\"auth\"} 1"),
        "{errors}"
    );
    running.task.abort();
}

fn summary(samples: &mut [Duration]) -> String {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    format!(
        "median {:.0} ms, min {:.0} ms, max {:.0} ms over {}",
        ms(samples[samples.len() / 2]),
        ms(samples[0]),
        ms(samples[samples.len() - 1]),
        samples.len()
    )
}

/// Measures (1) the time from Consul's return after a 3 s outage to a change made during
/// it being in use, with the default back-off (100 ms doubling up to 30 s) and probe
/// interval (500 ms); (2) the time from a webhook post to the changed list while the
/// watcher sleeps in a 10-minute back-off.
/// Run with `cargo test --release --test e2e_consul measure_recovery -- --ignored --nocapture`.
#[tokio::test]
#[ignore = "measurement; prints figures"]
async fn measure_recovery_and_webhook_wake_up() {
    let rounds = 10;
    let world = World::start().await;
    let (_second, running) = second_auth().await;
    let mut recovery = Vec::new();
    {
        let gw = Gateway::start_consul(&world.consul.url(), |config| {
            config.consul.min_interval = Duration::from_millis(10);
        })
        .await;
        all_loaded(&gw).await;
        parked(&world).await;
        for round in 0..rounds {
            let took = outage_then_change(&world, &gw, &running, Duration::from_secs(3)).await;
            eprintln!("outage round {round}: {took:?}");
            recovery.push(took);
        }
    }
    let mut wake = Vec::new();
    {
        world.consul.clear_requests();
        let gw = Gateway::start_consul(&world.consul.url(), slow_backoff).await;
        all_loaded(&gw).await;
        parked(&world).await;
        for round in 0..rounds {
            let took = wake_by_webhook(&world, &gw, &running, round + 1).await;
            eprintln!("wake round {round}: {took:?}");
            wake.push(took);
        }
    }
    println!(
        "consul back after a 3 s outage → change in use: {}",
        summary(&mut recovery)
    );
    println!(
        "webhook post → change in use (watcher in back-off): {}",
        summary(&mut wake)
    );
    running.task.abort();
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
