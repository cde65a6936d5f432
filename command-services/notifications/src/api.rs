//! REST routes of the notifications service, for admins: webhook endpoints (register,
//! list, read, update, pause, resume, delete), their delivery log and redeliveries.

use std::sync::Arc;

use axum::extract::{FromRef, Path, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use shop_eventing::command::CommandBus;
use shop_eventing::idempotency::{self, KeyedCommand};
use shop_eventing::refusal::{Refusal, RefusalKind};
use shop_web::auth::{Admin, JwtKeys, ADMIN_SUBJECT};
use shop_web::http::{text_field, FieldError, Problem, StrictQuery};
use shop_web::idempotency::{IdempotencyKey, KeyedJson};
use shop_web::telemetry::metadata_from_headers;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::address::{AllowList, Target};
use crate::delivery::{DeliveryCommand, DeliveryError, WebhookDelivery};
use crate::endpoint::{EndpointCommand, EndpointError, WebhookEndpoint};
use crate::reactions::deliverable_types;
use crate::signing::{new_nonce, Secret};
use crate::views::{self, DeliveryView, EndpointView};

#[derive(Clone)]
pub struct AppState {
    pub endpoints: Arc<CommandBus<WebhookEndpoint>>,
    pub deliveries: Arc<CommandBus<WebhookDelivery>>,
    pub jwt: JwtKeys,
    /// Derives the endpoints' secrets.
    pub key: Arc<str>,
    pub allow: AllowList,
}

impl FromRef<AppState> for JwtKeys {
    fn from_ref(state: &AppState) -> Self {
        state.jwt.clone()
    }
}

fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register, list))
        .routes(routes!(event_types))
        .routes(routes!(read, update, delete))
        .routes(routes!(rotate_secret))
        .routes(routes!(pause))
        .routes(routes!(resume))
        .routes(routes!(deliveries))
        .routes(routes!(redeliver))
}

pub fn router(state: AppState) -> Router {
    routes().with_state(state).split_for_parts().0
}

/// This service's part of the public OpenAPI document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes().into_openapi()
}

/// Most event types one endpoint subscribes to.
const MAX_EVENT_TYPES: usize = 100;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterBody {
    /// Where deliveries go: an http(s) URL of a public address (or one the allow-list names).
    url: Option<String>,
    /// CloudEvents types to deliver, e.g. `shop.orders.OrderPlaced` (see `GET /api/webhooks/event-types`).
    event_types: Option<Vec<String>>,
    description: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateBody {
    url: Option<String>,
    event_types: Option<Vec<String>>,
    description: Option<String>,
}

/// A registered endpoint with its signing secret: the only time the secret is shown.
#[derive(Serialize, ToSchema)]
pub struct Registered {
    #[serde(flatten)]
    endpoint: EndpointView,
    /// `whsec_` + base64: verifies the `webhook-signature` of every delivery.
    secret: String,
}

#[derive(Serialize, ToSchema)]
pub struct EventTypes {
    event_types: Vec<String>,
}

#[derive(Serialize, ToSchema)]
pub struct RedeliveryAccepted {
    delivery_id: Uuid,
    webhook_id: String,
}

/// The delivery log's parameters (as documented).
#[derive(Debug, utoipa::IntoParams)]
pub struct DeliveriesQuery {
    /// Deliveries to list, newest first (1..=200, default 50).
    #[allow(dead_code)]
    limit: Option<i64>,
    /// `pending`, `delivered` or `failed`.
    #[allow(dead_code)]
    status: Option<String>,
}

/// The delivery log's parameters as read: those, and the consistency token every read
/// takes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeliveriesParams {
    limit: Option<i64>,
    status: Option<String>,
    #[serde(rename = "consistency")]
    _consistency: Option<String>,
}

/// The query of a read that takes no parameters but the consistency token.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NoParams {
    #[serde(rename = "consistency")]
    _consistency: Option<String>,
}

/// A read's consistency tokens (`X-Consistency-Token`, `?consistency=`) must be well
/// formed; any is satisfied at once, as the read model is written with the events.
fn check_tokens(headers: &HeaderMap, uri: &Uri) -> Result<(), Problem> {
    match shop_web::consistency::requested_tokens(headers, uri) {
        Some(Err(problem)) => Err(problem),
        _ => Ok(()),
    }
}

/// Checks a URL at registration: shape, then every address it resolves to.
async fn check_url(url: Option<&str>, allow: &AllowList, errors: &mut Vec<FieldError>) {
    let Some(url) = url else {
        errors.push(FieldError {
            field: "url".into(),
            message: "required".into(),
        });
        return;
    };
    let checked = match Target::parse(url) {
        Ok(target) => target.resolve(allow).await.map(|_| ()),
        Err(e) => Err(e),
    };
    if let Err(e) = checked {
        errors.push(FieldError {
            field: "url".into(),
            message: e.to_string(),
        });
    }
}

/// The event types as given, each known, duplicates dropped.
fn check_event_types(types: Option<&[String]>, errors: &mut Vec<FieldError>) -> Vec<String> {
    let known = deliverable_types();
    let mut kept: Vec<String> = Vec::new();
    let ok = types.is_some_and(|types| {
        (1..=MAX_EVENT_TYPES).contains(&types.len()) && types.iter().all(|t| known.contains(t))
    });
    if ok {
        for t in types.unwrap_or_default() {
            if !kept.contains(t) {
                kept.push(t.clone());
            }
        }
    } else {
        errors.push(FieldError {
            field: "event_types".into(),
            message: format!(
                "1 to {MAX_EVENT_TYPES} of the order, payment and shipping event types (GET /api/webhooks/event-types)"
            ),
        });
    }
    kept
}

/// A description: empty, or up to 500 characters without control characters.
fn check_description(description: Option<&str>, errors: &mut Vec<FieldError>) -> String {
    match description {
        None => String::new(),
        Some(d) if d.trim().is_empty() && !d.chars().any(char::is_control) => String::new(),
        Some(d) => text_field(Some(d), 500).unwrap_or_else(|| {
            errors.push(FieldError {
                field: "description".into(),
                message: "at most 500 characters, no control characters".into(),
            });
            String::new()
        }),
    }
}

fn endpoint_id(text: &str) -> Result<Uuid, Problem> {
    Uuid::parse_str(text).map_err(|_| Problem::not_found("no such webhook endpoint"))
}

/// The endpoint as the command left it (inside the key's transaction when there is one).
async fn view_after(
    state: &AppState,
    keyed: &mut KeyedCommand,
    id: Uuid,
) -> Result<EndpointView, Problem> {
    let view = match keyed.transaction() {
        Some(tx) => views::endpoint(tx, id).await,
        None => views::endpoint(state.endpoints.pool(), id).await,
    };
    view.map_err(|e| Problem::internal(&e))?
        .ok_or_else(|| Problem::not_found("no such webhook endpoint"))
}

/// Registers a webhook endpoint: `WebhookEndpointRegistered`. The answer holds its
/// signing secret, which is never shown again.
#[utoipa::path(
    post,
    path = "/api/webhooks",
    tag = "webhooks",
    request_body = RegisterBody,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Registered; `secret` is shown this once.", body = Registered),
        (status = 403, description = "Only admins manage webhooks."),
        (status = 422, description = "A bad URL (not http(s), not public, not resolving), unknown event types or a bad description."),
    )
)]
#[tracing::instrument(name = "register_webhook", skip_all)]
async fn register(
    State(state): State<AppState>,
    _: Admin,
    headers: HeaderMap,
    KeyedJson(body, key): KeyedJson<RegisterBody>,
) -> Result<Response, Problem> {
    let mut errors = Vec::new();
    check_url(body.url.as_deref(), &state.allow, &mut errors).await;
    let event_types = check_event_types(body.event_types.as_deref(), &mut errors);
    let description = check_description(body.description.as_deref(), &mut errors);
    if !errors.is_empty() {
        return Err(Problem::validation(errors));
    }
    let url = body.url.unwrap_or_default();
    let mut keyed = match idempotency::begin(key, state.endpoints.pool(), ADMIN_SUBJECT).await {
        Ok(keyed) => keyed,
        Err(answer) => return Ok(answer),
    };
    let id = Uuid::now_v7();
    let nonce = new_nonce();
    let command = EndpointCommand::Register {
        endpoint_id: id,
        url,
        event_types,
        description,
        secret_nonce: nonce.clone(),
    };
    let mut metadata = metadata_from_headers(&headers);
    metadata.correlation_id = id.to_string();
    state
        .endpoints
        .execute_new_keyed(&mut keyed, &id.to_string(), command, &metadata)
        .await
        .map_err(Problem::from)?;
    let endpoint = view_after(&state, &mut keyed, id).await?;
    let registered = Registered {
        endpoint,
        secret: Secret::derive(&state.key, id, &nonce).expose(),
    };
    let mut response = (StatusCode::CREATED, Json(registered)).into_response();
    if let Ok(location) = format!("/api/webhooks/{id}").parse() {
        response.headers_mut().insert(header::LOCATION, location);
    }
    keyed.answer(response).await
}

/// Every webhook endpoint (not deleted), oldest first.
#[utoipa::path(
    get,
    path = "/api/webhooks",
    tag = "webhooks",
    security(("bearer" = [])),
    responses((status = 200, body = [EndpointView]), (status = 403, description = "Admins only."))
)]
async fn list(
    State(state): State<AppState>,
    _: Admin,
    headers: HeaderMap,
    uri: Uri,
    StrictQuery(_): StrictQuery<NoParams>,
) -> Result<Json<Vec<EndpointView>>, Problem> {
    check_tokens(&headers, &uri)?;
    views::endpoints(state.endpoints.pool())
        .await
        .map(Json)
        .map_err(|e| Problem::internal(&e))
}

/// The event types an endpoint may subscribe to.
#[utoipa::path(
    get,
    path = "/api/webhooks/event-types",
    tag = "webhooks",
    security(("bearer" = [])),
    responses((status = 200, body = EventTypes), (status = 403, description = "Admins only."))
)]
async fn event_types(
    _: Admin,
    headers: HeaderMap,
    uri: Uri,
    StrictQuery(_): StrictQuery<NoParams>,
) -> Result<Json<EventTypes>, Problem> {
    check_tokens(&headers, &uri)?;
    Ok(Json(EventTypes {
        event_types: deliverable_types(),
    }))
}

/// One webhook endpoint.
#[utoipa::path(
    get,
    path = "/api/webhooks/{endpoint_id}",
    tag = "webhooks",
    params(("endpoint_id" = Uuid, Path)),
    security(("bearer" = [])),
    responses(
        (status = 403, description = "Admins only."),
        (status = 200, body = EndpointView),
        (status = 404, description = "No such endpoint."),
    )
)]
async fn read(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
    headers: HeaderMap,
    uri: Uri,
    StrictQuery(_): StrictQuery<NoParams>,
) -> Result<Json<EndpointView>, Problem> {
    check_tokens(&headers, &uri)?;
    let id = endpoint_id(&id)?;
    views::endpoint(state.endpoints.pool(), id)
        .await
        .map_err(|e| Problem::internal(&e))?
        .map(Json)
        .ok_or_else(|| Problem::not_found("no such webhook endpoint"))
}

/// Changes the fields given: `WebhookEndpointUpdated` (nothing when they are unchanged).
#[utoipa::path(
    patch,
    path = "/api/webhooks/{endpoint_id}",
    tag = "webhooks",
    params(("endpoint_id" = Uuid, Path)),
    request_body = UpdateBody,
    security(("bearer" = [])),
    responses(
        (status = 403, description = "Admins only."),
        (status = 200, body = EndpointView),
        (status = 404, description = "No such endpoint."),
        (status = 422, description = "A bad field."),
    )
)]
#[tracing::instrument(name = "update_webhook", skip_all, fields(endpoint_id = %id))]
async fn update(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
    headers: HeaderMap,
    KeyedJson(body, key): KeyedJson<UpdateBody>,
) -> Result<Response, Problem> {
    let id = endpoint_id(&id)?;
    let mut errors = Vec::new();
    if body.url.is_some() {
        check_url(body.url.as_deref(), &state.allow, &mut errors).await;
    }
    let event_types = body
        .event_types
        .as_deref()
        .map(|types| check_event_types(Some(types), &mut errors));
    let description = body
        .description
        .as_deref()
        .map(|d| check_description(Some(d), &mut errors));
    if !errors.is_empty() {
        return Err(Problem::validation(errors));
    }
    let command = EndpointCommand::Update {
        endpoint_id: id,
        url: body.url,
        event_types,
        description,
    };
    endpoint_step(&state, id, &headers, key, command, StatusCode::OK).await
}

/// How long the previous secret still signs after a rotation: receivers have a day to
/// switch to the new one.
pub const PREVIOUS_SECRET_VALID_SECS: u64 = 24 * 3600;

/// Rotates the endpoint's signing secret: `WebhookSecretRotated`. The answer holds the
/// new secret, shown this once; for a day, deliveries are signed with both.
#[utoipa::path(
    post,
    path = "/api/webhooks/{endpoint_id}/rotate-secret",
    tag = "webhooks",
    params(("endpoint_id" = Uuid, Path)),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Rotated; `secret` is shown this once.", body = Registered),
        (status = 403, description = "Admins only."),
        (status = 404, description = "No such endpoint."),
    )
)]
#[tracing::instrument(name = "rotate_webhook_secret", skip_all, fields(endpoint_id = %id))]
async fn rotate_secret(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
    headers: HeaderMap,
    key: IdempotencyKey,
) -> Result<Response, Problem> {
    let id = endpoint_id(&id)?;
    let mut keyed = match idempotency::begin(key, state.endpoints.pool(), ADMIN_SUBJECT).await {
        Ok(keyed) => keyed,
        Err(answer) => return Ok(answer),
    };
    let nonce = new_nonce();
    let command = EndpointCommand::RotateSecret {
        endpoint_id: id,
        secret_nonce: nonce.clone(),
        previous_valid_secs: PREVIOUS_SECRET_VALID_SECS,
    };
    let mut metadata = metadata_from_headers(&headers);
    metadata.correlation_id = id.to_string();
    state
        .endpoints
        .execute_keyed(&mut keyed, &id.to_string(), command, &metadata)
        .await
        .map_err(Problem::from)?;
    let rotated = Registered {
        endpoint: view_after(&state, &mut keyed, id).await?,
        secret: Secret::derive(&state.key, id, &nonce).expose(),
    };
    keyed
        .answer((StatusCode::OK, Json(rotated)).into_response())
        .await
}

/// Pauses deliveries to the endpoint: `WebhookEndpointPaused`; they wait.
#[utoipa::path(
    post,
    path = "/api/webhooks/{endpoint_id}/pause",
    tag = "webhooks",
    params(("endpoint_id" = Uuid, Path)),
    security(("bearer" = [])),
    responses(
        (status = 403, description = "Admins only."),
        (status = 200, body = EndpointView),
        (status = 404, description = "No such endpoint."),
        (status = 409, description = "The endpoint is disabled."),
    )
)]
async fn pause(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
    headers: HeaderMap,
    key: IdempotencyKey,
) -> Result<Response, Problem> {
    let id = endpoint_id(&id)?;
    let command = EndpointCommand::Pause { endpoint_id: id };
    endpoint_step(&state, id, &headers, key, command, StatusCode::OK).await
}

/// Resumes a paused endpoint or re-enables a disabled one: `WebhookEndpointResumed`.
#[utoipa::path(
    post,
    path = "/api/webhooks/{endpoint_id}/resume",
    tag = "webhooks",
    params(("endpoint_id" = Uuid, Path)),
    security(("bearer" = [])),
    responses(
        (status = 403, description = "Admins only."),
        (status = 200, body = EndpointView),
        (status = 404, description = "No such endpoint."),
    )
)]
async fn resume(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
    headers: HeaderMap,
    key: IdempotencyKey,
) -> Result<Response, Problem> {
    let id = endpoint_id(&id)?;
    let command = EndpointCommand::Resume { endpoint_id: id };
    endpoint_step(&state, id, &headers, key, command, StatusCode::OK).await
}

/// Deletes the endpoint: `WebhookEndpointDeleted`; nothing more goes to it.
#[utoipa::path(
    delete,
    path = "/api/webhooks/{endpoint_id}",
    tag = "webhooks",
    params(("endpoint_id" = Uuid, Path)),
    security(("bearer" = [])),
    responses(
        (status = 403, description = "Admins only."),
        (status = 204, description = "Deleted."),
        (status = 404, description = "No such endpoint."),
    )
)]
async fn delete(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
    headers: HeaderMap,
    key: IdempotencyKey,
) -> Result<Response, Problem> {
    let id = endpoint_id(&id)?;
    let command = EndpointCommand::Delete { endpoint_id: id };
    endpoint_step(&state, id, &headers, key, command, StatusCode::NO_CONTENT).await
}

async fn endpoint_step(
    state: &AppState,
    id: Uuid,
    headers: &HeaderMap,
    key: IdempotencyKey,
    command: EndpointCommand,
    status: StatusCode,
) -> Result<Response, Problem> {
    let mut keyed = match idempotency::begin(key, state.endpoints.pool(), ADMIN_SUBJECT).await {
        Ok(keyed) => keyed,
        Err(answer) => return Ok(answer),
    };
    let mut metadata = metadata_from_headers(headers);
    metadata.correlation_id = id.to_string();
    state
        .endpoints
        .execute_keyed(&mut keyed, &id.to_string(), command, &metadata)
        .await
        .map_err(Problem::from)?;
    let response = if status == StatusCode::NO_CONTENT {
        status.into_response()
    } else {
        (status, Json(view_after(state, &mut keyed, id).await?)).into_response()
    };
    keyed.answer(response).await
}

/// The endpoint's delivery log: deliveries, newest first, each with its attempts
/// (status codes, latencies, errors) and its next attempt.
#[utoipa::path(
    get,
    path = "/api/webhooks/{endpoint_id}/deliveries",
    tag = "webhooks",
    params(("endpoint_id" = Uuid, Path), DeliveriesQuery),
    security(("bearer" = [])),
    responses(
        (status = 403, description = "Admins only."),
        (status = 200, body = [DeliveryView]),
        (status = 404, description = "No such endpoint."),
    )
)]
async fn deliveries(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
    headers: HeaderMap,
    uri: Uri,
    StrictQuery(query): StrictQuery<DeliveriesParams>,
) -> Result<Json<Vec<DeliveryView>>, Problem> {
    check_tokens(&headers, &uri)?;
    let id = endpoint_id(&id)?;
    let mut errors = Vec::new();
    let limit = query.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        errors.push(FieldError {
            field: "limit".into(),
            message: "1 to 200".into(),
        });
    }
    if let Some(status) = &query.status {
        if !["pending", "delivered", "failed"].contains(&status.as_str()) {
            errors.push(FieldError {
                field: "status".into(),
                message: "pending, delivered or failed".into(),
            });
        }
    }
    if !errors.is_empty() {
        return Err(Problem::validation(errors));
    }
    let pool = state.deliveries.pool();
    let internal = |e: sqlx::Error| Problem::internal(&e);
    if views::endpoint(pool, id).await.map_err(internal)?.is_none() {
        return Err(Problem::not_found("no such webhook endpoint"));
    }
    views::deliveries(pool, id, query.status.as_deref(), limit)
        .await
        .map(Json)
        .map_err(internal)
}

/// Sends a delivery again, with the same `webhook-id` and a fresh budget of attempts:
/// `WebhookRedeliveryRequested`.
#[utoipa::path(
    post,
    path = "/api/webhooks/{endpoint_id}/deliveries/{delivery_id}/redeliver",
    tag = "webhooks",
    params(("endpoint_id" = Uuid, Path), ("delivery_id" = Uuid, Path)),
    security(("bearer" = [])),
    responses(
        (status = 403, description = "Admins only."),
        (status = 202, body = RedeliveryAccepted),
        (status = 404, description = "No such endpoint or delivery."),
        (status = 409, description = "The endpoint is disabled: resume it first."),
    )
)]
#[tracing::instrument(name = "redeliver_webhook", skip_all, fields(delivery_id = %delivery))]
async fn redeliver(
    State(state): State<AppState>,
    _: Admin,
    Path((endpoint, delivery)): Path<(String, String)>,
    headers: HeaderMap,
    key: IdempotencyKey,
) -> Result<Response, Problem> {
    let not_found = || Problem::not_found("no such delivery");
    let endpoint_id = endpoint_id(&endpoint)?;
    let delivery_id = Uuid::parse_str(&delivery).map_err(|_| not_found())?;
    let pool = state.deliveries.pool();
    let internal = |e: sqlx::Error| Problem::internal(&e);
    let endpoint = views::endpoint(pool, endpoint_id)
        .await
        .map_err(internal)?
        .ok_or_else(not_found)?;
    let Some((owner, webhook_id)) = views::delivery_endpoint(pool, delivery_id)
        .await
        .map_err(internal)?
        .filter(|(owner, _)| *owner == endpoint_id)
    else {
        return Err(not_found());
    };
    debug_assert_eq!(owner, endpoint_id);
    if endpoint.status == "disabled" {
        return Err(Problem::conflict(
            "the webhook endpoint is disabled: resume it first",
        ));
    }
    let mut keyed = match idempotency::begin(key, pool, ADMIN_SUBJECT).await {
        Ok(keyed) => keyed,
        Err(answer) => return Ok(answer),
    };
    let mut metadata = metadata_from_headers(&headers);
    metadata.correlation_id = delivery_id.to_string();
    state
        .deliveries
        .execute_keyed(
            &mut keyed,
            &delivery_id.to_string(),
            DeliveryCommand::Redeliver { delivery_id },
            &metadata,
        )
        .await
        .map_err(Problem::from)?;
    let accepted = RedeliveryAccepted {
        delivery_id,
        webhook_id,
    };
    keyed
        .answer((StatusCode::ACCEPTED, Json(accepted)).into_response())
        .await
}

impl Refusal for EndpointError {
    fn kind(&self) -> RefusalKind {
        match self {
            EndpointError::NotFound => RefusalKind::NotFound,
            EndpointError::AlreadyRegistered | EndpointError::Disabled => RefusalKind::Conflict,
        }
    }

    fn changed_concurrently() -> &'static str {
        "the webhook endpoint was changed concurrently; retry the request"
    }
}

impl Refusal for DeliveryError {
    fn kind(&self) -> RefusalKind {
        match self {
            DeliveryError::NotFound => RefusalKind::NotFound,
        }
    }
}
