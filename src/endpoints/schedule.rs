//! Endpoints of the schedule service (`DMS.SMS.v1.service.schedule`): the school
//! calendar by month, class time tables, and calendar management (spec
//! api-outing-schedule-announcement.md §3, endpoints 9–13).
//!
//! Schedule uuids are `schedule-` + 12 digits: the original gateway never shows their
//! format, this gateway and its reference service fix it that way.
//!
//! Cache: a month's calendar is the same for every caller (decision 9 names it), so it
//! is shared; every calendar write invalidates every month (an update may move a
//! schedule to another month, which the gateway cannot know). Time tables depend on
//! the caller's class and are per caller; no gateway write changes them, so only their
//! TTL bounds their age: 60 s like every read (decision 19) rather than the original's
//! 24 h, configurable with `cache.endpoints."schedule.time_tables".ttl`.

use axum::http::Method;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};
use validator::Validate;

use crate::auth::{Access, Kind};
use crate::cache::CachePolicy;
use crate::endpoints::{Adapter, Call, Endpoint, NoInput, PathRule, Success, endpoint, fields};
use crate::http::GatewayError;
use crate::http::input::Source;
use crate::in_band;
use crate::proto::schedule as pb;
use crate::rpc;
use crate::upstream::Service;

in_band!(status, code, msg:
    pb::GetScheduleResponse,
    pb::GetTimeTablesResponse,
    pb::DefaultScheduleResponse,
);

/// Who creates calendar entries: teachers; the callers line says "admin unknown", so
/// admins stay allowed here until the backend is known to refuse them.
const MANAGERS: &[Kind] = &[Kind::Teacher, Kind::Admin];
/// Who changes or deletes an entry: teachers only (callers line of endpoints 12, 13).
const EDITORS: &[Kind] = &[Kind::Teacher];

const YEAR: (&str, PathRule) = ("year", PathRule::Int(1, 9999));
const MONTH: (&str, PathRule) = ("month", PathRule::Int(1, 12));
const DAY: (&str, PathRule) = ("day", PathRule::Int(1, 31));
const SCHEDULE_UUID: (&str, PathRule) = ("schedule_uuid", PathRule::Uuid("schedule-"));

/// The schedule service's entries of the endpoint table.
pub fn endpoints() -> Vec<Endpoint> {
    vec![
        endpoint(
            "schedule.create",
            Method::POST,
            "/v1/schedules",
            Service::Schedule,
            rpc!("/schedule.ScheduleService", "CreateSchedule"),
            CreateSchedule,
        )
        .access(Access::kinds(MANAGERS))
        .input(Source::Json)
        .invalidates(&["schedules"]),
        endpoint(
            "schedule.by_month",
            Method::GET,
            "/v1/schedules/years/{year}/months/{month}",
            Service::Schedule,
            rpc!("/schedule.ScheduleService", "GetSchedule"),
            SchedulesByMonth,
        )
        .params(&[YEAR, MONTH])
        .cached(CachePolicy::shared("schedules.years.$year.months.$month").groups(&["schedules"])),
        endpoint(
            "schedule.time_tables",
            Method::GET,
            "/v1/time-tables/years/{year}/months/{month}/days/{day}",
            Service::Schedule,
            rpc!("/schedule.ScheduleService", "GetTimeTables"),
            TimeTables,
        )
        // The callers line says students, but the class is derived from the caller's
        // uuid and the original's cache gives non-student tokens their own (shorter)
        // TTL: teachers (their class) and parents (their child's) are served too, as
        // the reference service does. Admins have no class.
        .access(Access::kinds(&[Kind::Student, Kind::Teacher, Kind::Parent]))
        .params(&[YEAR, MONTH, DAY])
        .input(Source::Query)
        .cached(CachePolicy::per_caller(
            "timetable.years.$year.months.$month.days.$day.count.$count",
        )),
        endpoint(
            "schedule.update",
            Method::PATCH,
            "/v1/schedules/uuid/{schedule_uuid}",
            Service::Schedule,
            rpc!("/schedule.ScheduleService", "UpdateSchedule"),
            UpdateSchedule,
        )
        .access(Access::kinds(EDITORS))
        .params(&[SCHEDULE_UUID])
        .input(Source::Json)
        .invalidates(&["schedules"]),
        endpoint(
            "schedule.delete",
            Method::DELETE,
            "/v1/schedules/uuid/{schedule_uuid}",
            Service::Schedule,
            rpc!("/schedule.ScheduleService", "DeleteSchedule"),
            DeleteSchedule,
        )
        .access(Access::kinds(EDITORS))
        .params(&[SCHEDULE_UUID])
        .invalidates(&["schedules"]),
    ]
}

/// The body of POST /v1/schedules and PATCH /v1/schedules/uuid/{schedule_uuid}.
#[derive(Debug, Default, Deserialize, Validate, JsonSchema)]
#[serde(default)]
pub struct ScheduleInput {
    #[validate(custom(function = "crate::endpoints::rules::unix_seconds"))]
    #[schemars(transform = crate::endpoints::rules::schema::unix_seconds)]
    start_date: i64,
    #[validate(custom(function = "crate::endpoints::rules::unix_seconds"))]
    #[schemars(transform = crate::endpoints::rules::schema::unix_seconds)]
    end_date: i64,
    #[validate(
        custom(function = "crate::endpoints::rules::required"),
        length(max = 100)
    )]
    #[schemars(transform = crate::endpoints::rules::schema::required)]
    detail: String,
}

// === POST /v1/schedules ===

struct CreateSchedule;

impl Adapter for CreateSchedule {
    type Input = ScheduleInput;
    type Request = pb::CreateScheduleRequest;
    type Reply = pb::DefaultScheduleResponse;

    fn request(&self, call: &Call<'_>, input: Self::Input) -> Self::Request {
        Self::Request {
            uuid: call.caller().to_owned(),
            start_date: input.start_date,
            end_date: input.end_date,
            detail: input.detail,
        }
    }

    fn success(&self, _call: &Call<'_>, reply: Self::Reply) -> Result<Success, GatewayError> {
        Ok(
            Success::message("succeed to create new schedule").with(fields!({
                "schedule_uuid": reply.schedule_uuid,
            })),
        )
    }
}

// === GET /v1/schedules/years/{year}/months/{month} ===

struct SchedulesByMonth;

impl Adapter for SchedulesByMonth {
    type Input = NoInput;
    type Request = pb::GetScheduleRequest;
    type Reply = pb::GetScheduleResponse;

    fn request(&self, call: &Call<'_>, _input: Self::Input) -> Self::Request {
        Self::Request {
            uuid: call.caller().to_owned(),
            year: call.param_num("year"),
            month: call.param_num("month"),
        }
    }

    fn success(&self, _call: &Call<'_>, reply: Self::Reply) -> Result<Success, GatewayError> {
        let schedules: Vec<Value> = reply
            .schedule
            .into_iter()
            .map(|s| {
                json!({
                    "schedule_uuid": s.schedule_uuid,
                    "start_date": s.start_date,
                    "end_date": s.end_date,
                    "detail": s.detail,
                })
            })
            .collect();
        Ok(
            Success::message("succeed to get schedules with year and month")
                .with(fields!({ "schedules": schedules })),
        )
    }
}

// === GET /v1/time-tables/years/{year}/months/{month}/days/{day} ===

/// The query of the time-table endpoint.
#[derive(Debug, Default, Deserialize, Validate, JsonSchema)]
#[serde(default)]
pub struct TimeTablesInput {
    /// Days asked for; absent or 0 means 1.
    count: u32,
}

struct TimeTables;

impl Adapter for TimeTables {
    type Input = TimeTablesInput;
    type Request = pb::GetTimeTablesRequest;
    type Reply = pb::GetTimeTablesResponse;

    fn request(&self, call: &Call<'_>, input: Self::Input) -> Self::Request {
        let count = if input.count == 0 { 1 } else { input.count };
        Self::Request {
            uuid: call.caller().to_owned(),
            year: call.param_num("year"),
            month: call.param_num("month"),
            day: call.param_num("day"),
            count: i32::try_from(count).unwrap_or(i32::MAX),
        }
    }

    /// The documented shape switch (decision 4): up to one table flat, more as a list.
    fn success(&self, _call: &Call<'_>, reply: Self::Reply) -> Result<Success, GatewayError> {
        let mut tables = reply.time_table;
        let data = if tables.len() >= 2 {
            let list: Vec<Value> = tables.into_iter().map(periods).collect();
            json!({ "time_tables": list })
        } else {
            periods(tables.pop().unwrap_or_default())
        };
        Ok(Success::message("succeed to get your time table in that week number").with(data))
    }
}

/// `{time1 … time7}` of one day.
fn periods(table: pb::TimeTable) -> Value {
    json!({
        "time1": table.time1,
        "time2": table.time2,
        "time3": table.time3,
        "time4": table.time4,
        "time5": table.time5,
        "time6": table.time6,
        "time7": table.time7,
    })
}

// === PATCH /v1/schedules/uuid/{schedule_uuid} ===

struct UpdateSchedule;

impl Adapter for UpdateSchedule {
    type Input = ScheduleInput;
    type Request = pb::UpdateScheduleRequest;
    type Reply = pb::DefaultScheduleResponse;

    fn request(&self, call: &Call<'_>, input: Self::Input) -> Self::Request {
        Self::Request {
            uuid: call.caller().to_owned(),
            schedule_uuid: call.param("schedule_uuid").to_owned(),
            start_date: input.start_date,
            end_date: input.end_date,
            detail: input.detail,
        }
    }

    fn success(&self, _call: &Call<'_>, _reply: Self::Reply) -> Result<Success, GatewayError> {
        Ok(Success::message("succeed update schedule with uuid in uri"))
    }
}

// === DELETE /v1/schedules/uuid/{schedule_uuid} ===

struct DeleteSchedule;

impl Adapter for DeleteSchedule {
    type Input = NoInput;
    type Request = pb::DeleteScheduleRequest;
    type Reply = pb::DefaultScheduleResponse;

    fn request(&self, call: &Call<'_>, _input: Self::Input) -> Self::Request {
        Self::Request {
            uuid: call.caller().to_owned(),
            schedule_uuid: call.param("schedule_uuid").to_owned(),
        }
    }

    fn success(&self, _call: &Call<'_>, _reply: Self::Reply) -> Result<Success, GatewayError> {
        Ok(Success::message(
            "succeed to delete schedule with schedule uuid",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(reply: pb::GetTimeTablesResponse) -> Value {
        TimeTables
            .success(&dummy_call(), reply)
            .expect("success")
            .data
            .to_value()
    }

    fn dummy_call() -> Call<'static> {
        static PARAMS: std::sync::LazyLock<crate::endpoints::PathParams> =
            std::sync::LazyLock::new(Default::default);
        static KEYS: std::sync::LazyLock<crate::auth::JwtKeys> = std::sync::LazyLock::new(|| {
            crate::auth::JwtKeys::new(
                b"unit-test-secret-unit-test-secret-0123",
                Default::default(),
                std::time::Duration::ZERO,
                crate::auth::TokenLifetimes::default(),
            )
        });
        Call {
            principal: None,
            params: &PARAMS,
            jwt: &KEYS,
        }
    }

    fn table(first: &str) -> pb::TimeTable {
        pb::TimeTable {
            time1: first.into(),
            ..Default::default()
        }
    }

    #[test]
    fn time_table_shape_switches_at_two_entries() {
        let none = body(pb::GetTimeTablesResponse::default());
        assert_eq!(none["time1"], "");
        assert_eq!(none["time7"], "");
        assert!(none.get("time_tables").is_none());

        let one = body(pb::GetTimeTablesResponse {
            time_table: vec![table("국어")],
            ..Default::default()
        });
        assert_eq!(one["time1"], "국어");
        assert!(one.get("time_tables").is_none());

        let two = body(pb::GetTimeTablesResponse {
            time_table: vec![table("국어"), table("수학")],
            ..Default::default()
        });
        assert!(two.get("time1").is_none());
        assert_eq!(two["time_tables"][1]["time1"], "수학");
    }

    #[test]
    fn schedule_dates_are_required_ten_digit_seconds() {
        let input = |start_date, end_date| ScheduleInput {
            start_date,
            end_date,
            detail: "x".into(),
        };
        assert!(input(1_600_000_000, 1_600_000_000).validate().is_ok());
        let errors = input(0, 123).validate().expect_err("invalid");
        let text = crate::endpoints::rules::describe::<ScheduleInput>(&errors);
        assert!(
            text.contains("'start_date' failed on the 'required' tag"),
            "{text}"
        );
        assert!(
            text.contains("'end_date' failed on the 'int_len' tag"),
            "{text}"
        );
    }
}
