//! A bounded client load for the stack test (`deploy/test/stack-test.sh`): logs in as the
//! demo student through the edge, then sends paced reads that each miss the response
//! cache (a fresh `start` every request), so every one reaches a backend, until it is
//! told to stop (SIGTERM / Ctrl-C), `--max-requests` are sent or `--max-seconds` pass.
//!
//! ```sh
//! cargo build --example edge_load
//! target/debug/examples/edge_load --url http://127.0.0.1:8080 --rate 25
//! ```
//!
//! Every failed request (any status but 200, or no answer) is one line on stdout:
//! `FAIL <unix ms when sent> <status or error> <body, cut>`; every second a line
//! `PROGRESS sent=<n> ok=<n> failed=<n>`, and the last line is
//! `SUMMARY sent=<n> ok=<n> failed=<n> seconds=<s>`. Loopback targets only.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use clap::Parser;
use serde_json::{Value, json};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::Semaphore;
use tokio::time::{Instant, MissedTickBehavior};

/// Paced reads of the demo student's outings through the edge.
#[derive(Debug, Parser)]
#[command(name = "edge_load")]
struct Args {
    /// The edge, e.g. http://127.0.0.1:8080 (loopback only).
    #[arg(long)]
    url: String,
    /// Requests per second in total. The stack's client-IP guard allows 50 per second
    /// per client, and every request here comes from one address: stay below.
    #[arg(long, default_value_t = 25.0)]
    rate: f64,
    /// Requests in flight at most (a slow answer delays the next send beyond this).
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Stop after this many requests.
    #[arg(long, default_value_t = 20_000)]
    max_requests: u64,
    /// Stop after this long.
    #[arg(long, default_value_t = 600)]
    max_seconds: u64,
    /// Give up on one request after this long (counted as failed).
    #[arg(long, default_value_t = 30)]
    timeout_seconds: u64,
    /// The first `start` offset of the outing list (runs against the same stack within
    /// the cache TTL use different ones, so nothing is a cache hit).
    #[arg(long, default_value_t = 0)]
    first_start: u32,
}

const LOGIN_ID: &str = "demostudent";
const LOGIN_PW: &str = "demo-student-pw";
const STUDENT: &str = "student-000000000001";

fn unix_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

fn ensure_loopback(url: &str) -> Result<()> {
    let parsed = reqwest::Url::parse(url).with_context(|| format!("--url {url}"))?;
    let host = parsed.host_str().unwrap_or_default();
    let loopback = host == "localhost"
        || host
            .trim_matches(['[', ']'])
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if !loopback {
        bail!("--url {url}: load goes to loopback addresses only");
    }
    Ok(())
}

async fn login(client: &reqwest::Client, base: &str) -> Result<String> {
    let answer: Value = client
        .post(format!("{base}/v1/login/student"))
        .json(&json!({"student_id": LOGIN_ID, "student_pw": LOGIN_PW}))
        .send()
        .await
        .context("log in")?
        .error_for_status()
        .context("log in")?
        .json()
        .await
        .context("login answer")?;
    answer["access_token"]
        .as_str()
        .map(str::to_owned)
        .context("no access_token in the login answer")
}

/// One read; `None` when it succeeded, else what went wrong.
async fn read(client: &reqwest::Client, url: String, token: &str) -> Option<String> {
    match client.get(url).bearer_auth(token).send().await {
        Ok(response) if response.status() == reqwest::StatusCode::OK => None,
        Ok(response) => {
            let status = response.status().as_u16();
            let body = response.text().await.unwrap_or_default();
            Some(format!(
                "{status} {}",
                body.chars().take(200).collect::<String>()
            ))
        }
        Err(error) => Some(format!("error {error}")),
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    ensure_loopback(&args.url)?;
    if !(args.rate > 0.0 && args.rate.is_finite()) {
        bail!("--rate must be positive");
    }
    let base = args.url.trim_end_matches('/').to_owned();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(args.timeout_seconds))
        .build()
        .context("HTTP client")?;
    let token = Arc::new(login(&client, &base).await?);

    let slots = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate));
    // A late tick is not made up for with a burst (the guard would see one).
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut terminate = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.max_seconds);
    let mut progress = tokio::time::interval(Duration::from_secs(1));
    let mut sent: u64 = 0;
    while sent < args.max_requests {
        tokio::select! {
            _ = tick.tick() => {}
            _ = progress.tick() => {
                println!(
                    "PROGRESS sent={sent} ok={} failed={}",
                    ok.load(Ordering::Relaxed),
                    failed.load(Ordering::Relaxed)
                );
                continue;
            }
            _ = terminate.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
            _ = tokio::time::sleep_until(deadline) => break,
        }
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            break;
        };
        let start = args.first_start.wrapping_add(sent as u32);
        let url = format!("{base}/v1/students/uuid/{STUDENT}/outings?start={start}&count=10");
        sent += 1;
        let (client, token, ok, failed) = (
            client.clone(),
            Arc::clone(&token),
            Arc::clone(&ok),
            Arc::clone(&failed),
        );
        tokio::spawn(async move {
            let sent_at = unix_ms();
            match read(&client, url, &token).await {
                None => ok.fetch_add(1, Ordering::Relaxed),
                Some(what) => {
                    println!("FAIL {sent_at} {}", what.replace('\n', " "));
                    failed.fetch_add(1, Ordering::Relaxed)
                }
            };
            drop(slot);
        });
    }
    // Every request in flight finishes (each within --timeout-seconds).
    let _all = slots
        .acquire_many(args.concurrency.max(1) as u32)
        .await
        .context("wait for the requests in flight")?;
    println!(
        "SUMMARY sent={sent} ok={} failed={} seconds={:.1}",
        ok.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
