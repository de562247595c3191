//! The authenticated caller and its account kind, read from the uuid prefix (spec §2.7).

use std::fmt;
use std::sync::Arc;

/// An account kind that may hold a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Admin,
    Student,
    Teacher,
    Parent,
}

impl Kind {
    /// All kinds, for "any kind" rules.
    pub const ALL: &'static [Kind] = &[Kind::Admin, Kind::Student, Kind::Teacher, Kind::Parent];

    /// The uuid prefix of the kind, with its dash.
    pub fn prefix(self) -> &'static str {
        match self {
            Self::Admin => "admin-",
            Self::Student => "student-",
            Self::Teacher => "teacher-",
            Self::Parent => "parent-",
        }
    }

    /// The kind whose prefix `uuid` starts with, if any.
    pub fn of_uuid(uuid: &str) -> Option<Kind> {
        Self::ALL
            .iter()
            .copied()
            .find(|kind| uuid.starts_with(kind.prefix()))
    }

    /// Lower-case name, used in logs and docs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Student => "student",
            Self::Teacher => "teacher",
            Self::Parent => "parent",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The caller of a request that carried a valid token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's `uuid` claim, forwarded to the backends as the caller's uuid (shared:
    /// a request's principal is a clone of the verified token's).
    pub uuid: Arc<str>,
    /// `None` when the uuid has no known prefix: such a caller passes no kind rule.
    pub kind: Option<Kind>,
}

impl Principal {
    /// A principal from a token's `uuid` claim.
    pub fn from_uuid(uuid: String) -> Self {
        let kind = Kind::of_uuid(&uuid);
        Self {
            uuid: uuid.into(),
            kind,
        }
    }
}

/// Whether `value` is `<prefix>` followed by exactly 12 ASCII digits.
pub fn is_uuid_of(value: &str, prefix: &str) -> bool {
    value
        .strip_prefix(prefix)
        .is_some_and(|digits| digits.len() == 12 && digits.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_comes_from_the_uuid_prefix() {
        assert_eq!(
            Principal::from_uuid("student-000000000001".into()).kind,
            Some(Kind::Student)
        );
        assert_eq!(
            Principal::from_uuid("admin-000000000001".into()).kind,
            Some(Kind::Admin)
        );
        assert_eq!(Principal::from_uuid("club-000000000001".into()).kind, None);
        assert_eq!(Principal::from_uuid(String::new()).kind, None);
    }

    #[test]
    fn uuid_shape_is_prefix_and_twelve_digits() {
        assert!(is_uuid_of("student-123456789012", "student-"));
        assert!(!is_uuid_of("student-12345678901", "student-"));
        assert!(!is_uuid_of("student-1234567890123", "student-"));
        assert!(!is_uuid_of("student-12345678901x", "student-"));
        assert!(!is_uuid_of("teacher-123456789012", "student-"));
    }
}
