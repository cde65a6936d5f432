//! Logging, trace context and metrics shared by every component.
//!
//! Logs go to stderr as text or JSON lines; spans carry `correlation_id` (and the
//! request id on HTTP spans), so every line of one chain can be found. Metrics are kept
//! by one Prometheus recorder per process and rendered on every `/metrics`.

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// The header that carries a request's id (set by the edge, echoed in responses).
pub const REQUEST_ID: &str = "x-request-id";
/// The header that carries the correlation id over HTTP (`ce_correlationid` on Kafka).
pub const CORRELATION_ID_HEADER: &str = "x-correlation-id";
/// W3C trace context header.
pub const TRACEPARENT_HEADER: &str = "traceparent";

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("unknown log format {other:?} (text or json)")),
        }
    }
}

type BoxedLayer = Box<dyn tracing_subscriber::Layer<tracing_subscriber::Registry> + Send + Sync>;

/// Installs the global subscriber; `filter` is an `EnvFilter` directive such as `info`
/// or `shop=debug,rdkafka=warn`. A second call does nothing.
pub fn init_logging(format: LogFormat, filter: &str) {
    init_tracing(format, filter, None);
}

/// Where spans are exported over OTLP/HTTP (built with the `otlp` feature).
#[derive(Debug, Clone)]
pub struct OtlpConfig {
    /// The collector's base URL, e.g. `http://127.0.0.1:4318` (spans go to `/v1/traces`).
    pub endpoint: String,
    /// `service.name` of this process's spans.
    pub service_name: String,
}

/// Logging as [`init_logging`], and span export when `otlp` is given: every HTTP span
/// and every consumer's `apply` span continues the W3C trace of its request or event,
/// so one order's spans join across services and consumers in a trace viewer.
pub fn init_tracing(format: LogFormat, filter: &str, otlp: Option<OtlpConfig>) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let logs: BoxedLayer = match format {
        LogFormat::Text => Box::new(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_target(false),
        ),
        LogFormat::Json => Box::new(
            tracing_subscriber::fmt::layer()
                .json()
                .with_writer(std::io::stderr)
                .with_current_span(true)
                .with_span_list(true),
        ),
    };
    let mut layers = vec![logs];
    let mut unavailable = None;
    if let Some(otlp) = otlp {
        match otel::layer(&otlp) {
            Ok(layer) => layers.push(layer),
            Err(why) => unavailable = Some(why),
        }
    }
    let _ = tracing_subscriber::registry()
        .with(layers)
        .with(filter)
        .try_init();
    if let Some(why) = unavailable {
        tracing::warn!("spans are not exported: {why}");
    }
}

/// Flushes exported spans (at exit).
pub fn shutdown_tracing() {
    otel::shutdown();
}

/// The current span's context as a `traceparent` when spans are exported (`None`
/// otherwise).
pub fn current_traceparent() -> Option<String> {
    otel::current_traceparent()
}

/// The trace id of a W3C `traceparent` (empty when malformed), for log fields.
pub fn trace_id(traceparent: &str) -> &str {
    traceparent
        .get(3..35)
        .filter(|id| id.chars().all(|c| c.is_ascii_hexdigit()))
        .unwrap_or("")
}

/// Makes `span` continue the W3C trace `traceparent` in exported spans (a no-op when
/// spans are not exported).
pub fn set_parent(span: &tracing::Span, traceparent: &str) {
    otel::set_parent(span, traceparent);
}

#[cfg(feature = "otlp")]
mod otel {
    use std::collections::HashMap;
    use std::sync::OnceLock;

    use opentelemetry::propagation::TextMapPropagator;
    use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
    use opentelemetry_otlp::WithExportConfig;
    use opentelemetry_sdk::propagation::TraceContextPropagator;
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    use super::{BoxedLayer, OtlpConfig};

    static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

    pub fn layer(config: &OtlpConfig) -> Result<BoxedLayer, String> {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(format!(
                "{}/v1/traces",
                config.endpoint.trim_end_matches('/')
            ))
            .build()
            .map_err(|e| e.to_string())?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(
                opentelemetry_sdk::Resource::builder()
                    .with_service_name(config.service_name.clone())
                    .build(),
            )
            .build();
        let tracer = provider.tracer("shop");
        let _ = PROVIDER.set(provider);
        Ok(Box::new(tracing_opentelemetry::layer().with_tracer(tracer)))
    }

    pub fn shutdown() {
        if let Some(provider) = PROVIDER.get() {
            let _ = provider.force_flush();
            let _ = provider.shutdown();
        }
    }

    pub fn enabled() -> bool {
        PROVIDER.get().is_some()
    }

    pub fn set_parent(span: &tracing::Span, traceparent: &str) {
        if !enabled() {
            return;
        }
        let carrier: HashMap<String, String> =
            HashMap::from([("traceparent".to_string(), traceparent.to_string())]);
        let context = TraceContextPropagator::new().extract(&carrier);
        let _ = span.set_parent(context);
    }

    /// The current span's context as a `traceparent`, when spans are exported.
    pub fn current_traceparent() -> Option<String> {
        if !enabled() {
            return None;
        }
        let context = tracing::Span::current().context();
        let span = context.span();
        let sc = span.span_context();
        sc.is_valid().then(|| {
            format!(
                "00-{}-{}-{:02x}",
                sc.trace_id(),
                sc.span_id(),
                sc.trace_flags().to_u8()
            )
        })
    }
}

#[cfg(not(feature = "otlp"))]
mod otel {
    use super::{BoxedLayer, OtlpConfig};

    pub fn layer(_: &OtlpConfig) -> Result<BoxedLayer, String> {
        Err("this build has no OTLP export (build with `--features otlp`)".into())
    }

    pub fn shutdown() {}

    pub fn set_parent(_: &tracing::Span, _: &str) {}

    pub fn current_traceparent() -> Option<String> {
        None
    }
}

static METRICS: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process's Prometheus recorder (once).
pub fn init_metrics() {
    METRICS.get_or_init(|| PrometheusBuilder::new().install_recorder().ok());
}

/// The Prometheus text exposition of every metric of this process.
pub fn render_metrics() -> String {
    init_metrics();
    METRICS
        .get()
        .and_then(|h| h.as_ref())
        .map(|h| h.render())
        .unwrap_or_default()
}

/// Middleware: `http_requests_total` and `http_request_duration_seconds` by component,
/// route and status.
pub async fn record_http(component: &'static str, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    let labels = [
        ("component", component.to_string()),
        ("method", method),
        ("route", route),
        ("status", status),
    ];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    response
}

/// A fresh W3C `traceparent` (version 00, sampled).
pub fn new_traceparent() -> String {
    let trace = uuid::Uuid::new_v4().simple().to_string();
    let span = &uuid::Uuid::new_v4().simple().to_string()[..16];
    format!("00-{trace}-{span}-01")
}

/// A child of `parent` (same trace, new span id); a fresh one if `parent` is malformed.
/// When spans are exported, the current span (itself a child of `parent`'s trace) is
/// the parent of what follows.
pub fn child_traceparent(parent: &str) -> String {
    if let Some(current) = otel::current_traceparent() {
        if current.get(3..35) == parent.get(3..35) {
            return current;
        }
    }
    let parts: Vec<&str> = parent.split('-').collect();
    if parts.len() == 4 && parts[1].len() == 32 && parts[1].chars().all(|c| c.is_ascii_hexdigit()) {
        let span = &uuid::Uuid::new_v4().simple().to_string()[..16];
        format!("00-{}-{span}-{}", parts[1], parts[3])
    } else {
        new_traceparent()
    }
}

/// The chain a request's events belong to, from its headers: the correlation id (the
/// request id when none was given), the request as cause, a child of its trace context.
pub fn metadata_from_headers(headers: &axum::http::HeaderMap) -> shop_schemas::EventMetadata {
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let request_id = get(REQUEST_ID).unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    shop_schemas::EventMetadata {
        correlation_id: get(CORRELATION_ID_HEADER).unwrap_or_else(|| request_id.clone()),
        causation_id: request_id,
        traceparent: get(TRACEPARENT_HEADER)
            .map(|p| child_traceparent(&p))
            .or_else(otel::current_traceparent)
            .unwrap_or_else(new_traceparent),
    }
}

/// The chain of an event a reaction appends because of `cause`: same correlation id,
/// the cause's event id, a child of its trace context.
pub fn metadata_caused_by(cause: &shop_schemas::CloudEvent) -> shop_schemas::EventMetadata {
    shop_schemas::EventMetadata {
        correlation_id: cause.correlationid.clone(),
        causation_id: cause.id.to_string(),
        traceparent: child_traceparent(&cause.traceparent),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_shape_and_child_keeps_trace() {
        let parent = new_traceparent();
        assert_eq!(parent.len(), 55);
        let child = child_traceparent(&parent);
        assert_eq!(&child[..35], &parent[..35]);
        assert_ne!(child, parent);
        assert_eq!(child_traceparent("garbage").len(), 55);
    }
}
