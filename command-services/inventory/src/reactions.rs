//! Reactions of the inventory service: the order saga's stock steps (SPEC §5): reserve
//! on `OrderPlaced`, commit on `OrderConfirmed`, release on `OrderCancelled`.

use std::sync::Arc;

use async_trait::async_trait;
use shop_eventing::command::CommandBus;
use shop_eventing::handler::{apply_span, decode, EventHandler, HandlerError};
use shop_schemas::inventory::{StockLine, StockReserved};
use shop_schemas::orders::{OrderEvent, OrderPlaced};
use shop_schemas::{CloudEvent, Service};
use shop_sql::{self as sql, Conn};
use shop_web::telemetry::metadata_caused_by;
use tracing::Instrument;
use uuid::Uuid;

use crate::reservation::{Available, Reservation, ReservationCommand};

/// The consumer name of [`ReserveStock`].
pub const RESERVATIONS: &str = "inventory.reservations";
/// The services whose topics [`ReserveStock`] reads (an import marks their events for replay).
pub const RESERVATIONS_SOURCES: &[Service] = &[Service::Orders];

/// `OrderConfirmed` → `StockCommitted`; `OrderCancelled` → `StockReleased` (reserved or
/// sold units back to available). Orders events are keyed by order, so they come in the
/// order's own order.
///
/// `OrderPlaced` → the reservation decides, on the available units of the order's
/// products: `StockReserved` for every line, or `StockReservationRejected` with the short
/// lines and nothing reserved. The reaction only reads those units, with the order's
/// `stock` rows locked while the reservation decides, so concurrent orders for the same
/// products (other partitions, other instances) are decided one after the other and
/// never oversell.
pub struct ReserveStock {
    pub bus: Arc<CommandBus<Reservation>>,
}

#[async_trait]
impl EventHandler for ReserveStock {
    fn batches(&self) -> bool {
        true
    }

    async fn handle(&self, tx: &mut Conn, event: &CloudEvent) -> Result<(), HandlerError> {
        let Some(decoded) = decode::<OrderEvent>(Service::Orders, event)? else {
            return Ok(());
        };
        let mut stock = Stock::default();
        self.apply(tx, &mut stock, decoded, event).await
    }

    /// A batch (the runner batches on PostgreSQL) locks the stock of every product its
    /// placed orders name in one statement, up front and in product order, and has each
    /// order's reservation decide on those rows as the batch's own reservations move them
    /// — one round trip per batch instead of one per order. A release in the batch puts units back by amounts only its
    /// reservation knows, so the orders after it read their rows again. The stock
    /// table's `available >= 0` check still judges every move: a decision on a wrong
    /// count aborts the append, and the runner then goes event by event.
    async fn handle_batch(
        &self,
        tx: &mut Conn,
        events: &[&CloudEvent],
    ) -> Result<(), HandlerError> {
        let mut decoded = Vec::with_capacity(events.len());
        for event in events {
            if let Some(order_event) = decode::<OrderEvent>(Service::Orders, event)? {
                decoded.push((order_event, *event));
            }
        }
        let mut stock = Stock::default();
        let mut products: Vec<Uuid> = decoded
            .iter()
            .filter_map(|(e, _)| match e {
                OrderEvent::OrderPlaced(order) => Some(order.lines.iter().map(|l| l.product_id)),
                _ => None,
            })
            .flatten()
            .collect();
        // Commits and releases move the units of the orders' reservations: their rows are
        // locked with the placements' up front, all in product order, so two members (or
        // instances) settling orders of the same products in other line orders never
        // deadlock.
        let settled: Vec<String> = decoded
            .iter()
            .filter_map(|(e, _)| match e {
                OrderEvent::OrderConfirmed(e) => Some(e.order_id.to_string()),
                OrderEvent::OrderCancelled(e) => Some(e.order_id.to_string()),
                _ => None,
            })
            .collect();
        products.extend(reserved_products(tx, settled).await?);
        stock.lock(tx, products).await?;
        for (order_event, event) in decoded {
            self.apply(tx, &mut stock, order_event, event)
                .instrument(apply_span(RESERVATIONS, event))
                .await?;
        }
        Ok(())
    }
}

/// The products whose units the reservations of these orders hold (read from their
/// `StockReserved` events).
async fn reserved_products(tx: &mut Conn, orders: Vec<String>) -> Result<Vec<Uuid>, HandlerError> {
    if orders.is_empty() {
        return Ok(Vec::new());
    }
    let statement = format!(
        "SELECT data, event_version FROM events WHERE aggregate_type = $1 AND aggregate_id {} AND event_type = 'StockReserved'",
        tx.dialect().in_list(2)
    );
    let reservations = sql::query_as::<(serde_json::Value, String)>(&statement)
        // The events table grows: planned for it as it is (`Query::replanned`).
        .replanned()
        .bind(<Reservation as cqrs_es::Aggregate>::TYPE)
        .bind(sql::Arg::TextList(orders))
        .fetch_all(&mut *tx)
        .await?;
    let mut products = Vec::new();
    for (data, version) in reservations {
        // Upcast from the version it was stored at, as every reader of events does.
        let (_, data) = shop_schemas::upcast(
            "StockReserved",
            version.parse().unwrap_or(1),
            std::borrow::Cow::Owned(data),
        );
        let reserved: StockReserved = serde_json::from_value(data.into_owned())
            .map_err(|e| HandlerError::permanent(format!("a stored StockReserved: {e}")))?;
        products.extend(reserved.lines.iter().map(|l| l.product_id));
    }
    Ok(products)
}

/// The stock rows a transaction has locked, with their available units as its own
/// reservations leave them.
#[derive(Default)]
struct Stock {
    available: Available,
    /// Whether `available` still counts what the rows hold (a release makes it stale).
    current: bool,
}

impl Stock {
    /// Locks the products' rows (in product order, so two transactions over the same
    /// products cannot deadlock) and reads their available units.
    async fn lock(&mut self, tx: &mut Conn, mut ids: Vec<Uuid>) -> Result<(), HandlerError> {
        ids.sort();
        ids.dedup();
        if ids.is_empty() {
            return Ok(());
        }
        let dialect = tx.dialect();
        let lock = format!(
            "SELECT product_id, available FROM stock WHERE product_id {} ORDER BY product_id {}",
            dialect.in_list(1),
            dialect.for_update()
        );
        let rows = sql::query_as::<(Uuid, i64)>(&lock)
            .bind(&ids)
            .fetch_all(&mut *tx)
            .await?;
        self.available.extend(rows);
        self.current = true;
        Ok(())
    }

    /// The available units of an order's products, locked (read again unless current
    /// and holding every one of them).
    async fn of(&mut self, tx: &mut Conn, order: &OrderPlaced) -> Result<Available, HandlerError> {
        let ids: Vec<Uuid> = order.lines.iter().map(|l| l.product_id).collect();
        if !self.current || ids.iter().any(|id| !self.available.knows(*id)) {
            self.available.clear();
            self.lock(tx, ids.clone()).await?;
        }
        Ok(self.available.only(ids))
    }
}

impl ReserveStock {
    /// One orders event: `OrderPlaced` → reserve or reject on the locked stock;
    /// `OrderConfirmed` → commit; `OrderCancelled` → release.
    async fn apply(
        &self,
        tx: &mut Conn,
        stock: &mut Stock,
        event: OrderEvent,
        cause: &CloudEvent,
    ) -> Result<(), HandlerError> {
        let order = match event {
            OrderEvent::OrderPlaced(order) => order,
            OrderEvent::OrderConfirmed(e) => {
                let command = ReservationCommand::Commit {
                    order_id: e.order_id,
                };
                return self.execute(tx, e.order_id, command, cause).await;
            }
            OrderEvent::OrderCancelled(e) => {
                let command = ReservationCommand::Release {
                    order_id: e.order_id,
                };
                // Units go back by amounts only the reservation knows.
                stock.current = false;
                return self.execute(tx, e.order_id, command, cause).await;
            }
            _ => return Ok(()),
        };
        let available = stock.of(tx, &order).await?;
        let lines: Vec<StockLine> = order
            .lines
            .iter()
            .map(|l| StockLine {
                product_id: l.product_id,
                quantity: l.quantity,
            })
            .collect();
        let command = ReservationCommand::Reserve {
            order_id: order.order_id,
            lines: lines.clone(),
            available,
        };
        // The order's reservation starts here: no events to read.
        self.bus
            .execute_new_in(
                tx,
                &order.order_id.to_string(),
                command,
                &metadata_caused_by(cause),
            )
            .await?;
        // The batch's next orders decide on what this one left (the same inputs, so the
        // same outcome as the reservation's decision).
        stock.available.take(&lines);
        Ok(())
    }

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
