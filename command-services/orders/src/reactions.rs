//! Reactions of the orders service to other services' events.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use shop_eventing::command::CommandBus;
use shop_eventing::handler::{apply_span, decode, EventHandler, HandlerError};
use shop_schemas::inventory::InventoryEvent;
use shop_schemas::payments::PaymentEvent;
use shop_schemas::shipping::ShippingEvent;
use shop_schemas::{CloudEvent, Service};
use shop_sql::{self as sql, Conn, RowSet};
use shop_web::telemetry::metadata_caused_by;
use tracing::Instrument;
use uuid::Uuid;

use crate::order::{CancelReason, Order, OrderCommand};

/// The consumer name of [`CatalogueReplica`].
pub const CATALOGUE: &str = "orders.catalogue";

/// Keeps `catalogue` (product prices) from inventory events.
pub struct CatalogueReplica;

#[async_trait]
impl EventHandler for CatalogueReplica {
    async fn handle(&self, tx: &mut Conn, event: &CloudEvent) -> Result<(), HandlerError> {
        let Some(decoded) = decode::<InventoryEvent>(Service::Inventory, event)? else {
            return Ok(());
        };
        let (product_id, price) = match decoded {
            InventoryEvent::ProductAdded(e) => (e.product_id, e.price),
            InventoryEvent::ProductPriceChanged(e) => (e.product_id, e.price),
            _ => return Ok(()),
        };
        // `version` guards against an older price overwriting a newer one.
        sql::query(
            "INSERT INTO catalogue (product_id, price, version, updated_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (product_id) DO UPDATE SET price = EXCLUDED.price, version = EXCLUDED.version, updated_at = EXCLUDED.updated_at
             WHERE catalogue.version < EXCLUDED.version",
        )
        .bind(product_id)
        .bind(price)
        .bind(event.sequence as i64)
        .bind(event.time)
        .execute(&mut *tx)
        .await?;
        Ok(())
    }
}

/// The consumer name of [`OrderSaga`].
pub const SAGA: &str = "orders.saga";
/// The services whose topics [`OrderSaga`] reads (an import marks their events for replay).
pub const SAGA_SOURCES: &[Service] = &[Service::Inventory, Service::Payments, Service::Shipping];

/// The orders service's part of the saga (SPEC §5): confirms an order once stock is
/// reserved and payment completed (in whichever order the two topics deliver them),
/// cancels it when a step fails, follows its shipment, and settles a confirmed order's
/// cancellation request with shipping's answer.
pub struct OrderSaga {
    pub bus: Arc<CommandBus<Order>>,
}

/// A fact of the saga about one order, from another service's event.
enum Step {
    Reserved,
    Paid,
    Command(OrderCommand),
}

fn step(event: &CloudEvent) -> Result<Option<(Uuid, Step)>, HandlerError> {
    use CancelReason as R;
    let cancel = |reason| Step::Command(OrderCommand::CancelBySaga { reason });
    Ok(match event.service() {
        Some(Service::Inventory) => match decode::<InventoryEvent>(Service::Inventory, event)? {
            Some(InventoryEvent::StockReserved(e)) => Some((e.order_id, Step::Reserved)),
            Some(InventoryEvent::StockReservationRejected(e)) => {
                Some((e.order_id, cancel(R::OutOfStock)))
            }
            _ => None,
        },
        Some(Service::Payments) => match decode::<PaymentEvent>(Service::Payments, event)? {
            Some(PaymentEvent::PaymentCompleted(e)) => Some((e.order_id, Step::Paid)),
            Some(PaymentEvent::PaymentDeclined(e)) => {
                Some((e.order_id, cancel(R::PaymentDeclined)))
            }
            _ => None,
        },
        Some(Service::Shipping) => match decode::<ShippingEvent>(Service::Shipping, event)? {
            Some(ShippingEvent::ShipmentFailed(e)) => Some((e.order_id, cancel(R::ShippingFailed))),
            Some(ShippingEvent::ShipmentDispatched(e)) => {
                Some((e.order_id, Step::Command(OrderCommand::Ship)))
            }
            Some(ShippingEvent::ShipmentDelivered(e)) => {
                Some((e.order_id, Step::Command(OrderCommand::Deliver)))
            }
            // Shipping's answer to a cancellation request (SPEC §5 rule 6).
            Some(ShippingEvent::ShipmentCancelled(e)) => {
                Some((e.order_id, Step::Command(OrderCommand::ShipmentCancelled)))
            }
            Some(ShippingEvent::ShipmentCancellationRefused(e)) => Some((
                e.order_id,
                Step::Command(OrderCommand::CancellationRefused { reason: e.reason }),
            )),
            _ => None,
        },
        _ => None,
    })
}

/// The columns of a batch's saga facts, as `order_saga` keeps them.
const SAGA_FACTS: [(&str, &str); 3] = [
    ("order_id", "UUID"),
    ("stock_reserved", "BOOLEAN"),
    ("payment_completed", "BOOLEAN"),
];

#[async_trait]
impl EventHandler for OrderSaga {
    fn batches(&self) -> bool {
        true
    }

    /// A batch (the runner batches on PostgreSQL) records every order's reservation and
    /// payment in one statement, which answers which orders now have both; then each
    /// command (a confirmation for those, and the commands the other events carry) runs
    /// in the order of the events that caused it.
    async fn handle_batch(
        &self,
        tx: &mut Conn,
        events: &[&CloudEvent],
    ) -> Result<(), HandlerError> {
        let mut commands: Vec<(usize, Uuid, OrderCommand)> = Vec::new();
        // Per order: reserved, paid, and the last event that brought either.
        let mut facts: HashMap<Uuid, (bool, bool, usize)> = HashMap::new();
        for (index, event) in events.iter().enumerate() {
            let Some((order_id, step)) = step(event)? else {
                continue;
            };
            match step {
                Step::Command(command) => commands.push((index, order_id, command)),
                Step::Reserved | Step::Paid => {
                    let fact = facts.entry(order_id).or_insert((false, false, index));
                    fact.0 |= matches!(step, Step::Reserved);
                    fact.1 |= matches!(step, Step::Paid);
                    fact.2 = index;
                }
            }
        }
        if !facts.is_empty() {
            let mut rows = RowSet::new(&SAGA_FACTS);
            for (order_id, (reserved, paid, _)) in &facts {
                rows.push([(*order_id).into(), (*reserved).into(), (*paid).into()]);
            }
            let rows_table = tx.dialect().rows(1, "r", &SAGA_FACTS);
            let statement = format!(
                "INSERT INTO order_saga (order_id, stock_reserved, payment_completed)
                 SELECT order_id, stock_reserved, payment_completed FROM {rows_table}
                 ON CONFLICT (order_id) DO UPDATE SET
                     stock_reserved = order_saga.stock_reserved OR EXCLUDED.stock_reserved,
                     payment_completed = order_saga.payment_completed OR EXCLUDED.payment_completed
                 RETURNING CASE WHEN stock_reserved AND payment_completed THEN order_id END"
            );
            let mut query = sql::query_scalar::<Option<Uuid>>(&statement);
            for arg in rows.into_args(tx.dialect())? {
                query = query.bind(arg);
            }
            let both: Vec<Option<Uuid>> = query.fetch_all(&mut *tx).await?;
            for order_id in both.into_iter().flatten() {
                commands.push((facts[&order_id].2, order_id, OrderCommand::Confirm));
            }
        }
        commands.sort_by_key(|(index, order_id, _)| (*index, *order_id));
        for (index, order_id, command) in commands {
            let event = events[index];
            self.bus
                .execute_in(
                    tx,
                    &order_id.to_string(),
                    command,
                    &metadata_caused_by(event),
                )
                .instrument(apply_span(SAGA, event))
                .await?;
        }
        Ok(())
    }

    async fn handle(&self, tx: &mut Conn, event: &CloudEvent) -> Result<(), HandlerError> {
        let Some((order_id, step)) = step(event)? else {
            return Ok(());
        };
        let command = match step {
            Step::Command(command) => command,
            Step::Reserved | Step::Paid => {
                let reserved = matches!(step, Step::Reserved);
                let both: bool = sql::query_scalar(
                    "INSERT INTO order_saga (order_id, stock_reserved, payment_completed) VALUES ($1, $2, $3)
                     ON CONFLICT (order_id) DO UPDATE SET
                         stock_reserved = order_saga.stock_reserved OR EXCLUDED.stock_reserved,
                         payment_completed = order_saga.payment_completed OR EXCLUDED.payment_completed
                     RETURNING stock_reserved AND payment_completed",
                )
                .bind(order_id)
                .bind(reserved)
                .bind(!reserved)
                .fetch_one(&mut *tx)
                .await?;
                if !both {
                    return Ok(());
                }
                OrderCommand::Confirm
            }
        };
        self.bus
            .execute_in(
                tx,
                &order_id.to_string(),
                command,
                &metadata_caused_by(event),
            )
            .await?;
        Ok(())
    }
}
