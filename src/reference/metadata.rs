//! The metadata check every backend RPC makes first (spec §1: `x-request-id` must be a
//! UUID and `span-context` a Jaeger span context, else in-band 407), and a bounded log of
//! what was received so tests can check propagation.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};

/// How many calls the log keeps.
const KEEP: usize = 4096;

/// What one call carried.
#[derive(Debug, Clone, Default)]
pub struct SeenMetadata {
    pub request_id: String,
    pub span_context: String,
    pub traceparent: String,
    pub tracestate: String,
}

/// The last calls' metadata, newest last.
#[derive(Debug, Default)]
pub struct MetadataLog {
    seen: Mutex<VecDeque<SeenMetadata>>,
}

impl MetadataLog {
    /// A copy of the log.
    pub fn all(&self) -> Vec<SeenMetadata> {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .cloned()
            .collect()
    }

    fn push(&self, seen: SeenMetadata) {
        let mut log = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if log.len() == KEEP {
            log.pop_front();
        }
        log.push_back(seen);
    }
}

/// Records the call's metadata and checks it; `Err` holds the in-band 407 message.
pub fn check<T>(log: &MetadataLog, request: &tonic::Request<T>) -> Result<(), &'static str> {
    let get = |key: &str| {
        request
            .metadata()
            .get(key)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let seen = SeenMetadata {
        request_id: get("x-request-id"),
        span_context: get("span-context"),
        traceparent: get("traceparent"),
        tracestate: get("tracestate"),
    };
    let valid_id = uuid::Uuid::parse_str(&seen.request_id).is_ok();
    let valid_span = is_jaeger_span_context(&seen.span_context);
    log.push(seen);
    match (valid_id, valid_span) {
        (true, true) => Ok(()),
        (false, _) => Err("x-request-id in metadata is not a valid uuid"),
        (true, false) => Err("span-context in metadata is not a valid span context"),
    }
}

/// `trace:span:parent:flags`, each part hex, trace and span non-zero.
pub fn is_jaeger_span_context(value: &str) -> bool {
    let parts: Vec<&str> = value.split(':').collect();
    let hex = |s: &str, max: usize| {
        !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_hexdigit())
    };
    parts.len() == 4
        && hex(parts[0], 32)
        && hex(parts[1], 16)
        && hex(parts[2], 16)
        && hex(parts[3], 2)
        && parts[0].bytes().any(|b| b != b'0')
        && parts[1].bytes().any(|b| b != b'0')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jaeger_form() {
        assert!(is_jaeger_span_context(
            "4bf92f3577b34da6:a3ce929d0e0e4736:0:1"
        ));
        assert!(!is_jaeger_span_context("0:a3ce929d0e0e4736:0:1"));
        assert!(!is_jaeger_span_context(
            "4bf92f3577b34da6:a3ce929d0e0e4736:0"
        ));
        assert!(!is_jaeger_span_context("xyz:a3ce929d0e0e4736:0:1"));
    }

    #[test]
    fn check_requires_both_entries() {
        let log = MetadataLog::default();
        let mut request = tonic::Request::new(());
        assert!(check(&log, &request).is_err());
        request.metadata_mut().insert(
            "x-request-id",
            "0b3f6a43-7d0e-4f57-9a0e-6d2b1c8e5f10"
                .parse()
                .expect("ascii"),
        );
        request.metadata_mut().insert(
            "span-context",
            "4bf92f3577b34da6:a3ce929d0e0e4736:0:1"
                .parse()
                .expect("ascii"),
        );
        assert!(check(&log, &request).is_ok());
        assert_eq!(log.all().len(), 2);
    }
}
