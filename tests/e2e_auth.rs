//! End-to-end tests of the 24 auth endpoints: real HTTP → gateway → real gRPC reference
//! auth service. Every endpoint is covered on its success path, a 400, a 401 (when
//! protected) and a 403 (where its access rule can refuse).

mod support;

use reqwest::Method;
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};
use support::{Gateway, assert_envelope, seed};

const ADMIN: &str = seed::ADMIN_UUID;
const STUDENT: &str = seed::STUDENT_UUID;
const STUDENT2: &str = seed::STUDENT2_UUID;
const UNSIGNED: &str = seed::UNSIGNED_STUDENT_UUID;
const TEACHER: &str = seed::TEACHER_UUID;
const PARENT: &str = seed::PARENT_UUID;
/// A well-formed uuid of no known account kind.
const NO_KIND: &str = "club-000000000001";

/// One request and what must come back: status, code and (a subset of) the body fields.
struct Case {
    method: Method,
    path: String,
    caller: &'static str,
    body: Option<Value>,
    status: u16,
    code: i64,
    fields: Value,
}

fn case(
    method: Method,
    path: impl Into<String>,
    caller: &'static str,
    body: Option<Value>,
    status: u16,
    code: i64,
) -> Case {
    Case {
        method,
        path: path.into(),
        caller,
        body,
        status,
        code,
        fields: json!({}),
    }
}

impl Case {
    /// Body fields that must be present with these exact values.
    fn expect(mut self, fields: Value) -> Self {
        self.fields = fields;
        self
    }
}

/// Runs the cases in order on one gateway.
async fn run(gw: &Gateway, cases: Vec<Case>) {
    for case in cases {
        let what = format!("{} {} as {:?}", case.method, case.path, case.caller);
        let (status, body) = gw
            .call(case.method, &case.path, case.caller, case.body)
            .await;
        assert_eq!(status, case.status, "{what}: {body}");
        assert_envelope(status, &body);
        assert_eq!(body["code"], case.code, "{what}: {body}");
        for (key, value) in case.fields.as_object().into_iter().flatten() {
            assert_eq!(&body[key], value, "{what}: field {key} of {body}");
        }
    }
}

/// A multipart POST /v1/students by `caller`; `profile` adds the file part.
async fn create_student(
    gw: &Gateway,
    caller: &str,
    id: &str,
    number: u32,
    phone: &str,
    profile: bool,
) -> (u16, Value) {
    let mut form = Form::new()
        .text("student_id", id.to_owned())
        .text("student_pw", "new-student-pw")
        .text("parent_uuid", "")
        .text("grade", "3")
        .text("group", "2")
        .text("student_number", number.to_string())
        .text("name", "정새봄")
        .text("phone_number", phone.to_owned());
    if profile {
        form = form.part(
            "profile",
            Part::bytes(b"\x89PNG fake".to_vec()).file_name("me.png"),
        );
    }
    let request = gw
        .client
        .post(gw.url("/v1/students"))
        .bearer_auth(gw.token(caller))
        .multipart(form);
    gw.send(request).await
}

#[tokio::test]
async fn protected_endpoints_need_a_token() {
    let gw = Gateway::start().await;
    let routes = [
        (Method::POST, "/v1/students".to_owned()),
        (Method::POST, "/v1/parents".to_owned()),
        (Method::POST, "/v1/join-sms/unsigned-students".to_owned()),
        (Method::PUT, format!("/v1/students/uuid/{STUDENT}/password")),
        (Method::GET, format!("/v1/students/uuid/{STUDENT}")),
        (Method::GET, "/v1/student-uuids?grade=2".to_owned()),
        (Method::POST, "/v1/students/with-uuids".to_owned()),
        (Method::GET, format!("/v1/students/uuid/{STUDENT}/parent")),
        (Method::PUT, format!("/v1/teachers/uuid/{TEACHER}/password")),
        (Method::GET, format!("/v1/teachers/uuid/{TEACHER}")),
        (Method::GET, "/v1/teacher-uuids?grade=2".to_owned()),
        (Method::PATCH, format!("/v1/teachers/uuid/{TEACHER}")),
        (Method::PUT, format!("/v1/parents/uuid/{PARENT}/password")),
        (Method::GET, format!("/v1/parents/uuid/{PARENT}")),
        (Method::GET, "/v1/parent-uuids?name=x".to_owned()),
        (Method::GET, format!("/v1/parents/uuid/{PARENT}/children")),
    ];
    let cases = routes
        .into_iter()
        .map(|(method, path)| case(method, path, "", None, 401, -101))
        .collect();
    run(&gw, cases).await;
}

#[tokio::test]
async fn wrong_kinds_and_other_accounts_are_forbidden() {
    let gw = Gateway::start().await;
    let pw = Some(json!({"current_pw": "whatever", "revision_pw": "whatever"}));
    let forbidden = |method: Method, path: String, caller: &'static str, body: Option<Value>| {
        case(method, path, caller, body, 403, 0)
    };
    run(
        &gw,
        vec![
            // Admin-only endpoints.
            forbidden(Method::POST, "/v1/students".into(), STUDENT, None),
            forbidden(Method::POST, "/v1/parents".into(), TEACHER, Some(json!({}))),
            forbidden(
                Method::POST,
                "/v1/join-sms/unsigned-students".into(),
                PARENT,
                None,
            ),
            // Own-account endpoints: another account of the same kind, or a wrong kind.
            forbidden(
                Method::PUT,
                format!("/v1/students/uuid/{STUDENT}/password"),
                STUDENT2,
                pw.clone(),
            ),
            forbidden(
                Method::PUT,
                format!("/v1/students/uuid/{STUDENT}/password"),
                TEACHER,
                pw.clone(),
            ),
            forbidden(
                Method::GET,
                format!("/v1/students/uuid/{STUDENT}"),
                STUDENT2,
                None,
            ),
            forbidden(
                Method::GET,
                format!("/v1/students/uuid/{STUDENT}/parent"),
                STUDENT2,
                None,
            ),
            forbidden(
                Method::GET,
                format!("/v1/students/uuid/{STUDENT}/parent"),
                PARENT,
                None,
            ),
            forbidden(
                Method::PUT,
                format!("/v1/teachers/uuid/{TEACHER}/password"),
                STUDENT,
                pw.clone(),
            ),
            forbidden(
                Method::GET,
                "/v1/teachers/uuid/teacher-000000000009".into(),
                TEACHER,
                None,
            ),
            forbidden(
                Method::PATCH,
                format!("/v1/teachers/uuid/{TEACHER}"),
                PARENT,
                Some(json!({})),
            ),
            forbidden(
                Method::PATCH,
                format!("/v1/teachers/uuid/{TEACHER}"),
                "teacher-000000000009",
                Some(json!({})),
            ),
            forbidden(
                Method::PUT,
                format!("/v1/parents/uuid/{PARENT}/password"),
                TEACHER,
                pw.clone(),
            ),
            forbidden(
                Method::PUT,
                format!("/v1/parents/uuid/{PARENT}/password"),
                "parent-000000000009",
                pw,
            ),
            forbidden(
                Method::GET,
                "/v1/parents/uuid/parent-000000000009".into(),
                PARENT,
                None,
            ),
            forbidden(
                Method::GET,
                format!("/v1/parents/uuid/{PARENT}/children"),
                STUDENT,
                None,
            ),
            // Any-kind endpoints refuse a token of no known kind.
            forbidden(
                Method::GET,
                "/v1/student-uuids?grade=2".into(),
                NO_KIND,
                None,
            ),
            forbidden(
                Method::POST,
                "/v1/students/with-uuids".into(),
                NO_KIND,
                Some(json!({"student_uuids": []})),
            ),
            forbidden(
                Method::GET,
                "/v1/teacher-uuids?grade=2".into(),
                NO_KIND,
                None,
            ),
            forbidden(Method::GET, "/v1/parent-uuids?name=x".into(), NO_KIND, None),
        ],
    )
    .await;
}

#[tokio::test]
async fn malformed_path_parameters_are_400_204() {
    let gw = Gateway::start().await;
    let pw = Some(json!({"current_pw": "demo-student-pw", "revision_pw": "new-pw-1234"}));
    let bad = |method: Method, path: &str, body: Option<Value>| {
        case(method, path, ADMIN, body, 400, -204)
    };
    run(
        &gw,
        vec![
            bad(
                Method::PUT,
                "/v1/students/uuid/student-1/password",
                pw.clone(),
            ),
            bad(Method::GET, "/v1/students/uuid/teacher-000000000001", None),
            bad(
                Method::GET,
                "/v1/students/uuid/student-00000000000x/parent",
                None,
            ),
            bad(
                Method::PUT,
                "/v1/teachers/uuid/teacher-0000000000011/password",
                pw.clone(),
            ),
            bad(Method::GET, "/v1/teachers/uuid/abc", None),
            bad(
                Method::PATCH,
                "/v1/teachers/uuid/student-000000000001",
                Some(json!({})),
            ),
            bad(Method::PUT, "/v1/parents/uuid/parent-1/password", pw),
            bad(Method::GET, "/v1/parents/uuid/parent-", None),
            bad(Method::GET, "/v1/parents/uuid/x/children", None),
            case(Method::GET, "/v1/students/auth-code/0", "", None, 400, -204),
            case(
                Method::GET,
                "/v1/students/auth-code/abc",
                "",
                None,
                400,
                -204,
            ),
            case(
                Method::GET,
                "/v1/students/auth-code/4294967296",
                "",
                None,
                400,
                -204,
            ),
        ],
    )
    .await;
}

#[tokio::test]
async fn invalid_bodies_and_queries_are_400() {
    let gw = Gateway::start().await;
    let integrity = |method: Method, path: &str, caller: &'static str, body: Value| {
        case(method, path, caller, Some(body), 400, -203)
    };
    let student_pw = format!("/v1/students/uuid/{STUDENT}/password");
    let teacher_pw = format!("/v1/teachers/uuid/{TEACHER}/password");
    let parent_pw = format!("/v1/parents/uuid/{PARENT}/password");
    let teacher = format!("/v1/teachers/uuid/{TEACHER}");
    let teacher_body = json!({"teacher_id": "newteacher", "teacher_pw": "teacher-pw", "name": "한선생", "phone_number": "01055550001"});
    let mut long_grade = teacher_body.clone();
    long_grade["grade"] = json!(4);
    let parent_body = json!({"parent_id": "newparent", "parent_pw": "parent-pw", "name": "김부모"});
    run(
        &gw,
        vec![
            // Logins: both fields required.
            integrity(Method::POST, "/v1/login/admin", "", json!({"admin_id": "demoadmin"})),
            integrity(Method::POST, "/v1/login/student", "", json!({"student_pw": "x"})),
            integrity(Method::POST, "/v1/login/teacher", "", json!({})),
            integrity(Method::POST, "/v1/login/teacher/with-pick", "", json!({"teacher_id": "", "teacher_pw": "x"})),
            integrity(Method::POST, "/v1/login/parent", "", json!({"parent_id": "demoparent"})),
            // Password changes: revision 4..16 chars, current required.
            integrity(Method::PUT, &student_pw, STUDENT, json!({"current_pw": "demo-student-pw", "revision_pw": "abc"})),
            integrity(Method::PUT, &teacher_pw, TEACHER, json!({"revision_pw": "long-enough"})),
            integrity(Method::PUT, &parent_pw, PARENT, json!({"current_pw": "x", "revision_pw": "seventeen-chars!!"})),
            // Creation bodies.
            integrity(Method::POST, "/v1/parents", ADMIN, parent_body.clone()),
            integrity(Method::POST, "/v1/parents", ADMIN, json!({"parent_id": "newparent", "parent_pw": "parent-pw", "name": "Kim", "children": []})),
            integrity(Method::POST, "/v1/teachers", "", long_grade),
            integrity(Method::POST, "/v1/teachers", "", json!({"teacher_id": "abc", "teacher_pw": "teacher-pw", "name": "한선생", "phone_number": "0105555000"})),
            integrity(Method::POST, "/v1/students/with-code", "", json!({"auth_code": 0, "student_id": "newone", "student_pw": "new-pw-1"})),
            integrity(Method::POST, "/v1/students/with-uuids", ADMIN, json!({"student_uuids": null})),
            integrity(Method::PATCH, &teacher, TEACHER, json!({"phone_number": "02012345678"})),
            // Decision 20: look-ups by inform need a filter.
            case(Method::GET, "/v1/student-uuids", ADMIN, None, 400, -203),
            case(Method::GET, "/v1/teacher-uuids?name=", TEACHER, None, 400, -203),
            case(Method::GET, "/v1/parent-uuids", PARENT, None, 400, -203),
            // Binding failures.
            case(Method::GET, "/v1/student-uuids?grade=-1", ADMIN, None, 400, -202),
            case(Method::POST, "/v1/join-sms/unsigned-students?grade=abc", ADMIN, None, 400, -202),
            case(Method::POST, "/v1/login/admin", "", Some(json!({"admin_id": 1, "admin_pw": "x"})), 400, -202),
            case(Method::POST, "/v1/parents", ADMIN, Some(json!({"parent_id": "newparent", "parent_pw": "parent-pw", "name": "김부모", "children": [{"grade": -1}]})), 400, -202),
        ],
    )
    .await;
    // A student without its profile file.
    let (status, body) = create_student(&gw, ADMIN, "nofile", 5, "01066660001", false).await;
    assert_eq!((status, body["code"].as_i64()), (400, Some(-203)), "{body}");
    assert_envelope(status, &body);
}

#[tokio::test]
async fn logins_mint_usable_tokens() {
    let gw = Gateway::start().await;
    let logins = [
        (
            "/v1/login/admin",
            json!({"admin_id": "demoadmin", "admin_pw": "demo-admin-pw"}),
            "admin_uuid",
            ADMIN,
            "succeed to login admin auth",
            "/v1/student-uuids?grade=2".to_owned(),
        ),
        (
            "/v1/login/student",
            json!({"student_id": "demostudent", "student_pw": "demo-student-pw"}),
            "student_uuid",
            STUDENT,
            "succeed to login student auth",
            format!("/v1/students/uuid/{STUDENT}"),
        ),
        (
            "/v1/login/teacher",
            json!({"teacher_id": "demoteacher", "teacher_pw": "demo-teacher-pw"}),
            "teacher_uuid",
            TEACHER,
            "succeed to login teacher auth",
            format!("/v1/teachers/uuid/{TEACHER}"),
        ),
        (
            "/v1/login/teacher/with-pick",
            json!({"teacher_id": "demopick", "teacher_pw": "demo-pick-pw"}),
            "teacher_uuid",
            TEACHER,
            "succeed to login teacher auth with PICK API",
            format!("/v1/teachers/uuid/{TEACHER}"),
        ),
        (
            "/v1/login/parent",
            json!({"parent_id": "demoparent", "parent_pw": "demo-parent-pw"}),
            "parent_uuid",
            PARENT,
            "succeed to login parent auth",
            format!("/v1/parents/uuid/{PARENT}"),
        ),
    ];
    for (path, credentials, key, uuid, message, own_path) in logins {
        let (status, body) = gw.call(Method::POST, path, "", Some(credentials)).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert_envelope(status, &body);
        assert_eq!(body["code"], 0);
        assert_eq!(body["message"], message);
        assert_eq!(body[key], uuid, "{path}: {body}");
        let token = body["access_token"].as_str().expect("access_token");
        let (status, body) = gw
            .send(gw.client.get(gw.url(&own_path)).bearer_auth(token))
            .await;
        assert_eq!(status, 200, "{path} token on {own_path}: {body}");
        assert_envelope(status, &body);
    }
}

#[tokio::test]
async fn failed_logins_relay_the_backend_codes() {
    let gw = Gateway::start().await;
    let login =
        |path: &str, body: Value, code: i64| case(Method::POST, path, "", Some(body), 409, code);
    run(
        &gw,
        vec![
            login(
                "/v1/login/admin",
                json!({"admin_id": "nobody", "admin_pw": "x"}),
                -431,
            ),
            login(
                "/v1/login/admin",
                json!({"admin_id": "demoadmin", "admin_pw": "x"}),
                -432,
            ),
            login(
                "/v1/login/student",
                json!({"student_id": "nobody", "student_pw": "x"}),
                -401,
            ),
            login(
                "/v1/login/student",
                json!({"student_id": "demostudent", "student_pw": "x"}),
                -402,
            ),
            login(
                "/v1/login/teacher",
                json!({"teacher_id": "nobody", "teacher_pw": "x"}),
                -411,
            ),
            login(
                "/v1/login/teacher",
                json!({"teacher_id": "demoteacher", "teacher_pw": "x"}),
                -412,
            ),
            login(
                "/v1/login/teacher/with-pick",
                json!({"teacher_id": "demopick", "teacher_pw": "x"}),
                -412,
            ),
            login(
                "/v1/login/teacher/with-pick",
                json!({"teacher_id": "strangerpick", "teacher_pw": "stranger-pick-pw"}),
                -414,
            ),
            login(
                "/v1/login/parent",
                json!({"parent_id": "nobody", "parent_pw": "x"}),
                -421,
            ),
            login(
                "/v1/login/parent",
                json!({"parent_id": "demoparent", "parent_pw": "x"}),
                -422,
            ),
        ],
    )
    .await;
}

#[tokio::test]
async fn student_reads() {
    let gw = Gateway::start().await;
    let student = json!({
        "student_uuid": STUDENT, "grade": 2, "group": 1, "student_number": 7, "name": "김학생",
        "phone_number": "01011110001", "profile_uri": "https://example.invalid/profiles/student-000000000001.png",
    });
    run(
        &gw,
        vec![
            case(Method::GET, format!("/v1/students/uuid/{STUDENT}"), STUDENT, None, 200, 0).expect(json!({
                "message": format!("succeed to get student inform, uuid: {STUDENT}"),
                "name": "김학생", "phone_number": "01011110001", "parent_status": "CONNECTED",
                "profile_uri": student["profile_uri"], "grade": 2, "group": 1, "student_number": 7,
            })),
            // The message names the caller, not the student (spec ambiguity 9).
            case(Method::GET, format!("/v1/students/uuid/{STUDENT2}"), TEACHER, None, 200, 0).expect(json!({
                "message": format!("succeed to get student inform, uuid: {TEACHER}"),
                "parent_status": "UN_CONNECTED",
            })),
            case(Method::GET, "/v1/students/uuid/student-999999999999", ADMIN, None, 404, 0),
            case(Method::GET, "/v1/student-uuids?grade=2&group=1", PARENT, None, 200, 0).expect(json!({
                "message": "succeed to get student uuid list with inform",
                "student_uuids": [STUDENT, STUDENT2],
            })),
            case(Method::GET, "/v1/student-uuids?name=%EC%97%86%EC%9D%8C", ADMIN, None, 409, -501),
            case(Method::POST, "/v1/students/with-uuids", TEACHER, Some(json!({"student_uuids": [STUDENT]})), 200, 0).expect(json!({
                "message": "succeed to get student informs list with uuid list",
                "students": [student],
            })),
            case(Method::POST, "/v1/students/with-uuids", STUDENT, Some(json!({"student_uuids": []})), 200, 0)
                .expect(json!({"students": []})),
            case(Method::POST, "/v1/students/with-uuids", ADMIN, Some(json!({"student_uuids": [STUDENT, "student-999999999999"]})), 409, -601),
            case(Method::GET, format!("/v1/students/uuid/{STUDENT}/parent"), STUDENT, None, 200, 0).expect(json!({
                "message": "succeed to get parent inform with student uuid",
                "parent_uuid": PARENT, "name": "김부모", "phone_number": "01033330001",
            })),
            case(Method::GET, format!("/v1/students/uuid/{STUDENT2}/parent"), ADMIN, None, 409, 0),
            case(Method::GET, "/v1/students/uuid/student-999999999999/parent", ADMIN, None, 404, 0),
            case(Method::GET, "/v1/students/auth-code/123456", "", None, 200, 0).expect(json!({
                "message": "succeed to get unsigned student with auth code",
                "name": "박신입", "phone_number": "01011110003", "grade": 1, "group": 3, "student_number": 12,
            })),
            case(Method::GET, "/v1/students/auth-code/654321", "", None, 404, 0),
        ],
    )
    .await;
}

#[tokio::test]
async fn teacher_and_parent_reads() {
    let gw = Gateway::start().await;
    run(
        &gw,
        vec![
            case(Method::GET, format!("/v1/teachers/uuid/{TEACHER}"), STUDENT, None, 200, 0).expect(json!({
                "message": format!("succeed to get teacher inform, uuid: {STUDENT}"),
                "name": "최선생", "phone_number": "01022220001", "grade": 2, "group": 1,
            })),
            case(Method::GET, "/v1/teachers/uuid/teacher-999999999999", ADMIN, None, 404, 0),
            case(Method::GET, "/v1/teacher-uuids?grade=2&group=1", STUDENT, None, 200, 0).expect(json!({
                "message": "succeed to get teacher uuid list with inform",
                "teacher_uuids": [TEACHER],
            })),
            case(Method::GET, "/v1/teacher-uuids?grade=3", STUDENT, None, 409, -511),
            case(Method::GET, format!("/v1/parents/uuid/{PARENT}"), PARENT, None, 200, 0).expect(json!({
                "message": format!("succeed to get parent inform, uuid: {PARENT}"),
                "name": "김부모", "phone_number": "01033330001",
            })),
            case(Method::GET, "/v1/parents/uuid/parent-999999999999", ADMIN, None, 404, 0),
            case(Method::GET, "/v1/parent-uuids?phone_number=01033330001", TEACHER, None, 200, 0).expect(json!({
                "message": "succeed to get parent uuid list with inform",
                "parent_uuids": [PARENT],
            })),
            case(Method::GET, "/v1/parent-uuids?name=nobody", TEACHER, None, 409, -521),
            case(Method::GET, format!("/v1/parents/uuid/{PARENT}/children"), PARENT, None, 200, 0).expect(json!({
                "message": "succeed to get children informs list with parent uuid",
                "children": [{
                    "student_uuid": STUDENT, "grade": 2, "group": 1, "student_number": 7, "name": "김학생",
                    "phone_number": "01011110001",
                    "profile_uri": "https://example.invalid/profiles/student-000000000001.png",
                }],
            })),
            case(Method::GET, "/v1/parents/uuid/parent-999999999999/children", ADMIN, None, 404, 0),
        ],
    )
    .await;
}

#[tokio::test]
async fn admin_creates_students_and_parents() {
    let gw = Gateway::start().await;
    let (status, body) = create_student(&gw, ADMIN, "newstudent", 5, "01066660001", true).await;
    assert_eq!(status, 201, "{body}");
    assert_envelope(status, &body);
    assert_eq!(body["message"], "succeed to create new student");
    let created = body["student_uuid"]
        .as_str()
        .expect("student_uuid")
        .to_owned();
    assert!(
        created.starts_with("student-") && created.len() == 20,
        "{created}"
    );

    let (status, body) = create_student(&gw, ADMIN, "newstudent", 6, "01066660002", true).await;
    assert_eq!((status, body["code"].as_i64()), (409, Some(-101)), "{body}");
    assert_envelope(status, &body);

    let parent = json!({
        "parent_id": "newparent", "parent_pw": "parent-pw", "name": "정부모", "phone_number": "01077770001",
        "children": [{"grade": 3, "group": 2, "student_number": 5, "name": "정새봄"}],
    });
    let (status, body) = gw
        .call(Method::POST, "/v1/parents", ADMIN, Some(parent.clone()))
        .await;
    assert_eq!(status, 201, "{body}");
    assert_envelope(status, &body);
    assert_eq!(body["message"], "succeed to create new parent");
    let parent_uuid = body["parent_uuid"]
        .as_str()
        .expect("parent_uuid")
        .to_owned();

    let (status, body) = gw
        .call(
            Method::GET,
            &format!("/v1/parents/uuid/{parent_uuid}/children"),
            ADMIN,
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["children"][0]["student_uuid"], created.as_str());
    assert_eq!(body["children"][0]["name"], "정새봄");

    run(
        &gw,
        vec![
            case(Method::POST, "/v1/parents", ADMIN, Some(parent), 409, -301),
            case(Method::POST, "/v1/parents", ADMIN, Some(json!({
                "parent_id": "otherparent", "parent_pw": "parent-pw", "name": "김부모", "children": [],
                "phone_number": "01033330001",
            })), 409, -302),
        ],
    )
    .await;
}

#[tokio::test]
async fn unsigned_student_signs_up_with_the_sms_code() {
    let gw = Gateway::start().await;
    let sign_up =
        json!({"auth_code": 123456, "student_id": "freshman", "student_pw": "fresh-pw-1"});
    run(
        &gw,
        vec![
            case(Method::POST, "/v1/join-sms/unsigned-students?grade=2", ADMIN, None, 404, 0),
            case(Method::POST, "/v1/join-sms/unsigned-students?grade=1&group=3", ADMIN, None, 200, 0).expect(json!({
                "message": "succeed to send mass message", "send_count": 1, "no_send_count": 0,
            })),
            case(Method::POST, "/v1/students/with-code", "", Some(json!({"auth_code": 123456, "student_id": "demostudent", "student_pw": "fresh-pw-1"})), 409, 0),
            case(Method::POST, "/v1/students/with-code", "", Some(sign_up.clone()), 201, 0).expect(json!({
                "message": "succeed to create new student with auth code", "student_uuid": UNSIGNED,
            })),
            case(Method::POST, "/v1/students/with-code", "", Some(sign_up), 404, 0),
            case(Method::GET, "/v1/students/auth-code/123456", "", None, 404, 0),
            case(Method::POST, "/v1/join-sms/unsigned-students", ADMIN, None, 404, 0),
            case(Method::POST, "/v1/login/student", "", Some(json!({"student_id": "freshman", "student_pw": "fresh-pw-1"})), 200, 0)
                .expect(json!({"student_uuid": UNSIGNED})),
        ],
    )
    .await;
}

#[tokio::test]
async fn teacher_registers_and_waits_for_approval() {
    let gw = Gateway::start().await;
    let teacher = json!({"teacher_id": "newteacher", "teacher_pw": "teacher-pw", "name": "한선생", "phone_number": "01055550001"});
    let (status, body) = gw
        .call(Method::POST, "/v1/teachers", "", Some(teacher.clone()))
        .await;
    assert_eq!(status, 201, "{body}");
    assert_envelope(status, &body);
    assert_eq!(
        body["message"],
        "succeed to register teacher account. you can use it after approval"
    );
    assert!(
        body["teacher_uuid"]
            .as_str()
            .is_some_and(|u| u.starts_with("teacher-")),
        "{body}"
    );
    let mut same_phone = teacher.clone();
    same_phone["teacher_id"] = json!("otherteacher");
    run(
        &gw,
        vec![
            case(Method::POST, "/v1/teachers", "", Some(teacher), 409, -201),
            case(Method::POST, "/v1/teachers", "", Some(same_phone), 409, -202),
            case(Method::POST, "/v1/teachers", "", Some(json!({
                "teacher_id": "classdup", "teacher_pw": "teacher-pw", "name": "오선생", "phone_number": "01055550002",
                "grade": 2, "group": 1,
            })), 409, -203),
            case(Method::POST, "/v1/login/teacher", "", Some(json!({"teacher_id": "newteacher", "teacher_pw": "teacher-pw"})), 409, -413),
        ],
    )
    .await;
}

#[tokio::test]
async fn passwords_change_and_teachers_update_their_phone() {
    let gw = Gateway::start().await;
    let change = |current: &str, revision: &str| {
        Some(json!({"current_pw": current, "revision_pw": revision}))
    };
    run(
        &gw,
        vec![
            // Decision 3: the backend's 200 is a success with the documented text.
            case(
                Method::PUT,
                format!("/v1/students/uuid/{STUDENT}/password"),
                STUDENT,
                change("demo-student-pw", "student-pw-2"),
                200,
                0,
            )
            .expect(json!({"message": format!("succeed to change auth password of {STUDENT}")})),
            case(
                Method::PUT,
                format!("/v1/students/uuid/{STUDENT}/password"),
                STUDENT,
                change("demo-student-pw", "student-pw-3"),
                409,
                -701,
            ),
            case(
                Method::POST,
                "/v1/login/student",
                "",
                Some(json!({"student_id": "demostudent", "student_pw": "student-pw-2"})),
                200,
                0,
            ),
            case(
                Method::PUT,
                "/v1/students/uuid/student-999999999999/password",
                ADMIN,
                change("x", "student-pw-3"),
                404,
                0,
            ),
            // An admin may change a teacher's password; the message names the admin.
            case(
                Method::PUT,
                format!("/v1/teachers/uuid/{TEACHER}/password"),
                ADMIN,
                change("demo-teacher-pw", "teacher-pw-2"),
                200,
                0,
            )
            .expect(json!({"message": format!("succeed to change auth password of {ADMIN}")})),
            case(
                Method::PUT,
                format!("/v1/teachers/uuid/{TEACHER}/password"),
                TEACHER,
                change("demo-teacher-pw", "teacher-pw-3"),
                409,
                -801,
            ),
            case(
                Method::PUT,
                format!("/v1/parents/uuid/{PARENT}/password"),
                PARENT,
                change("demo-parent-pw", "parent-pw-2"),
                200,
                0,
            )
            .expect(json!({"message": format!("succeed to change auth password of {PARENT}")})),
            case(
                Method::PUT,
                format!("/v1/parents/uuid/{PARENT}/password"),
                PARENT,
                change("demo-parent-pw", "parent-pw-3"),
                409,
                -901,
            ),
            case(
                Method::POST,
                "/v1/login/parent",
                "",
                Some(json!({"parent_id": "demoparent", "parent_pw": "parent-pw-2"})),
                200,
                0,
            ),
            // PATCH teacher: `{}` changes nothing; a phone number is stored.
            case(
                Method::PATCH,
                format!("/v1/teachers/uuid/{TEACHER}"),
                TEACHER,
                Some(json!({})),
                200,
                0,
            )
            .expect(json!({"message": "succeed to change teacher inform"})),
            case(
                Method::PATCH,
                format!("/v1/teachers/uuid/{TEACHER}"),
                ADMIN,
                Some(json!({"phone_number": "01022229999"})),
                200,
                0,
            ),
            case(
                Method::GET,
                format!("/v1/teachers/uuid/{TEACHER}"),
                TEACHER,
                None,
                200,
                0,
            )
            .expect(json!({"phone_number": "01022229999"})),
            case(
                Method::PATCH,
                "/v1/teachers/uuid/teacher-999999999999",
                ADMIN,
                Some(json!({})),
                404,
                0,
            ),
        ],
    )
    .await;
}
