//! The `sms-gateway` command: run the gateway, the reference services, or both (demo);
//! mint a token; check a configuration.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use opentelemetry_sdk::trace::SdkTracerProvider;
use sms_gateway::app;
use sms_gateway::config::{Config, LogConfig, LogFormat, ProcessEnv};
use sms_gateway::reference::{self, Options, Shared, registration};
use sms_gateway::telemetry;
use sms_gateway::upstream::Service;
use sms_gateway::upstream::consul::ConsulClient;
use tokio::net::TcpListener;

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
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(run(cli.command))
}

async fn run(command: Command) -> Result<()> {
    match command {
        Command::Demo { listen } => demo(listen).await,
        Command::Serve { config } => {
            let config = Config::load(Some(&config), &ProcessEnv).context("configuration")?;
            let provider = init_telemetry(&config)?;
            let listener = TcpListener::bind(config.listen)
                .await
                .with_context(|| format!("binding {}", config.listen))?;
            let result = gateway(config, listener).await;
            if let Some(provider) = provider
                && let Err(err) = provider.shutdown()
            {
                tracing::warn!(error = %err, "flushing traces at exit failed");
            }
            result
        }
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
    }
}

/// Installs the log subscriber (and the OTLP trace export when configured); the
/// returned provider must be shut down at exit to flush the last spans.
fn init_telemetry(config: &Config) -> Result<Option<SdkTracerProvider>> {
    let provider = telemetry::tracer_provider(&config.telemetry)?;
    tracing::subscriber::set_global_default(telemetry::subscriber(&config.log, provider.as_ref()))
        .context("installing the log subscriber")?;
    Ok(provider)
}

/// Logs only, for commands without a gateway configuration.
fn init_logs(format: LogFormat, level: &str) {
    let log = LogConfig {
        format,
        level: level.to_owned(),
    };
    let _already_set = tracing::subscriber::set_global_default(telemetry::subscriber(&log, None));
}

async fn gateway(config: Config, listener: TcpListener) -> Result<()> {
    let gateway = app::build(&config)?;
    let address = listener.local_addr()?;
    tracing::info!(%address, discovery = ?config.discovery.mode, "gateway listening");
    app::serve(
        listener,
        gateway.router.clone(),
        app::shutdown_signal(),
        config.http.shutdown_grace,
    )
    .await?;
    tracing::info!("gateway stopped");
    Ok(())
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

async fn demo(listen: SocketAddr) -> Result<()> {
    let started = Instant::now();
    let shared = Shared::seeded();
    let running = reference::spawn_all(None, &shared, &Options::default())
        .await
        .context("starting the reference services")?;
    // A fresh random secret per demo run: demo tokens are worthless elsewhere.
    let secret: [u8; 32] = rand::random();
    let secret: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    let mut text = format!(
        "listen = \"{listen}\"\n[jwt]\nsecret = \"{secret}\"\n[log]\nformat = \"text\"\nlevel = \"warn\"\n"
    );
    for service in &running {
        text.push_str(&format!(
            "[upstream.services.{}]\naddresses = [\"{}\"]\n",
            service.service, service.address
        ));
    }
    // SMS_* variables still apply, e.g. SMS_TELEMETRY__OTLP_ENDPOINT to watch the demo
    // in Jaeger.
    let config = Config::from_toml(&text, &ProcessEnv).context("demo configuration")?;
    init_telemetry(&config)?;
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let address = listener.local_addr()?;
    println!("listening on http://{address}");
    println!("started in {} ms", started.elapsed().as_millis());
    println!("try:");
    println!(
        "  curl -s -X POST http://{address}/v1/login/student -H 'Content-Type: application/json' \\\n    -d '{{\"student_id\":\"demostudent\",\"student_pw\":\"demo-student-pw\"}}'"
    );
    println!(
        "  curl -s http://{address}/v1/students/uuid/student-000000000001 -H \"Authorization: Bearer $TOKEN\""
    );
    let result = gateway(config, listener).await;
    for service in running {
        service.task.abort();
    }
    result
}
