//! Table-driven request cases: one request, the status and the contract code it must get.

use reqwest::Method;
use serde_json::Value;

use super::{Gateway, assert_envelope};

/// One request and the status and code it must get.
pub struct Case {
    pub method: Method,
    pub path: String,
    pub caller: &'static str,
    pub body: Option<Value>,
    pub status: u16,
    pub code: i64,
}

/// A case without a body.
pub fn case(
    method: Method,
    path: impl Into<String>,
    caller: &'static str,
    status: u16,
    code: i64,
) -> Case {
    Case {
        method,
        path: path.into(),
        caller,
        body: None,
        status,
        code,
    }
}

/// The case with a JSON body.
pub fn with_body(mut case: Case, body: Value) -> Case {
    case.body = Some(body);
    case
}

/// Runs every case on `gw`, checking status, envelope and code; returns the bodies in order.
pub async fn run(gw: &Gateway, cases: Vec<Case>) -> Vec<Value> {
    let mut bodies = Vec::with_capacity(cases.len());
    for c in cases {
        let (status, body) = gw.call(c.method.clone(), &c.path, c.caller, c.body).await;
        let what = format!("{} {} as {:?}", c.method, c.path, c.caller);
        assert_eq!(status, c.status, "{what}: {body}");
        assert_envelope(status, &body);
        assert_eq!(body["code"], c.code, "{what}: {body}");
        bodies.push(body);
    }
    bodies
}
