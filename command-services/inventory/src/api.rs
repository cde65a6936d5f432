//! REST routes of the inventory service (SPEC §3.3). Writes are for admins.

use std::sync::Arc;

use axum::extract::{FromRef, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{post, put};
use axum::{Json, Router};
use serde::Deserialize;
use shop_eventing::auth::{Admin, JwtKeys};
use shop_eventing::command::{CommandBus, CommandError};
use shop_eventing::consistency::{with_token, ConsistencyToken};
use shop_eventing::http::{ApiJson, FieldError, Problem, Validation};
use shop_eventing::telemetry::metadata_from_headers;
use shop_schemas::Service;
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

/// The service's routes, under the same paths the gateway exposes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/products", post(add_product))
        .route("/api/products/{id}/restock", post(restock))
        .route("/api/products/{id}/price", put(change_price))
        .with_state(state)
}

#[derive(Debug, Deserialize)]
pub struct AddProductBody {
    sku: Option<String>,
    name: Option<String>,
    price: Option<i64>,
    stock: Option<i64>,
}

fn valid_sku(sku: &str) -> bool {
    (1..=64).contains(&sku.len())
        && sku
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

#[tracing::instrument(name = "add_product", skip_all)]
async fn add_product(
    State(state): State<AppState>,
    _admin: Admin,
    headers: HeaderMap,
    ApiJson(body): ApiJson<AddProductBody>,
) -> Result<Response, Problem> {
    let mut v = Validation::new();
    v.check(
        body.sku.as_deref().is_some_and(valid_sku),
        "sku",
        "1 to 64 characters of letters, digits, '-', '_' or '.'",
    )
    .check(
        body.name
            .as_deref()
            .is_some_and(|n| !n.trim().is_empty() && n.chars().count() <= 200),
        "name",
        "1 to 200 characters",
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
    );
    v.finish()?;
    let product_id = Uuid::now_v7();
    let command = ProductCommand::AddProduct {
        product_id,
        sku: body.sku.unwrap_or_default(),
        name: body.name.unwrap_or_default().trim().to_string(),
        price: body.price.unwrap_or_default(),
        stock: body.stock.unwrap_or_default(),
    };
    let version = state
        .bus
        .execute_versioned(
            &product_id.to_string(),
            command,
            &metadata_from_headers(&headers),
        )
        .await
        .map_err(to_problem)?;
    let token = ConsistencyToken::new(Service::Inventory, product_id.to_string(), version);
    Ok(with_token(
        (
            StatusCode::CREATED,
            [(header::LOCATION, format!("/api/products/{product_id}"))],
            Json(serde_json::json!({ "product_id": product_id })),
        )
            .into_response(),
        &token,
    ))
}

#[derive(Debug, Deserialize)]
pub struct RestockBody {
    quantity: Option<i64>,
}

#[tracing::instrument(name = "restock", skip_all, fields(product_id = %id))]
async fn restock(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<RestockBody>,
) -> Result<Response, Problem> {
    let quantity = body.quantity.filter(|q| (1..=MAX_AMOUNT).contains(q));
    let command = quantity.map(|quantity| ProductCommand::Restock { quantity });
    update_product(
        &state,
        &id,
        &headers,
        command,
        ("quantity", "an integer quantity, 1 or more"),
    )
    .await
}

#[derive(Debug, Deserialize)]
pub struct PriceBody {
    price: Option<i64>,
}

#[tracing::instrument(name = "change_price", skip_all, fields(product_id = %id))]
async fn change_price(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<PriceBody>,
) -> Result<Response, Problem> {
    let price = body.price.filter(|p| (0..=MAX_AMOUNT).contains(p));
    let command = price.map(|price| ProductCommand::ChangePrice { price });
    update_product(
        &state,
        &id,
        &headers,
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
    let version = state
        .bus
        .execute_versioned(
            &product_id.to_string(),
            command,
            &metadata_from_headers(headers),
        )
        .await
        .map_err(to_problem)?;
    let token = ConsistencyToken::new(Service::Inventory, product_id.to_string(), version);
    Ok(with_token(
        (
            StatusCode::ACCEPTED,
            Json(serde_json::json!({ "product_id": product_id })),
        )
            .into_response(),
        &token,
    ))
}

fn parse_id(id: &str) -> Result<Uuid, Problem> {
    Uuid::parse_str(id)
        .map_err(|_| Problem::bad_request(format!("{id:?} is not a product id (UUID)")))
}

fn to_problem(error: CommandError<ProductError>) -> Problem {
    match error {
        CommandError::Rejected(ProductError::NotFound) => Problem::not_found("no such product"),
        CommandError::Rejected(ProductError::AlreadyExists) => {
            Problem::conflict("the product already exists")
        }
        CommandError::Rejected(
            e @ (ProductError::InvalidPrice
            | ProductError::InvalidQuantity
            | ProductError::InvalidStock),
        ) => Problem::validation(vec![FieldError {
            field: match e {
                ProductError::InvalidPrice => "price",
                ProductError::InvalidQuantity => "quantity",
                _ => "stock",
            }
            .into(),
            message: e.to_string(),
        }]),
        CommandError::Taken(what) => Problem::conflict(format!("{what} is already taken")),
        CommandError::Conflict => Problem::conflict("the product was changed concurrently; retry"),
        CommandError::Unavailable(e) => Problem::internal(&e),
    }
}
