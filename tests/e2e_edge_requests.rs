//! Request-level edge hardening end to end (issue 12 items 4, 8, 9, 10): overload
//! shedding in front of a hanging backend, login throttling (alone and shared by two
//! replicas through a real redis-server), clean client messages, `Cache-Control` on
//! per-caller answers, and the tightened access rules.

mod support;

#[path = "support/redis.rs"]
mod redis_support;

use std::time::{Duration, Instant};

use redis_support::RedisServer;
use reqwest::Method;
use serde_json::json;
use sms_gateway::config::Config;
use sms_gateway::guard::Scope;
use sms_gateway::guard::login::LoginLimit;
use sms_gateway::reference::Options;
use sms_gateway::upstream::Service;
use sms_gateway::upstream::shed::ServiceOverload;
use support::{Gateway, assert_envelope, seed};

/// Waits (bounded) until `condition` holds; the gateway runs in this process, so its
/// state is read directly instead of sleeping for a guessed time.
async fn until(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// === overload shedding ===

#[tokio::test]
async fn a_hanging_backend_gets_its_bound_and_the_rest_is_shed_at_once() {
    let options = Options {
        delay: Duration::from_secs(30),
    };
    let gw = Gateway::start_with(options, |config| {
        config.upstream.deadline = Duration::from_secs(60);
        config.overload.services.insert(
            Service::Auth,
            ServiceOverload {
                max_in_flight: Some(2),
                max_waiting: Some(1),
                max_wait: Some(Duration::from_secs(60)),
            },
        );
    })
    .await;
    let path = format!("/v1/students/uuid/{}", seed::STUDENT_UUID);
    let gw = std::sync::Arc::new(gw);
    let mut held = Vec::new();
    for _ in 0..3 {
        let (gw, path) = (gw.clone(), path.clone());
        held.push(tokio::spawn(async move {
            gw.call(Method::GET, &path, seed::STUDENT_UUID, None).await
        }));
    }
    let shed = &gw.gateway.state.shed;
    until("two calls in flight and one waiting", || {
        shed.in_flight(Service::Auth) == 2 && shed.waiting(Service::Auth) == 1
    })
    .await;
    // Past both bounds: 503 / -301 at once, with Retry-After, while the others wait.
    let started = Instant::now();
    let response = gw
        .client
        .get(gw.url(&path))
        .bearer_auth(gw.token(seed::STUDENT_UUID))
        .send()
        .await
        .expect("response");
    assert!(started.elapsed() < Duration::from_secs(5), "not at once");
    assert_eq!(response.status().as_u16(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    let body: serde_json::Value = response.json().await.expect("json");
    assert_envelope(503, &body);
    assert_eq!(body["code"], -301);
    assert_eq!(
        body["message"],
        "the auth service is busy, please retry shortly"
    );
    assert!(held.iter().all(|task| !task.is_finished()));
    let metrics = gw.gateway.state.metrics.render();
    assert!(
        metrics.contains(r#"sms_gateway_shed_total{service="auth"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"sms_gateway_requests_in_flight{service="auth"} 2"#));
    // Clients that give up free their slots (the request futures are dropped).
    for task in &held {
        task.abort();
    }
    until("the slots to be released", || {
        shed.in_flight(Service::Auth) == 0 && shed.waiting(Service::Auth) == 0
    })
    .await;
}

// === login throttling ===

fn login_limits(config: &mut Config, lockout: Duration) {
    config.guard.login.account_ip = LoginLimit {
        failures: 3,
        window: Duration::from_secs(600),
        lockout,
        max_lockout: lockout * 4,
    };
    config.guard.login.account = LoginLimit {
        failures: 1000,
        window: Duration::from_secs(600),
        lockout,
        max_lockout: lockout * 4,
    };
}

async fn login(gw: &Gateway, password: &str) -> reqwest::Response {
    gw.client
        .post(gw.url("/v1/login/student"))
        .json(&json!({"student_id": "demostudent", "student_pw": password}))
        .send()
        .await
        .expect("response")
}

#[tokio::test]
async fn failed_logins_are_throttled_then_recover_and_a_success_resets() {
    let gw = Gateway::start_with(Options::default(), |config| {
        login_limits(config, Duration::from_secs(1));
    })
    .await;
    for _ in 0..3 {
        assert_eq!(login(&gw, "wrong").await.status().as_u16(), 409);
    }
    let refused = login(&gw, "demo-student-pw").await;
    assert_eq!(refused.status().as_u16(), 429);
    assert_eq!(refused.headers()["retry-after"], "1");
    assert!(
        refused.headers()["cache-control"]
            .to_str()
            .is_ok_and(|v| v.contains("no-store"))
    );
    let body: serde_json::Value = refused.json().await.expect("json");
    assert_envelope(429, &body);
    assert_eq!(body["code"], 0);
    // After the lockout the real password works, and the success resets the count.
    let mut throttled = 1;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = login(&gw, "demo-student-pw").await.status().as_u16();
        if status == 200 {
            break;
        }
        assert_eq!(status, 429);
        throttled += 1;
        assert!(Instant::now() < deadline, "never recovered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for _ in 0..2 {
        assert_eq!(login(&gw, "wrong").await.status().as_u16(), 409);
    }
    assert_eq!(login(&gw, "demo-student-pw").await.status().as_u16(), 200);
    let metrics = gw.gateway.state.metrics.render();
    assert!(
        metrics.contains(r#"sms_gateway_login_throttled_total{scope="account_ip"}"#),
        "{metrics}"
    );
    // Every refusal is one audit event naming the account, never the password.
    let page: serde_json::Value = gw
        .client
        .get(gw.admin_url("/admin/audit"))
        .send()
        .await
        .expect("audit")
        .json()
        .await
        .expect("audit json");
    let text = page.to_string();
    assert!(!text.contains("demo-student-pw"), "{text}");
    let events: Vec<&serde_json::Value> = page["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|event| event["kind"] == "login_throttled")
        .collect();
    assert_eq!(events.len(), throttled, "{text}");
    assert!(
        events.iter().all(|event| event["account"] == "demostudent"),
        "{text}"
    );
}

#[tokio::test]
async fn two_replicas_share_the_login_throttle_through_redis() {
    let redis = RedisServer::start();
    let prefix = format!("edge-login-{}:", std::process::id());
    let shared = |config: &mut Config| {
        login_limits(config, Duration::from_secs(60));
        config.redis.url = Some(redis.url());
        config.guard.scope = Scope::Cluster;
        config.guard.cluster.timeout = Duration::from_secs(2);
        config.guard.cluster.key_prefix = prefix.clone();
    };
    let first = Gateway::start_with(Options::default(), shared).await;
    let addresses = Service::ALL
        .into_iter()
        .map(|service| (service, vec![first.service_address(service).to_string()]))
        .collect();
    let second = Gateway::start_for(&addresses, shared).await;
    // Failures alternate between the replicas; the third one locks both.
    for gw in [&first, &second, &first] {
        assert_eq!(login(gw, "wrong").await.status().as_u16(), 409);
    }
    for gw in [&second, &first] {
        let response = login(gw, "demo-student-pw").await;
        assert_eq!(response.status().as_u16(), 429);
        let retry: u64 = response.headers()["retry-after"]
            .to_str()
            .ok()
            .and_then(|v| v.parse().ok())
            .expect("retry-after");
        assert!((1..=60).contains(&retry), "{retry}");
    }
    assert_eq!(first.gateway.state.guard.stats().local_fallbacks, 0);
}

// === clean messages and Cache-Control ===

#[tokio::test]
async fn client_messages_never_show_rust_internals() {
    let gw = Gateway::start().await;
    let leaks = [
        "expected struct",
        "InvalidToken",
        "Base64",
        "InvalidByte",
        "golang struct",
        "u32",
    ];
    let own = format!("/v1/students/uuid/{}", seed::STUDENT_UUID);
    let token = gw.token(seed::STUDENT_UUID);
    let login_body = |content_type: &str, body: &'static str| {
        gw.client
            .post(gw.url("/v1/login/student"))
            .header("content-type", content_type)
            .body(body)
    };
    let cases: Vec<(&str, reqwest::RequestBuilder)> = vec![
        (
            "bad base64 token",
            gw.client.get(gw.url(&own)).bearer_auth("a$b.c$d.e$f"),
        ),
        (
            "two-part token",
            gw.client.get(gw.url(&own)).bearer_auth("abc.def"),
        ),
        ("JSON array body", login_body("application/json", "[1,2]")),
        (
            "wrong JSON type",
            gw.client
                .post(gw.url("/v1/login/student"))
                .json(&json!({"student_id": 5, "student_pw": "x"})),
        ),
        (
            "malformed JSON",
            login_body("application/json", "{\"student_id\":"),
        ),
        (
            "broken multipart",
            login_body(
                "multipart/form-data; boundary=x",
                "--x\r\nContent-Disposition: form-data\r\n\r\nno name\r\n",
            ),
        ),
        (
            "bad query number",
            gw.client
                .get(gw.url(&format!(
                    "/v1/students/uuid/{}/outings?start=abc&count=1",
                    seed::STUDENT_UUID
                )))
                .bearer_auth(&token),
        ),
    ];
    for (what, request) in cases {
        let response = request.send().await.expect("response");
        let status = response.status().as_u16();
        assert!((400..500).contains(&status), "{what}: {status}");
        let cache_control = response.headers().get("cache-control").cloned();
        let body: serde_json::Value = response.json().await.expect("json");
        assert_envelope(status, &body);
        let message = body["message"].as_str().unwrap_or_default();
        for leak in leaks {
            assert!(!message.contains(leak), "{what}: {message}");
        }
        assert_eq!(
            cache_control.as_ref().and_then(|v| v.to_str().ok()),
            Some("no-store"),
            "{what}: error envelopes are not stored"
        );
    }
}

#[tokio::test]
async fn per_caller_answers_are_private_and_not_stored() {
    let gw = Gateway::start().await;
    let get = |path: String, uuid: &str| {
        gw.client
            .get(gw.url(&path))
            .bearer_auth(gw.token(uuid))
            .send()
    };
    let own = get(
        format!("/v1/students/uuid/{}", seed::STUDENT_UUID),
        seed::STUDENT_UUID,
    )
    .await
    .expect("response");
    assert_eq!(own.status().as_u16(), 200);
    assert_eq!(own.headers()["cache-control"], "private, no-store");
    let login = gw
        .client
        .post(gw.url("/v1/login/student"))
        .json(&json!({"student_id": "demostudent", "student_pw": "demo-student-pw"}))
        .send()
        .await
        .expect("response");
    assert_eq!(login.status().as_u16(), 200);
    assert_eq!(login.headers()["cache-control"], "private, no-store");
    // The shared calendar month too: another cache would miss the invalidations.
    let month = get(
        "/v1/schedules/years/2026/months/3".to_owned(),
        seed::STUDENT_UUID,
    )
    .await
    .expect("response");
    assert_eq!(month.status().as_u16(), 200);
    assert_eq!(month.headers()["cache-control"], "private, no-store");
}

// === access rules ===

#[tokio::test]
async fn tightened_access_rules_follow_the_callers_lines() {
    let gw = Gateway::start().await;
    let cases = [
        // Time table of a day: not for admins (they have no class).
        (
            Method::GET,
            "/v1/time-tables/years/2026/months/3/days/2".to_owned(),
            seed::ADMIN_UUID,
            403,
        ),
        // An outing's card: the owning student (ownership is the backend's).
        (
            Method::GET,
            "/v1/outings/uuid/outing-000000000001/card".to_owned(),
            seed::TEACHER_UUID,
            403,
        ),
        (
            Method::GET,
            "/v1/outings/uuid/outing-000000000001/card".to_owned(),
            seed::PARENT_UUID,
            403,
        ),
        // The filtered outing list: teachers only.
        (
            Method::GET,
            "/v1/outings/with-filter?start=0&count=10".to_owned(),
            seed::ADMIN_UUID,
            403,
        ),
        (
            Method::GET,
            "/v1/outings/with-filter?start=0&count=10".to_owned(),
            seed::STUDENT_UUID,
            403,
        ),
        // Schedules are changed by teachers, not admins.
        (
            Method::DELETE,
            "/v1/schedules/uuid/schedule-000000000001".to_owned(),
            seed::ADMIN_UUID,
            403,
        ),
        (
            Method::PATCH,
            "/v1/schedules/uuid/schedule-000000000001".to_owned(),
            seed::ADMIN_UUID,
            403,
        ),
    ];
    for (method, path, uuid, expected) in cases {
        let (status, body) = gw.call(method.clone(), &path, uuid, None).await;
        assert_eq!(status, expected, "{method} {path} as {uuid}: {body}");
        assert_envelope(status, &body);
    }
    // The callers named keep their access.
    let (status, body) = gw
        .call(
            Method::GET,
            "/v1/time-tables/years/2026/months/3/days/2",
            seed::STUDENT_UUID,
            None,
        )
        .await;
    assert_ne!(status, 403, "{body}");
    let (status, body) = gw
        .call(
            Method::GET,
            "/v1/outings/with-filter?start=0&count=10",
            seed::TEACHER_UUID,
            None,
        )
        .await;
    assert_ne!(status, 403, "{body}");
}
