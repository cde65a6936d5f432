//! The HTTP edge shared by every component: problem+json errors (RFC 9457), JSON bodies
//! that reject bad input in the same format, `/health`, `/ready`, `/metrics`, and serving
//! with graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures::future::BoxFuture;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use tracing::{error, info, Span};

pub const PROBLEM_JSON: &str = "application/problem+json";
/// The request id header (defined with the other propagated headers in telemetry).
pub use crate::telemetry::REQUEST_ID;

/// One bad field of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

/// An error answered as `application/problem+json` (RFC 9457).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem, e.g. `https://shop.example/problems/validation`.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Each invalid field of the request (422), or the invalid header (400).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(required = false)]
    pub errors: Vec<FieldError>,
    /// Seconds to wait before trying again: sent as the `Retry-After` header.
    #[serde(skip)]
    #[schema(ignore)]
    pub retry_after: Option<u64>,
}

impl Problem {
    /// The answer also says how many seconds to wait (`Retry-After`).
    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    pub fn new(status: StatusCode, kind: &str, detail: impl Into<String>) -> Self {
        Problem {
            kind: format!("https://shop.example/problems/{kind}"),
            title: status.canonical_reason().unwrap_or("Error").to_string(),
            status: status.as_u16(),
            detail: detail.into(),
            errors: Vec::new(),
            retry_after: None,
        }
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad-request", detail)
    }

    pub fn validation(errors: Vec<FieldError>) -> Self {
        let mut p = Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation",
            "the request has invalid fields",
        );
        p.errors = errors;
        p
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", detail)
    }

    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", detail)
    }

    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", detail)
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", detail)
    }

    /// A fault on our side. The cause is logged here; the body says nothing internal.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        error!(error = %cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "an unexpected error occurred",
        )
    }

    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", detail)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, Json(&self)).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// A free-text field as stored: trimmed, 1 to `max_chars` characters, no control
/// characters (a NUL byte, for one, cannot be stored in PostgreSQL text or JSON).
pub fn text_field(value: Option<&str>, max_chars: usize) -> Option<String> {
    // Control characters anywhere in the value as sent, trailing ones too: the documented
    // pattern forbids them, so trimming must not make such a value acceptable (the API
    // fuzzer sent a name ending in form feed and newline, and it was registered).
    value
        .filter(|v| !v.chars().any(char::is_control))
        .map(str::trim)
        .filter(|v| !v.is_empty() && v.chars().count() <= max_chars)
        .map(String::from)
}

/// Collects field errors of one request; empty means valid.
#[derive(Debug, Default)]
pub struct Validation {
    errors: Vec<FieldError>,
}

impl Validation {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `message` for `field` when `ok` is false.
    pub fn check(&mut self, ok: bool, field: &str, message: &str) -> &mut Self {
        if !ok {
            self.errors.push(FieldError {
                field: field.to_string(),
                message: message.to_string(),
            });
        }
        self
    }

    /// # Errors
    /// A 422 problem listing every bad field.
    pub fn finish(self) -> Result<(), Problem> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(Problem::validation(self.errors))
        }
    }
}

/// A JSON body whose rejections (bad syntax, wrong shape, wrong content type) come out
/// as problem+json: 400 for unreadable bodies, 422 for well-formed JSON of the wrong shape.
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let headers = req.headers().clone();
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|rejection| body_rejection(rejection.status(), rejection.body_text()))?;
        json_body(&headers, &bytes).map(ApiJson)
    }
}

/// A request body that could not be read: 413 when over the limit, else 400.
pub(crate) fn body_rejection(status: StatusCode, text: String) -> Problem {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        Problem::new(status, "payload-too-large", text)
    } else {
        Problem::bad_request(text)
    }
}

/// A JSON request body as `T`: 415 without a JSON content type; 400 when it is not JSON
/// (`errors` names where it breaks); 422 when it is JSON of the wrong shape, a number out
/// of range included, with the field named by its path (`lines[0].quantity`).
pub fn json_body<T: DeserializeOwned>(
    headers: &axum::http::HeaderMap,
    bytes: &[u8],
) -> Result<T, Problem> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default();
    let is_json = content_type == "application/json"
        || (content_type.starts_with("application/") && content_type.ends_with("+json"));
    if !is_json {
        return Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "expected Content-Type: application/json",
        ));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let parsed = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let path = e.path().to_string();
        // `.` is the body itself, `?` a place the parser had not reached a field in.
        let field = if path == "." || path == "?" || path.is_empty() {
            "body".to_string()
        } else {
            path
        };
        (field, e.into_inner())
    });
    let parsed = parsed.and_then(|value| {
        deserializer
            .end()
            .map(|()| value)
            .map_err(|e| ("body".to_string(), e))
    });
    parsed.map_err(|(field, e)| {
        use serde_json::error::Category;
        let message = e.to_string();
        let wrong_shape =
            matches!(e.classify(), Category::Data) || message.starts_with("number out of range");
        let problem = if wrong_shape {
            Problem::validation(Vec::new())
        } else {
            Problem::bad_request("the body is not valid JSON")
        };
        let mut problem = problem;
        problem.errors = vec![FieldError {
            field: field.clone(),
            message: message.clone(),
        }];
        problem.detail = format!("{field}: {message}");
        problem
    })
}

/// The query of a read, strictly: a parameter the route does not take, or one given
/// twice, is a 400 rather than silently ignored (a typo in `limit` should not pass).
pub struct StrictQuery<T>(pub T);

impl<T, S> axum::extract::FromRequestParts<S> for StrictQuery<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Problem> {
        let bad = |e: &dyn std::fmt::Display| Problem::bad_request(format!("query: {e}"));
        let pairs = axum::extract::Query::<Vec<(String, String)>>::try_from_uri(&parts.uri)
            .map_err(|e| bad(&e.body_text()))?
            .0;
        let mut seen = std::collections::HashSet::new();
        if let Some((key, _)) = pairs.iter().find(|(key, _)| !seen.insert(key.as_str())) {
            return Err(bad(&format!("parameter `{key}` is given more than once")));
        }
        axum::extract::Query::<T>::try_from_uri(&parts.uri)
            .map(|q| StrictQuery(q.0))
            .map_err(|e| bad(&e.body_text()))
    }
}

/// Answers every unknown route with a problem.
pub async fn not_found_fallback() -> Problem {
    Problem::not_found("no such route")
}

/// Answers a known route called with a method it does not take.
pub async fn method_not_allowed_fallback(method: axum::http::Method) -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        format!("this route does not take {method}"),
    )
}

/// The longest request target (path and query) taken: 414 above.
pub const MAX_URI_BYTES: usize = 8 * 1024;
/// The most header bytes (names and values) a request may carry: 431 above.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;

/// Refuses, as problem+json, a request target or a header section too long for any
/// route (hyper's own, far larger, limit answers without a body).
async fn request_head_limits(req: Request, next: axum::middleware::Next) -> Response {
    let uri_bytes = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if uri_bytes > MAX_URI_BYTES {
        return Problem::new(
            StatusCode::URI_TOO_LONG,
            "uri-too-long",
            format!("the request target is {uri_bytes} bytes; at most {MAX_URI_BYTES} are taken"),
        )
        .into_response();
    }
    let header_bytes: usize = req
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if header_bytes > MAX_HEADER_BYTES {
        return Problem::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers-too-large",
            format!("the headers are {header_bytes} bytes; at most {MAX_HEADER_BYTES} are taken"),
        )
        .into_response();
    }
    next.run(req).await
}

/// What `/ready` checks: the component's database and Kafka.
pub type ReadyCheck = Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// `/health`, `/ready` and `/metrics` for one component.
pub fn ops_router(ready: ReadyCheck) -> Router {
    Router::new()
        .route(
            "/health",
            get(|| async { Json(serde_json::json!({"status": "ok"})) }),
        )
        .route(
            "/ready",
            get(move || {
                let ready = ready.clone();
                async move {
                    match ready().await {
                        Ok(()) => Json(serde_json::json!({"status": "ready"})).into_response(),
                        Err(why) => Problem::unavailable(why).into_response(),
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                    crate::telemetry::render_metrics(),
                )
            }),
        )
}

/// Adds request ids, one span per request (joined by the request id and correlation id)
/// and HTTP metrics to a component's router.
pub fn with_edge_layers(router: Router, component: &'static str) -> Router {
    router
        .fallback(not_found_fallback)
        .method_not_allowed_fallback(method_not_allowed_fallback)
        .layer(axum::middleware::from_fn(request_head_limits))
        .layer(axum::middleware::from_fn(
            move |req: Request, next: axum::middleware::Next| {
                crate::telemetry::record_http(component, req, next)
            },
        ))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(move |req: &Request| {
                    let header = |name: &str| {
                        req.headers()
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_string()
                    };
                    let traceparent = header(crate::telemetry::TRACEPARENT_HEADER);
                    let span = tracing::info_span!(
                        "http",
                        component,
                        method = %req.method(),
                        path = %req.uri().path(),
                        request_id = %header(REQUEST_ID),
                        correlation_id = %header(crate::telemetry::CORRELATION_ID_HEADER),
                        trace_id = %crate::telemetry::trace_id(&traceparent),
                        status = tracing::field::Empty,
                    );
                    if !traceparent.is_empty() {
                        crate::telemetry::set_parent(&span, &traceparent);
                    }
                    span
                })
                .on_response(
                    |res: &Response, latency: std::time::Duration, span: &Span| {
                        span.record("status", res.status().as_u16());
                        tracing::debug!(latency_ms = latency.as_millis() as u64, "response");
                    },
                ),
        )
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
}

/// A bound listener: the address it got (port 0 picks a free one).
pub async fn bind(host: &str, port: u16) -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind((host, port)).await?;
    let addr = listener.local_addr()?;
    Ok((listener, addr))
}

/// How long a connection may take to send a request head (the first one, or the next
/// on a kept-alive connection): after it, the connection is closed, so clients that
/// open connections and never finish a request cannot hold file descriptors.
pub const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Serves a router until `shutdown` is cancelled, then drains in-flight requests.
///
/// HTTP/1.1 over hyper with [`HEADER_READ_TIMEOUT`]; the peer address reaches handlers
/// as `ConnectInfo` (the gateway's per-client rate limit). An accept error (file
/// descriptors exhausted) pauses accepting briefly instead of ending the server. At most
/// `max_connections` connections are served at once (0: no limit); one more gets a 503
/// problem with `Retry-After: 1` to its first request and is closed
/// (`http_connections_refused_total`), so the connections of a flood — each with its
/// buffers and task — cannot grow the process without bound.
///
/// # Errors
/// The listener has no address.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
    name: &'static str,
    max_connections: usize,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use tower::ServiceExt;

    let addr = listener.local_addr()?;
    info!(component = name, %addr, "listening");
    let mut connections = tokio::task::JoinSet::new();
    let slots =
        (max_connections > 0).then(|| Arc::new(tokio::sync::Semaphore::new(max_connections)));
    loop {
        while connections.try_join_next().is_some() {}
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(component = name, error = %e, "accepting a connection failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let slot = match &slots {
            Some(slots) => match slots.clone().try_acquire_owned() {
                Ok(slot) => Some(slot),
                Err(_) => {
                    metrics::counter!("http_connections_refused_total", "component" => name)
                        .increment(1);
                    connections.spawn(refuse_connection(stream, max_connections));
                    continue;
                }
            },
            None => None,
        };
        let router = router.clone();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let _slot = slot;
            let service = hyper::service::service_fn(
                move |mut request: hyper::Request<hyper::body::Incoming>| {
                    request
                        .extensions_mut()
                        .insert(axum::extract::ConnectInfo(peer));
                    router.clone().oneshot(request.map(axum::body::Body::new))
                },
            );
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT);
            let connection = http.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                () = shutdown.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        });
    }
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// Answers a connection over the limit: 503 to its first request, then closed.
async fn refuse_connection(stream: tokio::net::TcpStream, limit: usize) {
    use hyper_util::rt::{TokioIo, TokioTimer};

    let service = hyper::service::service_fn(move |_request| async move {
        let problem = Problem::unavailable(format!(
            "overloaded: {limit} connections are open; try again shortly"
        ))
        .retry_after(1);
        Ok::<_, std::convert::Infallible>(problem.into_response())
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(std::time::Duration::from_secs(1))
        .keep_alive(false);
    let _ = http.serve_connection(TokioIo::new(stream), service).await;
}

#[cfg(test)]
mod tests {
    use super::text_field;

    /// A drained component says so on `/ready` and serves everything else as before.
    #[tokio::test]
    async fn a_draining_component_is_not_ready_and_still_serves() {
        use axum::body::Body;
        use axum::http::StatusCode;
        use tower::ServiceExt;

        let deferred = super::Deferred::new("its database");
        deferred.started(
            super::ops_router(std::sync::Arc::new(|| Box::pin(async { Ok(()) })))
                .route("/work", axum::routing::get(|| async { "done" })),
        );
        let call = |path: &'static str| {
            let router = deferred.router();
            async move {
                let request = axum::http::Request::get(path).body(Body::empty()).unwrap();
                router.oneshot(request).await.unwrap().status()
            }
        };
        assert_eq!(call("/ready").await, StatusCode::OK);
        deferred.drain();
        assert!(deferred.is_draining());
        assert_eq!(call("/ready").await, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            call("/health").await,
            StatusCode::OK,
            "alive while draining"
        );
        assert_eq!(call("/work").await, StatusCode::OK, "still serving");
    }

    /// One connection more than the limit is answered 503 with `Retry-After` and closed;
    /// once a served connection ends, the next is served again.
    #[tokio::test]
    async fn a_connection_over_the_limit_is_refused_and_served_once_a_slot_frees() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        use tokio::net::TcpStream;

        let listener = super::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = super::CancellationToken::new();
        let router = axum::Router::new().route("/work", axum::routing::get(|| async { "done" }));
        let server = tokio::spawn(super::serve(listener, router, shutdown.clone(), "test", 1));
        let get = |mut stream: TcpStream| async move {
            stream
                .write_all(b"GET /work HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                .await
                .unwrap();
            let mut answer = String::new();
            stream.read_to_string(&mut answer).await.unwrap();
            answer
        };
        // The one slot, held by a connection that has not sent its request yet.
        let held = TcpStream::connect(addr).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let refused = get(TcpStream::connect(addr).await.unwrap()).await;
        assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
        assert!(
            refused.to_ascii_lowercase().contains("retry-after: 1"),
            "{refused}"
        );
        assert!(refused.contains("connections are open"), "{refused}");
        let served = get(held).await;
        assert!(served.starts_with("HTTP/1.1 200"), "{served}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let again = get(TcpStream::connect(addr).await.unwrap()).await;
        assert!(again.starts_with("HTTP/1.1 200"), "{again}");
        shutdown.cancel();
        server.await.unwrap().unwrap();
    }

    #[test]
    fn text_fields_are_trimmed_bounded_and_printable() {
        assert_eq!(text_field(Some("  Hanako "), 10).as_deref(), Some("Hanako"));
        assert_eq!(text_field(Some("東京都"), 3).as_deref(), Some("東京都"));
        for bad in [
            None,
            Some(""),
            Some("   "),
            Some("a\u{0}b"),
            Some("a\tb"),
            Some("\u{85}"),
            // Trailing control characters: not trimmed into acceptance.
            Some("ab\u{c}\n"),
            Some("abcd"),
        ] {
            assert_eq!(text_field(bad, 3), None, "{bad:?}");
        }
    }
}

/// A component's router that answers before the component has started: while it waits
/// for its database (or anything else it needs to start), `/health` says it is alive,
/// `/ready` answers 503 naming what it waits for, and every other route a 503 problem
/// with `Retry-After`; once started, everything goes to the component's own router. So a
/// process listens at once, whatever is down, and takes traffic as soon as it can.
///
/// Once [`Deferred::drain`]ed (the process got SIGTERM), `/ready` answers 503
/// `draining` while every other route is still served: load balancers (a Kubernetes
/// Service, the gateway's health checks) take the instance out of rotation before it
/// stops accepting connections.
#[derive(Clone)]
pub struct Deferred {
    state: Arc<std::sync::RwLock<DeferredState>>,
    draining: Arc<std::sync::atomic::AtomicBool>,
}

enum DeferredState {
    Waiting(String),
    Started(Router),
}

impl Deferred {
    /// Waiting, for the reason given.
    pub fn new(waiting_for: impl Into<String>) -> Self {
        Deferred {
            state: Arc::new(std::sync::RwLock::new(DeferredState::Waiting(
                waiting_for.into(),
            ))),
            draining: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        }
    }

    /// Draining: from now on `/ready` answers 503 (`draining`); the rest is served as
    /// before.
    pub fn drain(&self) {
        self.draining
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// Whether [`Deferred::drain`] was called.
    pub fn is_draining(&self) -> bool {
        self.draining.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Still waiting, for this reason now (`/ready` says it).
    pub fn waiting(&self, why: impl Into<String>) {
        if let Ok(mut state) = self.state.write() {
            if matches!(*state, DeferredState::Waiting(_)) {
                *state = DeferredState::Waiting(why.into());
            }
        }
    }

    /// Started: from now on `router` serves every request.
    pub fn started(&self, router: Router) {
        if let Ok(mut state) = self.state.write() {
            *state = DeferredState::Started(router);
        }
    }

    /// The router to serve: the component's once started, the waiting answers until then.
    pub fn router(&self) -> Router {
        let this = self.clone();
        Router::new().fallback_service(tower::service_fn(move |request: Request| {
            let this = this.clone();
            async move {
                if this.is_draining() && request.uri().path() == "/ready" {
                    return Ok(draining_answer());
                }
                let current = match this.state.read() {
                    Ok(state) => match &*state {
                        DeferredState::Started(router) => Ok(router.clone()),
                        DeferredState::Waiting(why) => Err(why.clone()),
                    },
                    Err(_) => Err("starting".to_string()),
                };
                match current {
                    Ok(router) => {
                        use tower::ServiceExt;
                        router.oneshot(request).await
                    }
                    Err(why) => Ok::<_, std::convert::Infallible>(waiting_answer(
                        request.uri().path(),
                        &why,
                    )),
                }
            }
        }))
    }
}

/// `/ready` of a draining instance.
fn draining_answer() -> Response {
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "draining",
        "draining: this instance is shutting down and takes no new work",
    )
    .into_response()
}

fn waiting_answer(path: &str, why: &str) -> Response {
    match path {
        "/health" => Json(serde_json::json!({"status": "starting"})).into_response(),
        "/ready" => Problem::unavailable(format!("starting: {why}")).into_response(),
        _ => {
            let mut response =
                Problem::unavailable(format!("the service is starting: {why}")).into_response();
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            response
        }
    }
}
