//! The one request pipeline, generic over endpoints (architecture principle 1).
//!
//! Order (decision 7 and the architecture): authenticate (401) → authorize (403) → path
//! parameters (400/-204) → bind and validate the input (400) → pick an instance and call
//! it with a deadline (503/408) → map the in-band reply to the envelope. Endpoints supply
//! data and an [`Adapter`]; they never reorder or repeat these stages.

use std::sync::Arc;

use axum::extract::{FromRequestParts, RawPathParams, Request};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::future::BoxFuture;
use http::uri::PathAndQuery;
use tower_http::request_id::RequestId;
use validator::Validate;

use crate::app::AppState;
use crate::auth::Principal;
use crate::endpoints::{Adapter, Call, Endpoint, Idempotency, InBand, PathParams, Rpc, Success};
use crate::http::error::json_content_type;
use crate::http::{GatewayError, input};
use crate::upstream::CallMeta;
use crate::upstream::call::Target;

/// Per-request values every stage may read.
pub struct RequestContext {
    pub principal: Option<Principal>,
    pub params: PathParams,
    pub meta: CallMeta,
}

/// The typed stages of an endpoint, erased so the table can hold every endpoint.
pub trait Handler: Send + Sync {
    /// Binds, validates, calls and maps one request.
    fn run<'a>(
        &'a self,
        state: &'a AppState,
        endpoint: &'a Endpoint,
        ctx: &'a RequestContext,
        request: Request,
    ) -> BoxFuture<'a, Result<Response, GatewayError>>;
}

/// Wraps an adapter as the endpoint's handler; the method path is parsed once here.
pub fn handler<A: Adapter>(rpc: Rpc, adapter: A) -> Arc<dyn Handler> {
    Arc::new(Typed {
        adapter,
        path: PathAndQuery::from_static(rpc.path),
    })
}

struct Typed<A> {
    adapter: A,
    path: PathAndQuery,
}

impl<A> Typed<A> {
    fn target(&self, endpoint: &Endpoint) -> Target {
        Target {
            service: endpoint.service,
            rpc: endpoint.rpc.name,
            path: self.path.clone(),
            deadline: endpoint.deadline,
            retry_unsent: endpoint.idempotency == Idempotency::Read,
        }
    }
}

impl<A: Adapter> Handler for Typed<A> {
    fn run<'a>(
        &'a self,
        state: &'a AppState,
        endpoint: &'a Endpoint,
        ctx: &'a RequestContext,
        request: Request,
    ) -> BoxFuture<'a, Result<Response, GatewayError>> {
        Box::pin(async move {
            let input = bind::<A::Input>(endpoint, request, state.body_limit).await?;
            let call = Call {
                principal: ctx.principal.as_ref(),
                params: &ctx.params,
                jwt: &state.jwt,
            };
            let message = self.adapter.request(&call, input);
            let reply: A::Reply = state
                .upstreams
                .call(&self.target(endpoint), message, &ctx.meta)
                .await?;
            let status = success_status(endpoint.rpc.name, &reply)?;
            let success = self.adapter.success(&call, reply)?;
            Ok(success_response(status, success))
        })
    }
}

/// Runs the whole pipeline for one matched request; every failure becomes its envelope.
pub async fn serve(state: Arc<AppState>, endpoint: Arc<Endpoint>, request: Request) -> Response {
    match run(&state, &endpoint, request).await {
        Ok(response) => response,
        Err(err) => err.into_response(),
    }
}

async fn run(
    state: &AppState,
    endpoint: &Endpoint,
    request: Request,
) -> Result<Response, GatewayError> {
    let (mut parts, body) = request.into_parts();
    // 1. authenticate (401)
    let principal = if endpoint.access.needs_token() {
        let header = parts
            .headers
            .get(header::AUTHORIZATION)
            .map(|v| v.as_bytes());
        Some(state.jwt.authenticate(header)?)
    } else {
        None
    };
    let params = path_params(&mut parts).await?;
    // 2. authorize (403), before anything of the input is read
    endpoint.access.authorize(principal.as_ref(), |name| {
        params
            .0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    })?;
    // 3. path parameters (400 / -204)
    for (name, rule) in endpoint.params {
        rule.check(name, params.get(name))?;
    }
    let request_id = parts
        .extensions
        .get::<RequestId>()
        .and_then(|id| id.header_value().to_str().ok())
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned);
    let ctx = RequestContext {
        principal,
        params,
        meta: CallMeta {
            request_id,
            span_context: new_span_context(),
        },
    };
    let request = Request::from_parts(parts, body);
    endpoint.handler.run(state, endpoint, &ctx, request).await
}

async fn path_params(parts: &mut http::request::Parts) -> Result<PathParams, GatewayError> {
    let raw = RawPathParams::from_request_parts(parts, &())
        .await
        .map_err(|rejection| GatewayError::BadRequest {
            code: crate::http::error::code::INVALID_PATH_VARIABLE,
            message: format!("invalid path variable: {}", rejection.body_text()),
        })?;
    Ok(PathParams(
        raw.iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
    ))
}

/// Binds the input from its declared source and checks its `validator` rules.
async fn bind<T>(endpoint: &Endpoint, request: Request, limit: usize) -> Result<T, GatewayError>
where
    T: serde::de::DeserializeOwned + Validate + Default,
{
    let input: T = input::bind(endpoint.source, request, limit).await?;
    input.validate().map_err(|errors| {
        GatewayError::integrity(crate::endpoints::rules::describe::<T>(&errors))
    })?;
    Ok(input)
}

/// A 2xx in-band status is a success (decision 3); any other valid status is relayed;
/// a status that is no HTTP status is a 502.
fn success_status(rpc: &'static str, reply: &impl InBand) -> Result<StatusCode, GatewayError> {
    let raw = reply.status();
    let status = u16::try_from(raw)
        .ok()
        .filter(|s| (100..=599).contains(s))
        .and_then(|s| StatusCode::from_u16(s).ok())
        .ok_or(GatewayError::InvalidUpstreamStatus { rpc, status: raw })?;
    if status.is_success() {
        Ok(status)
    } else {
        Err(GatewayError::Relayed {
            status,
            code: reply.code(),
            message: reply.message().to_owned(),
        })
    }
}

/// Writes `{status, code: 0, message, ...data}`.
fn success_response(status: StatusCode, success: Success) -> Response {
    let mut body = match success.data {
        serde_json::Value::Object(map) => map,
        _ => serde_json::Map::new(),
    };
    body.insert("status".into(), status.as_u16().into());
    body.insert("code".into(), 0.into());
    body.insert("message".into(), success.message.into_owned().into());
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    let mut response = (status, bytes).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, json_content_type());
    response
}

/// A fresh Jaeger-form span context (`trace:span:parent:flags`, sampled) for backends
/// that parse `span-context`.
fn new_span_context() -> String {
    let trace: u128 = rand::random();
    let span: u64 = rand::random::<u64>() | 1;
    format!("{trace:032x}:{span:016x}:0:1")
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Reply(i64);

    impl InBand for Reply {
        fn status(&self) -> i64 {
            self.0
        }
        fn code(&self) -> i32 {
            -7
        }
        fn message(&self) -> &str {
            "backend says"
        }
    }

    #[test]
    fn any_2xx_is_success_and_others_are_relayed() {
        assert_eq!(
            success_status("X", &Reply(200)).expect("ok"),
            StatusCode::OK
        );
        assert_eq!(
            success_status("X", &Reply(201)).expect("ok"),
            StatusCode::CREATED
        );
        let relayed = success_status("X", &Reply(409)).expect_err("relay");
        assert_eq!((relayed.status().as_u16(), relayed.code()), (409, -7));
        assert_eq!(relayed.message(), "backend says");
        for invalid in [0, 99, 600, 70000, -200] {
            let err = success_status("X", &Reply(invalid)).expect_err("invalid");
            assert_eq!(err.status(), StatusCode::BAD_GATEWAY);
        }
    }

    #[test]
    fn span_context_has_jaeger_form() {
        let ctx = new_span_context();
        let parts: Vec<&str> = ctx.split(':').collect();
        assert_eq!(parts.len(), 4);
        assert_eq!(parts[0].len(), 32);
        assert_eq!(parts[1].len(), 16);
        assert_eq!(parts[3], "1");
    }
}
