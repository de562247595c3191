//! Traffic protection through the whole gateway: the client-IP guard in front of the
//! router and the per-service rate limit in the pipeline (the guard's own logic is
//! tested in tests/guard.rs).

mod support;

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use reqwest::Method;
use sms_gateway::guard::config::RateConfig;
use sms_gateway::upstream::Service;
use support::{Gateway, seed};

const STUDENT: &str = seed::STUDENT_UUID;

fn limit(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).expect("non-zero")
}

#[tokio::test]
async fn a_flooding_ip_gets_429_then_403_while_others_and_ping_pass() {
    let gw = Gateway::start_with(Default::default(), |config| {
        config.guard.ip.limit = limit(5);
        config.guard.ip.block = Duration::from_secs(60);
    })
    .await;
    let path = format!("/v1/students/uuid/{STUDENT}");
    let mut statuses = Vec::new();
    for _ in 0..8 {
        let response = gw
            .client
            .get(gw.url(&path))
            .bearer_auth(gw.token(STUDENT))
            .send()
            .await
            .expect("response");
        let status = response.status().as_u16();
        if status == 429 {
            assert!(response.headers().contains_key("retry-after"));
        }
        let body: serde_json::Value = response.json().await.expect("envelope");
        support::assert_envelope(status, &body);
        statuses.push(status);
    }
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429, 403, 403]);
    // Exempt path.
    let ping = gw.client.get(gw.url("/ping")).send().await.expect("ping");
    assert_eq!(ping.status(), 200);
    // Another client address is unaffected.
    let other = reqwest::Client::builder()
        .local_address(IpAddr::from([127, 0, 0, 2]))
        .build()
        .expect("client");
    let response = other
        .get(gw.url(&path))
        .bearer_auth(gw.token(STUDENT))
        .send()
        .await
        .expect("response");
    let status = response.status();
    assert_eq!(status, 200, "{}", response.text().await.unwrap_or_default());
    // Metrics are on the admin listener, which the guard does not count.
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains(r#"sms_gateway_rejections_total{kind="ip_limited",service=""} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"sms_gateway_rejections_total{kind="ip_blocked",service=""} 2"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_service_at_its_ceiling_answers_429_without_calling_the_backend() {
    let gw = Gateway::start_with(Default::default(), |config| {
        config.guard.services.overrides.insert(
            Service::Club,
            RateConfig {
                per_second: limit(1),
                burst: limit(2),
            },
        );
    })
    .await;
    let calls_before = gw.shared.metadata.all().len();
    let mut statuses = Vec::new();
    let mut headers = None;
    for _ in 0..4 {
        let response = gw
            .client
            .get(gw.url("/v1/clubs/count"))
            .bearer_auth(gw.token(STUDENT))
            .send()
            .await
            .expect("response");
        statuses.push(response.status().as_u16());
        if response.status() == 429 {
            headers = Some(response.headers().clone());
        }
    }
    assert_eq!(statuses, [200, 200, 429, 429]);
    let headers = headers.expect("a 429");
    assert!(headers.contains_key("retry-after"));
    assert!(headers.contains_key("ratelimit"), "{headers:?}");
    assert!(headers.contains_key("ratelimit-policy"), "{headers:?}");
    assert_eq!(
        gw.shared.metadata.all().len(),
        calls_before + 2,
        "refused requests never reach the backend"
    );
    // Other services keep answering.
    for _ in 0..5 {
        let (status, _) = gw
            .call(
                Method::GET,
                &format!("/v1/students/uuid/{STUDENT}"),
                STUDENT,
                None,
            )
            .await;
        assert_eq!(status, 200);
    }
}
