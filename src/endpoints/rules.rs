//! Validation rules of the contract's field tables (spec §2.4 vocabulary) as `validator`
//! custom functions, the path-parameter rules of decision 8, and the 400 message that
//! names every failing field.

use std::borrow::Cow;
use std::fmt;

use validator::{ValidationError, ValidationErrors, ValidationErrorsKind};

use crate::auth::principal::is_uuid_of;
use crate::http::GatewayError;

fn fail(tag: &'static str) -> Result<(), ValidationError> {
    Err(ValidationError::new(tag))
}

/// `required` for integers: non-zero (0 counts as missing). validator passes `Copy`
/// fields by value.
pub fn nonzero<T: Copy + Default + PartialEq>(value: T) -> Result<(), ValidationError> {
    if value == T::default() {
        fail("required")
    } else {
        Ok(())
    }
}

/// `required` for strings: non-empty.
pub fn required(value: &str) -> Result<(), ValidationError> {
    if value.is_empty() {
        fail("required")
    } else {
        Ok(())
    }
}

/// Every code point is in the Hangul script (syllables, jamo, compatibility jamo).
pub fn hangul(value: &str) -> Result<(), ValidationError> {
    let is_hangul = |c: char| {
        matches!(c as u32,
            0x1100..=0x11FF | 0x3130..=0x318F | 0xA960..=0xA97F | 0xAC00..=0xD7AF
            | 0xD7B0..=0xD7FF | 0xFFA0..=0xFFDC | 0x302E..=0x302F | 0x3200..=0x321E
            | 0x3260..=0x327E)
    };
    if value.chars().all(is_hangul) {
        Ok(())
    } else {
        fail("hangul")
    }
}

/// `phone`: empty, or starts with `010` followed by 8 ASCII digits.
pub fn phone(value: &str) -> Result<(), ValidationError> {
    if value.is_empty() {
        return Ok(());
    }
    let ok = value
        .strip_prefix("010")
        .is_some_and(|rest| rest.len() >= 8 && rest.as_bytes()[..8].iter().all(u8::is_ascii_digit));
    if ok { Ok(()) } else { fail("phone") }
}

/// `date`: empty, or contains `DDDD-DD-DD`.
pub fn date(value: &str) -> Result<(), ValidationError> {
    if value.is_empty() {
        return Ok(());
    }
    let bytes = value.as_bytes();
    let shape = |w: &[u8]| {
        w.iter().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                *b == b'-'
            } else {
                b.is_ascii_digit()
            }
        })
    };
    if bytes.windows(10).any(shape) {
        Ok(())
    } else {
        fail("date")
    }
}

/// A Unix time in seconds written with exactly 10 digits (1000000000–9999999999); 0
/// fails as `required`, as the contract's `required,int_len=10` pair does.
pub fn unix_seconds(value: i64) -> Result<(), ValidationError> {
    match value {
        0 => fail("required"),
        1_000_000_000..=9_999_999_999 => Ok(()),
        _ => fail("int_len"),
    }
}

/// Starts with the kind's prefix followed by 12 digits, when non-empty (prefix-only,
/// trailing text unchecked, as the contract's `uuid(kind)` rule says).
fn uuid_prefix(value: &str, prefix: &str) -> Result<(), ValidationError> {
    if value.is_empty() {
        return Ok(());
    }
    let ok = value.strip_prefix(prefix).is_some_and(|rest| {
        rest.len() >= 12 && rest.as_bytes()[..12].iter().all(u8::is_ascii_digit)
    });
    if ok { Ok(()) } else { fail("uuid") }
}

macro_rules! uuid_rules {
    ($($name:ident => $prefix:literal),* $(,)?) => {$(
        #[doc = concat!("`uuid(", $prefix, ")`: empty, or `", $prefix, "` + 12 digits (prefix only).")]
        pub fn $name(value: &str) -> Result<(), ValidationError> {
            uuid_prefix(value, $prefix)
        }
    )*};
}

uuid_rules! {
    student_uuid => "student-",
    teacher_uuid => "teacher-",
    parent_uuid => "parent-",
    admin_uuid => "admin-",
    club_uuid => "club-",
    recruitment_uuid => "recruitment-",
}

/// The 400 detail naming each failing field, one per line, sorted, in the
/// go-playground form clients know: `Key: '<Type>.<field>' Error:Field validation for
/// '<field>' failed on the '<tag>' tag`.
pub fn describe<T>(errors: &ValidationErrors) -> String {
    let type_name = std::any::type_name::<T>()
        .rsplit("::")
        .next()
        .unwrap_or("Request");
    let mut lines = Vec::new();
    collect(type_name, errors, &mut lines);
    lines.sort();
    lines.join("\n")
}

fn collect(prefix: &str, errors: &ValidationErrors, lines: &mut Vec<String>) {
    for (field, kind) in errors.errors() {
        let path = format!("{prefix}.{field}");
        match kind {
            // Schema-level rules (e.g. "at least one filter") speak for the whole input.
            ValidationErrorsKind::Field(list) if *field == "__all__" => {
                lines.extend(list.iter().map(|err| {
                    err.message
                        .as_ref()
                        .map_or_else(|| err.code.to_string(), ToString::to_string)
                }));
            }
            ValidationErrorsKind::Field(list) => {
                for err in list {
                    lines.push(format!(
                        "Key: '{path}' Error:Field validation for '{field}' failed on the '{}' tag",
                        err.code
                    ));
                }
            }
            ValidationErrorsKind::Struct(inner) => collect(&path, inner, lines),
            ValidationErrorsKind::List(items) => {
                for (index, inner) in items {
                    collect(&format!("{path}[{index}]"), inner, lines);
                }
            }
        }
    }
}

/// What a path parameter must look like (decision 8).
#[derive(Debug, Clone, Copy)]
pub enum PathRule {
    /// `<prefix>` + exactly 12 digits, e.g. `student-` for student uuids.
    Uuid(&'static str),
    /// A uuid of any of these prefixes (e.g. an announcement writer: teacher or student).
    AnyUuid(&'static [&'static str]),
    /// A decimal integer within an inclusive range.
    Int(i64, i64),
    /// One of a fixed set of words.
    OneOf(&'static [&'static str]),
    /// Any non-empty text of at most this many characters (free text such as a search).
    Text(usize),
}

impl PathRule {
    /// Checks `value` of parameter `name`; failure is 400 / -204.
    pub fn check(&self, name: &str, value: &str) -> Result<(), GatewayError> {
        let ok = match self {
            Self::Uuid(prefix) => is_uuid_of(value, prefix),
            Self::AnyUuid(prefixes) => prefixes.iter().any(|prefix| is_uuid_of(value, prefix)),
            Self::Int(min, max) => value
                .parse::<i64>()
                .is_ok_and(|n| (*min..=*max).contains(&n)),
            Self::OneOf(words) => words.contains(&value),
            Self::Text(max) => !value.is_empty() && value.chars().count() <= *max,
        };
        if ok {
            Ok(())
        } else {
            Err(GatewayError::path_variable(name, self))
        }
    }
}

impl fmt::Display for PathRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Uuid(prefix) => write!(f, "'{prefix}' followed by 12 digits"),
            Self::AnyUuid(prefixes) => write!(
                f,
                "one of '{}' followed by 12 digits",
                prefixes.join("', '")
            ),
            Self::Int(min, max) => write!(f, "an integer from {min} to {max}"),
            Self::OneOf([]) => write!(f, "a supported value"),
            Self::OneOf(words) => write!(f, "one of {}", words.join(", ")),
            Self::Text(max) => write!(f, "non-empty text of at most {max} characters"),
        }
    }
}

/// Shorthand for `Cow` messages in adapters.
pub type Text = Cow<'static, str>;

/// The rules above as JSON Schema keywords, for the OpenAPI document: each function is
/// a `#[schemars(transform = ...)]` on the input field the same-named rule validates, so
/// the published schema states what the custom validator checks.
pub mod schema {
    use schemars::Schema;
    use serde_json::{Value, json};

    /// Code points of [`super::hangul`] as an ECMA-262 character class.
    pub const HANGUL_PATTERN: &str = concat!(
        "^[",
        "\\u1100-\\u11FF\\u3130-\\u318F\\uA960-\\uA97F\\uAC00-\\uD7AF\\uD7B0-\\uD7FF",
        "\\uFFA0-\\uFFDC\\u302E-\\u302F\\u3200-\\u321E\\u3260-\\u327E",
        "]*$"
    );
    /// [`super::phone`]: empty, or `010` and 8 digits (prefix only).
    pub const PHONE_PATTERN: &str = "^$|^010[0-9]{8}";
    /// [`super::date`]: empty, or contains `DDDD-DD-DD`.
    pub const DATE_PATTERN: &str = "^$|[0-9]{4}-[0-9]{2}-[0-9]{2}";

    fn set(schema: &mut Schema, key: &str, value: Value) {
        schema.insert(key.to_owned(), value);
    }

    fn describe(schema: &mut Schema, rule: &str) {
        let text = match schema.get("description").and_then(Value::as_str) {
            Some(doc) => format!("{doc}\n\n{rule}"),
            None => rule.to_owned(),
        };
        set(schema, "description", Value::String(text));
    }

    /// [`super::required`]: a non-empty string.
    pub fn required(schema: &mut Schema) {
        set(schema, "minLength", json!(1));
    }

    /// [`super::hangul`]: Hangul syllables and jamo only.
    pub fn hangul(schema: &mut Schema) {
        set(schema, "pattern", json!(HANGUL_PATTERN));
        describe(schema, "Hangul only.");
    }

    /// [`super::phone`].
    pub fn phone(schema: &mut Schema) {
        set(schema, "pattern", json!(PHONE_PATTERN));
        describe(
            schema,
            "Empty, or a mobile number starting with 010 and 8 digits.",
        );
    }

    /// [`super::date`].
    pub fn date(schema: &mut Schema) {
        set(schema, "pattern", json!(DATE_PATTERN));
        describe(schema, "Empty, or a date written YYYY-MM-DD.");
    }

    /// [`super::unix_seconds`]: a 10-digit Unix time in seconds.
    pub fn unix_seconds(schema: &mut Schema) {
        set(schema, "minimum", json!(1_000_000_000_i64));
        set(schema, "maximum", json!(9_999_999_999_i64));
        describe(schema, "Unix time in seconds (10 digits).");
    }

    fn uuid(schema: &mut Schema, prefix: &str) {
        set(schema, "pattern", json!(format!("^$|^{prefix}[0-9]{{12}}")));
        describe(
            schema,
            &format!("Empty, or `{prefix}` followed by 12 digits (the prefix is checked)."),
        );
    }

    /// [`super::student_uuid`].
    pub fn student_uuid(schema: &mut Schema) {
        uuid(schema, "student-");
    }

    /// [`super::parent_uuid`].
    pub fn parent_uuid(schema: &mut Schema) {
        uuid(schema, "parent-");
    }

    /// A file part of a multipart form (bound as bytes). An absent optional file binds
    /// as empty bytes: its default is stated as the empty string, not a JSON array.
    pub fn file(schema: &mut Schema) {
        if schema.get("default").is_some_and(Value::is_array) {
            set(schema, "default", json!(""));
        }
        set(
            schema,
            "contentMediaType",
            json!("application/octet-stream"),
        );
        describe(schema, "A file part of the multipart form.");
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;
    use validator::Validate;

    use super::*;

    #[test]
    fn hangul_accepts_syllables_and_jamo_only() {
        assert!(hangul("홍길동").is_ok());
        assert!(hangul("ㄱㄴ").is_ok());
        assert!(hangul("").is_ok());
        assert!(hangul("홍a").is_err());
        assert!(hangul("Kim").is_err());
        assert!(hangul("홍 길").is_err());
    }

    #[test]
    fn phone_is_010_and_8_digits_by_prefix() {
        assert!(phone("01012345678").is_ok());
        assert!(phone("01012345678xyz").is_ok(), "prefix only");
        assert!(phone("").is_ok());
        assert!(phone("0101234567").is_err());
        assert!(phone("01112345678").is_err());
        assert!(phone("010-1234-5678").is_err());
    }

    #[test]
    fn uuid_rules_check_prefix_and_twelve_digits() {
        assert!(parent_uuid("parent-123456789012").is_ok());
        assert!(
            parent_uuid("parent-123456789012trailing").is_ok(),
            "prefix only"
        );
        assert!(parent_uuid("").is_ok());
        assert!(parent_uuid("parent-12345").is_err());
        assert!(parent_uuid("student-123456789012").is_err());
        assert!(club_uuid("club-000000000001").is_ok());
        assert!(recruitment_uuid("recruitment-00000000000a").is_err());
    }

    #[test]
    fn date_and_unix_seconds() {
        assert!(date("2020-01-31").is_ok());
        assert!(date("x2020-01-31y").is_ok());
        assert!(date("2020-1-31").is_err());
        assert!(date("").is_ok());
        assert!(unix_seconds(1_600_000_000).is_ok());
        assert!(unix_seconds(999_999_999).is_err());
        assert!(unix_seconds(-100_000_000).is_err());
        assert!(unix_seconds(10_000_000_000).is_err());
        assert_eq!(unix_seconds(0).expect_err("zero").code, "required");
    }

    #[test]
    fn nonzero_and_required() {
        assert!(nonzero(0u32).is_err());
        assert!(nonzero(3u32).is_ok());
        assert!(required("").is_err());
        assert!(required("x").is_ok());
    }

    #[derive(Debug, Default, Deserialize, Validate)]
    struct Sample {
        #[validate(length(min = 4, max = 16))]
        student_id: String,
        #[validate(custom(function = "hangul"), length(min = 2, max = 4))]
        name: String,
        #[validate(range(min = 1, max = 3))]
        grade: u32,
    }

    #[test]
    fn describe_names_every_failing_field_in_a_stable_order() {
        let sample = Sample {
            student_id: "abc".into(),
            name: "홍길동".into(),
            grade: 4,
        };
        let errors = sample.validate().expect_err("two failures");
        let text = describe::<Sample>(&errors);
        assert_eq!(
            text,
            "Key: 'Sample.grade' Error:Field validation for 'grade' failed on the 'range' tag\n\
             Key: 'Sample.student_id' Error:Field validation for 'student_id' failed on the 'length' tag"
        );
        // Lengths count code points, not bytes.
        let ok = Sample {
            student_id: "abcd".into(),
            name: "홍길동동".into(),
            grade: 1,
        };
        assert!(ok.validate().is_ok());
    }

    #[test]
    fn path_rules() {
        assert!(
            PathRule::Uuid("student-")
                .check("s", "student-000000000001")
                .is_ok()
        );
        let err = PathRule::Uuid("student-")
            .check("s", "student-1")
            .expect_err("short");
        assert_eq!(err.code(), -204);
        assert!(PathRule::Int(1, 12).check("month", "12").is_ok());
        assert!(PathRule::Int(1, 12).check("month", "13").is_err());
        assert!(PathRule::Int(1, 12).check("month", "x").is_err());
        assert!(
            PathRule::OneOf(&["school", "club"])
                .check("type", "club")
                .is_ok()
        );
        assert!(
            PathRule::OneOf(&["school", "club"])
                .check("type", "Club")
                .is_err()
        );
        assert!(PathRule::Text(3).check("q", "abcd").is_err());
        let writer = PathRule::AnyUuid(&["teacher-", "student-"]);
        assert!(writer.check("w", "teacher-000000000001").is_ok());
        assert!(writer.check("w", "student-000000000001").is_ok());
        assert!(writer.check("w", "parent-000000000001").is_err());
    }
}
