//! The customer read model: account details with wallet balance, orders count and
//! lifetime spend (SPEC §3.2).

use async_trait::async_trait;
use shop_eventing::consumer::{EventHandler, HandlerError};
use shop_schemas::customers::CustomerEvent;
use shop_schemas::{CloudEvent, Service};
use sqlx::PgConnection;

use crate::ProjectionInfo;

pub const INFO: ProjectionInfo = ProjectionInfo {
    name: "customers",
    consumer: "projection.customers",
    sources: &[Service::Customers],
};

/// Applies customer events to `customers`.
pub struct CustomersProjection;

#[async_trait]
impl EventHandler for CustomersProjection {
    async fn handle(&self, tx: &mut PgConnection, event: &CloudEvent) -> Result<(), HandlerError> {
        let Some(decoded) = crate::decode::<CustomerEvent>(Service::Customers, event)? else {
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
