//! Reads an endpoint's input from the request: query string, JSON body or multipart
//! form, chosen by the endpoint's declared source and the `Content-Type` (spec §2.4).

use axum::body::Body;
use axum::extract::{FromRequest, Multipart, Request};
use axum::http::header;
use bytes::Bytes;
use serde::de::DeserializeOwned;

use super::error::{GatewayError, code};
use super::form::{FormMap, FormValue};

/// Where an endpoint's input comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// No input besides the path; any body and query are ignored.
    None,
    /// The query string.
    Query,
    /// A JSON body (a multipart form is accepted too, as in the original).
    Json,
    /// A multipart form only (the input holds a file, which JSON cannot carry).
    Multipart,
    /// A GET that documents a JSON body: the body when one is sent, else the query
    /// string (decision 21).
    JsonOrQuery,
}

impl Source {
    /// A short name used in the OpenAPI document and error messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Query => "query",
            Self::Json => "json",
            Self::Multipart => "multipart",
            Self::JsonOrQuery => "json-or-query",
        }
    }
}

/// Reads and binds the request's input to `T` (unknown keys ignored). `limit` bounds the
/// body; a larger body is a 413.
pub async fn bind<T: DeserializeOwned + Default>(
    source: Source,
    request: Request,
    limit: usize,
) -> Result<T, GatewayError> {
    let query = request.uri().query().unwrap_or("").to_owned();
    let bind_query = || {
        FormMap::from_query(&query)
            .deserialize::<T>()
            .map_err(|e| GatewayError::bind("query parameter", e))
    };
    if matches!(source, Source::None) {
        return Ok(T::default());
    }
    if matches!(source, Source::Query) {
        return bind_query();
    }
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or("<non-ascii>").to_owned());
    let essence = content_type.as_deref().map(|ct| {
        ct.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    });
    match essence.as_deref() {
        None | Some("") => bind_query(),
        Some(other) if source == Source::Multipart && other != "multipart/form-data" => {
            Err(GatewayError::BadRequest {
                code: code::UNSUPPORTED_CONTENT_TYPE,
                message: format!(
                    "{other} is an unsupported content type, send multipart/form-data"
                ),
            })
        }
        Some("application/json") => {
            let body = read_body(request, limit).await?;
            if body.is_empty() && source == Source::JsonOrQuery {
                return bind_query();
            }
            serde_json::from_slice(&body).map_err(|e| GatewayError::bind("json request", e))
        }
        Some("multipart/form-data") => {
            let form = read_multipart(request, limit).await?;
            form.deserialize()
                .map_err(|e| GatewayError::bind("multipart request", e))
        }
        Some(_) if source == Source::JsonOrQuery => bind_query(),
        Some(other) => Err(GatewayError::BadRequest {
            code: code::UNSUPPORTED_CONTENT_TYPE,
            message: format!("{other} is an unsupported content type"),
        }),
    }
}

/// Reads the whole body, failing with 413 past `limit` bytes.
pub async fn read_body(request: Request, limit: usize) -> Result<Bytes, GatewayError> {
    axum::body::to_bytes(request.into_body(), limit)
        .await
        .map_err(|err| body_error(&err, limit))
}

fn body_error(err: &(dyn std::error::Error + 'static), limit: usize) -> GatewayError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(current) = source {
        if current.is::<http_body_util::LengthLimitError>() {
            return GatewayError::PayloadTooLarge { limit };
        }
        if current.is::<super::body::BodyTimedOut>() {
            return GatewayError::BodyTimeout;
        }
        source = current.source();
    }
    GatewayError::bind_opaque("request body", "the body could not be read", err)
}

/// A multipart body that does not parse: a plain reason, the parser's text in the log.
fn malformed_multipart(err: &dyn std::fmt::Display) -> GatewayError {
    GatewayError::bind_opaque(
        "multipart request",
        "the body is not a well-formed multipart/form-data form",
        err,
    )
}

async fn read_multipart(request: Request, limit: usize) -> Result<FormMap, GatewayError> {
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|err| body_error(&err, limit))?;
    let request = Request::from_parts(parts, Body::from(bytes));
    let mut multipart = Multipart::from_request(request, &())
        .await
        .map_err(|e| malformed_multipart(&e))?;
    let mut form = FormMap::default();
    while let Some(field) = multipart
        .next_field()
        .await
        .map_err(|e| malformed_multipart(&e))?
    {
        let Some(name) = field.name().map(str::to_owned) else {
            continue;
        };
        let is_file = field.file_name().is_some();
        let data = field.bytes().await.map_err(|e| malformed_multipart(&e))?;
        let value = if is_file {
            FormValue::File(data)
        } else {
            let text = String::from_utf8(data.to_vec()).map_err(|_| {
                GatewayError::bind("multipart request", format!("field '{name}' is not UTF-8"))
            })?;
            FormValue::Text(text)
        };
        form.push(name, value);
    }
    Ok(form)
}
