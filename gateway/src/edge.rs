//! What the public edge adds to every exchange, before routing: the trace starts here
//! when the client sent none (its id in the access log, `traceparent` in the answer and
//! on everything forwarded), security headers on every answer, no caching of anything
//! personal, and `/metrics` only for a scraper with the metrics token or an admin.

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use shop_web::auth::Role;
use shop_web::http::Problem;
use shop_web::telemetry::{new_traceparent, trace_id, TRACEPARENT_HEADER};

use crate::AppState;

/// Runs outside every other layer of the gateway, so the access log's span sees the
/// `traceparent` it starts.
pub(crate) async fn edge(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let started_here = request
        .headers()
        .get(TRACEPARENT_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|t| trace_id(t).is_empty());
    if started_here {
        if let Ok(value) = HeaderValue::from_str(&new_traceparent()) {
            request.headers_mut().insert(TRACEPARENT_HEADER, value);
        }
    }
    let traceparent = request.headers().get(TRACEPARENT_HEADER).cloned();
    // Anything sent with credentials, and any change, is nobody else's to cache.
    let private = request.headers().contains_key(header::AUTHORIZATION)
        || !matches!(*request.method(), Method::GET | Method::HEAD);
    let mut response = if request.uri().path() == "/metrics" {
        match metrics_allowed(&state, &request) {
            Ok(()) => next.run(request).await,
            Err(problem) => problem.into_response(),
        }
    } else {
        next.run(request).await
    };
    let headers = response.headers_mut();
    if let Some(traceparent) = traceparent {
        headers.entry(TRACEPARENT_HEADER).or_insert(traceparent);
    }
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if private {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// `/metrics` on the public entry tells routes, error counts and saga outcomes: it
/// answers the metrics token (`SHOP_METRICS_TOKEN`, for Prometheus) or an admin's JWT.
fn metrics_allowed(state: &AppState, request: &Request) -> Result<(), Problem> {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if let (Some(expected), Some(presented)) = (&state.config.metrics_token, presented) {
        if same_secret(expected.as_bytes(), presented.as_bytes()) {
            return Ok(());
        }
    }
    let claims = state
        .jwt
        .verify_header(request.headers().get(header::AUTHORIZATION))
        .map_err(|_| {
            Problem::unauthorized(
                "/metrics on the gateway needs `Authorization: Bearer` with the metrics token \
                 (SHOP_METRICS_TOKEN) or an admin's token",
            )
        })?;
    if claims.role != Role::Admin {
        return Err(Problem::forbidden("/metrics needs the admin role"));
    }
    Ok(())
}

/// Equal secrets, compared in time that does not depend on where they differ.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}
