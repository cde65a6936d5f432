//! The order view (SPEC §3.4): one order with its lines and saga history, and a
//! customer's orders newest first.

use axum::extract::{Path, Query, State};
use axum::Json;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use shop_eventing::auth::{Authenticated, Claims, Role};
use shop_eventing::http::Problem;
use shop_eventing::sql;
use uuid::Uuid;

use crate::{AppState, Page};

fn may_see(claims: &Claims, customer_id: Uuid) -> bool {
    claims.role == Role::Admin || claims.sub == customer_id.to_string()
}

fn internal(e: sqlx::Error) -> Problem {
    Problem::internal(&e)
}

/// `GET /api/orders/{id}`: the customer's own order, or any for admins; others → 404.
pub(crate) async fn get_order(
    State(state): State<AppState>,
    Authenticated(claims): Authenticated,
    Path(id): Path<String>,
) -> Result<Json<Value>, Problem> {
    let not_found = || Problem::not_found("no such order");
    let order_id = Uuid::parse_str(&id).map_err(|_| not_found())?;
    let order = sql::query(
        "SELECT o.order_id, o.customer_id, c.name AS customer_name, o.status, o.cancel_reason, o.total, o.created_at, o.updated_at
         FROM orders o LEFT JOIN customers c USING (customer_id) WHERE o.order_id = $1",
    )
    .bind(order_id)
    .fetch_optional(&state.pool)
    .await
    .map_err(internal)?
    .ok_or_else(not_found)?;
    let customer_id: Uuid = order.get("customer_id").map_err(internal)?;
    if !may_see(&claims, customer_id) {
        return Err(not_found());
    }
    let lines = sql::query(
        "SELECT l.product_id, p.sku, p.name, l.quantity, l.unit_price, l.line_total
         FROM order_lines l LEFT JOIN products p USING (product_id) WHERE l.order_id = $1 ORDER BY l.position",
    )
    .bind(order_id)
    .fetch_all(&state.pool)
    .await
    .map_err(internal)?;
    let history = sql::query("SELECT event_type, source, at FROM order_history WHERE order_id = $1 ORDER BY at, event_id")
        .bind(order_id)
        .fetch_all(&state.pool)
        .await
        .map_err(internal)?;
    let lines: Vec<Value> = lines
        .iter()
        .map(|l| {
            Ok(json!({
                "product_id": l.get::<Uuid>("product_id")?,
                "sku": l.get::<Option<String>>("sku")?,
                "name": l.get::<Option<String>>("name")?,
                "quantity": l.get::<i64>("quantity")?,
                "unit_price": l.get::<i64>("unit_price")?,
                "line_total": l.get::<i64>("line_total")?,
            }))
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(internal)?;
    let history: Vec<Value> = history
        .iter()
        .map(|h| {
            Ok(json!({
                "event_type": h.get::<String>("event_type")?,
                "source": h.get::<String>("source")?,
                "at": h.get::<DateTime<Utc>>("at")?,
            }))
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(internal)?;
    let view = (|| -> Result<Value, sqlx::Error> {
        Ok(json!({
            "order_id": order_id,
            "customer_id": customer_id,
            "customer_name": order.get::<Option<String>>("customer_name")?,
            "status": order.get::<String>("status")?,
            "cancel_reason": order.get::<Option<String>>("cancel_reason")?,
            "lines": lines,
            "total": order.get::<i64>("total")?,
            "history": history,
            "created_at": order.get::<DateTime<Utc>>("created_at")?,
            "updated_at": order.get::<DateTime<Utc>>("updated_at")?,
        }))
    })()
    .map_err(internal)?;
    Ok(Json(view))
}

/// `GET /api/customers/{id}/orders?limit&after`: newest first; the next page starts after
/// the last order id of this one.
pub(crate) async fn customer_orders(
    State(state): State<AppState>,
    Authenticated(claims): Authenticated,
    Path(id): Path<String>,
    Query(page): Query<Page>,
) -> Result<Json<Vec<Value>>, Problem> {
    let not_found = || Problem::not_found("no such customer");
    let customer_id = Uuid::parse_str(&id).map_err(|_| not_found())?;
    if !may_see(&claims, customer_id) {
        return Err(not_found());
    }
    let (limit, after) = page.parse()?;
    let rows = sql::query(
        "SELECT order_id, status, cancel_reason, total, created_at, updated_at FROM orders
         WHERE customer_id = $1 AND ($2 IS NULL OR order_id < $2) ORDER BY order_id DESC LIMIT $3",
    )
    .bind(customer_id)
    .bind(after)
    .bind(limit)
    .fetch_all(&state.pool)
    .await
    .map_err(internal)?;
    let orders = rows
        .iter()
        .map(|r| {
            Ok(json!({
                "order_id": r.get::<Uuid>("order_id")?,
                "status": r.get::<String>("status")?,
                "cancel_reason": r.get::<Option<String>>("cancel_reason")?,
                "total": r.get::<i64>("total")?,
                "created_at": r.get::<DateTime<Utc>>("created_at")?,
                "updated_at": r.get::<DateTime<Utc>>("updated_at")?,
            }))
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(internal)?;
    Ok(Json(orders))
}
