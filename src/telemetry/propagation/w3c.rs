//! W3C Trace Context (`traceparent: 00-<trace>-<span>-<flags>`, `tracestate`): parsed
//! from a client's request to continue its trace, written into gRPC metadata for the
//! backends.

use axum::http::HeaderMap;
use opentelemetry::Context;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};

use super::{CallContext, ascii_value, write_hex};

/// The `traceparent` value of a call.
pub fn traceparent(call: &CallContext) -> http::HeaderValue {
    let mut out = *b"00-................................-................-..";
    write_hex(&mut out[3..35], &call.trace_id.to_bytes());
    write_hex(&mut out[36..52], &call.span_id.to_bytes());
    write_hex(&mut out[53..55], &[call.flags().to_u8()]);
    ascii_value(&out)
}

/// The remote parent context carried by `traceparent`/`tracestate`, if valid.
pub fn extract(headers: &HeaderMap) -> Option<Context> {
    let value = headers.get("traceparent")?.to_str().ok()?;
    let span_context = parse(
        value,
        headers.get("tracestate").and_then(|v| v.to_str().ok()),
    )?;
    Some(Context::new().with_remote_span_context(span_context))
}

/// Parses a version-00 `traceparent` (future versions are read by their first four
/// fields, as the spec asks).
pub fn parse(traceparent: &str, tracestate: Option<&str>) -> Option<SpanContext> {
    let mut parts = traceparent.trim().split('-');
    let version = parts.next()?;
    let trace = parts.next()?;
    let span = parts.next()?;
    let flags = parts.next()?;
    if version.len() != 2 || version == "ff" || !is_hex(version) {
        return None;
    }
    if version == "00" && parts.next().is_some() {
        return None;
    }
    if trace.len() != 32
        || span.len() != 16
        || flags.len() != 2
        || !is_hex(trace)
        || !is_hex(span)
        || !is_hex(flags)
    {
        return None;
    }
    let trace_id = TraceId::from_hex(trace).ok()?;
    let span_id = SpanId::from_hex(span).ok()?;
    if trace_id == TraceId::INVALID || span_id == SpanId::INVALID {
        return None;
    }
    let flags = u8::from_str_radix(flags, 16).ok()? & TraceFlags::SAMPLED.to_u8();
    let state = tracestate
        .and_then(|s| s.parse::<TraceState>().ok())
        .unwrap_or_default();
    Some(SpanContext::new(
        trace_id,
        span_id,
        TraceFlags::new(flags),
        true,
        state,
    ))
}

fn is_hex(text: &str) -> bool {
    text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_valid_and_rejects_invalid_traceparents() {
        let valid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let context = parse(valid, Some("congo=t61rcWkgMzE")).expect("valid");
        assert_eq!(
            context.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert!(context.is_sampled());
        assert!(context.is_remote());
        assert_eq!(context.trace_state().header(), "congo=t61rcWkgMzE");
        for invalid in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "zz-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert!(parse(invalid, None).is_none(), "{invalid}");
        }
        assert!(
            parse(
                "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future",
                None
            )
            .is_some()
        );
    }

    #[test]
    fn formats_a_call() {
        let call = CallContext {
            trace_id: TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").expect("hex"),
            span_id: SpanId::from_hex("00f067aa0ba902b7").expect("hex"),
            parent_span_id: SpanId::INVALID,
            sampled: false,
            trace_state: String::new(),
        };
        assert_eq!(
            traceparent(&call),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
        );
    }
}
