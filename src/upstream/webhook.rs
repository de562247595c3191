//! `POST /events/types/consul-change`: posts of `consul watch` HTTP handlers, answered
//! as the original gateway does (spec §4.6), so existing watch configurations work:
//!
//! 1. `X-Consul-Index` missing or empty → 407 `{"status": 407, "message": "please send
//!    the request through the proxy"}`;
//! 2. `Type: checks` → 200, empty body, nothing else;
//! 3. the same (service, index) pair within 60 s → 409, empty body;
//! 4. a body that is not Consul's health array → 400;
//! 5. otherwise the named service (header `Service`, else `?service=`, else the body's
//!    first entry; every service when none is named or the name is unknown, as the
//!    original reloads all five) is re-read from Consul at once, waking its watcher
//!    even in back-off; the consul-change broadcast follows if a list changed. 200,
//!    empty body.
//!
//! Deliberate addition: the shared token in `X-Gateway-Token` is checked first (401
//! without it, 403 when wrong); the original had no authentication.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;
use tokio::time::Instant;

use super::Service;
use super::consul::parse_health;
use super::discovery::Discovery;
use crate::http::GatewayError;
use crate::http::error::json_content_type;

/// Header carrying the shared token.
pub const TOKEN_HEADER: &str = "x-gateway-token";
/// Header carrying the watch result's index (the original's `CONSUL_INDEX_HEADER`).
pub const INDEX_HEADER: &str = "x-consul-index";

/// How long a (service, index) pair is remembered.
const DEDUP_WINDOW: Duration = Duration::from_secs(60);
/// Most remembered pairs (a real setup has a handful per minute).
const DEDUP_CAPACITY: usize = 1024;
/// Longest index value accepted (Consul's are decimal u64s).
const MAX_INDEX_LEN: usize = 64;

/// What a post asks to refresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Target {
    One(Service),
    All,
}

/// The webhook's state.
#[derive(Debug)]
pub struct Webhook {
    token: String,
    discovery: Arc<dyn Discovery>,
    /// (target, index) → when it was processed.
    seen: Mutex<HashMap<(Target, String), Instant>>,
}

#[derive(Debug, Deserialize)]
pub struct WebhookQuery {
    service: Option<String>,
}

impl Webhook {
    pub fn new(token: String, discovery: Arc<dyn Discovery>) -> Self {
        Self {
            token,
            discovery,
            seen: Mutex::new(HashMap::new()),
        }
    }

    fn authenticate(&self, headers: &HeaderMap) -> Result<(), GatewayError> {
        let Some(given) = headers.get(TOKEN_HEADER) else {
            return Err(GatewayError::Unauthenticated {
                code: 0,
                message: format!("{TOKEN_HEADER} header is required"),
            });
        };
        if !constant_time_eq(given.as_bytes(), self.token.as_bytes()) {
            return Err(GatewayError::forbidden("invalid webhook token"));
        }
        Ok(())
    }

    /// `false` when `key` was processed within the window; otherwise `true`, and `key`
    /// is remembered if `remember` (a post that is refused is not processed).
    fn first_time(&self, key: (Target, String), now: Instant, remember: bool) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        seen.retain(|_, at| now.duration_since(*at) < DEDUP_WINDOW);
        if seen.contains_key(&key) {
            return false;
        }
        if !remember {
            return true;
        }
        if seen.len() >= DEDUP_CAPACITY
            && let Some(oldest) = seen
                .iter()
                .min_by_key(|(_, at)| **at)
                .map(|(k, _)| k.clone())
        {
            seen.remove(&oldest);
        }
        seen.insert(key, now);
        true
    }

    fn refresh(&self, target: Target) {
        match target {
            Target::One(service) => self.discovery.refresh(service),
            Target::All => Service::ALL
                .into_iter()
                .for_each(|service| self.discovery.refresh(service)),
        }
    }
}

/// Where the webhook is served.
pub const PATH: &str = "/events/types/consul-change";

/// Handles one post.
pub async fn handle(
    State(webhook): State<Arc<Webhook>>,
    Query(query): Query<WebhookQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, GatewayError> {
    webhook.authenticate(&headers)?;
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    let Some(index) = header(INDEX_HEADER) else {
        return Ok(proxy_required());
    };
    if index.len() > MAX_INDEX_LEN {
        return Err(bad("X-Consul-Index is not a Consul index"));
    }
    if header("type").is_some_and(|t| t.eq_ignore_ascii_case("checks")) {
        return Ok(StatusCode::OK.into_response());
    }
    // Validated now, answered after the duplicate check (the spec's order).
    let parsed = parse_health(&body).map(|_| ());
    let named = header("service")
        .map(str::to_owned)
        .or(query.service)
        .or_else(|| first_service_name(&body));
    let target = match named
        .as_deref()
        .map(|name| webhook.discovery.service_named(name))
    {
        Some(Some(service)) => Target::One(service),
        Some(None) | None => Target::All,
    };
    if !webhook.first_time((target, index.to_owned()), Instant::now(), parsed.is_ok()) {
        return Ok(StatusCode::CONFLICT.into_response());
    }
    if let Err(err) = parsed {
        return Err(bad(&format!("body must be the consul health array: {err}")));
    }
    tracing::debug!(service = ?named, ?target, index, "consul-change webhook: refresh");
    webhook.refresh(target);
    Ok(StatusCode::OK.into_response())
}

/// `Service.Service` of the body's first entry, if any.
fn first_service_name(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Entry {
        #[serde(rename = "Service")]
        service: Named,
    }
    #[derive(Deserialize)]
    struct Named {
        #[serde(rename = "Service")]
        name: String,
    }
    let entries: Vec<Entry> = serde_json::from_slice(body).ok()?;
    entries.into_iter().next().map(|e| e.service.name)
}

/// The original's answer to a post without the index header.
fn proxy_required() -> Response {
    let body = serde_json::json!({
        "status": 407,
        "message": "please send the request through the proxy",
    });
    let mut response =
        (StatusCode::PROXY_AUTHENTICATION_REQUIRED, body.to_string()).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, json_content_type());
    response
}

fn bad(message: &str) -> GatewayError {
    GatewayError::BadRequest {
        code: crate::http::error::code::BIND_FAILURE,
        message: message.to_owned(),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default)]
    struct Recorder(Mutex<Vec<Service>>);

    impl Discovery for Recorder {
        fn refresh(&self, service: Service) {
            self.0.lock().expect("lock").push(service);
        }
        fn service_named(&self, name: &str) -> Option<Service> {
            Service::ALL.into_iter().find(|s| s.as_str() == name)
        }
    }

    #[tokio::test(start_paused = true)]
    async fn pairs_are_remembered_for_a_minute_and_the_table_is_bounded() {
        let webhook = Webhook::new("t".repeat(16), Arc::new(Recorder::default()));
        let key = |i: usize| (Target::One(Service::Auth), i.to_string());
        let start = Instant::now();
        assert!(webhook.first_time(key(1), start, true));
        assert!(!webhook.first_time(key(1), start + Duration::from_secs(59), true));
        assert!(webhook.first_time((Target::All, "1".into()), start, true));
        assert!(webhook.first_time(key(1), start + DEDUP_WINDOW, true));
        // A refused post is not remembered.
        assert!(webhook.first_time(key(2), start + DEDUP_WINDOW, false));
        assert!(webhook.first_time(key(2), start + DEDUP_WINDOW, true));
        for i in 0..DEDUP_CAPACITY * 2 {
            webhook.first_time(key(i + 10), start + DEDUP_WINDOW, true);
        }
        assert!(webhook.seen.lock().expect("lock").len() <= DEDUP_CAPACITY);
    }

    #[test]
    fn the_service_can_come_from_the_body() {
        let body = br#"[{"Node":{"Address":"10.0.0.1"},"Service":{"ID":"a-1","Service":"auth","Port":1},"Checks":[]}]"#;
        assert_eq!(first_service_name(body).as_deref(), Some("auth"));
        assert_eq!(first_service_name(b"[]"), None);
        assert_eq!(first_service_name(b"{}"), None);
    }
}
