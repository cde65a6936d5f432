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
    // PostgreSQL's notices ("relation … already exists, skipping" for every table at
    // every start) are not news, unless asked for.
    let filter = if filter.contains("sqlx") {
        filter.to_string()
    } else {
        format!("{filter},sqlx::postgres::notice=warn")
    };
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

/// Every metric of Shop is named `shop_…` (the process's own, `process_…`, are not).
pub const METRIC_PREFIX: &str = "shop";

/// Histogram buckets of every `…_seconds` metric: 1 ms to 30 s.
const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Histogram buckets of counts (events per group commit).
const COUNT_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// Every metric Shop records (without the prefix): its kind, unit and what it tells, so
/// each family has `# HELP` and `# TYPE` (docs/src/operator.md lists them with alerts).
pub const METRICS_CATALOGUE: &[(&str, MetricKind, &str)] = &[
    ("http_requests_total", MetricKind::Counter, "HTTP requests answered, by component, method, route template and status"),
    ("http_connections_refused_total", MetricKind::Counter, "Connections answered 503 and closed because the component's listener had SHOP_HTTP_MAX_CONNECTIONS open, by component"),
    ("http_request_duration_seconds", MetricKind::Histogram, "Time to answer an HTTP request, by component, method, route template and status"),
    ("command_duration_seconds", MetricKind::Histogram, "Time to decide and append one command, by aggregate and outcome"),
    ("append_group_size", MetricKind::Histogram, "Appends written together by one group commit"),
    ("events_appended_total", MetricKind::Counter, "Events appended to a service's event store"),
    ("events_published_total", MetricKind::Counter, "Events the outbox relay published to the event log"),
    ("relay_backlog_events", MetricKind::Gauge, "Events in a service's outbox not yet published"),
    ("consumer_events_total", MetricKind::Counter, "Events a consumer handled, by consumer and outcome"),
    ("consumer_lag_events", MetricKind::Gauge, "Records on a consumer's partitions not yet applied"),
    ("consumer_oldest_unprocessed_seconds", MetricKind::Gauge, "Age of the oldest record a consumer has not applied (0 when none waits)"),
    ("consumer_rewinds_total", MetricKind::Counter, "Times a consumer read records again (checkpoint_gap: commits lost by the database; database_unavailable)"),
    ("consumer_resubscriptions_total", MetricKind::Counter, "Times a consumer member that fetched nothing while records waited subscribed again"),
    ("dead_letters_total", MetricKind::Counter, "Events a consumer gave up on and dead-lettered"),
    ("dead_letters_retried_total", MetricKind::Counter, "Dead-lettered events sent back to their consumer"),
    ("saga_outcomes_total", MetricKind::Counter, "Orders decided by the saga, by event (OrderConfirmed, OrderCancelled) and reason"),
    ("saga_backlog_orders", MetricKind::Gauge, "Placed orders the saga has not decided yet (counted by each orders instance)"),
    ("saga_backlog_refusals_total", MetricKind::Counter, "New orders refused with 503 because the saga's backlog was at SHOP_ORDERS_MAX_PENDING"),
    ("idempotency_keys_total", MetricKind::Counter, "Idempotency-Key uses by outcome: claimed, replayed, reused"),
    ("projection_lag_events", MetricKind::Gauge, "Records a projection version has not applied yet"),
    ("projection_oldest_unprocessed_seconds", MetricKind::Gauge, "Age of the oldest record a projection version has not applied"),
    ("projection_checkpoint_gaps", MetricKind::Gauge, "Checkpoint gaps found in a projection version (commits the database lost)"),
    ("projection_recovering", MetricKind::Gauge, "1 while a projection version reads again after a checkpoint gap"),
    ("projection_rebuilds_total", MetricKind::Counter, "Projection rebuilds started"),
    ("gateway_upstream_weight", MetricKind::Gauge, "Share of an upstream's clients (percent) sent to its canary"),
    ("gateway_traffic_changes_total", MetricKind::Counter, "Traffic changes at run time, by upstream and action"),
    ("gateway_canary_rollbacks_total", MetricKind::Counter, "Canaries rolled back by the gateway for their error rate"),
    ("gateway_shed_total", MetricKind::Counter, "Requests the gateway refused with 503 because their upstream had its limit in flight"),
    ("build_info", MetricKind::Gauge, "1, labelled with the version of the running build"),
    ("webhook_deliveries_scheduled_total", MetricKind::Counter, "Webhook deliveries scheduled (one per event and subscribed endpoint)"),
    ("webhook_attempts_total", MetricKind::Counter, "Webhook delivery attempts, by outcome (delivered, failed)"),
    ("webhook_attempt_duration_seconds", MetricKind::Histogram, "Time of one webhook delivery attempt, until the receiver's answer or the failure"),
    ("webhook_attempts_in_flight", MetricKind::Gauge, "Webhook delivery attempts in flight in this process"),
];

/// How a metric is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

/// Installs the process's Prometheus recorder (once): `shop_` before every name,
/// histograms with buckets (aggregatable across instances), a description per family.
pub fn init_metrics() {
    METRICS.get_or_init(|| {
        use metrics_exporter_prometheus::Matcher;
        use metrics_util::layers::{Layer, PrefixLayer};
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
            .ok()?
            .set_buckets_for_metric(
                Matcher::Full(format!("{METRIC_PREFIX}_append_group_size")),
                COUNT_BUCKETS,
            )
            .ok()?
            .build_recorder();
        let handle = recorder.handle();
        metrics::set_global_recorder(PrefixLayer::new(METRIC_PREFIX).layer(recorder)).ok()?;
        for (name, kind, help) in METRICS_CATALOGUE {
            let unit = name.ends_with("_seconds").then_some(metrics::Unit::Seconds);
            match (kind, unit) {
                (MetricKind::Counter, _) => metrics::describe_counter!(*name, *help),
                (MetricKind::Gauge, _) => metrics::describe_gauge!(*name, *help),
                (MetricKind::Histogram, Some(unit)) => {
                    metrics::describe_histogram!(*name, unit, *help)
                }
                (MetricKind::Histogram, None) => metrics::describe_histogram!(*name, *help),
            }
        }
        metrics::gauge!("build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
        Some(handle)
    });
}

/// The Prometheus text exposition of every metric of this process, and the process's
/// own (`process_cpu_seconds_total`, memory, file descriptors, threads, start time).
pub fn render_metrics() -> String {
    init_metrics();
    let mut text = METRICS
        .get()
        .and_then(|h| h.as_ref())
        .map(|h| h.render())
        .unwrap_or_default();
    text.push_str(&process_metrics());
    text
}

/// The standard `process_*` metrics from `/proc/self` (Linux; nothing elsewhere).
fn process_metrics() -> String {
    use std::fmt::Write;
    // Clock ticks per second of /proc times: USER_HZ, 100 on Linux.
    const TICKS: f64 = 100.0;
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, value: f64| {
        let _ = write!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
        );
    };
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return String::new();
    };
    // Fields after the command name (which may hold spaces), from field 3 on.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<f64>().ok());
    if let (Some(user), Some(system)) = (field(14), field(15)) {
        family(
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            (user + system) / TICKS,
        );
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
    };
    if let Some(rss) = kib("VmRSS:") {
        family(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            rss * 1024.0,
        );
    }
    if let Some(size) = kib("VmSize:") {
        family(
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory size in bytes.",
            size * 1024.0,
        );
    }
    if let Some(threads) = kib("Threads:") {
        family(
            "process_threads",
            "gauge",
            "Number of OS threads in the process.",
            threads,
        );
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        family(
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            fds.count() as f64,
        );
    }
    let max_fds = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|limits| {
            limits
                .lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3))
                .and_then(|v| v.parse::<f64>().ok())
        });
    if let Some(max) = max_fds {
        family(
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
            max,
        );
    }
    let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|v| v.trim().parse::<f64>().ok())
    });
    if let (Some(boot), Some(start)) = (boot, field(22)) {
        family(
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            boot + start / TICKS,
        );
    }
    out
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
