//! Reactions of the payments service to other services' events.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use shop_eventing::command::CommandBus;
use shop_eventing::handler::{apply_span, decode, EventHandler, HandlerError};
use shop_schemas::customers::CustomerEvent;
use shop_schemas::inventory::InventoryEvent;
use shop_schemas::orders::OrderEvent;
use shop_schemas::{CloudEvent, Service};
use shop_sql::{self as sql, Arg, Conn, RowSet};
use shop_web::telemetry::metadata_caused_by;
use tracing::Instrument;
use uuid::Uuid;

use crate::wallet::{Wallet, WalletCommand};

/// The consumer name of [`KnownCustomers`].
pub const KNOWN_CUSTOMERS: &str = "payments.known-customers";

/// Keeps `known_customers` from `CustomerRegistered`.
pub struct KnownCustomers;

#[async_trait]
impl EventHandler for KnownCustomers {
    async fn handle(&self, tx: &mut Conn, event: &CloudEvent) -> Result<(), HandlerError> {
        let Some(decoded) = decode::<CustomerEvent>(Service::Customers, event)? else {
            return Ok(());
        };
        match decoded {
            CustomerEvent::CustomerRegistered(e) => {
                sql::query("INSERT INTO known_customers (customer_id, registered_at) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                    .bind(e.customer_id)
                    .bind(event.time)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        Ok(())
    }
}

/// The consumer name of [`OrderPayments`].
pub const CHARGES: &str = "payments.charges";
/// The services whose topics [`OrderPayments`] reads (an import marks their events for replay).
pub const CHARGES_SOURCES: &[Service] = &[Service::Orders, Service::Inventory];

/// The saga's payment steps (SPEC §5.2, §5.5, §5.7):
/// - once an order is both placed (`OrderPlaced`: customer and total) and reserved
///   (`StockReserved`), in whichever order the two topics deliver them, and not known to
///   be cancelled, charge the customer's wallet — `PaymentCompleted` or `PaymentDeclined`;
/// - when the order is cancelled (`OrderCancelled`, for any reason, also after a charge
///   that the orders service saw too late), refund a completed charge — `PaymentRefunded`.
pub struct OrderPayments {
    pub bus: Arc<CommandBus<Wallet>>,
}

/// One fact about an order, as `order_payments` records it.
enum Fact {
    Placed { customer_id: Uuid, total: i64 },
    Reserved,
    Cancelled,
}

fn fact(event: &CloudEvent) -> Result<Option<(Uuid, Fact)>, HandlerError> {
    Ok(match event.service() {
        Some(Service::Orders) => match decode::<OrderEvent>(Service::Orders, event)? {
            Some(OrderEvent::OrderPlaced(e)) => Some((
                e.order_id,
                Fact::Placed {
                    customer_id: e.customer_id,
                    total: e.total,
                },
            )),
            Some(OrderEvent::OrderCancelled(e)) => Some((e.order_id, Fact::Cancelled)),
            _ => None,
        },
        Some(Service::Inventory) => match decode::<InventoryEvent>(Service::Inventory, event)? {
            Some(InventoryEvent::StockReserved(e)) => Some((e.order_id, Fact::Reserved)),
            _ => None,
        },
        _ => None,
    })
}

/// What one batch says about one order: its facts folded, and the index of the last
/// event that brought one (the cause of the command they may lead to).
#[derive(Default)]
struct Folded {
    customer_id: Option<Uuid>,
    total: Option<i64>,
    reserved: bool,
    cancelled: bool,
    cause: usize,
}

/// The columns of a batch's facts, as `order_payments` keeps them.
const FACTS: [(&str, &str); 5] = [
    ("order_id", "UUID"),
    ("customer_id", "UUID"),
    ("total", "BIGINT"),
    ("reserved", "BOOLEAN"),
    ("cancelled", "BOOLEAN"),
];

#[async_trait]
impl EventHandler for OrderPayments {
    fn batches(&self) -> bool {
        true
    }

    /// A batch (the runner batches on PostgreSQL) records every order's facts in one
    /// statement, then decides in one more which orders to charge (placed, reserved, not
    /// cancelled, not charged) and which to refund (cancelled in this batch after a
    /// charge in an earlier one), and runs those commands in the order of the events
    /// that caused them. An order placed, reserved and cancelled within one batch is
    /// neither charged nor refunded: the rule is the same as event by event, applied to
    /// what the batch knows at its end.
    async fn handle_batch(
        &self,
        tx: &mut Conn,
        events: &[&CloudEvent],
    ) -> Result<(), HandlerError> {
        let mut orders: HashMap<Uuid, Folded> = HashMap::new();
        for (index, event) in events.iter().enumerate() {
            let Some((order_id, fact)) = fact(event)? else {
                continue;
            };
            let folded = orders.entry(order_id).or_default();
            match fact {
                Fact::Placed { customer_id, total } => {
                    folded.customer_id = Some(customer_id);
                    folded.total = Some(total);
                }
                Fact::Reserved => folded.reserved = true,
                Fact::Cancelled => folded.cancelled = true,
            }
            folded.cause = index;
        }
        if orders.is_empty() {
            return Ok(());
        }
        let mut rows = RowSet::new(&FACTS);
        for (order_id, f) in &orders {
            rows.push([
                (*order_id).into(),
                f.customer_id.into(),
                f.total.into(),
                f.reserved.into(),
                f.cancelled.into(),
            ]);
        }
        rows.execute(tx, Vec::new(), |r| {
            format!(
                "INSERT INTO order_payments (order_id, customer_id, total, reserved, cancelled)
                 SELECT order_id, customer_id, total, reserved, cancelled FROM {r}
                 ON CONFLICT (order_id) DO UPDATE SET
                     customer_id = COALESCE(EXCLUDED.customer_id, order_payments.customer_id),
                     total = COALESCE(EXCLUDED.total, order_payments.total),
                     reserved = order_payments.reserved OR EXCLUDED.reserved,
                     cancelled = order_payments.cancelled OR EXCLUDED.cancelled"
            )
        })
        .await?;
        let touched: Vec<Uuid> = orders.keys().copied().collect();
        let cancelled: Vec<Uuid> = orders
            .iter()
            .filter(|(_, f)| f.cancelled)
            .map(|(id, _)| *id)
            .collect();
        // The refunds' rows are read as they were before the charges' update (one
        // snapshot): a charge made in an earlier batch.
        let decided: Vec<(Uuid, Uuid, i64, bool)> = sql::query_as(
            "WITH charges AS (
                 UPDATE order_payments SET charged = true
                 WHERE order_id = ANY($1) AND reserved AND NOT charged AND NOT cancelled AND customer_id IS NOT NULL
                 RETURNING order_id, customer_id, total
             )
             SELECT order_id, customer_id, total, false FROM charges
             UNION ALL
             SELECT order_id, customer_id, COALESCE(total, 0), true FROM order_payments WHERE order_id = ANY($2) AND charged",
        )
        // Planned for the batch and the table as they are (`Query::replanned`).
        .replanned()
        .bind(Arg::UuidList(touched))
        .bind(Arg::UuidList(cancelled))
        .fetch_all(&mut *tx)
        .await?;
        let mut commands: Vec<(usize, WalletCommand)> = decided
            .into_iter()
            .map(|(order_id, customer_id, amount, refund)| {
                let command = if refund {
                    WalletCommand::Refund {
                        customer_id,
                        order_id,
                    }
                } else {
                    WalletCommand::Charge {
                        customer_id,
                        order_id,
                        amount,
                    }
                };
                (orders[&order_id].cause, command)
            })
            .collect();
        commands.sort_by_key(|(cause, _)| *cause);
        for (cause, command) in commands {
            let event = events[cause];
            let wallet = command_wallet(&command);
            self.bus
                .execute_in(tx, &wallet.to_string(), command, &metadata_caused_by(event))
                .instrument(apply_span(CHARGES, event))
                .await?;
        }
        Ok(())
    }

    async fn handle(&self, tx: &mut Conn, event: &CloudEvent) -> Result<(), HandlerError> {
        let Some((order_id, fact)) = fact(event)? else {
            return Ok(());
        };
        let (customer_id, total, reserved, cancelled) = match fact {
            Fact::Placed { customer_id, total } => (Some(customer_id), Some(total), false, false),
            Fact::Reserved => (None, None, true, false),
            Fact::Cancelled => (None, None, false, true),
        };
        sql::query(
            "INSERT INTO order_payments (order_id, customer_id, total, reserved, cancelled) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (order_id) DO UPDATE SET
                 customer_id = COALESCE(EXCLUDED.customer_id, order_payments.customer_id),
                 total = COALESCE(EXCLUDED.total, order_payments.total),
                 reserved = order_payments.reserved OR EXCLUDED.reserved,
                 cancelled = order_payments.cancelled OR EXCLUDED.cancelled",
        )
        .bind(order_id)
        .bind(customer_id)
        .bind(total)
        .bind(reserved)
        .bind(cancelled)
        .execute(&mut *tx)
        .await?;
        let command = if cancelled {
            // A charge made before the cancellation was seen is given back; the wallet
            // knows whether there was one.
            let charged: Option<Uuid> = sql::query_scalar(
                "SELECT customer_id FROM order_payments WHERE order_id = $1 AND charged",
            )
            .bind(order_id)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(customer_id) = charged else {
                return Ok(());
            };
            WalletCommand::Refund {
                customer_id,
                order_id,
            }
        } else {
            // Both facts in, not cancelled, not yet charged: charge, inside this transaction.
            let ready: Option<(Uuid, i64)> = sql::query_as(
                "UPDATE order_payments SET charged = true
                 WHERE order_id = $1 AND reserved AND NOT charged AND NOT cancelled AND customer_id IS NOT NULL
                 RETURNING customer_id, total",
            )
            .bind(order_id)
            .fetch_optional(&mut *tx)
            .await?;
            let Some((customer_id, amount)) = ready else {
                return Ok(());
            };
            WalletCommand::Charge {
                customer_id,
                order_id,
                amount,
            }
        };
        let wallet = command_wallet(&command);
        self.bus
            .execute_in(tx, &wallet.to_string(), command, &metadata_caused_by(event))
            .await?;
        Ok(())
    }
}

/// The wallet (customer) a command is for.
fn command_wallet(command: &WalletCommand) -> Uuid {
    match command {
        WalletCommand::Deposit { customer_id, .. }
        | WalletCommand::Charge { customer_id, .. }
        | WalletCommand::Refund { customer_id, .. } => *customer_id,
    }
}
