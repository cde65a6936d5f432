//! The strangler fig: requests whose path a legacy route claims go to the legacy
//! upstream outside Shop, with the route's headers added each way.

#[allow(unused_imports)]
use super::*;

/// The strangler-fig route this request takes, if any: the longest matching prefix, and
/// the client's bucket within its share.
pub(crate) fn legacy_route(
    state: &AppState,
    parts: &axum::http::request::Parts,
) -> Option<traffic::LegacyRoute> {
    let path = parts.uri.path();
    let route = {
        let routes = state
            .traffic
            .legacy
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        routes
            .values()
            .filter(|r| r.matches(path))
            .max_by_key(|r| r.prefix.len())
            .cloned()?
    };
    let taken = route.percent >= 100
        || (route.percent > 0 && {
            let client = client_of(state, parts);
            let mut hasher = std::hash::DefaultHasher::new();
            std::hash::Hash::hash(&(&route.prefix, &client), &mut hasher);
            (std::hash::Hasher::finish(&hasher) % 100) < u64::from(route.percent)
        });
    taken.then_some(route)
}

/// Forwards a request to a legacy upstream outside Shop, with the route's headers added
/// each way. The legacy system checks its own credentials: the token goes on unchanged.
pub(crate) async fn forward_legacy(
    state: &AppState,
    parts: axum::http::request::Parts,
    body: Body,
    route: traffic::LegacyRoute,
) -> Result<Response, Problem> {
    tracing::Span::current().record("upstream", "legacy");
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
    let mut headers = forwardable_headers(&parts.headers);
    for (name, value) in &route.request_headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.insert(name, value);
        }
    }
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .to_string();
    let call = Call {
        method: &parts.method,
        path_and_query: &path_and_query,
        headers: &headers,
        body,
        timeout: state.config.upstream_timeout,
    };
    let base = route.upstream.trim_end_matches('/');
    let answer = call
        .over_http(&state.client, base)
        .await
        .map_err(|failed| match failed {
            Failed::Unreachable {
                reached: Reached::TimedOut,
                ..
            } => Problem::new(
                StatusCode::GATEWAY_TIMEOUT,
                "upstream-timeout",
                "the legacy upstream did not answer in time",
            ),
            Failed::Unreachable { error, .. } => {
                warn!(%error, url = %format!("{base}{path_and_query}"), "legacy upstream failed");
                Problem::new(
                    StatusCode::BAD_GATEWAY,
                    "upstream-unavailable",
                    "the legacy upstream is unavailable",
                )
            }
            Failed::BrokeOff => Problem::new(
                StatusCode::BAD_GATEWAY,
                "upstream-unavailable",
                "the legacy upstream broke off its answer",
            ),
        })?;
    let mut response = Response::new(Body::from(answer.body));
    *response.status_mut() = answer.status;
    *response.headers_mut() = answer.headers;
    for (name, value) in &route.response_headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            response.headers_mut().insert(name, value);
        }
    }
    response
        .headers_mut()
        .insert(ROUTE_HEADER, HeaderValue::from_static(LEGACY_VERSION));
    Ok(response)
}
