//! The product read model: catalogue entries (`products`, from the product's own events)
//! and stock movements by orders (`product_stock`); the read API derives `available`.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use shop_eventing::handler::{EventHandler, HandlerError};
use shop_schemas::inventory::{InventoryEvent, StockLine, RELEASED_FROM_SOLD};
use shop_schemas::{CloudEvent, Service};
use shop_sql::{Conn, RowSet};
use std::collections::HashMap;
use uuid::Uuid;

use crate::ProjectionInfo;

pub const INFO: ProjectionInfo = ProjectionInfo {
    name: "products",
    consumer: "projection.products",
    sources: &[Service::Inventory],
    schema: include_str!("../sql/products.sql"),
    tables: &["products", "product_stock"],
    indexes: &[],
    // 2: `category` (ProductAdded v2).
    revision: 2,
    added_columns: &[(
        "products",
        "category",
        "TEXT NOT NULL DEFAULT 'uncategorised'",
    )],
};

/// Applies inventory events to `products`.
pub struct ProductsProjection;

/// The row sets of a batch: added products, the changes per product, and the stock
/// moves per product.
const ADDED: [(&str, &str); 8] = [
    ("product_id", "UUID"),
    ("sku", "TEXT"),
    ("name", "TEXT"),
    ("category", "TEXT"),
    ("price", "BIGINT"),
    ("received", "BIGINT"),
    ("version", "BIGINT"),
    ("at", "TIMESTAMPTZ"),
];
const CHANGES: [(&str, &str); 5] = [
    ("product_id", "UUID"),
    ("received", "BIGINT"),
    ("price", "BIGINT"),
    ("version", "BIGINT"),
    ("at", "TIMESTAMPTZ"),
];
const MOVES: [(&str, &str); 3] = [
    ("product_id", "UUID"),
    ("reserved", "BIGINT"),
    ("sold", "BIGINT"),
];

#[async_trait]
impl EventHandler for ProductsProjection {
    fn batches(&self) -> bool {
        true
    }

    /// The projection's one handler: a batch (one event is a batch of one) in three
    /// statements — new products, the changes to known ones (folded per product), and the
    /// stock moves (summed per product).
    async fn handle_batch(
        &self,
        tx: &mut Conn,
        events: &[&CloudEvent],
    ) -> Result<(), HandlerError> {
        let mut added = RowSet::new(&ADDED);
        let mut changes: HashMap<Uuid, Change> = HashMap::new();
        let mut moves: HashMap<Uuid, (i64, i64)> = HashMap::new();
        let mut add_moves = |lines: &[StockLine], reserved: i64, sold: i64| {
            for line in lines {
                let entry = moves.entry(line.product_id).or_default();
                entry.0 += reserved * line.quantity;
                entry.1 += sold * line.quantity;
            }
        };
        for event in events {
            let Some(decoded) =
                shop_eventing::handler::decode::<InventoryEvent>(Service::Inventory, event)?
            else {
                continue;
            };
            let version = event.sequence as i64;
            match decoded {
                InventoryEvent::ProductAdded(e) => added.push([
                    e.product_id.into(),
                    e.sku.into(),
                    e.name.into(),
                    e.category.into(),
                    e.price.into(),
                    e.stock.into(),
                    version.into(),
                    event.time.into(),
                ]),
                InventoryEvent::ProductRestocked(e) => {
                    Change::of(&mut changes, e.product_id, version, event).received += e.quantity
                }
                InventoryEvent::ProductPriceChanged(e) => {
                    Change::of(&mut changes, e.product_id, version, event).price = Some(e.price)
                }
                InventoryEvent::StockReserved(e) => add_moves(&e.lines, 1, 0),
                InventoryEvent::StockCommitted(e) => add_moves(&e.lines, -1, 1),
                InventoryEvent::StockReleased(e) if e.released_from == RELEASED_FROM_SOLD => {
                    add_moves(&e.lines, 0, -1)
                }
                InventoryEvent::StockReleased(e) => add_moves(&e.lines, -1, 0),
                InventoryEvent::StockReservationRejected(_) => {}
            }
        }
        added
            .execute(
                tx,
                Vec::new(),
                |r| format!(
                    "INSERT INTO products (product_id, sku, name, category, price, received, version, created_at, updated_at)
                     SELECT product_id, sku, name, category, price, received, version, at, at FROM {r} WHERE true
                     ON CONFLICT (product_id) DO NOTHING"
                ),
            )
            .await?;
        let mut rows = RowSet::new(&CHANGES);
        for (product_id, c) in &changes {
            rows.push([
                (*product_id).into(),
                c.received.into(),
                c.price.into(),
                c.version.into(),
                c.at.into(),
            ]);
        }
        let updated = rows
            .execute(
                tx,
                Vec::new(),
                |r| format!(
                    "UPDATE products SET received = products.received + r.received,
                         price = COALESCE(r.price, products.price), version = r.version, updated_at = r.at
                     FROM {r} WHERE products.product_id = r.product_id"
                ),
            )
            .await?;
        if updated != changes.len() as u64 {
            // Events of one product arrive in order on one partition, so its ProductAdded
            // came first: a missing row means the log is inconsistent. Replayed one by
            // one, the missing product is named.
            return Err(HandlerError::permanent(match changes.keys().next() {
                Some(product_id) if changes.len() == 1 => {
                    format!("product {product_id} is not in the read model")
                }
                _ => format!(
                    "{} changed products are not in the read model",
                    changes.len() as u64 - updated
                ),
            }));
        }
        let mut rows = RowSet::new(&MOVES);
        for (product_id, (reserved, sold)) in moves {
            rows.push([product_id.into(), reserved.into(), sold.into()]);
        }
        rows.execute(tx, Vec::new(), |r| {
            format!(
                "INSERT INTO product_stock (product_id, reserved, sold)
                 SELECT product_id, reserved, sold FROM {r} WHERE true
                 -- Moves come from reservations, keyed by order: members of the group
                 -- applying other partitions move the stock of the same products. Rows
                 -- locked in one order, two of them never deadlock (no quote marks in
                 -- here: renames and placeholders skip quoted text).
                 ORDER BY product_id
                 ON CONFLICT (product_id) DO UPDATE SET
                     reserved = product_stock.reserved + EXCLUDED.reserved,
                     sold = product_stock.sold + EXCLUDED.sold"
            )
        })
        .await?;
        Ok(())
    }

    /// A batch of one.
    async fn handle(&self, tx: &mut Conn, event: &CloudEvent) -> Result<(), HandlerError> {
        self.handle_batch(tx, &[event]).await
    }
}

/// A batch's changes to one known product.
struct Change {
    received: i64,
    price: Option<i64>,
    version: i64,
    at: DateTime<Utc>,
}

impl Change {
    /// The product's entry, moved to this event's version and time.
    fn of<'a>(
        changes: &'a mut HashMap<Uuid, Change>,
        product_id: Uuid,
        version: i64,
        event: &CloudEvent,
    ) -> &'a mut Change {
        let change = changes.entry(product_id).or_insert_with(|| Change {
            received: 0,
            price: None,
            version,
            at: event.time,
        });
        change.version = change.version.max(version);
        change.at = change.at.max(event.time);
        change
    }
}
