//! The order view: status, priced lines and the history of saga steps by service.

use async_trait::async_trait;
use shop_eventing::consumer::{decode, EventHandler, HandlerError};
use shop_schemas::inventory::InventoryEvent;
use shop_schemas::orders::OrderEvent;
use shop_schemas::payments::PaymentEvent;
use shop_schemas::{CloudEvent, Service};
use sqlx::PgConnection;

use crate::ProjectionInfo;

pub const INFO: ProjectionInfo = ProjectionInfo {
    name: "orders",
    consumer: "projection.orders",
    sources: &[Service::Orders, Service::Inventory, Service::Payments],
};

/// Applies order events to `orders`, `order_lines` and `order_history`.
pub struct OrdersProjection;

#[async_trait]
impl EventHandler for OrdersProjection {
    async fn handle(&self, tx: &mut PgConnection, event: &CloudEvent) -> Result<(), HandlerError> {
        // Other services' saga steps only add to an order's history.
        let step = match decode::<InventoryEvent>(Service::Inventory, event)? {
            Some(InventoryEvent::StockReserved(e)) => Some(e.order_id),
            Some(InventoryEvent::StockReservationRejected(e)) => Some(e.order_id),
            _ => match decode::<PaymentEvent>(Service::Payments, event)? {
                Some(PaymentEvent::PaymentCompleted(e)) => Some(e.order_id),
                Some(PaymentEvent::PaymentDeclined(e)) => Some(e.order_id),
                _ => None,
            },
        };
        if let Some(order_id) = step {
            return record_history(tx, order_id, event).await;
        }
        let Some(decoded) = decode::<OrderEvent>(Service::Orders, event)? else {
            return Ok(());
        };
        let order_id = match &decoded {
            OrderEvent::OrderPlaced(e) => e.order_id,
        };
        match decoded {
            OrderEvent::OrderPlaced(e) => {
                let inserted = sqlx::query(
                    "INSERT INTO orders (order_id, customer_id, status, total, version, created_at, updated_at)
                     VALUES ($1, $2, 'PENDING', $3, $4, $5, $5) ON CONFLICT (order_id) DO NOTHING",
                )
                .bind(e.order_id)
                .bind(e.customer_id)
                .bind(e.total)
                .bind(event.sequence as i64)
                .bind(event.time)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if inserted == 1 {
                    for (position, line) in e.lines.iter().enumerate() {
                        sqlx::query(
                            "INSERT INTO order_lines (order_id, position, product_id, quantity, unit_price, line_total) VALUES ($1, $2, $3, $4, $5, $6)",
                        )
                        .bind(e.order_id)
                        .bind(position as i32)
                        .bind(line.product_id)
                        .bind(line.quantity)
                        .bind(line.unit_price)
                        .bind(line.quantity * line.unit_price)
                        .execute(&mut *tx)
                        .await?;
                    }
                }
            }
        }
        record_history(tx, order_id, event).await
    }
}

/// Adds one step to an order's history (once per event).
async fn record_history(
    tx: &mut PgConnection,
    order_id: uuid::Uuid,
    event: &CloudEvent,
) -> Result<(), HandlerError> {
    sqlx::query("INSERT INTO order_history (event_id, order_id, event_type, source, at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING")
        .bind(event.id)
        .bind(order_id)
        .bind(event.event_name())
        .bind(event.service().map(|s| s.name()).unwrap_or("unknown"))
        .bind(event.time)
        .execute(&mut *tx)
        .await?;
    Ok(())
}
