//! End-to-end upstream behaviour through real HTTP and real gRPC: deadlines (408), dead
//! instances (503 / -301), reconnection after an instance comes back, round robin across
//! instances, many requests in flight, reads surviving an instance that dies under them or
//! hangs, and the reference services accepting method paths with any package prefix (as
//! go-micro servers do).

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

/// Each running service's address, with `extra` as a second auth instance.
fn with_second_auth(
    services: &[reference::Running],
    extra: String,
) -> BTreeMap<Service, Vec<String>> {
    let mut addresses: BTreeMap<Service, Vec<String>> = services
        .iter()
        .map(|r| (r.service, vec![r.address.to_string()]))
        .collect();
    addresses.get_mut(&Service::Auth).expect("auth").push(extra);
    addresses
}

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

#[tokio::test]
async fn killing_an_instance_with_reads_in_flight_gives_no_client_error() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use support::proxy::Proxy;

    const CLIENTS: usize = 8;
    const READS: usize = 40;
    let shared = Shared::seeded();
    let services = reference::spawn_all(None, &shared, &Options::default())
        .await
        .expect("services");
    // The doomed auth instance is slow, so reads are in flight on it when it dies.
    let doomed_shared = Shared::seeded();
    let doomed = reference::spawn(
        Service::Auth,
        TcpListener::bind("127.0.0.1:0").await.expect("bind"),
        &doomed_shared,
        &Options {
            delay: Duration::from_millis(40),
        },
    )
    .expect("doomed auth");
    let proxy = Proxy::start(doomed.address).await;
    let addresses = with_second_auth(&services, proxy.address().to_string());
    // No cache: every read goes to an instance.
    let gw = Arc::new(Gateway::start_for(&addresses, |config| config.cache.enabled = false).await);

    let answered = Arc::new(AtomicUsize::new(0));
    let halfway = Arc::new(tokio::sync::Notify::new());
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (gw, answered, halfway) = (gw.clone(), answered.clone(), halfway.clone());
            tokio::spawn(async move {
                let mut statuses = Vec::with_capacity(READS);
                for _ in 0..READS {
                    let (status, body) = gw.call(Method::GET, &own_info(), STUDENT, None).await;
                    statuses.push((status, body));
                    if answered.fetch_add(1, Ordering::SeqCst) + 1 == CLIENTS * READS / 4 {
                        halfway.notify_one();
                    }
                }
                statuses
            })
        })
        .collect();
    halfway.notified().await;
    assert!(
        !doomed_shared.metadata.all().is_empty(),
        "the doomed instance took part"
    );
    proxy.kill();
    let mut failures = Vec::new();
    for client in clients {
        for (status, body) in client.await.expect("client") {
            if status != 200 {
                failures.push((status, body));
            }
        }
    }
    assert!(failures.is_empty(), "client errors: {failures:?}");
    // The kill did hit calls: they failed on the doomed instance and were retried.
    let metrics = gw.gateway.state.metrics.render();
    let doomed_errors = format!(
        "sms_gateway_upstream_calls_total{{service=\"auth\",instance=\"{}\",outcome=",
        proxy.address()
    );
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with(&doomed_errors) && !l.contains("outcome=\"ok\"")),
        "{metrics}"
    );
    doomed.task.abort();
    for running in services {
        running.task.abort();
    }
}

/// An instance that takes calls and never answers (a killed container sends no reset):
/// reads lose one short try on it and are answered by the other instance, well within
/// the deadline; the breaker then keeps the hanging instance out.
#[tokio::test]
async fn a_hanging_instance_costs_reads_one_try_not_the_deadline() {
    const READS: usize = 12;
    let shared = Shared::seeded();
    let services = reference::spawn_all(None, &shared, &Options::default())
        .await
        .expect("services");
    let hanging = reference::spawn(
        Service::Auth,
        TcpListener::bind("127.0.0.1:0").await.expect("bind"),
        &Shared::seeded(),
        &Options {
            delay: Duration::from_secs(120),
        },
    )
    .expect("hanging auth");
    let addresses = with_second_auth(&services, hanging.address.to_string());
    let gw = Gateway::start_for(&addresses, |config| {
        config.cache.enabled = false;
        config.upstream.deadline = Duration::from_secs(20);
        config.upstream.read_try_timeout = Duration::from_millis(200);
    })
    .await;
    for _ in 0..READS {
        let (status, body) = gw.call(Method::GET, &own_info(), STUDENT, None).await;
        assert_eq!(status, 200, "{body}");
    }
    let metrics = gw.gateway.state.metrics.render();
    let tried = format!(
        "sms_gateway_upstream_calls_total{{service=\"auth\",instance=\"{}\",outcome=\"deadline\"}}",
        hanging.address
    );
    assert!(metrics.lines().any(|l| l.starts_with(&tried)), "{metrics}");
    hanging.task.abort();
    for running in services {
        running.task.abort();
    }
}

/// A raw unary call with valid metadata to `path` on `address`.
async fn raw_call<Req, Rep>(
    address: std::net::SocketAddr,
    path: &'static str,
    message: Req,
) -> Result<Rep, tonic::Status>
where
    Req: prost::Message + Send + 'static,
    Rep: prost::Message + Default + Send + 'static,
{
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let mut request = tonic::Request::new(message);
    let metadata = request.metadata_mut();
    metadata.insert(
        "x-request-id",
        uuid::Uuid::new_v4().to_string().parse().expect("ascii"),
    );
    metadata.insert(
        "span-context",
        "4bf92f3577b34da6:a3ce929d0e0e4736:0:1"
            .parse()
            .expect("ascii"),
    );
    grpc.unary(
        request,
        http::uri::PathAndQuery::from_static(path),
        tonic_prost::ProstCodec::<Req, Rep>::default(),
    )
    .await
    .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn reference_services_accept_any_package_prefix_like_go_micro() {
    use sms_gateway::proto::auth::student::{LoginStudentAuthRequest, LoginStudentAuthResponse};
    let shared = Shared::seeded();
    let services = reference::spawn_all(None, &shared, &Options::default())
        .await
        .expect("services");
    let address = |service| {
        services
            .iter()
            .find(|r| r.service == service)
            .map(|r| r.address)
            .expect("running")
    };
    let login = || LoginStudentAuthRequest {
        student_id: "demostudent".into(),
        student_pw: "demo-student-pw".into(),
    };
    // How the real outing service calls auth, the canonical path, and another prefix.
    for path in [
        "/AuthStudent/LoginStudentAuth",
        "/auth.student.AuthStudent/LoginStudentAuth",
        "/dms.sms.v1.AuthStudent/LoginStudentAuth",
    ] {
        let reply: LoginStudentAuthResponse = raw_call(address(Service::Auth), path, login())
            .await
            .unwrap_or_else(|status| panic!("{path}: {status:?}"));
        assert_eq!(reply.status, 200, "{path}: {reply:?}");
        assert_eq!(reply.logged_in_student_uuid, STUDENT, "{path}");
    }
    for (service, path) in [
        (Service::Auth, "/AuthEvent/ChangeAllServiceNodes"),
        (Service::Club, "/ClubEvent/ChangeAllServiceNodes"),
        (Service::Club, "/club.ClubEvent/ChangeAllServiceNodes"),
    ] {
        let () = raw_call(address(service), path, ())
            .await
            .unwrap_or_else(|status| panic!("{path}: {status:?}"));
    }
    assert_eq!(shared.events.calls(Service::Auth), 1);
    assert_eq!(shared.events.calls(Service::Club), 2);
    // A service the server does not have is still unknown.
    let unknown: Result<(), _> = raw_call(
        address(Service::Auth),
        "/ClubEvent/ChangeAllServiceNodes",
        (),
    )
    .await;
    assert_eq!(
        unknown.expect_err("unimplemented").code(),
        tonic::Code::Unimplemented
    );
    for running in services {
        running.task.abort();
    }
}
