//! Endpoints of the club service (`DMS.SMS.v1.service.club`): clubs, members, leaders
//! and recruitments (spec api-auth-club.md §4).
//!
//! Most club endpoints only copy fields, so they share one generic adapter, [`Map`], made
//! of two plain functions; the JSON shapes shared by several bodies (club object,
//! recruitment object, mixed-type numbers, `null` lists) each have one helper.

use std::time::Duration;

use axum::http::Method;
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use validator::Validate;

use crate::auth::{Access, Kind};
use crate::endpoints::{
    Adapter, Call, Endpoint, InBand, NoInput, PathRule, Rpc, Success, endpoint, fields,
};
use crate::http::GatewayError;
use crate::http::input::Source;
use crate::in_band;
use crate::proto::club::admin as pb;
use crate::proto::club::leader as pb_leader;
use crate::rpc;
use crate::upstream::Service;

in_band!(status, code, message:
    pb::CreateNewClubResponse,
    pb::GetClubsSortByUpdateTimeResponse,
    pb::GetRecruitmentsSortByCreateTimeResponse,
    pb::GetClubInformWithUuidResponse,
    pb::GetClubInformsWithUuiDsResponse,
    pb::GetRecruitmentInformWithUuidResponse,
    pb::GetRecruitmentUuidWithClubUuidResponse,
    pb::GetRecruitmentUuiDsWithClubUuiDsResponse,
    pb::GetAllClubFieldsResponse,
    pb::GetTotalCountOfClubsResponse,
    pb::GetTotalCountOfCurrentRecruitmentsResponse,
    pb::GetClubUuidWithLeaderUuidResponse,
    pb_leader::AddClubMemberResponse,
    pb_leader::DeleteClubMemberResponse,
    pb_leader::ChangeClubLeaderResponse,
    pb_leader::ModifyClubInformResponse,
    pb_leader::DeleteClubWithUuidResponse,
    pb_leader::RegisterRecruitmentResponse,
    pb_leader::ModifyRecruitmentResponse,
    pb_leader::DeleteRecruitmentWithUuidResponse,
);

/// The backend's "student-level reads" rule, and its leader-level writes (the backend
/// then decides leadership in-band with -1711/-1712).
const ADMIN_OR_STUDENT: Access = Access::kinds(&[Kind::Admin, Kind::Student]);
/// GET /v1/clubs: the backend also lets teachers read club lists.
const CLUB_LIST_READERS: Access = Access::kinds(&[Kind::Admin, Kind::Student, Kind::Teacher]);
/// CreateNewClub is admin only at the backend.
const ADMIN: Access = Access::kinds(&[Kind::Admin]);

const CLUB_PARAM: &[(&str, PathRule)] = &[("club_uuid", PathRule::Uuid("club-"))];
const RECRUITMENT_PARAM: &[(&str, PathRule)] =
    &[("recruitment_uuid", PathRule::Uuid("recruitment-"))];
const LEADER_PARAM: &[(&str, PathRule)] = &[("leader_uuid", PathRule::Uuid("student-"))];
const MEMBER_PARAMS: &[(&str, PathRule)] = &[
    ("club_uuid", PathRule::Uuid("club-")),
    ("student_uuid", PathRule::Uuid("student-")),
];

/// One club entry of the endpoint table.
fn club<A: Adapter>(
    id: &'static str,
    method: Method,
    path: &'static str,
    rpc: Rpc,
    adapter: A,
) -> Endpoint {
    endpoint(id, method, path, Service::Club, rpc, adapter)
}

/// The club service's entries of the endpoint table.
pub fn endpoints() -> Vec<Endpoint> {
    vec![
        // POST /v1/clubs
        club(
            "club.create",
            Method::POST,
            "/v1/clubs",
            rpc!("/club.admin.ClubAdmin", "CreateNewClub"),
            Map {
                request: |call, input: CreateClubInput| pb::CreateNewClubRequest {
                    uuid: call.caller().to_owned(),
                    name: input.name,
                    leader_uuid: input.leader_uuid,
                    // Split on `|` with empty segments kept, as the contract says.
                    member_uui_ds: input.member_uuids.split('|').map(str::to_owned).collect(),
                    field: input.field,
                    location: input.location,
                    floor: input.floor.to_string(),
                    logo: input.logo.unwrap_or_default(),
                },
                success: |reply: pb::CreateNewClubResponse| {
                    Success::message("succeed to create new club")
                        .with(fields!({ "club_uuid": reply.club_uuid }))
                },
            },
        )
        .access(ADMIN)
        .input(Source::Multipart)
        .deadline(Duration::from_secs(7)),
        // GET /v1/clubs/sorted-by/update-time
        club(
            "club.clubs_by_update_time",
            Method::GET,
            "/v1/clubs/sorted-by/update-time",
            rpc!("/club.admin.ClubStudent", "GetClubsSortByUpdateTime"),
            Map {
                request: |call, input: PageInput| pb::GetClubsSortByUpdateTimeRequest {
                    uuid: call.caller().to_owned(),
                    start: input.start,
                    count: input.count(),
                    field: input.field,
                    name: input.name,
                },
                success: |reply: pb::GetClubsSortByUpdateTimeResponse| {
                    Success::message("succeed to get clubs sort by update time")
                        .with(fields!({ "clubs": clubs_json(reply.informs) }))
                },
            },
        )
        .access(ADMIN_OR_STUDENT)
        .input(Source::Query),
        // GET /v1/recruitments/sorted-by/create-time
        club(
            "club.recruitments_by_create_time",
            Method::GET,
            "/v1/recruitments/sorted-by/create-time",
            rpc!("/club.admin.ClubStudent", "GetRecruitmentsSortByCreateTime"),
            Map {
                request: |call, input: PageInput| pb::GetRecruitmentsSortByCreateTimeRequest {
                    uuid: call.caller().to_owned(),
                    start: input.start,
                    count: input.count(),
                    field: input.field,
                    name: input.name,
                },
                success: |reply: pb::GetRecruitmentsSortByCreateTimeResponse| {
                    let recruitments: Vec<Value> = reply
                        .recruitments
                        .into_iter()
                        .map(recruitment_json)
                        .collect();
                    Success::message("succeed to get recruitments sort by create time")
                        .with(fields!({ "recruitments": recruitments }))
                },
            },
        )
        .access(ADMIN_OR_STUDENT)
        .input(Source::Query),
        // GET /v1/clubs/uuid/{club_uuid}
        club(
            "club.club",
            Method::GET,
            "/v1/clubs/uuid/{club_uuid}",
            rpc!("/club.admin.ClubStudent", "GetClubInformWithUUID"),
            Map {
                request: |call, _: NoInput| pb::GetClubInformWithUuidRequest {
                    uuid: call.caller().to_owned(),
                    club_uuid: call.param("club_uuid").to_owned(),
                },
                // Decision 4: `floor` is included (the original dropped it).
                success: |reply: pb::GetClubInformWithUuidResponse| {
                    Success::message("succeed to get club inform with uuid").with(club_json(
                        pb::ClubInform {
                            club_uuid: reply.club_uuid,
                            leader_uuid: reply.leader_uuid,
                            member_uui_ds: reply.member_uui_ds,
                            name: reply.name,
                            club_concept: reply.club_concept,
                            introduction: reply.introduction,
                            floor: reply.floor,
                            location: reply.location,
                            field: reply.field,
                            link: reply.link,
                            logo_uri: reply.logo_uri,
                        },
                    ))
                },
            },
        )
        .access(ADMIN_OR_STUDENT)
        .params(CLUB_PARAM),
        // GET /v1/clubs
        club(
            "club.clubs",
            Method::GET,
            "/v1/clubs",
            rpc!("/club.admin.ClubStudent", "GetClubInformsWithUUIDs"),
            Map {
                request: |call, input: ClubUuidsInput| pb::GetClubInformsWithUuiDsRequest {
                    uuid: call.caller().to_owned(),
                    club_uui_ds: input.club_uuids.unwrap_or_default(),
                },
                success: |reply: pb::GetClubInformsWithUuiDsResponse| {
                    Success::message("succeed to get club list with uuid list")
                        .with(fields!({ "clubs": clubs_json(reply.informs) }))
                },
            },
        )
        .access(CLUB_LIST_READERS)
        .input(Source::JsonOrQuery),
        // GET /v1/recruitments/uuid/{recruitment_uuid}
        club(
            "club.recruitment",
            Method::GET,
            "/v1/recruitments/uuid/{recruitment_uuid}",
            rpc!("/club.admin.ClubStudent", "GetRecruitmentInformWithUUID"),
            Map {
                request: |call, _: NoInput| pb::GetRecruitmentInformWithUuidRequest {
                    uuid: call.caller().to_owned(),
                    recruitment_uuid: call.param("recruitment_uuid").to_owned(),
                },
                // The message names a club, verbatim from the contract (ambiguity 8).
                success: |reply: pb::GetRecruitmentInformWithUuidResponse| {
                    Success::message("succeed to get club inform with uuid").with(recruitment_json(
                        pb::RecruitmentInform {
                            recruitment_uuid: reply.recruitment_uuid,
                            club_uuid: reply.club_uuid,
                            recruit_concept: reply.recruit_concept,
                            recruit_members: reply.recruit_members,
                            start_period: reply.start_period,
                            end_period: reply.end_period,
                        },
                    ))
                },
            },
        )
        .access(ADMIN_OR_STUDENT)
        .params(RECRUITMENT_PARAM),
        // GET /v1/clubs/uuid/{club_uuid}/recruitment-uuid
        club(
            "club.current_recruitment_uuid",
            Method::GET,
            "/v1/clubs/uuid/{club_uuid}/recruitment-uuid",
            rpc!("/club.admin.ClubStudent", "GetRecruitmentUUIDWithClubUUID"),
            Map {
                request: |call, _: NoInput| pb::GetRecruitmentUuidWithClubUuidRequest {
                    uuid: call.caller().to_owned(),
                    club_uuid: call.param("club_uuid").to_owned(),
                },
                success: |reply: pb::GetRecruitmentUuidWithClubUuidResponse| {
                    Success::message(
                        "succeed to get uuid of recruitment in progress with club uuid",
                    )
                    .with(fields!({ "recruitment_uuid": reply.recruitment_uuid }))
                },
            },
        )
        .access(ADMIN_OR_STUDENT)
        .params(CLUB_PARAM),
        // GET /v1/recruitment-uuids
        club(
            "club.recruitment_uuids",
            Method::GET,
            "/v1/recruitment-uuids",
            rpc!(
                "/club.admin.ClubStudent",
                "GetRecruitmentUUIDsWithClubUUIDs"
            ),
            Map {
                request: |call, input: ClubUuidsInput| {
                    pb::GetRecruitmentUuiDsWithClubUuiDsRequest {
                        uuid: call.caller().to_owned(),
                        club_uui_ds: input.club_uuids.unwrap_or_default(),
                    }
                },
                success: |reply: pb::GetRecruitmentUuiDsWithClubUuiDsResponse| {
                    Success::message("succeed to get recruitment uuid list with club list")
                        .with(fields!({ "uuids": list_or_null(reply.recruitment_uui_ds) }))
                },
            },
        )
        .access(ADMIN_OR_STUDENT)
        .input(Source::JsonOrQuery),
        // GET /v1/clubs/property/fields
        club(
            "club.fields",
            Method::GET,
            "/v1/clubs/property/fields",
            rpc!("/club.admin.ClubStudent", "GetAllClubFields"),
            Map {
                request: |call, _: NoInput| pb::GetAllClubFieldsRequest {
                    uuid: call.caller().to_owned(),
                },
                // Verbatim, missing verb included (ambiguity 8).
                success: |reply: pb::GetAllClubFieldsResponse| {
                    Success::message("succeed to all fields of club")
                        .with(fields!({ "fields": list_or_null(reply.fields) }))
                },
            },
        )
        .access(ADMIN_OR_STUDENT),
        // GET /v1/clubs/count
        club(
            "club.club_count",
            Method::GET,
            "/v1/clubs/count",
            rpc!("/club.admin.ClubStudent", "GetTotalCountOfClubs"),
            Map {
                request: |call, _: NoInput| pb::GetTotalCountOfClubsRequest {
                    uuid: call.caller().to_owned(),
                },
                success: |reply: pb::GetTotalCountOfClubsResponse| {
                    Success::message("succeed to get total count of clubs")
                        .with(fields!({ "count": reply.count }))
                },
            },
        )
        .access(ADMIN_OR_STUDENT),
        // GET /v1/recruitments/count
        club(
            "club.recruitment_count",
            Method::GET,
            "/v1/recruitments/count",
            rpc!(
                "/club.admin.ClubStudent",
                "GetTotalCountOfCurrentRecruitments"
            ),
            Map {
                request: |call, _: NoInput| pb::GetTotalCountOfCurrentRecruitmentsRequest {
                    uuid: call.caller().to_owned(),
                },
                success: |reply: pb::GetTotalCountOfCurrentRecruitmentsResponse| {
                    Success::message("succeed to get total count of all recruitments in progress")
                        .with(fields!({ "count": reply.count }))
                },
            },
        )
        .access(ADMIN_OR_STUDENT),
        // GET /v1/leaders/uuid/{leader_uuid}/club-uuid
        club(
            "club.club_uuid_of_leader",
            Method::GET,
            "/v1/leaders/uuid/{leader_uuid}/club-uuid",
            rpc!("/club.admin.ClubStudent", "GetClubUUIDWithLeaderUUID"),
            Map {
                request: |call, _: NoInput| pb::GetClubUuidWithLeaderUuidRequest {
                    uuid: call.caller().to_owned(),
                    leader_uuid: call.param("leader_uuid").to_owned(),
                },
                // Copy-pasted message, verbatim (ambiguity 8).
                success: |reply: pb::GetClubUuidWithLeaderUuidResponse| {
                    Success::message("succeed to get total count of all recruitments in progress")
                        .with(fields!({ "club_uuid": reply.club_uuid }))
                },
            },
        )
        // The path names a student: a student may only ask about itself (decision 7).
        .access(Access::own(&[Kind::Admin, Kind::Student], "leader_uuid"))
        .params(LEADER_PARAM),
        // DELETE /v1/clubs/uuid/{club_uuid}
        club(
            "club.delete",
            Method::DELETE,
            "/v1/clubs/uuid/{club_uuid}",
            rpc!("/club.leader.ClubLeader", "DeleteClubWithUUID"),
            Map {
                request: |call, _: NoInput| pb_leader::DeleteClubWithUuidRequest {
                    uuid: call.caller().to_owned(),
                    club_uuid: call.param("club_uuid").to_owned(),
                },
                success: |_: pb_leader::DeleteClubWithUuidResponse| {
                    Success::message("succeed to delete club")
                },
            },
        )
        .access(ADMIN_OR_STUDENT)
        .params(CLUB_PARAM),
        // POST /v1/clubs/uuid/{club_uuid}/members
        club(
            "club.add_member",
            Method::POST,
            "/v1/clubs/uuid/{club_uuid}/members",
            rpc!("/club.leader.ClubLeader", "AddClubMember"),
            Map {
                request: |call, input: AddMemberInput| pb_leader::AddClubMemberRequest {
                    uuid: call.caller().to_owned(),
                    club_uuid: call.param("club_uuid").to_owned(),
                    student_uuid: input.student_uuid,
                },
                // The backend answers 201, a success under decision 3.
                success: |_: pb_leader::AddClubMemberResponse| {
                    Success::message("succeed to add new club member")
                },
            },
        )
        .access(ADMIN_OR_STUDENT)
        .params(CLUB_PARAM)
        .input(Source::Json),
        // DELETE /v1/clubs/uuid/{club_uuid}/members/{student_uuid}
        club(
            "club.delete_member",
            Method::DELETE,
            "/v1/clubs/uuid/{club_uuid}/members/{student_uuid}",
            rpc!("/club.leader.ClubLeader", "DeleteClubMember"),
            Map {
                request: |call, _: NoInput| pb_leader::DeleteClubMemberRequest {
                    uuid: call.caller().to_owned(),
                    club_uuid: call.param("club_uuid").to_owned(),
                    student_uuid: call.param("student_uuid").to_owned(),
                },
                success: |_: pb_leader::DeleteClubMemberResponse| {
                    Success::message("succeed to delete club member")
                },
            },
        )
        // No own-uuid rule on `student_uuid`: it names the member the leader removes,
        // not the caller; leadership is the backend's -1712.
        .access(ADMIN_OR_STUDENT)
        .params(MEMBER_PARAMS),
        // PUT /v1/clubs/uuid/{club_uuid}/leader
        club(
            "club.change_leader",
            Method::PUT,
            "/v1/clubs/uuid/{club_uuid}/leader",
            rpc!("/club.leader.ClubLeader", "ChangeClubLeader"),
            Map {
                request: |call, input: ChangeLeaderInput| pb_leader::ChangeClubLeaderRequest {
                    uuid: call.caller().to_owned(),
                    club_uuid: call.param("club_uuid").to_owned(),
                    new_leader_uuid: input.new_leader_uuid,
                },
                // Copy-pasted message, verbatim (ambiguity 8).
                success: |_: pb_leader::ChangeClubLeaderResponse| {
                    Success::message("succeed to add new club member")
                },
            },
        )
        .access(ADMIN_OR_STUDENT)
        .params(CLUB_PARAM)
        .input(Source::Json),
        // PATCH /v1/clubs/uuid/{club_uuid}
        club(
            "club.modify",
            Method::PATCH,
            "/v1/clubs/uuid/{club_uuid}",
            rpc!("/club.leader.ClubLeader", "ModifyClubInform"),
            Map {
                request: |call, input: ModifyClubInput| pb_leader::ModifyClubInformRequest {
                    uuid: call.caller().to_owned(),
                    club_uuid: call.param("club_uuid").to_owned(),
                    club_concept: input.club_concept,
                    introduction: input.introduction,
                    link: input.link,
                    logo: input.logo,
                },
                success: |_: pb_leader::ModifyClubInformResponse| {
                    Success::message("succeed to modify club inform")
                },
            },
        )
        .access(ADMIN_OR_STUDENT)
        .params(CLUB_PARAM)
        .input(Source::Multipart)
        .deadline(Duration::from_secs(6)),
        // POST /v1/recruitments
        club(
            "club.register_recruitment",
            Method::POST,
            "/v1/recruitments",
            rpc!("/club.leader.ClubLeader", "RegisterRecruitment"),
            Map {
                request: |call, input: RegisterRecruitmentInput| {
                    pb_leader::RegisterRecruitmentRequest {
                        uuid: call.caller().to_owned(),
                        club_uuid: input.club_uuid,
                        recruit_concept: input.recruit_concept,
                        end_period: input.end_period,
                        recruit_members: recruit_members(input.members),
                    }
                },
                success: |reply: pb_leader::RegisterRecruitmentResponse| {
                    Success::message("succeed to register new recruitment")
                        .with(fields!({ "recruitment_uuid": reply.recruitment_uuid }))
                },
            },
        )
        .access(ADMIN_OR_STUDENT)
        .input(Source::Json),
        // PATCH /v1/recruitments/uuid/{recruitment_uuid}
        club(
            "club.modify_recruitment",
            Method::PATCH,
            "/v1/recruitments/uuid/{recruitment_uuid}",
            rpc!("/club.leader.ClubLeader", "ModifyRecruitment"),
            Map {
                // `end_period` is validated but has no proto field (ambiguity 6).
                request: |call, input: ModifyRecruitmentInput| {
                    pb_leader::ModifyRecruitmentRequest {
                        uuid: call.caller().to_owned(),
                        recruitment_uuid: call.param("recruitment_uuid").to_owned(),
                        recruit_concept: input.recruit_concept,
                        recruit_members: recruit_members(input.members),
                    }
                },
                success: |_: pb_leader::ModifyRecruitmentResponse| {
                    Success::message("succeed to change recruitment inform")
                },
            },
        )
        .access(ADMIN_OR_STUDENT)
        .params(RECRUITMENT_PARAM)
        .input(Source::Json),
        // DELETE /v1/recruitments/uuid/{recruitment_uuid}
        club(
            "club.delete_recruitment",
            Method::DELETE,
            "/v1/recruitments/uuid/{recruitment_uuid}",
            rpc!("/club.leader.ClubLeader", "DeleteRecruitmentWithUUID"),
            Map {
                request: |call, _: NoInput| pb_leader::DeleteRecruitmentWithUuidRequest {
                    uuid: call.caller().to_owned(),
                    recruitment_uuid: call.param("recruitment_uuid").to_owned(),
                },
                success: |_: pb_leader::DeleteRecruitmentWithUuidResponse| {
                    Success::message("succeed to delete recruitment")
                },
            },
        )
        .access(ADMIN_OR_STUDENT)
        .params(RECRUITMENT_PARAM),
    ]
}

// === the shared adapter ===

/// An adapter made of two plain functions: the club endpoints differ only in which
/// fields they copy, so one generic type serves them all.
struct Map<I, Q, R> {
    /// Input, caller and path → gRPC request.
    request: fn(&Call<'_>, I) -> Q,
    /// Successful reply → documented body.
    success: fn(R) -> Success,
}

impl<I, Q, R> Adapter for Map<I, Q, R>
where
    I: DeserializeOwned + Validate + Default + JsonSchema + Send + 'static,
    Q: prost::Message + Default + Send + 'static,
    R: prost::Message + Default + InBand + Send + 'static,
{
    type Input = I;
    type Request = Q;
    type Reply = R;

    fn request(&self, call: &Call<'_>, input: I) -> Q {
        (self.request)(call, input)
    }

    fn success(&self, _call: &Call<'_>, reply: R) -> Result<Success, GatewayError> {
        Ok((self.success)(reply))
    }
}

// === inputs ===

/// Multipart form of POST /v1/clubs.
#[derive(Debug, Default, Deserialize, Validate, JsonSchema)]
#[serde(default)]
pub struct CreateClubInput {
    #[validate(
        custom(function = "crate::endpoints::rules::required"),
        length(max = 30)
    )]
    #[schemars(transform = crate::endpoints::rules::schema::required)]
    name: String,
    /// Exactly `student-` + 12 digits.
    #[validate(
        custom(function = "crate::endpoints::rules::student_uuid"),
        length(equal = 20)
    )]
    #[schemars(transform = crate::endpoints::rules::schema::student_uuid)]
    leader_uuid: String,
    /// One text field, `|`-separated.
    #[validate(custom(function = "crate::endpoints::rules::required"))]
    #[schemars(transform = crate::endpoints::rules::schema::required)]
    member_uuids: String,
    #[validate(
        custom(function = "crate::endpoints::rules::required"),
        length(max = 20)
    )]
    #[schemars(transform = crate::endpoints::rules::schema::required)]
    field: String,
    #[validate(
        custom(function = "crate::endpoints::rules::required"),
        length(max = 20)
    )]
    #[schemars(transform = crate::endpoints::rules::schema::required)]
    location: String,
    /// Signed so that a negative floor is a rule failure (-203), as in the original.
    #[validate(range(min = 1, max = 5))]
    floor: i64,
    /// Required file; `None` when the part is absent.
    #[serde(with = "serde_bytes")]
    #[validate(required)]
    #[schemars(with = "Option<String>", transform = crate::endpoints::rules::schema::file)]
    logo: Option<Vec<u8>>,
}

/// Query of the two sorted lists.
#[derive(Debug, Default, Deserialize, Validate, JsonSchema)]
#[serde(default)]
pub struct PageInput {
    start: u32,
    count: u32,
    field: String,
    name: String,
}

impl PageInput {
    /// `count`, 10 when absent or 0.
    fn count(&self) -> u32 {
        if self.count == 0 { 10 } else { self.count }
    }
}

/// `club_uuids` of GET /v1/clubs and /v1/recruitment-uuids: a JSON body, or the query
/// (`?club_uuids=a,b` or repeated keys, decision 21).
#[derive(Debug, Default, Deserialize, Validate, JsonSchema)]
#[serde(default)]
pub struct ClubUuidsInput {
    /// Required: absent or `null` fails, `[]` passes; elements unvalidated.
    #[validate(required)]
    club_uuids: Option<Vec<String>>,
}

/// Body of POST /v1/clubs/uuid/{club_uuid}/members.
#[derive(Debug, Default, Deserialize, Validate, JsonSchema)]
#[serde(default)]
pub struct AddMemberInput {
    #[validate(
        custom(function = "crate::endpoints::rules::student_uuid"),
        length(equal = 20)
    )]
    #[schemars(transform = crate::endpoints::rules::schema::student_uuid)]
    student_uuid: String,
}

/// Body of PUT /v1/clubs/uuid/{club_uuid}/leader.
#[derive(Debug, Default, Deserialize, Validate, JsonSchema)]
#[serde(default)]
pub struct ChangeLeaderInput {
    #[validate(
        custom(function = "crate::endpoints::rules::student_uuid"),
        length(equal = 20)
    )]
    #[schemars(transform = crate::endpoints::rules::schema::student_uuid)]
    new_leader_uuid: String,
}

/// Multipart form of PATCH /v1/clubs/uuid/{club_uuid}; every field optional.
#[derive(Debug, Default, Deserialize, Validate, JsonSchema)]
#[serde(default)]
pub struct ModifyClubInput {
    #[validate(length(max = 40))]
    club_concept: String,
    #[validate(length(max = 150))]
    introduction: String,
    #[validate(length(max = 100))]
    link: String,
    /// Absent means empty bytes.
    #[serde(with = "serde_bytes")]
    #[schemars(with = "String", transform = crate::endpoints::rules::schema::file)]
    logo: Vec<u8>,
}

/// Body of POST /v1/recruitments.
#[derive(Debug, Default, Deserialize, Validate, JsonSchema)]
#[serde(default)]
pub struct RegisterRecruitmentInput {
    /// Non-empty, no format check.
    #[validate(custom(function = "crate::endpoints::rules::required"))]
    #[schemars(transform = crate::endpoints::rules::schema::required)]
    club_uuid: String,
    #[validate(
        custom(function = "crate::endpoints::rules::required"),
        length(max = 40)
    )]
    #[schemars(transform = crate::endpoints::rules::schema::required)]
    recruit_concept: String,
    #[validate(custom(function = "crate::endpoints::rules::date"), length(max = 10))]
    #[schemars(transform = crate::endpoints::rules::schema::date)]
    end_period: String,
    /// Required: absent or `null` fails, `[]` passes.
    #[validate(required)]
    members: Option<Vec<MemberInput>>,
}

/// Body of PATCH /v1/recruitments/uuid/{recruitment_uuid}.
#[derive(Debug, Default, Deserialize, Validate, JsonSchema)]
#[serde(default)]
pub struct ModifyRecruitmentInput {
    #[validate(length(max = 40))]
    recruit_concept: String,
    /// Validated, then dropped: the proto has no field for it (ambiguity 6).
    #[validate(custom(function = "crate::endpoints::rules::date"), length(max = 10))]
    #[schemars(transform = crate::endpoints::rules::schema::date)]
    end_period: String,
    /// Absent, `null` and `[]` all forward an empty list.
    members: Option<Vec<MemberInput>>,
}

/// One wanted member of a recruitment. The declared element rules are not enforced
/// (ambiguity 4, kept); only the JSON types are. (`Serialize` because the validator
/// reports a failing field's value.)
#[derive(Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default)]
pub struct MemberInput {
    grade: i64,
    field: String,
    number: i64,
}

/// Members as the proto wants them: grade and number as decimal strings.
fn recruit_members(members: Option<Vec<MemberInput>>) -> Vec<pb_leader::RecruitMember> {
    members
        .unwrap_or_default()
        .into_iter()
        .map(|m| pb_leader::RecruitMember {
            grade: m.grade.to_string(),
            field: m.field,
            number: m.number.to_string(),
        })
        .collect()
}

// === response shapes (spec §2.8) ===

/// A proto string that holds a number: a JSON integer when it parses as one, else the
/// original string (club `floor`, recruit-member `grade`/`number`).
fn int_or_text(text: String) -> Value {
    match text.parse::<i64>() {
        Ok(n) => Value::from(n),
        Err(_) => Value::String(text),
    }
}

/// A repeated string copied from a reply: `null` when empty.
fn list_or_null(list: Vec<String>) -> Value {
    if list.is_empty() {
        Value::Null
    } else {
        Value::from(list)
    }
}

/// The club object.
fn club_json(club: pb::ClubInform) -> Value {
    json!({
        "club_uuid": club.club_uuid,
        "leader_uuid": club.leader_uuid,
        "member_uuids": list_or_null(club.member_uui_ds),
        "name": club.name,
        "location": club.location,
        "field": club.field,
        "link": club.link,
        "introduction": club.introduction,
        "club_concept": club.club_concept,
        "logo_uri": club.logo_uri,
        "floor": int_or_text(club.floor),
    })
}

/// A list of club objects the gateway builds: `[]` when empty.
fn clubs_json(clubs: Vec<pb::ClubInform>) -> Vec<Value> {
    clubs.into_iter().map(club_json).collect()
}

/// The recruitment object with its recruit-member objects.
fn recruitment_json(recruitment: pb::RecruitmentInform) -> Value {
    let members: Vec<Value> = recruitment
        .recruit_members
        .into_iter()
        .map(|m| {
            json!({
                "field": m.field,
                "grade": int_or_text(m.grade),
                "number": int_or_text(m.number),
            })
        })
        .collect();
    json!({
        "recruitment_uuid": recruitment.recruitment_uuid,
        "club_uuid": recruitment.club_uuid,
        "recruit_concept": recruitment.recruit_concept,
        "recruit_members": members,
        "start_period": recruitment.start_period,
        "end_period": recruitment.end_period,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_in_strings_become_integers_only_when_they_parse() {
        assert_eq!(int_or_text("3".into()), json!(3));
        assert_eq!(int_or_text("".into()), json!(""));
        assert_eq!(int_or_text("3F".into()), json!("3F"));
    }

    #[test]
    fn club_object_has_null_for_empty_members_and_keeps_floor() {
        let club = club_json(pb::ClubInform {
            floor: "2".into(),
            ..Default::default()
        });
        assert_eq!(club["member_uuids"], Value::Null);
        assert_eq!(club["floor"], json!(2));
    }

    #[test]
    fn count_defaults_to_ten() {
        assert_eq!(PageInput::default().count(), 10);
        let page = PageInput {
            count: 3,
            ..Default::default()
        };
        assert_eq!(page.count(), 3);
    }
}
