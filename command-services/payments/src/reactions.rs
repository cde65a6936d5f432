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
