//! End-to-end tests of the schedule (9–13) and announcement (14–21) endpoints, through
//! real HTTP, the gateway and the reference gRPC services with their seeded data.

mod support;

use reqwest::Method;
use serde_json::{Value, json};
use sms_gateway::reference::announcement::SEEDED;
use sms_gateway::reference::schedule::{SEED_SCHEDULE_UUID, SEEDED_THIS_MONTH, current_month};
use support::cases::{case, run, with_body};
use support::{Gateway, assert_envelope, seed};

const STUDENT: &str = seed::STUDENT_UUID;
const STUDENT2: &str = seed::STUDENT2_UUID;
const TEACHER: &str = seed::TEACHER_UUID;
const PARENT: &str = seed::PARENT_UUID;
const ADMIN: &str = seed::ADMIN_UUID;

/// Sends one request that must answer `status`; returns the body.
async fn expect(
    gw: &Gateway,
    method: Method,
    path: &str,
    caller: &str,
    body: Option<Value>,
    status: u16,
) -> Value {
    let (got, json) = gw.call(method.clone(), path, caller, body).await;
    assert_eq!(got, status, "{method} {path} as {caller:?}: {json}");
    assert_envelope(got, &json);
    assert_eq!(json["code"], 0, "{json}");
    json
}

fn schedule_body(start: i64, end: i64, detail: &str) -> Value {
    json!({"start_date": start, "end_date": end, "detail": detail})
}

// 2021-03-10 00:00 KST and one day later.
const MARCH_10: i64 = 1_615_302_000;
const MARCH_11: i64 = MARCH_10 + 86_400;

#[tokio::test]
async fn schedule_refusals() {
    let gw = Gateway::start().await;
    let seeded = format!("/v1/schedules/uuid/{SEED_SCHEDULE_UUID}");
    let good = schedule_body(MARCH_10, MARCH_11, "개학");
    let cases = vec![
        // 401: no token
        with_body(
            case(Method::POST, "/v1/schedules", "", 401, -101),
            good.clone(),
        ),
        case(
            Method::GET,
            "/v1/schedules/years/2021/months/3",
            "",
            401,
            -101,
        ),
        case(
            Method::GET,
            "/v1/time-tables/years/2021/months/3/days/8",
            "",
            401,
            -101,
        ),
        with_body(
            case(Method::PATCH, seeded.clone(), "", 401, -101),
            good.clone(),
        ),
        case(Method::DELETE, seeded.clone(), "", 401, -101),
        // 403: only teachers and admins manage the calendar
        with_body(
            case(Method::POST, "/v1/schedules", STUDENT, 403, 0),
            good.clone(),
        ),
        with_body(
            case(Method::POST, "/v1/schedules", PARENT, 403, 0),
            good.clone(),
        ),
        with_body(
            case(Method::PATCH, seeded.clone(), STUDENT, 403, 0),
            good.clone(),
        ),
        case(Method::DELETE, seeded.clone(), PARENT, 403, 0),
        // 400 / -204: path parameters
        case(
            Method::GET,
            "/v1/schedules/years/0/months/3",
            STUDENT,
            400,
            -204,
        ),
        case(
            Method::GET,
            "/v1/schedules/years/10000/months/3",
            STUDENT,
            400,
            -204,
        ),
        case(
            Method::GET,
            "/v1/schedules/years/2021/months/13",
            STUDENT,
            400,
            -204,
        ),
        case(
            Method::GET,
            "/v1/schedules/years/x/months/3",
            STUDENT,
            400,
            -204,
        ),
        case(
            Method::GET,
            "/v1/time-tables/years/2021/months/3/days/32",
            STUDENT,
            400,
            -204,
        ),
        case(
            Method::DELETE,
            "/v1/schedules/uuid/schedule-1",
            TEACHER,
            400,
            -204,
        ),
        with_body(
            case(Method::PATCH, "/v1/schedules/uuid/abc", TEACHER, 400, -204),
            good.clone(),
        ),
        // 400 / -202 and -203: query and body
        case(
            Method::GET,
            "/v1/time-tables/years/2021/months/3/days/8?count=-1",
            STUDENT,
            400,
            -202,
        ),
        with_body(
            case(Method::POST, "/v1/schedules", TEACHER, 400, -202),
            json!({"start_date": "soon", "end_date": MARCH_11, "detail": "x"}),
        ),
        with_body(
            case(Method::POST, "/v1/schedules", TEACHER, 400, -203),
            schedule_body(MARCH_10, MARCH_11, ""),
        ),
        with_body(
            case(Method::POST, "/v1/schedules", TEACHER, 400, -203),
            schedule_body(123, MARCH_11, "x"),
        ),
        with_body(
            case(Method::PATCH, seeded.clone(), TEACHER, 400, -203),
            schedule_body(MARCH_10, MARCH_11, &"가".repeat(101)),
        ),
        // relayed backend refusals (code 0)
        with_body(
            case(Method::POST, "/v1/schedules", ADMIN, 407, 0),
            schedule_body(MARCH_11, MARCH_10, "거꾸로"),
        ),
        with_body(
            case(
                Method::PATCH,
                "/v1/schedules/uuid/schedule-999999999999",
                TEACHER,
                404,
                0,
            ),
            good.clone(),
        ),
        case(
            Method::DELETE,
            "/v1/schedules/uuid/schedule-999999999999",
            TEACHER,
            404,
            0,
        ),
        case(
            Method::GET,
            "/v1/time-tables/years/2021/months/2/days/30",
            STUDENT,
            407,
            0,
        ),
        case(
            Method::GET,
            "/v1/time-tables/years/2021/months/3/days/8?count=40",
            STUDENT,
            407,
            0,
        ),
        // Admins have no class: refused at the gateway.
        case(
            Method::GET,
            "/v1/time-tables/years/2021/months/3/days/8",
            ADMIN,
            403,
            0,
        ),
    ];
    run(&gw, cases).await;
}

#[tokio::test]
async fn schedules_are_listed_by_month_and_managed_by_teachers() {
    let gw = Gateway::start().await;
    let (year, month) = current_month();
    let seeded = expect(
        &gw,
        Method::GET,
        &format!("/v1/schedules/years/{year}/months/{month}"),
        PARENT,
        None,
        200,
    )
    .await;
    assert_eq!(
        seeded["message"],
        "succeed to get schedules with year and month"
    );
    let list = seeded["schedules"].as_array().expect("schedules");
    assert_eq!(list.len(), SEEDED_THIS_MONTH, "{seeded}");
    assert_eq!(list[0]["schedule_uuid"], SEED_SCHEDULE_UUID);
    assert!(
        list[0]["start_date"].is_i64()
            && list[0]["end_date"].is_i64()
            && list[0]["detail"].is_string()
    );

    let created = expect(
        &gw,
        Method::POST,
        "/v1/schedules",
        TEACHER,
        Some(schedule_body(MARCH_10, MARCH_11, "개학")),
        201,
    )
    .await;
    assert_eq!(created["message"], "succeed to create new schedule");
    let uuid = created["schedule_uuid"].as_str().expect("uuid").to_owned();
    assert!(uuid.starts_with("schedule-") && uuid.len() == 21, "{uuid}");

    // "03" is the month 3 (the path parses integers).
    let march = expect(
        &gw,
        Method::GET,
        "/v1/schedules/years/2021/months/03",
        STUDENT,
        None,
        200,
    )
    .await;
    assert_eq!(
        march["schedules"],
        json!([{"schedule_uuid": uuid, "start_date": MARCH_10, "end_date": MARCH_11, "detail": "개학"}])
    );

    let path = format!("/v1/schedules/uuid/{uuid}");
    // Changes are the teachers' (callers line); admins are refused at the gateway.
    run(
        &gw,
        vec![with_body(
            case(Method::PATCH, path.clone(), ADMIN, 403, 0),
            json!({}),
        )],
    )
    .await;
    let updated = expect(
        &gw,
        Method::PATCH,
        &path,
        TEACHER,
        Some(schedule_body(MARCH_10, MARCH_10 + 3600, "입학식")),
        200,
    )
    .await;
    assert_eq!(
        updated["message"],
        "succeed update schedule with uuid in uri"
    );
    let march = expect(
        &gw,
        Method::GET,
        "/v1/schedules/years/2021/months/3",
        STUDENT,
        None,
        200,
    )
    .await;
    assert_eq!(march["schedules"][0]["detail"], "입학식");

    let deleted = expect(&gw, Method::DELETE, &path, TEACHER, None, 200).await;
    assert_eq!(
        deleted["message"],
        "succeed to delete schedule with schedule uuid"
    );
    let march = expect(
        &gw,
        Method::GET,
        "/v1/schedules/years/2021/months/3",
        STUDENT,
        None,
        200,
    )
    .await;
    assert_eq!(march["schedules"], json!([]));
    run(&gw, vec![case(Method::DELETE, path, TEACHER, 404, 0)]).await;
}

#[tokio::test]
async fn time_table_shape_follows_the_number_of_days() {
    let gw = Gateway::start().await;
    // 2021-03-08 was a Monday.
    let monday = "/v1/time-tables/years/2021/months/3/days/8";
    for caller in [STUDENT, TEACHER, PARENT] {
        let one = expect(&gw, Method::GET, monday, caller, None, 200).await;
        assert_eq!(
            one["message"],
            "succeed to get your time table in that week number"
        );
        assert_eq!(one["time1"], "국어", "{caller}: {one}");
        assert!(one["time7"].is_string());
        assert!(one.get("time_tables").is_none());
    }
    let week = expect(
        &gw,
        Method::GET,
        &format!("{monday}?count=7"),
        STUDENT2,
        None,
        200,
    )
    .await;
    let days = week["time_tables"].as_array().expect("list");
    assert_eq!(days.len(), 7);
    assert!(week.get("time1").is_none());
    assert_eq!(days[1]["time1"], "수학");
    assert_eq!(
        days[5],
        json!({"time1": "", "time2": "", "time3": "", "time4": "", "time5": "", "time6": "", "time7": ""})
    );

    let saturday = expect(
        &gw,
        Method::GET,
        "/v1/time-tables/years/2021/months/3/days/13?count=1",
        STUDENT,
        None,
        200,
    )
    .await;
    assert_eq!(saturday["time1"], "");
}

fn announcement(title: &str, kind: &str) -> Value {
    json!({"type": kind, "title": title, "content": "내용", "target_grade": 0, "target_group": 0})
}

#[tokio::test]
async fn announcement_refusals() {
    let gw = Gateway::start().await;
    let [first, _, grade1, by_leader, _] = SEEDED;
    let detail = |uuid: &str| format!("/v1/announcements/uuid/{uuid}");
    let school = announcement("공지", "school");
    let cases = vec![
        // 401: no token
        with_body(
            case(Method::POST, "/v1/announcements", "", 401, -101),
            school.clone(),
        ),
        case(Method::GET, "/v1/announcements/types/school", "", 401, -101),
        case(Method::GET, detail(first), "", 401, -101),
        with_body(case(Method::PATCH, detail(first), "", 401, -101), json!({})),
        case(Method::DELETE, detail(first), "", 401, -101),
        case(
            Method::GET,
            format!("/v1/students/uuid/{STUDENT}/announcement-check"),
            "",
            401,
            -101,
        ),
        case(
            Method::GET,
            "/v1/announcements/types/school/query/abc",
            "",
            401,
            -101,
        ),
        case(
            Method::GET,
            format!("/v1/announcements/writer-uuid/{TEACHER}"),
            "",
            401,
            -101,
        ),
        // 403 at the gateway: account kind and own uuid
        with_body(
            case(Method::POST, "/v1/announcements", PARENT, 403, 0),
            school.clone(),
        ),
        with_body(case(Method::PATCH, detail(first), ADMIN, 403, 0), json!({})),
        case(Method::DELETE, detail(first), PARENT, 403, 0),
        case(
            Method::GET,
            format!("/v1/students/uuid/{STUDENT2}/announcement-check"),
            STUDENT,
            403,
            0,
        ),
        case(
            Method::GET,
            format!("/v1/students/uuid/{STUDENT}/announcement-check"),
            TEACHER,
            403,
            0,
        ),
        case(
            Method::GET,
            format!("/v1/announcements/writer-uuid/{STUDENT2}"),
            STUDENT,
            403,
            0,
        ),
        case(
            Method::GET,
            format!("/v1/announcements/writer-uuid/{TEACHER}"),
            PARENT,
            403,
            0,
        ),
        // 403 from the backend: not the writer, not a club leader, not aimed at the reader
        with_body(
            case(Method::PATCH, detail(first), STUDENT, 403, 0),
            json!({"title": "x"}),
        ),
        case(Method::DELETE, detail(by_leader), TEACHER, 403, 0),
        with_body(
            case(Method::POST, "/v1/announcements", STUDENT2, 403, 0),
            announcement("모임", "club"),
        ),
        with_body(
            case(Method::POST, "/v1/announcements", STUDENT, 403, 0),
            school.clone(),
        ),
        case(Method::GET, detail(grade1), STUDENT, 403, 0),
        // 400 / -204: path parameters
        case(
            Method::GET,
            "/v1/announcements/types/notice",
            STUDENT,
            400,
            -204,
        ),
        case(Method::GET, detail("announcement-12"), STUDENT, 400, -204),
        case(
            Method::DELETE,
            detail("outing-000000000001"),
            TEACHER,
            400,
            -204,
        ),
        with_body(
            case(Method::PATCH, detail("x"), TEACHER, 400, -204),
            json!({}),
        ),
        case(
            Method::GET,
            "/v1/students/uuid/pupil-000000000001/announcement-check",
            STUDENT,
            400,
            -204,
        ),
        case(
            Method::GET,
            format!("/v1/announcements/types/club/query/{}", "a".repeat(101)),
            STUDENT,
            400,
            -204,
        ),
        case(
            Method::GET,
            "/v1/announcements/types/Club/query/abc",
            STUDENT,
            400,
            -204,
        ),
        case(
            Method::GET,
            "/v1/announcements/writer-uuid/teacher-0000000000012",
            STUDENT,
            400,
            -204,
        ),
        // 400 / -202 and -203: query and body
        case(
            Method::GET,
            "/v1/announcements/types/school?start=-1",
            STUDENT,
            400,
            -202,
        ),
        case(
            Method::GET,
            "/v1/announcements/types/school/query/abc?count=x",
            STUDENT,
            400,
            -202,
        ),
        case(
            Method::GET,
            format!("/v1/announcements/writer-uuid/{TEACHER}?count=-5"),
            TEACHER,
            400,
            -202,
        ),
        with_body(
            case(Method::POST, "/v1/announcements", TEACHER, 400, -203),
            announcement("공지", "notice"),
        ),
        with_body(
            case(Method::POST, "/v1/announcements", TEACHER, 400, -203),
            announcement("", "school"),
        ),
        with_body(
            case(Method::POST, "/v1/announcements", TEACHER, 400, -203),
            json!({"type": "school", "title": "t", "content": "c", "target_grade": 124}),
        ),
        with_body(
            case(Method::POST, "/v1/announcements", TEACHER, 400, -202),
            json!({"type": "school", "title": "t", "content": "c", "target_group": "all"}),
        ),
        with_body(
            case(Method::PATCH, detail(first), TEACHER, 400, -203),
            json!({"title": "가".repeat(51)}),
        ),
        with_body(
            case(Method::PATCH, detail(first), TEACHER, 400, -203),
            json!({"target_group": 1235}),
        ),
        // relayed backend 404
        case(
            Method::GET,
            detail("announcement-999999999999"),
            STUDENT,
            404,
            0,
        ),
        case(
            Method::DELETE,
            detail("announcement-999999999999"),
            TEACHER,
            404,
            0,
        ),
        // A writer uuid must be a teacher's or a student's (decision 8).
        case(
            Method::GET,
            "/v1/announcements/writer-uuid/nobody",
            TEACHER,
            400,
            -204,
        ),
        case(
            Method::GET,
            "/v1/students/uuid/student-999999999999/announcement-check",
            "student-999999999999",
            404,
            0,
        ),
    ];
    run(&gw, cases).await;
}

#[tokio::test]
async fn reading_announcements_marks_them_checked() {
    let gw = Gateway::start().await;
    let [first, second, ..] = SEEDED;
    let check = format!("/v1/students/uuid/{STUDENT}/announcement-check");
    let unread = expect(&gw, Method::GET, &check, STUDENT, None, 200).await;
    assert_eq!(
        unread["message"],
        "succeed to get if non-check announcement is exist"
    );
    assert_eq!(
        (unread["school"].clone(), unread["club"].clone()),
        (json!(1), json!(1))
    );

    // The student sees the school announcements aimed at everyone and at grade 2 group 1.
    let list = expect(
        &gw,
        Method::GET,
        "/v1/announcements/types/school",
        STUDENT,
        None,
        200,
    )
    .await;
    assert_eq!(list["message"], "succeed to get announcement list");
    assert_eq!(list["size"], 2);
    let items = list["announcements"].as_array().expect("list");
    assert_eq!(items[0]["announcement_uuid"], second, "newest first");
    assert_eq!(items[0]["number"], 2);
    assert_eq!(items[0]["is_checked"], 0, "an integer, not a boolean");
    assert!(items[0]["date"].is_i64() && items[0]["views"].is_i64());
    assert_eq!(items[0]["writer_name"], "최선생");
    assert!(items[0]["title"].is_string());

    let read = expect(
        &gw,
        Method::GET,
        &format!("/v1/announcements/uuid/{second}"),
        STUDENT,
        None,
        200,
    )
    .await;
    assert_eq!(
        read["message"],
        "succeed to get announcement detail inform with uuid"
    );
    assert_eq!(read["type"], "school");
    assert_eq!(
        (read["target_grade"].clone(), read["target_group"].clone()),
        (json!(2), json!(1))
    );
    assert_eq!(read["previous_announcement_uuid"], first);
    assert_eq!(read["previous_title"], "2학기 개학 안내");
    // The newer school announcement is for grade 1: not the student's neighbour.
    assert_eq!(
        (
            read["next_title"].clone(),
            read["next_announcement_uuid"].clone()
        ),
        (json!(""), json!(""))
    );
    for key in ["date", "title", "content", "writer_name"] {
        assert!(!read[key].is_null(), "{key} in {read}");
    }
    expect(
        &gw,
        Method::GET,
        &format!("/v1/announcements/uuid/{first}"),
        STUDENT,
        None,
        200,
    )
    .await;

    let checked = expect(&gw, Method::GET, &check, STUDENT, None, 200).await;
    assert_eq!(
        (checked["school"].clone(), checked["club"].clone()),
        (json!(0), json!(1))
    );
    let list = expect(
        &gw,
        Method::GET,
        "/v1/announcements/types/school?start=1&count=1",
        STUDENT,
        None,
        200,
    )
    .await;
    assert_eq!(list["size"], 2);
    assert_eq!(list["announcements"][0]["announcement_uuid"], first);
    assert_eq!(list["announcements"][0]["is_checked"], 1);
    assert_eq!(list["announcements"][0]["views"], 2, "seeded with one view");
}

#[tokio::test]
async fn writers_create_update_and_delete_their_announcements() {
    let gw = Gateway::start().await;
    let created = expect(
        &gw,
        Method::POST,
        "/v1/announcements",
        TEACHER,
        Some(announcement("체육복 안내", "school")),
        201,
    )
    .await;
    assert_eq!(created["message"], "succeed to create new announcement");
    let uuid = created["announcement_uuid"]
        .as_str()
        .expect("uuid")
        .to_owned();
    assert!(
        uuid.starts_with("announcement-") && uuid.len() == 25,
        "{uuid}"
    );
    let path = format!("/v1/announcements/uuid/{uuid}");

    // PATCH: every field optional; an empty body changes nothing.
    let updated = expect(
        &gw,
        Method::PATCH,
        &path,
        TEACHER,
        Some(json!({"title": "체육복 착용 안내"})),
        200,
    )
    .await;
    assert_eq!(updated["message"], "succeed to update announcement");
    assert_eq!(updated["announcement_uuid"], uuid);
    expect(&gw, Method::PATCH, &path, TEACHER, Some(json!({})), 200).await;
    let read = expect(&gw, Method::GET, &path, STUDENT2, None, 200).await;
    assert_eq!(
        (read["title"].clone(), read["content"].clone()),
        (json!("체육복 착용 안내"), json!("내용"))
    );

    // The club-leading student writes club announcements and lists its own.
    let club = expect(
        &gw,
        Method::POST,
        "/v1/announcements",
        STUDENT,
        Some(announcement("모임 변경", "club")),
        201,
    )
    .await;
    let mine = expect(
        &gw,
        Method::GET,
        &format!("/v1/announcements/writer-uuid/{STUDENT}"),
        STUDENT,
        None,
        200,
    )
    .await;
    assert_eq!(
        mine["message"],
        "succeed to get announcement list with writer uuid"
    );
    assert_eq!(mine["size"], 2);
    assert_eq!(
        mine["announcements"][0]["announcement_uuid"],
        club["announcement_uuid"]
    );

    let deleted = expect(&gw, Method::DELETE, &path, TEACHER, None, 200).await;
    assert_eq!(
        deleted["message"],
        "succeed to get announcement detail inform with uuid"
    );
    assert_eq!(deleted["announcement_uuid"], uuid);
    run(&gw, vec![case(Method::GET, path, TEACHER, 404, 0)]).await;
}

#[tokio::test]
async fn search_and_writer_lists() {
    let gw = Gateway::start().await;
    // "안내" percent-encoded.
    let search = "/v1/announcements/types/school/query/%EC%95%88%EB%82%B4";
    let found = expect(&gw, Method::GET, search, STUDENT, None, 200).await;
    assert_eq!(
        found["message"],
        "succeed to get announcement list with query"
    );
    assert_eq!(
        found["size"], 2,
        "the grade 1 announcement is not the student's"
    );
    let found = expect(
        &gw,
        Method::GET,
        &format!("{search}?count=1"),
        TEACHER,
        None,
        200,
    )
    .await;
    assert_eq!(found["size"], 3);
    assert_eq!(found["announcements"].as_array().map(Vec::len), Some(1));
    let none = expect(
        &gw,
        Method::GET,
        "/v1/announcements/types/club/query/nothing",
        STUDENT,
        None,
        200,
    )
    .await;
    assert_eq!(
        (none["size"].clone(), none["announcements"].clone()),
        (json!(0), json!([]))
    );

    let teacher = expect(
        &gw,
        Method::GET,
        &format!("/v1/announcements/writer-uuid/{TEACHER}"),
        TEACHER,
        None,
        200,
    )
    .await;
    assert_eq!(teacher["size"], 4);
    // A teacher may list a club leader's announcements (another kind).
    let leader = expect(
        &gw,
        Method::GET,
        &format!("/v1/announcements/writer-uuid/{STUDENT}"),
        TEACHER,
        None,
        200,
    )
    .await;
    assert_eq!(leader["size"], 1);
    assert_eq!(leader["announcements"][0]["writer_name"], "김학생");

    let clubs = expect(
        &gw,
        Method::GET,
        "/v1/announcements/types/club?count=0",
        PARENT,
        None,
        200,
    )
    .await;
    assert_eq!(clubs["size"], 2);
}
