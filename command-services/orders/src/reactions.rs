//! Reactions of the orders service to other services' events.

use async_trait::async_trait;
use shop_eventing::consumer::{decode, EventHandler, HandlerError};
use shop_schemas::inventory::InventoryEvent;
use shop_schemas::{CloudEvent, Service};
use sqlx::PgConnection;

/// The consumer name of [`CatalogueReplica`].
pub const CATALOGUE: &str = "orders.catalogue";

/// Keeps `catalogue` (product prices) from inventory events.
pub struct CatalogueReplica;

#[async_trait]
impl EventHandler for CatalogueReplica {
    async fn handle(&self, tx: &mut PgConnection, event: &CloudEvent) -> Result<(), HandlerError> {
        let Some(decoded) = decode::<InventoryEvent>(Service::Inventory, event)? else {
            return Ok(());
        };
        let (product_id, price) = match decoded {
            InventoryEvent::ProductAdded(e) => (e.product_id, e.price),
            InventoryEvent::ProductPriceChanged(e) => (e.product_id, e.price),
            _ => return Ok(()),
        };
        // `version` guards against an older price overwriting a newer one.
        sqlx::query(
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
