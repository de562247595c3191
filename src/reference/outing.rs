//! Reference outing service: `OutingStudent`, `OutingTeacher`, `OutingParents` and
//! `OutingEvent` (no proto package), with the outing state machine and the outing
//! codes of the contract (spec §4.2) answered in-band.
//!
//! An outing goes `created` → (parent, by confirm code) `parent-approved` →
//! (teacher) `teacher-approved` → (student) `out` → (student) `finished` → (teacher)
//! `certified`; parents or teachers may instead reject it (`rejected`). Students,
//! names and classes come from the shared [`Directory`](super::Directory).

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use rand::Rng;
use tonic::service::Routes;
use tonic::{Request, Response, Status};

use super::{Shared, metadata, seed};
use crate::auth::Kind;
use crate::proto::outing as pb;
use pb::outing_event_server::{OutingEvent, OutingEventServer};
use pb::outing_parents_server::{OutingParents, OutingParentsServer};
use pb::outing_student_server::{OutingStudent, OutingStudentServer};
use pb::outing_teacher_server::{OutingTeacher, OutingTeacherServer};

/// Seeded: an outing of [`seed::STUDENT_UUID`] awaiting its parent's approval.
pub const AWAITING_PARENT_OUTING: &str = "outing-000000000001";
/// The confirm code of [`AWAITING_PARENT_OUTING`].
pub const AWAITING_PARENT_CODE: &str = "OC7Q2X9KMA";
/// Seeded: an outing of [`seed::STUDENT_UUID`] approved by parent and teacher (may start).
pub const APPROVED_OUTING: &str = "outing-000000000002";
/// Seeded: a finished outing of [`seed::STUDENT_UUID`] (may be certified).
pub const FINISHED_OUTING: &str = "outing-000000000003";
/// Seeded: an outing of [`seed::STUDENT2_UUID`] approved by its parent, awaiting a teacher.
pub const STUDENT2_OUTING: &str = "outing-000000000004";
/// The confirm code of [`STUDENT2_OUTING`] (already used by the parent).
pub const STUDENT2_CODE: &str = "OC4H8N3RZT";
/// Start of the seeded outings' day (2026-01-01 00:00 UTC).
pub const SEED_DAY: i64 = 1_767_225_600;

const HOUR: i64 = 3600;

/// Where an outing is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Created,
    ParentApproved,
    ParentRejected,
    TeacherApproved,
    TeacherRejected,
    Out,
    Finished,
    Certified,
}

impl State {
    /// The `status` string clients see (both rejections read `rejected`).
    fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::ParentApproved => "parent-approved",
            Self::ParentRejected | Self::TeacherRejected => "rejected",
            Self::TeacherApproved => "teacher-approved",
            Self::Out => "out",
            Self::Finished => "finished",
            Self::Certified => "certified",
        }
    }

    /// Still planned or under way (blocks an overlapping new outing).
    fn is_active(self) -> bool {
        matches!(
            self,
            Self::Created | Self::ParentApproved | Self::TeacherApproved | Self::Out
        )
    }

    /// The failure of a rejected outing, if it is one.
    fn rejection(self) -> Result<(), Fail> {
        match self {
            Self::ParentRejected => Err(Fail::conflict(-2102, "outing rejected by parents")),
            Self::TeacherRejected => Err(Fail::conflict(-2105, "outing rejected by teacher")),
            _ => Ok(()),
        }
    }
}

/// One outing.
#[derive(Debug, Clone)]
struct Record {
    id: String,
    student: String,
    start_time: i64,
    end_time: i64,
    place: String,
    reason: String,
    situation: String,
    state: State,
    /// The confirm code sent to the parent.
    code: String,
    /// When the student came back; 0 until then.
    arrival_time: i64,
}

impl Record {
    fn is_late(&self, now: i64) -> bool {
        match self.state {
            State::Out => now > self.end_time,
            State::Finished | State::Certified => self.arrival_time > self.end_time,
            _ => false,
        }
    }
}

/// All outings, by id (creation order), and the confirm codes.
#[derive(Debug, Default)]
struct Book {
    outings: BTreeMap<String, Record>,
    codes: HashMap<String, String>,
}

impl Book {
    fn insert(&mut self, record: Record) {
        self.codes.insert(record.code.clone(), record.id.clone());
        self.outings.insert(record.id.clone(), record);
    }

    fn get_mut(&mut self, id: &str) -> Result<&mut Record, Fail> {
        self.outings.get_mut(id).ok_or(Fail::NOT_FOUND)
    }

    fn by_code(&mut self, code: &str) -> Result<&mut Record, Fail> {
        let id = self.codes.get(code).ok_or(Fail::NOT_FOUND)?;
        self.outings.get_mut(id.as_str()).ok_or(Fail::NOT_FOUND)
    }
}

/// An in-band failure: status, code and message of the reply.
#[derive(Debug, Clone)]
struct Fail {
    status: i32,
    code: i32,
    msg: Cow<'static, str>,
}

impl Fail {
    const NOT_FOUND: Fail = Fail::new(404, -2301, "outing not found");
    const UNAUTHORIZED: Fail = Fail::new(403, -2601, "unauthorized to access this outing");

    const fn new(status: i32, code: i32, msg: &'static str) -> Fail {
        Fail {
            status,
            code,
            msg: Cow::Borrowed(msg),
        }
    }

    const fn conflict(code: i32, msg: &'static str) -> Fail {
        Fail::new(409, code, msg)
    }

    /// Invalid data or metadata (in-band 407, code 0).
    fn invalid(msg: impl Into<Cow<'static, str>>) -> Fail {
        Fail {
            status: 407,
            code: 0,
            msg: msg.into(),
        }
    }
}

/// Replies that start with the in-band `status`, `code` and `msg`.
trait InBandReply: Default {
    fn set(&mut self, status: i32, code: i32, msg: String);

    fn ok(status: i32, msg: &str) -> Self {
        let mut reply = Self::default();
        reply.set(status, 0, msg.to_owned());
        reply
    }

    fn failed(fail: Fail) -> Self {
        let mut reply = Self::default();
        reply.set(fail.status, fail.code, fail.msg.into_owned());
        reply
    }
}

macro_rules! in_band_reply {
    ($($reply:ty),+ $(,)?) => {$(
        impl InBandReply for $reply {
            fn set(&mut self, status: i32, code: i32, msg: String) {
                self.status = status;
                self.code = code;
                self.msg = msg;
            }
        }
    )+};
}

in_band_reply!(
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

type Answer<R> = Result<Response<R>, Status>;

/// Wraps an RPC's outcome as its reply.
fn answer<R: InBandReply>(outcome: Result<R, Fail>) -> Answer<R> {
    Ok(Response::new(outcome.unwrap_or_else(R::failed)))
}

/// The current Unix time in seconds.
fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// A directory number as the proto's `int32`.
fn int32(value: u32) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}

/// Applies `start` and `count` (0 or negative count: every item) to a list.
fn page<T>(items: impl Iterator<Item = T>, start: i32, count: i32) -> Vec<T> {
    let start = usize::try_from(start).unwrap_or(0);
    let count = usize::try_from(count)
        .ok()
        .filter(|&c| c > 0)
        .unwrap_or(usize::MAX);
    items.skip(start).take(count).collect()
}

/// The four gRPC services over one outing book.
#[derive(Debug, Clone)]
struct OutingService {
    shared: Shared,
    book: Arc<Mutex<Book>>,
}

impl OutingService {
    fn new(shared: &Shared) -> Self {
        let mut book = Book::default();
        for record in seed_outings() {
            book.insert(record);
        }
        Self {
            shared: shared.clone(),
            book: Arc::new(Mutex::new(book)),
        }
    }

    /// Runs `f` on the book (never across an `.await`).
    fn with_book<T>(&self, f: impl FnOnce(&mut Book) -> T) -> T {
        f(&mut self.book.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Checks the call's metadata (in-band 407 on failure) and unwraps the message.
    fn open<T>(&self, request: Request<T>) -> Result<T, Fail> {
        metadata::check(&self.shared.metadata, &request).map_err(Fail::invalid)?;
        Ok(request.into_inner())
    }

    /// Whether `caller` is a known account of `kind`.
    fn is_account(&self, caller: &str, kind: Kind) -> bool {
        Kind::of_uuid(caller) == Some(kind) && self.shared.directory.get(caller).is_some()
    }

    /// Who may read a student's outings: the student, their parent, teachers and admins.
    fn may_read(&self, caller: &str, student: &str) -> Result<(), Fail> {
        let allowed = match Kind::of_uuid(caller) {
            Some(Kind::Student) => caller == student,
            Some(Kind::Parent) => self
                .shared
                .directory
                .get(student)
                .is_some_and(|account| account.parent_uuid == caller),
            Some(kind @ (Kind::Teacher | Kind::Admin)) => self.is_account(caller, kind),
            None => false,
        };
        if allowed {
            Ok(())
        } else {
            Err(Fail::UNAUTHORIZED)
        }
    }

    fn require_teacher(&self, caller: &str) -> Result<(), Fail> {
        if self.is_account(caller, Kind::Teacher) {
            Ok(())
        } else {
            Err(Fail::UNAUTHORIZED)
        }
    }

    /// A copy of an outing the caller may read.
    fn readable(&self, caller: &str, id: &str) -> Result<Record, Fail> {
        let record = self.with_book(|book| book.get_mut(id).map(|r| r.clone()))?;
        self.may_read(caller, &record.student)?;
        Ok(record)
    }

    /// A student's move on their own outing (`start`, `end`).
    fn go_out(
        &self,
        request: Request<pb::GoOutRequest>,
        step: fn(&mut Record, i64) -> Result<(), Fail>,
    ) -> Answer<pb::GoOutResponse> {
        let outcome = self.open(request).and_then(|req| {
            self.with_book(|book| {
                let record = book.get_mut(&req.outing_id)?;
                if record.student != req.uuid {
                    return Err(Fail::UNAUTHORIZED);
                }
                step(record, now())
            })?;
            Ok(pb::GoOutResponse::ok(
                200,
                "succeed to take action to outing",
            ))
        });
        answer(outcome)
    }

    /// A teacher's decision on an outing (approve, reject, certify).
    fn confirm(
        &self,
        request: Request<pb::ConfirmOutingRequest>,
        step: fn(&mut Record) -> Result<(), Fail>,
    ) -> Answer<pb::ConfirmOutingResponse> {
        let outcome = self.open(request).and_then(|req| {
            self.require_teacher(&req.uuid)?;
            self.with_book(|book| step(book.get_mut(&req.outing_id)?))?;
            Ok(pb::ConfirmOutingResponse::ok(
                200,
                "succeed to confirm outing",
            ))
        });
        answer(outcome)
    }

    /// A parent's decision by confirm code (approve, reject).
    fn confirm_by_code(
        &self,
        request: Request<pb::ConfirmOutingByOCodeRequest>,
        next: State,
    ) -> Answer<pb::ConfirmOutingByOCodeResponse> {
        let outcome = self.open(request).and_then(|req| {
            self.with_book(|book| {
                let record = book.by_code(&req.confirm_code)?;
                if record.state != State::Created {
                    return Err(Fail::conflict(-2103, "outing already confirmed by parents"));
                }
                record.state = next;
                Ok(())
            })?;
            Ok(pb::ConfirmOutingByOCodeResponse::ok(
                200,
                "succeed to confirm outing",
            ))
        });
        answer(outcome)
    }

    fn create(&self, req: pb::CreateOutingRequest) -> Result<pb::CreateOutingResponse, Fail> {
        if !self.is_account(&req.uuid, Kind::Student) {
            return Err(Fail::UNAUTHORIZED);
        }
        if req.place.is_empty()
            || req.reason.is_empty()
            || !matches!(req.situation.as_str(), "normal" | "emergency")
        {
            return Err(Fail::invalid(
                "place, reason and situation (normal or emergency) are required",
            ));
        }
        if req.start_time <= 0 || req.end_time <= req.start_time {
            return Err(Fail::invalid("end_time must be after start_time"));
        }
        let id = self.shared.directory.new_uuid("outing-");
        self.with_book(|book| {
            let overlaps = book.outings.values().any(|o| {
                o.student == req.uuid
                    && o.state.is_active()
                    && o.start_time < req.end_time
                    && req.start_time < o.end_time
            });
            if overlaps {
                return Err(Fail::conflict(-2401, "outing exists at that time"));
            }
            let code = new_code(|code| book.codes.contains_key(code));
            book.insert(Record {
                id: id.clone(),
                student: req.uuid,
                start_time: req.start_time,
                end_time: req.end_time,
                place: req.place,
                reason: req.reason,
                situation: req.situation,
                state: State::Created,
                code,
                arrival_time: 0,
            });
            Ok(())
        })?;
        Ok(pb::CreateOutingResponse {
            outing_id: id,
            ..pb::CreateOutingResponse::ok(201, "succeed to create new outing")
        })
    }

    fn student_outings(
        &self,
        req: pb::GetStudentOutingsRequest,
    ) -> Result<pb::GetStudentOutingsResponse, Fail> {
        if !self.is_account(&req.student_id, Kind::Student) {
            return Err(Fail::new(404, -2301, "student not found"));
        }
        self.may_read(&req.uuid, &req.student_id)?;
        let mut mine: Vec<Record> = self.with_book(|book| {
            book.outings
                .values()
                .filter(|o| o.student == req.student_id)
                .cloned()
                .collect()
        });
        mine.sort_by(|a, b| {
            b.start_time
                .cmp(&a.start_time)
                .then_with(|| a.id.cmp(&b.id))
        });
        let outing = page(mine.into_iter(), req.start, req.count)
            .into_iter()
            .map(|o| pb::StudentOuting {
                status: o.state.as_str().to_owned(),
                outing_id: o.id,
                place: o.place,
                reason: o.reason,
                start_time: o.start_time,
                end_time: o.end_time,
                situation: o.situation,
                arrival_time: o.arrival_time,
            })
            .collect();
        Ok(pb::GetStudentOutingsResponse {
            outing,
            ..pb::GetStudentOutingsResponse::ok(200, "succeed to get outings")
        })
    }

    fn card(
        &self,
        req: pb::GetCardAboutOutingRequest,
    ) -> Result<pb::GetCardAboutOutingResponse, Fail> {
        let o = self.readable(&req.uuid, &req.outing_id)?;
        let student = self.shared.directory.get(&o.student).unwrap_or_default();
        Ok(pb::GetCardAboutOutingResponse {
            place: o.place,
            start_time: o.start_time,
            end_time: o.end_time,
            outing_status: o.state.as_str().to_owned(),
            reason: o.reason,
            name: student.name,
            grade: int32(student.grade),
            group: int32(student.group),
            number: int32(student.student_number),
            profile_image_uri: student.profile_uri,
            ..pb::GetCardAboutOutingResponse::ok(200, "succeed to get card")
        })
    }

    fn with_filter(&self, req: pb::GetOutingWithFilterRequest) -> Result<pb::OutingResponse, Fail> {
        if !(self.is_account(&req.uuid, Kind::Teacher) || self.is_account(&req.uuid, Kind::Admin)) {
            return Err(Fail::UNAUTHORIZED);
        }
        let mut all: Vec<Record> = self.with_book(|book| {
            book.outings
                .values()
                .filter(|o| req.status.is_empty() || o.state.as_str() == req.status)
                .filter(|o| req.start_time == 0 || o.start_time >= i64::from(req.start_time))
                .filter(|o| req.end_time == 0 || o.end_time <= i64::from(req.end_time))
                .cloned()
                .collect()
        });
        all.sort_by(|a, b| {
            b.start_time
                .cmp(&a.start_time)
                .then_with(|| a.id.cmp(&b.id))
        });
        let now = now();
        let directory = &self.shared.directory;
        let rows = all.into_iter().filter_map(|o| {
            let student = directory.get(&o.student)?;
            let (grade, group) = (int32(student.grade), int32(student.group));
            // A class's floor is its grade + 1 (the reference's assumption).
            let matches = (req.grade == 0 || req.grade == grade)
                && (req.group == 0 || req.group == group)
                && (req.floor == 0 || req.floor == grade + 1);
            matches.then(|| pb::Outing {
                is_late: o.is_late(now),
                status: o.state.as_str().to_owned(),
                outing_id: o.id,
                name: student.name,
                grade,
                group,
                number: int32(student.student_number),
                place: o.place,
                reason: o.reason,
                start_time: o.start_time,
                end_time: o.end_time,
                situation: o.situation,
                arrival_time: o.arrival_time,
            })
        });
        Ok(pb::OutingResponse {
            outing: page(rows, req.start, req.count),
            ..pb::OutingResponse::ok(200, "succeed to get outings")
        })
    }

    fn modify(&self, req: pb::ModifyOutingRequest) -> Result<pb::ConfirmOutingResponse, Fail> {
        self.require_teacher(&req.uuid)?;
        self.with_book(|book| {
            let record = book.get_mut(&req.outing_id)?;
            record.state.rejection()?;
            if matches!(record.state, State::Finished | State::Certified) {
                return Err(Fail::conflict(-2110, "outing already finished"));
            }
            if req.end_time <= record.start_time {
                return Err(Fail::invalid("end_time must be after start_time"));
            }
            record.end_time = req.end_time;
            Ok(())
        })?;
        Ok(pb::ConfirmOutingResponse::ok(
            200,
            "succeed to modify outing",
        ))
    }
}

/// A fresh confirm code (10 upper-case letters and digits) that `taken` does not know.
fn new_code(taken: impl Fn(&str) -> bool) -> String {
    let mut rng = rand::rng();
    loop {
        let code: String = (&mut rng)
            .sample_iter(rand::distr::Alphanumeric)
            .take(10)
            .map(|b| char::from(b).to_ascii_uppercase())
            .collect();
        if !taken(&code) {
            return code;
        }
    }
}

// === state transitions ===

fn start_go_out(record: &mut Record, _now: i64) -> Result<(), Fail> {
    record.state.rejection()?;
    match record.state {
        State::TeacherApproved => {
            record.state = State::Out;
            Ok(())
        }
        State::Out => Err(Fail::conflict(-2108, "already out")),
        State::Finished | State::Certified => Err(Fail::conflict(-2110, "outing already finished")),
        _ => Err(Fail::conflict(-2104, "outing not approved by teacher")),
    }
}

fn finish_go_out(record: &mut Record, now: i64) -> Result<(), Fail> {
    record.state.rejection()?;
    match record.state {
        State::Out => {
            record.state = State::Finished;
            record.arrival_time = now;
            Ok(())
        }
        State::TeacherApproved => Err(Fail::conflict(-2107, "not out yet")),
        State::Finished | State::Certified => Err(Fail::conflict(-2110, "outing already finished")),
        _ => Err(Fail::conflict(-2104, "outing not approved by teacher")),
    }
}

/// Before a teacher decides, the parents must have approved, and no teacher decided.
fn awaiting_teacher(record: &Record) -> Result<(), Fail> {
    match record.state {
        State::ParentApproved => Ok(()),
        State::Created => Err(Fail::conflict(-2101, "outing not approved by parents")),
        State::ParentRejected => Err(Fail::conflict(-2102, "outing rejected by parents")),
        State::TeacherRejected => Err(Fail::conflict(-2106, "outing already confirmed by teacher")),
        State::TeacherApproved | State::Out | State::Finished | State::Certified => {
            Err(Fail::conflict(-2111, "outing already approved by teacher"))
        }
    }
}

fn approve(record: &mut Record) -> Result<(), Fail> {
    awaiting_teacher(record)?;
    record.state = State::TeacherApproved;
    Ok(())
}

fn reject(record: &mut Record) -> Result<(), Fail> {
    awaiting_teacher(record)?;
    record.state = State::TeacherRejected;
    Ok(())
}

fn certify(record: &mut Record) -> Result<(), Fail> {
    record.state.rejection()?;
    match record.state {
        State::Finished => {
            record.state = State::Certified;
            Ok(())
        }
        State::Certified => Err(Fail::conflict(-2106, "outing already confirmed by teacher")),
        _ => Err(Fail::conflict(-2109, "outing not finished")),
    }
}

// === gRPC services ===

#[tonic::async_trait]
impl OutingStudent for OutingService {
    async fn create_outing(
        &self,
        request: Request<pb::CreateOutingRequest>,
    ) -> Answer<pb::CreateOutingResponse> {
        answer(self.open(request).and_then(|req| self.create(req)))
    }

    async fn get_student_outings(
        &self,
        request: Request<pb::GetStudentOutingsRequest>,
    ) -> Answer<pb::GetStudentOutingsResponse> {
        answer(self.open(request).and_then(|req| self.student_outings(req)))
    }

    async fn get_outing_inform(
        &self,
        request: Request<pb::GetOutingInformRequest>,
    ) -> Answer<pb::GetOutingInformResponse> {
        let outcome = self.open(request).and_then(|req| {
            let o = self.readable(&req.uuid, &req.outing_id)?;
            Ok(pb::GetOutingInformResponse {
                outing_status: o.state.as_str().to_owned(),
                outing_id: o.id,
                place: o.place,
                reason: o.reason,
                start_time: o.start_time,
                end_time: o.end_time,
                outing_situation: o.situation,
                student_uuid: o.student,
                ..pb::GetOutingInformResponse::ok(200, "succeed to get outing inform")
            })
        });
        answer(outcome)
    }

    async fn get_card_about_outing(
        &self,
        request: Request<pb::GetCardAboutOutingRequest>,
    ) -> Answer<pb::GetCardAboutOutingResponse> {
        answer(self.open(request).and_then(|req| self.card(req)))
    }

    async fn start_go_out(&self, request: Request<pb::GoOutRequest>) -> Answer<pb::GoOutResponse> {
        self.go_out(request, start_go_out)
    }

    async fn finish_go_out(&self, request: Request<pb::GoOutRequest>) -> Answer<pb::GoOutResponse> {
        self.go_out(request, finish_go_out)
    }
}

#[tonic::async_trait]
impl OutingTeacher for OutingService {
    async fn get_outing_with_filter(
        &self,
        request: Request<pb::GetOutingWithFilterRequest>,
    ) -> Answer<pb::OutingResponse> {
        answer(self.open(request).and_then(|req| self.with_filter(req)))
    }

    async fn approve_outing(
        &self,
        request: Request<pb::ConfirmOutingRequest>,
    ) -> Answer<pb::ConfirmOutingResponse> {
        self.confirm(request, approve)
    }

    async fn reject_outing(
        &self,
        request: Request<pb::ConfirmOutingRequest>,
    ) -> Answer<pb::ConfirmOutingResponse> {
        self.confirm(request, reject)
    }

    async fn certify_outing(
        &self,
        request: Request<pb::ConfirmOutingRequest>,
    ) -> Answer<pb::ConfirmOutingResponse> {
        self.confirm(request, certify)
    }

    async fn modify_outing(
        &self,
        request: Request<pb::ModifyOutingRequest>,
    ) -> Answer<pb::ConfirmOutingResponse> {
        answer(self.open(request).and_then(|req| self.modify(req)))
    }
}

#[tonic::async_trait]
impl OutingParents for OutingService {
    async fn approve_outing_by_o_code(
        &self,
        request: Request<pb::ConfirmOutingByOCodeRequest>,
    ) -> Answer<pb::ConfirmOutingByOCodeResponse> {
        self.confirm_by_code(request, State::ParentApproved)
    }

    async fn reject_outing_by_o_code(
        &self,
        request: Request<pb::ConfirmOutingByOCodeRequest>,
    ) -> Answer<pb::ConfirmOutingByOCodeResponse> {
        self.confirm_by_code(request, State::ParentRejected)
    }

    async fn get_outing_by_o_code(
        &self,
        request: Request<pb::GetOutingByOCodeRequest>,
    ) -> Answer<pb::GetOutingByOCodeResponse> {
        let outcome = self.open(request).and_then(|req| {
            let o = self.with_book(|book| book.by_code(&req.confirm_code).map(|r| r.clone()))?;
            let name = self
                .shared
                .directory
                .get(&o.student)
                .map(|a| a.name)
                .unwrap_or_default();
            Ok(pb::GetOutingByOCodeResponse {
                name,
                outing_id: o.id,
                start_time: o.start_time,
                end_time: o.end_time,
                place: o.place,
                reason: o.reason,
                situation: o.situation,
                ..pb::GetOutingByOCodeResponse::ok(200, "succeed to get outing")
            })
        });
        answer(outcome)
    }
}

#[tonic::async_trait]
impl OutingEvent for OutingService {
    async fn change_all_service_nodes(&self, request: Request<pb::Empty>) -> Answer<pb::Empty> {
        // Empty has no in-band status: the metadata is only recorded.
        self.shared.events.record(
            crate::upstream::Service::Outing,
            &self.shared.metadata,
            &request,
        );
        Ok(Response::new(pb::Empty {}))
    }
}

/// The seeded outings (see the constants above).
fn seed_outings() -> Vec<Record> {
    let outing =
        |id: &str, student: &str, start: i64, hours: i64, state: State, code: &str| Record {
            id: id.to_owned(),
            student: student.to_owned(),
            start_time: start,
            end_time: start + hours * HOUR,
            place: "학교 앞 문구점".to_owned(),
            reason: "준비물 구입".to_owned(),
            situation: "normal".to_owned(),
            state,
            code: code.to_owned(),
            arrival_time: 0,
        };
    let mut finished = outing(
        FINISHED_OUTING,
        seed::STUDENT_UUID,
        SEED_DAY - 7 * 24 * HOUR,
        2,
        State::Finished,
        "OC2B6D1FVW",
    );
    finished.arrival_time = finished.end_time - 600;
    vec![
        outing(
            AWAITING_PARENT_OUTING,
            seed::STUDENT_UUID,
            SEED_DAY + 9 * HOUR,
            3,
            State::Created,
            AWAITING_PARENT_CODE,
        ),
        Record {
            situation: "emergency".to_owned(),
            place: "병원".to_owned(),
            reason: "진료".to_owned(),
            ..outing(
                APPROVED_OUTING,
                seed::STUDENT_UUID,
                SEED_DAY + 24 * HOUR,
                2,
                State::TeacherApproved,
                "OC9J5L0PXE",
            )
        },
        finished,
        outing(
            STUDENT2_OUTING,
            seed::STUDENT2_UUID,
            SEED_DAY + 9 * HOUR,
            3,
            State::ParentApproved,
            STUDENT2_CODE,
        ),
    ]
}

/// The outing service's gRPC services.
pub fn routes(shared: &Shared) -> Routes {
    let service = OutingService::new(shared);
    Routes::new(OutingStudentServer::new(service.clone()))
        .add_service(OutingTeacherServer::new(service.clone()))
        .add_service(OutingParentsServer::new(service.clone()))
        .add_service(OutingEventServer::new(service))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seeded(id: &str) -> Record {
        seed_outings()
            .into_iter()
            .find(|o| o.id == id)
            .expect("seeded")
    }

    #[test]
    fn the_happy_path_walks_every_state() {
        let mut o = seeded(STUDENT2_OUTING);
        approve(&mut o).expect("approve");
        assert_eq!(approve(&mut o).expect_err("twice").code, -2111);
        assert_eq!(finish_go_out(&mut o, 1).expect_err("not out").code, -2107);
        start_go_out(&mut o, 1).expect("start");
        assert_eq!(start_go_out(&mut o, 1).expect_err("twice").code, -2108);
        assert_eq!(certify(&mut o).expect_err("not finished").code, -2109);
        finish_go_out(&mut o, 42).expect("end");
        assert_eq!(o.arrival_time, 42);
        certify(&mut o).expect("certify");
        assert_eq!(o.state.as_str(), "certified");
        assert_eq!(start_go_out(&mut o, 1).expect_err("over").code, -2110);
    }

    #[test]
    fn teachers_wait_for_parents() {
        let mut o = seeded(AWAITING_PARENT_OUTING);
        assert_eq!(approve(&mut o).expect_err("parents first").code, -2101);
        assert_eq!(
            start_go_out(&mut o, 1).expect_err("not approved").code,
            -2104
        );
        o.state = State::ParentRejected;
        assert_eq!(reject(&mut o).expect_err("rejected").code, -2102);
        o.state = State::TeacherRejected;
        assert_eq!(start_go_out(&mut o, 1).expect_err("rejected").code, -2105);
        assert_eq!(o.state.as_str(), "rejected");
    }

    #[test]
    fn lateness_and_paging() {
        let mut o = seeded(FINISHED_OUTING);
        assert!(!o.is_late(0));
        o.arrival_time = o.end_time + 1;
        assert!(o.is_late(0));
        assert_eq!(page(1..=5, 1, 2), vec![2, 3]);
        assert_eq!(page(1..=3, -1, 0), vec![1, 2, 3]);
        let code = new_code(|c| c.starts_with('A'));
        assert_eq!(code.len(), 10);
        assert!(!code.starts_with('A'));
    }
}
