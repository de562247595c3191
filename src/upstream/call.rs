//! Calling a service: pick an instance (round robin, skipping open breakers), pass its
//! breaker, send with a deadline and the contract's metadata (`x-request-id`,
//! `span-context`), classify the result (spec §2.5, decisions 14, 15, 16 and 18).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderName, HeaderValue};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::Instrument;

use super::Service;
use super::breaker::{Breaker, BreakerSettings, Outcome, Transition};
use super::connection::{CallError, ConnectSettings, encode};
use super::pool::{NoPick, Node, ServicePool};
use crate::http::GatewayError;
use crate::telemetry::Metrics;
use crate::telemetry::metrics::{CallOutcome, InstanceLabels};
use crate::telemetry::propagation::{CallContext, jaeger, w3c};
use crate::telemetry::record;

/// Per-service call settings.
#[derive(Debug, Clone, Copy)]
pub struct ServiceSettings {
    /// Deadline of one call (decision 16: 3 s by default).
    pub deadline: Duration,
    /// How long a read's first attempt may take when another instance could answer it
    /// instead (like Envoy's `per_try_timeout`); the retry gets what is left of the
    /// deadline. A value at or above the deadline turns it off.
    pub read_try_timeout: Duration,
}

/// Per-request values sent as gRPC metadata.
#[derive(Debug, Clone)]
pub struct CallMeta {
    /// The request id (a UUID: backends reject anything else with 407), as the header
    /// value the client's answer carries too.
    pub request_id: HeaderValue,
}

/// What to call.
#[derive(Debug, Clone)]
pub struct Target {
    pub service: Service,
    /// RPC name for messages.
    pub rpc: &'static str,
    pub path: PathAndQuery,
    /// Overrides the service's deadline.
    pub deadline: Option<Duration>,
    /// Whether a failed call may be tried once on another instance (reads only: writes
    /// are never retried, decision 14). A read is retried when it never reached the
    /// instance and also when it failed at transport level (see [`retriable`]).
    pub retry_unsent: bool,
}

/// A breaker transition of one instance, for the Consul health flip.
#[derive(Debug, Clone)]
pub struct NodeTransition {
    pub service: Service,
    pub node: Arc<Node>,
    pub transition: Transition,
}

/// All services' pools, their settings, and the instances' breakers.
#[derive(Debug)]
pub struct Upstreams {
    pools: [ServicePool; 5],
    settings: [ServiceSettings; 5],
    connect: ConnectSettings,
    breaker_settings: BreakerSettings,
    /// Breakers by instance id, so they outlive node-list changes.
    breakers: Mutex<HashMap<String, Arc<Breaker>>>,
    transitions: Option<mpsc::UnboundedSender<NodeTransition>>,
    metrics: Arc<Metrics>,
}

impl Upstreams {
    /// Upstreams with empty pools.
    pub fn new(
        settings: [ServiceSettings; 5],
        connect: ConnectSettings,
        breaker_settings: BreakerSettings,
        transitions: Option<mpsc::UnboundedSender<NodeTransition>>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            pools: Default::default(),
            settings,
            connect,
            breaker_settings,
            breakers: Mutex::new(HashMap::new()),
            transitions,
            metrics,
        }
    }

    /// The gateway's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The pool of `service`.
    pub fn pool(&self, service: Service) -> &ServicePool {
        &self.pools[service.index()]
    }

    /// The call settings of `service`.
    pub fn settings(&self, service: Service) -> ServiceSettings {
        self.settings[service.index()]
    }

    /// Replaces the node list of `service` with `instances` (id, address), keeping the
    /// existing nodes (and their channels) of unchanged instances. Returns whether the
    /// list changed.
    pub fn replace(
        &self,
        service: Service,
        instances: &[(String, String)],
    ) -> Result<bool, tonic::transport::Error> {
        let pool = self.pool(service);
        let current = pool.snapshot();
        let same = current.loaded
            && current.nodes.len() == instances.len()
            && current
                .nodes
                .iter()
                .zip(instances)
                .all(|(node, (id, address))| *node.id == **id && node.address == *address);
        if same {
            return Ok(false);
        }
        let mut nodes = Vec::with_capacity(instances.len());
        for (id, address) in instances {
            let existing = current
                .nodes
                .iter()
                .find(|node| *node.id == **id && node.address == *address);
            let node = match existing {
                Some(node) => node.clone(),
                None => Arc::new(Node::new(
                    id.clone(),
                    address.clone(),
                    self.connect,
                    self.breaker(id),
                )?),
            };
            nodes.push(node);
        }
        pool.replace(nodes);
        Ok(true)
    }

    /// The breaker of instance `id`, created on first use.
    pub fn breaker(&self, id: &str) -> Arc<Breaker> {
        let mut breakers = self.breakers.lock().unwrap_or_else(PoisonError::into_inner);
        breakers
            .entry(id.to_owned())
            .or_insert_with(|| Arc::new(Breaker::new(self.breaker_settings)))
            .clone()
    }

    /// Calls `target` with `message`; see the module doc.
    pub async fn call<Req, Rep>(
        &self,
        target: &Target,
        message: Req,
        meta: &CallMeta,
    ) -> Result<Rep, GatewayError>
    where
        Req: prost::Message,
        Rep: prost::Message + Default + Send + 'static,
    {
        let settings = self.settings(target.service);
        let deadline = target.deadline.unwrap_or(settings.deadline);
        let node = self.pick(target.service, None)?;
        let body = encode(&message);
        let retry = target.retry_unsent.then(|| body.clone());
        // A read gets a shorter first try only when another instance could take over:
        // a dead instance (no reset, calls just hang) then costs a try, not the deadline.
        let first_try = if retry.is_some()
            && settings.read_try_timeout < deadline
            && self.has_alternative(target.service, &node)
        {
            settings.read_try_timeout
        } else {
            deadline
        };
        let started = Instant::now();
        let first = self.call_node(target, &node, body, meta, first_try).await;
        match (first, retry) {
            (Err(err), Some(body))
                if retriable(&err)
                    || (first_try < deadline && matches!(err, GatewayError::Deadline { .. })) =>
            {
                let remaining = deadline.saturating_sub(started.elapsed());
                match self.pick(target.service, Some(&node)) {
                    Ok(other) if !remaining.is_zero() => {
                        self.call_node(target, &other, body, meta, remaining).await
                    }
                    _ => Err(err),
                }
            }
            (result, _) => result,
        }
    }

    /// Whether an instance other than `node` currently admits calls (without advancing
    /// the round robin).
    fn has_alternative(&self, service: Service, node: &Node) -> bool {
        let now = Instant::now();
        self.pool(service)
            .snapshot()
            .nodes
            .iter()
            .any(|other| other.id != node.id && other.breaker.admits(now))
    }

    /// The next instance whose breaker admits calls, skipping `avoid`.
    fn pick(&self, service: Service, avoid: Option<&Node>) -> Result<Arc<Node>, GatewayError> {
        let now = Instant::now();
        self.pool(service)
            .pick(|node| avoid.is_none_or(|a| a.id != node.id) && node.breaker.admits(now))
            .map_err(|no_pick| match no_pick {
                NoPick::Empty => GatewayError::NoHealthyInstance {
                    service: service.as_str(),
                    detail: "no passing instance".to_owned(),
                },
                NoPick::AllRefused(node) => GatewayError::BreakerOpen {
                    instance: node.id.to_string(),
                    open_for: node
                        .breaker
                        .open_until()
                        .map_or(Duration::ZERO, |until| until - now),
                },
            })
    }

    async fn call_node<Rep>(
        &self,
        target: &Target,
        node: &Arc<Node>,
        body: Bytes,
        meta: &CallMeta,
        deadline: Duration,
    ) -> Result<Rep, GatewayError>
    where
        Rep: prost::Message + Default + Send + 'static,
    {
        let service = target.service.as_str();
        let parent = tracing::Span::current();
        let span = tracing::debug_span!(
            "grpc.call",
            otel.name = target.rpc,
            otel.kind = "client",
            rpc.system = "grpc",
            rpc.service = service,
            rpc.method = target.rpc,
            server.address = %node.address,
            instance = %node.id,
            outcome = tracing::field::Empty,
            breaker.state = tracing::field::Empty,
        );
        let context = CallContext::of(&span, &parent);
        record::update(|r| {
            r.service = Some(service);
            r.instance = Some(node.id.clone());
            r.trace_id.get_or_insert(context.trace_id);
        });
        let started = Instant::now();
        let admitted = node.breaker.admit(started);
        span.record("breaker.state", node.breaker.state(started).as_str());
        let (permit, transition) = match admitted {
            Ok(admitted) => admitted,
            Err(open_for) => {
                let outcome = CallOutcome::BreakerOpen;
                span.record("outcome", outcome.as_str());
                self.metrics
                    .observe_call(&node.calls, service, &node.id, outcome, Duration::ZERO);
                return Err(GatewayError::BreakerOpen {
                    instance: node.id.to_string(),
                    open_for,
                });
            }
        };
        self.report(target.service, node, transition);
        let result = unary(
            node,
            target.rpc,
            target.path.clone(),
            body,
            meta,
            &context,
            deadline,
        )
        .instrument(span.clone())
        .await;
        let outcome = outcome_of(&result);
        span.record("outcome", outcome.as_str());
        self.metrics
            .observe_call(&node.calls, service, &node.id, outcome, started.elapsed());
        let transition = node
            .breaker
            .record(permit, Outcome::of(&result), Instant::now());
        self.report(target.service, node, transition);
        result
    }

    fn report(&self, service: Service, node: &Arc<Node>, transition: Option<Transition>) {
        let Some(transition) = transition else {
            return;
        };
        let labels = InstanceLabels {
            service: service.as_str(),
            instance: node.id.to_string(),
        };
        let state = match transition {
            Transition::Opened { .. } => {
                self.metrics.breaker_opens.get_or_create(&labels).inc();
                2
            }
            Transition::HalfOpened => 1,
            Transition::Closed => 0,
        };
        self.metrics.breaker_state.get_or_create(&labels).set(state);
        match transition {
            Transition::Opened { .. } => {
                tracing::warn!(%service, instance = %node.id, address = %node.address, "circuit breaker opened")
            }
            Transition::HalfOpened => {
                tracing::info!(%service, instance = %node.id, "circuit breaker half-open")
            }
            Transition::Closed => {
                tracing::info!(%service, instance = %node.id, "circuit breaker closed")
            }
        }
        if let Some(sender) = &self.transitions {
            // The receiver lives as long as the gateway; a send after shutdown is moot.
            let _ignored = sender.send(NodeTransition {
                service,
                node: node.clone(),
                transition,
            });
        }
    }
}

/// Whether a read that failed with `err` may go to another instance: it never reached
/// the instance (connect error, breaker), or it failed at transport level — the
/// connection broke (reset, GOAWAY, closed mid-call) or the instance said UNAVAILABLE.
/// Reads are idempotent, so a second attempt is safe even if the first was sent;
/// deadlines and answers of a live instance are final.
fn retriable(err: &GatewayError) -> bool {
    !err.was_sent()
        || matches!(err, GatewayError::Upstream { grpc_code, .. } if *grpc_code == tonic::Code::Unavailable as i32)
}

/// The outcome of a call for metrics and spans.
fn outcome_of<T>(result: &Result<T, GatewayError>) -> CallOutcome {
    match result {
        Ok(_) => CallOutcome::Ok,
        Err(GatewayError::Deadline { .. }) => CallOutcome::Deadline,
        Err(GatewayError::NoHealthyInstance { .. }) => CallOutcome::Unreachable,
        Err(GatewayError::BreakerOpen { .. }) => CallOutcome::BreakerOpen,
        Err(_) => CallOutcome::Error,
    }
}

/// Sends one unary call (`body`, a message framed by [`encode`]) to `node` and waits at
/// most `deadline`. The metadata carries the request id and the call's trace context in
/// both W3C and Jaeger form.
pub async fn unary<Rep>(
    node: &Node,
    rpc_name: &'static str,
    path: PathAndQuery,
    body: Bytes,
    meta: &CallMeta,
    context: &CallContext,
    deadline: Duration,
) -> Result<Rep, GatewayError>
where
    Rep: prost::Message + Default + Send + 'static,
{
    let metadata = call_metadata(meta, context);
    let attempt = node
        .connection
        .unary::<Rep>(&path, body, metadata, deadline);
    match tokio::time::timeout(deadline, attempt).await {
        Ok(Ok(reply)) => Ok(reply),
        Ok(Err(CallError::Connect(detail))) => Err(GatewayError::NoHealthyInstance {
            service: rpc_name,
            detail: format!("instance {} is not reachable: {detail}", node.address),
        }),
        Ok(Err(CallError::Status(status))) => Err(classify(rpc_name, &status)),
        Err(_) => Err(GatewayError::Deadline {
            rpc: rpc_name,
            sent: true,
        }),
    }
}

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static SPAN_CONTEXT: HeaderName = HeaderName::from_static("span-context");
static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// The request id and trace context headers of one call (a trace state that is no valid
/// header is left out). Their values are new on every call: marked sensitive, HPACK
/// sends them as never-indexed literals instead of churning both ends' dynamic tables
/// (which then keep the headers that do repeat); their names are indexed after a
/// connection's first call ([`super::connection::Connection::unary`]).
fn call_metadata(meta: &CallMeta, context: &CallContext) -> HeaderMap {
    let mut metadata = HeaderMap::with_capacity(8);
    let mut put = |name: &HeaderName, mut value: HeaderValue| {
        value.set_sensitive(true);
        metadata.insert(name.clone(), value);
    };
    put(&X_REQUEST_ID, meta.request_id.clone());
    put(&SPAN_CONTEXT, jaeger::span_context(context));
    put(&TRACEPARENT, w3c::traceparent(context));
    if !context.trace_state.is_empty()
        && let Ok(state) = HeaderValue::from_str(&context.trace_state)
    {
        put(&TRACESTATE, state);
    }
    metadata
}

/// Maps a gRPC status to the contract's outcome. A connection that broke under the call
/// arrives here as UNAVAILABLE already ([`super::connection`] maps I/O errors and GOAWAY
/// so); a failure to connect never does (it is [`CallError::Connect`]).
fn classify(rpc: &'static str, status: &tonic::Status) -> GatewayError {
    use tonic::Code;
    match status.code() {
        Code::DeadlineExceeded | Code::Cancelled => GatewayError::Deadline { rpc, sent: true },
        code => GatewayError::Upstream {
            rpc,
            grpc_code: code as i32,
            detail: status.message().to_owned(),
            sent: code != Code::Unavailable,
        },
    }
}
