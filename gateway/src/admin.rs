//! The admin traffic API (role admin): read and set an upstream's weights, promote a
//! canary a step, roll it back, and manage strangler-fig routes to a legacy upstream.
//! Changes that set values (`PUT`) name the revision they saw (`If-Match` with the
//! `ETag` of the last read); promote and rollback act on the current state at once.
//! Bad input is a problem+json 4xx and changes nothing.

use std::collections::BTreeMap;

use axum::body::{to_bytes, Body};
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use shop_web::auth::Role;
use shop_web::http::Problem;

use crate::traffic::{
    audit_metric, invalid, next_step, unix_now, weight_gauges, LegacyRoute, Rollback,
    RollbackPolicy, Split,
};
use crate::{AppState, Upstream};

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/admin/traffic", get(list))
        .route("/api/admin/traffic/{upstream}", get(read).put(set))
        .route("/api/admin/traffic/{upstream}/promote", post(promote))
        .route("/api/admin/traffic/{upstream}/rollback", post(rollback))
        .route("/api/admin/legacy-routes", get(legacy_list))
        .route(
            "/api/admin/legacy-routes/{name}",
            get(legacy_read).put(legacy_set).delete(legacy_delete),
        )
}

/// A read's consistency token (`X-Consistency-Token`, `?consistency=`), which every GET
/// of the API accepts: the traffic table is no read model, so a well-formed one is
/// ignored, and a malformed one is a 400 as everywhere else.
fn check_consistency(headers: &HeaderMap, uri: &Uri) -> Result<(), Problem> {
    match shop_web::consistency::requested_tokens(headers, uri) {
        Some(Err(problem)) => Err(problem),
        _ => Ok(()),
    }
}

/// The admin's subject, or 401/403.
fn admin(state: &AppState, headers: &HeaderMap) -> Result<String, Problem> {
    let claims = state
        .jwt
        .verify_header(headers.get(header::AUTHORIZATION))?;
    if claims.role != Role::Admin {
        return Err(Problem::forbidden("traffic control needs the admin role"));
    }
    Ok(claims.sub)
}

fn upstream_of(name: &str) -> Result<Upstream, Problem> {
    Upstream::named(name).ok_or_else(|| {
        Problem::not_found(format!(
            "no upstream {name:?}: one of {}",
            Upstream::names()
        ))
    })
}

/// A JSON body: 415 unless JSON, 413 when too large, 400 when not JSON, 422 when the
/// fields are wrong.
async fn json_body<T: DeserializeOwned>(state: &AppState, request: Request) -> Result<T, Problem> {
    let (parts, body) = request.into_parts();
    let json = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(';').next().unwrap_or("").trim() == "application/json");
    if !json {
        return Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "the body must be application/json",
        ));
    }
    let bytes = to_bytes(body, state.config.body_limit).await.map_err(|_| {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload-too-large",
            "the request body is too large",
        )
    })?;
    serde_json::from_slice(&bytes).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => invalid(e.to_string()),
        _ => Problem::bad_request(format!("the body is not JSON: {e}")),
    })
}

fn with_etag(state: &AppState, status: StatusCode, body: Value) -> Response {
    let mut response = (status, Json(body)).into_response();
    if let Ok(tag) = HeaderValue::from_str(&state.traffic.etag()) {
        response.headers_mut().insert(header::ETAG, tag);
    }
    response
}

fn view(state: &AppState, upstream: Upstream, split: &mut Split) -> Value {
    let (requests, failures) = split.window_counts();
    let instances = |b: &std::sync::Arc<crate::balancer::Balancer>| -> Vec<String> {
        b.bases().map(str::to_string).collect()
    };
    json!({
        "upstream": upstream.name(),
        "revision": state.traffic.etag(),
        "versions": [
            {
                "name": "stable",
                "label": split.stable_label,
                "weight": 100 - split.weight,
                "instances": instances(&split.stable),
            },
            {
                "name": "canary",
                "label": split.canary_label,
                "weight": split.weight,
                "instances": split.canary.as_ref().map(instances).unwrap_or_default(),
            }
        ],
        "sticky": split.sticky,
        "rollback": split.policy,
        "window": {
            "requests": requests,
            "failures": failures,
            "errorRate": if requests == 0 { 0.0 } else { failures as f64 / requests as f64 },
        },
        "lastRollback": split.last_rollback,
    })
}

fn read_view(state: &AppState, upstream: Upstream) -> Result<Value, Problem> {
    let split = state
        .traffic
        .split(upstream)
        .ok_or_else(|| Problem::internal(&"no split for the upstream"))?;
    let mut split = split.lock().unwrap_or_else(|e| e.into_inner());
    Ok(view(state, upstream, &mut split))
}

async fn list(
    State(state): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    admin(&state, &headers)?;
    check_consistency(&headers, &uri)?;
    let upstreams: Vec<Value> = state
        .traffic
        .splits
        .iter()
        .map(|(u, s)| view(&state, *u, &mut s.lock().unwrap_or_else(|e| e.into_inner())))
        .collect();
    let legacy = state
        .traffic
        .legacy
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    Ok(with_etag(
        &state,
        StatusCode::OK,
        json!({ "revision": state.traffic.etag(), "upstreams": upstreams, "legacyRoutes": legacy }),
    ))
}

async fn read(
    State(state): State<AppState>,
    Path(name): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    admin(&state, &headers)?;
    check_consistency(&headers, &uri)?;
    let upstream = upstream_of(&name)?;
    Ok(with_etag(
        &state,
        StatusCode::OK,
        read_view(&state, upstream)?,
    ))
}

/// `PUT /api/admin/traffic/{upstream}`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TrafficUpdate {
    /// Percent per version, by name (`stable`, `canary`) or label; together 100.
    weights: Option<BTreeMap<String, u8>>,
    rollback: Option<RollbackPolicy>,
    sticky: Option<bool>,
    labels: Option<Labels>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Labels {
    stable: String,
    canary: String,
}

fn valid_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= 40
        && label
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

async fn set(
    State(state): State<AppState>,
    Path(name): Path<String>,
    request: Request,
) -> Result<Response, Problem> {
    let actor = admin(&state, request.headers())?;
    let upstream = upstream_of(&name)?;
    let if_match = request
        .headers()
        .get(header::IF_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let update: TrafficUpdate = json_body(&state, request).await?;
    if let Some(policy) = &update.rollback {
        policy.validate()?;
    }
    if let Some(labels) = &update.labels {
        if !valid_label(&labels.stable)
            || !valid_label(&labels.canary)
            || labels.stable == labels.canary
        {
            return Err(invalid(
                "labels must differ, 1 to 40 letters, digits, '-', '_' or '.'",
            ));
        }
    }
    let split = state
        .traffic
        .split(upstream)
        .ok_or_else(|| Problem::internal(&"no split for the upstream"))?;
    let mut split = split.lock().unwrap_or_else(|e| e.into_inner());
    let (stable_label, canary_label) = match &update.labels {
        Some(l) => (l.stable.clone(), l.canary.clone()),
        None => (split.stable_label.clone(), split.canary_label.clone()),
    };
    let weight = match &update.weights {
        None => split.weight,
        Some(weights) => {
            let (mut stable, mut canary) = (None, None);
            for (version, w) in weights {
                if version == "stable" || *version == stable_label {
                    stable = Some(*w);
                } else if version == "canary" || *version == canary_label {
                    canary = Some(*w);
                } else {
                    return Err(invalid(format!(
                        "no version {version:?}: stable ({stable_label}) or canary ({canary_label})"
                    )));
                }
            }
            let (s, c) = (
                u32::from(stable.unwrap_or(0)),
                u32::from(canary.unwrap_or(0)),
            );
            if s + c != 100 {
                return Err(invalid(format!(
                    "weights must add up to 100, not {}",
                    s + c
                )));
            }
            c as u8
        }
    };
    if weight > 0 && split.canary.is_none() {
        return Err(Problem::conflict(format!(
            "{} has no canary instances; name them at start (SHOP_GATEWAY_CANARY={}=http://…@0)",
            upstream.name(),
            upstream.name()
        )));
    }
    state.traffic.check_revision(if_match.as_deref())?;
    let from = split.weight;
    split.weight = weight;
    split.stable_label = stable_label;
    split.canary_label = canary_label;
    if let Some(sticky) = update.sticky {
        split.sticky = sticky;
    }
    if let Some(policy) = update.rollback {
        split.policy = policy;
    }
    if weight != from {
        // A new weight starts a new window: the old outcomes judged another share.
        split.reset_window();
    }
    state.traffic.bump();
    tracing::info!(
        target: "audit",
        action = "set",
        upstream = upstream.name(),
        actor,
        from_weight = from,
        to_weight = weight,
        sticky = split.sticky,
        threshold = split.policy.threshold,
        min_requests = split.policy.min_requests,
        window_secs = split.policy.window_secs,
        "traffic weights set"
    );
    audit_metric(upstream, "set");
    weight_gauges(upstream, weight);
    let body = view(&state, upstream, &mut split);
    Ok(with_etag(&state, StatusCode::OK, body))
}

async fn promote(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let actor = admin(&state, &headers)?;
    let upstream = upstream_of(&name)?;
    let split = state
        .traffic
        .split(upstream)
        .ok_or_else(|| Problem::internal(&"no split for the upstream"))?;
    let mut split = split.lock().unwrap_or_else(|e| e.into_inner());
    if split.canary.is_none() {
        return Err(Problem::conflict(format!(
            "{} has no canary to promote",
            upstream.name()
        )));
    }
    if split.weight >= 100 {
        return Err(Problem::conflict("the canary already takes 100 %"));
    }
    let from = split.weight;
    split.weight = next_step(from);
    split.reset_window();
    state.traffic.bump();
    tracing::info!(
        target: "audit",
        action = "promote",
        upstream = upstream.name(),
        actor,
        from_weight = from,
        to_weight = split.weight,
        "canary promoted a step"
    );
    audit_metric(upstream, "promote");
    weight_gauges(upstream, split.weight);
    let body = view(&state, upstream, &mut split);
    Ok(with_etag(&state, StatusCode::OK, body))
}

async fn rollback(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let actor = admin(&state, &headers)?;
    let upstream = upstream_of(&name)?;
    let split = state
        .traffic
        .split(upstream)
        .ok_or_else(|| Problem::internal(&"no split for the upstream"))?;
    let mut split = split.lock().unwrap_or_else(|e| e.into_inner());
    let from = split.weight;
    if from > 0 {
        split.weight = 0;
        split.reset_window();
        split.last_rollback = Some(Rollback {
            kind: "manual",
            reason: format!("rolled back by {actor}"),
            at: unix_now(),
            from_weight: from,
        });
        state.traffic.bump();
    }
    tracing::info!(
        target: "audit",
        action = "rollback",
        upstream = upstream.name(),
        actor,
        from_weight = from,
        to_weight = 0,
        "canary rolled back"
    );
    audit_metric(upstream, "rollback");
    weight_gauges(upstream, 0);
    let body = view(&state, upstream, &mut split);
    Ok(with_etag(&state, StatusCode::OK, body))
}

fn valid_route_name(name: &str) -> Result<(), Problem> {
    if valid_label(name) {
        Ok(())
    } else {
        Err(invalid(
            "a legacy route's name is 1 to 40 letters, digits, '-', '_' or '.'",
        ))
    }
}

async fn legacy_list(
    State(state): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    admin(&state, &headers)?;
    check_consistency(&headers, &uri)?;
    let routes = state
        .traffic
        .legacy
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    Ok(with_etag(
        &state,
        StatusCode::OK,
        json!({ "revision": state.traffic.etag(), "routes": routes }),
    ))
}

async fn legacy_read(
    State(state): State<AppState>,
    Path(name): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    admin(&state, &headers)?;
    check_consistency(&headers, &uri)?;
    let route = state
        .traffic
        .legacy
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&name)
        .cloned()
        .ok_or_else(|| Problem::not_found(format!("no legacy route {name:?}")))?;
    Ok(with_etag(&state, StatusCode::OK, json!(route)))
}

async fn legacy_set(
    State(state): State<AppState>,
    Path(name): Path<String>,
    request: Request,
) -> Result<Response, Problem> {
    let actor = admin(&state, request.headers())?;
    valid_route_name(&name)?;
    let if_match = request
        .headers()
        .get(header::IF_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let route: LegacyRoute = json_body(&state, request).await?;
    route.validate()?;
    let mut legacy = state
        .traffic
        .legacy
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if !legacy.contains_key(&name) && legacy.len() >= 100 {
        return Err(Problem::conflict("at most 100 legacy routes"));
    }
    state.traffic.check_revision(if_match.as_deref())?;
    let created = legacy.insert(name.clone(), route.clone()).is_none();
    state.traffic.bump();
    drop(legacy);
    tracing::info!(
        target: "audit",
        action = "legacy-set",
        route = name,
        actor,
        prefix = route.prefix,
        legacy_upstream = route.upstream,
        percent = route.percent,
        "legacy route set"
    );
    metrics::counter!("gateway_traffic_changes_total", "upstream" => "legacy", "action" => "legacy-set")
        .increment(1);
    Ok(with_etag(
        &state,
        if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        },
        json!(route),
    ))
}

async fn legacy_delete(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let actor = admin(&state, &headers)?;
    let removed = state
        .traffic
        .legacy
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&name);
    if removed.is_none() {
        return Err(Problem::not_found(format!("no legacy route {name:?}")));
    }
    state.traffic.bump();
    tracing::info!(target: "audit", action = "legacy-delete", route = name, actor, "legacy route removed");
    metrics::counter!("gateway_traffic_changes_total", "upstream" => "legacy", "action" => "legacy-delete")
        .increment(1);
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::NO_CONTENT;
    Ok(response)
}
