//! The request id: a fresh UUIDv4 per request, returned in `X-Request-Id` and sent to
//! the backends as `x-request-id` metadata (spec §2.1 step 4; backends require a UUID,
//! so a client-supplied value is never trusted).

use axum::http::{HeaderName, Request};
use tower_http::request_id::{MakeRequestId, RequestId};

/// The header name, lower-case as HTTP/2 and gRPC metadata want it.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Makes a UUIDv4 for every request.
#[derive(Clone, Copy, Default)]
pub struct MakeUuid;

impl MakeRequestId for MakeUuid {
    fn make_request_id<B>(&mut self, _request: &Request<B>) -> Option<RequestId> {
        let id = uuid::Uuid::new_v4().hyphenated().to_string();
        id.parse().ok().map(RequestId::new)
    }
}
