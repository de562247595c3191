//! A double of Consul's HTTP API for the tests: a real HTTP server on a free loopback port
//! that answers the subset of the v1 API the gateway uses with Consul's JSON shapes, headers,
//! status codes, plain-text errors and blocking-query semantics (see `/work/shared/spec/consul.md`
//! and the samples in `tests/fixtures/consul/`, copied from the shared spec).
//!
//! What it models:
//! - one agent on one node (`node-1`, datacenter `dc1`, address `127.0.0.1` unless changed) with
//!   a passing `serfHealth` node check;
//! - `GET /v1/health/service/<name>` with `passing`, `tag`, `dc`, `stale`/`consistent`, and
//!   blocking queries: `index` and `wait` (Go durations; default 5 min, at most 10 min, plus up to
//!   wait/16 of random jitter, like Consul). The index is raft-like: one global counter, and a
//!   per-service index (Consul's `service.<name>` index) raised by every change affecting the
//!   service (register, deregister, check status change, node check change, maintenance). A
//!   service without instances answers the index of the last extinction of any service, or the
//!   global index. The `passing` filter applies after blocking, so a check flip wakes the query;
//!   headers `X-Consul-Index`, `X-Consul-KnownLeader`, `X-Consul-LastContact`,
//!   `X-Consul-Effective-Consistency`, `X-Consul-Query-Backend`. Service names match
//!   case-insensitively, like Consul;
//! - `PUT /v1/agent/service/register` (TTL checks only; case-insensitive keys like Go's
//!   `encoding/json`; Consul's defaults: ID = Name, check ID `service:<id>` or `service:<id>:<n>`,
//!   name `Service '<name>' check`, initial status `critical`; `replace-existing-checks`),
//!   `PUT /v1/agent/service/deregister/<id>`, `PUT /v1/agent/service/maintenance/<id>`,
//!   `PUT /v1/agent/check/update/<id>` and `PUT /v1/agent/check/pass|warn|fail/<id>?note=`,
//!   `GET /v1/status/leader`;
//! - TTL expiry (critical, output `TTL expired ...`) and `DeregisterCriticalServiceAfter` reaping
//!   (at least 1 min), on `tokio::time`, so paused clocks work;
//! - ACLs with one all-powerful token ([`ConsulDouble::start_with_token`]), read from
//!   `X-Consul-Token` or `Authorization: Bearer`: an unknown token gets 403 `ACL not found`; no
//!   token is Consul's anonymous token: writes get 403 `Permission denied: ...` and health reads
//!   answer `[]` (200, header `X-Consul-Results-Filtered-By-ACLs: true`), as with a default-deny
//!   policy.
//!
//! Test controls: state helpers that bypass HTTP ([`ConsulDouble::register_ttl`],
//! [`ConsulDouble::set_check`], ...), [`ConsulDouble::pause`]/[`ConsulDouble::resume`] (port
//! closed and open connections cut, then the same port again, state kept), fault injection
//! ([`ConsulDouble::set_fail_next`], [`ConsulDouble::reset_index`]), a request log and
//! [`ConsulDouble::wait_for`] to wait for a condition without sleeping.
//!
//! What it does not model: other endpoints (404), check types other than TTL (register answers
//! 400), several nodes, datacenters other than `dc1` (500 `No path to datacenter`), `filter` and
//! `node-meta` (400), namespaces, partitions, peering, the streaming backend, ACL policies finer
//! than "the token may do everything", `?token=` in the query string (deliberately ignored, so
//! such a request is anonymous), snake_case keys in registration bodies, Consul's deferred sync
//! of output-only check changes (the output changes at once, without raising the index), the
//! persisted state of re-registered TTL checks (they restart from their initial status), the
//! 30 s reap tick (services are reaped exactly at the deadline), rate limiting (use
//! [`ConsulDouble::set_fail_next_with`] with 429).

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::net::{IpAddr, Shutdown, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Bytes, to_bytes};
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use percent_encoding::percent_decode_str;
use serde::Deserialize;
use serde::de::{DeserializeOwned, Deserializer, Error as _};
use serde_json::{Map, Value, json};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep_until};

/// The node every service of the double runs on.
pub const NODE_NAME: &str = "node-1";
/// The only datacenter.
pub const DATACENTER: &str = "dc1";
/// The node's Serf health check (a node check: it gates every service of the node).
pub const SERF_CHECK_ID: &str = "serfHealth";
/// The TTL of the checks registered by [`ConsulDouble::register_ttl`].
pub const HELPER_TTL: Duration = Duration::from_secs(3600);

const NODE_ID: &str = "a1b2c3d4-0000-4000-8000-000000000001";
const DEFAULT_NODE_ADDRESS: &str = "127.0.0.1";
const LEADER_ADDRESS: &str = "127.0.0.1:8300";
/// Raft index of the node registration; the first change gets the next one.
const INITIAL_INDEX: u64 = 5;
const DEFAULT_WAIT: Duration = Duration::from_secs(5 * 60);
const MAX_WAIT: Duration = Duration::from_secs(10 * 60);
const JITTER_FRACTION: u32 = 16;
const CHECK_OUTPUT_MAX: usize = 4096;
const MIN_REAP_AFTER: Duration = Duration::from_secs(60);
const MAX_BODY: usize = 1 << 20;
const MAINTENANCE_PREFIX: &str = "_service_maintenance:";
const DEFAULT_MAINTENANCE_REASON: &str = "Maintenance mode is enabled for this service, but no reason was provided. This is a default message.";
const INDEX_HEADER: &str = "x-consul-index";

// ---------------------------------------------------------------------------------------------
// Public types
// ---------------------------------------------------------------------------------------------

/// A check status, as Consul spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckStatus {
    Passing,
    Warning,
    Critical,
}

impl CheckStatus {
    /// Consul's spelling: `passing`, `warning` or `critical`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Passing => "passing",
            Self::Warning => "warning",
            Self::Critical => "critical",
        }
    }

    /// Parses Consul's spelling (exactly, like Consul).
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "passing" => Some(Self::Passing),
            "warning" => Some(Self::Warning),
            "critical" => Some(Self::Critical),
            _ => None,
        }
    }
}

/// One request the double received.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub method: Method,
    /// The path as sent (not percent-decoded).
    pub path: String,
    /// The raw query string (`""` when there is none).
    pub query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: Instant,
}

impl RecordedRequest {
    /// The first value of a query parameter, decoded.
    pub fn param(&self, name: &str) -> Option<String> {
        form_urlencoded::parse(self.query.as_bytes())
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.into_owned())
    }

    /// The `X-Consul-Token` header, if any.
    pub fn token(&self) -> Option<&str> {
        self.headers
            .get("x-consul-token")
            .and_then(|value| value.to_str().ok())
    }

    /// The body parsed as JSON, if it is JSON.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// A registered service instance, as the state helpers report it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instance {
    pub id: String,
    pub service: String,
    /// `Service.Address` as registered (may be empty).
    pub address: String,
    /// `Node.Address`.
    pub node_address: String,
    pub port: u16,
    pub tags: Vec<String>,
    pub meta: BTreeMap<String, String>,
}

impl Instance {
    /// Consul's address rule: the service address, or the node's when it is empty.
    pub fn effective_address(&self) -> &str {
        if self.address.is_empty() {
            &self.node_address
        } else {
            &self.address
        }
    }

    /// `host:port` to dial (IPv6 literals in brackets).
    pub fn target(&self) -> String {
        let host = self.effective_address();
        if host.parse::<std::net::Ipv6Addr>().is_ok() {
            format!("[{host}]:{}", self.port)
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The handle
// ---------------------------------------------------------------------------------------------

/// A running Consul double. Stopped when dropped.
pub struct ConsulDouble {
    shared: Arc<Shared>,
    addr: SocketAddr,
    server: Mutex<Option<JoinHandle<()>>>,
    timers: JoinHandle<()>,
}

impl ConsulDouble {
    /// Starts a double without ACLs on a free loopback port.
    pub async fn start() -> Self {
        Self::start_with_token(None).await
    }

    /// Starts a double; with `Some(token)`, ACLs are enabled and only that token may act.
    pub async fn start_with_token(token: Option<&str>) -> Self {
        let any_port = SocketAddr::from(([127, 0, 0, 1], 0));
        Self::start_on(any_port, token)
            .await
            .expect("bind the Consul double on a loopback port")
    }

    /// Starts a double listening on `addr` (the stand-in image of the stack test binds
    /// `0.0.0.0:8500`, Consul's port).
    pub async fn start_on(addr: SocketAddr, token: Option<&str>) -> io::Result<Self> {
        let shared = Arc::new(Shared::new(token));
        let (addr, server) = start_server(Arc::clone(&shared), addr).await?;
        let timers = tokio::spawn(run_timers(Arc::clone(&shared)));
        Ok(Self {
            shared,
            addr,
            server: Mutex::new(Some(server)),
            timers,
        })
    }

    /// The address the double listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Simulates "Consul down": closes the port (new connections are refused) and cuts every
    /// open connection (pending requests, blocking queries included, fail). State is kept.
    pub async fn pause(&self) {
        let server = lock(&self.server).take();
        let Some(server) = server else { return };
        server.abort();
        // Awaiting the aborted task guarantees the listener is closed.
        let _ = server.await;
        self.shared.connections.shutdown_all();
        // Ends the handlers of blocked queries: their connections are gone.
        self.shared.update(|state, _| state.interrupts += 1);
    }

    /// Simulates "Consul back": listens again on the same port, with the state as it was.
    pub async fn resume(&self) {
        if !self.is_paused() {
            return;
        }
        let server = rebind(Arc::clone(&self.shared), self.addr).await;
        *lock(&self.server) = Some(server);
    }

    /// Whether [`ConsulDouble::pause`] is in effect.
    pub fn is_paused(&self) -> bool {
        lock(&self.server).is_none()
    }

    // --- state helpers (no HTTP, no ACL) ---------------------------------------------------

    /// Registers an instance with one passing TTL check (TTL [`HELPER_TTL`]); returns the
    /// check ID (`service:<id>`). An empty `address` means "reach me at the node's address".
    pub fn register_ttl(&self, service: &str, id: &str, address: &str, port: u16) -> String {
        self.register_json(json!({
            "ID": id,
            "Name": service,
            "Address": address,
            "Port": port,
            "Check": {"TTL": format!("{}s", HELPER_TTL.as_secs()), "Status": "passing"},
        }))
        .expect("register a TTL instance");
        format!("service:{id}")
    }

    /// Registers from a body of `PUT /v1/agent/service/register`, with Consul's validation and
    /// defaults (but no ACL); `Err` carries the plain-text error Consul would answer.
    pub fn register_json(&self, definition: Value) -> Result<(), String> {
        let registration = Registration::decode(definition.to_string().as_bytes(), false)
            .map_err(|error| error.message)?;
        self.shared
            .update(|state, now| state.register(registration, now));
        Ok(())
    }

    /// Deregisters an instance and its checks; `false` if it is unknown.
    pub fn deregister(&self, service_id: &str) -> bool {
        self.shared.update(|state, _| state.deregister(service_id))
    }

    /// Sets a check's status (any check: TTL, maintenance or the node's `serfHealth`), keeping
    /// its output; restarts the TTL of a TTL check. Panics on an unknown check.
    pub fn set_check(&self, check_id: &str, status: CheckStatus) {
        let output = self.check_output(check_id).unwrap_or_default();
        self.set_check_with_output(check_id, status, &output);
    }

    /// Like [`ConsulDouble::set_check`], with an output.
    pub fn set_check_with_output(&self, check_id: &str, status: CheckStatus, output: &str) {
        let known = self.shared.update(|state, now| {
            state.restart_ttl(check_id, output, now);
            state.set_check_state(check_id, status, output.to_owned(), now)
        });
        assert!(known, "the Consul double has no check {check_id:?}");
    }

    /// Sets the status of the node's `serfHealth` check (it gates every instance).
    pub fn set_node_check(&self, status: CheckStatus) {
        self.set_check(SERF_CHECK_ID, status);
    }

    /// A check's status, if the check exists.
    pub fn check_status(&self, check_id: &str) -> Option<CheckStatus> {
        self.shared
            .read(|state| state.checks.get(check_id).map(|check| check.status))
    }

    /// A check's output, if the check exists.
    pub fn check_output(&self, check_id: &str) -> Option<String> {
        self.shared
            .read(|state| state.checks.get(check_id).map(|check| check.output.clone()))
    }

    /// The IDs of a service's checks (node checks excluded), sorted.
    pub fn checks_of(&self, service_id: &str) -> Vec<String> {
        self.shared.read(|state| {
            state
                .checks
                .values()
                .filter(|check| check.service_id == service_id)
                .map(|check| check.id.clone())
                .collect()
        })
    }

    /// The instances of a service whose checks (node checks included) all pass.
    pub fn instances(&self, service: &str) -> Vec<Instance> {
        self.shared.read(|state| {
            state
                .instances_of(service)
                .filter(|instance| state.is_passing(instance))
                .map(|instance| state.instance(instance))
                .collect()
        })
    }

    /// Every instance of a service, whatever its health.
    pub fn all_instances(&self, service: &str) -> Vec<Instance> {
        self.shared.read(|state| {
            state
                .instances_of(service)
                .map(|instance| state.instance(instance))
                .collect()
        })
    }

    /// Whether the maintenance check of an instance is present.
    pub fn maintenance_enabled(&self, service_id: &str) -> bool {
        let check_id = maintenance_check_id(service_id);
        self.shared
            .read(|state| state.checks.contains_key(&check_id))
    }

    /// Enables or disables maintenance of an instance. Panics on an unknown instance.
    pub fn set_maintenance(&self, service_id: &str, enable: bool, reason: &str) {
        self.shared
            .update(|state, now| state.set_maintenance(service_id, enable, reason, now))
            .expect("set maintenance on a registered instance");
    }

    /// The `X-Consul-Index` a health query for this service would answer now.
    pub fn index(&self, service: &str) -> u64 {
        self.shared.read(|state| state.service_index(service))
    }

    /// The global raft index (the last change of any kind).
    pub fn raft_index(&self) -> u64 {
        self.shared.read(|state| state.raft_index)
    }

    /// Changes the node's address (a node change: raises every service's index).
    pub fn set_node_address(&self, address: &str) {
        self.shared.update(|state, _| {
            state.node_address = address.to_owned();
            let index = state.next_index();
            state.node_modify_index = index;
            state.touch_all(index);
        });
    }

    /// The node's address.
    pub fn node_address(&self) -> String {
        self.shared.read(|state| state.node_address.clone())
    }

    // --- fault injection ---------------------------------------------------------------------

    /// Answers the next `count` requests (any endpoint) with `status` and a Consul-like
    /// plain-text body (`rpc error making call: No cluster leader` for 500).
    pub fn set_fail_next(&self, count: usize, status: u16) {
        let status = StatusCode::from_u16(status).expect("a valid HTTP status");
        let body = match status {
            StatusCode::INTERNAL_SERVER_ERROR => "rpc error making call: No cluster leader",
            StatusCode::TOO_MANY_REQUESTS => "rate limit exceeded, try again later",
            other => other.canonical_reason().unwrap_or("error"),
        };
        self.set_fail_next_with(count, status.as_u16(), body);
    }

    /// Answers the next `count` requests with `status` and `body`.
    pub fn set_fail_next_with(&self, count: usize, status: u16, body: &str) {
        let status = StatusCode::from_u16(status).expect("a valid HTTP status");
        self.shared.update(|state, _| {
            state.fault = (count > 0).then(|| Fault {
                remaining: count,
                status,
                body: body.to_owned(),
            });
        });
    }

    /// Forces the service's index to `value` (lower than before, or 0), like a Consul server
    /// that lost or restored its state: blocked queries return at once with that index, later
    /// queries answer it until the service changes again (which takes the next global index).
    pub fn reset_index(&self, service: &str, value: u64) {
        self.shared.update(|state, _| {
            state
                .service_indexes
                .insert(service.to_ascii_lowercase(), value);
            state.interrupts += 1;
        });
    }

    // --- request log -------------------------------------------------------------------------

    /// Every request received so far, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.read(|state| state.log.clone())
    }

    /// How many recorded requests match.
    pub fn count(&self, predicate: impl Fn(&RecordedRequest) -> bool) -> usize {
        self.shared.read(|state| {
            state
                .log
                .iter()
                .filter(|request| predicate(request))
                .count()
        })
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        self.shared.update(|state, _| state.log.clear());
    }

    /// Waits until `condition` holds; re-evaluated after every change of the double's state
    /// and every recorded request (no polling). Bound it with `tokio::time::timeout`.
    pub async fn wait_for(&self, mut condition: impl FnMut(&Self) -> bool) {
        let mut changes = self.shared.changes.subscribe();
        while !condition(self) {
            changes
                .changed()
                .await
                .expect("the double's change feed lives as long as the double");
        }
    }
}

impl Drop for ConsulDouble {
    fn drop(&mut self) {
        if let Some(server) = lock(&self.server).take() {
            server.abort();
        }
        self.timers.abort();
        self.shared.connections.shutdown_all();
        self.shared.update(|state, _| state.interrupts += 1);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

// ---------------------------------------------------------------------------------------------
// Shared state
// ---------------------------------------------------------------------------------------------

struct Shared {
    state: Mutex<Catalog>,
    /// Bumped after every change (state or request log): wakes blocked queries and waiters.
    changes: watch::Sender<u64>,
    /// Wakes the timer task so that it re-plans its next deadline.
    timers: Notify,
    connections: Arc<Connections>,
}

impl Shared {
    fn new(token: Option<&str>) -> Self {
        Self {
            state: Mutex::new(Catalog::new(token)),
            changes: watch::Sender::new(0),
            timers: Notify::new(),
            connections: Arc::default(),
        }
    }

    fn read<R>(&self, read: impl FnOnce(&Catalog) -> R) -> R {
        read(&lock(&self.state))
    }

    /// Runs a change under the lock, then wakes whoever waits for changes.
    fn update<R>(&self, change: impl FnOnce(&mut Catalog, Instant) -> R) -> R {
        let result = change(&mut lock(&self.state), Instant::now());
        self.notify_changes();
        self.timers.notify_one();
        result
    }

    fn notify_changes(&self) {
        self.changes
            .send_modify(|count| *count = count.wrapping_add(1));
    }

    fn record(&self, parts: &Parts, body: &Bytes) {
        let request = RecordedRequest {
            method: parts.method.clone(),
            path: parts.uri.path().to_owned(),
            query: parts.uri.query().unwrap_or_default().to_owned(),
            headers: parts.headers.clone(),
            body: body.clone(),
            at: Instant::now(),
        };
        lock(&self.state).log.push(request);
        self.notify_changes();
    }
}

struct Catalog {
    raft_index: u64,
    node_address: String,
    node_modify_index: u64,
    /// By service (instance) ID.
    services: BTreeMap<String, Service>,
    /// By check ID: node checks and service checks.
    checks: BTreeMap<String, Check>,
    /// By lower-cased service name, for services with instances (or a forced index).
    service_indexes: HashMap<String, u64>,
    extinction_index: Option<u64>,
    /// Bumped when blocked queries must return at once (index reset, pause, drop).
    interrupts: u64,
    acl_token: Option<String>,
    fault: Option<Fault>,
    log: Vec<RecordedRequest>,
}

struct Service {
    id: String,
    name: String,
    tags: Vec<String>,
    address: String,
    port: u16,
    meta: BTreeMap<String, String>,
    weights: Weights,
    enable_tag_override: bool,
    create_index: u64,
    modify_index: u64,
}

#[derive(Clone, Copy, Debug, Deserialize)]
struct Weights {
    #[serde(rename = "Passing")]
    passing: i64,
    #[serde(rename = "Warning")]
    warning: i64,
}

impl Default for Weights {
    fn default() -> Self {
        Self {
            passing: 1,
            warning: 1,
        }
    }
}

struct Check {
    id: String,
    name: String,
    status: CheckStatus,
    notes: String,
    output: String,
    /// Empty for node checks.
    service_id: String,
    service_name: String,
    service_tags: Vec<String>,
    kind: CheckKind,
    critical_since: Option<Instant>,
    reap_after: Option<Duration>,
    create_index: u64,
    modify_index: u64,
}

enum CheckKind {
    /// The node's `serfHealth`: in the catalog, not in the agent's local checks.
    Serf,
    Maintenance,
    Ttl(Ttl),
}

struct Ttl {
    ttl: Duration,
    /// `None` once expired (until the next update).
    deadline: Option<Instant>,
    last_output: String,
}

struct Fault {
    remaining: usize,
    status: StatusCode,
    body: String,
}

#[derive(Clone, Copy)]
enum Access {
    Full,
    Anonymous,
}

impl Check {
    fn type_name(&self) -> &'static str {
        match self.kind {
            CheckKind::Serf => "",
            CheckKind::Maintenance => "maintenance",
            CheckKind::Ttl(_) => "ttl",
        }
    }

    /// Whether the agent's check endpoints know it (Consul: the local state).
    fn is_agent_local(&self) -> bool {
        !matches!(self.kind, CheckKind::Serf)
    }

    fn reap_deadline(&self) -> Option<Instant> {
        self.critical_since?.checked_add(self.reap_after?)
    }

    fn next_deadline(&self) -> Option<Instant> {
        let ttl = match &self.kind {
            CheckKind::Ttl(ttl) => ttl.deadline,
            _ => None,
        };
        [ttl, self.reap_deadline()].into_iter().flatten().min()
    }

    fn to_json(&self) -> Value {
        json!({
            "Node": NODE_NAME,
            "CheckID": self.id,
            "Name": self.name,
            "Status": self.status.as_str(),
            "Notes": self.notes,
            "Output": self.output,
            "ServiceID": self.service_id,
            "ServiceName": self.service_name,
            "ServiceTags": self.service_tags,
            "Type": self.type_name(),
            "Interval": "",
            "Timeout": "",
            "ExposedPort": 0,
            "Definition": {},
            "CreateIndex": self.create_index,
            "ModifyIndex": self.modify_index,
        })
    }
}

impl Service {
    fn to_json(&self) -> Value {
        json!({
            "ID": self.id,
            "Service": self.name,
            "Tags": self.tags,
            "Address": self.address,
            "TaggedAddresses": service_tagged_addresses(&self.address, self.port),
            "Meta": self.meta,
            "Port": self.port,
            "Weights": {"Passing": self.weights.passing, "Warning": self.weights.warning},
            "EnableTagOverride": self.enable_tag_override,
            "Proxy": {"Mode": "", "MeshGateway": {}, "Expose": {}},
            "Connect": {},
            "CreateIndex": self.create_index,
            "ModifyIndex": self.modify_index,
        })
    }

    fn has_tags(&self, wanted: &[String]) -> bool {
        wanted
            .iter()
            .all(|tag| self.tags.iter().any(|own| own.eq_ignore_ascii_case(tag)))
    }
}

/// Consul adds `lan_ipv4`/`wan_ipv4` (or `_ipv6`) tagged addresses to services with an IP.
fn service_tagged_addresses(address: &str, port: u16) -> Value {
    let entry = json!({"Address": address, "Port": port});
    match address.parse::<IpAddr>() {
        Ok(IpAddr::V4(_)) => json!({"lan_ipv4": entry, "wan_ipv4": entry}),
        Ok(IpAddr::V6(_)) => json!({"lan_ipv6": entry, "wan_ipv6": entry}),
        Err(_) => json!({}),
    }
}

fn node_tagged_addresses(address: &str) -> Value {
    match address.parse::<IpAddr>() {
        Ok(IpAddr::V6(_)) => json!({
            "lan": address, "lan_ipv6": address, "wan": address, "wan_ipv6": address,
        }),
        _ => json!({
            "lan": address, "lan_ipv4": address, "wan": address, "wan_ipv4": address,
        }),
    }
}

fn maintenance_check_id(service_id: &str) -> String {
    format!("{MAINTENANCE_PREFIX}{service_id}")
}

impl Catalog {
    fn new(token: Option<&str>) -> Self {
        let serf = Check {
            id: SERF_CHECK_ID.to_owned(),
            name: "Serf Health Status".to_owned(),
            status: CheckStatus::Passing,
            notes: String::new(),
            output: "Agent alive and reachable".to_owned(),
            service_id: String::new(),
            service_name: String::new(),
            service_tags: Vec::new(),
            kind: CheckKind::Serf,
            critical_since: None,
            reap_after: None,
            create_index: INITIAL_INDEX,
            modify_index: INITIAL_INDEX,
        };
        Self {
            raft_index: INITIAL_INDEX,
            node_address: DEFAULT_NODE_ADDRESS.to_owned(),
            node_modify_index: INITIAL_INDEX,
            services: BTreeMap::new(),
            checks: BTreeMap::from([(serf.id.clone(), serf)]),
            service_indexes: HashMap::new(),
            extinction_index: None,
            interrupts: 0,
            acl_token: token.map(str::to_owned),
            fault: None,
            log: Vec::new(),
        }
    }

    // --- indexes -----------------------------------------------------------------------------

    fn next_index(&mut self) -> u64 {
        self.raft_index += 1;
        self.raft_index
    }

    fn touch(&mut self, service: &str, index: u64) {
        self.service_indexes
            .insert(service.to_ascii_lowercase(), index);
    }

    /// A node-level change: every service of the node changes.
    fn touch_all(&mut self, index: u64) {
        let names: BTreeSet<String> = self
            .services
            .values()
            .map(|service| service.name.clone())
            .collect();
        for name in names {
            self.touch(&name, index);
        }
    }

    /// The set of instances of `name` changed: raise its index, or record its extinction.
    fn instances_changed(&mut self, name: &str, index: u64) {
        if self.instances_of(name).next().is_some() {
            self.touch(name, index);
        } else {
            self.service_indexes.remove(&name.to_ascii_lowercase());
            self.extinction_index = Some(index);
        }
    }

    fn service_index(&self, name: &str) -> u64 {
        self.service_indexes
            .get(&name.to_ascii_lowercase())
            .copied()
            .or(self.extinction_index)
            .unwrap_or(self.raft_index)
    }

    // --- reads -------------------------------------------------------------------------------

    fn instances_of<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Service> + 'a {
        self.services
            .values()
            .filter(move |service| service.name.eq_ignore_ascii_case(name))
    }

    /// Node checks first, then the instance's checks, each by check ID (like Consul).
    fn checks_of<'a>(&'a self, service: &'a Service) -> impl Iterator<Item = &'a Check> + 'a {
        let node = self
            .checks
            .values()
            .filter(|check| check.service_id.is_empty());
        let own = self
            .checks
            .values()
            .filter(move |check| check.service_id == service.id);
        node.chain(own)
    }

    fn is_passing(&self, service: &Service) -> bool {
        self.checks_of(service)
            .all(|check| check.status == CheckStatus::Passing)
    }

    fn instance(&self, service: &Service) -> Instance {
        Instance {
            id: service.id.clone(),
            service: service.name.clone(),
            address: service.address.clone(),
            node_address: self.node_address.clone(),
            port: service.port,
            tags: service.tags.clone(),
            meta: service.meta.clone(),
        }
    }

    fn node_json(&self) -> Value {
        json!({
            "ID": NODE_ID,
            "Node": NODE_NAME,
            "Address": self.node_address,
            "Datacenter": DATACENTER,
            "TaggedAddresses": node_tagged_addresses(&self.node_address),
            "Meta": {"consul-network-segment": ""},
            "CreateIndex": INITIAL_INDEX,
            "ModifyIndex": self.node_modify_index,
        })
    }

    fn health_entries(&self, name: &str, query: &HealthQuery) -> Vec<Value> {
        self.instances_of(name)
            .filter(|service| service.has_tags(&query.tags))
            .filter(|service| !query.passing || self.is_passing(service))
            .map(|service| {
                let checks: Vec<Value> = self.checks_of(service).map(Check::to_json).collect();
                json!({"Node": self.node_json(), "Service": service.to_json(), "Checks": checks})
            })
            .collect()
    }

    // --- ACL -----------------------------------------------------------------------------------

    fn access(&self, headers: &HeaderMap) -> Result<Access, ApiError> {
        let Some(required) = &self.acl_token else {
            return Ok(Access::Full);
        };
        match presented_token(headers) {
            None => Ok(Access::Anonymous),
            Some(token) if token == *required => Ok(Access::Full),
            Some(_) => Err(ApiError::new(StatusCode::FORBIDDEN, "ACL not found")),
        }
    }

    // --- changes -------------------------------------------------------------------------------

    fn register(&mut self, registration: Registration, now: Instant) {
        let Registration {
            service: spec,
            checks,
            replace_existing_checks,
        } = registration;
        let index = self.next_index();
        let previous = self.services.get(&spec.id);
        let create_index = previous.map_or(index, |service| service.create_index);
        let previous_name = previous.map(|service| service.name.clone());

        self.install_checks(&spec, checks, replace_existing_checks, now, index);
        let name = spec.name.clone();
        self.services
            .insert(spec.id.clone(), spec.into_service(create_index, index));
        self.touch(&name, index);
        if let Some(old) = previous_name.filter(|old| !old.eq_ignore_ascii_case(&name)) {
            self.instances_changed(&old, index);
        }
    }

    /// The checks of a (re-)registered instance: the new ones replace those with the same ID;
    /// the other old ones stay unless `replace_existing` (the maintenance check always stays).
    fn install_checks(
        &mut self,
        spec: &ServiceSpec,
        checks: Vec<CheckSpec>,
        replace_existing: bool,
        now: Instant,
        index: u64,
    ) {
        let new_ids: BTreeSet<&str> = checks.iter().map(|check| check.id.as_str()).collect();
        self.checks.retain(|id, check| {
            check.service_id != spec.id
                || !replace_existing
                || matches!(check.kind, CheckKind::Maintenance)
                || new_ids.contains(id.as_str())
        });
        for check in self.checks.values_mut() {
            if check.service_id == spec.id && !matches!(check.kind, CheckKind::Maintenance) {
                check.service_name.clone_from(&spec.name);
                check.service_tags.clone_from(&spec.tags);
            }
        }
        for check in checks {
            let create_index = self
                .checks
                .get(&check.id)
                .map_or(index, |existing| existing.create_index);
            let check = check.into_check(spec, now, create_index, index);
            self.checks.insert(check.id.clone(), check);
        }
    }

    fn deregister(&mut self, service_id: &str) -> bool {
        let Some(service) = self.services.remove(service_id) else {
            return false;
        };
        self.checks
            .retain(|_, check| check.service_id != service_id);
        let index = self.next_index();
        self.instances_changed(&service.name, index);
        true
    }

    /// Sets a check's status and output; raises the index when the status changes. Returns
    /// `false` for an unknown check.
    fn set_check_state(
        &mut self,
        check_id: &str,
        status: CheckStatus,
        output: String,
        now: Instant,
    ) -> bool {
        let Some(check) = self.checks.get_mut(check_id) else {
            return false;
        };
        check.output = output;
        if check.status == status {
            return true;
        }
        check.status = status;
        check.critical_since = (status == CheckStatus::Critical).then_some(now);
        let service_name = check.service_name.clone();
        let index = self.next_index();
        if let Some(check) = self.checks.get_mut(check_id) {
            check.modify_index = index;
        }
        if service_name.is_empty() {
            self.touch_all(index);
        } else {
            self.touch(&service_name, index);
        }
        true
    }

    /// Restarts a TTL check's timer (no-op for other checks).
    fn restart_ttl(&mut self, check_id: &str, output: &str, now: Instant) -> bool {
        let Some(Check {
            kind: CheckKind::Ttl(ttl),
            ..
        }) = self.checks.get_mut(check_id)
        else {
            return false;
        };
        ttl.deadline = now.checked_add(ttl.ttl);
        output.clone_into(&mut ttl.last_output);
        true
    }

    /// `PUT /v1/agent/check/update|pass|warn|fail/<id>` once vetted.
    fn update_ttl_check(
        &mut self,
        check_id: &str,
        status: CheckStatus,
        output: &str,
        now: Instant,
    ) -> Result<(), ApiError> {
        let output = truncate_output(output);
        if !self.restart_ttl(check_id, &output, now) {
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("CheckID {check_id:?} does not have associated TTL"),
            ));
        }
        self.set_check_state(check_id, status, output, now);
        Ok(())
    }

    fn set_maintenance(
        &mut self,
        service_id: &str,
        enable: bool,
        reason: &str,
        now: Instant,
    ) -> Result<(), ApiError> {
        let Some(service) = self.services.get(service_id) else {
            return Err(ApiError::unknown_service(service_id));
        };
        let check_id = maintenance_check_id(service_id);
        if enable == self.checks.contains_key(&check_id) {
            return Ok(());
        }
        let name = service.name.clone();
        let index = self.next_index();
        if enable {
            let notes = if reason.is_empty() {
                DEFAULT_MAINTENANCE_REASON
            } else {
                reason
            };
            let check = Check {
                id: check_id.clone(),
                name: "Service Maintenance Mode".to_owned(),
                status: CheckStatus::Critical,
                notes: notes.to_owned(),
                output: String::new(),
                service_id: service_id.to_owned(),
                service_name: name.clone(),
                service_tags: Vec::new(),
                kind: CheckKind::Maintenance,
                critical_since: Some(now),
                reap_after: None,
                create_index: index,
                modify_index: index,
            };
            self.checks.insert(check_id, check);
        } else {
            self.checks.remove(&check_id);
        }
        self.touch(&name, index);
        Ok(())
    }

    /// Expires due TTL checks and reaps services critical for too long. Returns whether
    /// anything changed and the next deadline.
    fn fire_timers(&mut self, now: Instant) -> (bool, Option<Instant>) {
        let expired = self.expire_ttl_checks(now);
        let reaped = self.reap_critical_services(now);
        let next = self.checks.values().filter_map(Check::next_deadline).min();
        (expired || reaped, next)
    }

    /// A TTL check not updated within its TTL turns critical (Consul's `CheckTTL`).
    fn expire_ttl_checks(&mut self, now: Instant) -> bool {
        let mut expired = Vec::new();
        for check in self.checks.values_mut() {
            if let CheckKind::Ttl(ttl) = &mut check.kind
                && ttl.deadline.is_some_and(|deadline| deadline <= now)
            {
                ttl.deadline = None;
                expired.push((check.id.clone(), expired_output(&ttl.last_output)));
            }
        }
        for (check_id, output) in &expired {
            self.set_check_state(check_id, CheckStatus::Critical, output.clone(), now);
        }
        !expired.is_empty()
    }

    /// `DeregisterCriticalServiceAfter`: deregisters services critical for too long.
    fn reap_critical_services(&mut self, now: Instant) -> bool {
        let due: BTreeSet<String> = self
            .checks
            .values()
            .filter(|check| {
                check
                    .reap_deadline()
                    .is_some_and(|deadline| deadline <= now)
            })
            .map(|check| check.service_id.clone())
            .collect();
        let mut reaped = false;
        for service_id in due {
            reaped |= self.deregister(&service_id);
        }
        reaped
    }

    fn take_fault(&mut self) -> Option<ApiError> {
        let fault = self.fault.as_mut()?;
        fault.remaining -= 1;
        let error = ApiError::new(fault.status, fault.body.clone());
        if fault.remaining == 0 {
            self.fault = None;
        }
        Some(error)
    }
}

fn expired_output(last_output: &str) -> String {
    if last_output.is_empty() {
        "TTL expired".to_owned()
    } else {
        format!("TTL expired (last output before timeout follows): {last_output}")
    }
}

/// Consul keeps at most 4 KiB of a check's output.
fn truncate_output(output: &str) -> String {
    if output.len() <= CHECK_OUTPUT_MAX {
        return output.to_owned();
    }
    let mut end = CHECK_OUTPUT_MAX;
    while !output.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{} ... (captured {end} of {} bytes)",
        &output[..end],
        output.len()
    )
}

fn presented_token(headers: &HeaderMap) -> Option<&str> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::trim)
            .filter(|value| !value.is_empty())
    };
    header("x-consul-token").or_else(|| {
        header(header::AUTHORIZATION.as_str())
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::trim)
    })
}

fn require_write(access: Access, resource: &str, name: &str) -> Result<(), ApiError> {
    match access {
        Access::Full => Ok(()),
        Access::Anonymous => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "Permission denied: anonymous token lacks permission '{resource}:write' on {name:?}. \
                 The anonymous token is used implicitly when a request does not specify a token."
            ),
        )),
    }
}

async fn run_timers(shared: Arc<Shared>) {
    loop {
        let (changed, next) = lock(&shared.state).fire_timers(Instant::now());
        if changed {
            shared.notify_changes();
        }
        match next {
            Some(deadline) => {
                tokio::select! {
                    () = sleep_until(deadline) => {}
                    () = shared.timers.notified() => {}
                }
            }
            None => shared.timers.notified().await,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------------------------

/// A non-2xx answer with a plain-text body, like Consul's.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    message: String,
    allow: Option<&'static str>,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            allow: None,
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    fn decode_failed(error: impl std::fmt::Display) -> Self {
        Self::bad_request(format!("Request decode failed: {error}"))
    }

    fn unknown_check(check_id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            format!(
                "Unknown check ID {check_id:?}. Ensure that the check ID is passed, not the check name."
            ),
        )
    }

    fn unknown_service(service_id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            format!(
                "Unknown service ID {service_id:?}. Ensure that the service ID is passed, not the service name."
            ),
        )
    }

    fn method_not_allowed(method: &Method, allowed: &Method) -> Self {
        let allow = if *allowed == Method::GET {
            "OPTIONS,GET"
        } else {
            "OPTIONS,PUT"
        };
        Self {
            allow: Some(allow),
            ..Self::new(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("method {method} not allowed"),
            )
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, self.message).into_response();
        if let Some(allow) = self.allow {
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        response
    }
}

type Answer = Result<Response, ApiError>;

/// The endpoints the double serves, found like Consul's mux: by path prefix.
enum Endpoint<'a> {
    Health(&'a str),
    Leader,
    Register,
    Deregister(&'a str),
    Maintenance(&'a str),
    CheckUpdate(&'a str),
    CheckLegacy(&'a str, CheckStatus),
}

impl<'a> Endpoint<'a> {
    fn route(path: &'a str) -> Option<Self> {
        if let Some(name) = path.strip_prefix("/v1/health/service/") {
            return Some(Self::Health(name));
        }
        if let Some(id) = path.strip_prefix("/v1/agent/service/deregister/") {
            return Some(Self::Deregister(id));
        }
        if let Some(id) = path.strip_prefix("/v1/agent/service/maintenance/") {
            return Some(Self::Maintenance(id));
        }
        if let Some(id) = path.strip_prefix("/v1/agent/check/update/") {
            return Some(Self::CheckUpdate(id));
        }
        let legacy = [
            ("/v1/agent/check/pass/", CheckStatus::Passing),
            ("/v1/agent/check/warn/", CheckStatus::Warning),
            ("/v1/agent/check/fail/", CheckStatus::Critical),
        ];
        for (prefix, status) in legacy {
            if let Some(id) = path.strip_prefix(prefix) {
                return Some(Self::CheckLegacy(id, status));
            }
        }
        match path {
            "/v1/agent/service/register" => Some(Self::Register),
            "/v1/status/leader" => Some(Self::Leader),
            _ => None,
        }
    }

    fn method(&self) -> Method {
        match self {
            Self::Health(_) | Self::Leader => Method::GET,
            _ => Method::PUT,
        }
    }
}

/// Query parameters, in order (Go's `url.Values`).
struct Params(Vec<(String, String)>);

impl Params {
    fn parse(query: Option<&str>) -> Self {
        let pairs = form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .map(|(key, value)| (key.into_owned(), value.into_owned()))
            .collect();
        Self(pairs)
    }

    /// The first value, if the parameter is present.
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// The first value, `""` when absent or empty (Go's `Get`).
    fn value(&self, name: &str) -> &str {
        self.get(name).unwrap_or_default()
    }

    fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
            .collect()
    }

    fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }
}

async fn start_server(
    shared: Arc<Shared>,
    addr: SocketAddr,
) -> io::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = bind(addr)?;
    let addr = listener.local_addr()?;
    let listener = TrackedListener {
        inner: listener,
        connections: Arc::clone(&shared.connections),
    };
    let app = Router::new().fallback(dispatch).with_state(shared);
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((addr, server))
}

/// Binds the same port again; retries for a while if the port is briefly taken.
async fn rebind(shared: Arc<Shared>, addr: SocketAddr) -> JoinHandle<()> {
    let mut attempts = 0;
    loop {
        match start_server(Arc::clone(&shared), addr).await {
            Ok((_, server)) => return server,
            Err(_) if attempts < 100 => {
                attempts += 1;
                // Real time, even under a paused tokio clock.
                let _ =
                    tokio::task::spawn_blocking(|| std::thread::sleep(Duration::from_millis(50)))
                        .await;
            }
            Err(error) => panic!("rebind the Consul double on {addr}: {error}"),
        }
    }
}

fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

async fn dispatch(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = to_bytes(body, MAX_BODY).await;
    shared.record(&parts, body.as_ref().unwrap_or(&Bytes::new()));
    let fault = lock(&shared.state).take_fault();
    if let Some(fault) = fault {
        return fault.into_response();
    }
    let answer = match body {
        Ok(body) => handle(&shared, &parts, &body).await,
        Err(error) => Err(ApiError::decode_failed(error)),
    };
    answer.unwrap_or_else(IntoResponse::into_response)
}

async fn handle(shared: &Shared, parts: &Parts, body: &[u8]) -> Answer {
    let path: Cow<'_, str> = percent_decode_str(parts.uri.path())
        .decode_utf8()
        .map_err(|_| ApiError::bad_request("Invalid URL path"))?;
    let Some(endpoint) = Endpoint::route(&path) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("the Consul double does not model {} {}", parts.method, path),
        ));
    };
    if parts.method != endpoint.method() {
        return Err(ApiError::method_not_allowed(
            &parts.method,
            &endpoint.method(),
        ));
    }
    let params = Params::parse(parts.uri.query());
    let headers = &parts.headers;
    match endpoint {
        Endpoint::Health(name) => health_service(shared, name, &params, headers).await,
        Endpoint::Leader => Ok(json_response(&json!(LEADER_ADDRESS))),
        Endpoint::Register => register(shared, &params, headers, body),
        Endpoint::Deregister(id) => deregister(shared, id, headers),
        Endpoint::Maintenance(id) => maintenance(shared, id, &params, headers),
        Endpoint::CheckUpdate(id) => {
            let update = CheckUpdate::decode(body)?;
            update_check(shared, id, update.status, &update.output, headers)
        }
        Endpoint::CheckLegacy(id, status) => {
            update_check(shared, id, status, params.value("note"), headers)
        }
    }
}

fn ok() -> Answer {
    Ok(StatusCode::OK.into_response())
}

fn json_response(value: &Value) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
        .into_response()
}

// --- health ----------------------------------------------------------------------------------

struct HealthQuery {
    passing: bool,
    tags: Vec<String>,
    min_index: u64,
    wait: Option<i64>,
    consistency: &'static str,
}

impl HealthQuery {
    fn parse(params: &Params) -> Result<Self, ApiError> {
        let stale = params.has("stale");
        let consistent = params.has("consistent");
        if stale && consistent {
            return Err(ApiError::bad_request(
                "Cannot specify ?stale with ?consistent, conflicting semantics.",
            ));
        }
        let wait = match params.value("wait") {
            "" => None,
            text => Some(
                parse_go_duration(text).map_err(|_| ApiError::bad_request("Invalid wait time"))?,
            ),
        };
        let min_index = match params.value("index") {
            "" => 0,
            text => text
                .parse()
                .map_err(|_| ApiError::bad_request("Invalid index"))?,
        };
        for unmodelled in ["filter", "node-meta"] {
            if params.has(unmodelled) {
                return Err(ApiError::bad_request(format!(
                    "the Consul double does not model ?{unmodelled}"
                )));
            }
        }
        let passing = match params.get("passing") {
            None => false,
            Some("") => true,
            Some(text) => parse_go_bool(text)
                .ok_or_else(|| ApiError::bad_request("Invalid value for ?passing"))?,
        };
        let datacenter = params.value("dc");
        if !datacenter.is_empty() && datacenter != DATACENTER {
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "No path to datacenter",
            ));
        }
        let consistency = match (stale, consistent) {
            (true, _) => "stale",
            (_, true) => "consistent",
            _ => "leader",
        };
        Ok(Self {
            passing,
            tags: params.all("tag"),
            min_index,
            wait,
            consistency,
        })
    }

    /// Consul's wait: default 5 min, at most 10 min, plus up to 1/16 of random jitter.
    fn timeout(&self) -> Duration {
        let wait = self
            .wait
            .and_then(|nanos| u64::try_from(nanos).ok())
            .filter(|nanos| *nanos > 0)
            .map_or(DEFAULT_WAIT, Duration::from_nanos)
            .min(MAX_WAIT);
        wait + jitter(wait / JITTER_FRACTION)
    }
}

fn jitter(max: Duration) -> Duration {
    let max = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
    if max == 0 {
        Duration::ZERO
    } else {
        Duration::from_nanos(rand::random_range(0..max))
    }
}

async fn health_service(
    shared: &Shared,
    name: &str,
    params: &Params,
    headers: &HeaderMap,
) -> Answer {
    if name.is_empty() {
        return Err(ApiError::bad_request("Missing service name"));
    }
    let query = HealthQuery::parse(params)?;
    let access = shared.read(|state| state.access(headers))?;
    if query.min_index > 0 {
        let deadline = Instant::now() + query.timeout();
        wait_for_index(shared, name, query.min_index, deadline).await;
    }
    let (index, entries) = shared.read(|state| {
        (
            state.service_index(name),
            state.health_entries(name, &query),
        )
    });
    let filtered = matches!(access, Access::Anonymous) && !entries.is_empty();
    let entries = if filtered { Vec::new() } else { entries };
    Ok(health_response(index, entries, filtered, query.consistency))
}

/// Blocks until the service's index moves past `min_index`, the deadline passes, or blocked
/// queries are interrupted.
async fn wait_for_index(shared: &Shared, name: &str, min_index: u64, deadline: Instant) {
    let mut changes = shared.changes.subscribe();
    let interrupts = shared.read(|state| state.interrupts);
    loop {
        let (index, now_interrupts) =
            shared.read(|state| (state.service_index(name), state.interrupts));
        if index > min_index || now_interrupts != interrupts {
            return;
        }
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            () = sleep_until(deadline) => return,
        }
    }
}

fn health_response(
    index: u64,
    entries: Vec<Value>,
    filtered: bool,
    consistency: &'static str,
) -> Response {
    let mut response = json_response(&Value::Array(entries));
    let headers = response.headers_mut();
    headers.insert(INDEX_HEADER, HeaderValue::from(index));
    headers.insert("x-consul-knownleader", HeaderValue::from_static("true"));
    headers.insert("x-consul-lastcontact", HeaderValue::from_static("0"));
    headers.insert(
        "x-consul-effective-consistency",
        HeaderValue::from_static(consistency),
    );
    headers.insert(
        "x-consul-query-backend",
        HeaderValue::from_static("blocking-query"),
    );
    if filtered {
        headers.insert(
            "x-consul-results-filtered-by-acls",
            HeaderValue::from_static("true"),
        );
    }
    response
}

// --- agent -----------------------------------------------------------------------------------

fn register(shared: &Shared, params: &Params, headers: &HeaderMap, body: &[u8]) -> Answer {
    let registration = Registration::decode(body, params.has("replace-existing-checks"))?;
    shared.update(|state, now| {
        let access = state.access(headers)?;
        require_write(access, "service", &registration.service.name)?;
        state.register(registration, now);
        ok()
    })
}

fn deregister(shared: &Shared, service_id: &str, headers: &HeaderMap) -> Answer {
    shared.update(|state, _| {
        let access = state.access(headers)?;
        let service = state
            .services
            .get(service_id)
            .ok_or_else(|| ApiError::unknown_service(service_id))?;
        require_write(access, "service", &service.name)?;
        state.deregister(service_id);
        ok()
    })
}

fn maintenance(shared: &Shared, service_id: &str, params: &Params, headers: &HeaderMap) -> Answer {
    if service_id.is_empty() {
        return Err(ApiError::bad_request("Missing service ID"));
    }
    let raw = params
        .get("enable")
        .ok_or_else(|| ApiError::bad_request("Missing value for enable"))?;
    let enable = parse_go_bool(raw)
        .ok_or_else(|| ApiError::bad_request(format!("Invalid value for enable: {raw:?}")))?;
    let reason = params.value("reason");
    shared.update(|state, now| {
        let access = state.access(headers)?;
        let service = state
            .services
            .get(service_id)
            .ok_or_else(|| ApiError::unknown_service(service_id))?;
        require_write(access, "service", &service.name)?;
        state.set_maintenance(service_id, enable, reason, now)?;
        ok()
    })
}

fn update_check(
    shared: &Shared,
    check_id: &str,
    status: CheckStatus,
    output: &str,
    headers: &HeaderMap,
) -> Answer {
    shared.update(|state, now| {
        let access = state.access(headers)?;
        let check = state
            .checks
            .get(check_id)
            .filter(|check| check.is_agent_local())
            .ok_or_else(|| ApiError::unknown_check(check_id))?;
        if check.service_name.is_empty() {
            require_write(access, "node", NODE_NAME)?;
        } else {
            require_write(access, "service", &check.service_name)?;
        }
        state.update_ttl_check(check_id, status, output, now)?;
        ok()
    })
}

/// Go's `strconv.ParseBool`.
fn parse_go_bool(text: &str) -> Option<bool> {
    match text {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Request bodies
// ---------------------------------------------------------------------------------------------

const SERVICE_KEYS: &[&str] = &[
    "ID",
    "Name",
    "Tags",
    "Address",
    "Port",
    "Meta",
    "Weights",
    "EnableTagOverride",
    "Check",
    "Checks",
];
const CHECK_KEYS: &[&str] = &[
    "CheckID",
    "Name",
    "Status",
    "Notes",
    "TTL",
    "DeregisterCriticalServiceAfter",
    "HTTP",
    "TCP",
    "UDP",
    "GRPC",
    "H2PING",
    "Args",
    "ScriptArgs",
    "DockerContainerID",
    "AliasNode",
    "AliasService",
    "OSService",
];
/// Check fields of the check types the double does not run.
const UNMODELLED_CHECK_KEYS: &[&str] = &[
    "HTTP",
    "TCP",
    "UDP",
    "GRPC",
    "H2PING",
    "Args",
    "ScriptArgs",
    "DockerContainerID",
    "AliasNode",
    "AliasService",
    "OSService",
];
const WEIGHT_KEYS: &[&str] = &["Passing", "Warning"];
const CHECK_UPDATE_KEYS: &[&str] = &["Status", "Output"];

/// Decodes a JSON body like Go's `encoding/json`: keys match the fields case-insensitively,
/// unknown keys are ignored.
fn decode_json<T: DeserializeOwned>(
    body: &[u8],
    canonical: impl FnOnce(Value) -> Value,
) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::decode_failed("EOF"));
    }
    let value: Value = serde_json::from_slice(body).map_err(ApiError::decode_failed)?;
    serde_json::from_value(canonical(value)).map_err(ApiError::decode_failed)
}

/// Renames keys to the canonical spelling of `known` (exact spellings win over case-folded).
fn canonical_keys(value: Value, known: &[&str]) -> Value {
    let Value::Object(map) = value else {
        return value;
    };
    let mut canonical = Map::new();
    let mut folded = Vec::new();
    for (key, field) in map {
        if known.contains(&key.as_str()) {
            canonical.insert(key, field);
        } else {
            folded.push((key, field));
        }
    }
    for (key, field) in folded {
        match known.iter().find(|name| name.eq_ignore_ascii_case(&key)) {
            Some(name) => {
                canonical.entry(*name).or_insert(field);
            }
            None => {
                canonical.insert(key, field);
            }
        }
    }
    Value::Object(canonical)
}

fn canonical_service(value: Value) -> Value {
    let mut value = canonical_keys(value, SERVICE_KEYS);
    if let Value::Object(map) = &mut value {
        if let Some(check) = map.get_mut("Check") {
            *check = canonical_keys(check.take(), CHECK_KEYS);
        }
        if let Some(Value::Array(checks)) = map.get_mut("Checks") {
            for check in checks {
                *check = canonical_keys(check.take(), CHECK_KEYS);
            }
        }
        if let Some(weights) = map.get_mut("Weights") {
            *weights = canonical_keys(weights.take(), WEIGHT_KEYS);
        }
    }
    value
}

/// A Go `time.Duration` in JSON: a duration string or a number of nanoseconds.
#[derive(Clone, Copy)]
struct GoDuration(i64);

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Nanos(i64),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Text(text) => parse_go_duration(&text).map(Self).map_err(D::Error::custom),
            Raw::Nanos(nanos) => Ok(Self(nanos)),
        }
    }
}

impl GoDuration {
    fn positive(self) -> Option<Duration> {
        u64::try_from(self.0)
            .ok()
            .filter(|nanos| *nanos > 0)
            .map(Duration::from_nanos)
    }
}

#[derive(Deserialize)]
struct ServiceDefinition {
    #[serde(rename = "ID")]
    id: Option<String>,
    #[serde(rename = "Name")]
    name: Option<String>,
    #[serde(rename = "Tags")]
    tags: Option<Vec<String>>,
    #[serde(rename = "Address")]
    address: Option<String>,
    #[serde(rename = "Port")]
    port: Option<u16>,
    #[serde(rename = "Meta")]
    meta: Option<BTreeMap<String, String>>,
    #[serde(rename = "Weights")]
    weights: Option<Weights>,
    #[serde(rename = "EnableTagOverride")]
    enable_tag_override: Option<bool>,
    #[serde(rename = "Check")]
    check: Option<CheckDefinition>,
    #[serde(rename = "Checks")]
    checks: Option<Vec<CheckDefinition>>,
}

#[derive(Deserialize)]
struct CheckDefinition {
    #[serde(rename = "CheckID")]
    check_id: Option<String>,
    #[serde(rename = "Name")]
    name: Option<String>,
    #[serde(rename = "Status")]
    status: Option<String>,
    #[serde(rename = "Notes")]
    notes: Option<String>,
    #[serde(rename = "TTL")]
    ttl: Option<GoDuration>,
    #[serde(rename = "DeregisterCriticalServiceAfter")]
    deregister_after: Option<GoDuration>,
    #[serde(flatten)]
    other: Map<String, Value>,
}

impl CheckDefinition {
    /// Consul ignores a check whose fields are all empty.
    fn is_empty(&self) -> bool {
        let blank = |text: &Option<String>| text.as_deref().is_none_or(str::is_empty);
        blank(&self.check_id)
            && blank(&self.name)
            && blank(&self.status)
            && blank(&self.notes)
            && self.ttl.is_none_or(|ttl| ttl.0 == 0)
            && self.deregister_after.is_none_or(|after| after.0 == 0)
            && self.unmodelled_kind().is_none()
    }

    fn unmodelled_kind(&self) -> Option<&'static str> {
        UNMODELLED_CHECK_KEYS.iter().copied().find(|key| {
            self.other.get(*key).is_some_and(|value| match value {
                Value::Null | Value::Bool(false) => false,
                Value::String(text) => !text.is_empty(),
                Value::Array(items) => !items.is_empty(),
                Value::Object(fields) => !fields.is_empty(),
                _ => true,
            })
        })
    }

    /// Consul's validation and defaults; `position` among `count` checks of the service.
    fn into_spec(
        self,
        service_id: &str,
        service_name: &str,
        position: usize,
        count: usize,
    ) -> Result<CheckSpec, ApiError> {
        let status = match self.status.as_deref() {
            None | Some("") => CheckStatus::Critical,
            Some(text) => CheckStatus::parse(text).ok_or_else(|| {
                ApiError::bad_request("Status for checks must 'passing', 'warning', 'critical'")
            })?,
        };
        if let Some(kind) = self.unmodelled_kind() {
            return Err(ApiError::bad_request(format!(
                "Invalid check: the Consul double models TTL checks only, not {kind} checks"
            )));
        }
        let ttl = self.ttl.and_then(GoDuration::positive).ok_or_else(|| {
            ApiError::bad_request("Invalid check: TTL must be > 0 for TTL checks")
        })?;
        let id = self
            .check_id
            .filter(|id| !id.is_empty())
            .unwrap_or_else(|| default_check_id(service_id, position, count));
        let name = self
            .name
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| format!("Service '{service_name}' check"));
        let reap_after = self
            .deregister_after
            .and_then(GoDuration::positive)
            .map(|after| after.max(MIN_REAP_AFTER));
        Ok(CheckSpec {
            id,
            name,
            status,
            notes: self.notes.unwrap_or_default(),
            ttl,
            reap_after,
        })
    }
}

fn default_check_id(service_id: &str, position: usize, count: usize) -> String {
    if count > 1 {
        format!("service:{service_id}:{}", position + 1)
    } else {
        format!("service:{service_id}")
    }
}

struct Registration {
    service: ServiceSpec,
    checks: Vec<CheckSpec>,
    replace_existing_checks: bool,
}

struct ServiceSpec {
    id: String,
    name: String,
    tags: Vec<String>,
    address: String,
    port: u16,
    meta: BTreeMap<String, String>,
    weights: Weights,
    enable_tag_override: bool,
}

struct CheckSpec {
    id: String,
    name: String,
    status: CheckStatus,
    notes: String,
    ttl: Duration,
    reap_after: Option<Duration>,
}

impl Registration {
    fn decode(body: &[u8], replace_existing_checks: bool) -> Result<Self, ApiError> {
        let definition: ServiceDefinition = decode_json(body, canonical_service)?;
        let name = definition.name.unwrap_or_default();
        if name.is_empty() {
            return Err(ApiError::bad_request("Missing service name"));
        }
        let address = definition.address.unwrap_or_default();
        if is_any_address(&address) {
            return Err(ApiError::bad_request("Invalid service address"));
        }
        let id = definition
            .id
            .filter(|id| !id.is_empty())
            .unwrap_or_else(|| name.clone());
        let definitions: Vec<CheckDefinition> = definition
            .check
            .into_iter()
            .chain(definition.checks.into_iter().flatten())
            .filter(|check| !check.is_empty())
            .collect();
        let count = definitions.len();
        let checks = definitions
            .into_iter()
            .enumerate()
            .map(|(position, check)| check.into_spec(&id, &name, position, count))
            .collect::<Result<_, _>>()?;
        let service = ServiceSpec {
            id,
            name,
            tags: definition.tags.unwrap_or_default(),
            address,
            port: definition.port.unwrap_or_default(),
            meta: definition.meta.unwrap_or_default(),
            weights: definition.weights.unwrap_or_default(),
            enable_tag_override: definition.enable_tag_override.unwrap_or_default(),
        };
        Ok(Self {
            service,
            checks,
            replace_existing_checks,
        })
    }
}

/// Consul refuses `0.0.0.0` and `::` as a service address.
fn is_any_address(address: &str) -> bool {
    let bare = address.trim_start_matches('[').trim_end_matches(']');
    bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_unspecified())
}

impl ServiceSpec {
    fn into_service(self, create_index: u64, modify_index: u64) -> Service {
        Service {
            id: self.id,
            name: self.name,
            tags: self.tags,
            address: self.address,
            port: self.port,
            meta: self.meta,
            weights: self.weights,
            enable_tag_override: self.enable_tag_override,
            create_index,
            modify_index,
        }
    }
}

impl CheckSpec {
    fn into_check(
        self,
        service: &ServiceSpec,
        now: Instant,
        create_index: u64,
        modify_index: u64,
    ) -> Check {
        Check {
            id: self.id,
            name: self.name,
            status: self.status,
            notes: self.notes,
            output: String::new(),
            service_id: service.id.clone(),
            service_name: service.name.clone(),
            service_tags: service.tags.clone(),
            kind: CheckKind::Ttl(Ttl {
                ttl: self.ttl,
                deadline: now.checked_add(self.ttl),
                last_output: String::new(),
            }),
            critical_since: (self.status == CheckStatus::Critical).then_some(now),
            reap_after: self.reap_after,
            create_index,
            modify_index,
        }
    }
}

struct CheckUpdate {
    status: CheckStatus,
    output: String,
}

impl CheckUpdate {
    fn decode(body: &[u8]) -> Result<Self, ApiError> {
        #[derive(Deserialize)]
        struct Raw {
            #[serde(rename = "Status")]
            status: Option<String>,
            #[serde(rename = "Output")]
            output: Option<String>,
        }
        let raw: Raw = decode_json(body, |value| canonical_keys(value, CHECK_UPDATE_KEYS))?;
        let status = raw.status.unwrap_or_default();
        let status = CheckStatus::parse(&status)
            .ok_or_else(|| ApiError::bad_request(format!("Invalid check status: '{status}'")))?;
        Ok(Self {
            status,
            output: raw.output.unwrap_or_default(),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Go durations
// ---------------------------------------------------------------------------------------------

/// Go's `time.ParseDuration`, in nanoseconds: `300ms`, `1.5h`, `2h45m`, `-5s`, `0`.
fn parse_go_duration(text: &str) -> Result<i64, String> {
    let invalid = || format!("time: invalid duration {text:?}");
    let (negative, mut rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let (whole, after) = split_digits(rest);
        let (fraction, after) = match after.strip_prefix('.') {
            Some(after) => split_digits(after),
            None => ("", after),
        };
        if whole.is_empty() && fraction.is_empty() {
            return Err(invalid());
        }
        let unit_end = after
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_end);
        let scale = unit_nanos(unit).ok_or_else(|| {
            if unit.is_empty() {
                format!("time: missing unit in duration {text:?}")
            } else {
                format!("time: unknown unit {unit:?} in duration {text:?}")
            }
        })?;
        total = total
            .checked_add(component_nanos(whole, fraction, scale).ok_or_else(invalid)?)
            .ok_or_else(invalid)?;
        rest = after;
    }
    let limit = i64::MAX as u128 + u128::from(negative);
    if total > limit {
        return Err(invalid());
    }
    let total = i128::try_from(total).map_err(|_| invalid())?;
    i64::try_from(if negative { -total } else { total }).map_err(|_| invalid())
}

fn split_digits(text: &str) -> (&str, &str) {
    let end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    text.split_at(end)
}

fn unit_nanos(unit: &str) -> Option<u128> {
    Some(match unit {
        "ns" => 1,
        "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        _ => return None,
    })
}

fn component_nanos(whole: &str, fraction: &str, scale: u128) -> Option<u128> {
    let whole: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let mut nanos = whole.checked_mul(scale)?;
    // Digits past the 18th cannot matter at nanosecond precision.
    let fraction = &fraction[..fraction.len().min(18)];
    if !fraction.is_empty() {
        let digits: u128 = fraction.parse().ok()?;
        let exponent = u32::try_from(fraction.len()).ok()?;
        nanos = nanos.checked_add(digits * scale / 10u128.pow(exponent))?;
    }
    Some(nanos)
}

// ---------------------------------------------------------------------------------------------
// Connections (so that `pause` can cut them)
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct Connections {
    next_id: AtomicU64,
    /// A duplicate handle of every open connection's socket.
    open: Mutex<HashMap<u64, std::net::TcpStream>>,
}

impl Connections {
    fn track(self: &Arc<Self>, stream: TcpStream) -> io::Result<TrackedStream> {
        let stream = stream.into_std()?;
        let handle = stream.try_clone()?;
        let stream = TcpStream::from_std(stream)?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        lock(&self.open).insert(id, handle);
        Ok(TrackedStream {
            inner: stream,
            _guard: ConnectionGuard {
                id,
                connections: Arc::clone(self),
            },
        })
    }

    fn shutdown_all(&self) {
        for stream in lock(&self.open).values() {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

/// Forgets (and closes the duplicate of) a connection when the server drops it.
struct ConnectionGuard {
    id: u64,
    connections: Arc<Connections>,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        lock(&self.connections.open).remove(&self.id);
    }
}

struct TrackedListener {
    inner: TcpListener,
    connections: Arc<Connections>,
}

impl axum::serve::Listener for TrackedListener {
    type Io = TrackedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.inner.accept().await {
                Ok((stream, addr)) => {
                    if let Ok(stream) = self.connections.track(stream) {
                        return (stream, addr);
                    }
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

struct TrackedStream {
    inner: TcpStream,
    _guard: ConnectionGuard,
}

impl AsyncRead for TrackedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TrackedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
