//! The API gateway: the one public entry point (`/api/...`).
//!
//! It knows routes, not domains: it verifies the JWT of every non-public route before
//! anything reaches a service, picks the upstream by method and path, forwards the
//! request with its request id, correlation id and W3C `traceparent`, and answers every
//! failure of its own (unknown route, bad token, upstream down or slow, body too large)
//! as problem+json.
#![forbid(unsafe_code)]

use std::sync::Arc;
use std::time::Duration;

use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use futures::FutureExt;
use shop_eventing::auth::JwtKeys;
use shop_eventing::http::{ops_router, with_edge_layers, Problem, ReadyCheck, REQUEST_ID};
use shop_eventing::telemetry::{new_traceparent, CORRELATION_ID_HEADER, TRACEPARENT_HEADER};
use tracing::warn;

pub const COMPONENT: &str = "gateway";

/// Where each upstream listens (base URLs such as `http://127.0.0.1:8082`).
#[derive(Debug, Clone)]
pub struct Upstreams {
    pub customers: String,
    pub inventory: String,
    pub orders: String,
    pub payments: String,
    pub shipping: String,
    pub read_api: String,
}

/// Gateway settings.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub upstreams: Upstreams,
    /// Largest request body accepted (413 above).
    pub body_limit: usize,
    /// Time allowed for an upstream's answer (504 after).
    pub upstream_timeout: Duration,
}

#[derive(Clone)]
struct AppState {
    config: Arc<GatewayConfig>,
    client: reqwest::Client,
    jwt: JwtKeys,
}

/// Which upstream serves a request, and whether it needs a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upstream {
    Customers,
    Inventory,
    Orders,
    Payments,
    Shipping,
    ReadApi,
}

/// Routes a request: `None` for routes the gateway does not know; the flag says whether
/// the route is public (SPEC §3.1).
pub fn route(method: &Method, path: &str) -> Option<(Upstream, bool)> {
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    let is_get = method == Method::GET || method == Method::HEAD;
    match segments.as_slice() {
        ["api", "auth", "token"] => Some((Upstream::Customers, true)),
        ["api", "customers"] if method == Method::POST => Some((Upstream::Customers, true)),
        ["api", "customers", _] if is_get => Some((Upstream::ReadApi, false)),
        ["api", "customers", _, "wallet", "deposits"] if method == Method::POST => {
            Some((Upstream::Payments, false))
        }
        ["api", "customers", _, "orders"] if is_get => Some((Upstream::ReadApi, false)),
        ["api", "orders"] if method == Method::POST => Some((Upstream::Orders, false)),
        ["api", "orders", _] if is_get => Some((Upstream::ReadApi, false)),
        ["api", "orders", _, "cancel"] if method == Method::POST => Some((Upstream::Orders, false)),
        ["api", "shipments", _, "dispatch" | "deliver"] if method == Method::POST => {
            Some((Upstream::Shipping, false))
        }
        ["api", "products"] | ["api", "products", _] if is_get => Some((Upstream::ReadApi, true)),
        ["api", "products", ..] => Some((Upstream::Inventory, false)),
        ["api", "projections", ..] | ["api", "events", ..] | ["api", "dlq", ..] => {
            Some((Upstream::ReadApi, false))
        }
        _ => None,
    }
}

/// Builds the gateway.
pub fn router(config: GatewayConfig, jwt: JwtKeys) -> Router {
    let client = reqwest::Client::builder()
        .timeout(config.upstream_timeout)
        .pool_idle_timeout(Duration::from_secs(30))
        .build()
        .unwrap_or_default();
    let state = AppState {
        config: Arc::new(config),
        client,
        jwt,
    };
    let ready = ready_check(state.clone());
    let api = Router::new()
        .route("/api", any(proxy))
        .route("/api/{*rest}", any(proxy))
        .with_state(state);
    with_edge_layers(ops_router(ready).merge(api), COMPONENT)
}

fn ready_check(state: AppState) -> ReadyCheck {
    Arc::new(move || {
        let state = state.clone();
        async move {
            let u = &state.config.upstreams;
            for (name, base) in [
                ("customers", &u.customers),
                ("inventory", &u.inventory),
                ("read-api", &u.read_api),
            ] {
                let ok = state
                    .client
                    .get(format!("{base}/health"))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                if !ok {
                    return Err(format!("upstream {name} is not healthy"));
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
    match forward(&state, request).await {
        Ok(response) => response,
        Err(problem) => problem.into_response(),
    }
}

async fn forward(state: &AppState, request: Request) -> Result<Response, Problem> {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path();
    let (upstream, public) = route(&parts.method, path)
        .ok_or_else(|| Problem::not_found(format!("no route {} {path}", parts.method)))?;
    tracing::Span::current().record("upstream", format!("{upstream:?}"));
    if !public {
        state
            .jwt
            .verify_header(parts.headers.get(axum::http::header::AUTHORIZATION))?;
    }
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
    let u = &state.config.upstreams;
    let base = match upstream {
        Upstream::Customers => &u.customers,
        Upstream::Inventory => &u.inventory,
        Upstream::Orders => &u.orders,
        Upstream::Payments => &u.payments,
        Upstream::Shipping => &u.shipping,
        Upstream::ReadApi => &u.read_api,
    };
    let url = format!(
        "{base}{}",
        parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or(path)
    );
    let mut headers = HeaderMap::new();
    for (name, value) in &parts.headers {
        if forwardable(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    // The chain starts here when the client did not name one: the request id.
    if !headers.contains_key(CORRELATION_ID_HEADER) {
        if let Some(request_id) = headers.get(REQUEST_ID).cloned() {
            headers.insert(CORRELATION_ID_HEADER, request_id);
        }
    }
    if !headers.contains_key(TRACEPARENT_HEADER) {
        if let Ok(value) = HeaderValue::from_str(&new_traceparent()) {
            headers.insert(TRACEPARENT_HEADER, value);
        }
    }
    let answer = state
        .client
        .request(parts.method.clone(), &url)
        .headers(headers)
        .body(body)
        .send()
        .await
        .map_err(|e| {
            warn!(error = %e, %url, "upstream failed");
            if e.is_timeout() {
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
            }
        })?;
    let status = answer.status();
    let mut response_headers = HeaderMap::new();
    for (name, value) in answer.headers() {
        if forwardable(name) {
            response_headers.append(name.clone(), value.clone());
        }
    }
    let bytes = answer.bytes().await.map_err(|_| {
        Problem::new(
            StatusCode::BAD_GATEWAY,
            "upstream-unavailable",
            format!("{upstream:?} broke off its answer"),
        )
    })?;
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = status;
    *response.headers_mut() = response_headers;
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_by_method_and_path() {
        assert_eq!(
            route(&Method::GET, "/api/products"),
            Some((Upstream::ReadApi, true))
        );
        assert_eq!(
            route(&Method::GET, "/api/products/abc"),
            Some((Upstream::ReadApi, true))
        );
        assert_eq!(
            route(&Method::POST, "/api/products"),
            Some((Upstream::Inventory, false))
        );
        assert_eq!(
            route(&Method::PUT, "/api/products/abc/price"),
            Some((Upstream::Inventory, false))
        );
        assert_eq!(
            route(&Method::POST, "/api/products/abc/restock"),
            Some((Upstream::Inventory, false))
        );
        assert_eq!(
            route(&Method::POST, "/api/auth/token"),
            Some((Upstream::Customers, true))
        );
        assert_eq!(
            route(&Method::GET, "/api/projections"),
            Some((Upstream::ReadApi, false))
        );
        assert_eq!(
            route(&Method::POST, "/api/customers"),
            Some((Upstream::Customers, true))
        );
        assert_eq!(
            route(&Method::GET, "/api/customers/abc"),
            Some((Upstream::ReadApi, false))
        );
        assert_eq!(
            route(&Method::POST, "/api/customers/abc/wallet/deposits"),
            Some((Upstream::Payments, false))
        );
        assert_eq!(
            route(&Method::POST, "/api/orders"),
            Some((Upstream::Orders, false))
        );
        assert_eq!(
            route(&Method::GET, "/api/orders/abc"),
            Some((Upstream::ReadApi, false))
        );
        assert_eq!(
            route(&Method::GET, "/api/customers/abc/orders"),
            Some((Upstream::ReadApi, false))
        );
        assert_eq!(route(&Method::GET, "/api/nothing"), None);
        assert_eq!(route(&Method::GET, "/health"), None);
    }
}
