//! Read-your-writes at the read API (SPEC §3.6): a GET carrying `X-Consistency-Token`
//! (or `?consistency=TOKEN`) waits until every projection fed by the token's service has
//! applied that version, up to the configured wait; if it could not, the answer is what
//! the read models hold, marked `X-Consistency: stale`.

use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use shop_eventing::consistency::wait_until_applied;
use shop_projections::versions::LiveVersions;
use shop_projections::PROJECTIONS;
use shop_sql::Pool;
use shop_web::consistency::{requested_tokens, ConsistencyToken, STATE_HEADER};
use shop_web::http::Problem;

/// What the middleware needs.
#[derive(Clone)]
pub struct Consistency {
    pub pool: Pool,
    pub wait: Duration,
}

pub async fn wait_for_token(
    State(consistency): State<Consistency>,
    request: Request,
    next: Next,
) -> Response {
    let tokens = match requested_tokens(request.headers(), request.uri()) {
        None => return next.run(request).await,
        Some(Err(problem)) => return problem.into_response(),
        Some(Ok(tokens)) => tokens,
    };
    // Every projection that reads the token's service must have applied it, in the
    // version reads are served from.
    let live = request
        .extensions()
        .get::<std::sync::Arc<LiveVersions>>()
        .cloned()
        .unwrap_or_default();
    let consumers: Vec<(String, &ConsistencyToken)> = tokens
        .iter()
        .flat_map(|token| {
            PROJECTIONS
                .iter()
                .filter(|p| p.sources.contains(&token.service))
                .map(|p| (live.consumer(p), token))
                .collect::<Vec<_>>()
        })
        .collect();
    let needed: Vec<(&str, &ConsistencyToken)> =
        consumers.iter().map(|(c, t)| (c.as_str(), *t)).collect();
    let fresh = match wait_until_applied(&consistency.pool, &needed, consistency.wait).await {
        Ok(fresh) => fresh,
        Err(e) => return Problem::internal(&e).into_response(),
    };
    let mut response = next.run(request).await;
    if !fresh {
        response
            .headers_mut()
            .insert(STATE_HEADER, HeaderValue::from_static("stale"));
    }
    response
}
