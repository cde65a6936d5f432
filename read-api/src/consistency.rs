//! Read-your-writes at the read API (SPEC §3.6): a GET carrying `X-Consistency-Token`
//! (or `?consistency=TOKEN`) waits until every projection fed by the token's service has
//! applied that version, up to the configured wait; if it could not, the answer is what
//! the read models hold, marked `X-Consistency: stale`.

use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use shop_eventing::consistency::{
    wait_until_applied, ConsistencyToken, STATE_HEADER, TOKEN_HEADER,
};
use shop_eventing::http::Problem;
use shop_eventing::sql::Pool;
use shop_projections::PROJECTIONS;

/// What the middleware needs.
#[derive(Clone)]
pub struct Consistency {
    pub pool: Pool,
    pub wait: Duration,
}

/// The token a request carries, from its header or its `consistency` query parameter.
fn requested(request: &Request) -> Option<String> {
    if let Some(value) = request.headers().get(TOKEN_HEADER) {
        return Some(value.to_str().unwrap_or_default().to_string());
    }
    request.uri().query().and_then(|query| {
        query.split('&').find_map(|pair| {
            let (key, value) = pair.split_once('=')?;
            (key == "consistency").then(|| value.replace("%3A", ":").replace("%3a", ":"))
        })
    })
}

pub async fn wait_for_token(
    State(consistency): State<Consistency>,
    request: Request,
    next: Next,
) -> Response {
    let Some(value) = requested(&request) else {
        return next.run(request).await;
    };
    let Some(tokens) = ConsistencyToken::parse_list(&value) else {
        return Problem::bad_request("X-Consistency-Token is not a token this API issued")
            .into_response();
    };
    // Every projection that reads the token's service must have applied it.
    let needed: Vec<(&str, &ConsistencyToken)> = tokens
        .iter()
        .flat_map(|token| {
            PROJECTIONS
                .iter()
                .filter(|p| p.sources.contains(&token.service))
                .map(move |p| (p.consumer, token))
        })
        .collect();
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
