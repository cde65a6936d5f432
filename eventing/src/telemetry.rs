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

/// Installs the global subscriber; `filter` is an `EnvFilter` directive such as `info`
/// or `shop=debug,rdkafka=warn`. A second call does nothing.
pub fn init_logging(format: LogFormat, filter: &str) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    let _ = match format {
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_target(false),
            )
            .try_init(),
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_writer(std::io::stderr)
                    .with_current_span(true)
                    .with_span_list(true),
            )
            .try_init(),
    };
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
pub fn child_traceparent(parent: &str) -> String {
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
    let request_id =
        get(crate::http::REQUEST_ID).unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    shop_schemas::EventMetadata {
        correlation_id: get(CORRELATION_ID_HEADER).unwrap_or_else(|| request_id.clone()),
        causation_id: request_id,
        traceparent: get(TRACEPARENT_HEADER)
            .map(|p| child_traceparent(&p))
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
