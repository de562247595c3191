//! Endpoints of the club service.

use crate::endpoints::Endpoint;

/// The club service's entries of the endpoint table.
pub fn endpoints() -> Vec<Endpoint> {
    Vec::new()
}
