//! The request id: a fresh UUIDv4 per request, returned in `X-Request-Id` and sent to
//! the backends as `x-request-id` metadata (spec §2.1 step 4; backends require a UUID,
//! so a client-supplied value is never trusted).

use axum::http::{HeaderName, HeaderValue};

/// The header name, lower-case as HTTP/2 and gRPC metadata want it.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// A fresh UUIDv4 as a header value (formatted on the stack, one copy into the value).
pub fn fresh() -> HeaderValue {
    let mut text = [0_u8; uuid::fmt::Hyphenated::LENGTH];
    let id = uuid::Uuid::new_v4().hyphenated();
    // A hyphenated UUID is always a valid header value.
    HeaderValue::from_str(id.encode_lower(&mut text))
        .unwrap_or_else(|_| HeaderValue::from_static("00000000-0000-4000-8000-000000000000"))
}
