//! REST routes of the orders service (SPEC §3.4).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{FromRef, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use shop_eventing::command::CommandBus;
use shop_eventing::idempotency;
use shop_eventing::refusal::{Refusal, RefusalKind};
use shop_schemas::orders::OrderLine;
use shop_schemas::Service;
use shop_sql::{self as sql, Pool};
use shop_web::auth::{Authenticated, JwtKeys, Role};
use shop_web::consistency::{with_token, ConsistencyToken};
use shop_web::http::{FieldError, Problem};
use shop_web::idempotency::{IdempotencyKey, KeyedJson};
use shop_web::telemetry::metadata_from_headers;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::backlog::Backlog;
use crate::order::{Order, OrderCommand, OrderError, MAX_LINES, MAX_QUANTITY};

#[derive(Clone)]
pub struct AppState {
    pub bus: Arc<CommandBus<Order>>,
    pub pool: Pool,
    pub jwt: JwtKeys,
    pub backlog: Arc<Backlog>,
}

impl FromRef<AppState> for JwtKeys {
    fn from_ref(state: &AppState) -> Self {
        state.jwt.clone()
    }
}

/// The routes with their OpenAPI description.
fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(place_order))
        .routes(routes!(cancel_order))
}

pub fn router(state: AppState) -> Router {
    routes().with_state(state).split_for_parts().0
}

/// This service's part of the public OpenAPI document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes().into_openapi()
}

#[derive(Deserialize, ToSchema)]
#[schema(as = OrderLineRequest)]
pub struct LineBody {
    #[schema(required = true, nullable = false, format = Uuid, value_type = String)]
    product_id: Option<String>,
    #[schema(required = true, nullable = false, minimum = 1, maximum = 1000)]
    quantity: Option<i64>,
}

/// Each product at most once; prices are the catalogue's at placing time.
#[derive(Deserialize, ToSchema)]
#[schema(as = PlaceOrder)]
pub struct PlaceBody {
    #[schema(required = true, nullable = false, min_items = 1, max_items = 100)]
    lines: Option<Vec<LineBody>>,
}

#[derive(Serialize, ToSchema)]
pub struct OrderAccepted {
    order_id: Uuid,
    #[schema(example = "PENDING")]
    status: &'static str,
}

#[derive(Serialize, ToSchema)]
pub struct CancelAccepted {
    order_id: Uuid,
}

fn field_error(field: String, message: &str) -> FieldError {
    FieldError {
        field,
        message: message.to_string(),
    }
}

/// Checks the lines' shape: every problem named by its field.
fn parse_lines(body: PlaceBody) -> Result<Vec<(Uuid, i64)>, Vec<FieldError>> {
    let lines = body.lines.unwrap_or_default();
    let mut errors = Vec::new();
    if !(1..=MAX_LINES).contains(&lines.len()) {
        errors.push(field_error("lines".into(), "1 to 100 lines"));
    }
    let mut parsed = Vec::with_capacity(lines.len());
    let mut seen = std::collections::HashSet::new();
    for (i, line) in lines.iter().enumerate() {
        match line
            .product_id
            .as_deref()
            .and_then(|id| Uuid::parse_str(id).ok())
        {
            None => errors.push(field_error(
                format!("lines[{i}].product_id"),
                "a product id",
            )),
            Some(id) if !seen.insert(id) => errors.push(field_error(
                format!("lines[{i}].product_id"),
                "each product once per order",
            )),
            Some(id) => parsed.push((id, line.quantity.unwrap_or(0))),
        }
        if !line
            .quantity
            .is_some_and(|q| (1..=MAX_QUANTITY).contains(&q))
        {
            errors.push(field_error(
                format!("lines[{i}].quantity"),
                "1 to 1000 units",
            ));
        }
    }
    if errors.is_empty() {
        Ok(parsed)
    } else {
        Err(errors)
    }
}

/// A customer places an order for itself; prices come from this service's catalogue
/// replica, so a product inventory has not announced yet is "unknown" (422).
#[utoipa::path(
    post,
    path = "/api/orders",
    tag = "orders",
    request_body = PlaceBody,
    security(("bearer" = [])),
    responses(
        (status = 202, description = "Placed; the saga decides it (see `GET /api/orders/{id}`).",
            body = OrderAccepted,
            headers(("location" = String, description = "The order's resource"))),
        (status = 403, description = "Orders are placed by customers."),
        (status = 409, description = "The order changed concurrently; retry."),
        (status = 503, description = "Too many orders wait for the saga; retry after `Retry-After` seconds."),
    )
)]
#[tracing::instrument(name = "place_order", skip_all)]
async fn place_order(
    State(state): State<AppState>,
    Authenticated(claims): Authenticated,
    headers: HeaderMap,
    KeyedJson(body, key): KeyedJson<PlaceBody>,
) -> Result<Response, Problem> {
    if claims.role != Role::Customer {
        return Err(Problem::forbidden("orders are placed by customers"));
    }
    let customer_id = Uuid::parse_str(&claims.sub)
        .map_err(|_| Problem::forbidden("orders are placed by customers"))?;
    let requested = parse_lines(body).map_err(Problem::validation)?;
    // Held until the placement has finished: the backlog's count may not see it before.
    let _admission = state.backlog.admit()?;
    let ids: Vec<Uuid> = requested.iter().map(|(id, _)| *id).collect();
    let lookup = format!(
        "SELECT product_id, price FROM catalogue WHERE product_id {}",
        state.pool.dialect().in_list(1)
    );
    let prices: HashMap<Uuid, i64> = sql::query_as::<(Uuid, i64)>(&lookup)
        .bind(&ids)
        .fetch_all(&state.pool)
        .await
        .map_err(|e| Problem::internal(&e))?
        .into_iter()
        .collect();
    let unknown: Vec<FieldError> = requested
        .iter()
        .enumerate()
        .filter(|(_, (id, _))| !prices.contains_key(id))
        .map(|(i, _)| field_error(format!("lines[{i}].product_id"), "no such product"))
        .collect();
    if !unknown.is_empty() {
        return Err(Problem::validation(unknown));
    }
    let lines: Vec<OrderLine> = requested
        .into_iter()
        .map(|(product_id, quantity)| OrderLine {
            product_id,
            quantity,
            unit_price: prices[&product_id],
        })
        .collect();
    let order_id = Uuid::now_v7();
    // The order id is the correlation id of everything the saga does for it.
    let mut metadata = metadata_from_headers(&headers);
    metadata.correlation_id = order_id.to_string();
    let command = OrderCommand::Place {
        order_id,
        customer_id,
        lines,
    };
    let mut keyed = match idempotency::begin(key, &state.pool, &claims.sub).await {
        Ok(keyed) => keyed,
        Err(answer) => return Ok(answer),
    };
    let version = state
        .bus
        .execute_new_keyed(&mut keyed, &order_id.to_string(), command, &metadata)
        .await
        .map_err(Problem::from)?;
    let token = ConsistencyToken::new(Service::Orders, order_id.to_string(), version);
    keyed
        .answer(with_token(
            (
                StatusCode::ACCEPTED,
                [(header::LOCATION, format!("/api/orders/{order_id}"))],
                Json(OrderAccepted {
                    order_id,
                    status: "PENDING",
                }),
            )
                .into_response(),
            &token,
        ))
        .await
}

/// A refused command as the client sees it.
impl Refusal for OrderError {
    fn kind(&self) -> RefusalKind {
        match self {
            OrderError::InvalidLines => RefusalKind::Invalid { field: "lines" },
            OrderError::NotFound => RefusalKind::NotFound,
            OrderError::AlreadyPlaced
            | OrderError::AlreadyShipped
            | OrderError::AlreadyCancelled => RefusalKind::Conflict,
        }
    }

    fn changed_concurrently() -> &'static str {
        "the order was changed concurrently; retry the request"
    }
}

/// A customer cancels its own order before it ships (an admin, any order). A pending
/// order is cancelled at once, and the saga refunds and releases what was taken. A
/// confirmed order's cancellation is a request that shipping decides (SPEC §5 rule 6):
/// granted while the parcel has not left (then the order is cancelled and compensated),
/// refused once it has (the order ships; nothing is refunded) — the order's
/// `cancellation` and history show which. 409 once shipped or already cancelled.
#[utoipa::path(
    post,
    path = "/api/orders/{id}/cancel",
    tag = "orders",
    params(("id" = Uuid, Path, description = "The order id")),
    security(("bearer" = [])),
    responses(
        (status = 202, description = "Cancelled (a pending order), or the cancellation requested from shipping (a confirmed one); refund and stock release follow a cancellation.", body = CancelAccepted),
        (status = 404, description = "No such order, or not yours."),
        (status = 409, description = "Already shipped or cancelled."),
    )
)]
#[tracing::instrument(name = "cancel_order", skip_all, fields(order_id = %order_id))]
async fn cancel_order(
    State(state): State<AppState>,
    Authenticated(claims): Authenticated,
    Path(order_id): Path<String>,
    headers: HeaderMap,
    key: IdempotencyKey,
) -> Result<Response, Problem> {
    let order_id = Uuid::parse_str(&order_id).map_err(|_| Problem::not_found("no such order"))?;
    let customer_id = match claims.role {
        Role::Admin => None,
        Role::Customer => {
            Some(Uuid::parse_str(&claims.sub).map_err(|_| Problem::not_found("no such order"))?)
        }
    };
    let mut metadata = metadata_from_headers(&headers);
    metadata.correlation_id = order_id.to_string();
    let mut keyed = match idempotency::begin(key, &state.pool, &claims.sub).await {
        Ok(keyed) => keyed,
        Err(answer) => return Ok(answer),
    };
    let version = state
        .bus
        .execute_keyed(
            &mut keyed,
            &order_id.to_string(),
            OrderCommand::CancelByCustomer { customer_id },
            &metadata,
        )
        .await
        .map_err(Problem::from)?;
    let token = ConsistencyToken::new(Service::Orders, order_id.to_string(), version);
    keyed
        .answer(with_token(
            (StatusCode::ACCEPTED, Json(CancelAccepted { order_id })).into_response(),
            &token,
        ))
        .await
}
