//! The benchmark floor: calls one backend RPC directly over gRPC, with no gateway, the
//! way the gateway calls it (tonic's generic client, prost codec, `x-request-id` and
//! `span-context` metadata), and prints throughput and latency percentiles.
//!
//! ```sh
//! cargo build --release --bin grpc_load
//! target/release/grpc_load --addr 127.0.0.1:50053 --rpc read --duration 5
//! target/release/grpc_load --addr 127.0.0.1:50053 --rpc write --rate 2000
//! ```
//!
//! The last line of stdout is one tab-separated row (see [`Report::row`]); everything
//! else goes to stderr. `bench/run.sh` drives it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, ValueEnum};
use http::uri::PathAndQuery;
use sms_gateway::endpoints::InBand;
use sms_gateway::proto::auth::student as auth_pb;
use sms_gateway::proto::outing as outing_pb;
use sms_gateway::reference::{outing, seed};
use tokio::time::Instant;
use tonic::client::Grpc;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};
use tonic_prost::ProstCodec;

/// Direct gRPC load against one reference service.
#[derive(Debug, Parser)]
#[command(name = "grpc_load")]
struct Args {
    /// `host:port` of the service (outing for read/write, auth for login).
    #[arg(long)]
    addr: String,
    /// Which RPC to call.
    #[arg(long, value_enum)]
    rpc: Workload,
    /// HTTP/2 connections (the gateway keeps one per instance).
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// Calls in flight at once, spread over the connections.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// How long to send, in seconds.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Calls per second in total (paced, open loop); unset: as fast as possible.
    #[arg(long)]
    rate: Option<f64>,
    /// Writes: outings start at this Unix time and are 10 s apart, so none overlap
    /// (give every run against the same service its own base).
    #[arg(long, default_value_t = 2_000_000_000)]
    write_base: i64,
}

/// The RPCs of the gateway scenarios.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Workload {
    /// `OutingStudent.GetOutingInform` of a seeded outing of the demo student.
    Read,
    /// `OutingStudent.CreateOuting`, a new non-overlapping outing per call.
    Write,
    /// `AuthStudent.LoginStudentAuth` of the demo student.
    Login,
}

/// What one call ended with: the reply's in-band status, or a gRPC error.
type Outcome = Result<i64, tonic::Status>;

impl Workload {
    /// Sends call number `n` and returns the reply's in-band status.
    async fn call(self, grpc: &mut Grpc<Channel>, n: u64, write_base: i64) -> Outcome {
        match self {
            Workload::Read => {
                let request = outing_pb::GetOutingInformRequest {
                    uuid: seed::STUDENT_UUID.to_owned(),
                    outing_id: outing::APPROVED_OUTING.to_owned(),
                };
                unary::<_, outing_pb::GetOutingInformResponse>(
                    grpc,
                    "/OutingStudent/GetOutingInform",
                    request,
                )
                .await
            }
            Workload::Write => {
                let start_time = write_base + 10 * i64::try_from(n).unwrap_or(i64::MAX / 20);
                let request = outing_pb::CreateOutingRequest {
                    uuid: seed::STUDENT_UUID.to_owned(),
                    start_time,
                    end_time: start_time + 5,
                    place: "서점".to_owned(),
                    reason: "교재 구입".to_owned(),
                    situation: "normal".to_owned(),
                };
                unary::<_, outing_pb::CreateOutingResponse>(
                    grpc,
                    "/OutingStudent/CreateOuting",
                    request,
                )
                .await
            }
            Workload::Login => {
                // The demo student's login (README, "Demo accounts").
                let request = auth_pb::LoginStudentAuthRequest {
                    student_id: "demostudent".to_owned(),
                    student_pw: "demo-student-pw".to_owned(),
                };
                unary::<_, auth_pb::LoginStudentAuthResponse>(
                    grpc,
                    "/auth.student.AuthStudent/LoginStudentAuth",
                    request,
                )
                .await
            }
        }
    }
}

/// One unary call with the metadata every backend checks first.
async fn unary<Req, Rep>(grpc: &mut Grpc<Channel>, path: &'static str, message: Req) -> Outcome
where
    Req: prost::Message + Send + 'static,
    Rep: prost::Message + Default + InBand + Send + 'static,
{
    let mut request = tonic::Request::new(message);
    let metadata = request.metadata_mut();
    let request_id = uuid::Uuid::new_v4().to_string();
    if let Ok(value) = MetadataValue::try_from(request_id.as_str()) {
        metadata.insert("x-request-id", value);
    }
    let span = format!(
        "{:032x}:{:016x}:0:1",
        rand::random::<u128>() | 1,
        rand::random::<u64>() | 1
    );
    if let Ok(value) = MetadataValue::try_from(span.as_str()) {
        metadata.insert("span-context", value);
    }
    grpc.ready()
        .await
        .map_err(|err| tonic::Status::unavailable(err.to_string()))?;
    let reply: Rep = grpc
        .unary(
            request,
            PathAndQuery::from_static(path),
            ProstCodec::<Req, Rep>::default(),
        )
        .await?
        .into_inner();
    Ok(reply.status())
}

/// What one worker saw.
#[derive(Debug, Default)]
struct Tally {
    /// Latency of every completed call, in microseconds.
    latencies_us: Vec<u32>,
    /// Replies by in-band status.
    statuses: BTreeMap<i64, u64>,
    /// Calls that failed at the gRPC level.
    errors: u64,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.latencies_us.extend(other.latencies_us);
        for (status, count) in other.statuses {
            *self.statuses.entry(status).or_default() += count;
        }
        self.errors += other.errors;
    }
}

/// Sends calls until `end`, paced by `schedule` when a rate is set.
async fn worker(
    mut grpc: Grpc<Channel>,
    args: Arc<Args>,
    tickets: Arc<AtomicU64>,
    start: Instant,
    end: Instant,
) -> Tally {
    let mut tally = Tally::default();
    loop {
        let n = tickets.fetch_add(1, Ordering::Relaxed);
        if let Some(rate) = args.rate {
            let due = start + Duration::from_secs_f64(n as f64 / rate);
            if due >= end {
                break;
            }
            tokio::time::sleep_until(due).await;
        } else if Instant::now() >= end {
            break;
        }
        let sent = Instant::now();
        let outcome = args.rpc.call(&mut grpc, n, args.write_base).await;
        let elapsed = sent.elapsed();
        tally
            .latencies_us
            .push(u32::try_from(elapsed.as_micros()).unwrap_or(u32::MAX));
        match outcome {
            Ok(status) => *tally.statuses.entry(status).or_default() += 1,
            Err(status) => {
                if tally.errors == 0 {
                    eprintln!("grpc_load: first error: {status}");
                }
                tally.errors += 1;
            }
        }
    }
    tally
}

/// The figures of one run.
struct Report {
    calls: usize,
    seconds: f64,
    tally: Tally,
}

impl Report {
    /// The `q`-quantile of the sorted latencies, in microseconds.
    fn quantile(&self, q: f64) -> u32 {
        let sorted = &self.tally.latencies_us;
        if sorted.is_empty() {
            return 0;
        }
        let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        sorted[rank - 1]
    }

    /// `calls seconds rps p50_us p90_us p99_us max_us errors statuses`, tab-separated;
    /// statuses read `200:1234,409:5`.
    fn row(&self) -> String {
        let statuses: Vec<String> = self
            .tally
            .statuses
            .iter()
            .map(|(status, count)| format!("{status}:{count}"))
            .collect();
        format!(
            "{}\t{:.3}\t{:.1}\t{}\t{}\t{}\t{}\t{}\t{}",
            self.calls,
            self.seconds,
            self.calls as f64 / self.seconds,
            self.quantile(0.50),
            self.quantile(0.90),
            self.quantile(0.99),
            self.quantile(1.0),
            self.tally.errors,
            statuses.join(","),
        )
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Arc::new(Args::parse());
    anyhow::ensure!(args.connections > 0, "--connections must be at least 1");
    anyhow::ensure!(
        args.concurrency >= args.connections,
        "--concurrency must be at least --connections"
    );
    anyhow::ensure!(
        args.duration > 0.0 && args.duration <= 600.0,
        "--duration must be in (0, 600] seconds"
    );
    anyhow::ensure!(
        args.rate.is_none_or(|rate| rate > 0.0),
        "--rate must be positive"
    );
    let mut channels = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        let channel = Endpoint::from_shared(format!("http://{}", args.addr))?
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(2))
            .connect()
            .await
            .with_context(|| format!("connecting to {}", args.addr))?;
        channels.push(channel);
    }
    let tickets = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(args.duration);
    let workers: Vec<_> = (0..args.concurrency)
        .map(|i| {
            let grpc = Grpc::new(channels[i % channels.len()].clone());
            tokio::spawn(worker(grpc, args.clone(), tickets.clone(), start, end))
        })
        .collect();
    let mut tally = Tally::default();
    for worker in workers {
        tally.merge(worker.await.context("a worker panicked")?);
    }
    let seconds = start.elapsed().as_secs_f64();
    tally.latencies_us.sort_unstable();
    let report = Report {
        calls: tally.latencies_us.len(),
        seconds,
        tally,
    };
    eprintln!(
        "grpc_load {:?} {}: {} calls in {:.2} s = {:.0}/s, p50 {} µs, p90 {} µs, p99 {} µs, {} errors",
        args.rpc,
        args.addr,
        report.calls,
        report.seconds,
        report.calls as f64 / report.seconds,
        report.quantile(0.50),
        report.quantile(0.90),
        report.quantile(0.99),
        report.tally.errors,
    );
    println!("{}", report.row());
    Ok(())
}
