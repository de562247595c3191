//! The endpoint table: every route of the contract declared once, as data plus a small
//! typed adapter (architecture principle 1). The pipeline is generic over [`Adapter`];
//! nothing here handles a request by itself.
//!
//! One file per backend service holds its entries and adapters. [`table`] assembles
//! them and [`check`] rejects a malformed table at start-up.

pub mod announcement;
pub mod auth;
pub mod club;
pub mod outing;
pub mod rules;
pub mod schedule;

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use axum::http::Method;
use serde::de::DeserializeOwned;
use validator::Validate;

use crate::auth::{Access, JwtKeys, Principal};
use crate::cache::policy::{self, CachePolicy, ReadCache, Scope};
use crate::cache::template::{Template, TemplateError, Var};
use crate::http::GatewayError;
use crate::http::input::Source;
use crate::json_text;
use crate::pipeline::Handler;
use crate::upstream::Service;

pub use rules::PathRule;

/// A gRPC method: its name as used in messages and its HTTP/2 path.
#[derive(Debug, Clone, Copy)]
pub struct Rpc {
    /// Name used in error messages ("request time out for <name> service").
    pub name: &'static str,
    /// Full method path, e.g. `/auth.student.AuthStudent/LoginStudentAuth`.
    pub path: &'static str,
}

/// The in-band status every backend reply starts with (spec §2.6). Auth and club send
/// `uint32 Status`, the others `int32 status`: both widen to `i64`.
pub trait InBand {
    fn status(&self) -> i64;
    fn code(&self) -> i32;
    fn message(&self) -> &str;
}

/// Implements [`InBand`] for reply types by naming their status, code and message fields.
#[macro_export]
macro_rules! in_band {
    ($status:ident, $code:ident, $message:ident: $($reply:ty),+ $(,)?) => {$(
        impl $crate::endpoints::InBand for $reply {
            fn status(&self) -> i64 { i64::from(self.$status) }
            fn code(&self) -> i32 { self.$code }
            fn message(&self) -> &str { &self.$message }
        }
    )+};
}

/// An [`Rpc`] from a gRPC service path and a method name:
/// `rpc!("/auth.student.AuthStudent", "LoginStudentAuth")`. A service path without its
/// leading `/` fails to compile.
#[macro_export]
macro_rules! rpc {
    ($service:literal, $method:literal) => {{
        const _: () = assert!(
            $service.as_bytes()[0] == b'/',
            concat!("gRPC service path must start with '/': ", $service)
        );
        $crate::endpoints::Rpc {
            name: $method,
            path: concat!($service, "/", $method),
        }
    }};
}

/// The input of endpoints that take nothing but their path.
#[derive(Debug, Default, serde::Deserialize, Validate, schemars::JsonSchema)]
pub struct NoInput {}

/// What an adapter needs to know about the request besides its input.
pub struct Call<'a> {
    /// The authenticated caller; `None` on public endpoints.
    pub principal: Option<&'a Principal>,
    /// Validated path parameters.
    pub params: &'a PathParams,
    /// Token keys, for the login endpoints that mint tokens.
    pub jwt: &'a JwtKeys,
}

impl Call<'_> {
    /// The caller's uuid, or `""` on public endpoints.
    pub fn caller(&self) -> &str {
        self.principal.map_or("", |p| &p.uuid)
    }

    /// A path parameter (already validated by its [`PathRule`]).
    pub fn param(&self, name: &str) -> &str {
        self.params.get(name)
    }

    /// A numeric path parameter; its rule guarantees it parses.
    pub fn param_num<T: std::str::FromStr + Default>(&self, name: &str) -> T {
        self.params.get(name).parse().unwrap_or_default()
    }
}

/// Decoded path parameters of the matched route.
#[derive(Debug, Default, Clone)]
pub struct PathParams(pub Vec<(String, String)>);

impl PathParams {
    /// The value of `name`, or `""`.
    pub fn get(&self, name: &str) -> &str {
        self.find(name).unwrap_or("")
    }

    /// The value of `name`, if the route has it.
    pub fn find(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The success body's message and data fields (status and code are added by the pipeline).
#[derive(Debug)]
pub struct Success {
    pub message: Cow<'static, str>,
    /// The fields written into the envelope after `status`, `code` and `message`.
    pub data: Fields,
}

impl Success {
    /// A success with a message and no data fields.
    pub fn message(message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            message: message.into(),
            data: Fields::default(),
        }
    }

    /// Adds data fields ([`fields!`], or a JSON object's entries).
    pub fn with(mut self, data: impl Into<Fields>) -> Self {
        self.data = data.into();
        self
    }
}

/// Data fields of a success body, serialized as they are added (`"key":value` pairs
/// without the braces): a reply's strings are written once instead of being copied into
/// a `serde_json::Value` and then written.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Fields(Vec<u8>);

/// Keys of the envelope itself, never taken from data.
const ENVELOPE_KEYS: [&str; 3] = ["status", "code", "message"];

impl Fields {
    /// No fields yet, room for `bytes` of them (most bodies fit in 256).
    pub fn with_capacity(bytes: usize) -> Self {
        Self(Vec::with_capacity(bytes))
    }

    /// Adds `key: value`; a value that cannot be serialized, or one of the envelope's own
    /// keys, is left out (and logged).
    pub fn push(&mut self, key: &str, value: &(impl serde::Serialize + ?Sized)) {
        if ENVELOPE_KEYS.contains(&key) {
            tracing::warn!(key, "a data field named like an envelope field is left out");
            return;
        }
        let start = self.0.len();
        if start > 0 {
            self.0.push(b',');
        }
        json_text::write_str(&mut self.0, key);
        self.0.push(b':');
        let written = json_text::write_value(&mut self.0, value);
        if let Err(err) = written {
            self.0.truncate(start);
            tracing::warn!(key, %err, "a data field could not be serialized; left out");
        }
    }

    /// The serialized pairs.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The fields as a JSON object (for checks and tests; the pipeline writes the bytes).
    pub fn to_value(&self) -> serde_json::Value {
        let mut object = Vec::with_capacity(self.0.len() + 2);
        object.push(b'{');
        object.extend_from_slice(&self.0);
        object.push(b'}');
        serde_json::from_slice(&object).unwrap_or_default()
    }
}

/// A JSON object's entries (anything else has none).
impl From<serde_json::Value> for Fields {
    fn from(value: serde_json::Value) -> Self {
        let mut fields = Self::default();
        if let serde_json::Value::Object(map) = value {
            for (key, value) in &map {
                fields.push(key, value);
            }
        }
        fields
    }
}

/// `fields!({ "key": value, ... })`: [`Fields`] from `Serialize` values, in order, with
/// `json!`'s object syntax (values are expressions).
#[macro_export]
macro_rules! fields {
    ({ $($key:literal : $value:expr),* $(,)? }) => {{
        let mut fields = $crate::endpoints::Fields::with_capacity(256);
        $(fields.push($key, &$value);)*
        fields
    }};
}
pub use crate::fields;

/// The typed part of an endpoint: how its input becomes a gRPC request and how a
/// successful reply becomes the documented body.
pub trait Adapter: Send + Sync + 'static {
    /// The bound input, with its `validator` rules. Unknown keys are ignored. Its JSON
    /// Schema (with the same limits) is published in the OpenAPI document.
    type Input: DeserializeOwned + Validate + Default + schemars::JsonSchema + Send + 'static;
    /// The gRPC request message.
    type Request: prost::Message + Default + Send + 'static;
    /// The gRPC reply message.
    type Reply: prost::Message + Default + InBand + Send + 'static;

    /// Builds the gRPC request.
    fn request(&self, call: &Call<'_>, input: Self::Input) -> Self::Request;

    /// Builds the success body from a reply with a 2xx in-band status.
    fn success(&self, call: &Call<'_>, reply: Self::Reply) -> Result<Success, GatewayError>;

    /// Login endpoints: the account kind whose password they check (the login
    /// throttle's namespace, [`crate::guard::login`]); `None` (the default) otherwise.
    fn login_kind(&self) -> Option<&'static str> {
        None
    }

    /// Login endpoints: the account id the input tries.
    fn login_id<'i>(&self, _input: &'i Self::Input) -> &'i str {
        ""
    }
}

/// Whether repeating the call is harmless (decision 14: only reads are retried).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idempotency {
    Read,
    Write,
}

/// One route of the contract.
pub struct Endpoint {
    /// Stable id, `<service>.<name>`, used in metrics and logs.
    pub id: &'static str,
    pub method: Method,
    /// axum path template, e.g. `/v1/students/uuid/{student_uuid}`.
    pub path: &'static str,
    /// The contract route this entry serves, when it differs from `path` (the outing
    /// actions are one contract route served by one entry per action).
    pub contract_path: &'static str,
    pub service: Service,
    pub rpc: Rpc,
    pub access: Access,
    /// Rules for every path parameter (decision 8).
    pub params: &'static [(&'static str, PathRule)],
    pub source: Source,
    /// Overrides the service's deadline.
    pub deadline: Option<Duration>,
    pub idempotency: Idempotency,
    /// The erased adapter that runs the typed stages.
    pub handler: Arc<dyn Handler>,
    /// A read's cache policy, compiled when declared (spec §2.5, decision 9).
    pub cache: Option<ReadCache>,
    /// Groups a successful call invalidates before its response is sent (decision 12).
    pub invalidates: Vec<Template>,
    /// Cache declarations that did not compile; [`check`] reports them.
    cache_defects: Vec<TemplateError>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("id", &self.id)
            .field("method", &self.method)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Starts an endpoint declaration; the rest of the fields have defaults that the
/// builder methods change.
pub fn endpoint<A: Adapter>(
    id: &'static str,
    method: Method,
    path: &'static str,
    service: Service,
    rpc: Rpc,
    adapter: A,
) -> Endpoint {
    let idempotency = if method == Method::GET {
        Idempotency::Read
    } else {
        Idempotency::Write
    };
    Endpoint {
        id,
        method,
        path,
        contract_path: path,
        service,
        rpc,
        access: Access::ANY,
        params: &[],
        source: Source::None,
        deadline: None,
        idempotency,
        handler: crate::pipeline::handler(rpc, adapter),
        cache: None,
        invalidates: Vec::new(),
        cache_defects: Vec::new(),
    }
}

/// The parameter names of an axum path template (`{name}` segments).
pub fn path_names(path: &'static str) -> Vec<&'static str> {
    path.split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .collect()
}

// === impl Endpoint (declaration builder) ===

impl Endpoint {
    pub fn access(mut self, access: Access) -> Self {
        self.access = access;
        self
    }

    pub fn params(mut self, params: &'static [(&'static str, PathRule)]) -> Self {
        self.params = params;
        self
    }

    pub fn input(mut self, source: Source) -> Self {
        self.source = source;
        self
    }

    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }

    pub fn contract_path(mut self, path: &'static str) -> Self {
        self.contract_path = path;
        self
    }

    /// Caches this read (declare `.params` and `.input` first: the key's variables are
    /// resolved against them now, once).
    pub fn cached(mut self, policy: CachePolicy) -> Self {
        let fields = self.handler.input_fields().unwrap_or_default();
        match ReadCache::compile(&policy, &path_names(self.path), fields) {
            Ok(read) => self.cache = Some(read),
            Err(defect) => self.cache_defects.push(defect),
        }
        self
    }

    /// The groups a success invalidates (templates over path parameters and the caller).
    pub fn invalidates(mut self, groups: &'static [&'static str]) -> Self {
        match policy::groups(groups, &path_names(self.path)) {
            Ok(templates) => self.invalidates.extend(templates),
            Err(defect) => self.cache_defects.push(defect),
        }
        self
    }
}

/// Every endpoint of the contract (65 contract routes).
pub fn table() -> Vec<Endpoint> {
    let mut all = Vec::new();
    all.extend(auth::endpoints());
    all.extend(club::endpoints());
    all.extend(outing::endpoints());
    all.extend(schedule::endpoints());
    all.extend(announcement::endpoints());
    all
}

/// A malformed endpoint table.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("duplicate route {0} {1}")]
    DuplicateRoute(Method, &'static str),
    #[error("duplicate endpoint id {0}")]
    DuplicateId(&'static str),
    #[error("route {path}: path parameter {{{name}}} has no rule")]
    UnruledParam { path: &'static str, name: String },
    #[error("route {path}: rule for {name} names no path parameter")]
    StrayRule {
        path: &'static str,
        name: &'static str,
    },
    #[error("route {0}: own-uuid rule names no path parameter")]
    StrayOwnRule(&'static str),
    #[error("endpoint {id}: {defect}")]
    CacheTemplate {
        id: &'static str,
        defect: TemplateError,
    },
    #[error("endpoint {id}: only GET endpoints with path or query input can be cached")]
    UncacheableEndpoint { id: &'static str },
    #[error("endpoint {id}: a per-caller cache needs an authenticated caller")]
    PerCallerWithoutCaller { id: &'static str },
    #[error(
        "endpoint {id}: the cache key does not name {name:?}, so requests differing in it would share entries"
    )]
    KeyMissesInput {
        id: &'static str,
        name: &'static str,
    },
    #[error("endpoint {id}: invalidates {group:?}, which no cached read belongs to")]
    UnknownGroup {
        id: &'static str,
        group: &'static str,
    },
    #[error("endpoint {id}: belongs to group {group:?}, which nothing invalidates")]
    UninvalidatedGroup {
        id: &'static str,
        group: &'static str,
    },
}

/// Checks the table once at start-up: unique routes and ids, every path parameter
/// ruled, every rule and own-uuid rule naming a real parameter.
pub fn check(table: &[Endpoint]) -> Result<(), TableError> {
    let mut routes = HashSet::new();
    let mut ids = HashSet::new();
    for ep in table {
        if !routes.insert((ep.method.clone(), ep.path)) {
            return Err(TableError::DuplicateRoute(ep.method.clone(), ep.path));
        }
        if !ids.insert(ep.id) {
            return Err(TableError::DuplicateId(ep.id));
        }
        let names = path_names(ep.path);
        for name in &names {
            if !ep.params.iter().any(|(n, _)| n == name) {
                return Err(TableError::UnruledParam {
                    path: ep.path,
                    name: (*name).to_owned(),
                });
            }
        }
        for (name, _) in ep.params {
            if !names.contains(name) {
                return Err(TableError::StrayRule {
                    path: ep.path,
                    name,
                });
            }
        }
        if let Access::Kinds {
            own: Some(param), ..
        } = ep.access
            && !names.contains(&param)
        {
            return Err(TableError::StrayOwnRule(ep.path));
        }
        check_cache(ep, &names)?;
    }
    check_groups(table)
}

/// A cached read must be a keyed GET whose key names everything a request can vary.
fn check_cache(ep: &Endpoint, names: &[&'static str]) -> Result<(), TableError> {
    if let Some(defect) = ep.cache_defects.first() {
        return Err(TableError::CacheTemplate {
            id: ep.id,
            defect: defect.clone(),
        });
    }
    let Some(read) = &ep.cache else {
        return Ok(());
    };
    let fields = ep.handler.input_fields();
    let keyed_input = match ep.source {
        Source::None => true,
        Source::Query => fields.is_some(),
        _ => false,
    };
    if ep.method != Method::GET || !keyed_input {
        return Err(TableError::UncacheableEndpoint { id: ep.id });
    }
    if read.scope == Scope::PerCaller && !ep.access.needs_token() {
        return Err(TableError::PerCallerWithoutCaller { id: ep.id });
    }
    let vars: Vec<Var> = read.key.vars().collect();
    let query = match ep.source {
        Source::Query => fields.unwrap_or_default(),
        _ => &[],
    };
    let missing = names
        .iter()
        .copied()
        .find(|name| !vars.contains(&Var::Path(name)))
        .or_else(|| {
            query
                .iter()
                .copied()
                .find(|name| !vars.contains(&Var::Query(name)))
        });
    match missing {
        Some(name) => Err(TableError::KeyMissesInput { id: ep.id, name }),
        None => Ok(()),
    }
}

/// Every invalidated group is one some read belongs to, and every group a read belongs
/// to is invalidated by something: a typo on either side would leave entries stale.
fn check_groups(table: &[Endpoint]) -> Result<(), TableError> {
    let read_families: HashSet<String> = table
        .iter()
        .filter_map(|ep| ep.cache.as_ref())
        .flat_map(|read| read.groups.iter().map(Template::family))
        .collect();
    let mut invalidated = HashSet::new();
    for ep in table {
        let on_miss = ep.cache.iter().flat_map(|read| read.on_miss.iter());
        for group in ep.invalidates.iter().chain(on_miss) {
            let family = group.family();
            if !read_families.contains(&family) {
                return Err(TableError::UnknownGroup {
                    id: ep.id,
                    group: group.text(),
                });
            }
            invalidated.insert(family);
        }
    }
    for ep in table {
        for group in ep.cache.iter().flat_map(|read| read.groups.iter()) {
            if !invalidated.contains(&group.family()) {
                return Err(TableError::UninvalidatedGroup {
                    id: ep.id,
                    group: group.text(),
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_keep_their_order_and_never_shadow_the_envelope() {
        let mut fields = crate::fields!({ "b": 1, "a": "x" });
        fields.push("message", "not mine");
        fields.push("status", &500);
        assert_eq!(fields.as_bytes(), br#""b":1,"a":"x""#);
        assert_eq!(fields.to_value(), serde_json::json!({ "a": "x", "b": 1 }));
        let from_object = Fields::from(serde_json::json!({ "code": 9, "k": [1] }));
        assert_eq!(from_object.as_bytes(), br#""k":[1]"#);
        assert_eq!(Fields::from(serde_json::json!([1, 2])), Fields::default());
    }

    #[test]
    fn table_is_well_formed() {
        check(&table()).expect("table");
    }

    /// The table with endpoint `id` replaced by `change(endpoint)`.
    fn with(id: &str, change: impl FnOnce(Endpoint) -> Endpoint) -> Vec<Endpoint> {
        let mut all = table();
        let at = all.iter().position(|ep| ep.id == id).expect("endpoint");
        let ep = all.remove(at);
        all.insert(at, change(ep));
        all
    }

    #[test]
    fn exactly_the_documented_reads_are_cached_and_only_schedules_are_shared() {
        let all = table();
        let cached: Vec<(&str, Scope)> = all
            .iter()
            .filter_map(|ep| ep.cache.as_ref().map(|read| (ep.id, read.scope)))
            .collect();
        let ids: HashSet<&str> = cached.iter().map(|(id, _)| *id).collect();
        let expected: HashSet<&str> = [
            "outing.student_outings",
            "outing.get",
            "outing.card",
            "outing.with_filter",
            "schedule.by_month",
            "schedule.time_tables",
            "announcement.list",
            "announcement.detail",
            "announcement.check",
            "announcement.search",
            "announcement.by_writer",
        ]
        .into();
        assert_eq!(ids, expected);
        let shared: Vec<&str> = cached
            .iter()
            .filter(|(_, scope)| *scope == Scope::Shared)
            .map(|(id, _)| *id)
            .collect();
        assert_eq!(shared, ["schedule.by_month"]);
        // Auth and club stay uncached (api-auth-club.md §2.1).
        assert!(
            all.iter().all(|ep| ep.cache.is_none()
                || !(ep.id.starts_with("auth.") || ep.id.starts_with("club.")))
        );
    }

    #[test]
    fn every_write_that_changes_data_invalidates_something() {
        for ep in table() {
            let may_succeed = ep.id != "outing.action_unknown";
            if ep.method != Method::GET
                && may_succeed
                && ["outing.", "schedule.", "announcement."]
                    .iter()
                    .any(|p| ep.id.starts_with(p))
            {
                assert!(!ep.invalidates.is_empty(), "{} invalidates nothing", ep.id);
            }
        }
    }

    #[test]
    fn invalidation_targets_must_exist() {
        let bad = with("schedule.create", |ep| {
            ep.invalidates(&["schedules.nowhere"])
        });
        assert!(matches!(
            check(&bad),
            Err(TableError::UnknownGroup {
                id: "schedule.create",
                group: "schedules.nowhere"
            })
        ));
        // A typo'd variable source is fine: the family is what matters.
        let ok = with("outing.create", |ep| ep.invalidates(&["outing.$TokenUUID"]));
        check(&ok).expect("outing.$ is a read group family");
    }

    #[test]
    fn read_groups_must_be_invalidated_by_something() {
        let mut bad = table();
        bad.retain(|ep| !ep.id.starts_with("schedule.") || ep.method == Method::GET);
        assert!(matches!(
            check(&bad),
            Err(TableError::UninvalidatedGroup {
                id: "schedule.by_month",
                group: "schedules"
            })
        ));
    }

    #[test]
    fn cache_keys_must_name_every_path_parameter_and_query_field() {
        let no_start = with("announcement.list", |ep| {
            ep.cached(CachePolicy::per_caller("a.$type.count.$count"))
        });
        assert!(matches!(
            check(&no_start),
            Err(TableError::KeyMissesInput {
                id: "announcement.list",
                name: "start"
            })
        ));
        let no_path = with("outing.get", |ep| {
            ep.cached(CachePolicy::per_caller("outings"))
        });
        assert!(matches!(
            check(&no_path),
            Err(TableError::KeyMissesInput {
                name: "outing_uuid",
                ..
            })
        ));
    }

    #[test]
    fn malformed_cache_declarations_fail_the_check() {
        let unknown_var = with("outing.get", |ep| {
            ep.cached(CachePolicy::per_caller("outings.$nope"))
        });
        assert!(matches!(
            check(&unknown_var),
            Err(TableError::CacheTemplate {
                id: "outing.get",
                ..
            })
        ));
        let public = with("outing.by_code", |ep| {
            ep.cached(CachePolicy::per_caller("outings.code.$OCode"))
        });
        assert!(matches!(
            check(&public),
            Err(TableError::PerCallerWithoutCaller { .. })
        ));
        let write = with("schedule.create", |ep| {
            ep.cached(CachePolicy::shared("schedules"))
        });
        assert!(matches!(
            check(&write),
            Err(TableError::UncacheableEndpoint { .. })
        ));
    }

    #[test]
    fn table_covers_the_65_contract_routes() {
        let routes: HashSet<(Method, &str)> = table()
            .iter()
            .map(|ep| (ep.method.clone(), ep.contract_path))
            .collect();
        assert_eq!(routes.len(), 65, "{routes:#?}");
    }
}
