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

/// Every event of the inventory service. Serialized externally tagged
/// (`{"ProductAdded": {...}}`); the event store keeps the tag as the event type and the
/// inner object as the CloudEvents data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum InventoryEvent {
    ProductAdded(ProductAdded),
    ProductPriceChanged(ProductPriceChanged),
    ProductRestocked(ProductRestocked),
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
];

impl InventoryEvent {
    /// The event's name, as in its CloudEvents type and schema file.
    pub fn name(&self) -> &'static str {
        match self {
            InventoryEvent::ProductAdded(_) => "ProductAdded",
            InventoryEvent::ProductPriceChanged(_) => "ProductPriceChanged",
            InventoryEvent::ProductRestocked(_) => "ProductRestocked",
        }
    }

    /// The product the event is about (the aggregate id).
    pub fn product_id(&self) -> Uuid {
        match self {
            InventoryEvent::ProductAdded(e) => e.product_id,
            InventoryEvent::ProductPriceChanged(e) => e.product_id,
            InventoryEvent::ProductRestocked(e) => e.product_id,
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
