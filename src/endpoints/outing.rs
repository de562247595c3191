//! Endpoints of the outing service (`DMS.SMS.v1.service.outing`): students apply for
//! outings and go out, parents confirm them with a code, teachers approve, list and
//! modify them (spec api-outing-schedule-announcement.md §3, endpoints 1–8).
//!
//! The outing protos have no package, so the method paths are `/OutingStudent/...`,
//! `/OutingTeacher/...` and `/OutingParents/...`. The action route is one contract route
//! served by one entry per action (each with its own RPC and access rule) plus a
//! catch-all entry that only ever sees unknown actions.
//!
//! Cache (decisions 9, 12): every cached read is per caller (the backend checks
//! ownership and roles per caller). Groups: `outing.<uuid>` (one outing's detail and
//! card), `outings.details` (every detail and card), `outings.student.<uuid>` (one
//! student's list pages), `outings.students` (every student's list pages),
//! `outings.filter` (every filter list). Where a write does not know the outing's owner
//! (teacher actions, PATCH: ambiguity 21) it invalidates every student's list; where it
//! does not even know the outing (parent actions name it by confirm code only:
//! ambiguity 22) it also invalidates every detail and card.

use axum::http::Method;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};
use validator::{Validate, ValidationError};

use crate::auth::{Access, Kind};
use crate::cache::CachePolicy;
use crate::endpoints::NoInput;
use crate::endpoints::{Adapter, Call, Endpoint, PathRule, Rpc, Success, endpoint, fields, rules};
use crate::http::GatewayError;
use crate::http::input::Source;
use crate::in_band;
use crate::proto::outing as pb;
use crate::rpc;
use crate::upstream::Service;

/// The contract route of every action entry.
const ACTION_ROUTE: &str = "/v1/outings/uuid/{outing_uuid}/actions/{action}";
/// The success message of every action (spec endpoint 5).
const ACTION_DONE: &str = "succeed to take action to outing";
/// Student list pages default to 10 outings (spec endpoint 2).
const DEFAULT_COUNT: u32 = 10;

const OUTING_UUID: &[(&str, PathRule)] = &[("outing_uuid", PathRule::Uuid("outing-"))];

/// Who reads an outing or its card: the owning student, teachers, and the owner's
/// parent (the service checks ownership).
const READERS: &[Kind] = &[Kind::Student, Kind::Teacher, Kind::Parent];

/// The detail and the card of one outing belong to these groups.
const OUTING_GROUPS: &[&str] = &["outing.$outing_uuid", "outings.details"];
/// A teacher's decision or change on a known outing whose owner is unknown here.
const TEACHER_WRITE: &[&str] = &["outing.$outing_uuid", "outings.students", "outings.filter"];
/// A student's move on their own outing.
const STUDENT_WRITE: &[&str] = &[
    "outing.$outing_uuid",
    "outings.student.$TokenUUID",
    "outings.filter",
];
/// A parent's decision: the outing is named by its confirm code only (ambiguity 22).
const PARENT_WRITE: &[&str] = &["outings.details", "outings.students", "outings.filter"];

// The outing replies carry `int32 status, int32 code, string msg`, like schedule's.
in_band!(status, code, msg:
    pb::CreateOutingResponse,
    pb::GetStudentOutingsResponse,
    pb::GetOutingInformResponse,
    pb::GetCardAboutOutingResponse,
    pb::GoOutResponse,
    pb::OutingResponse,
    pb::ConfirmOutingResponse,
    pb::GetOutingByOCodeResponse,
    pb::ConfirmOutingByOCodeResponse,
);

/// One entry of the action route: a literal action path with its own RPC and access.
fn action<A: Adapter>(
    id: &'static str,
    path: &'static str,
    rpc: Rpc,
    access: Access,
    adapter: A,
) -> Endpoint {
    endpoint(id, Method::POST, path, Service::Outing, rpc, adapter)
        .access(access)
        .params(OUTING_UUID)
        .contract_path(ACTION_ROUTE)
}

/// The outing service's entries of the endpoint table.
pub fn endpoints() -> Vec<Endpoint> {
    let students = Access::kinds(&[Kind::Student]);
    let teachers = Access::kinds(&[Kind::Teacher]);
    let start = rpc!("/OutingStudent", "StartGoOut");
    vec![
        endpoint(
            "outing.create",
            Method::POST,
            "/v1/outings",
            Service::Outing,
            rpc!("/OutingStudent", "CreateOuting"),
            CreateOuting,
        )
        .access(students)
        .input(Source::Json)
        .invalidates(&["outings.student.$TokenUUID", "outings.filter"]),
        endpoint(
            "outing.student_outings",
            Method::GET,
            "/v1/students/uuid/{student_uuid}/outings",
            Service::Outing,
            rpc!("/OutingStudent", "GetStudentOutings"),
            StudentOutings,
        )
        .access(Access::own(READERS, "student_uuid"))
        .params(&[("student_uuid", PathRule::Uuid("student-"))])
        .input(Source::Query)
        .cached(
            CachePolicy::per_caller("students.$student_uuid.outings.start.$start.count.$count")
                .groups(&["outings.student.$student_uuid", "outings.students"]),
        ),
        endpoint(
            "outing.get",
            Method::GET,
            "/v1/outings/uuid/{outing_uuid}",
            Service::Outing,
            rpc!("/OutingStudent", "GetOutingInform"),
            OutingInform,
        )
        .access(Access::kinds(READERS))
        .params(OUTING_UUID)
        .cached(CachePolicy::per_caller("outings.$outing_uuid").groups(OUTING_GROUPS)),
        endpoint(
            "outing.card",
            Method::GET,
            "/v1/outings/uuid/{outing_uuid}/card",
            Service::Outing,
            rpc!("/OutingStudent", "GetCardAboutOuting"),
            OutingCard,
        )
        // Callers: the owning student. The gateway checks the kind; ownership is the
        // outing service's (it holds the outing → student mapping and gets the
        // caller's uuid with the outing id).
        .access(Access::kinds(&[Kind::Student]))
        .params(OUTING_UUID)
        .cached(CachePolicy::per_caller("outings.$outing_uuid.card").groups(OUTING_GROUPS)),
        action(
            "outing.action_start",
            "/v1/outings/uuid/{outing_uuid}/actions/start",
            start,
            students,
            GoOut,
        )
        // The backend lets a student start or end only their own outing.
        .invalidates(STUDENT_WRITE),
        action(
            "outing.action_end",
            "/v1/outings/uuid/{outing_uuid}/actions/end",
            rpc!("/OutingStudent", "FinishGoOut"),
            students,
            GoOut,
        )
        .invalidates(STUDENT_WRITE),
        action(
            "outing.action_teacher_approve",
            "/v1/outings/uuid/{outing_uuid}/actions/teacher-approve",
            rpc!("/OutingTeacher", "ApproveOuting"),
            teachers,
            Confirm,
        )
        .invalidates(TEACHER_WRITE),
        action(
            "outing.action_teacher_reject",
            "/v1/outings/uuid/{outing_uuid}/actions/teacher-reject",
            rpc!("/OutingTeacher", "RejectOuting"),
            teachers,
            Confirm,
        )
        .invalidates(TEACHER_WRITE),
        action(
            "outing.action_certify",
            "/v1/outings/uuid/{outing_uuid}/actions/certify",
            rpc!("/OutingTeacher", "CertifyOuting"),
            teachers,
            Confirm,
        )
        .invalidates(TEACHER_WRITE),
        action(
            "outing.action_parent_approve",
            "/v1/outings/uuid/{outing_uuid}/actions/parent-approve",
            rpc!("/OutingParents", "ApproveOutingByOCode"),
            Access::Public,
            ConfirmByCode,
        )
        .input(Source::Query)
        .invalidates(PARENT_WRITE),
        action(
            "outing.action_parent_reject",
            "/v1/outings/uuid/{outing_uuid}/actions/parent-reject",
            rpc!("/OutingParents", "RejectOutingByOCode"),
            Access::Public,
            ConfirmByCode,
        )
        .input(Source::Query)
        .invalidates(PARENT_WRITE),
        // Unknown actions. axum prefers the literal action routes above, so this entry
        // only sees actions that are none of them: without a token they are 401 (as in
        // the original), with one the empty `OneOf` fails them with 400 / -204
        // (decision 8). Its adapter and RPC are never called.
        endpoint(
            "outing.action_unknown",
            Method::POST,
            ACTION_ROUTE,
            Service::Outing,
            start,
            GoOut,
        )
        .access(Access::ANY)
        .params(&[
            ("outing_uuid", PathRule::Uuid("outing-")),
            ("action", PathRule::OneOf(&[])),
        ])
        .contract_path(ACTION_ROUTE),
        endpoint(
            "outing.with_filter",
            Method::GET,
            "/v1/outings/with-filter",
            Service::Outing,
            rpc!("/OutingTeacher", "GetOutingWithFilter"),
            OutingsWithFilter,
        )
        // Callers: teachers (the teacher app's approval list).
        .access(Access::kinds(&[Kind::Teacher]))
        .input(Source::Query)
        .cached(
            CachePolicy::per_caller(
                "outings.filter.start.$start.count.$count.status.$status.grade.$grade.group.$group.floor.$floor.start_time.$start_time.end_time.$end_time",
            )
            .groups(&["outings.filter"]),
        ),
        endpoint(
            "outing.by_code",
            Method::GET,
            "/v1/outings/code/{OCode}",
            Service::Outing,
            rpc!("/OutingParents", "GetOutingByOCode"),
            OutingByCode,
        )
        .access(Access::Public)
        // The confirm code's format belongs to the backend; only its length is bounded.
        .params(&[("OCode", PathRule::Text(64))]),
        endpoint(
            "outing.modify",
            Method::PATCH,
            "/v1/outings/uuid/{outing_uuid}",
            Service::Outing,
            rpc!("/OutingTeacher", "ModifyOuting"),
            ModifyOuting,
        )
        .access(teachers)
        .params(OUTING_UUID)
        .input(Source::Json)
        // Fixes ambiguity 21: the owner's list, not the teacher's, must go.
        .invalidates(TEACHER_WRITE),
    ]
}

/// `situation`: exactly `normal` or `emergency` (case-sensitive).
fn situation(value: &str) -> Result<(), ValidationError> {
    match value {
        "normal" | "emergency" => Ok(()),
        "" => Err(ValidationError::new("required")),
        _ => Err(ValidationError::new("oneof")),
    }
}

// === POST /v1/outings ===

#[derive(Debug, Default, Deserialize, Validate, JsonSchema)]
#[serde(default)]
pub struct CreateOutingInput {
    #[validate(custom(function = "crate::endpoints::rules::unix_seconds"))]
    #[schemars(transform = crate::endpoints::rules::schema::unix_seconds)]
    start_time: i64,
    #[validate(custom(function = "crate::endpoints::rules::unix_seconds"))]
    #[schemars(transform = crate::endpoints::rules::schema::unix_seconds)]
    end_time: i64,
    #[validate(custom(function = "rules::required"), length(max = 150))]
    #[schemars(transform = crate::endpoints::rules::schema::required)]
    place: String,
    #[validate(custom(function = "rules::required"), length(max = 150))]
    #[schemars(transform = crate::endpoints::rules::schema::required)]
    reason: String,
    #[validate(custom(function = "situation"))]
    #[schemars(extend("enum" = ["normal", "emergency"]))]
    situation: String,
}

struct CreateOuting;

impl Adapter for CreateOuting {
    type Input = CreateOutingInput;
    type Request = pb::CreateOutingRequest;
    type Reply = pb::CreateOutingResponse;

    fn request(&self, call: &Call<'_>, input: Self::Input) -> Self::Request {
        Self::Request {
            uuid: call.caller().to_owned(),
            start_time: input.start_time,
            end_time: input.end_time,
            place: input.place,
            reason: input.reason,
            situation: input.situation,
        }
    }

    fn success(&self, _call: &Call<'_>, reply: Self::Reply) -> Result<Success, GatewayError> {
        Ok(Success::message("succeed to create new outing")
            .with(fields!({ "outing_uuid": reply.outing_id })))
    }
}

// === GET /v1/students/uuid/{student_uuid}/outings ===

#[derive(Debug, Default, Deserialize, Validate, JsonSchema)]
#[serde(default)]
pub struct PageInput {
    start: u32,
    count: u32,
}

/// A query number as the proto's `int32` (saturating: a larger value means "all").
fn int32(value: u32) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}

struct StudentOutings;

impl Adapter for StudentOutings {
    type Input = PageInput;
    type Request = pb::GetStudentOutingsRequest;
    type Reply = pb::GetStudentOutingsResponse;

    fn request(&self, call: &Call<'_>, input: Self::Input) -> Self::Request {
        let count = if input.count == 0 {
            DEFAULT_COUNT
        } else {
            input.count
        };
        Self::Request {
            uuid: call.caller().to_owned(),
            student_id: call.param("student_uuid").to_owned(),
            start: int32(input.start),
            count: int32(count),
        }
    }

    fn success(&self, _call: &Call<'_>, reply: Self::Reply) -> Result<Success, GatewayError> {
        let outings: Vec<Value> = reply
            .outing
            .into_iter()
            .map(|o| {
                json!({
                    "outing_uuid": o.outing_id,
                    "place": o.place,
                    "reason": o.reason,
                    "start_time": o.start_time,
                    "end_time": o.end_time,
                    "outing_situation": o.situation,
                    "outing_status": o.status,
                    "arrival_time": o.arrival_time,
                })
            })
            .collect();
        Ok(
            Success::message("succeed to get outing informs with student uuid")
                .with(fields!({ "outings": outings })),
        )
    }
}

// === GET /v1/outings/uuid/{outing_uuid} ===

struct OutingInform;

impl Adapter for OutingInform {
    type Input = NoInput;
    type Request = pb::GetOutingInformRequest;
    type Reply = pb::GetOutingInformResponse;

    fn request(&self, call: &Call<'_>, _input: Self::Input) -> Self::Request {
        Self::Request {
            uuid: call.caller().to_owned(),
            outing_id: call.param("outing_uuid").to_owned(),
        }
    }

    fn success(&self, _call: &Call<'_>, reply: Self::Reply) -> Result<Success, GatewayError> {
        Ok(
            Success::message("succeed to get outing inform with outing uuid").with(fields!({
                "outing_uuid": reply.outing_id,
                "place": reply.place,
                "reason": reply.reason,
                "start_time": reply.start_time,
                "end_time": reply.end_time,
                "outing_situation": reply.outing_situation,
                "outing_status": reply.outing_status,
                "student_uuid": reply.student_uuid,
            })),
        )
    }
}

// === GET /v1/outings/uuid/{outing_uuid}/card ===

struct OutingCard;

impl Adapter for OutingCard {
    type Input = NoInput;
    type Request = pb::GetCardAboutOutingRequest;
    type Reply = pb::GetCardAboutOutingResponse;

    fn request(&self, call: &Call<'_>, _input: Self::Input) -> Self::Request {
        Self::Request {
            uuid: call.caller().to_owned(),
            outing_id: call.param("outing_uuid").to_owned(),
        }
    }

    fn success(&self, _call: &Call<'_>, reply: Self::Reply) -> Result<Success, GatewayError> {
        Ok(
            Success::message("succeed to get card about outing with outing uuid").with(fields!({
                "place": reply.place,
                "start_time": reply.start_time,
                "end_time": reply.end_time,
                "outing_status": reply.outing_status,
                "name": reply.name,
                "grade": reply.grade,
                "group": reply.group,
                "number": reply.number,
                "profile_uri": reply.profile_image_uri,
                "reason": reply.reason,
            })),
        )
    }
}

// === POST /v1/outings/uuid/{outing_uuid}/actions/{action} ===

/// An action adapter whose request is the caller's uuid and the path's outing uuid.
macro_rules! caller_action {
    ($name:ident: $request:ty => $reply:ty) => {
        struct $name;

        impl Adapter for $name {
            type Input = NoInput;
            type Request = $request;
            type Reply = $reply;

            fn request(&self, call: &Call<'_>, _input: Self::Input) -> Self::Request {
                Self::Request {
                    uuid: call.caller().to_owned(),
                    outing_id: call.param("outing_uuid").to_owned(),
                }
            }

            fn success(
                &self,
                _call: &Call<'_>,
                _reply: Self::Reply,
            ) -> Result<Success, GatewayError> {
                Ok(Success::message(ACTION_DONE))
            }
        }
    };
}

// start, end
caller_action!(GoOut: pb::GoOutRequest => pb::GoOutResponse);
// teacher-approve, teacher-reject, certify
caller_action!(Confirm: pb::ConfirmOutingRequest => pb::ConfirmOutingResponse);

/// The parent actions' query: the confirm code (not validated; absent is `""`).
#[derive(Debug, Default, Deserialize, Validate, JsonSchema)]
#[serde(default)]
pub struct CodeInput {
    code: String,
}

/// parent-approve, parent-reject: the outing is named by the confirm code only.
struct ConfirmByCode;

impl Adapter for ConfirmByCode {
    type Input = CodeInput;
    type Request = pb::ConfirmOutingByOCodeRequest;
    type Reply = pb::ConfirmOutingByOCodeResponse;

    fn request(&self, _call: &Call<'_>, input: Self::Input) -> Self::Request {
        Self::Request {
            confirm_code: input.code,
        }
    }

    fn success(&self, _call: &Call<'_>, _reply: Self::Reply) -> Result<Success, GatewayError> {
        Ok(Success::message(ACTION_DONE))
    }
}

// === GET /v1/outings/with-filter ===

#[derive(Debug, Default, Deserialize, Validate, JsonSchema)]
#[serde(default)]
pub struct FilterInput {
    start: u32,
    /// No default here: 0 is sent as is (spec endpoint 6).
    count: u32,
    status: String,
    grade: i32,
    group: i32,
    floor: i32,
    start_time: i32,
    end_time: i32,
}

struct OutingsWithFilter;

impl Adapter for OutingsWithFilter {
    type Input = FilterInput;
    type Request = pb::GetOutingWithFilterRequest;
    type Reply = pb::OutingResponse;

    fn request(&self, call: &Call<'_>, input: Self::Input) -> Self::Request {
        Self::Request {
            uuid: call.caller().to_owned(),
            status: input.status,
            grade: input.grade,
            group: input.group,
            floor: input.floor,
            start: int32(input.start),
            count: int32(input.count),
            start_time: input.start_time,
            end_time: input.end_time,
        }
    }

    fn success(&self, _call: &Call<'_>, reply: Self::Reply) -> Result<Success, GatewayError> {
        let outings: Vec<Value> = reply
            .outing
            .into_iter()
            .map(|o| {
                json!({
                    "outing_uuid": o.outing_id,
                    "place": o.place,
                    "reason": o.reason,
                    "start_time": o.start_time,
                    "end_time": o.end_time,
                    "outing_situation": o.situation,
                    "outing_status": o.status,
                    "name": o.name,
                    "grade": o.grade,
                    "group": o.group,
                    "number": o.number,
                    "is_late": o.is_late,
                    "arrival_time": o.arrival_time,
                })
            })
            .collect();
        // The message is endpoint 2's text (sic, ambiguity 10).
        Ok(
            Success::message("succeed to get outing informs with student uuid")
                .with(fields!({ "outings": outings })),
        )
    }
}

// === GET /v1/outings/code/{OCode} ===

struct OutingByCode;

impl Adapter for OutingByCode {
    type Input = NoInput;
    type Request = pb::GetOutingByOCodeRequest;
    type Reply = pb::GetOutingByOCodeResponse;

    fn request(&self, call: &Call<'_>, _input: Self::Input) -> Self::Request {
        Self::Request {
            confirm_code: call.param("OCode").to_owned(),
        }
    }

    fn success(&self, _call: &Call<'_>, reply: Self::Reply) -> Result<Success, GatewayError> {
        // `name` is forwarded (decision 4: the original dropped it, ambiguity 9).
        Ok(
            Success::message("succeed to get outing inform with outing code").with(fields!({
                "outing_uuid": reply.outing_id,
                "name": reply.name,
                "place": reply.place,
                "reason": reply.reason,
                "start_time": reply.start_time,
                "end_time": reply.end_time,
                "outing_situation": reply.situation,
            })),
        )
    }
}

// === PATCH /v1/outings/uuid/{outing_uuid} ===

#[derive(Debug, Default, Deserialize, Validate, JsonSchema)]
#[serde(default)]
pub struct ModifyOutingInput {
    #[validate(custom(function = "crate::endpoints::rules::unix_seconds"))]
    #[schemars(transform = crate::endpoints::rules::schema::unix_seconds)]
    end_time: i64,
}

struct ModifyOuting;

impl Adapter for ModifyOuting {
    type Input = ModifyOutingInput;
    type Request = pb::ModifyOutingRequest;
    type Reply = pb::ConfirmOutingResponse;

    fn request(&self, call: &Call<'_>, input: Self::Input) -> Self::Request {
        Self::Request {
            uuid: call.caller().to_owned(),
            outing_id: call.param("outing_uuid").to_owned(),
            end_time: input.end_time,
        }
    }

    fn success(&self, _call: &Call<'_>, _reply: Self::Reply) -> Result<Success, GatewayError> {
        Ok(Success::message("succeed to modify outing"))
    }
}
