//! The `sms-gateway` command: run the gateway, the reference services, or both (demo);
//! mint a token; check a configuration; probe a running gateway (container health);
//! write the OpenAPI document.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use clap::{Parser, Subcommand};
use humantime_serde::re::humantime;
use opentelemetry_sdk::trace::SdkTracerProvider;
use sms_gateway::app;
use sms_gateway::config::{Config, LogConfig, LogFormat, ProcessEnv, RuntimeConfig, RuntimeFlavor};
use sms_gateway::http::server::ServerSettings;
use sms_gateway::http::workers::Workers;
use sms_gateway::reference::{self, Options, Shared, registration};
use sms_gateway::telemetry;
use sms_gateway::telemetry::log_writer::FlushGuard;
use sms_gateway::upstream::Service;
use sms_gateway::upstream::consul::ConsulClient;
use sms_gateway::{endpoints, openapi};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

// mimalloc: the request path allocates many small, short-lived buffers; glibc's malloc
// showed up as ~12% of the gateway's CPU in the benchmark profile.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// API gateway of the school management system: HTTP/JSON in front of five gRPC services.
#[derive(Debug, Parser)]
#[command(name = "sms-gateway", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the five reference services and the gateway in one process, on loopback.
    Demo {
        /// Address of the gateway.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Address of the admin listener (/metrics, /admin/audit); port 0 picks a free one.
        #[arg(long, default_value = "127.0.0.1:9464")]
        admin_listen: SocketAddr,
    },
    /// Run the gateway alone.
    Serve {
        /// TOML configuration file (SMS_* environment variables override it).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Run only the reference services, on loopback ports base..base+4
    /// (auth, club, outing, schedule, announcement).
    Services {
        /// First port.
        #[arg(long, default_value_t = 50051)]
        listen_base: u16,
        /// Address to bind (use 0.0.0.0 inside a container).
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        /// Register each service in this Consul agent (e.g. http://127.0.0.1:8500), keep
        /// its TTL check alive, and deregister on shutdown.
        #[arg(long)]
        consul: Option<String>,
        /// ACL token for Consul.
        #[arg(long, env = "SMS_CONSUL_TOKEN", hide_env_values = true)]
        consul_token: Option<String>,
        /// Address to register (default: the local address that reaches Consul).
        #[arg(long)]
        advertise: Option<std::net::IpAddr>,
    },
    /// Mint a token for a uuid with the configured secret.
    Token {
        /// The `uuid` claim, e.g. student-000000000001.
        #[arg(long)]
        uuid: String,
        /// TOML configuration file; without it, SMS_* environment variables alone.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Validate a configuration file (and SMS_* overrides) and exit.
    CheckConfig {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Exit 0 when a running gateway answers 2xx (the container HEALTHCHECK: the image
    /// has no curl).
    Healthcheck {
        /// Plain `http://` URL to GET.
        #[arg(long, default_value = "http://127.0.0.1:8080/ping")]
        url: String,
        /// Give up after this long (e.g. 2s, 500ms).
        #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// Write the OpenAPI 3.1 document of the HTTP API (the one served at /openapi.json).
    Openapi {
        /// File to write; standard output when absent.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    // `serve` reads its configuration first: it sizes the runtime.
    let (command, runtime_config) = match cli.command {
        Command::Serve { config } => {
            let config = Config::load(Some(&config), &ProcessEnv).context("configuration")?;
            let runtime = config.runtime;
            (Run::Serve(Box::new(config)), runtime)
        }
        // The reference services and the demo keep tokio's multi-thread scheduler.
        command => (
            Run::Other(command),
            RuntimeConfig {
                flavor: RuntimeFlavor::MultiThread,
                worker_threads: None,
            },
        ),
    };
    // With thread_per_core this thread's runtime is worker 0; `gateway` starts the
    // others.
    let mut builder = match runtime_config.flavor {
        RuntimeFlavor::MultiThread => tokio::runtime::Builder::new_multi_thread(),
        RuntimeFlavor::CurrentThread | RuntimeFlavor::ThreadPerCore => {
            tokio::runtime::Builder::new_current_thread()
        }
    };
    if let (RuntimeFlavor::MultiThread, Some(workers)) =
        (runtime_config.flavor, runtime_config.worker_threads)
    {
        builder.worker_threads(workers.get());
    }
    let runtime = builder
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        match command {
            Run::Serve(config) => serve(*config).await,
            Run::Other(command) => run(command).await,
        }
    })
}

/// A command, with `serve`'s configuration already loaded.
enum Run {
    Serve(Box<Config>),
    Other(Command),
}

async fn serve(config: Config) -> Result<()> {
    let (provider, _flush_logs) = init_telemetry(&config)?;
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let admin = bind_admin(&config).await?;
    let result = gateway(config, listener, admin).await;
    if let Some(provider) = provider
        && let Err(err) = provider.shutdown()
    {
        tracing::warn!(error = %err, "flushing traces at exit failed");
    }
    result
}

async fn run(command: Command) -> Result<()> {
    match command {
        Command::Demo {
            listen,
            admin_listen,
        } => demo(listen, admin_listen).await,
        Command::Serve { .. } => bail!("serve is started by main"),
        Command::Services {
            listen_base,
            host,
            consul,
            consul_token,
            advertise,
        } => {
            init_logs(LogFormat::Json, "info");
            let registry = consul.map(|url| Registry {
                url,
                token: consul_token,
                advertise,
            });
            services(listen_base, &host, registry).await
        }
        Command::Token { uuid, config } => {
            let config = Config::load(config.as_deref(), &ProcessEnv).context("configuration")?;
            println!("{}", app::jwt_keys(&config)?.issue(&uuid)?);
            Ok(())
        }
        Command::CheckConfig { config: path } => {
            let config = Config::load(Some(&path), &ProcessEnv).context("configuration")?;
            // Building the gateway runs every start-up check (secret, addresses, endpoint
            // table) without listening.
            drop(app::build(&config)?);
            println!("{}: ok", path.display());
            Ok(())
        }
        Command::Healthcheck { url, timeout } => healthcheck(&url, timeout).await,
        Command::Openapi { output } => write_openapi(output.as_deref()),
    }
}

/// Installs the log subscriber, writing through the non-blocking stdout (and the OTLP
/// trace export when configured); the returned provider must be shut down at exit to
/// flush the last spans, and the guard kept until then to flush the last lines.
fn init_telemetry(config: &Config) -> Result<(Option<SdkTracerProvider>, FlushGuard)> {
    use tracing_subscriber::layer::SubscriberExt as _;
    let provider = telemetry::tracer_provider(&config.telemetry)?;
    let audit_file = sms_gateway::audit::file_layer(&config.audit).with_context(|| {
        format!(
            "audit.file: cannot open {:?}",
            config
                .audit
                .file
                .as_deref()
                .unwrap_or(std::path::Path::new(""))
        )
    })?;
    let (stdout, guard) = telemetry::stdout_writer(&config.log).context("the log writer")?;
    let subscriber =
        telemetry::subscriber_with_writer(&config.log, provider.as_ref(), stdout).with(audit_file);
    tracing::subscriber::set_global_default(subscriber).context("installing the log subscriber")?;
    Ok((provider, guard))
}

/// Logs only, for commands without a gateway configuration.
fn init_logs(format: LogFormat, level: &str) {
    let log = LogConfig {
        format,
        level: level.to_owned(),
        ..LogConfig::default()
    };
    let _already_set = tracing::subscriber::set_global_default(telemetry::subscriber(&log, None));
}

async fn gateway(config: Config, listener: TcpListener, admin: TcpListener) -> Result<()> {
    let gateway = app::build(&config)?;
    let address = listener.local_addr()?;
    let admin_address = admin.local_addr()?;
    tracing::info!(%address, admin = %admin_address, discovery = ?config.discovery.mode, "gateway listening");
    let admin = tokio::spawn(sms_gateway::admin::serve(admin, gateway.state.clone()));
    let mut settings = ServerSettings::from_config(&config);
    let (workers, threads) =
        Workers::for_runtime(&config.runtime).context("starting the worker threads")?;
    settings.workers = workers;
    let served = app::serve_with(
        listener,
        gateway.router.clone(),
        app::shutdown_signal(),
        settings,
        gateway.state.metrics.clone(),
    )
    .await;
    admin.abort();
    if let Some(threads) = threads {
        threads.stop();
    }
    served?;
    tracing::info!("gateway stopped");
    Ok(())
}

/// The admin listener of `config`.
async fn bind_admin(config: &Config) -> Result<TcpListener> {
    TcpListener::bind(config.admin.listen)
        .await
        .with_context(|| format!("binding admin.listen {}", config.admin.listen))
}

/// Where the reference services register themselves.
struct Registry {
    url: String,
    token: Option<String>,
    advertise: Option<std::net::IpAddr>,
}

async fn services(base: u16, host: &str, registry: Option<Registry>) -> Result<()> {
    let shared = Shared::seeded();
    let mut running = Vec::new();
    for (offset, service) in Service::ALL.into_iter().enumerate() {
        let port = base + offset as u16;
        let listener = TcpListener::bind((host, port))
            .await
            .with_context(|| format!("binding {host}:{port} for {service}"))?;
        let service_running = reference::spawn(service, listener, &shared, &Options::default())?;
        tracing::info!(%service, address = %service_running.address, "reference service listening");
        running.push(service_running);
    }
    let mut registered = Vec::new();
    let consul = match &registry {
        Some(registry) => {
            let client = ConsulClient::new(
                &registry.url,
                registry.token.clone(),
                None,
                Duration::from_secs(5),
            )?;
            let ip = registry
                .advertise
                .or_else(|| registration::local_address_towards(&registry.url))
                .context("cannot tell which address to register; pass --advertise")?;
            for service in &running {
                let advertise = SocketAddr::new(ip, service.address.port());
                registered.push(registration::register(&client, service.service, advertise).await?);
                tracing::info!(service = %service.service, %advertise, "registered in consul");
            }
            Some(client)
        }
        None => None,
    };
    app::shutdown_signal().await;
    if let Some(client) = &consul {
        for entry in registered {
            registration::deregister(client, entry).await;
        }
    }
    for service in running {
        service.task.abort();
    }
    Ok(())
}

/// Writes the OpenAPI document generated from the endpoint table (pretty-printed).
fn write_openapi(output: Option<&std::path::Path>) -> Result<()> {
    let table = endpoints::table();
    endpoints::check(&table).context("endpoint table")?;
    let mut text = serde_json::to_string_pretty(&openapi::document(&table))?;
    text.push('\n');
    match output {
        Some(path) => {
            std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?
        }
        None => print!("{text}"),
    }
    Ok(())
}

/// One `GET` of `url` over plain TCP (HTTP/1.1, `Connection: close`); `Ok` when the
/// status is 2xx within `timeout`. Only the status line is read: the probe needs no HTTP
/// client library, and a slow or huge body cannot keep it busy.
async fn healthcheck(url: &str, timeout: Duration) -> Result<()> {
    let (authority, path) = split_http_url(url)?;
    let status = tokio::time::timeout(timeout, get_status(authority, path))
        .await
        .map_err(|_elapsed| anyhow::anyhow!("{url}: no answer within {timeout:?}"))?
        .with_context(|| format!("GET {url}"))?;
    if !(200..300).contains(&status) {
        bail!("GET {url}: status {status}");
    }
    Ok(())
}

/// `http://host[:port][/path]` → (`host[:port]`, `/path`).
fn split_http_url(url: &str) -> Result<(&str, &str)> {
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("{url}: only http:// URLs are supported"))?;
    let (authority, path) = rest.find('/').map_or((rest, "/"), |at| rest.split_at(at));
    ensure!(!authority.is_empty(), "{url}: no host");
    Ok((authority, path))
}

async fn get_status(authority: &str, path: &str) -> Result<u16> {
    // Without a port (`host`, `[::1]`) HTTP means 80.
    let target = match authority.rsplit_once(':') {
        Some((_, port)) if !port.ends_with(']') => authority.to_owned(),
        _ => format!("{authority}:80"),
    };
    let mut stream = TcpStream::connect(&target)
        .await
        .with_context(|| format!("connecting to {target}"))?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\n\
         User-Agent: sms-gateway-healthcheck\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut line = Vec::new();
    // A status line is short; the bound keeps a misbehaving peer from feeding us forever.
    BufReader::new(stream)
        .take(1024)
        .read_until(b'\n', &mut line)
        .await?;
    parse_status_line(&line)
}

/// The status code of `HTTP/1.x NNN reason`.
fn parse_status_line(line: &[u8]) -> Result<u16> {
    let text = String::from_utf8_lossy(line);
    let mut parts = text.split_whitespace();
    let version = parts.next().unwrap_or_default();
    ensure!(
        version.starts_with("HTTP/1."),
        "not an HTTP/1.x response: {:?}",
        text.trim_end()
    );
    parts
        .next()
        .and_then(|code| code.parse::<u16>().ok())
        .with_context(|| format!("no status code in {:?}", text.trim_end()))
}

async fn demo(listen: SocketAddr, admin_listen: SocketAddr) -> Result<()> {
    let started = Instant::now();
    let shared = Shared::seeded();
    let running = reference::spawn_all(None, &shared, &Options::default())
        .await
        .context("starting the reference services")?;
    // A fresh random secret per demo run: demo tokens are worthless elsewhere.
    let secret: [u8; 32] = rand::random();
    let secret: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    let mut text = format!(
        "listen = \"{listen}\"\n[admin]\nlisten = \"{admin_listen}\"\n[jwt]\nsecret = \"{secret}\"\n[log]\nformat = \"text\"\nlevel = \"warn\"\n"
    );
    for service in &running {
        text.push_str(&format!(
            "[upstream.services.{}]\naddresses = [\"{}\"]\n",
            service.service, service.address
        ));
    }
    // SMS_* variables still apply, e.g. SMS_TELEMETRY__OTLP_ENDPOINT to watch the demo
    // in Jaeger.
    let mut config = Config::from_toml(&text, &ProcessEnv).context("demo configuration")?;
    // The demo's services share the process's multi-thread runtime.
    config.runtime.flavor = RuntimeFlavor::MultiThread;
    let _flush_logs = init_telemetry(&config)?.1;
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let address = listener.local_addr()?;
    let admin = bind_admin(&config).await?;
    println!("listening on http://{address}");
    println!(
        "admin (metrics, audit) on http://{}/metrics and /admin/audit",
        admin.local_addr()?
    );
    println!("started in {} ms", started.elapsed().as_millis());
    println!("try:");
    println!(
        "  curl -s -X POST http://{address}/v1/login/student -H 'Content-Type: application/json' \\\n    -d '{{\"student_id\":\"demostudent\",\"student_pw\":\"demo-student-pw\"}}'"
    );
    println!(
        "  curl -s http://{address}/v1/students/uuid/student-000000000001 -H \"Authorization: Bearer $TOKEN\""
    );
    let result = gateway(config, listener, admin).await;
    for service in running {
        service.task.abort();
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-shot HTTP peer on a free loopback port that answers `reply` to the first
    /// request and reports the request it read.
    async fn peer(reply: &'static str) -> (String, tokio::task::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/ping", listener.local_addr().expect("addr"));
        let task = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.expect("accept");
            let mut reader = BufReader::new(stream);
            let mut request = String::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).await.expect("read") == 0 || line == "\r\n" {
                    break;
                }
                request.push_str(&line);
            }
            reader
                .get_mut()
                .write_all(reply.as_bytes())
                .await
                .expect("write");
            request
        });
        (url, task)
    }

    #[tokio::test]
    async fn a_2xx_answer_is_healthy_and_the_request_is_plain_http_1_1() {
        let (url, task) = peer("HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\n\"pong\"").await;
        healthcheck(&url, Duration::from_secs(5))
            .await
            .expect("healthy");
        let request = task.await.expect("peer");
        assert!(request.starts_with("GET /ping HTTP/1.1\r\n"), "{request}");
        assert!(request.contains("\r\nHost: 127.0.0.1:"), "{request}");
        assert!(request.contains("Connection: close"), "{request}");
    }

    #[tokio::test]
    async fn other_statuses_and_garbage_are_unhealthy() {
        for reply in [
            "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n",
            "HTTP/1.1 404 Not Found\r\n\r\n",
            "SSH-2.0-OpenSSH\r\n",
            "",
        ] {
            let (url, _task) = peer(reply).await;
            let err = healthcheck(&url, Duration::from_secs(5))
                .await
                .expect_err(reply);
            assert!(err.to_string().contains(&url), "{err:#}");
        }
    }

    #[tokio::test]
    async fn nothing_listening_or_a_silent_peer_is_unhealthy() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("addr");
        let url = format!("http://{address}/ping");
        // Accepted by the kernel but never answered: the timeout decides.
        let err = healthcheck(&url, Duration::from_millis(200))
            .await
            .expect_err("silent");
        assert!(err.to_string().contains("no answer within"), "{err:#}");
        drop(listener);
        healthcheck(&url, Duration::from_secs(5))
            .await
            .expect_err("refused");
    }

    #[test]
    fn urls_split_into_authority_and_path() {
        let split = |url| split_http_url(url).expect(url);
        assert_eq!(
            split("http://127.0.0.1:8080/ping"),
            ("127.0.0.1:8080", "/ping")
        );
        assert_eq!(split("http://gateway:8080"), ("gateway:8080", "/"));
        assert_eq!(split("http://[::1]:8080/a?b=c"), ("[::1]:8080", "/a?b=c"));
        assert!(split_http_url("https://127.0.0.1/ping").is_err());
        assert!(split_http_url("http:///ping").is_err());
    }

    #[test]
    fn status_lines_parse() {
        assert_eq!(
            parse_status_line(b"HTTP/1.1 204 No Content\r\n").ok(),
            Some(204)
        );
        assert_eq!(parse_status_line(b"HTTP/1.0 200\r\n").ok(), Some(200));
        assert!(parse_status_line(b"HTTP/2 200\r\n").is_err());
        assert!(parse_status_line(b"HTTP/1.1 abc\r\n").is_err());
    }

    #[test]
    fn the_command_line_parses() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from(["sms-gateway", "healthcheck", "--timeout", "500ms"])
            .expect("parse");
        match cli.command {
            Command::Healthcheck { url, timeout } => {
                assert_eq!(url, "http://127.0.0.1:8080/ping");
                assert_eq!(timeout, Duration::from_millis(500));
            }
            other => panic!("{other:?}"),
        }
    }
}
