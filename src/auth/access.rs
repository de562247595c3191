//! Per-endpoint access rules (decision 7): which account kinds may call, and the
//! own-uuid rule for paths that name a student, teacher or parent.

use super::principal::{Kind, Principal};
use crate::http::GatewayError;

/// Who may call an endpoint.
#[derive(Debug, Clone, Copy)]
pub enum Access {
    /// No token needed; a token, if any, is ignored.
    Public,
    /// A valid token of one of these kinds.
    Kinds {
        kinds: &'static [Kind],
        /// A path parameter holding a student/teacher/parent uuid: a caller of that same
        /// kind must be the one it names.
        own: Option<&'static str>,
    },
}

impl Access {
    /// Any authenticated kind.
    pub const ANY: Access = Access::Kinds {
        kinds: Kind::ALL,
        own: None,
    };

    /// Only these kinds.
    pub const fn kinds(kinds: &'static [Kind]) -> Access {
        Access::Kinds { kinds, own: None }
    }

    /// These kinds, with the own-uuid rule on path parameter `param`.
    pub const fn own(kinds: &'static [Kind], param: &'static str) -> Access {
        Access::Kinds {
            kinds,
            own: Some(param),
        }
    }

    /// Whether a token is required.
    pub fn needs_token(&self) -> bool {
        matches!(self, Access::Kinds { .. })
    }

    /// Checks the rule; `path` looks up a path parameter by name.
    pub fn authorize<'a>(
        &self,
        principal: Option<&Principal>,
        path: impl Fn(&str) -> Option<&'a str>,
    ) -> Result<(), GatewayError> {
        let Access::Kinds { kinds, own } = self else {
            return Ok(());
        };
        let Some(principal) = principal else {
            return Err(GatewayError::forbidden("a token is required"));
        };
        let Some(kind) = principal.kind.filter(|k| kinds.contains(k)) else {
            return Err(GatewayError::forbidden(format!(
                "this endpoint is not available to {} accounts",
                principal.kind.map_or("unknown", Kind::as_str)
            )));
        };
        if let Some(param) = own {
            let target = path(param).unwrap_or_default();
            if Kind::of_uuid(target) == Some(kind) && target != &*principal.uuid {
                return Err(GatewayError::forbidden(format!(
                    "a {kind} account may only use its own {param}"
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(uuid: &str) -> Principal {
        Principal::from_uuid(uuid.into())
    }

    #[test]
    fn kinds_rule_admits_only_listed_kinds() {
        let rule = Access::kinds(&[Kind::Admin]);
        assert!(
            rule.authorize(Some(&caller("admin-000000000001")), |_| None)
                .is_ok()
        );
        let err = rule
            .authorize(Some(&caller("student-000000000001")), |_| None)
            .expect_err("student is not admin");
        assert_eq!(err.status(), 403);
        assert!(
            rule.authorize(Some(&caller("robot-000000000001")), |_| None)
                .is_err()
        );
        assert!(rule.authorize(None, |_| None).is_err());
    }

    #[test]
    fn own_rule_binds_same_kind_callers_to_their_uuid() {
        let rule = Access::own(&[Kind::Admin, Kind::Student], "student_uuid");
        let path = |uuid: &'static str| move |name: &str| (name == "student_uuid").then_some(uuid);
        let me = caller("student-000000000001");
        assert!(
            rule.authorize(Some(&me), path("student-000000000001"))
                .is_ok()
        );
        assert!(
            rule.authorize(Some(&me), path("student-000000000002"))
                .is_err()
        );
        // An admin may name any student.
        assert!(
            rule.authorize(
                Some(&caller("admin-000000000001")),
                path("student-000000000002")
            )
            .is_ok()
        );
    }

    #[test]
    fn public_needs_nothing() {
        assert!(Access::Public.authorize(None, |_| None).is_ok());
        assert!(!Access::Public.needs_token());
    }
}
