//! REST routes of the shipping service (SPEC §3.5), for admins.

use std::sync::Arc;

use axum::extract::{FromRef, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde::Serialize;
use shop_eventing::command::CommandBus;
use shop_eventing::idempotency;
use shop_eventing::refusal::{Refusal, RefusalKind};
use shop_schemas::Service;
use shop_web::auth::{Admin, JwtKeys, ADMIN_SUBJECT};
use shop_web::consistency::{with_token, ConsistencyToken};
use shop_web::http::Problem;
use shop_web::idempotency::IdempotencyKey;
use shop_web::telemetry::metadata_from_headers;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::shipment::{Shipment, ShipmentCommand, ShipmentError};

#[derive(Clone)]
pub struct AppState {
    pub bus: Arc<CommandBus<Shipment>>,
    pub jwt: JwtKeys,
}

impl FromRef<AppState> for JwtKeys {
    fn from_ref(state: &AppState) -> Self {
        state.jwt.clone()
    }
}

/// The routes with their OpenAPI description.
fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(dispatch))
        .routes(routes!(deliver))
}

pub fn router(state: AppState) -> Router {
    routes().with_state(state).split_for_parts().0
}

/// This service's part of the public OpenAPI document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes().into_openapi()
}

#[derive(Serialize, ToSchema)]
pub struct ShipmentAccepted {
    order_id: Uuid,
}

/// The parcel leaves the warehouse: `ShipmentDispatched`, and the order becomes SHIPPED.
#[utoipa::path(
    post,
    path = "/api/shipments/{order_id}/dispatch",
    tag = "shipping",
    params(("order_id" = Uuid, Path, description = "The order id")),
    security(("bearer" = [])),
    responses(
        (status = 202, description = "Accepted.", body = ShipmentAccepted),
        (status = 403, description = "Only admins ship."),
        (status = 404, description = "No shipment for this order."),
        (status = 409, description = "Not scheduled, already dispatched, or cancelled."),
    )
)]
#[tracing::instrument(name = "dispatch", skip_all, fields(order_id = %order_id))]
async fn dispatch(
    State(state): State<AppState>,
    _: Admin,
    Path(order_id): Path<String>,
    headers: HeaderMap,
    key: IdempotencyKey,
) -> Result<Response, Problem> {
    step(&state, &order_id, &headers, key, |order_id| {
        ShipmentCommand::Dispatch { order_id }
    })
    .await
}

/// The parcel reached the customer: `ShipmentDelivered`, and the order becomes DELIVERED.
#[utoipa::path(
    post,
    path = "/api/shipments/{order_id}/deliver",
    tag = "shipping",
    params(("order_id" = Uuid, Path, description = "The order id")),
    security(("bearer" = [])),
    responses(
        (status = 202, description = "Accepted.", body = ShipmentAccepted),
        (status = 403, description = "Only admins ship."),
        (status = 404, description = "No shipment for this order."),
        (status = 409, description = "Not dispatched yet, or already delivered."),
    )
)]
#[tracing::instrument(name = "deliver", skip_all, fields(order_id = %order_id))]
async fn deliver(
    State(state): State<AppState>,
    _: Admin,
    Path(order_id): Path<String>,
    headers: HeaderMap,
    key: IdempotencyKey,
) -> Result<Response, Problem> {
    step(&state, &order_id, &headers, key, |order_id| {
        ShipmentCommand::Deliver { order_id }
    })
    .await
}

async fn step(
    state: &AppState,
    order_id: &str,
    headers: &HeaderMap,
    key: IdempotencyKey,
    command: impl FnOnce(Uuid) -> ShipmentCommand,
) -> Result<Response, Problem> {
    let order_id =
        Uuid::parse_str(order_id).map_err(|_| Problem::not_found("no shipment for this order"))?;
    let mut metadata = metadata_from_headers(headers);
    metadata.correlation_id = order_id.to_string();
    let mut keyed = match idempotency::begin(key, state.bus.pool(), ADMIN_SUBJECT).await {
        Ok(keyed) => keyed,
        Err(answer) => return Ok(answer),
    };
    let version = state
        .bus
        .execute_keyed(
            &mut keyed,
            &order_id.to_string(),
            command(order_id),
            &metadata,
        )
        .await
        .map_err(Problem::from)?;
    let token = ConsistencyToken::new(Service::Shipping, order_id.to_string(), version);
    keyed
        .answer(with_token(
            (StatusCode::ACCEPTED, Json(ShipmentAccepted { order_id })).into_response(),
            &token,
        ))
        .await
}

impl Refusal for ShipmentError {
    fn kind(&self) -> RefusalKind {
        match self {
            ShipmentError::NotFound => RefusalKind::NotFound,
            ShipmentError::NotScheduled
            | ShipmentError::AlreadyDispatched
            | ShipmentError::NotDispatched
            | ShipmentError::AlreadyDelivered => RefusalKind::Conflict,
        }
    }

    fn changed_concurrently() -> &'static str {
        "the shipment was changed concurrently; retry the request"
    }
}
