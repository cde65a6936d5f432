//! The API gateway: the one public entry point (`/api/...`).
//!
//! It knows routes, not domains: it verifies the JWT of every non-public route before
//! anything reaches a service, picks the upstream by method and path, forwards the
//! request with its request id, correlation id and W3C `traceparent`, and answers every
//! failure of its own (unknown route, bad token, upstream down or slow, body too large,
//! too many requests) as problem+json.
//!
//! Rate limiting is per client — the token's subject when the request carries a valid
//! token, else the peer address — with a token bucket (`governor`): `per_second`
//! requests replenished each second, up to `burst` at once; beyond it, 429 with
//! `Retry-After`.
//!
//! Public product reads (`GET /api/products…` without a consistency token) are cached
//! for a short time (`cache_ttl`): a repeat within it is answered here (`x-cache: hit`)
//! without reaching the read API.
//!
//! Traffic control at run time (`traffic`, `admin`): an upstream's canary weight, set,
//! promoted in steps or rolled back through `/api/admin/traffic/{upstream}` (role admin),
//! rolled back by itself when its 5xx-or-timeout rate over a sliding window passes a
//! threshold; clients are assigned sticky by token subject, else address. Strangler-fig
//! routes (`/api/admin/legacy-routes/{name}`) send a prefix, or a share of its clients, to
//! a legacy upstream outside Shop with headers added each way.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Json, Router};
use futures::FutureExt;
use shop_web::auth::JwtKeys;
use shop_web::http::{ops_router, with_edge_layers, Problem, ReadyCheck, REQUEST_ID};
use shop_web::telemetry::{new_traceparent, CORRELATION_ID_HEADER, TRACEPARENT_HEADER};
use std::panic::AssertUnwindSafe;
use tower::ServiceExt;
use tracing::warn;

mod admin;
mod cache;
mod edge;
mod legacy;
mod routes;
mod shed;

pub use cache::CACHE_HEADER;
use cache::{cacheable, Cached};
use legacy::{forward_legacy, legacy_route};
use routes::events_context;
pub use routes::{route, Upstream};
pub mod balancer;
mod docs;
mod openapi;
mod schemas;
pub use openapi::openapi;
pub mod traffic;

use balancer::Balancer;
pub use balancer::Resilience;

pub const COMPONENT: &str = "gateway";

/// Where each upstream listens (base URLs such as `http://127.0.0.1:8082`).
#[derive(Debug, Clone)]
pub struct Upstreams {
    pub customers: String,
    pub inventory: String,
    pub orders: String,
    pub payments: String,
    pub shipping: String,
    pub notifications: String,
    pub read_api: String,
}

impl Upstreams {
    /// Where that upstream listens.
    pub fn of(&self, upstream: Upstream) -> &str {
        match upstream {
            Upstream::Customers => &self.customers,
            Upstream::Inventory => &self.inventory,
            Upstream::Orders => &self.orders,
            Upstream::Payments => &self.payments,
            Upstream::Shipping => &self.shipping,
            Upstream::Notifications => &self.notifications,
            Upstream::ReadApi => &self.read_api,
        }
    }
}

/// Gateway settings.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub upstreams: Upstreams,
    /// Largest request body accepted (413 above).
    pub body_limit: usize,
    /// Time allowed for an upstream's answer (504 after).
    pub upstream_timeout: Duration,
    /// Requests per client (`None`: unlimited).
    pub rate_limit: Option<RateLimit>,
    /// How long a public product read is served from the cache (zero: no cache).
    pub cache_ttl: Duration,
    /// Circuit breakers and health checks of the upstreams.
    pub resilience: Resilience,
    /// Second versions of upstreams that get a share of the traffic.
    pub canaries: Vec<Canary>,
    /// The public API's OpenAPI document, served at `/api/openapi.json` and rendered at
    /// `/api/docs`.
    pub openapi: Option<Arc<serde_json::Value>>,
    /// Upstream instances that run in this process, by base URL (as the upstream lists
    /// name them): their requests are handed to the router directly instead of going
    /// over a loopback connection, with the same headers, body, timeout and answer.
    pub in_process: Vec<(String, Router)>,
    /// The bearer token that may read the gateway's `/metrics` (an admin's JWT may too;
    /// `None`: admins only).
    pub metrics_token: Option<String>,
    /// Requests in flight to one upstream at most (0: no limit); one more is refused at
    /// once with 503 and `Retry-After`.
    pub max_in_flight: usize,
}

/// A canary: `percent` of an upstream's requests go to these instances instead.
#[derive(Debug, Clone)]
pub struct Canary {
    pub upstream: Upstream,
    /// Comma-separated base URLs, like an upstream's.
    pub instances: String,
    pub percent: u8,
}

impl Canary {
    /// From `upstream=url[,url…]@percent`, e.g. `read-api=http://10.0.0.9:8090@10`.
    pub fn parse(spec: &str) -> Result<Canary, String> {
        let (name, rest) = spec
            .split_once('=')
            .ok_or_else(|| format!("canary {spec:?}: expected upstream=urls@percent"))?;
        let (instances, percent) = rest
            .rsplit_once('@')
            .ok_or_else(|| format!("canary {spec:?}: expected urls@percent"))?;
        let upstream = Upstream::named(name.trim())
            .ok_or_else(|| format!("canary {spec:?}: no upstream {:?}", name.trim()))?;
        let percent: u8 = percent
            .trim()
            .parse()
            .ok()
            .filter(|p| *p <= 100)
            .ok_or_else(|| format!("canary {spec:?}: percent must be 0 to 100"))?;
        Ok(Canary {
            upstream,
            instances: instances.trim().to_string(),
            percent,
        })
    }
}

/// Which version of an upstream answered: `stable` or `canary`.
pub const ROUTE_HEADER: &str = "x-upstream-version";

/// Which version of an upstream answered a strangler-fig route: the legacy system.
pub const LEGACY_VERSION: &str = "legacy";

/// A client's request budget: `per_second` replenished every second, `burst` at once.
#[derive(Debug, Clone, Copy)]
pub struct RateLimit {
    pub per_second: NonZeroU32,
    pub burst: NonZeroU32,
}

/// The per-client token buckets.
struct Limiter {
    buckets: DefaultKeyedRateLimiter<String>,
    /// Requests seen, to forget idle clients now and then.
    seen: AtomicU64,
}

impl Limiter {
    fn new(limit: RateLimit) -> Self {
        let quota = Quota::per_second(limit.per_second).allow_burst(limit.burst);
        Limiter {
            buckets: DefaultKeyedRateLimiter::keyed(quota),
            seen: AtomicU64::new(0),
        }
    }

    /// `None` when the client may go on, else how long it should wait.
    fn check(&self, client: String) -> Option<Duration> {
        if self.seen.fetch_add(1, Ordering::Relaxed) % 4096 == 4095 {
            self.buckets.retain_recent();
        }
        self.buckets
            .check_key(&client)
            .err()
            .map(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }
}

#[derive(Clone)]
struct AppState {
    /// Every upstream's instances, its canary and their weights; the legacy routes.
    traffic: Arc<traffic::Traffic>,
    cache: Option<moka::sync::Cache<String, Cached>>,
    limiter: Option<Arc<Limiter>>,
    shedder: Arc<shed::Shedder>,
    config: Arc<GatewayConfig>,
    client: reqwest::Client,
    /// `GatewayConfig::in_process`, by base URL.
    in_process: Arc<HashMap<String, Router>>,
    jwt: JwtKeys,
}

/// Builds the gateway.
pub fn router(config: GatewayConfig, jwt: JwtKeys) -> Router {
    let client = reqwest::Client::builder()
        .timeout(config.upstream_timeout)
        .pool_idle_timeout(Duration::from_secs(30))
        .build()
        .unwrap_or_default();
    let splits: Vec<(Upstream, traffic::Split)> = Upstream::ALL
        .into_iter()
        .map(|upstream| (upstream, config.upstreams.of(upstream)))
        .map(|(upstream, list)| {
            let split = traffic::Split::new(
                Balancer::new(list, config.resilience),
                config
                    .canaries
                    .iter()
                    .find(|c| c.upstream == upstream)
                    .map(|c| (Balancer::new(&c.instances, config.resilience), c.percent)),
            );
            (upstream, split)
        })
        .collect();
    for (_, split) in &splits {
        let interval = config.resilience.health_interval;
        split.stable.spawn_health_checks(client.clone(), interval);
        if let Some(canary) = &split.canary {
            canary.spawn_health_checks(client.clone(), interval);
        }
    }
    let state = AppState {
        traffic: Arc::new(traffic::Traffic::new(splits)),
        cache: (!config.cache_ttl.is_zero()).then(|| {
            moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(config.cache_ttl)
                .build()
        }),
        limiter: config.rate_limit.map(|limit| Arc::new(Limiter::new(limit))),
        shedder: Arc::new(shed::Shedder::new(config.max_in_flight)),
        in_process: Arc::new(
            config
                .in_process
                .iter()
                .map(|(base, router)| (base.trim_end_matches('/').to_string(), router.clone()))
                .collect(),
        ),
        config: Arc::new(config),
        client,
        jwt,
    };
    let ready = ready_check(state.clone());
    let edge_state = state.clone();
    let docs = state.config.openapi.clone().map(|doc| {
        let page = Arc::new(docs::render(&doc));
        Router::new()
            .route(
                "/api/openapi.json",
                get(move || {
                    let doc = doc.clone();
                    async move { Json(doc.as_ref().clone()) }
                }),
            )
            .route(
                "/api/docs",
                get(move || {
                    let page = page.clone();
                    async move { Html(page.as_ref().clone()) }
                }),
            )
    });
    let api = docs
        .unwrap_or_default()
        .merge(admin::routes())
        .merge(schemas::routes())
        .route("/console", any(proxy))
        .route("/console/", any(proxy))
        .route("/console/{*rest}", any(proxy))
        .route("/api", any(proxy))
        .route("/api/{*rest}", any(proxy))
        .with_state(state);
    with_edge_layers(ops_router(ready).merge(api), COMPONENT)
        .layer(axum::middleware::from_fn_with_state(edge_state, edge::edge))
}

fn ready_check(state: AppState) -> ReadyCheck {
    Arc::new(move || {
        let state = state.clone();
        async move {
            // Ready when every upstream's instances have been checked once (so none
            // that is starting or draining gets a request), and some instance of every
            // upstream answers — but for an add-on's (notifications): while it is down
            // only its routes answer 503, and the shop serves on.
            for (upstream, split) in state.traffic.splits.iter() {
                if !upstream.needed_to_be_ready() {
                    continue;
                }
                let balancer = split
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .stable
                    .clone();
                if !balancer.checked() {
                    return Err(format!("checking the instances of upstream {upstream:?}"));
                }
                let mut ok = false;
                for base in balancer.bases() {
                    ok = state
                        .client
                        .get(format!("{base}/health"))
                        .send()
                        .await
                        .is_ok_and(|r| r.status().is_success());
                    if ok {
                        break;
                    }
                }
                if !ok {
                    return Err(format!("upstream {upstream:?} is not healthy"));
                }
            }
            Ok(())
        }
        .boxed()
    })
}

const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn forwardable(name: &HeaderName) -> bool {
    !HOP_BY_HOP.contains(&name.as_str()) && name != "host" && name != "content-length"
}

#[tracing::instrument(name = "proxy", skip_all, fields(upstream = tracing::field::Empty))]
async fn proxy(State(state): State<AppState>, request: Request) -> Response {
    let started = std::time::Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let request_id = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| peer.ip().to_string())
        .unwrap_or_default();
    let response = match forward(&state, request).await {
        Ok(response) => response,
        Err(problem) => problem.into_response(),
    };
    // One structured access-log line per request (`SHOP_LOG_FORMAT=json` for JSON).
    tracing::info!(
        target: "access",
        %method,
        %path,
        status = response.status().as_u16(),
        duration_ms = started.elapsed().as_secs_f64() * 1000.0,
        request_id,
        peer,
        cache = response
            .headers()
            .get(CACHE_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-"),
        "access"
    );
    response
}

/// Who a request comes from, for its rate limit: the token's subject, else the peer.
fn client_of(state: &AppState, parts: &axum::http::request::Parts) -> String {
    if let Ok(claims) = state
        .jwt
        .verify_header(parts.headers.get(axum::http::header::AUTHORIZATION))
    {
        return format!("sub:{}", claims.sub);
    }
    match parts.extensions.get::<ConnectInfo<SocketAddr>>() {
        Some(ConnectInfo(peer)) => format!("ip:{}", peer.ip()),
        None => "ip:unknown".to_string(),
    }
}

/// 503 while an upstream's circuit is open, with `Retry-After`.
fn circuit_open(upstream: Upstream, open_for: Duration) -> Response {
    let seconds = (open_for.as_secs() + u64::from(open_for.subsec_nanos() > 0)).max(1);
    let mut response = Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "circuit-open",
        format!("{upstream:?} is failing; requests are held back for {seconds} s"),
    )
    .into_response();
    response
        .headers_mut()
        .insert(axum::http::header::RETRY_AFTER, HeaderValue::from(seconds));
    response
}

/// 429 with `Retry-After` (whole seconds, at least 1).
fn too_many_requests(wait: Duration) -> Response {
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let mut response = Problem::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate-limited",
        format!("too many requests; retry in {seconds} s"),
    )
    .into_response();
    response.headers_mut().insert(
        axum::http::header::RETRY_AFTER,
        HeaderValue::from(seconds.max(1)),
    );
    response
}

async fn forward(state: &AppState, request: Request) -> Result<Response, Problem> {
    let (parts, body) = request.into_parts();
    if let Some(limiter) = &state.limiter {
        if let Some(wait) = limiter.check(client_of(state, &parts)) {
            return Ok(too_many_requests(wait));
        }
    }
    let path = parts.uri.path();
    if let Some(legacy) = legacy_route(state, &parts) {
        return forward_legacy(state, parts, body, legacy).await;
    }
    let (upstream, public) = match events_context(path, parts.uri.query()) {
        Some(context) => (context?, false),
        None => route(&parts.method, path)
            .ok_or_else(|| Problem::not_found(format!("no route {} {path}", parts.method)))?,
    };
    tracing::Span::current().record("upstream", format!("{upstream:?}"));
    if !public {
        state
            .jwt
            .verify_header(parts.headers.get(axum::http::header::AUTHORIZATION))?;
    }
    let cache_key = state
        .cache
        .as_ref()
        .filter(|_| cacheable(&parts, upstream, public))
        .map(|cache| (cache, parts.uri.to_string()));
    if let Some((cache, key)) = &cache_key {
        if let Some(cached) = cache.get(key) {
            return Ok(cached.response("hit"));
        }
    }
    // Beyond its in-flight limit an upstream's request is refused now, not queued.
    let _slot = state.shedder.enter(upstream)?;
    let body = to_bytes(body, state.config.body_limit).await.map_err(|_| {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload-too-large",
            format!(
                "the request body is larger than {} bytes",
                state.config.body_limit
            ),
        )
    })?;
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or(path)
        .to_string();
    let mut headers = forwardable_headers(&parts.headers);
    // The chain starts here when the client did not name one: the request id.
    if !headers.contains_key(CORRELATION_ID_HEADER) {
        if let Some(request_id) = headers.get(REQUEST_ID).cloned() {
            headers.insert(CORRELATION_ID_HEADER, request_id);
        }
    }
    if !headers.contains_key(TRACEPARENT_HEADER) {
        // The gateway's own span when spans are exported, so the trace starts here.
        let traceparent =
            shop_web::telemetry::current_traceparent().unwrap_or_else(new_traceparent);
        if let Ok(value) = HeaderValue::from_str(&traceparent) {
            headers.insert(TRACEPARENT_HEADER, value);
        }
    }
    let split = state
        .traffic
        .split(upstream)
        .ok_or_else(|| Problem::internal(&"no route for the upstream"))?;
    // Weighted canary: its share of clients (sticky by token subject, else address) goes
    // to the second version.
    let (balancer, canary) = {
        let split = split.lock().unwrap_or_else(|e| e.into_inner());
        let client = if split.canary.is_some() && split.weight > 0 {
            client_of(state, &parts)
        } else {
            String::new()
        };
        match split.pick(upstream, &client) {
            Some(canary) => (canary.clone(), Some(canary)),
            None => (split.stable.clone(), None),
        }
    };
    let version = if canary.is_some() { "canary" } else { "stable" };
    // The canary's outcomes judge it: a 5xx or a timeout counts against it.
    let judge = |failed: bool| {
        if let Some(canary) = &canary {
            state.traffic.record(upstream, canary, failed);
        }
    };
    if let Err(open_for) = balancer.breaker().allow() {
        judge(true);
        return Ok(circuit_open(upstream, open_for));
    }
    // Only requests that may safely run twice go to a second instance after a failure —
    // or any request when the instance could not be connected to (nothing was sent: an
    // instance that has just stopped, after draining, or is not up yet).
    let idempotent = matches!(
        parts.method,
        Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS
    );
    let candidates = balancer.candidates();
    let mut failure = None;
    let mut answered = None;
    for (tried, base) in candidates.iter().take(3).enumerate() {
        if tried > 0 && !idempotent && failure != Some(Reached::No) {
            break;
        }
        let call = Call {
            method: &parts.method,
            path_and_query: &path_and_query,
            headers: &headers,
            body: body.clone(),
            timeout: state.config.upstream_timeout,
        };
        let result = match state.in_process.get(base) {
            Some(router) => call.in_process(router).await,
            None => call.over_http(&state.client, base).await,
        };
        match result {
            Ok(answer) => {
                answered = Some(answer);
                break;
            }
            Err(Failed::BrokeOff) => {
                balancer.breaker().success();
                judge(true);
                return Err(Problem::new(
                    StatusCode::BAD_GATEWAY,
                    "upstream-unavailable",
                    format!("{upstream:?} broke off its answer"),
                ));
            }
            Err(Failed::Unreachable { reached, error }) => {
                warn!(%error, url = %format!("{base}{path_and_query}"), "upstream failed");
                balancer.mark(base, false);
                failure = Some(reached);
            }
        }
    }
    let Answer {
        status,
        headers: mut response_headers,
        body: bytes,
    } = match (answered, failure) {
        (Some(answer), _) => {
            balancer.breaker().success();
            answer
        }
        (None, failure) => {
            balancer.breaker().failure();
            judge(true);
            return Err(if failure == Some(Reached::TimedOut) {
                Problem::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    "upstream-timeout",
                    format!("{upstream:?} did not answer in time"),
                )
            } else {
                Problem::new(
                    StatusCode::BAD_GATEWAY,
                    "upstream-unavailable",
                    format!("{upstream:?} is unavailable"),
                )
            });
        }
    };
    judge(status.is_server_error());
    if let Some((cache, key)) = cache_key.filter(|_| status.is_success()) {
        // The request id belongs to one request: a hit gets its own (the edge layers set
        // it on the way out), not the id of the request that filled the cache.
        response_headers.remove(REQUEST_ID);
        let cached = Cached {
            status,
            headers: response_headers,
            body: bytes,
        };
        let response = cached.response("miss");
        cache.insert(key, cached);
        return Ok(response);
    }
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = status;
    *response.headers_mut() = response_headers;
    response
        .headers_mut()
        .insert(ROUTE_HEADER, HeaderValue::from_static(version));
    Ok(response)
}

/// An upstream's answer: its status, the headers worth passing on, the whole body.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: axum::body::Bytes,
}

/// Why an instance gave no answer.
enum Failed {
    /// Not reached, or no answer in time: the instance is marked unhealthy and the next
    /// one is tried — for any request when it was not connected to, else only for a
    /// request that may run twice.
    Unreachable { reached: Reached, error: String },
    /// It answered, then broke off the body.
    BrokeOff,
}

/// How far a request that got no answer went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reached {
    /// No connection: nothing was sent.
    No,
    /// Sent, or maybe sent (a connection broke), and no answer.
    Maybe,
    /// Sent, and no answer in time.
    TimedOut,
}

/// One request to one instance of an upstream.
struct Call<'a> {
    method: &'a Method,
    path_and_query: &'a str,
    headers: &'a HeaderMap,
    body: axum::body::Bytes,
    timeout: Duration,
}

impl Call<'_> {
    async fn over_http(self, client: &reqwest::Client, base: &str) -> Result<Answer, Failed> {
        let answer = client
            .request(
                self.method.clone(),
                format!("{base}{}", self.path_and_query),
            )
            .headers(self.headers.clone())
            .body(self.body)
            .send()
            .await
            .map_err(|e| Failed::Unreachable {
                reached: if e.is_timeout() {
                    Reached::TimedOut
                } else if e.is_connect() {
                    Reached::No
                } else {
                    Reached::Maybe
                },
                error: e.to_string(),
            })?;
        let status = answer.status();
        let headers = forwardable_headers(answer.headers());
        let body = answer.bytes().await.map_err(|_| Failed::BrokeOff)?;
        Ok(Answer {
            status,
            headers,
            body,
        })
    }

    /// The instance's router, called in this task: no connection, no second parse of the
    /// request. A handler that panics fails the call as a dropped connection would.
    async fn in_process(self, router: &Router) -> Result<Answer, Failed> {
        let mut request = Request::new(Body::from(self.body));
        *request.method_mut() = self.method.clone();
        *request.uri_mut() =
            self.path_and_query
                .parse()
                .map_err(|e: axum::http::uri::InvalidUri| Failed::Unreachable {
                    reached: Reached::No,
                    error: e.to_string(),
                })?;
        *request.headers_mut() = self.headers.clone();
        let call = async {
            let response = match router.clone().oneshot(request).await {
                Ok(response) => response,
                Err(never) => match never {},
            };
            let (parts, body) = response.into_parts();
            let body = to_bytes(body, usize::MAX)
                .await
                .map_err(|_| Failed::BrokeOff)?;
            Ok(Answer {
                status: parts.status,
                headers: forwardable_headers(&parts.headers),
                body,
            })
        };
        match tokio::time::timeout(self.timeout, AssertUnwindSafe(call).catch_unwind()).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_panic)) => Err(Failed::Unreachable {
                reached: Reached::Maybe,
                error: "the handler panicked".to_string(),
            }),
            Err(_) => Err(Failed::Unreachable {
                reached: Reached::TimedOut,
                error: "no answer in time".to_string(),
            }),
        }
    }
}

fn forwardable_headers(headers: &HeaderMap) -> HeaderMap {
    let mut kept = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        if forwardable(name) {
            kept.append(name.clone(), value.clone());
        }
    }
    kept
}

#[cfg(test)]
mod tests;
