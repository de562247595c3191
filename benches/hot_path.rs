//! Micro-benchmarks of the request hot path, stage by stage, through the crate's public
//! API: JWT verification, the access check, input binding and validation (a query bind
//! and a JSON bind of real endpoint inputs), instance pick with its breaker, the
//! success envelope and cache-key rendering. `cargo bench --bench hot_path`; about 1 s
//! of measurement per benchmark. BENCHMARKS.md puts these next to the end-to-end figures.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use serde_json::json;
use sms_gateway::auth::jwt::JwtAlgorithm;
use sms_gateway::auth::{Access, JwtKeys, Kind, Principal, TokenLifetimes};
use sms_gateway::cache::template::{Template, Values};
use sms_gateway::endpoints::outing::{CreateOutingInput, PageInput};
use sms_gateway::endpoints::{PathParams, Success, fields};
use sms_gateway::http::form::FormMap;
use sms_gateway::reference::{outing, seed};
use sms_gateway::upstream::ConnectSettings;
use sms_gateway::upstream::breaker::{Breaker, BreakerSettings, Outcome};
use sms_gateway::upstream::pool::{Node, ServicePool};
use validator::Validate;

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn jwt(c: &mut Criterion) {
    let keys = JwtKeys::new(
        SECRET,
        JwtAlgorithm::HS512,
        Duration::from_secs(5),
        TokenLifetimes::default(),
    );
    let token = keys.issue(seed::STUDENT_UUID).expect("issue");
    let header = format!("Bearer {token}");
    // A client sends the same token with every request: after the first, it is found in
    // the worker's table of verified tokens.
    c.bench_function("jwt/authenticate (a token seen before)", |b| {
        b.iter(|| keys.authenticate(Some(black_box(header.as_bytes()))))
    });
    // The first request with a token: HS512 verification and the claims checks.
    let mut exp = 2_000_000_000_u64;
    c.bench_function(
        "jwt/verify (a new token, HS512 + claims, remembered)",
        |b| {
            b.iter_batched(
                || {
                    exp += 1;
                    keys.issue_with_expiry(seed::STUDENT_UUID, exp)
                        .expect("issue")
                },
                |token| keys.verify(black_box(&token)),
                BatchSize::SmallInput,
            )
        },
    );
    c.bench_function("jwt/issue (login)", |b| {
        b.iter(|| keys.issue(black_box(seed::STUDENT_UUID)))
    });
}

fn access(c: &mut Criterion) {
    // The rules of GET /v1/outings/uuid/{outing_uuid} and of the student's outing list.
    let readers: &'static [Kind] = &[Kind::Student, Kind::Teacher, Kind::Parent];
    let by_kind = Access::kinds(readers);
    let own = Access::own(readers, "student_uuid");
    let principal = Principal::from_uuid(seed::STUDENT_UUID.to_owned());
    let params = PathParams(vec![(
        "student_uuid".to_owned(),
        seed::STUDENT_UUID.to_owned(),
    )]);
    let lookup = |name: &str| {
        params
            .0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    c.bench_function("access/kinds", |b| {
        b.iter(|| by_kind.authorize(Some(black_box(&principal)), lookup))
    });
    c.bench_function("access/own uuid", |b| {
        b.iter(|| own.authorize(Some(black_box(&principal)), lookup))
    });
}

fn bind(c: &mut Criterion) {
    // GET /v1/students/uuid/{student_uuid}/outings?start=0&count=10
    let query = "start=0&count=10";
    c.bench_function("bind/query + validate (student outings page)", |b| {
        b.iter(|| {
            let input: PageInput = FormMap::from_query(black_box(query))
                .deserialize()
                .expect("bind");
            input.validate().expect("valid");
            input
        })
    });
    // POST /v1/outings
    let body = json!({
        "start_time": 1_900_000_000,
        "end_time": 1_900_003_600,
        "place": "서점",
        "reason": "교재 구입",
        "situation": "normal",
    })
    .to_string();
    c.bench_function("bind/json + validate (create outing)", |b| {
        b.iter(|| {
            let input: CreateOutingInput =
                serde_json::from_slice(black_box(body.as_bytes())).expect("bind");
            input.validate().expect("valid");
            input
        })
    });
}

fn upstream(c: &mut Criterion) {
    // Channels connect lazily but need a runtime to exist; nothing is ever sent.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let _entered = runtime.enter();
    let nodes: Vec<Arc<Node>> = (0..3)
        .map(|i| {
            let address = format!("127.0.0.1:{}", 50_053 + i);
            let breaker = Arc::new(Breaker::new(BreakerSettings::default()));
            Arc::new(
                Node::new(
                    address.clone(),
                    address,
                    ConnectSettings {
                        timeout: Duration::from_secs(2),
                        lanes: 1,
                    },
                    breaker,
                )
                .expect("node"),
            )
        })
        .collect();
    let pool = ServicePool::new(nodes);
    c.bench_function("upstream/pick + breaker admit + record", |b| {
        b.iter(|| {
            let now = tokio::time::Instant::now();
            let node = pool.pick(|node| node.breaker.admits(now)).expect("a node");
            let (permit, transition) = node.breaker.admit(now).expect("closed");
            black_box(transition);
            node.breaker.record(permit, Outcome::Success, now)
        })
    });
}

/// The overload-shedding stage's fast path: a free slot taken and released (semaphore
/// `try_acquire` + in-flight gauge up and down), as every uncached call pays it.
fn shed(c: &mut Criterion) {
    use futures_util::FutureExt;
    let metrics = sms_gateway::telemetry::Metrics::new();
    let shedder = sms_gateway::upstream::shed::Shedder::new(&Default::default(), &metrics);
    c.bench_function("shed/admit + release (free slot)", |b| {
        // A free slot is taken without waiting: the future is ready on first poll.
        b.iter(|| {
            let slot = shedder
                .admit(sms_gateway::upstream::Service::Outing)
                .now_or_never()
                .expect("ready at once")
                .expect("free");
            black_box(&slot);
        })
    });
}

fn reply(c: &mut Criterion) {
    // The success of GET /v1/outings/uuid/{outing_uuid} (the outing adapter's fields).
    c.bench_function("reply/success envelope (outing inform)", |b| {
        b.iter(|| {
            let success =
                Success::message("succeed to get outing inform with outing uuid").with(fields!({
                    "outing_uuid": black_box(outing::APPROVED_OUTING),
                    "place": "병원",
                    "reason": "진료",
                    "start_time": 1_767_312_000_i64,
                    "end_time": 1_767_319_200_i64,
                    "outing_situation": "emergency",
                    "outing_status": "teacher-approved",
                    "student_uuid": seed::STUDENT_UUID,
                }));
            sms_gateway::pipeline::success_body(http::StatusCode::OK, success)
        })
    });
}

/// Cache keys as the read path renders them, with the templates of two outing reads: a
/// path parameter only, and a path parameter with two query fields.
fn cache_key(c: &mut Criterion) {
    let by_outing =
        Template::parse("outings.$outing_uuid", &["outing_uuid"], &[]).expect("a valid template");
    let params = PathParams(vec![(
        "outing_uuid".to_owned(),
        outing::APPROVED_OUTING.to_owned(),
    )]);
    let values = Values {
        params: &params,
        query: None,
        caller: seed::STUDENT_UUID,
    };
    c.bench_function("cache/key (outings.$outing_uuid)", |b| {
        b.iter(|| by_outing.to_key(black_box(&values)))
    });
    let page = Template::parse(
        "students.$student_uuid.outings.start.$start.count.$count",
        &["student_uuid"],
        &["start", "count"],
    )
    .expect("a valid template");
    let params = PathParams(vec![(
        "student_uuid".to_owned(),
        seed::STUDENT_UUID.to_owned(),
    )]);
    let values = Values {
        params: &params,
        query: Some("start=0&count=10"),
        caller: seed::STUDENT_UUID,
    };
    c.bench_function("cache/key (student outings page, two query fields)", |b| {
        b.iter(|| page.to_key(black_box(&values)))
    });
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(30)
}

criterion_group! {
    name = hot_path;
    config = config();
    targets = jwt, access, bind, upstream, shed, reply, cache_key
}
criterion_main!(hot_path);
