//! Upstream side: which instances a service has ([`pool`], kept current by
//! [`discovery`] from static addresses or Consul), the per-instance [`breaker`] and its
//! Consul health [`flip`], and the gRPC [`call`] with its deadline and metadata.

pub mod breaker;
pub mod broadcast;
pub mod call;
pub mod connection;
pub mod consul;
pub mod discovery;
pub mod flip;
pub mod pool;
pub mod shed;
pub mod webhook;

use std::fmt;

use serde::{Deserialize, Serialize};

pub use call::{CallMeta, Upstreams};
pub use connection::ConnectSettings;
pub use pool::{Node, NodeList, ServicePool};

/// The five backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Service {
    Auth,
    Club,
    Outing,
    Schedule,
    Announcement,
}

impl Service {
    /// All services, in a fixed order (also the index order of per-service arrays).
    pub const ALL: [Service; 5] = [
        Service::Auth,
        Service::Club,
        Service::Outing,
        Service::Schedule,
        Service::Announcement,
    ];

    /// Short name used in config keys, metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auth => "auth",
            Self::Club => "club",
            Self::Outing => "outing",
            Self::Schedule => "schedule",
            Self::Announcement => "announcement",
        }
    }

    /// The service's name in Consul (spec §1).
    pub fn consul_name(self) -> &'static str {
        match self {
            Self::Auth => "DMS.SMS.v1.service.auth",
            Self::Club => "DMS.SMS.v1.service.club",
            Self::Outing => "DMS.SMS.v1.service.outing",
            Self::Schedule => "DMS.SMS.v1.service.schedule",
            Self::Announcement => "DMS.SMS.v1.service.announcement",
        }
    }

    /// Position in [`Service::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
