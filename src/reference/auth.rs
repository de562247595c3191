//! Reference auth service.

use tonic::service::Routes;

use super::Shared;

/// The auth service's gRPC services.
pub fn routes(_shared: &Shared) -> Routes {
    Routes::default()
}
