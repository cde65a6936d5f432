//! Reactions of the payments service to other services' events.

use std::sync::Arc;

use async_trait::async_trait;
use shop_eventing::command::CommandBus;
use shop_eventing::handler::{decode, EventHandler, HandlerError};
use shop_schemas::customers::CustomerEvent;
use shop_schemas::inventory::InventoryEvent;
use shop_schemas::orders::OrderEvent;
use shop_schemas::{CloudEvent, Service};
use shop_sql::{self as sql, Conn};
use shop_web::telemetry::metadata_caused_by;
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

#[async_trait]
impl EventHandler for OrderPayments {
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
