//! Cache key and group templates in the contract's notation (spec §2.5), parsed once
//! when the endpoint table is built and rendered per request from escaped values.
//!
//! A template is a dot-separated list of segments; a segment is a literal (`outings`)
//! or a variable (`$outing_uuid`, `$TokenUUID`). Every variable is resolved at parse
//! time to where its value comes from (path parameter, query field, caller), so a
//! request only copies bytes. Values are percent-escaped (everything but ASCII letters,
//! digits, `-` and `_`), which makes rendering injective: free text such as a search
//! query can neither collide with another key nor forge extra segments (decision 12,
//! ambiguity 27). Nothing here ever builds a glob.

use std::fmt::Write as _;

use crate::endpoints::PathParams;

/// The name that stands for the caller's token uuid, as in the contract.
pub const CALLER: &str = "TokenUUID";

/// Where a variable takes its value from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Var {
    /// A path parameter of the route.
    Path(&'static str),
    /// A field of the endpoint's query input (the first value, as binding takes it).
    Query(&'static str),
    /// The authenticated caller's uuid.
    Caller,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Segment {
    Literal(&'static str),
    Var(Var),
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    text: &'static str,
    segments: Vec<Segment>,
}

/// A template that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("cache template {0:?} has an empty segment")]
    EmptySegment(&'static str),
    #[error(
        "cache template {template:?}: literal {segment:?} may only use ASCII letters, digits, '-' and '_'"
    )]
    BadLiteral {
        template: &'static str,
        segment: &'static str,
    },
    #[error("cache template {template:?}: ${name} is no path parameter{query} nor ${CALLER}")]
    UnknownVar {
        template: &'static str,
        name: &'static str,
        /// `", query field"` when query fields were allowed, for the message.
        query: &'static str,
    },
}

/// The values of one request that templates read.
#[derive(Debug, Clone, Copy)]
pub struct Values<'a> {
    /// The validated path parameters.
    pub params: &'a PathParams,
    /// The raw (percent-encoded) query string.
    pub query: Option<&'a str>,
    /// The caller's uuid; `""` on public endpoints.
    pub caller: &'a str,
}

/// A query field given more than once: the request is not cached, so that the key can
/// never disagree with what binding reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AmbiguousQuery;

// === impl Template ===

impl Template {
    /// Parses `text`; `path` and `query` name the variables it may use besides the caller.
    pub fn parse(
        text: &'static str,
        path: &[&'static str],
        query: &[&'static str],
    ) -> Result<Self, TemplateError> {
        let mut segments = Vec::new();
        for segment in text.split('.') {
            if segment.is_empty() {
                return Err(TemplateError::EmptySegment(text));
            }
            if let Some(name) = segment.strip_prefix('$') {
                let var = if name == CALLER {
                    Var::Caller
                } else if let Some(p) = path.iter().find(|p| **p == name) {
                    Var::Path(p)
                } else if let Some(q) = query.iter().find(|q| **q == name) {
                    Var::Query(q)
                } else {
                    return Err(TemplateError::UnknownVar {
                        template: text,
                        name,
                        query: if query.is_empty() {
                            ""
                        } else {
                            ", query field"
                        },
                    });
                };
                segments.push(Segment::Var(var));
            } else if segment.bytes().all(is_plain) {
                segments.push(Segment::Literal(segment));
            } else {
                return Err(TemplateError::BadLiteral {
                    template: text,
                    segment,
                });
            }
        }
        Ok(Self { text, segments })
    }

    /// The template as written.
    pub fn text(&self) -> &'static str {
        self.text
    }

    /// The variables, in order.
    pub fn vars(&self) -> impl Iterator<Item = Var> + '_ {
        self.segments.iter().filter_map(|s| match s {
            Segment::Var(var) => Some(*var),
            Segment::Literal(_) => None,
        })
    }

    /// The template with every variable written `$`: two group templates that differ
    /// only in where their values come from (`$student_uuid` in a read, `$TokenUUID`
    /// in a write) name the same family of groups.
    pub fn family(&self) -> String {
        let mut out = String::with_capacity(self.text.len());
        for (i, segment) in self.segments.iter().enumerate() {
            if i > 0 {
                out.push('.');
            }
            match segment {
                Segment::Literal(text) => out.push_str(text),
                Segment::Var(_) => out.push('$'),
            }
        }
        out
    }

    /// Appends the rendered template to `out`.
    pub fn render(&self, values: &Values<'_>, out: &mut String) -> Result<(), AmbiguousQuery> {
        for (i, segment) in self.segments.iter().enumerate() {
            if i > 0 {
                out.push('.');
            }
            match *segment {
                Segment::Literal(text) => out.push_str(text),
                Segment::Var(Var::Path(name)) => escape(values.params.get(name).as_bytes(), out),
                Segment::Var(Var::Caller) => escape(values.caller.as_bytes(), out),
                Segment::Var(Var::Query(name)) => {
                    query_value(values.query.unwrap_or(""), name, out)?;
                }
            }
        }
        Ok(())
    }

    /// The rendered template as a new string.
    pub fn to_key(&self, values: &Values<'_>) -> Result<String, AmbiguousQuery> {
        let mut out = String::with_capacity(self.text.len() + 32);
        self.render(values, &mut out)?;
        Ok(out)
    }
}

/// Bytes written as they are; every other byte is escaped.
fn is_plain(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_'
}

/// Percent-escapes every byte that is not plain (so `.`, `%`, `*`, `:` and `@` never
/// appear unescaped in a value).
pub fn escape(bytes: &[u8], out: &mut String) {
    for &byte in bytes {
        if is_plain(byte) {
            out.push(char::from(byte));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(out, "%{byte:02X}");
        }
    }
}

/// Escapes the first value of `name` in the query (absent and empty both render as
/// nothing: binding reads both as the field's default). A second value is refused.
fn query_value(query: &str, name: &str, out: &mut String) -> Result<(), AmbiguousQuery> {
    let mut found = None;
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        if key == name {
            if found.is_some() {
                return Err(AmbiguousQuery);
            }
            found = Some(value);
        }
    }
    if let Some(value) = found {
        escape(value.as_bytes(), out);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> PathParams {
        PathParams(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    fn render(template: &Template, params: &PathParams, query: Option<&str>) -> String {
        template
            .to_key(&Values {
                params,
                query,
                caller: "teacher-000000000001",
            })
            .expect("renders")
    }

    #[test]
    fn resolves_variables_once() {
        let t = Template::parse(
            "students.$student_uuid.outings.start.$start.by.$TokenUUID",
            &["student_uuid"],
            &["start", "count"],
        )
        .expect("parses");
        assert_eq!(
            t.vars().collect::<Vec<_>>(),
            [Var::Path("student_uuid"), Var::Query("start"), Var::Caller]
        );
        assert_eq!(t.family(), "students.$.outings.start.$.by.$");
        let p = params(&[("student_uuid", "student-000000000001")]);
        assert_eq!(
            render(&t, &p, Some("count=3&start=20")),
            "students.student-000000000001.outings.start.20.by.teacher-000000000001"
        );
        assert_eq!(
            render(&t, &p, None),
            "students.student-000000000001.outings.start..by.teacher-000000000001"
        );
    }

    #[test]
    fn rejects_bad_templates() {
        assert!(matches!(
            Template::parse("a..b", &[], &[]),
            Err(TemplateError::EmptySegment(_))
        ));
        assert!(matches!(
            Template::parse("a.b*", &[], &[]),
            Err(TemplateError::BadLiteral { .. })
        ));
        assert!(matches!(
            Template::parse("a.$nope", &["x"], &[]),
            Err(TemplateError::UnknownVar { name: "nope", .. })
        ));
    }

    #[test]
    fn free_text_cannot_collide_or_glob() {
        let t = Template::parse(
            "q.$search_query.start.$start",
            &["search_query"],
            &["start"],
        )
        .expect("parses");
        let a = render(&t, &params(&[("search_query", "a.start.1")]), None);
        let b = render(&t, &params(&[("search_query", "a")]), Some("start=1"));
        assert_ne!(a, b);
        assert_eq!(a, "q.a%2Estart%2E1.start.");
        let glob = render(&t, &params(&[("search_query", "*?[x]%")]), None);
        assert_eq!(glob, "q.%2A%3F%5Bx%5D%25.start.");
        let utf8 = render(&t, &params(&[("search_query", "공지")]), None);
        assert!(utf8.is_ascii(), "{utf8}");
    }

    #[test]
    fn query_values_are_decoded_like_binding_and_duplicates_refused() {
        let t = Template::parse("s.$status", &[], &["status"]).expect("parses");
        let p = params(&[]);
        assert_eq!(render(&t, &p, Some("status=a%20b")), "s.a%20b");
        assert_eq!(render(&t, &p, Some("status=a+b")), "s.a%20b");
        let values = Values {
            params: &p,
            query: Some("status=x&status=y"),
            caller: "",
        };
        assert_eq!(t.to_key(&values), Err(AmbiguousQuery));
    }
}
