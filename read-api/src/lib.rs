//! The query API: serves the read models (never writes them) and projection status.
#![forbid(unsafe_code)]

mod consistency;
mod console;
mod operations;
mod orders;

use std::sync::Arc;

use axum::extract::{FromRef, Path, State};
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shop_eventing::platform::Platform;
use shop_log::EventLog;
use shop_sql::db::DbError;
use shop_sql::{self as sql, Pool, Row};
use shop_web::auth::{Authenticated, JwtKeys, Role};
use shop_web::http::Problem;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

pub const COMPONENT: &str = "read-api";
const DEFAULT_LIMIT: i64 = 50;
const MAX_LIMIT: i64 = 500;

#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) pool: Pool,
    pub(crate) log: Arc<dyn EventLog>,
    pub(crate) topic_prefix: String,
    jwt: JwtKeys,
}

impl FromRef<AppState> for JwtKeys {
    fn from_ref(state: &AppState) -> Self {
        state.jwt.clone()
    }
}

/// The read API's settings.
#[derive(Debug, Clone, Copy)]
pub struct ReadApiConfig {
    /// How long a read carrying a consistency token may wait (`SHOP_CONSISTENCY_WAIT_MS`).
    pub consistency_wait: std::time::Duration,
}

impl Default for ReadApiConfig {
    fn default() -> Self {
        ReadApiConfig {
            consistency_wait: std::time::Duration::from_millis(2000),
        }
    }
}

/// The routes with their OpenAPI description.
fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_products))
        .routes(routes!(get_product))
        .routes(routes!(get_customer))
        .routes(routes!(orders::customer_orders))
        .routes(routes!(orders::get_order))
        .routes(routes!(orders::list_orders))
        .routes(routes!(operations::list_projections))
        .routes(routes!(operations::rebuild_projection))
        .routes(routes!(operations::list_dead_letters))
        .routes(routes!(operations::retry_dead_letter))
}

/// The read API's part of the public OpenAPI document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes().into_openapi()
}

/// Builds the read API over the read-model database.
///
/// # Errors
/// The database is unreachable.
pub async fn start(platform: &Platform, config: ReadApiConfig) -> Result<Router, DbError> {
    let pool = shop_projections::open_read_database(platform).await?;
    let state = AppState {
        pool: pool.clone(),
        log: platform.log(),
        topic_prefix: platform.topic_prefix.clone(),
        jwt: platform.jwt.clone(),
    };
    let (api, _) = routes().with_state(state).split_for_parts();
    // Outermost first: the live projection versions, then read-your-writes on them.
    let api: Router = api
        .layer(axum::middleware::from_fn_with_state(
            consistency::Consistency {
                pool: pool.clone(),
                wait: config.consistency_wait,
            },
            consistency::wait_for_token,
        ))
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(operations::LiveTables::new(pool.clone())),
            operations::on_live_tables,
        ));
    Ok(platform.component_router(api.merge(console::router()), pool, COMPONENT))
}

/// A product with its stock figures.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Product)]
struct ProductView {
    product_id: Uuid,
    sku: String,
    name: String,
    /// `uncategorised` for a product added without one (or before categories existed).
    category: String,
    price: i64,
    available: i64,
    reserved: i64,
    sold: i64,
    updated_at: DateTime<Utc>,
}

impl sql::FromRow for ProductView {
    fn from_row(row: &Row) -> Result<Self, sqlx::Error> {
        Ok(ProductView {
            product_id: row.get("product_id")?,
            sku: row.get("sku")?,
            name: row.get("name")?,
            category: row.get("category")?,
            price: row.get("price")?,
            available: row.get("available")?,
            reserved: row.get("reserved")?,
            sold: row.get("sold")?,
            updated_at: row.get("updated_at")?,
        })
    }
}

/// The query of a read, strictly (unknown or repeated parameters are a 400).
pub(crate) use shop_web::http::StrictQuery as ReadQuery;

/// The query of a read that takes no parameters but the consistency token.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NoParams {
    #[serde(rename = "consistency")]
    _consistency: Option<String>,
}

/// `?limit&after` of a paged list.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Page {
    limit: Option<String>,
    after: Option<String>,
    #[serde(rename = "consistency")]
    _consistency: Option<String>,
}

impl Page {
    pub(crate) fn new(limit: Option<String>, after: Option<String>) -> Self {
        Page {
            limit,
            after,
            _consistency: None,
        }
    }

    pub(crate) fn parse(&self) -> Result<(i64, Option<Uuid>), Problem> {
        let limit = match &self.limit {
            None => DEFAULT_LIMIT,
            Some(text) => text
                .parse::<i64>()
                .ok()
                .filter(|l| (1..=MAX_LIMIT).contains(l))
                .ok_or_else(|| {
                    Problem::bad_request(format!("limit must be an integer from 1 to {MAX_LIMIT}"))
                })?,
        };
        let after =
            match &self.after {
                None => None,
                Some(text) => Some(Uuid::parse_str(text).map_err(|_| {
                    Problem::bad_request("after must be an id from the previous page")
                })?),
            };
        Ok((limit, after))
    }
}

/// Products with their stock figures: `available` = received − reserved − sold.
const PRODUCT_COLUMNS: &str = "product_id, p.sku, p.name, p.category, p.price, p.received - COALESCE(s.reserved, 0) - COALESCE(s.sold, 0) AS available, COALESCE(s.reserved, 0) AS reserved, COALESCE(s.sold, 0) AS sold, p.updated_at";
const PRODUCTS: &str = "products p LEFT JOIN product_stock s USING (product_id)";

/// Products by id, public (ids are time-ordered UUIDv7, so this is creation order). The next
/// page starts after the last id; a `Link: <...>; rel="next"` header says where.
#[utoipa::path(
    get,
    path = "/api/products",
    tag = "catalogue",
    params(
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 500, description = "Page size (default 50)"),
        ("after" = Option<Uuid>, Query, description = "The last product id of the previous page"),
    ),
    responses(
        (status = 200, description = "A page of products.", body = Vec<ProductView>,
            headers(("link" = String, description = "`<...>; rel=\"next\"` when another page may follow"))),
    )
)]
async fn list_products(
    State(state): State<AppState>,
    ReadQuery(page): ReadQuery<Page>,
) -> Result<Response, Problem> {
    let (limit, after) = page.parse()?;
    let sql = format!(
        "SELECT {PRODUCT_COLUMNS} FROM {PRODUCTS} WHERE ($1 IS NULL OR product_id > $1) ORDER BY product_id LIMIT $2"
    );
    let rows: Vec<ProductView> = sql::query_as(&sql)
        .bind(after)
        .bind(limit)
        .fetch_all(&state.pool)
        .await
        .map_err(|e| Problem::internal(&e))?;
    let next = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|p| p.product_id))
        .flatten();
    let mut response = Json(rows).into_response();
    if let Some(last) = next {
        if let Ok(link) = HeaderValue::from_str(&format!(
            "</api/products?limit={limit}&after={last}>; rel=\"next\""
        )) {
            response.headers_mut().insert("link", link);
        }
    }
    Ok(response)
}

/// One product, public.
#[utoipa::path(
    get,
    path = "/api/products/{id}",
    tag = "catalogue",
    params(("id" = Uuid, Path, description = "The product id")),
    responses(
        (status = 200, description = "The product.", body = ProductView),
        (status = 404, description = "No such product."),
    )
)]
async fn get_product(
    State(state): State<AppState>,
    Path(id): Path<String>,
    _: ReadQuery<NoParams>,
) -> Result<Json<ProductView>, Problem> {
    let id = Uuid::parse_str(&id).map_err(|_| Problem::not_found("no such product"))?;
    let sql = format!("SELECT {PRODUCT_COLUMNS} FROM {PRODUCTS} WHERE product_id = $1");
    sql::query_as(&sql)
        .bind(id)
        .fetch_optional(&state.pool)
        .await
        .map_err(|e| Problem::internal(&e))?
        .map(Json)
        .ok_or_else(|| Problem::not_found("no such product"))
}

/// A customer's own account, or any for admins; another customer's is "not found", so
/// ids cannot be probed.
#[utoipa::path(
    get,
    path = "/api/customers/{id}",
    tag = "customers",
    params(("id" = Uuid, Path, description = "The customer id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The customer with its wallet and order figures.", body = CustomerView),
        (status = 404, description = "No such customer, or not yours."),
    )
)]
async fn get_customer(
    State(state): State<AppState>,
    Authenticated(claims): Authenticated,
    Path(id): Path<String>,
    _: ReadQuery<NoParams>,
) -> Result<Json<CustomerView>, Problem> {
    let not_found = || Problem::not_found("no such customer");
    let id = Uuid::parse_str(&id).map_err(|_| not_found())?;
    if claims.role != Role::Admin && claims.sub != id.to_string() {
        return Err(not_found());
    }
    let row = sql::query(
        "SELECT c.customer_id, c.name, c.email, c.address, COALESCE(f.wallet_balance, 0) AS wallet_balance,
                COALESCE(f.orders_count, 0) AS orders_count, COALESCE(f.lifetime_spend, 0) AS lifetime_spend, c.created_at
         FROM customers c LEFT JOIN customer_figures f USING (customer_id) WHERE c.customer_id = $1",
    )
    .bind(id)
    .fetch_optional(&state.pool)
    .await
    .map_err(|e| Problem::internal(&e))?
    .ok_or_else(not_found)?;
    let get = |e: sqlx::Error| Problem::internal(&e);
    let address = serde_json::from_value(row.get::<serde_json::Value>("address").map_err(get)?)
        .map_err(|e| Problem::internal(&e))?;
    Ok(Json(CustomerView {
        customer_id: row.get("customer_id").map_err(get)?,
        name: row.get("name").map_err(get)?,
        email: row.get("email").map_err(get)?,
        address,
        wallet_balance: row.get("wallet_balance").map_err(get)?,
        orders_count: row.get("orders_count").map_err(get)?,
        lifetime_spend: row.get("lifetime_spend").map_err(get)?,
        created_at: row.get("created_at").map_err(get)?,
    }))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(as = CustomerAddress)]
struct AddressView {
    line1: String,
    city: String,
    postal_code: String,
    country: String,
}

/// A customer's account (SPEC §3.2).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Customer)]
struct CustomerView {
    customer_id: Uuid,
    name: String,
    email: String,
    address: AddressView,
    /// Deposits − payments + refunds.
    wallet_balance: i64,
    orders_count: i64,
    /// Payments − refunds.
    lifetime_spend: i64,
    created_at: DateTime<Utc>,
}
