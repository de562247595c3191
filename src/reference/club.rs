//! Reference club service: `club.admin.ClubAdmin`, `club.admin.ClubStudent`,
//! `club.leader.ClubLeader` and `club.event.ClubEvent`, in memory.
//!
//! Modelled after the backend snapshot (spec api-auth-club.md §4, §6): student-level
//! reads for admins and students (403 code 0 otherwise; club lists also for teachers),
//! the leader-level rule (-1711 / -1721 / -1712), the documented 404 and 409 codes, 407
//! for invalid metadata or data. A student belongs to at most one club on creation;
//! a recruitment is in progress until its end date (an empty end date never ends).

use std::borrow::Cow;
use std::cmp::Reverse;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use tonic::service::Routes;
use tonic::{Request, Response, Status};

use super::{Directory, Shared, metadata, seed};
use crate::auth::Kind;
use crate::auth::principal::is_uuid_of;
use crate::proto::club::admin::{self as pb, club_admin_server, club_student_server};
use crate::proto::club::event::{self as pb_event, club_event_server};
use crate::proto::club::leader::{self as pb_leader, club_leader_server};

/// The seeded club led by the demo student (members: both demo students).
pub const CLUB_UUID: &str = "club-000000000001";
/// A seeded club led by a student outside the demo directory, with a recruitment.
pub const CLUB2_UUID: &str = "club-000000000002";
/// A seeded club without any recruitment.
pub const CLUB3_UUID: &str = "club-000000000003";
/// The current recruitment of [`CLUB_UUID`].
pub const RECRUITMENT_UUID: &str = "recruitment-000000000001";
/// The current recruitment of [`CLUB2_UUID`].
pub const RECRUITMENT2_UUID: &str = "recruitment-000000000002";

/// The club service's gRPC services.
pub fn routes(shared: &Shared) -> Routes {
    let service = ClubService {
        shared: shared.clone(),
        state: Arc::new(Mutex::new(State::seeded())),
    };
    Routes::new(club_admin_server::ClubAdminServer::new(service.clone()))
        .add_service(club_student_server::ClubStudentServer::new(service.clone()))
        .add_service(club_leader_server::ClubLeaderServer::new(service.clone()))
        .add_service(club_event_server::ClubEventServer::new(service))
}

// === state ===

#[derive(Debug, Clone)]
struct Club {
    uuid: String,
    leader_uuid: String,
    member_uuids: Vec<String>,
    name: String,
    club_concept: String,
    introduction: String,
    floor: String,
    location: String,
    field: String,
    link: String,
    logo_uri: String,
    /// Write sequence number of the last change (the "update time").
    updated: u64,
}

#[derive(Debug, Clone)]
struct Recruitment {
    uuid: String,
    club_uuid: String,
    concept: String,
    members: Vec<pb_leader::RecruitMember>,
    start_period: String,
    /// `YYYY-MM-DD`, or empty for no end.
    end_period: String,
    /// Write sequence number of the creation (the "create time").
    created: u64,
}

impl Recruitment {
    /// In progress until the end of its end date.
    fn in_progress(&self, today: &str) -> bool {
        self.end_period.is_empty() || self.end_period.as_str() >= today
    }
}

#[derive(Debug, Default)]
struct State {
    clubs: Vec<Club>,
    recruitments: Vec<Recruitment>,
    /// Last write sequence number.
    tick: u64,
}

impl State {
    fn seeded() -> Self {
        let mut state = Self::default();
        let club = |uuid: &str,
                    leader: &str,
                    members: &[&str],
                    name: &str,
                    field: &str,
                    location: &str,
                    floor: &str| Club {
            uuid: uuid.to_owned(),
            leader_uuid: leader.to_owned(),
            member_uuids: members.iter().map(|m| (*m).to_owned()).collect(),
            name: name.to_owned(),
            club_concept: format!("{name} 동아리"),
            introduction: format!("{name} 동아리를 소개합니다"),
            floor: floor.to_owned(),
            location: location.to_owned(),
            field: field.to_owned(),
            link: String::new(),
            logo_uri: format!("https://example.invalid/logos/{uuid}.png"),
            updated: 0,
        };
        let other_leader = "student-000000000101";
        for mut seeded in [
            club(
                CLUB_UUID,
                seed::STUDENT_UUID,
                &[seed::STUDENT_UUID, seed::STUDENT2_UUID],
                "DMS",
                "SW개발",
                "2-2반 교실",
                "3",
            ),
            club(
                CLUB2_UUID,
                other_leader,
                &[other_leader],
                "밴드부",
                "예술",
                "음악실",
                "1",
            ),
            club(
                CLUB3_UUID,
                "student-000000000102",
                &["student-000000000102"],
                "독서부",
                "인문",
                "도서관",
                "4",
            ),
        ] {
            seeded.updated = state.next_tick();
            state.clubs.push(seeded);
        }
        let member = |grade: &str, field: &str, number: &str| pb_leader::RecruitMember {
            grade: grade.to_owned(),
            field: field.to_owned(),
            number: number.to_owned(),
        };
        for (uuid, club_uuid, concept, members) in [
            (
                RECRUITMENT_UUID,
                CLUB_UUID,
                "서버 개발자 모집",
                vec![member("1", "서버", "2"), member("2", "앱", "1")],
            ),
            (
                RECRUITMENT2_UUID,
                CLUB2_UUID,
                "드러머 모집",
                vec![member("1", "드럼", "1")],
            ),
        ] {
            let created = state.next_tick();
            state.recruitments.push(Recruitment {
                uuid: uuid.to_owned(),
                club_uuid: club_uuid.to_owned(),
                concept: concept.to_owned(),
                members,
                start_period: "2020-03-02".to_owned(),
                end_period: "2099-12-31".to_owned(),
                created,
            });
        }
        state
    }

    fn next_tick(&mut self) -> u64 {
        self.tick += 1;
        self.tick
    }

    fn club(&self, uuid: &str) -> Option<&Club> {
        self.clubs.iter().find(|c| c.uuid == uuid)
    }

    fn club_index(&self, uuid: &str) -> Option<usize> {
        self.clubs.iter().position(|c| c.uuid == uuid)
    }

    /// The club's recruitment in progress.
    fn current_recruitment(&self, club_uuid: &str, today: &str) -> Option<&Recruitment> {
        self.recruitments
            .iter()
            .find(|r| r.club_uuid == club_uuid && r.in_progress(today))
    }

    /// Index of the recruitment `uuid` if it is in progress (-1724 otherwise).
    fn current_recruitment_index(&self, uuid: &str, today: &str) -> Result<usize, Fail> {
        self.recruitments
            .iter()
            .position(|r| r.uuid == uuid && r.in_progress(today))
            .ok_or(Fail::new(
                404,
                -1724,
                "current recruitment with that uuid does not exist",
            ))
    }

    /// The leader-level rule: admin or student (-1711), an existing club (-1721), and a
    /// student caller must lead it (-1712). Returns the club's index.
    fn leader_club(&self, caller: &str, club_uuid: &str) -> Result<usize, Fail> {
        let kind = caller_kind(caller);
        if !matches!(kind, Some(Kind::Admin | Kind::Student)) {
            return Err(not_student_or_admin());
        }
        let index = self.club_index(club_uuid).ok_or(Fail::new(
            404,
            -1721,
            "club with that uuid does not exist",
        ))?;
        if kind == Some(Kind::Student) && self.clubs[index].leader_uuid != caller {
            return Err(Fail::new(403, -1712, "you are not the leader of this club"));
        }
        Ok(index)
    }
}

// === in-band answers ===

/// An in-band failure: status, code, message.
#[derive(Debug)]
struct Fail {
    status: u32,
    code: i32,
    message: Cow<'static, str>,
}

impl Fail {
    fn new(status: u32, code: i32, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
}

fn not_student_or_admin() -> Fail {
    Fail::new(403, -1711, "only a student or an admin may call this")
}

fn invalid(message: impl Into<Cow<'static, str>>) -> Fail {
    Fail::new(407, 0, message)
}

/// Reply types whose in-band fields can be set.
trait Reply: Default {
    fn set(&mut self, status: u32, code: i32, message: String);
}

macro_rules! reply {
    ($($ty:ty),+ $(,)?) => {$(
        impl Reply for $ty {
            fn set(&mut self, status: u32, code: i32, message: String) {
                self.status = status;
                self.code = code;
                self.message = message;
            }
        }
    )+};
}

reply!(
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
    pb::GetClubUuiDsWithFloorResponse,
    pb_leader::AddClubMemberResponse,
    pb_leader::DeleteClubMemberResponse,
    pb_leader::ChangeClubLeaderResponse,
    pb_leader::ModifyClubInformResponse,
    pb_leader::DeleteClubWithUuidResponse,
    pb_leader::RegisterRecruitmentResponse,
    pb_leader::ModifyRecruitmentResponse,
    pb_leader::DeleteRecruitmentWithUuidResponse,
);

/// A success reply: `reply` with its in-band fields set.
fn ok<R: Reply>(status: u32, message: &str, mut reply: R) -> Result<R, Fail> {
    reply.set(status, 0, message.to_owned());
    Ok(reply)
}

fn caller_kind(caller: &str) -> Option<Kind> {
    Kind::of_uuid(caller)
}

/// Student-level reads: admin or student (and the extra kinds given), else 403 code 0.
fn reader(caller: &str, also: Option<Kind>) -> Result<(), Fail> {
    match caller_kind(caller) {
        Some(Kind::Admin | Kind::Student) => Ok(()),
        Some(kind) if Some(kind) == also => Ok(()),
        _ => Err(Fail::new(403, 0, "you are not allowed to read clubs")),
    }
}

// === the service ===

#[derive(Debug, Clone)]
struct ClubService {
    shared: Shared,
    state: Arc<Mutex<State>>,
}

impl ClubService {
    /// Checks the metadata (407 in-band), then runs `body` on the locked state and the
    /// request message, turning a [`Fail`] into the in-band reply.
    fn handle<Q, R: Reply>(
        &self,
        request: Request<Q>,
        body: impl FnOnce(&mut State, &Directory, Q) -> Result<R, Fail>,
    ) -> Result<Response<R>, Status> {
        let result = match metadata::check(&self.shared.metadata, &request) {
            Err(message) => Err(invalid(message)),
            Ok(()) => {
                let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
                body(&mut state, &self.shared.directory, request.into_inner())
            }
        };
        Ok(Response::new(result.unwrap_or_else(|fail| {
            let mut reply = R::default();
            reply.set(fail.status, fail.code, fail.message.into_owned());
            reply
        })))
    }
}

fn inform(club: &Club) -> pb::ClubInform {
    pb::ClubInform {
        club_uuid: club.uuid.clone(),
        leader_uuid: club.leader_uuid.clone(),
        member_uui_ds: club.member_uuids.clone(),
        name: club.name.clone(),
        club_concept: club.club_concept.clone(),
        introduction: club.introduction.clone(),
        floor: club.floor.clone(),
        location: club.location.clone(),
        field: club.field.clone(),
        link: club.link.clone(),
        logo_uri: club.logo_uri.clone(),
    }
}

fn recruitment_inform(recruitment: &Recruitment) -> pb::RecruitmentInform {
    pb::RecruitmentInform {
        recruitment_uuid: recruitment.uuid.clone(),
        club_uuid: recruitment.club_uuid.clone(),
        recruit_concept: recruitment.concept.clone(),
        recruit_members: recruitment.members.clone(),
        start_period: recruitment.start_period.clone(),
        end_period: recruitment.end_period.clone(),
    }
}

/// `start`/`count` paging of a sorted list.
fn page<T>(items: impl Iterator<Item = T>, start: u32, count: u32) -> Vec<T> {
    items.skip(start as usize).take(count as usize).collect()
}

/// Today's date, `YYYY-MM-DD` in UTC.
fn today() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (y, m, d) = civil_from_days(i64::try_from(secs / 86_400).unwrap_or(0));
    format!("{y:04}-{m:02}-{d:02}")
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// A `YYYY-MM-DD` date with a plausible month and day.
fn is_date(text: &str) -> bool {
    let b = text.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    if b.len() != 10
        || b[4] != b'-'
        || b[7] != b'-'
        || !digits(0..4)
        || !digits(5..7)
        || !digits(8..10)
    {
        return false;
    }
    let month: u32 = text[5..7].parse().unwrap_or(0);
    let day: u32 = text[8..10].parse().unwrap_or(0);
    (1..=12).contains(&month) && (1..=31).contains(&day)
}

/// Recruit members must have a grade 1..3, a field and a number 1..10 (else 407).
fn check_members(members: &[pb_leader::RecruitMember]) -> Result<(), Fail> {
    let in_range = |text: &str, max: u32| text.parse::<u32>().is_ok_and(|n| (1..=max).contains(&n));
    let valid = |m: &pb_leader::RecruitMember| {
        in_range(&m.grade, 3) && in_range(&m.number, 10) && !m.field.is_empty()
    };
    if members.iter().all(valid) {
        Ok(())
    } else {
        Err(invalid(
            "recruit members have invalid grade, field or number",
        ))
    }
}

#[tonic::async_trait]
impl club_admin_server::ClubAdmin for ClubService {
    async fn create_new_club(
        &self,
        request: Request<pb::CreateNewClubRequest>,
    ) -> Result<Response<pb::CreateNewClubResponse>, Status> {
        self.handle(request, |state, directory, req| {
            if caller_kind(&req.uuid) != Some(Kind::Admin) {
                return Err(Fail::new(403, 0, "only an admin may create a club"));
            }
            let floor_ok = req.floor.parse::<u32>().is_ok_and(|f| (1..=5).contains(&f));
            if req.name.is_empty() || req.field.is_empty() || req.location.is_empty() || !floor_ok {
                return Err(invalid(
                    "name, field, location and a floor of 1..5 are required",
                ));
            }
            if !is_uuid_of(&req.leader_uuid, "student-") {
                return Err(invalid("leader uuid is not a student uuid"));
            }
            if !req.member_uui_ds.contains(&req.leader_uuid) {
                return Err(Fail::new(
                    409,
                    -1501,
                    "member uuids do not include the leader uuid",
                ));
            }
            let distinct: BTreeSet<&str> = req.member_uui_ds.iter().map(String::as_str).collect();
            if distinct.len() != req.member_uui_ds.len() {
                return Err(Fail::new(409, -1506, "a member is listed twice"));
            }
            let known = |uuid: &String| {
                Kind::of_uuid(uuid) == Some(Kind::Student) && directory.get(uuid).is_some()
            };
            if !req.member_uui_ds.iter().all(known) {
                return Err(Fail::new(
                    409,
                    -1502,
                    "member uuids include a student that does not exist",
                ));
            }
            if state.clubs.iter().any(|c| c.leader_uuid == req.leader_uuid) {
                return Err(Fail::new(409, -1503, "that student already leads a club"));
            }
            if state
                .clubs
                .iter()
                .any(|c| c.member_uuids.iter().any(|m| req.member_uui_ds.contains(m)))
            {
                return Err(Fail::new(
                    409,
                    -1506,
                    "a member already belongs to another club",
                ));
            }
            if state.clubs.iter().any(|c| c.name == req.name) {
                return Err(Fail::new(409, -1504, "club name is already used"));
            }
            if state.clubs.iter().any(|c| c.location == req.location) {
                return Err(Fail::new(409, -1505, "club location is already used"));
            }
            let uuid = directory.new_uuid("club-");
            let updated = state.next_tick();
            state.clubs.push(Club {
                logo_uri: format!("https://example.invalid/logos/{uuid}.png"),
                uuid: uuid.clone(),
                leader_uuid: req.leader_uuid,
                member_uuids: req.member_uui_ds,
                name: req.name,
                club_concept: String::new(),
                introduction: String::new(),
                floor: req.floor,
                location: req.location,
                field: req.field,
                link: String::new(),
                updated,
            });
            ok(
                201,
                "new club created",
                pb::CreateNewClubResponse {
                    club_uuid: uuid,
                    ..Default::default()
                },
            )
        })
    }
}

#[tonic::async_trait]
impl club_student_server::ClubStudent for ClubService {
    async fn get_clubs_sort_by_update_time(
        &self,
        request: Request<pb::GetClubsSortByUpdateTimeRequest>,
    ) -> Result<Response<pb::GetClubsSortByUpdateTimeResponse>, Status> {
        self.handle(request, |state, _, req| {
            reader(&req.uuid, None)?;
            let mut clubs: Vec<&Club> = state
                .clubs
                .iter()
                .filter(|c| req.field.is_empty() || c.field == req.field)
                .filter(|c| req.name.is_empty() || c.name.contains(&req.name))
                .collect();
            clubs.sort_by_key(|c| Reverse(c.updated));
            ok(
                200,
                "clubs sorted by update time",
                pb::GetClubsSortByUpdateTimeResponse {
                    informs: page(clubs.into_iter().map(inform), req.start, req.count),
                    ..Default::default()
                },
            )
        })
    }

    async fn get_recruitments_sort_by_create_time(
        &self,
        request: Request<pb::GetRecruitmentsSortByCreateTimeRequest>,
    ) -> Result<Response<pb::GetRecruitmentsSortByCreateTimeResponse>, Status> {
        self.handle(request, |state, _, req| {
            reader(&req.uuid, None)?;
            let today = today();
            let mut recruitments: Vec<&Recruitment> = state
                .recruitments
                .iter()
                .filter(|r| r.in_progress(&today))
                .filter(|r| {
                    state.club(&r.club_uuid).is_some_and(|c| {
                        (req.field.is_empty() || c.field == req.field)
                            && (req.name.is_empty() || c.name.contains(&req.name))
                    })
                })
                .collect();
            recruitments.sort_by_key(|r| Reverse(r.created));
            ok(
                200,
                "recruitments sorted by create time",
                pb::GetRecruitmentsSortByCreateTimeResponse {
                    recruitments: page(
                        recruitments.into_iter().map(recruitment_inform),
                        req.start,
                        req.count,
                    ),
                    ..Default::default()
                },
            )
        })
    }

    async fn get_club_inform_with_uuid(
        &self,
        request: Request<pb::GetClubInformWithUuidRequest>,
    ) -> Result<Response<pb::GetClubInformWithUuidResponse>, Status> {
        self.handle(request, |state, _, req| {
            reader(&req.uuid, None)?;
            let club = state.club(&req.club_uuid).ok_or(Fail::new(
                404,
                0,
                "club with that uuid does not exist",
            ))?;
            let info = inform(club);
            ok(
                200,
                "club inform",
                pb::GetClubInformWithUuidResponse {
                    club_uuid: info.club_uuid,
                    leader_uuid: info.leader_uuid,
                    member_uui_ds: info.member_uui_ds,
                    name: info.name,
                    club_concept: info.club_concept,
                    introduction: info.introduction,
                    floor: info.floor,
                    location: info.location,
                    field: info.field,
                    link: info.link,
                    logo_uri: info.logo_uri,
                    ..Default::default()
                },
            )
        })
    }

    async fn get_club_informs_with_uui_ds(
        &self,
        request: Request<pb::GetClubInformsWithUuiDsRequest>,
    ) -> Result<Response<pb::GetClubInformsWithUuiDsResponse>, Status> {
        self.handle(request, |state, _, req| {
            reader(&req.uuid, Some(Kind::Teacher))?;
            let informs = req
                .club_uui_ds
                .iter()
                .map(|uuid| state.club(uuid).map(inform))
                .collect::<Option<Vec<_>>>()
                .ok_or(Fail::new(
                    404,
                    0,
                    "club uuids include a club that does not exist",
                ))?;
            ok(
                200,
                "club informs",
                pb::GetClubInformsWithUuiDsResponse {
                    informs,
                    ..Default::default()
                },
            )
        })
    }

    async fn get_recruitment_inform_with_uuid(
        &self,
        request: Request<pb::GetRecruitmentInformWithUuidRequest>,
    ) -> Result<Response<pb::GetRecruitmentInformWithUuidResponse>, Status> {
        self.handle(request, |state, _, req| {
            reader(&req.uuid, None)?;
            let found = state
                .recruitments
                .iter()
                .find(|r| r.uuid == req.recruitment_uuid)
                .ok_or(Fail::new(
                    404,
                    0,
                    "recruitment with that uuid does not exist",
                ))?;
            let info = recruitment_inform(found);
            ok(
                200,
                "recruitment inform",
                pb::GetRecruitmentInformWithUuidResponse {
                    recruitment_uuid: info.recruitment_uuid,
                    club_uuid: info.club_uuid,
                    recruit_concept: info.recruit_concept,
                    recruit_members: info.recruit_members,
                    start_period: info.start_period,
                    end_period: info.end_period,
                    ..Default::default()
                },
            )
        })
    }

    async fn get_recruitment_uuid_with_club_uuid(
        &self,
        request: Request<pb::GetRecruitmentUuidWithClubUuidRequest>,
    ) -> Result<Response<pb::GetRecruitmentUuidWithClubUuidResponse>, Status> {
        self.handle(request, |state, _, req| {
            reader(&req.uuid, None)?;
            if state.club(&req.club_uuid).is_none() {
                return Err(Fail::new(404, 0, "club with that uuid does not exist"));
            }
            let current = state
                .current_recruitment(&req.club_uuid, &today())
                .ok_or(Fail::new(409, -1601, "there is no recruitment in progress"))?;
            ok(
                200,
                "recruitment uuid",
                pb::GetRecruitmentUuidWithClubUuidResponse {
                    recruitment_uuid: current.uuid.clone(),
                    ..Default::default()
                },
            )
        })
    }

    async fn get_recruitment_uui_ds_with_club_uui_ds(
        &self,
        request: Request<pb::GetRecruitmentUuiDsWithClubUuiDsRequest>,
    ) -> Result<Response<pb::GetRecruitmentUuiDsWithClubUuiDsResponse>, Status> {
        self.handle(request, |state, _, req| {
            reader(&req.uuid, None)?;
            if let Some(unknown) = req
                .club_uui_ds
                .iter()
                .find(|uuid| state.club(uuid).is_none())
            {
                return Err(Fail::new(404, 0, format!("club {unknown} does not exist")));
            }
            let today = today();
            let uuids = req
                .club_uui_ds
                .iter()
                .filter_map(|club| {
                    state
                        .current_recruitment(club, &today)
                        .map(|r| r.uuid.clone())
                })
                .collect();
            ok(
                200,
                "recruitment uuids",
                pb::GetRecruitmentUuiDsWithClubUuiDsResponse {
                    recruitment_uui_ds: uuids,
                    ..Default::default()
                },
            )
        })
    }

    async fn get_all_club_fields(
        &self,
        request: Request<pb::GetAllClubFieldsRequest>,
    ) -> Result<Response<pb::GetAllClubFieldsResponse>, Status> {
        self.handle(request, |state, _, req| {
            reader(&req.uuid, None)?;
            let fields: BTreeSet<&String> = state.clubs.iter().map(|c| &c.field).collect();
            ok(
                200,
                "club fields",
                pb::GetAllClubFieldsResponse {
                    fields: fields.into_iter().cloned().collect(),
                    ..Default::default()
                },
            )
        })
    }

    async fn get_total_count_of_clubs(
        &self,
        request: Request<pb::GetTotalCountOfClubsRequest>,
    ) -> Result<Response<pb::GetTotalCountOfClubsResponse>, Status> {
        self.handle(request, |state, _, req| {
            reader(&req.uuid, None)?;
            ok(
                200,
                "club count",
                pb::GetTotalCountOfClubsResponse {
                    count: i64::try_from(state.clubs.len()).unwrap_or(i64::MAX),
                    ..Default::default()
                },
            )
        })
    }

    async fn get_total_count_of_current_recruitments(
        &self,
        request: Request<pb::GetTotalCountOfCurrentRecruitmentsRequest>,
    ) -> Result<Response<pb::GetTotalCountOfCurrentRecruitmentsResponse>, Status> {
        self.handle(request, |state, _, req| {
            reader(&req.uuid, None)?;
            let today = today();
            let count = state
                .recruitments
                .iter()
                .filter(|r| r.in_progress(&today))
                .count();
            ok(
                200,
                "recruitment count",
                pb::GetTotalCountOfCurrentRecruitmentsResponse {
                    count: i64::try_from(count).unwrap_or(i64::MAX),
                    ..Default::default()
                },
            )
        })
    }

    async fn get_club_uuid_with_leader_uuid(
        &self,
        request: Request<pb::GetClubUuidWithLeaderUuidRequest>,
    ) -> Result<Response<pb::GetClubUuidWithLeaderUuidResponse>, Status> {
        self.handle(request, |state, _, req| {
            reader(&req.uuid, None)?;
            let club = state
                .clubs
                .iter()
                .find(|c| c.leader_uuid == req.leader_uuid)
                .ok_or(Fail::new(
                    409,
                    -1611,
                    "there is no club with that leader uuid",
                ))?;
            ok(
                200,
                "club uuid",
                pb::GetClubUuidWithLeaderUuidResponse {
                    club_uuid: club.uuid.clone(),
                    ..Default::default()
                },
            )
        })
    }

    async fn get_club_uui_ds_with_floor(
        &self,
        request: Request<pb::GetClubUuiDsWithFloorRequest>,
    ) -> Result<Response<pb::GetClubUuiDsWithFloorResponse>, Status> {
        self.handle(request, |state, _, req| {
            reader(&req.uuid, None)?;
            ok(
                200,
                "club uuids",
                pb::GetClubUuiDsWithFloorResponse {
                    club_uui_ds: state
                        .clubs
                        .iter()
                        .filter(|c| c.floor == req.floor)
                        .map(|c| c.uuid.clone())
                        .collect(),
                    ..Default::default()
                },
            )
        })
    }
}

#[tonic::async_trait]
impl club_leader_server::ClubLeader for ClubService {
    async fn add_club_member(
        &self,
        request: Request<pb_leader::AddClubMemberRequest>,
    ) -> Result<Response<pb_leader::AddClubMemberResponse>, Status> {
        self.handle(request, |state, directory, req| {
            let index = state.leader_club(&req.uuid, &req.club_uuid)?;
            let is_student = Kind::of_uuid(&req.student_uuid) == Some(Kind::Student);
            if !is_student || directory.get(&req.student_uuid).is_none() {
                return Err(Fail::new(
                    404,
                    -1722,
                    "student with that uuid does not exist",
                ));
            }
            if state.clubs[index].member_uuids.contains(&req.student_uuid) {
                return Err(Fail::new(409, -1701, "that student is already a member"));
            }
            let tick = state.next_tick();
            let club = &mut state.clubs[index];
            club.member_uuids.push(req.student_uuid);
            club.updated = tick;
            // The backend snapshot answers 201 here (ambiguity 2).
            ok(
                201,
                "club member added",
                pb_leader::AddClubMemberResponse::default(),
            )
        })
    }

    async fn delete_club_member(
        &self,
        request: Request<pb_leader::DeleteClubMemberRequest>,
    ) -> Result<Response<pb_leader::DeleteClubMemberResponse>, Status> {
        self.handle(request, |state, _, req| {
            let index = state.leader_club(&req.uuid, &req.club_uuid)?;
            let tick = state.next_tick();
            let club = &mut state.clubs[index];
            let position = club
                .member_uuids
                .iter()
                .position(|m| *m == req.student_uuid)
                .ok_or(Fail::new(
                    404,
                    -1723,
                    "that student is not a member of this club",
                ))?;
            if club.leader_uuid == req.student_uuid {
                // Keeps "the leader is a member"; no contract code covers this case.
                return Err(Fail::new(
                    409,
                    0,
                    "the leader cannot leave the club; change the leader first",
                ));
            }
            club.member_uuids.remove(position);
            club.updated = tick;
            ok(
                200,
                "club member deleted",
                pb_leader::DeleteClubMemberResponse::default(),
            )
        })
    }

    async fn change_club_leader(
        &self,
        request: Request<pb_leader::ChangeClubLeaderRequest>,
    ) -> Result<Response<pb_leader::ChangeClubLeaderResponse>, Status> {
        self.handle(request, |state, _, req| {
            let index = state.leader_club(&req.uuid, &req.club_uuid)?;
            if state.clubs[index].leader_uuid == req.new_leader_uuid {
                return Err(Fail::new(
                    409,
                    -1801,
                    "that student already leads this club",
                ));
            }
            if !state.clubs[index]
                .member_uuids
                .contains(&req.new_leader_uuid)
            {
                return Err(Fail::new(
                    404,
                    -1723,
                    "the new leader is not a member of this club",
                ));
            }
            if state
                .clubs
                .iter()
                .any(|c| c.leader_uuid == req.new_leader_uuid)
            {
                return Err(Fail::new(
                    409,
                    -1802,
                    "the new leader already leads another club",
                ));
            }
            let tick = state.next_tick();
            let club = &mut state.clubs[index];
            club.leader_uuid = req.new_leader_uuid;
            club.updated = tick;
            ok(
                200,
                "club leader changed",
                pb_leader::ChangeClubLeaderResponse::default(),
            )
        })
    }

    async fn modify_club_inform(
        &self,
        request: Request<pb_leader::ModifyClubInformRequest>,
    ) -> Result<Response<pb_leader::ModifyClubInformResponse>, Status> {
        self.handle(request, |state, _, req| {
            let index = state.leader_club(&req.uuid, &req.club_uuid)?;
            let too_long = req.club_concept.chars().count() > 40
                || req.introduction.chars().count() > 150
                || req.link.chars().count() > 100;
            if too_long {
                return Err(invalid("club concept, introduction or link is too long"));
            }
            let tick = state.next_tick();
            let club = &mut state.clubs[index];
            // Empty fields keep their value.
            for (slot, value) in [
                (&mut club.club_concept, req.club_concept),
                (&mut club.introduction, req.introduction),
                (&mut club.link, req.link),
            ] {
                if !value.is_empty() {
                    *slot = value;
                }
            }
            if !req.logo.is_empty() {
                club.logo_uri = format!("https://example.invalid/logos/{}-{tick}.png", club.uuid);
            }
            club.updated = tick;
            ok(
                200,
                "club inform modified",
                pb_leader::ModifyClubInformResponse::default(),
            )
        })
    }

    async fn delete_club_with_uuid(
        &self,
        request: Request<pb_leader::DeleteClubWithUuidRequest>,
    ) -> Result<Response<pb_leader::DeleteClubWithUuidResponse>, Status> {
        self.handle(request, |state, _, req| {
            let index = state.leader_club(&req.uuid, &req.club_uuid)?;
            if state
                .current_recruitment(&req.club_uuid, &today())
                .is_some()
            {
                return Err(Fail::new(
                    409,
                    -1901,
                    "a recruitment of this club is in progress",
                ));
            }
            state.clubs.remove(index);
            state.recruitments.retain(|r| r.club_uuid != req.club_uuid);
            ok(
                200,
                "club deleted",
                pb_leader::DeleteClubWithUuidResponse::default(),
            )
        })
    }

    async fn register_recruitment(
        &self,
        request: Request<pb_leader::RegisterRecruitmentRequest>,
    ) -> Result<Response<pb_leader::RegisterRecruitmentResponse>, Status> {
        self.handle(request, |state, directory, req| {
            state.leader_club(&req.uuid, &req.club_uuid)?;
            let today = today();
            if state.current_recruitment(&req.club_uuid, &today).is_some() {
                return Err(Fail::new(
                    409,
                    -2001,
                    "a recruitment of this club is already in progress",
                ));
            }
            if !req.end_period.is_empty() && !is_date(&req.end_period) {
                return Err(invalid("end period is not a YYYY-MM-DD date"));
            }
            check_members(&req.recruit_members)?;
            if !req.end_period.is_empty() && req.end_period < today {
                return Err(Fail::new(409, -2002, "end period is older than now"));
            }
            let uuid = directory.new_uuid("recruitment-");
            let created = state.next_tick();
            state.recruitments.push(Recruitment {
                uuid: uuid.clone(),
                club_uuid: req.club_uuid,
                concept: req.recruit_concept,
                members: req.recruit_members,
                start_period: today,
                end_period: req.end_period,
                created,
            });
            ok(
                201,
                "recruitment registered",
                pb_leader::RegisterRecruitmentResponse {
                    recruitment_uuid: uuid,
                    ..Default::default()
                },
            )
        })
    }

    async fn modify_recruitment(
        &self,
        request: Request<pb_leader::ModifyRecruitmentRequest>,
    ) -> Result<Response<pb_leader::ModifyRecruitmentResponse>, Status> {
        self.handle(request, |state, _, req| {
            if !matches!(caller_kind(&req.uuid), Some(Kind::Admin | Kind::Student)) {
                return Err(not_student_or_admin());
            }
            let index = state.current_recruitment_index(&req.recruitment_uuid, &today())?;
            state.leader_club(&req.uuid, &state.recruitments[index].club_uuid)?;
            check_members(&req.recruit_members)?;
            if req.recruit_concept.chars().count() > 40 {
                return Err(invalid("recruit concept is too long"));
            }
            let recruitment = &mut state.recruitments[index];
            if !req.recruit_concept.is_empty() {
                recruitment.concept = req.recruit_concept;
            }
            // An empty member list keeps the existing members.
            if !req.recruit_members.is_empty() {
                recruitment.members = req.recruit_members;
            }
            ok(
                200,
                "recruitment modified",
                pb_leader::ModifyRecruitmentResponse::default(),
            )
        })
    }

    async fn delete_recruitment_with_uuid(
        &self,
        request: Request<pb_leader::DeleteRecruitmentWithUuidRequest>,
    ) -> Result<Response<pb_leader::DeleteRecruitmentWithUuidResponse>, Status> {
        self.handle(request, |state, _, req| {
            if !matches!(caller_kind(&req.uuid), Some(Kind::Admin | Kind::Student)) {
                return Err(not_student_or_admin());
            }
            let index = state.current_recruitment_index(&req.recruitment_uuid, &today())?;
            state.leader_club(&req.uuid, &state.recruitments[index].club_uuid)?;
            state.recruitments.remove(index);
            ok(
                200,
                "recruitment deleted",
                pb_leader::DeleteRecruitmentWithUuidResponse::default(),
            )
        })
    }
}

#[tonic::async_trait]
impl club_event_server::ClubEvent for ClubService {
    async fn change_all_service_nodes(
        &self,
        request: Request<pb_event::Empty>,
    ) -> Result<Response<pb_event::Empty>, Status> {
        // `Empty` has no in-band fields to answer 407 with: the call is recorded only.
        self.shared.events.record(
            crate::upstream::Service::Club,
            &self.shared.metadata,
            &request,
        );
        Ok(Response::new(pb_event::Empty {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(today().len(), 10);
    }

    #[test]
    fn dates_and_members() {
        assert!(is_date("2099-12-31"));
        assert!(!is_date("2099-13-01"));
        assert!(!is_date("2099-1-01x"));
        let member = |grade: &str, number: &str| pb_leader::RecruitMember {
            grade: grade.into(),
            field: "서버".into(),
            number: number.into(),
        };
        assert!(check_members(&[member("1", "10")]).is_ok());
        assert!(check_members(&[member("4", "1")]).is_err());
        assert!(check_members(&[member("1", "0")]).is_err());
    }

    #[test]
    fn leader_rule_order() {
        let state = State::seeded();
        let code = |caller: &str, club: &str| state.leader_club(caller, club).err().map(|f| f.code);
        assert_eq!(code(seed::TEACHER_UUID, CLUB_UUID), Some(-1711));
        assert_eq!(code(seed::STUDENT_UUID, "club-000000000099"), Some(-1721));
        assert_eq!(code(seed::STUDENT2_UUID, CLUB_UUID), Some(-1712));
        assert_eq!(code(seed::STUDENT_UUID, CLUB_UUID), None);
        assert_eq!(code(seed::ADMIN_UUID, CLUB2_UUID), None);
    }
}
