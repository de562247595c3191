//! Reference announcement service (`announcement.AnnouncementService`,
//! `announcement.AnnouncementEvent`).
//!
//! Model:
//! - announcements `announcement-` + 12 digits of type `school` or `club`, numbered per
//!   type, listed newest first with the total `size`;
//! - audience: `target_grade`/`target_group` list the grades/groups as digits (`12` =
//!   grades 1 and 2), 0 = everyone; a student sees only announcements aimed at their
//!   class, other accounts see all. A student asking for one not aimed at them gets 403;
//! - writers: teachers write both types; a student writes club announcements only when
//!   they lead a club ([`CLUB_LEADERS`]: this service keeps its own list and does not ask
//!   the club service). Only the writer updates or deletes (403 otherwise);
//! - reading: the detail marks the announcement read by the caller (`is_checked` 1) and
//!   counts a view; `next` is the newer and `previous` the older neighbour of the same
//!   type visible to the caller; the check answers, per type, 1 when the student has an
//!   unread announcement aimed at them, else 0 ("if non-check announcement is exist");
//! - update: `""` and 0 mean "unchanged" (the gateway cannot tell absent from empty);
//! - refusals: unknown announcements or accounts 404, a bad type, paging, empty title or
//!   content, too long a text or a target out of range 407, metadata 407; code 0 (the
//!   backend codes are not published, spec §5.32).

use std::collections::HashSet;
use std::sync::{Arc, PoisonError, RwLock};

use tonic::service::Routes;
use tonic::{Request, Response, Status};

use super::directory::Directory;
use super::schedule::{Refusal, now, refusable, serve};
use super::{Shared, seed};
use crate::auth::Kind;
use crate::proto::announcement as pb;
use pb::announcement_event_server::{AnnouncementEvent, AnnouncementEventServer};
use pb::announcement_service_server::{AnnouncementService, AnnouncementServiceServer};

/// Students who lead a club and may write club announcements.
pub const CLUB_LEADERS: &[&str] = &[seed::STUDENT_UUID];
/// Seeded announcements: three school ones (for everyone, for grade 2 group 1, for grade
/// 1), then two club ones (by the club leader, by the teacher).
pub const SEEDED: [&str; 5] = [
    "announcement-000000000001",
    "announcement-000000000002",
    "announcement-000000000003",
    "announcement-000000000004",
    "announcement-000000000005",
];

const MAX_TITLE: usize = 50;
const MAX_CONTENT: usize = 1000;
const MAX_GRADE: i32 = 123;
const MAX_GROUP: i32 = 1234;

refusable!(
    pb::GetAnnouncementsResponse,
    pb::GetAnnouncementDetailResponse,
    pb::DefaultAnnouncementResponse,
    pb::CheckAnnouncementResponse,
);

/// An announcement type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Type {
    School,
    Club,
}

impl Type {
    fn parse(value: &str) -> Result<Self, Refusal> {
        match value {
            "school" => Ok(Self::School),
            "club" => Ok(Self::Club),
            _ => Err(Refusal::new(407, "type must be school or club")),
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::School => "school",
            Self::Club => "club",
        }
    }
}

/// One announcement.
#[derive(Debug)]
struct Announcement {
    id: String,
    /// Per-type number shown to readers.
    number: i64,
    kind: Type,
    title: String,
    content: String,
    writer: String,
    writer_name: String,
    date: i64,
    target_grade: i32,
    target_group: i32,
    views: i64,
    readers: HashSet<String>,
}

impl Announcement {
    fn preview(&self, reader: &str) -> pb::AnnouncementPreview {
        pb::AnnouncementPreview {
            number: self.number,
            announcement_id: self.id.clone(),
            writer_name: self.writer_name.clone(),
            title: self.title.clone(),
            date: self.date,
            views: self.views,
            is_checked: i64::from(self.readers.contains(reader)),
        }
    }
}

/// Who reads: a student's class, or everything.
#[derive(Debug, Clone, Copy)]
enum Reader {
    All,
    Class { grade: u32, group: u32 },
}

impl Reader {
    fn sees(self, a: &Announcement) -> bool {
        match self {
            Self::All => true,
            Self::Class { grade, group } => {
                targets(a.target_grade, grade) && targets(a.target_group, group)
            }
        }
    }
}

/// Whether a digit-list target (0 = everyone) names `value`.
fn targets(target: i32, value: u32) -> bool {
    if target == 0 {
        return true;
    }
    let mut rest = target;
    while rest > 0 {
        if u32::try_from(rest % 10).is_ok_and(|digit| digit == value) {
            return true;
        }
        rest /= 10;
    }
    false
}

/// The reader an account is, or 404 for an unknown account.
fn reader(directory: &Directory, uuid: &str) -> Result<Reader, Refusal> {
    let account = directory
        .get(uuid)
        .ok_or_else(|| Refusal::new(404, "account not found"))?;
    Ok(match Kind::of_uuid(uuid) {
        Some(Kind::Student) => Reader::Class {
            grade: account.grade,
            group: account.group,
        },
        _ => Reader::All,
    })
}

/// Checks a title, content and targets; `required` for create (update allows empty).
fn checked_fields(
    title: &str,
    content: &str,
    grade: i32,
    group: i32,
    required: bool,
) -> Result<(), Refusal> {
    let (title, content) = (title.chars().count(), content.chars().count());
    if required && (title == 0 || content == 0) {
        return Err(Refusal::new(407, "title and content are required"));
    }
    if title > MAX_TITLE || content > MAX_CONTENT {
        return Err(Refusal::new(407, "title or content is too long"));
    }
    if !(0..=MAX_GRADE).contains(&grade) || !(0..=MAX_GROUP).contains(&group) {
        return Err(Refusal::new(407, "target grade or group out of range"));
    }
    Ok(())
}

/// One page (`start`, `count`) of `matches` (newest first), with the total size.
fn page<'a>(
    matches: impl Iterator<Item = &'a Announcement>,
    start: i32,
    count: i32,
    reader: &str,
) -> Result<pb::GetAnnouncementsResponse, Refusal> {
    let (Ok(start), Ok(count)) = (usize::try_from(start), usize::try_from(count)) else {
        return Err(Refusal::new(407, "start and count must not be negative"));
    };
    let all: Vec<&Announcement> = matches.collect();
    Ok(pb::GetAnnouncementsResponse {
        status: 200,
        size: i64::try_from(all.len()).unwrap_or(i64::MAX),
        announcement: all
            .iter()
            .skip(start)
            .take(count)
            .map(|a| a.preview(reader))
            .collect(),
        ..Default::default()
    })
}

fn done(status: i32, announcement_id: String) -> pb::DefaultAnnouncementResponse {
    pb::DefaultAnnouncementResponse {
        status,
        code: 0,
        msg: String::new(),
        announcement_id,
    }
}

/// All announcements, oldest first.
#[derive(Debug, Default)]
struct Board {
    items: Vec<Announcement>,
    /// The last number given per type (school, club).
    numbers: [i64; 2],
}

impl Board {
    fn add(&mut self, mut announcement: Announcement) {
        let slot = usize::from(announcement.kind == Type::Club);
        self.numbers[slot] += 1;
        announcement.number = self.numbers[slot];
        self.items.push(announcement);
    }

    fn position(&self, id: &str) -> Result<usize, Refusal> {
        self.items
            .iter()
            .position(|a| a.id == id)
            .ok_or_else(|| Refusal::new(404, "announcement not found"))
    }

    /// The announcement `id`, which `writer` must have written.
    fn written_by(&self, id: &str, writer: &str) -> Result<usize, Refusal> {
        let at = self.position(id)?;
        if self.items[at].writer == writer {
            Ok(at)
        } else {
            Err(Refusal::new(
                403,
                "only the writer may change this announcement",
            ))
        }
    }

    fn seeded(directory: &Directory) -> Self {
        let name = |uuid: &str| directory.get(uuid).map(|a| a.name).unwrap_or_default();
        let mut board = Self::default();
        let seeds = [
            (
                Type::School,
                seed::TEACHER_UUID,
                "2학기 개학 안내",
                "2학기 개학식은 강당에서 열립니다.",
                0,
                0,
            ),
            (
                Type::School,
                seed::TEACHER_UUID,
                "2학년 1반 현장학습 안내",
                "현장학습 동의서를 금요일까지 제출하세요.",
                2,
                1,
            ),
            (
                Type::School,
                seed::TEACHER_UUID,
                "1학년 진로 상담 안내",
                "1학년 진로 상담 일정을 확인하세요.",
                1,
                0,
            ),
            (
                Type::Club,
                seed::STUDENT_UUID,
                "코딩 동아리 정기 모임",
                "이번 주 목요일 정보실에서 모입니다.",
                0,
                0,
            ),
            (
                Type::Club,
                seed::TEACHER_UUID,
                "동아리 박람회 안내",
                "동아리 박람회가 다음 달에 열립니다.",
                0,
                0,
            ),
        ];
        for ((kind, writer, title, content, grade, group), (i, id)) in
            seeds.into_iter().zip(SEEDED.iter().enumerate())
        {
            board.add(Announcement {
                id: (*id).to_owned(),
                number: 0,
                kind,
                title: title.to_owned(),
                content: content.to_owned(),
                writer: writer.to_owned(),
                writer_name: name(writer),
                // One day apart, from 2020-09-01 (KST).
                date: 1_598_886_000 + 86_400 * i64::try_from(i).unwrap_or(0),
                target_grade: grade,
                target_group: group,
                views: 0,
                readers: HashSet::new(),
            });
        }
        // The second student has read the first announcement.
        if let Some(first) = board.items.first_mut() {
            first.readers.insert(seed::STUDENT2_UUID.to_owned());
            first.views = 1;
        }
        board
    }
}

/// The announcement service.
#[derive(Debug, Clone)]
struct Announcements {
    shared: Shared,
    board: Arc<RwLock<Board>>,
}

impl Announcements {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Board> {
        self.board.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Board> {
        self.board.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// The writer name of `uuid` when it may write an announcement of `kind`.
    fn writer(&self, uuid: &str, kind: Type) -> Result<String, Refusal> {
        let account = self.shared.directory.get(uuid);
        let allowed = match Kind::of_uuid(uuid) {
            Some(Kind::Teacher) => true,
            Some(Kind::Student) => kind == Type::Club && CLUB_LEADERS.contains(&uuid),
            _ => false,
        };
        match account {
            Some(account) if allowed => Ok(account.name),
            _ => Err(Refusal::new(
                403,
                "only teachers, and club leaders for club announcements, may write announcements",
            )),
        }
    }

    fn list(
        &self,
        q: &pb::GetAnnouncementsRequest,
    ) -> Result<pb::GetAnnouncementsResponse, Refusal> {
        let kind = Type::parse(&q.r#type)?;
        let who = reader(&self.shared.directory, &q.uuid)?;
        let board = self.read();
        let matches = board
            .items
            .iter()
            .rev()
            .filter(|a| a.kind == kind && who.sees(a));
        page(matches, q.start, q.count, &q.uuid)
    }

    fn search(
        &self,
        q: &pb::SearchAnnouncementsRequest,
    ) -> Result<pb::GetAnnouncementsResponse, Refusal> {
        let kind = Type::parse(&q.r#type)?;
        let who = reader(&self.shared.directory, &q.uuid)?;
        let needle = q.query.to_lowercase();
        let hit = |a: &Announcement| {
            a.title.to_lowercase().contains(&needle) || a.content.to_lowercase().contains(&needle)
        };
        let board = self.read();
        let matches = board
            .items
            .iter()
            .rev()
            .filter(|a| a.kind == kind && who.sees(a) && hit(a));
        page(matches, q.start, q.count, &q.uuid)
    }

    fn by_writer(
        &self,
        q: &pb::GetMyAnnouncementsRequest,
    ) -> Result<pb::GetAnnouncementsResponse, Refusal> {
        reader(&self.shared.directory, &q.uuid)?;
        let board = self.read();
        let matches = board.items.iter().rev().filter(|a| a.writer == q.uuid);
        page(matches, q.start, q.count, &q.uuid)
    }

    fn detail(
        &self,
        q: &pb::GetAnnouncementDetailRequest,
    ) -> Result<pb::GetAnnouncementDetailResponse, Refusal> {
        let who = reader(&self.shared.directory, &q.uuid)?;
        let mut board = self.write();
        let at = board.position(&q.announcement_id)?;
        if !who.sees(&board.items[at]) {
            return Err(Refusal::new(403, "this announcement is not aimed at you"));
        }
        let kind = board.items[at].kind;
        let neighbour = |a: &&Announcement| a.kind == kind && who.sees(a);
        let title_and_id = |a: Option<&Announcement>| {
            a.map(|a| (a.title.clone(), a.id.clone()))
                .unwrap_or_default()
        };
        let (next_title, next_announcement_id) =
            title_and_id(board.items[at + 1..].iter().find(neighbour));
        let (previous_title, previous_announcement_id) =
            title_and_id(board.items[..at].iter().rev().find(neighbour));
        let a = &mut board.items[at];
        a.views += 1;
        a.readers.insert(q.uuid.clone());
        Ok(pb::GetAnnouncementDetailResponse {
            status: 200,
            code: 0,
            msg: String::new(),
            title: a.title.clone(),
            date: a.date,
            content: a.content.clone(),
            writer_name: a.writer_name.clone(),
            next_title,
            next_announcement_id,
            previous_title,
            previous_announcement_id,
            target_grade: a.target_grade,
            target_group: a.target_group,
            announcement_type: a.kind.as_str().to_owned(),
        })
    }

    fn create(
        &self,
        q: pb::CreateAnnouncementRequest,
    ) -> Result<pb::DefaultAnnouncementResponse, Refusal> {
        let kind = Type::parse(&q.r#type)?;
        let writer_name = self.writer(&q.uuid, kind)?;
        checked_fields(&q.title, &q.content, q.target_grade, q.target_group, true)?;
        let id = self.shared.directory.new_uuid("announcement-");
        self.write().add(Announcement {
            id: id.clone(),
            number: 0,
            kind,
            title: q.title,
            content: q.content,
            writer: q.uuid,
            writer_name,
            date: now(),
            target_grade: q.target_grade,
            target_group: q.target_group,
            views: 0,
            readers: HashSet::new(),
        });
        Ok(done(201, id))
    }

    fn update(
        &self,
        q: pb::UpdateAnnouncementRequest,
    ) -> Result<pb::DefaultAnnouncementResponse, Refusal> {
        checked_fields(&q.title, &q.content, q.target_grade, q.target_group, false)?;
        let mut board = self.write();
        let at = board.written_by(&q.announcement_id, &q.uuid)?;
        let a = &mut board.items[at];
        if !q.title.is_empty() {
            a.title = q.title;
        }
        if !q.content.is_empty() {
            a.content = q.content;
        }
        if q.target_grade != 0 {
            a.target_grade = q.target_grade;
        }
        if q.target_group != 0 {
            a.target_group = q.target_group;
        }
        Ok(done(200, q.announcement_id))
    }

    fn delete(
        &self,
        q: pb::DeleteAnnouncementRequest,
    ) -> Result<pb::DefaultAnnouncementResponse, Refusal> {
        let mut board = self.write();
        let at = board.written_by(&q.announcement_id, &q.uuid)?;
        board.items.remove(at);
        Ok(done(200, q.announcement_id))
    }

    fn check(
        &self,
        q: &pb::CheckAnnouncementRequest,
    ) -> Result<pb::CheckAnnouncementResponse, Refusal> {
        let who = match reader(&self.shared.directory, &q.uuid) {
            Ok(who @ Reader::Class { .. }) => who,
            _ => return Err(Refusal::new(404, "student not found")),
        };
        let board = self.read();
        let unread = |kind: Type| {
            i32::from(
                board
                    .items
                    .iter()
                    .any(|a| a.kind == kind && who.sees(a) && !a.readers.contains(&q.uuid)),
            )
        };
        Ok(pb::CheckAnnouncementResponse {
            status: 200,
            code: 0,
            msg: String::new(),
            school: unread(Type::School),
            club: unread(Type::Club),
        })
    }
}

#[tonic::async_trait]
impl AnnouncementService for Announcements {
    async fn get_announcements(
        &self,
        request: Request<pb::GetAnnouncementsRequest>,
    ) -> Result<Response<pb::GetAnnouncementsResponse>, Status> {
        serve(&self.shared, request, |q| self.list(&q))
    }

    async fn get_announcement_detail(
        &self,
        request: Request<pb::GetAnnouncementDetailRequest>,
    ) -> Result<Response<pb::GetAnnouncementDetailResponse>, Status> {
        serve(&self.shared, request, |q| self.detail(&q))
    }

    async fn create_announcement(
        &self,
        request: Request<pb::CreateAnnouncementRequest>,
    ) -> Result<Response<pb::DefaultAnnouncementResponse>, Status> {
        serve(&self.shared, request, |q| self.create(q))
    }

    async fn update_announcement(
        &self,
        request: Request<pb::UpdateAnnouncementRequest>,
    ) -> Result<Response<pb::DefaultAnnouncementResponse>, Status> {
        serve(&self.shared, request, |q| self.update(q))
    }

    async fn delete_announcement(
        &self,
        request: Request<pb::DeleteAnnouncementRequest>,
    ) -> Result<Response<pb::DefaultAnnouncementResponse>, Status> {
        serve(&self.shared, request, |q| self.delete(q))
    }

    async fn check_announcement(
        &self,
        request: Request<pb::CheckAnnouncementRequest>,
    ) -> Result<Response<pb::CheckAnnouncementResponse>, Status> {
        serve(&self.shared, request, |q| self.check(&q))
    }

    async fn search_announcements(
        &self,
        request: Request<pb::SearchAnnouncementsRequest>,
    ) -> Result<Response<pb::GetAnnouncementsResponse>, Status> {
        serve(&self.shared, request, |q| self.search(&q))
    }

    async fn get_my_announcements(
        &self,
        request: Request<pb::GetMyAnnouncementsRequest>,
    ) -> Result<Response<pb::GetAnnouncementsResponse>, Status> {
        serve(&self.shared, request, |q| self.by_writer(&q))
    }
}

/// The node-change broadcast: no peers to reload here, the call is counted.
#[derive(Debug, Clone)]
struct Events {
    shared: Shared,
}

#[tonic::async_trait]
impl AnnouncementEvent for Events {
    async fn change_all_service_nodes(
        &self,
        request: Request<pb::Empty>,
    ) -> Result<Response<pb::Empty>, Status> {
        self.shared.events.record(
            crate::upstream::Service::Announcement,
            &self.shared.metadata,
            &request,
        );
        Ok(Response::new(pb::Empty {}))
    }
}

/// The announcement service's gRPC services.
pub fn routes(shared: &Shared) -> Routes {
    let service = Announcements {
        shared: shared.clone(),
        board: Arc::new(RwLock::new(Board::seeded(&shared.directory))),
    };
    Routes::new(AnnouncementServiceServer::new(service)).add_service(AnnouncementEventServer::new(
        Events {
            shared: shared.clone(),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digit_targets() {
        assert!(targets(0, 3));
        assert!(targets(12, 1));
        assert!(targets(12, 2));
        assert!(!targets(12, 3));
        assert!(targets(1234, 4));
        assert!(!targets(-1, 1));
    }

    #[test]
    fn seeds_are_numbered_per_type() {
        let board = Board::seeded(&seed::directory());
        let numbers: Vec<(Type, i64)> = board.items.iter().map(|a| (a.kind, a.number)).collect();
        assert_eq!(
            numbers,
            [
                (Type::School, 1),
                (Type::School, 2),
                (Type::School, 3),
                (Type::Club, 1),
                (Type::Club, 2)
            ]
        );
        assert_eq!(board.items[3].writer_name, "김학생");
    }
}
