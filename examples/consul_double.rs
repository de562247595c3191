//! The project's Consul HTTP API double (`tests/support/consul.rs`) as a program: the
//! stand-in for Consul in the stack test (`deploy/test/`), where no Consul image can be
//! pulled. It answers the subset of Consul's v1 API the gateway and the reference
//! services use (registration with TTL checks, health queries with blocking, maintenance);
//! it runs no watches (the gateway's own blocking queries keep its instance lists fresh).
//! Not for production: it keeps everything in memory and knows one node.
//!
//! ```sh
//! cargo build --example consul_double
//! target/debug/examples/consul_double --listen 0.0.0.0:8500
//! ```

#[path = "../tests/support/consul.rs"]
#[allow(dead_code)]
mod consul;

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use tokio::signal::unix::{SignalKind, signal};

/// Consul's HTTP API double on one address.
#[derive(Debug, Parser)]
#[command(name = "consul_double")]
struct Args {
    /// Where the HTTP API listens.
    #[arg(long, default_value = "0.0.0.0:8500")]
    listen: SocketAddr,
    /// Enables ACLs with this one token (unset: no ACLs, like the stack's Consul).
    #[arg(long, env = "CONSUL_DOUBLE_TOKEN")]
    token: Option<String>,
}

/// How often the request log the double keeps for tests is emptied, so a long-running
/// process stays bounded (TTL heartbeats are recorded too).
const LOG_RETENTION: Duration = Duration::from_secs(30);

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let double = consul::ConsulDouble::start_on(args.listen, args.token.as_deref())
        .await
        .with_context(|| format!("listen on {}", args.listen))?;
    eprintln!(
        "consul_double: Consul API double on http://{}",
        double.addr()
    );
    let mut terminate = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut tick = tokio::time::interval(LOG_RETENTION);
    loop {
        tokio::select! {
            _ = tick.tick() => double.clear_requests(),
            _ = terminate.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    eprintln!("consul_double: stopped");
    Ok(())
}
