//! The one error type of the gateway and the contract envelope it is written as.
//!
//! Every failure a layer or a pipeline stage can produce is a [`GatewayError`]; its
//! `IntoResponse` is the only place that writes an error body (spec README decision 2:
//! `{status, code, message}`). It does not log: the access log reads the outcome from
//! the response extensions.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// Contract codes the gateway itself emits (spec §6 "gateway.go").
pub mod code {
    pub const NO_AUTHORIZATION: i32 = -101;
    pub const INVALID_AUTHORIZATION_FORMAT: i32 = -102;
    pub const INVALID_SIGNATURE: i32 = -103;
    pub const EXPIRED_TOKEN: i32 = -104;
    pub const INVALID_CLAIMS: i32 = -105;
    pub const UNSUPPORTED_AUTHORIZATION: i32 = -106;
    pub const UNSUPPORTED_CONTENT_TYPE: i32 = -201;
    pub const BIND_FAILURE: i32 = -202;
    pub const INTEGRITY_INVALID: i32 = -203;
    pub const INVALID_PATH_VARIABLE: i32 = -204;
    pub const NO_SERVICE_INSTANCE: i32 = -301;
    pub const BREAKER_OPEN: i32 = -302;
}

/// Every outcome other than a success body.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GatewayError {
    /// 401 with one of the codes -101..-106 or 0 (spec §2.3).
    #[error("{message}")]
    Unauthenticated { code: i32, message: String },
    /// 403: the caller's account kind or uuid may not use this endpoint (decision 7).
    #[error("{message}")]
    Forbidden { message: String },
    /// 400 with one of the codes -201..-204.
    #[error("{message}")]
    BadRequest { code: i32, message: String },
    /// 404: no route.
    #[error("no route for {path}")]
    NotFound { path: String },
    /// 405: the route exists with other methods.
    #[error("method {method} is not allowed here")]
    MethodNotAllowed { method: String },
    /// 413: the body is larger than the configured limit.
    #[error("request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    /// 408: the client did not send its request body in time (`http.body_*timeout`).
    #[error("request body not received in time")]
    BodyTimeout,
    /// 431: the request head is over `http.max_header_bytes` or `http.max_headers`.
    #[error("request headers too large")]
    HeadersTooLarge { bytes: usize, count: usize },
    /// 429: too many requests; the client may retry after the given time.
    #[error("too many requests")]
    RateLimited { retry_after: Duration },
    /// 403 while a client IP is blocked by the flood guard.
    #[error("client is blocked")]
    Blocked { retry_after: Duration },
    /// 503 / -301: no instance of the service to call (decision 18).
    #[error("available service node is not exist ({service})")]
    NoHealthyInstance {
        service: &'static str,
        detail: String,
    },
    /// 503 / -301: the service already has as many calls in flight and waiting as its
    /// overload bounds allow ([`crate::upstream::shed`]); the backend was not called.
    #[error("too many calls in flight to the {service} service")]
    Overloaded { service: &'static str },
    /// 429: too many failed logins for this account ([`crate::guard::login`]).
    #[error("too many failed logins")]
    LoginThrottled { retry_after: Duration },
    /// 503 / -302: the chosen instance's breaker is open.
    #[error("circuit breaker is open (service id: {instance})")]
    BreakerOpen {
        instance: String,
        open_for: Duration,
    },
    /// 408 / 0: the call's deadline passed (decision 16).
    #[error("request time out for {rpc} service")]
    Deadline { rpc: &'static str, sent: bool },
    /// 500 / 0: the call failed with a gRPC status or a transport error after sending.
    #[error("{rpc} returns unexpected error, code: {grpc_code}, detail: {detail}")]
    Upstream {
        rpc: &'static str,
        grpc_code: i32,
        detail: String,
        /// Whether the request may have reached the backend (decision 14).
        sent: bool,
    },
    /// A backend's non-2xx in-band reply, relayed as `{status, code, message}`.
    #[error("{message}")]
    Relayed {
        status: StatusCode,
        code: i32,
        message: String,
    },
    /// 502: the backend's in-band status is not a usable HTTP status (decision 3).
    #[error("{rpc} replied with in-band status {status}, which is not an HTTP status")]
    InvalidUpstreamStatus { rpc: &'static str, status: i64 },
    /// 500: a defect inside the gateway; the detail is logged, never sent.
    #[error("internal error: {0}")]
    Internal(String),
}

// === impl GatewayError ===

impl GatewayError {
    /// 400 with code -202 (the input could not be parsed). `err` is serde's or the
    /// binder's text; Rust's type names in it are replaced by JSON's ([`plain`]).
    pub fn bind(source: &str, err: impl std::fmt::Display) -> Self {
        Self::BadRequest {
            code: code::BIND_FAILURE,
            message: format!(
                "failed to bind {source} into request, err: {}",
                plain(&err.to_string())
            ),
        }
    }

    /// 400 with code -202 and a fixed reason; `detail` (a library's error) goes to
    /// the debug log only.
    pub fn bind_opaque(source: &str, reason: &str, detail: impl std::fmt::Display) -> Self {
        tracing::debug!(%detail, "{source}: {reason}");
        Self::BadRequest {
            code: code::BIND_FAILURE,
            message: format!("failed to bind {source} into request, err: {reason}"),
        }
    }

    /// 400 with code -203 (a validation rule failed).
    pub fn integrity(detail: impl std::fmt::Display) -> Self {
        Self::BadRequest {
            code: code::INTEGRITY_INVALID,
            message: format!("request is not valid for integrity constraints, err: {detail}"),
        }
    }

    /// 400 with code -204 (a path parameter is malformed, decision 8).
    pub fn path_variable(name: &str, rule: impl std::fmt::Display) -> Self {
        Self::BadRequest {
            code: code::INVALID_PATH_VARIABLE,
            message: format!("invalid path variable '{name}': must be {rule}"),
        }
    }

    /// 403 with the default message.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::Forbidden {
            message: message.into(),
        }
    }

    /// The HTTP status of the envelope.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Unauthenticated { .. } => StatusCode::UNAUTHORIZED,
            Self::Forbidden { .. } | Self::Blocked { .. } => StatusCode::FORBIDDEN,
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::NotFound { .. } => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::HeadersTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::RateLimited { .. } | Self::LoginThrottled { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::NoHealthyInstance { .. } | Self::BreakerOpen { .. } | Self::Overloaded { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Deadline { .. } => StatusCode::REQUEST_TIMEOUT,
            Self::Upstream { .. } | Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Relayed { status, .. } => *status,
            Self::InvalidUpstreamStatus { .. } => StatusCode::BAD_GATEWAY,
        }
    }

    /// The contract code of the envelope.
    pub fn code(&self) -> i32 {
        match self {
            Self::Unauthenticated { code, .. }
            | Self::BadRequest { code, .. }
            | Self::Relayed { code, .. } => *code,
            Self::NoHealthyInstance { .. } | Self::Overloaded { .. } => code::NO_SERVICE_INSTANCE,
            Self::BreakerOpen { .. } => code::BREAKER_OPEN,
            _ => 0,
        }
    }

    /// The human-readable message of the envelope. Internal details stay out of it.
    pub fn message(&self) -> String {
        match self {
            Self::Unauthenticated { message, .. }
            | Self::Forbidden { message }
            | Self::BadRequest { message, .. }
            | Self::Relayed { message, .. } => message.clone(),
            Self::NotFound { .. } => "no endpoint matches this path".to_owned(),
            Self::MethodNotAllowed { method } => {
                format!("method {method} is not allowed on this path")
            }
            Self::PayloadTooLarge { limit } => {
                format!("request body is larger than the limit of {limit} bytes")
            }
            Self::BodyTimeout => "the request body was not received in time".to_owned(),
            Self::HeadersTooLarge { bytes, count } => {
                format!("request headers are too large (at most {bytes} bytes and {count} fields)")
            }
            Self::RateLimited { .. } => "too many requests, please retry later".to_owned(),
            Self::Blocked { .. } => {
                "unusual request was detected. Please try again after a minute".to_owned()
            }
            Self::NoHealthyInstance { .. } => {
                "available service node is not exist in consul".to_owned()
            }
            Self::Overloaded { service } => {
                format!("the {service} service is busy, please retry shortly")
            }
            Self::LoginThrottled { retry_after } => format!(
                "too many failed login attempts, please retry after {} seconds",
                retry_secs(*retry_after)
            ),
            Self::BreakerOpen { instance, open_for } => format!(
                "circuit breaker is open (service id: {instance}, time out: {}s)",
                open_for.as_secs()
            ),
            Self::Deadline { rpc, .. } => {
                format!("request time out for {rpc} service, detail: context deadline exceeded")
            }
            Self::Upstream {
                rpc,
                grpc_code,
                detail,
                ..
            } => {
                // The backend's or the transport's text stays in the log line (the
                // error's Display); the client learns the call and the gRPC code.
                let _ = detail;
                format!("{rpc} returns unexpected error, code: {grpc_code}")
            }
            Self::InvalidUpstreamStatus { rpc, status } => {
                format!("{rpc} replied with an invalid status ({status})")
            }
            Self::Internal(_) => "internal error of the gateway".to_owned(),
        }
    }

    /// Whether the failed call may have reached the backend (decision 14: a read is
    /// retried on another instance only when it was not).
    pub fn was_sent(&self) -> bool {
        match self {
            Self::Deadline { sent, .. } | Self::Upstream { sent, .. } => *sent,
            Self::NoHealthyInstance { .. } | Self::BreakerOpen { .. } | Self::Overloaded { .. } => {
                false
            }
            _ => true,
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after }
            | Self::Blocked { retry_after }
            | Self::LoginThrottled { retry_after } => Some(*retry_after),
            // A shed call is worth retrying about a second later.
            Self::Overloaded { .. } => Some(Duration::from_secs(1)),
            _ => None,
        }
    }
}

/// The contract envelope without data fields.
#[derive(Serialize)]
struct Envelope<'a> {
    code: i32,
    message: &'a str,
    status: u16,
}

/// What the access log needs to know about a failure, carried in the response extensions.
#[derive(Debug, Clone)]
pub struct Failure(pub GatewayError);

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = self.message();
        let body = envelope_bytes(status, self.code(), &message);
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, json_content_type());
        // An error is never worth storing: it may be gone on the next try.
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(after) = self.retry_after() {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_secs(after)));
        }
        response.extensions_mut().insert(Failure(self));
        response
    }
}

/// serde's wording with Rust's vocabulary replaced by JSON's: `expected struct
/// LoginStudentInput` becomes `expected a JSON object`, `expected u32` becomes
/// `expected a non-negative integer`, `sequence` becomes `array`.
pub fn plain(text: &str) -> String {
    let text = text
        .replace("a sequence", "an array")
        .replace("a map", "an object");
    let mut out = Vec::new();
    let mut words = text.split(' ').peekable();
    while let Some(word) = words.next() {
        let core = word.trim_end_matches([',', '.', ';', ':']);
        let tail = &word[core.len()..];
        let replaced = match core {
            "struct" | "enum" if words.peek().is_some() => {
                let name = words.next().unwrap_or_default();
                let name_tail = name.trim_start_matches(|c: char| c.is_alphanumeric() || c == '_');
                let what = if core == "struct" {
                    "a JSON object"
                } else {
                    "one of the allowed values"
                };
                out.push(format!("{what}{name_tail}"));
                continue;
            }
            "u8" | "u16" | "u32" | "u64" | "u128" | "usize" => "a non-negative integer",
            "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => "an integer",
            "f32" | "f64" => "a number",
            "sequence" => "array",
            "map" => "object",
            "`()`" | "unit" => "null",
            _ => {
                out.push(word.to_owned());
                continue;
            }
        };
        out.push(format!("{replaced}{tail}"));
    }
    out.join(" ")
}

/// Whole seconds of a `Retry-After`, rounded up, at least 1.
fn retry_secs(after: Duration) -> u64 {
    after.as_secs_f64().ceil().max(1.0) as u64
}

/// Serializes `{status, code, message}`.
pub fn envelope_bytes(status: StatusCode, code: i32, message: &str) -> Vec<u8> {
    let envelope = Envelope {
        code,
        message,
        status: status.as_u16(),
    };
    // Serializing a struct of an int, an int and a str cannot fail.
    serde_json::to_vec(&envelope).unwrap_or_default()
}

/// `application/json; charset=utf-8`, as the original gateway sends it.
pub fn json_content_type() -> HeaderValue {
    HeaderValue::from_static("application/json; charset=utf-8")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_writes_the_envelope_with_its_status() {
        let cases = [
            GatewayError::Unauthenticated {
                code: code::NO_AUTHORIZATION,
                message: "authorization doesn't exist in header".into(),
            },
            GatewayError::NoHealthyInstance {
                service: "outing",
                detail: String::new(),
            },
            GatewayError::Deadline {
                rpc: "CreateOuting",
                sent: true,
            },
            GatewayError::InvalidUpstreamStatus {
                rpc: "CreateOuting",
                status: 0,
            },
        ];
        for err in cases {
            let status = err.status();
            let code = err.code();
            let bytes = envelope_bytes(status, code, &err.message());
            let value: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
            assert_eq!(value["status"], status.as_u16());
            assert_eq!(value["code"], code);
            assert!(value["message"].as_str().is_some_and(|m| !m.is_empty()));
        }
    }

    #[test]
    fn serde_texts_lose_their_rust_names() {
        let cases = [
            (
                "invalid type: sequence, expected struct LoginStudentInput at line 1 column 0",
                "invalid type: array, expected a JSON object at line 1 column 0",
            ),
            (
                "invalid value: integer `-1`, expected u32 at line 1 column 9",
                "invalid value: integer `-1`, expected a non-negative integer at line 1 column 9",
            ),
            (
                "invalid type: map, expected a sequence",
                "invalid type: object, expected an array",
            ),
            (
                "expected enum Situation",
                "expected one of the allowed values",
            ),
            (
                "invalid type: floating point `1.5`, expected i64",
                "invalid type: floating point `1.5`, expected an integer",
            ),
            (
                "'start' must be a non-negative integer, got 'abc'",
                "'start' must be a non-negative integer, got 'abc'",
            ),
        ];
        for (serde, wanted) in cases {
            assert_eq!(plain(serde), wanted);
        }
        let upstream = GatewayError::Upstream {
            rpc: "GetOuting",
            grpc_code: 13,
            detail: "h2 protocol error: Error { kind: GoAway }".into(),
            sent: true,
        };
        assert_eq!(
            upstream.message(),
            "GetOuting returns unexpected error, code: 13"
        );
        assert!(
            upstream.to_string().contains("GoAway"),
            "the log keeps the detail"
        );
    }

    #[test]
    fn errors_are_not_stored() {
        let response = GatewayError::NotFound { path: "/x".into() }.into_response();
        assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
    }

    #[test]
    fn rate_limited_carries_retry_after() {
        let response = GatewayError::RateLimited {
            retry_after: Duration::from_millis(1500),
        }
        .into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
    }
}
