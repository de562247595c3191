//! The OpenAPI document generated from the endpoint table: it is valid OpenAPI 3.1
//! (checked against the OpenAPI Initiative's own JSON Schema, vendored under
//! tests/fixtures/openapi/), it lists every endpoint of the table with its parameters,
//! security and responses, and its input schemas accept exactly what the gateway's
//! binding and validation accept (checked on sample inputs through both).

use std::collections::BTreeSet;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use schemars::Schema;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use sms_gateway::auth::Access;
use sms_gateway::endpoints::{self, Endpoint, path_names, rules};
use sms_gateway::http::input::Source;
use sms_gateway::openapi;
use tower::ServiceExt;
use validator::Validate;

const OAS_SCHEMA: &str = include_str!("fixtures/openapi/oas-3.1-schema-2022-10-07.json");

fn table() -> Vec<Endpoint> {
    endpoints::table()
}

fn document() -> Value {
    openapi::document(&table())
}

fn operation<'a>(doc: &'a Value, endpoint: &Endpoint) -> &'a Value {
    &doc["paths"][endpoint.path][endpoint.method.as_str().to_ascii_lowercase()]
}

/// `#/components/...` references resolved against the document.
fn deref<'a>(doc: &'a Value, value: &'a Value) -> &'a Value {
    match value.get("$ref").and_then(Value::as_str) {
        Some(pointer) => doc
            .pointer(pointer.trim_start_matches('#'))
            .unwrap_or_else(|| panic!("dangling reference {pointer}")),
        None => value,
    }
}

#[test]
fn the_document_is_valid_openapi_3_1() {
    let schema: Value = serde_json::from_str(OAS_SCHEMA).expect("vendored schema");
    let validator = jsonschema::validator_for(&schema).expect("the OAS 3.1 schema compiles");
    let doc = document();
    let errors: Vec<String> = validator
        .iter_errors(&doc)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(
        validator.validate(&json!({ "openapi": "3.1.0" })).is_err(),
        "the schema must reject an incomplete document"
    );
}

#[test]
fn every_schema_is_valid_json_schema_2020_12_and_every_reference_resolves() {
    let doc = document();
    for (name, schema) in doc["components"]["schemas"].as_object().expect("schemas") {
        jsonschema::meta::validate(schema)
            .unwrap_or_else(|e| panic!("components.schemas.{name}: {e}"));
        // Compiling checks the patterns (ECMA-262 regexes) and the references.
        component_validator(&doc, name);
    }
    let text = doc.to_string();
    for reference in text.split("\"$ref\":\"").skip(1) {
        let pointer = reference.split('"').next().unwrap_or_default();
        assert!(
            doc.pointer(pointer.trim_start_matches('#')).is_some(),
            "dangling reference {pointer}"
        );
    }
}

#[test]
fn every_endpoint_of_the_table_is_an_operation_with_its_parameters() {
    let doc = document();
    let table = table();
    let mut ids = BTreeSet::new();
    for endpoint in &table {
        let op = operation(&doc, endpoint);
        assert!(
            op.is_object(),
            "{} {} is missing from the document",
            endpoint.method,
            endpoint.path
        );
        assert_eq!(op["operationId"], endpoint.id);
        assert!(ids.insert(endpoint.id), "operationId {} twice", endpoint.id);
        let parameters: Vec<&Value> = op["parameters"]
            .as_array()
            .map(|p| p.iter().map(|p| deref(&doc, p)).collect())
            .unwrap_or_default();
        // OpenAPI: every template variable is a required path parameter, and back.
        let in_path: BTreeSet<&str> = parameters
            .iter()
            .filter(|p| p["in"] == "path")
            .map(|p| p["name"].as_str().expect("name"))
            .collect();
        let template: BTreeSet<&str> = path_names(endpoint.path).into_iter().collect();
        assert_eq!(in_path, template, "{}", endpoint.id);
        for parameter in parameters.iter().filter(|p| p["in"] == "path") {
            assert_eq!(parameter["required"], true);
            let schema = &parameter["schema"];
            assert!(
                schema.get("pattern").is_some()
                    || schema.get("enum").is_some()
                    || schema.get("maximum").is_some()
                    || schema.get("maxLength").is_some(),
                "{}: path parameter {} has no rule in its schema",
                endpoint.id,
                parameter["name"]
            );
        }
        match endpoint.source {
            Source::None => {
                assert!(op.get("requestBody").is_none(), "{}", endpoint.id);
                assert!(
                    parameters.iter().all(|p| p["in"] == "path"),
                    "{}",
                    endpoint.id
                );
            }
            Source::Query => assert!(op.get("requestBody").is_none(), "{}", endpoint.id),
            Source::Json | Source::Multipart => {
                assert_eq!(op["requestBody"]["required"], true, "{}", endpoint.id)
            }
            Source::JsonOrQuery => {
                assert_eq!(op["requestBody"]["required"], false, "{}", endpoint.id)
            }
        }
    }
    // Nothing else but the gateway's own routes.
    let operations: usize = doc["paths"]
        .as_object()
        .expect("paths")
        .values()
        .map(|item| item.as_object().map_or(0, |m| m.len()))
        .sum();
    assert_eq!(operations, table.len() + 2);
    // `/metrics` is on the admin listener, not in the public API.
    assert!(doc["paths"]["/metrics"].is_null());
    for own in ["/ping", openapi::PATH] {
        assert_eq!(doc["paths"][own]["get"]["security"], json!([]), "{own}");
    }
}

#[test]
fn security_follows_the_access_rules() {
    let doc = document();
    assert_eq!(
        doc["components"]["securitySchemes"]["bearerJwt"]["scheme"],
        "bearer"
    );
    for endpoint in &table() {
        let op = operation(&doc, endpoint);
        match endpoint.access {
            Access::Public => {
                assert_eq!(op["security"], json!([]), "{}", endpoint.id);
                assert!(op["responses"].get("401").is_none(), "{}", endpoint.id);
            }
            Access::Kinds { kinds, .. } => {
                assert_eq!(
                    op["security"],
                    json!([{ "bearerJwt": [] }]),
                    "{}",
                    endpoint.id
                );
                let names: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
                assert_eq!(op["x-account-kinds"], json!(names), "{}", endpoint.id);
                assert!(op["responses"].get("401").is_some(), "{}", endpoint.id);
            }
        }
    }
}

#[test]
fn responses_are_the_envelope_with_the_contract_codes() {
    let doc = document();
    let codes = |name: &str| -> (i64, Vec<i64>) {
        let schema = &doc["components"]["responses"][name]["content"]["application/json"]["schema"]
            ["allOf"][1]["properties"];
        let status = schema["status"]["const"].as_i64().expect("status");
        let codes = schema["code"]["examples"]
            .as_array()
            .expect("codes")
            .iter()
            .filter_map(Value::as_i64)
            .collect();
        (status, codes)
    };
    assert_eq!(codes("BadRequest"), (400, vec![-201, -202, -203, -204]));
    assert_eq!(
        codes("Unauthorized"),
        (401, vec![-101, -102, -103, -104, -105, -106, 0])
    );
    assert_eq!(codes("ServiceUnavailable"), (503, vec![-301, -302]));
    for (name, status) in [
        ("Forbidden", 403),
        ("NotFound", 404),
        ("MethodNotAllowed", 405),
        ("RequestTimeout", 408),
        ("PayloadTooLarge", 413),
        ("TooManyRequests", 429),
    ] {
        assert_eq!(codes(name), (status, vec![0]), "{name}");
    }
    let envelope = &doc["components"]["schemas"]["Envelope"];
    assert_eq!(envelope["required"], json!(["status", "code", "message"]));
    for endpoint in &table() {
        let responses = &operation(&doc, endpoint)["responses"];
        for status in ["2XX", "403", "408", "429", "503", "default"] {
            assert!(responses.get(status).is_some(), "{}: {status}", endpoint.id);
        }
        let success = &responses["2XX"]["content"]["application/json"]["schema"];
        assert_eq!(success["$ref"], "#/components/schemas/Envelope");
        let has_input = endpoint.source != Source::None || !endpoint.params.is_empty();
        assert_eq!(responses.get("400").is_some(), has_input, "{}", endpoint.id);
        if endpoint.cache.is_some() {
            assert!(responses["2XX"]["headers"].get("X-Cache").is_some());
        }
    }
}

/// A validator for `#/components/schemas/<name>`, references resolved in the document.
fn component_validator(doc: &Value, name: &str) -> jsonschema::Validator {
    let schema = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$ref": format!("#/components/schemas/{name}"),
        "components": doc["components"],
    });
    jsonschema::validator_for(&schema).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The schema accepts a sample exactly when the gateway binds and validates it.
fn agrees<T: DeserializeOwned + Validate>(name: &str, samples: &[Value]) {
    let doc = document();
    let validator = component_validator(&doc, name);
    for sample in samples {
        let gateway = serde_json::from_value::<T>(sample.clone())
            .map(|input| input.validate().is_ok())
            .unwrap_or(false);
        assert_eq!(
            validator.is_valid(sample),
            gateway,
            "{name}: the schema and the gateway disagree on {sample}"
        );
    }
}

#[test]
fn input_schemas_accept_what_the_gateway_accepts() {
    use sms_gateway::endpoints::{announcement, auth, club, outing, schedule};

    let outing = json!({
        "start_time": 1_900_000_000, "end_time": 1_900_003_600,
        "place": "서점", "reason": "교재 구입", "situation": "normal",
    });
    let with = |base: &Value, key: &str, value: Value| {
        let mut changed = base.clone();
        match value {
            Value::Null if key.starts_with('-') => {
                changed.as_object_mut().map(|m| m.remove(&key[1..]));
            }
            value => changed[key] = value,
        }
        changed
    };
    agrees::<outing::CreateOutingInput>(
        "CreateOutingInput",
        &[
            outing.clone(),
            with(&outing, "extra", json!("ignored")),
            with(&outing, "situation", json!("emergency")),
            with(&outing, "situation", json!("Normal")),
            with(&outing, "place", json!("")),
            with(&outing, "place", json!("가".repeat(151))),
            with(&outing, "start_time", json!(0)),
            with(&outing, "start_time", json!(999_999_999)),
            with(&outing, "end_time", json!(10_000_000_000_i64)),
            with(&outing, "-reason", Value::Null),
            with(&outing, "place", json!(3)),
        ],
    );

    let parent = json!({
        "parent_id": "parent1", "parent_pw": "secret1", "name": "홍길동",
        "phone_number": "01012345678", "children": [],
    });
    agrees::<auth::CreateParentInput>(
        "CreateParentInput",
        &[
            parent.clone(),
            with(&parent, "name", json!("Kim")),
            with(&parent, "name", json!("홍")),
            with(&parent, "name", json!("홍길동동")),
            with(&parent, "phone_number", json!("")),
            with(&parent, "phone_number", json!("0101234")),
            with(&parent, "phone_number", json!("01112345678")),
            with(&parent, "parent_id", json!("abc")),
            with(&parent, "children", Value::Null),
            with(&parent, "-children", Value::Null),
            with(
                &parent,
                "children",
                json!([{ "grade": 1, "group": 2, "student_number": 3, "name": "김철수" }]),
            ),
        ],
    );

    let schedule =
        json!({ "start_date": 1_600_000_000, "end_date": 1_600_086_400, "detail": "개교기념일" });
    agrees::<schedule::ScheduleInput>(
        "ScheduleInput",
        &[
            schedule.clone(),
            with(&schedule, "detail", json!("")),
            with(&schedule, "detail", json!("x".repeat(101))),
            with(&schedule, "-end_date", Value::Null),
        ],
    );

    let recruitment = json!({
        "club_uuid": "club-000000000001", "recruit_concept": "신입 모집",
        "end_period": "2030-01-31", "members": [],
    });
    agrees::<club::RegisterRecruitmentInput>(
        "RegisterRecruitmentInput",
        &[
            recruitment.clone(),
            with(&recruitment, "end_period", json!("")),
            with(&recruitment, "end_period", json!("2030-1-31")),
            with(&recruitment, "end_period", json!("x2030-01-31")),
            with(&recruitment, "club_uuid", json!("")),
            with(&recruitment, "members", Value::Null),
        ],
    );

    let member = json!({ "student_uuid": "student-000000000001" });
    agrees::<club::AddMemberInput>(
        "AddMemberInput",
        &[
            member.clone(),
            json!({ "student_uuid": "student-00000000000x" }),
            json!({ "student_uuid": "teacher-000000000001" }),
            json!({ "student_uuid": "" }),
            json!({}),
        ],
    );

    let announcement = json!({
        "type": "school", "title": "공지", "content": "내용",
        "target_grade": 0, "target_group": 0,
    });
    agrees::<announcement::CreateInput>(
        "CreateInput",
        &[
            announcement.clone(),
            with(&announcement, "type", json!("club")),
            with(&announcement, "type", json!("other")),
            with(&announcement, "title", json!("")),
            with(&announcement, "target_grade", json!(124)),
        ],
    );

    agrees::<auth::LoginStudentInput>(
        "LoginStudentInput",
        &[
            json!({ "student_id": "demostudent", "student_pw": "demo-student-pw" }),
            json!({ "student_id": "demostudent" }),
            json!({}),
        ],
    );
}

/// Each custom rule's schema keywords against the rule itself, on samples.
#[test]
fn custom_rules_and_their_schema_keywords_agree() {
    type Rule = fn(&str) -> Result<(), validator::ValidationError>;
    type Keywords = fn(&mut Schema);
    let text_rules: [(&str, Rule, Keywords); 6] = [
        ("required", rules::required, rules::schema::required),
        ("hangul", rules::hangul, rules::schema::hangul),
        ("phone", rules::phone, rules::schema::phone),
        ("date", rules::date, rules::schema::date),
        (
            "student_uuid",
            rules::student_uuid,
            rules::schema::student_uuid,
        ),
        (
            "parent_uuid",
            rules::parent_uuid,
            rules::schema::parent_uuid,
        ),
    ];
    let samples = [
        "",
        "홍길동",
        "ㄱㄴ",
        "홍a",
        "Kim",
        "01012345678",
        "01012345678xyz",
        "0101234567",
        "010-1234-5678",
        "2020-01-31",
        "x2020-01-31y",
        "2020-1-31",
        "student-000000000001",
        "student-000000000001trailing",
        "student-12345",
        "parent-123456789012",
        "parent-12345678901a",
    ];
    for (name, rule, keywords) in text_rules {
        let mut schema = Schema::from(
            json!({ "type": "string" })
                .as_object()
                .cloned()
                .expect("object"),
        );
        keywords(&mut schema);
        let validator = jsonschema::validator_for(schema.as_value()).expect(name);
        for sample in samples {
            assert_eq!(
                validator.is_valid(&json!(sample)),
                rule(sample).is_ok(),
                "{name}: {sample:?}"
            );
        }
    }
    let mut schema = Schema::from(
        json!({ "type": "integer" })
            .as_object()
            .cloned()
            .expect("object"),
    );
    rules::schema::unix_seconds(&mut schema);
    let validator = jsonschema::validator_for(schema.as_value()).expect("unix_seconds");
    for sample in [
        0,
        999_999_999,
        1_000_000_000,
        1_600_000_000,
        9_999_999_999,
        10_000_000_000,
        -1,
    ] {
        assert_eq!(
            validator.is_valid(&json!(sample)),
            rules::unix_seconds(sample).is_ok(),
            "unix_seconds: {sample}"
        );
    }
}

#[tokio::test]
async fn the_route_serves_the_document_and_the_command_writes_it() {
    let expected = document();
    let router = axum::Router::new().route(openapi::PATH, openapi::route(&table()));
    let response = router
        .oneshot(
            Request::get(openapi::PATH)
                .body(Body::empty())
                .expect("request"),
        )
        .await
        .expect("response");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/json");
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let served: Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(served, expected);

    let file = std::env::temp_dir().join(format!("sms-openapi-{}.json", std::process::id()));
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_sms-gateway"))
        .args(["openapi", "--output"])
        .arg(&file)
        .status()
        .expect("run sms-gateway openapi");
    assert!(status.success());
    let written: Value =
        serde_json::from_str(&std::fs::read_to_string(&file).expect("written")).expect("JSON");
    let _ = std::fs::remove_file(&file);
    assert_eq!(written, expected);
}
