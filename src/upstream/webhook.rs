//! `POST /events/types/consul-change`: `consul watch` HTTP-handler posts (body = the
//! health array, header `X-Consul-Index`) that trigger an immediate refresh of the
//! service. Authenticated by a shared token in `X-Gateway-Token`; a repeated
//! (service, index) pair is a harmless no-op.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;

use super::Service;
use super::consul::parse_health;
use super::discovery::Discovery;
use crate::http::GatewayError;
use crate::http::error::{envelope_bytes, json_content_type};

/// Header carrying the shared token.
pub const TOKEN_HEADER: &str = "x-gateway-token";

/// The webhook's state.
#[derive(Debug)]
pub struct Webhook {
    token: String,
    discovery: Arc<dyn Discovery>,
    last_index: Mutex<HashMap<Service, u64>>,
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
            last_index: Mutex::new(HashMap::new()),
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
}

/// Handles one post.
pub async fn handle(
    State(webhook): State<Arc<Webhook>>,
    Query(query): Query<WebhookQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, GatewayError> {
    webhook.authenticate(&headers)?;
    let index = headers
        .get("x-consul-index")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .ok_or_else(|| bad("X-Consul-Index header with an integer is required"))?;
    let entries: Vec<serde_json::Value> = serde_json::from_slice(&body)
        .map_err(|e| bad(&format!("body must be the consul health array: {e}")))?;
    parse_health(&body).map_err(|e| bad(&e.to_string()))?;
    let named = query
        .service
        .or_else(|| {
            headers
                .get("service")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        })
        .or_else(|| {
            entries
                .first()
                .and_then(|e| e["Service"]["Service"].as_str())
                .map(str::to_owned)
        })
        .ok_or_else(|| {
            bad("name the service with ?service=, a Service header or a non-empty body")
        })?;
    let service = webhook
        .discovery
        .service_named(&named)
        .ok_or_else(|| bad(&format!("{named} is not a service this gateway routes to")))?;
    let duplicate = {
        let mut last = webhook
            .last_index
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let duplicate = last.get(&service) == Some(&index);
        last.insert(service, index);
        duplicate
    };
    let message = if duplicate {
        "duplicate change event ignored"
    } else {
        webhook.discovery.refresh(service);
        "refresh triggered"
    };
    let mut response = (StatusCode::OK, envelope_bytes(StatusCode::OK, 0, message)).into_response();
    response
        .headers_mut()
        .insert(axum::http::header::CONTENT_TYPE, json_content_type());
    Ok(response)
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
