//! Reactions of the shipping service: the saga's shipping step (SPEC §5.4) and its
//! replica of customers' countries.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use shop_eventing::command::CommandBus;
use shop_eventing::handler::{apply_span, decode, EventHandler, HandlerError};
use shop_schemas::customers::CustomerEvent;
use shop_schemas::orders::OrderEvent;
use shop_schemas::{CloudEvent, Service};
use shop_sql::{self as sql, Arg, Conn, RowSet};
use shop_web::telemetry::metadata_caused_by;
use tracing::Instrument;
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

/// What one batch says about one order's shipment request: its facts folded, and the
/// index of the last event that brought one.
#[derive(Default)]
struct Folded {
    customer_id: Option<Uuid>,
    confirmed: bool,
    cancelled: bool,
    cause: usize,
}

/// The columns of a batch's facts, as `shipment_requests` keeps them.
const REQUESTS: [(&str, &str); 4] = [
    ("order_id", "UUID"),
    ("customer_id", "UUID"),
    ("confirmed", "BOOLEAN"),
    ("cancelled", "BOOLEAN"),
];

/// The columns of a batch's customers' countries.
const COUNTRIES: [(&str, &str); 2] = [("customer_id", "UUID"), ("country", "TEXT")];

#[async_trait]
impl EventHandler for ScheduleShipments {
    fn batches(&self) -> bool {
        true
    }

    /// A batch (the runner batches on PostgreSQL) records its customers' countries and
    /// its orders' facts in a statement each, runs the cancellations it carries (in
    /// event order), then marks in one statement every request it made ready
    /// (confirmed, not cancelled, not scheduled, the country known) and schedules those
    /// shipments in the order of the events that made them ready. An order confirmed
    /// and cancelled within one batch is never scheduled: the rule is the same as event
    /// by event, applied to what the batch knows at its end.
    async fn handle_batch(
        &self,
        tx: &mut Conn,
        events: &[&CloudEvent],
    ) -> Result<(), HandlerError> {
        let mut countries = RowSet::new(&COUNTRIES);
        // A registered customer's waiting orders are scheduled for their registration.
        let mut customers: HashMap<Uuid, usize> = HashMap::new();
        let mut orders: HashMap<Uuid, Folded> = HashMap::new();
        let mut cancellations = Vec::new();
        for (index, event) in events.iter().enumerate() {
            if let Some(CustomerEvent::CustomerRegistered(e)) =
                decode::<CustomerEvent>(Service::Customers, event)?
            {
                countries.push([e.customer_id.into(), e.address.country.into()]);
                customers.insert(e.customer_id, index);
                continue;
            }
            let Some(decoded) = decode::<OrderEvent>(Service::Orders, event)? else {
                continue;
            };
            let order_id = decoded.order_id();
            let (customer_id, confirmed, cancellation) = match decoded {
                OrderEvent::OrderPlaced(e) => (Some(e.customer_id), false, None),
                OrderEvent::OrderConfirmed(_) => (None, true, None),
                OrderEvent::OrderCancelled(_) => {
                    (None, false, Some(ShipmentCommand::Cancel { order_id }))
                }
                OrderEvent::OrderCancellationRequested(_) => (
                    None,
                    false,
                    Some(ShipmentCommand::DecideCancellation { order_id }),
                ),
                OrderEvent::OrderShipped(_)
                | OrderEvent::OrderDelivered(_)
                | OrderEvent::OrderCancellationRefused(_) => continue,
            };
            let folded = orders.entry(order_id).or_default();
            folded.customer_id = customer_id.or(folded.customer_id);
            folded.confirmed |= confirmed;
            if let Some(command) = cancellation {
                folded.cancelled = true;
                cancellations.push((index, command));
            }
            folded.cause = index;
        }
        countries
            .execute(tx, Vec::new(), |r| {
                format!(
                    "INSERT INTO customer_countries (customer_id, country)
                     SELECT customer_id, country FROM {r} ON CONFLICT DO NOTHING"
                )
            })
            .await?;
        let mut requests = RowSet::new(&REQUESTS);
        for (order_id, f) in &orders {
            requests.push([
                (*order_id).into(),
                f.customer_id.into(),
                f.confirmed.into(),
                f.cancelled.into(),
            ]);
        }
        requests
            .execute(tx, Vec::new(), |r| {
                format!(
                    "INSERT INTO shipment_requests (order_id, customer_id, confirmed, cancelled)
                     SELECT order_id, customer_id, confirmed, cancelled FROM {r}
                     ON CONFLICT (order_id) DO UPDATE SET
                         customer_id = COALESCE(EXCLUDED.customer_id, shipment_requests.customer_id),
                         confirmed = shipment_requests.confirmed OR EXCLUDED.confirmed,
                         cancelled = shipment_requests.cancelled OR EXCLUDED.cancelled"
                )
            })
            .await?;
        // A request is shipping's to decide; a cancelled order's shipment stops.
        for (index, command) in cancellations {
            let event = events[index];
            let order_id = command_order(&command);
            self.bus
                .execute_in(
                    tx,
                    &order_id.to_string(),
                    command,
                    &metadata_caused_by(event),
                )
                .instrument(apply_span(SHIPMENTS, event))
                .await?;
        }
        if orders.is_empty() && customers.is_empty() {
            return Ok(());
        }
        let ready: Vec<(Uuid, Uuid, String)> = sql::query_as(
            "UPDATE shipment_requests r SET scheduled = true
             FROM customer_countries c
             WHERE c.customer_id = r.customer_id AND r.confirmed AND NOT r.cancelled AND NOT r.scheduled
               AND (r.order_id = ANY($1) OR r.customer_id = ANY($2))
             RETURNING r.order_id, r.customer_id, c.country",
        )
        // Planned for the batch and the tables as they are (`Query::replanned`).
        .replanned()
        .bind(Arg::UuidList(orders.keys().copied().collect()))
        .bind(Arg::UuidList(customers.keys().copied().collect()))
        .fetch_all(&mut *tx)
        .await?;
        let mut schedules: Vec<(usize, Uuid, Uuid, String)> = ready
            .into_iter()
            .map(|(order_id, customer_id, country)| {
                // Ready through its own event, or else through its customer's registration.
                let cause = orders
                    .get(&order_id)
                    .map(|f| f.cause)
                    .or_else(|| customers.get(&customer_id).copied())
                    .unwrap_or_default();
                (cause, order_id, customer_id, country)
            })
            .collect();
        schedules.sort_by_key(|(cause, order_id, _, _)| (*cause, *order_id));
        for (cause, order_id, customer_id, country) in schedules {
            let event = events[cause];
            self.start(tx, order_id, customer_id, country, event)
                .instrument(apply_span(SHIPMENTS, event))
                .await?;
        }
        Ok(())
    }

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
        self.start(tx, order_id, customer_id, country, cause).await
    }

    /// Schedules a ready order's shipment, once its request is marked scheduled: it is
    /// scheduled once, and a cancelled order never is, so the shipment starts here.
    async fn start(
        &self,
        tx: &mut Conn,
        order_id: Uuid,
        customer_id: Uuid,
        country: String,
        cause: &CloudEvent,
    ) -> Result<(), HandlerError> {
        let command = ShipmentCommand::Schedule {
            order_id,
            customer_id,
            country,
        };
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

/// The order a cancellation command is for.
fn command_order(command: &ShipmentCommand) -> Uuid {
    match command {
        ShipmentCommand::Schedule { order_id, .. }
        | ShipmentCommand::Cancel { order_id }
        | ShipmentCommand::DecideCancellation { order_id }
        | ShipmentCommand::Dispatch { order_id }
        | ShipmentCommand::Deliver { order_id } => *order_id,
    }
}
