//! Reference schedule service (`schedule.ScheduleService`, `schedule.ScheduleEvent`).
//!
//! Model:
//! - the school calendar: schedules `schedule-` + 12 digits, each a span of Unix seconds
//!   and a detail text; a month lists every schedule overlapping it, in Korean time
//!   (UTC+9), ordered by start. Teachers and admins manage it (others: 403); unknown
//!   uuids are 404; an empty or over-long detail, a zero date or an end before the start
//!   is 407. Seeded with schedules in the current and the next month.
//! - time tables: a fixed Monday–Friday week of seven periods per class; a student or
//!   teacher reads the table of their own class, a parent that of their child, others
//!   get 404. `GetTimeTables` answers `count` consecutive days from the date (weekend
//!   days are entries with empty periods); an impossible date or a count outside 1–31
//!   is 407.
//!
//! Backend codes are not published for this service (spec §5.32): refusals carry code 0.

use std::borrow::Cow;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use tonic::service::Routes;
use tonic::{Request, Response, Status};

use super::directory::Directory;
use super::{Shared, metadata};
use crate::auth::Kind;
use crate::proto::schedule as pb;
use pb::schedule_event_server::{ScheduleEvent, ScheduleEventServer};
use pb::schedule_service_server::{ScheduleService, ScheduleServiceServer};

/// The first seeded schedule (in the current month).
pub const SEED_SCHEDULE_UUID: &str = "schedule-000000000001";
/// How many schedules are seeded in the current month (the next month holds two more).
pub const SEEDED_THIS_MONTH: usize = 2;

/// The class whose time table the demo students read (grade, group).
pub const DEMO_CLASS: (u32, u32) = (2, 1);

/// Korean time, in which months and days are counted.
const UTC_OFFSET: i64 = 9 * 3600;
const DAY: i64 = 86_400;
const MAX_DETAIL: usize = 100;
const MAX_DAYS: i32 = 31;

/// A refused call: the in-band status and message of the reply (code 0).
#[derive(Debug)]
pub(crate) struct Refusal {
    pub status: i32,
    pub msg: Cow<'static, str>,
}

impl Refusal {
    pub fn new(status: i32, msg: impl Into<Cow<'static, str>>) -> Self {
        Self {
            status,
            msg: msg.into(),
        }
    }
}

/// A reply that can carry a [`Refusal`] instead of data.
pub(crate) trait Refusable: Default {
    fn refused(refusal: Refusal) -> Self;
}

/// Implements [`Refusable`] for replies with `status`, `code` and `msg` fields.
macro_rules! refusable {
    ($($reply:ty),+ $(,)?) => {$(
        impl $crate::reference::schedule::Refusable for $reply {
            fn refused(refusal: $crate::reference::schedule::Refusal) -> Self {
                Self {
                    status: refusal.status,
                    code: 0,
                    msg: refusal.msg.into_owned(),
                    ..Self::default()
                }
            }
        }
    )+};
}
pub(crate) use refusable;

refusable!(
    pb::GetTimeTableResponse,
    pb::GetTimeTablesResponse,
    pb::GetScheduleResponse,
    pb::DefaultScheduleResponse,
);

/// Checks the call's metadata (407 otherwise), then answers with `handle`'s reply or
/// its refusal.
pub(crate) fn serve<Q, R: Refusable>(
    shared: &Shared,
    request: Request<Q>,
    handle: impl FnOnce(Q) -> Result<R, Refusal>,
) -> Result<Response<R>, Status> {
    let reply = match metadata::check(&shared.metadata, &request) {
        Ok(()) => handle(request.into_inner()),
        Err(msg) => Err(Refusal::new(407, msg)),
    };
    Ok(Response::new(reply.unwrap_or_else(R::refused)))
}

/// Now, in Unix seconds.
pub(crate) fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

// === calendar arithmetic (proleptic Gregorian, H. Hinnant's algorithms) ===

/// Days since 1970-01-01 of `year-month-day` (month 1–12).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `(year, month, day)` of a day count since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn next_month(year: i64, month: i64) -> (i64, i64) {
    if month == 12 {
        (year + 1, 1)
    } else {
        (year, month + 1)
    }
}

/// The day count of a valid date, or 407.
fn checked_day(year: i32, month: i32, day: i32) -> Result<i64, Refusal> {
    let (year, month, day) = (i64::from(year), i64::from(month), i64::from(day));
    let days = days_from_civil(year, month, day);
    if (1..=9999).contains(&year) && civil_from_days(days) == (year, month, day) {
        Ok(days)
    } else {
        Err(Refusal::new(407, "invalid date"))
    }
}

/// Korean midnight starting `days`, in Unix seconds.
fn midnight(days: i64) -> i64 {
    days * DAY - UTC_OFFSET
}

/// The current Korean `(year, month)`.
pub fn current_month() -> (i64, i64) {
    let (year, month, _) = civil_from_days((now() + UTC_OFFSET).div_euclid(DAY));
    (year, month)
}

// === time tables ===

type Week = [[&'static str; 7]; 5];

/// The weekly time table of a class (`grade`, `group`), Monday to Friday.
fn week_of(grade: u32, group: u32) -> Option<&'static Week> {
    const GRADE2_GROUP1: Week = [
        ["국어", "수학", "영어", "과학", "체육", "음악", "창체"],
        ["수학", "영어", "국어", "사회", "미술", "미술", "자습"],
        ["영어", "과학", "수학", "국어", "정보", "체육", "동아리"],
        ["사회", "국어", "과학", "영어", "수학", "진로", "자습"],
        ["과학", "수학", "사회", "영어", "국어", "체육", "창체"],
    ];
    const GRADE1_GROUP3: Week = [
        ["수학", "국어", "과학", "영어", "사회", "체육", "창체"],
        ["영어", "수학", "국어", "정보", "정보", "음악", "자습"],
        ["국어", "사회", "영어", "수학", "과학", "미술", "동아리"],
        ["과학", "영어", "수학", "국어", "체육", "진로", "자습"],
        ["사회", "과학", "국어", "수학", "영어", "체육", "창체"],
    ];
    match (grade, group) {
        (2, 1) => Some(&GRADE2_GROUP1),
        (1, 3) => Some(&GRADE1_GROUP3),
        _ => None,
    }
}

/// The periods of one day: empty on weekends.
fn day_table(week: &Week, days: i64) -> pb::TimeTable {
    // 1970-01-01 was a Thursday: 0 = Monday … 6 = Sunday.
    let weekday = (days + 3).rem_euclid(7);
    let periods = usize::try_from(weekday).ok().and_then(|d| week.get(d));
    let period = |i: usize| periods.map_or_else(String::new, |p| p[i].to_owned());
    pb::TimeTable {
        time1: period(0),
        time2: period(1),
        time3: period(2),
        time4: period(3),
        time5: period(4),
        time6: period(5),
        time7: period(6),
    }
}

/// The class week of the caller: their own class, or their child's for a parent.
fn class_week(directory: &Directory, uuid: &str) -> Result<&'static Week, Refusal> {
    let account = match Kind::of_uuid(uuid) {
        Some(Kind::Student | Kind::Teacher) => directory.get(uuid),
        Some(Kind::Parent) => directory
            .find(Kind::Student, |s| s.parent_uuid == uuid)
            .into_iter()
            .next(),
        _ => None,
    };
    account
        .and_then(|a| week_of(a.grade, a.group))
        .ok_or_else(|| Refusal::new(404, "no time table for this account"))
}

// === the calendar ===

/// The schedule service's state.
#[derive(Debug)]
struct Calendar {
    schedules: RwLock<Vec<pb::Schedule>>,
}

impl Calendar {
    /// Two schedules this month and two next month (Korean time).
    fn seeded() -> Self {
        let (year, month) = current_month();
        let (next_year, next) = next_month(year, month);
        let span = |n: u32, (y, m): (i64, i64), first: i64, last: i64, detail: &str| pb::Schedule {
            schedule_uuid: format!("schedule-{n:012}"),
            start_date: midnight(days_from_civil(y, m, first)),
            end_date: midnight(days_from_civil(y, m, last) + 1) - 1,
            detail: detail.to_owned(),
        };
        Self {
            schedules: RwLock::new(vec![
                span(1, (year, month), 5, 9, "학부모 상담 주간"),
                span(2, (year, month), 20, 20, "체육대회"),
                span(3, (next_year, next), 1, 1, "개교기념일"),
                span(4, (next_year, next), 14, 16, "기말고사"),
            ]),
        }
    }
}

/// Only teachers and admins with an account manage the calendar.
fn manager(directory: &Directory, uuid: &str) -> Result<(), Refusal> {
    let kind_ok = matches!(Kind::of_uuid(uuid), Some(Kind::Teacher | Kind::Admin));
    if kind_ok && directory.get(uuid).is_some() {
        Ok(())
    } else {
        Err(Refusal::new(
            403,
            "only teachers and admins may manage schedules",
        ))
    }
}

/// A schedule's dates and detail, or 407.
fn checked_span(start: i64, end: i64, detail: &str) -> Result<(), Refusal> {
    if start <= 0 || end < start {
        return Err(Refusal::new(407, "the schedule must end after it starts"));
    }
    let length = detail.chars().count();
    if length == 0 || length > MAX_DETAIL {
        return Err(Refusal::new(407, "detail must have 1 to 100 characters"));
    }
    Ok(())
}

fn done(status: i32, schedule_uuid: String) -> pb::DefaultScheduleResponse {
    pb::DefaultScheduleResponse {
        status,
        code: 0,
        msg: String::new(),
        schedule_uuid,
    }
}

/// The schedule service.
#[derive(Debug, Clone)]
struct Schedules {
    shared: Shared,
    calendar: Arc<Calendar>,
}

impl Schedules {
    fn time_table(&self, q: pb::GetTimeTableRequest) -> Result<pb::GetTimeTableResponse, Refusal> {
        let week = class_week(&self.shared.directory, &q.uuid)?;
        let t = day_table(week, checked_day(q.year, q.month, q.day)?);
        Ok(pb::GetTimeTableResponse {
            status: 200,
            code: 0,
            msg: String::new(),
            time1: t.time1,
            time2: t.time2,
            time3: t.time3,
            time4: t.time4,
            time5: t.time5,
            time6: t.time6,
            time7: t.time7,
        })
    }

    fn time_tables(
        &self,
        q: pb::GetTimeTablesRequest,
    ) -> Result<pb::GetTimeTablesResponse, Refusal> {
        let week = class_week(&self.shared.directory, &q.uuid)?;
        let first = checked_day(q.year, q.month, q.day)?;
        if !(1..=MAX_DAYS).contains(&q.count) {
            return Err(Refusal::new(407, "count must be from 1 to 31"));
        }
        Ok(pb::GetTimeTablesResponse {
            status: 200,
            time_table: (0..i64::from(q.count))
                .map(|d| day_table(week, first + d))
                .collect(),
            ..Default::default()
        })
    }

    fn schedule(&self, q: &pb::GetScheduleRequest) -> Result<pb::GetScheduleResponse, Refusal> {
        let first = checked_day(q.year, q.month, 1)?;
        let (next_year, next) = next_month(i64::from(q.year), i64::from(q.month));
        let (from, until) = (
            midnight(first),
            midnight(days_from_civil(next_year, next, 1)),
        );
        let mut schedule: Vec<pb::Schedule> = self
            .calendar
            .schedules
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|s| s.start_date < until && s.end_date >= from)
            .cloned()
            .collect();
        schedule.sort_by(|a, b| {
            (a.start_date, &a.schedule_uuid).cmp(&(b.start_date, &b.schedule_uuid))
        });
        Ok(pb::GetScheduleResponse {
            status: 200,
            schedule,
            ..Default::default()
        })
    }

    fn create(&self, q: pb::CreateScheduleRequest) -> Result<pb::DefaultScheduleResponse, Refusal> {
        manager(&self.shared.directory, &q.uuid)?;
        checked_span(q.start_date, q.end_date, &q.detail)?;
        let schedule_uuid = self.shared.directory.new_uuid("schedule-");
        self.calendar
            .schedules
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .push(pb::Schedule {
                schedule_uuid: schedule_uuid.clone(),
                start_date: q.start_date,
                end_date: q.end_date,
                detail: q.detail,
            });
        Ok(done(201, schedule_uuid))
    }

    fn update(&self, q: pb::UpdateScheduleRequest) -> Result<pb::DefaultScheduleResponse, Refusal> {
        manager(&self.shared.directory, &q.uuid)?;
        checked_span(q.start_date, q.end_date, &q.detail)?;
        let mut schedules = self
            .calendar
            .schedules
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let found = schedules
            .iter_mut()
            .find(|s| s.schedule_uuid == q.schedule_uuid)
            .ok_or_else(|| Refusal::new(404, "schedule not found"))?;
        found.start_date = q.start_date;
        found.end_date = q.end_date;
        found.detail = q.detail;
        Ok(done(200, q.schedule_uuid))
    }

    fn delete(&self, q: pb::DeleteScheduleRequest) -> Result<pb::DefaultScheduleResponse, Refusal> {
        manager(&self.shared.directory, &q.uuid)?;
        let mut schedules = self
            .calendar
            .schedules
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let before = schedules.len();
        schedules.retain(|s| s.schedule_uuid != q.schedule_uuid);
        if schedules.len() == before {
            return Err(Refusal::new(404, "schedule not found"));
        }
        Ok(done(200, q.schedule_uuid))
    }
}

#[tonic::async_trait]
impl ScheduleService for Schedules {
    async fn get_time_table(
        &self,
        request: Request<pb::GetTimeTableRequest>,
    ) -> Result<Response<pb::GetTimeTableResponse>, Status> {
        serve(&self.shared, request, |q| self.time_table(q))
    }

    async fn get_time_tables(
        &self,
        request: Request<pb::GetTimeTablesRequest>,
    ) -> Result<Response<pb::GetTimeTablesResponse>, Status> {
        serve(&self.shared, request, |q| self.time_tables(q))
    }

    async fn get_schedule(
        &self,
        request: Request<pb::GetScheduleRequest>,
    ) -> Result<Response<pb::GetScheduleResponse>, Status> {
        serve(&self.shared, request, |q| self.schedule(&q))
    }

    async fn create_schedule(
        &self,
        request: Request<pb::CreateScheduleRequest>,
    ) -> Result<Response<pb::DefaultScheduleResponse>, Status> {
        serve(&self.shared, request, |q| self.create(q))
    }

    async fn update_schedule(
        &self,
        request: Request<pb::UpdateScheduleRequest>,
    ) -> Result<Response<pb::DefaultScheduleResponse>, Status> {
        serve(&self.shared, request, |q| self.update(q))
    }

    async fn delete_schedule(
        &self,
        request: Request<pb::DeleteScheduleRequest>,
    ) -> Result<Response<pb::DefaultScheduleResponse>, Status> {
        serve(&self.shared, request, |q| self.delete(q))
    }
}

/// The node-change broadcast: no peers to reload here, the call is counted.
#[derive(Debug, Clone)]
struct Events {
    shared: Shared,
}

#[tonic::async_trait]
impl ScheduleEvent for Events {
    async fn change_all_service_nodes(
        &self,
        request: Request<pb::Empty>,
    ) -> Result<Response<pb::Empty>, Status> {
        self.shared.events.record(
            crate::upstream::Service::Schedule,
            &self.shared.metadata,
            &request,
        );
        Ok(Response::new(pb::Empty {}))
    }
}

/// The schedule service's gRPC services.
pub fn routes(shared: &Shared) -> Routes {
    let service = Schedules {
        shared: shared.clone(),
        calendar: Arc::new(Calendar::seeded()),
    };
    Routes::new(ScheduleServiceServer::new(service)).add_service(ScheduleEventServer::new(Events {
        shared: shared.clone(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_round_trip() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        for days in [-800_000, -1, 0, 59, 10_957, 19_000, 2_900_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }

    #[test]
    fn dates_are_checked() {
        assert!(checked_day(2024, 2, 29).is_ok());
        assert!(checked_day(2023, 2, 29).is_err());
        assert!(checked_day(2021, 4, 31).is_err());
        assert!(checked_day(0, 1, 1).is_err());
        assert!(checked_day(2021, 13, 1).is_err());
    }

    #[test]
    fn weekends_have_no_periods() {
        let week = week_of(DEMO_CLASS.0, DEMO_CLASS.1).expect("seeded class");
        // 2021-03-08 was a Monday, 2021-03-13 a Saturday.
        let monday = checked_day(2021, 3, 8).expect("date");
        assert_eq!(day_table(week, monday).time1, "국어");
        assert_eq!(day_table(week, monday + 5).time1, "");
    }
}
