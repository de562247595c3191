//! End-to-end tests of the outing endpoints: real HTTP → gateway → real gRPC reference
//! outing service. Tables of (request, expected status and code); state-changing flows
//! run in order on one gateway.

mod support;

use reqwest::Method;
use serde_json::{Value, json};
use sms_gateway::reference::outing::{
    APPROVED_OUTING, AWAITING_PARENT_CODE, AWAITING_PARENT_OUTING, FINISHED_OUTING, SEED_DAY,
    STUDENT2_CODE, STUDENT2_OUTING,
};
use support::cases::{case, run, with_body};
use support::seed::{ADMIN_UUID, PARENT_UUID, STUDENT_UUID, STUDENT2_UUID, TEACHER_UUID};
use support::{Gateway, assert_envelope};

fn outing(id: &str) -> String {
    format!("/v1/outings/uuid/{id}")
}

fn action(id: &str, action: &str) -> String {
    format!("/v1/outings/uuid/{id}/actions/{action}")
}

fn new_outing(start: i64) -> Value {
    json!({
        "start_time": start,
        "end_time": start + 3600,
        "place": "서점",
        "reason": "책 구입",
        "situation": "normal",
    })
}

const OWN_LIST: &str = "/v1/students/uuid/student-000000000001/outings";
const OTHER_LIST: &str = "/v1/students/uuid/student-000000000002/outings";
const UNKNOWN_OUTING: &str = "outing-999999999999";

#[tokio::test]
async fn create_and_modify_reject_bad_requests() {
    let gw = Gateway::start().await;
    let post = |caller, status, code, body| {
        with_body(
            case(Method::POST, "/v1/outings", caller, status, code),
            body,
        )
    };
    let late = SEED_DAY + 30 * 24 * 3600;
    let mut cases = vec![
        post("", 401, -101, new_outing(late)),
        post(TEACHER_UUID, 403, 0, new_outing(late)),
        post(PARENT_UUID, 403, 0, new_outing(late)),
        post(
            STUDENT_UUID,
            400,
            -203,
            json!({"start_time": 999, "end_time": late, "place": "a", "reason": "b", "situation": "normal"}),
        ),
        post(
            STUDENT_UUID,
            400,
            -203,
            json!({"start_time": late, "end_time": late + 1, "place": "", "reason": "b", "situation": "normal"}),
        ),
        post(
            STUDENT_UUID,
            400,
            -203,
            json!({"start_time": late, "end_time": late + 1, "place": "a".repeat(151), "reason": "b", "situation": "normal"}),
        ),
        post(
            STUDENT_UUID,
            400,
            -203,
            json!({"start_time": late, "end_time": late + 1, "place": "a", "reason": "b", "situation": "Normal"}),
        ),
        post(
            STUDENT_UUID,
            400,
            -202,
            json!({"start_time": "soon", "end_time": late, "place": "a", "reason": "b", "situation": "normal"}),
        ),
        // Overlaps the seeded outing awaiting its parent: the service's -2401, relayed.
        post(STUDENT_UUID, 409, -2401, new_outing(SEED_DAY + 10 * 3600)),
    ];
    let patch = |id: &str, caller, status, code, body| {
        with_body(case(Method::PATCH, outing(id), caller, status, code), body)
    };
    let end = json!({"end_time": SEED_DAY + 20 * 3600});
    cases.extend([
        patch(AWAITING_PARENT_OUTING, "", 401, -101, end.clone()),
        patch(AWAITING_PARENT_OUTING, STUDENT_UUID, 403, 0, end.clone()),
        patch("outing-1", TEACHER_UUID, 400, -204, end.clone()),
        patch(
            AWAITING_PARENT_OUTING,
            TEACHER_UUID,
            400,
            -203,
            json!({"end_time": 0}),
        ),
        patch(
            AWAITING_PARENT_OUTING,
            TEACHER_UUID,
            400,
            -202,
            json!({"end_time": "late"}),
        ),
        patch(UNKNOWN_OUTING, TEACHER_UUID, 404, -2301, end.clone()),
        patch(FINISHED_OUTING, TEACHER_UUID, 409, -2110, end),
    ]);
    run(&gw, cases).await;
}

#[tokio::test]
async fn reads_reject_bad_requests() {
    let gw = Gateway::start().await;
    let get = |path: String, caller, status, code| case(Method::GET, path, caller, status, code);
    let mut cases = vec![
        get(OWN_LIST.into(), "", 401, -101),
        get(OTHER_LIST.into(), STUDENT_UUID, 403, 0),
        get(OWN_LIST.into(), ADMIN_UUID, 403, 0),
        // The service lets a parent read only their own child's list.
        get(OTHER_LIST.into(), PARENT_UUID, 403, -2601),
        get(
            "/v1/students/uuid/student-1/outings".into(),
            TEACHER_UUID,
            400,
            -204,
        ),
        get(format!("{OWN_LIST}?start=-1"), STUDENT_UUID, 400, -202),
        get(format!("{OWN_LIST}?count=many"), STUDENT_UUID, 400, -202),
        get("/v1/outings/with-filter".into(), "", 401, -101),
        get("/v1/outings/with-filter".into(), STUDENT_UUID, 403, 0),
        get(
            "/v1/outings/with-filter?grade=two".into(),
            TEACHER_UUID,
            400,
            -202,
        ),
        get(
            "/v1/outings/with-filter?count=-1".into(),
            TEACHER_UUID,
            400,
            -202,
        ),
        get(
            format!("/v1/outings/code/{}", "x".repeat(65)),
            "",
            400,
            -204,
        ),
        get("/v1/outings/code/NOSUCHCODE".into(), "", 404, -2301),
    ];
    for suffix in ["", "/card"] {
        let path = |id: &str| format!("{}{suffix}", outing(id));
        // The card is for students only: other kinds stop at the gateway.
        let not_student = |backend: (u16, i64)| if suffix.is_empty() { backend } else { (403, 0) };
        let (parent_status, parent_code) = not_student((403, -2601));
        let (teacher_status, teacher_code) = not_student((404, -2301));
        cases.extend([
            get(path(AWAITING_PARENT_OUTING), "", 401, -101),
            get(path(AWAITING_PARENT_OUTING), ADMIN_UUID, 403, 0),
            // Another student's outing: the service's ownership check.
            get(path(AWAITING_PARENT_OUTING), STUDENT2_UUID, 403, -2601),
            get(
                path(STUDENT2_OUTING),
                PARENT_UUID,
                parent_status,
                parent_code,
            ),
            get(path("outing-00000000000x"), STUDENT_UUID, 400, -204),
            get(
                path(UNKNOWN_OUTING),
                TEACHER_UUID,
                teacher_status,
                teacher_code,
            ),
        ]);
    }
    run(&gw, cases).await;
}

#[tokio::test]
async fn actions_reject_bad_requests() {
    let gw = Gateway::start().await;
    let post = |path: String, caller, status, code| case(Method::POST, path, caller, status, code);
    let cases = vec![
        // Unknown actions: 401 without a token, 400 / -204 with one.
        post(action(APPROVED_OUTING, "fly"), "", 401, -101),
        post(action(APPROVED_OUTING, "fly"), STUDENT_UUID, 400, -204),
        post(action("outing-x", "start"), STUDENT_UUID, 400, -204),
        post(action("outing-x", "parent-approve"), "", 400, -204),
        post(action(APPROVED_OUTING, "start"), "", 401, -101),
        post(action(APPROVED_OUTING, "end"), "", 401, -101),
        post(action(APPROVED_OUTING, "start"), TEACHER_UUID, 403, 0),
        post(action(APPROVED_OUTING, "start"), STUDENT2_UUID, 403, -2601),
        post(action(APPROVED_OUTING, "end"), STUDENT_UUID, 409, -2107),
        post(
            action(AWAITING_PARENT_OUTING, "start"),
            STUDENT_UUID,
            409,
            -2104,
        ),
        post(action(UNKNOWN_OUTING, "start"), STUDENT_UUID, 404, -2301),
        post(action(STUDENT2_OUTING, "teacher-approve"), "", 401, -101),
        post(
            action(STUDENT2_OUTING, "teacher-reject"),
            STUDENT2_UUID,
            403,
            0,
        ),
        post(action(STUDENT2_OUTING, "certify"), PARENT_UUID, 403, 0),
        post(
            action(AWAITING_PARENT_OUTING, "teacher-approve"),
            TEACHER_UUID,
            409,
            -2101,
        ),
        post(
            action(APPROVED_OUTING, "teacher-reject"),
            TEACHER_UUID,
            409,
            -2111,
        ),
        post(action(APPROVED_OUTING, "certify"), TEACHER_UUID, 409, -2109),
        post(
            action(STUDENT2_OUTING, "parent-approve") + "?code=NOSUCHCODE",
            "",
            404,
            -2301,
        ),
        post(
            action(STUDENT2_OUTING, "parent-reject") + "?code=" + STUDENT2_CODE,
            "",
            409,
            -2103,
        ),
        post(action(STUDENT2_OUTING, "parent-approve"), "", 404, -2301),
    ];
    run(&gw, cases).await;
}

#[tokio::test]
async fn student_reads_own_outings_and_card() {
    let gw = Gateway::start().await;
    let (status, body) = gw.call(Method::GET, OWN_LIST, STUDENT_UUID, None).await;
    assert_eq!(status, 200, "{body}");
    assert_envelope(status, &body);
    assert_eq!(
        body["message"],
        "succeed to get outing informs with student uuid"
    );
    let outings = body["outings"].as_array().expect("outings");
    assert_eq!(outings.len(), 3, "{body}");
    let approved = &outings[0];
    assert_eq!(approved["outing_uuid"], APPROVED_OUTING);
    assert_eq!(approved["outing_situation"], "emergency");
    assert_eq!(approved["outing_status"], "teacher-approved");
    for key in ["place", "reason", "start_time", "end_time", "arrival_time"] {
        assert!(!approved[key].is_null(), "{key} in {approved}");
    }

    // Paging, and the readers other than the student.
    let bodies = run(
        &gw,
        vec![
            case(
                Method::GET,
                format!("{OWN_LIST}?start=1&count=1"),
                STUDENT_UUID,
                200,
                0,
            ),
            case(Method::GET, OWN_LIST, TEACHER_UUID, 200, 0),
            case(Method::GET, OWN_LIST, PARENT_UUID, 200, 0),
            case(
                Method::GET,
                format!("{OWN_LIST}?start=10"),
                STUDENT_UUID,
                200,
                0,
            ),
        ],
    )
    .await;
    assert_eq!(
        bodies[0]["outings"][0]["outing_uuid"],
        AWAITING_PARENT_OUTING
    );
    assert_eq!(bodies[0]["outings"].as_array().map(Vec::len), Some(1));
    assert_eq!(bodies[1]["outings"].as_array().map(Vec::len), Some(3));
    assert_eq!(bodies[2]["outings"].as_array().map(Vec::len), Some(3));
    assert_eq!(bodies[3]["outings"], json!([]));

    let (status, body) = gw
        .call(
            Method::GET,
            &outing(AWAITING_PARENT_OUTING),
            STUDENT_UUID,
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_envelope(status, &body);
    assert_eq!(
        body["message"],
        "succeed to get outing inform with outing uuid"
    );
    assert_eq!(body["outing_uuid"], AWAITING_PARENT_OUTING);
    assert_eq!(body["student_uuid"], STUDENT_UUID);
    assert_eq!(body["outing_status"], "created");
    assert_eq!(body["outing_situation"], "normal");
    assert_eq!(body["start_time"], SEED_DAY + 9 * 3600);
    assert_eq!(body["end_time"], SEED_DAY + 12 * 3600);

    let card = format!("{}/card", outing(APPROVED_OUTING));
    let (status, body) = gw.call(Method::GET, &card, STUDENT_UUID, None).await;
    assert_eq!(status, 200, "{body}");
    assert_envelope(status, &body);
    assert_eq!(
        body["message"],
        "succeed to get card about outing with outing uuid"
    );
    assert_eq!(body["name"], "김학생");
    assert_eq!(
        (
            body["grade"].as_i64(),
            body["group"].as_i64(),
            body["number"].as_i64()
        ),
        (Some(2), Some(1), Some(7))
    );
    assert_eq!(
        body["profile_uri"],
        "https://example.invalid/profiles/student-000000000001.png"
    );
    assert_eq!(body["outing_status"], "teacher-approved");
    assert_eq!(body["place"], "병원");
    for key in ["start_time", "end_time", "reason"] {
        assert!(!body[key].is_null(), "{key} in {body}");
    }
    // Teachers and the owner's parent read outings too; the card is the owning
    // student's only (its callers line), refused at the gateway.
    run(
        &gw,
        vec![
            case(Method::GET, card.clone(), TEACHER_UUID, 403, 0),
            case(Method::GET, card, PARENT_UUID, 403, 0),
            case(Method::GET, outing(STUDENT2_OUTING), TEACHER_UUID, 200, 0),
        ],
    )
    .await;
}

#[tokio::test]
async fn teacher_filters_outings() {
    let gw = Gateway::start().await;
    let filter = |query: &str| format!("/v1/outings/with-filter{query}");
    let bodies = run(
        &gw,
        vec![
            case(Method::GET, filter(""), TEACHER_UUID, 200, 0),
            case(Method::GET, filter("?status=created"), TEACHER_UUID, 200, 0),
            case(Method::GET, filter("?grade=3"), TEACHER_UUID, 200, 0),
            case(
                Method::GET,
                filter("?grade=2&group=1&floor=3&start=1&count=2"),
                TEACHER_UUID,
                200,
                0,
            ),
            // Callers: teachers (the admin app has no use for it).
            case(Method::GET, filter(""), ADMIN_UUID, 403, 0),
        ],
    )
    .await;
    assert_eq!(
        bodies[0]["message"],
        "succeed to get outing informs with student uuid"
    );
    let all = bodies[0]["outings"].as_array().expect("outings");
    assert_eq!(all.len(), 4, "{}", bodies[0]);
    let finished = all
        .iter()
        .find(|o| o["outing_uuid"] == FINISHED_OUTING)
        .expect("finished outing");
    assert_eq!(finished["is_late"], false);
    assert_eq!(finished["name"], "김학생");
    assert_eq!(finished["number"], 7);
    assert_eq!(finished["outing_status"], "finished");
    for key in [
        "place",
        "reason",
        "start_time",
        "end_time",
        "outing_situation",
        "grade",
        "group",
        "arrival_time",
    ] {
        assert!(!finished[key].is_null(), "{key} in {finished}");
    }
    assert_eq!(bodies[1]["outings"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        bodies[1]["outings"][0]["outing_uuid"],
        AWAITING_PARENT_OUTING
    );
    assert_eq!(bodies[2]["outings"], json!([]));
    assert_eq!(bodies[3]["outings"].as_array().map(Vec::len), Some(2));
}

#[tokio::test]
async fn parent_reads_by_code_and_approves() {
    let gw = Gateway::start().await;
    let by_code = format!("/v1/outings/code/{AWAITING_PARENT_CODE}");
    let (status, body) = gw.call(Method::GET, &by_code, "", None).await;
    assert_eq!(status, 200, "{body}");
    assert_envelope(status, &body);
    assert_eq!(
        body["message"],
        "succeed to get outing inform with outing code"
    );
    assert_eq!(body["outing_uuid"], AWAITING_PARENT_OUTING);
    // Decision 4: the student's name is forwarded.
    assert_eq!(body["name"], "김학생");
    assert_eq!(body["outing_situation"], "normal");
    for key in ["place", "reason", "start_time", "end_time"] {
        assert!(!body[key].is_null(), "{key} in {body}");
    }

    let approve =
        action(AWAITING_PARENT_OUTING, "parent-approve") + "?code=" + AWAITING_PARENT_CODE;
    let bodies = run(
        &gw,
        vec![
            // A token, even a student's, is ignored on parent actions.
            case(Method::POST, approve.clone(), STUDENT_UUID, 200, 0),
            case(Method::POST, approve, "", 409, -2103),
            case(
                Method::POST,
                action(AWAITING_PARENT_OUTING, "teacher-approve"),
                TEACHER_UUID,
                200,
                0,
            ),
            case(
                Method::GET,
                outing(AWAITING_PARENT_OUTING),
                STUDENT_UUID,
                200,
                0,
            ),
        ],
    )
    .await;
    assert_eq!(bodies[0]["message"], "succeed to take action to outing");
    assert_eq!(bodies[3]["outing_status"], "teacher-approved");
}

#[tokio::test]
async fn outing_lifecycle_through_every_action() {
    let gw = Gateway::start().await;
    let start = SEED_DAY + 40 * 24 * 3600;
    let (status, body) = gw
        .call(
            Method::POST,
            "/v1/outings",
            STUDENT2_UUID,
            Some(new_outing(start)),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_envelope(status, &body);
    assert_eq!(body["message"], "succeed to create new outing");
    let id = body["outing_uuid"]
        .as_str()
        .expect("outing_uuid")
        .to_owned();
    assert!(id.starts_with("outing-") && id.len() == 19, "{id}");

    // The confirm code reaches the parent out of band; the reference keeps it private,
    // so this outing is rejected by the teacher path instead, and a seeded one walks on.
    let modify = json!({"end_time": start + 7200});
    let bodies = run(
        &gw,
        vec![
            with_body(
                case(Method::PATCH, outing(&id), TEACHER_UUID, 200, 0),
                modify,
            ),
            case(Method::GET, outing(&id), STUDENT2_UUID, 200, 0),
            case(
                Method::POST,
                action(&id, "teacher-reject"),
                TEACHER_UUID,
                409,
                -2101,
            ),
            case(
                Method::POST,
                action(STUDENT2_OUTING, "teacher-reject"),
                TEACHER_UUID,
                200,
                0,
            ),
            case(
                Method::POST,
                action(STUDENT2_OUTING, "start"),
                STUDENT2_UUID,
                409,
                -2105,
            ),
            case(
                Method::POST,
                action(APPROVED_OUTING, "start"),
                STUDENT_UUID,
                200,
                0,
            ),
            case(
                Method::POST,
                action(APPROVED_OUTING, "start"),
                STUDENT_UUID,
                409,
                -2108,
            ),
            case(
                Method::POST,
                action(APPROVED_OUTING, "end"),
                STUDENT_UUID,
                200,
                0,
            ),
            case(
                Method::POST,
                action(APPROVED_OUTING, "certify"),
                TEACHER_UUID,
                200,
                0,
            ),
            case(
                Method::POST,
                action(APPROVED_OUTING, "certify"),
                TEACHER_UUID,
                409,
                -2106,
            ),
            case(Method::GET, outing(APPROVED_OUTING), STUDENT_UUID, 200, 0),
            case(Method::GET, outing(STUDENT2_OUTING), STUDENT2_UUID, 200, 0),
        ],
    )
    .await;
    assert_eq!(bodies[0]["message"], "succeed to modify outing");
    assert_eq!(bodies[1]["end_time"], start + 7200);
    assert_eq!(bodies[1]["outing_status"], "created");
    for done in [&bodies[3], &bodies[5], &bodies[7], &bodies[8]] {
        assert_eq!(done["message"], "succeed to take action to outing");
    }
    assert_eq!(bodies[10]["outing_status"], "certified");
    assert_eq!(bodies[11]["outing_status"], "rejected");

    // The finished outing now has an arrival time in the student's list.
    let (_, list) = gw.call(Method::GET, OWN_LIST, STUDENT_UUID, None).await;
    let came_back = list["outings"]
        .as_array()
        .and_then(|all| all.iter().find(|o| o["outing_uuid"] == APPROVED_OUTING))
        .expect("approved outing listed");
    assert!(
        came_back["arrival_time"].as_i64().is_some_and(|t| t > 0),
        "{came_back}"
    );
}
