//! Reactions of the inventory service: the order saga's reservation step (SPEC §5.1).

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use shop_eventing::command::{CommandBus, CommandError};
use shop_eventing::consumer::{decode, EventHandler, HandlerError};
use shop_eventing::telemetry::metadata_caused_by;
use shop_schemas::inventory::{StockLine, StockShortage};
use shop_schemas::orders::OrderEvent;
use shop_schemas::{CloudEvent, Service};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::reservation::{Reservation, ReservationCommand};

/// The consumer name of [`ReserveStock`].
pub const RESERVATIONS: &str = "inventory.reservations";

/// `OrderPlaced` → `StockReserved` for every line, or `StockReservationRejected` with the
/// short lines and nothing reserved. The order's `stock` rows are locked while deciding,
/// so concurrent orders for the same products (other partitions, other instances) are
/// decided one after the other and never oversell.
pub struct ReserveStock {
    pub bus: Arc<CommandBus<Reservation>>,
}

#[async_trait]
impl EventHandler for ReserveStock {
    async fn handle(&self, tx: &mut PgConnection, event: &CloudEvent) -> Result<(), HandlerError> {
        let Some(OrderEvent::OrderPlaced(order)) = decode::<OrderEvent>(Service::Orders, event)?
        else {
            return Ok(());
        };
        let mut ids: Vec<Uuid> = order.lines.iter().map(|l| l.product_id).collect();
        ids.sort();
        // Locks in product order, so two orders over the same products cannot deadlock.
        let available: HashMap<Uuid, i64> = sqlx::query_as::<_, (Uuid, i64)>(
            "SELECT product_id, available FROM stock WHERE product_id = ANY($1) ORDER BY product_id FOR UPDATE",
        )
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .collect();
        let shortages: Vec<StockShortage> = order
            .lines
            .iter()
            .filter_map(|line| {
                let there = available.get(&line.product_id).copied().unwrap_or(0);
                (there < line.quantity).then_some(StockShortage {
                    product_id: line.product_id,
                    requested: line.quantity,
                    available: there,
                })
            })
            .collect();
        let command = if shortages.is_empty() {
            ReservationCommand::Reserve {
                order_id: order.order_id,
                lines: order
                    .lines
                    .iter()
                    .map(|l| StockLine {
                        product_id: l.product_id,
                        quantity: l.quantity,
                    })
                    .collect(),
            }
        } else {
            ReservationCommand::Reject {
                order_id: order.order_id,
                shortages,
            }
        };
        self.bus
            .execute_in(
                tx,
                &order.order_id.to_string(),
                command,
                &metadata_caused_by(event),
            )
            .await
            .map_err(|e| match e {
                CommandError::Rejected(e) => HandlerError::permanent(e.to_string()),
                other => HandlerError::transient(other.to_string()),
            })
    }
}
