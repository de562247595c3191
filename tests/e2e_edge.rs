//! The edge under hostile clients (issue 12): slow and stalled requests are cut at their
//! timeouts, idle HTTP/1.1 and HTTP/2 connections are closed, connection caps keep one
//! IP from starving the others (also with a low descriptor limit), oversized heads get
//! 431, invented methods do not grow `/metrics`, and a shutdown drains the requests in
//! flight.
//!
//! Timeouts are configured short (about a second); the assertions only wait for the
//! gateway to act, with generous upper bounds, never for a fixed time.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use hyper_util::rt::{TokioExecutor, TokioIo};
use sms_gateway::reference::Options;
use support::Gateway;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Upper bound for anything the gateway should do within a one-second timeout.
const PATIENCE: Duration = Duration::from_secs(30);

fn ip(text: &str) -> IpAddr {
    text.parse().expect("test address")
}

/// A connection to `to` from the loopback address `from`.
async fn connect_from(from: IpAddr, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.bind(SocketAddr::new(from, 0)).expect("bind source");
    socket.connect(to).await.expect("connect")
}

/// Everything the server sends until it closes, or panics after [`PATIENCE`].
/// One `GET /ping` on a kept-alive HTTP/1.1 connection, answered 200.
async fn ping_on(stream: &mut TcpStream) {
    stream
        .write_all(b"GET /ping HTTP/1.1\r\nHost: gateway\r\n\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 1024];
    let n = stream.read(&mut buf).await.expect("response");
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
}

async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return got,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => panic!(
                "the gateway kept the connection open; got {:?}",
                String::from_utf8_lossy(&got)
            ),
        }
    }
}

/// The status and JSON body of a raw HTTP/1.1 response.
fn parse(raw: &[u8]) -> (u16, serde_json::Value) {
    let text = String::from_utf8_lossy(raw);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"));
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, serde_json::from_str(body).unwrap_or_default())
}

fn metrics_text(gw: &Gateway) -> String {
    gw.gateway.state.metrics.render()
}

fn closed_count(gw: &Gateway, reason: &str) -> u64 {
    let needle = format!("sms_gateway_connections_closed_total{{reason=\"{reason}\"}} ");
    metrics_text(gw)
        .lines()
        .find_map(|line| line.strip_prefix(&needle)?.parse().ok())
        .unwrap_or(0)
}

/// Writes `first`, then `next(n)` every `interval`, until the gateway closes the
/// connection (panics after [`PATIENCE`]); returns what the gateway answered.
async fn send_until_cut(
    stream: TcpStream,
    first: &'static [u8],
    interval: Duration,
    next: impl Fn(usize) -> Vec<u8> + Send + 'static,
) -> Vec<u8> {
    let (mut read, mut write) = stream.into_split();
    let writer = tokio::spawn(async move {
        if write.write_all(first).await.is_err() {
            return;
        }
        for n in 0.. {
            if write.write_all(&next(n)).await.is_err() {
                return;
            }
            tokio::time::sleep(interval).await;
        }
    });
    let mut got = Vec::new();
    // A reset after the answer (the writer kept sending) still leaves the answer read.
    tokio::time::timeout(PATIENCE, read.read_to_end(&mut got))
        .await
        .expect("the gateway cut the client")
        .ok();
    writer.abort();
    got
}

async fn short_timeouts() -> Gateway {
    Gateway::start_with(Default::default(), |config| {
        config.http.header_timeout = Duration::from_secs(1);
        config.http.body_read_timeout = Duration::from_secs(1);
        config.http.body_timeout = Duration::from_secs(2);
        config.http.idle_timeout = Duration::from_secs(1);
    })
    .await
}

#[tokio::test]
async fn a_slow_request_head_gets_408_and_the_connection_closes() {
    let gw = short_timeouts().await;
    // Half a head, then nothing.
    let mut stalled = connect_from(ip("127.0.0.1"), gw.address).await;
    let started = Instant::now();
    stalled
        .write_all(b"GET /ping HTTP/1.1\r\nHost: gateway\r\nX-Slow: ")
        .await
        .expect("write");
    let (status, body) = parse(&read_until_closed(&mut stalled).await);
    assert_eq!(status, 408);
    support::assert_envelope(408, &body);
    assert!(started.elapsed() >= Duration::from_millis(900));

    // A slowloris: one header line after another, never the end of the head.
    let mut trickle = connect_from(ip("127.0.0.1"), gw.address).await;
    trickle
        .write_all(b"GET /ping HTTP/1.1\r\nHost: gateway\r\n")
        .await
        .expect("write");
    let got = send_until_cut(trickle, b"", Duration::from_millis(50), |line| {
        format!("X-Line-{line}: x\r\n").into_bytes()
    })
    .await;
    assert_eq!(parse(&got).0, 408);
    assert!(closed_count(&gw, "header_timeout") >= 2);
}

#[tokio::test]
async fn a_stalled_body_gets_408() {
    let gw = short_timeouts().await;
    let mut stream = connect_from(ip("127.0.0.1"), gw.address).await;
    stream
        .write_all(
            b"POST /v1/login/student HTTP/1.1\r\nHost: gateway\r\n\
              Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"student",
        )
        .await
        .expect("write");
    let (status, body) = parse(&read_until_closed(&mut stream).await);
    assert_eq!(status, 408, "{body}");
    support::assert_envelope(408, &body);
    assert_eq!(closed_count(&gw, "body_timeout"), 1);
}

#[tokio::test]
async fn an_endless_chunked_body_gets_408() {
    let gw = Gateway::start_with(Default::default(), |config| {
        // Chunks keep coming faster than the gap limit: only the total limit cuts.
        config.http.body_read_timeout = Duration::from_secs(30);
        config.http.body_timeout = Duration::from_secs(1);
    })
    .await;
    let stream = connect_from(ip("127.0.0.1"), gw.address).await;
    let head = b"POST /v1/login/student HTTP/1.1\r\nHost: gateway\r\n\
                 Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
    let got = send_until_cut(stream, head, Duration::from_millis(5), |_| {
        b"1\r\n \r\n".to_vec()
    })
    .await;
    let (status, body) = parse(&got);
    assert_eq!(status, 408, "{body}");
    support::assert_envelope(408, &body);
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    let gw = Gateway::start_with(Default::default(), |config| {
        config.http.idle_timeout = Duration::from_secs(1);
    })
    .await;
    let mut stream = connect_from(ip("127.0.0.1"), gw.address).await;
    ping_on(&mut stream).await;
    let started = Instant::now();
    // Kept alive, then closed without a further byte.
    let rest = read_until_closed(&mut stream).await;
    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert_eq!(closed_count(&gw, "idle_timeout"), 1);
}

#[tokio::test]
async fn an_idle_http2_connection_is_closed() {
    let gw = Gateway::start_with(Default::default(), |config| {
        config.http.idle_timeout = Duration::from_secs(1);
    })
    .await;
    let tcp = connect_from(ip("127.0.0.1"), gw.address).await;
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .expect("h2c handshake");
    let driver = tokio::spawn(connection);
    let request = http::Request::get(format!("http://{}/ping", gw.address))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .expect("request");
    let response = sender.send_request(request).await.expect("h2 response");
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), http::Version::HTTP_2);
    drop(response);
    // The gateway sends GOAWAY and closes: the client connection ends.
    tokio::time::timeout(PATIENCE, driver)
        .await
        .expect("the idle h2 connection is closed")
        .expect("driver task")
        .ok();
    assert_eq!(closed_count(&gw, "idle_timeout"), 1);
}

#[tokio::test]
async fn a_client_at_its_ip_cap_does_not_stop_another_ip() {
    let gw = Gateway::start_with(Default::default(), |config| {
        config.http.max_connections_per_ip = 4;
    })
    .await;
    let greedy = ip("127.0.0.2");
    // Four kept-alive connections, each proven admitted by an answer.
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut stream = connect_from(greedy, gw.address).await;
        ping_on(&mut stream).await;
        held.push(stream);
    }
    // The fifth is refused at once: a 503 envelope (or a reset), then closed.
    let mut fifth = connect_from(greedy, gw.address).await;
    let _ignored = fifth
        .write_all(b"GET /ping HTTP/1.1\r\nHost: gateway\r\n\r\n")
        .await;
    let got = read_until_closed(&mut fifth).await;
    if !got.is_empty() {
        let (status, body) = parse(&got);
        assert_eq!(status, 503);
        support::assert_envelope(503, &body);
    }
    // Another address is served, and the greedy one keeps its connections.
    let client = reqwest::Client::builder()
        .local_address(ip("127.0.0.1"))
        .build()
        .expect("client");
    let (status, _) = gw.send(client.get(gw.url("/ping"))).await;
    assert_eq!(status, 200);
    for stream in &mut held {
        ping_on(stream).await;
    }
    let text = metrics_text(&gw);
    assert!(
        text.contains(r#"sms_gateway_connections_refused_total{reason="ip_cap"} 1"#),
        "{text}"
    );
}

#[tokio::test]
async fn oversized_request_heads_get_431() {
    let gw = Gateway::start().await;
    let send = |request: Vec<u8>| async move {
        let mut stream = connect_from(ip("127.0.0.1"), gw.address).await;
        let _ignored = stream.write_all(&request).await;
        read_until_closed(&mut stream).await
    };
    // 70 KiB of headers (limit 64 KiB): the envelope.
    let big = format!(
        "GET /ping HTTP/1.1\r\nHost: gateway\r\nX-Big: {}\r\n\r\n",
        "x".repeat(70 * 1024)
    );
    let (status, body) = parse(&send(big.into_bytes()).await);
    assert_eq!(status, 431);
    support::assert_envelope(431, &body);
    // More fields than allowed.
    let mut many = String::from("GET /ping HTTP/1.1\r\nHost: gateway\r\n");
    for n in 0..150 {
        many.push_str(&format!("X-F{n}: y\r\n"));
    }
    many.push_str("\r\n");
    assert_eq!(parse(&send(many.into_bytes()).await).0, 431);
    // A 400 KB header is cut (431, or the close arrives while we still write).
    let huge = format!(
        "GET /ping HTTP/1.1\r\nHost: gateway\r\nX-Huge: {}\r\n\r\n",
        "x".repeat(400 * 1000)
    );
    let got = send(huge.into_bytes()).await;
    assert!(got.is_empty() || parse(&got).0 == 431);
    assert!(closed_count(&gw, "header_too_large") >= 2);
}

#[tokio::test]
async fn invented_methods_leave_metrics_bounded() {
    let gw = Gateway::start().await;
    let before = metrics_text(&gw).len();
    for n in 0..200 {
        let method = reqwest::Method::from_bytes(format!("INVENTED{n:0>40}").as_bytes())
            .expect("token method");
        let (status, _) = gw
            .send(
                gw.client
                    .request(method, gw.url(&format!("/v1/no/such/{n}"))),
            )
            .await;
        assert!((400..500).contains(&status), "{status}");
    }
    let text = metrics_text(&gw);
    assert!(
        !text.contains("INVENTED"),
        "a client-chosen method became a label"
    );
    assert!(text.contains(r#"method="_OTHER""#), "{text}");
    assert!(!text.contains("/v1/no/such"), "a raw path became a label");
    // One new series per (label set), not per request.
    assert!(
        text.len() < before + 8 * 1024,
        "{} -> {}",
        before,
        text.len()
    );
}

/// The gateway binary with 256 descriptors: one IP holding 300 half-sent requests
/// cannot take the others' `/ping` away, nor the process's descriptors.
#[test]
fn a_low_descriptor_limit_still_serves_others() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let binary = env!("CARGO_BIN_EXE_sms-gateway");
    let mut child = std::process::Command::new("prlimit")
        .args(["--nofile=256:256", binary, "demo", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("prlimit (util-linux) runs the demo");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
    let listening = lines
        .by_ref()
        .map_while(Result::ok)
        .find(|line| line.starts_with("listening on http://"));
    std::thread::spawn(move || lines.for_each(drop));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let outcome = runtime.block_on(async {
        listening.ok_or("the demo did not start")?;
        let gateway: SocketAddr = ([127, 0, 0, 1], port).into();
        let mut held = Vec::new();
        for _ in 0..300 {
            // The kernel completes the handshake from its backlog: every connect
            // succeeds; the gateway admits its cap and closes the rest.
            let Ok(mut stream) =
                tokio::time::timeout(PATIENCE, connect_from(ip("127.0.0.2"), gateway)).await
            else {
                return Err("connect timed out");
            };
            let _ignored = stream
                .write_all(b"POST /v1/login/student HTTP/1.1\r\nHost: gateway\r\nContent-")
                .await;
            held.push(stream);
        }
        let client = reqwest::Client::builder()
            .local_address(ip("127.0.0.1"))
            .timeout(PATIENCE)
            .build()
            .map_err(|_| "client")?;
        for _ in 0..5 {
            let response = client
                .get(format!("http://{gateway}/ping"))
                .send()
                .await
                .map_err(|_| "/ping failed while one IP held many connections")?;
            if response.status() != 200 {
                return Err("/ping was not answered 200");
            }
            // A fresh connection each time.
            drop(response);
        }
        // The connections over the per-IP cap (derived: half of 256 − 128) were closed
        // at accept, before /ping's connection was accepted behind them.
        let mut refused = 0;
        for stream in &held {
            let mut buf = [0u8; 512];
            match stream.try_read(&mut buf) {
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {}
                Ok(n) if n > 0 && !buf.starts_with(b"HTTP/1.1 503") => {}
                _ => refused += 1,
            }
        }
        if refused < 200 {
            return Err("the gateway admitted more than its caps");
        }
        drop(held);
        Ok(())
    });
    let _ignored = child.kill();
    let _ignored = child.wait();
    outcome.expect("the gateway kept serving");
}

#[tokio::test]
async fn shutdown_lets_a_request_in_flight_finish_and_takes_no_new_connection() {
    // Every backend call takes 300 ms: the read is still at the backend when the
    // shutdown starts.
    let options = Options {
        delay: Duration::from_millis(300),
    };
    let mut gw = Gateway::start_with(options, |_| {}).await;
    let request = gw
        .client
        .get(gw.url("/v1/outings/uuid/outing-000000000002"))
        .bearer_auth(gw.token("student-000000000001"));
    let in_flight = tokio::spawn(request.send());
    eventually("the read reaches the backend", || outing_in_flight(&gw)).await;
    let served = gw.begin_shutdown();
    let response = tokio::time::timeout(PATIENCE, in_flight)
        .await
        .expect("answered within the grace period")
        .expect("task")
        .expect("the request in flight is answered, not cut");
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(body["outing_uuid"], "outing-000000000002");
    listener_drains(served).await;
    assert!(
        TcpStream::connect(gw.address).await.is_err(),
        "the listener is closed after the shutdown"
    );
}

type Http1Sender = hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>>;

/// A kept-alive HTTP/1.1 client connection to the gateway.
async fn http1_client(gw: &Gateway) -> Http1Sender {
    let tcp = TcpStream::connect(gw.address).await.expect("connect");
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .expect("http1 handshake");
    tokio::spawn(connection);
    sender
}

/// `GET url` with `token` on `sender`: the status and the JSON body.
async fn get_json(sender: &mut Http1Sender, url: &str, token: &str) -> (u16, serde_json::Value) {
    use http_body_util::BodyExt as _;
    let request = http::Request::get(url)
        .header("authorization", format!("Bearer {token}"))
        .body(http_body_util::Empty::new())
        .expect("request");
    let response = sender.send_request(request).await.expect("response");
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, serde_json::from_slice(&body).expect("json body"))
}

/// Whether one outing read is at the backend.
fn outing_in_flight(gw: &Gateway) -> bool {
    metrics_text(gw)
        .lines()
        .any(|line| line == "sms_gateway_requests_in_flight{service=\"outing\"} 1")
}

/// The public listener's task ends (every connection drained) within [`PATIENCE`].
async fn listener_drains(served: tokio::task::JoinHandle<std::io::Result<()>>) {
    tokio::time::timeout(PATIENCE, served)
        .await
        .expect("the listener task ends once drained")
        .expect("task")
        .expect("served");
}

/// Waits until `done` holds, for at most [`PATIENCE`].
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < PATIENCE, "never: {what}");
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn thread_per_core_workers_own_their_connections_and_drain_at_shutdown() {
    // Every backend call takes 100 ms, so a read is still at the backend when the
    // shutdown below starts.
    let options = Options {
        delay: Duration::from_millis(100),
    };
    let mut gw = Gateway::start_with(options, |config| {
        config.runtime.flavor = sms_gateway::config::RuntimeFlavor::ThreadPerCore;
        config.runtime.worker_threads = std::num::NonZeroUsize::new(2);
        // Every read goes to the backend.
        config.cache.enabled = false;
    })
    .await;
    let url = gw.url("/v1/outings/uuid/outing-000000000002");
    let token = gw.token("student-000000000001");
    // Four kept-alive connections, opened one after the other: each goes to the worker
    // with the fewest, so both workers serve two.
    let mut senders = Vec::new();
    for _ in 0..4 {
        let mut sender = http1_client(&gw).await;
        let (status, body) = get_json(&mut sender, &url, &token).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["outing_uuid"], "outing-000000000002");
        senders.push(sender);
    }
    assert_eq!(gw.workers.open_connections(), vec![2, 2]);
    // Each worker called the outing instance over a connection of its own lane.
    let outing = gw
        .gateway
        .state
        .upstreams
        .pool(sms_gateway::upstream::Service::Outing)
        .snapshot();
    assert_eq!(outing.nodes.len(), 1);
    assert_eq!(outing.nodes[0].connection.connected_lanes(), 2);

    // A read in flight on the second worker is answered after the shutdown began; then
    // every connection is let go and the listener task ends.
    let mut second = senders.remove(1);
    let in_flight = tokio::spawn(async move { get_json(&mut second, &url, &token).await });
    eventually("the read reaches the backend", || outing_in_flight(&gw)).await;
    let served = gw.begin_shutdown();
    let (status, body) = tokio::time::timeout(PATIENCE, in_flight)
        .await
        .expect("answered within the grace period")
        .expect("task");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outing_uuid"], "outing-000000000002");
    listener_drains(served).await;
    eventually("every worker let its connections go", || {
        gw.workers.open_connections() == [0, 0]
    })
    .await;
}
