//! Traces, end to end: every process exports its spans over OTLP (HTTP/protobuf) when it is
//! given an endpoint (`--otlp-endpoint`, or the standard `OTEL_EXPORTER_OTLP_ENDPOINT`), and
//! does nothing at all without one. The trace travels in the W3C `traceparent` the monolith
//! stores in each outbox row: capture, the relay and the shipping service each continue it with
//! a span whose parent is the one that row (or event) names.
//!
//! Spans are made with the OpenTelemetry API directly rather than through `tracing`: each one
//! is a hop with an explicit remote parent and often explicit start and end times (a batch
//! acknowledged after the fact), which `tracing` spans cannot carry.

pub mod probe;
pub mod traceparent;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use opentelemetry::trace::{
    Span as _, SpanContext, SpanKind, TraceContextExt, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};

pub use opentelemetry::trace::SpanKind as Kind;
pub use opentelemetry::KeyValue as Attribute;

static ENABLED: AtomicBool = AtomicBool::new(false);
static TRACER: std::sync::OnceLock<SdkTracer> = std::sync::OnceLock::new();

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error(
        "OTEL_EXPORTER_OTLP_PROTOCOL (or _TRACES_PROTOCOL) is {0:?}: it must be http/protobuf, http/json or grpc"
    )]
    Protocol(String),
    #[error("--otlp-endpoint {endpoint}: cannot build the OTLP exporter")]
    Exporter {
        endpoint: String,
        #[source]
        source: opentelemetry_otlp::ExporterBuildError,
    },
}

/// Flushes what is buffered when dropped (at the end of `main`).
#[must_use = "spans still buffered are lost unless the guard lives until the process ends"]
pub struct Guard(Option<SdkTracerProvider>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(provider) = self.0.take() {
            // Best effort: the collector may be gone; the process is ending anyway.
            let _ = provider.shutdown();
        }
    }
}

/// Starts exporting spans as `service` to `endpoint` (the OTLP base URL, e.g.
/// `http://127.0.0.1:4318`; `/v1/traces` is appended as the standard variable's rules say).
/// Without an endpoint nothing is exported and every span helper is a no-op.
///
/// OpenTelemetry's own variables work as its other SDKs read them:
/// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (the traces URL itself, used as given; it wins over the
/// base endpoint), `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL` / `OTEL_EXPORTER_OTLP_PROTOCOL`
/// (`http/protobuf`, the default; `http/json`; `grpc`, whose endpoint takes no path — port 4317),
/// `OTEL_SERVICE_NAME` (instead of the process's own name), `OTEL_TRACES_SAMPLER` and
/// `OTEL_TRACES_SAMPLER_ARG` (read by the SDK), and `OTEL_EXPORTER_OTLP_HEADERS`.
pub fn init(service: &str, endpoint: Option<&str>) -> Result<Guard, TelemetryError> {
    let var = |name: &str| {
        std::env::var(name)
            .ok()
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let protocol = var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        .or_else(|| var("OTEL_EXPORTER_OTLP_PROTOCOL"))
        .unwrap_or_else(|| "http/protobuf".to_owned());
    let base = endpoint.map(str::trim).filter(|e| !e.is_empty());
    let url = match (var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"), base) {
        (Some(traces), _) => traces,
        (None, Some(base)) if protocol == "grpc" => base.to_owned(),
        (None, Some(base)) => format!("{}/v1/traces", base.trim_end_matches('/')),
        (None, None) => return Ok(Guard(None)),
    };
    let built = match protocol.as_str() {
        "grpc" => opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(url.clone())
            .build(),
        "http/json" => opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpJson)
            .with_endpoint(url.clone())
            .build(),
        "http/protobuf" => opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(url.clone())
            .build(),
        other => return Err(TelemetryError::Protocol(other.to_owned())),
    };
    let exporter = built.map_err(|source| TelemetryError::Exporter {
        endpoint: url.clone(),
        source,
    })?;
    // OTEL_SERVICE_NAME, when set, names the service (the SDK's resource detectors read it).
    let resource = if var("OTEL_SERVICE_NAME").is_some() {
        opentelemetry_sdk::Resource::builder().build()
    } else {
        opentelemetry_sdk::Resource::builder()
            .with_service_name(service.to_owned())
            .build()
    };
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build();
    let _ = TRACER.set(provider.tracer("outbox-bridge"));
    ENABLED.store(true, Ordering::Release);
    Ok(Guard(Some(provider)))
}

/// Whether spans are exported: callers skip the work of making them otherwise.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Acquire)
}

/// The remote parent a `traceparent` names (`None` when it is not a valid one).
fn parent(traceparent: &str) -> Option<Context> {
    let context = traceparent::span_context(traceparent)?;
    Some(Context::new().with_remote_span_context(context))
}

fn format(context: &SpanContext) -> String {
    format!(
        "00-{}-{}-{:02x}",
        context.trace_id(),
        context.span_id(),
        context.trace_flags().to_u8()
    )
}

/// A span under way.
pub struct Span {
    inner: opentelemetry_sdk::trace::Span,
    traceparent: String,
}

impl Span {
    /// This span as a `traceparent`, for whatever it causes next (an outbox row, an event).
    pub fn traceparent(&self) -> &str {
        &self.traceparent
    }

    pub fn set_attribute(&mut self, attribute: KeyValue) {
        self.inner.set_attribute(attribute);
    }

    /// Marks the span failed, with the reason.
    pub fn fail(&mut self, reason: impl Into<String>) {
        self.inner
            .set_status(opentelemetry::trace::Status::error(reason.into()));
    }

    pub fn end(mut self) {
        self.inner.end();
    }
}

/// Starts a span now, child of `traceparent` when it is a valid one (else the root of a new
/// trace); `None` when nothing is exported.
pub fn start(
    name: impl Into<std::borrow::Cow<'static, str>>,
    kind: SpanKind,
    traceparent: Option<&str>,
    attributes: Vec<KeyValue>,
) -> Option<Span> {
    if !enabled() {
        return None;
    }
    let tracer = TRACER.get()?;
    let context = traceparent.and_then(parent).unwrap_or_default();
    let inner = tracer
        .span_builder(name)
        .with_kind(kind)
        .with_attributes(attributes)
        .start_with_context(tracer, &context);
    let traceparent = format(inner.span_context());
    Some(Span { inner, traceparent })
}

/// A span that already happened, from `start` to `end`, child of `traceparent` (nothing when
/// that is not a valid one, or nothing is exported).
pub fn record(
    name: &'static str,
    kind: SpanKind,
    traceparent: &str,
    start: SystemTime,
    end: SystemTime,
    attributes: Vec<KeyValue>,
) {
    if !enabled() {
        return;
    }
    let (Some(tracer), Some(context)) = (TRACER.get(), parent(traceparent)) else {
        return;
    };
    let mut span = tracer
        .span_builder(name)
        .with_kind(kind)
        .with_start_time(start)
        .with_attributes(attributes)
        .start_with_context(tracer, &context);
    span.end_with_timestamp(end);
}

/// EventBridge's `TraceHeader` (AWS X-Ray's format) for a `traceparent`, so X-Ray links the
/// event to the same trace: `Root=1-<8 hex>-<24 hex>;Parent=<16 hex>;Sampled=<0|1>`.
pub fn xray_header(traceparent: &str) -> Option<String> {
    let context = parent(traceparent)?;
    let span = context.span().span_context().clone();
    let trace = span.trace_id().to_string();
    Some(format!(
        "Root=1-{}-{};Parent={};Sampled={}",
        &trace[..8],
        &trace[8..],
        span.span_id(),
        u8::from(span.is_sampled())
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_xray_header_carries_the_same_trace_and_parent() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(
            xray_header(tp).as_deref(),
            Some("Root=1-4bf92f35-77b34da6a3ce929d0e0e4736;Parent=00f067aa0ba902b7;Sampled=1")
        );
        assert_eq!(xray_header("00-abc-def-01"), None);
        assert_eq!(
            xray_header("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
            None
        );
    }

    #[test]
    fn without_an_endpoint_nothing_is_made() {
        let _guard = init("test", None).unwrap();
        assert!(!enabled());
        assert!(start("x", SpanKind::Internal, None, Vec::new()).is_none());
    }
}
