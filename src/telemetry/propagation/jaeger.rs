//! The Jaeger text form `trace:span:parent:flags` (lower-case hex) that the existing
//! backends read from the `span-context` metadata entry (spec §1, decision 1).

use super::{CallContext, ascii_value, write_hex};

/// The `span-context` value of a call; the parent is `0` when the call has none.
pub fn span_context(call: &CallContext) -> http::HeaderValue {
    // trace (32) : span (16) : parent (16, or "0") : flag
    let mut out = *b"................................:................:................:.";
    write_hex(&mut out[..32], &call.trace_id.to_bytes());
    write_hex(&mut out[33..49], &call.span_id.to_bytes());
    let end = if call.parent_span_id == opentelemetry::trace::SpanId::INVALID {
        out[50] = b'0';
        51
    } else {
        write_hex(&mut out[50..66], &call.parent_span_id.to_bytes());
        66
    };
    out[end] = b':';
    out[end + 1] = if call.sampled { b'1' } else { b'0' };
    ascii_value(&out[..end + 2])
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{SpanId, TraceId};

    use super::*;

    #[test]
    fn ids_keep_their_leading_zeros_as_display_writes_them() {
        let call = CallContext {
            trace_id: TraceId::from_hex("00000000000000000000000000000a01").expect("hex"),
            span_id: SpanId::from_hex("00000000000000b2").expect("hex"),
            parent_span_id: SpanId::from_hex("0000000000000003").expect("hex"),
            sampled: false,
            trace_state: String::new(),
        };
        assert_eq!(
            span_context(&call),
            format!(
                "{}:{}:{}:0",
                call.trace_id, call.span_id, call.parent_span_id
            )
        );
        assert_eq!(
            crate::telemetry::propagation::w3c::traceparent(&call),
            format!("00-{}-{}-00", call.trace_id, call.span_id)
        );
    }

    #[test]
    fn jaeger_text_form() {
        let mut call = CallContext {
            trace_id: TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").expect("hex"),
            span_id: SpanId::from_hex("a3ce929d0e0e4736").expect("hex"),
            parent_span_id: SpanId::INVALID,
            sampled: true,
            trace_state: String::new(),
        };
        assert_eq!(
            span_context(&call),
            "4bf92f3577b34da6a3ce929d0e0e4736:a3ce929d0e0e4736:0:1"
        );
        call.parent_span_id = SpanId::from_hex("00f067aa0ba902b7").expect("hex");
        call.sampled = false;
        assert_eq!(
            span_context(&call),
            "4bf92f3577b34da6a3ce929d0e0e4736:a3ce929d0e0e4736:00f067aa0ba902b7:0"
        );
        assert!(crate::reference::metadata::is_jaeger_span_context(
            span_context(&call).to_str().expect("ascii")
        ));
    }
}
