//! The OpenAPI 3.1 document of the HTTP API, generated from the endpoint table.
//!
//! Nothing here is written by hand per route: every entry of [`crate::endpoints::table`]
//! becomes one operation, with its path parameters (their [`PathRule`] as the schema),
//! its input (the adapter's input type through `schemars`, so the `validator` limits
//! and the custom rules of [`crate::endpoints::rules::schema`] are in it) as query
//! parameters or a request body, its security requirement (a bearer JWT unless the
//! endpoint is public, with the account kinds that may call it) and its responses (the
//! contract envelope with the status codes the gateway itself answers). The document
//! therefore cannot drift from what the router serves.
//!
//! It is built once at start-up and served as `GET /openapi.json` ([`route`]), and
//! written by `sms-gateway openapi [--output FILE]`.

use axum::http::{HeaderValue, header};
use axum::response::IntoResponse;
use axum::routing::{MethodRouter, get};
use bytes::Bytes;
use schemars::generate::SchemaSettings;
use schemars::{Schema, SchemaGenerator};
use serde_json::{Map, Value, json};

use crate::auth::Access;
use crate::cache::policy::Scope;
use crate::endpoints::{Endpoint, PathRule};
use crate::http::error::code;
use crate::http::input::Source;
use crate::upstream::Service;

/// Where the router serves the document.
pub const PATH: &str = "/openapi.json";

/// The OpenAPI version the document follows.
pub const OPENAPI_VERSION: &str = "3.1.0";

/// JSON pointer of the schema definitions inside the document.
const DEFINITIONS: &str = "/components/schemas";

/// The whole document for `table`.
pub fn document(table: &[Endpoint]) -> Value {
    let settings = SchemaSettings::draft2020_12().with(|s| {
        s.definitions_path = DEFINITIONS.into();
    });
    let mut generator = SchemaGenerator::new(settings);
    let mut paths = Map::new();
    for (path, item) in gateway_paths() {
        paths.insert(path.to_owned(), item);
    }
    for endpoint in table {
        let operation = operation(endpoint, &mut generator);
        let item = paths
            .entry(endpoint.path.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(item) = item {
            item.insert(endpoint.method.as_str().to_ascii_lowercase(), operation);
        }
    }
    let mut schemas: Map<String, Value> = generator
        .take_definitions(true)
        .into_iter()
        .map(|(name, mut schema)| {
            settle_input(&mut schema);
            (name, schema)
        })
        .collect();
    schemas.insert("Envelope".to_owned(), envelope_schema());
    json!({
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "sms-gateway",
            "version": env!("CARGO_PKG_VERSION"),
            "summary": "HTTP/JSON API of the school management system",
            "description": INFO,
            "license": { "name": "MIT", "identifier": "MIT" },
        },
        "tags": tags(),
        "paths": paths,
        "components": {
            "schemas": schemas,
            "responses": error_responses(),
            "headers": {
                "X-Request-Id": {
                    "description": "The request's id (a UUID), also sent to the backends \
                        and written in the gateway's log: quote it when reporting a problem.",
                    "schema": { "type": "string", "format": "uuid" },
                },
                "X-Cache": {
                    "description": "How a cached read was answered: HIT (fresh from the \
                        cache, see Age), MISS (from the backend), BYPASS (the cache was not \
                        used) or STALE (the backend failed; an older answer was served).",
                    "schema": { "type": "string", "enum": ["HIT", "MISS", "BYPASS", "STALE"] },
                },
                "Retry-After": {
                    "description": "Seconds to wait before retrying.",
                    "schema": { "type": "integer", "minimum": 1 },
                },
            },
            "securitySchemes": {
                BEARER: {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "The access_token of a login answer \
                        (POST /v1/login/{admin,student,teacher,parent}). Its uuid claim \
                        decides the account kind: admin-, student-, teacher- or parent-.",
                },
            },
        },
    })
}

/// `GET /openapi.json`: the document for `table`, serialized once here.
pub fn route(table: &[Endpoint]) -> MethodRouter {
    // Serializing a `Value` cannot fail.
    let body = Bytes::from(serde_json::to_vec(&document(table)).unwrap_or_default());
    get(move || {
        let body = body.clone();
        async move {
            (
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                )],
                body,
            )
                .into_response()
        }
    })
}

/// Name of the bearer security scheme.
const BEARER: &str = "bearerJwt";

const INFO: &str = "\
Every answer, success or failure, is the contract envelope: a JSON object with \
`status` (the HTTP status, repeated), `code` (0, a gateway code, or the backend's own \
code) and `message`; a success adds the endpoint's data fields next to them. \
Backends answer in-band: any 2xx they return is the success status, any other status \
is relayed with the backend's code and message.\n\n\
Gateway codes: -101 no Authorization header, -102 malformed Authorization, -103 bad \
signature, -104 expired token, -105 invalid claims, -106 unsupported authorization \
scheme, 0 any other token failure (all 401); -201 unsupported content type, -202 the \
input could not be parsed, -203 a validation rule failed, -204 a malformed path \
parameter (all 400); -301 no healthy instance of the backend, -302 the instance's \
circuit breaker is open (both 503). A 403 from the gateway (account kind not \
allowed, another user's uuid, a blocked client), a 408 (the backend's deadline \
passed), 404, 405, 413 and 429 carry code 0.\n\n\
Order of checks: 401 before 403 before 400. Input fields that are absent bind as \
their zero value (0, \"\", false, null) and are then validated, so a field listed as \
required is one whose zero value fails its rules. Unknown fields are ignored.";

/// The operations the gateway serves itself (not from the endpoint table).
fn gateway_paths() -> Vec<(&'static str, Value)> {
    let plain = |id: &str, summary: &str, media: &str, schema: Value| {
        json!({
            "get": {
                "operationId": id,
                "tags": ["gateway"],
                "summary": summary,
                "security": [],
                "responses": {
                    "200": {
                        "description": summary,
                        "headers": request_id_header(),
                        "content": { media: { "schema": schema } },
                    },
                },
            },
        })
    };
    vec![
        (
            "/ping",
            plain(
                "gateway.ping",
                "Liveness: the JSON string \"pong\"",
                "application/json",
                json!({ "const": "pong" }),
            ),
        ),
        (
            PATH,
            plain(
                "gateway.openapi",
                "This document",
                "application/json",
                json!({ "type": "object" }),
            ),
        ),
    ]
}

/// One tag per backend, plus the gateway's own routes.
fn tags() -> Value {
    let mut tags: Vec<Value> = Service::ALL
        .iter()
        .map(|service| {
            json!({
                "name": service.as_str(),
                "description": format!(
                    "Served by the {} backend ({}).",
                    service.as_str(),
                    service.consul_name()
                ),
            })
        })
        .collect();
    tags.push(json!({ "name": "gateway", "description": "Served by the gateway itself." }));
    Value::Array(tags)
}

fn operation(endpoint: &Endpoint, generator: &mut SchemaGenerator) -> Value {
    let mut op = Map::new();
    op.insert("operationId".into(), json!(endpoint.id));
    op.insert("tags".into(), json!([endpoint.service.as_str()]));
    op.insert("summary".into(), json!(endpoint.rpc.name));
    let mut description = vec![format!(
        "Calls `{}` on the {} backend.",
        endpoint.rpc.path,
        endpoint.service.as_str()
    )];

    let mut parameters: Vec<Value> = endpoint
        .params
        .iter()
        .map(|(name, rule)| path_parameter(name, rule))
        .collect();
    let has_body = matches!(
        endpoint.source,
        Source::Json | Source::Multipart | Source::JsonOrQuery
    );
    // An endpoint without input publishes no input schema.
    if endpoint.source != Source::None {
        let input = endpoint.handler.input_schema(generator);
        if matches!(endpoint.source, Source::Query | Source::JsonOrQuery) {
            let object = resolve(&input, generator);
            if let Some(text) = object.get("description").and_then(Value::as_str) {
                description.push(text.to_owned());
            }
            // With a JSON body instead, no query parameter is needed.
            let required = endpoint.source == Source::Query;
            parameters.extend(query_parameters(&object, required));
        }
        if has_body {
            op.insert("requestBody".into(), request_body(endpoint.source, &input));
        }
    }
    if !parameters.is_empty() {
        op.insert("parameters".into(), Value::Array(parameters));
    }

    match endpoint.access {
        Access::Public => {
            description.push("Public: no token needed.".to_owned());
            op.insert("security".into(), json!([]));
        }
        Access::Kinds { kinds, own } => {
            let names: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
            description.push(format!("Callers: {}.", names.join(", ")));
            if let Some(param) = own {
                description.push(format!(
                    "When `{{{param}}}` names a uuid of the caller's own kind, it must be the \
                     caller's uuid (403 otherwise)."
                ));
            }
            op.insert("security".into(), json!([{ BEARER: [] }]));
            op.insert("x-account-kinds".into(), json!(names));
        }
    }
    if let Some(read) = &endpoint.cache {
        let scope = match read.scope {
            Scope::Shared => "shared by every caller",
            Scope::PerCaller => "per caller",
        };
        description.push(format!("Cached ({scope}); see the X-Cache header."));
        op.insert("x-cache".into(), json!(scope));
    }
    if endpoint.contract_path != endpoint.path {
        op.insert("x-contract-path".into(), json!(endpoint.contract_path));
    }
    op.insert("x-rpc".into(), json!(endpoint.rpc.path));
    op.insert("x-input".into(), json!(endpoint.source.as_str()));
    op.insert("description".into(), json!(description.join("\n\n")));
    op.insert(
        "responses".into(),
        responses(endpoint, has_body, endpoint.cache.is_some()),
    );
    Value::Object(op)
}

/// A path parameter with its rule (decision 8) as the schema.
fn path_parameter(name: &str, rule: &PathRule) -> Value {
    let schema = match rule {
        PathRule::Uuid(prefix) => json!({
            "type": "string",
            "pattern": format!("^{}[0-9]{{12}}$", escape(prefix)),
            "examples": [format!("{prefix}000000000001")],
        }),
        PathRule::AnyUuid(prefixes) => {
            let alternatives: Vec<String> = prefixes.iter().map(|p| escape(p)).collect();
            json!({
                "type": "string",
                "pattern": format!("^({})[0-9]{{12}}$", alternatives.join("|")),
            })
        }
        PathRule::Int(min, max) => json!({ "type": "integer", "minimum": min, "maximum": max }),
        PathRule::OneOf(words) => json!({ "type": "string", "enum": words }),
        PathRule::Text(max) => json!({ "type": "string", "minLength": 1, "maxLength": max }),
    };
    json!({
        "name": name,
        "in": "path",
        "required": true,
        "description": format!("Must be {rule} (400 / -204 otherwise)."),
        "schema": schema,
    })
}

/// `text` with the regex metacharacters it may hold escaped.
fn escape(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            let special = "\\^$.|?*+()[]{}".contains(c);
            special.then_some('\\').into_iter().chain([c])
        })
        .collect()
}

/// The definition a `$ref` schema points at (settled like the published one), or the
/// schema itself when it is inline.
fn resolve(schema: &Schema, generator: &SchemaGenerator) -> Map<String, Value> {
    let prefix = format!("#{DEFINITIONS}/");
    let mut value = schema
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|reference| reference.strip_prefix(&prefix))
        .and_then(|name| generator.definitions().get(name))
        .cloned()
        .unwrap_or_else(|| schema.as_value().clone());
    settle_input(&mut value);
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// One query parameter per property of the input object; `honour_required` false makes
/// them all optional (when a body may carry the fields instead).
fn query_parameters(object: &Map<String, Value>, honour_required: bool) -> Vec<Value> {
    let required: Vec<&str> = object
        .get("required")
        .and_then(Value::as_array)
        .map(|names| names.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let Some(Value::Object(properties)) = object.get("properties") else {
        return Vec::new();
    };
    properties
        .iter()
        .map(|(name, schema)| {
            let mut parameter = json!({
                "name": name,
                "in": "query",
                "required": honour_required && required.contains(&name.as_str()),
                "schema": schema,
            });
            if let Some(text) = schema.get("description") {
                parameter["description"] = text.clone();
            }
            if schema.get("type") == Some(&json!("array")) {
                // `?club_uuids=a&club_uuids=b`; a comma-separated value is accepted too.
                parameter["style"] = json!("form");
                parameter["explode"] = json!(true);
            }
            parameter
        })
        .collect()
}

fn request_body(source: Source, input: &Schema) -> Value {
    let schema = input.as_value().clone();
    let multipart = json!({ "schema": schema });
    let content = match source {
        Source::Multipart => json!({ "multipart/form-data": multipart }),
        _ => json!({ "application/json": { "schema": schema }, "multipart/form-data": multipart }),
    };
    let description = match source {
        Source::Multipart => "A multipart form (it carries a file).",
        Source::JsonOrQuery => {
            "A JSON body; without one, the same fields are read from the query string."
        }
        _ => "A JSON body (a multipart form with the same fields is accepted too).",
    };
    json!({
        "description": description,
        "required": source != Source::JsonOrQuery,
        "content": content,
    })
}

fn responses(endpoint: &Endpoint, has_body: bool, cached: bool) -> Value {
    let mut headers = json!(request_id_header());
    if cached {
        headers["X-Cache"] = json!({ "$ref": "#/components/headers/X-Cache" });
        headers["Age"] = json!({
            "description": "Age in seconds of a cached answer (HIT, STALE).",
            "schema": { "type": "integer", "minimum": 0 },
        });
    }
    let mut responses = json!({
        "2XX": {
            "description": "Success: the backend's 2xx status (200, or 201 for a creation) with \
                the envelope and this endpoint's data fields.",
            "headers": headers,
            "content": envelope_content(),
        },
    });
    let mut refer = |status: &str, name: &str| {
        responses[status] = json!({ "$ref": format!("#/components/responses/{name}") });
    };
    if endpoint.source != Source::None || !endpoint.params.is_empty() {
        refer("400", "BadRequest");
    }
    if endpoint.access.needs_token() {
        refer("401", "Unauthorized");
    }
    refer("403", "Forbidden");
    refer("404", "NotFound");
    refer("408", "RequestTimeout");
    if has_body {
        refer("413", "PayloadTooLarge");
    }
    refer("429", "TooManyRequests");
    refer("431", "HeadersTooLarge");
    refer("503", "ServiceUnavailable");
    refer("default", "Relayed");
    responses
}

/// The `X-Request-Id` header every answer carries.
fn request_id_header() -> Value {
    json!({ "X-Request-Id": { "$ref": "#/components/headers/X-Request-Id" } })
}

/// A JSON body that is the envelope.
fn envelope_content() -> Value {
    json!({ "application/json": { "schema": { "$ref": "#/components/schemas/Envelope" } } })
}

/// `{status, code, message}`; a success's data fields sit next to them.
fn envelope_schema() -> Value {
    json!({
        "type": "object",
        "description": "The contract envelope of every answer. A success adds its data fields \
            next to these three.",
        "required": ["status", "code", "message"],
        "properties": {
            "status": { "type": "integer", "description": "The HTTP status, repeated." },
            "code": {
                "type": "integer",
                "description": "0, a gateway code (-101..-106, -201..-204, -301, -302), or the \
                    backend's own code.",
            },
            "message": { "type": "string" },
        },
    })
}

/// The error answers, each the envelope with its status and the codes the gateway uses.
fn error_responses() -> Value {
    let envelope = |status: u16, codes: &[i32], description: &str| {
        let mut code = json!({ "type": "integer" });
        if !codes.is_empty() {
            code["examples"] = json!(codes);
        }
        json!({
            "description": description,
            "headers": request_id_header(),
            "content": {
                "application/json": {
                    "schema": {
                        "allOf": [
                            { "$ref": "#/components/schemas/Envelope" },
                            { "properties": { "status": { "const": status }, "code": code } },
                        ],
                    },
                },
            },
        })
    };
    let mut too_many = envelope(
        429,
        &[0],
        "Too many requests from this client or to this backend; retry after Retry-After \
         seconds (code 0).",
    );
    too_many["headers"]["Retry-After"] = json!({ "$ref": "#/components/headers/Retry-After" });
    json!({
        "BadRequest": envelope(400, &[
            code::UNSUPPORTED_CONTENT_TYPE,
            code::BIND_FAILURE,
            code::INTEGRITY_INVALID,
            code::INVALID_PATH_VARIABLE,
        ], "The request is invalid: -201 unsupported content type, -202 the input could not \
            be parsed, -203 a validation rule failed (the message names each field), -204 a \
            malformed path parameter. A backend may also answer 400 with its own code."),
        "Unauthorized": envelope(401, &[
            code::NO_AUTHORIZATION,
            code::INVALID_AUTHORIZATION_FORMAT,
            code::INVALID_SIGNATURE,
            code::EXPIRED_TOKEN,
            code::INVALID_CLAIMS,
            code::UNSUPPORTED_AUTHORIZATION,
            0,
        ], "No valid token: -101 no Authorization header, -102 malformed header, -103 bad \
            signature, -104 expired, -105 invalid claims, -106 unsupported scheme, 0 any \
            other token failure (e.g. not valid yet)."),
        "Forbidden": envelope(403, &[0], "The caller's account kind may not use this endpoint, \
            the path names another user's uuid, or this client is blocked for a while after \
            a flood (code 0); or the backend refused (its own code)."),
        "NotFound": envelope(404, &[0], "The backend found nothing (its own code); the gateway \
            answers 404 with code 0 for a path it does not serve."),
        "MethodNotAllowed": envelope(405, &[0], "The path exists with other methods (code 0)."),
        "RequestTimeout": envelope(408, &[0], "The backend did not answer within the \
            endpoint's deadline, or the client did not send its request head or body in \
            time (code 0)."),
        "HeadersTooLarge": envelope(431, &[0], "The request head is larger than the \
            gateway's limit, in bytes or header fields (code 0)."),
        "PayloadTooLarge": envelope(413, &[0], "The body is larger than the gateway's limit \
            (code 0)."),
        "TooManyRequests": too_many,
        "ServiceUnavailable": envelope(503, &[code::NO_SERVICE_INSTANCE, code::BREAKER_OPEN],
            "The backend cannot be called: -301 no healthy instance, -302 the chosen \
            instance's circuit breaker is open."),
        "Relayed": {
            "description": "Any other status: the backend's own in-band answer, relayed as \
                {status, code, message}; 500 or 502 when the call failed inside the gateway \
                or the backend's status was not an HTTP status.",
            "headers": request_id_header(),
            "content": envelope_content(),
        },
    })
}

/// Makes an input object state what binding does: a property whose default (the zero
/// value an absent field binds as) fails the property's own schema is required, and its
/// meaningless default is dropped. Nested objects are settled too.
fn settle_input(schema: &mut Value) {
    let Value::Object(object) = schema else {
        return;
    };
    if let Some(Value::Object(properties)) = object.get_mut("properties") {
        let mut required = Vec::new();
        for (name, property) in properties.iter_mut() {
            let Value::Object(property) = property else {
                continue;
            };
            if let Some(default) = property.get("default").cloned()
                && admits(property, &default) == Some(false)
            {
                property.remove("default");
                required.push(name.clone());
            }
        }
        if !required.is_empty() {
            let list = object
                .entry("required")
                .or_insert_with(|| Value::Array(Vec::new()));
            if let Value::Array(list) = list {
                for name in required {
                    if !list.iter().any(|v| v.as_str() == Some(&name)) {
                        list.push(Value::String(name));
                    }
                }
            }
        }
    }
}

/// Whether `value` satisfies the keywords of `schema` that an input's zero value can
/// fail (type, lengths, bounds, enum, const, not); `None` when a keyword needs more
/// than this (a pattern is not evaluated: it only counts when the rest passes).
fn admits(schema: &Map<String, Value>, value: &Value) -> Option<bool> {
    if let Some(types) = schema.get("type") {
        let names: Vec<&str> = match types {
            Value::String(name) => vec![name.as_str()],
            Value::Array(names) => names.iter().filter_map(Value::as_str).collect(),
            _ => return None,
        };
        let fits = |name: &str| match name {
            "null" => value.is_null(),
            "boolean" => value.is_boolean(),
            "string" => value.is_string(),
            "array" => value.is_array(),
            "object" => value.is_object(),
            "number" => value.is_number(),
            "integer" => value.as_f64().is_some_and(|n| n.fract() == 0.0),
            _ => false,
        };
        if !names.into_iter().any(fits) {
            return Some(false);
        }
    }
    if let Some(text) = value.as_str() {
        let length = text.chars().count() as u64;
        if schema
            .get("minLength")
            .and_then(Value::as_u64)
            .is_some_and(|min| length < min)
            || schema
                .get("maxLength")
                .and_then(Value::as_u64)
                .is_some_and(|max| length > max)
        {
            return Some(false);
        }
    }
    if let Some(number) = value.as_f64()
        && (schema
            .get("minimum")
            .and_then(Value::as_f64)
            .is_some_and(|min| number < min)
            || schema
                .get("maximum")
                .and_then(Value::as_f64)
                .is_some_and(|max| number > max))
    {
        return Some(false);
    }
    if let Some(Value::Array(options)) = schema.get("enum")
        && !options.contains(value)
    {
        return Some(false);
    }
    if schema.get("const").is_some_and(|c| c != value) {
        return Some(false);
    }
    if let Some(Value::Object(not)) = schema.get("not")
        && admits(not, value) == Some(true)
    {
        return Some(false);
    }
    Some(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn zero_values_that_fail_their_rules_make_a_field_required() {
        let mut schema = json!({
            "type": "object",
            "properties": {
                "id": { "type": "string", "minLength": 4, "default": "" },
                "note": { "type": "string", "maxLength": 10, "default": "" },
                "time": { "type": "integer", "minimum": 1_000_000_000, "default": 0 },
                "page": { "type": "integer", "minimum": 0, "default": 0 },
                "kind": { "type": "string", "enum": ["a", "b"], "default": "" },
                "list": { "type": "array", "default": null },
                "name": { "type": "string", "pattern": "^[a-z]*$", "default": "" },
            },
        });
        settle_input(&mut schema);
        let mut required: Vec<&str> = schema["required"]
            .as_array()
            .expect("required")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        required.sort_unstable();
        assert_eq!(required, ["id", "kind", "list", "time"]);
        assert!(schema["properties"]["id"].get("default").is_none());
        assert_eq!(schema["properties"]["page"]["default"], 0);
        assert_eq!(schema["properties"]["name"]["default"], "");
    }

    #[test]
    fn admits_understands_the_keywords_of_input_schemas() {
        let schema = object(json!({ "type": ["string", "null"], "maxLength": 2 }));
        assert_eq!(admits(&schema, &Value::Null), Some(true));
        assert_eq!(admits(&schema, &json!("abc")), Some(false));
        let schema = object(json!({ "not": { "const": 0 } }));
        assert_eq!(admits(&schema, &json!(0)), Some(false));
        assert_eq!(admits(&schema, &json!(1)), Some(true));
        assert_eq!(admits(&object(json!({ "type": 3 })), &json!(1)), None);
    }

    #[test]
    fn path_rules_become_parameter_schemas() {
        let uuid = path_parameter("student_uuid", &PathRule::Uuid("student-"));
        assert_eq!(uuid["in"], "path");
        assert_eq!(uuid["required"], true);
        assert_eq!(uuid["schema"]["pattern"], "^student-[0-9]{12}$");
        let any = path_parameter("w", &PathRule::AnyUuid(&["teacher-", "student-"]));
        assert_eq!(any["schema"]["pattern"], "^(teacher-|student-)[0-9]{12}$");
        let month = path_parameter("month", &PathRule::Int(1, 12));
        assert_eq!(
            month["schema"],
            json!({ "type": "integer", "minimum": 1, "maximum": 12 })
        );
        let kind = path_parameter("type", &PathRule::OneOf(&["school", "club"]));
        assert_eq!(kind["schema"]["enum"], json!(["school", "club"]));
        let text = path_parameter("q", &PathRule::Text(30));
        assert_eq!(text["schema"]["maxLength"], 30);
        assert_eq!(escape("a.b-"), "a\\.b-");
    }
}
