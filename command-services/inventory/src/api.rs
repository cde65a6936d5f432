//! REST routes of the inventory service (SPEC §3.3). Writes are for admins.

use std::sync::Arc;

use axum::extract::{FromRef, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use shop_eventing::command::CommandBus;
use shop_eventing::idempotency;
use shop_eventing::refusal::{Refusal, RefusalKind};
use shop_schemas::Service;
use shop_web::auth::{Admin, JwtKeys, ADMIN_SUBJECT};
use shop_web::consistency::{with_token, ConsistencyToken};
use shop_web::http::{text_field, FieldError, Problem, Validation};
use shop_web::idempotency::{IdempotencyKey, KeyedJson};
use shop_web::telemetry::metadata_from_headers;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::product::{Product, ProductCommand, ProductError, MAX_AMOUNT};

#[derive(Clone)]
pub struct AppState {
    pub bus: Arc<CommandBus<Product>>,
    pub jwt: JwtKeys,
}

impl FromRef<AppState> for JwtKeys {
    fn from_ref(state: &AppState) -> Self {
        state.jwt.clone()
    }
}

/// The routes with their OpenAPI description, under the paths the gateway exposes.
fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(add_product))
        .routes(routes!(restock))
        .routes(routes!(change_price))
}

pub fn router(state: AppState) -> Router {
    routes().with_state(state).split_for_parts().0
}

/// This service's part of the public OpenAPI document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes().into_openapi()
}

#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = AddProduct)]
pub struct AddProductBody {
    #[schema(
        required = true,
        nullable = false,
        pattern = "^[A-Za-z0-9._-]{1,64}$",
        example = "TEA-001"
    )]
    sku: Option<String>,
    #[schema(
        required = true,
        nullable = false,
        min_length = 1,
        max_length = 200,
        pattern = "^[^\\x00-\\x1F\\x7F-\\x9F]*$"
    )]
    name: Option<String>,
    /// In minor units (e.g. yen or cents).
    #[schema(
        required = true,
        nullable = false,
        minimum = 0,
        maximum = 1_000_000_000_000_i64
    )]
    price: Option<i64>,
    /// Units received into stock.
    #[schema(
        required = true,
        nullable = false,
        minimum = 0,
        maximum = 1_000_000_000_000_i64
    )]
    stock: Option<i64>,
    /// The product's category (`uncategorised` when absent), carried by its
    /// `ProductAdded` event (v2).
    #[schema(
        required = false,
        nullable = false,
        min_length = 1,
        max_length = 64,
        pattern = "^[^\\x00-\\x1F\\x7F-\\x9F]*$",
        example = "tea"
    )]
    category: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct ProductAccepted {
    product_id: Uuid,
}

fn valid_sku(sku: &str) -> bool {
    (1..=64).contains(&sku.len())
        && sku
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// Adds a product to the catalogue (admin).
#[utoipa::path(
    post,
    path = "/api/products",
    tag = "catalogue",
    request_body = AddProductBody,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Added.", body = ProductAccepted,
            headers(("location" = String, description = "The product's resource"))),
        (status = 403, description = "Only admins manage the catalogue."),
        (status = 409, description = "The SKU is already taken."),
    )
)]
#[tracing::instrument(name = "add_product", skip_all)]
async fn add_product(
    State(state): State<AppState>,
    _admin: Admin,
    headers: HeaderMap,
    KeyedJson(body, key): KeyedJson<AddProductBody>,
) -> Result<Response, Problem> {
    let mut v = Validation::new();
    v.check(
        body.sku.as_deref().is_some_and(valid_sku),
        "sku",
        "1 to 64 characters of letters, digits, '-', '_' or '.'",
    )
    .check(
        text_field(body.name.as_deref(), 200).is_some(),
        "name",
        "1 to 200 characters, no control characters",
    )
    .check(
        body.price.is_some_and(|p| (0..=MAX_AMOUNT).contains(&p)),
        "price",
        "an integer amount in minor units, 0 or more",
    )
    .check(
        body.stock.is_some_and(|s| (0..=MAX_AMOUNT).contains(&s)),
        "stock",
        "an integer quantity, 0 or more",
    )
    .check(
        body.category.is_none() || text_field(body.category.as_deref(), 64).is_some(),
        "category",
        "1 to 64 characters, no control characters",
    );
    v.finish()?;
    let product_id = Uuid::now_v7();
    let command = ProductCommand::AddProduct {
        product_id,
        sku: body.sku.unwrap_or_default(),
        name: body.name.unwrap_or_default().trim().to_string(),
        price: body.price.unwrap_or_default(),
        stock: body.stock.unwrap_or_default(),
        category: text_field(body.category.as_deref(), 64)
            .unwrap_or_else(|| shop_schemas::inventory::UNCATEGORISED.to_string()),
    };
    let mut keyed = match idempotency::begin(key, state.bus.pool(), ADMIN_SUBJECT).await {
        Ok(keyed) => keyed,
        Err(answer) => return Ok(answer),
    };
    let version = state
        .bus
        .execute_new_keyed(
            &mut keyed,
            &product_id.to_string(),
            command,
            &metadata_from_headers(&headers),
        )
        .await
        .map_err(Problem::from)?;
    let token = ConsistencyToken::new(Service::Inventory, product_id.to_string(), version);
    keyed
        .answer(with_token(
            (
                StatusCode::CREATED,
                [(header::LOCATION, format!("/api/products/{product_id}"))],
                Json(ProductAccepted { product_id }),
            )
                .into_response(),
            &token,
        ))
        .await
}

#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = Restock)]
pub struct RestockBody {
    #[schema(
        required = true,
        nullable = false,
        minimum = 1,
        maximum = 1_000_000_000_000_i64
    )]
    quantity: Option<i64>,
}

/// Receives more units of a product (admin).
#[utoipa::path(
    post,
    path = "/api/products/{id}/restock",
    tag = "catalogue",
    params(("id" = Uuid, Path, description = "The product id")),
    request_body = RestockBody,
    security(("bearer" = [])),
    responses(
        (status = 202, description = "Accepted.", body = ProductAccepted),
        (status = 403, description = "Only admins manage the catalogue."),
        (status = 404, description = "No such product."),
        (status = 409, description = "The product changed concurrently; retry."),
    )
)]
#[tracing::instrument(name = "restock", skip_all, fields(product_id = %id))]
async fn restock(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
    headers: HeaderMap,
    KeyedJson(body, key): KeyedJson<RestockBody>,
) -> Result<Response, Problem> {
    let quantity = body.quantity.filter(|q| (1..=MAX_AMOUNT).contains(q));
    let command = quantity.map(|quantity| ProductCommand::Restock { quantity });
    update_product(
        &state,
        &id,
        &headers,
        key,
        command,
        ("quantity", "an integer quantity, 1 or more"),
    )
    .await
}

#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = ChangePrice)]
pub struct PriceBody {
    /// In minor units.
    #[schema(
        required = true,
        nullable = false,
        minimum = 0,
        maximum = 1_000_000_000_000_i64
    )]
    price: Option<i64>,
}

/// Changes a product's price (admin); orders placed later use it.
#[utoipa::path(
    put,
    path = "/api/products/{id}/price",
    tag = "catalogue",
    params(("id" = Uuid, Path, description = "The product id")),
    request_body = PriceBody,
    security(("bearer" = [])),
    responses(
        (status = 202, description = "Accepted.", body = ProductAccepted),
        (status = 403, description = "Only admins manage the catalogue."),
        (status = 404, description = "No such product."),
        (status = 409, description = "The product changed concurrently; retry."),
    )
)]
#[tracing::instrument(name = "change_price", skip_all, fields(product_id = %id))]
async fn change_price(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
    headers: HeaderMap,
    KeyedJson(body, key): KeyedJson<PriceBody>,
) -> Result<Response, Problem> {
    let price = body.price.filter(|p| (0..=MAX_AMOUNT).contains(p));
    let command = price.map(|price| ProductCommand::ChangePrice { price });
    update_product(
        &state,
        &id,
        &headers,
        key,
        command,
        ("price", "an integer amount in minor units, 0 or more"),
    )
    .await
}

/// Runs a command on an existing product; `None` means the one field was invalid.
async fn update_product(
    state: &AppState,
    id: &str,
    headers: &HeaderMap,
    key: IdempotencyKey,
    command: Option<ProductCommand>,
    (field, rule): (&str, &str),
) -> Result<Response, Problem> {
    let product_id = parse_id(id)?;
    let command = command.ok_or_else(|| {
        Problem::validation(vec![FieldError {
            field: field.to_string(),
            message: rule.to_string(),
        }])
    })?;
    let mut keyed = match idempotency::begin(key, state.bus.pool(), ADMIN_SUBJECT).await {
        Ok(keyed) => keyed,
        Err(answer) => return Ok(answer),
    };
    let version = state
        .bus
        .execute_keyed(
            &mut keyed,
            &product_id.to_string(),
            command,
            &metadata_from_headers(headers),
        )
        .await
        .map_err(Problem::from)?;
    let token = ConsistencyToken::new(Service::Inventory, product_id.to_string(), version);
    keyed
        .answer(with_token(
            (StatusCode::ACCEPTED, Json(ProductAccepted { product_id })).into_response(),
            &token,
        ))
        .await
}

fn parse_id(id: &str) -> Result<Uuid, Problem> {
    Uuid::parse_str(id)
        .map_err(|_| Problem::bad_request(format!("{id:?} is not a product id (UUID)")))
}

impl Refusal for ProductError {
    fn kind(&self) -> RefusalKind {
        match self {
            ProductError::NotFound => RefusalKind::NotFound,
            ProductError::AlreadyExists => RefusalKind::Conflict,
            ProductError::InvalidPrice => RefusalKind::Invalid { field: "price" },
            ProductError::InvalidQuantity => RefusalKind::Invalid { field: "quantity" },
            ProductError::InvalidStock => RefusalKind::Invalid { field: "stock" },
        }
    }

    fn changed_concurrently() -> &'static str {
        "the product was changed concurrently; retry"
    }
}
