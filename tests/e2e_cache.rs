//! End-to-end tests of the response cache (issue 4; spec decisions 9, 12, 13, 19):
//! real HTTP, the gateway, the reference gRPC services, and a real `redis-server` on a
//! free port (tests/support/redis.rs). Backend calls are counted with the reference
//! services' metadata log. Waiting is bounded polling, never a sleep used as a signal.

#[path = "support/redis.rs"]
mod redis_support;
mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use redis_support::RedisServer;
use reqwest::Method;
use serde_json::{Value, json};
use sms_gateway::config::Config;
use sms_gateway::reference::announcement::SEEDED;
use sms_gateway::reference::outing::{
    APPROVED_OUTING, AWAITING_PARENT_CODE, AWAITING_PARENT_OUTING, FINISHED_OUTING, SEED_DAY,
    STUDENT2_OUTING,
};
use sms_gateway::reference::schedule::{SEED_SCHEDULE_UUID, current_month};
use sms_gateway::reference::{self, Options, Shared};
use sms_gateway::upstream::Service;
use support::proxy::Proxy;
use support::{Gateway, seed};

const STUDENT: &str = seed::STUDENT_UUID;
const STUDENT2: &str = seed::STUDENT2_UUID;
const TEACHER: &str = seed::TEACHER_UUID;
const PARENT: &str = seed::PARENT_UUID;

/// Upper bound of every polling loop.
const PATIENCE: Duration = Duration::from_secs(10);
/// Pause between two polls.
const POLL: Duration = Duration::from_millis(20);

// === harness ===

/// Where the cache keeps its entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Store {
    Memory,
    Redis,
    /// Redis with the in-process near layer.
    Near,
}

/// A gateway (with its own seeded reference services) and, for Redis stores, its
/// redis-server.
struct Setup {
    gw: Gateway,
    redis: Option<RedisServer>,
}

/// Points `config` at `redis` (if any) with the given store; test Redis timeouts are
/// generous so a busy machine does not turn a test into a test of the fallback.
fn use_store(config: &mut Config, store: Store, redis: Option<&RedisServer>) {
    if let Some(redis) = redis {
        config.redis.url = Some(redis.url());
        config.redis.timeout = Duration::from_millis(500);
        config.redis.pause_after_failure = Duration::from_millis(100);
    }
    config.cache.near = store == Store::Near;
}

async fn start(store: Store, tweak: impl FnOnce(&mut Config)) -> Setup {
    start_with(store, Options::default(), tweak).await
}

async fn start_with(store: Store, options: Options, tweak: impl FnOnce(&mut Config)) -> Setup {
    let redis = (store != Store::Memory).then(RedisServer::start);
    let gw = Gateway::start_with(options, |config| {
        use_store(config, store, redis.as_ref());
        tweak(config);
    })
    .await;
    Setup { gw, redis }
}

/// One answer with the cache's header.
#[derive(Debug, Clone)]
struct Reply {
    status: u16,
    body: Value,
    bytes: Bytes,
    cache: Option<String>,
}

impl Reply {
    fn cache(&self) -> &str {
        self.cache.as_deref().unwrap_or("<none>")
    }
}

/// Sends a request, with a bearer token for `caller` unless it is empty.
async fn send(
    gw: &Gateway,
    method: Method,
    path: &str,
    caller: &str,
    json: Option<Value>,
) -> Reply {
    let mut request = gw.client.request(method, gw.url(path));
    if !caller.is_empty() {
        request = request.bearer_auth(gw.token(caller));
    }
    if let Some(json) = json {
        request = request.json(&json);
    }
    let response = request.send().await.expect("response");
    let status = response.status().as_u16();
    let cache = response
        .headers()
        .get("x-cache")
        .map(|v| v.to_str().expect("ascii").to_owned());
    let bytes = response.bytes().await.expect("body");
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Reply {
        status,
        body,
        bytes,
        cache,
    }
}

async fn get(gw: &Gateway, path: &str, caller: &str) -> Reply {
    send(gw, Method::GET, path, caller, None).await
}

/// Backend calls received so far by the services of `gw`.
fn calls(gw: &Gateway) -> usize {
    gw.shared.metadata.all().len()
}

/// Polls `probe` until it returns `Some`, for at most [`PATIENCE`].
async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(started.elapsed() < PATIENCE, "gave up waiting: {what}");
        tokio::time::sleep(POLL).await;
    }
}

// === paths ===

fn student_outings(student: &str) -> String {
    format!("/v1/students/uuid/{student}/outings")
}
fn outing(id: &str) -> String {
    format!("/v1/outings/uuid/{id}")
}
fn card(id: &str) -> String {
    format!("/v1/outings/uuid/{id}/card")
}
fn action(id: &str, action: &str) -> String {
    format!("/v1/outings/uuid/{id}/actions/{action}")
}
const FILTER: &str = "/v1/outings/with-filter";
fn this_month() -> String {
    let (year, month) = current_month();
    format!("/v1/schedules/years/{year}/months/{month}")
}
/// 2021-03 (KST), where the test creates schedules.
const MARCH_2021: &str = "/v1/schedules/years/2021/months/3";
const MARCH_10: i64 = 1_615_302_000;
const SCHOOL: &str = "/v1/announcements/types/school";
fn search(query: &str) -> String {
    format!("/v1/announcements/types/school/query/{query}")
}
fn announcement(id: &str) -> String {
    format!("/v1/announcements/uuid/{id}")
}
fn check(student: &str) -> String {
    format!("/v1/students/uuid/{student}/announcement-check")
}
fn by_writer(writer: &str) -> String {
    format!("/v1/announcements/writer-uuid/{writer}")
}
const TIME_TABLE: &str = "/v1/time-tables/years/2021/months/3/days/8";

// === probes: what a read shows that a write must change ===

type Probe = Box<dyn Fn(&Reply) -> Value + Send + Sync>;

fn field(name: &'static str) -> Probe {
    Box::new(move |r| r.body[name].clone())
}

fn list_len(list: &'static str) -> Probe {
    Box::new(move |r| json!(r.body[list].as_array().map_or(0, Vec::len)))
}

/// `field` of the element of `list` whose `id_field` is `id`.
fn item(list: &'static str, id_field: &'static str, id: &str, field: &'static str) -> Probe {
    let id = id.to_owned();
    Box::new(move |r| {
        r.body[list]
            .as_array()
            .and_then(|all| all.iter().find(|x| x[id_field] == id.as_str()))
            .map_or(Value::Null, |x| x[field].clone())
    })
}

fn outing_in_list(id: &str, field: &'static str) -> Probe {
    item("outings", "outing_uuid", id, field)
}

fn announcement_in_list(id: &str, field: &'static str) -> Probe {
    item("announcements", "announcement_uuid", id, field)
}

fn status() -> Probe {
    Box::new(|r| json!(r.status))
}

// === table-driven invalidation: read → write → read is fresh ===

/// A request and the status it must get.
struct Req {
    method: Method,
    path: String,
    caller: &'static str,
    body: Option<Value>,
    status: u16,
}

fn req(method: Method, path: impl Into<String>, caller: &'static str, status: u16) -> Req {
    Req {
        method,
        path: path.into(),
        caller,
        body: None,
        status,
    }
}

fn with(mut req: Req, body: Value) -> Req {
    req.body = Some(body);
    req
}

/// A cached read and what of it the write changes.
struct Read {
    path: String,
    caller: &'static str,
    probe: Probe,
}

fn read(path: impl Into<String>, caller: &'static str, probe: Probe) -> Read {
    Read {
        path: path.into(),
        caller,
        probe,
    }
}

/// One write endpoint of the spec's invalidation lists (or the detail's side effect).
struct Scenario {
    endpoint: &'static str,
    setup: Vec<Req>,
    reads: Vec<Read>,
    write: Req,
}

fn scenarios() -> Vec<Scenario> {
    use Method as M;
    let outing_reads = |id: &str, owner: &'static str, field: &'static str| {
        vec![
            read(outing(id), owner, self::field(field)),
            read(card(id), owner, self::field(field)),
            read(outing(id), TEACHER, self::field(field)),
            read(student_outings(owner), owner, outing_in_list(id, field)),
            read(FILTER, TEACHER, outing_in_list(id, field)),
        ]
    };
    let new_outing = json!({
        "start_time": SEED_DAY + 40 * 86_400,
        "end_time": SEED_DAY + 40 * 86_400 + 3600,
        "place": "서점",
        "reason": "책 구입",
        "situation": "normal",
    });
    let schedule = |detail: &str| json!({"start_date": MARCH_10, "end_date": MARCH_10 + 3600, "detail": detail});
    let seeded_schedule = format!("/v1/schedules/uuid/{SEED_SCHEDULE_UUID}");
    // Student 1 has read both school announcements aimed at them, so their check
    // answers 0 until a new one appears.
    let read_all_school = || {
        vec![
            req(M::GET, announcement(SEEDED[0]), STUDENT, 200),
            req(M::GET, announcement(SEEDED[1]), STUDENT, 200),
        ]
    };
    vec![
        Scenario {
            endpoint: "outing.create",
            setup: vec![],
            reads: vec![
                read(student_outings(STUDENT2), STUDENT2, list_len("outings")),
                read(FILTER, TEACHER, list_len("outings")),
            ],
            write: with(req(M::POST, "/v1/outings", STUDENT2, 201), new_outing),
        },
        Scenario {
            endpoint: "outing.action_start",
            setup: vec![],
            reads: outing_reads(APPROVED_OUTING, STUDENT, "outing_status"),
            write: req(M::POST, action(APPROVED_OUTING, "start"), STUDENT, 200),
        },
        Scenario {
            endpoint: "outing.action_end",
            setup: vec![req(M::POST, action(APPROVED_OUTING, "start"), STUDENT, 200)],
            reads: outing_reads(APPROVED_OUTING, STUDENT, "outing_status"),
            write: req(M::POST, action(APPROVED_OUTING, "end"), STUDENT, 200),
        },
        Scenario {
            endpoint: "outing.action_teacher_approve",
            setup: vec![],
            reads: outing_reads(STUDENT2_OUTING, STUDENT2, "outing_status"),
            write: req(
                M::POST,
                action(STUDENT2_OUTING, "teacher-approve"),
                TEACHER,
                200,
            ),
        },
        Scenario {
            endpoint: "outing.action_teacher_reject",
            setup: vec![],
            reads: outing_reads(STUDENT2_OUTING, STUDENT2, "outing_status"),
            write: req(
                M::POST,
                action(STUDENT2_OUTING, "teacher-reject"),
                TEACHER,
                200,
            ),
        },
        Scenario {
            endpoint: "outing.action_certify",
            setup: vec![],
            reads: outing_reads(FINISHED_OUTING, STUDENT, "outing_status"),
            write: req(M::POST, action(FINISHED_OUTING, "certify"), TEACHER, 200),
        },
        Scenario {
            // The path names another outing: the confirm code decides (ambiguity 22).
            endpoint: "outing.action_parent_approve",
            setup: vec![],
            reads: {
                let mut reads = outing_reads(AWAITING_PARENT_OUTING, STUDENT, "outing_status");
                reads.push(read(
                    outing(AWAITING_PARENT_OUTING),
                    PARENT,
                    field("outing_status"),
                ));
                reads
            },
            write: req(
                M::POST,
                format!(
                    "{}?code={AWAITING_PARENT_CODE}",
                    action(FINISHED_OUTING, "parent-approve")
                ),
                "",
                200,
            ),
        },
        Scenario {
            endpoint: "outing.action_parent_reject",
            setup: vec![],
            reads: outing_reads(AWAITING_PARENT_OUTING, STUDENT, "outing_status"),
            write: req(
                M::POST,
                format!(
                    "{}?code={AWAITING_PARENT_CODE}",
                    action(FINISHED_OUTING, "parent-reject")
                ),
                "",
                200,
            ),
        },
        Scenario {
            // Ambiguity 21: the owner's list (not the teacher's) must be fresh.
            endpoint: "outing.modify",
            setup: vec![],
            reads: {
                let mut reads = outing_reads(APPROVED_OUTING, STUDENT, "end_time");
                reads.push(read(
                    student_outings(STUDENT),
                    PARENT,
                    outing_in_list(APPROVED_OUTING, "end_time"),
                ));
                reads
            },
            write: with(
                req(M::PATCH, outing(APPROVED_OUTING), TEACHER, 200),
                json!({"end_time": SEED_DAY + 29 * 3600}),
            ),
        },
        Scenario {
            endpoint: "schedule.create",
            setup: vec![],
            reads: vec![read(MARCH_2021, STUDENT, list_len("schedules"))],
            write: with(
                req(M::POST, "/v1/schedules", TEACHER, 201),
                schedule("개교기념일"),
            ),
        },
        Scenario {
            endpoint: "schedule.update",
            setup: vec![],
            reads: vec![read(
                this_month(),
                STUDENT,
                item("schedules", "schedule_uuid", SEED_SCHEDULE_UUID, "detail"),
            )],
            write: with(
                req(M::PATCH, seeded_schedule.clone(), TEACHER, 200),
                schedule("바뀐 일정"),
            ),
        },
        Scenario {
            endpoint: "schedule.delete",
            setup: vec![],
            reads: vec![read(this_month(), STUDENT, list_len("schedules"))],
            write: req(M::DELETE, seeded_schedule, TEACHER, 200),
        },
        Scenario {
            endpoint: "announcement.create",
            setup: read_all_school(),
            reads: vec![
                read(
                    announcement(SEEDED[1]),
                    STUDENT,
                    field("next_announcement_uuid"),
                ),
                read(SCHOOL, STUDENT, field("size")),
                read(SCHOOL, TEACHER, field("size")),
                read(search("캐시"), STUDENT, field("size")),
                read(check(STUDENT), STUDENT, field("school")),
                read(by_writer(TEACHER), TEACHER, field("size")),
            ],
            write: with(
                req(M::POST, "/v1/announcements", TEACHER, 201),
                json!({"type": "school", "title": "캐시 시험", "content": "새 공지"}),
            ),
        },
        Scenario {
            endpoint: "announcement.update",
            setup: vec![],
            reads: vec![
                read(announcement(SEEDED[1]), STUDENT, field("title")),
                read(announcement(SEEDED[0]), STUDENT, field("next_title")),
                read(SCHOOL, STUDENT, announcement_in_list(SEEDED[1], "title")),
                read(
                    search("현장학습"),
                    STUDENT,
                    announcement_in_list(SEEDED[1], "title"),
                ),
                read(
                    by_writer(TEACHER),
                    TEACHER,
                    announcement_in_list(SEEDED[1], "title"),
                ),
                read(check(STUDENT2), STUDENT2, field("school")),
            ],
            write: with(
                req(M::PATCH, announcement(SEEDED[1]), TEACHER, 200),
                // Now aimed at grade 1 only: the grade-2 students no longer see it.
                json!({"title": "바뀐 제목", "target_grade": 1}),
            ),
        },
        Scenario {
            endpoint: "announcement.delete",
            setup: vec![],
            reads: vec![
                read(announcement(SEEDED[1]), STUDENT, status()),
                read(
                    announcement(SEEDED[0]),
                    STUDENT,
                    field("next_announcement_uuid"),
                ),
                read(SCHOOL, STUDENT, field("size")),
                read(by_writer(TEACHER), TEACHER, field("size")),
                read(check(STUDENT2), STUDENT2, field("school")),
            ],
            write: req(M::DELETE, announcement(SEEDED[1]), TEACHER, 200),
        },
        Scenario {
            // A read with side effects (decision 13): a miss marks it read.
            endpoint: "announcement.detail",
            setup: vec![req(M::GET, announcement(SEEDED[0]), STUDENT, 200)],
            reads: vec![
                read(
                    SCHOOL,
                    STUDENT,
                    announcement_in_list(SEEDED[1], "is_checked"),
                ),
                read(
                    search("현장학습"),
                    STUDENT,
                    announcement_in_list(SEEDED[1], "is_checked"),
                ),
                read(check(STUDENT), STUDENT, field("school")),
            ],
            write: req(M::GET, announcement(SEEDED[1]), STUDENT, 200),
        },
    ]
}

/// For every scenario on a fresh gateway: prime the reads (a detail read in the setup
/// may have filled one already; details come first, as their misses invalidate the
/// reader's lists), check they are all hits, write, and check that every read is a
/// MISS showing the change.
async fn invalidation_table(store: Store) {
    for scenario in scenarios() {
        let Setup { gw, redis: _redis } = start(store, |_| {}).await;
        let name = scenario.endpoint;
        for step in &scenario.setup {
            let r = send(
                &gw,
                step.method.clone(),
                &step.path,
                step.caller,
                step.body.clone(),
            )
            .await;
            assert_eq!(
                r.status, step.status,
                "{name}: setup {}: {}",
                step.path, r.body
            );
        }
        let mut before = Vec::new();
        for read in &scenario.reads {
            let first = get(&gw, &read.path, read.caller).await;
            assert_eq!(
                first.status, 200,
                "{name}: {} as {}: {}",
                read.path, read.caller, first.body
            );
            before.push((read.probe)(&first));
        }
        for read in &scenario.reads {
            let again = get(&gw, &read.path, read.caller).await;
            assert_eq!(
                again.cache(),
                "HIT",
                "{name}: primed {} as {}",
                read.path,
                read.caller
            );
        }
        let w = &scenario.write;
        let written = send(&gw, w.method.clone(), &w.path, w.caller, w.body.clone()).await;
        assert_eq!(written.status, w.status, "{name}: write: {}", written.body);
        for (read, old) in scenario.reads.iter().zip(before) {
            let after = get(&gw, &read.path, read.caller).await;
            let what = format!("{name} [{store:?}]: {} as {}", read.path, read.caller);
            assert_eq!(
                after.cache(),
                "MISS",
                "{what}: still cached: {}",
                after.body
            );
            assert_ne!(
                (read.probe)(&after),
                old,
                "{what}: unchanged: {}",
                after.body
            );
        }
    }
}

#[tokio::test]
async fn every_write_invalidates_what_it_changes_memory() {
    invalidation_table(Store::Memory).await;
}

#[tokio::test]
async fn every_write_invalidates_what_it_changes_redis() {
    invalidation_table(Store::Redis).await;
}

#[tokio::test]
async fn every_write_invalidates_what_it_changes_near() {
    invalidation_table(Store::Near).await;
}

// === hits, misses, TTL ===

async fn miss_then_hit(store: Store) {
    let Setup { gw, redis: _redis } = start(store, |_| {}).await;
    let path = format!("{}?start=0&count=5", student_outings(STUDENT));
    let before = calls(&gw);
    let first = get(&gw, &path, STUDENT).await;
    assert_eq!(
        (first.status, first.cache()),
        (200, "MISS"),
        "{}",
        first.body
    );
    let second = get(&gw, &path, STUDENT).await;
    assert_eq!((second.status, second.cache()), (200, "HIT"));
    assert_eq!(first.bytes, second.bytes, "a hit replays the exact bytes");
    assert_eq!(calls(&gw) - before, 1, "one backend call for two reads");
    // Another page is another key.
    let other = get(&gw, &student_outings(STUDENT), STUDENT).await;
    assert_eq!(other.cache(), "MISS");
    // A shared read is one entry for every caller.
    assert_eq!(get(&gw, &this_month(), STUDENT).await.cache(), "MISS");
    let teacher = get(&gw, &this_month(), TEACHER).await;
    assert_eq!((teacher.status, teacher.cache()), (200, "HIT"));
    // Uncached endpoints carry no X-Cache header.
    let own = get(&gw, &format!("/v1/students/uuid/{STUDENT}"), STUDENT).await;
    assert_eq!((own.status, own.cache.as_deref()), (200, None));
    let stats = gw.gateway.state.cache.stats();
    assert_eq!((stats.hits, stats.misses, stats.bypasses), (2, 3, 0));
}

#[tokio::test]
async fn miss_then_hit_memory() {
    miss_then_hit(Store::Memory).await;
}

#[tokio::test]
async fn miss_then_hit_redis() {
    miss_then_hit(Store::Redis).await;
}

#[tokio::test]
async fn miss_then_hit_near() {
    miss_then_hit(Store::Near).await;
}

async fn entries_expire_after_their_ttl(store: Store) {
    let Setup { gw, redis: _redis } = start(store, |config| {
        config.cache.ttl = Duration::from_millis(300);
        config.cache.stale_for_shared = false;
    })
    .await;
    assert_eq!(get(&gw, &this_month(), STUDENT).await.cache(), "MISS");
    // Poll until the entry is no longer fresh: the first non-hit must be a miss that
    // went to the backend again.
    let before = calls(&gw);
    let started = Instant::now();
    let after = eventually("the entry expires", || async {
        let r = get(&gw, &this_month(), STUDENT).await;
        (r.cache() != "HIT").then_some(r)
    })
    .await;
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!((after.status, after.cache()), (200, "MISS"));
    assert_eq!(calls(&gw) - before, 1);
}

#[tokio::test]
async fn entries_expire_after_their_ttl_memory() {
    entries_expire_after_their_ttl(Store::Memory).await;
}

#[tokio::test]
async fn entries_expire_after_their_ttl_redis() {
    entries_expire_after_their_ttl(Store::Redis).await;
}

#[tokio::test]
async fn per_endpoint_ttl_overrides_the_default() {
    let Setup { gw, .. } = start(Store::Memory, |config| {
        config.cache.ttl = Duration::from_millis(200);
        config.cache.endpoints.insert(
            "schedule.time_tables".to_owned(),
            sms_gateway::config::EndpointCacheConfig {
                ttl: Some(Duration::from_secs(3600)),
                serve_stale: None,
            },
        );
    })
    .await;
    assert_eq!(get(&gw, TIME_TABLE, STUDENT).await.cache(), "MISS");
    assert_eq!(get(&gw, &this_month(), STUDENT).await.cache(), "MISS");
    eventually("the month expires", || async {
        (get(&gw, &this_month(), STUDENT).await.cache() == "MISS").then_some(())
    })
    .await;
    assert_eq!(get(&gw, TIME_TABLE, STUDENT).await.cache(), "HIT");
}

async fn only_success_is_cached(store: Store) {
    let Setup { gw, redis: _redis } = start(store, |_| {}).await;
    let before = calls(&gw);
    // 404 from the backend (unknown outing) and 403 from the backend (another
    // student's outing) are relayed every time, never stored.
    for (path, caller, status) in [
        (outing("outing-999999999999"), STUDENT, 404),
        (outing(STUDENT2_OUTING), STUDENT, 403),
    ] {
        for _ in 0..2 {
            let r = get(&gw, &path, caller).await;
            assert_eq!(
                (r.status, r.cache()),
                (status, "MISS"),
                "{path}: {}",
                r.body
            );
        }
    }
    assert_eq!(calls(&gw) - before, 4);
    // 400 from validation never reaches the cache stage.
    let bad = get(
        &gw,
        &format!("{}?start=x", student_outings(STUDENT)),
        STUDENT,
    )
    .await;
    assert_eq!((bad.status, bad.cache.as_deref()), (400, None));
}

#[tokio::test]
async fn only_success_is_cached_memory() {
    only_success_is_cached(Store::Memory).await;
}

#[tokio::test]
async fn only_success_is_cached_redis() {
    only_success_is_cached(Store::Redis).await;
}

#[tokio::test]
async fn free_text_keys_do_not_collide_or_glob() {
    let Setup { gw, redis: _redis } = start(Store::Redis, |_| {}).await;
    let hit = get(&gw, &search("개학"), STUDENT).await;
    assert_eq!((hit.cache(), &hit.body["size"]), ("MISS", &json!(1)));
    // A glob, a dot-laden text and an escape-looking text are keys of their own.
    for query in ["*", "%EA%B0%9C%ED%95%99.start.0", "%25EA", "%3F"] {
        let other = get(&gw, &search(query), STUDENT).await;
        assert_eq!(other.status, 200, "{query}: {}", other.body);
        assert_eq!(other.cache(), "MISS", "{query}");
        assert_eq!(other.body["size"], 0, "{query}: {}", other.body);
    }
    assert_eq!(get(&gw, &search("개학"), STUDENT).await.cache(), "HIT");
    // A query field given twice is never keyed (binding reads the first value).
    let twice = get(&gw, &format!("{SCHOOL}?count=1&count=2"), STUDENT).await;
    assert_eq!((twice.status, twice.cache()), (200, "BYPASS"));
}

// === isolation: never across callers, never before 401/403 ===

async fn callers_never_share_personal_entries(store: Store) {
    let Setup { gw, redis: _redis } = start(store, |_| {}).await;
    let list = student_outings(STUDENT);
    let own = get(&gw, &list, STUDENT).await;
    assert_eq!((own.status, own.cache()), (200, "MISS"));
    assert_eq!(get(&gw, &list, STUDENT).await.cache(), "HIT");
    // The student's parent and a teacher get entries of their own.
    for caller in [PARENT, TEACHER] {
        let r = get(&gw, &list, caller).await;
        assert_eq!((r.status, r.cache()), (200, "MISS"), "{caller}: {}", r.body);
        assert_eq!(get(&gw, &list, caller).await.cache(), "HIT");
    }
    // Another student is refused before the cache (403), never served the entry.
    let other = get(&gw, &list, STUDENT2).await;
    assert_eq!(
        (other.status, other.cache.as_deref()),
        (403, None),
        "{}",
        other.body
    );
    // The detail of student 1's outing, cached for them, is the backend's 403 for
    // student 2.
    assert_eq!(
        get(&gw, &outing(APPROVED_OUTING), STUDENT).await.cache(),
        "MISS"
    );
    let foreign = get(&gw, &outing(APPROVED_OUTING), STUDENT2).await;
    assert_eq!(
        (foreign.status, foreign.cache()),
        (403, "MISS"),
        "{}",
        foreign.body
    );
    // Per-reader data: student 2 has read the first announcement, student 1 has not.
    let first = get(&gw, SCHOOL, STUDENT).await;
    let second = get(&gw, SCHOOL, STUDENT2).await;
    assert_eq!((first.cache(), second.cache()), ("MISS", "MISS"));
    let checked = announcement_in_list(SEEDED[0], "is_checked");
    assert_eq!((checked(&first), checked(&second)), (json!(0), json!(1)));
    // No token, a bad token, the wrong kind: refused before the cache stage.
    let anonymous = get(&gw, &list, "").await;
    assert_eq!((anonymous.status, anonymous.cache.as_deref()), (401, None));
    let forged = gw
        .client
        .get(gw.url(&list))
        .bearer_auth(format!("{}x", gw.token(STUDENT)))
        .send()
        .await
        .expect("response");
    assert_eq!(forged.status(), 401);
    assert!(forged.headers().get("x-cache").is_none());
    let teacher_check = get(&gw, &check(STUDENT), TEACHER).await;
    assert_eq!(
        (teacher_check.status, teacher_check.cache.as_deref()),
        (403, None)
    );
    // The shared month needs a token too.
    assert_eq!(get(&gw, &this_month(), STUDENT).await.cache(), "MISS");
    assert_eq!(get(&gw, &this_month(), "").await.status, 401);
}

#[tokio::test]
async fn callers_never_share_personal_entries_memory() {
    callers_never_share_personal_entries(Store::Memory).await;
}

#[tokio::test]
async fn callers_never_share_personal_entries_redis() {
    callers_never_share_personal_entries(Store::Redis).await;
}

#[tokio::test]
async fn a_detail_hit_changes_nothing() {
    let Setup { gw, .. } = start(Store::Memory, |_| {}).await;
    let detail = announcement(SEEDED[1]);
    assert_eq!(get(&gw, &detail, STUDENT).await.cache(), "MISS");
    // The miss invalidated the reader's lists; refill one.
    assert_eq!(get(&gw, SCHOOL, STUDENT).await.cache(), "MISS");
    let before = calls(&gw);
    assert_eq!(get(&gw, &detail, STUDENT).await.cache(), "HIT");
    assert_eq!(get(&gw, SCHOOL, STUDENT).await.cache(), "HIT");
    assert_eq!(calls(&gw), before, "a hit reaches no backend");
    // Another reader's detail read leaves this reader's entries alone.
    assert_eq!(get(&gw, &detail, STUDENT2).await.cache(), "MISS");
    assert_eq!(get(&gw, SCHOOL, STUDENT).await.cache(), "HIT");
}

// === replicas ===

async fn replicas_see_each_others_writes(near: bool) {
    let redis = RedisServer::start();
    let store = if near { Store::Near } else { Store::Redis };
    let one = Gateway::start_with(Options::default(), |c| use_store(c, store, Some(&redis))).await;
    let addresses: BTreeMap<Service, Vec<String>> = one
        .services
        .iter()
        .map(|r| (r.service, vec![r.address.to_string()]))
        .collect();
    let two = Gateway::start_for(&addresses, |c| use_store(c, store, Some(&redis))).await;
    let month = MARCH_2021;
    let first = get(&two, month, STUDENT).await;
    assert_eq!(first.cache(), "MISS");
    // The entry filled through one replica is a hit through the other.
    let shared = get(&one, month, TEACHER).await;
    assert_eq!((shared.cache(), &shared.bytes), ("HIT", &first.bytes));
    assert_eq!(get(&two, month, STUDENT).await.cache(), "HIT");
    let created = send(
        &one,
        Method::POST,
        "/v1/schedules",
        TEACHER,
        Some(json!({"start_date": MARCH_10, "end_date": MARCH_10 + 60, "detail": "복제 시험"})),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.body["schedule_uuid"]
        .as_str()
        .expect("uuid")
        .to_owned();
    let listed = |r: &Reply| {
        r.body["schedules"]
            .as_array()
            .is_some_and(|all| all.iter().any(|s| s["schedule_uuid"] == id.as_str()))
    };
    // The writing replica sees it at once.
    assert!(listed(&get(&one, month, TEACHER).await));
    if near {
        // Through pub/sub: a short, bounded delay.
        eventually(
            "the other replica's near layer learns the write",
            || async { listed(&get(&two, month, STUDENT).await).then_some(()) },
        )
        .await;
    } else {
        // Every lookup asks Redis: the very next read is fresh.
        let next = get(&two, month, STUDENT).await;
        assert!(listed(&next), "stale after the write: {}", next.body);
        assert_eq!(next.cache(), "HIT", "filled through the writing replica");
    }
}

#[tokio::test]
async fn replicas_see_each_others_writes_redis() {
    replicas_see_each_others_writes(false).await;
}

#[tokio::test]
async fn replicas_see_each_others_writes_near() {
    replicas_see_each_others_writes(true).await;
}

// === fail-open ===

async fn redis_outage_is_a_bypass(store: Store) {
    let Setup { gw, redis } = start(store, |_| {}).await;
    let mut redis = redis.expect("redis");
    let month = this_month();
    assert_eq!(get(&gw, &month, STUDENT).await.cache(), "MISS");
    assert_eq!(get(&gw, &month, STUDENT).await.cache(), "HIT");
    redis.stop();
    // A near layer may answer from memory until it notices its subscription is gone
    // (moments); from then on, and always without a near layer, Redis is bypassed.
    eventually("the cache is bypassed", || async {
        let r = get(&gw, &month, STUDENT).await;
        assert_eq!(r.status, 200, "{}", r.body);
        (r.cache() == "BYPASS").then_some(())
    })
    .await;
    for caller in [STUDENT, TEACHER, STUDENT] {
        let r = get(&gw, &month, caller).await;
        assert_eq!((r.status, r.cache()), (200, "BYPASS"), "{}", r.body);
    }
    // Writes succeed too.
    let created = send(
        &gw,
        Method::POST,
        "/v1/schedules",
        TEACHER,
        Some(json!({"start_date": MARCH_10, "end_date": MARCH_10 + 60, "detail": "장애 중"})),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert!(gw.gateway.state.cache.stats().failed_invalidations >= 1);
    redis.restart();
    eventually("hits resume after Redis is back", || async {
        let r = get(&gw, &month, STUDENT).await;
        assert_eq!(r.status, 200);
        (r.cache() == "HIT").then_some(())
    })
    .await;
    let march = get(&gw, MARCH_2021, STUDENT).await;
    assert_eq!(march.status, 200);
    assert_eq!(march.body["schedules"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn redis_outage_is_a_bypass_redis() {
    redis_outage_is_a_bypass(Store::Redis).await;
}

#[tokio::test]
async fn redis_outage_is_a_bypass_near() {
    redis_outage_is_a_bypass(Store::Near).await;
}

#[tokio::test]
async fn slow_redis_is_a_bypass_within_the_timeout() {
    let Setup { gw, redis } = start(Store::Redis, |config| {
        config.redis.timeout = Duration::from_millis(50);
        config.redis.pause_after_failure = Duration::from_millis(200);
    })
    .await;
    let redis = redis.expect("redis");
    let month = this_month();
    assert_eq!(get(&gw, &month, STUDENT).await.cache(), "MISS");
    redis.freeze();
    for _ in 0..5 {
        let started = Instant::now();
        let r = get(&gw, &month, STUDENT).await;
        assert_eq!((r.status, r.cache()), (200, "BYPASS"));
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }
    redis.thaw();
    eventually("hits resume after Redis answers again", || async {
        (get(&gw, &month, STUDENT).await.cache() == "HIT").then_some(())
    })
    .await;
}

#[tokio::test]
async fn invalidations_missed_during_an_outage_apply_before_reads_resume() {
    let Setup { gw, redis } = start(Store::Redis, |config| {
        config.redis.timeout = Duration::from_millis(100);
        config.redis.pause_after_failure = Duration::from_millis(100);
    })
    .await;
    let redis = redis.expect("redis");
    assert_eq!(get(&gw, MARCH_2021, STUDENT).await.cache(), "MISS");
    assert_eq!(get(&gw, MARCH_2021, STUDENT).await.cache(), "HIT");
    // Redis stalls while a write succeeds: its invalidation cannot be applied yet.
    redis.freeze();
    let created = send(
        &gw,
        Method::POST,
        "/v1/schedules",
        TEACHER,
        Some(json!({"start_date": MARCH_10, "end_date": MARCH_10 + 60, "detail": "지연"})),
    )
    .await;
    assert_eq!(created.status, 201);
    redis.thaw();
    // The old entry is still in Redis, but this replica applies the held-back
    // invalidation before it reads again: never the pre-write answer.
    let fresh = eventually("Redis is used again", || async {
        let r = get(&gw, MARCH_2021, STUDENT).await;
        assert_eq!(
            r.body["schedules"].as_array().map(Vec::len),
            Some(1),
            "pre-write answer served: {}",
            r.body
        );
        (r.cache() != "BYPASS").then_some(r)
    })
    .await;
    assert_eq!(fresh.cache(), "MISS");
}

#[tokio::test]
async fn garbage_in_redis_is_a_bypass_and_is_repaired() {
    let Setup { gw, redis } = start(Store::Redis, |_| {}).await;
    let redis = redis.expect("redis");
    let month = this_month();
    let first = get(&gw, &month, STUDENT).await;
    assert_eq!(first.cache(), "MISS");
    let client = redis::Client::open(redis.url()).expect("url");
    let mut connection = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    // Test-only scan of the entries; the gateway itself never uses KEYS.
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("sms-gateway:cache:e:*")
        .query_async(&mut connection)
        .await
        .expect("keys");
    assert_eq!(keys.len(), 1, "{keys:?}");
    let () = redis::cmd("SET")
        .arg(&keys[0])
        .arg("{\"status\":200,\"forged\":true}")
        .query_async(&mut connection)
        .await
        .expect("set");
    let garbled = get(&gw, &month, STUDENT).await;
    assert_eq!((garbled.status, garbled.cache()), (200, "BYPASS"));
    assert_eq!(garbled.bytes, first.bytes, "served from the backend");
    eventually("the entry is refilled", || async {
        (get(&gw, &month, STUDENT).await.cache() == "HIT").then_some(())
    })
    .await;
}

// === single flight ===

async fn concurrent_misses_make_one_call(store: Store) {
    let options = Options {
        delay: Duration::from_millis(300),
    };
    let Setup { gw, redis: _redis } = start_with(store, options, |_| {}).await;
    let url = gw.url(MARCH_2021);
    let token = gw.token(STUDENT);
    let before = calls(&gw);
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let (client, url, token) = (gw.client.clone(), url.clone(), token.clone());
            tokio::spawn(async move {
                let response = client
                    .get(url)
                    .bearer_auth(token)
                    .send()
                    .await
                    .expect("send");
                let cache = response.headers().get("x-cache").cloned();
                (
                    response.status().as_u16(),
                    cache,
                    response.bytes().await.expect("body"),
                )
            })
        })
        .collect();
    let mut bodies = Vec::new();
    for task in tasks {
        let (status, cache, body) = task.await.expect("task");
        assert_eq!(status, 200);
        assert!(cache.is_some_and(|c| c == "MISS" || c == "HIT"));
        bodies.push(body);
    }
    assert!(bodies.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(
        calls(&gw) - before,
        1,
        "100 identical misses, one backend call"
    );
    assert!(gw.gateway.state.cache.stats().coalesced >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_misses_make_one_call_memory() {
    concurrent_misses_make_one_call(Store::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_misses_make_one_call_redis() {
    concurrent_misses_make_one_call(Store::Redis).await;
}

// === stale answers ===

/// Reference services behind a gateway whose schedule service goes through a proxy
/// the test can kill.
async fn behind_proxy(store: Store, tweak: impl FnOnce(&mut Config)) -> (Setup, Proxy) {
    let redis = (store != Store::Memory).then(RedisServer::start);
    let shared = Shared::seeded();
    let services = reference::spawn_all(None, &shared, &Options::default())
        .await
        .expect("services");
    let schedule = services
        .iter()
        .find(|r| r.service == Service::Schedule)
        .expect("schedule")
        .address;
    let proxy = Proxy::start(schedule).await;
    let addresses: BTreeMap<Service, Vec<String>> = services
        .iter()
        .map(|r| {
            let address = if r.service == Service::Schedule {
                proxy.address()
            } else {
                r.address
            };
            (r.service, vec![address.to_string()])
        })
        .collect();
    let mut gw = Gateway::start_for(&addresses, |config| {
        use_store(config, store, redis.as_ref());
        tweak(config);
    })
    .await;
    gw.shared = shared;
    gw.services = services;
    (Setup { gw, redis }, proxy)
}

async fn stale_answers_when_the_backend_is_down(store: Store) {
    let (Setup { gw, redis: _redis }, proxy) = behind_proxy(store, |config| {
        config.cache.ttl = Duration::from_millis(200);
        config.cache.max_stale = Duration::from_millis(1500);
    })
    .await;
    let month = this_month();
    let filled = get(&gw, &month, STUDENT).await;
    assert_eq!(filled.cache(), "MISS");
    // Per-caller entries are not served stale by default.
    assert_eq!(get(&gw, TIME_TABLE, STUDENT).await.cache(), "MISS");
    let filled_at = Instant::now();
    proxy.kill();
    // Fresh: a hit; past the TTL: the backend fails and the stale copy is served.
    let stale = eventually("a stale answer", || async {
        let r = get(&gw, &month, STUDENT).await;
        match r.cache() {
            "HIT" => None,
            _ => Some(r),
        }
    })
    .await;
    assert_eq!(
        (stale.status, stale.cache()),
        (200, "STALE"),
        "{}",
        stale.body
    );
    assert_eq!(stale.bytes, filled.bytes);
    let personal = eventually("the time table is past its TTL", || async {
        let r = get(&gw, TIME_TABLE, STUDENT).await;
        (r.cache() != "HIT").then_some(r)
    })
    .await;
    assert_eq!(
        (personal.status, personal.cache()),
        (503, "MISS"),
        "{}",
        personal.body
    );
    // Past max_stale: the failure itself.
    let failed = eventually("stale answers stop after max_stale", || async {
        let r = get(&gw, &month, STUDENT).await;
        (r.cache() != "STALE").then_some(r)
    })
    .await;
    assert!(filled_at.elapsed() >= Duration::from_millis(1500));
    assert_eq!(
        (failed.status, failed.cache()),
        (503, "MISS"),
        "{}",
        failed.body
    );
    assert!(gw.gateway.state.cache.stats().stale >= 1);
}

#[tokio::test]
async fn stale_answers_when_the_backend_is_down_memory() {
    stale_answers_when_the_backend_is_down(Store::Memory).await;
}

#[tokio::test]
async fn stale_answers_when_the_backend_is_down_redis() {
    stale_answers_when_the_backend_is_down(Store::Redis).await;
}

#[tokio::test]
async fn disabled_cache_bypasses_everything() {
    let Setup { gw, .. } = start(Store::Memory, |config| config.cache.enabled = false).await;
    let before = calls(&gw);
    for _ in 0..3 {
        let r = get(&gw, &this_month(), STUDENT).await;
        assert_eq!((r.status, r.cache()), (200, "BYPASS"));
    }
    assert_eq!(calls(&gw) - before, 3);
}

// === measurement (release build: `cargo test --release --test e2e_cache -- --ignored --nocapture`) ===

/// Latency and throughput of one read through `gw`: `n` sequential requests, then
/// `n` requests from 16 concurrent clients.
async fn measure(gw: &Gateway, path: &str, caller: &str, n: usize) -> String {
    let token = gw.token(caller);
    let url = gw.url(path);
    let client = reqwest::Client::new();
    let one = |client: reqwest::Client, url: String, token: String| async move {
        let response = client
            .get(url)
            .bearer_auth(token)
            .send()
            .await
            .expect("send");
        assert_eq!(response.status(), 200);
        response.bytes().await.expect("body").len()
    };
    for _ in 0..200 {
        one(client.clone(), url.clone(), token.clone()).await;
    }
    let mut latencies = Vec::with_capacity(n);
    let started = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        one(client.clone(), url.clone(), token.clone()).await;
        latencies.push(t.elapsed());
    }
    let sequential = started.elapsed();
    latencies.sort();
    let workers = 16;
    let started = Instant::now();
    let tasks: Vec<_> = (0..workers)
        .map(|_| {
            let (client, url, token) = (client.clone(), url.clone(), token.clone());
            tokio::spawn(async move {
                for _ in 0..n / workers {
                    one(client.clone(), url.clone(), token.clone()).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("worker");
    }
    let concurrent = started.elapsed();
    let per_second = |d: Duration, count: usize| count as f64 / d.as_secs_f64();
    format!(
        "p50 {:>6.1} µs  p99 {:>6.1} µs  sequential {:>7.0} req/s  16 clients {:>7.0} req/s",
        latencies[n / 2].as_secs_f64() * 1e6,
        latencies[n * 99 / 100].as_secs_f64() * 1e6,
        per_second(sequential, n),
        per_second(concurrent, n / workers * workers),
    )
}

/// Mean time of one request handled by the router in process (no sockets, no HTTP
/// client): the gateway's own work, plus the backend call on a miss.
async fn measure_in_process(gw: &Gateway, path: &str, caller: &str, n: u32) -> String {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let token = format!("Bearer {}", gw.token(caller));
    let one = || async {
        let request = axum::http::Request::get(path)
            .header("authorization", token.as_str())
            .body(axum::body::Body::empty())
            .expect("request");
        let response = gw
            .gateway
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("infallible");
        assert_eq!(response.status(), 200);
        response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes()
            .len()
    };
    for _ in 0..200 {
        one().await;
    }
    let started = Instant::now();
    for _ in 0..n {
        one().await;
    }
    format!(
        "in process {:>6.1} µs/request",
        started.elapsed().as_secs_f64() * 1e6 / f64::from(n)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "measurement; run in release with --ignored --nocapture"]
async fn measure_cached_against_uncached() {
    let n = 5000;
    let path = SCHOOL;
    let mut lines = Vec::new();
    let uncached = start(Store::Memory, |c| c.cache.enabled = false).await;
    let line = format!(
        "{}  {}",
        measure(&uncached.gw, path, STUDENT, n).await,
        measure_in_process(&uncached.gw, path, STUDENT, 20_000).await
    );
    lines.push(("uncached (backend call)", line));
    for (name, store) in [
        ("hit, memory store", Store::Memory),
        ("hit, redis store", Store::Redis),
        ("hit, redis + near layer", Store::Near),
    ] {
        let setup = start(store, |_| {}).await;
        assert_eq!(get(&setup.gw, path, STUDENT).await.cache(), "MISS");
        assert_eq!(get(&setup.gw, path, STUDENT).await.cache(), "HIT");
        let line = format!(
            "{}  {}",
            measure(&setup.gw, path, STUDENT, n).await,
            measure_in_process(&setup.gw, path, STUDENT, 20_000).await
        );
        lines.push((name, line));
        assert!(setup.gw.gateway.state.cache.stats().hits as usize >= n);
    }
    println!("GET {path} as a student, {n} requests each, loopback:");
    for (name, line) in lines {
        println!("  {name:<26} {line}");
    }
}
