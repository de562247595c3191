//! A thin client for the parts of Consul's HTTP API the gateway uses
//! (`shared/spec/consul.md`): healthy instances with blocking queries, TTL check
//! updates, service maintenance, service registration. The ACL token travels in
//! `X-Consul-Token`; unknown JSON fields are ignored.

use std::time::Duration;

use reqwest::StatusCode;
use serde::{Deserialize, Serialize};

/// A Consul call that failed.
#[derive(Debug, thiserror::Error)]
pub enum ConsulError {
    #[error("consul request failed: {0}")]
    Transport(#[from] reqwest::Error),
    #[error("consul answered {status}: {body}")]
    Status { status: StatusCode, body: String },
    #[error("consul answer is not valid JSON of the expected shape: {0}")]
    Decode(String),
}

/// One healthy instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// The service instance id (`Service.ID`).
    pub id: String,
    /// `host:port`, IPv6 literals bracketed; the node's address when the service has none.
    pub address: String,
}

/// The answer of a health query.
#[derive(Debug, Clone)]
pub struct Health {
    pub instances: Vec<Instance>,
    /// `X-Consul-Index` of the answer (0 when absent).
    pub index: u64,
}

#[derive(Debug, Deserialize)]
struct Entry {
    #[serde(rename = "Node")]
    node: NodeJson,
    #[serde(rename = "Service")]
    service: ServiceJson,
}

#[derive(Debug, Deserialize)]
struct NodeJson {
    #[serde(rename = "Address", default)]
    address: String,
}

#[derive(Debug, Deserialize)]
struct ServiceJson {
    #[serde(rename = "ID", default)]
    id: String,
    #[serde(rename = "Address", default)]
    address: String,
    #[serde(rename = "Port", default)]
    port: u16,
}

/// Parses a `/v1/health/service` answer (also the body of a `consul watch` post).
pub fn parse_health(body: &[u8]) -> Result<Vec<Instance>, ConsulError> {
    let entries: Vec<Entry> =
        serde_json::from_slice(body).map_err(|e| ConsulError::Decode(e.to_string()))?;
    let mut instances: Vec<Instance> = entries
        .into_iter()
        .filter(|e| !e.service.id.is_empty() && e.service.port != 0)
        .map(|e| {
            // Address rule: an empty service address means the node's address.
            let host = if e.service.address.is_empty() {
                e.node.address
            } else {
                e.service.address
            };
            Instance {
                id: e.service.id,
                address: join_host_port(&host, e.service.port),
            }
        })
        .filter(|i| !i.address.starts_with(':'))
        .collect();
    instances.sort_by(|a, b| a.id.cmp(&b.id).then(a.address.cmp(&b.address)));
    instances.dedup();
    Ok(instances)
}

fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// A TTL check to register with a service.
#[derive(Debug, Clone, Serialize)]
pub struct TtlCheck {
    #[serde(rename = "CheckID")]
    pub check_id: String,
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "TTL")]
    pub ttl: String,
    #[serde(rename = "Status")]
    pub status: String,
    #[serde(rename = "DeregisterCriticalServiceAfter")]
    pub deregister_critical_after: String,
}

/// A service registration.
#[derive(Debug, Clone, Serialize)]
pub struct Registration {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "Tags")]
    pub tags: Vec<String>,
    #[serde(rename = "Address")]
    pub address: String,
    #[serde(rename = "Port")]
    pub port: u16,
    #[serde(rename = "Meta")]
    pub meta: std::collections::BTreeMap<String, String>,
    #[serde(rename = "Check")]
    pub check: TtlCheck,
}

/// Check states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckStatus {
    Passing,
    Warning,
    Critical,
}

#[derive(Serialize)]
struct CheckUpdate<'a> {
    #[serde(rename = "Status")]
    status: CheckStatus,
    #[serde(rename = "Output")]
    output: &'a str,
}

/// The client.
#[derive(Debug, Clone)]
pub struct ConsulClient {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    datacenter: Option<String>,
    request_timeout: Duration,
}

impl ConsulClient {
    /// A client for the agent at `base` (e.g. `http://127.0.0.1:8500`).
    pub fn new(
        base: &str,
        token: Option<String>,
        datacenter: Option<String>,
        request_timeout: Duration,
    ) -> Result<Self, ConsulError> {
        let http = reqwest::Client::builder()
            .connect_timeout(request_timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .build()?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            token,
            datacenter,
            request_timeout,
        })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.header("X-Consul-Token", token);
        }
        if let Some(dc) = &self.datacenter {
            request = request.query(&[("dc", dc)]);
        }
        request
    }

    /// Passing instances of `service`. With `index`, a blocking query that returns when
    /// the result changes past `index` or after `wait`.
    pub async fn health(
        &self,
        service: &str,
        index: Option<u64>,
        wait: Duration,
    ) -> Result<Health, ConsulError> {
        let path = format!("/v1/health/service/{}", encode(service));
        let mut request = self
            .request(reqwest::Method::GET, &path)
            .query(&[("passing", "true")]);
        let timeout = match index {
            Some(index) => {
                let wait_ms = wait.as_millis().max(1);
                request = request.query(&[
                    ("index", index.to_string()),
                    ("wait", format!("{wait_ms}ms")),
                ]);
                // Consul may hold the answer for wait + wait/16 of jitter.
                wait + wait / 16 + self.request_timeout
            }
            None => self.request_timeout,
        };
        let response = request.timeout(timeout).send().await?;
        let response = ok_or_status(response).await?;
        let index = response
            .headers()
            .get("X-Consul-Index")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let body = response.bytes().await?;
        Ok(Health {
            instances: parse_health(&body)?,
            index,
        })
    }

    /// Whether the agent answers and knows a raft leader (`GET /v1/status/leader`, no
    /// ACL needed): the cheap probe of a watcher waiting for Consul to come back.
    pub async fn leader(&self, timeout: Duration) -> Result<bool, ConsulError> {
        let response = self
            .request(reqwest::Method::GET, "/v1/status/leader")
            .timeout(timeout)
            .send()
            .await?;
        let body = ok_or_status(response).await?.bytes().await?;
        // `""` while the cluster has no leader: health queries would still fail.
        let leader: String =
            serde_json::from_slice(&body).map_err(|e| ConsulError::Decode(e.to_string()))?;
        Ok(!leader.is_empty())
    }

    /// Sets a TTL check's state (and restarts its TTL).
    pub async fn update_check(
        &self,
        check_id: &str,
        status: CheckStatus,
        output: &str,
    ) -> Result<(), ConsulError> {
        let path = format!("/v1/agent/check/update/{}", encode(check_id));
        let response = self
            .request(reqwest::Method::PUT, &path)
            .timeout(self.request_timeout)
            .json(&CheckUpdate { status, output })
            .send()
            .await?;
        ok_or_status(response).await.map(drop)
    }

    /// Puts a service instance into (or out of) maintenance: a critical check that no
    /// TTL heartbeat overrides.
    pub async fn maintenance(
        &self,
        service_id: &str,
        enable: bool,
        reason: &str,
    ) -> Result<(), ConsulError> {
        let path = format!("/v1/agent/service/maintenance/{}", encode(service_id));
        let response = self
            .request(reqwest::Method::PUT, &path)
            .query(&[
                ("enable", if enable { "true" } else { "false" }),
                ("reason", reason),
            ])
            .timeout(self.request_timeout)
            .send()
            .await?;
        ok_or_status(response).await.map(drop)
    }

    /// Registers a service instance on the agent.
    pub async fn register(&self, registration: &Registration) -> Result<(), ConsulError> {
        let response = self
            .request(reqwest::Method::PUT, "/v1/agent/service/register")
            .timeout(self.request_timeout)
            .json(registration)
            .send()
            .await?;
        ok_or_status(response).await.map(drop)
    }

    /// Removes a service instance from the agent.
    pub async fn deregister(&self, service_id: &str) -> Result<(), ConsulError> {
        let path = format!("/v1/agent/service/deregister/{}", encode(service_id));
        let response = self
            .request(reqwest::Method::PUT, &path)
            .timeout(self.request_timeout)
            .send()
            .await?;
        ok_or_status(response).await.map(drop)
    }
}

async fn ok_or_status(response: reqwest::Response) -> Result<reqwest::Response, ConsulError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let body = response.text().await.unwrap_or_default();
    Err(ConsulError::Status {
        status,
        body: body.chars().take(200).collect(),
    })
}

/// Percent-encodes a path segment.
fn encode(segment: &str) -> String {
    percent_encoding::utf8_percent_encode(segment, percent_encoding::NON_ALPHANUMERIC)
        .to_string()
        .replace("%2E", ".")
        .replace("%2D", "-")
        .replace("%5F", "_")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!(
            "{}/tests/fixtures/consul/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn address_rule_and_ipv6() {
        let body = br#"[
          {"Node":{"Address":"10.0.0.9","Extra":1},"Service":{"ID":"a","Address":"","Port":50051,"New":"x"},"Checks":[]},
          {"Node":{"Address":"10.0.0.9"},"Service":{"ID":"b","Address":"fe80::1","Port":50052},"Checks":[]},
          {"Node":{"Address":"10.0.0.9"},"Service":{"ID":"c","Address":"outing.local","Port":50053},"Checks":[]}
        ]"#;
        let instances = parse_health(body).expect("parse");
        assert_eq!(
            instances,
            vec![
                Instance {
                    id: "a".into(),
                    address: "10.0.0.9:50051".into()
                },
                Instance {
                    id: "b".into(),
                    address: "[fe80::1]:50052".into()
                },
                Instance {
                    id: "c".into(),
                    address: "outing.local:50053".into()
                },
            ]
        );
    }

    #[test]
    fn garbage_is_a_decode_error() {
        for body in [&b"{}"[..], b"nope", b"[{\"Node\":1}]"] {
            assert!(matches!(parse_health(body), Err(ConsulError::Decode(_))));
        }
        assert!(parse_health(b"[]").expect("empty").is_empty());
    }

    #[test]
    fn fixture_health_answer_parses() {
        let body = fixture("health-service-outing.json");
        let instances = parse_health(&body).expect("fixture parses");
        assert_eq!(
            instances,
            vec![
                Instance {
                    id: "outing-6c1f2a".into(),
                    address: "10.0.1.21:10110".into()
                },
                // Empty Service.Address: reached at the node's address.
                Instance {
                    id: "outing-9d0e11".into(),
                    address: "10.0.1.12:10111".into()
                },
            ]
        );
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(
            encode("DMS.SMS.v1.service.outing"),
            "DMS.SMS.v1.service.outing"
        );
        assert_eq!(encode("a/b c"), "a%2Fb%20c");
    }
}
