//! Reference announcement service.

use tonic::service::Routes;

use super::Shared;

/// The announcement service's gRPC services.
pub fn routes(_shared: &Shared) -> Routes {
    Routes::default()
}
