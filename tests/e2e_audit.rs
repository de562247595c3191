//! The audit stream end to end: each security event appears exactly once per cause in
//! the ring (`GET /admin/audit` on the admin listener), in the counters and as a log
//! line with the audit target; nothing secret is written; the admin listener is the
//! only place the ring and the metrics are served.

mod support;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use sms_gateway::audit::TARGET;
use sms_gateway::config::{Config, LogConfig, LogFormat};
use sms_gateway::upstream::Service;
use support::consul::ConsulDouble;
use support::{Gateway, Lines, WEBHOOK_TOKEN, seed};
use tokio::net::TcpListener;

const STUDENT: &str = seed::STUDENT_UUID;
const OTHER_STUDENT: &str = "student-000000000002";
const WRONG_PASSWORD: &str = "wrong-pw-Secret-4711";
const GENEROUS: Duration = Duration::from_secs(20);

/// `GET /admin/audit[?since=…]` on the admin listener.
async fn audit_page(gw: &Gateway, query: &str) -> (u16, Value) {
    gw.send(gw.client.get(gw.admin_url(&format!("/admin/audit{query}"))))
        .await
}

/// Events per kind in `page`.
fn kinds(page: &Value) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for event in page["events"].as_array().expect("events") {
        *counts
            .entry(event["kind"].as_str().expect("kind").to_owned())
            .or_default() += 1;
    }
    counts
}

fn events_of<'a>(page: &'a Value, kind: &str) -> Vec<&'a Value> {
    page["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["kind"] == kind)
        .collect()
}

/// Waits (on the stream's change signal, not a timer) until `wanted` holds.
async fn until_audit(gw: &Gateway, wanted: impl Fn(&BTreeMap<String, usize>) -> bool) {
    let audit = gw.gateway.state.audit.clone();
    let mut changes = audit.subscribe();
    tokio::time::timeout(GENEROUS, async {
        loop {
            let page = serde_json::to_value(audit.since(0)).expect("page");
            if wanted(&kinds(&page)) {
                return;
            }
            changes.changed().await.expect("audit stream alive");
        }
    })
    .await
    .expect("audit events never arrived");
}

/// A subscriber for the tests that do not read lines: tracing caches callsite interest
/// process-wide, and a test thread without one can make another thread's audit
/// callsite look disabled.
fn quiet_logs() -> tracing::subscriber::DefaultGuard {
    let log = LogConfig {
        format: LogFormat::Json,
        level: "info".to_owned(),
        ..LogConfig::default()
    };
    tracing::subscriber::set_default(sms_gateway::telemetry::subscriber_with_writer(
        &log,
        None,
        std::io::sink,
    ))
}

fn guarded(config: &mut Config) {
    config.guard.ip.limit = NonZeroU32::new(12).expect("nonzero");
    config.guard.ip.window = Duration::from_secs(600);
}

#[tokio::test]
async fn each_request_cause_is_one_event_and_nothing_secret_is_written() {
    let lines = Lines::default();
    let writer = lines.clone();
    let log = LogConfig {
        format: LogFormat::Json,
        level: "info".to_owned(),
        ..LogConfig::default()
    };
    let _default = tracing::subscriber::set_default(
        sms_gateway::telemetry::subscriber_with_writer(&log, None, move || writer.clone()),
    );
    let gw = Gateway::start_with(Default::default(), guarded).await;
    let student = format!("/v1/students/uuid/{STUDENT}");

    // Causes, once each (401 twice: no token, forged token).
    assert_eq!(gw.call(Method::GET, &student, "", None).await.0, 401);
    let forged = gw
        .client
        .get(gw.url(&student))
        .header("Authorization", "Bearer not.a.token");
    assert_eq!(gw.send(forged).await.0, 401);
    let other = format!("/v1/students/uuid/{OTHER_STUDENT}");
    assert_eq!(gw.call(Method::GET, &other, STUDENT, None).await.0, 403);
    let login = |pw: &str| json!({"student_id": "demostudent", "student_pw": pw});
    let (status, _) = gw
        .call(
            Method::POST,
            "/v1/login/student",
            "",
            Some(login(WRONG_PASSWORD)),
        )
        .await;
    assert_eq!(status, 409);
    // Not events: a good login, an allowed read, bad input.
    let (status, body) = gw
        .call(
            Method::POST,
            "/v1/login/student",
            "",
            Some(login("demo-student-pw")),
        )
        .await;
    assert_eq!(status, 200);
    let token = body["access_token"].as_str().expect("token").to_owned();
    assert_eq!(gw.call(Method::GET, &student, STUDENT, None).await.0, 200);
    assert_eq!(
        gw.call(Method::POST, "/v1/login/student", "", Some(json!({})))
            .await
            .0,
        400
    );
    // A flood from another address: 12 pass, the 13th crosses the limit (429, the
    // block starts), the rest are refused while blocked (403, no new event).
    let flooder = reqwest::Client::builder()
        .local_address(IpAddr::from([127, 0, 0, 2]))
        .build()
        .expect("client");
    let mut statuses = Vec::new();
    for _ in 0..16 {
        let response = flooder.get(gw.url(&student)).send().await.expect("flood");
        statuses.push(response.status().as_u16());
    }
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 1);
    assert_eq!(statuses.iter().filter(|s| **s == 403).count(), 3);

    let (status, page) = audit_page(&gw, "").await;
    assert_eq!(status, 200, "{page}");
    let expected: BTreeMap<String, usize> = [
        ("config_loaded", 1),
        ("forbidden", 1),
        ("ip_blocked", 1),
        ("login_failed", 1),
        // the flood's 12 passing requests had no token: 12 more 401s
        ("unauthorized", 14),
    ]
    .into_iter()
    .map(|(k, n)| (k.to_owned(), n))
    .collect();
    assert_eq!(kinds(&page), expected, "{page:#}");

    let failed = events_of(&page, "login_failed")[0];
    assert_eq!(failed["account"], "demostudent");
    assert_eq!(failed["route"], "/v1/login/student");
    assert_eq!(failed["client_ip"], "127.0.0.1");
    assert!(uuid::Uuid::parse_str(failed["request_id"].as_str().expect("id")).is_ok());
    let forbidden = events_of(&page, "forbidden")[0];
    assert_eq!(forbidden["account"], STUDENT);
    assert_eq!(forbidden["route"], "/v1/students/uuid/{student_uuid}");
    let blocked = events_of(&page, "ip_blocked")[0];
    assert_eq!(blocked["client_ip"], "127.0.0.2");
    // Sequence numbers are dense and `since` pages on from them.
    let seqs: Vec<u64> = page["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    let last = page["last"].as_u64().expect("last");
    let (_, rest) = audit_page(&gw, &format!("?since={last}")).await;
    assert_eq!(rest["events"], json!([]));
    let (_, tail) = audit_page(&gw, &format!("?since={}", last - 2)).await;
    assert_eq!(tail["events"].as_array().map(Vec::len), Some(2));
    let (status, bad) = audit_page(&gw, "?since=yesterday").await;
    assert_eq!(status, 400, "{bad}");
    support::assert_envelope(status, &bad);

    // Counters per kind on the admin listener's /metrics.
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains(r#"sms_gateway_audit_events_total{kind="unauthorized"} 14"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"sms_gateway_audit_events_total{kind="ip_blocked"} 1"#));

    // One JSON line per event, with the audit target; no secret anywhere in the logs.
    let text = lines.text();
    let audit_lines: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["target"] == TARGET)
        .collect();
    assert_eq!(audit_lines.len(), seqs.len(), "{text}");
    assert!(audit_lines.iter().all(|l| l["kind"].is_string()));
    for secret in [
        WRONG_PASSWORD,
        "demo-student-pw",
        token.as_str(),
        "not.a.token",
        support::SECRET,
    ] {
        assert!(!text.contains(secret), "{secret} was logged");
        assert!(
            !page.to_string().contains(secret),
            "{secret} is in the ring"
        );
    }

    // The public port serves neither.
    for path in ["/metrics", "/admin/audit"] {
        let (status, _) = gw.send(gw.client.get(gw.url(path))).await;
        assert_eq!(status, 404, "{path} on the public port");
    }
    let (status, _) = gw
        .send(gw.client.get(gw.admin_url("/v1/login/student")))
        .await;
    assert_eq!(status, 404, "the API is not on the admin listener");
}

#[tokio::test]
async fn the_ring_stays_bounded_under_a_flood() {
    let _default = quiet_logs();
    let gw = Gateway::start_with(Default::default(), |config| {
        config.audit.ring_size = 5;
        config.audit.max_per_second = 1000;
    })
    .await;
    for _ in 0..20 {
        let (status, _) = gw
            .call(
                Method::GET,
                &format!("/v1/students/uuid/{STUDENT}"),
                "",
                None,
            )
            .await;
        assert_eq!(status, 401);
    }
    let (_, page) = audit_page(&gw, "?since=0").await;
    assert_eq!(page["events"].as_array().map(Vec::len), Some(5));
    assert_eq!(page["last"], 21, "config_loaded + 20");
    assert_eq!(page["oldest"], 17);
    assert_eq!(page["missed"], true);
}

#[tokio::test]
async fn bad_webhook_tokens_and_breaker_flips_are_audited_once() {
    let _default = quiet_logs();
    let consul = ConsulDouble::start().await;
    let shared = sms_gateway::reference::Shared::seeded();
    let services = sms_gateway::reference::spawn_all(
        None,
        &shared,
        &sms_gateway::reference::Options::default(),
    )
    .await
    .expect("services");
    // auth-1 is a closed port: its calls fail until the breaker opens and flips it.
    let closed = {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        listener.local_addr().expect("addr").port()
    };
    for running in &services {
        let port = if running.service == Service::Auth {
            closed
        } else {
            running.address.port()
        };
        consul.register_ttl(
            running.service.consul_name(),
            &format!("{}-1", running.service),
            "127.0.0.1",
            port,
        );
    }
    let gw = Gateway::start_consul(&consul.url(), |config| {
        config.consul.min_interval = Duration::from_millis(10);
        config.breaker.open_for = Duration::from_secs(2);
    })
    .await;

    let webhook = |token: Option<&str>| {
        let mut request = gw
            .client
            .post(gw.url("/events/types/consul-change"))
            .header("X-Consul-Index", "1")
            .body("[]");
        if let Some(token) = token {
            request = request.header("X-Gateway-Token", token);
        }
        request
    };
    assert_eq!(gw.send(webhook(None)).await.0, 401);
    assert_eq!(
        gw.send(webhook(Some("wrong-token-wrong-token"))).await.0,
        403
    );
    // The right token with a bad body is not a security event.
    assert_eq!(
        gw.send(webhook(Some(WEBHOOK_TOKEN)).body("not a health array"))
            .await
            .0,
        400
    );

    let student = format!("/v1/students/uuid/{STUDENT}");
    let mut calls = 0;
    while !consul.maintenance_enabled("auth-1") {
        let (status, _) = gw.call(Method::GET, &student, STUDENT, None).await;
        assert!(status >= 500, "{status}");
        calls += 1;
        if calls == 20 {
            consul.wait_for(|c| c.maintenance_enabled("auth-1")).await;
        }
    }
    // Lifted after the open period: one event each way.
    until_audit(&gw, |k| k.get("breaker_flip") == Some(&2)).await;
    let (_, page) = audit_page(&gw, "").await;
    let flips = events_of(&page, "breaker_flip");
    assert_eq!(flips.len(), 2, "{page:#}");
    assert!(
        flips[0]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("instance=auth-1") && d.contains("consul=critical")),
        "{page:#}"
    );
    assert!(
        flips[1]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("consul=passing"))
    );
    let counts = kinds(&page);
    assert_eq!(counts.get("webhook_bad_token"), Some(&2), "{page:#}");
    assert_eq!(counts.get("unauthorized"), None);
    assert_eq!(counts.get("forbidden"), None);
    assert!(!page.to_string().contains(WEBHOOK_TOKEN));
    for running in &services {
        running.task.abort();
    }
}
