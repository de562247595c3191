//! Observability: traces exported over OTLP to Jaeger ([`tracer_provider`]), the log
//! subscriber ([`subscriber`]), trace-context propagation into gRPC metadata
//! ([`propagation`]) and Prometheus metrics ([`metrics`]).
//!
//! Traces are off when no OTLP endpoint is configured; nothing is exported then and
//! nothing fails. An unreachable endpoint only drops spans (export runs in the
//! background with a timeout), never a request.

pub mod log_writer;
pub mod metrics;
pub mod propagation;
pub mod record;

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
            service_name: service_name(),
            export_timeout: export_timeout(),
            export_interval: export_interval(),
        }
    }
}

fn one() -> f64 {
    1.0
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
}

impl TelemetryConfig {
    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<(), TelemetryError> {
        if !(0.0..=1.0).contains(&self.sampling_ratio) {
            return Err(TelemetryError::Ratio(self.sampling_ratio));
        }
        Ok(())
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
        builder.with_span_processor(
            BatchSpanProcessor::builder(exporter, opentelemetry_sdk::runtime::TokioCurrentThread)
                .with_batch_config(batch)
                .build(),
        )
    } else {
        builder.with_span_processor(
            BatchSpanProcessor::builder(exporter, opentelemetry_sdk::runtime::Tokio)
                .with_batch_config(batch)
                .build(),
        )
    };
    let sampler = Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(config.sampling_ratio)));
    let resource = Resource::builder()
        .with_service_name(config.service_name.clone())
        .build();
    Ok(Some(
        builder
            .with_sampler(sampler)
            .with_resource(resource)
            .build(),
    ))
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
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
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
