//! Events of the inventory service: the catalogue (products, prices, stock).

use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{EventType, Service};

/// A product entered the catalogue with its initial stock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductAdded {
    pub product_id: Uuid,
    pub sku: String,
    pub name: String,
    /// Minor units of the deployment's currency.
    pub price: i64,
    pub stock: i64,
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

/// Every event of the inventory service. Serialized externally tagged
/// (`{"ProductAdded": {...}}`); the event store keeps the tag as the event type and the
/// inner object as the CloudEvents data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum InventoryEvent {
    ProductAdded(ProductAdded),
    ProductPriceChanged(ProductPriceChanged),
    ProductRestocked(ProductRestocked),
    StockReserved(StockReserved),
    StockReservationRejected(StockReservationRejected),
}

pub const EVENT_TYPES: &[EventType] = &[
    EventType {
        service: Service::Inventory,
        name: "ProductAdded",
        version: 1,
    },
    EventType {
        service: Service::Inventory,
        name: "ProductPriceChanged",
        version: 1,
    },
    EventType {
        service: Service::Inventory,
        name: "ProductRestocked",
        version: 1,
    },
    EventType {
        service: Service::Inventory,
        name: "StockReserved",
        version: 1,
    },
    EventType {
        service: Service::Inventory,
        name: "StockReservationRejected",
        version: 1,
    },
];

impl InventoryEvent {
    /// The event's name, as in its CloudEvents type and schema file.
    pub fn name(&self) -> &'static str {
        match self {
            InventoryEvent::ProductAdded(_) => "ProductAdded",
            InventoryEvent::ProductPriceChanged(_) => "ProductPriceChanged",
            InventoryEvent::ProductRestocked(_) => "ProductRestocked",
            InventoryEvent::StockReserved(_) => "StockReserved",
            InventoryEvent::StockReservationRejected(_) => "StockReservationRejected",
        }
    }
}

impl DomainEvent for InventoryEvent {
    fn event_type(&self) -> String {
        self.name().to_string()
    }

    fn event_version(&self) -> String {
        "1".to_string()
    }
}
