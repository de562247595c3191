//! End-to-end upstream behaviour through real HTTP and real gRPC: deadlines (408), dead
//! instances (503 / -301), reconnection after an instance comes back, round robin across
//! instances, many requests in flight.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use reqwest::Method;
use sms_gateway::reference::{self, Options, Shared};
use sms_gateway::upstream::Service;
use support::proxy::Proxy;
use support::{Gateway, assert_envelope, seed};
use tokio::net::TcpListener;

const STUDENT: &str = seed::STUDENT_UUID;

fn own_info() -> String {
    format!("/v1/students/uuid/{STUDENT}")
}

#[tokio::test]
async fn slow_instance_answers_408_within_the_deadline() {
    let deadline = Duration::from_millis(300);
    let options = Options {
        delay: Duration::from_secs(5),
    };
    let gw = Gateway::start_with(options, |config| {
        config.upstream.deadline = deadline;
    })
    .await;
    let started = Instant::now();
    let (status, body) = gw.call(Method::GET, &own_info(), STUDENT, None).await;
    let elapsed = started.elapsed();
    assert_eq!(status, 408, "{body}");
    assert_envelope(status, &body);
    assert_eq!(body["code"], 0);
    assert!(
        elapsed < Duration::from_secs(4),
        "answered after {elapsed:?}, not at the deadline"
    );
}

#[tokio::test]
async fn dead_instance_answers_503_minus_301() {
    // A port that refuses connections: bind, read the port, close.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let dead = listener.local_addr().expect("addr").to_string();
    drop(listener);
    let addresses: BTreeMap<Service, Vec<String>> = Service::ALL
        .into_iter()
        .map(|s| (s, vec![dead.clone()]))
        .collect();
    let gw = Gateway::start_for(&addresses, |_| {}).await;
    let (status, body) = gw.call(Method::GET, &own_info(), STUDENT, None).await;
    assert_eq!(status, 503, "{body}");
    assert_envelope(status, &body);
    assert_eq!(body["code"], -301);
}

#[tokio::test]
async fn an_instance_that_comes_back_is_called_again_on_a_new_connection() {
    let shared = Shared::seeded();
    let running = reference::spawn_all(None, &shared, &Options::default())
        .await
        .expect("services");
    let auth = running
        .iter()
        .find(|r| r.service == Service::Auth)
        .expect("auth");
    let proxy = Proxy::start(auth.address).await;
    let addresses: BTreeMap<Service, Vec<String>> = running
        .iter()
        .map(|r| {
            let address = if r.service == Service::Auth {
                proxy.address()
            } else {
                r.address
            };
            (r.service, vec![address.to_string()])
        })
        .collect();
    let gw = Gateway::start_for(&addresses, |_| {}).await;
    let (status, body) = gw.call(Method::GET, &own_info(), STUDENT, None).await;
    assert_eq!(status, 200, "{body}");
    // The kill cuts the connection the gateway keeps to the instance and refuses new ones.
    proxy.kill();
    // Refused (503), or cut while in flight (500): either way an envelope, no hang.
    let (status, body) = gw.call(Method::GET, &own_info(), STUDENT, None).await;
    assert!(matches!(status, 500 | 503), "{status} {body}");
    assert_envelope(status, &body);
    proxy.revive().await;
    for _ in 0..3 {
        let (status, body) = gw.call(Method::GET, &own_info(), STUDENT, None).await;
        assert_eq!(status, 200, "{body}");
    }
    for r in running {
        r.task.abort();
    }
}

#[tokio::test]
async fn round_robin_spreads_calls_over_instances() {
    let shared = Shared::seeded();
    let mut running = reference::spawn_all(None, &shared, &Options::default())
        .await
        .expect("services");
    // A second auth instance with its own metadata log, so each instance's calls can be counted.
    let second = Shared::seeded();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    running.push(
        reference::spawn(Service::Auth, listener, &second, &Options::default())
            .expect("second auth"),
    );
    let mut addresses: BTreeMap<Service, Vec<String>> = BTreeMap::new();
    for r in &running {
        addresses
            .entry(r.service)
            .or_default()
            .push(r.address.to_string());
    }
    let gw = Gateway::start_for(&addresses, |_| {}).await;
    for _ in 0..10 {
        let (status, body) = gw.call(Method::GET, &own_info(), STUDENT, None).await;
        assert_eq!(status, 200, "{body}");
    }
    let first_calls = shared.metadata.all().len();
    let second_calls = second.metadata.all().len();
    assert_eq!((first_calls, second_calls), (5, 5));
    for r in running {
        r.task.abort();
    }
}

#[tokio::test]
async fn hundreds_of_concurrent_requests_are_all_answered_correctly() {
    let gw = Gateway::start().await;
    let token = gw.token(STUDENT);
    let other = gw.token(seed::STUDENT2_UUID);
    let mut tasks = Vec::new();
    for i in 0..400 {
        let client = gw.client.clone();
        // Alternate two callers: each must get its own answer, never the other's.
        let (uuid, token) = if i % 2 == 0 {
            (STUDENT, token.clone())
        } else {
            (seed::STUDENT2_UUID, other.clone())
        };
        let url = gw.url(&format!("/v1/students/uuid/{uuid}"));
        tasks.push(tokio::spawn(async move {
            let response = client
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .expect("response");
            let status = response.status().as_u16();
            let body: serde_json::Value = response.json().await.expect("json");
            (uuid, status, body)
        }));
    }
    for task in tasks {
        let (uuid, status, body) = task.await.expect("task");
        assert_eq!(status, 200, "{body}");
        assert!(
            body["message"].as_str().is_some_and(|m| m.ends_with(uuid)),
            "{body}"
        );
    }
}
