//! The customer read model: account details (`customers`) and wallet balances
//! (`wallets`); the read API joins them into the customer view of SPEC §3.2.

use async_trait::async_trait;
use shop_eventing::consumer::{EventHandler, HandlerError};
use shop_schemas::customers::CustomerEvent;
use shop_schemas::payments::PaymentEvent;
use shop_schemas::{CloudEvent, Service};
use sqlx::PgConnection;

use crate::ProjectionInfo;

pub const INFO: ProjectionInfo = ProjectionInfo {
    name: "customers",
    consumer: "projection.customers",
    sources: &[Service::Customers, Service::Payments],
};

/// Applies customer events to `customers`.
pub struct CustomersProjection;

#[async_trait]
impl EventHandler for CustomersProjection {
    async fn handle(&self, tx: &mut PgConnection, event: &CloudEvent) -> Result<(), HandlerError> {
        // Money moves: deposits add to the balance, completed payments take from it.
        let movement =
            match shop_eventing::consumer::decode::<PaymentEvent>(Service::Payments, event)? {
                Some(PaymentEvent::FundsDeposited(e)) => Some((e.customer_id, e.amount)),
                Some(PaymentEvent::PaymentCompleted(e)) => Some((e.customer_id, -e.amount)),
                Some(PaymentEvent::PaymentDeclined(_)) => return Ok(()),
                None => None,
            };
        if let Some((customer_id, delta)) = movement {
            sqlx::query(
                "INSERT INTO wallets (customer_id, balance, updated_at) VALUES ($1, $2, $3)
                 ON CONFLICT (customer_id) DO UPDATE SET balance = wallets.balance + EXCLUDED.balance, updated_at = EXCLUDED.updated_at",
            )
            .bind(customer_id)
            .bind(delta)
            .bind(event.time)
            .execute(&mut *tx)
            .await?;
            return Ok(());
        }
        let Some(decoded) =
            shop_eventing::consumer::decode::<CustomerEvent>(Service::Customers, event)?
        else {
            return Ok(());
        };
        match decoded {
            CustomerEvent::CustomerRegistered(e) => {
                let address = serde_json::to_value(&e.address)
                    .map_err(|e| HandlerError::permanent(e.to_string()))?;
                sqlx::query(
                    "INSERT INTO customers (customer_id, name, email, address, version, created_at, updated_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $6) ON CONFLICT (customer_id) DO NOTHING",
                )
                .bind(e.customer_id)
                .bind(&e.name)
                .bind(&e.email)
                .bind(address)
                .bind(event.sequence as i64)
                .bind(event.time)
                .execute(&mut *tx)
                .await?;
            }
        }
        Ok(())
    }
}
