//! `[audit]` settings and the optional file of audit lines.

use std::fs::{File, OpenOptions};
use std::path::PathBuf;
use std::sync::Mutex;

use serde::Deserialize;
use tracing::{Level, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::registry::LookupSpan;

use super::TARGET;

/// The audit stream's bounds and where its lines go besides the log.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// Events kept in memory for `GET /admin/audit`. Default 1000.
    #[serde(default = "ring_size")]
    pub ring_size: usize,
    /// Events of one kind written (line and ring) per second at most; more are only
    /// counted. Default 20.
    #[serde(default = "max_per_second")]
    pub max_per_second: u32,
    /// Also append the audit lines (JSON, one per event) to this file. Unset: they go
    /// with the other log lines only (target `sms_gateway::audit`).
    pub file: Option<PathBuf>,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            ring_size: ring_size(),
            max_per_second: max_per_second(),
            file: None,
        }
    }
}

fn ring_size() -> usize {
    1000
}
fn max_per_second() -> u32 {
    20
}

impl AuditConfig {
    /// Checks what serde cannot; `Err((key, reason))`.
    pub fn validate(&self) -> Result<(), (&'static str, &'static str)> {
        if !(1..=100_000).contains(&self.ring_size) {
            return Err(("audit.ring_size", "must be between 1 and 100000"));
        }
        if self.max_per_second == 0 {
            return Err(("audit.max_per_second", "must be greater than 0"));
        }
        Ok(())
    }
}

/// A layer appending audit lines (JSON) to `config.file`, or `None` when unset.
pub fn file_layer<S>(config: &AuditConfig) -> std::io::Result<Option<impl Layer<S>>>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let Some(path) = &config.file else {
        return Ok(None);
    };
    let file: File = OpenOptions::new().create(true).append(true).open(path)?;
    Ok(Some(
        tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_writer(Mutex::new(file))
            .with_filter(Targets::new().with_target(TARGET, Level::INFO)),
    ))
}
