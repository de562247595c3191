//! The request id: a fresh UUIDv4 per request, returned in `X-Request-Id` and sent to
//! the backends as `x-request-id` metadata (spec §2.1 step 4; backends require a UUID,
//! so a client-supplied value is never trusted).

use axum::http::{HeaderName, HeaderValue};
use bytes::Bytes;

/// The header name, lower-case as HTTP/2 and gRPC metadata want it.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// A fresh UUIDv4 as a header value: formatted on the stack, then moved into one
/// reference-counted allocation, so the copies for the response, the log line and every
/// call's metadata allocate nothing (a value copied from a slice allocates again on its
/// first clone).
pub fn fresh() -> HeaderValue {
    let mut text = [0_u8; uuid::fmt::Hyphenated::LENGTH];
    uuid::Uuid::new_v4().hyphenated().encode_lower(&mut text);
    // A hyphenated UUID is always a valid header value.
    HeaderValue::from_maybe_shared(Bytes::from_owner(text))
        .unwrap_or_else(|_| HeaderValue::from_static("00000000-0000-4000-8000-000000000000"))
}
