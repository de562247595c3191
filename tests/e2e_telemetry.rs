//! Observability end to end: spans exported over OTLP to a real receiver (a tonic OTLP
//! trace service started by the test), trace context carried into gRPC metadata, JSON
//! log lines without secrets, Prometheus metrics that move.
//!
//! Each test installs its subscriber as the thread's default; `#[tokio::test]` runs on
//! one thread, so the gateway's tasks see it too.

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::Span;
use reqwest::Method;
use serde_json::json;
use sms_gateway::config::{LogConfig, LogFormat};
use sms_gateway::telemetry::{self, TelemetryConfig};
use sms_gateway::upstream::Service;
use support::{Gateway, Lines, seed};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_stream::wrappers::TcpListenerStream;

const STUDENT: &str = seed::STUDENT_UUID;

/// An OTLP trace receiver collecting every exported span.
#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<Span>>>,
    arrived: Arc<Notify>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let spans = request
            .into_inner()
            .resource_spans
            .into_iter()
            .flat_map(|r| r.scope_spans)
            .flat_map(|s| s.spans);
        self.spans.lock().expect("spans").extend(spans);
        self.arrived.notify_waiters();
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

impl Receiver {
    async fn start() -> (Self, SocketAddr) {
        let receiver = Self::default();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("addr");
        let service = TraceServiceServer::new(receiver.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );
        (receiver, address)
    }

    fn all(&self) -> Vec<Span> {
        self.spans.lock().expect("spans").clone()
    }

    /// Waits until a span satisfies `wanted` (spans arrive in batches).
    async fn until(&self, wanted: impl Fn(&[Span]) -> bool) -> Vec<Span> {
        let waited = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                let arrived = self.arrived.notified();
                let spans = self.all();
                if wanted(&spans) {
                    return spans;
                }
                arrived.await;
            }
        })
        .await;
        waited.expect("spans never arrived")
    }
}

fn json_logs() -> LogConfig {
    LogConfig {
        format: LogFormat::Json,
        level: "info".to_owned(),
        ..LogConfig::default()
    }
}

/// One event with a field of every kind the visitor handles, and strings to escape.
fn emit_every_field_kind(subscriber: impl tracing::Subscriber + Send + Sync) {
    tracing::subscriber::with_default(subscriber, || {
        let error = std::io::Error::other("gone \"away\"");
        tracing::info!(
            status = 200u64,
            delta = -3i64,
            ok = true,
            ratio = 0.25f64,
            nan = f64::NAN,
            path = "/v1/outings/uuid/\"x\"\\y\n\u{1}é",
            method = ?http::Method::GET,
            error = %error,
            "request done"
        );
    });
}

/// The one JSON line `lines` holds.
fn only_line(lines: &Lines) -> serde_json::Value {
    let text = lines.text();
    assert!(
        text.ends_with('\n') && text.lines().count() == 1,
        "{text:?}"
    );
    serde_json::from_str(&text).expect("one JSON object")
}

#[test]
fn log_lines_match_tracing_subscribers_flattened_json_except_the_timestamp() {
    use tracing_subscriber::layer::SubscriberExt as _;
    let ours = Lines::default();
    let writer = ours.clone();
    emit_every_field_kind(telemetry::subscriber_with_writer(
        &json_logs(),
        None,
        move || writer.clone(),
    ));
    let theirs = Lines::default();
    let writer = theirs.clone();
    emit_every_field_kind(
        tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .with_writer(move || writer.clone())
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_span_list(false),
        ),
    );
    let (mut ours, mut theirs) = (only_line(&ours), only_line(&theirs));
    for line in [&ours, &theirs] {
        let stamp = line["timestamp"].as_str().expect("timestamp");
        assert!(
            stamp.len() == 27 && stamp.ends_with('Z') && stamp.as_bytes()[10] == b'T',
            "{stamp}"
        );
    }
    ours["timestamp"] = serde_json::Value::Null;
    theirs["timestamp"] = serde_json::Value::Null;
    assert_eq!(ours, theirs);
    assert_eq!(ours["path"], "/v1/outings/uuid/\"x\"\\y\n\u{1}é");
    assert_eq!(ours["error"], "gone \"away\"");
}

fn exporting_to(address: SocketAddr, ratio: f64) -> TelemetryConfig {
    exporting_with(address, ratio, Duration::from_secs(1))
}

fn exporting_with(address: SocketAddr, ratio: f64, slow: Duration) -> TelemetryConfig {
    TelemetryConfig {
        otlp_endpoint: Some(format!("http://{address}")),
        sampling_ratio: ratio,
        keep_slower_than: slow,
        export_interval: Duration::from_millis(100),
        export_timeout: Duration::from_millis(500),
        ..TelemetryConfig::default()
    }
}

/// Flushes and stops the exporter off the test's thread: the export channel's worker
/// runs on this (single-threaded) runtime, which a blocking shutdown would stall.
async fn shut_down(provider: opentelemetry_sdk::trace::SdkTracerProvider) {
    let _ = tokio::task::spawn_blocking(move || provider.shutdown()).await;
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attribute<'a>(
    span: &'a Span,
    key: &str,
) -> Option<&'a opentelemetry_proto::tonic::common::v1::AnyValue> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
}

#[tokio::test]
async fn spans_reach_the_collector_and_the_backend_sees_the_same_trace() {
    let (receiver, address) = Receiver::start().await;
    let provider = telemetry::tracer_provider(&exporting_to(address, 1.0))
        .expect("provider")
        .expect("enabled");
    let _default =
        tracing::subscriber::set_default(telemetry::subscriber(&json_logs(), Some(&provider)));
    let gw = Gateway::start().await;

    // A client-supplied traceparent is continued.
    let incoming_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let request = gw
        .client
        .get(gw.url(&format!("/v1/students/uuid/{STUDENT}")))
        .bearer_auth(gw.token(STUDENT))
        .header(
            "traceparent",
            format!("00-{incoming_trace}-00f067aa0ba902b7-01"),
        );
    let (status, body) = gw.send(request).await;
    assert_eq!(status, 200, "{body}");

    let spans = receiver
        .until(|spans| {
            spans.iter().any(|s| s.name == "GetStudentInformWithUUID")
                && spans
                    .iter()
                    .any(|s| s.name == "GET /v1/students/uuid/{student_uuid}")
        })
        .await;
    let server = spans
        .iter()
        .find(|s| s.name == "GET /v1/students/uuid/{student_uuid}")
        .expect("server span");
    let call = spans
        .iter()
        .find(|s| s.name == "GetStudentInformWithUUID")
        .expect("call span");
    assert_eq!(
        hex(&server.trace_id),
        incoming_trace,
        "the incoming trace is continued"
    );
    assert_eq!(hex(&server.parent_span_id), "00f067aa0ba902b7");
    assert_eq!(call.trace_id, server.trace_id);
    assert_eq!(
        call.parent_span_id, server.span_id,
        "the call is a child of the request span"
    );
    assert!(attribute(call, "rpc.system").is_some());
    assert!(attribute(call, "server.address").is_some());
    assert!(attribute(server, "http.response.status_code").is_some());

    // What the backend received names the call span, in both forms.
    let seen = gw.shared.metadata.all();
    let last = seen.last().expect("the backend saw the call");
    let call_span = hex(&call.span_id);
    assert_eq!(
        last.traceparent,
        format!("00-{incoming_trace}-{call_span}-01")
    );
    assert_eq!(
        last.span_context,
        format!("{incoming_trace}:{call_span}:{}:1", hex(&server.span_id))
    );
    assert!(uuid::Uuid::parse_str(&last.request_id).is_ok());
    shut_down(provider).await;
}

#[tokio::test]
async fn sampling_zero_exports_only_what_a_sampled_parent_asks_for() {
    let (receiver, address) = Receiver::start().await;
    let provider = telemetry::tracer_provider(&exporting_to(address, 0.0))
        .expect("provider")
        .expect("enabled");
    let _default =
        tracing::subscriber::set_default(telemetry::subscriber(&json_logs(), Some(&provider)));
    let gw = Gateway::start().await;
    for _ in 0..5 {
        let (status, _) = gw
            .call(
                Method::GET,
                &format!("/v1/students/uuid/{STUDENT}"),
                STUDENT,
                None,
            )
            .await;
        assert_eq!(status, 200);
    }
    let seen = gw.shared.metadata.all();
    assert!(
        seen.iter().all(|m| m.traceparent.ends_with("-00")),
        "the not-sampled flag is passed on"
    );
    assert!(
        seen.iter()
            .all(|m| sms_gateway::reference::metadata::is_jaeger_span_context(&m.span_context))
    );
    // Parent-based sampling: a sampled incoming trace is recorded even at ratio 0.
    let sampled_trace = "0af7651916cd43dd8448eb211c80319c";
    let request = gw
        .client
        .get(gw.url(&format!("/v1/students/uuid/{STUDENT}")))
        .bearer_auth(gw.token(STUDENT))
        .header(
            "traceparent",
            format!("00-{sampled_trace}-b7ad6b7169203331-01"),
        );
    assert_eq!(gw.send(request).await.0, 200);
    let spans = receiver.until(|spans| spans.len() >= 2).await;
    assert!(
        spans.iter().all(|s| hex(&s.trace_id) == sampled_trace),
        "only the sampled trace is exported"
    );
    shut_down(provider).await;
}

#[tokio::test]
async fn without_an_endpoint_nothing_is_exported_and_nothing_fails() {
    let (receiver, _address) = Receiver::start().await;
    assert!(
        telemetry::tracer_provider(&TelemetryConfig::default())
            .expect("config")
            .is_none()
    );
    let _default = tracing::subscriber::set_default(telemetry::subscriber(&json_logs(), None));
    let gw = Gateway::start().await;
    for _ in 0..5 {
        let (status, _) = gw
            .call(
                Method::GET,
                &format!("/v1/students/uuid/{STUDENT}"),
                STUDENT,
                None,
            )
            .await;
        assert_eq!(status, 200);
    }
    assert!(receiver.all().is_empty());
    // Backends still get a valid context.
    let seen = gw.shared.metadata.all();
    assert!(
        seen.iter()
            .all(|m| sms_gateway::reference::metadata::is_jaeger_span_context(&m.span_context))
    );
    assert!(seen.iter().all(|m| m.traceparent.starts_with("00-")));
}

#[tokio::test]
async fn an_unreachable_collector_does_not_affect_requests() {
    let dead = {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        listener.local_addr().expect("addr")
    };
    let provider = telemetry::tracer_provider(&exporting_to(dead, 1.0))
        .expect("provider")
        .expect("enabled");
    let _default =
        tracing::subscriber::set_default(telemetry::subscriber(&json_logs(), Some(&provider)));
    let gw = Gateway::start().await;
    for _ in 0..50 {
        let (status, _) = gw
            .call(
                Method::GET,
                &format!("/v1/students/uuid/{STUDENT}"),
                STUDENT,
                None,
            )
            .await;
        assert_eq!(status, 200);
    }
}

#[tokio::test]
async fn log_lines_are_json_and_hold_no_secrets() {
    let lines = Lines::default();
    let writer = lines.clone();
    let _default = tracing::subscriber::set_default(telemetry::subscriber_with_writer(
        &json_logs(),
        None,
        move || writer.clone(),
    ));
    let gw = Gateway::start().await;
    let password = "demo-student-pw";
    let (status, login) = gw
        .call(
            Method::POST,
            "/v1/login/student",
            "",
            Some(json!({"student_id": "demostudent", "student_pw": password})),
        )
        .await;
    assert_eq!(status, 200);
    let token = login["access_token"].as_str().expect("token").to_owned();
    let request = gw
        .client
        .get(gw.url(&format!("/v1/students/uuid/{STUDENT}")))
        .bearer_auth(&token);
    assert_eq!(gw.send(request).await.0, 200);
    let bad = gw
        .client
        .get(gw.url(&format!("/v1/students/uuid/{STUDENT}")))
        .header("Authorization", "Bearer not.a.token");
    assert_eq!(gw.send(bad).await.0, 401);

    let text = lines.text();
    let mut requests = 0;
    for line in text.lines() {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        if value["message"] == "request" {
            requests += 1;
            for field in [
                "timestamp",
                "level",
                "request_id",
                "trace_id",
                "method",
                "route",
                "status",
                "code",
                "latency_us",
            ] {
                assert!(!value[field].is_null(), "{field} missing in {line}");
            }
            // The address the client-IP guard decided on: here the peer itself.
            assert_eq!(value["client"], "127.0.0.1", "{line}");
        }
    }
    assert_eq!(requests, 3, "{text}");
    assert!(text.contains(STUDENT), "the caller uuid is logged");
    assert!(
        text.contains("/v1/students/uuid/{student_uuid}"),
        "route templates are logged"
    );
    assert!(!text.contains(&token), "token leaked into logs");
    assert!(!text.contains("not.a.token"), "bad token leaked into logs");
    assert!(!text.contains(password), "password leaked into logs");
}

/// `name{labels} value` lines of a Prometheus text exposition.
fn samples(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|line| {
            let (series, value) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("bad line {line}"));
            let value: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line}"));
            (series.to_owned(), value)
        })
        .collect()
}

#[tokio::test]
async fn metrics_parse_and_move() {
    let gw = Gateway::start().await;
    let scrape = || async { samples(&gw.metrics().await) };
    let value = |samples: &[(String, f64)], series: &str| {
        samples
            .iter()
            .find(|(s, _)| s == series)
            .map_or(0.0, |(_, v)| *v)
    };
    let requests = r#"sms_gateway_http_requests_total{method="GET",route="/v1/students/uuid/{student_uuid}",status="200"}"#;
    let calls_prefix = r#"sms_gateway_upstream_calls_total{service="auth""#;
    let before = scrape().await;
    for _ in 0..3 {
        let (status, _) = gw
            .call(
                Method::GET,
                &format!("/v1/students/uuid/{STUDENT}"),
                STUDENT,
                None,
            )
            .await;
        assert_eq!(status, 200);
    }
    let after = scrape().await;
    assert_eq!(value(&after, requests) - value(&before, requests), 3.0);
    let calls: f64 = after
        .iter()
        .filter(|(s, _)| s.starts_with(calls_prefix) && s.contains(r#"outcome="ok""#))
        .map(|(_, v)| v)
        .sum();
    assert!(calls >= 3.0);
    assert!(
        after
            .iter()
            .any(|(s, _)| s.starts_with("sms_gateway_http_request_duration_seconds_bucket"))
    );
}

/// Server spans by name, with their status code (OTLP: 0 unset, 1 ok, 2 error).
fn server_spans(spans: &[Span]) -> Vec<(String, i32)> {
    let mut names: Vec<(String, i32)> = spans
        .iter()
        .filter(|s| s.kind == opentelemetry_proto::tonic::trace::v1::span::SpanKind::Server as i32)
        .map(|s| (s.name.clone(), s.status.as_ref().map_or(0, |st| st.code)))
        .collect();
    names.sort();
    names
}

/// One gateway answering each outcome once: a fast 200 (`/ping`), a 401, a 408 (the
/// auth service is slower than its deadline), a 5xx (the club service is a closed
/// port) and a slow 200 (the schedule service, delayed, uncached); at `ratio`, with
/// traces kept from 250 ms on. Returns every span exported once the exporter is shut.
async fn one_request_per_outcome(ratio: f64) -> Vec<Span> {
    let (receiver, address) = Receiver::start().await;
    let provider =
        telemetry::tracer_provider(&exporting_with(address, ratio, Duration::from_millis(250)))
            .expect("provider")
            .expect("enabled");
    let _default =
        tracing::subscriber::set_default(telemetry::subscriber(&json_logs(), Some(&provider)));
    let closed = {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        listener.local_addr().expect("addr").to_string()
    };
    let options = sms_gateway::reference::Options {
        delay: Duration::from_millis(300),
    };
    let gw = Gateway::start_with(options, |config| {
        config.cache.enabled = false;
        let services = &mut config.upstream.services;
        if let Some(auth) = services.get_mut(&Service::Auth) {
            auth.deadline = Some(Duration::from_millis(100));
        }
        if let Some(club) = services.get_mut(&Service::Club) {
            club.addresses = vec![closed];
        }
    })
    .await;
    let ping = gw.send(gw.client.get(gw.url("/ping"))).await.0;
    assert_eq!(ping, 200);
    let student = format!("/v1/students/uuid/{STUDENT}");
    assert_eq!(gw.call(Method::GET, &student, "", None).await.0, 401);
    assert_eq!(gw.call(Method::GET, &student, STUDENT, None).await.0, 408);
    let club = gw
        .call(
            Method::GET,
            "/v1/clubs/uuid/club-000000000001",
            STUDENT,
            None,
        )
        .await
        .0;
    assert!((500..600).contains(&club), "{club}");
    let month = "/v1/schedules/years/2021/months/3";
    assert_eq!(gw.call(Method::GET, month, STUDENT, None).await.0, 200);
    shut_down(provider).await;
    receiver.all()
}

#[tokio::test]
async fn at_ratio_zero_only_failed_and_slow_requests_are_exported_whole() {
    let spans = one_request_per_outcome(0.0).await;
    let servers = server_spans(&spans);
    let names: Vec<&str> = servers.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "GET /v1/clubs/uuid/{club_uuid}",
            "GET /v1/schedules/years/{year}/months/{month}",
            "GET /v1/students/uuid/{student_uuid}",
        ],
        "the 5xx, the slow 200 and the 408; not /ping, not the 401"
    );
    for (name, code) in &servers {
        let error = name.starts_with("GET /v1/clubs");
        assert_eq!(*code == 2, error, "only the 5xx is an error: {name} {code}");
    }
    // Each kept trace is whole: its gRPC call span came along.
    for server in spans.iter().filter(|s| s.parent_span_id.is_empty()) {
        assert!(
            spans
                .iter()
                .any(|s| s.trace_id == server.trace_id && s.parent_span_id == server.span_id),
            "{} lost its children",
            server.name
        );
    }
}

#[tokio::test]
async fn at_ratio_one_every_request_is_exported() {
    let spans = one_request_per_outcome(1.0).await;
    let servers = server_spans(&spans);
    let names: Vec<&str> = servers.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "GET /ping",
            "GET /v1/clubs/uuid/{club_uuid}",
            "GET /v1/schedules/years/{year}/months/{month}",
            "GET /v1/students/uuid/{student_uuid}",
            "GET /v1/students/uuid/{student_uuid}",
        ]
    );
    let unauthorized = servers
        .iter()
        .filter(|(n, _)| n == "GET /v1/students/uuid/{student_uuid}")
        .filter(|(_, code)| *code == 2)
        .count();
    assert_eq!(unauthorized, 0, "a 4xx is not an error, nor the 408");
}
