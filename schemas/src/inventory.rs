//! Events of the inventory service: the catalogue (products, prices, stock).

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Service;

/// The category of products added without one, and of every product added before
/// `ProductAdded` v2 (its upcaster's default).
pub const UNCATEGORISED: &str = "uncategorised";

/// A product entered the catalogue with its initial stock (version 2: with its category).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductAdded {
    pub product_id: Uuid,
    pub sku: String,
    pub name: String,
    /// Minor units of the deployment's currency.
    pub price: i64,
    pub stock: i64,
    /// Since v2; [`UNCATEGORISED`] for products added without one (and before v2).
    pub category: String,
}

/// `ProductAdded` v1 → v2: products added before categories are [`UNCATEGORISED`].
pub fn product_added_v1_to_v2(data: serde_json::Value) -> serde_json::Value {
    crate::upcast::with_default(data, "category", UNCATEGORISED.into())
}

/// A product's price changed; orders placed afterwards use the new price.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductPriceChanged {
    pub product_id: Uuid,
    pub price: i64,
}

/// Stock arrived for a product.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductRestocked {
    pub product_id: Uuid,
    pub quantity: i64,
}

/// Units of one product for one order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockLine {
    pub product_id: Uuid,
    pub quantity: i64,
}

/// A line that could not be reserved: what was asked and what was there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockShortage {
    pub product_id: Uuid,
    pub requested: i64,
    pub available: i64,
}

/// Every line of an order was reserved, as one decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockReserved {
    pub order_id: Uuid,
    pub lines: Vec<StockLine>,
}

/// An order could not be reserved; nothing was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockReservationRejected {
    pub order_id: Uuid,
    /// `out_of_stock`.
    pub reason: String,
    /// The lines that were short.
    pub lines: Vec<StockShortage>,
}

/// A confirmed order's reserved units became sold (reserved → sold).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockCommitted {
    pub order_id: Uuid,
    pub lines: Vec<StockLine>,
}

/// Where released units came from.
pub const RELEASED_FROM_RESERVED: &str = "reserved";
pub const RELEASED_FROM_SOLD: &str = "sold";

/// A cancelled order's units returned to available (compensation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockReleased {
    pub order_id: Uuid,
    pub lines: Vec<StockLine>,
    /// `reserved` (the order was not confirmed) or `sold` (it was committed).
    pub released_from: String,
}

service_events!(
    /// Every event of the inventory service. Serialized externally tagged
    /// (`{"ProductAdded": {...}}`); the event store keeps the tag as the event type and the
    /// inner object as the CloudEvents data.
    InventoryEvent,
    Service::Inventory,
    [
        ProductAdded = 2,
        ProductPriceChanged,
        ProductRestocked,
        StockReserved,
        StockReservationRejected,
        StockCommitted,
        StockReleased,
    ]
);
