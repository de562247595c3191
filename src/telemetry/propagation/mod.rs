//! Trace context on the wire: W3C `traceparent`/`tracestate` ([`w3c`]) read from
//! clients and sent to backends, and the legacy Jaeger text form in `span-context`
//! ([`jaeger`]) that the existing backends parse (spec decision 1).

pub mod jaeger;
pub mod w3c;

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The identifiers of one upstream call, for its gRPC metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallContext {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    /// The span the call belongs to (the request's server span), or invalid.
    pub parent_span_id: SpanId,
    pub sampled: bool,
    /// W3C `tracestate` to pass on, if any.
    pub trace_state: String,
}

impl CallContext {
    /// The context of `span` (the upstream-call span) under `parent` (the request span).
    /// Without an OpenTelemetry layer the spans carry no context: fresh random ids keep
    /// the metadata valid for backends that require it.
    pub fn of(span: &tracing::Span, parent: &tracing::Span) -> Self {
        let context = span.context();
        let own = context.span().span_context().clone();
        if own.is_valid() {
            let parent_context = parent.context();
            let parent_span = parent_context.span();
            let parent_id = parent_span.span_context().span_id();
            return Self::from_span_context(&own, parent_id);
        }
        Self::random()
    }

    fn from_span_context(own: &SpanContext, parent_span_id: SpanId) -> Self {
        Self {
            trace_id: own.trace_id(),
            span_id: own.span_id(),
            parent_span_id,
            sampled: own.trace_flags().is_sampled(),
            trace_state: own.trace_state().header(),
        }
    }

    /// Fresh random ids, sampled.
    pub fn random() -> Self {
        let trace: u128 = rand::random::<u128>() | 1;
        let span: u64 = rand::random::<u64>() | 1;
        Self {
            trace_id: TraceId::from_bytes(trace.to_be_bytes()),
            span_id: SpanId::from_bytes(span.to_be_bytes()),
            parent_span_id: SpanId::INVALID,
            sampled: true,
            trace_state: String::new(),
        }
    }

    fn flags(&self) -> TraceFlags {
        if self.sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        }
    }
}

/// A trace id as the 32 lower-case hex digits its `Display` writes, on the stack (for
/// the access log line, without an allocation).
pub struct TraceIdText([u8; 32]);

impl TraceIdText {
    pub fn new(id: TraceId) -> Self {
        let mut text = [b'0'; 32];
        write_hex(&mut text, &id.to_bytes());
        Self(text)
    }

    pub fn as_str(&self) -> &str {
        // Hex digits are ASCII.
        std::str::from_utf8(&self.0).unwrap_or("")
    }
}

/// Lower-case hex of `bytes` into `out` (two digits per byte), without `fmt`'s padding
/// machinery: trace ids are written into every call's metadata.
fn write_hex(out: &mut [u8], bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (pair, byte) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0x0f)];
    }
}

/// `bytes` (visible ASCII, as [`write_hex`] and the separators make them) as a header
/// value, copied once from the stack.
fn ascii_value(bytes: &[u8]) -> http::HeaderValue {
    http::HeaderValue::from_bytes(bytes).unwrap_or_else(|_| http::HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_id_text_is_what_display_writes() {
        for hex in [
            "00000000000000000000000000000a01",
            "4bf92f3577b34da6a3ce929d0e0e4736",
            "ffffffffffffffffffffffffffffffff",
        ] {
            let id = TraceId::from_hex(hex).expect("hex");
            assert_eq!(TraceIdText::new(id).as_str(), id.to_string());
            assert_eq!(TraceIdText::new(id).as_str(), hex);
        }
    }
}
