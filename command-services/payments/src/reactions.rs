//! Reactions of the payments service to other services' events.

use async_trait::async_trait;
use shop_eventing::consumer::{decode, EventHandler, HandlerError};
use shop_schemas::customers::CustomerEvent;
use shop_schemas::{CloudEvent, Service};
use sqlx::PgConnection;

/// The consumer name of [`KnownCustomers`].
pub const KNOWN_CUSTOMERS: &str = "payments.known-customers";

/// Keeps `known_customers` from `CustomerRegistered`.
pub struct KnownCustomers;

#[async_trait]
impl EventHandler for KnownCustomers {
    async fn handle(&self, tx: &mut PgConnection, event: &CloudEvent) -> Result<(), HandlerError> {
        let Some(decoded) = decode::<CustomerEvent>(Service::Customers, event)? else {
            return Ok(());
        };
        match decoded {
            CustomerEvent::CustomerRegistered(e) => {
                sqlx::query("INSERT INTO known_customers (customer_id, registered_at) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                    .bind(e.customer_id)
                    .bind(event.time)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        Ok(())
    }
}

/// The consumer name of [`ChargeOrders`].
pub const CHARGES: &str = "payments.charges";

/// The saga's payment step (SPEC §5.2): once an order is both placed (`OrderPlaced`:
/// customer and total) and reserved (`StockReserved`), in whichever order the two topics
/// deliver them, charge the customer's wallet — `PaymentCompleted` or `PaymentDeclined`.
pub struct ChargeOrders {
    pub bus: std::sync::Arc<shop_eventing::command::CommandBus<crate::wallet::Wallet>>,
}

#[async_trait]
impl EventHandler for ChargeOrders {
    async fn handle(&self, tx: &mut PgConnection, event: &CloudEvent) -> Result<(), HandlerError> {
        use shop_schemas::inventory::InventoryEvent;
        use shop_schemas::orders::OrderEvent;
        let order_id = if let Some(OrderEvent::OrderPlaced(e)) =
            decode::<OrderEvent>(Service::Orders, event)?
        {
            sqlx::query(
                "INSERT INTO order_payments (order_id, customer_id, total) VALUES ($1, $2, $3)
                 ON CONFLICT (order_id) DO UPDATE SET customer_id = EXCLUDED.customer_id, total = EXCLUDED.total",
            )
            .bind(e.order_id)
            .bind(e.customer_id)
            .bind(e.total)
            .execute(&mut *tx)
            .await?;
            e.order_id
        } else if let Some(InventoryEvent::StockReserved(e)) =
            decode::<InventoryEvent>(Service::Inventory, event)?
        {
            sqlx::query(
                "INSERT INTO order_payments (order_id, reserved) VALUES ($1, true)
                 ON CONFLICT (order_id) DO UPDATE SET reserved = true",
            )
            .bind(e.order_id)
            .execute(&mut *tx)
            .await?;
            e.order_id
        } else {
            return Ok(());
        };
        // Both facts in and not yet charged: charge, inside this transaction.
        let ready: Option<(uuid::Uuid, i64)> = sqlx::query_as(
            "UPDATE order_payments SET charged = true
             WHERE order_id = $1 AND reserved AND NOT charged AND customer_id IS NOT NULL
             RETURNING customer_id, total",
        )
        .bind(order_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((customer_id, amount)) = ready else {
            return Ok(());
        };
        let command = crate::wallet::WalletCommand::Charge {
            customer_id,
            order_id,
            amount,
        };
        self.bus
            .execute_in(
                tx,
                &customer_id.to_string(),
                command,
                &shop_eventing::telemetry::metadata_caused_by(event),
            )
            .await
            .map_err(|e| match e {
                shop_eventing::command::CommandError::Rejected(e) => {
                    HandlerError::permanent(e.to_string())
                }
                other => HandlerError::transient(other.to_string()),
            })
    }
}
