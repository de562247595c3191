//! The audit stream: one structured event per security-relevant fact (failed login, 401,
//! 403, an IP blocked by the guard, a throttled login, a webhook call with a bad token,
//! a breaker flip written to Consul, the configuration loaded).
//!
//! Every event is
//! - counted in `sms_gateway_audit_events_total{kind}` (always, whatever the rate);
//! - written as one JSON log line with the target [`TARGET`] (`sms_gateway::audit`), so
//!   it can be routed apart from the access log, and optionally to its own file
//!   ([`file_layer`]);
//! - kept in a bounded in-memory ring read at `GET /admin/audit?since=<seq>` on the
//!   admin listener ([`crate::admin`]).
//!
//! Lines and ring entries are bounded per kind: at most `audit.max_per_second` events
//! of one kind per second; the rest are only counted
//! (`sms_gateway_audit_suppressed_total{kind}`), and the next event written of that
//! kind carries how many were suppressed before it. A flood of 401s therefore costs a
//! counter increment per request and cannot push the other kinds out of the ring.
//!
//! Events hold typed facts only (kind, client IP, account id or uuid, route template,
//! request id, a short detail chosen by the gateway); never a token, password, header
//! or body. Free text a client chose (a login id) is cut to [`MAX_TEXT`] characters
//! and stripped of control characters.

mod config;
mod request;

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde::Serialize;

pub use config::{AuditConfig, file_layer};
pub use request::{RequestFacts, classify};

use crate::telemetry::metrics::AuditLabels;

/// The tracing target of audit lines.
pub const TARGET: &str = "sms_gateway::audit";

/// Longest client-chosen text kept in an event (characters).
pub const MAX_TEXT: usize = 64;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditKind {
    /// A login endpoint answered that the id or password is wrong.
    LoginFailed,
    /// A request was refused with 401 (missing, malformed, expired or forged token).
    Unauthorized,
    /// A request was refused with 403 (account kind or owner), not counting guard blocks.
    Forbidden,
    /// The client-IP guard started blocking a client (the request that crossed the limit).
    IpBlocked,
    /// Login attempts of an account were throttled.
    LoginThrottled,
    /// `POST /events/types/consul-change` without the right `X-Gateway-Token`.
    WebhookBadToken,
    /// An instance was put into, or taken out of, Consul maintenance by its breaker.
    BreakerFlip,
    /// The gateway's configuration was loaded (at start-up).
    ConfigLoaded,
}

impl AuditKind {
    /// Every kind (the closed label set of the counters).
    pub const ALL: [AuditKind; 8] = [
        AuditKind::LoginFailed,
        AuditKind::Unauthorized,
        AuditKind::Forbidden,
        AuditKind::IpBlocked,
        AuditKind::LoginThrottled,
        AuditKind::WebhookBadToken,
        AuditKind::BreakerFlip,
        AuditKind::ConfigLoaded,
    ];

    /// The kind's name in lines, the ring and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditKind::LoginFailed => "login_failed",
            AuditKind::Unauthorized => "unauthorized",
            AuditKind::Forbidden => "forbidden",
            AuditKind::IpBlocked => "ip_blocked",
            AuditKind::LoginThrottled => "login_throttled",
            AuditKind::WebhookBadToken => "webhook_bad_token",
            AuditKind::BreakerFlip => "breaker_flip",
            AuditKind::ConfigLoaded => "config_loaded",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One event, as kept in the ring and served by `/admin/audit`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct AuditEvent {
    /// Position in this process's stream, from 1 (`since` of `/admin/audit`).
    pub seq: u64,
    /// RFC 3339, UTC, milliseconds.
    pub time: String,
    pub kind: AuditKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_ip: Option<IpAddr>,
    /// Account uuid (from a verified token) or login id (as typed, cut and cleaned).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// Route template, never a raw path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// A short fact chosen by the gateway (contract code, instance id, config summary).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Events of this kind suppressed by the rate bound since the previous one written.
    #[serde(skip_serializing_if = "is_zero")]
    pub suppressed: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// What a caller knows about an event; [`Audit::record`] adds sequence and time.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    pub client_ip: Option<IpAddr>,
    pub account: Option<String>,
    pub route: Option<String>,
    pub request_id: Option<String>,
    pub detail: Option<String>,
}

/// The audit stream of one gateway.
#[derive(Debug)]
pub struct Audit {
    state: Mutex<State>,
    capacity: usize,
    max_per_second: u32,
    /// Unix milliseconds when this stream started: a reader seeing it change knows the
    /// sequence restarted.
    epoch_ms: u64,
    events: Family<AuditLabels, Counter>,
    suppressed: Family<AuditLabels, Counter>,
    /// The sequence number of the newest event, for readers that wait for events.
    newest: tokio::sync::watch::Sender<u64>,
}

#[derive(Debug)]
struct State {
    ring: VecDeque<AuditEvent>,
    next_seq: u64,
    /// Per kind: start of the current one-second window, events written in it, and
    /// events suppressed since the last one written.
    windows: [Window; AuditKind::ALL.len()],
}

#[derive(Debug, Clone, Copy)]
struct Window {
    started: Option<Instant>,
    written: u32,
    suppressed: u64,
}

/// The answer of `GET /admin/audit`.
#[derive(Debug, Serialize)]
pub struct Page {
    /// Unix milliseconds when this process's stream started.
    pub epoch_ms: u64,
    /// Sequence number of the oldest event still in the ring (0 when empty).
    pub oldest: u64,
    /// Sequence number of the newest event recorded (0 when none): pass it as `since`
    /// next time.
    pub last: u64,
    /// Whether events after `since` were already pushed out of the ring.
    pub missed: bool,
    pub events: Vec<AuditEvent>,
}

impl Audit {
    /// A stream keeping the last `config.ring_size` events, counting into `events` and
    /// `suppressed` (families of the gateway's registry).
    pub fn new(
        config: &AuditConfig,
        events: Family<AuditLabels, Counter>,
        suppressed: Family<AuditLabels, Counter>,
    ) -> Self {
        let epoch_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Self {
            state: Mutex::new(State {
                ring: VecDeque::with_capacity(config.ring_size.min(4096)),
                next_seq: 1,
                windows: [Window {
                    started: None,
                    written: 0,
                    suppressed: 0,
                }; AuditKind::ALL.len()],
            }),
            capacity: config.ring_size.max(1),
            max_per_second: config.max_per_second.max(1),
            epoch_ms,
            events,
            suppressed,
            newest: tokio::sync::watch::Sender::new(0),
        }
    }

    /// Changes whenever an event is written (its value: the newest sequence number).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.newest.subscribe()
    }

    /// Records one event: counted always; written and kept unless its kind is over the
    /// rate bound. Returns the event when it was written.
    pub fn record(&self, kind: AuditKind, facts: Facts) -> Option<AuditEvent> {
        let labels = AuditLabels {
            kind: kind.as_str(),
        };
        self.events.get_or_create(&labels).inc();
        let now = Instant::now();
        let event = {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            let window = &mut state.windows[kind.index()];
            if window
                .started
                .is_none_or(|started| now.duration_since(started).as_secs() >= 1)
            {
                window.started = Some(now);
                window.written = 0;
            }
            if window.written >= self.max_per_second {
                window.suppressed += 1;
                drop(state);
                self.suppressed.get_or_create(&labels).inc();
                return None;
            }
            window.written += 1;
            let suppressed = std::mem::take(&mut window.suppressed);
            let event = AuditEvent {
                seq: state.next_seq,
                time: humantime_serde::re::humantime::format_rfc3339_millis(SystemTime::now())
                    .to_string(),
                kind,
                client_ip: facts.client_ip,
                account: facts.account.as_deref().map(clean),
                route: facts.route,
                request_id: facts.request_id,
                detail: facts.detail.as_deref().map(clean),
                suppressed,
            };
            state.next_seq += 1;
            if state.ring.len() >= self.capacity {
                state.ring.pop_front();
            }
            state.ring.push_back(event.clone());
            event
        };
        write_line(&event);
        self.newest.send_replace(event.seq);
        Some(event)
    }

    /// Events with a sequence number above `since`, oldest first.
    pub fn since(&self, since: u64) -> Page {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let oldest = state.ring.front().map_or(0, |e| e.seq);
        let events: Vec<AuditEvent> = state
            .ring
            .iter()
            .filter(|e| e.seq > since)
            .cloned()
            .collect();
        Page {
            epoch_ms: self.epoch_ms,
            oldest,
            last: state.next_seq - 1,
            missed: oldest > since.saturating_add(1),
            events,
        }
    }

    /// The breaker flip wrote `instance` of `service` into (`critical`) or out of
    /// Consul maintenance.
    pub fn breaker_flip(&self, service: &str, instance: &str, critical: bool) {
        let state = if critical { "critical" } else { "passing" };
        self.record(
            AuditKind::BreakerFlip,
            Facts {
                detail: Some(format!(
                    "service={service} instance={instance} consul={state}"
                )),
                ..Facts::default()
            },
        );
    }

    /// Login throttling refused an attempt (for `guard::login`): `scope` is
    /// `account_ip` or `account`.
    pub fn login_throttled(
        &self,
        client_ip: Option<IpAddr>,
        account: &str,
        scope: &'static str,
    ) -> Option<AuditEvent> {
        self.record(
            AuditKind::LoginThrottled,
            Facts {
                client_ip,
                account: Some(account.to_owned()),
                route: None,
                request_id: None,
                detail: Some(format!("scope={scope}")),
            },
        )
    }
}

/// `text` without control characters, at most [`MAX_TEXT`] characters.
fn clean(text: &str) -> String {
    text.chars()
        .filter(|c| !c.is_control())
        .take(MAX_TEXT)
        .collect()
}

fn write_line(event: &AuditEvent) {
    tracing::info!(
        target: TARGET,
        seq = event.seq,
        kind = event.kind.as_str(),
        client_ip = event.client_ip.map(tracing::field::display),
        account = event.account.as_deref(),
        route = event.route.as_deref(),
        request_id = event.request_id.as_deref(),
        detail = event.detail.as_deref(),
        suppressed = (event.suppressed > 0).then_some(event.suppressed),
        "audit"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::Metrics;

    fn audit(ring_size: usize, max_per_second: u32) -> (Audit, Metrics) {
        let metrics = Metrics::new();
        let config = AuditConfig {
            ring_size,
            max_per_second,
            ..AuditConfig::default()
        };
        let audit = Audit::new(
            &config,
            metrics.audit_events.clone(),
            metrics.audit_suppressed.clone(),
        );
        (audit, metrics)
    }

    #[test]
    fn the_ring_keeps_the_last_events_and_since_pages_through_them() {
        let (audit, _metrics) = audit(3, 100);
        for n in 0..5 {
            audit.record(
                AuditKind::Unauthorized,
                Facts {
                    detail: Some(format!("n={n}")),
                    ..Facts::default()
                },
            );
        }
        let page = audit.since(0);
        assert_eq!(page.events.len(), 3);
        assert_eq!((page.oldest, page.last), (3, 5));
        assert!(page.missed, "events 1 and 2 were pushed out");
        let page = audit.since(4);
        assert_eq!(page.events.iter().map(|e| e.seq).collect::<Vec<_>>(), [5]);
        assert!(!page.missed);
        assert!(audit.since(5).events.is_empty());
        assert!(audit.since(u64::MAX).events.is_empty());
    }

    #[test]
    fn a_flood_of_one_kind_is_counted_but_bounded_and_leaves_other_kinds_alone() {
        let (audit, metrics) = audit(100, 5);
        for _ in 0..1000 {
            audit.record(AuditKind::Unauthorized, Facts::default());
        }
        audit.record(AuditKind::LoginFailed, Facts::default());
        let page = audit.since(0);
        let unauthorized = page
            .events
            .iter()
            .filter(|e| e.kind == AuditKind::Unauthorized)
            .count();
        assert_eq!(unauthorized, 5);
        assert!(page.events.iter().any(|e| e.kind == AuditKind::LoginFailed));
        let text = metrics.render();
        assert!(
            text.contains(r#"sms_gateway_audit_events_total{kind="unauthorized"} 1000"#),
            "{text}"
        );
        assert!(
            text.contains(r#"sms_gateway_audit_suppressed_total{kind="unauthorized"} 995"#),
            "{text}"
        );
    }

    #[test]
    fn client_text_is_cut_and_cleaned() {
        let (audit, _metrics) = audit(10, 10);
        let long = format!("evil\n\u{1b}[31m{}", "x".repeat(500));
        let event = audit
            .record(
                AuditKind::LoginFailed,
                Facts {
                    account: Some(long),
                    ..Facts::default()
                },
            )
            .expect("written");
        let account = event.account.expect("account");
        assert_eq!(account.chars().count(), MAX_TEXT);
        assert!(!account.chars().any(char::is_control), "{account:?}");
    }

    #[test]
    fn events_serialise_without_unknown_facts() {
        let (audit, _metrics) = audit(10, 10);
        let event = audit
            .login_throttled(
                Some("192.0.2.7".parse().expect("ip")),
                "demostudent",
                "account",
            )
            .expect("written");
        let json = serde_json::to_value(&event).expect("json");
        assert_eq!(json["kind"], "login_throttled");
        assert_eq!(json["client_ip"], "192.0.2.7");
        assert_eq!(json["account"], "demostudent");
        assert_eq!(json["detail"], "scope=account");
        assert!(json.get("route").is_none() && json.get("suppressed").is_none());
        assert!(json["time"].as_str().is_some_and(|t| t.ends_with('Z')));
    }
}
