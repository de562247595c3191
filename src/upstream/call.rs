//! One gRPC call to a service: pick an instance, send with a deadline and the contract's
//! metadata (`x-request-id`, `span-context`), classify the failure (spec §2.5, decisions
//! 14, 16 and 18).

use std::sync::Arc;
use std::time::Duration;

use http::uri::PathAndQuery;
use tonic::metadata::MetadataValue;
use tonic_prost::ProstCodec;

use super::Service;
use super::pool::{Node, ServicePool};
use crate::http::GatewayError;

/// Per-service call settings.
#[derive(Debug, Clone, Copy)]
pub struct ServiceSettings {
    /// Deadline of one call (decision 16: 3 s by default).
    pub deadline: Duration,
}

/// Per-request values sent as gRPC metadata.
#[derive(Debug, Clone)]
pub struct CallMeta {
    /// The request id (a UUID: backends reject anything else with 407).
    pub request_id: String,
    /// Jaeger text form `trace:span:parent:flags` of the upstream call.
    pub span_context: String,
}

/// All services' pools and settings.
#[derive(Debug)]
pub struct Upstreams {
    pools: [ServicePool; 5],
    settings: [ServiceSettings; 5],
}

impl Upstreams {
    /// Upstreams with the given pools and settings, in [`Service::ALL`] order.
    pub fn new(pools: [ServicePool; 5], settings: [ServiceSettings; 5]) -> Self {
        Self { pools, settings }
    }

    /// The pool of `service`.
    pub fn pool(&self, service: Service) -> &ServicePool {
        &self.pools[service.index()]
    }

    /// The call settings of `service`.
    pub fn settings(&self, service: Service) -> ServiceSettings {
        self.settings[service.index()]
    }

    /// Picks the next instance of `service`, skipping `avoid`.
    pub fn pick(&self, service: Service, avoid: Option<&Node>) -> Result<Arc<Node>, GatewayError> {
        self.pool(service)
            .pick(|node| avoid.is_none_or(|a| a.id != node.id))
            .ok_or_else(|| GatewayError::NoHealthyInstance {
                service: service.as_str(),
                detail: "no passing instance".to_owned(),
            })
    }
}

/// Sends one unary call to `node` and waits at most `deadline`.
pub async fn unary<Req, Rep>(
    node: &Node,
    rpc_name: &'static str,
    path: PathAndQuery,
    message: Req,
    meta: &CallMeta,
    deadline: Duration,
) -> Result<Rep, GatewayError>
where
    Req: prost::Message + Send + 'static,
    Rep: prost::Message + Default + Send + 'static,
{
    let mut request = tonic::Request::new(message);
    request.set_timeout(deadline);
    let metadata = request.metadata_mut();
    if let Ok(value) = MetadataValue::try_from(meta.request_id.as_str()) {
        metadata.insert("x-request-id", value);
    }
    if let Ok(value) = MetadataValue::try_from(meta.span_context.as_str()) {
        metadata.insert("span-context", value);
    }
    let mut grpc = tonic::client::Grpc::new(node.channel.clone());
    let attempt = async {
        grpc.ready().await.map_err(|err| GatewayError::NoHealthyInstance {
            service: rpc_name,
            detail: format!("instance {} is not reachable: {err}", node.address),
        })?;
        grpc.unary(request, path, ProstCodec::<Req, Rep>::default())
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| classify(rpc_name, node, &status))
    };
    match tokio::time::timeout(deadline, attempt).await {
        Ok(result) => result,
        Err(_) => Err(GatewayError::Deadline {
            rpc: rpc_name,
            sent: true,
        }),
    }
}

/// Maps a gRPC status to the contract's outcome.
fn classify(rpc: &'static str, node: &Node, status: &tonic::Status) -> GatewayError {
    use tonic::Code;
    match status.code() {
        Code::DeadlineExceeded | Code::Cancelled => GatewayError::Deadline { rpc, sent: true },
        // A transport failure to connect surfaces as UNAVAILABLE before anything was sent.
        Code::Unavailable if is_connect_error(status) => GatewayError::NoHealthyInstance {
            service: rpc,
            detail: format!("instance {} is not reachable: {}", node.address, status.message()),
        },
        code => GatewayError::Upstream {
            rpc,
            grpc_code: code as i32,
            detail: status.message().to_owned(),
            sent: code != Code::Unavailable,
        },
    }
}

fn is_connect_error(status: &tonic::Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(err) = source {
        if err.is::<tonic::transport::Error>() || err.is::<std::io::Error>() {
            return true;
        }
        source = err.source();
    }
    false
}
