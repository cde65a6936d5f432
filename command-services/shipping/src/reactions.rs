//! Reactions of the shipping service: the saga's shipping step (SPEC §5.4) and its
//! replica of customers' countries.

use std::sync::Arc;

use async_trait::async_trait;
use shop_eventing::command::CommandBus;
use shop_eventing::handler::{decode, EventHandler, HandlerError};
use shop_schemas::customers::CustomerEvent;
use shop_schemas::orders::OrderEvent;
use shop_schemas::{CloudEvent, Service};
use shop_sql::{self as sql, Conn};
use shop_web::telemetry::metadata_caused_by;
use uuid::Uuid;

use crate::shipment::{Shipment, ShipmentCommand};

/// The consumer name of [`ScheduleShipments`].
pub const SHIPMENTS: &str = "shipping.shipments";
/// The services whose topics [`ScheduleShipments`] reads (an import marks their events for replay).
pub const SHIPMENTS_SOURCES: &[Service] = &[Service::Customers, Service::Orders];

/// `OrderConfirmed` → `ShipmentScheduled`, or `ShipmentFailed` for a country shipments
/// do not go to; `OrderCancelled` → `ShipmentCancelled` for a shipment not yet dispatched;
/// `OrderCancellationRequested` → `ShipmentCancelled` before dispatch (the order is then
/// cancelled), `ShipmentCancellationRefused` after it (SPEC §5 rule 6).
/// The customer's country comes from `CustomerRegistered` on another topic, which may
/// arrive after the order: a confirmed order waits in `shipment_requests` until it does.
pub struct ScheduleShipments {
    pub bus: Arc<CommandBus<Shipment>>,
}

#[async_trait]
impl EventHandler for ScheduleShipments {
    async fn handle(&self, tx: &mut Conn, event: &CloudEvent) -> Result<(), HandlerError> {
        if let Some(CustomerEvent::CustomerRegistered(e)) =
            decode::<CustomerEvent>(Service::Customers, event)?
        {
            sql::query(
                "INSERT INTO customer_countries (customer_id, country) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            )
            .bind(e.customer_id)
            .bind(&e.address.country)
            .execute(&mut *tx)
            .await?;
            let waiting: Vec<Uuid> = sql::query_scalar(
                "SELECT order_id FROM shipment_requests
                 WHERE customer_id = $1 AND confirmed AND NOT cancelled AND NOT scheduled ORDER BY order_id",
            )
            .bind(e.customer_id)
            .fetch_all(&mut *tx)
            .await?;
            for order_id in waiting {
                self.schedule(tx, order_id, event).await?;
            }
            return Ok(());
        }
        let Some(decoded) = decode::<OrderEvent>(Service::Orders, event)? else {
            return Ok(());
        };
        let order_id = decoded.order_id();
        let requested = matches!(decoded, OrderEvent::OrderCancellationRequested(_));
        let (customer_id, confirmed, cancelled) = match decoded {
            OrderEvent::OrderPlaced(e) => (Some(e.customer_id), false, false),
            OrderEvent::OrderConfirmed(_) => (None, true, false),
            OrderEvent::OrderCancelled(_) | OrderEvent::OrderCancellationRequested(_) => {
                (None, false, true)
            }
            OrderEvent::OrderShipped(_)
            | OrderEvent::OrderDelivered(_)
            | OrderEvent::OrderCancellationRefused(_) => return Ok(()),
        };
        sql::query(
            "INSERT INTO shipment_requests (order_id, customer_id, confirmed, cancelled) VALUES ($1, $2, $3, $4)
             ON CONFLICT (order_id) DO UPDATE SET
                 customer_id = COALESCE(EXCLUDED.customer_id, shipment_requests.customer_id),
                 confirmed = shipment_requests.confirmed OR EXCLUDED.confirmed,
                 cancelled = shipment_requests.cancelled OR EXCLUDED.cancelled",
        )
        .bind(order_id)
        .bind(customer_id)
        .bind(confirmed)
        .bind(cancelled)
        .execute(&mut *tx)
        .await?;
        if cancelled {
            // A request is shipping's to decide; a cancelled order's shipment stops.
            let command = if requested {
                ShipmentCommand::DecideCancellation { order_id }
            } else {
                ShipmentCommand::Cancel { order_id }
            };
            self.bus
                .execute_in(
                    tx,
                    &order_id.to_string(),
                    command,
                    &metadata_caused_by(event),
                )
                .await?;
            return Ok(());
        }
        self.schedule(tx, order_id, event).await
    }
}

impl ScheduleShipments {
    /// Schedules the order's shipment if it is confirmed, not cancelled, not scheduled
    /// yet, and its customer's country is known.
    async fn schedule(
        &self,
        tx: &mut Conn,
        order_id: Uuid,
        cause: &CloudEvent,
    ) -> Result<(), HandlerError> {
        let ready: Option<(Uuid, String)> = sql::query_as(
            "SELECT r.customer_id, c.country FROM shipment_requests r
             JOIN customer_countries c ON c.customer_id = r.customer_id
             WHERE r.order_id = $1 AND r.confirmed AND NOT r.cancelled AND NOT r.scheduled",
        )
        .bind(order_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((customer_id, country)) = ready else {
            return Ok(());
        };
        // A concurrent scheduler of the same order (another instance) is harmless: the
        // shipment aggregate decides once.
        sql::query("UPDATE shipment_requests SET scheduled = true WHERE order_id = $1")
            .bind(order_id)
            .execute(&mut *tx)
            .await?;
        let command = ShipmentCommand::Schedule {
            order_id,
            customer_id,
            country,
        };
        // Scheduled once, and a cancelled order never is: the shipment starts here.
        self.bus
            .execute_new_in(
                tx,
                &order_id.to_string(),
                command,
                &metadata_caused_by(cause),
            )
            .await?;
        Ok(())
    }
}
