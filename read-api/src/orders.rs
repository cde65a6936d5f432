//! The order view (SPEC §3.4): one order with its lines and saga history, and a
//! customer's orders newest first.

use axum::extract::{Path, State};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shop_sql as sql;
use shop_web::auth::{Authenticated, Claims, Role};
use shop_web::http::Problem;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{AppState, NoParams, Page, ReadQuery};

fn may_see(claims: &Claims, customer_id: Uuid) -> bool {
    claims.role == Role::Admin || claims.sub == customer_id.to_string()
}

fn internal(e: sqlx::Error) -> Problem {
    Problem::internal(&e)
}

/// A line of an order, with the product's catalogue details.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = OrderLineView)]
pub(crate) struct LineView {
    product_id: Uuid,
    sku: Option<String>,
    name: Option<String>,
    quantity: i64,
    unit_price: i64,
    line_total: i64,
}

/// One step of the order's saga, from the service that took it.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = OrderHistoryEntry)]
pub(crate) struct HistoryView {
    #[schema(example = "OrderPlaced")]
    event_type: String,
    #[schema(example = "orders")]
    source: String,
    at: DateTime<Utc>,
}

/// A cancellation request of a confirmed order and shipping's answer (SPEC §5 rule 6).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = OrderCancellation)]
pub(crate) struct CancellationView {
    /// `requested` (shipping has not answered yet), `accepted` (the shipment was
    /// cancelled, so was the order) or `refused` (the parcel had left; the order goes on).
    #[schema(example = "requested")]
    state: &'static str,
    requested_at: DateTime<Utc>,
    decided_at: Option<DateTime<Utc>>,
}

impl CancellationView {
    /// The request and its outcome, from the order's history.
    fn from_history(history: &[HistoryView]) -> Option<Self> {
        let at = |ty: &str| history.iter().find(|h| h.event_type == ty).map(|h| h.at);
        let requested_at = at("OrderCancellationRequested")?;
        let (state, decided_at) = if let Some(at) = at("OrderCancellationRefused") {
            ("refused", Some(at))
        } else if let Some(at) = at("OrderCancelled") {
            ("accepted", Some(at))
        } else {
            ("requested", None)
        };
        Some(CancellationView {
            state,
            requested_at,
            decided_at,
        })
    }
}

/// An order with its lines and saga history (SPEC §3.4).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Order)]
pub(crate) struct OrderView {
    order_id: Uuid,
    customer_id: Uuid,
    customer_name: Option<String>,
    #[schema(value_type = String, example = "CONFIRMED")]
    status: String,
    /// Why the saga or the customer cancelled it.
    cancel_reason: Option<String>,
    /// A cancellation the customer asked for once the order was confirmed, and its
    /// outcome; `null` when none was asked for (or the order was cancelled while pending).
    cancellation: Option<CancellationView>,
    lines: Vec<LineView>,
    total: i64,
    /// The ISO 4217 code of `total` and the lines' amounts, as the order was placed.
    #[schema(example = "JPY")]
    currency: String,
    history: Vec<HistoryView>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

/// An order in a list.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = OrderSummary)]
pub(crate) struct OrderSummary {
    order_id: Uuid,
    customer_id: Uuid,
    #[schema(example = "PENDING")]
    status: String,
    cancel_reason: Option<String>,
    total: i64,
    #[schema(example = "JPY")]
    currency: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

/// The customer's own order, or any for admins; others' are "not found".
#[utoipa::path(
    get,
    path = "/api/orders/{id}",
    tag = "orders",
    params(("id" = Uuid, Path, description = "The order id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The order.", body = OrderView),
        (status = 404, description = "No such order, or not yours."),
    )
)]
pub(crate) async fn get_order(
    State(state): State<AppState>,
    Authenticated(claims): Authenticated,
    Path(id): Path<String>,
    _: ReadQuery<NoParams>,
) -> Result<Json<OrderView>, Problem> {
    let not_found = || Problem::not_found("no such order");
    let order_id = Uuid::parse_str(&id).map_err(|_| not_found())?;
    let order = sql::query(
        "SELECT o.order_id, o.customer_id, c.name AS customer_name, o.status, o.cancel_reason, o.total, o.currency, o.created_at, o.updated_at
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
    let lines = lines
        .iter()
        .map(|l| {
            Ok(LineView {
                product_id: l.get("product_id")?,
                sku: l.get("sku")?,
                name: l.get("name")?,
                quantity: l.get("quantity")?,
                unit_price: l.get("unit_price")?,
                line_total: l.get("line_total")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(internal)?;
    let history = history
        .iter()
        .map(|h| {
            Ok(HistoryView {
                event_type: h.get("event_type")?,
                source: h.get("source")?,
                at: h.get("at")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()
        .map_err(internal)?;
    let cancellation = CancellationView::from_history(&history);
    let view = (|| -> Result<OrderView, sqlx::Error> {
        Ok(OrderView {
            order_id,
            customer_id,
            customer_name: order.get("customer_name")?,
            status: order.get("status")?,
            cancel_reason: order.get("cancel_reason")?,
            cancellation,
            lines,
            total: order.get("total")?,
            currency: order.get("currency")?,
            history,
            created_at: order.get("created_at")?,
            updated_at: order.get("updated_at")?,
        })
    })()
    .map_err(internal)?;
    Ok(Json(view))
}

/// The customer's orders, newest first; the next page starts after the last order id of
/// this one.
#[utoipa::path(
    get,
    path = "/api/customers/{id}/orders",
    tag = "orders",
    params(
        ("id" = Uuid, Path, description = "The customer id"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 500, description = "Page size (default 50)"),
        ("after" = Option<Uuid>, Query, description = "The last order id of the previous page"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of orders.", body = Vec<OrderSummary>),
        (status = 404, description = "No such customer, or not yours."),
    )
)]
pub(crate) async fn customer_orders(
    State(state): State<AppState>,
    Authenticated(claims): Authenticated,
    Path(id): Path<String>,
    ReadQuery(page): ReadQuery<Page>,
) -> Result<Json<Vec<OrderSummary>>, Problem> {
    let not_found = || Problem::not_found("no such customer");
    let customer_id = Uuid::parse_str(&id).map_err(|_| not_found())?;
    if !may_see(&claims, customer_id) {
        return Err(not_found());
    }
    let (limit, after) = page.parse()?;
    let rows = sql::query(
        "SELECT order_id, customer_id, status, cancel_reason, total, currency, created_at, updated_at FROM orders
         WHERE customer_id = $1 AND ($2 IS NULL OR order_id < $2) ORDER BY order_id DESC LIMIT $3",
    )
    .bind(customer_id)
    .bind(after)
    .bind(limit)
    .fetch_all(&state.pool)
    .await
    .map_err(internal)?;
    summaries(&rows).map(Json)
}

fn summaries(rows: &[sql::Row]) -> Result<Vec<OrderSummary>, Problem> {
    rows.iter()
        .map(|r| {
            Ok(OrderSummary {
                order_id: r.get("order_id")?,
                customer_id: r.get("customer_id")?,
                status: r.get("status")?,
                cancel_reason: r.get("cancel_reason")?,
                total: r.get("total")?,
                currency: r.get("currency")?,
                created_at: r.get("created_at")?,
                updated_at: r.get("updated_at")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(internal)
}

/// `?limit&after&status` of the order list.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct OrderPage {
    limit: Option<String>,
    after: Option<String>,
    status: Option<String>,
    #[serde(rename = "consistency")]
    _consistency: Option<String>,
}

const STATUSES: [&str; 5] = ["PENDING", "CONFIRMED", "CANCELLED", "SHIPPED", "DELIVERED"];

/// Orders newest first: every order for admins, a customer's own for a customer;
/// optionally of one status. The next page starts after the last order id of this one.
#[utoipa::path(
    get,
    path = "/api/orders",
    tag = "orders",
    params(
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 500, description = "Page size (default 50)"),
        ("after" = Option<Uuid>, Query, description = "The last order id of the previous page"),
        ("status" = Option<String>, Query, description = "Only orders in this status",
            example = "CONFIRMED", pattern = "^(PENDING|CONFIRMED|CANCELLED|SHIPPED|DELIVERED)$"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of orders.", body = Vec<OrderSummary>),
    )
)]
pub(crate) async fn list_orders(
    State(state): State<AppState>,
    Authenticated(claims): Authenticated,
    ReadQuery(query): ReadQuery<OrderPage>,
) -> Result<Json<Vec<OrderSummary>>, Problem> {
    let (limit, after) = Page::new(query.limit, query.after).parse()?;
    if let Some(status) = &query.status {
        if !STATUSES.contains(&status.as_str()) {
            return Err(Problem::bad_request(format!(
                "status must be one of {}",
                STATUSES.join(", ")
            )));
        }
    }
    let customer = match claims.role {
        Role::Admin => None,
        Role::Customer => Some(
            Uuid::parse_str(&claims.sub).map_err(|_| Problem::forbidden("not a customer token"))?,
        ),
    };
    let rows = sql::query(
        "SELECT order_id, customer_id, status, cancel_reason, total, currency, created_at, updated_at FROM orders
         WHERE ($1 IS NULL OR customer_id = $1) AND ($2 IS NULL OR status = $2) AND ($3 IS NULL OR order_id < $3)
         ORDER BY order_id DESC LIMIT $4",
    )
    .bind(customer)
    .bind(query.status.clone())
    .bind(after)
    .bind(limit)
    .fetch_all(&state.pool)
    .await
    .map_err(internal)?;
    summaries(&rows).map(Json)
}
