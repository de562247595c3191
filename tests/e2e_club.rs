//! End-to-end tests of the 20 club endpoints: HTTP → gateway → reference club service.

mod support;

use reqwest::Method;
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};
use support::{Gateway, assert_envelope, seed};

const CLUB1: &str = "club-000000000001";
const CLUB2: &str = "club-000000000002";
const CLUB3: &str = "club-000000000003";
const RECRUITMENT1: &str = "recruitment-000000000001";
const S1: &str = seed::STUDENT_UUID;
const S2: &str = seed::STUDENT2_UUID;
const S3: &str = seed::UNSIGNED_STUDENT_UUID;
const ADMIN: &str = seed::ADMIN_UUID;

/// Every club route, with valid path parameters.
const ROUTES: &[(Method, &str)] = &[
    (Method::POST, "/v1/clubs"),
    (Method::GET, "/v1/clubs/sorted-by/update-time"),
    (Method::GET, "/v1/recruitments/sorted-by/create-time"),
    (Method::GET, "/v1/clubs/uuid/club-000000000001"),
    (Method::GET, "/v1/clubs"),
    (
        Method::GET,
        "/v1/recruitments/uuid/recruitment-000000000001",
    ),
    (
        Method::GET,
        "/v1/clubs/uuid/club-000000000001/recruitment-uuid",
    ),
    (Method::GET, "/v1/recruitment-uuids"),
    (Method::GET, "/v1/clubs/property/fields"),
    (Method::GET, "/v1/clubs/count"),
    (Method::GET, "/v1/recruitments/count"),
    (
        Method::GET,
        "/v1/leaders/uuid/student-000000000001/club-uuid",
    ),
    (Method::DELETE, "/v1/clubs/uuid/club-000000000001"),
    (Method::POST, "/v1/clubs/uuid/club-000000000001/members"),
    (
        Method::DELETE,
        "/v1/clubs/uuid/club-000000000001/members/student-000000000002",
    ),
    (Method::PUT, "/v1/clubs/uuid/club-000000000001/leader"),
    (Method::PATCH, "/v1/clubs/uuid/club-000000000001"),
    (Method::POST, "/v1/recruitments"),
    (
        Method::PATCH,
        "/v1/recruitments/uuid/recruitment-000000000001",
    ),
    (
        Method::DELETE,
        "/v1/recruitments/uuid/recruitment-000000000001",
    ),
];

/// A call and what its answer must be.
struct Case {
    method: Method,
    path: &'static str,
    caller: &'static str,
    body: Option<Value>,
    status: u16,
    code: i64,
    /// Extra checks on the body.
    check: fn(&Value),
}

fn case(
    method: Method,
    path: &'static str,
    caller: &'static str,
    body: Option<Value>,
    status: u16,
    code: i64,
) -> Case {
    Case {
        method,
        path,
        caller,
        body,
        status,
        code,
        check: |_| {},
    }
}

impl Case {
    fn check(self, check: fn(&Value)) -> Self {
        Self { check, ..self }
    }
}

async fn run(gw: &Gateway, cases: Vec<Case>) {
    for c in cases {
        let (status, body) = gw.call(c.method.clone(), c.path, c.caller, c.body).await;
        assert_eq!(status, c.status, "{} {}: {body}", c.method, c.path);
        assert_envelope(status, &body);
        assert_eq!(body["code"], c.code, "{} {}: {body}", c.method, c.path);
        (c.check)(&body);
    }
}

/// Sends a multipart form with a bearer token for `caller`.
async fn multipart(
    gw: &Gateway,
    method: Method,
    path: &str,
    caller: &str,
    form: Form,
) -> (u16, Value) {
    let request = gw
        .client
        .request(method, gw.url(path))
        .bearer_auth(gw.token(caller))
        .multipart(form);
    gw.send(request).await
}

fn new_club_form(floor: &str) -> Form {
    Form::new()
        .text("name", "로봇부")
        .text("leader_uuid", S3)
        .text("member_uuids", S3)
        .text("field", "공학")
        .text("location", "3층 실습실")
        .text("floor", floor.to_owned())
        .part(
            "logo",
            Part::bytes(b"\x89PNG".to_vec()).file_name("logo.png"),
        )
}

#[tokio::test]
async fn every_club_route_needs_a_token() {
    let gw = Gateway::start().await;
    for (method, path) in ROUTES {
        let (status, body) = gw.call(method.clone(), path, "", None).await;
        assert_eq!(status, 401, "{method} {path}: {body}");
        assert_envelope(status, &body);
        assert_eq!(body["code"], -101, "{method} {path}");
    }
}

#[tokio::test]
async fn parents_may_call_no_club_route() {
    let gw = Gateway::start().await;
    for (method, path) in ROUTES {
        let (status, body) = gw.call(method.clone(), path, seed::PARENT_UUID, None).await;
        assert_eq!(status, 403, "{method} {path}: {body}");
        assert_envelope(status, &body);
    }
}

#[tokio::test]
async fn kind_and_ownership_rules() {
    let gw = Gateway::start().await;
    let teacher = seed::TEACHER_UUID;
    run(
        &gw,
        vec![
            // Gateway 403s (code 0).
            case(Method::POST, "/v1/clubs", S1, None, 403, 0),
            case(Method::GET, "/v1/clubs/count", teacher, None, 403, 0),
            case(
                Method::DELETE,
                "/v1/recruitments/uuid/recruitment-000000000001",
                teacher,
                None,
                403,
                0,
            ),
            case(
                Method::GET,
                "/v1/leaders/uuid/student-000000000002/club-uuid",
                S1,
                None,
                403,
                0,
            ),
            // Teachers may read club lists.
            case(
                Method::GET,
                "/v1/clubs",
                teacher,
                Some(json!({"club_uuids": [CLUB1]})),
                200,
                0,
            ),
            // The backend decides leadership in-band.
            case(
                Method::DELETE,
                "/v1/clubs/uuid/club-000000000001/members/student-000000000001",
                S2,
                None,
                403,
                -1712,
            ),
            case(
                Method::PUT,
                "/v1/clubs/uuid/club-000000000002/leader",
                S1,
                Some(json!({"new_leader_uuid": S2})),
                403,
                -1712,
            ),
        ],
    )
    .await;
}

#[tokio::test]
async fn invalid_input_and_path_parameters_are_400() {
    let gw = Gateway::start().await;
    let long_concept = "가".repeat(41);
    run(
        &gw,
        vec![
            case(Method::GET, "/v1/clubs/sorted-by/update-time?start=-1", S1, None, 400, -202),
            case(Method::GET, "/v1/recruitments/sorted-by/create-time?count=x", S1, None, 400, -202),
            case(Method::GET, "/v1/clubs/uuid/club-1", S1, None, 400, -204),
            case(Method::GET, "/v1/clubs", S1, None, 400, -203),
            case(Method::GET, "/v1/clubs", S1, Some(json!({"club_uuids": null})), 400, -203),
            case(Method::GET, "/v1/recruitments/uuid/recruitment-1", S1, None, 400, -204),
            case(Method::GET, "/v1/clubs/uuid/club-00000000000x/recruitment-uuid", S1, None, 400, -204),
            case(Method::GET, "/v1/recruitment-uuids", S1, Some(json!({"club_uuids": "club-000000000001"})), 400, -202),
            case(Method::GET, "/v1/leaders/uuid/teacher-000000000001/club-uuid", ADMIN, None, 400, -204),
            case(Method::DELETE, "/v1/clubs/uuid/club-0000000000011", S1, None, 400, -204),
            case(Method::POST, "/v1/clubs/uuid/club-000000000001/members", S1, Some(json!({"student_uuid": "student-1"})), 400, -203),
            case(Method::DELETE, "/v1/clubs/uuid/club-000000000001/members/parent-000000000001", S1, None, 400, -204),
            case(Method::PUT, "/v1/clubs/uuid/club-000000000001/leader", S1, Some(json!({"new_leader_uuid": ""})), 400, -203),
            case(Method::POST, "/v1/recruitments", S1, Some(json!({"club_uuid": "", "recruit_concept": "x", "members": []})), 400, -203),
            case(Method::POST, "/v1/recruitments", S1, Some(json!({"club_uuid": CLUB1, "recruit_concept": "x"})), 400, -203),
            case(Method::POST, "/v1/recruitments", S1, Some(json!({"club_uuid": CLUB1, "recruit_concept": long_concept, "members": []})), 400, -203),
            case(Method::POST, "/v1/recruitments", S1, Some(json!({"club_uuid": CLUB1, "recruit_concept": "x", "members": [{"grade": "1"}]})), 400, -202),
            case(Method::PATCH, "/v1/recruitments/uuid/recruitment-000000000001", S1, Some(json!({"end_period": "2099/12/31"})), 400, -203),
            case(Method::DELETE, "/v1/recruitments/uuid/club-000000000001", S1, None, 400, -204),
        ],
    )
    .await;
    // Multipart forms.
    let bad_floor = new_club_form("9");
    let (status, body) = multipart(&gw, Method::POST, "/v1/clubs", ADMIN, bad_floor).await;
    assert_eq!((status, body["code"].clone()), (400, json!(-203)), "{body}");
    let no_logo = Form::new()
        .text("name", "로봇부")
        .text("leader_uuid", S3)
        .text("member_uuids", S3)
        .text("field", "공학")
        .text("location", "3층")
        .text("floor", "2");
    let (status, body) = multipart(&gw, Method::POST, "/v1/clubs", ADMIN, no_logo).await;
    assert_eq!((status, body["code"].clone()), (400, json!(-203)), "{body}");
    assert!(
        body["message"].as_str().unwrap_or("").contains("logo"),
        "{body}"
    );
    let long_link = Form::new().text("link", "x".repeat(101));
    let (status, body) = multipart(
        &gw,
        Method::PATCH,
        "/v1/clubs/uuid/club-000000000001",
        S1,
        long_link,
    )
    .await;
    assert_envelope(status, &body);
    assert_eq!((status, body["code"].clone()), (400, json!(-203)), "{body}");
}

#[tokio::test]
async fn reads_answer_the_documented_bodies() {
    let gw = Gateway::start().await;
    run(
        &gw,
        vec![
            case(
                Method::GET,
                "/v1/clubs/sorted-by/update-time?count=2",
                S1,
                None,
                200,
                0,
            )
            .check(|b| {
                assert_eq!(b["message"], "succeed to get clubs sort by update time");
                let clubs = b["clubs"].as_array().expect("clubs");
                assert_eq!(clubs.len(), 2);
                assert_eq!(clubs[0]["club_uuid"], CLUB3, "newest first");
                assert_eq!(clubs[0]["floor"], 4);
            }),
            case(
                Method::GET,
                "/v1/clubs/sorted-by/update-time?name=없는이름",
                S1,
                None,
                200,
                0,
            )
            .check(|b| assert_eq!(b["clubs"], json!([]))),
            case(
                Method::GET,
                "/v1/recruitments/sorted-by/create-time",
                ADMIN,
                None,
                200,
                0,
            )
            .check(|b| {
                assert_eq!(
                    b["message"],
                    "succeed to get recruitments sort by create time"
                );
                let list = b["recruitments"].as_array().expect("recruitments");
                assert_eq!(list.len(), 2);
                assert_eq!(list[1]["recruitment_uuid"], RECRUITMENT1);
                assert_eq!(
                    list[1]["recruit_members"][0],
                    json!({"field": "서버", "grade": 1, "number": 2})
                );
                assert_eq!(list[1]["end_period"], "2099-12-31");
            }),
            case(
                Method::GET,
                "/v1/clubs/uuid/club-000000000001",
                S1,
                None,
                200,
                0,
            )
            .check(|b| {
                assert_eq!(b["message"], "succeed to get club inform with uuid");
                assert_eq!(b["club_uuid"], CLUB1);
                assert_eq!(b["leader_uuid"], S1);
                assert_eq!(b["member_uuids"], json!([S1, S2]));
                assert_eq!(b["floor"], 3, "floor is included (decision 4)");
                for key in [
                    "name",
                    "location",
                    "field",
                    "link",
                    "introduction",
                    "club_concept",
                    "logo_uri",
                ] {
                    assert!(b[key].is_string(), "{key} in {b}");
                }
            }),
            case(
                Method::GET,
                "/v1/clubs/uuid/club-000000000099",
                S1,
                None,
                404,
                0,
            ),
            case(
                Method::GET,
                "/v1/clubs",
                S1,
                Some(json!({"club_uuids": [CLUB2, CLUB1]})),
                200,
                0,
            )
            .check(|b| {
                assert_eq!(b["message"], "succeed to get club list with uuid list");
                assert_eq!(b["clubs"][0]["club_uuid"], CLUB2);
                assert_eq!(b["clubs"][1]["floor"], 3);
            }),
            case(
                Method::GET,
                "/v1/clubs?club_uuids=club-000000000001,club-000000000002",
                S1,
                None,
                200,
                0,
            )
            .check(|b| assert_eq!(b["clubs"].as_array().map(Vec::len), Some(2))),
            case(
                Method::GET,
                "/v1/clubs?club_uuids=club-000000000001&club_uuids=club-000000000003",
                S1,
                None,
                200,
                0,
            )
            .check(|b| assert_eq!(b["clubs"][1]["club_uuid"], CLUB3)),
            case(
                Method::GET,
                "/v1/clubs",
                S1,
                Some(json!({"club_uuids": []})),
                200,
                0,
            )
            .check(|b| assert_eq!(b["clubs"], json!([]))),
            case(
                Method::GET,
                "/v1/recruitments/uuid/recruitment-000000000001",
                S1,
                None,
                200,
                0,
            )
            .check(|b| {
                assert_eq!(b["message"], "succeed to get club inform with uuid");
                assert_eq!(b["recruitment_uuid"], RECRUITMENT1);
                assert_eq!(b["club_uuid"], CLUB1);
                assert_eq!(b["recruit_members"][1]["grade"], 2);
                assert!(b["start_period"].is_string() && b["recruit_concept"].is_string());
            }),
            case(
                Method::GET,
                "/v1/clubs/uuid/club-000000000001/recruitment-uuid",
                S1,
                None,
                200,
                0,
            )
            .check(|b| {
                assert_eq!(
                    b["message"],
                    "succeed to get uuid of recruitment in progress with club uuid"
                );
                assert_eq!(b["recruitment_uuid"], RECRUITMENT1);
            }),
            case(
                Method::GET,
                "/v1/clubs/uuid/club-000000000003/recruitment-uuid",
                S1,
                None,
                409,
                -1601,
            ),
            case(
                Method::GET,
                "/v1/recruitment-uuids?club_uuids=club-000000000001,club-000000000002",
                S1,
                None,
                200,
                0,
            )
            .check(|b| {
                assert_eq!(
                    b["message"],
                    "succeed to get recruitment uuid list with club list"
                );
                assert_eq!(
                    b["uuids"],
                    json!([RECRUITMENT1, "recruitment-000000000002"])
                );
            }),
            case(
                Method::GET,
                "/v1/recruitment-uuids",
                S1,
                Some(json!({"club_uuids": [CLUB3]})),
                200,
                0,
            )
            .check(|b| {
                assert_eq!(
                    b["uuids"],
                    Value::Null,
                    "empty list copied from the reply is null"
                )
            }),
            case(Method::GET, "/v1/clubs/property/fields", S1, None, 200, 0).check(|b| {
                assert_eq!(b["message"], "succeed to all fields of club");
                assert_eq!(b["fields"].as_array().map(Vec::len), Some(3));
            }),
            case(Method::GET, "/v1/clubs/count", S1, None, 200, 0).check(|b| {
                assert_eq!(b["message"], "succeed to get total count of clubs");
                assert_eq!(b["count"], 3);
            }),
            case(Method::GET, "/v1/recruitments/count", S1, None, 200, 0).check(|b| {
                assert_eq!(
                    b["message"],
                    "succeed to get total count of all recruitments in progress"
                );
                assert_eq!(b["count"], 2);
            }),
            case(
                Method::GET,
                "/v1/leaders/uuid/student-000000000001/club-uuid",
                S1,
                None,
                200,
                0,
            )
            .check(|b| {
                assert_eq!(
                    b["message"],
                    "succeed to get total count of all recruitments in progress"
                );
                assert_eq!(b["club_uuid"], CLUB1);
            }),
            case(
                Method::GET,
                "/v1/leaders/uuid/student-000000000002/club-uuid",
                ADMIN,
                None,
                409,
                -1611,
            ),
        ],
    )
    .await;
}

#[tokio::test]
async fn admin_creates_a_club_from_a_multipart_form() {
    let gw = Gateway::start().await;
    let (status, body) = multipart(&gw, Method::POST, "/v1/clubs", ADMIN, new_club_form("2")).await;
    assert_eq!(status, 201, "{body}");
    assert_envelope(status, &body);
    assert_eq!(body["message"], "succeed to create new club");
    let club_uuid = body["club_uuid"].as_str().expect("club_uuid").to_owned();
    assert!(
        club_uuid.starts_with("club-") && club_uuid.len() == 17,
        "{club_uuid}"
    );

    let (status, club) = gw
        .call(
            Method::GET,
            &format!("/v1/clubs/uuid/{club_uuid}"),
            S3,
            None,
        )
        .await;
    assert_eq!(status, 200, "{club}");
    assert_eq!(
        (club["floor"].clone(), club["leader_uuid"].clone()),
        (json!(2), json!(S3))
    );

    // The same leader again: the backend's 409 is relayed.
    let (status, body) = multipart(&gw, Method::POST, "/v1/clubs", ADMIN, new_club_form("2")).await;
    assert_envelope(status, &body);
    assert_eq!(
        (status, body["code"].clone()),
        (409, json!(-1503)),
        "{body}"
    );
}

#[tokio::test]
async fn leader_manages_members_and_club() {
    let gw = Gateway::start().await;
    let members = "/v1/clubs/uuid/club-000000000001/members";
    run(
        &gw,
        vec![
            // AddClubMember answers 201 at the backend: a success (decision 3).
            case(
                Method::POST,
                members,
                S1,
                Some(json!({"student_uuid": S3})),
                201,
                0,
            )
            .check(|b| assert_eq!(b["message"], "succeed to add new club member")),
            case(
                Method::POST,
                members,
                S1,
                Some(json!({"student_uuid": S3})),
                409,
                -1701,
            ),
            case(
                Method::POST,
                members,
                S1,
                Some(json!({"student_uuid": "student-000000000999"})),
                404,
                -1722,
            ),
            case(
                Method::DELETE,
                "/v1/clubs/uuid/club-000000000001/members/student-000000000003",
                S1,
                None,
                200,
                0,
            )
            .check(|b| assert_eq!(b["message"], "succeed to delete club member")),
            case(
                Method::DELETE,
                "/v1/clubs/uuid/club-000000000001/members/student-000000000003",
                S1,
                None,
                404,
                -1723,
            ),
            case(
                Method::PUT,
                "/v1/clubs/uuid/club-000000000001/leader",
                S1,
                Some(json!({"new_leader_uuid": S2})),
                200,
                0,
            )
            .check(|b| assert_eq!(b["message"], "succeed to add new club member")),
            // The old leader lost the club; the new one has it.
            case(
                Method::PUT,
                "/v1/clubs/uuid/club-000000000001/leader",
                S1,
                Some(json!({"new_leader_uuid": S1})),
                403,
                -1712,
            ),
            case(
                Method::GET,
                "/v1/leaders/uuid/student-000000000002/club-uuid",
                S2,
                None,
                200,
                0,
            )
            .check(|b| assert_eq!(b["club_uuid"], CLUB1)),
        ],
    )
    .await;

    let form = Form::new()
        .text("club_concept", "새 콘셉트")
        .text("link", "https://example.invalid/dms")
        .part("logo", Part::bytes(vec![1, 2, 3]).file_name("logo.png"));
    let (status, body) = multipart(
        &gw,
        Method::PATCH,
        "/v1/clubs/uuid/club-000000000001",
        S2,
        form,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_envelope(status, &body);
    assert_eq!(body["message"], "succeed to modify club inform");
    let (_, club) = gw
        .call(Method::GET, "/v1/clubs/uuid/club-000000000001", S2, None)
        .await;
    assert_eq!(club["club_concept"], "새 콘셉트");
    assert_eq!(club["link"], "https://example.invalid/dms");
    assert!(
        club["introduction"].as_str().is_some_and(|s| !s.is_empty()),
        "empty fields are kept"
    );
}

#[tokio::test]
async fn leader_runs_recruitments_and_deletes_the_club() {
    let gw = Gateway::start().await;
    let club = "/v1/clubs/uuid/club-000000000001";
    let register = json!({
        "club_uuid": CLUB1,
        "recruit_concept": "앱 개발자 모집",
        "end_period": "2099-06-30",
        "members": [{"grade": 1, "field": "앱", "number": 3}],
    });
    run(
        &gw,
        vec![
            case(Method::POST, "/v1/recruitments", S1, Some(register.clone()), 409, -2001),
            case(Method::DELETE, club, S1, None, 409, -1901),
            case(Method::DELETE, "/v1/recruitments/uuid/recruitment-000000000001", S2, None, 403, -1712),
            case(Method::DELETE, "/v1/recruitments/uuid/recruitment-000000000001", S1, None, 200, 0)
                .check(|b| assert_eq!(b["message"], "succeed to delete recruitment")),
            case(Method::DELETE, "/v1/recruitments/uuid/recruitment-000000000001", S1, None, 404, -1724),
            case(Method::POST, "/v1/recruitments", S1, Some(json!({"club_uuid": CLUB1, "recruit_concept": "x", "end_period": "2000-01-01", "members": []})), 409, -2002),
        ],
    )
    .await;

    let (status, body) = gw
        .call(Method::POST, "/v1/recruitments", S1, Some(register))
        .await;
    assert_eq!(status, 201, "{body}");
    assert_envelope(status, &body);
    assert_eq!(body["message"], "succeed to register new recruitment");
    let uuid = body["recruitment_uuid"]
        .as_str()
        .expect("recruitment_uuid")
        .to_owned();
    assert!(
        uuid.starts_with("recruitment-") && uuid.len() == 24,
        "{uuid}"
    );
    let path = format!("/v1/recruitments/uuid/{uuid}");

    let patch =
        json!({"recruit_concept": "iOS 개발자 모집", "end_period": "2099-07-31", "members": null});
    let (status, body) = gw.call(Method::PATCH, &path, S1, Some(patch)).await;
    assert_eq!(
        (status, body["message"].clone()),
        (200, json!("succeed to change recruitment inform")),
        "{body}"
    );
    let (_, recruitment) = gw.call(Method::GET, &path, S2, None).await;
    assert_eq!(recruitment["recruit_concept"], "iOS 개발자 모집");
    assert_eq!(
        recruitment["recruit_members"],
        json!([{"field": "앱", "grade": 1, "number": 3}]),
        "empty list keeps members"
    );
    assert_eq!(
        recruitment["end_period"], "2099-06-30",
        "end_period is not forwarded"
    );

    let (status, _) = gw.call(Method::DELETE, &path, ADMIN, None).await;
    assert_eq!(status, 200);
    run(
        &gw,
        vec![
            case(Method::DELETE, club, S2, None, 403, -1712),
            case(Method::DELETE, club, S1, None, 200, 0)
                .check(|b| assert_eq!(b["message"], "succeed to delete club")),
            case(Method::DELETE, club, ADMIN, None, 404, -1721),
            case(Method::GET, "/v1/clubs/count", S1, None, 200, 0)
                .check(|b| assert_eq!(b["count"], 2)),
        ],
    )
    .await;
}
