//! Observability: traces exported over OTLP to Jaeger ([`tracer_provider`]), the log
//! subscriber ([`subscriber`]), trace-context propagation into gRPC metadata
//! ([`propagation`]) and Prometheus metrics ([`metrics`]).
//!
//! Traces are off when no OTLP endpoint is configured; nothing is exported then and
//! nothing fails. An unreachable endpoint only drops spans (export runs in the
//! background with a timeout), never a request.

pub mod json_line;
pub mod log_writer;
pub mod metrics;
pub mod propagation;
pub mod record;
pub mod sampling;

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
use opentelemetry_sdk::trace::{BatchConfigBuilder, Sampler, SdkTracerProvider};
use serde::Deserialize;
use tracing::{Level, Subscriber};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{LogConfig, LogFormat};

pub use metrics::Metrics;

/// Trace export settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// OTLP endpoint of the collector (Jaeger): `http://jaeger:4317` for gRPC,
    /// `http://jaeger:4318/v1/traces` for HTTP. Traces are off when unset.
    pub otlp_endpoint: Option<String>,
    /// `grpc` or `http` (protobuf over HTTP). Default `grpc`.
    #[serde(default)]
    pub protocol: OtlpProtocol,
    /// Share of new traces that are sampled (0.0–1.0); an incoming sampled parent is
    /// always followed (parent-based). Default 1.0.
    #[serde(default = "one")]
    pub sampling_ratio: f64,
    /// Keep every trace whose request failed or was slow, whatever `sampling_ratio`
    /// (decided when the server span ends; [`sampling`]). Default true.
    #[serde(default = "yes")]
    pub keep_failures: bool,
    /// Statuses whose traces are kept: codes (`408`) or classes (`5xx`). Default
    /// `["5xx", "408", "429"]`.
    #[serde(default = "keep_status")]
    pub keep_status: Vec<String>,
    /// Traces of requests that took at least this long are kept. Default 1s.
    #[serde(default = "keep_slower_than", with = "humantime_serde")]
    pub keep_slower_than: Duration,
    /// Unsampled traces held until their request ends, at most. Default 4096.
    #[serde(default = "max_pending_traces")]
    pub max_pending_traces: usize,
    /// Spans held per trace, at most. Default 64.
    #[serde(default = "max_spans_per_trace")]
    pub max_spans_per_trace: usize,
    /// `service.name` of the exported spans. Default `sms-gateway`.
    #[serde(default = "service_name")]
    pub service_name: String,
    /// Longest time one export may take. Default 5s.
    #[serde(default = "export_timeout", with = "humantime_serde")]
    pub export_timeout: Duration,
    /// How often batched spans are sent. Default 1s.
    #[serde(default = "export_interval", with = "humantime_serde")]
    pub export_interval: Duration,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            protocol: OtlpProtocol::default(),
            sampling_ratio: one(),
            keep_failures: true,
            keep_status: keep_status(),
            keep_slower_than: keep_slower_than(),
            max_pending_traces: max_pending_traces(),
            max_spans_per_trace: max_spans_per_trace(),
            service_name: service_name(),
            export_timeout: export_timeout(),
            export_interval: export_interval(),
        }
    }
}

fn one() -> f64 {
    1.0
}
fn yes() -> bool {
    true
}
fn keep_status() -> Vec<String> {
    ["5xx", "408", "429"].map(str::to_owned).to_vec()
}
fn keep_slower_than() -> Duration {
    Duration::from_secs(1)
}
fn max_pending_traces() -> usize {
    4096
}
fn max_spans_per_trace() -> usize {
    64
}
fn service_name() -> String {
    "sms-gateway".to_owned()
}
fn export_timeout() -> Duration {
    Duration::from_secs(5)
}
fn export_interval() -> Duration {
    Duration::from_secs(1)
}

/// OTLP transport.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OtlpProtocol {
    #[default]
    Grpc,
    Http,
}

/// Why tracing could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("telemetry.otlp_endpoint: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
    #[error("telemetry.sampling_ratio must be within 0.0 and 1.0, got {0}")]
    Ratio(f64),
    #[error("telemetry.keep_status: {0}")]
    KeepStatus(String),
}

impl TelemetryConfig {
    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<(), TelemetryError> {
        if !(0.0..=1.0).contains(&self.sampling_ratio) {
            return Err(TelemetryError::Ratio(self.sampling_ratio));
        }
        self.keep_rule().map(drop)
    }
}

impl TelemetryConfig {
    fn keep_rule(&self) -> Result<sampling::KeepRule, TelemetryError> {
        sampling::KeepRule::new(&self.keep_status, self.keep_slower_than)
            .map_err(TelemetryError::KeepStatus)
    }

    /// `processor`, behind the outcome decision when `keep_failures` is on.
    fn with_processor<P>(
        &self,
        builder: opentelemetry_sdk::trace::TracerProviderBuilder,
        processor: P,
    ) -> Result<opentelemetry_sdk::trace::TracerProviderBuilder, TelemetryError>
    where
        P: opentelemetry_sdk::trace::SpanProcessor + 'static,
    {
        if !self.keep_failures {
            return Ok(builder
                .with_span_processor(processor)
                .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                    self.sampling_ratio,
                )))));
        }
        let outcome = sampling::OutcomeProcessor::new(
            processor,
            self.keep_rule()?,
            self.max_pending_traces.max(1),
            self.max_spans_per_trace.max(1),
        );
        Ok(builder
            .with_span_processor(outcome)
            .with_sampler(sampling::OutcomeSampler::new(self.sampling_ratio)))
    }
}

/// The OTLP tracer provider, or `None` when no endpoint is configured. Must be called
/// inside a tokio runtime (export runs as a tokio task).
pub fn tracer_provider(
    config: &TelemetryConfig,
) -> Result<Option<SdkTracerProvider>, TelemetryError> {
    config.validate()?;
    let Some(endpoint) = &config.otlp_endpoint else {
        return Ok(None);
    };
    let exporter = match config.protocol {
        OtlpProtocol::Grpc => opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint.clone())
            .with_timeout(config.export_timeout)
            .build()?,
        OtlpProtocol::Http => opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(reqwest::Client::new())
            .with_endpoint(endpoint.clone())
            .with_timeout(config.export_timeout)
            .build()?,
    };
    let batch = BatchConfigBuilder::default()
        .with_scheduled_delay(config.export_interval)
        .with_max_export_timeout(config.export_timeout)
        .build();
    // On a current-thread runtime (tests) export must run on a thread of its own, or a
    // flush would wait for the very thread it blocks.
    let current_thread = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread);
    let builder = SdkTracerProvider::builder();
    let builder = if current_thread {
        config.with_processor(
            builder,
            BatchSpanProcessor::builder(exporter, opentelemetry_sdk::runtime::TokioCurrentThread)
                .with_batch_config(batch)
                .build(),
        )?
    } else {
        config.with_processor(
            builder,
            BatchSpanProcessor::builder(exporter, opentelemetry_sdk::runtime::Tokio)
                .with_batch_config(batch)
                .build(),
        )?
    };
    let resource = Resource::builder()
        .with_service_name(config.service_name.clone())
        .build();
    Ok(Some(builder.with_resource(resource).build()))
}

/// The log and trace subscriber: JSON or text lines on stdout filtered by the log
/// level, and the OpenTelemetry layer (for the gateway's own spans, whatever the log
/// level) when a provider is given.
pub fn subscriber(
    log: &LogConfig,
    provider: Option<&SdkTracerProvider>,
) -> impl Subscriber + Send + Sync + for<'a> LookupSpan<'a> {
    subscriber_with_writer(log, provider, std::io::stdout)
}

/// The gateway's stdout for log lines: non-blocking, at most `log.buffer_lines`
/// waiting (see [`log_writer`]). Keep the guard until exit: dropping it flushes.
pub fn stdout_writer(
    log: &LogConfig,
) -> std::io::Result<(log_writer::NonBlocking, log_writer::FlushGuard)> {
    log_writer::non_blocking(
        std::io::stdout(),
        log.buffer_lines.get(),
        log_writer::dropped_lines(),
    )
}

/// [`subscriber`] writing log lines to `writer` (tests capture them).
pub fn subscriber_with_writer<W>(
    log: &LogConfig,
    provider: Option<&SdkTracerProvider>,
    writer: W,
) -> impl Subscriber + Send + Sync + for<'a> LookupSpan<'a>
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_new(&log.level).unwrap_or_else(|_| EnvFilter::new("info"));
    // Each request's log line carries its own fields (the request span is DEBUG and
    // exists only for export), so span context is not repeated in the lines.
    let fmt = match log.format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .with_writer(writer)
            .event_format(json_line::JsonLines)
            .boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer().with_writer(writer).boxed(),
    }
    .with_filter(filter);
    let otel = provider.map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("sms-gateway"))
            .with_location(false)
            .with_threads(false)
            .with_target(false)
            // Request and call spans are DEBUG: exported, yet free when only logging.
            .with_filter(Targets::new().with_target("sms_gateway", Level::DEBUG))
    });
    tracing_subscriber::registry().with(fmt).with(otel)
}
