//! Reference schedule service.

use tonic::service::Routes;

use super::Shared;

/// The schedule service's gRPC services.
pub fn routes(_shared: &Shared) -> Routes {
    Routes::default()
}
