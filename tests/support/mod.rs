//! Test harness: the five reference services and a gateway, each on its own free
//! loopback port, talking real gRPC and real HTTP.
#![allow(dead_code)]

pub mod cases;
pub mod consul;
pub mod proxy;

use std::collections::BTreeMap;
use std::net::SocketAddr;

use sms_gateway::app;
use sms_gateway::auth::{JwtKeys, TokenLifetimes};
use sms_gateway::config::Config;
use sms_gateway::http::server::ServerSettings;
use sms_gateway::http::workers::{WorkerThreads, Workers};
use sms_gateway::reference::{self, Options, Shared};
use sms_gateway::upstream::Service;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

#[allow(unused_imports)]
pub use sms_gateway::reference::seed;

/// The consul-change webhook token of gateways started with [`Gateway::start_consul`].
pub const WEBHOOK_TOKEN: &str = "test-webhook-token-0123456789";

/// The test secret (never used outside tests).
pub const SECRET: &str = "test-secret-test-secret-test-secret-0123";

/// A running gateway in front of running reference services.
pub struct Gateway {
    pub base: String,
    /// `http://<admin listener>` (`/metrics`, `/admin/audit`).
    pub admin_base: String,
    admin_task: tokio::task::JoinHandle<()>,
    pub address: SocketAddr,
    pub client: reqwest::Client,
    pub shared: Shared,
    pub services: Vec<reference::Running>,
    keys: JwtKeys,
    stop: Option<oneshot::Sender<()>>,
    /// The public listener's task: ends when a shutdown has drained every connection.
    served: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    /// The built gateway (state, background tasks).
    pub gateway: app::Gateway,
    /// With `runtime.flavor = "thread_per_core"`: the workers (this test's runtime is
    /// worker 0) and their threads, stopped when the gateway is dropped.
    pub workers: Workers,
    _worker_threads: Option<WorkerThreads>,
}

/// Config text for the given service addresses.
pub fn config_text(addresses: &BTreeMap<Service, Vec<String>>) -> String {
    // Tests send bursts from one loopback address: the guard's defaults (50 requests a
    // second per IP, 1000 per service) and the per-IP connection cap (256; 400
    // concurrent requests open as many connections) are raised here; tests/e2e_guard.rs
    // and tests/e2e_edge.rs set their own.
    let mut text = format!(
        "[jwt]\nsecret = \"{SECRET}\"\n[log]\nformat = \"text\"\n[http]\nmax_connections_per_ip = 4096\n\
         [guard.ip]\nlimit = 1000000\n[guard.services]\nper_second = 1000000\nburst = 1000000\n"
    );
    for (service, addrs) in addresses {
        let list: Vec<String> = addrs.iter().map(|a| format!("\"{a}\"")).collect();
        text.push_str(&format!(
            "[upstream.services.{service}]\naddresses = [{}]\n",
            list.join(", ")
        ));
    }
    text
}

impl Gateway {
    /// Reference services (seeded) and a gateway with the default configuration.
    pub async fn start() -> Self {
        Self::start_with(Options::default(), |_| {}).await
    }

    /// Like [`Gateway::start`], with service options and a config tweak.
    pub async fn start_with(options: Options, tweak: impl FnOnce(&mut Config)) -> Self {
        let shared = Shared::seeded();
        let services = reference::spawn_all(None, &shared, &options)
            .await
            .expect("reference services");
        let addresses: BTreeMap<Service, Vec<String>> = services
            .iter()
            .map(|r| (r.service, vec![r.address.to_string()]))
            .collect();
        let mut gateway = Self::start_for(&addresses, tweak).await;
        gateway.shared = shared;
        gateway.services = services;
        gateway
    }

    /// A gateway in front of the given addresses (no reference services of its own).
    pub async fn start_for(
        addresses: &BTreeMap<Service, Vec<String>>,
        tweak: impl FnOnce(&mut Config),
    ) -> Self {
        Self::start_config(&config_text(addresses), tweak).await
    }

    /// A gateway discovering its instances in the Consul agent at `consul_url`.
    pub async fn start_consul(consul_url: &str, tweak: impl FnOnce(&mut Config)) -> Self {
        let text = format!(
            "{}[discovery]\nmode = \"consul\"\n[consul]\naddress = \"{consul_url}\"\nwebhook_token = \"{WEBHOOK_TOKEN}\"\n",
            config_text(&BTreeMap::new())
        );
        Self::start_config(&text, tweak).await
    }

    /// A gateway from configuration text, tweaked.
    pub async fn start_config(text: &str, tweak: impl FnOnce(&mut Config)) -> Self {
        let mut config =
            Config::from_toml(text, &BTreeMap::<String, String>::new()).expect("config");
        tweak(&mut config);
        config.validate().expect("tweaked config");
        let gateway = app::build(&config).expect("gateway");
        let router = gateway.router.clone();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("addr");
        let admin = TcpListener::bind("127.0.0.1:0").await.expect("bind admin");
        let admin_base = format!("http://{}", admin.local_addr().expect("admin addr"));
        let admin_task = tokio::spawn(sms_gateway::admin::serve(admin, gateway.state.clone()));
        let (stop, stopped) = oneshot::channel::<()>();
        let mut settings = ServerSettings::from_config(&config);
        let (workers, worker_threads) = Workers::for_runtime(&config.runtime).expect("workers");
        settings.workers = workers.clone();
        let served = tokio::spawn(app::serve_with(
            listener,
            router,
            async move {
                let _ = stopped.await;
            },
            settings,
            gateway.state.metrics.clone(),
        ));
        let keys = JwtKeys::new(
            SECRET.as_bytes(),
            config.jwt.algorithm,
            config.jwt.leeway,
            TokenLifetimes::default(),
        );
        Self {
            base: format!("http://{address}"),
            admin_base,
            admin_task,
            address,
            client: reqwest::Client::builder().build().expect("client"),
            shared: Shared::seeded(),
            services: Vec::new(),
            keys,
            stop: Some(stop),
            served: Some(served),
            gateway,
            workers,
            _worker_threads: worker_threads,
        }
    }

    /// Starts a graceful shutdown of the public listener (reference services and the
    /// admin listener keep running) and returns its task, which ends once every
    /// connection has been drained.
    pub fn begin_shutdown(&mut self) -> tokio::task::JoinHandle<std::io::Result<()>> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.served.take().expect("shut down once")
    }

    /// `base` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The admin listener's `base` + `path`.
    pub fn admin_url(&self, path: &str) -> String {
        format!("{}{path}", self.admin_base)
    }

    /// The Prometheus text of the admin listener's `/metrics`.
    pub async fn metrics(&self) -> String {
        let response = self
            .client
            .get(self.admin_url("/metrics"))
            .send()
            .await
            .expect("metrics");
        assert_eq!(response.status(), 200);
        response.text().await.expect("metrics text")
    }

    /// A valid token for `uuid`, minted with the test secret.
    pub fn token(&self, uuid: &str) -> String {
        self.keys.issue(uuid).expect("token")
    }

    /// The address of a running reference service.
    pub fn service_address(&self, service: Service) -> SocketAddr {
        self.services
            .iter()
            .find(|r| r.service == service)
            .map(|r| r.address)
            .expect("service running")
    }

    /// Sends `request` and returns the status and the JSON body (`Null` when the body
    /// is not JSON).
    pub async fn send(&self, request: reqwest::RequestBuilder) -> (u16, serde_json::Value) {
        let response = request.send().await.expect("response");
        let status = response.status().as_u16();
        let bytes = response.bytes().await.expect("body");
        let body = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        (status, body)
    }

    /// `send` with a bearer token for `uuid` (or none when `uuid` is empty).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        uuid: &str,
        json: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let mut request = self.client.request(method, self.url(path));
        if !uuid.is_empty() {
            request = request.bearer_auth(self.token(uuid));
        }
        if let Some(json) = json {
            request = request.json(&json);
        }
        self.send(request).await
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.admin_task.abort();
        for running in &self.services {
            running.task.abort();
        }
    }
}

/// Asserts the contract envelope: `status` equals the HTTP status, `code` is an integer,
/// `message` a string.
pub fn assert_envelope(status: u16, body: &serde_json::Value) {
    assert_eq!(body["status"], status, "status field of {body}");
    assert!(body["code"].is_i64(), "code of {body}");
    assert!(body["message"].is_string(), "message of {body}");
}

/// Log lines written by a test's subscriber (its `MakeWriter` clones this).
#[derive(Clone, Default)]
pub struct Lines(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lines").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Lines {
    /// Everything written so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("lines")).into_owned()
    }
}
