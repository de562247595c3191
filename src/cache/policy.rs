//! What an endpoint declares about caching: for a read, its key, whether the entry is
//! shared, the invalidation groups it belongs to and its side effects; for a write, the
//! groups a success invalidates. Declarations are data in the endpoint table, compiled
//! once into [`ReadCache`] and group [`Template`]s.
//!
//! A group is a named set of entries with one version number (see [`super`]): a write
//! names the groups it can change, a read names every group whose change could alter
//! its answer. Group templates use the same notation as keys and may read path
//! parameters and the caller only (a write's body is not known to the pipeline).

use axum::http::StatusCode;

use super::template::{Template, TemplateError};

/// Who may be served an entry (decision 9).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The answer is the same for every caller who passes the access rule: one entry
    /// serves them all. Declared explicitly, per endpoint.
    Shared,
    /// One entry per caller: the caller's uuid is always part of the key, whatever the
    /// template says.
    PerCaller,
}

impl Scope {
    /// `shared` or `per-caller`, for logs and docs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Shared => "shared",
            Self::PerCaller => "per-caller",
        }
    }
}

/// A read endpoint's cache declaration, as written in the table.
#[derive(Debug, Clone, Copy)]
pub struct CachePolicy {
    /// Shared or per caller (decision 9).
    pub scope: Scope,
    /// Key template (spec §2.5 notation); it must name every path parameter and input
    /// field, which the table check enforces.
    pub key: &'static str,
    /// Group templates the entry belongs to.
    pub groups: &'static [&'static str],
    /// Groups a miss invalidates after the backend answered with the cached status: the
    /// read changes state (decision 13, announcement detail). A hit changes nothing.
    pub on_miss: &'static [&'static str],
    /// The only status that is stored (the documented success status).
    pub status: StatusCode,
}

impl CachePolicy {
    /// An entry per caller, stored on 200.
    pub const fn per_caller(key: &'static str) -> Self {
        Self {
            scope: Scope::PerCaller,
            key,
            groups: &[],
            on_miss: &[],
            status: StatusCode::OK,
        }
    }

    /// One entry for every caller, stored on 200.
    pub const fn shared(key: &'static str) -> Self {
        Self {
            scope: Scope::Shared,
            ..Self::per_caller(key)
        }
    }

    /// The groups the entry belongs to.
    pub const fn groups(mut self, groups: &'static [&'static str]) -> Self {
        self.groups = groups;
        self
    }

    /// The groups a miss invalidates (a read with side effects).
    pub const fn on_miss_invalidates(mut self, groups: &'static [&'static str]) -> Self {
        self.on_miss = groups;
        self
    }
}

/// A compiled [`CachePolicy`].
#[derive(Debug, Clone)]
pub struct ReadCache {
    /// Shared or per caller.
    pub scope: Scope,
    /// The only status stored.
    pub status: StatusCode,
    /// The key template, variables resolved.
    pub key: Template,
    /// The groups the entry belongs to.
    pub groups: Vec<Template>,
    /// The groups a miss invalidates.
    pub on_miss: Vec<Template>,
}

impl ReadCache {
    /// Parses the policy's templates against the route's path parameters and the
    /// input's query fields.
    pub fn compile(
        policy: &CachePolicy,
        path: &[&'static str],
        query: &[&'static str],
    ) -> Result<Self, TemplateError> {
        Ok(Self {
            scope: policy.scope,
            status: policy.status,
            key: Template::parse(policy.key, path, query)?,
            groups: groups(policy.groups, path)?,
            on_miss: groups(policy.on_miss, path)?,
        })
    }
}

/// Parses group templates (path parameters and the caller only).
pub fn groups(
    templates: &[&'static str],
    path: &[&'static str],
) -> Result<Vec<Template>, TemplateError> {
    templates
        .iter()
        .map(|text| Template::parse(text, path, &[]))
        .collect()
}
