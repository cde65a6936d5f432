//! The query API: serves the read models (never writes them) and projection status.
#![forbid(unsafe_code)]

mod consistency;
mod orders;

use std::sync::Arc;

use axum::extract::{FromRef, Path, Query, State};
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shop_eventing::auth::{Admin, Authenticated, JwtKeys, Role};
use shop_eventing::db::DbError;
use shop_eventing::http::Problem;
use shop_eventing::log::EventLog;
use shop_eventing::platform::Platform;
use shop_eventing::sql::{self, Pool, Row};
use shop_projections::PROJECTIONS;
use uuid::Uuid;

pub const COMPONENT: &str = "read-api";
const DEFAULT_LIMIT: i64 = 50;
const MAX_LIMIT: i64 = 500;

#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) pool: Pool,
    log: Arc<dyn EventLog>,
    topic_prefix: String,
    jwt: JwtKeys,
}

impl FromRef<AppState> for JwtKeys {
    fn from_ref(state: &AppState) -> Self {
        state.jwt.clone()
    }
}

/// Builds the read API over the read-model database.
///
/// # Errors
/// The database is unreachable.
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

pub async fn start(platform: &Platform, config: ReadApiConfig) -> Result<Router, DbError> {
    let pool = shop_projections::open_read_database(platform).await?;
    let state = AppState {
        pool: pool.clone(),
        log: platform.log(),
        topic_prefix: platform.topic_prefix.clone(),
        jwt: platform.jwt.clone(),
    };
    let api = Router::new()
        .route("/api/products", get(list_products))
        .route("/api/products/{id}", get(get_product))
        .route("/api/customers/{id}", get(get_customer))
        .route("/api/customers/{id}/orders", get(orders::customer_orders))
        .route("/api/orders/{id}", get(orders::get_order))
        .route("/api/projections", get(list_projections))
        .with_state(state)
        .layer(axum::middleware::from_fn_with_state(
            consistency::Consistency {
                pool: pool.clone(),
                wait: config.consistency_wait,
            },
            consistency::wait_for_token,
        ));
    Ok(platform.component_router(api, pool, COMPONENT))
}

#[derive(Debug, Serialize)]
struct ProductView {
    product_id: Uuid,
    sku: String,
    name: String,
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
            price: row.get("price")?,
            available: row.get("available")?,
            reserved: row.get("reserved")?,
            sold: row.get("sold")?,
            updated_at: row.get("updated_at")?,
        })
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct Page {
    limit: Option<String>,
    after: Option<String>,
}

impl Page {
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
const PRODUCT_COLUMNS: &str = "product_id, p.sku, p.name, p.price, p.received - COALESCE(s.reserved, 0) - COALESCE(s.sold, 0) AS available, COALESCE(s.reserved, 0) AS reserved, COALESCE(s.sold, 0) AS sold, p.updated_at";
const PRODUCTS: &str = "products p LEFT JOIN product_stock s USING (product_id)";

/// Products by id (ids are time-ordered UUIDv7, so this is creation order). The next
/// page starts after the last id; a `Link: <...>; rel="next"` header says where.
async fn list_products(
    State(state): State<AppState>,
    Query(page): Query<Page>,
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

async fn get_product(
    State(state): State<AppState>,
    Path(id): Path<String>,
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
async fn get_customer(
    State(state): State<AppState>,
    Authenticated(claims): Authenticated,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, Problem> {
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
    Ok(Json(serde_json::json!({
        "customer_id": row.get::<Uuid>("customer_id").map_err(get)?,
        "name": row.get::<String>("name").map_err(get)?,
        "email": row.get::<String>("email").map_err(get)?,
        "address": row.get::<serde_json::Value>("address").map_err(get)?,
        "wallet_balance": row.get::<i64>("wallet_balance").map_err(get)?,
        "orders_count": row.get::<i64>("orders_count").map_err(get)?,
        "lifetime_spend": row.get::<i64>("lifetime_spend").map_err(get)?,
        "created_at": row.get::<DateTime<Utc>>("created_at").map_err(get)?,
    })))
}

#[derive(Debug, Serialize)]
struct PositionView {
    topic: String,
    partition: i32,
    offset: i64,
    end_offset: i64,
}

#[derive(Debug, Serialize)]
struct ProjectionView {
    name: &'static str,
    status: &'static str,
    events_applied: i64,
    lag: i64,
    last_event_at: Option<DateTime<Utc>>,
    last_error: Option<String>,
    positions: Vec<PositionView>,
}

/// Each projection's positions against the log's end offsets (SPEC §3.7).
async fn list_projections(
    State(state): State<AppState>,
    _admin: Admin,
) -> Result<Json<Vec<ProjectionView>>, Problem> {
    let mut views = Vec::new();
    for info in PROJECTIONS {
        let progress = shop_eventing::consumer::progress(&state.pool, info.consumer)
            .await
            .map_err(|e| Problem::internal(&e))?;
        let mut positions = Vec::new();
        for service in info.sources {
            let topic = service.topic(&state.topic_prefix);
            let ends = state
                .log
                .end_offsets(&topic)
                .await
                .map_err(|e| Problem::unavailable(e.to_string()))?;
            for (partition, end_offset) in ends {
                let offset = progress
                    .positions
                    .iter()
                    .find(|p| p.topic == topic && p.partition == partition)
                    .map(|p| p.next_offset)
                    .unwrap_or(0);
                positions.push(PositionView {
                    topic: topic.clone(),
                    partition,
                    offset,
                    end_offset,
                });
            }
        }
        positions.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        let lag = positions
            .iter()
            .map(|p| (p.end_offset - p.offset).max(0))
            .sum();
        views.push(ProjectionView {
            name: info.name,
            status: "live",
            events_applied: progress.events_applied,
            lag,
            last_event_at: progress.last_event_at,
            last_error: progress.last_error,
            positions,
        });
    }
    Ok(Json(views))
}
