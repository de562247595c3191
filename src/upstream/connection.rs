//! One instance's HTTP/2 connection and the unary gRPC exchange over it, on `h2`
//! directly: the request task opens the stream, writes the one message and reads the
//! reply itself. tonic's `Channel` puts a `tower::Buffer` worker task (and hyper's
//! per-request tasks) between the caller and the connection; every call then woke
//! three or four tasks instead of the connection's one.
//!
//! The connection is made on first use within the connect timeout, shared by every call
//! to the instance, kept alive by HTTP/2 pings, and made anew by the next call after it
//! failed or closed. Statuses come from `grpc-status`/`grpc-message` ([`status_of`]).

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use h2::client::SendRequest;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Uri};
use tokio::net::TcpStream;
use tonic::{Code, Status};

use crate::http::workers::current_lane;

/// Longest reply accepted (tonic's default decoding limit).
const MAX_REPLY: usize = 4 * 1024 * 1024;
/// HTTP/2 windows and keep-alive as tonic's channel had them (hyper's defaults plus the
/// gateway's 30 s ping).
const STREAM_WINDOW: u32 = 2 * 1024 * 1024;
const CONNECTION_WINDOW: u32 = 5 * 1024 * 1024;
const PING_INTERVAL: Duration = Duration::from_secs(30);
const PING_TIMEOUT: Duration = Duration::from_secs(20);

static GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");
static TE: HeaderName = HeaderName::from_static("te");
static CONTENT_TYPE_GRPC: HeaderValue = HeaderValue::from_static("application/grpc");
static TRAILERS: HeaderValue = HeaderValue::from_static("trailers");
static USER_AGENT: HeaderValue =
    HeaderValue::from_static(concat!("sms-gateway/", env!("CARGO_PKG_VERSION")));

/// Why a call failed.
#[derive(Debug)]
pub enum CallError {
    /// No connection could be made (or the connection was gone before the request was
    /// written): nothing reached the instance.
    Connect(String),
    /// The instance answered with a non-OK status, or the exchange broke after the
    /// request was handed to the connection.
    Status(Status),
}

/// How an instance's connections are made.
#[derive(Debug, Clone, Copy)]
pub struct ConnectSettings {
    /// Connect and handshake within this.
    pub timeout: Duration,
    /// One connection per lane (thread-per-core worker), at least one.
    pub lanes: usize,
}

/// A live connection: the handle to open streams, whether its task has ended, and
/// whether a call has put the names of per-call metadata into its HPACK table.
struct Live {
    send: SendRequest<Bytes>,
    closed: Arc<AtomicBool>,
    names_indexed: AtomicBool,
}

/// The HTTP/2 connection of one instance, made lazily and again after a failure; one
/// per lane (thread-per-core worker), each driven by the worker that uses it.
pub struct Connection {
    address: String,
    authority: Authority,
    connect_timeout: Duration,
    lanes: Box<[Lane]>,
}

/// One lane's connection.
#[derive(Default)]
struct Lane {
    live: ArcSwapOption<Live>,
    /// Held while connecting, so concurrent first calls make one connection.
    connecting: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("address", &self.address)
            .field("connected_lanes", &self.connected_lanes())
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// A connection to `address` (`host:port`, the authority of the calls) per lane
    /// (at least one), each made on first use.
    pub fn new(address: String, authority: Authority, settings: ConnectSettings) -> Self {
        Self {
            address,
            authority,
            connect_timeout: settings.timeout,
            lanes: (0..settings.lanes.max(1))
                .map(|_| Lane::default())
                .collect(),
        }
    }

    /// How many lanes hold a live connection.
    pub fn connected_lanes(&self) -> usize {
        self.lanes
            .iter()
            .filter(|lane| lane.current().is_some())
            .count()
    }

    /// The calling worker's lane.
    fn lane(&self) -> &Lane {
        &self.lanes[current_lane() % self.lanes.len()]
    }

    /// Sends `body` (a message framed by [`encode`]) to `path` and decodes the reply;
    /// `timeout` goes to the server as `grpc-timeout` (the caller enforces it as well).
    ///
    /// `metadata` is added as is. Values marked sensitive are per-call values (ids, trace
    /// context), not secrets: HPACK sends them as never-indexed literals, except on a
    /// connection's first call, which inserts them into the connection's table. h2 never
    /// indexes a sensitive header, but names one whose name the table holds by its
    /// index, so every later call sends only their values (a Huffman coding and a few
    /// bytes less per name).
    pub async fn unary<Rep>(
        &self,
        path: &PathAndQuery,
        body: Bytes,
        metadata: HeaderMap,
        timeout: Duration,
    ) -> Result<Rep, CallError>
    where
        Rep: prost::Message + Default,
    {
        let mut request = self.request(path, metadata, timeout)?;
        let (mut send, live) = self.ready().await?;
        if live.first_call() {
            request
                .headers_mut()
                .values_mut()
                .for_each(|value| value.set_sensitive(false));
        }
        drop(live);
        let (response, mut stream) = send
            .send_request(request, false)
            // The connection closed between `ready` and now: nothing was written.
            .map_err(|err| CallError::Connect(err.to_string()))?;
        stream
            .send_data(body, true)
            .map_err(|err| CallError::Status(h2_status(&err)))?;
        let response = response
            .await
            .map_err(|err| CallError::Status(h2_status(&err)))?;
        let reply = read_reply(response).await.map_err(CallError::Status)?;
        Rep::decode(reply).map_err(|err| {
            CallError::Status(Status::internal(format!("invalid reply message: {err}")))
        })
    }

    fn request(
        &self,
        path: &PathAndQuery,
        metadata: HeaderMap,
        timeout: Duration,
    ) -> Result<Request<()>, CallError> {
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(Scheme::HTTP);
        parts.authority = Some(self.authority.clone());
        parts.path_and_query = Some(path.clone());
        let uri = Uri::from_parts(parts).map_err(|err| CallError::Connect(err.to_string()))?;
        let mut request = Request::new(());
        *request.method_mut() = Method::POST;
        *request.uri_mut() = uri;
        let headers = request.headers_mut();
        *headers = metadata;
        headers.insert(http::header::CONTENT_TYPE, CONTENT_TYPE_GRPC.clone());
        headers.insert(TE.clone(), TRAILERS.clone());
        headers.insert(http::header::USER_AGENT, USER_AGENT.clone());
        headers.insert(GRPC_TIMEOUT.clone(), grpc_timeout(timeout));
        Ok(request)
    }

    /// A handle that may open a stream now, and its connection: the live one, else a
    /// new one.
    async fn ready(&self) -> Result<(SendRequest<Bytes>, Arc<Live>), CallError> {
        let live = match self.lane().current() {
            Some(live) => live,
            None => self.connect().await?,
        };
        match live.send.clone().ready().await {
            Ok(ready) => Ok((ready, live)),
            Err(err) => {
                // A connection that closed while idle: one fresh attempt.
                live.closed.store(true, Ordering::Release);
                tracing::debug!(address = %self.address, error = %err, "connection closed; reconnecting");
                let fresh = self.connect().await?;
                let ready = fresh
                    .send
                    .clone()
                    .ready()
                    .await
                    .map_err(|err| CallError::Connect(err.to_string()))?;
                Ok((ready, fresh))
            }
        }
    }

    /// Makes the connection (one at a time; a caller that waited uses the one made).
    async fn connect(&self) -> Result<Arc<Live>, CallError> {
        let lane = self.lane();
        let _one = lane.connecting.lock().await;
        if let Some(live) = lane.current() {
            return Ok(live);
        }
        let handshake = async {
            let tcp = TcpStream::connect(&self.address).await?;
            // Requests and replies are single small writes: no Nagle delay.
            tcp.set_nodelay(true)?;
            h2::client::Builder::new()
                .initial_window_size(STREAM_WINDOW)
                .initial_connection_window_size(CONNECTION_WINDOW)
                .enable_push(false)
                .handshake::<_, Bytes>(tcp)
                .await
                .map_err(std::io::Error::other)
        };
        let (send, connection) = match tokio::time::timeout(self.connect_timeout, handshake).await {
            Ok(Ok(made)) => made,
            Ok(Err(err)) => return Err(CallError::Connect(err.to_string())),
            Err(_) => {
                return Err(CallError::Connect(format!(
                    "no connection within {:?}",
                    self.connect_timeout
                )));
            }
        };
        let closed = Arc::new(AtomicBool::new(false));
        tokio::spawn(drive(connection, closed.clone(), self.address.clone()));
        let live = Arc::new(Live {
            send,
            closed,
            names_indexed: AtomicBool::new(false),
        });
        lane.live.store(Some(live.clone()));
        Ok(live)
    }
}

impl Live {
    /// True for one call only: the first to ask.
    fn first_call(&self) -> bool {
        !self.names_indexed.load(Ordering::Relaxed)
            && !self.names_indexed.swap(true, Ordering::Relaxed)
    }
}

impl Lane {
    /// The live connection, if it is still running.
    fn current(&self) -> Option<Arc<Live>> {
        self.live
            .load_full()
            .filter(|live| !live.closed.load(Ordering::Acquire))
    }
}

/// Runs the connection until it ends or stops answering pings; then marks it closed.
async fn drive(
    mut connection: h2::client::Connection<TcpStream, Bytes>,
    closed: Arc<AtomicBool>,
    address: String,
) {
    let pings = connection.ping_pong();
    let keep_alive = async move {
        let Some(mut pings) = pings else {
            return std::future::pending().await;
        };
        loop {
            tokio::time::sleep(PING_INTERVAL).await;
            match tokio::time::timeout(PING_TIMEOUT, pings.ping(h2::Ping::opaque())).await {
                Ok(Ok(_pong)) => {}
                Ok(Err(err)) => break err.to_string(),
                Err(_) => break format!("no ping answer within {PING_TIMEOUT:?}"),
            }
        }
    };
    let reason = tokio::select! {
        result = &mut connection => result.err().map(|err| err.to_string()),
        reason = keep_alive => Some(reason),
    };
    closed.store(true, Ordering::Release);
    if let Some(reason) = reason {
        tracing::debug!(%address, %reason, "upstream connection ended");
    }
}

/// The length-prefixed message (no compression): encoded once per call, so a retried
/// read sends the same bytes again instead of a copy of the message.
pub fn encode(message: &impl prost::Message) -> Bytes {
    let len = message.encoded_len();
    let mut buffer = BytesMut::with_capacity(5 + len);
    buffer.put_u8(0);
    // Requests are bound by the HTTP body limit, far below 4 GiB.
    buffer.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
    // The buffer has exactly the room the message needs.
    let _fits = message.encode(&mut buffer);
    buffer.freeze()
}

/// Reads the reply's one message and its status (trailers, or headers of a
/// trailers-only answer).
async fn read_reply(response: http::Response<h2::RecvStream>) -> Result<Bytes, Status> {
    let (head, mut body) = response.into_parts();
    if let Some(status) = status_of(&head.headers) {
        return Err(status
            .err()
            .unwrap_or_else(|| Status::internal("the reply has no message")));
    }
    if head.status != StatusCode::OK {
        return Err(http_status(head.status));
    }
    let mut first: Option<Bytes> = None;
    let mut more = BytesMut::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(|err| h2_status(&err))?;
        let _released = body.flow_control().release_capacity(chunk.len());
        if first.as_ref().map_or(0, Bytes::len) + more.len() + chunk.len() > MAX_REPLY + 5 {
            return Err(Status::resource_exhausted("the reply is larger than 4 MiB"));
        }
        match &first {
            None => first = Some(chunk),
            Some(held) => {
                if more.is_empty() {
                    more.extend_from_slice(held);
                }
                more.extend_from_slice(&chunk);
            }
        }
    }
    let trailers = body.trailers().await.map_err(|err| h2_status(&err))?;
    match trailers.as_ref().and_then(status_of) {
        Some(Ok(())) => {}
        Some(Err(status)) => return Err(status),
        None => return Err(Status::internal("the reply has no grpc-status")),
    }
    let data = if more.is_empty() {
        first.unwrap_or_default()
    } else {
        more.freeze()
    };
    message_of(data)
}

static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
static GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");

/// The status a header block carries, `None` without `grpc-status`; OK is `Ok(())`, as
/// a tonic `Status` is a heap allocation. Otherwise the code as tonic reads it (anything
/// but 0–16 is UNKNOWN), `grpc-message` percent-decoded, as text with replacement
/// characters when it is no UTF-8 (tonic turns such a status into UNKNOWN; here the
/// backend's code stands). Details (`grpc-status-details-bin`) are not read: the gateway
/// never uses them, and tonic's reader panics on a value that is no base64, which a
/// backend must not be able to cause.
fn status_of(headers: &HeaderMap) -> Option<Result<(), Status>> {
    let code = Code::from_bytes(headers.get(&GRPC_STATUS)?.as_bytes());
    if code == Code::Ok {
        return Some(Ok(()));
    }
    let message = headers
        .get(&GRPC_MESSAGE)
        .map_or_else(String::new, |value| {
            percent_encoding::percent_decode(value.as_bytes())
                .decode_utf8_lossy()
                .into_owned()
        });
    Some(Err(Status::new(code, message)))
}

/// The message of a length-prefixed frame.
fn message_of(mut data: Bytes) -> Result<Bytes, Status> {
    if data.len() < 5 {
        return Err(Status::internal("the reply has no message"));
    }
    if data[0] != 0 {
        return Err(Status::internal("compressed replies are not accepted"));
    }
    data.advance(1);
    let len = data.get_u32() as usize;
    if data.len() != len {
        return Err(Status::internal(format!(
            "the reply frame says {len} bytes but carries {}",
            data.len()
        )));
    }
    Ok(data)
}

/// The gRPC code of an HTTP status without `grpc-status` (gRPC's mapping, as tonic).
fn http_status(status: StatusCode) -> Status {
    let code = match status {
        StatusCode::BAD_REQUEST => Code::Internal,
        StatusCode::UNAUTHORIZED => Code::Unauthenticated,
        StatusCode::FORBIDDEN => Code::PermissionDenied,
        StatusCode::NOT_FOUND => Code::Unimplemented,
        StatusCode::TOO_MANY_REQUESTS
        | StatusCode::BAD_GATEWAY
        | StatusCode::SERVICE_UNAVAILABLE
        | StatusCode::GATEWAY_TIMEOUT => Code::Unavailable,
        _ => Code::Unknown,
    };
    Status::new(code, format!("HTTP status {status} without grpc-status"))
}

/// An HTTP/2 failure of a call as a status: resets by their reason (gRPC's mapping),
/// a broken or closing connection as UNAVAILABLE.
fn h2_status(err: &h2::Error) -> Status {
    let code = match err.reason() {
        _ if err.is_io() || err.is_go_away() => Code::Unavailable,
        Some(h2::Reason::REFUSED_STREAM) => Code::Unavailable,
        Some(h2::Reason::CANCEL) => Code::Cancelled,
        Some(h2::Reason::ENHANCE_YOUR_CALM) => Code::ResourceExhausted,
        Some(h2::Reason::INADEQUATE_SECURITY) => Code::PermissionDenied,
        Some(_) => Code::Internal,
        None => Code::Unknown,
    };
    Status::new(code, format!("h2: {err}"))
}

/// `grpc-timeout` in milliseconds (at most 8 digits, as the protocol allows). Nearly
/// every call carries one of a few configured deadlines, so each thread keeps the last
/// value it made: a repeat is a reference count, not a new formatted allocation.
fn grpc_timeout(timeout: Duration) -> HeaderValue {
    thread_local! {
        static LAST: RefCell<Option<(u64, HeaderValue)>> = const { RefCell::new(None) };
    }
    // At most 8 digits: fits u64, and with the unit 9 bytes.
    let millis = timeout.as_millis().clamp(1, 99_999_999) as u64;
    LAST.with_borrow_mut(|last| match last {
        Some((kept, value)) if *kept == millis => value.clone(),
        _ => {
            let mut digits = itoa::Buffer::new();
            let digits = digits.format(millis).as_bytes();
            let mut text = [b'm'; 9];
            text[..digits.len()].copy_from_slice(digits);
            let value =
                HeaderValue::from_maybe_shared(Bytes::from_owner(text).slice(..=digits.len()))
                    .unwrap_or_else(|_| HeaderValue::from_static("1S"));
            *last = Some((millis, value.clone()));
            value
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_bad_ones_are_refused() {
        let message = "hello".to_owned();
        let frame = encode(&message);
        assert_eq!(&frame[..5], &[0, 0, 0, 0, 7]);
        let body = message_of(frame).expect("frame");
        assert_eq!(
            <String as prost::Message>::decode(body).expect("decode"),
            "hello"
        );
        for bad in [&b""[..], &[0, 0, 0], &[1, 0, 0, 0, 0], &[0, 0, 0, 0, 9, 1]] {
            let status = message_of(Bytes::copy_from_slice(bad)).expect_err("bad");
            assert_eq!(status.code(), Code::Internal);
        }
    }

    #[test]
    fn statuses_are_read_from_grpc_status_and_message() {
        let block = |pairs: &[(&'static str, &'static [u8])]| {
            let mut headers = HeaderMap::new();
            for (name, value) in pairs {
                headers.insert(*name, HeaderValue::from_bytes(value).expect("value"));
            }
            headers
        };
        let failure = |pairs: &[(&'static str, &'static [u8])]| {
            status_of(&block(pairs))
                .expect("status")
                .expect_err("a failure")
        };
        assert!(status_of(&block(&[("content-type", b"application/grpc")])).is_none());
        assert!(matches!(
            status_of(&block(&[("grpc-status", b"0")])),
            Some(Ok(()))
        ));
        let failed = failure(&[
            ("grpc-status", b"14"),
            ("grpc-message", b"no%20backend%3A%20%E2%9C%93"),
            // Not base64: tonic's own reader panics here.
            ("grpc-status-details-bin", b"%%%"),
        ]);
        assert_eq!(
            (failed.code(), failed.message()),
            (Code::Unavailable, "no backend: \u{2713}")
        );
        for odd in [&b"17"[..], b"-1", b"ok", b""] {
            assert_eq!(
                failure(&[("grpc-status", odd)]).code(),
                Code::Unknown,
                "{odd:?}"
            );
        }
        let lossy = failure(&[("grpc-status", b"2"), ("grpc-message", b"%FFx")]);
        assert_eq!(lossy.message(), "\u{fffd}x");
    }

    #[test]
    fn timeouts_and_statuses_follow_the_protocol() {
        assert_eq!(grpc_timeout(Duration::from_secs(3)), "3000m");
        assert_eq!(grpc_timeout(Duration::from_secs(3)), "3000m");
        assert_eq!(grpc_timeout(Duration::from_millis(2999)), "2999m");
        assert_eq!(grpc_timeout(Duration::ZERO), "1m");
        assert_eq!(grpc_timeout(Duration::from_secs(10_000_000)), "99999999m");
        assert_eq!(
            http_status(StatusCode::SERVICE_UNAVAILABLE).code(),
            Code::Unavailable
        );
        assert_eq!(
            http_status(StatusCode::NOT_FOUND).code(),
            Code::Unimplemented
        );
    }

    /// The HPACK representations of a header block (RFC 7541 §6), strings skipped
    /// undecoded: `(kind, name index)` per field, kind `'i'` indexed, `'+'` literal
    /// with incremental indexing, `'n'` never indexed, `'w'` without indexing.
    fn representations(mut block: &[u8]) -> Vec<(char, usize)> {
        fn int(block: &mut &[u8], bits: u32) -> usize {
            let mask = (1usize << bits) - 1;
            let mut value = usize::from(block[0]) & mask;
            *block = &block[1..];
            if value == mask {
                let mut shift = 0;
                loop {
                    let byte = block[0];
                    *block = &block[1..];
                    value += usize::from(byte & 0x7f) << shift;
                    shift += 7;
                    if byte & 0x80 == 0 {
                        break;
                    }
                }
            }
            value
        }
        fn skip_string(block: &mut &[u8]) {
            let len = int(block, 7);
            *block = &block[len..];
        }
        let mut fields = Vec::new();
        while !block.is_empty() {
            let first = block[0];
            let (kind, bits) = match first {
                0x80.. => ('i', 7),
                0x40..=0x7f => ('+', 6),
                0x20..=0x3f => {
                    int(&mut block, 5);
                    continue;
                }
                0x10..=0x1f => ('n', 4),
                _ => ('w', 4),
            };
            let index = int(&mut block, bits);
            if kind != 'i' {
                if index == 0 {
                    skip_string(&mut block);
                }
                skip_string(&mut block);
            }
            fields.push((kind, index));
        }
        fields
    }

    /// The header blocks of the HEADERS frames a client wrote (after the preface).
    fn header_blocks(mut wire: &[u8]) -> Vec<Vec<u8>> {
        wire = &wire[24..];
        let mut blocks = Vec::new();
        while wire.len() >= 9 {
            let len = usize::from(wire[0]) << 16 | usize::from(wire[1]) << 8 | usize::from(wire[2]);
            let (kind, flags) = (wire[3], wire[4]);
            let payload = &wire[9..9 + len];
            if kind == 1 {
                // END_HEADERS is set: the blocks here are small. No padding or priority.
                assert_eq!(flags & 0x2c, 0x04, "flags {flags:#x}");
                blocks.push(payload.to_vec());
            }
            wire = &wire[9 + len..];
        }
        blocks
    }

    /// Answers every call with an empty OK reply, keeping what the client wrote.
    async fn recording_server(listener: tokio::net::TcpListener) -> Vec<u8> {
        let (tcp, _) = listener.accept().await.expect("accept");
        let wire = Arc::new(std::sync::Mutex::new(Vec::new()));
        let recorder = Recorder {
            tcp,
            wire: wire.clone(),
        };
        let mut server = h2::server::handshake(recorder).await.expect("handshake");
        while let Some(accepted) = server.accept().await {
            let (request, mut respond) = accepted.expect("request");
            let mut body = request.into_body();
            while let Some(chunk) = body.data().await {
                let _released = body
                    .flow_control()
                    .release_capacity(chunk.expect("data").len());
            }
            let head = http::Response::builder()
                .header("content-type", "application/grpc")
                .body(())
                .expect("head");
            let mut stream = respond.send_response(head, false).expect("respond");
            stream.send_data(encode(&()), false).expect("data");
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", HeaderValue::from_static("0"));
            stream.send_trailers(trailers).expect("trailers");
        }
        wire.lock().expect("wire").clone()
    }

    struct Recorder {
        tcp: TcpStream,
        wire: Arc<std::sync::Mutex<Vec<u8>>>,
    }

    impl tokio::io::AsyncRead for Recorder {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            let before = buf.filled().len();
            let read = std::pin::Pin::new(&mut self.tcp).poll_read(cx, buf);
            let fresh = buf.filled()[before..].to_vec();
            self.wire.lock().expect("wire").extend_from_slice(&fresh);
            read
        }
    }

    impl tokio::io::AsyncWrite for Recorder {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            data: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            std::pin::Pin::new(&mut self.tcp).poll_write(cx, data)
        }

        fn poll_flush(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::pin::Pin::new(&mut self.tcp).poll_flush(cx)
        }

        fn poll_shutdown(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::pin::Pin::new(&mut self.tcp).poll_shutdown(cx)
        }
    }

    #[tokio::test]
    async fn per_call_metadata_is_never_indexed_under_an_indexed_name() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address").to_string();
        let server = tokio::spawn(recording_server(listener));
        let connection = Connection::new(
            address.clone(),
            address.parse().expect("authority"),
            ConnectSettings {
                timeout: Duration::from_secs(30),
                lanes: 1,
            },
        );
        let path = PathAndQuery::from_static("/outing.OutingService/GetOuting");
        for call in 0..3 {
            let mut metadata = HeaderMap::new();
            for (name, value) in [
                ("x-request-id", format!("request-{call}")),
                ("span-context", format!("{call:016x}:{call:016x}:0:1")),
            ] {
                let mut value = HeaderValue::from_str(&value).expect("value");
                value.set_sensitive(true);
                metadata.insert(name, value);
            }
            connection
                .unary::<()>(&path, encode(&()), metadata, Duration::from_secs(30))
                .await
                .expect("reply");
        }
        drop(connection);
        let wire = tokio::time::timeout(Duration::from_secs(60), server)
            .await
            .expect("the connection ends")
            .expect("server");
        let blocks = header_blocks(&wire);
        assert_eq!(blocks.len(), 3);
        let per_call: Vec<_> = blocks.iter().map(|block| representations(block)).collect();
        // The first call puts the names (with that call's values) into the table.
        let inserted = |fields: &[(char, usize)]| {
            fields
                .iter()
                .filter(|(kind, index)| *kind == '+' && *index == 0)
                .count()
        };
        assert!(inserted(&per_call[0]) >= 2, "{:?}", per_call[0]);
        // Later calls: the two values never indexed, each under an indexed name; no
        // literal name and no insertion.
        for fields in &per_call[1..] {
            let never: Vec<_> = fields.iter().filter(|(kind, _)| *kind == 'n').collect();
            assert_eq!(never.len(), 2, "{fields:?}");
            assert!(never.iter().all(|(_, index)| *index > 61), "{fields:?}");
            assert!(fields.iter().all(|(kind, _)| *kind != '+'), "{fields:?}");
        }
    }
}
