//! Reference outing service.

use tonic::service::Routes;

use super::Shared;

/// The outing service's gRPC services.
pub fn routes(_shared: &Shared) -> Routes {
    Routes::default()
}
