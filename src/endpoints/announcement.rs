//! Endpoints of the announcement service (`DMS.SMS.v1.service.announcement`): school
//! and club announcements, their read tracking and search (spec
//! api-outing-schedule-announcement.md §3, endpoints 14–21).
//!
//! Documented quirks kept (decision 4): `is_checked` is an integer; PATCH takes every
//! field as optional and sends absent ones as `""`/0; DELETE answers with the detail
//! endpoint's message; the check and writer lists send the path uuid as `uuid`.
//!
//! Cache: every read is per caller (audience, `is_checked`). Groups:
//! `announcements.lists` (every list and search page), `announcements.details` (every
//! detail: its previous/next links change with any write of the same type),
//! `announcements.checks` (every unread check), `announcements.writers` and
//! `announcements.writer.<uuid>` (writers' own lists), `announcements.reader.<uuid>`
//! (what shows one reader's `is_checked`). A write's body type and an update's or
//! delete's announcement type and writer are not known to the pipeline, so writes
//! invalidate every list, detail and check: announcements change rarely. Reading a
//! detail marks it read: a miss invalidates that reader's group (decision 13); other
//! readers' `views` counts may lag by up to the TTL, as in the original.

use axum::http::Method;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};
use validator::{Validate, ValidationError};

use crate::auth::{Access, Kind};
use crate::cache::CachePolicy;
use crate::endpoints::NoInput;
use crate::endpoints::{Adapter, Call, Endpoint, PathRule, Success, endpoint, fields};
use crate::http::GatewayError;
use crate::http::input::Source;
use crate::in_band;
use crate::proto::announcement as pb;
use crate::rpc;
use crate::upstream::Service;

in_band!(status, code, msg:
    pb::GetAnnouncementsResponse,
    pb::GetAnnouncementDetailResponse,
    pb::DefaultAnnouncementResponse,
    pb::CheckAnnouncementResponse,
);

/// Teachers write school and club announcements, club-leading students club ones; the
/// backend decides which student leads a club (decision 7, "callers" line).
const WRITERS: &[Kind] = &[Kind::Teacher, Kind::Student];

const TYPES: &[&str] = &["school", "club"];
const TYPE: (&str, PathRule) = ("type", PathRule::OneOf(TYPES));
const ANNOUNCEMENT_UUID: (&str, PathRule) = ("announcement_uuid", PathRule::Uuid("announcement-"));
/// Writers are teachers or students: `PathRule::Uuid` takes one prefix, so the path
/// only gets a length bound here (the longest writer uuid has 20 characters) and the
/// backend answers unknown writers with 404.
const WRITER_UUID: (&str, PathRule) = ("writer_uuid", PathRule::AnyUuid(&["teacher-", "student-"]));
/// Search text: non-empty, at most 100 characters.
const SEARCH_QUERY: (&str, PathRule) = ("search_query", PathRule::Text(100));

/// List and search pages of the caller.
const LIST_GROUPS: &[&str] = &["announcements.lists", "announcements.reader.$TokenUUID"];
/// What an update or delete can change (type and writer unknown here).
const CHANGE: &[&str] = &[
    "announcements.lists",
    "announcements.details",
    "announcements.checks",
    "announcements.writers",
];

/// The announcement service's entries of the endpoint table.
pub fn endpoints() -> Vec<Endpoint> {
    vec![
        endpoint(
            "announcement.create",
            Method::POST,
            "/v1/announcements",
            Service::Announcement,
            rpc!("/announcement.AnnouncementService", "CreateAnnouncement"),
            CreateAnnouncement,
        )
        .access(Access::kinds(WRITERS))
        .input(Source::Json)
        .invalidates(&[
            "announcements.lists",
            "announcements.details",
            "announcements.checks",
            "announcements.writer.$TokenUUID",
        ]),
        endpoint(
            "announcement.list",
            Method::GET,
            "/v1/announcements/types/{type}",
            Service::Announcement,
            rpc!("/announcement.AnnouncementService", "GetAnnouncements"),
            ListAnnouncements,
        )
        .params(&[TYPE])
        .input(Source::Query)
        .cached(
            CachePolicy::per_caller("announcements.types.$type.start.$start.count.$count")
                .groups(LIST_GROUPS),
        ),
        endpoint(
            "announcement.detail",
            Method::GET,
            "/v1/announcements/uuid/{announcement_uuid}",
            Service::Announcement,
            rpc!("/announcement.AnnouncementService", "GetAnnouncementDetail"),
            AnnouncementDetail,
        )
        .params(&[ANNOUNCEMENT_UUID])
        .cached(
            CachePolicy::per_caller("announcements.$announcement_uuid")
                .groups(&["announcements.details"])
                // Decision 13, ambiguity 23: only a miss marks it read.
                .on_miss_invalidates(&["announcements.reader.$TokenUUID"]),
        ),
        endpoint(
            "announcement.update",
            Method::PATCH,
            "/v1/announcements/uuid/{announcement_uuid}",
            Service::Announcement,
            rpc!("/announcement.AnnouncementService", "UpdateAnnouncement"),
            UpdateAnnouncement,
        )
        .access(Access::kinds(WRITERS))
        .params(&[ANNOUNCEMENT_UUID])
        .input(Source::Json)
        .invalidates(CHANGE),
        endpoint(
            "announcement.delete",
            Method::DELETE,
            "/v1/announcements/uuid/{announcement_uuid}",
            Service::Announcement,
            rpc!("/announcement.AnnouncementService", "DeleteAnnouncement"),
            DeleteAnnouncement,
        )
        .access(Access::kinds(WRITERS))
        .params(&[ANNOUNCEMENT_UUID])
        .invalidates(CHANGE),
        endpoint(
            "announcement.check",
            Method::GET,
            "/v1/students/uuid/{student_uuid}/announcement-check",
            Service::Announcement,
            rpc!("/announcement.AnnouncementService", "CheckAnnouncement"),
            CheckAnnouncement,
        )
        .access(Access::own(&[Kind::Student], "student_uuid"))
        .params(&[("student_uuid", PathRule::Uuid("student-"))])
        .cached(
            CachePolicy::per_caller("students.$student_uuid.announcement-check")
                .groups(&["announcements.checks", "announcements.reader.$student_uuid"]),
        ),
        endpoint(
            "announcement.search",
            Method::GET,
            "/v1/announcements/types/{type}/query/{search_query}",
            Service::Announcement,
            rpc!("/announcement.AnnouncementService", "SearchAnnouncements"),
            SearchAnnouncements,
        )
        .params(&[TYPE, SEARCH_QUERY])
        .input(Source::Query)
        .cached(
            CachePolicy::per_caller(
                "announcements.types.$type.query.$search_query.start.$start.count.$count",
            )
            .groups(LIST_GROUPS),
        ),
        endpoint(
            "announcement.by_writer",
            Method::GET,
            "/v1/announcements/writer-uuid/{writer_uuid}",
            Service::Announcement,
            rpc!("/announcement.AnnouncementService", "GetMyAnnouncements"),
            WriterAnnouncements,
        )
        .access(Access::own(WRITERS, "writer_uuid"))
        .params(&[WRITER_UUID])
        .input(Source::Query)
        // The backend answers for the path's writer, `is_checked` included.
        .cached(
            CachePolicy::per_caller("writers.$writer_uuid.announcements.start.$start.count.$count")
                .groups(&[
                    "announcements.writers",
                    "announcements.writer.$writer_uuid",
                    "announcements.reader.$writer_uuid",
                ]),
        ),
    ]
}

/// Paging of the list endpoints.
#[derive(Debug, Default, Deserialize, Validate, JsonSchema)]
#[serde(default)]
pub struct PageInput {
    start: u32,
    /// Absent or 0 means 10.
    count: u32,
}

impl PageInput {
    /// `(start, count)` as sent, after the default.
    fn window(&self) -> (i32, i32) {
        let count = if self.count == 0 { 10 } else { self.count };
        (saturate(self.start), saturate(count))
    }
}

fn saturate(value: u32) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}

/// The list body shared by endpoints 15, 20 and 21: `announcements` and `size`.
fn list(message: &'static str, reply: pb::GetAnnouncementsResponse) -> Success {
    let announcements: Vec<Value> = reply
        .announcement
        .into_iter()
        .map(|a| {
            json!({
                "announcement_uuid": a.announcement_id,
                "number": a.number,
                "title": a.title,
                "date": a.date,
                "views": a.views,
                "writer_name": a.writer_name,
                "is_checked": a.is_checked,
            })
        })
        .collect();
    Success::message(message).with(fields!({
        "announcements": announcements,
        "size": reply.size,
    }))
}

/// `oneof=school club`.
fn announcement_type(value: &str) -> Result<(), ValidationError> {
    if TYPES.contains(&value) {
        Ok(())
    } else {
        Err(ValidationError::new("oneof"))
    }
}

// === POST /v1/announcements ===

/// The body of POST /v1/announcements.
#[derive(Debug, Default, Deserialize, Validate, JsonSchema)]
#[serde(default)]
pub struct CreateInput {
    #[serde(rename = "type")]
    #[validate(custom(function = "announcement_type"))]
    #[schemars(extend("enum" = TYPES))]
    kind: String,
    #[validate(
        custom(function = "crate::endpoints::rules::required"),
        length(max = 50)
    )]
    #[schemars(transform = crate::endpoints::rules::schema::required)]
    title: String,
    #[validate(
        custom(function = "crate::endpoints::rules::required"),
        length(max = 1000)
    )]
    #[schemars(transform = crate::endpoints::rules::schema::required)]
    content: String,
    #[validate(range(min = 0, max = 123))]
    target_grade: i32,
    #[validate(range(min = 0, max = 1234))]
    target_group: i32,
}

struct CreateAnnouncement;

impl Adapter for CreateAnnouncement {
    type Input = CreateInput;
    type Request = pb::CreateAnnouncementRequest;
    type Reply = pb::DefaultAnnouncementResponse;

    fn request(&self, call: &Call<'_>, input: Self::Input) -> Self::Request {
        Self::Request {
            uuid: call.caller().to_owned(),
            r#type: input.kind,
            title: input.title,
            content: input.content,
            target_grade: input.target_grade,
            target_group: input.target_group,
        }
    }

    fn success(&self, _call: &Call<'_>, reply: Self::Reply) -> Result<Success, GatewayError> {
        Ok(
            Success::message("succeed to create new announcement").with(fields!({
                "announcement_uuid": reply.announcement_id,
            })),
        )
    }
}

// === GET /v1/announcements/types/{type} ===

struct ListAnnouncements;

impl Adapter for ListAnnouncements {
    type Input = PageInput;
    type Request = pb::GetAnnouncementsRequest;
    type Reply = pb::GetAnnouncementsResponse;

    fn request(&self, call: &Call<'_>, input: Self::Input) -> Self::Request {
        let (start, count) = input.window();
        Self::Request {
            uuid: call.caller().to_owned(),
            r#type: call.param("type").to_owned(),
            start,
            count,
        }
    }

    fn success(&self, _call: &Call<'_>, reply: Self::Reply) -> Result<Success, GatewayError> {
        Ok(list("succeed to get announcement list", reply))
    }
}

// === GET /v1/announcements/uuid/{announcement_uuid} ===

struct AnnouncementDetail;

impl Adapter for AnnouncementDetail {
    type Input = NoInput;
    type Request = pb::GetAnnouncementDetailRequest;
    type Reply = pb::GetAnnouncementDetailResponse;

    fn request(&self, call: &Call<'_>, _input: Self::Input) -> Self::Request {
        Self::Request {
            uuid: call.caller().to_owned(),
            announcement_id: call.param("announcement_uuid").to_owned(),
        }
    }

    fn success(&self, _call: &Call<'_>, reply: Self::Reply) -> Result<Success, GatewayError> {
        Ok(
            Success::message("succeed to get announcement detail inform with uuid").with(fields!({
                "date": reply.date,
                "title": reply.title,
                "content": reply.content,
                "writer_name": reply.writer_name,
                "target_grade": reply.target_grade,
                "target_group": reply.target_group,
                "type": reply.announcement_type,
                "next_title": reply.next_title,
                "next_announcement_uuid": reply.next_announcement_id,
                "previous_title": reply.previous_title,
                "previous_announcement_uuid": reply.previous_announcement_id,
            })),
        )
    }
}

// === PATCH /v1/announcements/uuid/{announcement_uuid} ===

/// The body of PATCH: every field optional; absent ones are sent as `""`/0.
#[derive(Debug, Default, Deserialize, Validate, JsonSchema)]
#[serde(default)]
pub struct UpdateInput {
    #[validate(length(max = 50))]
    title: String,
    #[validate(length(max = 1000))]
    content: String,
    #[validate(range(min = 0, max = 123))]
    target_grade: i32,
    #[validate(range(min = 0, max = 1234))]
    target_group: i32,
}

struct UpdateAnnouncement;

impl Adapter for UpdateAnnouncement {
    type Input = UpdateInput;
    type Request = pb::UpdateAnnouncementRequest;
    type Reply = pb::DefaultAnnouncementResponse;

    fn request(&self, call: &Call<'_>, input: Self::Input) -> Self::Request {
        Self::Request {
            uuid: call.caller().to_owned(),
            announcement_id: call.param("announcement_uuid").to_owned(),
            title: input.title,
            content: input.content,
            target_grade: input.target_grade,
            target_group: input.target_group,
        }
    }

    fn success(&self, _call: &Call<'_>, reply: Self::Reply) -> Result<Success, GatewayError> {
        Ok(
            Success::message("succeed to update announcement").with(fields!({
                "announcement_uuid": reply.announcement_id,
            })),
        )
    }
}

// === DELETE /v1/announcements/uuid/{announcement_uuid} ===

struct DeleteAnnouncement;

impl Adapter for DeleteAnnouncement {
    type Input = NoInput;
    type Request = pb::DeleteAnnouncementRequest;
    type Reply = pb::DefaultAnnouncementResponse;

    fn request(&self, call: &Call<'_>, _input: Self::Input) -> Self::Request {
        Self::Request {
            uuid: call.caller().to_owned(),
            announcement_id: call.param("announcement_uuid").to_owned(),
        }
    }

    fn success(&self, _call: &Call<'_>, reply: Self::Reply) -> Result<Success, GatewayError> {
        // The detail endpoint's message, as documented (ambiguity 10).
        Ok(
            Success::message("succeed to get announcement detail inform with uuid").with(fields!({
                "announcement_uuid": reply.announcement_id,
            })),
        )
    }
}

// === GET /v1/students/uuid/{student_uuid}/announcement-check ===

struct CheckAnnouncement;

impl Adapter for CheckAnnouncement {
    type Input = NoInput;
    type Request = pb::CheckAnnouncementRequest;
    type Reply = pb::CheckAnnouncementResponse;

    /// The backend gets the path uuid (ambiguity 3); the own-uuid rule makes it the
    /// caller's.
    fn request(&self, call: &Call<'_>, _input: Self::Input) -> Self::Request {
        Self::Request {
            uuid: call.param("student_uuid").to_owned(),
        }
    }

    fn success(&self, _call: &Call<'_>, reply: Self::Reply) -> Result<Success, GatewayError> {
        Ok(
            Success::message("succeed to get if non-check announcement is exist").with(fields!({
                "club": reply.club,
                "school": reply.school,
            })),
        )
    }
}

// === GET /v1/announcements/types/{type}/query/{search_query} ===

struct SearchAnnouncements;

impl Adapter for SearchAnnouncements {
    type Input = PageInput;
    type Request = pb::SearchAnnouncementsRequest;
    type Reply = pb::GetAnnouncementsResponse;

    fn request(&self, call: &Call<'_>, input: Self::Input) -> Self::Request {
        let (start, count) = input.window();
        Self::Request {
            uuid: call.caller().to_owned(),
            r#type: call.param("type").to_owned(),
            query: call.param("search_query").to_owned(),
            start,
            count,
        }
    }

    fn success(&self, _call: &Call<'_>, reply: Self::Reply) -> Result<Success, GatewayError> {
        Ok(list("succeed to get announcement list with query", reply))
    }
}

// === GET /v1/announcements/writer-uuid/{writer_uuid} ===

struct WriterAnnouncements;

impl Adapter for WriterAnnouncements {
    type Input = PageInput;
    type Request = pb::GetMyAnnouncementsRequest;
    type Reply = pb::GetAnnouncementsResponse;

    /// The backend gets the path uuid as `uuid` (documented quirk); the own-uuid rule
    /// keeps a writer to its own list.
    fn request(&self, call: &Call<'_>, input: Self::Input) -> Self::Request {
        let (start, count) = input.window();
        Self::Request {
            uuid: call.param("writer_uuid").to_owned(),
            start,
            count,
        }
    }

    fn success(&self, _call: &Call<'_>, reply: Self::Reply) -> Result<Success, GatewayError> {
        Ok(list(
            "succeed to get announcement list with writer uuid",
            reply,
        ))
    }
}
