//! An OTLP trace receiver that keeps the spans it receives in memory and lists them
//! through a subset of Jaeger's query API: the stand-in for Jaeger in the stack test
//! (`deploy/test/`), where no Jaeger image can be pulled. It listens where Jaeger
//! all-in-one does: OTLP/gRPC on 4317, OTLP/HTTP (protobuf) on 4318, the query API on
//! 16686:
//!
//! - `GET /api/services` → `{"data": ["sms-gateway", ...], "total": n}`
//! - `GET /api/traces?service=NAME&limit=N` → `{"data": [{"traceID", "spans": [{"traceID",
//!   "spanID", "operationName", "startTime", "duration", "processID", "tags"}],
//!   "processes": {"p1": {"serviceName", "tags"}}}]}`, newest traces first
//!
//! so a check written against it runs against a real Jaeger too. It keeps at most
//! `--max-spans` spans (the oldest are dropped). Not for production.
//!
//! ```sh
//! cargo build --example otlp_receiver
//! target/debug/examples/otlp_receiver --host 0.0.0.0
//! ```

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::{Context, Result};
use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use clap::Parser;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value};
use prost::Message;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

/// Ports of Jaeger all-in-one.
#[derive(Debug, Parser)]
#[command(name = "otlp_receiver")]
struct Args {
    /// The address every listener binds.
    #[arg(long, default_value = "0.0.0.0")]
    host: IpAddr,
    /// OTLP over gRPC.
    #[arg(long, default_value_t = 4317)]
    grpc_port: u16,
    /// OTLP over HTTP (`POST /v1/traces`, protobuf).
    #[arg(long, default_value_t = 4318)]
    http_port: u16,
    /// The query API.
    #[arg(long, default_value_t = 16686)]
    query_port: u16,
    /// Spans kept in memory; the oldest go first.
    #[arg(long, default_value_t = 50_000)]
    max_spans: usize,
}

/// One received span, as the query API shows it.
struct Stored {
    service: String,
    trace_id: String,
    span_id: String,
    name: String,
    start_unix_nano: u64,
    end_unix_nano: u64,
    tags: Vec<(String, String)>,
}

/// The received spans, bounded.
struct Spans {
    max: usize,
    spans: Mutex<VecDeque<Stored>>,
}

impl Spans {
    fn add(&self, request: ExportTraceServiceRequest) {
        let mut spans = self.spans.lock().unwrap_or_else(PoisonError::into_inner);
        for resource in request.resource_spans {
            let attributes = resource.resource.map(|r| r.attributes).unwrap_or_default();
            let service = attributes
                .iter()
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.as_ref())
                .map_or_else(|| "unknown_service".to_owned(), text);
            for span in resource.scope_spans.into_iter().flat_map(|s| s.spans) {
                if spans.len() == self.max {
                    spans.pop_front();
                }
                spans.push_back(Stored {
                    service: service.clone(),
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    name: span.name,
                    start_unix_nano: span.start_time_unix_nano,
                    end_unix_nano: span.end_time_unix_nano,
                    tags: span
                        .attributes
                        .iter()
                        .filter_map(|kv| Some((kv.key.clone(), text(kv.value.as_ref()?))))
                        .collect(),
                });
            }
        }
    }

    fn services(&self) -> Value {
        let spans = self.spans.lock().unwrap_or_else(PoisonError::into_inner);
        let names: BTreeSet<&str> = spans.iter().map(|s| s.service.as_str()).collect();
        json!({"data": names, "total": names.len()})
    }

    /// Jaeger's trace list for one service: the traces with a span of that service,
    /// newest first, each with all its spans (of any service).
    fn traces(&self, service: &str, limit: usize) -> Value {
        let spans = self.spans.lock().unwrap_or_else(PoisonError::into_inner);
        let mut wanted: Vec<&str> = Vec::new();
        for span in spans.iter().rev().filter(|s| s.service == service) {
            if wanted.len() == limit {
                break;
            }
            if !wanted.contains(&span.trace_id.as_str()) {
                wanted.push(&span.trace_id);
            }
        }
        let data: Vec<Value> = wanted
            .iter()
            .map(|trace_id| {
                let mut processes: BTreeMap<&str, String> = BTreeMap::new();
                let members: Vec<Value> = spans
                    .iter()
                    .filter(|s| s.trace_id == *trace_id)
                    .map(|s| {
                        let next = format!("p{}", processes.len() + 1);
                        let process = processes.entry(&s.service).or_insert(next).clone();
                        let tags: Vec<Value> = s
                            .tags
                            .iter()
                            .map(|(k, v)| json!({"key": k, "type": "string", "value": v}))
                            .collect();
                        json!({
                            "traceID": s.trace_id,
                            "spanID": s.span_id,
                            "operationName": s.name,
                            "startTime": s.start_unix_nano / 1000,
                            "duration": s.end_unix_nano.saturating_sub(s.start_unix_nano) / 1000,
                            "processID": process,
                            "tags": tags,
                        })
                    })
                    .collect();
                let processes: serde_json::Map<String, Value> = processes
                    .into_iter()
                    .map(|(name, id)| (id, json!({"serviceName": name, "tags": []})))
                    .collect();
                json!({"traceID": trace_id, "spans": members, "processes": processes})
            })
            .collect();
        json!({"data": data, "total": data.len(), "limit": 0, "offset": 0, "errors": null})
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An attribute value as text (what the query API shows as a string tag).
fn text(value: &AnyValue) -> String {
    match &value.value {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

#[derive(Clone)]
struct Receiver(Arc<Spans>);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.add(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// `POST /v1/traces`: OTLP/HTTP with a protobuf body (JSON bodies are refused).
async fn export_http(State(spans): State<Arc<Spans>>, headers: HeaderMap, body: Bytes) -> Response {
    let protobuf = headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/x-protobuf"));
    if !protobuf {
        return (StatusCode::UNSUPPORTED_MEDIA_TYPE, "protobuf only").into_response();
    }
    match ExportTraceServiceRequest::decode(body) {
        Ok(request) => {
            spans.add(request);
            let answer = ExportTraceServiceResponse {
                partial_success: None,
            };
            (
                [(header::CONTENT_TYPE, "application/x-protobuf")],
                answer.encode_to_vec(),
            )
                .into_response()
        }
        Err(error) => (StatusCode::BAD_REQUEST, error.to_string()).into_response(),
    }
}

#[derive(Deserialize)]
struct TraceQuery {
    service: String,
    limit: Option<usize>,
}

async fn traces(State(spans): State<Arc<Spans>>, Query(query): Query<TraceQuery>) -> Json<Value> {
    Json(spans.traces(&query.service, query.limit.unwrap_or(20).min(1000)))
}

async fn services(State(spans): State<Arc<Spans>>) -> Json<Value> {
    Json(spans.services())
}

async fn bind(host: IpAddr, port: u16) -> Result<TcpListener> {
    let address = SocketAddr::new(host, port);
    TcpListener::bind(address)
        .await
        .with_context(|| format!("bind {address}"))
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let spans = Arc::new(Spans {
        max: args.max_spans.max(1),
        spans: Mutex::new(VecDeque::new()),
    });
    let grpc = bind(args.host, args.grpc_port).await?;
    let http = bind(args.host, args.http_port).await?;
    let query = bind(args.host, args.query_port).await?;
    eprintln!(
        "otlp_receiver: OTLP gRPC :{}, OTLP HTTP :{}, query API :{}",
        args.grpc_port, args.http_port, args.query_port
    );
    let grpc = tonic::transport::Server::builder()
        .add_service(TraceServiceServer::new(Receiver(Arc::clone(&spans))))
        .serve_with_incoming(TcpListenerStream::new(grpc));
    let http_app = Router::new()
        .route("/v1/traces", post(export_http))
        .with_state(Arc::clone(&spans));
    let query_app = Router::new()
        .route("/api/services", get(services))
        .route("/api/traces", get(traces))
        .with_state(spans);
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("SIGTERM handler")?;
    tokio::select! {
        result = grpc => result.context("OTLP gRPC server")?,
        result = axum::serve(http, http_app) => result.context("OTLP HTTP server")?,
        result = axum::serve(query, query_app) => result.context("query API")?,
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(())
}
