//! End-to-end smoke: login → token → protected call, through real HTTP and gRPC.

mod support;

use reqwest::Method;
use serde_json::json;
use support::{Gateway, assert_envelope};

#[tokio::test]
async fn ping_answers_pong() {
    let gw = Gateway::start().await;
    let response = gw.client.get(gw.url("/ping")).send().await.expect("ping");
    assert_eq!(response.status(), 200);
    assert!(response.headers().contains_key("x-request-id"));
    assert_eq!(response.text().await.expect("body"), "\"pong\"");
}

#[tokio::test]
async fn unknown_route_and_wrong_method_are_envelopes() {
    let gw = Gateway::start().await;
    let (status, body) = gw.call(Method::GET, "/v1/nothing-here", "", None).await;
    assert_eq!(status, 404);
    assert_envelope(status, &body);
    let (status, body) = gw.call(Method::DELETE, "/v1/login/student", "", None).await;
    assert_eq!(status, 405);
    assert_envelope(status, &body);
}

#[tokio::test]
async fn student_login_mints_a_token() {
    let gw = Gateway::start().await;
    let (status, body) = gw
        .call(
            Method::POST,
            "/v1/login/student",
            "",
            Some(json!({"student_id": "demostudent", "student_pw": "demo-student-pw"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_envelope(status, &body);
}

#[tokio::test]
async fn the_openapi_document_is_served() {
    let gw = Gateway::start().await;
    let (status, body) = gw.call(Method::GET, "/openapi.json", "", None).await;
    assert_eq!(status, 200);
    assert!(
        body["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1")),
        "{body}"
    );
    assert!(body["paths"]["/v1/login/student"]["post"].is_object());
    let (status, body) = gw.call(Method::POST, "/openapi.json", "", None).await;
    assert_eq!(status, 405);
    assert_envelope(status, &body);
}

#[tokio::test]
async fn every_answer_carries_a_fresh_request_id_never_the_clients() {
    let gw = Gateway::start().await;
    let mut seen = std::collections::HashSet::new();
    for path in [
        "/ping",
        "/v1/students/uuid/student-000000000001",
        "/v1/nothing-here",
    ] {
        let response = gw
            .client
            .get(gw.url(path))
            .header("x-request-id", "chosen-by-the-client")
            .send()
            .await
            .expect("response");
        let ids: Vec<_> = response.headers().get_all("x-request-id").iter().collect();
        assert_eq!(ids.len(), 1, "{path}: one request id");
        let id = ids[0].to_str().expect("ascii");
        let uuid = uuid::Uuid::parse_str(id).expect("a UUID");
        assert_eq!(uuid.get_version_num(), 4, "{path}: {id}");
        assert!(seen.insert(id.to_owned()), "{path}: ids are not reused");
    }
}

#[tokio::test]
async fn browsers_get_the_documented_cors_answers() {
    let gw = Gateway::start_with(Default::default(), |config| {
        config.http.cors_origins = vec!["https://app.school.example".to_owned()];
    })
    .await;
    let path = "/v1/students/uuid/student-000000000001";
    // Preflight from the allowed origin: answered by the gateway, the backend not asked.
    let preflight = gw
        .client
        .request(Method::OPTIONS, gw.url(path))
        .header("origin", "https://app.school.example")
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "authorization")
        .send()
        .await
        .expect("preflight");
    assert!(preflight.status().is_success(), "{}", preflight.status());
    let headers = preflight.headers();
    assert_eq!(
        headers["access-control-allow-origin"],
        "https://app.school.example"
    );
    let methods = headers["access-control-allow-methods"]
        .to_str()
        .expect("ascii");
    for method in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
        assert!(methods.contains(method), "{methods}");
    }
    let allowed = headers["access-control-allow-headers"]
        .to_str()
        .expect("ascii")
        .to_ascii_lowercase();
    assert!(allowed.contains("authorization"), "{allowed}");
    // A read sent by a page of `origin`.
    let read_from = |origin: &'static str| {
        gw.client
            .get(gw.url(path))
            .header("origin", origin)
            .bearer_auth(gw.token("student-000000000001"))
            .send()
    };
    // The actual request: the origin is echoed and X-Request-Id is readable by scripts.
    let read = read_from("https://app.school.example").await.expect("read");
    assert_eq!(read.status(), 200);
    assert_eq!(
        read.headers()["access-control-allow-origin"],
        "https://app.school.example"
    );
    let exposed = read.headers()["access-control-expose-headers"]
        .to_str()
        .expect("ascii")
        .to_ascii_lowercase();
    assert!(exposed.contains("x-request-id"), "{exposed}");
    // Another origin gets no CORS grant.
    let foreign = read_from("https://elsewhere.example").await.expect("read");
    assert!(
        !foreign
            .headers()
            .contains_key("access-control-allow-origin"),
        "{:?}",
        foreign.headers()
    );
}
