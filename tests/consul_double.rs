//! Tests of the Consul double itself (`tests/support/consul.rs`), over real HTTP.

#[allow(dead_code)]
#[path = "support/consul.rs"]
mod consul;

use std::collections::BTreeSet;
use std::time::Duration;

use consul::{CheckStatus, ConsulDouble};
use reqwest::header::HeaderMap;
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use tokio::time::{Instant, timeout};

const SERVICE: &str = "DMS.SMS.v1.service.outing";
const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/consul");
/// Bound for anything that must happen "at once" (far below the waits used).
const LIMIT: Duration = Duration::from_secs(10);

/// What a test needs of an answer.
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Answer {
    async fn from(response: reqwest::Response) -> Self {
        Self {
            status: response.status(),
            headers: response.headers().clone(),
            body: response.text().await.expect("read the body"),
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    fn index(&self) -> u64 {
        self.header("X-Consul-Index")
            .expect("an X-Consul-Index header")
            .parse()
            .expect("a numeric index")
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).expect("a JSON body")
    }

    /// The `Service.ID`s of a health answer, sorted.
    fn ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .json()
            .as_array()
            .expect("an array")
            .iter()
            .map(|entry| entry["Service"]["ID"].as_str().expect("an ID").to_owned())
            .collect();
        ids.sort();
        ids
    }
}

async fn get(client: &Client, url: &str) -> Answer {
    Answer::from(client.get(url).send().await.expect("send GET")).await
}

async fn put(client: &Client, url: &str, body: Option<&Value>) -> Answer {
    let request = client.put(url);
    let request = match body {
        Some(body) => request.json(body),
        None => request,
    };
    Answer::from(request.send().await.expect("send PUT")).await
}

fn health_url(consul: &ConsulDouble, query: &str) -> String {
    format!("{}/v1/health/service/{SERVICE}?{query}", consul.url())
}

async fn health(consul: &ConsulDouble, query: &str) -> Answer {
    get(&Client::new(), &health_url(consul, query)).await
}

fn fixture(name: &str) -> Value {
    let path = format!("{FIXTURES}/{name}");
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("read {path}: {error}"));
    serde_json::from_str(&text).expect("a JSON fixture")
}

fn ttl_registration(id: &str, ttl: &str) -> Value {
    json!({
        "ID": id,
        "Name": SERVICE,
        "Address": "10.0.0.1",
        "Port": 10110,
        "Check": {"TTL": ttl, "Status": "passing"},
    })
}

/// Waits until the double has received `count` blocking health queries.
async fn blocked_queries(consul: &ConsulDouble, count: usize) {
    let blocking = |c: &ConsulDouble| c.count(|r| r.param("index").is_some_and(|i| i != "0"));
    timeout(LIMIT, consul.wait_for(|c| blocking(c) >= count))
        .await
        .expect("the blocking query reached the double");
}

// --- shapes -------------------------------------------------------------------------------------

#[tokio::test]
async fn health_answer_has_consul_shapes_and_headers() {
    let consul = ConsulDouble::start().await;
    let check_id = consul.register_ttl(SERVICE, "outing-1", "", 10111);

    let answer = health(&consul, "passing=true").await;

    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.header("content-type"), Some("application/json"));
    assert_eq!(answer.index(), consul.index(SERVICE));
    assert_eq!(answer.header("X-Consul-KnownLeader"), Some("true"));
    assert_eq!(answer.header("X-Consul-LastContact"), Some("0"));
    let entries = answer.json();
    let entry = &entries[0];
    assert_eq!(entries.as_array().map(Vec::len), Some(1));
    assert_eq!(entry["Node"]["Node"], "node-1");
    assert_eq!(entry["Node"]["Address"], "127.0.0.1");
    assert_eq!(entry["Service"]["ID"], "outing-1");
    assert_eq!(entry["Service"]["Service"], SERVICE);
    assert_eq!(
        entry["Service"]["Address"], "",
        "the address rule: empty, use Node.Address"
    );
    assert_eq!(entry["Service"]["Port"], 10111);
    assert_eq!(entry["Service"]["Tags"], json!([]));
    assert_eq!(entry["Service"]["Meta"], json!({}));
    let checks = entry["Checks"].as_array().expect("checks");
    assert_eq!(checks[0]["CheckID"], "serfHealth");
    assert_eq!(checks[0]["Type"], "");
    assert_eq!(checks[0]["ServiceID"], "");
    assert_eq!(checks[1]["CheckID"], check_id.as_str());
    assert_eq!(checks[1]["Type"], "ttl");
    assert_eq!(checks[1]["Status"], "passing");
    assert_eq!(checks[1]["ServiceID"], "outing-1");
    assert_eq!(checks[1]["ServiceName"], SERVICE);
}

#[tokio::test]
async fn unknown_service_is_an_empty_list() {
    let consul = ConsulDouble::start().await;

    let answer = get(
        &Client::new(),
        &format!("{}/v1/health/service/nope?passing=true", consul.url()),
    )
    .await;

    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body, "[]");
    assert!(answer.index() > 0);
}

/// Every field of the sample answer exists in the double's answer.
#[tokio::test]
async fn health_answer_has_every_field_of_the_fixture() {
    let consul = ConsulDouble::start().await;
    consul.register_ttl(SERVICE, "outing-1", "10.0.1.21", 10110);
    let sample = fixture("health-service-outing.json");

    let answer = health(&consul, "passing=true").await.json();

    let keys = |value: &Value| -> BTreeSet<String> {
        value
            .as_object()
            .expect("an object")
            .keys()
            .cloned()
            .collect()
    };
    let (ours, theirs) = (&answer[0], &sample[0]);
    for part in ["Node", "Service"] {
        let missing: Vec<_> = keys(&theirs[part])
            .difference(&keys(&ours[part]))
            .cloned()
            .collect();
        assert!(missing.is_empty(), "{part} lacks {missing:?}");
    }
    for (our_check, their_check) in ours["Checks"]
        .as_array()
        .unwrap()
        .iter()
        .zip(theirs["Checks"].as_array().unwrap())
    {
        let missing: Vec<_> = keys(their_check)
            .difference(&keys(our_check))
            .cloned()
            .collect();
        assert!(missing.is_empty(), "a check lacks {missing:?}");
    }
    assert_eq!(keys(ours), keys(theirs));
    assert_eq!(
        ours["Service"]["TaggedAddresses"],
        theirs["Service"]["TaggedAddresses"]
    );
}

// --- registration -------------------------------------------------------------------------------

#[tokio::test]
async fn fixture_registration_is_visible() {
    let consul = ConsulDouble::start().await;
    let client = Client::new();
    let body = fixture("service-register-ttl.json");

    let answer = put(
        &client,
        &format!("{}/v1/agent/service/register", consul.url()),
        Some(&body),
    )
    .await;

    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body, "");
    let entries = health(&consul, "passing=true").await.json();
    let service = &entries[0]["Service"];
    assert_eq!(service["ID"], "outing-6c1f2a");
    assert_eq!(service["Address"], "10.0.1.21");
    assert_eq!(service["Port"], 10110);
    assert_eq!(service["Tags"], json!(["grpc", "v1"]));
    assert_eq!(service["Meta"], json!({"version": "1.0.4"}));
    let check = &entries[0]["Checks"][1];
    assert_eq!(check["CheckID"], "service:outing-6c1f2a");
    assert_eq!(check["Name"], "Service 'DMS.SMS.v1.service.outing' check");
    assert_eq!(check["Status"], "passing");
    assert_eq!(check["ServiceTags"], json!(["grpc", "v1"]));
    assert_eq!(
        consul.check_status("service:outing-6c1f2a"),
        Some(CheckStatus::Passing)
    );
    assert_eq!(consul.instances(SERVICE)[0].target(), "10.0.1.21:10110");
}

#[tokio::test]
async fn registration_follows_consul_defaults() {
    let consul = ConsulDouble::start().await;
    let client = Client::new();
    let url = format!("{}/v1/agent/service/register", consul.url());

    let several = json!({"Name": "svc", "Port": 1, "Checks": [{"TTL": "10s"}, {"TTL": "10s", "Status": "passing"}]});
    assert_eq!(
        put(&client, &url, Some(&several)).await.status,
        StatusCode::OK
    );
    // Go's encoding/json matches keys case-insensitively.
    let lower = json!({"name": "lower", "id": "lower-1", "port": 2, "check": {"ttl": "5s", "status": "warning"}});
    assert_eq!(
        put(&client, &url, Some(&lower)).await.status,
        StatusCode::OK
    );

    assert_eq!(
        consul.all_instances("svc")[0].id,
        "svc",
        "the ID defaults to the name"
    );
    assert_eq!(consul.checks_of("svc"), ["service:svc:1", "service:svc:2"]);
    assert_eq!(
        consul.check_status("service:svc:1"),
        Some(CheckStatus::Critical),
        "TTL checks start critical"
    );
    assert_eq!(
        consul.check_status("service:svc:2"),
        Some(CheckStatus::Passing)
    );
    assert_eq!(
        consul.check_status("service:lower-1"),
        Some(CheckStatus::Warning)
    );
}

#[tokio::test]
async fn registration_errors_are_plain_text() {
    let consul = ConsulDouble::start().await;
    let client = Client::new();
    let url = format!("{}/v1/agent/service/register", consul.url());
    let cases = [
        (json!({"Port": 1}), "Missing service name"),
        (
            json!({"Name": "s", "Address": "0.0.0.0"}),
            "Invalid service address",
        ),
        (
            json!({"Name": "s", "Check": {"Name": "c"}}),
            "Invalid check: TTL must be > 0 for TTL checks",
        ),
        (
            json!({"Name": "s", "Check": {"TTL": "5s", "Status": "up"}}),
            "Status for checks must 'passing', 'warning', 'critical'",
        ),
    ];
    for (body, message) in cases {
        let answer = put(&client, &url, Some(&body)).await;
        assert_eq!(
            (answer.status, answer.body.as_str()),
            (StatusCode::BAD_REQUEST, message)
        );
    }

    let http_check = json!({"Name": "s", "Check": {"HTTP": "http://x/health", "Interval": "10s"}});
    let answer = put(&client, &url, Some(&http_check)).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(answer.body.starts_with("Invalid check"), "{}", answer.body);
    let empty = put(&client, &url, None).await;
    assert_eq!(
        (empty.status, empty.body.as_str()),
        (StatusCode::BAD_REQUEST, "Request decode failed: EOF")
    );
    let wrong_method = get(&client, &url).await;
    assert_eq!(wrong_method.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(wrong_method.header("allow"), Some("OPTIONS,PUT"));
    assert!(consul.all_instances("s").is_empty());
}

// --- blocking queries ---------------------------------------------------------------------------

#[tokio::test]
async fn blocking_query_answers_at_once_when_the_index_is_stale() {
    let consul = ConsulDouble::start().await;
    consul.register_ttl(SERVICE, "outing-1", "10.0.0.1", 1);
    let current = consul.index(SERVICE);

    let answer = timeout(
        LIMIT,
        health(
            &consul,
            &format!("passing=true&index={}&wait=5m", current - 1),
        ),
    )
    .await
    .expect("a stale index is answered at once");

    assert_eq!(answer.index(), current);
    assert_eq!(answer.ids(), ["outing-1"]);
}

#[tokio::test]
async fn blocking_query_waits_for_a_change() {
    let consul = ConsulDouble::start().await;
    consul.register_ttl(SERVICE, "outing-1", "10.0.0.1", 1);
    let index = health(&consul, "passing=true").await.index();
    let url = health_url(&consul, &format!("passing=true&index={index}&wait=5m"));
    let blocked = tokio::spawn(async move { get(&Client::new(), &url).await });
    blocked_queries(&consul, 1).await;
    assert!(!blocked.is_finished(), "nothing changed yet");

    consul.register_ttl(SERVICE, "outing-2", "10.0.0.2", 2);

    let answer = timeout(LIMIT, blocked)
        .await
        .expect("woken by the change")
        .expect("the task");
    assert!(answer.index() > index);
    assert_eq!(answer.ids(), ["outing-1", "outing-2"]);
}

#[tokio::test]
async fn deregistering_the_last_instance_wakes_a_blocked_query() {
    let consul = ConsulDouble::start().await;
    consul.register_ttl(SERVICE, "outing-1", "10.0.0.1", 1);
    let index = consul.index(SERVICE);
    let url = health_url(&consul, &format!("index={index}&wait=5m"));
    let blocked = tokio::spawn(async move { get(&Client::new(), &url).await });
    blocked_queries(&consul, 1).await;

    let answer = put(
        &Client::new(),
        &format!("{}/v1/agent/service/deregister/outing-1", consul.url()),
        None,
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);

    let answer = timeout(LIMIT, blocked)
        .await
        .expect("woken")
        .expect("the task");
    assert!(answer.index() > index);
    assert_eq!(answer.body, "[]");
}

#[tokio::test]
async fn blocking_query_returns_the_same_index_and_body_after_the_wait() {
    let consul = ConsulDouble::start().await;
    consul.register_ttl(SERVICE, "outing-1", "10.0.0.1", 1);
    let before = health(&consul, "passing=true").await;
    let started = Instant::now();

    let after = health(
        &consul,
        &format!("passing=true&index={}&wait=200ms", before.index()),
    )
    .await;

    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(200),
        "returned after {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_secs(3),
        "returned after {elapsed:?}"
    );
    assert_eq!(after.index(), before.index());
    assert_eq!(after.body, before.body);
}

#[tokio::test]
async fn a_check_flip_wakes_a_blocked_passing_query() {
    let consul = ConsulDouble::start().await;
    let check = consul.register_ttl(SERVICE, "outing-1", "10.0.0.1", 1);
    consul.register_ttl(SERVICE, "outing-2", "10.0.0.2", 2);
    let index = consul.index(SERVICE);
    let url = health_url(&consul, &format!("passing=true&index={index}&wait=5m"));
    let blocked = tokio::spawn(async move { get(&Client::new(), &url).await });
    blocked_queries(&consul, 1).await;

    consul.set_check(&check, CheckStatus::Critical);

    let answer = timeout(LIMIT, blocked)
        .await
        .expect("woken")
        .expect("the task");
    assert!(answer.index() > index);
    assert_eq!(answer.ids(), ["outing-2"]);
}

#[tokio::test]
async fn query_parameters_are_validated_like_consul() {
    let consul = ConsulDouble::start().await;
    let cases = [
        ("wait=5", StatusCode::BAD_REQUEST, "Invalid wait time"),
        ("wait=soon", StatusCode::BAD_REQUEST, "Invalid wait time"),
        ("index=x", StatusCode::BAD_REQUEST, "Invalid index"),
        (
            "passing=maybe",
            StatusCode::BAD_REQUEST,
            "Invalid value for ?passing",
        ),
        (
            "stale&consistent",
            StatusCode::BAD_REQUEST,
            "Cannot specify ?stale with ?consistent, conflicting semantics.",
        ),
        (
            "dc=dc2",
            StatusCode::INTERNAL_SERVER_ERROR,
            "No path to datacenter",
        ),
    ];
    for (query, status, message) in cases {
        let answer = health(&consul, query).await;
        assert_eq!(
            (answer.status, answer.body.as_str()),
            (status, message),
            "{query}"
        );
    }
    for query in [
        "wait=1m30s",
        "wait=1.5s",
        "wait=100ms",
        "passing",
        "passing=1",
        "dc=dc1",
    ] {
        assert_eq!(
            health(&consul, query).await.status,
            StatusCode::OK,
            "{query}"
        );
    }
}

#[tokio::test]
async fn tag_filter_keeps_instances_with_every_tag() {
    let consul = ConsulDouble::start().await;
    let register = |id: &str, tags: Value| {
        consul
            .register_json(json!({"ID": id, "Name": SERVICE, "Port": 1, "Tags": tags, "Check": {"TTL": "1h", "Status": "passing"}}))
            .expect("register");
    };
    register("a", json!(["grpc", "v1"]));
    register("b", json!(["grpc"]));

    assert_eq!(health(&consul, "tag=grpc").await.ids(), ["a", "b"]);
    assert_eq!(health(&consul, "tag=grpc&tag=v1").await.ids(), ["a"]);
}

// --- health filtering ---------------------------------------------------------------------------

#[tokio::test]
async fn passing_filter_hides_unhealthy_instances() {
    let consul = ConsulDouble::start().await;
    let check_a = consul.register_ttl(SERVICE, "a", "10.0.0.1", 1);
    consul.register_ttl(SERVICE, "b", "10.0.0.2", 2);
    let index = consul.index(SERVICE);

    consul.set_check(&check_a, CheckStatus::Critical);
    assert_eq!(health(&consul, "passing=true").await.ids(), ["b"]);
    assert_eq!(
        health(&consul, "").await.ids(),
        ["a", "b"],
        "without ?passing every instance"
    );
    assert!(consul.index(SERVICE) > index);

    consul.set_check(&check_a, CheckStatus::Warning);
    assert_eq!(
        health(&consul, "passing=true").await.ids(),
        ["b"],
        "warning is not passing"
    );

    consul.set_check(&check_a, CheckStatus::Passing);
    assert_eq!(health(&consul, "passing=true").await.ids(), ["a", "b"]);

    consul.set_node_check(CheckStatus::Critical);
    assert_eq!(
        health(&consul, "passing=true").await.body,
        "[]",
        "the node check gates every instance"
    );
    consul.set_node_check(CheckStatus::Passing);
    assert_eq!(consul.instances(SERVICE).len(), 2);
}

#[tokio::test]
async fn maintenance_hides_an_instance_until_disabled() {
    let consul = ConsulDouble::start().await;
    let client = Client::new();
    let check_a = consul.register_ttl(SERVICE, "a", "10.0.0.1", 1);
    consul.register_ttl(SERVICE, "b", "10.0.0.2", 2);
    let maintenance =
        |query: &str| format!("{}/v1/agent/service/maintenance/a?{query}", consul.url());
    let index = consul.index(SERVICE);

    let answer = put(&client, &maintenance("enable=true&reason=deploy"), None).await;

    assert_eq!(answer.status, StatusCode::OK);
    assert!(consul.maintenance_enabled("a"));
    assert!(consul.index(SERVICE) > index);
    assert_eq!(health(&consul, "passing=true").await.ids(), ["b"]);
    let all = health(&consul, "").await.json();
    let check = all[0]["Checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|check| check["CheckID"] == "_service_maintenance:a")
        .expect("the maintenance check")
        .clone();
    assert_eq!(check["Name"], "Service Maintenance Mode");
    assert_eq!(check["Notes"], "deploy");
    assert_eq!(check["Status"], "critical");
    assert_eq!(check["ServiceID"], "a");

    // A heartbeat does not override maintenance.
    let heartbeat = put(
        &client,
        &format!("{}/v1/agent/check/pass/{check_a}", consul.url()),
        None,
    )
    .await;
    assert_eq!(heartbeat.status, StatusCode::OK);
    assert_eq!(health(&consul, "passing=true").await.ids(), ["b"]);

    let answer = put(&client, &maintenance("enable=false"), None).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(!consul.maintenance_enabled("a"));
    assert_eq!(health(&consul, "passing=true").await.ids(), ["a", "b"]);
}

// --- TTL ----------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn ttl_check_expires_on_a_paused_clock() {
    let consul = ConsulDouble::start().await;
    let client = Client::new();
    let registered = put(
        &client,
        &format!("{}/v1/agent/service/register", consul.url()),
        Some(&ttl_registration("a", "10s")),
    )
    .await;
    assert_eq!(registered.status, StatusCode::OK);
    let index = health(&consul, "passing=true").await.index();
    let started = Instant::now();

    let answer = health(&consul, &format!("passing=true&index={index}&wait=5m")).await;

    assert!(started.elapsed() >= Duration::from_secs(10));
    assert!(answer.index() > index);
    assert_eq!(answer.body, "[]");
    assert_eq!(
        consul.check_status("service:a"),
        Some(CheckStatus::Critical)
    );
    assert_eq!(
        consul.check_output("service:a").as_deref(),
        Some("TTL expired")
    );
}

#[tokio::test]
async fn ttl_check_expires_in_real_time() {
    let consul = ConsulDouble::start().await;
    consul
        .register_json(ttl_registration("a", "300ms"))
        .expect("register");
    let index = consul.index(SERVICE);
    let started = Instant::now();

    let answer = timeout(
        LIMIT,
        health(&consul, &format!("passing=true&index={index}&wait=1m")),
    )
    .await
    .expect("woken by the expiry");

    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(answer.body, "[]");
    assert_eq!(
        consul.check_status("service:a"),
        Some(CheckStatus::Critical)
    );
}

#[tokio::test(start_paused = true)]
async fn a_check_update_restarts_the_ttl() {
    let consul = ConsulDouble::start().await;
    let client = Client::new();
    consul
        .register_json(ttl_registration("a", "10s"))
        .expect("register");
    let update = format!("{}/v1/agent/check/update/service:a", consul.url());

    tokio::time::advance(Duration::from_secs(8)).await;
    let answer = put(
        &client,
        &update,
        Some(&json!({"Status": "passing", "Output": "ok"})),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    tokio::time::advance(Duration::from_secs(8)).await;
    tokio::task::yield_now().await;
    assert_eq!(
        consul.check_status("service:a"),
        Some(CheckStatus::Passing),
        "16 s after registering, 8 s after the update"
    );

    tokio::time::advance(Duration::from_secs(3)).await;
    timeout(
        LIMIT,
        consul.wait_for(|c| c.check_status("service:a") == Some(CheckStatus::Critical)),
    )
    .await
    .expect("expired 10 s after the update");
    assert_eq!(
        consul.check_output("service:a").as_deref(),
        Some("TTL expired (last output before timeout follows): ok")
    );
}

#[tokio::test(start_paused = true)]
async fn legacy_pass_and_fail_set_the_status_and_note() {
    let consul = ConsulDouble::start().await;
    let client = Client::new();
    consul
        .register_json(ttl_registration("a", "10s"))
        .expect("register");

    let fail = put(
        &client,
        &format!("{}/v1/agent/check/fail/service:a?note=broken", consul.url()),
        None,
    )
    .await;
    assert_eq!(fail.status, StatusCode::OK);
    assert_eq!(
        consul.check_status("service:a"),
        Some(CheckStatus::Critical)
    );
    assert_eq!(consul.check_output("service:a").as_deref(), Some("broken"));

    let pass = put(
        &client,
        &format!("{}/v1/agent/check/pass/service:a", consul.url()),
        None,
    )
    .await;
    assert_eq!(pass.status, StatusCode::OK);
    assert_eq!(consul.check_status("service:a"), Some(CheckStatus::Passing));
}

#[tokio::test(start_paused = true)]
async fn a_service_critical_for_too_long_is_reaped() {
    let consul = ConsulDouble::start().await;
    let mut registration = ttl_registration("a", "10s");
    // Consul raises anything under a minute to a minute.
    registration["Check"]["DeregisterCriticalServiceAfter"] = json!("30s");
    consul.register_json(registration).expect("register");
    let started = Instant::now();

    timeout(
        Duration::from_secs(600),
        consul.wait_for(|c| c.all_instances(SERVICE).is_empty()),
    )
    .await
    .expect("reaped");

    assert!(
        started.elapsed() >= Duration::from_secs(70),
        "{:?}",
        started.elapsed()
    );
    assert!(consul.check_status("service:a").is_none());
}

// --- errors -------------------------------------------------------------------------------------

#[tokio::test]
async fn check_endpoints_answer_consul_errors() {
    let consul = ConsulDouble::start().await;
    let client = Client::new();
    consul.register_ttl(SERVICE, "a", "10.0.0.1", 1);
    consul.set_maintenance("a", true, "");
    let url = |path: &str| format!("{}{path}", consul.url());
    let passing = json!({"Status": "passing"});

    let unknown = put(&client, &url("/v1/agent/check/update/nope"), Some(&passing)).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(
        unknown.body,
        r#"Unknown check ID "nope". Ensure that the check ID is passed, not the check name."#
    );
    assert_eq!(
        put(&client, &url("/v1/agent/check/pass/nope"), None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        put(
            &client,
            &url("/v1/agent/check/update/serfHealth"),
            Some(&passing)
        )
        .await
        .status,
        StatusCode::NOT_FOUND
    );

    let invalid = put(
        &client,
        &url("/v1/agent/check/update/service:a"),
        Some(&json!({"Status": "bogus"})),
    )
    .await;
    assert_eq!(
        (invalid.status, invalid.body.as_str()),
        (StatusCode::BAD_REQUEST, "Invalid check status: 'bogus'")
    );

    let maintenance = put(
        &client,
        &url("/v1/agent/check/update/_service_maintenance:a"),
        Some(&passing),
    )
    .await;
    assert_eq!(maintenance.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        maintenance.body,
        r#"CheckID "_service_maintenance:a" does not have associated TTL"#
    );

    let wrong_method = get(&client, &url("/v1/agent/check/update/service:a")).await;
    assert_eq!(
        (wrong_method.status, wrong_method.body.as_str()),
        (StatusCode::METHOD_NOT_ALLOWED, "method GET not allowed")
    );
}

#[tokio::test]
async fn service_endpoints_answer_consul_errors() {
    let consul = ConsulDouble::start().await;
    let client = Client::new();
    consul.register_ttl(SERVICE, "a", "10.0.0.1", 1);
    let url = |path: &str| format!("{}{path}", consul.url());

    let unknown = put(
        &client,
        &url("/v1/agent/service/maintenance/nope?enable=true"),
        None,
    )
    .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(
        unknown.body,
        r#"Unknown service ID "nope". Ensure that the service ID is passed, not the service name."#
    );
    let missing = put(&client, &url("/v1/agent/service/maintenance/a"), None).await;
    assert_eq!(
        (missing.status, missing.body.as_str()),
        (StatusCode::BAD_REQUEST, "Missing value for enable")
    );
    let invalid = put(
        &client,
        &url("/v1/agent/service/maintenance/a?enable=maybe"),
        None,
    )
    .await;
    assert_eq!(
        (invalid.status, invalid.body.as_str()),
        (
            StatusCode::BAD_REQUEST,
            r#"Invalid value for enable: "maybe""#
        )
    );
    assert_eq!(
        put(&client, &url("/v1/agent/service/deregister/nope"), None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get(&client, &url("/v1/kv/anything")).await.status,
        StatusCode::NOT_FOUND
    );
    assert!(!consul.maintenance_enabled("a"));
}

// --- ACL ----------------------------------------------------------------------------------------

#[tokio::test]
async fn acl_token_is_required_in_the_header() {
    let consul = ConsulDouble::start_with_token(Some("secret")).await;
    let client = Client::new();
    consul.register_ttl(SERVICE, "a", "10.0.0.1", 1);
    let register = format!("{}/v1/agent/service/register", consul.url());
    let body = ttl_registration("b", "10s");
    let send = |url: String, token: Option<&'static str>| {
        let request = client.put(url).json(&body);
        let request = match token {
            Some(token) => request.header("X-Consul-Token", token),
            None => request,
        };
        async move { Answer::from(request.send().await.expect("send")).await }
    };

    let anonymous = send(register.clone(), None).await;
    assert_eq!(anonymous.status, StatusCode::FORBIDDEN);
    assert!(
        anonymous.body.starts_with("Permission denied"),
        "{}",
        anonymous.body
    );
    let unknown = send(register.clone(), Some("wrong")).await;
    assert_eq!(
        (unknown.status, unknown.body.as_str()),
        (StatusCode::FORBIDDEN, "ACL not found")
    );
    let in_query = send(format!("{register}?token=secret"), None).await;
    assert_eq!(
        in_query.status,
        StatusCode::FORBIDDEN,
        "tokens in the query string are not accepted"
    );
    assert!(
        consul
            .all_instances(SERVICE)
            .iter()
            .all(|instance| instance.id != "b")
    );
    assert_eq!(send(register, Some("secret")).await.status, StatusCode::OK);

    let check = format!("{}/v1/agent/check/pass/service:a", consul.url());
    assert_eq!(
        put(&client, &check, None).await.status,
        StatusCode::FORBIDDEN
    );
    let bearer = client
        .put(&check)
        .bearer_auth("secret")
        .send()
        .await
        .expect("send");
    assert_eq!(bearer.status(), StatusCode::OK);

    // Reads without a token are filtered, as with a default-deny policy.
    let filtered = health(&consul, "passing=true").await;
    assert_eq!(
        (filtered.status, filtered.body.as_str()),
        (StatusCode::OK, "[]")
    );
    assert_eq!(
        filtered.header("X-Consul-Results-Filtered-By-ACLs"),
        Some("true")
    );
    assert!(filtered.index() > 0);
    let read = client
        .get(health_url(&consul, "passing=true"))
        .header("X-Consul-Token", "secret")
        .send()
        .await
        .expect("send");
    assert_eq!(Answer::from(read).await.ids(), ["a", "b"]);
    let unknown_read = client
        .get(health_url(&consul, ""))
        .header("X-Consul-Token", "wrong")
        .send()
        .await
        .expect("send");
    assert_eq!(unknown_read.status(), StatusCode::FORBIDDEN);
}

// --- fault injection ----------------------------------------------------------------------------

#[tokio::test]
async fn failures_can_be_injected() {
    let consul = ConsulDouble::start().await;
    consul.register_ttl(SERVICE, "a", "10.0.0.1", 1);

    consul.set_fail_next(2, 500);
    for _ in 0..2 {
        let answer = health(&consul, "passing=true").await;
        assert_eq!(answer.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(answer.body.starts_with("rpc error"), "{}", answer.body);
        assert!(answer.header("X-Consul-Index").is_none());
    }
    assert_eq!(health(&consul, "passing=true").await.status, StatusCode::OK);

    consul.set_fail_next_with(1, 429, "rate limit exceeded");
    let limited = health(&consul, "").await;
    assert_eq!(
        (limited.status, limited.body.as_str()),
        (StatusCode::TOO_MANY_REQUESTS, "rate limit exceeded")
    );
    assert_eq!(health(&consul, "").await.status, StatusCode::OK);
}

#[tokio::test]
async fn the_index_can_go_backwards_or_to_zero() {
    let consul = ConsulDouble::start().await;
    consul.register_ttl(SERVICE, "a", "10.0.0.1", 1);
    let index = consul.index(SERVICE);
    assert!(index > 2);
    let url = health_url(&consul, &format!("index={index}&wait=5m"));
    let blocked = tokio::spawn(async move { get(&Client::new(), &url).await });
    blocked_queries(&consul, 1).await;

    consul.reset_index(SERVICE, 2);

    let answer = timeout(LIMIT, blocked)
        .await
        .expect("returns at once")
        .expect("the task");
    assert_eq!(answer.index(), 2);
    assert_eq!(answer.ids(), ["a"]);
    let started = Instant::now();
    let again = health(&consul, &format!("index={index}&wait=200ms")).await;
    assert_eq!(again.index(), 2, "still lower than the index sent");
    assert!(started.elapsed() >= Duration::from_millis(200));

    consul.reset_index(SERVICE, 0);
    assert_eq!(health(&consul, "").await.index(), 0);

    consul.register_ttl(SERVICE, "b", "10.0.0.2", 2);
    assert!(
        health(&consul, "").await.index() > index,
        "a change takes the next global index"
    );
}

// --- request log --------------------------------------------------------------------------------

#[tokio::test]
async fn requests_are_recorded() {
    let consul = ConsulDouble::start().await;
    let client = Client::new();
    let check = consul.register_ttl(SERVICE, "a", "10.0.0.1", 1);

    for _ in 0..3 {
        let response = client
            .get(health_url(&consul, "passing=true&index=1"))
            .header("X-Consul-Token", "t")
            .send()
            .await;
        assert_eq!(response.expect("send").status(), StatusCode::OK);
    }
    let body = json!({"Status": "passing", "Output": "fine"});
    put(
        &client,
        &format!("{}/v1/agent/check/update/{check}", consul.url()),
        Some(&body),
    )
    .await;

    assert_eq!(
        consul.count(|r| r.path.starts_with("/v1/health/service/")),
        3
    );
    let requests = consul.requests();
    assert_eq!(requests.len(), 4);
    assert_eq!(requests[0].method, reqwest::Method::GET);
    assert_eq!(requests[0].param("passing").as_deref(), Some("true"));
    assert_eq!(requests[0].token(), Some("t"));
    assert_eq!(requests[3].method, reqwest::Method::PUT);
    assert_eq!(requests[3].path, "/v1/agent/check/update/service:a");
    assert_eq!(requests[3].json(), Some(body));
    assert!(requests[0].at <= requests[3].at);
    consul.clear_requests();
    assert!(consul.requests().is_empty());
}

// --- Consul down, Consul back -------------------------------------------------------------------

#[tokio::test]
async fn pause_cuts_connections_and_resume_keeps_the_state() {
    let consul = ConsulDouble::start().await;
    let client = Client::new();
    consul.register_ttl(SERVICE, "a", "10.0.0.1", 1);
    let url = health_url(&consul, "passing=true");
    let before = get(&client, &url).await;
    let blocked_url = health_url(&consul, &format!("index={}&wait=5m", before.index()));
    let blocked = tokio::spawn(async move { Client::new().get(blocked_url).send().await });
    blocked_queries(&consul, 1).await;

    consul.pause().await;

    assert!(consul.is_paused());
    let cut = timeout(LIMIT, blocked)
        .await
        .expect("ends at once")
        .expect("the task");
    assert!(
        cut.is_err(),
        "a blocked query fails when Consul goes down: {cut:?}"
    );
    let refused = client.get(&url).send().await;
    assert!(refused.is_err(), "even on a pooled connection: {refused:?}");
    consul.register_ttl(SERVICE, "b", "10.0.0.2", 2);

    consul.resume().await;

    assert!(!consul.is_paused());
    let after = get(&client, &url).await;
    assert_eq!(after.status, StatusCode::OK);
    assert_eq!(after.ids(), ["a", "b"]);
    assert!(after.index() > before.index());
}
