//! Reference auth service: `AuthAdmin`, `AuthStudent`, `AuthTeacher`, `AuthParent` and
//! `AuthEvent` over the shared account [`Directory`](super::Directory), answering in-band
//! as the backend snapshot does (spec api-auth-club.md §3 "Backend:" lines, §6 auth codes).
//!
//! Modelled: caller-kind and ownership checks (403), unknown entities (404), the
//! documented 409 codes, 407 for a missing filter or invalid data, teacher approval
//! (-413), unsigned students with sign-up codes, parent–child links. The external PICK
//! system is a fixed table of PICK accounts held here; a PICK login succeeds when the
//! PICK credentials match and a local teacher has the PICK account's name and phone.
//! Not modelled: SMS delivery (counted only), image storage (the profile URI is
//! synthesized), PICK being unavailable (503).

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tonic::service::Routes;
use tonic::{Request, Response, Status};

use super::Shared;
use super::directory::{Account, hash_password, verify_password};
use super::metadata;
use crate::auth::Kind;
use crate::proto::auth::admin::auth_admin_server::{AuthAdmin, AuthAdminServer};
use crate::proto::auth::event::auth_event_server::{AuthEvent, AuthEventServer};
use crate::proto::auth::parent::auth_parent_server::{AuthParent, AuthParentServer};
use crate::proto::auth::student::auth_student_server::{AuthStudent, AuthStudentServer};
use crate::proto::auth::teacher::auth_teacher_server::{AuthTeacher, AuthTeacherServer};
use crate::proto::auth::{
    admin as pb_admin, event as pb_event, parent as pb_parent, student as pb_student,
    teacher as pb_teacher,
};

/// The demo PICK account of the seeded teacher.
pub const PICK_ID: &str = "demopick";
/// Its password.
pub const PICK_PW: &str = "demo-pick-pw";
/// A PICK account that matches no local teacher (login answers -414).
pub const PICK_STRANGER_ID: &str = "strangerpick";
/// Its password.
pub const PICK_STRANGER_PW: &str = "stranger-pick-pw";

/// The auth service's gRPC services.
pub fn routes(shared: &Shared) -> Routes {
    let service = AuthService::new(shared.clone());
    Routes::new(AuthAdminServer::new(service.clone()))
        .add_service(AuthStudentServer::new(service.clone()))
        .add_service(AuthTeacherServer::new(service.clone()))
        .add_service(AuthParentServer::new(service.clone()))
        .add_service(AuthEventServer::new(service))
}

// === in-band outcomes ===

/// A non-success in-band answer.
#[derive(Debug)]
struct Fail {
    status: u32,
    code: i32,
    message: String,
}

impl Fail {
    fn new(status: u32, code: i32, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, 0, message)
    }

    fn not_found(message: impl Into<String>) -> Self {
        Self::new(404, 0, message)
    }

    fn conflict(code: i32, message: impl Into<String>) -> Self {
        Self::new(409, code, message)
    }

    /// 407: data the gateway should have rejected.
    fn invalid(message: impl Into<String>) -> Self {
        Self::new(407, 0, message)
    }
}

type Outcome<T> = Result<T, Fail>;

/// A reply message that can carry a [`Fail`].
trait InBandReply: Default {
    fn failed(fail: Fail) -> Self;
}

macro_rules! in_band_reply {
    ($($reply:ty),+ $(,)?) => {$(
        impl InBandReply for $reply {
            #[allow(clippy::needless_update)]
            fn failed(fail: Fail) -> Self {
                Self {
                    status: fail.status,
                    code: fail.code,
                    message: fail.message,
                    ..Self::default()
                }
            }
        }
    )+};
}

in_band_reply!(
    pb_admin::CreateNewStudentResponse,
    pb_admin::CreateNewParentResponse,
    pb_admin::LoginAdminAuthResponse,
    pb_admin::AddUnsignedStudentsResponse,
    pb_admin::SendJoinSmsToUnsignedStudentsResponse,
    pb_student::LoginStudentAuthResponse,
    pb_student::ChangeStudentPwResponse,
    pb_student::GetStudentInformWithUuidResponse,
    pb_student::GetStudentInformsWithUuiDsResponse,
    pb_student::GetStudentUuiDsWithInformResponse,
    pb_student::GetParentWithStudentUuidResponse,
    pb_student::GetUnsignedStudentWithAuthCodeResponse,
    pb_student::CreateNewStudentWithAuthCodeResponse,
    pb_teacher::CreateNewTeacherResponse,
    pb_teacher::LoginTeacherAuthResponse,
    pb_teacher::LoginTeacherAuthWithPickResponse,
    pb_teacher::ChangeTeacherPwResponse,
    pb_teacher::GetTeacherInformWithUuidResponse,
    pb_teacher::GetTeacherUuiDsWithInformResponse,
    pb_teacher::ChangeTeacherInformResponse,
    pb_parent::LoginParentAuthResponse,
    pb_parent::ChangeParentPwResponse,
    pb_parent::GetParentInformWithUuidResponse,
    pb_parent::GetParentUuiDsWithInformResponse,
    pb_parent::GetChildrenInformsWithUuidResponse,
);

// === checks shared by the RPCs ===

/// The caller must be an admin.
fn admin_only(caller: &str) -> Outcome<()> {
    match Kind::of_uuid(caller) {
        Some(Kind::Admin) => Ok(()),
        _ => Err(Fail::forbidden("you are not admin")),
    }
}

/// The caller must be of a known account kind.
fn any_kind(caller: &str) -> Outcome<()> {
    match Kind::of_uuid(caller) {
        Some(_) => Ok(()),
        None => Err(Fail::forbidden(
            "you are not a member of any known account kind",
        )),
    }
}

/// The caller must be an admin or the account `target` itself.
fn self_or_admin(caller: &str, target: &str) -> Outcome<()> {
    if Kind::of_uuid(caller) == Some(Kind::Admin) || (!caller.is_empty() && caller == target) {
        Ok(())
    } else {
        Err(Fail::forbidden(
            "you are not admin or the owner of this account",
        ))
    }
}

fn chars_in(value: &str, min: usize, max: usize) -> bool {
    (min..=max).contains(&value.chars().count())
}

/// Exactly `010` and 8 digits.
fn valid_phone(value: &str) -> bool {
    value.len() == 11 && value.starts_with("010") && value.bytes().all(|b| b.is_ascii_digit())
}

/// A `0`/empty filter matches everything.
fn matches_num(filter: u32, value: u32) -> bool {
    filter == 0 || filter == value
}

fn matches_text(filter: &str, value: &str) -> bool {
    filter.is_empty() || filter == value
}

/// A student who has not signed up yet (created by an admin, holding a sign-up code).
fn is_unsigned(account: &Account) -> bool {
    account.login_id.is_empty() && account.auth_code != 0
}

fn student_inform(account: Account) -> pb_student::StudentInform {
    pb_student::StudentInform {
        student_uuid: account.uuid,
        grade: account.grade,
        group: account.group,
        student_number: account.student_number,
        name: account.name,
        phone_number: account.phone_number,
        image_uri: account.profile_uri,
    }
}

// === the service ===

/// An account of the external PICK system.
#[derive(Debug)]
struct PickAccount {
    id: &'static str,
    password_hash: String,
    name: &'static str,
    phone_number: &'static str,
}

#[derive(Debug)]
struct Inner {
    pick: Vec<PickAccount>,
    /// Serializes check-then-insert writes so duplicate checks hold.
    writes: Mutex<()>,
}

/// All five auth gRPC services over one state.
#[derive(Debug, Clone)]
pub struct AuthService {
    shared: Shared,
    inner: Arc<Inner>,
}

impl AuthService {
    /// The service over `shared`, with the demo PICK accounts.
    pub fn new(shared: Shared) -> Self {
        let pick = vec![
            PickAccount {
                id: PICK_ID,
                password_hash: hash_password(PICK_PW),
                name: "최선생",
                phone_number: "01022220001",
            },
            PickAccount {
                id: PICK_STRANGER_ID,
                password_hash: hash_password(PICK_STRANGER_PW),
                name: "외부인",
                phone_number: "01099990001",
            },
        ];
        Self {
            shared,
            inner: Arc::new(Inner {
                pick,
                writes: Mutex::new(()),
            }),
        }
    }

    /// Checks the call's metadata (407 otherwise), then runs `handle`.
    fn serve<T, R: InBandReply>(
        &self,
        request: Request<T>,
        handle: impl FnOnce(&Self, T) -> Outcome<R>,
    ) -> Result<Response<R>, Status> {
        let reply = match metadata::check(&self.shared.metadata, &request) {
            Err(message) => R::failed(Fail::invalid(message)),
            Ok(()) => handle(self, request.into_inner()).unwrap_or_else(R::failed),
        };
        Ok(Response::new(reply))
    }

    fn write_lock(&self) -> MutexGuard<'_, ()> {
        self.inner
            .writes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The account `uuid` of `kind`, or 404.
    fn account(&self, kind: Kind, uuid: &str) -> Outcome<Account> {
        self.shared
            .directory
            .get(uuid)
            .filter(|a| Kind::of_uuid(&a.uuid) == Some(kind))
            .ok_or_else(|| Fail::not_found(format!("{kind} with that uuid does not exist")))
    }

    /// Checks a login; `codes` are the unknown-id and wrong-password codes.
    fn login(&self, kind: Kind, id: &str, pw: &str, codes: (i32, i32)) -> Outcome<Account> {
        let account = self
            .shared
            .directory
            .by_login(kind, id)
            .ok_or_else(|| Fail::conflict(codes.0, format!("{kind} id does not exist")))?;
        if verify_password(pw, &account.password_hash) {
            Ok(account)
        } else {
            Err(Fail::conflict(
                codes.1,
                format!("incorrect {kind} password"),
            ))
        }
    }

    /// A password change of `target` by `caller`; `wrong_code` for a wrong current one.
    fn change_pw(
        &self,
        kind: Kind,
        caller: &str,
        target: &str,
        current: &str,
        revision: &str,
        wrong_code: i32,
    ) -> Outcome<()> {
        self_or_admin(caller, target)?;
        let account = self.account(kind, target)?;
        if !verify_password(current, &account.password_hash) {
            return Err(Fail::conflict(wrong_code, "incorrect current password"));
        }
        if !chars_in(revision, 4, 16) {
            return Err(Fail::invalid(
                "revision password must be 4 to 16 characters",
            ));
        }
        let hash = hash_password(revision);
        self.shared
            .directory
            .update(target, |a| a.password_hash = hash);
        Ok(())
    }

    /// A new sign-up code, unique among students.
    fn new_auth_code(&self) -> Outcome<u32> {
        for _ in 0..64 {
            let code = rand::random_range(100_000..=999_999);
            if self
                .shared
                .directory
                .find(Kind::Student, |a| a.auth_code == code)
                .is_empty()
            {
                return Ok(code);
            }
        }
        Err(Fail::new(500, 0, "no free auth code"))
    }

    // --- AuthAdmin ---

    fn create_student(
        &self,
        req: pb_admin::CreateNewStudentRequest,
    ) -> Outcome<pb_admin::CreateNewStudentResponse> {
        admin_only(&req.uuid)?;
        let valid = chars_in(&req.student_id, 4, 16)
            && chars_in(&req.student_pw, 4, 16)
            && (1..=3).contains(&req.grade)
            && (1..=4).contains(&req.group)
            && (1..=21).contains(&req.student_number)
            && chars_in(&req.name, 2, 4)
            && valid_phone(&req.phone_number)
            && !req.image.is_empty();
        if !valid {
            return Err(Fail::invalid("invalid student data"));
        }
        let dir = &self.shared.directory;
        let _guard = self.write_lock();
        if dir.by_login(Kind::Student, &req.student_id).is_some() {
            return Err(Fail::conflict(-101, "student id is already in use"));
        }
        if !req.parent_uuid.is_empty() && self.account(Kind::Parent, &req.parent_uuid).is_err() {
            return Err(Fail::conflict(-102, "parent with that uuid does not exist"));
        }
        let same_number = |a: &Account| {
            (a.grade, a.group, a.student_number) == (req.grade, req.group, req.student_number)
        };
        if !dir.find(Kind::Student, same_number).is_empty() {
            return Err(Fail::conflict(-103, "student number is already in use"));
        }
        if !dir
            .find(Kind::Student, |a| a.phone_number == req.phone_number)
            .is_empty()
        {
            return Err(Fail::conflict(
                -104,
                "student phone number is already in use",
            ));
        }
        let uuid = dir.new_uuid("student-");
        dir.upsert(Account {
            uuid: uuid.clone(),
            login_id: req.student_id,
            password_hash: hash_password(&req.student_pw),
            name: req.name,
            phone_number: req.phone_number,
            grade: req.grade,
            group: req.group,
            student_number: req.student_number,
            profile_uri: format!("https://example.invalid/profiles/{uuid}.png"),
            parent_uuid: req.parent_uuid,
            ..Account::default()
        });
        Ok(pb_admin::CreateNewStudentResponse {
            status: 201,
            message: "new student create success".into(),
            created_student_uuid: uuid,
            ..Default::default()
        })
    }

    fn create_parent(
        &self,
        req: pb_admin::CreateNewParentRequest,
    ) -> Outcome<pb_admin::CreateNewParentResponse> {
        admin_only(&req.uuid)?;
        let valid = chars_in(&req.parent_id, 4, 16)
            && chars_in(&req.parent_pw, 4, 16)
            && chars_in(&req.name, 2, 4)
            && (req.phone_number.is_empty() || valid_phone(&req.phone_number));
        if !valid {
            return Err(Fail::invalid("invalid parent data"));
        }
        let dir = &self.shared.directory;
        let _guard = self.write_lock();
        // Every child must name an existing student exactly.
        let mut children = Vec::with_capacity(req.children_inform.len());
        for child in &req.children_inform {
            let found = dir.find(Kind::Student, |a| {
                (a.grade, a.group, a.student_number)
                    == (child.grade, child.group, child.student_number)
                    && a.name == child.name
            });
            match found.into_iter().next() {
                Some(student) => children.push(student.uuid),
                None => return Err(Fail::invalid("a child matches no student")),
            }
        }
        if dir.by_login(Kind::Parent, &req.parent_id).is_some() {
            return Err(Fail::conflict(-301, "parent id is already in use"));
        }
        if !req.phone_number.is_empty()
            && !dir
                .find(Kind::Parent, |a| a.phone_number == req.phone_number)
                .is_empty()
        {
            return Err(Fail::conflict(
                -302,
                "parent phone number is already in use",
            ));
        }
        let uuid = dir.new_uuid("parent-");
        dir.upsert(Account {
            uuid: uuid.clone(),
            login_id: req.parent_id,
            password_hash: hash_password(&req.parent_pw),
            name: req.name,
            phone_number: req.phone_number,
            ..Account::default()
        });
        for child in children {
            dir.update(&child, |a| a.parent_uuid.clone_from(&uuid));
        }
        Ok(pb_admin::CreateNewParentResponse {
            status: 201,
            message: "new parent create success".into(),
            created_parent_uuid: uuid,
            ..Default::default()
        })
    }

    fn login_admin(
        &self,
        req: pb_admin::LoginAdminAuthRequest,
    ) -> Outcome<pb_admin::LoginAdminAuthResponse> {
        let account = self.login(Kind::Admin, &req.admin_id, &req.admin_pw, (-431, -432))?;
        Ok(pb_admin::LoginAdminAuthResponse {
            status: 200,
            message: "admin login success".into(),
            logged_in_admin_uuid: account.uuid,
            ..Default::default()
        })
    }

    fn add_unsigned(
        &self,
        req: pb_admin::AddUnsignedStudentsRequest,
    ) -> Outcome<pb_admin::AddUnsignedStudentsResponse> {
        admin_only(&req.uuid)?;
        let dir = &self.shared.directory;
        let _guard = self.write_lock();
        let (mut added, mut skipped) = (0, 0);
        for student in req.students {
            let taken = !dir
                .find(Kind::Student, |a| {
                    (a.grade, a.group, a.student_number)
                        == (student.grade, student.group, student.student_number)
                })
                .is_empty();
            if taken || student.name.is_empty() {
                skipped += 1;
                continue;
            }
            let auth_code = self.new_auth_code()?;
            dir.upsert(Account {
                uuid: dir.new_uuid("student-"),
                name: student.name,
                phone_number: student.phone_number,
                grade: student.grade,
                group: student.group,
                student_number: student.student_number,
                auth_code,
                ..Account::default()
            });
            added += 1;
        }
        Ok(pb_admin::AddUnsignedStudentsResponse {
            status: 201,
            message: "succeed to add unsigned students".into(),
            add_count: added,
            no_add_count: skipped,
            ..Default::default()
        })
    }

    fn send_join_sms(
        &self,
        req: pb_admin::SendJoinSmsToUnsignedStudentsRequest,
    ) -> Outcome<pb_admin::SendJoinSmsToUnsignedStudentsResponse> {
        admin_only(&req.uuid)?;
        let targets = self.shared.directory.find(Kind::Student, |a| {
            is_unsigned(a)
                && matches_num(req.target_grade, a.grade)
                && matches_num(req.target_group, a.group)
                && matches_num(req.target_number, a.student_number)
        });
        if targets.is_empty() {
            return Err(Fail::not_found("there is no unsigned student to send to"));
        }
        // Delivery is not modelled: a student with a phone number counts as sent.
        let sent = targets
            .iter()
            .filter(|a| !a.phone_number.is_empty())
            .count();
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        Ok(pb_admin::SendJoinSmsToUnsignedStudentsResponse {
            status: 200,
            message: "succeed to send mass message".into(),
            send_count: count(sent),
            no_send_count: count(targets.len() - sent),
            ..Default::default()
        })
    }

    // --- AuthStudent ---

    fn login_student(
        &self,
        req: pb_student::LoginStudentAuthRequest,
    ) -> Outcome<pb_student::LoginStudentAuthResponse> {
        let account = self.login(
            Kind::Student,
            &req.student_id,
            &req.student_pw,
            (-401, -402),
        )?;
        Ok(pb_student::LoginStudentAuthResponse {
            status: 200,
            message: "student login success".into(),
            logged_in_student_uuid: account.uuid,
            ..Default::default()
        })
    }

    fn change_student_pw(
        &self,
        req: pb_student::ChangeStudentPwRequest,
    ) -> Outcome<pb_student::ChangeStudentPwResponse> {
        self.change_pw(
            Kind::Student,
            &req.uuid,
            &req.student_uuid,
            &req.current_pw,
            &req.revision_pw,
            -701,
        )?;
        Ok(pb_student::ChangeStudentPwResponse {
            status: 200,
            code: 0,
            message: "student pw change success".into(),
        })
    }

    fn get_student(
        &self,
        req: pb_student::GetStudentInformWithUuidRequest,
    ) -> Outcome<pb_student::GetStudentInformWithUuidResponse> {
        any_kind(&req.uuid)?;
        let account = self.account(Kind::Student, &req.student_uuid)?;
        let parent_status = if account.parent_uuid.is_empty() {
            "UN_CONNECTED"
        } else {
            "CONNECTED"
        };
        Ok(pb_student::GetStudentInformWithUuidResponse {
            status: 200,
            message: "succeed to get student inform".into(),
            grade: account.grade,
            group: account.group,
            student_number: account.student_number,
            name: account.name,
            phone_number: account.phone_number,
            image_uri: account.profile_uri,
            parent_status: parent_status.into(),
            ..Default::default()
        })
    }

    fn students_by_uuids(
        &self,
        req: pb_student::GetStudentInformsWithUuiDsRequest,
    ) -> Outcome<pb_student::GetStudentInformsWithUuiDsResponse> {
        any_kind(&req.uuid)?;
        let informs = req
            .student_uui_ds
            .iter()
            .map(|uuid| {
                self.account(Kind::Student, uuid)
                    .map(student_inform)
                    .map_err(|_| {
                        Fail::conflict(-601, format!("student uuid {uuid} does not exist"))
                    })
            })
            .collect::<Outcome<Vec<_>>>()?;
        Ok(pb_student::GetStudentInformsWithUuiDsResponse {
            status: 200,
            message: "succeed to get student informs".into(),
            student_informs: informs,
            ..Default::default()
        })
    }

    fn student_uuids(
        &self,
        req: pb_student::GetStudentUuiDsWithInformRequest,
    ) -> Outcome<pb_student::GetStudentUuiDsWithInformResponse> {
        any_kind(&req.uuid)?;
        let no_filter = req.grade == 0
            && req.group == 0
            && req.student_number == 0
            && req.name.is_empty()
            && req.phone_number.is_empty()
            && req.image_uri.is_empty();
        if no_filter {
            return Err(Fail::invalid("bad request"));
        }
        let found = self.shared.directory.find(Kind::Student, |a| {
            matches_num(req.grade, a.grade)
                && matches_num(req.group, a.group)
                && matches_num(req.student_number, a.student_number)
                && matches_text(&req.name, &a.name)
                && matches_text(&req.phone_number, &a.phone_number)
                && matches_text(&req.image_uri, &a.profile_uri)
        });
        if found.is_empty() {
            return Err(Fail::conflict(
                -501,
                "student with that inform does not exist",
            ));
        }
        Ok(pb_student::GetStudentUuiDsWithInformResponse {
            status: 200,
            message: "succeed to get student uuids".into(),
            student_uui_ds: found.into_iter().map(|a| a.uuid).collect(),
            ..Default::default()
        })
    }

    fn student_parent(
        &self,
        req: pb_student::GetParentWithStudentUuidRequest,
    ) -> Outcome<pb_student::GetParentWithStudentUuidResponse> {
        self_or_admin(&req.uuid, &req.student_uuid)?;
        let student = self.account(Kind::Student, &req.student_uuid)?;
        let parent = self
            .account(Kind::Parent, &student.parent_uuid)
            .map_err(|_| Fail::conflict(0, "this student has no parent"))?;
        Ok(pb_student::GetParentWithStudentUuidResponse {
            status: 200,
            message: "succeed to get parent with student uuid".into(),
            parent_uuid: parent.uuid,
            name: parent.name,
            phone_number: parent.phone_number,
            ..Default::default()
        })
    }

    /// The unsigned student holding `code`, or 404.
    fn unsigned_by_code(&self, code: u32) -> Outcome<Account> {
        self.shared
            .directory
            .find(Kind::Student, |a| is_unsigned(a) && a.auth_code == code)
            .into_iter()
            .next()
            .ok_or_else(|| Fail::not_found("unsigned student with that auth code does not exist"))
    }

    fn unsigned_student(
        &self,
        req: pb_student::GetUnsignedStudentWithAuthCodeRequest,
    ) -> Outcome<pb_student::GetUnsignedStudentWithAuthCodeResponse> {
        let student = self.unsigned_by_code(req.auth_code)?;
        Ok(pb_student::GetUnsignedStudentWithAuthCodeResponse {
            status: 200,
            message: "succeed to get unsigned student with auth code".into(),
            auth_code: student.auth_code,
            name: student.name,
            grade: student.grade,
            group: student.group,
            student_number: student.student_number,
            phone_number: student.phone_number,
            ..Default::default()
        })
    }

    fn sign_up_student(
        &self,
        req: pb_student::CreateNewStudentWithAuthCodeRequest,
    ) -> Outcome<pb_student::CreateNewStudentWithAuthCodeResponse> {
        if req.auth_code == 0
            || !chars_in(&req.student_id, 4, 16)
            || !chars_in(&req.student_pw, 4, 16)
        {
            return Err(Fail::invalid("invalid sign-up data"));
        }
        let dir = &self.shared.directory;
        let _guard = self.write_lock();
        let student = self.unsigned_by_code(req.auth_code)?;
        if dir.by_login(Kind::Student, &req.student_id).is_some() {
            return Err(Fail::conflict(0, "student id is already in use"));
        }
        let hash = hash_password(&req.student_pw);
        dir.update(&student.uuid, |a| {
            a.login_id = req.student_id;
            a.password_hash = hash;
            a.auth_code = 0;
        });
        Ok(pb_student::CreateNewStudentWithAuthCodeResponse {
            status: 201,
            message: "succeed to create new student with auth code".into(),
            student_uuid: student.uuid,
            ..Default::default()
        })
    }

    // --- AuthTeacher ---

    fn create_teacher(
        &self,
        req: pb_teacher::CreateNewTeacherRequest,
    ) -> Outcome<pb_teacher::CreateNewTeacherResponse> {
        let valid = chars_in(&req.teacher_id, 4, 16)
            && chars_in(&req.teacher_pw, 4, 16)
            && req.grade <= 3
            && req.group <= 4
            && chars_in(&req.name, 2, 4)
            && valid_phone(&req.phone_number);
        if !valid {
            return Err(Fail::invalid("invalid teacher data"));
        }
        let dir = &self.shared.directory;
        let _guard = self.write_lock();
        if dir.by_login(Kind::Teacher, &req.teacher_id).is_some() {
            return Err(Fail::conflict(-201, "teacher id is already in use"));
        }
        if !dir
            .find(Kind::Teacher, |a| a.phone_number == req.phone_number)
            .is_empty()
        {
            return Err(Fail::conflict(
                -202,
                "teacher phone number is already in use",
            ));
        }
        let has_class = req.grade != 0 && req.group != 0;
        if has_class
            && !dir
                .find(Kind::Teacher, |a| {
                    (a.grade, a.group) == (req.grade, req.group)
                })
                .is_empty()
        {
            return Err(Fail::conflict(-203, "that class already has a teacher"));
        }
        let uuid = dir.new_uuid("teacher-");
        dir.upsert(Account {
            uuid: uuid.clone(),
            login_id: req.teacher_id,
            password_hash: hash_password(&req.teacher_pw),
            name: req.name,
            phone_number: req.phone_number,
            grade: req.grade,
            group: req.group,
            approved: false,
            ..Account::default()
        });
        Ok(pb_teacher::CreateNewTeacherResponse {
            status: 201,
            message: "new teacher create success".into(),
            created_teacher_uuid: uuid,
            ..Default::default()
        })
    }

    fn login_teacher(
        &self,
        req: pb_teacher::LoginTeacherAuthRequest,
    ) -> Outcome<pb_teacher::LoginTeacherAuthResponse> {
        let account = self.login(
            Kind::Teacher,
            &req.teacher_id,
            &req.teacher_pw,
            (-411, -412),
        )?;
        if !account.approved {
            return Err(Fail::conflict(
                -413,
                "this teacher account is not approved yet",
            ));
        }
        Ok(pb_teacher::LoginTeacherAuthResponse {
            status: 200,
            message: "teacher login success".into(),
            logged_in_teacher_uuid: account.uuid,
            ..Default::default()
        })
    }

    fn login_teacher_pick(
        &self,
        req: pb_teacher::LoginTeacherAuthWithPickRequest,
    ) -> Outcome<pb_teacher::LoginTeacherAuthWithPickResponse> {
        let pick = self
            .inner
            .pick
            .iter()
            .find(|p| p.id == req.teacher_id && verify_password(&req.teacher_pw, &p.password_hash))
            .ok_or_else(|| Fail::conflict(-412, "incorrect PICK id or password"))?;
        let teacher = self
            .shared
            .directory
            .find(Kind::Teacher, |a| {
                a.name == pick.name && a.phone_number == pick.phone_number
            })
            .into_iter()
            .next()
            .ok_or_else(|| Fail::conflict(-414, "the PICK account matches no teacher account"))?;
        if !teacher.approved {
            return Err(Fail::conflict(
                -413,
                "this teacher account is not approved yet",
            ));
        }
        Ok(pb_teacher::LoginTeacherAuthWithPickResponse {
            status: 200,
            message: "teacher login with PICK success".into(),
            logged_in_teacher_uuid: teacher.uuid,
            ..Default::default()
        })
    }

    fn change_teacher_pw(
        &self,
        req: pb_teacher::ChangeTeacherPwRequest,
    ) -> Outcome<pb_teacher::ChangeTeacherPwResponse> {
        self.change_pw(
            Kind::Teacher,
            &req.uuid,
            &req.teacher_uuid,
            &req.current_pw,
            &req.revision_pw,
            -801,
        )?;
        Ok(pb_teacher::ChangeTeacherPwResponse {
            status: 200,
            code: 0,
            message: "teacher pw change success".into(),
        })
    }

    fn get_teacher(
        &self,
        req: pb_teacher::GetTeacherInformWithUuidRequest,
    ) -> Outcome<pb_teacher::GetTeacherInformWithUuidResponse> {
        any_kind(&req.uuid)?;
        let account = self.account(Kind::Teacher, &req.teacher_uuid)?;
        Ok(pb_teacher::GetTeacherInformWithUuidResponse {
            status: 200,
            message: "succeed to get teacher inform".into(),
            grade: account.grade,
            group: account.group,
            name: account.name,
            phone_number: account.phone_number,
            ..Default::default()
        })
    }

    fn teacher_uuids(
        &self,
        req: pb_teacher::GetTeacherUuiDsWithInformRequest,
    ) -> Outcome<pb_teacher::GetTeacherUuiDsWithInformResponse> {
        any_kind(&req.uuid)?;
        if req.grade == 0 && req.group == 0 && req.name.is_empty() && req.phone_number.is_empty() {
            return Err(Fail::invalid("bad request"));
        }
        let found = self.shared.directory.find(Kind::Teacher, |a| {
            matches_num(req.grade, a.grade)
                && matches_num(req.group, a.group)
                && matches_text(&req.name, &a.name)
                && matches_text(&req.phone_number, &a.phone_number)
        });
        if found.is_empty() {
            return Err(Fail::conflict(
                -511,
                "teacher with that inform does not exist",
            ));
        }
        Ok(pb_teacher::GetTeacherUuiDsWithInformResponse {
            status: 200,
            message: "succeed to get teacher uuids".into(),
            teacher_uui_ds: found.into_iter().map(|a| a.uuid).collect(),
            ..Default::default()
        })
    }

    fn change_teacher(
        &self,
        req: pb_teacher::ChangeTeacherInformRequest,
    ) -> Outcome<pb_teacher::ChangeTeacherInformResponse> {
        self_or_admin(&req.uuid, &req.teacher_uuid)?;
        self.account(Kind::Teacher, &req.teacher_uuid)?;
        // An empty phone number changes nothing (`{}` is a valid body).
        if !req.phone_number.is_empty() {
            if !valid_phone(&req.phone_number) {
                return Err(Fail::invalid("invalid phone number"));
            }
            let phone = req.phone_number;
            self.shared
                .directory
                .update(&req.teacher_uuid, |a| a.phone_number = phone);
        }
        Ok(pb_teacher::ChangeTeacherInformResponse {
            status: 200,
            code: 0,
            message: "teacher inform change success".into(),
        })
    }

    // --- AuthParent ---

    fn login_parent(
        &self,
        req: pb_parent::LoginParentAuthRequest,
    ) -> Outcome<pb_parent::LoginParentAuthResponse> {
        let account = self.login(Kind::Parent, &req.parent_id, &req.parent_pw, (-421, -422))?;
        Ok(pb_parent::LoginParentAuthResponse {
            status: 200,
            message: "parent login success".into(),
            logged_in_parent_uuid: account.uuid,
            ..Default::default()
        })
    }

    fn change_parent_pw(
        &self,
        req: pb_parent::ChangeParentPwRequest,
    ) -> Outcome<pb_parent::ChangeParentPwResponse> {
        self.change_pw(
            Kind::Parent,
            &req.uuid,
            &req.parent_uuid,
            &req.current_pw,
            &req.revision_pw,
            -901,
        )?;
        Ok(pb_parent::ChangeParentPwResponse {
            status: 200,
            code: 0,
            message: "parent pw change success".into(),
        })
    }

    fn get_parent(
        &self,
        req: pb_parent::GetParentInformWithUuidRequest,
    ) -> Outcome<pb_parent::GetParentInformWithUuidResponse> {
        any_kind(&req.uuid)?;
        let account = self.account(Kind::Parent, &req.parent_uuid)?;
        Ok(pb_parent::GetParentInformWithUuidResponse {
            status: 200,
            message: "succeed to get parent inform".into(),
            name: account.name,
            phone_number: account.phone_number,
            ..Default::default()
        })
    }

    fn parent_uuids(
        &self,
        req: pb_parent::GetParentUuiDsWithInformRequest,
    ) -> Outcome<pb_parent::GetParentUuiDsWithInformResponse> {
        any_kind(&req.uuid)?;
        if req.name.is_empty() && req.phone_number.is_empty() {
            return Err(Fail::invalid("bad request"));
        }
        let found = self.shared.directory.find(Kind::Parent, |a| {
            matches_text(&req.name, &a.name) && matches_text(&req.phone_number, &a.phone_number)
        });
        if found.is_empty() {
            return Err(Fail::conflict(
                -521,
                "parent with that inform does not exist",
            ));
        }
        Ok(pb_parent::GetParentUuiDsWithInformResponse {
            status: 200,
            message: "succeed to get parent uuids".into(),
            parent_uui_ds: found.into_iter().map(|a| a.uuid).collect(),
            ..Default::default()
        })
    }

    fn parent_children(
        &self,
        req: pb_parent::GetChildrenInformsWithUuidRequest,
    ) -> Outcome<pb_parent::GetChildrenInformsWithUuidResponse> {
        self_or_admin(&req.uuid, &req.parent_uuid)?;
        self.account(Kind::Parent, &req.parent_uuid)?;
        let children = self
            .shared
            .directory
            .find(Kind::Student, |a| a.parent_uuid == req.parent_uuid);
        if children.is_empty() {
            return Err(Fail::not_found("this parent has no children"));
        }
        Ok(pb_parent::GetChildrenInformsWithUuidResponse {
            status: 200,
            message: "succeed to get children informs".into(),
            children_inform: children.into_iter().map(student_inform).collect(),
            ..Default::default()
        })
    }
}

// === gRPC trait impls: each RPC is its handler behind the metadata check ===

/// Implements a server trait by routing each RPC to its handler through
/// [`AuthService::serve`].
macro_rules! rpcs {
    ($trait:path { $($rpc:ident($req:ty) -> $rep:ty => $handler:ident;)+ }) => {
        #[tonic::async_trait]
        impl $trait for AuthService {
            $(
                async fn $rpc(&self, request: Request<$req>) -> Result<Response<$rep>, Status> {
                    self.serve(request, Self::$handler)
                }
            )+
        }
    };
}

rpcs!(AuthAdmin {
    create_new_student(pb_admin::CreateNewStudentRequest) -> pb_admin::CreateNewStudentResponse => create_student;
    create_new_parent(pb_admin::CreateNewParentRequest) -> pb_admin::CreateNewParentResponse => create_parent;
    login_admin_auth(pb_admin::LoginAdminAuthRequest) -> pb_admin::LoginAdminAuthResponse => login_admin;
    add_unsigned_students(pb_admin::AddUnsignedStudentsRequest) -> pb_admin::AddUnsignedStudentsResponse => add_unsigned;
    send_join_sms_to_unsigned_students(pb_admin::SendJoinSmsToUnsignedStudentsRequest)
        -> pb_admin::SendJoinSmsToUnsignedStudentsResponse => send_join_sms;
});

rpcs!(AuthStudent {
    login_student_auth(pb_student::LoginStudentAuthRequest) -> pb_student::LoginStudentAuthResponse => login_student;
    change_student_pw(pb_student::ChangeStudentPwRequest) -> pb_student::ChangeStudentPwResponse => change_student_pw;
    get_student_inform_with_uuid(pb_student::GetStudentInformWithUuidRequest)
        -> pb_student::GetStudentInformWithUuidResponse => get_student;
    get_student_informs_with_uui_ds(pb_student::GetStudentInformsWithUuiDsRequest)
        -> pb_student::GetStudentInformsWithUuiDsResponse => students_by_uuids;
    get_student_uui_ds_with_inform(pb_student::GetStudentUuiDsWithInformRequest)
        -> pb_student::GetStudentUuiDsWithInformResponse => student_uuids;
    get_parent_with_student_uuid(pb_student::GetParentWithStudentUuidRequest)
        -> pb_student::GetParentWithStudentUuidResponse => student_parent;
    get_unsigned_student_with_auth_code(pb_student::GetUnsignedStudentWithAuthCodeRequest)
        -> pb_student::GetUnsignedStudentWithAuthCodeResponse => unsigned_student;
    create_new_student_with_auth_code(pb_student::CreateNewStudentWithAuthCodeRequest)
        -> pb_student::CreateNewStudentWithAuthCodeResponse => sign_up_student;
});

rpcs!(AuthTeacher {
    create_new_teacher(pb_teacher::CreateNewTeacherRequest) -> pb_teacher::CreateNewTeacherResponse => create_teacher;
    login_teacher_auth(pb_teacher::LoginTeacherAuthRequest) -> pb_teacher::LoginTeacherAuthResponse => login_teacher;
    login_teacher_auth_with_pick(pb_teacher::LoginTeacherAuthWithPickRequest)
        -> pb_teacher::LoginTeacherAuthWithPickResponse => login_teacher_pick;
    change_teacher_pw(pb_teacher::ChangeTeacherPwRequest) -> pb_teacher::ChangeTeacherPwResponse => change_teacher_pw;
    get_teacher_inform_with_uuid(pb_teacher::GetTeacherInformWithUuidRequest)
        -> pb_teacher::GetTeacherInformWithUuidResponse => get_teacher;
    get_teacher_uui_ds_with_inform(pb_teacher::GetTeacherUuiDsWithInformRequest)
        -> pb_teacher::GetTeacherUuiDsWithInformResponse => teacher_uuids;
    change_teacher_inform(pb_teacher::ChangeTeacherInformRequest)
        -> pb_teacher::ChangeTeacherInformResponse => change_teacher;
});

rpcs!(AuthParent {
    login_parent_auth(pb_parent::LoginParentAuthRequest) -> pb_parent::LoginParentAuthResponse => login_parent;
    change_parent_pw(pb_parent::ChangeParentPwRequest) -> pb_parent::ChangeParentPwResponse => change_parent_pw;
    get_parent_inform_with_uuid(pb_parent::GetParentInformWithUuidRequest)
        -> pb_parent::GetParentInformWithUuidResponse => get_parent;
    get_parent_uui_ds_with_inform(pb_parent::GetParentUuiDsWithInformRequest)
        -> pb_parent::GetParentUuiDsWithInformResponse => parent_uuids;
    get_children_informs_with_uuid(pb_parent::GetChildrenInformsWithUuidRequest)
        -> pb_parent::GetChildrenInformsWithUuidResponse => parent_children;
});

#[tonic::async_trait]
impl AuthEvent for AuthService {
    async fn change_all_service_nodes(
        &self,
        request: Request<pb_event::Empty>,
    ) -> Result<Response<pb_event::Empty>, Status> {
        // Recorded and counted; the reply carries no status to fail with.
        self.shared.events.record(
            crate::upstream::Service::Auth,
            &self.shared.metadata,
            &request,
        );
        Ok(Response::new(pb_event::Empty {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::seed;

    fn service() -> AuthService {
        AuthService::new(Shared::seeded())
    }

    #[test]
    fn logins_answer_the_documented_codes() {
        let svc = service();
        let ok = svc.login(
            Kind::Student,
            "demostudent",
            "demo-student-pw",
            (-401, -402),
        );
        assert_eq!(ok.map(|a| a.uuid).ok().as_deref(), Some(seed::STUDENT_UUID));
        let unknown = svc
            .login(Kind::Student, "nobody", "x", (-401, -402))
            .expect_err("unknown");
        assert_eq!((unknown.status, unknown.code), (409, -401));
        let wrong = svc
            .login(Kind::Student, "demostudent", "x", (-401, -402))
            .expect_err("wrong");
        assert_eq!((wrong.status, wrong.code), (409, -402));
    }

    #[test]
    fn ownership_and_kind_checks() {
        assert!(self_or_admin(seed::ADMIN_UUID, seed::STUDENT_UUID).is_ok());
        assert!(self_or_admin(seed::STUDENT_UUID, seed::STUDENT_UUID).is_ok());
        assert!(self_or_admin(seed::STUDENT2_UUID, seed::STUDENT_UUID).is_err());
        assert!(self_or_admin("", "").is_err());
        assert!(admin_only(seed::TEACHER_UUID).is_err());
        assert!(any_kind("club-000000000001").is_err());
    }

    #[test]
    fn sign_up_consumes_the_auth_code() {
        let svc = service();
        let request = pb_student::CreateNewStudentWithAuthCodeRequest {
            auth_code: seed::UNSIGNED_AUTH_CODE,
            student_id: "newstudent".into(),
            student_pw: "new-pw-1".into(),
        };
        let reply = svc.sign_up_student(request.clone()).expect("signed up");
        assert_eq!(reply.student_uuid, seed::UNSIGNED_STUDENT_UUID);
        let again = svc.sign_up_student(request).expect_err("code used");
        assert_eq!(again.status, 404);
        assert!(
            svc.login(Kind::Student, "newstudent", "new-pw-1", (-401, -402))
                .is_ok()
        );
    }

    #[test]
    fn pick_login_matches_by_name_and_phone() {
        let svc = service();
        let login = |id: &str, pw: &str| {
            svc.login_teacher_pick(pb_teacher::LoginTeacherAuthWithPickRequest {
                teacher_id: id.into(),
                teacher_pw: pw.into(),
            })
        };
        assert_eq!(
            login(PICK_ID, PICK_PW)
                .map(|r| r.logged_in_teacher_uuid)
                .ok()
                .as_deref(),
            Some(seed::TEACHER_UUID)
        );
        assert_eq!(
            login(PICK_ID, "wrong").map(|_| ()).expect_err("pw").code,
            -412
        );
        assert_eq!(
            login(PICK_STRANGER_ID, PICK_STRANGER_PW)
                .map(|_| ())
                .expect_err("mismatch")
                .code,
            -414
        );
    }
}
