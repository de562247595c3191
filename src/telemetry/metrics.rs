//! Prometheus metrics (`GET /metrics`): requests and latency by route, upstream calls by
//! service/instance/outcome, breaker states, cache results, rejections, Consul watch
//! activity. Labels come from bounded sets (route templates, services, instance ids,
//! fixed outcome names). The registry lives in the gateway's state, not in a static.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// `route` = the matched route template (or `unmatched`).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: String,
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

fn latency_histogram() -> Histogram {
    // 100 µs … ~13 s.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.0001, 2.0, 18,
    ))
}

/// Every metric of the gateway.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
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
    pub redis_errors: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("sms_gateway");
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
        let redis_errors = Counter::default();
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
            "redis_errors",
            "Failed or timed-out Redis operations",
            redis_errors.clone(),
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
            redis_errors,
        }
    }

    /// Counts one answered request.
    pub fn observe_request(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                method: method.to_owned(),
                route: route.to_owned(),
                status,
            })
            .inc();
        self.request_seconds
            .get_or_create(&RouteLabels {
                route: route.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Counts one upstream call.
    pub fn observe_call(
        &self,
        service: &'static str,
        instance: &str,
        outcome: &'static str,
        elapsed: Duration,
    ) {
        self.upstream_calls
            .get_or_create(&UpstreamLabels {
                service,
                instance: instance.to_owned(),
                outcome,
            })
            .inc();
        self.upstream_seconds
            .get_or_create(&ServiceLabels { service })
            .observe(elapsed.as_secs_f64());
    }

    /// The Prometheus (OpenMetrics) text exposition.
    pub fn render(&self) -> String {
        let mut text = String::with_capacity(16 * 1024);
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_what_was_observed() {
        let metrics = Metrics::new();
        metrics.observe_request(
            "GET",
            "/v1/outings/uuid/{outing_uuid}",
            200,
            Duration::from_millis(3),
        );
        metrics.observe_call("outing", "127.0.0.1:1", "ok", Duration::from_millis(2));
        let text = metrics.render();
        assert!(text.contains(r#"sms_gateway_http_requests_total{method="GET",route="/v1/outings/uuid/{outing_uuid}",status="200"} 1"#), "{text}");
        assert!(text.contains(r#"sms_gateway_upstream_calls_total{service="outing",instance="127.0.0.1:1",outcome="ok"} 1"#), "{text}");
        assert!(text.contains("sms_gateway_http_request_duration_seconds_bucket"));
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn the_dashboard_only_uses_metrics_that_exist() {
        let dashboard = include_str!("../../deploy/grafana/sms-gateway-dashboard.json");
        // Families are rendered once they have a series: give each one.
        let metrics = Metrics::new();
        metrics.observe_request("GET", "/r", 200, Duration::ZERO);
        metrics.observe_call("auth", "i", "ok", Duration::ZERO);
        let instance = InstanceLabels {
            service: "auth",
            instance: "i".into(),
        };
        metrics.breaker_state.get_or_create(&instance).set(0);
        metrics.breaker_opens.get_or_create(&instance).inc();
        metrics
            .cache_results
            .get_or_create(&CacheLabels {
                route: "/r".into(),
                result: "hit",
            })
            .inc();
        metrics
            .rejections
            .get_or_create(&RejectionLabels {
                kind: "ip_limited",
                service: "",
            })
            .inc();
        let service = ServiceLabels { service: "auth" };
        metrics.consul_updates.get_or_create(&service).inc();
        metrics.consul_errors.get_or_create(&service).inc();
        metrics.instances.get_or_create(&service).set(1);
        let rendered = metrics.render();
        let mut checked = 0;
        for (start, _) in dashboard.match_indices("sms_gateway_") {
            let name: String = dashboard[start..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let family = ["_total", "_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .unwrap_or(&name);
            assert!(
                rendered.contains(&format!("# TYPE {family} ")),
                "{name} is not a metric"
            );
            checked += 1;
        }
        assert!(checked > 10);
    }
}
