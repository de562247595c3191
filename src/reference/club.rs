//! Reference club service.

use tonic::service::Routes;

use super::Shared;

/// The club service's gRPC services.
pub fn routes(_shared: &Shared) -> Routes {
    Routes::default()
}
