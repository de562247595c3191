//! The public listener's accept loop: HTTP/1.1 and HTTP/2 (h2c) on hyper-util's auto
//! connection builder, with the edge limits `axum::serve` does not give.
//!
//! - Admission: a global cap on open connections (derived from the open-file limit) and
//!   a cap per client IP; a connection over a cap is answered a minimal 503 and closed,
//!   before hyper ever sees it. Accept errors (EMFILE …) back off instead of spinning.
//! - Lifecycle: hyper's header-read timer (HTTP/1.1), a per-connection idle watchdog
//!   (HTTP/1.1 and HTTP/2: no request in flight for `idle_timeout`), HTTP/2 PINGs, body
//!   read timeouts ([`super::body::TimedBody`]), and header size/count limits (431).
//! - Shutdown: stop accepting, ask every connection to finish (GOAWAY / no keep-alive),
//!   and wait for them at most `shutdown_grace`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, Request, Response, StatusCode, Version, header};
use axum::response::IntoResponse;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;
use tower::ServiceExt;

use super::body::{BodyTimeouts, TimedBody};
use super::error::{GatewayError, envelope_bytes};
use super::workers::Workers;
use crate::app::App;
use crate::config::{Config, HttpConfig};
use crate::guard::client_ip::TrustedProxies;
use crate::guard::config::GuardConfig;
use crate::guard::ip_table::IpKey;
use crate::telemetry::Metrics;
use crate::telemetry::metrics::ReasonLabels;

/// After an idle connection was asked to close (GOAWAY, or no keep-alive), how long
/// it may take before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Pause after an accept error such as EMFILE, so a full descriptor table is not
/// retried in a busy loop.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Upper bound of the derived global connection cap.
const DERIVED_CAP_MAX: usize = 10_000;

/// Everything the listener enforces, resolved from the configuration.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub header_timeout: Duration,
    pub body: BodyTimeouts,
    pub idle_timeout: Duration,
    pub h2_keepalive_interval: Duration,
    pub h2_keepalive_timeout: Duration,
    pub h2_max_concurrent_streams: u32,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    /// Resolved global cap.
    pub max_connections: usize,
    /// Resolved per-IP cap.
    pub max_connections_per_ip: usize,
    pub proxies: TrustedProxies,
    pub ipv6_prefix: u8,
    pub shutdown_grace: Duration,
    /// Where accepted connections are served (thread-per-core workers, or the
    /// accepting runtime).
    pub workers: Workers,
}

impl ServerSettings {
    /// The listener settings of `config`; the global cap is derived from the process's
    /// open-file limit when not configured.
    pub fn from_config(config: &Config) -> Self {
        Self::new(&config.http, &config.guard)
    }

    /// The settings of `http`, with the client-IP rules of `guard`.
    pub fn new(http: &HttpConfig, guard: &GuardConfig) -> Self {
        let max_connections = http
            .max_connections
            .unwrap_or_else(|| derived_cap(open_file_limit(), http.fd_reserve));
        Self {
            header_timeout: http.header_timeout,
            body: BodyTimeouts {
                gap: http.body_read_timeout,
                total: http.body_timeout,
            },
            idle_timeout: http.idle_timeout,
            h2_keepalive_interval: http.h2_keepalive_interval,
            h2_keepalive_timeout: http.h2_keepalive_timeout,
            h2_max_concurrent_streams: http.h2_max_concurrent_streams,
            max_header_bytes: http.max_header_bytes,
            max_headers: http.max_headers,
            max_connections,
            max_connections_per_ip: per_ip_cap(http.max_connections_per_ip, max_connections),
            proxies: TrustedProxies::new(guard.trusted_proxies.clone(), guard.forwarded_header),
            ipv6_prefix: guard.ip.ipv6_prefix,
            shutdown_grace: http.shutdown_grace,
            workers: Workers::local(),
        }
    }

    /// hyper's connection builder for these settings.
    fn builder(&self) -> auto::Builder<TokioExecutor> {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        let mut http1 = builder.http1();
        http1
            .timer(TokioTimer::new())
            .header_read_timeout(self.header_timeout)
            .keep_alive(true)
            // The head may exceed our limit by a quarter and still get the 431 envelope
            // from `check_head`; past that hyper answers a bare 431 and closes.
            .max_buf_size(head_buffer(self.max_header_bytes));
        // hyper parses up to 100 fields without allocating; a higher limit costs a
        // heap array per request, so it is only set when it differs.
        if self.max_headers != 100 {
            http1.max_headers(self.max_headers);
        }
        let mut http2 = builder.http2();
        http2
            .timer(TokioTimer::new())
            .keep_alive_interval(self.h2_keepalive_interval)
            .keep_alive_timeout(self.h2_keepalive_timeout)
            .max_concurrent_streams(self.h2_max_concurrent_streams)
            .max_header_list_size(
                u32::try_from(head_buffer(self.max_header_bytes)).unwrap_or(u32::MAX),
            );
        builder
    }
}

/// hyper's read buffer for a request head of at most `limit` bytes.
fn head_buffer(limit: usize) -> usize {
    limit.saturating_add(limit / 4).max(8192)
}

/// The global cap for an open-file limit of `nofile`: all but `reserve` descriptors,
/// at most [`DERIVED_CAP_MAX`]; with fewer than `reserve` descriptors, half of them.
pub fn derived_cap(nofile: u64, reserve: usize) -> usize {
    let nofile = usize::try_from(nofile).unwrap_or(usize::MAX);
    let cap = if nofile > reserve.saturating_mul(2) {
        nofile - reserve
    } else {
        nofile / 2
    };
    cap.clamp(1, DERIVED_CAP_MAX)
}

/// One IP never holds more than half of the global cap.
fn per_ip_cap(configured: usize, global: usize) -> usize {
    configured.min((global / 2).max(1))
}

/// The soft open-file limit from `/proc/self/limits` (1024 where it cannot be read).
pub fn open_file_limit() -> u64 {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|text| parse_open_file_limit(&text))
        .unwrap_or(1024)
}

fn parse_open_file_limit(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line
        .trim_start_matches("Max open files")
        .split_whitespace()
        .next()?;
    if soft == "unlimited" {
        return Some(u64::MAX);
    }
    soft.parse().ok()
}

/// Serves `app` (the router and the layers around it) on `listener` with `settings`
/// until `shutdown` resolves, then lets open connections finish their requests for at
/// most `settings.shutdown_grace`.
pub async fn serve(
    listener: TcpListener,
    app: App,
    shutdown: impl Future<Output = ()> + Send + 'static,
    settings: ServerSettings,
    metrics: Arc<Metrics>,
) -> io::Result<()> {
    let server = Arc::new(Server::new(settings, metrics));
    let builder = Arc::new(server.settings.builder());
    // Every connection task holds a receiver; `closed()` resolves when all are gone.
    let (stop_tx, _) = watch::channel(false);
    tracing::debug!(
        max_connections = server.settings.max_connections,
        max_connections_per_ip = server.settings.max_connections_per_ip,
        "connection caps"
    );
    let _anchor = AbortOnDrop(tokio::spawn(super::workers::anchor_timers()));
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(err) if is_per_connection(&err) => continue,
            Err(err) => {
                // EMFILE, ENFILE, ENOBUFS, ENOMEM: the backlog keeps the client
                // waiting; try again shortly instead of spinning.
                tracing::warn!(%err, "accept failed; backing off");
                tokio::select! {
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                }
            }
        };
        let slot = match server.admit(peer.ip()) {
            Ok(slot) => slot,
            Err(reason) => {
                server.refuse(&tcp, reason);
                continue;
            }
        };
        // Responses are single small writes: don't let Nagle hold them back.
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(%err, "cannot set TCP_NODELAY");
        }
        let (conn_server, conn_builder, conn_app) = (server.clone(), builder.clone(), app.clone());
        let stop = stop_tx.subscribe();
        let handed = server.settings.workers.spawn(tcp, move |tcp| async move {
            let _slot = slot;
            connection(conn_server, conn_builder, conn_app, tcp, peer, stop).await;
        });
        if let Err(err) = handed {
            tracing::debug!(%err, "cannot hand a connection to a worker");
        }
    }
    drop(listener);
    let _sent = stop_tx.send(true);
    let grace = server.settings.shutdown_grace;
    if tokio::time::timeout(grace, stop_tx.closed()).await.is_err() {
        tracing::warn!(
            grace_ms = grace.as_millis() as u64,
            "in-flight requests did not finish in time; stopping"
        );
    }
    Ok(())
}

/// Aborts a background task when the scope that spawned it ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Accept errors that concern one connection only (the next accept may succeed).
fn is_per_connection(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
    )
}

/// The listener's shared state: settings, open-connection counts, metrics.
#[derive(Debug)]
struct Server {
    settings: ServerSettings,
    open: AtomicUsize,
    /// Open connections per client key; only keys with open connections are present,
    /// so the table is bounded by the global cap.
    per_ip: Mutex<HashMap<IpKey, usize>>,
    metrics: Arc<Metrics>,
    /// The 503 written to a refused connection.
    refusal: Vec<u8>,
    /// The 408 written when a request head is not complete in time.
    head_timeout: Vec<u8>,
    /// `connections_closed_total{reason="body_timeout"}`, resolved once.
    body_timeouts: Counter,
}

impl Server {
    fn new(settings: ServerSettings, metrics: Arc<Metrics>) -> Self {
        let body_timeouts = metrics
            .connections_closed
            .get_or_create(&ReasonLabels {
                reason: "body_timeout",
            })
            .clone();
        Self {
            body_timeouts,
            settings,
            open: AtomicUsize::new(0),
            per_ip: Mutex::new(HashMap::new()),
            metrics,
            refusal: raw_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many connections, please retry later",
            ),
            head_timeout: raw_response(
                StatusCode::REQUEST_TIMEOUT,
                "the request headers were not received in time",
            ),
        }
    }

    /// Takes a connection slot for `peer`, or says which cap is full.
    fn admit(self: &Arc<Self>, peer: IpAddr) -> Result<Slot, &'static str> {
        let settings = &self.settings;
        if self.open.fetch_add(1, Ordering::AcqRel) >= settings.max_connections {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return Err("global_cap");
        }
        // A trusted proxy carries many clients: only the global cap applies to it
        // (its clients are still counted per IP by the request guard).
        let key =
            (!settings.proxies.contains(peer)).then(|| IpKey::new(peer, settings.ipv6_prefix));
        if let Some(key) = key {
            let mut table = self.per_ip.lock().unwrap_or_else(PoisonError::into_inner);
            let count = table.entry(key).or_insert(0);
            if *count >= settings.max_connections_per_ip {
                drop(table);
                self.open.fetch_sub(1, Ordering::AcqRel);
                return Err("ip_cap");
            }
            *count += 1;
        }
        self.metrics.connections_open.inc();
        Ok(Slot {
            server: self.clone(),
            key,
        })
    }

    /// Answers a refused connection without reading from it, and closes it.
    fn refuse(&self, tcp: &TcpStream, reason: &'static str) {
        self.metrics
            .connections_refused
            .get_or_create(&ReasonLabels { reason })
            .inc();
        // One non-blocking write: a client that does not read gets nothing.
        let _ignored = tcp.try_write(&self.refusal);
    }

    fn closed(&self, reason: &'static str) {
        self.metrics
            .connections_closed
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }
}

/// `status` with the envelope, `Connection: close`, as raw HTTP/1.1 bytes.
fn raw_response(status: StatusCode, message: &str) -> Vec<u8> {
    let body = envelope_bytes(status, 0, message);
    let mut raw = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    )
    .into_bytes();
    raw.extend_from_slice(&body);
    raw
}

/// An admitted connection's place in the counts, given back on drop.
#[derive(Debug)]
struct Slot {
    server: Arc<Server>,
    key: Option<IpKey>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(key) = self.key {
            let mut table = self
                .server
                .per_ip
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(count) = table.get_mut(&key) {
                *count -= 1;
                if *count == 0 {
                    table.remove(&key);
                }
            }
        }
        self.server.open.fetch_sub(1, Ordering::AcqRel);
        self.server.metrics.connections_open.dec();
    }
}

/// What a connection's requests and its socket tell its watchdog.
#[derive(Debug)]
struct ConnShared {
    server: Arc<Server>,
    peer: SocketAddr,
    born: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds after `born` when the last request finished.
    last_done_ms: AtomicU64,
    /// Bytes arrived since the last response: a request is under way.
    pending: AtomicBool,
}

impl ConnShared {
    /// When the connection has been idle long enough to close, or `None` while a
    /// request is in flight.
    fn idle_deadline(&self, idle: Duration) -> Option<Instant> {
        (self.in_flight.load(Ordering::Acquire) == 0).then(|| {
            self.born + Duration::from_millis(self.last_done_ms.load(Ordering::Acquire)) + idle
        })
    }
}

/// A request in flight on its connection.
struct Active(Arc<ConnShared>);

impl Active {
    fn start(conn: &Arc<ConnShared>) -> Self {
        conn.in_flight.fetch_add(1, Ordering::AcqRel);
        Self(conn.clone())
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        let conn = &self.0;
        let done = conn.born.elapsed().as_millis() as u64;
        conn.last_done_ms.store(done, Ordering::Release);
        conn.pending.store(false, Ordering::Release);
        conn.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Serves one admitted connection until it ends, idles out or the server stops.
async fn connection(
    server: Arc<Server>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    app: App,
    tcp: TcpStream,
    peer: SocketAddr,
    mut stop: watch::Receiver<bool>,
) {
    let (read, write) = tcp.into_split();
    let write = Arc::new(write);
    let conn = Arc::new(ConnShared {
        server: server.clone(),
        peer,
        born: Instant::now(),
        in_flight: AtomicUsize::new(0),
        last_done_ms: AtomicU64::new(0),
        pending: AtomicBool::new(false),
    });
    let io = SharedTcp {
        read,
        write: write.clone(),
        conn: conn.clone(),
    };
    let service_conn = conn.clone();
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let response = handle(service_conn.clone(), app.clone(), request);
        async move { Ok::<_, Infallible>(response.await) }
    });
    let settings = &server.settings;
    let connection = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    let timer = tokio::time::sleep(settings.idle_timeout);
    tokio::pin!(timer);
    let mut closing = false;
    let mut stopping = false;
    let result = loop {
        tokio::select! {
            result = connection.as_mut() => break Some(result),
            _changed = stop.changed(), if !stopping => {
                stopping = true;
                closing = true;
                connection.as_mut().graceful_shutdown();
                timer.as_mut().reset(Instant::now() + settings.shutdown_grace);
            }
            () = timer.as_mut() => {
                if closing {
                    break None;
                }
                let now = Instant::now();
                match conn.idle_deadline(settings.idle_timeout) {
                    Some(at) if at <= now => {
                        server.closed("idle_timeout");
                        closing = true;
                        connection.as_mut().graceful_shutdown();
                        timer.as_mut().reset(now + CLOSE_GRACE);
                    }
                    Some(at) => timer.as_mut().reset(at),
                    None => timer.as_mut().reset(now + settings.idle_timeout),
                }
            }
        }
    };
    if let Some(Err(err)) = result {
        connection_error(&server, &conn, (*write).as_ref(), err.as_ref());
    }
}

/// Counts why a connection failed, and answers 408 to a request head cut by the timer.
fn connection_error(
    server: &Server,
    conn: &ConnShared,
    tcp: &TcpStream,
    err: &(dyn std::error::Error + 'static),
) {
    let Some(err) = err.downcast_ref::<hyper::Error>() else {
        tracing::debug!(%err, peer = %conn.peer, "connection ended");
        return;
    };
    if err.is_timeout() {
        // hyper's header timer also ends a kept-alive connection waiting for its next
        // request; only a request under way gets the 408 (nothing was written yet).
        if conn.pending.load(Ordering::Acquire) {
            server.closed("header_timeout");
            let _ignored = tcp.try_write(&server.head_timeout);
        } else {
            server.closed("idle_timeout");
        }
    } else if err.is_parse_too_large() {
        server.closed("header_too_large");
    } else {
        tracing::debug!(%err, peer = %conn.peer, "connection ended");
    }
}

/// One request: head limits, then the app with the peer address and a timed body.
async fn handle(conn: Arc<ConnShared>, app: App, request: Request<Incoming>) -> Response<Body> {
    let _active = Active::start(&conn);
    let settings = &conn.server.settings;
    if let Err(err) = check_head(&request, settings.max_header_bytes, settings.max_headers) {
        conn.server.closed("header_too_large");
        let mut response = err.into_response();
        if request.version() < Version::HTTP_2 {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        return response;
    }
    let (mut parts, body) = request.into_parts();
    parts.extensions.insert(ConnectInfo(conn.peer));
    let timeouts = conn.server.body_timeouts.clone();
    let body = Body::new(TimedBody::new(body, settings.body, timeouts));
    match app.oneshot(Request::from_parts(parts, body)).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

/// 431 when the request head is over `max_bytes` (request target + header names and
/// values) or holds more than `max_count` fields.
fn check_head<B>(
    request: &Request<B>,
    max_bytes: usize,
    max_count: usize,
) -> Result<(), GatewayError> {
    let headers = request.headers();
    let too_large = GatewayError::HeadersTooLarge {
        bytes: max_bytes,
        count: max_count,
    };
    if headers.len() > max_count {
        return Err(too_large);
    }
    let target = request
        .uri()
        .path_and_query()
        .map_or(0, |pq| pq.as_str().len());
    let mut size = target + request.method().as_str().len();
    for (name, value) in headers {
        // ": " and CRLF of each line.
        size += name.as_str().len() + value.len() + 4;
    }
    if size > max_bytes {
        return Err(too_large);
    }
    Ok(())
}

/// The socket as hyper sees it: the read half is hyper's alone, the write half is shared
/// with the listener, so that a 408 can still be written after hyper gave the connection
/// up; reads tell the watchdog that bytes arrived.
struct SharedTcp {
    /// tokio's own read path: a read that leaves room in the buffer marks the socket
    /// drained, so the next read waits for epoll instead of costing a `recvfrom` that
    /// finds nothing (hyper reads again after every request head).
    read: OwnedReadHalf,
    write: Arc<OwnedWriteHalf>,
    conn: Arc<ConnShared>,
}

impl AsyncRead for SharedTcp {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let read = Pin::new(&mut self.read).poll_read(cx, buf);
        if matches!(read, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.conn.pending.store(true, Ordering::Release);
        }
        read
    }
}

impl AsyncWrite for SharedTcp {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            let tcp: &TcpStream = (*self.write).as_ref();
            std::task::ready!(tcp.poll_write_ready(cx))?;
            match tcp.try_write(data) {
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                other => return Poll::Ready(other),
            }
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        loop {
            let tcp: &TcpStream = (*self.write).as_ref();
            std::task::ready!(tcp.poll_write_ready(cx))?;
            match tcp.try_write_vectored(bufs) {
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                other => return Poll::Ready(other),
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The write half sends FIN when its last handle drops, right after.
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_open_file_limit_is_read_from_proc() {
        let text = "Limit                     Soft Limit           Hard Limit           Units\n\
                    Max cpu time              unlimited            unlimited            seconds\n\
                    Max open files            1024                 1048576              files\n";
        assert_eq!(parse_open_file_limit(text), Some(1024));
        assert_eq!(
            parse_open_file_limit("Max open files  unlimited unlimited files\n"),
            Some(u64::MAX)
        );
        assert_eq!(parse_open_file_limit("nothing here"), None);
        assert!(open_file_limit() > 0);
    }

    #[test]
    fn the_global_cap_leaves_the_reserve_free() {
        assert_eq!(derived_cap(1024, 128), 896);
        assert_eq!(derived_cap(256, 128), 128);
        assert_eq!(derived_cap(200, 128), 100);
        assert_eq!(derived_cap(1, 128), 1);
        assert_eq!(derived_cap(u64::MAX, 128), DERIVED_CAP_MAX);
        assert_eq!(per_ip_cap(256, 896), 256);
        assert_eq!(per_ip_cap(256, 128), 64);
        assert_eq!(per_ip_cap(256, 1), 1);
    }

    #[test]
    fn the_head_limit_counts_target_names_and_values() {
        let request = Request::builder()
            .uri("/ping")
            .header("a", "x".repeat(100))
            .body(())
            .expect("request");
        assert!(check_head(&request, 200, 10).is_ok());
        assert!(matches!(
            check_head(&request, 100, 10),
            Err(GatewayError::HeadersTooLarge { .. })
        ));
        assert!(check_head(&request, 200, 0).is_err());
    }

    #[test]
    fn raw_answers_are_complete_http_responses() {
        let raw =
            String::from_utf8(raw_response(StatusCode::REQUEST_TIMEOUT, "late")).expect("utf-8");
        let (head, body) = raw.split_once("\r\n\r\n").expect("head and body");
        assert!(
            head.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
            "{head}"
        );
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        let json: serde_json::Value = serde_json::from_str(body).expect("json");
        assert_eq!(json["status"], 408);
    }
}
