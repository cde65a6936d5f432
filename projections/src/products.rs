//! The product read model: catalogue entries (`products`, from the product's own events)
//! and stock movements by orders (`product_stock`); the read API derives `available`.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use shop_eventing::consumer::{EventHandler, HandlerError};
use shop_eventing::sql::{self, Conn};
use shop_schemas::inventory::{InventoryEvent, StockLine, RELEASED_FROM_SOLD};
use shop_schemas::{CloudEvent, Service};

use crate::ProjectionInfo;

pub const INFO: ProjectionInfo = ProjectionInfo {
    name: "products",
    consumer: "projection.products",
    sources: &[Service::Inventory],
    schema: include_str!("../sql/products.sql"),
    tables: &["products", "product_stock"],
    indexes: &[],
};

/// Applies inventory events to `products`.
pub struct ProductsProjection;

#[async_trait]
impl EventHandler for ProductsProjection {
    async fn handle(&self, tx: &mut Conn, event: &CloudEvent) -> Result<(), HandlerError> {
        let Some(decoded) =
            shop_eventing::consumer::decode::<InventoryEvent>(Service::Inventory, event)?
        else {
            return Ok(());
        };
        let version = event.sequence as i64;
        let at = event.time;
        match decoded {
            InventoryEvent::ProductAdded(e) => {
                sql::query(
                    "INSERT INTO products (product_id, sku, name, price, received, version, created_at, updated_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $7) ON CONFLICT (product_id) DO NOTHING",
                )
                .bind(e.product_id)
                .bind(&e.sku)
                .bind(&e.name)
                .bind(e.price)
                .bind(e.stock)
                .bind(version)
                .bind(at)
                .execute(&mut *tx)
                .await?;
            }
            InventoryEvent::ProductRestocked(e) => {
                update(
                    tx,
                    "received = received + $2",
                    e.product_id,
                    e.quantity,
                    version,
                    at,
                )
                .await?;
            }
            // Units move between reserved and sold per order (`available` is computed).
            InventoryEvent::StockReserved(e) => move_units(tx, &e.lines, 1, 0).await?,
            InventoryEvent::StockCommitted(e) => move_units(tx, &e.lines, -1, 1).await?,
            InventoryEvent::StockReleased(e) if e.released_from == RELEASED_FROM_SOLD => {
                move_units(tx, &e.lines, 0, -1).await?
            }
            InventoryEvent::StockReleased(e) => move_units(tx, &e.lines, -1, 0).await?,
            InventoryEvent::StockReservationRejected(_) => {}
            InventoryEvent::ProductPriceChanged(e) => {
                update(tx, "price = $2", e.product_id, e.price, version, at).await?;
            }
        }
        Ok(())
    }
}

/// Adds `reserved × quantity` and `sold × quantity` of each line to `product_stock`.
async fn move_units(
    tx: &mut Conn,
    lines: &[StockLine],
    reserved: i64,
    sold: i64,
) -> Result<(), HandlerError> {
    for line in lines {
        sql::query(
            "INSERT INTO product_stock (product_id, reserved, sold) VALUES ($1, $2, $3)
             ON CONFLICT (product_id) DO UPDATE SET
                 reserved = product_stock.reserved + EXCLUDED.reserved,
                 sold = product_stock.sold + EXCLUDED.sold",
        )
        .bind(line.product_id)
        .bind(reserved * line.quantity)
        .bind(sold * line.quantity)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

async fn update(
    tx: &mut Conn,
    set: &str,
    product_id: uuid::Uuid,
    value: i64,
    version: i64,
    at: DateTime<Utc>,
) -> Result<(), HandlerError> {
    let sql =
        format!("UPDATE products SET {set}, version = $3, updated_at = $4 WHERE product_id = $1");
    let updated = sql::query(&sql)
        .bind(product_id)
        .bind(value)
        .bind(version)
        .bind(at)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if updated == 0 {
        // Events of one product arrive in order on one partition, so its ProductAdded
        // came first; a missing row means the log is inconsistent.
        return Err(HandlerError::permanent(format!(
            "product {product_id} is not in the read model"
        )));
    }
    Ok(())
}
