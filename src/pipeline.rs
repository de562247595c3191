//! The one request pipeline, generic over endpoints (architecture principle 1).
//!
//! Order (decision 7 and the architecture): authenticate (401) → authorize (403) → path
//! parameters (400/-204) → bind and validate the input (400) → service rate limit and,
//! on logins, the login throttle (429) → cache lookup (a hit answers here) → overload
//! bound (503) → pick an instance and call it with a deadline (503/408) → map the
//! in-band reply to the envelope → fill the cache or invalidate. Endpoints supply data
//! (including their cache policy) and an [`Adapter`]; they never reorder or repeat these
//! stages. A cached answer is therefore only ever served after authentication, the 403
//! check and validation passed (decision 9).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{FromRequestParts, RawPathParams, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::uri::PathAndQuery;
use tracing::Instrument;
use validator::Validate;

use crate::app::AppState;
use crate::auth::Principal;
use crate::cache::{self, Cache, Entry, Outcome, Plan, ReadCache, Role, Values, X_CACHE, XCache};
use crate::endpoints::{Adapter, Call, Endpoint, Idempotency, InBand, PathParams, Rpc, Success};
use crate::guard::{LoginAttempt, LoginOutcome};
use crate::http::error::json_content_type;
use crate::http::{GatewayError, input};
use crate::telemetry::record;
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

    /// The wire names of the input's fields, read once from its serde derive; `None`
    /// when the input is not a struct. The table check uses them to prove that cache
    /// keys name every field.
    fn input_fields(&self) -> Option<&'static [&'static str]>;

    /// The JSON Schema of the input, validation limits included, for the OpenAPI
    /// document ([`crate::openapi`]): a reference into `generator`'s definitions.
    fn input_schema(&self, generator: &mut schemars::SchemaGenerator) -> schemars::Schema;
}

/// Wraps an adapter as the endpoint's handler; the method path is parsed once here.
pub fn handler<A: Adapter>(rpc: Rpc, adapter: A) -> Arc<dyn Handler> {
    Arc::new(Typed {
        adapter,
        path: PathAndQuery::from_static(rpc.path),
        fields: cache::fields::field_names::<A::Input>(),
    })
}

struct Typed<A> {
    adapter: A,
    path: PathAndQuery,
    fields: Option<&'static [&'static str]>,
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
            // The query is kept for cache keys (a cheap, shared copy of the URI).
            let uri = request.uri().clone();
            let login_client = self
                .adapter
                .login_kind()
                .map(|kind| (kind, state.guard.client_of(&request)));
            let input = bind::<A::Input>(endpoint, request, state.body_limit).await?;
            // 4. the per-service rate limit (429): refused before the cache and the backend.
            record::update(|r| r.service = Some(endpoint.service.as_str()));
            let limit =
                state
                    .guard
                    .services()
                    .check(endpoint.service)
                    .instrument(tracing::debug_span!(
                        "rate_limit",
                        otel.name = "rate limit",
                        service = endpoint.service.as_str()
                    ));
            if let Err(limited) = limit.await {
                return Ok(limited.into_response());
            }
            // 4b. the login throttle (429), on login endpoints only.
            let login = login_client.map(|(kind, client)| {
                LoginAttempt::new(kind, self.adapter.login_id(&input), client)
            });
            if let Some(attempt) = &login {
                state.guard.login().admit(attempt).await?;
            }
            let call = Call {
                principal: ctx.principal.as_ref(),
                params: &ctx.params,
                jwt: &state.jwt,
            };
            let values = Values {
                params: &ctx.params,
                query: uri.query(),
                caller: call.caller(),
            };
            // Nothing of the call is built before the cache stage asks for it: a hit
            // costs no request message. Boxed: as a plain future it was held (and
            // copied) at every level of the cache stage, which made this request future
            // 41 KB instead of 6 KB.
            let upstream = Box::pin(async {
                let outcome = async {
                    // 5. overload shedding (503): a bounded number of calls per service
                    // in flight, held until the reply is mapped; a cache hit takes none.
                    let _slot = state.shed.admit(endpoint.service).await?;
                    let message = self.adapter.request(&call, input);
                    let reply: A::Reply = state
                        .upstreams
                        .call(&self.target(endpoint), message, &ctx.meta)
                        .await?;
                    let status = success_status(endpoint.rpc.name, &reply)?;
                    let success = self.adapter.success(&call, reply)?;
                    Ok(Entry::new(status, success_body(status, success)))
                }
                .await;
                if let Some(attempt) = &login {
                    let how = LoginOutcome::of(&outcome);
                    state.guard.login().settle(attempt, how).await;
                }
                outcome
            });
            Ok(through_cache(state, endpoint, &values, upstream).await)
        })
    }

    fn input_fields(&self) -> Option<&'static [&'static str]> {
        self.fields
    }

    fn input_schema(&self, generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        generator.subschema_for::<A::Input>()
    }
}

/// 5–8. The cache stage around the upstream call: lookup (a fresh hit answers), the
/// call (coalesced per slot), fill on the cached status, invalidations, and a stale
/// answer when the backend is unavailable. Writes invalidate the groups they declare
/// before their response is sent (decision 12). The cache never fails a request: any
/// store failure is a bypass.
async fn through_cache<F>(
    state: &AppState,
    endpoint: &Endpoint,
    values: &Values<'_>,
    upstream: F,
) -> Response
where
    F: Future<Output = Outcome>,
{
    let cache = &state.cache;
    let Some(read) = &endpoint.cache else {
        let outcome = upstream.await;
        if !endpoint.invalidates.is_empty() && cache::may_have_changed(&outcome) {
            cache
                .invalidate(&endpoint.invalidates, values)
                .instrument(tracing::debug_span!(
                    "cache.invalidate",
                    otel.name = "cache invalidate",
                    endpoint = endpoint.id
                ))
                .await;
        }
        return respond(outcome, None);
    };
    match cache.plan(endpoint.id, read, values) {
        // The cached path's future (store round trips, single flight) is tens of KB:
        // boxed, so requests that skip the cache neither carry nor copy it.
        Some(plan) => Box::pin(cached_read(state, endpoint, read, plan, values, upstream)).await,
        None => bypass(cache, read, values, upstream).await,
    }
}

/// A read that cannot use the cache (cache off, or no key): straight to the backend.
async fn bypass<F>(cache: &Cache, read: &ReadCache, values: &Values<'_>, upstream: F) -> Response
where
    F: Future<Output = Outcome>,
{
    let outcome = upstream.await;
    if matches!(&outcome, Ok(entry) if entry.status == read.status) {
        // The backend read happened: its side effects still invalidate (the store
        // applies them once it works again).
        cache.invalidate(&read.on_miss, values).await;
    }
    note(cache, XCache::Bypass, Role::Leader);
    respond(outcome, Some(XCache::Bypass))
}

/// Lookup, then hit, stale or a coalesced backend call with fill.
async fn cached_read<F>(
    state: &AppState,
    endpoint: &Endpoint,
    read: &ReadCache,
    plan: Plan,
    values: &Values<'_>,
    upstream: F,
) -> Response
where
    F: Future<Output = Outcome>,
{
    let cache = &state.cache;
    let lookup = cache
        .lookup(&plan)
        .instrument(tracing::debug_span!(
            "cache.lookup",
            otel.name = "cache lookup",
            endpoint = endpoint.id
        ))
        .await
        .ok();
    let Some(found) = lookup else {
        return bypass(cache, read, values, upstream).await;
    };
    let now = cache::store::now_ms();
    let mut stale = None;
    if let Some(entry) = found.entry {
        let age = entry.age(now);
        if age < plan.settings.ttl {
            note(cache, XCache::Hit, Role::Leader);
            return replay(&entry, XCache::Hit, now);
        }
        if plan.settings.stale_usable(age) {
            stale = Some(entry);
        }
    }
    let slot = found.slot;
    let call = async {
        let outcome = upstream.await;
        if let Ok(entry) = &outcome
            && entry.status == read.status
        {
            cache
                .fill(&slot, entry, plan.settings.keep())
                .instrument(tracing::debug_span!(
                    "cache.fill",
                    otel.name = "cache fill",
                    endpoint = endpoint.id
                ))
                .await;
            // Decision 13: a read that changes state invalidates what it changed; only
            // a miss reaches the backend, so a hit changes nothing.
            cache.invalidate(&read.on_miss, values).await;
        }
        outcome
    };
    let (outcome, role) = cache.flights().run(&slot, call).await;
    match (outcome, stale) {
        (Err(error), Some(entry)) if cache::allows_stale(&error) => {
            tracing::info!(endpoint = endpoint.id, %error, "backend unavailable; serving a stale answer");
            note(cache, XCache::Stale, role);
            replay(&entry, XCache::Stale, cache::store::now_ms())
        }
        (outcome, _) => {
            note(cache, XCache::Miss, role);
            respond(outcome, Some(XCache::Miss))
        }
    }
}

/// Counts the cache's part in a response and tells the access log.
fn note(cache: &cache::Cache, how: XCache, role: Role) {
    cache.count(how, role);
    crate::telemetry::record::update(|r| r.cache = Some(how.as_str()));
}

/// A stored answer, byte for byte, with `X-Cache` and its `Age` in seconds.
fn replay(entry: &Entry, how: XCache, now_ms: u64) -> Response {
    let mut response = body_response(entry.status, entry.body.clone());
    let headers = response.headers_mut();
    headers.insert(X_CACHE.clone(), how.header_value());
    headers.insert(header::AGE, HeaderValue::from(entry.age(now_ms).as_secs()));
    response
}

/// The response of an outcome, with `X-Cache` on cached endpoints.
fn respond(outcome: Outcome, how: Option<XCache>) -> Response {
    let mut response = match outcome {
        Ok(entry) => body_response(entry.status, entry.body),
        Err(error) => error.into_response(),
    };
    if let Some(how) = how {
        response
            .headers_mut()
            .insert(X_CACHE.clone(), how.header_value());
    }
    response
}

fn body_response(status: StatusCode, body: Bytes) -> Response {
    let mut response = (status, Body::from(body)).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, json_content_type());
    response
}

/// Runs the whole pipeline for one matched request; every failure becomes its envelope.
pub async fn serve(state: Arc<AppState>, endpoint: Arc<Endpoint>, request: Request) -> Response {
    let mut response = match run(&state, &endpoint, request).await {
        Ok(response) => response,
        Err(err) => err.into_response(),
    };
    // Every answer of the table is per caller or per request (an error envelope is
    // `no-store` already); even the shared calendar month stays out of other caches,
    // which would miss the gateway's invalidations.
    response
        .headers_mut()
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("private, no-store"));
    response
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
        let principal = state.jwt.authenticate(header)?;
        record::update(|r| r.caller = Some(principal.uuid.clone()));
        if let Some(kind) = principal.kind {
            tracing::Span::current().record("caller.kind", kind.as_str());
        }
        Some(principal)
    } else {
        None
    };
    let params = path_params(&mut parts).await?;
    // 2. authorize (403), before anything of the input is read
    endpoint
        .access
        .authorize(principal.as_ref(), |name| params.find(name))?;
    // 3. path parameters (400 / -204)
    for (name, rule) in endpoint.params {
        rule.check(name, params.get(name))?;
    }
    // The id `observe` put in place of any the client sent.
    let request_id = parts
        .headers
        .get(&crate::http::request_id::X_REQUEST_ID)
        .map_or_else(crate::http::request_id::fresh, HeaderValue::clone);
    let ctx = RequestContext {
        principal,
        params,
        meta: CallMeta { request_id },
    };
    let request = Request::from_parts(parts, body);
    endpoint.handler.run(state, endpoint, &ctx, request).await
}

async fn path_params(parts: &mut http::request::Parts) -> Result<PathParams, GatewayError> {
    let raw = RawPathParams::from_request_parts(parts, &())
        .await
        .map_err(|rejection| {
            tracing::debug!(detail = %rejection.body_text(), "path parameters");
            GatewayError::BadRequest {
                code: crate::http::error::code::INVALID_PATH_VARIABLE,
                message: "invalid path variable: not valid UTF-8 once percent-decoded".to_owned(),
            }
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

/// Writes `{status, code: 0, message, ...data}` once; a cache stores these bytes.
pub fn success_body(status: StatusCode, success: Success) -> Bytes {
    let fields = success.data.as_bytes();
    let mut body = Vec::with_capacity(48 + success.message.len() + fields.len());
    body.extend_from_slice(b"{\"status\":");
    body.extend_from_slice(status.as_str().as_bytes());
    body.extend_from_slice(b",\"code\":0,\"message\":");
    crate::json_text::write_str(&mut body, &success.message);
    if !fields.is_empty() {
        body.push(b',');
        body.extend_from_slice(fields);
    }
    body.push(b'}');
    Bytes::from(body)
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
    fn the_success_body_is_the_envelope_then_the_fields_in_order() {
        let success = Success::message("done \"now\"").with(crate::fields!({
            "outing_uuid": "outing-1".to_owned(),
            "count": 2_i64,
            "none": Option::<String>::None,
            "list": vec!["a", "b"],
        }));
        let body = success_body(StatusCode::CREATED, success);
        assert_eq!(
            std::str::from_utf8(&body).expect("utf-8"),
            r#"{"status":201,"code":0,"message":"done \"now\"","outing_uuid":"outing-1","count":2,"none":null,"list":["a","b"]}"#
        );
        let bare = success_body(StatusCode::OK, Success::message("ok"));
        assert_eq!(&bare[..], br#"{"status":200,"code":0,"message":"ok"}"#);
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
}
