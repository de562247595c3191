//! The Jaeger text form `trace:span:parent:flags` (lower-case hex) that the existing
//! backends read from the `span-context` metadata entry (spec §1, decision 1).

use super::CallContext;

/// The `span-context` value of a call; the parent is `0` when the call has none.
pub fn span_context(call: &CallContext) -> String {
    let parent = if call.parent_span_id == opentelemetry::trace::SpanId::INVALID {
        "0".to_owned()
    } else {
        call.parent_span_id.to_string()
    };
    format!(
        "{}:{}:{}:{}",
        call.trace_id,
        call.span_id,
        parent,
        u8::from(call.sampled)
    )
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{SpanId, TraceId};

    use super::*;

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
            &span_context(&call)
        ));
    }
}
