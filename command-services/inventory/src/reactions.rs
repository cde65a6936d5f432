//! Reactions of the inventory service: the order saga's stock steps (SPEC §5): reserve
//! on `OrderPlaced`, commit on `OrderConfirmed`, release on `OrderCancelled`.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use shop_eventing::command::CommandBus;
use shop_eventing::consumer::{decode, EventHandler, HandlerError};
use shop_eventing::sql::{self, Conn};
use shop_eventing::telemetry::metadata_caused_by;
use shop_schemas::inventory::{StockLine, StockShortage};
use shop_schemas::orders::OrderEvent;
use shop_schemas::{CloudEvent, Service};
use uuid::Uuid;

use crate::reservation::{Reservation, ReservationCommand};

/// The consumer name of [`ReserveStock`].
pub const RESERVATIONS: &str = "inventory.reservations";
/// The services whose topics [`ReserveStock`] reads (an import marks their events for replay).
pub const RESERVATIONS_SOURCES: &[Service] = &[Service::Orders];

/// `OrderConfirmed` → `StockCommitted`; `OrderCancelled` → `StockReleased` (reserved or
/// sold units back to available). Orders events are keyed by order, so they come in the
/// order's own order.
///
/// `OrderPlaced` → `StockReserved` for every line, or `StockReservationRejected` with the
/// short lines and nothing reserved. The order's `stock` rows are locked while deciding,
/// so concurrent orders for the same products (other partitions, other instances) are
/// decided one after the other and never oversell.
pub struct ReserveStock {
    pub bus: Arc<CommandBus<Reservation>>,
}

#[async_trait]
impl EventHandler for ReserveStock {
    async fn handle(&self, tx: &mut Conn, event: &CloudEvent) -> Result<(), HandlerError> {
        let order = match decode::<OrderEvent>(Service::Orders, event)? {
            Some(OrderEvent::OrderPlaced(order)) => order,
            Some(OrderEvent::OrderConfirmed(e)) => {
                let command = ReservationCommand::Commit {
                    order_id: e.order_id,
                };
                return self.execute(tx, e.order_id, command, event).await;
            }
            Some(OrderEvent::OrderCancelled(e)) => {
                let command = ReservationCommand::Release {
                    order_id: e.order_id,
                };
                return self.execute(tx, e.order_id, command, event).await;
            }
            _ => return Ok(()),
        };
        let mut ids: Vec<Uuid> = order.lines.iter().map(|l| l.product_id).collect();
        ids.sort();
        // Locks in product order, so two orders over the same products cannot deadlock.
        let dialect = tx.dialect();
        let lock = format!(
            "SELECT product_id, available FROM stock WHERE product_id {} ORDER BY product_id {}",
            dialect.in_list(1),
            dialect.for_update()
        );
        let available: HashMap<Uuid, i64> = sql::query_as::<(Uuid, i64)>(&lock)
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
        // The order's reservation starts here: no events to read.
        self.bus
            .execute_new_in(
                tx,
                &order.order_id.to_string(),
                command,
                &metadata_caused_by(event),
            )
            .await?;
        Ok(())
    }
}

impl ReserveStock {
    async fn execute(
        &self,
        tx: &mut Conn,
        order_id: Uuid,
        command: ReservationCommand,
        cause: &CloudEvent,
    ) -> Result<(), HandlerError> {
        self.bus
            .execute_in(
                tx,
                &order_id.to_string(),
                command,
                &metadata_caused_by(cause),
            )
            .await?;
        Ok(())
    }
}
