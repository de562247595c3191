//! Prometheus metrics (`GET /metrics`): requests and latency by route, upstream calls by
//! service/instance/outcome, breaker states, cache results, rejections, Consul watch
//! activity. Labels come from bounded sets (route templates, services, instance ids,
//! fixed outcome names). The registry lives in the gateway's state, not in a static.

use std::sync::OnceLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Metric, Registry};

/// The registry, remembering what was registered: empty families are left out of the
/// exposition, yet the alert and dashboard checks need every name the gateway can export.
#[derive(Debug)]
struct NamedRegistry {
    registry: Registry,
    prefix: &'static str,
    families: Vec<(String, MetricType)>,
}

impl NamedRegistry {
    fn with_prefix(prefix: &'static str) -> Self {
        Self {
            registry: Registry::with_prefix(prefix),
            prefix,
            families: Vec::new(),
        }
    }

    fn register(&mut self, name: &str, help: &str, metric: impl Metric) {
        self.families
            .push((format!("{}_{name}", self.prefix), metric.metric_type()));
        self.registry.register(name, help, metric);
    }
}

/// `route` = the matched route template (or `unmatched`); `method` one of
/// [`method_label`]'s names.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: &'static str,
    pub route: String,
    pub status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabels {
    pub service: &'static str,
    pub instance: String,
    pub outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceLabels {
    pub service: &'static str,
}

/// What an upstream call came to: the closed set of its `outcome` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallOutcome {
    Ok,
    Deadline,
    Unreachable,
    BreakerOpen,
    Error,
}

impl CallOutcome {
    const COUNT: usize = 5;

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Deadline => "deadline",
            Self::Unreachable => "unreachable",
            Self::BreakerOpen => "breaker_open",
            Self::Error => "error",
        }
    }
}

/// One instance's call series, each looked up in its family on its first use only: the
/// lookup hashes the labels and copies the instance id, on every call otherwise.
#[derive(Debug, Default)]
pub struct CallSeries {
    outcomes: [OnceLock<Counter>; CallOutcome::COUNT],
    seconds: OnceLock<Histogram>,
}

/// One route's request series, resolved on first use like [`CallSeries`]: its latency
/// histogram, and the counter of its first success (method and status), which is
/// what nearly every answer of the route is.
#[derive(Debug, Default)]
pub struct RouteSeries {
    success: OnceLock<(&'static str, u16, Counter)>,
    seconds: OnceLock<Histogram>,
    /// `cache_results` by [`CACHE_RESULTS`] index.
    cache: [OnceLock<Counter>; 4],
}

/// The `result` label values of `cache_results` (an unknown `X-Cache` counts as the last).
pub const CACHE_RESULTS: [&str; 4] = ["hit", "miss", "stale", "bypass"];

/// One consul-change broadcast call's result.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BroadcastLabels {
    pub service: &'static str,
    /// `ok` or `error`.
    pub outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InstanceLabels {
    pub service: &'static str,
    pub instance: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    pub route: String,
    /// `hit`, `miss`, `stale` or `bypass`.
    pub result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectionLabels {
    /// `ip_limited`, `ip_blocked` or `service_limited`.
    pub kind: &'static str,
    pub service: &'static str,
}

/// Why a connection was refused (`global_cap`, `ip_cap`) or closed (`header_timeout`,
/// `body_timeout`, `idle_timeout`, `header_too_large`).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

/// The metric label of an HTTP method: the standard methods (RFC 9110, RFC 5789) by
/// name, anything a client invents as `_OTHER`, so the label set stays closed.
pub fn method_label(method: &str) -> &'static str {
    match method {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "CONNECT" => "CONNECT",
        "OPTIONS" => "OPTIONS",
        "TRACE" => "TRACE",
        "PATCH" => "PATCH",
        _ => "_OTHER",
    }
}

/// `kind` = one of [`crate::audit::AuditKind::ALL`].
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AuditLabels {
    pub kind: &'static str,
}

fn latency_histogram() -> Histogram {
    // 100 µs … ~13 s.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.0001, 2.0, 18,
    ))
}

/// Every metric of the gateway.
#[derive(Debug)]
pub struct Metrics {
    registry: NamedRegistry,
    pub requests: Family<RequestLabels, Counter>,
    pub request_seconds: Family<RouteLabels, Histogram, fn() -> Histogram>,
    pub upstream_calls: Family<UpstreamLabels, Counter>,
    pub upstream_seconds: Family<ServiceLabels, Histogram, fn() -> Histogram>,
    /// 0 closed, 1 half-open, 2 open.
    pub breaker_state: Family<InstanceLabels, Gauge>,
    pub breaker_opens: Family<InstanceLabels, Counter>,
    pub cache_results: Family<CacheLabels, Counter>,
    pub rejections: Family<RejectionLabels, Counter>,
    pub consul_updates: Family<ServiceLabels, Counter>,
    pub consul_errors: Family<ServiceLabels, Counter>,
    pub instances: Family<ServiceLabels, Gauge>,
    pub broadcasts: Family<BroadcastLabels, Counter>,
    pub redis_errors: Counter,
    pub connections_open: Gauge,
    pub connections_refused: Family<ReasonLabels, Counter>,
    pub connections_closed: Family<ReasonLabels, Counter>,
    /// Requests answered 503 by the overload bounds, per service.
    pub shed: Family<ServiceLabels, Counter>,
    /// Calls holding a slot of the overload bounds, per service.
    pub requests_in_flight: Family<ServiceLabels, Gauge>,
    /// Logins refused by the login throttle, by `scope` (`account_ip`, `account`).
    pub login_throttled: Family<ScopeLabels, Counter>,
    pub audit_events: Family<AuditLabels, Counter>,
    pub audit_suppressed: Family<AuditLabels, Counter>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScopeLabels {
    /// `account_ip` or `account`.
    pub scope: &'static str,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Self {
        let mut registry = NamedRegistry::with_prefix("sms_gateway");
        let requests = Family::<RequestLabels, Counter>::default();
        let request_seconds =
            Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram as fn() -> Histogram,
            );
        let upstream_calls = Family::<UpstreamLabels, Counter>::default();
        let upstream_seconds =
            Family::<ServiceLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram as fn() -> Histogram,
            );
        let breaker_state = Family::<InstanceLabels, Gauge>::default();
        let breaker_opens = Family::<InstanceLabels, Counter>::default();
        let cache_results = Family::<CacheLabels, Counter>::default();
        let rejections = Family::<RejectionLabels, Counter>::default();
        let consul_updates = Family::<ServiceLabels, Counter>::default();
        let consul_errors = Family::<ServiceLabels, Counter>::default();
        let instances = Family::<ServiceLabels, Gauge>::default();
        let broadcasts = Family::<BroadcastLabels, Counter>::default();
        let redis_errors = Counter::default();
        let connections_open = Gauge::default();
        let connections_refused = Family::<ReasonLabels, Counter>::default();
        let connections_closed = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "connections_open",
            "Open client connections on the public listener",
            connections_open.clone(),
        );
        registry.register(
            "connections_refused",
            "Client connections refused at a cap (global_cap, ip_cap)",
            connections_refused.clone(),
        );
        registry.register(
            "connections_closed",
            "Client connections or requests cut by a limit (header_timeout, body_timeout, idle_timeout, header_too_large)",
            connections_closed.clone(),
        );
        let shed = Family::<ServiceLabels, Counter>::default();
        let requests_in_flight = Family::<ServiceLabels, Gauge>::default();
        let login_throttled = Family::<ScopeLabels, Counter>::default();
        registry.register(
            "shed",
            "Requests answered 503 at once because a service's overload bounds were full",
            shed.clone(),
        );
        registry.register(
            "requests_in_flight",
            "Upstream calls in flight per service (slots of the overload bounds)",
            requests_in_flight.clone(),
        );
        registry.register(
            "login_throttled",
            "Login attempts refused with 429 by the login throttle, by scope",
            login_throttled.clone(),
        );
        let audit_events = Family::<AuditLabels, Counter>::default();
        let audit_suppressed = Family::<AuditLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by method, route template and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route template",
            request_seconds.clone(),
        );
        registry.register(
            "upstream_calls",
            "gRPC calls by service, instance and outcome",
            upstream_calls.clone(),
        );
        registry.register(
            "upstream_call_duration_seconds",
            "gRPC call latency by service",
            upstream_seconds.clone(),
        );
        registry.register(
            "breaker_state",
            "Circuit breaker state per instance (0 closed, 1 half-open, 2 open)",
            breaker_state.clone(),
        );
        registry.register(
            "breaker_opens",
            "Times an instance's breaker opened",
            breaker_opens.clone(),
        );
        registry.register(
            "cache_results",
            "Response cache results by route (hit, miss, stale, bypass)",
            cache_results.clone(),
        );
        registry.register(
            "rejections",
            "Requests refused by the IP guard or a service rate limit",
            rejections.clone(),
        );
        registry.register(
            "consul_watch_updates",
            "Instance-list changes applied from Consul",
            consul_updates.clone(),
        );
        registry.register(
            "consul_watch_errors",
            "Failed Consul watch queries",
            consul_errors.clone(),
        );
        registry.register(
            "upstream_instances",
            "Instances in the current list of a service",
            instances.clone(),
        );
        registry.register(
            "broadcasts",
            "ChangeAllServiceNodes calls of the consul-change broadcast, by service and outcome",
            broadcasts.clone(),
        );
        registry.register(
            "redis_errors",
            "Failed or timed-out Redis operations",
            redis_errors.clone(),
        );
        registry.register(
            "audit_events",
            "Security events of the audit stream by kind",
            audit_events.clone(),
        );
        registry.register(
            "audit_suppressed",
            "Audit events only counted, over the per-kind rate bound",
            audit_suppressed.clone(),
        );
        registry.register(
            "log_lines_dropped",
            "Log lines dropped because stdout did not keep up (the queue was full)",
            super::log_writer::dropped_lines(),
        );
        Self {
            registry,
            requests,
            request_seconds,
            upstream_calls,
            upstream_seconds,
            breaker_state,
            breaker_opens,
            cache_results,
            rejections,
            consul_updates,
            consul_errors,
            instances,
            broadcasts,
            redis_errors,
            connections_open,
            connections_refused,
            connections_closed,
            shed,
            requests_in_flight,
            login_throttled,
            audit_events,
            audit_suppressed,
        }
    }

    /// Counts one answered request; `method` is any method, labelled by
    /// [`method_label`]. `series`, the route's resolved series if it has them, spares the
    /// family lookups.
    pub fn observe_request(
        &self,
        series: Option<&RouteSeries>,
        method: &str,
        route: &str,
        status: u16,
        elapsed: Duration,
    ) {
        let method = method_label(method);
        let labels = || RequestLabels {
            method,
            route: route.to_owned(),
            status,
        };
        let seconds = || {
            self.request_seconds
                .get_or_create(&RouteLabels {
                    route: route.to_owned(),
                })
                .clone()
        };
        let Some(series) = series else {
            self.requests.get_or_create(&labels()).inc();
            seconds().observe(elapsed.as_secs_f64());
            return;
        };
        let success = (200..300).contains(&status).then(|| {
            series.success.get_or_init(|| {
                (
                    method,
                    status,
                    self.requests.get_or_create(&labels()).clone(),
                )
            })
        });
        match success {
            Some((seen_method, seen_status, counter))
                if *seen_method == method && *seen_status == status =>
            {
                counter.inc();
            }
            _ => {
                self.requests.get_or_create(&labels()).inc();
            }
        }
        series
            .seconds
            .get_or_init(seconds)
            .observe(elapsed.as_secs_f64());
    }

    /// Counts one cache result of `route` (`x_cache`: the `X-Cache` value `HIT`, `MISS`,
    /// `STALE` or `BYPASS`), through its resolved series when it has them.
    pub fn observe_cache(&self, series: Option<&RouteSeries>, route: &str, x_cache: &str) {
        let result = CACHE_RESULTS
            .iter()
            .position(|label| label.eq_ignore_ascii_case(x_cache))
            .unwrap_or(CACHE_RESULTS.len() - 1);
        let label = CACHE_RESULTS[result];
        let family = || {
            self.cache_results
                .get_or_create(&CacheLabels {
                    route: route.to_owned(),
                    result: label,
                })
                .clone()
        };
        match series {
            Some(series) => series.cache[result].get_or_init(family).inc(),
            None => family().inc(),
        };
    }

    /// Counts one upstream call to `instance`, whose resolved series are `series`.
    pub fn observe_call(
        &self,
        series: &CallSeries,
        service: &'static str,
        instance: &str,
        outcome: CallOutcome,
        elapsed: Duration,
    ) {
        series.outcomes[outcome as usize]
            .get_or_init(|| {
                let labels = UpstreamLabels {
                    service,
                    instance: instance.to_owned(),
                    outcome: outcome.as_str(),
                };
                self.upstream_calls.get_or_create(&labels).clone()
            })
            .inc();
        series
            .seconds
            .get_or_init(|| {
                self.upstream_seconds
                    .get_or_create(&ServiceLabels { service })
                    .clone()
            })
            .observe(elapsed.as_secs_f64());
    }

    /// The Prometheus (OpenMetrics) text exposition.
    pub fn render(&self) -> String {
        let mut text = String::with_capacity(16 * 1024);
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.registry.registry);
        text
    }

    /// Every series name the gateway may export (`_total` of counters, `_bucket`,
    /// `_sum`, `_count` of histograms), whether or not it has a sample yet.
    pub fn exported_names(&self) -> Vec<String> {
        let mut names = Vec::new();
        for (family, kind) in &self.registry.families {
            let suffixes: &[&str] = match kind {
                MetricType::Counter => &["_total"],
                MetricType::Histogram => &["_bucket", "_sum", "_count"],
                MetricType::Info => &["_info"],
                _ => &[""],
            };
            names.extend(suffixes.iter().map(|suffix| format!("{family}{suffix}")));
        }
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_what_was_observed() {
        let metrics = Metrics::new();
        metrics.observe_request(
            None,
            "GET",
            "/v1/outings/uuid/{outing_uuid}",
            200,
            Duration::from_millis(3),
        );
        let series = CallSeries::default();
        metrics.observe_call(
            &series,
            "outing",
            "127.0.0.1:1",
            CallOutcome::Ok,
            Duration::from_millis(2),
        );
        let text = metrics.render();
        assert!(text.contains(r#"sms_gateway_http_requests_total{method="GET",route="/v1/outings/uuid/{outing_uuid}",status="200"} 1"#), "{text}");
        assert!(text.contains(r#"sms_gateway_upstream_calls_total{service="outing",instance="127.0.0.1:1",outcome="ok"} 1"#), "{text}");
        assert!(text.contains("sms_gateway_http_request_duration_seconds_bucket"));
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn resolved_series_count_like_the_families() {
        let metrics = Metrics::new();
        let route = RouteSeries::default();
        let path = "/v1/outings/uuid/{outing_uuid}";
        for (method, status) in [("GET", 200), ("GET", 200), ("GET", 404), ("HEAD", 200)] {
            metrics.observe_request(Some(&route), method, path, status, Duration::ZERO);
        }
        for x_cache in ["HIT", "BYPASS", "BYPASS", "MISS"] {
            metrics.observe_cache(Some(&route), path, x_cache);
        }
        metrics.observe_cache(None, path, "BYPASS");
        let calls = CallSeries::default();
        for outcome in [CallOutcome::Ok, CallOutcome::Ok, CallOutcome::Deadline] {
            metrics.observe_call(&calls, "outing", "10.0.0.7:50051", outcome, Duration::ZERO);
        }
        let text = metrics.render();
        for line in [
            r#"sms_gateway_http_requests_total{method="GET",route="/v1/outings/uuid/{outing_uuid}",status="200"} 2"#,
            r#"sms_gateway_http_requests_total{method="GET",route="/v1/outings/uuid/{outing_uuid}",status="404"} 1"#,
            r#"sms_gateway_http_requests_total{method="HEAD",route="/v1/outings/uuid/{outing_uuid}",status="200"} 1"#,
            r#"sms_gateway_http_request_duration_seconds_count{route="/v1/outings/uuid/{outing_uuid}"} 4"#,
            r#"sms_gateway_upstream_calls_total{service="outing",instance="10.0.0.7:50051",outcome="ok"} 2"#,
            r#"sms_gateway_upstream_calls_total{service="outing",instance="10.0.0.7:50051",outcome="deadline"} 1"#,
            r#"sms_gateway_upstream_call_duration_seconds_count{service="outing"} 3"#,
            r#"sms_gateway_cache_results_total{route="/v1/outings/uuid/{outing_uuid}",result="hit"} 1"#,
            r#"sms_gateway_cache_results_total{route="/v1/outings/uuid/{outing_uuid}",result="miss"} 1"#,
            r#"sms_gateway_cache_results_total{route="/v1/outings/uuid/{outing_uuid}",result="bypass"} 3"#,
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }

    /// `sms_gateway_*` names used in `text` that the gateway does not export.
    pub(crate) fn unknown_names(text: &str) -> Vec<String> {
        let exported = Metrics::new().exported_names();
        let mut unknown: Vec<String> = text
            .match_indices("sms_gateway_")
            .map(|(start, _)| {
                text[start..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect::<String>()
            })
            .filter(|name| !exported.contains(name))
            .collect();
        unknown.sort();
        unknown.dedup();
        unknown
    }

    #[test]
    fn exported_names_come_from_the_registry_even_without_samples() {
        let names = Metrics::new().exported_names();
        for name in [
            "sms_gateway_http_requests_total",
            "sms_gateway_http_request_duration_seconds_bucket",
            "sms_gateway_breaker_state",
            "sms_gateway_audit_events_total",
        ] {
            assert!(names.iter().any(|n| n == name), "{name} in {names:?}");
        }
    }

    #[test]
    fn invented_methods_share_one_label() {
        let metrics = Metrics::new();
        for method in [
            "BREW",
            "PROPFIND",
            "get",
            "XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
        ] {
            metrics.observe_request(None, method, "unmatched", 405, Duration::ZERO);
        }
        metrics.observe_request(None, "PATCH", "unmatched", 405, Duration::ZERO);
        let text = metrics.render();
        assert!(
            text.contains(r#"method="_OTHER",route="unmatched",status="405"} 4"#),
            "{text}"
        );
        assert!(text.contains(r#"method="PATCH""#), "{text}");
        assert!(!text.contains("BREW"), "{text}");
    }

    #[test]
    fn the_dashboard_only_uses_metrics_that_exist() {
        let dashboard = include_str!("../../deploy/grafana/sms-gateway-dashboard.json");
        assert!(dashboard.matches("sms_gateway_").count() > 10);
        let unknown = unknown_names(dashboard);
        assert!(unknown.is_empty(), "not exported: {unknown:?}");
    }

    #[test]
    fn the_alert_rules_only_use_metrics_that_exist() {
        let rules = include_str!("../../deploy/prometheus/alerts.yml");
        assert!(rules.matches("sms_gateway_").count() > 10);
        let unknown = unknown_names(rules);
        assert!(unknown.is_empty(), "not exported: {unknown:?}");
    }
}
