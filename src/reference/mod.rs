//! In-memory reference implementations of the five gRPC services, faithful to the
//! contract's backend behaviour (in-band statuses and codes, uuid formats, ownership
//! checks, hashed passwords). They serve `sms-gateway demo`, the end-to-end tests and
//! the benchmarks; the gateway never depends on them (it only sees their addresses).
//!
//! One module per service; [`directory`] holds the accounts every service may look up
//! (one process serves all five, as the demo does), [`seed`] the demo data.

pub mod announcement;
pub mod auth;
pub mod club;
pub mod directory;
pub mod events;
pub mod metadata;
pub mod outing;
pub mod paths;
pub mod registration;
pub mod schedule;
pub mod seed;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic::service::Routes;
use tonic::transport::server::TcpIncoming;

use crate::upstream::Service;

pub use directory::Directory;
pub use events::EventLog;
pub use metadata::{MetadataLog, SeenMetadata};

/// Knobs the tests and benchmarks turn.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Delay every call by this much (to provoke deadlines).
    pub delay: Duration,
}

/// State shared by the reference services of one process.
#[derive(Debug, Clone)]
pub struct Shared {
    pub directory: Arc<Directory>,
    /// The metadata of every call received, for tests that check propagation.
    pub metadata: Arc<MetadataLog>,
    /// The `ChangeAllServiceNodes` calls received, per service.
    pub events: Arc<EventLog>,
}

impl Shared {
    /// Seeded demo state.
    pub fn seeded() -> Self {
        Self {
            directory: Arc::new(seed::directory()),
            metadata: Arc::new(MetadataLog::default()),
            events: Arc::new(EventLog::default()),
        }
    }
}

/// The tonic routes of one service's gRPC services.
pub fn routes(service: Service, shared: &Shared) -> Routes {
    match service {
        Service::Auth => auth::routes(shared),
        Service::Club => club::routes(shared),
        Service::Outing => outing::routes(shared),
        Service::Schedule => schedule::routes(shared),
        Service::Announcement => announcement::routes(shared),
    }
}

/// A running reference server.
#[derive(Debug)]
pub struct Running {
    pub service: Service,
    pub address: SocketAddr,
    pub task: JoinHandle<Result<(), tonic::transport::Error>>,
}

/// Serves `service` on `listener` until the task is aborted.
pub fn spawn(
    service: Service,
    listener: TcpListener,
    shared: &Shared,
    options: &Options,
) -> std::io::Result<Running> {
    let address = listener.local_addr()?;
    let routes = routes(service, shared);
    let delay = options.delay;
    // `serve_with_incoming` ignores the builder's `tcp_nodelay`: the incoming stream
    // sets it, or replies wait for delayed ACKs (Nagle), ~40 ms on loopback.
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let task = tokio::spawn(async move {
        let delayed = tower::filter::AsyncFilterLayer::new(move |request| async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            Ok::<_, std::convert::Infallible>(request)
        });
        let names = paths::grpc_services(service);
        let canonical = tower::util::MapRequestLayer::new(move |request: http::Request<_>| {
            paths::canonicalize(request, names)
        });
        tonic::transport::Server::builder()
            .layer(delayed)
            .layer(canonical)
            .add_routes(routes)
            .serve_with_incoming(incoming)
            .await
    });
    Ok(Running {
        service,
        address,
        task,
    })
}

/// Starts all five services on loopback: on `base..base+4` when `base` is given, else on
/// free ports.
pub async fn spawn_all(
    base: Option<u16>,
    shared: &Shared,
    options: &Options,
) -> std::io::Result<Vec<Running>> {
    let mut running = Vec::with_capacity(Service::ALL.len());
    for (offset, service) in Service::ALL.into_iter().enumerate() {
        let port = base.map_or(0, |b| b + offset as u16);
        let listener = TcpListener::bind(("127.0.0.1", port)).await?;
        running.push(spawn(service, listener, shared, options)?);
    }
    Ok(running)
}
