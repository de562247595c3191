//! HTTP-side pieces shared by every endpoint: the error type and its envelope, request
//! input reading (query, JSON, multipart) and the request id.

pub mod body;
pub mod cors;
pub mod error;
pub mod form;
pub mod input;
pub mod observe;
pub mod request_id;
pub mod server;
pub mod workers;

pub use error::GatewayError;
