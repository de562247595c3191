//! Self-registration of the reference services in Consul (`sms-gateway services
//! --consul <url>`): one registration per service with a TTL check kept alive by a
//! heartbeat, deregistered on shutdown — the way the real backends appear in Consul.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::upstream::Service;
use crate::upstream::consul::{CheckStatus, ConsulClient, ConsulError, Registration, TtlCheck};

/// TTL of the registered check; the heartbeat runs three times per TTL.
pub const CHECK_TTL: Duration = Duration::from_secs(15);

/// One registered service with its heartbeat.
#[derive(Debug)]
pub struct Registered {
    pub service_id: String,
    heartbeat: JoinHandle<()>,
}

/// Registers `service` reachable at `advertise` and starts its heartbeat.
pub async fn register(
    client: &ConsulClient,
    service: Service,
    advertise: SocketAddr,
) -> Result<Registered, ConsulError> {
    let host = advertise.ip().to_string();
    let service_id = format!(
        "{}-{}-{}",
        service.as_str(),
        host.replace([':', '.'], "-"),
        advertise.port()
    );
    let check_id = format!("service:{service_id}");
    let registration = Registration {
        id: service_id.clone(),
        name: service.consul_name().to_owned(),
        tags: vec!["grpc".to_owned(), "reference".to_owned()],
        address: host,
        port: advertise.port(),
        meta: BTreeMap::from([(
            "implementation".to_owned(),
            "sms-gateway-reference".to_owned(),
        )]),
        check: TtlCheck {
            check_id: check_id.clone(),
            name: format!("Service '{}' check", service.consul_name()),
            ttl: format!("{}s", CHECK_TTL.as_secs()),
            status: "passing".to_owned(),
            deregister_critical_after: "1m".to_owned(),
        },
    };
    client.register(&registration).await?;
    let heartbeat_client = client.clone();
    let heartbeat = tokio::spawn(async move {
        let mut tick = tokio::time::interval(CHECK_TTL / 3);
        loop {
            tick.tick().await;
            if let Err(err) = heartbeat_client
                .update_check(&check_id, CheckStatus::Passing, "reference service alive")
                .await
            {
                tracing::warn!(check = %check_id, error = %err, "TTL heartbeat failed");
            }
        }
    });
    Ok(Registered {
        service_id,
        heartbeat,
    })
}

/// Stops the heartbeat and deregisters.
pub async fn deregister(client: &ConsulClient, registered: Registered) {
    registered.heartbeat.abort();
    if let Err(err) = client.deregister(&registered.service_id).await {
        tracing::warn!(service_id = %registered.service_id, error = %err, "deregistration failed");
    }
}

/// The local address this machine uses to reach `consul` (no packet is sent): the
/// address other containers on the same network can reach us at.
pub fn local_address_towards(consul: &str) -> Option<IpAddr> {
    let authority = consul.split("://").nth(1)?.split('/').next()?;
    let target = if authority.contains(':') {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    let resolved = std::net::ToSocketAddrs::to_socket_addrs(&target)
        .ok()?
        .next()?;
    let bind: SocketAddr = if resolved.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = std::net::UdpSocket::bind(bind).ok()?;
    socket.connect(resolved).ok()?;
    socket.local_addr().ok().map(|a| a.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_consul_gives_a_loopback_address() {
        assert_eq!(
            local_address_towards("http://127.0.0.1:8500"),
            Some(IpAddr::from([127, 0, 0, 1]))
        );
        assert_eq!(local_address_towards("not a url"), None);
    }
}
