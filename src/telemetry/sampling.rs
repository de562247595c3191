//! Outcome-aware trace sampling: the gateway is the root of its traces and knows how a
//! request ended before its server span ends, so it decides then.
//!
//! - [`OutcomeSampler`] (the SDK sampler) makes the *head* decision when a trace starts:
//!   an incoming sampled `traceparent` is always followed; otherwise `sampling_ratio`
//!   of new traces (by trace id) are sampled. Every other trace is still *recorded*
//!   (`RecordOnly`): its spans exist, unsampled, so nothing about the request changes.
//! - [`OutcomeProcessor`] (in front of the batch exporter) forwards sampled spans at
//!   once, and holds the finished spans of each unsampled trace until its local root
//!   (the server span) ends; then the trace is exported, marked sampled, if the request
//!   ended with a kept status (`keep_status`, default 5xx, 408, 429), an error status,
//!   or took at least `keep_slower_than`; otherwise its spans are dropped before export.
//!
//! Bounds: at most `max_pending_traces` traces are held at once (a trace starting past
//! that can still keep its root span, not its children) and `max_spans_per_trace`
//! spans each. The head decision is what the backends see: `traceparent` flag `01` for
//! sampled traces, `00` for the others, even if the outcome later keeps the trace (the
//! gateway's spans of those traces are exported; a backend following the flag has not
//! recorded its own).

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use opentelemetry::trace::{
    Link, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId,
};
use opentelemetry::{Context, KeyValue, Value};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    Sampler, SamplingDecision, SamplingResult, ShouldSample, Span, SpanData, SpanProcessor,
};

/// Attribute holding the HTTP status of a server span.
const STATUS_ATTRIBUTE: &str = "http.response.status_code";
/// Kept trace ids remembered for children ending after their root.
const RECENTLY_KEPT: usize = 256;

/// Head decision: follow a sampled remote parent, else the ratio; what is not sampled
/// is still recorded for the outcome decision.
#[derive(Debug, Clone)]
pub struct OutcomeSampler {
    ratio: Sampler,
}

impl OutcomeSampler {
    /// Samples `ratio` (0.0–1.0) of new traces at their start.
    pub fn new(ratio: f64) -> Self {
        Self {
            ratio: Sampler::TraceIdRatioBased(ratio),
        }
    }
}

impl ShouldSample for OutcomeSampler {
    fn should_sample(
        &self,
        parent_context: Option<&Context>,
        trace_id: TraceId,
        name: &str,
        span_kind: &SpanKind,
        attributes: &[KeyValue],
        links: &[Link],
    ) -> SamplingResult {
        let parent = parent_context
            .filter(|cx| cx.has_active_span())
            .map(|cx| cx.span().span_context().clone())
            .filter(SpanContext::is_valid);
        let sampled = match &parent {
            // Inside the gateway: children share their root's fate.
            Some(parent) if !parent.is_remote() => parent.is_sampled(),
            Some(parent) if parent.is_sampled() => true,
            // A new trace, or a client's not-sampled one: the ratio decides (clients do
            // not get to switch off the gateway's error traces).
            _ => {
                self.ratio
                    .should_sample(None, trace_id, name, span_kind, attributes, links)
                    .decision
                    == SamplingDecision::RecordAndSample
            }
        };
        SamplingResult {
            decision: if sampled {
                SamplingDecision::RecordAndSample
            } else {
                SamplingDecision::RecordOnly
            },
            attributes: Vec::new(),
            trace_state: parent.map(|p| p.trace_state().clone()).unwrap_or_default(),
        }
    }
}

/// Which finished traces are kept whatever the ratio.
#[derive(Debug, Clone)]
pub struct KeepRule {
    /// Inclusive status ranges.
    pub statuses: Vec<(u16, u16)>,
    pub slower_than: Duration,
}

impl KeepRule {
    /// Parses `keep_status` entries: a status (`408`) or a class (`5xx`).
    pub fn new(keep_status: &[String], slower_than: Duration) -> Result<Self, String> {
        let statuses = keep_status
            .iter()
            .map(|entry| {
                parse_status(entry)
                    .ok_or_else(|| format!("{entry:?} is not a status (408) or class (5xx)"))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            statuses,
            slower_than,
        })
    }

    fn keeps(&self, root: &SpanData) -> bool {
        if matches!(root.status, Status::Error { .. }) {
            return true;
        }
        let took = root
            .end_time
            .duration_since(root.start_time)
            .unwrap_or_default();
        if took >= self.slower_than {
            return true;
        }
        let status = root
            .attributes
            .iter()
            .find(|kv| kv.key.as_str() == STATUS_ATTRIBUTE)
            .and_then(|kv| match &kv.value {
                Value::I64(n) => u16::try_from(*n).ok(),
                Value::String(s) => s.as_str().parse().ok(),
                _ => None,
            });
        status.is_some_and(|s| {
            self.statuses
                .iter()
                .any(|(lo, hi)| (*lo..=*hi).contains(&s))
        })
    }
}

fn parse_status(entry: &str) -> Option<(u16, u16)> {
    let entry = entry.trim();
    if let Some(class) = entry
        .strip_suffix("xx")
        .or_else(|| entry.strip_suffix("XX"))
    {
        let class: u16 = class.parse().ok().filter(|c| (1..=5).contains(c))?;
        return Some((class * 100, class * 100 + 99));
    }
    entry
        .parse::<u16>()
        .ok()
        .filter(|s| (100..=599).contains(s))
        .map(|s| (s, s))
}

/// Holds the spans of unsampled traces until their root ends, then forwards (kept) or
/// drops them; sampled spans pass straight to `next`.
#[derive(Debug)]
pub struct OutcomeProcessor<P> {
    next: P,
    rule: KeepRule,
    max_traces: usize,
    max_spans: usize,
    pending: Mutex<Pending>,
}

#[derive(Debug, Default)]
struct Pending {
    traces: HashMap<TraceId, Vec<SpanData>>,
    recently_kept: VecDeque<TraceId>,
}

impl<P: SpanProcessor> OutcomeProcessor<P> {
    pub fn new(next: P, rule: KeepRule, max_traces: usize, max_spans: usize) -> Self {
        Self {
            next,
            rule,
            max_traces,
            max_spans,
            pending: Mutex::new(Pending::default()),
        }
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Traces held right now (tests, bounds).
    pub fn pending_traces(&self) -> usize {
        self.pending().traces.len()
    }

    fn forward(&self, mut span: SpanData) {
        let cx = &span.span_context;
        span.span_context = SpanContext::new(
            cx.trace_id(),
            cx.span_id(),
            TraceFlags::SAMPLED,
            cx.is_remote(),
            cx.trace_state().clone(),
        );
        self.next.on_end(span);
    }
}

fn is_local_root(span: &SpanData) -> bool {
    span.parent_span_id == SpanId::INVALID || span.parent_span_is_remote
}

impl<P: SpanProcessor> SpanProcessor for OutcomeProcessor<P> {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        use opentelemetry::trace::Span as _;
        let own = span.span_context();
        let local_parent = cx.has_active_span() && !cx.span().span_context().is_remote();
        if !own.is_sampled() && !local_parent {
            let trace_id = own.trace_id();
            let mut pending = self.pending();
            if pending.traces.len() < self.max_traces {
                pending.traces.entry(trace_id).or_default();
            }
        }
        self.next.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        if span.span_context.is_sampled() {
            self.next.on_end(span);
            return;
        }
        let trace_id = span.span_context.trace_id();
        if is_local_root(&span) {
            let children = self.pending().traces.remove(&trace_id);
            if !self.rule.keeps(&span) {
                return;
            }
            {
                let mut pending = self.pending();
                if pending.recently_kept.len() >= RECENTLY_KEPT {
                    pending.recently_kept.pop_front();
                }
                pending.recently_kept.push_back(trace_id);
            }
            for child in children.into_iter().flatten() {
                self.forward(child);
            }
            self.forward(span);
            return;
        }
        let late_and_kept = {
            let mut pending = self.pending();
            match pending.traces.get_mut(&trace_id) {
                Some(spans) => {
                    if spans.len() < self.max_spans {
                        spans.push(span);
                    }
                    return;
                }
                // Its root ended already (dropped or kept), or it was never held.
                None => pending.recently_kept.contains(&trace_id),
            }
        };
        if late_and_kept {
            self.forward(span);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.next.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.next.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.next.set_resource(resource);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::SystemTime;

    use opentelemetry::InstrumentationScope;
    use opentelemetry::trace::TraceState;
    use opentelemetry_sdk::trace::{SpanEvents, SpanLinks};

    use super::*;

    /// Collects what reaches the exporter side.
    #[derive(Debug, Default, Clone)]
    struct Sink(Arc<Mutex<Vec<SpanData>>>);

    impl SpanProcessor for Sink {
        fn on_start(&self, _span: &mut Span, _cx: &Context) {}
        fn on_end(&self, span: SpanData) {
            self.0.lock().expect("sink").push(span);
        }
        fn force_flush(&self) -> OTelSdkResult {
            Ok(())
        }
        fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
            Ok(())
        }
    }

    fn span(trace: u128, id: u64, parent: u64, status: Option<i64>, took_ms: u64) -> SpanData {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        SpanData {
            span_context: SpanContext::new(
                TraceId::from(trace),
                SpanId::from(id),
                TraceFlags::default(),
                false,
                TraceState::default(),
            ),
            parent_span_id: SpanId::from(parent),
            parent_span_is_remote: false,
            span_kind: SpanKind::Server,
            name: "GET /r".into(),
            start_time: start,
            end_time: start + Duration::from_millis(took_ms),
            attributes: status
                .map(|s| vec![KeyValue::new(STATUS_ATTRIBUTE, s)])
                .unwrap_or_default(),
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: Status::Unset,
            instrumentation_scope: InstrumentationScope::builder("t").build(),
        }
    }

    fn processor(max_traces: usize) -> (OutcomeProcessor<Sink>, Sink) {
        let sink = Sink::default();
        let rule = KeepRule::new(
            &["5xx".into(), "408".into(), "429".into()],
            Duration::from_secs(1),
        )
        .expect("rule");
        (
            OutcomeProcessor::new(sink.clone(), rule, max_traces, 2),
            sink,
        )
    }

    /// What `on_start` of a root does, without an SDK span.
    fn hold(p: &OutcomeProcessor<Sink>, trace: u128) {
        p.pending().traces.entry(TraceId::from(trace)).or_default();
    }

    #[test]
    fn failed_and_slow_traces_are_kept_whole_and_others_dropped() {
        let (p, sink) = processor(10);
        for (trace, status, took) in [(1, 200, 5), (2, 503, 5), (3, 408, 5), (4, 200, 1500)] {
            hold(&p, trace);
            p.on_end(span(trace, 10, 1, None, 1));
            p.on_end(span(trace, 1, 0, Some(status), took));
        }
        let kept = sink.0.lock().expect("sink");
        let traces: Vec<u128> = kept
            .iter()
            .map(|s| u128::from_be_bytes(s.span_context.trace_id().to_bytes()))
            .collect();
        assert_eq!(traces, [2, 2, 3, 3, 4, 4]);
        assert!(kept.iter().all(|s| s.span_context.is_sampled()));
        assert_eq!(p.pending_traces(), 0);
    }

    #[test]
    fn held_traces_and_spans_are_bounded() {
        let (p, sink) = processor(1);
        hold(&p, 1);
        for id in 10..20 {
            p.on_end(span(1, id, 1, None, 1));
        }
        assert_eq!(p.pending().traces[&TraceId::from(1u128)].len(), 2);
        p.on_end(span(1, 1, 0, Some(500), 1));
        assert_eq!(sink.0.lock().expect("sink").len(), 3, "two children + root");
        // A late child of a kept trace still goes out; of a dropped one it does not.
        p.on_end(span(1, 30, 1, None, 1));
        p.on_end(span(9, 30, 1, None, 1));
        assert_eq!(sink.0.lock().expect("sink").len(), 4);
    }

    #[test]
    fn keep_status_entries_parse() {
        assert_eq!(parse_status("5xx"), Some((500, 599)));
        assert_eq!(parse_status("408"), Some((408, 408)));
        assert_eq!(parse_status("6xx"), None);
        assert_eq!(parse_status("42"), None);
        assert!(KeepRule::new(&["teapot".into()], Duration::ZERO).is_err());
    }
}
